//! One bucket into the repository, reusing what the previous backup holds for objects that
//! did not change.

use std::path::PathBuf;
use std::sync::Arc;

use super::{BackupError, tags};
use crate::config::Installation;
use crate::interrupt::Stop;
use crate::manifest::{BucketEntry, Manifest, ObjectEntry};
use crate::objstore::ObjectStore;
use crate::progress::Progress;
use crate::repository::{SnapshotSpec, Vault};
use crate::source::bucket::{Outcome, ReadObject, bucket_source};
use crate::source::{Failures, plan_objects};

/// The manifest of the latest complete backup of `inst`, if there is one and it reads; a
/// damaged or missing one only means a full read.
pub(crate) async fn previous_manifest(vault: &Arc<Vault>, inst: &Installation) -> Option<Manifest> {
    let (v, name) = (vault.clone(), inst.name.clone());
    let found = tokio::task::spawn_blocking(move || -> Result<Option<Manifest>, crate::catalog::CatalogError> {
        let sets = crate::catalog::backup_sets(&v)?;
        let Some(set) = sets.iter().rev().find(|s| s.complete() && s.installation == name) else {
            return Ok(None);
        };
        let reader = v.reader()?;
        set.manifest(&reader).map(Some)
    })
    .await;
    match found {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            None
        }
    }
}

/// Everything one bucket's backup works with.
pub(crate) struct BucketJob<'a> {
    pub vault: &'a Arc<Vault>,
    pub inst: &'a Installation,
    pub store: &'a ObjectStore,
    pub id: &'a str,
    pub progress: &'a Progress,
    pub stop: &'a Stop,
    /// Object transfers at once, shared by every bucket of the backup.
    pub transfers: Arc<tokio::sync::Semaphore>,
}

impl BucketJob<'_> {
    /// Backs up one bucket; returns its manifest entry and how many objects were unchanged.
    pub async fn run(
        &self,
        bucket: &str,
        previous: Option<&BucketEntry>,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<(BucketEntry, u64), BackupError> {
        let BucketJob { vault, inst, store, id, progress, .. } = *self;
        let actual = inst.bucket(bucket);
        let listed = store.list_all(&actual, "").await?;
        // Between the listing and the reads: the live-installation tests change objects here.
        crate::interrupt::pause_point("backup:listed");
        let root = PathBuf::from(format!("/buckets/{bucket}"));
        let planned = plan_objects(&root, listed);
        crate::repository::check_path_order(planned.iter().map(|p| p.path.as_path()))?;
        let total: u64 = planned.iter().map(|p| p.info.size).sum();
        progress.add_totals(total, planned.len() as u64);
        let failures = Failures::default();
        let p2 = progress.clone();
        let counter: crate::source::bucket::ByteCounter = Arc::new(move |n| p2.add_bytes(n));
        let known: Vec<Option<Outcome>> = match previous {
            None => vec![None; planned.len()],
            Some(prev) => {
                let by_key: std::collections::HashMap<&str, &ObjectEntry> =
                    prev.entries.iter().map(|e| (e.key.as_str(), e)).collect();
                planned
                    .iter()
                    .map(|p| {
                        by_key
                            .get(p.info.key.as_str())
                            .filter(|e| {
                                e.size == p.info.size
                                    && e.etag == p.info.etag
                                    && e.last_modified == p.info.last_modified
                            })
                            .map(|e| {
                                Outcome::Read(Box::new(ReadObject {
                                    info: p.info.clone(),
                                    sha256: e.sha256.clone(),
                                    head: e.head(),
                                }))
                            })
                    })
                    .collect()
            }
        };
        let unchanged = known.iter().filter(|k| k.is_some()).count() as u64;
        let parent = previous.filter(|_| unchanged > 0).map(|p| p.snapshot.clone());
        let paths: Vec<(String, PathBuf)> = planned.iter().map(|p| (p.info.key.clone(), p.path.clone())).collect();
        let (src, outcomes) = bucket_source(
            store,
            &actual,
            planned,
            known,
            self.transfers.clone(),
            &failures,
            Some(counter),
            self.stop.clone(),
        );
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
        let v = vault.clone();
        let snap = tokio::task::spawn_blocking(move || v.archive(src, &spec, parent))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        let snap = snap?;
        written.push(snap.id);
        let mut fails = failures.list();
        let outcomes = outcomes.lock().map(|d| d.clone()).unwrap_or_default();
        let mut entries = Vec::with_capacity(paths.len());
        let mut vanished = Vec::new();
        for ((key, path), outcome) in paths.into_iter().zip(outcomes) {
            match outcome {
                Some(Outcome::Read(read)) => {
                    let ReadObject { info, sha256, head } = *read;
                    entries.push(ObjectEntry {
                        key: info.key,
                        size: info.size,
                        etag: info.etag,
                        last_modified: info.last_modified,
                        sha256,
                        content_type: head.content_type,
                        metadata: head.metadata,
                        path: path.display().to_string(),
                    })
                }
                Some(Outcome::Vanished) => vanished.push(key),
                None => fails.push(format!("object {key:?} was not read completely")),
            }
        }
        if !fails.is_empty() {
            return Err(BackupError::Source { part: format!("bucket {actual}"), failures: fails });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        vanished.sort();
        let entry = BucketEntry {
            source_name: actual,
            snapshot: snap.id.to_string(),
            path: root.display().to_string(),
            objects: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
            entries,
            vanished,
        };
        Ok((entry, unchanged))
    }
}
