//! What the repository reads during a backup: rustic `ReadSource`s for a database dump, a
//! bucket, and one in-memory file.
//!
//! rustic's archiver only logs errors raised inside a source and saves the snapshot anyway,
//! so every source here records failures in a shared [`Failures`]; the backup deletes the
//! snapshot if any were recorded. Every entry carries its exact size before it is read
//! (rustic stores the declared size), and entries come in `Path::cmp` order.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};
use sha2::{Digest, Sha256};

use crate::objstore::{ObjectInfo, ObjectStore};

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
fn drain(cur: &mut Bytes, buf: &mut [u8]) -> Option<usize> {
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

fn file_node(path: &Path, meta: Metadata) -> Node {
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

// ---------------------------------------------------------------------------------------------
// A stream of unknown length (pg_dump's stdout), cut into parts of exact size.

/// What a [`StreamSource`] saw, for the manifest.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub bytes: u64,
    pub parts: u32,
    pub sha256: String,
}

/// Reads a stream in parts of at most `part_size` bytes held in memory; each part becomes one
/// file `part-NNNNN` with its exact size. A restore concatenates them in name order.
pub struct StreamSource {
    dir: PathBuf,
    reader: Mutex<Option<Box<dyn Read + Send>>>,
    part_size: usize,
    failures: Failures,
    stats: Arc<Mutex<StreamStats>>,
}

impl StreamSource {
    pub fn new(dir: PathBuf, reader: Box<dyn Read + Send>, part_size: usize, failures: Failures) -> Self {
        Self { dir, reader: Mutex::new(Some(reader)), part_size, failures, stats: Arc::default() }
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
}

impl Iterator for StreamIter {
    type Item = RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
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
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A bucket: objects fetched ahead in parallel, digested while they stream.

/// Where an object's content lives in a bucket snapshot: `<root>/<h0h1>/<sha256(key)>`.
///
/// S3 keys are not paths (`a` and `a/b` are both objects; `..`, `.` and empty segments; a
/// trailing `/`; segments over 255 bytes), so keys are not used as paths at all. The digest
/// layout is injective for every key and spreads objects evenly over 256 directories (each
/// directory is one tree object in memory: about 4,000 entries per million objects, where a
/// deeper fan-out would cost one tree load per object on every incremental run). The key
/// itself is kept in the file's `user.s3.key` attribute and in the manifest.
pub fn object_path(root: &Path, key: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    root.join(&h[..2]).join(&h)
}

/// One object to back up, with its place in the snapshot.
#[derive(Debug, Clone)]
pub struct PlannedObject {
    pub info: ObjectInfo,
    pub path: PathBuf,
}

/// Sorts objects into the order the archiver needs.
pub fn plan_objects(root: &Path, objects: Vec<ObjectInfo>) -> Vec<PlannedObject> {
    let mut planned: Vec<PlannedObject> =
        objects.into_iter().map(|info| PlannedObject { path: object_path(root, &info.key), info }).collect();
    planned.sort_by(|a, b| a.path.cmp(&b.path));
    planned
}

/// What the prefetcher sends a reader.
enum Chunk {
    Data(Bytes),
    Failed(String),
    /// The object is complete. Carries the transfer slot, so the slot is freed only when the
    /// archiver has read the whole object: memory stays within `parallel` objects' chunks.
    End(#[allow(dead_code, reason = "held only so that dropping it frees the slot")] tokio::sync::OwnedSemaphorePermit),
}

/// Reads one object's bytes as the prefetcher delivers them.
pub struct ObjectReader {
    key: String,
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    cur: Bytes,
    read: u64,
    expected: u64,
    done: bool,
    failures: Failures,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(n) = drain(&mut self.cur, buf) {
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => {
                    self.read += b.len() as u64;
                    self.cur = b;
                }
                Some(Chunk::Failed(msg)) => {
                    self.done = true;
                    self.failures.record(format!("object {:?}: {msg}", self.key));
                    return Err(std::io::Error::other(msg));
                }
                Some(Chunk::End(_)) | None => {
                    self.done = true;
                    if self.read != self.expected {
                        let msg = format!("object {:?}: got {} of {} bytes", self.key, self.read, self.expected);
                        self.failures.record(msg.clone());
                        return Err(std::io::Error::other(msg));
                    }
                }
            }
        }
    }
}

/// How the archiver gets an object's bytes.
pub enum ObjectOpen {
    /// Fetched ahead by the prefetcher.
    Ahead(ObjectReader),
    /// Unchanged since the previous backup: fetched only if rustic does read it (its parent
    /// snapshot lacks the content), which normally never happens.
    Lazy(Box<LazyReader>),
}

impl Read for ObjectOpen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Ahead(r) => r.read(buf),
            Self::Lazy(r) => r.read(buf),
        }
    }
}

