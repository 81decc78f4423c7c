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
        let source = self.indexed()?;
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
        source.copy(&target, marked.iter()).map_err(|e| self.blame(dest, &e))
    }

    /// Which side of a copy failed: reading a blob (a pack of this repository that does not
    /// read back or decrypt) is this repository's damage, not the target's.
    fn blame(&self, dest: &Repository, e: &rustic_core::RusticError) -> super::RepoError {
        let reason = super::rustic_message(e);
        let ours = self.location.describe();
        let read_failed = ["decryption failed", "MAC check", "failed to fill whole buffer", "not found in index"]
            .iter()
            .any(|m| reason.to_lowercase().contains(&m.to_lowercase()))
            || reason.contains(&format!("cannot read {ours}"));
        if read_failed {
            return super::RepoError::Damaged {
                location: ours,
                reason: format!(
                    "a blob the copy needs does not read here ({reason}); the target is not at fault: `speechvault check --read-data` names the damaged packs and the backups they affect"
                ),
                damaged: Vec::new(),
            };
        }
        dest.err(e)
    }
}
