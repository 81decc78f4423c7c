//! What a command produced: one value per command, which [`crate::render`] prints as text or
//! as the one `--json` document, and which [`crate::observe`] reads for the post-hook and the
//! metrics. A command's `run` returns it; nothing is printed before the command ends.

use std::path::PathBuf;

use serde_json::{Value, json};
use speechvault::model::catalog::BackupSetView;
use speechvault::model::instance::InstanceId;
use speechvault::model::manifest::{Manifest, ObjectEntry};
use speechvault::ops::backup::BackupReport;
use speechvault::ops::check::CheckReport;
use speechvault::ops::copy::CopyReport;
use speechvault::ops::doctor::{DoctorReport, Status};
use speechvault::ops::export::ExportReport;
use speechvault::ops::import::ImportReport;
use speechvault::ops::inspect::{DiffReport, InstanceSummary, Item};
use speechvault::ops::ownership::RuleOutcome;
use speechvault::ops::restore::RestoreReport;
use speechvault::ops::retention::RetentionOutcome;
use speechvault::ops::selective::SelectiveReport;
use speechvault::ops::verify::VerifyReport;
use speechvault::repository::Location;
use speechvault::repository::damage::{DamagedFile, Repaired};
use speechvault::repository::lock::FoundLock;
use speechvault::repository::maintenance::{KeyView, PruneSummary};
use speechvault::{Error, ErrorKind};

/// A command's result. Reports that end in a failure (differences found, a check failed)
/// are outcomes too: [`Outcome::verdict`] says so, after the report is printed.
pub enum Outcome {
    Init {
        location: Location,
    },
    Backup {
        report: BackupReport,
        retention: Option<RetentionOutcome>,
    },
    Snapshots {
        backups: Vec<BackupSetView>,
        /// Snapshot files that cannot be read (each hides a part of one backup).
        damaged: Vec<DamagedFile>,
    },
    Restore(Box<RestoreReport>),
    /// `drill`: a restore into a scratch installation, measured.
    Drill(Box<speechvault::ops::drill::DrillReport>),
    Selective(SelectiveReport),
    Verify(VerifyReport),
    Ownership {
        installation: String,
        from: InstanceId,
        to: InstanceId,
        dry_run: bool,
        rules: Vec<RuleOutcome>,
    },
    Copy(CopyReport),
    Forget(RetentionOutcome),
    Prune(PruneSummary),
    Check(CheckReport),
    LsObjects {
        backup_id: String,
        bucket: String,
        prefix: String,
        objects: Vec<ObjectEntry>,
    },
    LsInstances {
        backup_id: String,
        instances: Vec<InstanceSummary>,
    },
    LsSummary {
        backup_id: String,
        manifest: Box<Manifest>,
        customizations: usize,
        speakers: usize,
    },
    LsItems {
        backup_id: String,
        speakers: bool,
        items: Vec<Item>,
    },
    Diff(DiffReport),
    Doctor(DoctorReport),
    Keys(Vec<KeyView>),
    KeyAdded(String),
    KeyRemoved(String),
    KeyReplaced {
        removed: String,
        added: String,
    },
    Locks {
        locks: Vec<FoundLock>,
        would_remove: Vec<FoundLock>,
    },
    Unlocked {
        removed: Vec<FoundLock>,
        left: Vec<FoundLock>,
    },
    VersionsRepaired(speechvault::repository::VersionsRepaired),
    /// `repair snapshots` / `repair index`.
    Repaired {
        what: &'static str,
        report: Repaired,
    },
    Export {
        report: ExportReport,
        to: PathBuf,
    },
    Import {
        report: ImportReport,
        dir: PathBuf,
    },
    #[cfg(feature = "sandbox")]
    Sandbox(crate::commands::sandbox::SandboxOutcome),
    /// Text printed as it is (shell completions, a man page, `export` lines).
    Text(String),
    /// Nothing to print (a server that ran in the foreground).
    #[cfg(feature = "sandbox")]
    Nothing,
}

