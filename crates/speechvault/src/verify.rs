//! `verify`: a live installation against a backup's manifest.
//!
//! Checks, per database, the exact row count of every table the backup recorded, and per
//! bucket the object count, total bytes, and each object's size, SHA-256 (read back in full),
//! content type and user metadata. Every difference is listed; any difference fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Installation;
use crate::manifest::{Manifest, ObjectEntry};
use crate::objstore::{ObjStoreError, ObjectStore};
use crate::pg::PgError;
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] ObjStoreError),
}

/// At most this many keys are listed per kind of difference.
const LIST_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub installation: String,
    pub ok: bool,
    pub tables: Vec<TableCheck>,
    pub buckets: Vec<BucketCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub database: String,
    pub table: String,
    pub expected_rows: i64,
    /// `None` when the table (or database) does not exist.
    pub actual_rows: Option<i64>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketCheck {
    pub bucket: String,
    pub name: String,
    pub expected_objects: u64,
    pub actual_objects: u64,
    pub expected_bytes: u64,
    pub actual_bytes: u64,
    pub digests_checked: u64,
    pub missing: Vec<String>,
    pub missing_count: u64,
    pub unexpected: Vec<String>,
    pub unexpected_count: u64,
    pub different: Vec<Difference>,
    pub different_count: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub key: String,
    pub reason: String,
}

/// How thoroughly to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Read every object back and compare SHA-256, content type and metadata.
    pub digests: bool,
    pub parallel: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { digests: true, parallel: crate::backup::default_parallelism() }
    }
}

/// Compares `inst` (with bucket names mapped by the installation) against `manifest`.
pub async fn verify(
    manifest: &Manifest,
    inst: &Installation,
    opts: &VerifyOptions,
    progress: &Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut tables = Vec::new();
    for (db, entry) in &manifest.databases {
        progress.phase(format!("counting rows in {db}"), 0, entry.tables.len() as u64);
        let actual: BTreeMap<String, i64> = match inst.postgres.connect(db).await {
            Ok(client) => crate::backup::count_rows(&client, db).await?,
            Err(PgError::NoSuchDatabase { .. }) => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        for (table, expected) in &entry.tables {
            let actual_rows = actual.get(table).copied();
            tables.push(TableCheck {
                database: db.clone(),
                table: table.clone(),
                expected_rows: *expected,
                actual_rows,
                ok: actual_rows == Some(*expected),
            });
        }
    }
    let store = ObjectStore::new(inst.s3.clone())?;
    let mut buckets = Vec::new();
    for (bucket, entry) in &manifest.buckets {
        let name = inst.bucket(bucket);
        buckets.push(check_bucket(&store, bucket, &name, &entry.entries, opts, progress).await?);
    }
    let ok = tables.iter().all(|t| t.ok) && buckets.iter().all(|b| b.ok);
    Ok(VerifyReport { backup_id: manifest.backup_id.clone(), installation: inst.name.clone(), ok, tables, buckets })
}

async fn check_bucket(
    store: &ObjectStore,
    bucket: &str,
    name: &str,
    expected: &[ObjectEntry],
    opts: &VerifyOptions,
    progress: &Progress,
) -> Result<BucketCheck, VerifyError> {
    progress.phase(format!("listing bucket {name}"), 0, 0);
    let listed = match store.list_all(name, "").await {
        Ok(l) => l,
        Err(ObjStoreError::NoSuchBucket { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let actual: BTreeMap<&str, &crate::objstore::ObjectInfo> = listed.iter().map(|o| (o.key.as_str(), o)).collect();
    let wanted: BTreeMap<&str, &ObjectEntry> = expected.iter().map(|e| (e.key.as_str(), e)).collect();
    let mut check = BucketCheck {
        bucket: bucket.into(),
        name: name.into(),
        expected_objects: expected.len() as u64,
        actual_objects: listed.len() as u64,
        expected_bytes: expected.iter().map(|e| e.size).sum(),
        actual_bytes: listed.iter().map(|o| o.size).sum(),
        digests_checked: 0,
        missing: Vec::new(),
        missing_count: 0,
        unexpected: Vec::new(),
        unexpected_count: 0,
        different: Vec::new(),
        different_count: 0,
        ok: false,
    };
    let mut to_read = Vec::new();
    for (key, e) in &wanted {
        match actual.get(key) {
            None => {
                check.missing_count += 1;
                if check.missing.len() < LIST_LIMIT {
                    check.missing.push(key.to_string());
                }
            }
            Some(o) if o.size != e.size => {
                check.different_count += 1;
                if check.different.len() < LIST_LIMIT {
                    check.different.push(Difference {
                        key: key.to_string(),
                        reason: format!("size {} instead of {}", o.size, e.size),
                    });
                }
            }
            Some(_) => to_read.push(*e),
        }
    }
    for key in actual.keys() {
        if !wanted.contains_key(key) {
            check.unexpected_count += 1;
            if check.unexpected.len() < LIST_LIMIT {
                check.unexpected.push(key.to_string());
            }
        }
    }
    if opts.digests {
        let total: u64 = to_read.iter().map(|e| e.size).sum();
        progress.phase(format!("reading back bucket {name}"), total, to_read.len() as u64);
        let progress = Arc::new(progress.clone());
        let reads = futures_util::stream::iter(to_read.into_iter().map(|e| {
            let progress = progress.clone();
            async move { (e, compare_object(store, name, e, &progress).await) }
        }))
        .buffer_unordered(opts.parallel.max(1));
        let results: Vec<_> = reads.collect().await;
        for (e, r) in results {
            check.digests_checked += 1;
            if let Some(reason) = r? {
                check.different_count += 1;
                if check.different.len() < LIST_LIMIT {
                    check.different.push(Difference { key: e.key.clone(), reason });
                }
            }
        }
    }
    check.different.sort_by(|a, b| a.key.cmp(&b.key));
    check.ok = check.missing_count == 0 && check.unexpected_count == 0 && check.different_count == 0;
    Ok(check)
}

/// Reads one object; returns what differs from the manifest, if anything.
async fn compare_object(
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    progress: &Progress,
) -> Result<Option<String>, VerifyError> {
    let mut body = match store.get_object(bucket, &e.key, None).await {
        Ok(b) => b,
        Err(ObjStoreError::NoSuchKey { .. }) => {
            return Ok(Some("disappeared while verifying".into()));
        }
        Err(err) => return Err(err.into()),
    };
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.chunk().await? {
        progress.add_bytes(chunk.len() as u64);
        hasher.update(&chunk);
    }
    progress.item_done();
    let digest = hex::encode(hasher.finalize());
    let mut reasons = Vec::new();
    if digest != e.sha256 {
        reasons.push("content differs (SHA-256)".to_string());
    }
    if body.head.content_type != e.content_type {
        reasons.push(format!("content type {:?} instead of {:?}", body.head.content_type, e.content_type));
    }
    if body.head.metadata != e.metadata {
        reasons.push(format!("user metadata {:?} instead of {:?}", body.head.metadata, e.metadata));
    }
    Ok(if reasons.is_empty() { None } else { Some(reasons.join("; ")) })
}
