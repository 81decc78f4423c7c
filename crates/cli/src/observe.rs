//! What wraps a scheduled run: the pre-hook, the operation, the post-hook (always, told the
//! outcome), then the run's metrics (a textfile and/or a Pushgateway push). Both read the
//! run's [`Outcome`]: its figures and the backup it made or used.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use speechvault::Error;
use speechvault::model::catalog;
use speechvault::observe::hooks::{self, Outcome as HookOutcome};
use speechvault::observe::metrics::{RunMetrics, Sample};
use speechvault::ops::verify::VerifyReport;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;
use crate::settings::parse_duration;

/// Hooks and metrics of backup, restore, verify, forget and check.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Write this run's metrics to FILE, atomically, in Prometheus' text format (for
    /// node-exporter's textfile collector). Use one file per operation.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push this run's metrics to a Prometheus Pushgateway (e.g. http://pushgateway:9091),
    /// grouped by job="speechvault", installation and operation.
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Run CMD (by `sh -c`) before the operation; when it fails or times out, the operation
    /// does not run (exit 1). Replaces the config's hooks.pre.
    #[arg(long, value_name = "CMD")]
    pub pre_hook: Option<String>,
    /// Run CMD (by `sh -c`) after the operation, whatever happened (also after a failed
    /// pre-hook), with SPEECHVAULT_OUTCOME=success|failure, SPEECHVAULT_EXIT_CODE,
    /// SPEECHVAULT_ERROR and SPEECHVAULT_BACKUP_ID in its environment. Replaces hooks.post.
    #[arg(long, value_name = "CMD")]
    pub post_hook: Option<String>,
    /// Time limit of each hook (e.g. 90s, 10m); a hook still running then is killed with
    /// everything it started. Default: the config's hooks.timeout_secs, else 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hook_timeout: Option<Duration>,
}

/// How a command ended: what it produced (if it got that far) and how it failed (if it did).
/// A report can come with an error: verification that found differences, a failed post-hook.
pub struct Finished {
    pub outcome: Option<Outcome>,
    pub error: Option<Error>,
}

impl From<Result<Outcome, Error>> for Finished {
    fn from(result: Result<Outcome, Error>) -> Self {
        match result {
            Ok(outcome) => {
                let error = outcome.verdict();
                Self { outcome: Some(outcome), error }
            }
            Err(e) => Self { outcome: None, error: Some(e) },
        }
    }
}

impl Finished {
    /// Adds a failure that came after the operation (a hook, the metrics): it becomes the
    /// run's error when there was none; otherwise it is printed and the first one stays.
    fn also_failed(&mut self, e: Error) {
        match &self.error {
            None => self.error = Some(e),
            Some(_) => {
                let _ = writeln!(std::io::stderr(), "error: {}", e.message());
            }
        }
    }
}

/// Runs `work` between the hooks and records its metrics. `installation` labels the metrics
/// (for forget and check, which work on the repository, the repository's name).
pub async fn observed(
    ctx: &Ctx,
    operation: &str,
    installation: &str,
    args: &RunArgs,
    work: impl std::future::Future<Output = Result<Outcome, Error>>,
) -> Finished {
    // Settings that cannot work are bad input, found before anything runs.
    if let Some(url) = &args.pushgateway
        && let Err(e) = speechvault::observe::metrics::check_url(url)
    {
        return Finished { outcome: None, error: Some(e.into()) };
    }
    if let Some(path) = &args.metrics_file
        && let Err(e) = speechvault::observe::metrics::check_file(path)
    {
        return Finished { outcome: None, error: Some(Error::bad_input(e)) };
    }
    let started = speechvault::observe::metrics::now();
    let clock = Instant::now();
    let hooks = crate::settings::hooks(
        &ctx.cfg.file.hooks,
        args.pre_hook.as_deref(),
        args.post_hook.as_deref(),
        args.hook_timeout,
    );

    let mut finished: Finished = match &hooks.pre {
        Some(hook) => match hooks::run("pre", hook, hooks.timeout, operation, installation, None).await {
            Ok(()) => work.await.into(),
            Err(e) => Finished { outcome: None, error: Some(e.into()) },
        },
        None => work.await.into(),
    };
    let backup_id = finished.outcome.as_ref().and_then(Outcome::backup_id);

    if let Some(hook) = &hooks.post {
        let told = hook_outcome(&finished, backup_id.clone());
        if let Err(e) = hooks::run("post", hook, hooks.timeout, operation, installation, Some(&told)).await {
            let e = Error::from(e);
            let e = if finished.error.is_none() {
                let what = backup_id.as_deref().map(|id| format!(" (backup {id})")).unwrap_or_default();
                let message = format!("the {operation} itself succeeded{what}, then {}", e.message());
                Error::new(e.kind(), message)
            } else {
                e
            };
            finished.also_failed(e);
        }
    }

    if args.metrics_file.is_some() || args.pushgateway.is_some() {
        let told = hook_outcome(&finished, None);
        let last_success = last_success(ctx, operation, installation, told.success, started).await;
        let run = RunMetrics {
            installation: installation.to_string(),
            operation: operation.to_string(),
            started,
            duration_seconds: clock.elapsed().as_secs_f64(),
            success: told.success,
            exit_code: told.exit_code,
            last_success,
            // A report's figures count even when it ends in a failure (differences, damage):
            // they are what the alerts on differences and damage look at.
            samples: finished.outcome.as_ref().map(samples).unwrap_or_default(),
        };
        let mut problems = Vec::new();
        if let Some(path) = &args.metrics_file
            && let Err(e) = run.write_file(path)
        {
            problems.push(e.to_string());
        }
        if let Some(url) = &args.pushgateway
            && let Err(e) = run.push(url).await
        {
            problems.push(e.to_string());
        }
        if !problems.is_empty() {
            let message = problems.join("; ");
            let message = if finished.error.is_none() {
                format!("the {operation} itself succeeded, but its metrics were not recorded: {message}")
            } else {
                message
            };
            finished.also_failed(Error::failed(message));
        }
    }
    finished
}

