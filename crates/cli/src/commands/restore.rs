//! `speechvault restore`: a whole backup into an installation, or one thing out of it into a
//! live installation (`--customization`, `--speaker`, `--instance`).

use std::path::PathBuf;

use clap::ArgGroup;
use speechvault::Error;
use speechvault::model::catalog;
use speechvault::model::instance::InstanceId;
use speechvault::ops::restore::{self, Preflight, RestoreOptions, TargetMode, VerifyMode};
use speechvault::ops::selective::{self, SelectiveOptions, Selector};
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Restore a backup into an installation, move ownership, verify.
///
/// Before anything on the target changes, the target is checked (empty unless --clean,
/// --data-only or --resume), every dump is read and authenticated, and every pack the
/// objects need is checked. A restore into an empty target that fails or is interrupted
/// is rolled back. Exit status 3 when verification finds differences (nothing is rolled
/// back then: the report says what differs).
///
/// With --customization, --speaker or --instance, only that (with the rows that reference
/// it and its objects) goes into a live installation, which is otherwise left alone.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("selection").args(["customization", "speaker", "instance"])))]
#[command(group(ArgGroup::new("moved_from").args(["from_instance", "instance"])))]
pub struct Args {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// Installation to restore into (config name, or sandbox:NAME).
    #[arg(long)]
    pub to: String,
    /// With `latest`: the latest backup of this installation.
    #[arg(long)]
    pub source: Option<String>,
    /// Replace what the target holds: its databases are dropped and recreated, objects that
    /// differ are overwritten, objects the backup does not hold are deleted. Only after the
    /// backup was read and checked.
    #[arg(long, conflicts_with_all = ["data_only", "selection"])]
    pub clean: bool,
    /// Load rows into the schema a freshly installed target already has, all databases
    /// committed together at the end.
    #[arg(long, conflicts_with = "selection")]
    pub data_only: bool,
    /// With --clean or --data-only: the target is the installation the backup was taken
    /// from (same PostgreSQL cluster, same S3 endpoint and buckets), and replacing it is
    /// meant. Without it such a restore is refused (exit 2), so a second config entry for
    /// the same servers cannot overwrite the source by mistake.
    #[arg(long)]
    pub in_place: bool,
    /// Finish a restore of the same backup that was interrupted (killed, or a server went
    /// away): databases are restored again, objects already there intact are kept.
    #[arg(long, conflicts_with = "selection")]
    pub resume: bool,
    /// How much of the backup to read before changing the target: `quick` reads the dumps and
    /// checks every pack the objects need (present, right size, authentic header); `full`
    /// also reads and authenticates every object.
    #[arg(long, value_name = "quick|full", default_value = "quick", value_parser = parse_preflight)]
    pub preflight: Preflight,
    /// Service instance id that owns the rows in the backup (UUID or numeric CP4D id).
    #[arg(long, requires = "to_instance", conflicts_with = "selection")]
    pub from_instance: Option<String>,
    /// Service instance id of the target installation (with --from-instance, or with
    /// --instance: that instance's rows land as this one). Refused when this instance owns
    /// rows in the backup: two tenants are never merged.
    #[arg(long, requires = "moved_from")]
    pub to_instance: Option<String>,
    /// Restore only these customizations (speech-to-text or text-to-speech, by id), with
    /// their rows, the rows referencing them and their objects, into a live installation.
    #[arg(long, value_name = "ID[,ID..]", value_delimiter = ',')]
    pub customization: Vec<String>,
    /// Restore only these speakers (voices), with what references them.
    #[arg(long, value_name = "ID[,ID..]", value_delimiter = ',')]
    pub speaker: Vec<String>,
    /// Restore every row and object of one service instance (a tenant); with --to-instance
    /// they land as that instance.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// With a selection: print the plan (every row per table, every object, every conflict)
    /// and change nothing.
    #[arg(long, requires = "selection")]
    pub dry_run: bool,
    /// With a selection: overwrite rows and objects on the target that differ from the
    /// backup (default: refuse, exit 2, nothing changed).
    #[arg(long, requires = "selection")]
    pub replace: bool,
    /// Role that owns the restored databases and everything in them (default: the role that
    /// owned them in the backup, when it exists on the target; else the login).
    #[arg(long, value_name = "ROLE", conflicts_with = "selection")]
    pub db_owner: Option<String>,
    /// Directory for the dumps while they are restored (default: the system's temporary
    /// directory); its free space is checked first.
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Restore only these components.
    #[arg(long, value_delimiter = ',', conflicts_with = "selection")]
    pub components: Vec<String>,
    /// Objects written at once (default 64; a large object also sends up to 4 parts at once;
    /// all upload buffers together stay within 192 MiB, and at most 16 objects over 1 MiB are
    /// read from the repository at once).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// pg_restore parallel jobs.
    #[arg(long, conflicts_with = "selection")]
    pub jobs: Option<usize>,
    /// How to check the result: server (default: every upload checked by the server against
    /// its Content-MD5 and its ETag checked, the databases compared by row counts and content
    /// digests, and a listing of every bucket checked for each object and its size),
    /// read-back (also read every object back and compare SHA-256, content type and
    /// metadata), none. With a selection: the rows are always compared inside their
    /// transactions; server lists every written object, read-back reads each back.
    #[arg(long, value_name = "MODE", default_value = "server")]
    pub verify: VerifyMode,
    /// The same as --verify=none.
    #[arg(long, conflicts_with = "verify")]
    pub no_verify: bool,
    /// Restore objects without the attributes the target does not keep (tags on a server
    /// without tagging, a storage class it lacks), naming them in the report. Without it such
    /// a restore is refused before anything is written (exit 2).
    #[arg(long, conflicts_with = "selection")]
    pub allow_attribute_loss: bool,
    /// Also restore each object's retention (mode and retain-until date) and legal hold. The
    /// target bucket needs object lock; COMPLIANCE retention cannot be undone, not even by a
    /// rollback.
    #[arg(long, conflicts_with = "selection")]
    pub object_lock_settings: bool,
    /// The buckets' own settings: apply (default: versioning, object lock and encryption
    /// before the objects; lifecycle, retention, policy and the rest after they are verified;
    /// a policy only where the target bucket had none, or with --clean), skip, or apply-all
    /// (also notifications, which point at the source's endpoints). A selection never
    /// changes them.
    #[arg(long, value_name = "apply|skip|apply-all", default_value = "apply", conflicts_with = "selection")]
    pub bucket_config: speechvault::ops::settings::BucketConfigMode,
    /// Another repository holding the same backup (a copy made with `copy`; a name from the
    /// config's [repositories.NAME]): whatever does not read here (a missing or damaged pack,
    /// a lost index entry, a damaged tree) is read there by blob id and authenticated under its
    /// key. Neither repository is changed; `check --read-data --repair-from NAME` heals this one.
    #[arg(long, value_name = "NAME", conflicts_with = "selection")]
    pub fallback_repository: Option<String>,
    /// Restore everything of a damaged backup that reads back and authenticates, and name
    /// the rest (databases whose dump does not read are not restored; objects whose data
    /// does not read are absent, never half-written). Exit status 3 when anything is left
    /// out; verification expects exactly what was restored.
    #[arg(long, conflicts_with = "selection")]
    pub salvage: bool,
    #[command(flatten)]
    pub run: crate::observe::RunArgs,
}

