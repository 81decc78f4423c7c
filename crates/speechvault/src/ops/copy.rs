//! `copy`: whole backup sets from one repository into another (3-2-1).
//!
//! A set is copied with its manifest last, so a copy that is killed leaves an incomplete set
//! (never restored) rather than a complete-looking partial one. Copying is idempotent: a set
//! already complete in the target is skipped; the leftovers of a killed copy are replaced.

use serde::Serialize;

use crate::model::catalog::{self, BackupSet, CatalogError};
use crate::repository::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the source and the target are the same repository ({0})")]
    Same(String),
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub copied: Vec<String>,
    /// Already complete in the target.
    pub skipped: Vec<String>,
    /// Into an immutable repository: how many files the backups there need, and how many
    /// had their retention extended by this copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::repository::retention::Extension>,
    /// What went wrong extending retention (the copies themselves are whole).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Copies the complete sets chosen by `selector` (`None`: all of them; else an id, a unique
/// prefix or `latest`) from `src` into `dst`. Blocking.
/// `keep`: into an immutable repository, the backups whose files stay retained.
pub fn copy_sets(
    src: &Repository,
    dst: &Repository,
    selector: Option<&str>,
    keep: &crate::ops::immutability::KeepPolicy,
) -> Result<CopyReport, CopyError> {
    if src.location() == dst.location() {
        return Err(CopyError::Same(src.location().describe()));
    }
    let sets = catalog::backup_sets(src)?;
    let chosen: Vec<BackupSet> = match selector {
        None => sets.into_iter().filter(BackupSet::complete).collect(),
        Some(sel) => vec![catalog::find(&sets, sel, None)?],
    };
    let existing = catalog::backup_sets(dst)?;
    let mut report =
        CopyReport { from: src.location().describe(), to: dst.location().describe(), ..Default::default() };
    for set in chosen {
        let there: Vec<&BackupSet> = existing.iter().filter(|s| s.id == set.id).collect();
        if there.iter().any(|s| s.complete()) {
            report.skipped.push(set.id.clone());
            continue;
        }
        // Leftovers of an interrupted copy: replaced, not mixed with the new one.
        let stale: Vec<_> = there.iter().flat_map(|s| s.snapshots.iter().map(|sn| sn.id)).collect();
        dst.delete_snapshots(&stale)?;
        let Some(manifest) = set.manifest.clone() else { continue };
        let parts: Vec<_> = set.snapshots.iter().filter(|s| s.id != manifest.id).cloned().collect();
        tracing::info!(backup = %set.id, to = %dst.location(), "copying {} parts, then the manifest", parts.len());
        src.copy_snapshots(dst, &parts)?;
        crate::support::interrupt::pause_point("copy:manifest");
        src.copy_snapshots(dst, std::slice::from_ref(&manifest))?;
        report.copied.push(set.id.clone());
    }
    // A copy's manifest is the source's, so it records nothing here: the extension runs on
    // each copy (sending requests only for the files whose retention ends too soon).
    if dst.immutability().is_some() {
        match crate::ops::immutability::extend(dst, &[], keep) {
            Ok(r) => report.retention = r.map(|(_, ext)| ext),
            Err(e) => {
                let w = format!("could not extend the retention of the files the backups need: {e}");
                tracing::warn!("{w}");
                report.warnings.push(w);
            }
        }
    }
    Ok(report)
}
