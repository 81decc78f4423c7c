//! Objects back into their buckets.
//!
//! Each object streams out of the repository (every blob authenticated) into an upload with
//! `Content-MD5` (multipart above 16 MiB), with its content type and user metadata; the ETag
//! the server answers is checked against the one its bytes imply. With `--resume` and
//! `--clean`, an object already on the target with the same size is read back and kept when
//! its SHA-256, content type and metadata match; `--clean` then deletes what the backup does
//! not hold. Every key written is recorded, so a rollback deletes exactly those.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::checks::snapshot_of;
use super::{BucketRestored, Job, RestoreError, TargetMode};
use crate::model::manifest::{BucketEntry, ObjectEntry};
use crate::objstore::{ObjStoreError, ObjectInfo, ObjectStore};
use crate::repository::RepositoryReader;
use crate::support::progress::Progress;

/// Sends what rustic's `dump` writes into a channel, in chunks of at most 1 MiB (rustic
/// writes a whole blob at once, up to 8 MiB: cut, so what waits in the channel stays small).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    bytes: u64,
}

const CHUNK: usize = 1 << 20;

/// The reading's error when the upload went away first.
const UPLOAD_STOPPED: &str = "upload stopped";

/// Chunks waiting between one object's reading and its upload.
const CHUNKS_QUEUED: usize = 2;

/// Objects over [`CHUNK`] read from the repository at once, whatever `--parallel` is.
/// Reading one holds a decrypted blob (one of several blobs decrypts up to four more ahead
/// on worker threads; typically 1 MiB each, at most 8 MiB) and chunks on their way to the
/// upload, outside the upload memory budget: their number, not the objects in flight,
/// bounds that memory (about 100 MiB typical for all of them). Small objects, the many,
/// are not held back: each holds at most its own size.
const LARGE_READS: usize = 16;
static LARGE_READ_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LARGE_READS);

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other(UPLOAD_STOPPED))
    }
}

/// Whether the object on the target is already exactly the backed-up one.
pub(crate) async fn identical(
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    listed: &ObjectInfo,
) -> Result<bool, ObjStoreError> {
    if listed.size != e.size {
        return Ok(false);
    }
    let mut body = match store.get_object(bucket, &e.key, Some(listed)).await {
        Ok(b) => b,
        Err(err) if err.is_gone_or_changed() => return Ok(false),
        Err(err) => return Err(err),
    };
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.chunk().await? {
        hasher.update(&chunk);
    }
    let same_bytes = hex::encode(hasher.finalize()) == e.sha256;
    if !same_bytes
        || !crate::ops::verify::header_differences(&e.key, &e.content_type, &e.metadata, &body.head).is_empty()
    {
        return Ok(false);
    }
    // Same bytes and headers; the other attributes too (its tags, when it has or should have some).
    let mut found = body.head.attrs.clone();
    if body.head.tag_count > 0 || !e.attrs.tags.is_empty() {
        found.tags = store.get_object_tagging(bucket, &e.key).await?;
    }
    Ok(crate::ops::attributes::NO_POLICY.differences(e, &found).is_empty())
}

/// One object to restore, with its file in the snapshot and what the target already holds
/// under its key (resume and clean only).
struct Work {
    entry: ObjectEntry,
    node: rustic_core::repofile::Node,
    present: Option<ObjectInfo>,
}

/// Walks the bucket's object list, its snapshot and (when it matters) the target's listing
/// together, all three in archive order, sending each object to restore. With `extra`, keys
/// on the target the backup does not hold are collected there (`--clean` deletes them).
fn produce(
    reader: &RepositoryReader,
    snap: &rustic_core::repofile::SnapshotFile,
    list: &crate::model::spool::ObjectList,
    present: Option<crate::model::spool::Listing>,
    extra: &mut Vec<String>,
    tx: tokio::sync::mpsc::Sender<Work>,
) -> Result<(), String> {
    let mut listed = present.map(|l| l.into_iter_sorted());
    for pair in crate::model::catalog::PairedObjects::new(reader, snap, list).map_err(|e| e.to_string())? {
        let (entry, node) = pair?;
        let mut present = None;
        if let Some(l) = listed.as_mut() {
            let d = crate::model::spool::key_digest(&entry.key);
            while let Some(next) = l.peek_digest().copied() {
                if next > d {
                    break;
                }
                let o = l.next().and_then(|o| o.ok()).ok_or("reading the target's listing")?;
                if next == d {
                    present = Some(o);
                } else {
                    extra.push(o.key);
                }
            }
        }
        if tx.blocking_send(Work { entry, node, present }).is_err() {
            return Ok(());
        }
    }
    if let Some(l) = listed {
        for o in l {
            extra.push(o.map_err(|e| format!("reading the target's listing: {e}"))?.key);
        }
    }
    Ok(())
}