impl Outcome {
    /// The `--json` document.
    pub fn json(&self) -> Result<Value, Error> {
        let to = |v: &dyn erased::Serialize| v.to_value();
        Ok(match self {
            Self::Init { location } => json!({ "initialized": location.describe() }),
            Self::Backup { report, retention } => {
                let mut doc = to(report)?;
                if let Some(r) = retention {
                    doc["retention"] = to(r)?;
                }
                doc
            }
            Self::Snapshots { backups, damaged } => json!({ "backups": backups, "damaged_files": damaged }),
            Self::Restore(r) => to(r.as_ref())?,
            Self::Drill(r) => to(r.as_ref())?,
            Self::Selective(r) => to(r)?,
            Self::Verify(r) => to(r)?,
            Self::Ownership { installation, from, to: target, dry_run, rules } => {
                json!({ "installation": installation, "from": from, "to": target, "dry_run": dry_run, "rules": rules })
            }
            Self::Copy(r) => to(r)?,
            Self::Forget(r) => to(r)?,
            Self::Prune(r) => to(r)?,
            Self::Check(r) => to(r)?,
            Self::LsObjects { backup_id, bucket, prefix, objects } => {
                let list: Vec<Value> = objects
                    .iter()
                    .map(|o| {
                        let mut doc = json!({"key": o.key, "size": o.size, "etag": o.etag, "sha256": o.sha256,
                            "content_type": o.content_type, "last_modified": o.last_modified, "metadata": o.metadata});
                        if !o.attrs.is_empty() {
                            doc["attrs"] = json!(o.attrs);
                        }
                        doc
                    })
                    .collect();
                json!({"backup_id": backup_id, "bucket": bucket, "prefix": prefix, "objects": list})
            }
            Self::LsInstances { backup_id, instances } => json!({"backup_id": backup_id, "instances": instances}),
            Self::LsSummary { backup_id, manifest: m, customizations, speakers } => json!({
                "backup_id": backup_id, "installation": m.installation, "started": m.started,
                "components": m.components, "customizations": customizations, "speakers": speakers,
                "instance_ids": m.canonical_instance_ids().iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "databases": m.databases.iter().map(|(d, e)| (d.clone(), json!({"dump_bytes": e.dump_bytes, "tables": e.tables}))).collect::<serde_json::Map<_, _>>(),
                "buckets": m.buckets.iter().map(|(b, e)| (b.clone(), json!({"objects": e.objects, "bytes": e.bytes}))).collect::<serde_json::Map<_, _>>(),
            }),
            Self::LsItems { backup_id, speakers, items } => {
                let key = if *speakers { "speakers" } else { "customizations" };
                json!({"backup_id": backup_id, key: items})
            }
            Self::Diff(r) => to(r)?,
            Self::Doctor(r) => to(r)?,
            Self::Keys(keys) => json!({ "keys": keys }),
            Self::KeyAdded(id) => json!({ "added": id }),
            Self::KeyRemoved(id) => json!({ "removed": id }),
            Self::KeyReplaced { removed, added } => json!({ "removed": removed, "added": added }),
            Self::Locks { locks, would_remove } => {
                let stale: Vec<&FoundLock> = locks.iter().filter(|l| l.stale.is_some()).collect();
                json!({ "locks": locks, "stale": stale, "would_remove": would_remove })
            }
            Self::Unlocked { removed, left } => json!({ "removed": removed, "left": left }),
            Self::VersionsRepaired(r) => to(r)?,
            Self::Repaired { what, report } => {
                let mut doc = to(report)?;
                doc["repaired"] = json!(what);
                doc
            }
            Self::Export { report, .. } => to(report)?,
            Self::Import { report, .. } => to(report)?,
            #[cfg(feature = "sandbox")]
            Self::Sandbox(s) => s.json()?,
            Self::Text(text) => json!({ "text": text }),
            #[cfg(feature = "sandbox")]
            Self::Nothing => json!({}),
        })
    }

