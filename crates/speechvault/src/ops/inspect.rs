//! Looking inside a backup (`ls`) and comparing it with a live installation (`diff`): how an
//! operator finds what to restore. `ls` needs no database server: rows come straight out of
//! the dumps ([`crate::pg::dumpdata`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::model::catalog::BackupSet;
use crate::model::config::Installation;
use crate::model::manifest::{Manifest, ObjectEntry};
use crate::model::profile::Profile;
use crate::ops::selective::SelectiveError;
use crate::ops::selective::plan::canonical;
use crate::pg::dumpdata::TableRows;
use crate::repository::RepositoryReader;
use crate::support::progress::Progress;

/// Columns shown for customizations and speakers, when the table has them.
const SHOWN: [&str; 8] = ["owner", "name", "base_model_name", "language", "kind", "status", "created", "updated"];

/// One customization or speaker in a backup.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub database: String,
    pub id: String,
    /// The columns of [`SHOWN`] the table has, as the dump holds them.
    pub fields: BTreeMap<String, Option<String>>,
}

/// A service instance in a backup.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceSummary {
    pub instance: String,
    /// Rows per `database.table`, by the ownership rules.
    pub rows: BTreeMap<String, u64>,
    pub objects: u64,
    pub bytes: u64,
}

/// The backup's manifest and reader, and its dumps spooled (only what is asked for).
pub struct Opened {
    pub reader: Arc<RepositoryReader>,
    pub manifest: Manifest,
    pub set: BackupSet,
    spool: Option<crate::ops::restore::checks::Spool>,
    /// Tables already read out of the dumps, by (database, table): rules often name one twice.
    read: std::sync::Mutex<BTreeMap<(String, String), Option<TableRows>>>,
}

impl Opened {
    pub async fn open(
        repo: Arc<crate::repository::Repository>,
        set: &BackupSet,
        databases: &BTreeSet<String>,
        progress: &Progress,
    ) -> Result<Self, SelectiveError> {
        let (v, s) = (repo.clone(), set.clone());
        let (reader, manifest) = tokio::task::spawn_blocking(move || -> Result<_, SelectiveError> {
            let reader = Arc::new(v.reader()?);
            let manifest = s.manifest(&reader)?;
            Ok((reader, manifest))
        })
        .await
        .map_err(|e| SelectiveError::Internal(e.to_string()))??;
        let mut needed = manifest.clone();
        needed.databases.retain(|db, _| databases.contains(db));
        needed.buckets.clear();
        let spool = if needed.databases.is_empty() {
            None
        } else {
            Some(
                crate::ops::restore::checks::spool_dumps(
                    &reader,
                    set,
                    &needed,
                    &crate::support::fs::temp_dir(),
                    progress,
                )
                .await?,
            )
        };
        Ok(Self { reader, manifest, set: set.clone(), spool, read: Default::default() })
    }

    /// One table's rows from the backup's dump of `database` (`None` when the backup does
    /// not hold the database or the table).
    pub async fn table(&self, database: &str, table: &str) -> Result<Option<TableRows>, SelectiveError> {
        let key = (database.to_string(), table.to_string());
        if let Some(known) = self.read.lock().ok().and_then(|r| r.get(&key).cloned()) {
            return Ok(known);
        }
        let Some(dump) = self.spool.as_ref().and_then(|s| s.files.get(database)) else {
            return Ok(None);
        };
        let (schema, name) = crate::model::profile::split_table(table);
        let tables = crate::pg::dumpdata::read_tables(dump, &[name.to_string()]).await?;
        let found = tables.into_values().find(|t| {
            let (s, n) = t.table.split_once('.').unwrap_or(("public", &t.table));
            s.trim_matches('"') == schema && n.trim_matches('"') == name
        });
        if let Ok(mut r) = self.read.lock() {
            r.insert(key, found.clone());
        }
        Ok(found)
    }

