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
    /// With --read-data: when damage is found, heal the repository from another one holding
    /// copies of its backups (a name from the config's [repositories.NAME]): damaged packs
    /// are set aside under damaged/ (never deleted), the index is rebuilt, and every blob
    /// lost is fetched from the copy by id and re-encrypted here; then the check runs again.
    #[arg(long, value_name = "NAME")]
    pub repair_from: Option<String>,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    // Healing rewrites the index: no other run may use the repository meanwhile.
    let _lock = if args.repair_from.is_some() { ctx.lock(&repo, true).await? } else { ctx.read_lock(&repo).await? };
    let read = match (args.read_data, args.read_data_subset) {
        (_, Some(s)) => Some(s),
        (true, None) => Some(ReadSubset::All),
        (false, None) => None,
    };
    let keep = crate::settings::keep_policy(&ctx.cfg);
    let Some(name) = args.repair_from else {
        let report = blocking(move || speechvault::ops::check::run(&repo, read, &keep)).await??;
        return Ok(Outcome::Check(report));
    };
    if read.is_none() {
        return Err(Error::bad_input(
            "--repair-from needs --read-data (or --read-data-subset): damage inside packs is found only by reading them",
        ));
    }
    let other = ctx.open_repository(Some(&name)).await?;
    if other.location() == repo.location() {
        return Err(Error::bad_input(format!("--repair-from {name} is the repository checked: name a copy")));
    }
    let _other_lock = ctx.read_lock(&other).await?;
    let report = blocking(move || speechvault::ops::check::run_and_repair(&repo, &other, read, &keep)).await??;
    Ok(Outcome::Check(report))
}
