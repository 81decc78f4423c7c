//! What the repository reads during a backup: rustic `ReadSource`s for a database dump
//! ([`stream`]), a bucket ([`bucket`]), and one in-memory file.
//!
//! rustic's archiver only logs errors raised inside a source and saves the snapshot anyway,
//! so every source here records failures in a shared [`Failures`]; the backup deletes the
//! snapshot if any were recorded. Every entry carries its exact size before it is read
//! (rustic stores the declared size), and entries come in `Path::cmp` order.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};

pub mod bucket;
pub mod stream;

pub use bucket::{PlannedObject, object_path, plan_objects};
pub use stream::{StreamSource, StreamStats, part_name};

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

/// Standard base64 with padding (restic stores extended attribute values so; S3 sends
/// Content-MD5 so).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
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
// One in-memory file.

/// A single small file held in memory (the manifest).
pub struct MemorySource {
    path: PathBuf,
    data: Vec<u8>,
}

impl MemorySource {
    pub fn new(path: PathBuf, data: Vec<u8>) -> Self {
        Self { path, data }
    }
}

impl ReadSource for MemorySource {
    type Open = Cursor<Vec<u8>>;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.data.len() as u64))
    }

    fn entries(&self) -> Self::Iter {
        let node = file_node(&self.path, file_meta(self.data.len() as u64, Some(jiff::Timestamp::now()), None, &[]));
        vec![Ok(ReadSourceEntry { path: self.path.clone(), node, open: Some(Cursor::new(self.data.clone())) })]
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Stop;
    use crate::objstore::ObjectInfo;
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
        let infos = keys
            .iter()
            .map(|k| ObjectInfo { key: k.clone(), size: 1, etag: String::new(), last_modified: String::new() })
            .collect();
        let planned = plan_objects(root, infos);
        crate::repository::check_path_order(planned.iter().map(|p| p.path.as_path())).unwrap();
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
