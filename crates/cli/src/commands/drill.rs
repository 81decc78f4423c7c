//! `speechvault drill`: a backup restored into a scratch installation the drill makes and
//! removes, verified, and its recovery time and point measured.

use std::time::Instant;

use speechvault::Error;
use speechvault::model::catalog;
use speechvault::ops::drill::{self, DrillOptions, Objectives};
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Prove a backup restores: into a private PostgreSQL cluster (started and removed by the
/// drill) with ownership moved to a drill instance, every table compared by row digests,
/// every object read from the repository and compared by size and SHA-256 (or, with --to,
/// restored into that scratch object store and read back). Measures each step's duration
/// (the recovery time) and the backup's age and the longest gap between backups (the
/// recovery point), stores the outcome in the repository beside the backup, and never
/// touches the installation drilled.
///
/// Exit status 3 when verification finds differences, the backup is damaged, or an objective
/// of `[installations.NAME.objectives]` (rto, rpo) is missed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// The installation whose backup is drilled (its latest with `latest`); it is not touched.
    #[arg(long)]
    pub installation: String,
    /// Restore into a scratch installation the drill creates and removes (the default, and
    /// the only kind of drill: stated for scripts that say what they mean).
    #[arg(long)]
    pub scratch: bool,
    /// A scratch installation (config name) whose object store receives the objects,
    /// replacing what its buckets hold (`--clean`); refused when it is the one drilled.
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Directory for the dumps while they are restored (default: the system's temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<std::path::PathBuf>,
    /// Objects read at once (default 64).
    #[arg(long)]
    pub parallel: Option<usize>,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let opened = Instant::now();
    let source = ctx.installation(&args.installation)?;
    let to = match &args.to {
        Some(name) => Some(ctx.installation(name)?),
        None => None,
    };
    let objectives = objectives(ctx, &source.name)?;
    let profile = ctx.profile()?;
    let repo = ctx.repository().await?;
    let _lock = ctx.read_lock(&repo).await?;
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    let set = catalog::find(&sets, &args.backup, Some(&source.name))?;
    let opts = DrillOptions {
        to,
        objectives,
        parallel: args.parallel.map_or_else(speechvault::ops::backup::default_parallelism, |p| p.max(1)),
        temp_dir: args.temp_dir,
        open_seconds: opened.elapsed().as_secs_f64(),
    };
    let progress = Progress::default();
    let report = ctx
        .with_progress(&progress, drill::run(repo, &sets, &set, &source, &profile, &opts, &progress, &ctx.stop))
        .await?;
    Ok(Outcome::Drill(Box::new(report)))
}

/// The installation's `[installations.NAME.objectives]`.
fn objectives(ctx: &Ctx, installation: &str) -> Result<Objectives, Error> {
    let Some(o) = ctx.cfg.file.installations.get(installation).and_then(|i| i.objectives.clone()) else {
        return Ok(Objectives::default());
    };
    let parse = |what: &str, v: &Option<String>| -> Result<Option<f64>, Error> {
        v.as_deref()
            .map(|s| {
                crate::settings::parse_duration(s).map(|d| d.as_secs_f64()).map_err(|e| {
                    Error::bad_input(format!("[installations.{installation}.objectives] {what} = {s:?}: {e}"))
                })
            })
            .transpose()
    };
    Ok(Objectives { rto_seconds: parse("rto", &o.rto)?, rpo_seconds: parse("rpo", &o.rpo)? })
}
