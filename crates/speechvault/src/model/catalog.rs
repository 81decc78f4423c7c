//! The catalog: snapshots grouped into backup sets, and finding one by id or `latest`.

use std::collections::BTreeMap;

use rustic_core::repofile::SnapshotFile;
use serde::Serialize;

use crate::model::manifest::{self, Manifest};
use crate::model::spool::ObjectList;
use crate::repository::damage::DamagedFile;
use crate::repository::{RepoError, Repository, RepositoryReader};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("no complete backup{} in the repository", match .installation { Some(i) => format!(" of installation {i:?}"), None => String::new() })]
    NoBackup { installation: Option<String> },
    #[error("no backup {0:?} in the repository (`speechvault snapshots` lists them)")]
    NotFound(String),
    #[error("{0:?} matches more than one backup; give more of the id")]
    Ambiguous(String),
    #[error(
        "backup {0} is incomplete (it has no manifest: the backup failed or was interrupted, or its manifest's snapshot file is damaged, which `speechvault snapshots` names) and cannot be used; restore another backup, or this one from a copy of the repository"
    )]
    Incomplete(String),
    #[error(
        "`latest` is ambiguous here: installation {target:?} has no backups, and the repository holds backups of {installations}; say whose with --source NAME"
    )]
    WhichSource { target: String, installations: String },
    #[error("the manifest of backup {id} is unreadable: {reason}")]
    BadManifest { id: String, reason: String },
}

/// All snapshots of one backup.
#[derive(Debug, Clone)]
pub struct BackupSet {
    pub id: String,
    pub installation: String,
    pub time: String,
    pub snapshots: Vec<SnapshotFile>,
    pub manifest: Option<SnapshotFile>,
}

/// One line of `speechvault snapshots`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSetView {
    pub backup_id: String,
    pub installation: String,
    pub time: String,
    pub complete: bool,
    pub snapshots: Vec<String>,
    pub parts: Vec<String>,
    /// Marked as looking like ransomware happened since the backup before it.
    pub anomalous: bool,
    /// Complete, but snapshots of its parts are missing (a snapshot file lost, or damaged:
    /// the listing's `damaged_files`). Restoring it fails; `restore --salvage` does not
    /// exist yet, so restore an older backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

impl BackupSet {
    pub fn complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// Whether the backup was marked as looking like ransomware happened (its manifest
    /// snapshot carries the tag).
    pub fn anomalous(&self) -> bool {
        self.manifest.as_ref().is_some_and(|m| m.tags.contains(manifest::ANOMALOUS_TAG))
    }

    /// Whether a drill of this backup passed (a record snapshot tagged `drill-passed`).
    pub fn drill_passed(&self) -> bool {
        self.snapshots.iter().any(|s| s.label == "drill" && s.tags.contains("drill-passed"))
    }

    /// When the backup started, as Unix seconds.
    pub fn unix_time(&self) -> Option<f64> {
        self.time.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond() as f64 / 1000.0)
    }

    pub fn view(&self) -> BackupSetView {
        BackupSetView {
            backup_id: self.id.clone(),
            installation: self.installation.clone(),
            time: self.time.clone(),
            complete: self.complete(),
            snapshots: self.snapshots.iter().map(|s| s.id.to_string()).collect(),
            parts: self.snapshots.iter().map(|s| s.label.clone()).collect(),
            anomalous: self.anomalous(),
            damaged: self.missing_parts().map(|n| {
                format!(
                    "{n} of its {} part snapshots are missing or unreadable",
                    self.snapshots.iter().filter(|s| s.label != "manifest" && s.label != "drill").count() + n
                )
            }),
        }
    }

    /// How many part snapshots the manifest counts that are not here (backups written
    /// before the count was recorded: `None`).
    pub fn missing_parts(&self) -> Option<usize> {
        let expected: usize = self
            .manifest
            .as_ref()?
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(manifest::PARTS_TAG_PREFIX))?
            .parse()
            .ok()?;
        // Drill records (`drill`) are kept with the set but are not among its parts.
        let have = self.snapshots.iter().filter(|s| s.label != "manifest" && s.label != "drill").count();
        (expected > have).then_some(expected - have)
    }

    /// The snapshot the manifest names `id`: by its id here, or, in a copy, by the id it had
    /// in the repository it was first written to.
    pub fn snapshot(&self, id: &str) -> Option<&SnapshotFile> {
        self.snapshots
            .iter()
            .find(|s| s.id.to_string() == id)
            .or_else(|| self.snapshots.iter().find(|s| s.original.is_some_and(|o| o.to_string() == id)))
    }

    /// A bucket's object list (format 2: its file in the manifest snapshot; format 1: the
    /// manifest's inline entries), on disk in archive order.
    pub fn object_list(
        &self,
        reader: &RepositoryReader,
        manifest: &Manifest,
        bucket: &str,
    ) -> Result<ObjectList, CatalogError> {
        let bad = |reason: String| CatalogError::BadManifest { id: self.id.clone(), reason };
        let entry = manifest.buckets.get(bucket).ok_or_else(|| bad(format!("it has no bucket {bucket}")))?;
        let list = match &entry.objects_file {
            None => ObjectList::from_entries(entry.entries.clone()),
            Some(path) => {
                let snap = self.manifest.as_ref().ok_or_else(|| CatalogError::Incomplete(self.id.clone()))?;
                let node = reader.node(snap, path)?;
                let mut raw = tempfile::tempfile_in(crate::support::fs::temp_dir())
                    .map_err(|e| bad(format!("a temporary file for {path}: {e}")))?;
                {
                    use std::io::Write;
                    let mut w = std::io::BufWriter::new(&mut raw);
                    reader.dump(&node, &mut w)?;
                    w.flush().map_err(|e| bad(format!("a temporary file for {path}: {e}")))?;
                }
                use std::io::Seek;
                raw.rewind().map_err(|e| bad(e.to_string()))?;
                ObjectList::from_reader(raw)
            }
        }
        .map_err(|e| bad(format!("bucket {bucket}'s object list: {e}")))?;
        if list.count != entry.objects {
            return Err(bad(format!(
                "bucket {bucket}'s object list has {} objects, the manifest says {}",
                list.count, entry.objects
            )));
        }
        Ok(list)
    }

    /// Reads the manifest.
    pub fn manifest(&self, reader: &RepositoryReader) -> Result<Manifest, CatalogError> {
        let snap = self.manifest.as_ref().ok_or_else(|| CatalogError::Incomplete(self.id.clone()))?;
        let raw = reader.read(snap, manifest::MANIFEST_PATH)?;
        let m = Manifest::parse(&raw).map_err(|reason| CatalogError::BadManifest { id: self.id.clone(), reason })?;
        if m.backup_id != self.id {
            return Err(CatalogError::BadManifest {
                id: self.id.clone(),
                reason: format!("it names backup {}", m.backup_id),
            });
        }
        Ok(m)
    }
}

