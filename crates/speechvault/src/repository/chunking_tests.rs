//! The chunker in `vendor/rustic_core` (patched for speed) cuts exactly where rustic_core
//! 0.13.0's does, for any data and however the reader hands it over: chunk boundaries decide
//! deduplication against every earlier backup, so they must never move.

use std::io::Read;

use rand::{RngCore, SeedableRng};
use rustic_cdc::{Rabin64, RollingHash64};

const POLY: u64 = 0x003D_A335_8B4D_C173;
const MIN: usize = 512 * 1024;
const MAX: usize = 8 << 20;
const MASK: u64 = (1 << 20) - 1;

/// rustic_core 0.13.0's Rabin chunker, byte by byte through `Rabin64::slide`.
fn reference_lengths(data: &[u8]) -> Vec<usize> {
    let mut rabin = Rabin64::new_with_polynom(6, &POLY);
    let (mut pos, mut lengths) = (0, Vec::new());
    while pos < data.len() {
        let start = pos;
        if data.len() - pos < MIN {
            lengths.push(data.len() - start);
            break;
        }
        pos += MIN;
        rabin.reset_and_prefill_window(&mut data[pos - 64..pos].iter().copied());
        while pos - start < MAX && (rabin.hash & MASK) != 0 && pos < data.len() {
            rabin.slide(data[pos]);
            pos += 1;
        }
        lengths.push(pos - start);
    }
    lengths
}

/// Hands out at most `step` bytes per read, as a network source may.
struct Dribble<'a>(&'a [u8], usize);

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn the_patched_chunker_cuts_where_rustic_core_0_13_did() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut random = vec![0u8; 24 << 20];
    rng.fill_bytes(&mut random);
    // Text-like (compressible, cut by content), all zeros (cut at the minimum), a constant
    // byte whose window hash never matches (cut at the maximum), short and exact-minimum tails.
    let text: Vec<u8> = (0..12 << 20).map(|i| b"the quick brown fox "[i % 20] ^ u8::from(i % 4099 == 0)).collect();
    let zeros = vec![0u8; 3 * MIN + 5];
    let constant = vec![0x5au8; 2 * MAX + 77];
    assert!(reference_lengths(&constant).contains(&MAX), "the constant input reaches the maximum size");
    let inputs: Vec<(&str, &[u8])> = vec![
        ("random", &random),
        ("text", &text),
        ("zeros", &zeros),
        ("short", &random[..MIN - 1]),
        ("exactly the minimum", &random[..MIN]),
        ("minimum and one", &random[..MIN + 1]),
        ("empty", &[]),
        ("constant", &constant),
    ];
    for (name, data) in inputs {
        let expected = reference_lengths(data);
        assert_eq!(expected.iter().sum::<usize>(), data.len());
        for step in [usize::MAX, 1 << 20, 65_536, 4096, 777, 63, 1] {
            if step < 4096 && data.len() > 2 * MIN {
                continue;
            }
            let got = rustic_core::rabin_chunk_lengths(POLY, Dribble(data, step), data.len()).unwrap();
            assert_eq!(got, expected, "{name}, reads of {step} bytes");
        }
    }
}