/// Reads an object on demand, from a thread outside the runtime.
pub struct LazyReader {
    handle: tokio::runtime::Handle,
    store: ObjectStore,
    bucket: String,
    info: ObjectInfo,
    index: usize,
    digests: Digests,
    failures: Failures,
    body: Option<crate::objstore::ObjectBody>,
    cur: Bytes,
    hasher: Sha256,
    done: bool,
}

impl LazyReader {
    fn fail(&mut self, msg: String) -> std::io::Error {
        self.done = true;
        self.failures.record(format!("object {:?}: {msg}", self.info.key));
        std::io::Error::other(msg)
    }
}

impl Read for LazyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(n) = drain(&mut self.cur, buf) {
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if self.body.is_none() {
                let got = self.handle.block_on(self.store.get_object(&self.bucket, &self.info.key, Some(&self.info)));
                match got {
                    Ok(b) => self.body = Some(b),
                    Err(e) => return Err(self.fail(e.to_string())),
                }
            }
            let Some(body) = self.body.as_mut() else { return Ok(0) };
            match self.handle.block_on(body.chunk()) {
                Ok(Some(c)) => {
                    self.hasher.update(&c);
                    self.cur = c;
                }
                Ok(None) => {
                    self.done = true;
                    let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
                    if let Ok(mut d) = self.digests.lock() {
                        d[self.index] = Some((digest, body.head.clone()));
                    }
                }
                Err(e) => return Err(self.fail(e.to_string())),
            }
        }
    }
}

/// The objects of one bucket, in archive order.
pub struct BucketSource {
    entries: Mutex<Option<Vec<(PathBuf, Node, ObjectOpen)>>>,
    total: u64,
}

impl ReadSource for BucketSource {
    type Open = ObjectOpen;
    type Iter = std::iter::Map<
        std::vec::IntoIter<(PathBuf, Node, ObjectOpen)>,
        fn((PathBuf, Node, ObjectOpen)) -> RusticResult<ReadSourceEntry<ObjectOpen>>,
    >;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.total))
    }

    fn entries(&self) -> Self::Iter {
        let list = self.entries.lock().ok().and_then(|mut e| e.take()).unwrap_or_default();
        list.into_iter().map(|(path, node, open)| Ok(ReadSourceEntry { path, node, open: Some(open) }))
    }
}

/// What a GET saw of each object (by position in the plan): its SHA-256 and its headers
/// (content type and user metadata are not in listings). Filled in as objects finish.
pub type Digests = Arc<Mutex<Vec<Option<(String, crate::objstore::ObjectHead)>>>>;

