use std::io::{self, Read};

use rand::{RngExt, rng};
use rustic_cdc::{Polynom, Polynom64, Rabin64};

use crate::error::{ErrorKind, RusticError, RusticResult};

pub(super) mod constants {
    /// The size of a kilobyte.
    pub(super) const KB: usize = 1024;
    /// Random polynomial maximum tries.
    pub(super) const RAND_POLY_MAX_TRIES: i32 = 1_000_000;
}

pub(crate) fn check_rabin_params(
    chunk_size: usize,
    chunk_min_size: usize,
    chunk_max_size: usize,
) -> RusticResult<()> {
    if (chunk_size & (chunk_size - 1)) != 0 {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk size must be a power of 2 for the rabin chunker. chunk size = {chunk_size}.",
        )
        .attach_context("chunk_size", chunk_size.to_string()));
    }
    if chunk_min_size > chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk min size must be smaller or equal than the chunk size.",
        ));
    }
    if chunk_max_size < chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk max size must be larger or equal than the chunk size.",
        ));
    }
    Ok(())
}

/// speechvault patch: the rolling hash's tables, built once per polynomial (see
/// `chunker::tables_for`) and shared by every file chunked with it.
#[derive(Debug)]
pub(crate) struct RabinTables {
    /// Removes the byte leaving the 64-byte window from the hash.
    out: [u64; 256],
    /// Reduces the hash modulo the polynomial as a byte enters.
    modt: [u64; 256],
    /// The polynomial's degree minus 8.
    shift: u32,
}

impl RabinTables {
    /// Window size 64 (`Rabin64::new_with_polynom(6, ..)`), as restic.
    pub(crate) fn new(poly: u64) -> Self {
        Self {
            out: Rabin64::calculate_out_table(64, &poly),
            modt: Rabin64::calculate_mod_table(&poly),
            shift: u32::try_from(poly.degree() - 8).unwrap_or(0),
        }
    }

    #[inline(always)]
    fn roll(&self, hash: u64, out: u8, byte: u8) -> u64 {
        let hash = hash ^ self.out[out as usize];
        let index = (hash >> self.shift) & 255;
        ((hash << 8) | u64::from(byte)) ^ self.modt[index as usize]
    }
}

/// How much is read at a time past a chunk's minimum size. Bytes read past a cut are kept for
/// the next chunk.
const READ_SIZE: usize = 64 * constants::KB;

/// `ChunkIter` is an iterator that chunks data.
///
/// speechvault patch: the same cut points as rustic_core 0.13.0's chunker (and restic's), found
/// without copying each byte on its own: the reader fills the chunk directly in blocks, and the
/// rolling hash reads the byte leaving its window from the chunk itself. 0.13.0 read 4 KiB at
/// a time into a side buffer and pushed every byte into the chunk, with a window array beside
/// it: the chunker was the slowest stage of backing up one large object.
pub(crate) struct ChunkIter<R: Read + Send> {
    /// Bytes read past the last cut, the start of the next chunk.
    carry: Vec<u8>,

    /// The reader.
    reader: R,

    /// The split mask used to determine if a chunk is a chunk boundary.
    split_mask: u64,

    /// The rolling hash's tables.
    tables: std::sync::Arc<RabinTables>,

    /// The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    size_hint: usize,

    /// The minimum size of a chunk.
    min_size: usize,

    /// The maximum size of a chunk.
    max_size: usize,

    /// If the iterator is finished.
    finished: bool,
}

