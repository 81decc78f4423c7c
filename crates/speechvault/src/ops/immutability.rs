//! The procedure that keeps an immutable repository's backups restorable: after a backup (or
//! a copy) has written its snapshots, extend the retention of everything the complete backups
//! need, and record it in the manifest so that the next backups send nothing until half of
//! `retain` has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::catalog::{self, CatalogError};
use crate::model::config::Retention;
use crate::repository::retention::{Extension, RetentionRecord};
use crate::repository::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum ImmutabilityError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Retention(#[from] crate::ops::retention::RetentionError),
}

/// Which backups the retention keeps: the standing policy of each installation (the config's
/// `[retention]`), so that a backup forgotten under it, whose files the object lock still
/// holds, is not extended again and can go once its retention ends. `None` for an
/// installation: every backup of it is kept.
#[derive(Clone, Default)]
pub struct KeepPolicy(Option<Arc<PolicyOf>>);

/// The retention of an installation, by name.
type PolicyOf = dyn Fn(&str) -> Option<Retention> + Send + Sync;

impl KeepPolicy {
    pub fn new(policy: impl Fn(&str) -> Option<Retention> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(policy)))
    }

    /// The sets it keeps, by id.
    pub fn kept(&self, sets: &[catalog::BackupSet]) -> Result<BTreeSet<String>, crate::ops::retention::RetentionError> {
        let all = || sets.iter().map(|s| s.id.clone()).collect();
        let Some(policy) = &self.0 else { return Ok(all()) };
        let mut policies = BTreeMap::new();
        for s in sets {
            if !policies.contains_key(&s.installation)
                && let Some(p) = policy(&s.installation).filter(|p| p.has_rules())
            {
                policies.insert(s.installation.clone(), p);
            }
        }
        let decisions = crate::ops::retention::plan_now(sets, &policies)?;
        let dropped: BTreeSet<String> = decisions.into_iter().filter(|d| !d.keep).map(|d| d.backup_id).collect();
        Ok(sets.iter().map(|s| s.id.clone()).filter(|id| !dropped.contains(id)).collect())
    }
}

impl std::fmt::Debug for KeepPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "KeepPolicy(retention)" } else { "KeepPolicy(all)" })
    }
}

/// The newest record of an extension in this repository's complete backups.
pub fn last_record(repo: &Repository) -> Result<Option<RetentionRecord>, ImmutabilityError> {
    let sets = catalog::backup_sets(repo)?;
    let reader = repo.reader()?;
    let id = repo.repository_id();
    let mut complete: Vec<_> = sets.iter().filter(|s| s.complete()).collect();
    complete.sort_by(|a, b| b.time.cmp(&a.time));
    for set in complete {
        // A manifest that cannot be read is not a reason to fail: the next one may do.
        let Ok(m) = set.manifest(&reader) else { continue };
        if let Some(r) = m.retention.filter(|r| r.repository == id) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Extends the retention of what the complete backups `keep` keeps and the snapshots `also`
/// (the backup being written) need. `None` for a repository that is not immutable. Blocking.
pub fn extend(
    repo: &Repository,
    also: &[rustic_core::repofile::SnapshotId],
    keep: &KeepPolicy,
) -> Result<Option<(RetentionRecord, Extension)>, ImmutabilityError> {
    if repo.immutability().is_none() {
        return Ok(None);
    }
    let last = last_record(repo)?;
    let sets = catalog::backup_sets(repo)?;
    let also: BTreeSet<String> = also.iter().map(|s| s.to_string()).collect();
    let kept = keep.kept(&sets)?;
    let mut snapshots = Vec::new();
    for set in &sets {
        if set.complete() && kept.contains(&set.id) {
            snapshots.extend(set.snapshots.iter().cloned());
        } else {
            snapshots.extend(set.snapshots.iter().filter(|s| also.contains(&s.id.to_string())).cloned());
        }
    }
    Ok(repo.extend_retention(&snapshots, last.as_ref())?)
}

/// A warning when the installation's backups are further apart than the repository's
/// `retain`: between two backups the older one's new files could lose their retention.
pub fn interval_warning(repo: &Repository, installation: &str) -> Option<String> {
    let retain = repo.immutability()?.retain;
    let sets = catalog::backup_sets(repo).ok()?;
    let last = sets
        .iter()
        .filter(|s| s.complete() && s.installation == installation)
        .filter_map(|s| s.unix_time())
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))?;
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let gap = now - last;
    (gap > retain.as_secs() as f64).then(|| {
        format!(
            "the previous backup of {installation} is {:.1} days old, longer than the repository's retain of {:.1} days: back up at least as often as retain, or raise it",
            gap / 86400.0,
            retain.as_secs_f64() / 86400.0
        )
    })
}
