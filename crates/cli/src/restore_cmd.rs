//! `restore` and `verify`.

use std::path::PathBuf;

use speechvault::error::ErrorKind;
use speechvault::model::catalog;
use speechvault::ops::restore::{self, Preflight, RestoreOptions, TargetMode};
use speechvault::ops::verify::{self, VerifyOptions, VerifyReport};
use speechvault::support::progress::Progress;

use crate::output::{Failure, out};
use crate::vault_cmd::{Ctx, blocking, human_bytes, installation, parse_instance, print_ownership, with_progress};

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
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
    #[arg(long, conflicts_with = "data_only")]
    pub clean: bool,
    /// Load rows into the schema a freshly installed target already has, all databases
    /// committed together at the end.
    #[arg(long)]
    pub data_only: bool,
    /// Finish a restore of the same backup that was interrupted (killed, or a server went
    /// away): databases are restored again, objects already there intact are kept.
    #[arg(long)]
    pub resume: bool,
    /// How much of the backup to read before changing the target: `quick` reads the dumps and
    /// checks every pack the objects need (present, right size, authentic header); `full`
    /// also reads and authenticates every object.
    #[arg(long, value_name = "quick|full", default_value = "quick", value_parser = parse_preflight)]
    pub preflight: Preflight,
    /// Service instance id that owns the rows in the backup (UUID or numeric CP4D id).
    #[arg(long, requires = "to_instance")]
    pub from_instance: Option<String>,
    /// Service instance id of the target installation (with --from-instance, or with
    /// --instance: that instance's rows land as this one). Refused when this instance owns
    /// rows in the backup: two tenants are never merged.
    #[arg(long)]
    pub to_instance: Option<String>,
    /// Restore only these customizations (speech-to-text or text-to-speech, by id), with
    /// their rows, the rows referencing them and their objects, into a live installation.
    #[arg(long, value_name = "ID[,ID..]", value_delimiter = ',', conflicts_with_all = ["clean", "data_only", "components", "resume", "db_owner", "jobs", "no_verify", "speaker", "instance"])]
    pub customization: Vec<String>,
    /// Restore only these speakers (voices), with what references them.
    #[arg(long, value_name = "ID[,ID..]", value_delimiter = ',', conflicts_with_all = ["clean", "data_only", "components", "resume", "db_owner", "jobs", "no_verify", "instance"])]
    pub speaker: Vec<String>,
    /// Restore every row and object of one service instance (a tenant); with --to-instance
    /// they land as that instance.
    #[arg(long, value_name = "ID", conflicts_with_all = ["clean", "data_only", "components", "resume", "db_owner", "jobs", "no_verify", "from_instance"])]
    pub instance: Option<String>,
    /// With a selection: print the plan (every row per table, every object, every conflict)
    /// and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With a selection: overwrite rows and objects on the target that differ from the
    /// backup (default: refuse, exit 2, nothing changed).
    #[arg(long)]
    pub replace: bool,
    /// Role that owns the restored databases and everything in them (default: the role that
    /// owned them in the backup, when it exists on the target; else the login).
    #[arg(long, value_name = "ROLE")]
    pub db_owner: Option<String>,
    /// Directory for the dumps while they are restored (default: the system's temporary
    /// directory); its free space is checked first.
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Restore only these components.
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Objects written at once (default 64; a large object also sends up to 4 parts at once;
    /// all upload buffers together stay within 192 MiB, and at most 16 objects over 1 MiB are
    /// read from the repository at once).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// pg_restore parallel jobs.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// How to check the result: server (default: every upload checked by the server against
    /// its Content-MD5 and its ETag checked, the databases compared by row counts and content
    /// digests, and a listing of every bucket checked for each object and its size),
    /// read-back (also read every object back and compare SHA-256, content type and
    /// metadata), none.
    #[arg(long, value_name = "MODE", default_value = "server")]
    pub verify: speechvault::ops::restore::VerifyMode,
    /// The same as --verify=none.
    #[arg(long, conflicts_with = "verify")]
    pub no_verify: bool,
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

pub async fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<(), Failure> {
    if !args.customization.is_empty() || !args.speaker.is_empty() || args.instance.is_some() {
        return crate::selective_cmd::restore_selection(ctx, args).await;
    }
    if args.dry_run || args.replace {
        return Err(Failure::bad_input(
            "--dry-run and --replace go with a selection (--customization, --speaker or --instance)",
        ));
    }
    let (cfg, json, stop) = (&ctx.cfg, ctx.json, &ctx.stop);
    let ownership = match (&args.from_instance, &args.to_instance) {
        (Some(f), Some(t)) => Some((parse_instance(f)?, parse_instance(t)?)),
        (None, None) => None,
        _ => return Err(Failure::bad_input("--from-instance and --to-instance go together")),
    };
    let target = installation(cfg, &args.to)?;
    let profile = cfg.profile()?;
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, &args.backup, args.source.as_deref())?;
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
        verify: if args.no_verify { speechvault::ops::restore::VerifyMode::None } else { args.verify },
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
        with_progress(&progress, json, restore::run(repo, &set, &target, &profile, &opts, &progress, stop)).await?;
    let verified = report.verify.as_ref().is_none_or(|v| v.ok);
    {
        use speechvault::observe::metrics::Sample;
        let mut samples = vec![
            Sample::new(
                "speechvault_written_objects",
                "Objects the restore wrote into the target.",
                report.buckets.values().map(|b| b.objects).sum::<u64>() as f64,
            ),
            Sample::new(
                "speechvault_written_bytes",
                "Bytes of the objects the restore wrote into the target.",
                report.buckets.values().map(|b| b.bytes).sum::<u64>() as f64,
            ),
        ];
        if let Some(v) = &report.verify {
            samples.push(verification_sample(v));
        }
        ctx.record(samples, Some(report.backup_id.clone()));
    }
    if json {
        crate::output::json(&report)?;
    } else {
        out!(
            "restored backup {} of {} into {} in {:.1}s{}",
            report.backup_id,
            report.source_installation,
            report.installation,
            report.seconds,
            if report.resumed { " (resumed)" } else { "" }
        );
        for (db, d) in &report.databases {
            let owner = d.owner.as_deref().map(|o| format!(", owned by {o}")).unwrap_or_default();
            out!("  database {db}: {} tables from a {} dump{owner}", d.tables, human_bytes(d.dump_bytes));
        }
        for (b, s) in &report.buckets {
            let mut extra = Vec::new();
            if s.kept > 0 {
                extra.push(format!("{} already there and kept", s.kept));
            }
            if s.deleted > 0 {
                extra.push(format!("{} not in the backup, deleted", s.deleted));
            }
            let extra = if extra.is_empty() { String::new() } else { format!(" ({})", extra.join(", ")) };
            out!("  bucket {b} -> {}: {} objects, {}{extra}", s.name, s.objects, human_bytes(s.bytes));
        }
        print_ownership(&report.ownership);
        for n in &report.notes {
            out!("  note: {n}");
        }
        if let Some(v) = &report.verify {
            print_verify(v);
        }
    }
    if !verified {
        let f = Failure::new(
            ErrorKind::Differences,
            anyhow::anyhow!(
                "the restored installation differs from the backup (see the report); it was not rolled back"
            ),
        );
        return Err(if json { f.already_reported() } else { f });
    }
    Ok(())
}

