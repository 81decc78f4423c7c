//! Restoring one thing: `restore --customization/--speaker/--instance`.

use speechvault::model::catalog;
use speechvault::model::instance::InstanceId;
use speechvault::ops::selective::{self, SelectiveOptions, SelectiveReport, Selector};
use speechvault::support::progress::Progress;

use crate::output::{Failure, out};
use crate::restore_cmd::RestoreArgs;
use crate::vault_cmd::{Ctx, blocking, installation, parse_instance, with_progress};

fn ids(values: &[String], what: &str) -> Result<Vec<InstanceId>, Failure> {
    let mut out: Vec<InstanceId> = Vec::new();
    for v in values {
        let id = InstanceId::parse(v).map_err(|_| {
            Failure::bad_input(format!("--{what} {v:?} is not an id (a UUID, with or without hyphens)"))
        })?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

pub async fn restore_selection(ctx: &Ctx, args: RestoreArgs) -> Result<(), Failure> {
    let selector = if !args.customization.is_empty() {
        Selector::Customizations(ids(&args.customization, "customization")?)
    } else if !args.speaker.is_empty() {
        Selector::Speakers(ids(&args.speaker, "speaker")?)
    } else {
        let id = args.instance.as_deref().unwrap_or_default();
        Selector::Instance(parse_instance(id)?)
    };
    if args.from_instance.is_some() {
        return Err(Failure::bad_input(
            "--from-instance does not go with a selection; use --instance X --to-instance Y",
        ));
    }
    let to_instance = match &args.to_instance {
        Some(t) if matches!(selector, Selector::Instance(_)) => Some(parse_instance(t)?),
        Some(_) => return Err(Failure::bad_input("--to-instance goes with --instance (or --from-instance)")),
        None => None,
    };
    let target = installation(&ctx.cfg, &args.to)?;
    let profile = ctx.cfg.profile()?;
    let repo = ctx.repo().await?;
    let _lock = ctx.lock(&repo, false).await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    // `latest` is the latest backup of the installation restored into, unless --source says.
    let source = args.source.clone().unwrap_or_else(|| target.name.clone());
    let set = catalog::find(&sets, &args.backup, Some(&source))?;
    let mut opts = SelectiveOptions {
        selector,
        to_instance,
        dry_run: args.dry_run,
        replace: args.replace,
        parallel: speechvault::ops::backup::default_parallelism(),
        temp_dir: args.temp_dir.clone(),
    };
    if let Some(p) = args.parallel {
        opts.parallel = p.max(1);
    }
    let progress = Progress::default();
    let report =
        with_progress(&progress, ctx.json, selective::run(repo, &set, &target, &profile, &opts, &progress)).await?;
    ctx.record(
        vec![speechvault::observe::metrics::Sample::new(
            "speechvault_written_objects",
            "Objects the restore wrote into the target.",
            report
                .buckets
                .iter()
                .map(|b| b.write.len() + if report.replace { b.conflicts.len() } else { 0 })
                .sum::<usize>() as f64,
        )],
        Some(report.backup_id.clone()),
    );
    if ctx.json {
        crate::output::json(&report)?;
    } else {
        print_plan(&report);
    }
    if report.dry_run && report.conflicts > 0 && !report.replace {
        // The plan is out; the status says the restore itself would be refused.
        let f = Failure::bad_input(format!(
            "the restore would be refused: {} rows or objects differ on the target (--replace overwrites them)",
            report.conflicts
        ));
        return Err(if ctx.json { f.already_reported() } else { f });
    }
    Ok(())
}

fn print_plan(r: &SelectiveReport) {
    let verb = if r.dry_run { "would restore" } else { "restored" };
    let (insert, write) = if r.dry_run { ("to insert", "to write") } else { ("inserted", "written") };
    out!("{verb} {} from backup {} into {} ({:.1}s)", r.selection, r.backup_id, r.installation, r.seconds);
    for d in &r.databases {
        for t in &d.tables {
            out!(
                "  {}: {}: {} rows {insert}, {} differ{}, {} identical (skipped), {} referenced rows already there",
                d.database,
                t.table,
                t.insert.len(),
                t.conflicts.len(),
                if r.replace { " (replaced)" } else { "" },
                t.identical,
                t.present
            );
            for k in &t.insert {
                out!("      insert ({k})");
            }
            for k in &t.conflicts {
                out!("      {} ({k})", if r.replace { "replace" } else { "CONFLICT" });
            }
        }
    }
    for b in &r.buckets {
        out!(
            "  bucket {}: {} objects {write}, {} differ{}, {} identical (skipped)",
            b.name,
            b.write.len(),
            b.conflicts.len(),
            if r.replace { " (replaced)" } else { "" },
            b.identical
        );
        for k in &b.write {
            out!("      write {k:?}");
        }
        for k in &b.conflicts {
            out!("      {} {k:?}", if r.replace { "replace" } else { "CONFLICT" });
        }
    }
    if r.dry_run {
        if r.conflicts > 0 && !r.replace {
            out!("{} conflicts: the restore would be refused; --replace overwrites them", r.conflicts);
        }
        out!("dry run: nothing was changed");
    } else if r.verified {
        out!("verified: every written row and object equals the backup");
    }
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// With `latest`: the latest backup of this installation.
    #[arg(long)]
    pub source: Option<String>,
    /// Customizations: id, owner, name, base model, status, created, updated.
    #[arg(long, conflicts_with_all = ["speakers", "instances", "objects"])]
    pub customizations: bool,
    /// Speakers (voices).
    #[arg(long, conflicts_with_all = ["instances", "objects"])]
    pub speakers: bool,
    /// Service instances, with their rows per table and the objects their rows own.
    #[arg(long, conflicts_with = "objects")]
    pub instances: bool,
    /// Objects under a prefix: BUCKET or BUCKET/PREFIX (the profile's bucket name).
    #[arg(long, value_name = "BUCKET/PREFIX")]
    pub objects: Option<String>,
}

async fn open(
    ctx: &Ctx,
    backup: &str,
    source: Option<&str>,
    databases: &std::collections::BTreeSet<String>,
) -> Result<speechvault::ops::inspect::Opened, Failure> {
    let repo = ctx.repo().await?;
    let v = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&v)).await??;
    let set = catalog::find(&sets, backup, source)?;
    let progress = Progress::default();
    Ok(with_progress(&progress, ctx.json, speechvault::ops::inspect::Opened::open(repo, &set, databases, &progress))
        .await?)
}