    /// The failure a report ends in, if it does: it is printed first, then the command exits
    /// with this error's status.
    pub fn verdict(&self) -> Option<Error> {
        match self {
            Self::Restore(r) if r.salvage.as_ref().is_some_and(|s| !s.is_empty()) => Some(Error::new(
                ErrorKind::Differences,
                format!(
                    "salvaged: everything that reads was restored{}; not restored because the repository's copy is damaged: {}",
                    if r.verify.as_ref().is_some_and(|v| !v.ok) { " (and verification found differences)" } else { "" },
                    r.salvage.as_ref().map(|s| s.describe()).unwrap_or_default()
                ),
            )),
            Self::Restore(r) if r.verify.as_ref().is_some_and(|v| !v.ok) => Some(Error::new(
                ErrorKind::Differences,
                "the restored installation differs from the backup (see the report); it was not rolled back",
            )),
            Self::Drill(r) if !r.verified => Some(
                Error::new(
                    ErrorKind::Differences,
                    format!(
                        "the drill of backup {} found {} differences: the backup does not restore as recorded",
                        r.backup_id, r.verification.differences_count
                    ),
                )
                .with_failures(r.verification.differences.clone()),
            ),
            Self::Drill(r) if !r.missed.is_empty() => Some(Error::new(
                ErrorKind::Differences,
                format!(
                    "the drill of backup {} verified, but missed its objectives: {}",
                    r.backup_id,
                    r.missed.join("; ")
                ),
            )),
            Self::Verify(r) if !r.ok => Some(Error::new(
                ErrorKind::Differences,
                format!("installation {} differs from backup {}", r.installation, r.backup_id),
            )),
            Self::Selective(r) if r.dry_run && r.conflicts > 0 && !r.replace => Some(Error::bad_input(format!(
                "the restore would be refused: {} rows or objects differ on the target (--replace overwrites them)",
                r.conflicts
            ))),
            Self::Check(r) if !r.ok => Some(
                Error::new(
                    ErrorKind::Differences,
                    match &r.fix {
                        Some(fix) => format!("the repository is damaged: {} errors; {fix}", r.errors.len()),
                        None => format!(
                            "the repository is damaged: {} errors, {} backups affected",
                            r.errors.len(),
                            r.affected.len()
                        ),
                    },
                )
                .with_failures(r.errors.clone()),
            ),
            Self::VersionsRepaired(r) if r.files.iter().any(|f| f.lost) => {
                let lost: Vec<String> = r.files.iter().filter(|f| f.lost).map(|f| f.key.clone()).collect();
                Some(
                    Error::new(
                        ErrorKind::Differences,
                        format!("{} repository files have no version a backup wrote: they are lost (`speechvault check` names the backups affected)", lost.len()),
                    )
                    .with_failures(lost),
                )
            }
            Self::Doctor(r) if !r.ok => {
                let failed: Vec<&str> =
                    r.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.name.as_str()).collect();
                Some(Error::failed(format!("{} check(s) failed: {}", failed.len(), failed.join(", "))))
            }
            _ => None,
        }
    }

    /// The backup the run made or used, for the post-hook.
    pub fn backup_id(&self) -> Option<String> {
        match self {
            Self::Backup { report, .. } => Some(report.backup_id.clone()),
            Self::Restore(r) => Some(r.backup_id.clone()),
            Self::Drill(r) => Some(r.backup_id.clone()),
            Self::Selective(r) => Some(r.backup_id.clone()),
            Self::Verify(r) => Some(r.backup_id.clone()),
            _ => None,
        }
    }
}

/// `serde_json::to_value` behind a trait object, so the match above stays one line a case.
mod erased {
    pub trait Serialize {
        fn to_value(&self) -> Result<serde_json::Value, speechvault::Error>;
    }
    impl<T: serde::Serialize> Serialize for T {
        fn to_value(&self) -> Result<serde_json::Value, speechvault::Error> {
            Ok(serde_json::to_value(self)?)
        }
    }
}
