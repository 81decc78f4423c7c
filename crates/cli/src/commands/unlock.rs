//! `speechvault unlock`: remove stale locks.

use speechvault::Error;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Remove stale locks (of runs that are gone); with --remove-all every lock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove every lock, also those of runs that may still be alive.
    #[arg(long)]
    pub remove_all: bool,
    /// Only list the locks and which would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.maintenance_repository().await?;
    let r = repo.clone();
    if args.dry_run {
        let locks = blocking(move || r.locks()).await??;
        let would_remove = locks.iter().filter(|l| args.remove_all || l.stale.is_some()).cloned().collect();
        return Ok(Outcome::Locks { locks, would_remove });
    }
    let removed = blocking(move || r.unlock(args.remove_all)).await??;
    let left = blocking(move || repo.locks()).await??;
    Ok(Outcome::Unlocked { removed, left })
}
