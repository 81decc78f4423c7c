//! `speechvault backup`: an installation into the repository.

use std::time::Duration;

use speechvault::Error;
use speechvault::ops::backup::{self, BackupOptions};
use speechvault::ops::retention;
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;
use crate::settings::{RetentionFlags, SourceLimits, parse_duration};

/// Back up an installation: databases first, then buckets, then the manifest.
///
/// Detects the installed components (or takes --components), dumps each database with
/// pg_dump from one consistent snapshot (row counts and content digests are read in that
/// same snapshot) and streams every object into the repository with its key, size, ETag,
/// content type, user metadata and SHA-256. Objects deleted while the backup runs are
/// recorded as vanished; objects changed meanwhile are read as they are now. If anything
/// fails, no complete-looking backup is left.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    pub wait_for_async_jobs: Option<Duration>,
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

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let mut inst = ctx.installation(&args.from)?;
    let limits = SourceLimits {
        read_rate: args.limit_rate,
        max_requests: args.max_requests,
        pg_connections: args.pg_connections,
    };
    let pg_connections = crate::settings::apply_source_limits(&mut inst, &limits);
    let profile = ctx.profile()?;
    let policy = crate::settings::retention(&ctx.cfg, &inst.name, &RetentionFlags::default())?;
    let repo = ctx.repository().await?;
    let lock = ctx.lock(&repo, false).await?;
    let mut opts = BackupOptions {
        components: (!args.components.is_empty()).then_some(args.components),
        wait_for_async_jobs: args.wait_for_async_jobs,
        full: args.full,
        anomalies: ctx.cfg.anomalies(&inst.name)?,
        keep: crate::settings::keep_policy(&ctx.cfg),
        ..Default::default()
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    if let Some(n) = pg_connections {
        opts.pg_connections = n;
    }
    let progress = Progress::default();
    let report =
        ctx.with_progress(&progress, backup::run(repo.clone(), &inst, &profile, &opts, &progress, &ctx.stop)).await?;
    drop(lock);
    // One command serves a scheduled job: with retention.after_backup, forget and prune now,
    // through the maintenance keys when there are some. An immutable repository's backup key
    // is meant to be unable to delete: without maintenance keys the retention waits for the
    // maintenance job.
    let maintenance = ctx.has_maintenance_keys()?;
    let skip = policy.after_backup && policy.has_rules() && repo.immutability().is_some() && !maintenance;
    let mut report = report;
    if skip {
        let w = "retention.after_backup: skipped, the repository is immutable and has no s3.maintenance_* keys; the maintenance job (speechvault forget --prune) applies it";
        tracing::warn!("{w}");
        report.warnings.push(w.to_string());
    }
    let repo = if policy.after_backup && policy.has_rules() && maintenance {
        ctx.maintenance_repository().await?
    } else {
        repo
    };
    let retention = if policy.after_backup && policy.has_rules() && !skip {
        let request = retention::Request {
            installations: vec![inst.name.clone()],
            prune: true,
            max_unused: None,
            dry_run: false,
            lock_wait: ctx.lock_wait,
            ignore_damaged: false,
        };
        match blocking(move || retention::apply(&repo, &request, |_| Ok(policy.clone()))).await? {
            Ok(r) => Some(r),
            // The backup is whole; only the retention after it could not decide.
            Err(e) if e.kind() == speechvault::ErrorKind::Differences => {
                let w = format!("retention.after_backup: skipped: {e}");
                tracing::warn!("{w}");
                report.warnings.push(w);
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Outcome::Backup { report, retention })
}
