//! `speechvault export`: a backup written out in the manual procedure's layout.

use std::path::PathBuf;

use speechvault::Error;
use speechvault::model::catalog;
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Write a backup out in the manual procedure's layout: minio/<bucket>/<key> and
/// postgres/<database>.backup.sql, with export-report.json (keys a file system cannot
/// hold are written under escaped/ and listed there, with every content type and metadata).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id (or a unique prefix), or `latest`.
    pub backup: String,
    /// A new or empty directory.
    #[arg(long)]
    pub to: PathBuf,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    let _lock = ctx.read_lock(&repo).await?;
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    let set = catalog::find(&sets, &args.backup, None)?;
    let progress = Progress::default();
    let report =
        ctx.with_progress(&progress, speechvault::ops::export::export(repo, &set, &args.to, &progress)).await?;
    Ok(Outcome::Export { report, to: args.to })
}