fn verification_sample(v: &VerifyReport) -> speechvault::observe::metrics::Sample {
    speechvault::observe::metrics::Sample::new(
        "speechvault_verification_differences",
        "Tables and objects that differ from the backup (0 when verification passed).",
        v.differences() as f64,
    )
}

fn print_verify(v: &VerifyReport) {
    let bad_tables: Vec<_> = v.tables.iter().filter(|t| !t.ok).collect();
    let rows: i64 = v.tables.iter().map(|t| t.backup_rows).sum();
    out!("verification against the backup: {}", if v.ok { "OK" } else { "DIFFERENCES FOUND" });
    if let Some((from, to)) = &v.ownership_mapped {
        out!("  rows owned by {to} on the installation compared as owned by {from} in the backup");
    }
    out!("  {} tables, {} rows (counts and content): {} differ", v.tables.len(), rows, bad_tables.len());
    for t in bad_tables {
        let found = t.installation_rows.map_or("no such table".to_string(), |n| format!("{n} rows"));
        out!(
            "    {}.{}: the backup has {} rows, the installation {found}; content {}",
            t.database,
            t.table,
            t.backup_rows,
            t.content
        );
    }
    for b in &v.buckets {
        out!(
            "  bucket {}: {}/{} objects, {}/{} bytes, {} digests checked{}",
            b.name,
            b.actual_objects,
            b.expected_objects,
            b.actual_bytes,
            b.expected_bytes,
            b.digests_checked,
            if b.ok { "" } else { " - DIFFERENT" }
        );
        for k in &b.missing {
            out!("    in the backup, missing here: {k:?}");
        }
        for k in &b.unexpected {
            out!("    here, not in the backup: {k:?}");
        }
        for d in &b.different {
            out!("    differs: {:?}: {}", d.key, d.reason);
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// Installation to check (config name, or sandbox:NAME).
    #[arg(long)]
    pub against: String,
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

pub async fn verify_cmd(ctx: &Ctx, args: VerifyArgs) -> Result<(), Failure> {
    let (cfg, json) = (&ctx.cfg, ctx.json);
    let ownership = match (&args.from_instance, &args.to_instance) {
        (Some(f), Some(t)) => Some((parse_instance(f)?, parse_instance(t)?)),
        _ => None,
    };
    let inst = installation(cfg, &args.against)?;
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, &args.backup, None)?;
    let (manifest, reader, set) = blocking(move || -> Result<_, Failure> {
        let reader = repo.reader()?;
        let manifest = set.manifest(&reader)?;
        Ok((manifest, std::sync::Arc::new(reader), set))
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
    let report = with_progress(
        &progress,
        json,
        verify::verify(&manifest, verify::BackupLists { reader: &reader, set: &set }, &inst, &opts, &progress),
    )
    .await?;
    ctx.record(vec![verification_sample(&report)], Some(report.backup_id.clone()));
    if json {
        crate::output::json(&report)?;
    } else {
        out!("backup {} vs installation {}", report.backup_id, report.installation);
        print_verify(&report);
    }
    if !report.ok {
        let f = Failure::new(
            ErrorKind::Differences,
            anyhow::anyhow!("installation {} differs from backup {}", report.installation, report.backup_id),
        );
        return Err(if json { f.already_reported() } else { f });
    }
    Ok(())
}
