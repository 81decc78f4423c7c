//! `check`: is the repository whole, and if not, which backups does the damage touch?
//!
//! rustic checks the structure (index, pack sizes, every tree) and, with `--read-data`, reads
//! and authenticates every pack (or a subset). When packs are missing or damaged, the blobs
//! they held are traced through every backup set's files, so the report says which sets,
//! databases and objects are affected: what an operator needs to decide which backup to
//! restore instead.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::catalog::{self, CatalogError};
use crate::repository::maintenance::ReadSubset;
use crate::repository::{RepoError, Repository};

/// At most this many objects are named per affected set.
const LIST_LIMIT: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Retention(#[from] crate::ops::retention::RetentionError),
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub repository: String,
    pub ok: bool,
    /// `all`, `N%`, `n/m`, or `None` when no data was read.
    pub read_data: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub damaged_packs: Vec<String>,
    pub affected: Vec<AffectedSet>,
    /// In an immutable repository: files written over or hidden (each is read from the
    /// version a backup wrote; an operator should find out who did it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tampered: Vec<crate::repository::immutable::Finding>,
    /// In an immutable repository: files the complete backups need whose retention ended
    /// or would end before `retain` from now (a key that may delete could have deleted them
    /// once it ended); check extends them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub short_retention: Vec<crate::repository::retention::ShortRetention>,
    /// What to run when the damage has a known remedy (a lost index: `repair index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// `--repair-from`: what the first check found and what healing did; the rest of the
    /// report is the check run again after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repair>,
}

/// What `check --repair-from` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The errors the check found before healing.
    pub found: Vec<String>,
    pub healed: crate::repository::heal::Healed,
}

/// `check --read-data --repair-from`: checks, and when the check finds damage, heals the
/// repository from `other` (a repository holding copies of its backups) and checks again.
pub fn run_and_repair(
    repo: &Repository,
    other: &Repository,
    read_data: Option<ReadSubset>,
    keep: &crate::ops::immutability::KeepPolicy,
) -> Result<CheckReport, CheckError> {
    let before = run(repo, read_data, keep)?;
    if before.ok {
        return Ok(before);
    }
    let healed = repo.heal_from(other, &before.damaged_packs)?;
    // The packs written now are whole: the structure check proves every tree and blob is there.
    let mut after = run(repo, None, keep)?;
    after.read_data = before.read_data;
    if !after.ok && after.fix.is_none() {
        after.fix = Some(format!(
            "{} blobs the damaged packs held are not in {} either: restore the backups named above from another copy, or an older backup",
            healed.blobs_still_missing, healed.from
        ));
    }
    after.repaired = Some(Repair { found: before.errors, healed });
    Ok(after)
}

#[derive(Debug, Clone, Serialize)]
pub struct AffectedSet {
    pub backup_id: String,
    pub installation: String,
    pub complete: bool,
    /// The manifest itself cannot be read whole.
    pub manifest: bool,
    pub databases: Vec<String>,
    /// `bucket/key` of damaged objects (the first few; all are counted).
    pub objects: Vec<String>,
    pub objects_count: usize,
    /// Parts whose file list cannot be read at all (a damaged tree).
    pub unreadable: Vec<String>,
}

