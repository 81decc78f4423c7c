//! Keeping an immutable repository's backups restorable: the retention of every file the kept
//! backups need is extended, however old the file.
//!
//! A pack written a year ago may hold blobs today's backup still uses; its retention ended
//! long ago, and a stolen key could delete it. So each backup (and copy) makes sure every file
//! the backups need (their snapshot files, every tree and data blob's pack, the index files
//! naming those packs, the keys and the config) is retained until at least now + `retain`.
//!
//! It does so cheaply: the last extension is recorded ([`RetentionRecord`], kept in the
//! backup's manifest), so while its date is far enough ahead nothing is sent at all; when it
//! is not, each needed file's retention is estimated from the record and the file's own write
//! time (files are written retained for 1.5 × `retain`), and only those ending too soon get a
//! `PutObjectRetention` on the version that matches their name.

use std::collections::BTreeSet;

use rustic_core::repofile::{IndexFile, SnapshotFile};
use rustic_core::{FileType, Id};
use serde::{Deserialize, Serialize};

use super::{RepoError, Repository, RepositoryReader, Result, Store};

/// When retention was last extended, and until when every needed file is retained since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRecord {
    /// The repository's id (its config's): a copied manifest's record is another repository's.
    pub repository: String,
    /// When the extension ran (the server's clock), RFC 3339.
    pub extended_at: String,
    /// Every file the backups needed then is retained at least until this, RFC 3339.
    pub retained_until: String,
}

/// What an extension did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extension {
    /// Files the kept backups need.
    pub needed: usize,
    /// Of those, the ones whose retention was extended now.
    pub extended: usize,
    /// Nothing needed extending: the record's date was far enough ahead.
    pub skipped: bool,
}

/// How long a file is retained, known without asking the server: a file written after the
/// last extension (`last`: when it ran, and the date it gave) carries the retention it was
/// written with (`written_for` from its write time); an older one at least the extension's
/// date. A file whose write time is unknown is taken as due now.
pub fn estimated_retention(
    written: Option<jiff::Timestamp>,
    last: Option<(jiff::Timestamp, jiff::Timestamp)>,
    written_for: jiff::SignedDuration,
    now: jiff::Timestamp,
) -> jiff::Timestamp {
    match (written, last) {
        (Some(w), Some((at, until))) if w <= at => until,
        (Some(w), _) => w.saturating_add(written_for).unwrap_or(w),
        (None, _) => now,
    }
}

impl RepositoryReader {
    /// Every blob (trees and data) the snapshots need: each tree read once, however many
    /// snapshots share it.
    pub fn blobs_needed(&self, snapshots: &[SnapshotFile]) -> Result<BTreeSet<Id>> {
        let mut seen_trees: BTreeSet<Id> = BTreeSet::new();
        let mut blobs: BTreeSet<Id> = BTreeSet::new();
        let mut queue: Vec<rustic_core::TreeId> = snapshots.iter().map(|s| s.tree).collect();
        while let Some(tree_id) = queue.pop() {
            if !seen_trees.insert(*tree_id) {
                continue;
            }
            blobs.insert(*tree_id);
            let tree = self.repo.get_tree(&tree_id).map_err(|e| self.err(e))?;
            for node in tree.nodes {
                if let Some(sub) = node.subtree {
                    queue.push(sub);
                }
                for data in node.content.iter().flatten() {
                    blobs.insert(**data);
                }
            }
        }
        Ok(blobs)
    }

    /// The repository's files the snapshots need: `(type, id)` of their snapshot files, the
    /// packs holding their blobs, the index files naming those packs, every key and the config.
    pub fn files_needed(&self, snapshots: &[SnapshotFile]) -> Result<Vec<(FileType, Id)>> {
        let blobs = self.blobs_needed(snapshots)?;
        let mut packs: BTreeSet<Id> = BTreeSet::new();
        let mut index_files: BTreeSet<Id> = BTreeSet::new();
        for item in self.repo.stream_files::<IndexFile>().map_err(|e| self.err(e))? {
            let (index_id, index) = item.map_err(|e| self.err(e))?;
            for pack in &index.packs {
                if pack.blobs.iter().any(|b| blobs.contains(&*b.id)) {
                    packs.insert(*pack.id);
                    index_files.insert(*index_id);
                }
            }
        }
        let mut out: Vec<(FileType, Id)> = Vec::new();
        out.extend(snapshots.iter().map(|s| (FileType::Snapshot, *s.id)));
        out.extend(packs.into_iter().map(|p| (FileType::Pack, p)));
        out.extend(index_files.into_iter().map(|i| (FileType::Index, i)));
        let keys = self.backend.list(FileType::Key).map_err(|e| self.err(e))?;
        out.extend(keys.into_iter().map(|k| (FileType::Key, k)));
        out.push((FileType::Config, Id::default()));
        Ok(out)
    }
}

/// A file the backups need whose retention ends too soon (or that has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShortRetention {
    pub key: String,
    /// When its retention ended or would have ended (`None`: it had none).
    pub until: Option<String>,
    /// Extended now to 1.5 × `retain` (false: the server refused; the error says why).
    pub extended: bool,
}

