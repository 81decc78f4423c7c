//! Text of the commands that keep the repository: init, snapshots, copy, forget, prune,
//! check, key, unlock, export, import.

use speechvault::ops::check::AffectedSet;
use speechvault::ops::retention::RetentionOutcome;
use speechvault::repository::Location;
use speechvault::support::units::human_bytes;

use super::{Lines, line};
use crate::outcome::Outcome;

pub(super) fn text(outcome: &Outcome, lines: &mut Lines) {
    match outcome {
        Outcome::Init { location } => match location {
            Location::Local(_) => line!(lines, "created repository {location} (restic format; private to its owner)"),
            Location::S3(_) => line!(lines, "created repository {location} (restic format)"),
        },
        Outcome::Snapshots { backups, damaged } => {
            for d in damaged {
                line!(lines, "DAMAGED snapshot file {}: {} (run `speechvault repair snapshots`)", d.path(), d.reason);
            }
            if backups.is_empty() {
                lines.push("no backups");
                return;
            }
            line!(lines, "{:<24} {:<16} {:<20} {:<10} PARTS", "BACKUP", "INSTALLATION", "TIME (UTC)", "STATE");
            for v in backups {
                let time: String = v.time.chars().take(19).map(|c| if c == 'T' { ' ' } else { c }).collect();
                line!(
                    lines,
                    "{:<24} {:<16} {:<20} {:<10} {}",
                    v.backup_id,
                    v.installation,
                    time,
                    match (v.complete, v.anomalous, v.damaged.is_some()) {
                        (true, _, true) => "DAMAGED",
                        (true, false, _) => "complete",
                        (true, true, _) => "ANOMALOUS",
                        _ => "INCOMPLETE",
                    },
                    v.parts.join(" ")
                );
            }
        }
        Outcome::Repaired { what, report } => {
            let would = if report.dry_run { "would set aside" } else { "set aside" };
            for d in &report.set_aside {
                line!(lines, "{would} damaged {} under damaged/: {}", d.path(), d.reason);
            }
            for p in &report.packs_indexed {
                line!(lines, "{} pack {p}", if report.dry_run { "would index" } else { "indexed" });
            }
            for p in &report.packs_unreadable {
                line!(
                    lines,
                    "pack {p}: its header cannot be read; its blobs are no longer indexed (`speechvault check` names the backups affected)"
                );
            }
            if report.set_aside.is_empty() && report.packs_indexed.is_empty() && report.packs_unreadable.is_empty() {
                line!(lines, "repair {what}: nothing to repair");
            }
        }
        Outcome::Copy(report) => {
            line!(lines, "copy {} -> {}", report.from, report.to);
            for id in &report.copied {
                line!(lines, "  copied {id}");
            }
            for id in &report.skipped {
                line!(lines, "  {id} is already there");
            }
        }
        Outcome::Forget(o) => retention(lines, o),
        Outcome::Prune(p) => retention(
            lines,
            &RetentionOutcome {
                dry_run: p.dry_run,
                sets: Vec::new(),
                removed: Vec::new(),
                prune: Some(p.clone()),
                held: p.held.clone(),
            },
        ),
        Outcome::Check(report) => {
            if let Some(r) = &report.repaired {
                let h = &r.healed;
                line!(lines, "found {} errors; healed from {}:", r.found.len(), h.from);
                line!(lines, "  damaged packs set aside under damaged/data/: {}", h.packs_set_aside.len());
                line!(
                    lines,
                    "  index rebuilt: {} packs indexed again, {} unreadable",
                    h.index.packs_indexed.len(),
                    h.index.packs_unreadable.len()
                );
                line!(
                    lines,
                    "  blobs lost: {}, copied from the copy: {}, still missing: {}",
                    h.blobs_lost,
                    h.blobs_copied,
                    h.blobs_still_missing
                );
                lines.push("checked again:");
            }
            line!(
                lines,
                "check of {}{}: {}",
                report.repository,
                report.read_data.as_ref().map(|r| format!(" (read data: {r})")).unwrap_or_default(),
                if report.ok { "no errors" } else { "DAMAGE FOUND" }
            );
            for e in &report.errors {
                line!(lines, "  error: {e}");
            }
            for w in &report.warnings {
                line!(lines, "  warning: {w}");
            }
            for a in &report.affected {
                line!(
                    lines,
                    "  backup {} of {}{}: {}",
                    a.backup_id,
                    a.installation,
                    if a.complete { "" } else { " (incomplete)" },
                    damage(a)
                );
                for o in &a.objects {
                    line!(lines, "    object {o}");
                }
            }
        }
        Outcome::Keys(keys) => {
            for k in keys {
                line!(
                    lines,
                    "{} {}  created {}  {}@{}",
                    if k.current { "*" } else { " " },
                    k.id.get(..16).unwrap_or(&k.id),
                    k.created.as_deref().unwrap_or("-"),
                    k.username.as_deref().unwrap_or("-"),
                    k.hostname.as_deref().unwrap_or("-")
                );
            }
            if keys.len() == 1 {
                lines.push(
                    "warning: one key only: if its password is lost, every backup is lost; add a second with `speechvault key add`",
                );
            }
        }
        Outcome::KeyAdded(id) => line!(lines, "added key {id}"),
        Outcome::KeyRemoved(id) => line!(lines, "removed key {id}"),
        Outcome::KeyReplaced { removed, added } => {
            line!(lines, "password changed: key {removed} replaced by {added}; update the config's password file")
        }
        Outcome::Locks { locks, .. } => {
            for l in locks {
                line!(
                    lines,
                    "{}{}",
                    l.describe(),
                    l.stale.as_ref().map(|s| format!(" (stale: {s})")).unwrap_or_default()
                );
            }
        }
        Outcome::VersionsRepaired(r) => {
            let verb = if r.dry_run { "would repair" } else { "repaired" };
            line!(lines, "repair versions: {verb} {} repository files", r.files.len());
            for f in &r.files {
                if f.lost {
                    line!(lines, "  {}: LOST, no version is the one a backup wrote", f.key);
                    continue;
                }
                line!(
                    lines,
                    "  {}: {} delete markers and {} versions written over it removed{}{}",
                    f.key,
                    f.markers_removed,
                    f.versions_removed,
                    if f.kept_retained > 0 {
                        format!(", {} retained ones kept", f.kept_retained)
                    } else {
                        String::new()
                    },
                    if f.rewritten { ", the backup's version written again on top" } else { "" }
                );
            }
            if r.lock_leftovers_removed > 0 {
                line!(lines, "  locks/: {} leftover versions of deleted locks removed", r.lock_leftovers_removed);
            }
            if r.files.is_empty() {
                lines.push(
                    "every file's newest version is the one a backup wrote: restic reads the repository as it is",
                );
            }
        }
        Outcome::Unlocked { removed, left } => {
            for l in removed {
                line!(
                    lines,
                    "removed {}{}",
                    l.describe(),
                    l.stale.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
                );
            }
            for l in left {
                line!(
                    lines,
                    "still held: {} (remove it with --remove-all only if that run is surely gone)",
                    l.describe()
                );
            }
            if removed.is_empty() && left.is_empty() {
                lines.push("no locks");
            }
        }
        Outcome::Export { report, to } => {
            line!(lines, "exported backup {} of {} into {}", report.backup_id, report.installation, to.display());
            for (db, f) in &report.databases {
                line!(lines, "  database {db}: {f}");
            }
            line!(lines, "  {} objects under minio/", report.objects.len() - report.escaped);
            if report.escaped > 0 {
                line!(
                    lines,
                    "  {} objects whose keys cannot be file names are under escaped/ (see {}: key, content type, metadata of every object)",
                    report.escaped,
                    speechvault::ops::export::REPORT
                );
            }
        }
        Outcome::Import { report, dir } => {
            line!(
                lines,
                "imported {} as backup {} of {} in {:.1}s",
                dir.display(),
                report.backup_id,
                report.installation,
                report.seconds
            );
            for (db, d) in &report.databases {
                line!(lines, "  database {db}: {} tables, {} rows", d.tables, d.rows);
            }
            for (b, s) in &report.buckets {
                line!(lines, "  bucket {b}: {} objects, {}", s.objects, human_bytes(s.bytes));
            }
            if report.statements_dropped > 0 {
                line!(
                    lines,
                    "  {} OWNER TO / GRANT statements for roles the scratch server lacks were left out",
                    report.statements_dropped
                );
            }
        }
        _ => {}
    }
}

