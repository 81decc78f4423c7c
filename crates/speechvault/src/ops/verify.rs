//! `verify`: a live installation against a backup's manifest.
//!
//! Per database: every table the backup recorded must exist with the same number of rows and
//! the same content digest ([`crate::pg::catalog`]: rows rendered in a fixed form, owner
//! columns in canonical id form). After a restore that moved ownership, the target's instance
//! id is mapped back to the source's before digesting, so only a real change differs. Per
//! bucket: the object count, total bytes, and each object's size, SHA-256 (read back in full),
//! content type and user metadata. Objects recorded as vanished during the backup are not part
//! of it. Every difference is listed, saying which side has what; any difference fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::config::Installation;
use crate::model::instance::InstanceId;
use crate::model::manifest::{Manifest, ObjectEntry};
use crate::objstore::{ObjStoreError, ObjectStore};
use crate::pg::{PgError, catalog};
use crate::support::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] ObjStoreError),
    #[error(transparent)]
    Catalog(#[from] crate::model::catalog::CatalogError),
    #[error("verify: {0}")]
    Internal(String),
}

/// Where a backup's object lists come from.
pub struct BackupLists<'a> {
    pub reader: &'a Arc<crate::repository::RepositoryReader>,
    pub set: &'a crate::model::catalog::BackupSet,
}

/// At most this many keys are listed per kind of difference.
const LIST_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub installation: String,
    pub ok: bool,
    /// The ownership mapping applied before comparing rows: `(backup's id, installation's id)`.
    pub ownership_mapped: Option<(String, String)>,
    pub tables: Vec<TableCheck>,
    pub buckets: Vec<BucketCheck>,
}

impl VerifyReport {
    /// How many tables and objects differ (each missing, unexpected or different object
    /// counts once; so does each table whose count or content differs).
    pub fn differences(&self) -> u64 {
        let tables = self.tables.iter().filter(|t| !t.ok).count() as u64;
        tables
            + self
                .buckets
                .iter()
                .map(|b| b.missing_count + b.unexpected_count + b.different_count + b.settings_different.len() as u64)
                .sum::<u64>()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub database: String,
    pub table: String,
    /// Rows the backup holds.
    pub backup_rows: i64,
    /// Rows the installation holds; `None` when the table (or database) does not exist.
    pub installation_rows: Option<i64>,
    /// `same`, `different`, or `not-compared` (a backup made before digests existed, or large
    /// objects this login cannot read).
    pub content: &'static str,
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
    /// The bucket's own settings (lifecycle, policy, ...) that differ from the backup's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings_different: Vec<String>,
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
    /// The restore moved ownership from the first id (in the backup) to the second (on the
    /// installation): compare as if it had not.
    pub ownership: Option<(InstanceId, InstanceId)>,
    /// Per bucket (the profile's name): the attributes a restore could set, so only those are
    /// compared (default: every recorded attribute but object lock state).
    pub attributes: BTreeMap<String, crate::ops::attributes::AttributePolicy>,
    /// Compare the buckets' own settings too (a restore applies and confirms them itself,
    /// after this check).
    pub settings: bool,
    /// Per bucket (the profile's name): objects a salvage could not restore, so expected
    /// absent (`restore --salvage`).
    pub lost: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            digests: true,
            parallel: crate::ops::backup::default_parallelism(),
            ownership: None,
            attributes: BTreeMap::new(),
            settings: true,
            lost: BTreeMap::new(),
        }
    }
}

/// Content types servers give an object stored without one: AWS and moto
/// `binary/octet-stream`, others `application/octet-stream`, MinIO a guess from the key's
/// extension.
pub fn is_server_default_type(content_type: &str, key: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "binary/octet-stream" || ct == "application/octet-stream" {
        return true;
    }
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let guesses: &[&str] = match ext.as_str() {
        "txt" | "text" | "log" => &["text/plain"],
        "json" => &["application/json"],
        "xml" => &["application/xml", "text/xml"],
        "html" | "htm" => &["text/html"],
        "csv" => &["text/csv"],
        "wav" => &["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"],
        "flac" => &["audio/flac", "audio/x-flac"],
        "mp3" => &["audio/mpeg", "audio/mp3"],
        "ogg" | "oga" => &["audio/ogg"],
        "opus" => &["audio/ogg", "audio/opus"],
        "webm" => &["audio/webm", "video/webm"],
        "zip" => &["application/zip"],
        "gz" | "tgz" => &["application/gzip", "application/x-gzip"],
        "tar" => &["application/x-tar"],
        "pdf" => &["application/pdf"],
        "png" => &["image/png"],
        "jpg" | "jpeg" => &["image/jpeg"],
        "abnf" => &["application/srgs"],
        "grxml" => &["application/srgs+xml"],
        "yaml" | "yml" => &["application/yaml", "application/x-yaml", "text/yaml"],
        "js" => &["application/javascript", "text/javascript"],
        "css" => &["text/css"],
        _ => &[],
    };
    guesses.contains(&ct.as_str())
}

