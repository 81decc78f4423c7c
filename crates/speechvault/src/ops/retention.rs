//! `forget`: which backup sets to keep, per installation, and why.
//!
//! Retention acts on whole backup sets, never on half of one: every complete set becomes one
//! entry (timed by its first snapshot) and restic's rules (`keep-last`, `-hourly`, `-daily`,
//! `-weekly`, `-monthly`, `-yearly`, `-within`, computed by rustic_core) decide per
//! installation; a set that goes takes all of its snapshots with it. Incomplete sets (no
//! manifest: a backup that failed or was killed) go once they are older than the grace period;
//! `forget` holds the repository's exclusive lock, so no running backup's set is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustic_core::KeepOptions;
use rustic_core::repofile::SnapshotFile;
use serde::Serialize;

use crate::error::Error;
use crate::model::catalog::{BackupSet, scan};
use crate::model::config::Retention;
use crate::model::config::retention::parse_span;
use crate::repository::Repository;
use crate::repository::damage::refuse_damaged;
use crate::repository::maintenance::PruneSummary;

/// What happens to one backup set.
#[derive(Debug, Clone, Serialize)]
pub struct SetDecision {
    pub backup_id: String,
    pub installation: String,
    pub time: String,
    pub complete: bool,
    pub keep: bool,
    /// Why it is kept (the rules that keep it) or why it goes.
    pub reasons: Vec<String>,
    pub snapshots: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("retention for installation {installation}: {reason}")]
pub struct RetentionError {
    pub installation: String,
    pub reason: String,
}

fn keep_options(r: &Retention) -> Result<KeepOptions, String> {
    let mut k = KeepOptions::default();
    let n = |v: Option<u32>| v.map(|x| i32::try_from(x).unwrap_or(i32::MAX));
    k.keep_last = n(r.keep_last);
    k.keep_hourly = n(r.keep_hourly);
    k.keep_daily = n(r.keep_daily);
    k.keep_weekly = n(r.keep_weekly);
    k.keep_monthly = n(r.keep_monthly);
    k.keep_yearly = n(r.keep_yearly);
    if let Some(w) = &r.keep_within {
        k.keep_within = Some(parse_span(w)?);
    }
    Ok(k)
}

fn set_time(set: &BackupSet) -> jiff::Timestamp {
    set.time.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Decides, for every set of the installations in `policies`, whether it stays. Sets of other
/// installations are not looked at. `now` is the time the rules count from.
pub fn plan(
    sets: &[BackupSet],
    policies: &BTreeMap<String, Retention>,
    now: jiff::Timestamp,
) -> Result<Vec<SetDecision>, RetentionError> {
    let mut out = Vec::new();
    let zoned = now.to_zoned(jiff::tz::TimeZone::UTC);
    for (installation, policy) in policies {
        let err = |reason: String| RetentionError { installation: installation.clone(), reason };
        let mine: Vec<&BackupSet> = sets.iter().filter(|s| &s.installation == installation).collect();
        let grace = parse_span(&policy.incomplete_grace).map_err(err)?;
        let cutoff = zoned.checked_sub(grace).map_err(|e| err(e.to_string()))?.timestamp();
        // Complete sets: restic's rules over one stand-in snapshot per set.
        let complete: Vec<&BackupSet> = mine.iter().copied().filter(|s| s.complete()).collect();
        let mut decided: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
        if policy.has_rules() && !complete.is_empty() {
            let keep = keep_options(policy).map_err(err)?;
            let stand_ins: Vec<SnapshotFile> = complete
                .iter()
                .map(|s| SnapshotFile {
                    time: set_time(s).to_zoned(jiff::tz::TimeZone::UTC),
                    hostname: installation.clone(),
                    label: s.id.clone(),
                    ..Default::default()
                })
                .collect();
            let verdicts = keep.apply(stand_ins, &zoned).map_err(|e| err(crate::repository::rustic_message(&e)))?;
            for v in verdicts {
                let reasons = if v.keep { v.reasons.clone() } else { vec!["no keep rule matches".into()] };
                decided.insert(v.snapshot.label.clone(), (v.keep, reasons));
            }
        }
        // A kept backup marked anomalous (ransomware?) keeps the last unmarked one before it:
        // the one to restore from, whatever the rules say.
        let by_time = {
            let mut c = complete.clone();
            c.sort_by_key(|s| set_time(s));
            c
        };
        for (i, marked) in by_time.iter().enumerate() {
            let kept = decided.get(&marked.id).is_none_or(|d| d.0);
            if !marked.anomalous() || !kept {
                continue;
            }
            if let Some(clean) = by_time[..i].iter().rev().find(|s| !s.anomalous()) {
                let d = decided.entry(clean.id.clone()).or_insert((true, Vec::new()));
                if !d.0 {
                    *d = (true, Vec::new());
                }
                let why = format!("the last unmarked backup before anomalous backup {}", marked.id);
                if !d.1.contains(&why) {
                    d.1.push(why);
                }
            }
        }
        // The newest backup a drill proved restorable stays, whatever the rules say: there is
        // always one backup known to restore.
        if let Some(proven) = by_time.iter().rev().find(|s| s.drill_passed()) {
            let d = decided.entry(proven.id.clone()).or_insert((true, Vec::new()));
            if !d.0 {
                *d = (true, vec!["the newest backup a drill proved restorable".into()]);
            }
        }
        for s in mine {
            let (keep, reasons) = if s.complete() {
                decided.remove(&s.id).unwrap_or((true, vec!["no keep rule is set".into()]))
            } else if set_time(s) < cutoff {
                (false, vec![format!("incomplete (no manifest) and older than {}", policy.incomplete_grace)])
            } else {
                (
                    true,
                    vec![format!("incomplete, but younger than {} (it may still be written)", policy.incomplete_grace)],
                )
            };
            out.push(SetDecision {
                backup_id: s.id.clone(),
                installation: installation.clone(),
                time: s.time.clone(),
                complete: s.complete(),
                keep,
                reasons,
                snapshots: s.snapshots.len(),
            });
        }
    }
    out.sort_by(|a, b| a.installation.cmp(&b.installation).then(a.time.cmp(&b.time)));
    Ok(out)
}

/// What `forget` (or the retention after a backup) did.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionOutcome {
    pub dry_run: bool,
    pub sets: Vec<SetDecision>,
    pub removed: Vec<String>,
    pub prune: Option<PruneSummary>,
    /// Files of forgotten backups an immutable repository still retains: they stay until
    /// the date given, and a later forget removes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::repository::immutable::HeldFile>,
}

