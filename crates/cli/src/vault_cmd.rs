//! The backup commands: init, backup, snapshots, transfer-ownership, and what they share.
//! Restore and verify live in [`crate::restore_cmd`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use speechvault::model::catalog;
use speechvault::model::config::{Config, Installation};
use speechvault::model::instance::InstanceId;
use speechvault::ops::backup::{self, BackupOptions};
use speechvault::repository::Repository;
use speechvault::support::interrupt::Stop;
use speechvault::support::progress::Progress;

pub use crate::restore_cmd::{RestoreArgs, VerifyArgs, restore, verify_cmd};

use crate::output::{Failure, out};

/// Parses `90s`, `30m`, `2h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: use e.g. 90s, 30m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?}: use e.g. 90s, 30m or 2h")),
    };
    Ok(Duration::from_secs(secs))
}

pub fn parse_instance(s: &str) -> Result<InstanceId, Failure> {
    InstanceId::parse(s).map_err(Failure::from)
}

/// Loads the config: `-c`, else `$SPEECHVAULT_CONFIG`, else `./speechvault.toml` if present,
/// else an empty one (environment only).
pub fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    let path =
        path.map(PathBuf::from).or_else(|| std::env::var_os("SPEECHVAULT_CONFIG").map(PathBuf::from)).or_else(|| {
            let p = PathBuf::from("speechvault.toml");
            p.is_file().then_some(p)
        });
    match path {
        Some(p) => Ok(Config::load(&p)?),
        None => Ok(Config::default()),
    }
}

/// `sandbox:NAME` names a local sandbox; anything else an installation of the config.
pub fn installation(cfg: &Config, spec: &str) -> Result<Installation, Failure> {
    if let Some(name) = spec.strip_prefix("sandbox:") {
        #[cfg(feature = "sandbox")]
        {
            let info = speechvault_sandbox::load(name)?;
            return Ok(info.installation()?);
        }
        #[cfg(not(feature = "sandbox"))]
        return Err(Failure::bad_input(format!(
            "sandbox:{name}: this build has no sandbox (it is a development feature); name an installation of the config"
        )));
    }
    Ok(cfg.installation(spec)?)
}

/// Draws a progress line on stderr while `work` runs, when stderr is a terminal.
pub async fn with_progress<T>(progress: &Progress, quiet: bool, work: impl std::future::Future<Output = T>) -> T {
    if quiet || !std::io::stderr().is_terminal() {
        return work.await;
    }
    let p = progress.clone();
    let drawer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let v = p.view();
            let mut line = v.phase.clone();
            if v.bytes_total > 0 {
                line.push_str(&format!(
                    ": {} / {} ({:.0}%)",
                    human_bytes(v.bytes_done),
                    human_bytes(v.bytes_total),
                    100.0 * v.bytes_done as f64 / v.bytes_total as f64
                ));
            }
            if v.items_total > 0 {
                line.push_str(&format!(", {} / {} objects", v.items_done, v.items_total));
            }
            eprint!("\r\x1b[2K{line}");
        }
    });
    let out = work.await;
    drawer.abort();
    eprint!("\r\x1b[2K");
    out
}

pub use speechvault::support::units::human_bytes;

/// What every repository command works with: the config, the output mode, which repository
/// (`--repository`), how long to wait for a lock, and the stop flag.
pub struct Ctx {
    pub cfg: Config,
    pub json: bool,
    pub repository: Option<String>,
    pub lock_wait: Duration,
    pub stop: Stop,
    /// The running operation's figures, for hooks and metrics.
    pub recorded: std::sync::Mutex<crate::observe::Recorded>,
}

impl Ctx {
    /// Opens the repository chosen with `--repository` (default `[repository]`).
    pub async fn repo(&self) -> Result<Arc<Repository>, Failure> {
        open_repository_named(&self.cfg, self.repository.as_deref()).await
    }