fn hook_outcome(finished: &Finished, backup_id: Option<String>) -> HookOutcome {
    match &finished.error {
        None => HookOutcome { success: true, exit_code: 0, error: None, backup_id },
        Some(e) => HookOutcome { success: false, exit_code: e.exit_code(), error: Some(e.message()), backup_id },
    }
}

/// The last success: for a backup, the start of the installation's latest complete backup
/// in the repository (what the backup-age alert must see, whatever this run did); for the
/// other operations, now when this run succeeded. `None` when unknown: the earlier value is
/// kept (see [`speechvault::observe::metrics`]).
async fn last_success(ctx: &Ctx, operation: &str, installation: &str, success: bool, started: f64) -> Option<f64> {
    if operation != "backup" {
        return success.then_some(started);
    }
    let repo = ctx.repository().await.ok()?;
    let sets = blocking(move || catalog::backup_sets(&repo)).await.ok()?.ok()?;
    sets.iter()
        .filter(|s| s.complete() && s.installation == installation)
        .filter_map(|s| s.unix_time())
        .max_by(f64::total_cmp)
}

/// The figures of a run, as metrics.
fn samples(outcome: &Outcome) -> Vec<Sample> {
    match outcome {
        Outcome::Backup { report, .. } => backup_samples(report),
        Outcome::Drill(r) => {
            let mut samples = vec![
                Sample::new("speechvault_drill_rto_seconds", "The drill's recovery time, in total.", r.rto_seconds),
                Sample::new(
                    "speechvault_drill_rpo_seconds",
                    "The drilled backup's age when the drill ran.",
                    r.rpo_seconds,
                ),
                Sample::new(
                    "speechvault_drill_verification_differences",
                    "Differences the drill's verification found.",
                    r.verification.differences_count as f64,
                ),
                Sample::new(
                    "speechvault_drill_passed",
                    "1 when the drill verified and met its objectives.",
                    f64::from(u8::from(r.passed)),
                ),
            ];
            for p in &r.phases {
                samples.push(
                    Sample::new("speechvault_drill_phase_seconds", "The drill's recovery time, per step.", p.seconds)
                        .label("phase", p.name.clone()),
                );
            }
            samples.push(Sample::new(
                "speechvault_drill_objectives_missed",
                "Recovery objectives the drill missed.",
                r.missed.len() as f64,
            ));
            if let Some(t) = r.last_passed_unix {
                samples.push(Sample::new(
                    "speechvault_drill_last_success_timestamp_seconds",
                    "When a drill of the installation last passed (Unix time; kept through failed drills).",
                    t,
                ));
            }
            samples
        }
        Outcome::Restore(report) => {
            let mut samples = vec![
                Sample::new(
                    "speechvault_written_objects",
                    "Objects the restore wrote into the target.",
                    report.buckets.values().map(|b| b.objects).sum::<u64>() as f64,
                ),
                Sample::new(
                    "speechvault_written_bytes",
                    "Bytes of the objects the restore wrote into the target.",
                    report.buckets.values().map(|b| b.bytes).sum::<u64>() as f64,
                ),
            ];
            if let Some(v) = &report.verify {
                samples.push(verification(v));
            }
            samples
        }
        Outcome::Selective(report) => vec![Sample::new(
            "speechvault_written_objects",
            "Objects the restore wrote into the target.",
            report
                .buckets
                .iter()
                .map(|b| b.write.len() + if report.replace { b.conflicts.len() } else { 0 })
                .sum::<usize>() as f64,
        )],
        Outcome::Verify(report) => vec![verification(report)],
        Outcome::Forget(o) => vec![
            Sample::new(
                "speechvault_forgotten_backups",
                "Backups the run removed by the retention rules.",
                o.removed.len() as f64,
            ),
            Sample::new(
                "speechvault_kept_backups",
                "Backups the retention rules keep.",
                o.sets.iter().filter(|s| s.keep).count() as f64,
            ),
        ],
        Outcome::Check(report) => vec![Sample::new(
            "speechvault_check_errors",
            "Errors the repository check found (damage).",
            report.errors.len() as f64,
        )],
        _ => Vec::new(),
    }
}

fn verification(v: &VerifyReport) -> Sample {
    Sample::new(
        "speechvault_verification_differences",
        "Tables and objects that differ from the backup (0 when verification passed).",
        v.differences() as f64,
    )
}

/// A backup's figures as metrics: read from the source, reused from the previous backup,
/// stored in the repository, and rows per database.
fn backup_samples(report: &speechvault::ops::backup::BackupReport) -> Vec<Sample> {
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
        Sample::new(
            "speechvault_backup_anomalies",
            "Measures over their thresholds: the backup looks like ransomware or mass deletion happened (0: none).",
            report.anomalies.len() as f64,
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