impl<R: Read + Send> ChunkIter<R> {
    /// Creates a new `ChunkIter`.
    ///
    /// # Arguments
    ///
    /// * `tables` - The rolling hash's tables for the repository's polynomial.
    /// * `reader` - The reader to read from.
    /// * `size_hint` - The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    pub(crate) fn new(
        tables: std::sync::Arc<RabinTables>,
        chunk_size: usize,
        chunk_min_size: usize,
        chunk_max_size: usize,
        reader: R,
        size_hint: usize,
    ) -> RusticResult<Self> {
        check_rabin_params(chunk_size, chunk_min_size, chunk_max_size)?;
        if chunk_min_size < 64 {
            return Err(RusticError::new(
                ErrorKind::Unsupported,
                "Chunk min size must be at least the rolling hash's window (64 bytes).",
            ));
        }
        let chunk_size: u64 = chunk_size.try_into().unwrap();
        let split_mask: u64 = chunk_size - 1;
        Ok(Self {
            carry: Vec::new(),
            reader,
            split_mask,
            tables,
            size_hint, // size hint is used to optimize memory allocation; this should be an upper bound on the size
            min_size: chunk_min_size,
            max_size: chunk_max_size,
            finished: false,
        })
    }

    /// Reads into `vec` once (the free end of the chunk); the bytes read.
    fn read_into(&mut self, vec: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.reader.read(vec) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl<R: Read + Send> Iterator for ChunkIter<R> {
    type Item = RusticResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let read_error = |err| {
            Some(Err(RusticError::with_source(
                ErrorKind::InputOutput,
                "Failed to read from reader in iterator",
                err,
            )))
        };
        let min_size = self.min_size;
        let mut vec = Vec::with_capacity(self.size_hint.min(min_size + READ_SIZE));
        vec.append(&mut self.carry);

        // The first `min_size` bytes are never cut.
        if vec.len() < min_size {
            let need = (min_size - vec.len()) as u64;
            if let Err(err) = (&mut self.reader).take(need).read_to_end(&mut vec) {
                return read_error(err);
            }
            if vec.len() < min_size {
                self.finished = true;
                return if vec.is_empty() { None } else { Some(Ok(vec)) };
            }
        }

        // As 0.13.0: the window is prefilled with the 63 bytes before the last of these, and
        // the first byte to slide in removes nothing (a zero).
        let tables = self.tables.clone();
        let t = &*tables;
        let l = vec.len();
        let mut hash = 0u64;
        for &b in &vec[l - 64..l - 1] {
            let index = (hash >> t.shift) & 255;
            hash = ((hash << 8) | u64::from(b)) ^ t.modt[index as usize];
        }
        let mask = self.split_mask;
        let mut slid = 0usize;
        let mut cut = (hash & mask) == 0 || vec.len() >= self.max_size;
        while !cut {
            let start = vec.len();
            // Never more than `min_size`, so what is carried over never reaches into the next
            // chunk's uncut start.
            let want = READ_SIZE.min(min_size).min(self.max_size - start);
            vec.resize(start + want, 0);
            let n = match self.read_into(&mut vec[start..]) {
                Ok(n) => n,
                Err(err) => return read_error(err),
            };
            vec.truncate(start + n);
            if n == 0 {
                self.finished = true;
                break;
            }
            let end = start + n;
            let mut i = start;
            // The first 64 bytes after the prefill leave the window in their own order.
            while i < end && slid < 64 {
                let out = match slid {
                    0 => 0,
                    _ => vec[i - 65],
                };
                hash = t.roll(hash, out, vec[i]);
                slid += 1;
                i += 1;
                if (hash & mask) == 0 {
                    cut = true;
                    break;
                }
            }
            // From then on the window is the chunk's last 64 bytes.
            if !cut && i < end {
                let found = vec[i - 64..end - 64]
                    .iter()
                    .zip(&vec[i..end])
                    .position(|(&out, &b)| {
                        hash = t.roll(hash, out, b);
                        (hash & mask) == 0
                    });
                match found {
                    Some(p) => {
                        i += p + 1;
                        cut = true;
                    }
                    None => i = end,
                }
                slid = 64;
            }
            if cut {
                self.carry.extend_from_slice(&vec[i..]);
                vec.truncate(i);
            } else if vec.len() >= self.max_size {
                cut = true;
            }
        }
        self.size_hint = self.size_hint.saturating_sub(vec.len()); // size_hint can be too small!
        Some(Ok(vec))
    }
}

/// [`random_poly`] returns an random irreducible polynomial of degree 53
/// (largest prime number below 64-8)
/// There are (2^53-2/53) irreducible polynomials of degree 53 in
/// `F_2[X]`, c.f. Michael O. Rabin (1981): "Fingerprinting by Random
/// Polynomials", page 4.
///
/// # Errors
///
/// * If no polynomial could be found in one million tries.
pub fn random_poly() -> RusticResult<u64> {
    for _ in 0..constants::RAND_POLY_MAX_TRIES {
        let mut poly: u64 = rng().random();

        // mask away bits above bit 53
        poly &= (1 << 54) - 1;

        // set highest and lowest bit so that the degree is 53 and the
        // polynomial is not trivially reducible
        poly |= (1 << 53) | 1;

        if poly.irreducible() {
            return Ok(poly);
        }
    }

    Err(RusticError::new(
        ErrorKind::Internal,
        "No suitable polynomial found, this should essentially never happen. Please try again.",
    )
    .ask_report())
}

