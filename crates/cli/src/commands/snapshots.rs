//! `speechvault snapshots`: the backups in the repository.

use speechvault::Error;
use speechvault::model::catalog;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// List backups (complete and incomplete) in the repository.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only backups of this installation.
    #[arg(long)]
    pub installation: Option<String>,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    let found = blocking(move || catalog::scan(&repo)).await??;
    let backups = found
        .sets
        .iter()
        .filter(|s| args.installation.as_ref().is_none_or(|i| &s.installation == i))
        .map(|s| s.view())
        .collect();
    Ok(Outcome::Snapshots { backups, damaged: found.damaged })
}