/// A fixed pseudo-time derived from an ETag, stored as the node's ctime: rustic reuses a
/// parent's content only when size, mtime and ctime all match, so an object rewritten with the
/// same size within the same second (same last-modified) still counts as changed.
pub fn etag_time(etag: &str) -> jiff::Timestamp {
    let h = Sha256::digest(etag.as_bytes());
    let secs = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    jiff::Timestamp::from_second(i64::from(secs)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Builds the source for `planned` objects and starts fetching them, `parallel` at a time, on
/// the current tokio runtime. Each GET is pinned to the listed ETag and size.
///
/// `known[i]` is what the previous backup recorded for object `i` when it is unchanged since
/// (same key, size, ETag and last-modified): such objects are not fetched ahead, since rustic
/// takes their content from the parent snapshot; their digest and headers come from `known`.
pub fn bucket_source(
    store: &ObjectStore,
    bucket: &str,
    planned: &[PlannedObject],
    known: Vec<Option<(String, crate::objstore::ObjectHead)>>,
    parallel: usize,
    failures: &Failures,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> (BucketSource, Digests) {
    let unchanged: Vec<bool> = known.iter().map(Option::is_some).collect();
    let digests: Digests = Arc::new(Mutex::new(known));
    let handle = tokio::runtime::Handle::current();
    let mut entries = Vec::with_capacity(planned.len());
    let mut senders = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let mtime = p.info.last_modified.parse::<jiff::Timestamp>().ok();
        let meta = file_meta(
            p.info.size,
            mtime,
            Some(etag_time(&p.info.etag)),
            &[("user.s3.key", p.info.key.as_bytes()), ("user.s3.etag", p.info.etag.as_bytes())],
        );
        let node = file_node(&p.path, meta);
        let open = if unchanged[i] {
            senders.push(None);
            ObjectOpen::Lazy(Box::new(LazyReader {
                handle: handle.clone(),
                store: store.clone(),
                bucket: bucket.to_string(),
                info: p.info.clone(),
                index: i,
                digests: digests.clone(),
                failures: failures.clone(),
                body: None,
                cur: Bytes::new(),
                hasher: Sha256::new(),
                done: false,
            }))
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(8);
            senders.push(Some(tx));
            ObjectOpen::Ahead(ObjectReader {
                key: p.info.key.clone(),
                rx,
                cur: Bytes::new(),
                read: 0,
                expected: p.info.size,
                done: false,
                failures: failures.clone(),
            })
        };
        entries.push((p.path.clone(), node, open));
    }
    let total = planned.iter().map(|p| p.info.size).sum();
    let infos: Vec<ObjectInfo> = planned.iter().map(|p| p.info.clone()).collect();
    let store = store.clone();
    let bucket = bucket.to_string();
    let digests2 = digests.clone();
    tokio::spawn(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        for (i, (info, tx)) in infos.into_iter().zip(senders).enumerate() {
            let Some(tx) = tx else { continue };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            if tx.is_closed() {
                continue;
            }
            let (store, bucket, digests, progress) =
                (store.clone(), bucket.clone(), digests2.clone(), progress.clone());
            tokio::spawn(async move {
                match fetch(&store, &bucket, &info, &tx, progress.as_deref()).await {
                    Ok(Some(d)) => {
                        if let Ok(mut v) = digests.lock() {
                            v[i] = Some(d);
                        }
                        let _ = tx.send(Chunk::End(permit)).await;
                    }
                    Ok(None) => {}
                    Err(msg) => {
                        let _ = tx.send(Chunk::Failed(msg)).await;
                    }
                }
            });
        }
    });
    (BucketSource { entries: Mutex::new(Some(entries)), total }, digests)
}

/// Streams one object into `tx`; returns its SHA-256 and headers, or `None` if the reader
/// went away.
async fn fetch(
    store: &ObjectStore,
    bucket: &str,
    info: &ObjectInfo,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> Result<Option<(String, crate::objstore::ObjectHead)>, String> {
    let mut body = store.get_object(bucket, &info.key, Some(info)).await.map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.chunk().await.map_err(|e| e.to_string())? {
        hasher.update(&chunk);
        let n = chunk.len() as u64;
        if tx.send(Chunk::Data(chunk)).await.is_err() {
            return Ok(None);
        }
        if let Some(p) = progress {
            p(n);
        }
    }
    Ok(Some((hex::encode(hasher.finalize()), body.head.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        );
        let parts: Vec<_> = src.entries().map(|e| e.unwrap()).collect();
        assert_eq!(parts.iter().map(|p| p.node.meta.size).collect::<Vec<_>>(), [1000, 1000, 500]);
        let stats = src.stats().lock().unwrap().clone();
        assert_eq!(stats.bytes, 2500);
        assert_eq!(stats.sha256, hex::encode(Sha256::digest(&data)));
        let exact =
            StreamSource::new(PathBuf::from("/d"), Box::new(Cursor::new(vec![1u8; 2000])), 1000, Failures::default());
        assert_eq!(exact.entries().count(), 2);
    }
}