/// Compares `inst` (with bucket names mapped by the installation) against `manifest`.
pub async fn verify(
    manifest: &Manifest,
    lists: BackupLists<'_>,
    inst: &Installation,
    opts: &VerifyOptions,
    progress: &Progress,
) -> Result<VerifyReport, VerifyError> {
    let map: Vec<(String, String)> =
        opts.ownership.iter().map(|(from, to)| (to.as_str().to_string(), from.as_str().to_string())).collect();
    let mut tables = Vec::new();
    for (db, entry) in &manifest.databases {
        progress.phase(format!("comparing rows in {db}"), 0, entry.tables.len() as u64);
        let mut views: std::collections::BTreeSet<String> = Default::default();
        let actual = match inst.postgres.connect(db).await {
            Ok(client) => {
                crate::pg::execute(&client, db, "begin", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
                let version = catalog::DigestVersion::of_recorded(entry.digests.values());
                let d = catalog::table_digests(&client, db, &entry.owner_columns, &map, version).await?;
                // A materialized view's rows after an ownership move hold the new ids, which
                // only tables' owner columns are mapped back from: its rows are counted then.
                if !map.is_empty() {
                    views = catalog::materialized_views(&client, db, true).await?.into_iter().map(|(n, _)| n).collect();
                }
                let _ = crate::pg::execute(&client, db, "end", "COMMIT").await;
                d
            }
            Err(PgError::NoSuchDatabase { .. }) => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        for table in entry.tables.keys().chain(entry.digests.keys().filter(|k| k.as_str() == catalog::LARGE_OBJECTS)) {
            let lo = table == catalog::LARGE_OBJECTS;
            let backup_rows = entry.tables.get(table).copied().unwrap_or(0);
            let found = actual.get(table);
            let installation_rows = found.map(|d| d.rows);
            let content = match (entry.digests.get(table), found) {
                (Some(expected), Some(d)) if *expected == d.digest => "same",
                (Some(_), Some(_)) if views.contains(table) => "not-compared",
                // Servers of other byte orders: counts are compared, content cannot be.
                (Some(expected), Some(d)) if !catalog::DigestVersion::comparable(expected, &d.digest) => "not-compared",
                (Some(_), Some(_)) => "different",
                (Some(_), None) if table == catalog::LARGE_OBJECTS => "not-compared",
                (Some(_), None) => "different",
                (None, _) => "not-compared",
            };
            // Large objects are compared by digest only (their count is part of it).
            let rows_ok = lo || installation_rows == Some(backup_rows);
            tables.push(TableCheck {
                database: db.clone(),
                table: table.clone(),
                backup_rows,
                installation_rows,
                content,
                ok: rows_ok && content != "different",
            });
        }
    }
    let store = ObjectStore::new(inst.s3.clone())?;
    let mut buckets = Vec::new();
    for bucket in manifest.buckets.keys() {
        let name = inst.bucket(bucket);
        let list = {
            let (r, set, m, b) = (lists.reader.clone(), lists.set.clone(), manifest.clone(), bucket.clone());
            tokio::task::spawn_blocking(move || set.object_list(&r, &m, &b))
                .await
                .map_err(|e| VerifyError::Internal(e.to_string()))??
        };
        let lost = opts.lost.get(bucket).cloned().unwrap_or_default();
        let mut check = check_bucket(&store, bucket, &name, list, lost, opts, progress).await?;
        let recorded = &manifest.buckets[bucket].settings;
        if opts.settings && !recorded.is_empty() && store.bucket_exists(&name).await? {
            let now = store.bucket_settings(&name).await?;
            check.settings_different = crate::ops::settings::differences(recorded, &now, false);
            check.ok &= check.settings_different.is_empty();
        }
        buckets.push(check);
    }
    let ok = tables.iter().all(|t| t.ok) && buckets.iter().all(|b| b.ok);
    Ok(VerifyReport {
        backup_id: manifest.backup_id.clone(),
        installation: inst.name.clone(),
        ok,
        ownership_mapped: opts.ownership.as_ref().map(|(f, t)| (f.to_string(), t.to_string())),
        tables,
        buckets,
    })
}

async fn check_bucket(
    store: &ObjectStore,
    bucket: &str,
    name: &str,
    expected: crate::model::spool::ObjectList,
    lost: std::collections::BTreeSet<String>,
    opts: &VerifyOptions,
    progress: &Progress,
) -> Result<BucketCheck, VerifyError> {
    progress.phase(format!("listing bucket {name}"), 0, 0);
    // The backup's keys split the listing into ranges listed side by side.
    let splits = crate::ops::backup::bucket::split_keys(&expected);
    let listing = match crate::ops::backup::bucket::list_bucket_split(store, name, &splits).await {
        Ok(l) => Some(l),
        Err(crate::ops::backup::BackupError::ObjStore(ObjStoreError::NoSuchBucket { .. })) => None,
        Err(crate::ops::backup::BackupError::ObjStore(e)) => return Err(e.into()),
        Err(e) => return Err(VerifyError::Internal(e.to_string())),
    };
    let check = BucketCheck {
        bucket: bucket.into(),
        name: name.into(),
        expected_objects: expected.count - lost.len() as u64,
        actual_objects: listing.as_ref().map_or(0, |l| l.count),
        expected_bytes: expected.bytes,
        actual_bytes: listing.as_ref().map_or(0, |l| l.bytes),
        digests_checked: 0,
        missing: Vec::new(),
        missing_count: 0,
        unexpected: Vec::new(),
        unexpected_count: 0,
        different: Vec::new(),
        different_count: 0,
        settings_different: Vec::new(),
        ok: false,
    };
    // The list and the listing, both in archive order, walked together on a blocking thread;
    // objects present with the right size go on to be read back.
    let read_back = opts.digests;
    if read_back {
        progress.phase(format!("reading back bucket {name}"), expected.bytes, expected.count);
    }
    let policy = opts.attributes.get(bucket).unwrap_or(&crate::ops::attributes::NO_POLICY).clone();
    let attributed = {
        let policy = policy.clone();
        move |e: &ObjectEntry| !policy.apply(&e.attrs).is_empty()
    };
    // Objects present with the right size are read back (`read_back`), or, when they carry
    // attributes, have those checked with a HEAD.
    let (tx, rx) = tokio::sync::mpsc::channel::<ObjectEntry>(64);
    let merge = tokio::task::spawn_blocking(move || -> Result<BucketCheck, String> {
        let mut c = check;
        let mut listed = listing.map(|l| l.into_iter_sorted());
        let unexpected = |c: &mut BucketCheck, key: String| {
            c.unexpected_count += 1;
            if c.unexpected.len() < LIST_LIMIT {
                c.unexpected.push(key);
            }
        };
        for e in expected.iter().map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let d = crate::model::spool::key_digest(&e.key);
            let mut found = None;
            if let Some(l) = listed.as_mut() {
                while let Some(next) = l.peek_digest().copied() {
                    if next > d {
                        break;
                    }
                    let o = l.next().ok_or("listing ended")?.map_err(|e| e.to_string())?;
                    if next == d {
                        found = Some(o);
                    } else {
                        unexpected(&mut c, o.key);
                    }
                }
            }
            if lost.contains(&e.key) {
                c.expected_bytes -= e.size;
                if let Some(o) = found {
                    unexpected(&mut c, o.key);
                }
                continue;
            }
            match found {
                None => {
                    c.missing_count += 1;
                    if c.missing.len() < LIST_LIMIT {
                        c.missing.push(e.key.clone());
                    }
                }
                Some(o) if o.size != e.size => {
                    c.different_count += 1;
                    if c.different.len() < LIST_LIMIT {
                        c.different.push(Difference {
                            key: e.key.clone(),
                            reason: format!("the backup has {} bytes, the installation {}", e.size, o.size),
                        });
                    }
                }
                Some(_) if read_back || attributed(&e) => {
                    if tx.blocking_send(e).is_err() {
                        return Ok(c);
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(l) = listed {
            for o in l {
                unexpected(&mut c, o.map_err(|e| e.to_string())?.key);
            }
        }
        Ok(c)
    });
    let progress = Arc::new(progress.clone());
    // The reads (and with them the merge's channel) end with this block.
    let (checked, differences, failed) = {
        let reads = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(|e| {
                let (progress, policy) = (progress.clone(), &policy);
                async move {
                    let r = if read_back {
                        compare_object(store, name, &e, policy, &progress).await
                    } else {
                        compare_attributes(store, name, &e, policy).await
                    };
                    (e, r)
                }
            })
            .buffer_unordered(opts.parallel.max(1));
        let mut reads = std::pin::pin!(reads);
        let mut checked = 0u64;
        let mut differences = Vec::new();
        let mut failed = None;
        while let Some((e, r)) = reads.next().await {
            checked += 1;
            match r {
                Ok(Some(reason)) => differences.push(Difference { key: e.key.clone(), reason }),
                Ok(None) => {}
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        (checked, differences, failed)
    };
    let merged = merge.await.map_err(|e| VerifyError::Internal(e.to_string()))?;
    if let Some(err) = failed {
        return Err(err);
    }
    let mut check = merged.map_err(|e| VerifyError::Internal(format!("bucket {name}: {e}")))?;
    check.digests_checked = if read_back { checked } else { 0 };
    check.different_count += differences.len() as u64;
    for d in differences {
        if check.different.len() < LIST_LIMIT {
            check.different.push(d);
        }
    }
    check.missing.sort();
    check.unexpected.sort();
    check.different.sort_by(|a, b| a.key.cmp(&b.key));
    check.ok = check.missing_count == 0 && check.unexpected_count == 0 && check.different_count == 0;
    Ok(check)
}

/// What differs between the headers a server gives and what the backup recorded.
pub fn header_differences(
    key: &str,
    expected_type: &Option<String>,
    expected_meta: &BTreeMap<String, String>,
    head: &crate::objstore::ObjectHead,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let type_ok = match (expected_type, &head.content_type) {
        (Some(e), Some(a)) => e == a,
        (None, None) => true,
        // Stored without a type: the server's default for the key is not a difference.
        (None, Some(a)) => is_server_default_type(a, key),
        (Some(_), None) => false,
    };
    if !type_ok {
        reasons
            .push(format!("content type: the backup has {expected_type:?}, the installation {:?}", head.content_type));
    }
    if &head.metadata != expected_meta {
        reasons.push(format!("user metadata: the backup has {expected_meta:?}, the installation {:?}", head.metadata));
    }
    reasons
}

/// The attributes the object has now, with its tags when it has any or should have some.
async fn attributes_now(
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    head: &crate::objstore::ObjectHead,
) -> Result<crate::objstore::ObjectAttributes, VerifyError> {
    let mut found = head.attrs.clone();
    if head.tag_count > 0 || !e.attrs.tags.is_empty() {
        found.tags = store.get_object_tagging(bucket, &e.key).await?;
    }
    Ok(found)
}

/// The attributes that differ, as a reason, if any do.
fn attribute_reason(fields: &[crate::objstore::Field]) -> Option<String> {
    (!fields.is_empty())
        .then(|| format!("attributes differ: {}", fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")))
}

/// Compares one object's attributes (HEAD, and its tags): what differs, if anything.
async fn compare_attributes(
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    policy: &crate::ops::attributes::AttributePolicy,
) -> Result<Option<String>, VerifyError> {
    let head = match store.head_object(bucket, &e.key).await {
        Ok(h) => h,
        Err(ObjStoreError::NoSuchKey { .. }) => return Ok(Some("disappeared while verifying".into())),
        Err(err) => return Err(err.into()),
    };
    let found = attributes_now(store, bucket, e, &head).await?;
    Ok(attribute_reason(&policy.differences(e, &found)))
}

/// Reads one object; returns what differs from the manifest, if anything.
pub(crate) async fn compare_object(
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    policy: &crate::ops::attributes::AttributePolicy,
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
    reasons.extend(header_differences(&e.key, &e.content_type, &e.metadata, &body.head));
    let found = attributes_now(store, bucket, e, &body.head).await?;
    reasons.extend(attribute_reason(&policy.differences(e, &found)));
    Ok(if reasons.is_empty() { None } else { Some(reasons.join("; ")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_default_types_are_not_differences_only_without_a_recorded_type() {
        let head = |ct: &str| crate::objstore::ObjectHead { content_type: Some(ct.into()), ..Default::default() };
        let none = BTreeMap::new();
        assert!(header_differences("a/b.wav", &None, &none, &head("binary/octet-stream")).is_empty());
        assert!(header_differences("a/b.wav", &None, &none, &head("audio/wav")).is_empty());
        assert!(header_differences("a/b.json", &None, &none, &head("application/json")).is_empty());
        assert!(!header_differences("a/b.json", &None, &none, &head("image/png")).is_empty());
        let recorded = Some("audio/flac".to_string());
        assert!(!header_differences("a/b.flac", &recorded, &none, &head("binary/octet-stream")).is_empty());
        assert!(header_differences("a/b.flac", &recorded, &none, &head("audio/flac")).is_empty());
    }
}
