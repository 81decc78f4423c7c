//! A bucket as a rustic source: objects fetched ahead in parallel, digested while they stream.
//!
//! rustic stores the size an entry declares, so an entry is handed to the archiver only once
//! its GET has answered and the version being read is known. That is what makes a live
//! installation safe to back up: an object deleted between the listing and its GET is
//! re-listed and, if gone, left out and recorded as vanished; an object overwritten in between
//! is re-listed and its new version is read (a bounded number of times). Every GET is pinned
//! to the listed ETag and size ([`ObjectStore::get_object`]).
//!
//! The prefetcher hands the archiver one slot per object, in archive order, through a queue of
//! [`LOOKAHEAD`] slots; GETs in flight are bounded by the transfer permits, and a permit is
//! freed only when the archiver has read its object, so memory stays within `parallel`
//! objects' chunks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::repofile::Node;
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};
use sha2::{Digest, Sha256};

use super::{Failures, drain, file_meta, file_node};
use crate::model::manifest::ObjectEntry;
use crate::model::spool::{ObjectList, ObjectListWriter};
use crate::objstore::{ObjectHead, ObjectInfo, ObjectStore};
use crate::support::interrupt::Stop;

/// How often an object that changed under us is re-listed before the backup gives up on it.
const MAX_RELISTS: u32 = 3;

/// How many objects the prefetcher may queue ahead of the archiver. Slots of unchanged objects
/// are a few hundred bytes; the GETs in flight are bounded by the transfer permits, not by
/// this. With the queue only as long as the transfers (as it was), an incremental backup
/// with 1% of objects changed started each GET only when the archiver had nearly reached it:
/// one GET at a time, 4.9 s of waiting for 200 objects on Garage.
const LOOKAHEAD: usize = 4096;

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

/// One object to back up, in archive order; `known` is what the previous backup recorded
/// for it when it is unchanged since (same key, size, ETag and last-modified): such an object
/// is not fetched, rustic takes its content from the parent snapshot.
#[derive(Debug, Clone)]
pub struct Planned {
    pub info: ObjectInfo,
    pub path: PathBuf,
    pub known: Option<ObjectEntry>,
    /// The previous backup had this key, with other content, as plain text (JSON, XML,
    /// text/*): its new bytes are sampled for what encryption leaves (see
    /// [`crate::model::anomalies::looks_random`]).
    pub was_text: bool,
}

/// What became of one planned object.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Backed up: its entry for the manifest (the version read, its SHA-256 and headers).
    Read(Box<ObjectEntry>),
    /// Deleted between the listing and its GET.
    Vanished(String),
}

/// Collects outcomes as objects finish, in any order, and writes their entries to the
/// bucket's [`ObjectList`] in plan order. Only the objects in flight wait in memory.
#[derive(Clone)]
pub struct EntrySink(Arc<Mutex<SinkState>>);

struct SinkState {
    /// Rewritten text objects sampled, and how many of them now look random.
    text_rewritten: u64,
    text_randomized: u64,
    next: usize,
    pending: std::collections::BTreeMap<usize, Outcome>,
    writer: Option<ObjectListWriter>,
    vanished: Vec<String>,
    error: Option<String>,
}