/// A trait for extending polynomials.
pub(crate) trait PolynomExtend {
    /// Returns true IFF x is irreducible over `F_2`.
    fn irreducible(&self) -> bool;

    /// Returns the degree of the polynomial.
    fn gcd(self, other: Self) -> Self;

    /// Adds two polynomials.
    fn add(self, other: Self) -> Self;

    /// Multiplies two polynomials modulo another polynomial.
    fn mulmod(self, other: Self, modulo: Self) -> Self;
}

// implementation goes along the lines of
// https://github.com/restic/chunker/blob/master/polynomials.go
impl PolynomExtend for Polynom64 {
    // Irreducible returns true IFF x is irreducible over F_2. This function
    // uses Ben Or's reducibility test.
    //
    // For details see "Tests and Constructions of Irreducible Polynomials over
    // Finite Fields".
    fn irreducible(&self) -> bool {
        for i in 1..=self.degree() / 2 {
            if self.gcd(qp(i, *self)) != 1 {
                return false;
            }
        }
        true
    }

    fn gcd(self, other: Self) -> Self {
        if other == 0 {
            return self;
        }

        if self == 0 {
            return other;
        }

        if self.degree() < other.degree() {
            self.gcd(other.modulo(&self))
        } else {
            other.gcd(self.modulo(&other))
        }
    }

    fn add(self, other: Self) -> Self {
        self ^ other
    }

    fn mulmod(self, other: Self, modulo: Self) -> Self {
        if self == 0 || other == 0 {
            return 0;
        }

        let mut res: Self = 0;
        let mut a = self;
        let mut b = other;

        if b & 1 > 0 {
            res = res.add(a).modulo(&modulo);
        }

        while b != 0 {
            a = (a << 1).modulo(&modulo);
            b >>= 1;
            if b & 1 > 0 {
                res = res.add(a).modulo(&modulo);
            }
        }

        res
    }
}

// qp computes the polynomial (x^(2^p)-x) mod g. This is needed for the
// reducibility test.
fn qp(p: i32, g: Polynom64) -> Polynom64 {
    // start with x
    let mut res: Polynom64 = 2;

    for _ in 0..p {
        // repeatedly square res
        res = res.mulmod(res, g);
    }

    // add x
    res.add(2).modulo(&g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hasher::hash;
    use insta::assert_ron_snapshot;
    use rand::prelude::*;
    use std::io::{Cursor, repeat};

    /// The Splitmask is used to determine if a chunk is a chunk boundary.
    const SIZE: usize = 1 << 20;
    /// The size of a megabyte.
    const MB: usize = 1024 * constants::KB;
    /// The minimum size of a chunk.
    const MIN_SIZE: usize = 512 * constants::KB;
    /// The maximum size of a chunk.
    const MAX_SIZE: usize = 8 * MB;

    fn chunker<R: Read + Send>(reader: R, size_hint: usize) -> ChunkIter<R> {
        let tables = std::sync::Arc::new(RabinTables::new(0x003D_A335_8B4D_C173));
        ChunkIter::new(tables, SIZE, MIN_SIZE, MAX_SIZE, reader, size_hint).unwrap()
    }

    #[test]
    fn chunk_random() {
        const RANDOM_DATA_SIZE: usize = 32 * 1024 * 1024;
        const SEED: u64 = 23;
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut data = vec![0u8; RANDOM_DATA_SIZE];
        rng.fill_bytes(&mut data);
        let mut reader = Cursor::new(data);
        let chunker = chunker(&mut reader, 0);
        let chunks: Vec<_> = chunker
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (chunk.len(), hash(&chunk))
            })
            .collect();

        assert_ron_snapshot!(chunks);
    }

    #[test]
    fn chunk_empty() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 0);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_empty_wrong_hint() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 100);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_zeros() {
        let mut reader = repeat(0u8);
        let mut chunker = chunker(&mut reader, usize::MAX);

        let chunk = chunker.next().unwrap().unwrap();
        assert_eq!(MIN_SIZE, chunk.len());
    }
}
