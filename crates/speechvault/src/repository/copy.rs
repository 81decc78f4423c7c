//! Snapshots from one repository into another, re-encrypted under the target's key.
//!
//! rustic's copy carries the data and tree blobs the target lacks and writes new snapshot
//! files (their ids change with the target). Each copied snapshot records the id it had in
//! its first repository (`original`), so a manifest, which names snapshots by id, still finds
//! them in any copy.

use rustic_core::repofile::SnapshotFile;

use super::{Repository, Result};

impl Repository {
    /// Copies `snapshots` of this repository into `dest`, in one pass.
    pub fn copy_snapshots(&self, dest: &Repository, snapshots: &[SnapshotFile]) -> Result<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let source = self.reopen()?.to_indexed().map_err(|e| self.err(e))?;
        let target = dest.reopen()?.to_indexed_ids().map_err(|e| dest.err(e))?;
        let marked: Vec<SnapshotFile> = snapshots
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if s.original.is_none() {
                    s.original = Some(s.id);
                }
                s
            })
            .collect();
        source.copy(&target, marked.iter()).map_err(|e| dest.err(e))
    }
}