impl EntrySink {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(Arc::new(Mutex::new(SinkState {
            text_rewritten: 0,
            text_randomized: 0,
            next: 0,
            pending: Default::default(),
            writer: Some(ObjectListWriter::new()?),
            vanished: Vec::new(),
            error: None,
        }))))
    }

    /// Records the outcome of the object at `index` of the plan.
    pub fn complete(&self, index: usize, outcome: Outcome) {
        let Ok(mut st) = self.0.lock() else { return };
        st.pending.insert(index, outcome);
        loop {
            let next = st.next;
            let Some(o) = st.pending.remove(&next) else { break };
            st.next += 1;
            match o {
                Outcome::Vanished(key) => st.vanished.push(key),
                Outcome::Read(entry) => {
                    let written = st.writer.as_mut().map(|w| w.push(&entry));
                    if let Some(Err(e)) = written
                        && st.error.is_none()
                    {
                        st.error = Some(format!("writing the object list: {e}"));
                    }
                }
            }
        }
    }

    /// Counts a rewritten text object, and whether its new bytes look random.
    fn text_sampled(&self, random: bool) {
        if let Ok(mut st) = self.0.lock() {
            st.text_rewritten += 1;
            st.text_randomized += u64::from(random);
        }
    }

    /// Rewritten text objects sampled, and how many now look random.
    pub fn text_samples(&self) -> (u64, u64) {
        self.0.lock().map(|st| (st.text_rewritten, st.text_randomized)).unwrap_or((0, 0))
    }

    /// The list, once all `planned` objects have an outcome; and the keys that vanished.
    pub fn finish(&self, planned: usize) -> Result<(ObjectList, Vec<String>), String> {
        let mut st = self.0.lock().map_err(|_| "object list lost".to_string())?;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if st.next != planned {
            return Err(format!("{} of {planned} objects were not read completely", planned - st.next));
        }
        let writer = st.writer.take().ok_or_else(|| "object list already finished".to_string())?;
        let list = writer.finish().map_err(|e| format!("writing the object list: {e}"))?;
        let mut vanished = std::mem::take(&mut st.vanished);
        vanished.sort();
        Ok((list, vanished))
    }
}

fn entry_of(info: ObjectInfo, path: &Path, sha256: String, head: &ObjectHead) -> ObjectEntry {
    ObjectEntry {
        key: info.key,
        size: info.size,
        etag: info.etag,
        last_modified: info.last_modified,
        sha256,
        content_type: head.content_type.clone(),
        metadata: head.metadata.clone(),
        path: path.display().to_string(),
        attrs: head.attrs.clone(),
    }
}

