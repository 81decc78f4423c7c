//! `speechvault verify`: a live installation against a backup.

use std::sync::Arc;

use speechvault::Error;
use speechvault::model::catalog;
use speechvault::ops::verify::{self, VerifyOptions};
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Compare a live installation with a backup: rows (counts and content), objects, bytes,
/// SHA-256, content types and metadata.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// Installation to check (config name, or sandbox:NAME).
    #[arg(long)]
    pub against: String,
    /// With `latest`: the latest backup of this installation (needed when the repository
    /// holds backups of several installations and none of the one checked).
    #[arg(long)]
    pub source: Option<String>,
    /// Compare counts and sizes only, without reading objects back.
    #[arg(long)]
    pub no_digests: bool,
    /// The installation's rows were moved from this service instance (as `restore` does):
    /// compare them as if they had not. Requires --to-instance.
    #[arg(long, requires = "to_instance")]
    pub from_instance: Option<String>,
    /// The service instance the rows were moved to.
    #[arg(long, requires = "from_instance")]
    pub to_instance: Option<String>,
    /// Objects read back at once (default 64).
    #[arg(long)]
    pub parallel: Option<usize>,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let ownership = match (&args.from_instance, &args.to_instance) {
        (Some(f), Some(t)) => Some((crate::settings::instance(f)?, crate::settings::instance(t)?)),
        _ => None,
    };
    let inst = ctx.installation(&args.against)?;
    let repo = ctx.repository().await?;
    let _lock = ctx.read_lock(&repo).await?;
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    let set = catalog::find_for(&sets, &args.backup, args.source.as_deref(), &inst.name)?;
    let (manifest, reader, set) = blocking(move || -> Result<_, Error> {
        let reader = repo.reader()?;
        let manifest = set.manifest(&reader)?;
        Ok((manifest, Arc::new(reader), set))
    })
    .await??;
    if let Some((from, to)) = &ownership {
        speechvault::ops::ownership::check_request(&manifest.canonical_instance_ids(), from, to)?;
    }
    let mut opts = VerifyOptions { digests: !args.no_digests, ownership, ..Default::default() };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    let progress = Progress::default();
    let lists = verify::BackupLists { reader: &reader, set: &set };
    let report = ctx.with_progress(&progress, verify::verify(&manifest, lists, &inst, &opts, &progress)).await?;
    Ok(Outcome::Verify(report))
}
