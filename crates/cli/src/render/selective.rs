//! Text of the selective restore's plan, `ls` and `diff`.

use speechvault::ops::inspect::Changes;
use speechvault::ops::restore::VerifyMode;
use speechvault::ops::selective::SelectiveReport;
use speechvault::support::units::human_bytes;

use super::{Lines, line};
use crate::outcome::Outcome;

pub(super) fn text(outcome: &Outcome, lines: &mut Lines) {
    match outcome {
        Outcome::Selective(r) => plan(lines, r),
        Outcome::LsObjects { objects, .. } => {
            for o in objects {
                line!(lines, "{:>12}  {}  {:?}", o.size, o.last_modified, o.key);
            }
            line!(lines, "{} objects, {}", objects.len(), human_bytes(objects.iter().map(|o| o.size).sum()));
        }
        Outcome::LsInstances { instances, .. } => {
            for i in instances {
                let rows: Vec<String> = i.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
                line!(
                    lines,
                    "{}  {} objects ({})  rows: {}",
                    i.instance,
                    i.objects,
                    human_bytes(i.bytes),
                    rows.join(", ")
                );
            }
        }
        Outcome::LsSummary { backup_id, manifest: m, customizations, speakers } => {
            line!(lines, "backup {backup_id} of {} ({}): {}", m.installation, m.started, m.components.join(", "));
            for (d, e) in &m.databases {
                line!(lines, "  database {d}: {} tables, {} rows", e.tables.len(), e.tables.values().sum::<i64>());
            }
            for (b, e) in &m.buckets {
                line!(lines, "  bucket {b}: {} objects, {}", e.objects, human_bytes(e.bytes));
            }
            line!(
                lines,
                "  {customizations} customizations, {speakers} speakers, {} service instances",
                m.canonical_instance_ids().len()
            );
            lines.push("  details: --customizations, --speakers, --instances, --objects BUCKET/PREFIX");
        }
        Outcome::LsItems { items, .. } => {
            for i in items {
                let f = |c: &str| i.fields.get(c).cloned().flatten().unwrap_or_else(|| "-".into());
                let model =
                    i.fields.get("base_model_name").or(i.fields.get("language")).cloned().flatten().unwrap_or_default();
                line!(
                    lines,
                    "{}  {:<18} owner {}  {:?}  {}  {}  created {}  updated {}",
                    i.id,
                    i.database,
                    f("owner"),
                    f("name"),
                    model,
                    f("status"),
                    f("created"),
                    f("updated")
                );
            }
        }
        Outcome::Diff(report) => {
            line!(lines, "installation {} since backup {}:", report.installation, report.backup_id);
            let mut show = |what: &str, c: &Changes| {
                for (label, list) in [("added", &c.added), ("removed", &c.removed), ("changed", &c.changed)] {
                    for k in list {
                        line!(lines, "  {what}: {label} {k:?}");
                    }
                }
            };
            for (db, c) in &report.customizations {
                show(&format!("{db} customization"), c);
            }
            for (db, c) in &report.speakers {
                show(&format!("{db} speaker"), c);
            }
            for b in &report.buckets {
                show(&format!("bucket {}", b.name), &b.changes);
            }
            for b in report.buckets.iter().filter(|b| !b.settings.is_empty()) {
                line!(lines, "  bucket {}: settings changed: {}", b.name, b.settings.join(", "));
            }
            let none = report.customizations.values().chain(report.speakers.values()).all(|c| c.is_empty())
                && report.buckets.iter().all(|b| b.changes.is_empty() && b.settings.is_empty());
            if none {
                lines.push("  no changes");
            }
        }
        _ => {}
    }
}

fn plan(lines: &mut Lines, r: &SelectiveReport) {
    let verb = if r.dry_run { "would restore" } else { "restored" };
    let (insert, write) = if r.dry_run { ("to insert", "to write") } else { ("inserted", "written") };
    line!(lines, "{verb} {} from backup {} into {} ({:.1}s)", r.selection, r.backup_id, r.installation, r.seconds);
    for d in &r.databases {
        for t in &d.tables {
            line!(
                lines,
                "  {}: {}: {} rows {insert}, {} differ{}, {} identical (skipped), {} referenced rows already there",
                d.database,
                t.table,
                t.insert.len(),
                t.conflicts.len(),
                if r.replace { " (replaced)" } else { "" },
                t.identical,
                t.present
            );
            for k in &t.insert {
                line!(lines, "      insert ({k})");
            }
            for k in &t.conflicts {
                line!(lines, "      {} ({k})", if r.replace { "replace" } else { "CONFLICT" });
            }
        }
    }
    for b in &r.buckets {
        line!(
            lines,
            "  bucket {}: {} objects {write}, {} differ{}, {} identical (skipped)",
            b.name,
            b.write.len(),
            b.conflicts.len(),
            if r.replace { " (replaced)" } else { "" },
            b.identical
        );
        for k in &b.write {
            line!(lines, "      write {k:?}");
        }
        for k in &b.conflicts {
            line!(lines, "      {} {k:?}", if r.replace { "replace" } else { "CONFLICT" });
        }
    }
    if r.dry_run {
        if r.conflicts > 0 && !r.replace {
            line!(lines, "{} conflicts: the restore would be refused; --replace overwrites them", r.conflicts);
        }
        lines.push("dry run: nothing was changed");
    } else if r.verified {
        lines.push(match r.verification {
            VerifyMode::ReadBack => "verified: every written row and object equals the backup (objects read back)",
            _ => "verified: every written row and object equals the backup",
        });
    } else if r.verification == VerifyMode::None {
        lines.push("rows compared with the backup; objects not verified (--verify=none)");
    }
}