/// What forget (or the retention after a backup) decided, and what prune freed.
pub(super) fn retention(lines: &mut Lines, o: &RetentionOutcome) {
    let verb = if o.dry_run { "would remove" } else { "removed" };
    line!(lines, "retention: {verb} {} backups", o.removed.len());
    for d in &o.sets {
        line!(
            lines,
            "  {} {:<24} {:<16} {} ({})",
            if d.keep { "keep  " } else { "remove" },
            d.backup_id,
            d.installation,
            d.time.chars().take(19).collect::<String>(),
            d.reasons.join(", ")
        );
    }
    if let Some(p) = &o.prune {
        line!(
            lines,
            "prune: {} {} packs ({}), {} repacked; {} used, {} unused left",
            if p.dry_run { "would remove" } else { "removed" },
            p.packs_removed,
            human_bytes(p.bytes_removed),
            p.packs_repacked,
            human_bytes(p.bytes_used),
            human_bytes(p.bytes_unused_left)
        );
        if p.packs_held > 0 {
            line!(
                lines,
                "prune: kept {} packs ({}) the object lock still retains; a prune after their retention frees them",
                p.packs_held,
                human_bytes(p.bytes_held)
            );
        }
    }
    if !o.held.is_empty() {
        line!(lines, "held: {} files are retained by object lock and stay until their retention ends:", o.held.len());
        for h in o.held.iter().take(20) {
            line!(lines, "  {} until {}", h.key, h.until.as_deref().unwrap_or("(unknown)"));
        }
        if o.held.len() > 20 {
            line!(lines, "  ... and {} more (all in --json)", o.held.len() - 20);
        }
    }
}

fn damage(a: &AffectedSet) -> String {
    let mut parts = Vec::new();
    if a.manifest {
        parts.push("its manifest".to_string());
    }
    if !a.databases.is_empty() {
        parts.push(format!("databases {}", a.databases.join(", ")));
    }
    if a.objects_count > 0 {
        parts.push(format!("{} objects", a.objects_count));
    }
    if !a.unreadable.is_empty() {
        parts.push(format!("unreadable parts {}", a.unreadable.join(", ")));
    }
    parts.join("; ")
}
