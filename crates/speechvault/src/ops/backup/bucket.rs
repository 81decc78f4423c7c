//! One bucket into the repository, reusing what the previous backup holds for objects that
//! did not change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BackupError, tags};
use crate::model::config::Installation;
use crate::model::manifest::BucketEntry;
use crate::model::spool::{Listing, ListingWriter, ObjectList};
use crate::objstore::ObjectStore;
use crate::ops::backup::source::bucket::{EntrySink, Planned, bucket_source};
use crate::ops::backup::source::{Failures, object_path};
use crate::repository::{Repository, SnapshotSpec};
use crate::support::interrupt::Stop;
use crate::support::progress::Progress;

/// What the latest complete backup of `inst` recorded: its buckets from the same endpoint,
/// each with its object list, and its tables' rows (`database/schema.table`). Nothing when
/// there is none or it does not read; for the backup that only means a full read.
pub(crate) async fn previous_backup(repo: &Arc<Repository>, inst: &Installation) -> Previous {
    let (v, inst) = (repo.clone(), inst.clone());
    let found = tokio::task::spawn_blocking(move || -> Result<_, crate::model::catalog::CatalogError> {
        let sets = crate::model::catalog::backup_sets(&v)?;
        let Some(set) = sets.iter().rev().find(|s| s.complete() && s.installation == inst.name) else {
            return Ok(Previous::default());
        };
        let reader = v.reader()?;
        let manifest = set.manifest(&reader)?;
        let mut out = Previous::default();
        for (db, entry) in &manifest.databases {
            for (table, sample) in &entry.row_samples {
                out.row_samples.insert(format!("{db}/{table}"), sample.clone());
            }
            for (table, rows) in &entry.tables {
                out.tables.insert(format!("{db}/{table}"), *rows);
            }
        }
        if manifest.source.s3_endpoint != inst.s3.endpoint {
            return Ok(out);
        }
        for (bucket, entry) in &manifest.buckets {
            if entry.source_name != inst.bucket(bucket) {
                continue;
            }
            let list = set.object_list(&reader, &manifest, bucket)?;
            out.buckets.insert(
                bucket.clone(),
                PreviousBucket {
                    snapshot: entry.snapshot.clone(),
                    list: Arc::new(list),
                    objects: entry.objects,
                    bytes: entry.bytes,
                    compression_baseline: entry.compression_baseline,
                },
            );
        }
        Ok(out)
    })
    .await;
    match found {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            Previous::default()
        }
        Err(e) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            Previous::default()
        }
    }
}

/// Everything one bucket's backup works with.
pub(crate) struct BucketJob<'a> {
    pub repo: &'a Arc<Repository>,
    pub inst: &'a Installation,
    pub store: &'a ObjectStore,
    pub id: &'a str,
    pub progress: &'a Progress,
    pub stop: &'a Stop,
    /// Objects read ahead at once in this bucket (each bucket has its own).
    pub transfers: Arc<tokio::sync::Semaphore>,
    /// Reuse what the previous backup read of unchanged objects (false: `--full`).
    pub reuse: bool,
}

/// What the previous backup of an installation recorded.
#[derive(Default)]
pub(crate) struct Previous {
    pub buckets: BTreeMap<String, PreviousBucket>,
    /// Rows by `database/schema.table`.
    pub tables: BTreeMap<String, i64>,
    /// Row samples by `database/schema.table`.
    pub row_samples: BTreeMap<String, crate::model::anomalies::RowSample>,
}

/// A bucket as the previous backup recorded it.
pub(crate) struct PreviousBucket {
    pub snapshot: String,
    pub list: Arc<ObjectList>,
    pub objects: u64,
    pub bytes: u64,
    pub compression_baseline: Option<f64>,
}

/// What one bucket's backup produced.
pub(crate) struct BucketDone {
    pub entry: BucketEntry,
    pub list: ObjectList,
    pub unchanged: u64,
    /// Bytes of the unchanged objects.
    pub unchanged_bytes: u64,
    /// How it changed since the previous backup (for [`crate::model::anomalies`]).
    pub change: crate::model::anomalies::BucketChange,
}

/// What walking a listing beside the previous list found.
#[derive(Debug, Default, Clone, Copy)]
struct Walked {
    unchanged: u64,
    unchanged_bytes: u64,
    /// Keys the previous backup had too (changed or not).
    same_key: u64,
    /// Of those, read again (a full backup) though their content had not changed.
    same_content: u64,
}

/// Lists a bucket into a [`Listing`] on disk, page by page.
pub(crate) async fn list_bucket(store: &ObjectStore, bucket: &str) -> Result<Listing, BackupError> {
    list_bucket_split(store, bucket, &[]).await
}

/// Ranges listed at once when a bucket's keys are known from before.
const LIST_RANGES: usize = 8;