/// The backup sets that read, and the snapshot files that do not.
#[derive(Debug, Default)]
pub struct Catalog {
    pub sets: Vec<BackupSet>,
    /// Snapshot files that cannot be read: each hides (a part of) one backup, not knowable
    /// which until `repair snapshots` sets it aside and the backup shows as incomplete.
    pub damaged: Vec<DamagedFile>,
}

/// Groups speechvault's snapshots by backup id, oldest first. A damaged snapshot file is
/// passed over (with a warning): it affects only its own backup ([`scan`] names it).
pub fn backup_sets(repo: &Repository) -> Result<Vec<BackupSet>, CatalogError> {
    let catalog = scan(repo)?;
    for d in &catalog.damaged {
        tracing::warn!(file = %d.path(), reason = %d.reason, "damaged snapshot file passed over (`speechvault repair snapshots` sets it aside)");
    }
    Ok(catalog.sets)
}

/// Every backup set that reads, with the damaged snapshot files named.
pub fn scan(repo: &Repository) -> Result<Catalog, CatalogError> {
    let found = repo.snapshot_scan()?;
    Ok(Catalog { sets: group(found.snapshots), damaged: found.damaged })
}

/// Groups speechvault's snapshots by backup id, oldest first.
pub fn group(snapshots: Vec<SnapshotFile>) -> Vec<BackupSet> {
    let mut sets: BTreeMap<String, BackupSet> = BTreeMap::new();
    for snap in snapshots {
        let tags: Vec<String> = snap.tags.iter().cloned().collect();
        if !tags.iter().any(|t| t == manifest::TAG) {
            continue;
        }
        let Some(id) = tags.iter().find_map(|t| t.strip_prefix("backup:")).map(str::to_string) else {
            continue;
        };
        let installation = tags.iter().find_map(|t| t.strip_prefix("installation:")).unwrap_or_default().to_string();
        let time = snap.time.timestamp().to_string();
        let set = sets.entry(id.clone()).or_insert_with(|| BackupSet {
            id: id.clone(),
            installation,
            time: time.clone(),
            snapshots: Vec::new(),
            manifest: None,
        });
        if time < set.time {
            set.time = time;
        }
        if tags.iter().any(|t| t == "manifest") {
            set.manifest = Some(snap.clone());
        }
        set.snapshots.push(snap);
    }
    let mut out: Vec<BackupSet> = sets.into_values().collect();
    out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
    out
}

/// Finds a complete backup: `latest` (optionally of one installation), an id, or a unique
/// prefix of an id.
pub fn find(sets: &[BackupSet], selector: &str, installation: Option<&str>) -> Result<BackupSet, CatalogError> {
    let found = if selector == "latest" {
        sets.iter()
            .rev()
            .find(|s| s.complete() && installation.is_none_or(|i| s.installation == i))
            .ok_or_else(|| CatalogError::NoBackup { installation: installation.map(str::to_string) })?
    } else {
        let matches: Vec<&BackupSet> = sets.iter().filter(|s| s.id == selector || s.id.starts_with(selector)).collect();
        match matches.len() {
            0 => return Err(CatalogError::NotFound(selector.into())),
            1 => matches[0],
            _ => match matches.iter().find(|s| s.id == selector) {
                Some(exact) => *exact,
                None => return Err(CatalogError::Ambiguous(selector.into())),
            },
        }
    };
    if !found.complete() {
        return Err(CatalogError::Incomplete(found.id.clone()));
    }
    Ok(found.clone())
}

