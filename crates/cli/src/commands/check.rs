//! `speechvault check`: the repository's integrity.

use speechvault::Error;
use speechvault::repository::maintenance::ReadSubset;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Check the repository's structure; with --read-data read and authenticate every byte.
///
/// Damage is reported with the backups, databases and objects it affects; exit status 3.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read and authenticate all data.
    #[arg(long)]
    pub read_data: bool,
    /// Read only part of the data: N% (at random) or n/m (run 1/m .. m/m to cover all).
    #[arg(long, value_name = "N%|n/m", conflicts_with = "read_data", value_parser = |s: &str| s.parse::<ReadSubset>())]
    pub read_data_subset: Option<ReadSubset>,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let read = match (args.read_data, args.read_data_subset) {
        (_, Some(s)) => Some(s),
        (true, None) => Some(ReadSubset::All),
        (false, None) => None,
    };
    let keep = crate::settings::keep_policy(&ctx.cfg);
    let report = blocking(move || speechvault::ops::check::run(&repo, read, &keep)).await??;
    Ok(Outcome::Check(report))
}
