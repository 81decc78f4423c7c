//! A stream of unknown length (pg_dump's stdout), cut into parts of exact size.
//!
//! rustic stores the size an entry declares before it is read, and a dump's size is unknown
//! until it ends. So the stream is read in parts of at most `part_size` bytes held in memory;
//! each part becomes one file `part-NNNNNN` with its exact size. A restore concatenates them
//! in name order.

use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};
use sha2::{Digest, Sha256};

use super::{Failures, file_meta, file_node};
use crate::support::interrupt::Stop;

/// What a [`StreamSource`] saw, for the manifest.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub bytes: u64,
    pub parts: u32,
    pub sha256: String,
}

/// Reads a stream in parts; see the module docs.
pub struct StreamSource {
    dir: PathBuf,
    reader: Mutex<Option<Box<dyn Read + Send>>>,
    part_size: usize,
    failures: Failures,
    stats: Arc<Mutex<StreamStats>>,
    stop: Stop,
}

impl StreamSource {
    pub fn new(dir: PathBuf, reader: Box<dyn Read + Send>, part_size: usize, failures: Failures, stop: Stop) -> Self {
        Self { dir, reader: Mutex::new(Some(reader)), part_size, failures, stats: Arc::default(), stop }
    }
    pub fn stats(&self) -> Arc<Mutex<StreamStats>> {
        self.stats.clone()
    }
}

/// The file name of part `n`.
pub fn part_name(n: u32) -> String {
    format!("part-{n:06}")
}

pub struct StreamIter {
    dir: PathBuf,
    reader: Option<Box<dyn Read + Send>>,
    part_size: usize,
    failures: Failures,
    stats: Arc<Mutex<StreamStats>>,
    hasher: Sha256,
    n: u32,
    stop: Stop,
}

impl Iterator for StreamIter {
    type Item = RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.n == 0 && self.reader.is_some() {
            // pg_dump is running and has not been read from: the crash tests stop here.
            crate::support::interrupt::pause_point("backup:pg_dump");
        }
        let reader = self.reader.as_mut()?;
        if self.stop.is_stopped() {
            self.failures.record(format!("reading {}: interrupted", self.dir.display()));
            self.reader = None;
            return None;
        }
        let mut buf = vec![0u8; self.part_size];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failures.record(format!("reading {}: {e}", self.dir.display()));
                    self.reader = None;
                    return None;
                }
            }
        }
        buf.truncate(filled);
        let at_end = filled < self.part_size;
        if filled == 0 && self.n > 0 {
            self.finish();
            return None;
        }
        self.hasher.update(&buf);
        if let Ok(mut s) = self.stats.lock() {
            s.bytes += filled as u64;
            s.parts = self.n + 1;
        }
        let path = self.dir.join(part_name(self.n));
        self.n += 1;
        if at_end {
            self.finish();
        }
        let node = file_node(&path, file_meta(filled as u64, Some(jiff::Timestamp::now()), None, &[]));
        Some(Ok(ReadSourceEntry { path, node, open: Some(Cursor::new(buf)) }))
    }
}

impl StreamIter {
    fn finish(&mut self) {
        self.reader = None;
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if let Ok(mut s) = self.stats.lock() {
            s.sha256 = digest;
        }
    }
}

impl ReadSource for StreamSource {
    type Open = Cursor<Vec<u8>>;
    type Iter = StreamIter;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let reader = self.reader.lock().ok().and_then(|mut r| r.take());
        if reader.is_none() {
            self.failures.record(format!("{}: stream was already consumed", self.dir.display()));
        }
        StreamIter {
            dir: self.dir.clone(),
            reader,
            part_size: self.part_size,
            failures: self.failures.clone(),
            stats: self.stats.clone(),
            hasher: Sha256::new(),
            n: 0,
            stop: self.stop.clone(),
        }
    }
}
