use std::io::Read;

mod fixed_size;
pub mod rabin;

use fixed_size::ChunkIter as FixedSizeChunkIter;
use rabin::ChunkIter as RabinChunkIter;

use crate::{
    RusticResult,
    repofile::{ConfigFile, configfile::Chunker},
};

/// speechvault patch: the rolling hash's tables depend only on the repository's polynomial,
/// but 0.13.0 built them (16k polynomial reductions) for every file: 19% of a backup's CPU
/// when most files are small. Built once per polynomial here and shared.
fn tables_for(poly: u64) -> std::sync::Arc<rabin::RabinTables> {
    use std::sync::{Arc, Mutex};
    static TABLES: Mutex<Option<(u64, Arc<rabin::RabinTables>)>> = Mutex::new(None);
    let mut cached = TABLES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match cached.as_ref() {
        Some((p, tables)) if *p == poly => tables.clone(),
        _ => {
            let tables = Arc::new(rabin::RabinTables::new(poly));
            *cached = Some((poly, tables.clone()));
            tables
        }
    }
}

/// `ChunkIter` is an iterator that chunks data.
pub(crate) enum ChunkIter<R: Read + Send> {
    Rabin(Box<RabinChunkIter<R>>),
    FixedSize(FixedSizeChunkIter<R>),
}

impl<R: Read + Send> ChunkIter<R> {
    pub(crate) fn from_config(
        config: &ConfigFile,
        reader: R,
        size_hint: usize,
    ) -> RusticResult<Self> {
        let iter = match config.chunker() {
            Chunker::Rabin => {
                let poly = config.poly()?;
                let tables = tables_for(poly);
                Self::Rabin(Box::new(RabinChunkIter::new(
                    tables,
                    config.chunk_size(),
                    config.chunk_min_size(),
                    config.chunk_max_size(),
                    reader,
                    size_hint,
                )?))
            }
            Chunker::FixedSize => Self::FixedSize(FixedSizeChunkIter::new(
                config.chunk_size(),
                reader,
                size_hint,
            )),
        };
        Ok(iter)
    }
}

impl<R: Read + Send> Iterator for ChunkIter<R> {
    type Item = RusticResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Rabin(rabin) => rabin.next(),
            Self::FixedSize(fixed_size) => fixed_size.next(),
        }
    }
}

/// speechvault patch: the lengths of the chunks the Rabin chunker cuts `reader` into with
/// restic's sizes (512 KiB to 8 MiB, 1 MiB on average), for speechvault's tests of the
/// patched chunker against 0.13.0's. Only with the `speechvault-test-api` feature, which
/// speechvault enables for its own tests alone.
#[cfg(feature = "speechvault-test-api")]
#[doc(hidden)]
pub fn rabin_chunk_lengths(poly: u64, reader: impl Read + Send, size_hint: usize) -> RusticResult<Vec<usize>> {
    let iter = rabin::ChunkIter::new(tables_for(poly), 1 << 20, 512 * 1024, 8 << 20, reader, size_hint)?;
    iter.map(|chunk| chunk.map(|c| c.len())).collect()
}