/// Step 5 for one bucket.
pub(crate) async fn restore_bucket(
    job: &Job<'_>,
    bucket: &str,
    name: &str,
    entry: &BucketEntry,
) -> Result<BucketRestored, RestoreError> {
    let Job { reader, set, manifest, store, opts, progress, touched, .. } = *job;
    let policy = job.attributes.get(bucket).unwrap_or(&crate::ops::attributes::NO_POLICY);
    let snap = match snapshot_of(set, &entry.snapshot) {
        Ok(snap) => snap.clone(),
        Err(RestoreError::BackupDamaged(reason)) if opts.salvage => {
            // The bucket's part is gone: every object of it is lost (none is written).
            let none = std::sync::Mutex::new(std::collections::HashSet::new());
            salvage_rest(job, bucket, &none, &reason).await?;
            return Ok(BucketRestored { name: name.to_string(), objects: 0, bytes: 0, kept: 0, deleted: 0 });
        }
        Err(e) => return Err(e),
    };
    let existed = store.bucket_exists(name).await?;
    let plan = job.settings.get(bucket);
    if !existed {
        if plan.is_some_and(|p| p.create_with_object_lock) {
            store.create_bucket_with_object_lock(name).await?;
        } else {
            store.create_bucket(name).await?;
        }
        if let Ok(mut t) = touched.lock() {
            t.buckets_created.push(name.to_string());
        }
    }
    // Versioning and default encryption before the objects, so they land as on the source.
    if let Some(plan) = plan {
        job.apply_bucket_settings(bucket, plan, true).await?;
    }
    // What is there already matters when resuming or replacing.
    let present = if existed && (opts.resume || opts.mode == TargetMode::Clean) {
        Some(crate::ops::backup::bucket::list_bucket(store, name).await.map_err(|e| match e {
            crate::ops::backup::BackupError::ObjStore(o) => RestoreError::from(o),
            other => RestoreError::Internal(other.to_string()),
        })?)
    } else {
        None
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Work>(64);
    let producer = {
        let (r, set, m, bucket) = (reader.clone(), set.clone(), manifest.clone(), bucket.to_string());
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, RestoreError> {
            let list = set.object_list(&r, &m, &bucket)?;
            let mut extra = Vec::new();
            produce(&r, &snap, &list, present, &mut extra, tx)
                .map_err(|reason| RestoreError::Damaged { what: format!("bucket {bucket}"), reason })?;
            Ok(extra)
        })
    };
    let kept = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A salvage notes every key it got to, so a file tree that stops reading half-way
    // leaves the rest named as lost.
    let done: Option<Arc<std::sync::Mutex<std::collections::HashSet<String>>>> = opts.salvage.then(Default::default);
    let first = Arc::new(std::sync::Once::new());
    let work = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) });
    // The queue (and with it the producer's channel) ends with this block.
    let failures = {
        let mut failures: Vec<String> = Vec::new();
        let uploads = work
            .map(|w| {
                let (kept, first, done) = (kept.clone(), first.clone(), done.clone());
                let transfers = job.transfers.clone();
                async move {
                    let _slot = transfers.acquire_owned().await.map_err(|e| e.to_string())?;
                    let Work { entry: e, node, present } = w;
                    if let Some(listed) = &present
                        && identical(store, name, &e, listed).await.map_err(|err| format!("{:?}: {err}", e.key))?
                    {
                        kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(done) = &done {
                            done.lock().map_err(|_| "poisoned")?.insert(e.key.clone());
                        }
                        progress.add_bytes(e.size);
                        progress.item_done();
                        first.call_once(|| crate::support::interrupt::pause_point("restore:objects"));
                        return Ok(());
                    }
                    // Recorded before the upload starts: a rollback deletes it whatever happens to it.
                    if let Ok(mut t) = touched.lock() {
                        t.keys_written.entry(name.to_string()).or_default().push(e.key.clone());
                    }
                    match restore_object(reader.clone(), store, name, &e, node, policy, progress).await {
                        Ok(()) => {}
                        Err(RestoreError::DamagedData { reason, .. }) if opts.salvage => {
                            // Absent, never half-written: an older object under its key goes too.
                            if present.is_some() {
                                store
                                    .delete_keys(name, std::slice::from_ref(&e.key), 1)
                                    .await
                                    .map_err(|err| format!("{:?}: deleting the older object: {err}", e.key))?;
                            }
                            if let Ok(mut t) = job.tally.lock() {
                                t.object(bucket, &e.key, reason);
                            }
                            progress.item_done();
                        }
                        Err(err) => return Err(format!("{:?}: {err}", e.key)),
                    }
                    if let Some(done) = &done {
                        done.lock().map_err(|_| "poisoned")?.insert(e.key.clone());
                    }
                    first.call_once(|| crate::support::interrupt::pause_point("restore:objects"));
                    Ok::<(), String>(())
                }
            })
            // A stop request ends the queue; uploads in flight finish (and are rolled back).
            .take_until(Box::pin(job.stop.stopped()))
            .buffer_unordered(opts.parallel.max(1));
        let mut uploads = std::pin::pin!(uploads);
        while let Some(r) = uploads.next().await {
            if let Err(msg) = r {
                failures.push(msg);
                // Stop starting new transfers after a burst of failures; report what failed.
                if failures.len() >= 20 {
                    break;
                }
            }
        }
        failures
    };
    // The producer ends once the queue is dropped (its sends fail).
    let extra = producer.await.map_err(|e| RestoreError::Internal(e.to_string()))?;
    if job.stop.is_stopped() {
        return Err(RestoreError::Interrupted);
    }
    if !failures.is_empty() {
        return Err(RestoreError::Objects {
            bucket: name.into(),
            count: failures.len(),
            summary: crate::error::summarize(&failures, 3),
            failures,
        });
    }
    let extra = match (extra, done) {
        (Ok(extra), _) => Some(extra),
        (Err(RestoreError::Damaged { reason, .. }), Some(done)) => {
            salvage_rest(job, bucket, &done, &reason).await?;
            None
        }
        (Err(e), _) => return Err(e),
    };
    let mut deleted = 0;
    match extra {
        Some(extra) if opts.mode == TargetMode::Clean => {
            deleted = store.delete_keys(name, &extra, opts.parallel).await?;
        }
        Some(_) => {}
        None if opts.mode == TargetMode::Clean => tracing::warn!(
            bucket = name,
            "salvage: the bucket's file tree does not read whole, so objects on the target the backup does not hold were not deleted"
        ),
        None => {}
    }
    Ok(BucketRestored {
        name: name.to_string(),
        objects: entry.objects,
        bytes: entry.bytes,
        kept: kept.load(std::sync::atomic::Ordering::Relaxed),
        deleted,
    })
}

