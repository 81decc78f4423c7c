//! Keeping the repository: copy, forget, prune, check, key, unlock.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use speechvault::error::ErrorKind;
use speechvault::model::catalog;
use speechvault::ops::retention::{self, SetDecision};
use speechvault::repository::Repository;
use speechvault::repository::maintenance::{PruneSummary, ReadSubset};

use crate::output::{Failure, out};
use crate::vault_cmd::{Ctx, blocking, human_bytes, open_repository_named};

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Backup to copy (an id, a unique prefix, or `latest`); or --all.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub backup: Option<String>,
    /// Copy every complete backup the target does not have yet.
    #[arg(long)]
    pub all: bool,
    /// The target: a name from the config's [repositories.NAME].
    #[arg(long, value_name = "NAME")]
    pub to_repository: String,
}

pub async fn copy(ctx: &Ctx, args: CopyArgs) -> Result<(), Failure> {
    let src = ctx.repo().await?;
    let dst = open_repository_named(&ctx.cfg, Some(&args.to_repository)).await?;
    let _l1 = ctx.lock(&src, false).await?;
    let _l2 = ctx.lock(&dst, false).await?;
    let selector = args.backup.clone();
    let (s, d) = (src.clone(), dst.clone());
    let report = blocking(move || speechvault::ops::copy::copy_sets(&s, &d, selector.as_deref())).await??;
    if ctx.json {
        return crate::output::json(&report);
    }
    out!("copy {} -> {}", report.from, report.to);
    for id in &report.copied {
        out!("  copied {id}");
    }
    for id in &report.skipped {
        out!("  {id} is already there");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Only backups of these installations (default: every installation with backups).
    #[arg(long, value_delimiter = ',')]
    pub installation: Vec<String>,
    #[arg(long)]
    pub keep_last: Option<u32>,
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Keep every backup younger than this (e.g. 2d, 1y6m).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Incomplete backups (no manifest) older than this go (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub incomplete_grace: Option<String>,
    /// Prune in the same run, freeing the space.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: the unused space prune may leave (e.g. 5%, 1GiB, unlimited).
    #[arg(long)]
    pub max_unused: Option<String>,
    /// Show what would go and why each kept backup stays; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

/// What forget (and the retention after a backup) did.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionOutcome {
    pub dry_run: bool,
    pub sets: Vec<SetDecision>,
    pub removed: Vec<String>,
    pub prune: Option<PruneSummary>,
}

/// Applies retention to `installations` (config retention, or `overrides` for each), taking
/// the exclusive lock; prunes when asked.
pub async fn apply_retention(
    ctx: &Ctx,
    repo: &Arc<Repository>,
    installations: &[String],
    prune: bool,
    dry_run: bool,
) -> Result<RetentionOutcome, Failure> {
    apply_with(ctx, repo, installations, None, prune, None, dry_run).await
}

async fn apply_with(
    ctx: &Ctx,
    repo: &Arc<Repository>,
    installations: &[String],
    overrides: Option<&ForgetArgs>,
    prune: bool,
    max_unused: Option<String>,
    dry_run: bool,
) -> Result<RetentionOutcome, Failure> {
    let _lock = ctx.lock(repo, !dry_run).await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let names: Vec<String> = if installations.is_empty() {
        let mut n: Vec<String> = sets.iter().map(|s| s.installation.clone()).collect();
        n.sort();
        n.dedup();
        n
    } else {
        installations.to_vec()
    };
    let mut policies = BTreeMap::new();
    let mut max_unused = max_unused;
    for name in &names {
        let mut r = ctx.cfg.retention(name)?;
        if let Some(a) = overrides {
            let cli_rules = a.keep_last.is_some()
                || a.keep_hourly.is_some()
                || a.keep_daily.is_some()
                || a.keep_weekly.is_some()
                || a.keep_monthly.is_some()
                || a.keep_yearly.is_some()
                || a.keep_within.is_some();
            if cli_rules {
                // Rules on the command line replace the configured ones.
                r.keep_last = a.keep_last;
                r.keep_hourly = a.keep_hourly;
                r.keep_daily = a.keep_daily;
                r.keep_weekly = a.keep_weekly;
                r.keep_monthly = a.keep_monthly;
                r.keep_yearly = a.keep_yearly;
                r.keep_within = a.keep_within.clone();
            }
            if let Some(g) = &a.incomplete_grace {
                r.incomplete_grace = g.clone();
            }
        }
        if max_unused.is_none() {
            max_unused = r.max_unused.clone();
        }
        policies.insert(name.clone(), r);
    }
    let decisions = retention::plan_now(&sets, &policies)?;
    let doomed = retention::doomed_snapshots(&sets, &decisions);
    let removed: Vec<String> = decisions.iter().filter(|d| !d.keep).map(|d| d.backup_id.clone()).collect();
    if !dry_run && !doomed.is_empty() {
        let v = repo.clone();
        blocking(move || v.delete_snapshots(&doomed)).await??;
    }
    let prune = if prune {
        let v = repo.clone();
        Some(blocking(move || v.prune(max_unused.as_deref(), dry_run)).await??)
    } else {
        None
    };
    Ok(RetentionOutcome { dry_run, sets: decisions, removed, prune })
}

pub fn print_retention(o: &RetentionOutcome) {
    let verb = if o.dry_run { "would remove" } else { "removed" };
    out!("retention: {verb} {} backups", o.removed.len());
    for d in &o.sets {
        out!(
            "  {} {:<24} {:<16} {} ({})",
            if d.keep { "keep  " } else { "remove" },
            d.backup_id,
            d.installation,
            d.time.chars().take(19).collect::<String>(),
            d.reasons.join(", ")
        );
    }
    if let Some(p) = &o.prune {
        out!(
            "prune: {} {} packs ({}), {} repacked; {} used, {} unused left",
            if p.dry_run { "would remove" } else { "removed" },
            p.packs_removed,
            human_bytes(p.bytes_removed),
            p.packs_repacked,
            human_bytes(p.bytes_used),
            human_bytes(p.bytes_unused_left)
        );
    }
}

pub async fn forget(ctx: &Ctx, args: ForgetArgs) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let o = apply_with(ctx, &repo, &args.installation, Some(&args), args.prune, args.max_unused.clone(), args.dry_run)
        .await?;
    ctx.record(
        vec![
            speechvault::observe::metrics::Sample::new(
                "speechvault_forgotten_backups",
                "Backups the run removed by the retention rules.",
                o.removed.len() as f64,
            ),
            speechvault::observe::metrics::Sample::new(
                "speechvault_kept_backups",
                "Backups the retention rules keep.",
                o.sets.iter().filter(|s| s.keep).count() as f64,
            ),
        ],
        None,
    );
    if ctx.json {
        return crate::output::json(&o);
    }
    print_retention(&o);
    Ok(())
}

pub async fn prune(ctx: &Ctx, max_unused: Option<String>, dry_run: bool) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, !dry_run).await?;
    let v = repo.clone();
    let p = blocking(move || v.prune(max_unused.as_deref(), dry_run)).await??;
    if ctx.json {
        return crate::output::json(&p);
    }
    print_retention(&RetentionOutcome { dry_run, sets: Vec::new(), removed: Vec::new(), prune: Some(p) });
    Ok(())
}

