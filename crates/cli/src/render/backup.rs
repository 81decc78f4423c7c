//! Text of backup, doctor and transfer-ownership.

use speechvault::ops::doctor::Status;
use speechvault::support::units::human_bytes;

use super::{Lines, line};
use crate::outcome::Outcome;

pub(super) fn text(outcome: &Outcome, lines: &mut Lines) {
    match outcome {
        Outcome::Backup { report, retention } => {
            line!(lines, "backup {} of {} complete in {:.1}s", report.backup_id, report.installation, report.seconds);
            for (db, d) in &report.databases {
                line!(
                    lines,
                    "  database {db}: {} tables, {} rows, dump {}",
                    d.tables,
                    d.rows,
                    human_bytes(d.dump_bytes)
                );
            }
            for (b, s) in &report.buckets {
                let mut extra = Vec::new();
                if s.unchanged > 0 {
                    extra.push(format!("{} unchanged since the previous backup, not read again", s.unchanged));
                }
                if s.vanished > 0 {
                    extra.push(format!("{} deleted while the backup ran, not in it", s.vanished));
                }
                let extra = if extra.is_empty() { String::new() } else { format!(" ({})", extra.join("; ")) };
                line!(lines, "  bucket {b}: {} objects, {}{extra}", s.objects, human_bytes(s.bytes));
            }
            line!(lines, "  service instances owning rows: {}", report.instance_ids.join(", "));
            for w in &report.warnings {
                line!(lines, "  warning: {w}");
            }
            if let Some(a) = retention {
                super::repository::retention(lines, a);
            }
        }
        Outcome::Doctor(report) => {
            line!(lines, "doctor: installation {}", report.installation);
            for c in &report.checks {
                let mark = match c.status {
                    Status::Ok => "✔",
                    Status::Warn => "!",
                    Status::Fail => "✘",
                };
                line!(lines, "  {mark} {}: {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    line!(lines, "      fix: {fix}");
                }
            }
            lines.push(if report.ok { "a backup would run" } else { "a backup would fail: fix the ✘ checks above" });
        }
        Outcome::Ownership { installation, from, to, dry_run, rules } => {
            line!(
                lines,
                "{} ownership on {installation} from {from} to {to}",
                if *dry_run { "would move" } else { "moved" }
            );
            super::ownership(lines, rules);
        }
        _ => {}
    }
}
