//! Text of restore and verify.

use speechvault::ops::verify::VerifyReport;
use speechvault::support::units::human_bytes;

use super::{Lines, line};
use crate::outcome::Outcome;

pub(super) fn text(outcome: &Outcome, lines: &mut Lines) {
    match outcome {
        Outcome::Restore(report) => {
            line!(
                lines,
                "restored backup {} of {} into {} in {:.1}s{}",
                report.backup_id,
                report.source_installation,
                report.installation,
                report.seconds,
                if report.resumed { " (resumed)" } else { "" }
            );
            for (db, d) in &report.databases {
                let owner = d.owner.as_deref().map(|o| format!(", owned by {o}")).unwrap_or_default();
                line!(lines, "  database {db}: {} tables from a {} dump{owner}", d.tables, human_bytes(d.dump_bytes));
            }
            for (b, s) in &report.buckets {
                let mut extra = Vec::new();
                if s.kept > 0 {
                    extra.push(format!("{} already there and kept", s.kept));
                }
                if s.deleted > 0 {
                    extra.push(format!("{} not in the backup, deleted", s.deleted));
                }
                let extra = if extra.is_empty() { String::new() } else { format!(" ({})", extra.join(", ")) };
                line!(lines, "  bucket {b} -> {}: {} objects, {}{extra}", s.name, s.objects, human_bytes(s.bytes));
            }
            super::ownership(lines, &report.ownership);
            for s in &report.bucket_settings {
                let why = s.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                line!(lines, "  bucket {} setting {}: {}{why}", s.bucket, s.setting, s.action);
            }
            for n in &report.notes {
                line!(lines, "  note: {n}");
            }
            if let Some(s) = report.salvage.as_ref().filter(|s| !s.is_empty()) {
                line!(lines, "  salvage: not restored, the repository's copy is damaged:");
                for d in &s.databases {
                    line!(lines, "    database {}: {}", d.name, d.reason);
                }
                for o in &s.objects {
                    line!(lines, "    object {}/{}: {}", o.bucket.as_deref().unwrap_or("?"), o.name, o.reason);
                }
                if s.objects_lost > s.objects.len() as u64 {
                    line!(lines, "    and {} more objects", s.objects_lost - s.objects.len() as u64);
                }
            }
            if let Some(v) = &report.verify {
                verification(lines, v);
            }
        }
        Outcome::Drill(r) => {
            line!(
                lines,
                "drill of backup {} of {}: {} (recovery time {:.1}s, recovery point {:.0}s, longest gap {:.0}s)",
                r.backup_id,
                r.installation,
                if r.passed {
                    "PASSED"
                } else if r.verified {
                    "OBJECTIVES MISSED"
                } else {
                    "FAILED"
                },
                r.rto_seconds,
                r.rpo_seconds,
                r.longest_gap_seconds
            );
            for p in &r.phases {
                line!(lines, "  {:<32} {:>8.2}s", p.name, p.seconds);
            }
            let v = &r.verification;
            line!(
                lines,
                "  verified: {} tables ({} rows) by row digests, {} objects ({}) by size and SHA-256 ({}): {} differences",
                v.tables,
                v.rows,
                v.objects,
                human_bytes(v.bytes),
                r.objects_to,
                v.differences_count
            );
            for d in &v.differences {
                line!(lines, "    {d}");
            }
            for m in &r.missed {
                line!(lines, "  objective missed: {m}");
            }
            if let Some(id) = &r.record {
                line!(lines, "  recorded in the repository as snapshot {}", id.get(..8).unwrap_or(id));
            }
        }
        Outcome::Verify(report) => {
            line!(lines, "backup {} vs installation {}", report.backup_id, report.installation);
            verification(lines, report);
        }
        _ => {}
    }
}

fn verification(lines: &mut Lines, v: &VerifyReport) {
    let bad_tables: Vec<_> = v.tables.iter().filter(|t| !t.ok).collect();
    let rows: i64 = v.tables.iter().map(|t| t.backup_rows).sum();
    line!(lines, "verification against the backup: {}", if v.ok { "OK" } else { "DIFFERENCES FOUND" });
    if let Some((from, to)) = &v.ownership_mapped {
        line!(lines, "  rows owned by {to} on the installation compared as owned by {from} in the backup");
    }
    line!(lines, "  {} tables, {} rows (counts and content): {} differ", v.tables.len(), rows, bad_tables.len());
    for t in bad_tables {
        if t.table == speechvault::pg::catalog::LARGE_OBJECTS {
            // Large objects are compared by one digest over all of them (their count is in it).
            let found = t.installation_rows.map_or("none".to_string(), |n| n.to_string());
            line!(
                lines,
                "    {}: the large objects differ from the backup's (compared by content; the installation has {found})",
                t.database
            );
            continue;
        }
        let found = t.installation_rows.map_or("no such table".to_string(), |n| format!("{n} rows"));
        line!(
            lines,
            "    {}.{}: the backup has {} rows, the installation {found}; content {}",
            t.database,
            t.table,
            t.backup_rows,
            t.content
        );
    }
    for b in &v.buckets {
        line!(
            lines,
            "  bucket {}: {}/{} objects, {}/{} bytes, {} digests checked{}",
            b.name,
            b.actual_objects,
            b.expected_objects,
            b.actual_bytes,
            b.expected_bytes,
            b.digests_checked,
            if b.ok { "" } else { " - DIFFERENT" }
        );
        for k in &b.missing {
            line!(lines, "    in the backup, missing here: {k:?}");
        }
        for k in &b.unexpected {
            line!(lines, "    here, not in the backup: {k:?}");
        }
        for d in &b.different {
            line!(lines, "    differs: {:?}: {}", d.key, d.reason);
        }
        if !b.settings_different.is_empty() {
            line!(lines, "    settings that differ from the backup's: {}", b.settings_different.join(", "));
        }
    }
}