/// Keys that split a bucket's key space into [`LIST_RANGES`] parts of about equal size,
/// sampled from an earlier list of it (its order is by key digest, so every n-th entry is a
/// fair sample); none for a small bucket.
pub(crate) fn split_keys(list: &ObjectList) -> Vec<String> {
    if list.count < 4_000 {
        return Vec::new();
    }
    let stride = (list.count / 1024).max(1) as usize;
    let Ok(iter) = list.iter() else { return Vec::new() };
    let mut sample: Vec<String> = iter.step_by(stride).filter_map(|e| e.ok()).map(|e| e.key).collect();
    sample.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sample.dedup();
    (1..LIST_RANGES).filter_map(|i| sample.get(i * sample.len() / LIST_RANGES).cloned()).collect::<Vec<_>>()
}

/// Lists a bucket, in parallel key ranges split at `splits` (sorted) when there are any: the
/// same requests as one sequential listing, several in flight. A server that ignores
/// `start-after` is listed in one piece.
pub(crate) async fn list_bucket_split(
    store: &ObjectStore,
    bucket: &str,
    splits: &[String],
) -> Result<Listing, BackupError> {
    let io = |e: std::io::Error| BackupError::Internal(format!("listing of {bucket} into a temporary file: {e}"));
    let mut bounds: Vec<Option<&str>> = vec![None];
    let mut sorted: Vec<&String> = splits.iter().collect();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sorted.dedup();
    bounds.extend(sorted.into_iter().map(|s| Some(s.as_str())));
    bounds.push(None);
    let ranges: Vec<(Option<&str>, Option<&str>)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let mut w = ListingWriter::new().map_err(io)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<crate::objstore::ObjectInfo>>(16);
    let listers = futures_util::future::try_join_all(ranges.iter().map(|(after, upto)| {
        let tx = tx.clone();
        async move { store.list_range(bucket, *after, *upto, tx).await }
    }));
    drop(tx);
    let consume = async {
        while let Some(page) = rx.recv().await {
            for o in &page {
                w.push(o).map_err(io)?;
            }
        }
        Ok::<(), BackupError>(())
    };
    let (listed, consumed) = tokio::join!(listers, consume);
    consumed?;
    match listed {
        Ok(_) => w.finish().map_err(io),
        Err(crate::objstore::ObjStoreError::Protocol { detail, .. })
            if !splits.is_empty() && detail.contains("start-after") =>
        {
            tracing::info!(bucket, "the server ignores start-after: listing in one piece");
            Box::pin(list_bucket_split(store, bucket, &[])).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Walks `listing` in archive order beside the previous backup's list of the same bucket,
/// sending each object with what the previous backup recorded when it is unchanged (and
/// `reuse` allows it). Counts the unchanged objects, their bytes, and the keys both have.
fn plan(
    listing: Listing,
    previous: Option<&ObjectList>,
    reuse: bool,
    root: &Path,
    tx: tokio::sync::mpsc::Sender<Planned>,
) -> std::io::Result<Walked> {
    let mut prev = match previous {
        Some(l) => Some(l.iter()?.peekable()),
        None => None,
    };
    let mut walked = Walked::default();
    for info in listing.into_iter_sorted() {
        let info = info?;
        let digest = crate::model::spool::key_digest(&info.key);
        let mut known = None;
        let mut was_text = false;
        if let Some(prev) = prev.as_mut() {
            // Both are in archive order: skip what the previous backup had before this key.
            while let Some(Ok(e)) = prev.peek() {
                if crate::model::spool::key_digest(&e.key) < digest {
                    prev.next();
                } else {
                    break;
                }
            }
            if let Some(Err(_)) = prev.peek()
                && let Some(Err(e)) = prev.next()
            {
                return Err(e);
            }
            if let Some(Ok(e)) = prev.peek()
                && e.key == info.key
            {
                walked.same_key += 1;
                if reuse && e.size == info.size && e.etag == info.etag && e.last_modified == info.last_modified {
                    known = prev.next().and_then(|e| e.ok());
                    walked.unchanged += 1;
                    walked.unchanged_bytes += info.size;
                } else if e.size == info.size && e.etag == info.etag {
                    // Not reused (a full read), but the same content: not rewritten.
                    walked.same_content += 1;
                } else {
                    was_text = e.attrs.content_encoding.is_none()
                        && crate::model::anomalies::is_text_type(e.content_type.as_deref());
                }
            }
        }
        let path = object_path(root, &info.key);
        if tx.blocking_send(Planned { info, path, known, was_text }).is_err() {
            break;
        }
    }
    Ok(walked)
}

impl BucketJob<'_> {
    /// Backs up one bucket.
    pub async fn run(
        &self,
        bucket: &str,
        previous: Option<&PreviousBucket>,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<BucketDone, BackupError> {
        let BucketJob { repo, inst, store, id, progress, .. } = *self;
        let actual = inst.bucket(bucket);
        // The previous backup's keys split the listing into ranges listed side by side.
        let splits = match previous {
            Some(p) => {
                let list = p.list.clone();
                tokio::task::spawn_blocking(move || split_keys(&list)).await.unwrap_or_default()
            }
            None => Vec::new(),
        };
        let listed_at = std::time::Instant::now();
        // The bucket's own settings (versioning, lifecycle, policy, ...) with its objects.
        let (listing, settings) =
            tokio::join!(list_bucket_split(store, &actual, &splits), store.bucket_settings(&actual));
        let (listing, settings) = (listing?, settings?);
        tracing::info!(bucket = %actual, objects = listing.count, ranges = splits.len() + 1, ms = listed_at.elapsed().as_millis() as u64, "listed");
        // Between the listing and the reads: the live-installation tests change objects here.
        crate::support::interrupt::pause_point("backup:listed");
        let root = PathBuf::from(format!("/buckets/{bucket}"));
        let (count, total) = (listing.count as usize, listing.bytes);
        progress.add_totals(total, count as u64);
        let failures = Failures::default();
        let p2 = progress.clone();
        let counter: crate::ops::backup::source::bucket::ByteCounter = Arc::new(move |n| p2.add_bytes(n));
        let sink = EntrySink::new()
            .map_err(|e| BackupError::Internal(format!("bucket {actual}: a temporary object list: {e}")))?;
        let (plan_tx, plan_rx) = tokio::sync::mpsc::channel(256);
        let planner = {
            let (root, prev) = (root.clone(), previous.map(|p| p.list.clone()));
            let reuse = self.reuse;
            tokio::task::spawn_blocking(move || plan(listing, prev.as_deref(), reuse, &root, plan_tx))
        };
        let src = bucket_source(
            store,
            &actual,
            plan_rx,
            count,
            total,
            self.transfers.clone(),
            sink.clone(),
            &failures,
            Some(counter),
            self.stop.clone(),
        );
        // A full backup reads everything: no parent (rustic would take unchanged files'
        // content from it without reading them). The previous list is still walked, for the
        // anomaly measures.
        let parent = if self.reuse { previous.map(|p| p.snapshot.clone()) } else { None };
        let spec = SnapshotSpec {
            host: inst.name.clone(),
            label: format!("bucket:{bucket}"),
            tags: tags(&inst.name, id, &format!("bucket:{bucket}")),
            path: root.clone(),
            description: Some(format!(
                "speechvault backup {id} of {}: bucket {actual} (files named by SHA-256 of the key; key in user.s3.key)",
                inst.name
            )),
        };
        let v = repo.clone();
        let snap = tokio::task::spawn_blocking(move || v.archive(src, &spec, parent))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        let snap = snap?;
        tracing::info!(bucket = %actual, ms = listed_at.elapsed().as_millis() as u64, "archived");
        written.push(snap.id);
        let planned = planner.await.map_err(|e| BackupError::Internal(e.to_string()))?;
        let mut fails = failures.list();
        let walked = match planned {
            Ok(n) => n,
            Err(e) => {
                fails.push(format!("reading the listing or the previous backup's list: {e}"));
                Walked::default()
            }
        };
        let finished = sink.finish(count);
        if !fails.is_empty() || finished.is_err() {
            if let Err(e) = finished {
                fails.push(e);
            }
            return Err(BackupError::Source { part: format!("bucket {actual}"), failures: fails });
        }
        let (list, vanished) = finished.map_err(BackupError::Internal)?;
        let (text_rewritten, text_randomized) = sink.text_samples();
        let (added_bytes, added_packed) =
            snap.summary.as_ref().map_or((0, 0), |s| (s.data_added_files, s.data_added_files_packed));
        let change = match previous {
            Some(p) => crate::model::anomalies::BucketChange {
                objects_before: p.objects,
                bytes_before: p.bytes,
                objects_now: list.count,
                bytes_now: list.bytes,
                rewritten: walked.same_key.saturating_sub(walked.unchanged + walked.same_content),
                deleted: p.objects.saturating_sub(walked.same_key),
                added_bytes,
                added_packed,
                baseline_ratio: p.compression_baseline,
                text_rewritten,
                text_randomized,
            },
            None => crate::model::anomalies::BucketChange {
                objects_now: list.count,
                bytes_now: list.bytes,
                added_bytes,
                added_packed,
                ..Default::default()
            },
        };
        let min_bytes = crate::model::anomalies::Thresholds::default().min_compression_bytes;
        let entry = BucketEntry {
            source_name: actual,
            snapshot: snap.id.to_string(),
            path: root.display().to_string(),
            objects: list.count,
            bytes: list.bytes,
            entries: Vec::new(),
            objects_file: Some(crate::model::manifest::objects_path(bucket)),
            vanished,
            settings,
            compression_baseline: crate::model::anomalies::next_baseline(&change, min_bytes),
        };
        Ok(BucketDone { entry, list, unchanged: walked.unchanged, unchanged_bytes: walked.unchanged_bytes, change })
    }
}