/// A fixed pseudo-time derived from an ETag, stored as the node's ctime: rustic reuses a
/// parent's content only when size, mtime and ctime all match, so an object rewritten with the
/// same size within the same second (same last-modified) still counts as changed.
pub fn etag_time(etag: &str) -> jiff::Timestamp {
    let h = Sha256::digest(etag.as_bytes());
    let secs = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    jiff::Timestamp::from_second(i64::from(secs)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn node_for(path: &Path, info: &ObjectInfo) -> Node {
    let mtime = info.last_modified.parse::<jiff::Timestamp>().ok();
    let meta = file_meta(
        info.size,
        mtime,
        Some(etag_time(&info.etag)),
        &[("user.s3.key", info.key.as_bytes()), ("user.s3.etag", info.etag.as_bytes())],
    );
    file_node(path, meta)
}

/// What a fetch task tells the archiver about its object.
enum Msg {
    /// The GET answered: this version's bytes follow.
    Head(ObjectInfo),
    Data(Bytes),
    Failed(String),
    Vanished,
    /// The object is complete. Carries the transfer slot, so the slot is freed only when the
    /// archiver has read the whole object.
    End(#[allow(dead_code, reason = "held only so that dropping it frees the slot")] tokio::sync::OwnedSemaphorePermit),
}

/// One object, in archive order.
enum Slot {
    /// Unchanged since the previous backup: rustic takes the content from the parent.
    Known { path: PathBuf, info: ObjectInfo, sha256: String },
    /// Being fetched: the first message says which version, or that it is gone.
    Fetch { path: PathBuf, key: String, rx: tokio::sync::mpsc::Receiver<Msg>, last: bool },
}

/// Reads one object's bytes as the prefetcher delivers them.
pub struct ObjectReader {
    key: String,
    rx: tokio::sync::mpsc::Receiver<Msg>,
    cur: Bytes,
    read: u64,
    expected: u64,
    done: bool,
    last: bool,
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
                Some(Msg::Data(b)) => {
                    if self.read == 0 {
                        crate::support::interrupt::pause_point("backup:objects");
                    }
                    self.read += b.len() as u64;
                    self.cur = b;
                }
                Some(Msg::Failed(msg)) => {
                    self.done = true;
                    self.failures.record(format!("object {:?}: {msg}", self.key));
                    return Err(std::io::Error::other(msg));
                }
                Some(Msg::End(_)) | None | Some(Msg::Head(_)) | Some(Msg::Vanished) => {
                    self.done = true;
                    if self.read != self.expected {
                        let msg = format!("object {:?}: got {} of {} bytes", self.key, self.read, self.expected);
                        self.failures.record(msg.clone());
                        return Err(std::io::Error::other(msg));
                    }
                    if self.last {
                        // The archiver now finishes the bucket's packs and snapshot.
                        crate::support::interrupt::pause_point("backup:snapshot");
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
    /// What the previous backup recorded; the bytes read must match it.
    sha256: String,
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
                    let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
                    if sha256 != self.sha256 {
                        return Err(
                            self.fail("its content changed although its size, ETag and last-modified did not".into())
                        );
                    }
                }
                Err(e) => return Err(self.fail(e.to_string())),
            }
        }
    }
}

/// The objects of one bucket, in archive order.
pub struct BucketSource {
    slots: Mutex<Option<tokio::sync::mpsc::Receiver<Slot>>>,
    ctx: Arc<IterContext>,
    total: u64,
}

struct IterContext {
    handle: tokio::runtime::Handle,
    store: ObjectStore,
    bucket: String,
    failures: Failures,
    stop: Stop,
}

pub struct BucketIter {
    slots: Option<tokio::sync::mpsc::Receiver<Slot>>,
    ctx: Arc<IterContext>,
}

impl Iterator for BucketIter {
    type Item = RusticResult<ReadSourceEntry<ObjectOpen>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ctx.stop.is_stopped() {
                self.ctx.failures.record(format!("bucket {}: interrupted", self.ctx.bucket));
                self.slots = None;
                return None;
            }
            let slot = self.slots.as_mut()?.blocking_recv()?;
            match slot {
                Slot::Known { path, info, sha256 } => {
                    let node = node_for(&path, &info);
                    let open = ObjectOpen::Lazy(Box::new(LazyReader {
                        handle: self.ctx.handle.clone(),
                        store: self.ctx.store.clone(),
                        bucket: self.ctx.bucket.clone(),
                        info,
                        sha256,
                        failures: self.ctx.failures.clone(),
                        body: None,
                        cur: Bytes::new(),
                        hasher: Sha256::new(),
                        done: false,
                    }));
                    return Some(Ok(ReadSourceEntry { path, node, open: Some(open) }));
                }
                Slot::Fetch { path, key, mut rx, last } => match rx.blocking_recv() {
                    Some(Msg::Head(info)) => {
                        let node = node_for(&path, &info);
                        let open = ObjectOpen::Ahead(ObjectReader {
                            key,
                            rx,
                            cur: Bytes::new(),
                            read: 0,
                            expected: info.size,
                            done: false,
                            last,
                            failures: self.ctx.failures.clone(),
                        });
                        return Some(Ok(ReadSourceEntry { path, node, open: Some(open) }));
                    }
                    Some(Msg::Vanished) => continue,
                    // The backup fails anyway: stop here rather than try every other object.
                    Some(Msg::Failed(msg)) => {
                        self.ctx.failures.record(format!("object {key:?}: {msg}"));
                        self.slots = None;
                        return None;
                    }
                    None | Some(Msg::Data(_)) | Some(Msg::End(_)) => {
                        self.ctx.failures.record(format!("object {key:?}: the transfer ended without an answer"));
                        self.slots = None;
                        return None;
                    }
                },
            }
        }
    }
}

impl ReadSource for BucketSource {
    type Open = ObjectOpen;
    type Iter = BucketIter;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.total))
    }

    fn entries(&self) -> Self::Iter {
        let slots = self.slots.lock().ok().and_then(|mut s| s.take());
        if slots.is_none() {
            self.ctx.failures.record(format!("bucket {}: entries were already consumed", self.ctx.bucket));
        }
        BucketIter { slots, ctx: self.ctx.clone() }
    }
}

/// Where fetched bytes are reported (progress, rate accounting).
pub type ByteCounter = Arc<dyn Fn(u64) + Send + Sync>;