impl Repository {
    /// Asks the server for the retention of every file the `snapshots` need (a request per
    /// file: this is `check`'s audit, not a backup's), returns those retained for less than
    /// `retain` from now, and extends them (a retention can only grow, so this is always
    /// safe). Empty for a repository that is not immutable. Blocking.
    pub fn short_retentions(&self, snapshots: &[SnapshotFile]) -> Result<Vec<ShortRetention>> {
        let Store::S3(s3) = &self.store else { return Ok(Vec::new()) };
        let Some(policy) = self.immutability() else { return Ok(Vec::new()) };
        let io = |e: crate::objstore::ObjStoreError| RepoError::Io {
            location: self.location.describe(),
            source: std::io::Error::other(e.to_string()),
        };
        let now = s3.server_now().map_err(io)?;
        let due = now.saturating_add(jiff::SignedDuration::from_secs(policy.retain.as_secs() as i64)).unwrap_or(now);
        let mut out = Vec::new();
        for (tpe, id) in self.reader()?.files_needed(snapshots)? {
            let until = s3.retention_of(tpe, &id).map_err(io)?;
            if until.is_none_or(|u| u < due) {
                let extended = match s3.retain_until().and_then(|to| s3.extend_file(tpe, &id, to)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(key = s3.key(tpe, &id), error = %e, "cannot extend a retention");
                        false
                    }
                };
                out.push(ShortRetention {
                    key: s3.key(tpe, &id),
                    until: until.map(crate::objstore::versions::retain_date),
                    extended,
                });
            }
        }
        Ok(out)
    }

    /// The repository's id (its config's), as records name it.
    pub fn repository_id(&self) -> String {
        self.repo.config().id.to_hex().to_string()
    }

    /// Extends the retention of every file `snapshots` need so that they stay restorable for
    /// at least `retain` from now (see the module's doc). `last`: the newest record of an
    /// extension in this repository. Returns the new record and what was done; `None` for a
    /// repository that is not immutable. Blocking.
    pub fn extend_retention(
        &self,
        snapshots: &[SnapshotFile],
        last: Option<&RetentionRecord>,
    ) -> Result<Option<(RetentionRecord, Extension)>> {
        let Store::S3(s3) = &self.store else { return Ok(None) };
        let Some(policy) = self.immutability() else { return Ok(None) };
        let io = |e: crate::objstore::ObjStoreError| RepoError::Io {
            location: self.location.describe(),
            source: std::io::Error::other(e.to_string()),
        };
        let now = s3.server_now().map_err(io)?;
        let retain = jiff::SignedDuration::from_secs(policy.retain.as_secs() as i64);
        let due = now.saturating_add(retain).unwrap_or(now);
        let last = last.filter(|r| r.repository == self.repository_id());
        let parse = |t: &str| t.parse::<jiff::Timestamp>().ok();
        let last_until = last.and_then(|r| parse(&r.retained_until));
        let last_at = last.and_then(|r| parse(&r.extended_at));
        // While the last extension's date is far enough ahead, nothing is sent: every file
        // the backups needed then is retained past `due`, and the files written since carry
        // their own retention. (A new backup that reuses a blob of a pack no kept backup
        // needed is covered by the next extension, within half of `retain`.)
        if let (Some(r), Some(until)) = (last, last_until)
            && until >= due
        {
            return Ok(Some((r.clone(), Extension { skipped: true, ..Default::default() })));
        }
        let reader = self.reader()?;
        let needed = reader.files_needed(snapshots)?;
        let written_for = jiff::SignedDuration::from_secs((policy.retain.as_secs() as f64 * 1.5) as i64);
        let extended_until = s3.retain_until().map_err(io)?;
        let mut ext = Extension { needed: needed.len(), ..Default::default() };
        let mut floor = extended_until;
        // Files written after the last extension carry their own write-time retention; the
        // others at least the record's date.
        let versions = s3.write_times().map_err(io)?;
        for (tpe, id) in &needed {
            let key = s3.key(*tpe, id);
            let estimate = estimated_retention(versions.get(&key).copied(), last_at.zip(last_until), written_for, now);
            if estimate >= due {
                floor = floor.min(estimate);
                continue;
            }
            s3.extend_file(*tpe, id, extended_until).map_err(io)?;
            ext.extended += 1;
        }
        let record = RetentionRecord {
            repository: self.repository_id(),
            extended_at: now.to_string(),
            retained_until: floor.to_string(),
        };
        tracing::info!(needed = ext.needed, extended = ext.extended, until = %record.retained_until, "retention of the repository's needed files");
        Ok(Some((record, ext)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_estimated_from_the_last_extension_or_the_write_time() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let d = jiff::SignedDuration::from_hours(36);
        let now = t("2026-12-07T12:00:00Z");
        let last = Some((t("2026-12-01T00:00:00Z"), t("2026-12-10T00:00:00Z")));
        // Written before the last extension: retained until its date.
        assert_eq!(estimated_retention(Some(t("2026-11-01T00:00:00Z")), last, d, now), t("2026-12-10T00:00:00Z"));
        // Written after it: its own write-time retention.
        assert_eq!(estimated_retention(Some(t("2026-12-05T00:00:00Z")), last, d, now), t("2026-12-06T12:00:00Z"));
        // No record: the write time decides.
        assert_eq!(estimated_retention(Some(t("2026-11-01T00:00:00Z")), None, d, now), t("2026-11-02T12:00:00Z"));
        // Unknown: due now, so it is extended.
        assert_eq!(estimated_retention(None, last, d, now), now);
    }
}
