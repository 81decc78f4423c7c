//! Lists too long for memory, kept in temporary files: a bucket of a million objects must be
//! backed up, restored and verified in a few hundred megabytes.
//!
//! Two shapes serve every command:
//! - [`ObjectList`]: the backup's record of a bucket ([`ObjectEntry`] per object), one JSON
//!   line each, in *archive order*: by the SHA-256 of the key, which is also the order of the
//!   files in the bucket's snapshot (`<h0h1>/<sha256 of key>`). Written once, read as a stream.
//! - [`Listing`]: a bucket listing as the server gave it, spooled to disk with a 40-byte index
//!   entry per object in memory, then walked in archive order, so it can be merged with an
//!   [`ObjectList`] without holding either in memory.
//!
//! Both live in the system's temporary directory (or `SPEECHVAULT_TEMP_DIR`, or the directory
//! a command names) and disappear when dropped.

use crate::support::fs::temp_dir;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::manifest::ObjectEntry;
use crate::objstore::ObjectInfo;

pub type Result<T> = std::io::Result<T>;

/// The SHA-256 of a key: the object's place in archive order.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn bad_data(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

// ---------------------------------------------------------------------------------------------

/// A bucket's objects as the backup recorded them, in archive order, on disk.
#[derive(Debug)]
pub struct ObjectList {
    file: tempfile::TempPath,
    /// Objects in the list.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl ObjectList {
    /// A list from entries in memory (a format-1 manifest held them inline), put into
    /// archive order.
    pub fn from_entries(entries: Vec<ObjectEntry>) -> Result<Self> {
        let mut keyed: Vec<([u8; 32], ObjectEntry)> = entries.into_iter().map(|e| (key_digest(&e.key), e)).collect();
        keyed.sort_by_key(|a| a.0);
        let mut w = ObjectListWriter::new()?;
        for (_, e) in keyed {
            w.push(&e)?;
        }
        w.finish()
    }

    /// A list read from `r` (JSON lines in archive order, as stored in a backup); the order is
    /// checked as it is read.
    pub fn from_reader(r: impl Read) -> Result<Self> {
        let mut w = ObjectListWriter::new()?;
        for line in BufReader::new(r).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e: ObjectEntry = serde_json::from_str(&line).map_err(|e| bad_data(format!("object list: {e}")))?;
            w.push(&e)?;
        }
        w.finish()
    }

    /// The file holding the list (JSON lines).
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The entries, in archive order.
    pub fn iter(&self) -> Result<ObjectListIter> {
        Ok(ObjectListIter { lines: BufReader::with_capacity(1 << 16, File::open(&self.file)?).lines() })
    }
}

/// Reads an [`ObjectList`] entry by entry.
pub struct ObjectListIter {
    lines: std::io::Lines<BufReader<File>>,
}

impl Iterator for ObjectListIter {
    type Item = Result<ObjectEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if line.is_empty() {
                continue;
            }
            return Some(serde_json::from_str(&line).map_err(|e| bad_data(format!("object list: {e}"))));
        }
    }
}

/// Writes an [`ObjectList`]; entries must come in archive order (checked).
pub struct ObjectListWriter {
    out: BufWriter<File>,
    file: tempfile::TempPath,
    last: Option<[u8; 32]>,
    count: u64,
    bytes: u64,
}

impl ObjectListWriter {
    pub fn new() -> Result<Self> {
        let (f, path) = tempfile::Builder::new().prefix("speechvault-objects-").tempfile_in(temp_dir())?.into_parts();
        Ok(Self { out: BufWriter::with_capacity(1 << 16, f), file: path, last: None, count: 0, bytes: 0 })
    }

    pub fn push(&mut self, e: &ObjectEntry) -> Result<()> {
        let d = key_digest(&e.key);
        if self.last.is_some_and(|last| last >= d) {
            return Err(bad_data(format!("object list out of order (or a key twice) at {:?}", e.key)));
        }
        self.last = Some(d);
        serde_json::to_writer(&mut self.out, e).map_err(std::io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.count += 1;
        self.bytes += e.size;
        Ok(())
    }

    pub fn finish(mut self) -> Result<ObjectList> {
        self.out.flush()?;
        self.out.get_ref().sync_data().ok();
        Ok(ObjectList { file: self.file, count: self.count, bytes: self.bytes })
    }
}

// ---------------------------------------------------------------------------------------------

/// A bucket listing on disk, walkable in archive order.
pub struct Listing {
    file: File,
    _path: tempfile::TempPath,
    /// Per object: SHA-256 of its key, and where its record starts in the file.
    index: Vec<([u8; 32], u64)>,
    /// Objects and bytes listed.
    pub count: u64,
    pub bytes: u64,
}

/// Builds a [`Listing`] page by page.
pub struct ListingWriter {
    out: BufWriter<File>,
    path: tempfile::TempPath,
    offset: u64,
    index: Vec<([u8; 32], u64)>,
    bytes: u64,
}

impl ListingWriter {
    pub fn new() -> Result<Self> {
        let (f, path) = tempfile::Builder::new().prefix("speechvault-listing-").tempfile_in(temp_dir())?.into_parts();
        Ok(Self { out: BufWriter::with_capacity(1 << 16, f), path, offset: 0, index: Vec::new(), bytes: 0 })
    }

