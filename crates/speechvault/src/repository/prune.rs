//! Prune: frees the space of data no snapshot needs.
//!
//! In an immutable repository a file whose retention has not ended cannot be deleted, by us
//! or anyone. So before prune runs, the server is asked for the retention of every index
//! file the plan would rewrite and of every pack it would remove or repack. An index file
//! still retained is left as it is, with every pack it names (else it would name packs that
//! are gone, and restic's check would fail); a pack still retained is kept in the new index.
//! What is held is reported with the date its retention ends: a later prune frees it.

use std::collections::BTreeSet;

use rustic_core::repofile::PackId;
use rustic_core::{FileType, LimitOption, PruneOptions, PrunePlan};
use serde::Serialize;

use super::immutable::HeldFile;
use super::{RepoError, Repository, Result, Store};

/// What a prune did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneSummary {
    pub packs_removed: u64,
    pub packs_repacked: u64,
    pub bytes_removed: u64,
    pub bytes_unused_left: u64,
    pub bytes_used: u64,
    pub dry_run: bool,
    /// Immutable repositories: packs the plan would have removed or repacked that are kept
    /// because they (or the index file naming them) are still retained.
    #[serde(skip_serializing_if = "is_zero")]
    pub packs_held: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes_held: u64,
    /// The files kept for their retention, with its end.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldFile>,
}

/// Packs kept for their retention (with their sizes), and the files held.
type Kept = (Vec<(PackId, u32)>, Vec<HeldFile>);

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Repository {
    /// Removes data no snapshot needs, leaving at most `max_unused` unused (`10%`, `500MiB`,
    /// `unlimited`; default rustic's 5%). In an immutable repository, only what is no longer
    /// retained (see the module's doc).
    pub fn prune(&self, max_unused: Option<&str>, dry_run: bool) -> Result<PruneSummary> {
        let mut opts = PruneOptions::default();
        // Under the exclusive lock no other run can still need the data: delete at once, as
        // restic does, rather than marking packs for a later prune.
        opts.instant_delete = true;
        if let Some(m) = max_unused {
            opts.max_unused = m.parse::<LimitOption>().map_err(|e| RepoError::Refused {
                location: self.location.describe(),
                reason: format!("--max-unused {m}: {}", super::rustic_message(&e)),
            })?;
        }
        // rustic's plan reads every snapshot and index file and stops at a damaged one: then
        // name them all (prune cannot know what an unreadable file keeps).
        let mut plan = match self.repo.prune_plan(&opts) {
            Ok(plan) => plan,
            Err(e) => {
                let mut damaged = self.snapshot_scan().map(|s| s.damaged).unwrap_or_default();
                damaged.extend(self.damaged_index_files().unwrap_or_default());
                if damaged.is_empty() {
                    return Err(self.err(e));
                }
                return Err(super::damage::refuse_damaged(&self.location.describe(), &damaged, "prune"));
            }
        };
        let (kept, held) = self.keep_retained(&mut plan)?;
        let s = &plan.stats;
        let packs_held = kept.len() as u64;
        let bytes_held: u64 = kept.iter().map(|(_, size)| u64::from(*size)).sum();
        let (mut packs_removed, mut packs_repacked) = (s.packs_to_delete.remove + s.packs.unused, s.packs.repack);
        if !kept.is_empty() {
            // Recounted from the plan as it is now: what it still removes or repacks.
            packs_repacked = plan.repack_packs().len() as u64;
            let touched: u64 = plan.index_files_to_rewrite().iter().map(|(_, p)| p.len() as u64).sum();
            packs_removed = touched.saturating_sub(packs_repacked) + s.packs_unref;
        }
        let mut summary = PruneSummary {
            packs_removed,
            packs_repacked,
            bytes_removed: s.size_to_delete.remove,
            bytes_unused_left: s.size.values().map(|v| v.unused.saturating_sub(v.remove + v.repackrm)).sum(),
            bytes_used: s.size.values().map(|v| v.used).sum(),
            dry_run,
            packs_held,
            bytes_held,
            held,
        };
        if !dry_run {
            self.repo.prune(&opts, plan).map_err(|e| self.err(e))?;
            // Deletes the server refused meanwhile (a retention extended by another run).
            let known: BTreeSet<String> = summary.held.iter().map(|h| h.key.clone()).collect();
            summary.held.extend(self.held_files().into_iter().filter(|h| !known.contains(&h.key)));
        }
        Ok(summary)
    }

    /// In an immutable repository, asks for the retention of what `plan` would touch and keeps
    /// what is still retained. Returns the packs kept so and the files held, with their dates.
    fn keep_retained(&self, plan: &mut PrunePlan) -> Result<Kept> {
        let Store::S3(s3) = &self.store else { return Ok(Default::default()) };
        if self.immutability().is_none() {
            return Ok(Default::default());
        }
        let io = |e: crate::objstore::ObjStoreError| RepoError::Io {
            location: self.location.describe(),
            source: std::io::Error::other(e.to_string()),
        };
        let now = s3.server_now().map_err(io)?;
        // One listing per directory instead of one per file.
        s3.list_versions_in("index").map_err(io)?;
        s3.list_versions_in("data").map_err(io)?;
        let mut held = Vec::new();
        let mut retained = |tpe: FileType, id: &rustic_core::Id| -> Result<bool> {
            let until = s3.retention_of(tpe, id).map_err(io)?;
            let keep = until.is_some_and(|u| u > now);
            tracing::debug!(?tpe, id = %id, ?until, keep, "retention, before prune");
            if let Some(u) = until.filter(|_| keep) {
                held.push(HeldFile { key: s3.key(tpe, id), until: Some(crate::objstore::versions::retain_date(u)) });
            }
            Ok(keep)
        };
        let mut index_files = BTreeSet::new();
        let mut packs = BTreeSet::new();
        for (index, touched) in plan.index_files_to_rewrite() {
            if retained(FileType::Index, &index)? {
                index_files.insert(index);
                continue;
            }
            for pack in touched {
                if retained(FileType::Pack, &pack)? {
                    packs.insert(pack);
                }
            }
        }
        if !index_files.is_empty() {
            // A pack named twice appears in the plan once: a held index file's packs are kept
            // wherever the plan has them.
            for item in self.repo.stream_files::<rustic_core::repofile::IndexFile>().map_err(|e| self.err(e))? {
                let (id, index) = item.map_err(|e| self.err(e))?;
                if index_files.contains(&id) {
                    packs.extend(index.packs.iter().chain(&index.packs_to_delete).map(|p| p.id));
                }
            }
        }
        let kept = plan.keep(&index_files, &packs);
        if !kept.is_empty() {
            tracing::info!(
                index_files = index_files.len(),
                packs = kept.len(),
                "prune keeps what the repository's object lock still retains"
            );
        }
        Ok((kept, held))
    }
}
