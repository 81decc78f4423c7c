//! `speechvault prune`: free the space of removed backups.

use speechvault::Error;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Free the space of removed backups.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unused space to leave (e.g. 5%, 1GiB, unlimited).
    #[arg(long)]
    pub max_unused: Option<String>,
    /// Show what would be removed and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.maintenance_repository().await?;
    let _lock = ctx.lock(&repo, !args.dry_run).await?;
    let summary = blocking(move || repo.prune(args.max_unused.as_deref(), args.dry_run)).await??;
    Ok(Outcome::Prune(summary))
}
