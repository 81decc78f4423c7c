//! Puts an immutable repository's files back the way restic reads them: the newest version
//! of each file is the one a backup wrote.
//!
//! speechvault reads through tampering and delete markers (see [`super::immutable`]); restic
//! and rustic read the newest version of each key, so after an attack they fail. For each
//! tampered or hidden file, the versions newer than ours (delete markers, versions written
//! over it) are deleted; where the server refuses, because an attacker's version is retained
//! too, our version is written again on top, retained like any file we write. A file of which
//! no version is ours cannot be repaired and is reported as lost. Lock keys left behind as
//! delete markers (restic's own unlocks leave them) are removed too.

use serde::Serialize;

use super::S3Store;
use super::immutable::refused;
use crate::objstore::ObjStoreError;

/// What was done (or, in a dry run, would be done) to one repository file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionRepair {
    /// The object key in the repository bucket.
    pub key: String,
    /// Delete markers on top of our version, removed.
    pub markers_removed: usize,
    /// Versions over ours that are not ours, removed.
    pub versions_removed: usize,
    /// Markers or versions the server refused to delete (retained): they stay, under a copy
    /// of our version. (A dry run cannot know: it counts every one as removed.)
    pub kept_retained: usize,
    /// Our version was written again as the newest.
    pub rewritten: bool,
    /// No version is ours: nothing to repair it from.
    pub lost: bool,
}

/// What a repair of versions did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionsRepaired {
    pub dry_run: bool,
    pub files: Vec<VersionRepair>,
    /// Versions of lock files already deleted (a delete marker on top), removed.
    pub lock_leftovers_removed: usize,
}

impl S3Store {
    /// Repairs every tampered and hidden file (see the module's doc). Blocking.
    pub(crate) fn repair_versions(&self, dry_run: bool) -> Result<VersionsRepaired, ObjStoreError> {
        let mut out = VersionsRepaired { dry_run, ..Default::default() };
        for finding in self.audit()? {
            let mut r = VersionRepair { key: finding.key.clone(), ..Default::default() };
            let Some(ours) = finding.read_version.clone() else {
                r.lost = true;
                out.files.push(r);
                continue;
            };
            let versions = self.versions_of(&finding.key)?;
            let above = versions.iter().take_while(|v| v.version_id != ours);
            for v in above {
                if dry_run {
                    if v.delete_marker {
                        r.markers_removed += 1;
                    } else {
                        r.versions_removed += 1;
                    }
                    continue;
                }
                match self.block_on(self.objects().delete_object_version(self.bucket(), &v.key, &v.version_id)) {
                    Ok(()) if v.delete_marker => r.markers_removed += 1,
                    Ok(()) => r.versions_removed += 1,
                    Err(e) if refused(&e) => r.kept_retained += 1,
                    Err(e) => return Err(e),
                }
            }
            if r.kept_retained > 0 {
                let body = self.block_on(self.objects().get_version_bytes(self.bucket(), &finding.key, &ours))?;
                let opts = self.retained_put()?;
                self.block_on(self.objects().put_checked(self.bucket(), &finding.key, body, &opts))?;
                r.rewritten = true;
            }
            if !dry_run {
                self.forget_cached(&finding.key);
            }
            tracing::info!(
                key = r.key,
                markers = r.markers_removed,
                versions = r.versions_removed,
                kept = r.kept_retained,
                rewritten = r.rewritten,
                "repository file repaired"
            );
            out.files.push(r);
        }
        for (key, versions) in self.list_versions_in("locks")? {
            if versions.first().is_some_and(|v| v.delete_marker) && (dry_run || self.remove_all_versions(&key, false)) {
                out.lock_leftovers_removed += versions.len();
            }
        }
        Ok(out)
    }
}