    pub fn push(&mut self, o: &ObjectInfo) -> Result<()> {
        let line = serde_json::to_vec(o).map_err(std::io::Error::other)?;
        self.index.push((key_digest(&o.key), self.offset));
        self.out.write_all(&line)?;
        self.out.write_all(b"\n")?;
        self.offset += line.len() as u64 + 1;
        self.bytes += o.size;
        Ok(())
    }

    /// Sorts the index into archive order. A key listed twice (a server's paging fault) is an
    /// error: the listing cannot be trusted.
    pub fn finish(mut self) -> Result<Listing> {
        self.out.flush()?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        self.index.sort_unstable_by_key(|a| a.0);
        if let Some(w) = self.index.windows(2).find(|w| w[0].0 == w[1].0) {
            let mut l = Listing { file, _path: self.path, index: Vec::new(), count: 0, bytes: 0 };
            let key = l.record(w[0].1).map(|o| o.key).unwrap_or_default();
            return Err(bad_data(format!("the listing holds key {key:?} twice")));
        }
        let count = self.index.len() as u64;
        self.index.shrink_to_fit();
        Ok(Listing { file, _path: self.path, index: self.index, count, bytes: self.bytes })
    }
}

impl Listing {
    fn record(&mut self, offset: u64) -> Result<ObjectInfo> {
        self.file.seek(SeekFrom::Start(offset))?;
        let mut r = BufReader::with_capacity(4096, &mut self.file);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        serde_json::from_slice(&line).map_err(|e| bad_data(format!("listing spool: {e}")))
    }

    /// The objects in archive order.
    pub fn into_iter_sorted(self) -> ListingIter {
        ListingIter { listing: self, next: 0 }
    }
}

/// Walks a [`Listing`] in archive order.
pub struct ListingIter {
    listing: Listing,
    next: usize,
}

impl ListingIter {
    /// The digest of the next object's key, without reading it.
    pub fn peek_digest(&self) -> Option<&[u8; 32]> {
        self.listing.index.get(self.next).map(|e| &e.0)
    }
}

impl Iterator for ListingIter {
    type Item = Result<ObjectInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let (_, off) = *self.listing.index.get(self.next)?;
        self.next += 1;
        Some(self.listing.record(off))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.listing.index.len() - self.next;
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> ObjectEntry {
        ObjectEntry {
            key: key.into(),
            size: key.len() as u64,
            etag: "e".into(),
            last_modified: "2026-01-01T00:00:00Z".into(),
            sha256: "s".into(),
            content_type: None,
            metadata: Default::default(),
            path: String::new(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn object_lists_keep_archive_order_and_refuse_disorder() {
        let keys = ["a", "b/c", "../x", "", "ü n i"];
        let list = ObjectList::from_entries(keys.iter().map(|k| entry(k)).collect()).unwrap();
        assert_eq!(list.count, 5);
        let back: Vec<ObjectEntry> = list.iter().unwrap().map(|e| e.unwrap()).collect();
        let digests: Vec<_> = back.iter().map(|e| key_digest(&e.key)).collect();
        assert!(digests.windows(2).all(|w| w[0] < w[1]));
        let again = ObjectList::from_reader(File::open(list.path()).unwrap()).unwrap();
        assert_eq!(again.count, 5);
        let mut w = ObjectListWriter::new().unwrap();
        w.push(&back[1]).unwrap();
        assert!(w.push(&back[0]).is_err());
        assert!(w.push(&back[1]).is_err());
    }

    #[test]
    fn listings_walk_in_archive_order_and_refuse_a_key_twice() {
        let mut w = ListingWriter::new().unwrap();
        for k in ["z", "a", "m/n"] {
            w.push(&ObjectInfo { key: k.into(), size: 1, etag: "e".into(), last_modified: "t".into() }).unwrap();
        }
        let l = w.finish().unwrap();
        let keys: Vec<String> = l.into_iter_sorted().map(|o| o.unwrap().key).collect();
        let mut expected = vec!["z", "a", "m/n"];
        expected.sort_by_key(|k| key_digest(k));
        assert_eq!(keys, expected);
        let mut w = ListingWriter::new().unwrap();
        for k in ["a", "a"] {
            w.push(&ObjectInfo { key: k.into(), size: 1, etag: "e".into(), last_modified: "t".into() }).unwrap();
        }
        assert!(w.finish().is_err());
    }
}
