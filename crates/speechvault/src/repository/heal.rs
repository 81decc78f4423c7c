//! A repository healed from a copy (`check --read-data --repair-from NAME`).
//!
//! Blobs are named by the SHA-256 of their plaintext and a copy keeps them whole, so what a
//! damaged pack held can be fetched from any repository holding the same backups: the damaged
//! packs are set aside (under `damaged/data/`, never deleted), the index is rebuilt from the
//! packs that remain, and the copy's snapshots of the same backups are walked to carry every
//! blob this repository now lacks back into it, re-encrypted under its key. No snapshot file
//! is written: the backups keep their ids.

use std::collections::BTreeSet;

use rustic_core::Id;
use serde::Serialize;

use super::damage::{DamagedFile, Repaired};
use super::{Repository, Result};

/// What healing did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Healed {
    /// The repository the blobs came from.
    pub from: String,
    /// The damaged packs, now under `damaged/data/`.
    pub packs_set_aside: Vec<String>,
    /// The index rebuilt from the remaining packs.
    pub index: Repaired,
    /// Blobs the damaged packs held.
    pub blobs_lost: usize,
    /// Blobs carried over from the copy (those lost, and any others this repository lacked).
    pub blobs_copied: usize,
    /// Lost blobs the copy did not hold either: the backups that need them stay damaged.
    pub blobs_still_missing: usize,
}

impl Repository {
    /// Heals this repository from `other` (see the module docs). `damaged_packs`: the packs
    /// a `check --read-data` found damaged (hex ids).
    pub fn heal_from(&self, other: &Repository, damaged_packs: &[String]) -> Result<Healed> {
        self.refuse_immutable()?;
        let indexed = self.indexed_packs()?;
        let lost: BTreeSet<Id> =
            damaged_packs.iter().filter_map(|p| indexed.get(p)).flat_map(|blobs| blobs.iter().copied()).collect();
        let present: BTreeSet<String> = self
            .store
            .backend()
            .list(rustic_core::FileType::Pack)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|id| id.to_hex().to_string())
            .collect();
        let mut healed = Healed { from: other.location().describe(), blobs_lost: lost.len(), ..Default::default() };
        for pack in damaged_packs.iter().filter(|p| present.contains(*p)) {
            let d = DamagedFile { kind: "pack".into(), id: pack.clone(), reason: "damaged".into() };
            self.set_aside(&d)?;
            healed.packs_set_aside.push(pack.clone());
        }
        healed.index = self.repair_index(false)?;
        let before: BTreeSet<Id> = self.indexed_packs()?.into_values().flatten().collect();

        let ours = self.snapshot_scan()?.snapshots;
        let originals: BTreeSet<_> = ours.iter().map(|s| s.original.unwrap_or(s.id)).collect();
        let theirs: Vec<_> = other
            .snapshot_scan()?
            .snapshots
            .into_iter()
            .filter(|s| originals.contains(&s.original.unwrap_or(s.id)))
            .collect();
        tracing::info!(from = %other.location(), "fetching what this repository lacks through {} snapshots of the copy", theirs.len());
        let source = other.indexed()?;
        let target = self.reopen()?.to_indexed_ids().map_err(|e| self.err(e))?;
        source.copy_blobs(&target, theirs.iter()).map_err(|e| self.err(e))?;

        let after: BTreeSet<Id> = self.indexed_packs()?.into_values().flatten().collect();
        healed.blobs_copied = after.difference(&before).count();
        healed.blobs_still_missing = lost.difference(&after).count();
        Ok(healed)
    }
}
