//! `speechvault forget`: remove backups by retention rules.

use speechvault::Error;
use speechvault::ops::retention;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;
use crate::settings::RetentionFlags;

/// Remove backups by retention rules (per installation, whole backups only), and
/// incomplete backups older than a grace period.
///
/// Rules come from the config ([retention], [installations.NAME.retention]) unless given
/// here. --dry-run shows what would go and why each kept backup stays.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[arg(long, requires = "prune")]
    pub max_unused: Option<String>,
    /// Show what would go and why each kept backup stays; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// When snapshot files are damaged, decide from the backups that read (and leave the
    /// damaged files alone) instead of refusing. Prune still refuses: run `repair snapshots`.
    #[arg(long)]
    pub ignore_damaged: bool,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.maintenance_repository().await?;
    let flags = RetentionFlags {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within,
        incomplete_grace: args.incomplete_grace,
    };
    let request = retention::Request {
        installations: args.installation,
        prune: args.prune,
        max_unused: args.max_unused,
        dry_run: args.dry_run,
        lock_wait: ctx.lock_wait,
        ignore_damaged: args.ignore_damaged,
    };
    let cfg = ctx.cfg.clone();
    let outcome =
        blocking(move || retention::apply(&repo, &request, |name| crate::settings::retention(&cfg, name, &flags)))
            .await??;
    Ok(Outcome::Forget(outcome))
}
