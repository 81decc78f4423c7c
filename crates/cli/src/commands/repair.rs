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
    /// Set aside snapshot files that cannot be read or authenticated.
    ///
    /// Each is moved under `damaged/snapshots/` (a directory restic ignores), never deleted:
    /// the backups they belonged to show as DAMAGED or INCOMPLETE in `snapshots`, and
    /// `forget` and `prune` can decide again. Exits 0 with a report.
    Snapshots(VersionsArgs),
    /// Rebuild the index from the packs, as restic's `repair index` does.
    ///
    /// Index files that cannot be read are moved under `damaged/index/`; every pack no
    /// index names has its header read and is indexed again. A pack whose header is damaged
    /// stays out (the report names it; `check` names the backups that need it).
    Index(VersionsArgs),
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
        Command::Snapshots(args) => {
            let repo = ctx.repository().await?;
            let _lock = ctx.lock(&repo, !args.dry_run).await?;
            let report = blocking(move || repo.repair_snapshots(args.dry_run)).await??;
            Ok(Outcome::Repaired { what: "snapshots", report })
        }
        Command::Index(args) => {
            let repo = ctx.repository().await?;
            let _lock = ctx.lock(&repo, !args.dry_run).await?;
            let report = blocking(move || repo.repair_index(args.dry_run)).await??;
            Ok(Outcome::Repaired { what: "index", report })
        }
    }
}