    /// Takes the repository's lock (shared, or exclusive for forget and prune).
    pub async fn lock(
        &self,
        repo: &Arc<Repository>,
        exclusive: bool,
    ) -> Result<speechvault::repository::lock::RepoLock, Failure> {
        let (v, wait) = (repo.clone(), self.lock_wait);
        Ok(blocking(move || v.lock(exclusive, wait)).await??)
    }
}

pub async fn open_repository_named(cfg: &Config, name: Option<&str>) -> Result<Arc<Repository>, Failure> {
    let settings = cfg.named_repository(name)?;
    Ok(Arc::new(blocking(move || Repository::open(&settings.location, &settings.password)).await??))
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

pub async fn init(ctx: &Ctx, copy_chunker_params: bool) -> Result<(), Failure> {
    let settings = ctx.cfg.named_repository(ctx.repository.as_deref())?;
    let location = settings.location.clone();
    let chunker_from = if copy_chunker_params {
        if ctx.repository.is_none() {
            return Err(Failure::bad_input(
                "--copy-chunker-params takes them from the default repository into the one named with --repository",
            ));
        }
        Some(open_repository_named(&ctx.cfg, None).await?)
    } else {
        None
    };
    blocking(move || Repository::init(&settings.location, &settings.password, chunker_from.as_deref())).await??;
    if ctx.json {
        crate::output::json(&serde_json::json!({ "initialized": location.describe() }))?;
    } else {
        match &location {
            speechvault::repository::Location::Local(_) => {
                out!("created repository {location} (restic format; private to its owner)")
            }
            speechvault::repository::Location::S3(_) => out!("created repository {location} (restic format)"),
        };
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Installation to back up (config name, or sandbox:NAME).
    #[arg(long)]
    pub from: String,
    /// Components to back up (comma-separated): sttCustomization, ttsCustomization,
    /// sttAsync, baseModels. Default: all installed ones.
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Before dumping, wait until no asynchronous job is waiting or processing (backoff,
    /// up to TIMEOUT, default 30m).
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "30m", value_parser = parse_duration)]
    pub wait_for_async_jobs: Option<std::time::Duration>,
    /// Objects read ahead in each bucket (default: 64; GETs wait on the server, not the CPU).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Read every object again, instead of reusing the previous backup's copy of objects
    /// that are unchanged (same key, size, ETag and last-modified).
    #[arg(long)]
    pub full: bool,
    /// Read objects at this rate at most, all together (e.g. 50MiB/s): the source keeps
    /// serving its users. Default: unlimited, or the installation's s3.limit_rate.
    #[arg(long, value_name = "RATE", value_parser = speechvault::support::units::parse_rate)]
    pub limit_rate: Option<u64>,
    /// Requests to the source's object store in flight at most (default: --parallel, or the
    /// installation's s3.max_requests).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<usize>,
    /// PostgreSQL connections open at once at most, speechvault's and pg_dump's (default 4,
    /// or the installation's postgres.max_connections). With fewer than one per database
    /// plus one, databases are dumped one at a time before the buckets.
    #[arg(long, value_name = "N")]
    pub pg_connections: Option<usize>,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn backup(ctx: &Ctx, args: BackupArgs) -> Result<(), Failure> {
    let (cfg, json, stop) = (&ctx.cfg, ctx.json, &ctx.stop);
    let mut inst = installation(cfg, &args.from)?;
    if let Some(rate) = args.limit_rate {
        inst.s3.limits.read_rate = Some(rate);
    }
    if let Some(n) = args.max_requests {
        inst.s3.limits.max_requests = Some(n.max(1));
    }
    let profile = cfg.profile()?;
    let retention = cfg.retention(&inst.name)?;
    let repo = ctx.repo().await?;
    let lock = ctx.lock(&repo, false).await?;
    let mut opts = BackupOptions {
        components: (!args.components.is_empty()).then_some(args.components),
        wait_for_async_jobs: args.wait_for_async_jobs,
        full: args.full,
        ..Default::default()
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    if let Some(n) = args.pg_connections.or(inst.pg_connections) {
        opts.pg_connections = n.max(2);
    }
    let progress = Progress::default();
    let report =
        with_progress(&progress, json, backup::run(repo.clone(), &inst, &profile, &opts, &progress, stop)).await?;
    drop(lock);
    ctx.record(backup_samples(&report), Some(report.backup_id.clone()));
    // One command serves a scheduled job: with retention.after_backup, forget and prune now.
    let applied = if retention.after_backup && retention.has_rules() {
        Some(crate::repo_cmd::apply_retention(ctx, &repo, std::slice::from_ref(&inst.name), true, false).await?)
    } else {
        None
    };
    if json {
        let mut doc = serde_json::to_value(&report)?;
        if let Some(a) = &applied {
            doc["retention"] = serde_json::to_value(a)?;
        }
        return crate::output::json(&doc);
    }
    out!("backup {} of {} complete in {:.1}s", report.backup_id, report.installation, report.seconds);
    for (db, d) in &report.databases {
        out!("  database {db}: {} tables, {} rows, dump {}", d.tables, d.rows, human_bytes(d.dump_bytes));
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
        out!("  bucket {b}: {} objects, {}{extra}", s.objects, human_bytes(s.bytes));
    }
    out!("  service instances owning rows: {}", report.instance_ids.join(", "));
    for w in &report.warnings {
        out!("  warning: {w}");
    }
    if let Some(a) = &applied {
        crate::repo_cmd::print_retention(a);
    }
    Ok(())
}

/// A backup's figures as metrics: read from the source, reused from the previous backup,
/// stored in the repository, and rows per database.
fn backup_samples(report: &backup::BackupReport) -> Vec<speechvault::observe::metrics::Sample> {
    use speechvault::observe::metrics::Sample;
    let objects: u64 = report.buckets.values().map(|b| b.objects).sum();
    let bytes: u64 = report.buckets.values().map(|b| b.bytes).sum();
    let reused: u64 = report.buckets.values().map(|b| b.unchanged).sum();
    let reused_bytes: u64 = report.buckets.values().map(|b| b.unchanged_bytes).sum();
    let dumps: u64 = report.databases.values().map(|d| d.dump_bytes).sum();
    let mut samples = vec![
        Sample::new("speechvault_backup_objects", "Objects in the backup.", objects as f64),
        Sample::new(
            "speechvault_backup_bytes",
            "Bytes of objects and database dumps in the backup.",
            (bytes + dumps) as f64,
        ),
        Sample::new(
            "speechvault_read_objects",
            "Objects read from the object store (not reused from the previous backup).",
            objects.saturating_sub(reused) as f64,
        ),
        Sample::new(
            "speechvault_read_bytes",
            "Bytes read from the object store and PostgreSQL (objects not reused, and the dumps).",
            (bytes.saturating_sub(reused_bytes) + dumps) as f64,
        ),
        Sample::new(
            "speechvault_reused_objects",
            "Objects unchanged since the previous backup, not read again.",
            reused as f64,
        ),
        Sample::new(
            "speechvault_reused_bytes",
            "Bytes of the objects reused from the previous backup.",
            reused_bytes as f64,
        ),
        Sample::new(
            "speechvault_stored_bytes",
            "Bytes the run added to the repository (after deduplication and compression).",
            report.stored_bytes as f64,
        ),
        Sample::new(
            "speechvault_warnings",
            "Warnings of the run (e.g. objects deleted while it ran).",
            report.warnings.len() as f64,
        ),
    ];
    for (db, d) in &report.databases {
        samples.push(
            Sample::new("speechvault_database_rows", "Rows of each database in the backup.", d.rows as f64)
                .label("database", db.clone()),
        );
    }
    samples
}

pub async fn doctor(ctx: &Ctx, spec: &str) -> Result<(), Failure> {
    let inst = installation(&ctx.cfg, spec)?;
    let profile = ctx.cfg.profile()?;
    let settings = ctx.cfg.named_repository(ctx.repository.as_deref()).map_err(|e| e.to_string());
    let report = speechvault::ops::doctor::run(&inst, &profile, settings.as_ref().map_err(Clone::clone)).await;
    if ctx.json {
        crate::output::json(&report)?;
    } else {
        use speechvault::ops::doctor::Status;
        out!("doctor: installation {}", report.installation);
        for c in &report.checks {
            let mark = match c.status {
                Status::Ok => "✔",
                Status::Warn => "!",
                Status::Fail => "✘",
            };
            out!("  {mark} {}: {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                out!("      fix: {fix}");
            }
        }
        out!("{}", if report.ok { "a backup would run" } else { "a backup would fail: fix the ✘ checks above" });
    }
    if !report.ok {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.status == speechvault::ops::doctor::Status::Fail)
            .map(|c| c.name.clone())
            .collect();
        let f = Failure::new(
            speechvault::error::ErrorKind::Failed,
            anyhow::anyhow!("{} check(s) failed: {}", failed.len(), failed.join(", ")),
        );
        return Err(if ctx.json { f.already_reported() } else { f });
    }
    Ok(())
}

pub async fn snapshots(ctx: &Ctx, installation: Option<String>) -> Result<(), Failure> {
    let json = ctx.json;
    let repo = ctx.repo().await?;
    let sets = blocking(move || catalog::backup_sets(&repo)).await??;
    let views: Vec<_> =
        sets.iter().filter(|s| installation.as_ref().is_none_or(|i| &s.installation == i)).map(|s| s.view()).collect();
    if json {
        return crate::output::json(&serde_json::json!({ "backups": views }));
    }
    if views.is_empty() {
        out!("no backups");
        return Ok(());
    }
    out!("{:<24} {:<16} {:<20} {:<10} PARTS", "BACKUP", "INSTALLATION", "TIME (UTC)", "STATE");
    for v in views {
        let time: String = v.time.chars().take(19).map(|c| if c == 'T' { ' ' } else { c }).collect();
        if !out!(
            "{:<24} {:<16} {:<20} {:<10} {}",
            v.backup_id,
            v.installation,
            time,
            if v.complete { "complete" } else { "INCOMPLETE" },
            v.parts.join(" ")
        ) {
            break;
        }
    }
    Ok(())
}

pub fn print_ownership(outcomes: &[speechvault::ops::ownership::RuleOutcome]) {
    if outcomes.is_empty() {
        return;
    }
    out!("ownership:");
    for o in outcomes {
        match (&o.column, &o.skipped) {
            (Some(c), _) => out!("  {}: {}.{c}: {} rows moved, {} left", o.database, o.table, o.rows, o.left),
            (None, Some(why)) => out!("  {}: {}: skipped ({why})", o.database, o.table),
            (None, None) => true,
        };
    }
}

pub async fn transfer_ownership(ctx: &Ctx, on: String, from: String, to: String, dry_run: bool) -> Result<(), Failure> {
    let (cfg, json) = (&ctx.cfg, ctx.json);
    let from = parse_instance(&from)?;
    let to = parse_instance(&to)?;
    let inst = installation(cfg, &on)?;
    let profile = cfg.profile()?;
    let store = speechvault::objstore::ObjectStore::new(inst.s3.clone())?;
    let inv = speechvault::model::inventory::take(&inst, &profile, &store).await?;
    let dbs: Vec<String> = inv.databases.into_iter().collect();
    let outcomes = speechvault::ops::ownership::transfer(&inst, &profile, &dbs, &from, &to, dry_run, None).await?;
    if outcomes.iter().all(|o| o.rows == 0) {
        // A transfer that moves nothing is almost always a wrong id: say so, do not succeed.
        return Err(Failure::bad_input(format!(
            "no row of any ownership rule on {} holds service instance {from}; nothing was changed (check --from-instance)",
            inst.name
        )));
    }
    if json {
        return crate::output::json(
            &serde_json::json!({ "installation": inst.name, "from": from, "to": to, "dry_run": dry_run, "rules": outcomes }),
        );
    }
    out!("{} ownership on {} from {from} to {to}", if dry_run { "would move" } else { "moved" }, inst.name);
    print_ownership(&outcomes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
