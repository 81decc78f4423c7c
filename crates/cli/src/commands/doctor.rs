//! `speechvault doctor`: would a backup of this installation run now?

use speechvault::Error;

use crate::context::Ctx;
use crate::outcome::Outcome;

/// Pre-flight check: would a backup of this installation run now?
///
/// Reaches the object store and PostgreSQL with the configured TLS, finds the installed
/// components, checks the pg_dump/pg_restore versions against the server, measures every
/// bucket and database, opens the repository (free space, keys) and estimates the next
/// backup from the last one. Each check is marked ✔, ! (works, but act) or ✘ with the fix.
/// Exit status 0 when a backup would run, 1 when a check failed, 2 for a bad config.
/// Nothing is written.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Installation to check (config name, or sandbox:NAME).
    #[arg(long)]
    pub installation: String,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let inst = ctx.installation(&args.installation)?;
    let profile = ctx.profile()?;
    let settings = ctx.cfg.named_repository(ctx.repository_name.as_deref()).map_err(|e| e.to_string());
    let report = speechvault::ops::doctor::run(&inst, &profile, settings.as_ref().map_err(Clone::clone)).await;
    Ok(Outcome::Doctor(report))
}