pub async fn check(ctx: &Ctx, read_data: bool, subset: Option<ReadSubset>) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let read = match (read_data, subset) {
        (_, Some(s)) => Some(s),
        (true, None) => Some(ReadSubset::All),
        (false, None) => None,
    };
    let v = repo.clone();
    let report = blocking(move || speechvault::ops::check::run(&v, read)).await??;
    ctx.record(
        vec![speechvault::observe::metrics::Sample::new(
            "speechvault_check_errors",
            "Errors the repository check found (damage).",
            report.errors.len() as f64,
        )],
        None,
    );
    if ctx.json {
        crate::output::json(&report)?;
    } else {
        out!(
            "check of {}{}: {}",
            report.repository,
            report.read_data.as_ref().map(|r| format!(" (read data: {r})")).unwrap_or_default(),
            if report.ok { "no errors" } else { "DAMAGE FOUND" }
        );
        for e in &report.errors {
            out!("  error: {e}");
        }
        for w in &report.warnings {
            out!("  warning: {w}");
        }
        for a in &report.affected {
            out!(
                "  backup {} of {}{}: {}",
                a.backup_id,
                a.installation,
                if a.complete { "" } else { " (incomplete)" },
                describe_damage(a)
            );
            for o in &a.objects {
                out!("    object {o}");
            }
        }
    }
    if !report.ok {
        let f = Failure::new(
            ErrorKind::Differences,
            anyhow::anyhow!(
                "the repository is damaged: {} errors, {} backups affected",
                report.errors.len(),
                report.affected.len()
            ),
        );
        return Err(if ctx.json { f.already_reported() } else { f });
    }
    Ok(())
}

fn describe_damage(a: &speechvault::ops::check::AffectedSet) -> String {
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

#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// List the repository's keys (the current one is marked).
    List,
    /// Add a key for another password (read from PASSWORD_FILE).
    Add {
        #[arg(long, value_name = "PASSWORD_FILE")]
        new_password_file: std::path::PathBuf,
    },
    /// Remove a key (an id or a unique prefix). The last key cannot be removed.
    Remove { id: String },
    /// Replace the current key with one for a new password; no data is rewritten.
    Passwd {
        #[arg(long, value_name = "PASSWORD_FILE")]
        new_password_file: std::path::PathBuf,
    },
}

fn read_password(path: &std::path::Path) -> Result<speechvault::support::secret::Secret, Failure> {
    let p = speechvault::support::secret::read_secret_file(path)
        .map_err(|e| Failure::bad_input(format!("cannot read password file {}: {e}", path.display())))?;
    if p.is_empty() {
        return Err(Failure::bad_input(format!("password file {} is empty", path.display())));
    }
    Ok(p)
}