pub(crate) async fn restore_object(
    reader: Arc<RepositoryReader>,
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    node: rustic_core::repofile::Node,
    policy: &crate::ops::attributes::AttributePolicy,
    progress: &Progress,
) -> Result<(), RestoreError> {
    let fail = |reason: String| RestoreError::Object { bucket: bucket.into(), key: e.key.clone(), reason };
    let slot = if e.size > CHUNK as u64 {
        Some(LARGE_READ_SLOTS.acquire().await.map_err(|err| RestoreError::Internal(err.to_string()))?)
    } else {
        None
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_QUEUED);
    let expected = e.size;
    let dumper = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut w = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK.min(expected as usize)), bytes: 0 };
        let result =
            reader.dump(&node, &mut w).map_err(|e| e.to_string()).and_then(|()| w.flush().map_err(|e| e.to_string()));
        let verdict = match result {
            Err(msg) => Err(msg),
            Ok(()) if w.bytes != expected => Err(format!("repository gave {} bytes, expected {expected}", w.bytes)),
            Ok(()) => Ok(()),
        };
        if let Err(msg) = &verdict {
            // The upload sees the error before its end and abandons the object.
            let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
        }
        verdict
    });
    let opts = policy.put_options(e);
    let p = progress.clone();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).map(
        move |item| {
            if let Ok(b) = &item {
                p.add_bytes(b.len() as u64);
            }
            item
        },
    );
    let uploaded = store.upload_stream(bucket, &e.key, &opts, Some(e.size), Box::pin(stream)).await;
    let dumped = dumper.await.map_err(|err| RestoreError::Internal(err.to_string()))?;
    // A failed upload stops the reading too (its writer fails): the upload's error is the
    // cause. A reading that failed first reached the upload as its source's error, and is
    // the cause: the repository's damage, not the target's.
    if let Err(reason) = &dumped
        && !reason.contains(UPLOAD_STOPPED)
    {
        return Err(RestoreError::DamagedData { bucket: bucket.into(), key: e.key.clone(), reason: reason.clone() });
    }
    let uploaded = uploaded.map_err(|err| fail(err.to_string()))?;
    dumped.map_err(fail)?;
    if uploaded.etag_confirms() == Some(false) {
        return Err(fail(format!(
            "the server stored it with ETag {}, but its bytes give {}",
            uploaded.etag, uploaded.expected_etag
        )));
    }
    progress.item_done();
    Ok(())
}

/// `--salvage`, when a bucket's file tree stops reading: every object of its list the
/// restore did not get to is lost.
async fn salvage_rest(
    job: &Job<'_>,
    bucket: &str,
    done: &std::sync::Mutex<std::collections::HashSet<String>>,
    reason: &str,
) -> Result<(), RestoreError> {
    let (r, set, m, b) = (job.reader.clone(), job.set.clone(), job.manifest.clone(), bucket.to_string());
    let list = tokio::task::spawn_blocking(move || set.object_list(&r, &m, &b))
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    let done = done.lock().map_err(|_| RestoreError::Internal("poisoned".into()))?;
    let mut tally = job.tally.lock().map_err(|_| RestoreError::Internal("poisoned".into()))?;
    for e in list.iter().map_err(|e| RestoreError::Internal(e.to_string()))? {
        let e = e.map_err(|e| RestoreError::Internal(e.to_string()))?;
        if !done.contains(&e.key) {
            tally.object(bucket, &e.key, format!("the bucket's file tree does not read: {reason}"));
        }
    }
    Ok(())
}