/// What to apply retention to, and how.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Installations whose backups are looked at (empty: every installation with backups).
    pub installations: Vec<String>,
    /// Prune in the same run.
    pub prune: bool,
    /// Unused space prune may leave (`None`: the first installation's `max_unused`, else
    /// rustic's default).
    pub max_unused: Option<String>,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// How long to wait for the repository's lock.
    pub lock_wait: std::time::Duration,
    /// Decide from the backups that read when snapshot files are damaged (without it,
    /// forget refuses: a damaged file's backup cannot be judged).
    pub ignore_damaged: bool,
}

/// Applies each installation's retention (`policy` says what it is) under the repository's
/// exclusive lock (shared for a dry run): the sets it does not keep are forgotten, whole, and
/// with `prune` their space is freed. Blocks: call it from a blocking thread.
pub fn apply(
    repo: &Arc<Repository>,
    request: &Request,
    policy: impl Fn(&str) -> Result<Retention, Error>,
) -> Result<RetentionOutcome, Error> {
    let _lock = repo.lock(!request.dry_run, request.lock_wait)?;
    let catalog = scan(repo)?;
    if !catalog.damaged.is_empty() {
        if !request.ignore_damaged {
            return Err(refuse_damaged(&repo.location().describe(), &catalog.damaged, "forget").into());
        }
        for d in &catalog.damaged {
            tracing::warn!(file = %d.path(), reason = %d.reason, "damaged snapshot file left alone (--ignore-damaged)");
        }
    }
    let sets = catalog.sets;
    let names: Vec<String> = if request.installations.is_empty() {
        let names: BTreeSet<String> = sets.iter().map(|s| s.installation.clone()).collect();
        names.into_iter().collect()
    } else {
        request.installations.clone()
    };
    let mut policies = BTreeMap::new();
    let mut max_unused = request.max_unused.clone();
    for name in &names {
        let r = policy(name)?;
        if max_unused.is_none() {
            max_unused = r.max_unused.clone();
        }
        policies.insert(name.clone(), r);
    }
    let decisions = plan_now(&sets, &policies)?;
    let doomed = doomed_snapshots(&sets, &decisions);
    let removed: Vec<String> = decisions.iter().filter(|d| !d.keep).map(|d| d.backup_id.clone()).collect();
    if !request.dry_run && !doomed.is_empty() {
        repo.delete_snapshots(&doomed)?;
    }
    let prune = if request.prune { Some(repo.prune(max_unused.as_deref(), request.dry_run)?) } else { None };
    Ok(RetentionOutcome { dry_run: request.dry_run, sets: decisions, removed, prune, held: repo.held_files() })
}