fn parse_preflight(s: &str) -> Result<Preflight, String> {
    match s {
        "quick" => Ok(Preflight::Quick),
        "full" => Ok(Preflight::Full),
        other => Err(format!("{other:?}: use quick or full")),
    }
}

impl Args {
    fn verify_mode(&self) -> VerifyMode {
        if self.no_verify { VerifyMode::None } else { self.verify }
    }
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    if !args.customization.is_empty() || !args.speaker.is_empty() || args.instance.is_some() {
        return run_selection(args, ctx).await;
    }
    let ownership = match (&args.from_instance, &args.to_instance) {
        (Some(f), Some(t)) => Some((crate::settings::instance(f)?, crate::settings::instance(t)?)),
        _ => None,
    };
    let target = ctx.installation(&args.to)?;
    let profile = ctx.profile()?;
    let repo = ctx.repository().await?;
    let _lock = ctx.read_lock(&repo).await?;
    let (fallback, _fallback_lock) = match &args.fallback_repository {
        None => (None, None),
        Some(name) => {
            let other = ctx.open_repository(Some(name)).await?;
            if other.location() == repo.location() {
                return Err(Error::bad_input(format!(
                    "--fallback-repository {name} is the repository restored from ({}): name a copy",
                    repo.location()
                )));
            }
            let lock = ctx.read_lock(&other).await?;
            (Some(speechvault::repository::FallbackRepository(other)), Some(lock))
        }
    };
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    let set = catalog::find_for(&sets, &args.backup, args.source.as_deref(), &target.name)?;
    let verify = args.verify_mode();
    let mut opts = RestoreOptions {
        mode: if args.clean {
            TargetMode::Clean
        } else if args.data_only {
            TargetMode::DataOnly
        } else {
            TargetMode::Empty
        },
        resume: args.resume,
        preflight: args.preflight,
        components: (!args.components.is_empty()).then_some(args.components),
        ownership,
        db_owner: args.db_owner,
        temp_dir: args.temp_dir,
        verify,
        allow_attribute_loss: args.allow_attribute_loss,
        in_place: args.in_place,
        object_lock_settings: args.object_lock_settings,
        bucket_config: args.bucket_config,
        fallback,
        salvage: args.salvage,
        ..Default::default()
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    if let Some(j) = args.jobs {
        opts.jobs = j.max(1);
    }
    let progress = Progress::default();
    let report =
        ctx.with_progress(&progress, restore::run(repo, &set, &target, &profile, &opts, &progress, &ctx.stop)).await?;
    Ok(Outcome::Restore(Box::new(report)))
}

fn ids(values: &[String], what: &str) -> Result<Vec<InstanceId>, Error> {
    let mut out: Vec<InstanceId> = Vec::new();
    for v in values {
        let id = InstanceId::parse(v)
            .map_err(|_| Error::bad_input(format!("--{what} {v:?} is not an id (a UUID, with or without hyphens)")))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// `restore --customization/--speaker/--instance`.
async fn run_selection(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let selector = if !args.customization.is_empty() {
        Selector::Customizations(ids(&args.customization, "customization")?)
    } else if !args.speaker.is_empty() {
        Selector::Speakers(ids(&args.speaker, "speaker")?)
    } else {
        Selector::Instance(crate::settings::instance(args.instance.as_deref().unwrap_or_default())?)
    };
    let to_instance = match &args.to_instance {
        Some(t) => Some(crate::settings::instance(t)?),
        None => None,
    };
    let target = ctx.installation(&args.to)?;
    let profile = ctx.profile()?;
    let repo = ctx.repository().await?;
    let _lock = ctx.read_lock(&repo).await?;
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    // `latest` is the latest backup of the installation restored into, unless --source says.
    let source = args.source.clone().unwrap_or_else(|| target.name.clone());
    let set = catalog::find(&sets, &args.backup, Some(&source))?;
    let verify = args.verify_mode();
    let opts = SelectiveOptions {
        selector,
        to_instance,
        dry_run: args.dry_run,
        replace: args.replace,
        parallel: args.parallel.map_or_else(speechvault::ops::backup::default_parallelism, |p| p.max(1)),
        temp_dir: args.temp_dir,
        preflight: args.preflight,
        verify,
    };
    let progress = Progress::default();
    let report = ctx.with_progress(&progress, selective::run(repo, &set, &target, &profile, &opts, &progress)).await?;
    Ok(Outcome::Selective(report))
}