    /// Every object of `bucket` whose key passes `keep`, in archive order.
    pub async fn objects(
        &self,
        bucket: &str,
        keep: impl Fn(&ObjectEntry) -> bool + Send + 'static,
    ) -> Result<Vec<ObjectEntry>, SelectiveError> {
        if !self.manifest.buckets.contains_key(bucket) {
            return Ok(Vec::new());
        }
        let (r, s, m, b) = (self.reader.clone(), self.set.clone(), self.manifest.clone(), bucket.to_string());
        tokio::task::spawn_blocking(move || -> Result<Vec<ObjectEntry>, SelectiveError> {
            let list = s.object_list(&r, &m, &b)?;
            let mut out = Vec::new();
            for e in list.iter().map_err(|e| SelectiveError::Internal(e.to_string()))? {
                let e = e.map_err(|e| SelectiveError::Internal(e.to_string()))?;
                if keep(&e) {
                    out.push(e);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| SelectiveError::Internal(e.to_string()))?
    }
}

/// The databases `ls` and `diff` read for customizations, speakers or instances.
pub fn databases_of(profile: &Profile, kinds: &[&str], instances: bool) -> BTreeSet<String> {
    let mut dbs: BTreeSet<String> =
        profile.selections.iter().filter(|r| kinds.contains(&r.kind.as_str())).map(|r| r.database.clone()).collect();
    if instances {
        dbs.extend(profile.ownership.iter().map(|r| r.database.clone()));
        dbs.extend(profile.objects.iter().map(|r| r.database.clone()));
    }
    dbs
}

/// The customizations (`kind` = "customization") or speakers in the backup.
pub async fn items(opened: &Opened, profile: &Profile, kind: &str) -> Result<Vec<Item>, SelectiveError> {
    let mut out = Vec::new();
    for rule in profile.selections.iter().filter(|r| r.kind == kind) {
        let Some(rows) = opened.table(&rule.database, &rule.table).await? else { continue };
        let Some(id_col) = rows.column(&rule.column) else { continue };
        for i in 0..rows.lines.len() {
            let f = rows.fields(i);
            let fields = SHOWN.iter().filter_map(|c| rows.column(c).map(|p| (c.to_string(), f[p].clone()))).collect();
            out.push(Item {
                database: rule.database.clone(),
                id: f[id_col].clone().map(|v| canonical(&v)).unwrap_or_default(),
                fields,
            });
        }
    }
    out.sort_by(|a, b| (&a.database, &a.id).cmp(&(&b.database, &b.id)));
    Ok(out)
}

/// Every service instance the ownership rules find in the backup, with its rows and the
/// objects that belong to its rows.
pub async fn instances(opened: &Opened, profile: &Profile) -> Result<Vec<InstanceSummary>, SelectiveError> {
    let mut by: BTreeMap<String, InstanceSummary> = BTreeMap::new();
    // Prefixes of the objects each instance's rows own, per bucket.
    let mut prefixes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for rule in &profile.ownership {
        let Some(rows) = opened.table(&rule.database, &rule.table).await? else { continue };
        let Some(col) = rule.columns.iter().find_map(|c| rows.column(c)) else { continue };
        let object_rules: Vec<_> =
            profile.objects.iter().filter(|o| o.database == rule.database && o.table == rule.table).collect();
        for i in 0..rows.lines.len() {
            let f = rows.fields(i);
            let Some(owner) = f[col].as_deref() else { continue };
            let owner = crate::model::instance::InstanceId::parse(owner)
                .map(|i| i.to_string())
                .unwrap_or_else(|_| owner.into());
            let s = by
                .entry(owner.clone())
                .or_insert_with(|| InstanceSummary { instance: owner.clone(), ..Default::default() });
            *s.rows.entry(format!("{}.{}", rule.database, rule.table)).or_default() += 1;
            for o in &object_rules {
                let values: BTreeMap<String, String> =
                    rows.columns.iter().enumerate().filter_map(|(p, c)| f[p].clone().map(|v| (c.clone(), v))).collect();
                if let Some(p) = crate::ops::selective::fill(&o.prefix, &values) {
                    prefixes.entry(o.bucket.clone()).or_default().insert(p, owner.clone());
                }
            }
        }
    }
    for (bucket, owned) in prefixes {
        let owned = Arc::new(owned);
        let o2 = owned.clone();
        let entries = opened.objects(&bucket, move |e| owner_of(&o2, &e.key).is_some()).await?;
        for e in entries {
            if let Some(owner) = owner_of(&owned, &e.key)
                && let Some(s) = by.get_mut(owner)
            {
                s.objects += 1;
                s.bytes += e.size;
            }
        }
    }
    Ok(by.into_values().collect())
}

/// The owner of the longest prefix (ending at a `/`) of `key` in `owned`.
fn owner_of<'a>(owned: &'a BTreeMap<String, String>, key: &str) -> Option<&'a String> {
    key.match_indices('/').rev().find_map(|(i, _)| owned.get(&key[..=i]))
}

/// What changed on a live installation since a backup.
pub use crate::ops::selective::Changes;

#[derive(Debug, Clone, Serialize)]
pub struct BucketChanges {
    pub bucket: String,
    pub name: String,
    #[serde(flatten)]
    pub changes: Changes,
    /// The bucket's own settings that differ from the backup's (lifecycle, policy, ...).
    pub settings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub backup_id: String,
    pub installation: String,
    /// By `database`: customizations added, removed or changed (their own row) since.
    pub customizations: BTreeMap<String, Changes>,
    pub speakers: BTreeMap<String, Changes>,
    pub buckets: Vec<BucketChanges>,
}

/// Compares the backup with the live installation `target`.
pub async fn diff(opened: &Opened, target: &Installation, profile: &Profile) -> Result<DiffReport, SelectiveError> {
    let mut report = DiffReport {
        backup_id: opened.set.id.clone(),
        installation: target.name.clone(),
        customizations: BTreeMap::new(),
        speakers: BTreeMap::new(),
        buckets: Vec::new(),
    };
    for rule in &profile.selections {
        let Some(rows) = opened.table(&rule.database, &rule.table).await? else { continue };
        let changes = crate::ops::selective::rows::compare_table(target, &rule.database, &rows, &rule.column).await?;
        let slot = if rule.kind == "speaker" { &mut report.speakers } else { &mut report.customizations };
        slot.insert(rule.database.clone(), changes);
    }
    let store = crate::objstore::ObjectStore::new(target.s3.clone())?;
    for bucket in opened.manifest.buckets.keys() {
        let name = target.bucket(bucket);
        let mut changes = Changes::default();
        let backed: Vec<ObjectEntry> = opened.objects(bucket, |_| true).await?;
        let mut live: BTreeMap<String, crate::objstore::ObjectInfo> = BTreeMap::new();
        let mut settings = Vec::new();
        if store.bucket_exists(&name).await? {
            let recorded = &opened.manifest.buckets[bucket].settings;
            if !recorded.is_empty() {
                let now = store.bucket_settings(&name).await?;
                settings = crate::ops::settings::differences(recorded, &now, true);
            }
            let listing = crate::ops::backup::bucket::list_bucket(&store, &name)
                .await
                .map_err(|e| SelectiveError::Internal(e.to_string()))?;
            for o in listing.into_iter_sorted() {
                let o = o.map_err(|e| SelectiveError::Internal(e.to_string()))?;
                live.insert(o.key.clone(), o);
            }
        }
        for e in backed {
            match live.remove(&e.key) {
                None => changes.removed.push(e.key),
                Some(o) if o.size != e.size => changes.changed.push(e.key),
                Some(o) if o.etag.trim_matches('"') != e.etag.trim_matches('"') => {
                    // A multipart ETag depends on the part size, not only the bytes: read it.
                    let multipart = o.etag.contains('-') || e.etag.contains('-');
                    if !multipart || !crate::ops::restore::objects::identical(&store, &name, &e, &o).await? {
                        changes.changed.push(e.key)
                    }
                }
                Some(_) => {}
            }
        }
        changes.added = live.into_keys().collect();
        changes.removed.sort();
        changes.changed.sort();
        report.buckets.push(BucketChanges { bucket: bucket.clone(), name, changes, settings });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_belong_to_the_longest_owned_prefix() {
        let owned: BTreeMap<String, String> =
            [("customizations/a/".to_string(), "x".to_string()), ("jobs/j/".to_string(), "y".to_string())].into();
        assert_eq!(owner_of(&owned, "customizations/a/corpora/c.txt").map(String::as_str), Some("x"));
        assert_eq!(owner_of(&owned, "customizations/a/edge/../escape.txt").map(String::as_str), Some("x"));
        assert_eq!(owner_of(&owned, "customizations/ab/x"), None);
        assert_eq!(owner_of(&owned, "jobs/j"), None);
    }
}