pub async fn ls(ctx: &Ctx, args: LsArgs) -> Result<(), Failure> {
    use speechvault::ops::inspect;
    let profile = ctx.cfg.profile()?;
    if let Some(spec) = &args.objects {
        let (bucket, prefix) = spec.split_once('/').unwrap_or((spec.as_str(), ""));
        let opened = open(ctx, &args.backup, args.source.as_deref(), &Default::default()).await?;
        if !opened.manifest.buckets.contains_key(bucket) {
            return Err(Failure::bad_input(format!(
                "backup {} has no bucket {bucket:?} (it has: {})",
                opened.set.id,
                opened.manifest.buckets.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let p = prefix.to_string();
        let mut objects = opened.objects(bucket, move |e| e.key.starts_with(&p)).await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        if ctx.json {
            let list: Vec<_> = objects
                .iter()
                .map(|o| {
                    serde_json::json!({"key": o.key, "size": o.size, "etag": o.etag, "sha256": o.sha256,
                        "content_type": o.content_type, "last_modified": o.last_modified})
                })
                .collect();
            return crate::output::json(
                &serde_json::json!({"backup_id": opened.set.id, "bucket": bucket, "prefix": prefix, "objects": list}),
            );
        }
        for o in &objects {
            if !out!("{:>12}  {}  {:?}", o.size, o.last_modified, o.key) {
                break;
            }
        }
        out!("{} objects, {}", objects.len(), crate::vault_cmd::human_bytes(objects.iter().map(|o| o.size).sum()));
        return Ok(());
    }
    let kind = if args.speakers { "speaker" } else { "customization" };
    if args.instances {
        let opened =
            open(ctx, &args.backup, args.source.as_deref(), &inspect::databases_of(&profile, &[], true)).await?;
        let list = inspect::instances(&opened, &profile).await?;
        if ctx.json {
            return crate::output::json(&serde_json::json!({"backup_id": opened.set.id, "instances": list}));
        }
        for i in &list {
            let rows: Vec<String> = i.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
            out!(
                "{}  {} objects ({})  rows: {}",
                i.instance,
                i.objects,
                crate::vault_cmd::human_bytes(i.bytes),
                rows.join(", ")
            );
        }
        return Ok(());
    }
    if !args.customizations && !args.speakers {
        // A summary of everything.
        let opened = open(
            ctx,
            &args.backup,
            args.source.as_deref(),
            &inspect::databases_of(&profile, &["customization", "speaker"], false),
        )
        .await?;
        let customizations = inspect::items(&opened, &profile, "customization").await?;
        let speakers = inspect::items(&opened, &profile, "speaker").await?;
        let m = &opened.manifest;
        if ctx.json {
            return crate::output::json(&serde_json::json!({
                "backup_id": opened.set.id, "installation": m.installation, "started": m.started,
                "components": m.components, "customizations": customizations.len(), "speakers": speakers.len(),
                "instance_ids": m.canonical_instance_ids().iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "databases": m.databases.iter().map(|(d, e)| (d.clone(), serde_json::json!({"dump_bytes": e.dump_bytes, "tables": e.tables}))).collect::<serde_json::Map<_, _>>(),
                "buckets": m.buckets.iter().map(|(b, e)| (b.clone(), serde_json::json!({"objects": e.objects, "bytes": e.bytes}))).collect::<serde_json::Map<_, _>>(),
            }));
        }
        out!("backup {} of {} ({}): {}", opened.set.id, m.installation, m.started, m.components.join(", "));
        for (d, e) in &m.databases {
            out!("  database {d}: {} tables, {} rows", e.tables.len(), e.tables.values().sum::<i64>());
        }
        for (b, e) in &m.buckets {
            out!("  bucket {b}: {} objects, {}", e.objects, crate::vault_cmd::human_bytes(e.bytes));
        }
        out!(
            "  {} customizations, {} speakers, {} service instances",
            customizations.len(),
            speakers.len(),
            m.canonical_instance_ids().len()
        );
        out!("  details: --customizations, --speakers, --instances, --objects BUCKET/PREFIX");
        return Ok(());
    }
    let opened =
        open(ctx, &args.backup, args.source.as_deref(), &inspect::databases_of(&profile, &[kind], false)).await?;
    let items = inspect::items(&opened, &profile, kind).await?;
    if ctx.json {
        let key = if args.speakers { "speakers" } else { "customizations" };
        return crate::output::json(&serde_json::json!({"backup_id": opened.set.id, key: items}));
    }
    for i in &items {
        let f = |c: &str| i.fields.get(c).cloned().flatten().unwrap_or_else(|| "-".into());
        let model = i.fields.get("base_model_name").or(i.fields.get("language")).cloned().flatten().unwrap_or_default();
        if !out!(
            "{}  {:<18} owner {}  {:?}  {}  {}  created {}  updated {}",
            i.id,
            i.database,
            f("owner"),
            f("name"),
            model,
            f("status"),
            f("created"),
            f("updated")
        ) {
            break;
        }
    }
    Ok(())
}

pub async fn diff(ctx: &Ctx, backup: &str, against: &str, source: Option<String>) -> Result<(), Failure> {
    use speechvault::ops::inspect;
    let profile = ctx.cfg.profile()?;
    let target = installation(&ctx.cfg, against)?;
    let source = source.unwrap_or_else(|| target.name.clone());
    let opened =
        open(ctx, backup, Some(&source), &inspect::databases_of(&profile, &["customization", "speaker"], false))
            .await?;
    let report = inspect::diff(&opened, &target, &profile).await?;
    if ctx.json {
        return crate::output::json(&report);
    }
    out!("installation {} since backup {}:", report.installation, report.backup_id);
    let show = |what: &str, c: &inspect::Changes| {
        for (label, list) in [("added", &c.added), ("removed", &c.removed), ("changed", &c.changed)] {
            for k in list {
                out!("  {what}: {label} {k:?}");
            }
        }
    };
    for (db, c) in &report.customizations {
        show(&format!("{db} customization"), c);
    }
    for (db, c) in &report.speakers {
        show(&format!("{db} speaker"), c);
    }
    for b in &report.buckets {
        show(&format!("bucket {}", b.name), &b.changes);
    }
    let none = report.customizations.values().chain(report.speakers.values()).all(|c| c.is_empty())
        && report.buckets.iter().all(|b| b.changes.is_empty());
    if none {
        out!("  no changes");
    }
    Ok(())
}
