//! What wraps a scheduled run: the pre-hook, the operation, the post-hook (always, told the
//! outcome), then the run's metrics (a textfile and/or a Pushgateway push).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use speechvault::observe::hooks::{self, HookCommand, Outcome};
use speechvault::observe::metrics::{RunMetrics, Sample};

use crate::output::Failure;
use crate::vault_cmd::{Ctx, blocking, parse_duration};

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

/// What an operation tells the wrapper about its run, for the post-hook and the metrics.
#[derive(Debug, Default)]
pub struct Recorded {
    pub samples: Vec<Sample>,
    pub backup_id: Option<String>,
}

impl Ctx {
    /// Records the run's figures (called by the operation when it has them).
    pub fn record(&self, samples: Vec<Sample>, backup_id: Option<String>) {
        if let Ok(mut r) = self.recorded.lock() {
            r.samples.extend(samples);
            if backup_id.is_some() {
                r.backup_id = backup_id;
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
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    // Settings that cannot work are bad input, found before anything runs.
    if let Some(url) = &args.pushgateway {
        speechvault::observe::metrics::check_url(url)?;
    }
    if let Some(path) = &args.metrics_file {
        speechvault::observe::metrics::check_file(path)
            .map_err(|e| Failure::new(speechvault::error::ErrorKind::BadInput, anyhow::anyhow!("{e}")))?;
    }
    let started = speechvault::observe::metrics::now();
    let clock = Instant::now();
    let settings = &ctx.cfg.file.hooks;
    let pre = args.pre_hook.clone().map(HookCommand::Shell).or_else(|| settings.pre.clone());
    let post = args.post_hook.clone().map(HookCommand::Shell).or_else(|| settings.post.clone());
    let timeout =
        args.hook_timeout.or_else(|| settings.timeout_secs.map(Duration::from_secs)).unwrap_or(hooks::DEFAULT_TIMEOUT);

    let mut result = match &pre {
        Some(hook) => match hooks::run("pre", hook, timeout, operation, installation, None).await {
            Ok(()) => work.await,
            Err(e) => Err(Failure::from(e)),
        },
        None => work.await,
    };
    let recorded = ctx.recorded.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();

    if let Some(hook) = &post {
        let outcome = outcome_of(&result, recorded.backup_id.clone());
        if let Err(e) = hooks::run("post", hook, timeout, operation, installation, Some(&outcome)).await {
            match &result {
                Ok(()) => {
                    let what = recorded.backup_id.as_deref().map(|id| format!(" (backup {id})")).unwrap_or_default();
                    let mut f = Failure::from(e);
                    f.error = anyhow::anyhow!(
                        "the {operation} itself succeeded{what}, then {}",
                        speechvault::support::text::one_line(&f.error.to_string())
                    );
                    // The operation's --json document is out already.
                    result = Err(if ctx.json { f.already_reported() } else { f });
                }
                Err(_) => eprintln!("error: {}", speechvault::support::text::one_line(&e.to_string())),
            }
        }
    }

    if args.metrics_file.is_some() || args.pushgateway.is_some() {
        let outcome = outcome_of(&result, None);
        let last_success = last_success(ctx, operation, installation, outcome.success, started).await;
        let run = RunMetrics {
            installation: installation.to_string(),
            operation: operation.to_string(),
            started,
            duration_seconds: clock.elapsed().as_secs_f64(),
            success: outcome.success,
            exit_code: outcome.exit_code,
            last_success,
            samples: if outcome.success { recorded.samples } else { Vec::new() },
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
            match &result {
                Ok(()) => {
                    let f = Failure::new(
                        speechvault::error::ErrorKind::Failed,
                        anyhow::anyhow!(
                            "the {operation} itself succeeded, but its metrics were not recorded: {message}"
                        ),
                    );
                    result = Err(if ctx.json { f.already_reported() } else { f });
                }
                Err(_) => eprintln!("error: {message}"),
            }
        }
    }
    result
}

fn outcome_of(result: &Result<(), Failure>, backup_id: Option<String>) -> Outcome {
    match result {
        Ok(()) => Outcome { success: true, exit_code: 0, error: None, backup_id },
        Err(f) => Outcome {
            success: false,
            exit_code: f.kind.exit_code(),
            error: Some(speechvault::support::text::one_line(&f.error.to_string())),
            backup_id,
        },
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
    let repo = ctx.repo().await.ok()?;
    let sets = blocking(move || speechvault::model::catalog::backup_sets(&repo)).await.ok()?.ok()?;
    sets.iter()
        .filter(|s| s.complete() && s.installation == installation)
        .filter_map(|s| s.unix_time())
        .max_by(f64::total_cmp)
}