pub async fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let v = repo.clone();
    match cmd {
        KeyCmd::List => {
            let keys = blocking(move || v.keys()).await??;
            if ctx.json {
                return crate::output::json(&serde_json::json!({ "keys": keys }));
            }
            for k in &keys {
                out!(
                    "{} {}  created {}  {}@{}",
                    if k.current { "*" } else { " " },
                    &k.id[..16],
                    k.created.as_deref().unwrap_or("-"),
                    k.username.as_deref().unwrap_or("-"),
                    k.hostname.as_deref().unwrap_or("-")
                );
            }
            if keys.len() == 1 {
                out!(
                    "warning: one key only: if its password is lost, every backup is lost; add a second with `speechvault key add`"
                );
            }
        }
        KeyCmd::Add { new_password_file } => {
            let pw = read_password(&new_password_file)?;
            let _lock = ctx.lock(&repo, false).await?;
            let id = blocking(move || v.add_key(&pw)).await??;
            if ctx.json {
                return crate::output::json(&serde_json::json!({ "added": id }));
            }
            out!("added key {id}");
        }
        KeyCmd::Remove { id } => {
            let _lock = ctx.lock(&repo, true).await?;
            let removed = blocking(move || v.remove_key(&id)).await??;
            if ctx.json {
                return crate::output::json(&serde_json::json!({ "removed": removed }));
            }
            out!("removed key {removed}");
        }
        KeyCmd::Passwd { new_password_file } => {
            let pw = read_password(&new_password_file)?;
            let _lock = ctx.lock(&repo, true).await?;
            let (old, new) = blocking(move || v.change_password(&pw)).await??;
            if ctx.json {
                return crate::output::json(&serde_json::json!({ "removed": old, "added": new }));
            }
            out!("password changed: key {old} replaced by {new}; update the config's password file");
        }
    }
    Ok(())
}

pub async fn unlock(ctx: &Ctx, all: bool, dry_run: bool) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let v = repo.clone();
    if dry_run {
        let locks = blocking(move || v.locks()).await??;
        let stale: Vec<_> = locks.iter().filter(|l| l.stale.is_some()).cloned().collect();
        if ctx.json {
            return crate::output::json(&serde_json::json!({ "locks": locks, "stale": stale }));
        }
        for l in &locks {
            out!("{}{}", l.describe(), l.stale.as_ref().map(|s| format!(" (stale: {s})")).unwrap_or_default());
        }
        return Ok(());
    }
    let v = repo.clone();
    let removed = blocking(move || v.unlock(all)).await??;
    let v = repo.clone();
    let left = blocking(move || v.locks()).await??;
    if ctx.json {
        return crate::output::json(&serde_json::json!({ "removed": removed, "left": left }));
    }
    for l in &removed {
        out!("removed {}{}", l.describe(), l.stale.as_ref().map(|s| format!(" ({s})")).unwrap_or_default());
    }
    for l in &left {
        out!("still held: {} (remove it with --remove-all only if that run is surely gone)", l.describe());
    }
    if removed.is_empty() && left.is_empty() {
        out!("no locks");
    }
    Ok(())
}

pub async fn export(ctx: &Ctx, backup: String, to: std::path::PathBuf) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, &backup, None)?;
    let progress = speechvault::support::progress::Progress::default();
    let report = crate::vault_cmd::with_progress(
        &progress,
        ctx.json,
        speechvault::ops::export::export(repo, &set, &to, &progress),
    )
    .await?;
    if ctx.json {
        return crate::output::json(&report);
    }
    out!("exported backup {} of {} into {}", report.backup_id, report.installation, to.display());
    for (db, f) in &report.databases {
        out!("  database {db}: {f}");
    }
    out!("  {} objects under minio/", report.objects.len() - report.escaped);
    if report.escaped > 0 {
        out!(
            "  {} objects whose keys cannot be file names are under escaped/ (see {}: key, content type, metadata of every object)",
            report.escaped,
            speechvault::ops::export::REPORT
        );
    }
    Ok(())
}

pub async fn import(
    ctx: &Ctx,
    dir: std::path::PathBuf,
    installation: String,
    scratch: Option<String>,
) -> Result<(), Failure> {
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let profile = ctx.cfg.profile()?;
    let scratch = match scratch {
        Some(s) => Some(crate::vault_cmd::installation(&ctx.cfg, &s)?.postgres),
        None => None,
    };
    let opts = speechvault::ops::import::ImportOptions { dir, installation, scratch };
    let progress = speechvault::support::progress::Progress::default();
    let report = crate::vault_cmd::with_progress(
        &progress,
        ctx.json,
        speechvault::ops::import::import(repo, &profile, &opts, &progress, &ctx.stop),
    )
    .await?;
    if ctx.json {
        return crate::output::json(&report);
    }
    out!(
        "imported {} as backup {} of {} in {:.1}s",
        opts.dir.display(),
        report.backup_id,
        report.installation,
        report.seconds
    );
    for (db, d) in &report.databases {
        out!("  database {db}: {} tables, {} rows", d.tables, d.rows);
    }
    for (b, s) in &report.buckets {
        out!("  bucket {b}: {} objects, {}", s.objects, human_bytes(s.bytes));
    }
    if report.statements_dropped > 0 {
        out!(
            "  {} OWNER TO / GRANT statements for roles the scratch server lacks were left out",
            report.statements_dropped
        );
    }
    Ok(())
}
