//! `speechvault copy`: backups into another repository.

use speechvault::Error;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Copy backups into another repository (3-2-1), re-encrypted under its key.
///
/// Whole backup sets, manifest last; sets the target already holds are skipped.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup to copy (an id, a unique prefix, or `latest`); or --all.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub backup: Option<String>,
    /// Copy every complete backup the target does not have yet.
    #[arg(long)]
    pub all: bool,
    /// The target: a name from the config's [repositories.NAME].
    #[arg(long, value_name = "NAME")]
    pub to_repository: String,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let src = ctx.repository().await?;
    let dst = ctx.open_repository(Some(&args.to_repository)).await?;
    let _l1 = ctx.lock(&src, false).await?;
    let _l2 = ctx.lock(&dst, false).await?;
    let (selector, keep) = (args.backup, crate::settings::keep_policy(&ctx.cfg));
    let report = blocking(move || speechvault::ops::copy::copy_sets(&src, &dst, selector.as_deref(), &keep)).await??;
    Ok(Outcome::Copy(report))
}
