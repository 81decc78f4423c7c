//! What the repository reads during a backup: rustic `ReadSource`s for a database dump
//! ([`stream`]), a bucket ([`bucket`]), and one in-memory file.
//!
//! rustic's archiver only logs errors raised inside a source and saves the snapshot anyway,
//! so every source here records failures in a shared [`Failures`]; the backup deletes the
//! snapshot if any were recorded. Every entry carries its exact size before it is read
//! (rustic stores the declared size), and entries come in `Path::cmp` order.

use crate::support::encoding::base64;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};

pub(crate) mod bucket;
pub(crate) mod stream;

pub use bucket::object_path;
pub use stream::StreamSource;

/// Failures seen inside a source, where rustic would only log them.
#[derive(Debug, Clone, Default)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    pub fn record(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::error!("{msg}");
        if let Ok(mut v) = self.0.lock() {
            v.push(msg);
        }
    }
    pub fn list(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Copies from `cur` into `buf`; `None` when `cur` is exhausted.
pub(crate) fn drain(cur: &mut Bytes, buf: &mut [u8]) -> Option<usize> {
    if !cur.has_remaining() {
        return None;
    }
    let n = buf.len().min(cur.remaining());
    cur.copy_to_slice(&mut buf[..n]);
    Some(n)
}

/// Builds file metadata: exact size, modification time, and `user.*` extended attributes.
pub fn file_meta(
    size: u64,
    mtime: Option<jiff::Timestamp>,
    ctime: Option<jiff::Timestamp>,
    xattrs: &[(&str, &[u8])],
) -> Metadata {
    let mut meta = Metadata { size, mtime, ctime, mode: Some(0o100600), ..Metadata::default() };
    if !xattrs.is_empty() {
        // rustic does not export its attribute type; build it through its serde form.
        let list: Vec<serde_json::Value> =
            xattrs.iter().map(|(n, v)| serde_json::json!({ "name": n, "value": base64(v) })).collect();
        match serde_json::from_value(serde_json::Value::Array(list)) {
            Ok(attrs) => meta.extended_attributes = attrs,
            Err(e) => tracing::warn!("cannot build extended attributes: {e}"),
        }
    }
    meta
}

pub(crate) fn file_node(path: &Path, meta: Metadata) -> Node {
    let name = path.file_name().unwrap_or_default();
    Node::new_node(name, NodeType::File, meta)
}

// ---------------------------------------------------------------------------------------------
// A few files: the manifest and the object lists.

/// Where one file of a [`FilesSource`] comes from.
pub enum FileData {
    Memory(Vec<u8>),
    /// A local (temporary) file, read when the archiver gets to it.
    Local(PathBuf),
}

/// A few files at given paths of the snapshot: the manifest (in memory) and the buckets'
/// object lists (temporary files, streamed).
pub struct FilesSource {
    files: Vec<(PathBuf, FileData)>,
}

impl FilesSource {
    pub fn new(mut files: Vec<(PathBuf, FileData)>) -> Self {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Self { files }
    }
}

/// Reads one file of a [`FilesSource`].
pub enum FileOpen {
    Memory(Cursor<Vec<u8>>),
    Local(std::io::BufReader<std::fs::File>),
}

impl Read for FileOpen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Memory(c) => c.read(buf),
            Self::Local(f) => f.read(buf),
        }
    }
}

impl ReadSource for FilesSource {
    type Open = FileOpen;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<FileOpen>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        let mut total = 0;
        for (_, d) in &self.files {
            total += match d {
                FileData::Memory(v) => v.len() as u64,
                FileData::Local(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            };
        }
        Ok(Some(total))
    }

    fn entries(&self) -> Self::Iter {
        let now = Some(jiff::Timestamp::now());
        let mut out = Vec::new();
        for (path, data) in &self.files {
            let entry = match data {
                FileData::Memory(v) => {
                    let node = file_node(path, file_meta(v.len() as u64, now, None, &[]));
                    Ok(ReadSourceEntry {
                        path: path.clone(),
                        node,
                        open: Some(FileOpen::Memory(Cursor::new(v.clone()))),
                    })
                }
                FileData::Local(local) => match std::fs::File::open(local).and_then(|f| Ok((f.metadata()?.len(), f))) {
                    Ok((len, f)) => {
                        let node = file_node(path, file_meta(len, now, None, &[]));
                        let open = FileOpen::Local(std::io::BufReader::with_capacity(1 << 16, f));
                        Ok(ReadSourceEntry { path: path.clone(), node, open: Some(open) })
                    }
                    Err(e) => Err(rustic_core::RusticError::with_source(
                        rustic_core::ErrorKind::InputOutput,
                        "cannot open a temporary file of the manifest",
                        e,
                    )),
                },
            };
            out.push(entry);
        }
        out.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::interrupt::Stop;
    use sha2::{Digest, Sha256};

    #[test]
    fn object_paths_are_injective_sorted_and_shallow() {
        let keys = ["a", "a/b", "a/../b", "a//b", "a/", "/a", "x".repeat(1024).as_str(), "ü/日本"].map(String::from);
        let root = Path::new("/buckets/b");
        let paths: std::collections::HashSet<PathBuf> = keys.iter().map(|k| object_path(root, k)).collect();
        assert_eq!(paths.len(), keys.len());
        for p in &paths {
            assert_eq!(p.components().count(), 5, "{p:?}");
            assert!(p.file_name().unwrap().len() == 64);
        }
        // Sorted by path, as the bucket source emits them, they are in the archiver's order.
        let mut sorted: Vec<PathBuf> = paths.into_iter().collect();
        sorted.sort();
        crate::repository::check_path_order(sorted.iter().map(PathBuf::as_path)).unwrap();
    }

    #[test]
    fn base64_and_metadata_round_trip_through_rustic_types() {
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"f"), "Zg==");
        let m = file_meta(5, None, None, &[("user.s3.key", b"a/../b")]);
        assert_eq!(m.size, 5);
        assert_eq!(m.extended_attributes.len(), 1);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["extended_attributes"][0]["name"], "user.s3.key");
    }

    #[test]
    fn stream_source_cuts_exact_parts_and_digests_the_whole() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let src = StreamSource::new(
            PathBuf::from("/databases/x"),
            Box::new(Cursor::new(data.clone())),
            1000,
            Failures::default(),
            Stop::never(),
        );
        let parts: Vec<_> = src.entries().map(|e| e.unwrap()).collect();
        assert_eq!(parts.iter().map(|p| p.node.meta.size).collect::<Vec<_>>(), [1000, 1000, 500]);
        let stats = src.stats().lock().unwrap().clone();
        assert_eq!(stats.bytes, 2500);
        assert_eq!(stats.sha256, hex::encode(Sha256::digest(&data)));
        let exact = StreamSource::new(
            PathBuf::from("/d"),
            Box::new(Cursor::new(vec![1u8; 2000])),
            1000,
            Failures::default(),
            Stop::never(),
        );
        assert_eq!(exact.entries().count(), 2);
    }
}