/// Runs the check; blocking (call it from a blocking thread). `keep`: in an immutable
/// repository, the backups whose files must stay retained.
pub fn run(
    repo: &Repository,
    read_data: Option<ReadSubset>,
    keep: &crate::ops::immutability::KeepPolicy,
) -> Result<CheckReport, CheckError> {
    let described = read_data.as_ref().map(|r| match r {
        ReadSubset::All => "all".to_string(),
        ReadSubset::Percent(p) => format!("{p}%"),
        ReadSubset::Part(n, m) => format!("{n}/{m}"),
    });
    // First, so that the structural check below reads the retained versions.
    let tampered = repo.immutable_findings()?;
    let found = repo.check_repository(read_data)?;
    let mut report = CheckReport {
        repository: repo.location().describe(),
        ok: found.errors.is_empty(),
        read_data: described,
        errors: found.errors,
        warnings: found.warnings,
        damaged_packs: found.damaged_packs.iter().cloned().collect(),
        affected: Vec::new(),
        tampered,
        short_retention: Vec::new(),
        fix: None,
        repaired: None,
    };
    // rustic's advice names its own command.
    for w in report.warnings.iter_mut().chain(report.errors.iter_mut()) {
        *w = w.replace("'rustic repair index'", "`speechvault repair index`");
    }
    if report.errors.iter().any(|e| e.contains("not found in index"))
        || report.warnings.iter().any(|w| w.contains("not referenced in index"))
    {
        report.fix = Some(
            "the index does not name every pack (an index file is lost or damaged): run `speechvault repair index`, then `speechvault check` again to name the backups affected".into(),
        );
    }
    if repo.immutability().is_some() {
        let sets = catalog::backup_sets(repo)?;
        let kept = keep.kept(&sets)?;
        let snaps: Vec<_> = sets
            .iter()
            .filter(|s| s.complete() && kept.contains(&s.id))
            .flat_map(|s| s.snapshots.iter().cloned())
            .collect();
        report.short_retention = repo.short_retentions(&snaps)?;
        if !report.short_retention.is_empty() {
            let extended = report.short_retention.iter().filter(|s| s.extended).count();
            report.warnings.push(format!(
                "{} files the backups need were retained for less than the repository's retain (first: {}, until {}); {extended} extended now",
                report.short_retention.len(),
                report.short_retention[0].key,
                report.short_retention[0].until.as_deref().unwrap_or("never")
            ));
            if extended < report.short_retention.len() {
                report.ok = false;
                report.errors.push(format!(
                    "{} files the backups need could not have their retention extended (see the log)",
                    report.short_retention.len() - extended
                ));
            }
        }
    }
    for f in &report.tampered {
        let text = format!("tampered repository file {}", f.describe());
        if f.read_version.is_some() {
            report.warnings.push(text);
        } else {
            report.ok = false;
            report.errors.push(text);
        }
    }
    if !found.damaged_packs.is_empty() {
        report.affected = affected_sets(repo, &found.damaged_packs)?;
    }
    Ok(report)
}

fn affected_sets(repo: &Repository, packs: &BTreeSet<String>) -> Result<Vec<AffectedSet>, CheckError> {
    let reader = repo.reader()?;
    let blobs = reader.blobs_of(packs)?;
    let mut out = Vec::new();
    for set in catalog::backup_sets(repo)? {
        let mut a = AffectedSet {
            backup_id: set.id.clone(),
            installation: set.installation.clone(),
            complete: set.complete(),
            manifest: false,
            databases: Vec::new(),
            objects: Vec::new(),
            objects_count: 0,
            unreadable: Vec::new(),
        };
        let manifest = match set.manifest(&reader) {
            Ok(m) => Some(m),
            Err(_) => {
                a.manifest = set.complete();
                None
            }
        };
        // Damaged files of bucket snapshots, by path, named by their keys below.
        let mut damaged_objects: BTreeMap<String, String> = BTreeMap::new();
        for snap in &set.snapshots {
            let files = match reader.file_iter(snap) {
                Ok(f) => f,
                Err(_) => {
                    a.unreadable.push(snap.label.clone());
                    continue;
                }
            };
            for file in files {
                let Ok((path, node)) = file else {
                    a.unreadable.push(snap.label.clone());
                    break;
                };
                if !node.content.iter().flatten().any(|id| blobs.contains(&**id)) {
                    continue;
                }
                let label = snap.label.as_str();
                if label == crate::ops::drill::RECORD_TAG {
                    continue;
                } else if label == "manifest" {
                    a.manifest = true;
                } else if let Some(db) = label.strip_prefix("db:") {
                    if !a.databases.iter().any(|d| d == db) {
                        a.databases.push(db.to_string());
                    }
                } else {
                    a.objects_count += 1;
                    if damaged_objects.len() < LIST_LIMIT {
                        let p = path.display().to_string();
                        damaged_objects.insert(p.clone(), p);
                    }
                }
            }
        }
        // Name them by key, reading the object lists when the manifest reads.
        if let Some(m) = &manifest
            && !damaged_objects.is_empty()
        {
            for (bucket, b) in &m.buckets {
                let Ok(list) = set.object_list(&reader, m, bucket) else { continue };
                let Ok(entries) = list.iter() else { continue };
                for e in entries.flatten() {
                    if let Some(name) = damaged_objects.get_mut(&e.path) {
                        *name = format!("{}/{}", b.source_name, e.key);
                    }
                }
            }
        }
        a.objects.extend(damaged_objects.into_values());
        if a.manifest || !a.databases.is_empty() || a.objects_count > 0 || !a.unreadable.is_empty() {
            out.push(a);
        }
    }
    Ok(out)
}