/// [`find`] for work on `target` (restore into it, verify it). `latest` without `source`
/// is the latest complete backup, as [`find`] has it, unless the repository holds backups of
/// several installations and none of `target`'s own: then it is refused, naming them (a DR
/// site's `restore latest --to dr` must not take some other installation's backup).
pub fn find_for(
    sets: &[BackupSet],
    selector: &str,
    source: Option<&str>,
    target: &str,
) -> Result<BackupSet, CatalogError> {
    if selector == "latest" && source.is_none() {
        let owners: std::collections::BTreeSet<&str> =
            sets.iter().filter(|s| s.complete()).map(|s| s.installation.as_str()).collect();
        if owners.len() > 1 && !owners.contains(target) {
            return Err(CatalogError::WhichSource {
                target: target.to_string(),
                installations: owners.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
    }
    find(sets, selector, source)
}

/// Each object of a bucket's list with its file in the bucket's snapshot, both walked in
/// archive order: one directory of the snapshot and one entry of the list in memory at a time.
/// An object without its file, or whose file has another size, is an error (the backup is
/// damaged); files no object names are passed over.
pub struct PairedObjects<'a> {
    files: Box<dyn Iterator<Item = Result<(std::path::PathBuf, rustic_core::repofile::Node), RepoError>> + Send + 'a>,
    entries: crate::model::spool::ObjectListIter,
    snapshot: String,
}

impl<'a> PairedObjects<'a> {
    pub fn new(reader: &'a RepositoryReader, snap: &SnapshotFile, list: &ObjectList) -> Result<Self, CatalogError> {
        let entries = list
            .iter()
            .map_err(|e| CatalogError::BadManifest { id: snap.id.to_string(), reason: format!("object list: {e}") })?;
        Ok(Self { files: reader.file_iter(snap)?, entries, snapshot: snap.id.to_string() })
    }
}

impl Iterator for PairedObjects<'_> {
    type Item = Result<(manifest::ObjectEntry, rustic_core::repofile::Node), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.entries.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(format!("object list: {e}"))),
        };
        loop {
            let (path, node) = match self.files.next() {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Some(Err(e.to_string())),
                None => {
                    return Some(Err(format!(
                        "object {:?} (file {}) is missing from snapshot {}",
                        entry.key, entry.path, self.snapshot
                    )));
                }
            };
            let path = path.display().to_string();
            match path.as_str().cmp(entry.path.as_str()) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => {
                    return Some(Err(format!(
                        "object {:?} (file {}) is missing from snapshot {}",
                        entry.key, entry.path, self.snapshot
                    )));
                }
                std::cmp::Ordering::Equal => {
                    if node.meta.size != entry.size {
                        return Some(Err(format!(
                            "object {:?} has {} bytes in snapshot {}, {} in the manifest",
                            entry.key, node.meta.size, self.snapshot, entry.size
                        )));
                    }
                    return Some(Ok((entry, node)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, installation: &str, time: &str) -> BackupSet {
        let manifest = SnapshotFile { label: "manifest".into(), ..Default::default() };
        BackupSet {
            id: id.into(),
            installation: installation.into(),
            time: time.into(),
            snapshots: vec![manifest.clone()],
            manifest: Some(manifest),
        }
    }

    #[test]
    fn latest_for_a_target_without_backups_is_refused_only_among_several_installations() {
        let one = vec![set("a1", "prod", "2026-01-01"), set("a2", "prod", "2026-01-02")];
        // The usual DR case: one installation's backups, restored into another.
        assert_eq!(find_for(&one, "latest", None, "dr").unwrap().id, "a2");
        let two = vec![set("a1", "prod", "2026-01-01"), set("b1", "test", "2026-01-03")];
        let err = find_for(&two, "latest", None, "dr").unwrap_err();
        assert!(
            matches!(&err, CatalogError::WhichSource { installations, .. } if installations == "prod, test"),
            "{err}"
        );
        assert_eq!(find_for(&two, "latest", Some("prod"), "dr").unwrap().id, "a1");
        // The target's own backups exist: as before (the latest of all).
        assert_eq!(find_for(&two, "latest", None, "prod").unwrap().id, "b1");
        // An id is an id.
        assert_eq!(find_for(&two, "a1", None, "dr").unwrap().id, "a1");
    }

    #[test]
    fn a_manifest_counting_more_parts_than_present_marks_the_backup_damaged() {
        let mut s = set("a1", "prod", "2026-01-01");
        s.manifest.as_mut().unwrap().tags.add(format!("{}2", manifest::PARTS_TAG_PREFIX));
        s.snapshots = vec![SnapshotFile::default(), s.manifest.clone().unwrap()];
        assert_eq!(s.missing_parts(), Some(1));
        assert!(s.view().damaged.unwrap().contains("1 of its 2"));
        s.snapshots.insert(0, SnapshotFile::default());
        assert_eq!(s.missing_parts(), None);
    }
}
