//! `speechvault import`: a directory made by the manual procedure (or by export) into the
//! repository, as a backup.

use std::path::PathBuf;

use speechvault::Error;
use speechvault::ops::import::ImportOptions;
use speechvault::support::progress::Progress;

use crate::context::Ctx;
use crate::outcome::Outcome;

/// Take a directory made with the manual procedure (or by export) into the repository as
/// a backup.
///
/// The SQL files are loaded into a scratch database (a temporary local cluster, or
/// --scratch INSTALLATION's server) and dumped like any backup.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory (minio/<bucket>/..., postgres/<database>.backup.sql).
    pub dir: PathBuf,
    /// The installation the backup is recorded for.
    #[arg(long = "as", value_name = "INSTALLATION")]
    pub as_installation: String,
    /// Load the SQL files on this installation's PostgreSQL server (into temporary
    /// databases) instead of a temporary local cluster.
    #[arg(long, value_name = "INSTALLATION")]
    pub scratch: Option<String>,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let profile = ctx.profile()?;
    let scratch = match &args.scratch {
        Some(s) => Some(ctx.installation(s)?.postgres),
        None => None,
    };
    let opts = ImportOptions { dir: args.dir.clone(), installation: args.as_installation, scratch };
    let progress = Progress::default();
    let report = ctx
        .with_progress(&progress, speechvault::ops::import::import(repo, &profile, &opts, &progress, &ctx.stop))
        .await?;
    Ok(Outcome::Import { report, dir: args.dir })
}