/// [`plan`] as of now.
pub fn plan_now(
    sets: &[BackupSet],
    policies: &BTreeMap<String, Retention>,
) -> Result<Vec<SetDecision>, RetentionError> {
    plan(sets, policies, jiff::Timestamp::now())
}

/// The snapshots to delete for the sets `plan` does not keep.
pub fn doomed_snapshots(sets: &[BackupSet], decisions: &[SetDecision]) -> Vec<rustic_core::repofile::SnapshotId> {
    let gone: std::collections::BTreeSet<&str> =
        decisions.iter().filter(|d| !d.keep).map(|d| d.backup_id.as_str()).collect();
    sets.iter().filter(|s| gone.contains(s.id.as_str())).flat_map(|s| s.snapshots.iter().map(|sn| sn.id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, time: &str, complete: bool) -> BackupSet {
        let manifest = SnapshotFile { label: "manifest".into(), ..Default::default() };
        BackupSet {
            id: id.into(),
            installation: "prod".into(),
            time: time.into(),
            snapshots: vec![SnapshotFile::default(), manifest.clone()],
            manifest: complete.then_some(manifest),
        }
    }

    #[test]
    fn whole_sets_are_kept_by_restics_rules_and_incomplete_ones_age_out() {
        let sets = vec![
            set("a", "2026-11-20T01:00:00Z", true),
            set("b", "2026-11-21T01:00:00Z", true),
            set("c", "2026-11-21T13:00:00Z", true),
            set("d", "2026-11-22T01:00:00Z", false),
            set("e", "2026-11-24T23:00:00Z", false),
            set("f", "2026-11-25T01:00:00Z", true),
        ];
        let policy = Retention { keep_daily: Some(2), incomplete_grace: "24h".into(), ..Default::default() };
        let policies = BTreeMap::from([("prod".to_string(), policy)]);
        let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let d = plan(&sets, &policies, now).unwrap();
        let kept: Vec<&str> = d.iter().filter(|x| x.keep).map(|x| x.backup_id.as_str()).collect();
        assert_eq!(kept, ["c", "e", "f"], "{d:?}");
        assert!(d.iter().find(|x| x.backup_id == "f").unwrap().reasons.iter().any(|r| r.contains("daily")), "{d:?}");
        assert!(d.iter().find(|x| x.backup_id == "d").unwrap().reasons[0].contains("incomplete"));
        assert_eq!(doomed_snapshots(&sets, &d).len(), 6, "every snapshot of a removed set goes");
        // No rule at all keeps every complete set.
        let none =
            BTreeMap::from([("prod".to_string(), Retention { incomplete_grace: "24h".into(), ..Default::default() })]);
        assert_eq!(plan(&sets, &none, now).unwrap().iter().filter(|x| x.keep).count(), 5);
    }

    #[test]
    fn a_kept_anomalous_backup_keeps_the_last_clean_one_before_it() {
        let mut marked = set("m", "2026-11-25T01:00:00Z", true);
        if let Some(m) = marked.manifest.as_mut() {
            m.tags.add(crate::model::manifest::ANOMALOUS_TAG.into());
        }
        let sets = vec![set("a", "2026-11-23T01:00:00Z", true), set("b", "2026-11-24T01:00:00Z", true), marked];
        let policy = Retention { keep_last: Some(1), incomplete_grace: "24h".into(), ..Default::default() };
        let policies = BTreeMap::from([("prod".to_string(), policy)]);
        let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let d = plan(&sets, &policies, now).unwrap();
        let kept: Vec<&str> = d.iter().filter(|x| x.keep).map(|x| x.backup_id.as_str()).collect();
        assert_eq!(kept, ["b", "m"], "{d:?}");
        assert!(d.iter().find(|x| x.backup_id == "b").unwrap().reasons[0].contains("anomalous backup m"));
        // Without the mark, keep_last 1 keeps one.
        let plain = vec![set("a", "2026-11-23T01:00:00Z", true), set("b", "2026-11-24T01:00:00Z", true)];
        assert_eq!(plan(&plain, &policies, now).unwrap().iter().filter(|x| x.keep).count(), 1);
    }
}
