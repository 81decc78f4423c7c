//! `speechvault repair`: put a repository back the way restic reads it.

use speechvault::Error;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Repair a repository.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make an attacked immutable repository readable by restic again.
    ///
    /// Every file's newest version becomes the one a backup wrote: delete markers and
    /// versions written over it are removed; where they are retained too, the backup's
    /// version is written again on top. So restic and rustic read the repository again. speechvault itself reads through them without this. Runs with the
    /// maintenance keys; exits 3 when a file has no version a backup wrote.
    Versions(VersionsArgs),
}

#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    /// Only say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(cmd: Command, ctx: &Ctx) -> Result<Outcome, Error> {
    match cmd {
        Command::Versions(args) => {
            let repo = ctx.maintenance_repository().await?;
            let _lock = ctx.lock(&repo, !args.dry_run).await?;
            let report = blocking(move || repo.repair_versions(args.dry_run)).await??;
            Ok(Outcome::VersionsRepaired(report))
        }
    }
}