/// Builds the source for the objects `plan` delivers (`count` of them, `total` bytes, in
/// archive order) and starts fetching them on the current tokio runtime, as many at a time as
/// `transfers` has permits (shared by the buckets backed up at once). Every object's outcome
/// goes to `sink`.
#[allow(clippy::too_many_arguments)]
pub fn bucket_source(
    store: &ObjectStore,
    bucket: &str,
    mut plan: tokio::sync::mpsc::Receiver<Planned>,
    count: usize,
    total: u64,
    transfers: Arc<tokio::sync::Semaphore>,
    sink: EntrySink,
    failures: &Failures,
    progress: Option<ByteCounter>,
    stop: Stop,
) -> BucketSource {
    let parallel = transfers.available_permits().max(1);
    let (slot_tx, slot_rx) = tokio::sync::mpsc::channel::<Slot>(LOOKAHEAD.max(parallel));
    let ctx = Arc::new(IterContext {
        handle: tokio::runtime::Handle::current(),
        store: store.clone(),
        bucket: bucket.to_string(),
        failures: failures.clone(),
        stop: stop.clone(),
    });
    let (store, bucket) = (store.clone(), bucket.to_string());
    tokio::spawn(async move {
        let sem = transfers;
        let mut i = 0;
        while let Some(p) = plan.recv().await {
            if stop.is_stopped() {
                return;
            }
            let index = i;
            i += 1;
            if let Some(known) = p.known {
                let sha256 = known.sha256.clone();
                sink.complete(index, Outcome::Read(Box::new(known)));
                if slot_tx.send(Slot::Known { path: p.path, info: p.info, sha256 }).await.is_err() {
                    return;
                }
                continue;
            }
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(8);
            let slot = Slot::Fetch { path: p.path.clone(), key: p.info.key.clone(), rx, last: index + 1 == count };
            if slot_tx.send(slot).await.is_err() {
                return;
            }
            let (store, bucket, sink, progress) = (store.clone(), bucket.clone(), sink.clone(), progress.clone());
            tokio::spawn(async move {
                fetch(&store, &bucket, p, index, &sink, tx, permit, progress.as_deref()).await;
            });
        }
    });
    BucketSource { slots: Mutex::new(Some(slot_rx)), ctx, total }
}

/// Bytes of a rewritten text object looked at for randomness.
const SAMPLE: usize = 4096;

/// Fetches one object into `tx`, re-listing it when it changed or vanished since the listing.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    store: &ObjectStore,
    bucket: &str,
    planned: Planned,
    index: usize,
    sink: &EntrySink,
    tx: tokio::sync::mpsc::Sender<Msg>,
    permit: tokio::sync::OwnedSemaphorePermit,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) {
    let Planned { mut info, path, was_text, .. } = planned;
    let mut relists = 0;
    let mut body = loop {
        match store.get_object(bucket, &info.key, Some(&info)).await {
            Ok(body) => break body,
            Err(e) if e.is_gone_or_changed() && relists < MAX_RELISTS => {
                relists += 1;
                tracing::info!(bucket, key = %info.key, "object changed or vanished since the listing ({e}); listing it again");
                match store.find_object(bucket, &info.key).await {
                    Ok(Some(now)) => info = now,
                    Ok(None) => {
                        sink.complete(index, Outcome::Vanished(info.key.clone()));
                        let _ = tx.send(Msg::Vanished).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(e.to_string())).await;
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(e.to_string())).await;
                return;
            }
        }
    };
    if tx.send(Msg::Head(info.clone())).await.is_err() {
        return;
    }
    let mut hasher = Sha256::new();
    let mut sample: Option<Vec<u8>> = was_text.then(Vec::new);
    loop {
        match body.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                if let Some(s) = sample.as_mut().filter(|s| s.len() < SAMPLE) {
                    s.extend_from_slice(&chunk[..chunk.len().min(SAMPLE - s.len())]);
                }
                let n = chunk.len() as u64;
                if tx.send(Msg::Data(chunk)).await.is_err() {
                    return;
                }
                if let Some(p) = progress {
                    p(n);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Msg::Failed(e.to_string())).await;
                return;
            }
        }
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(s) = sample {
        sink.text_sampled(crate::model::anomalies::looks_random(&s));
    }
    // The GET says how many tags there are; only tagged objects cost a request for them.
    let mut head = body.head.clone();
    if head.tag_count > 0 {
        match store.get_object_tagging(bucket, &info.key).await {
            Ok(tags) => head.attrs.tags = tags,
            Err(e) => {
                let _ = tx.send(Msg::Failed(format!("reading its tags: {e}"))).await;
                return;
            }
        }
    }
    sink.complete(index, Outcome::Read(Box::new(entry_of(info, &path, sha256, &head))));
    let _ = tx.send(Msg::End(permit)).await;
}
