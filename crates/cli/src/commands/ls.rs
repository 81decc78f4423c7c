//! `speechvault ls`: what a backup holds, without restoring anything.

use std::collections::BTreeSet;

use speechvault::Error;
use speechvault::model::catalog;
use speechvault::ops::inspect::{self, Opened};
use speechvault::support::progress::Progress;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Look inside a backup without restoring anything (no database server needed): its
/// customizations, speakers, service instances, or objects under a prefix.
#[derive(Debug, clap::Args)]
pub struct Args {
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

/// Opens a backup with the dumps of `databases` read out of it.
pub async fn open(
    ctx: &Ctx,
    backup: &str,
    source: Option<&str>,
    databases: &BTreeSet<String>,
) -> Result<Opened, Error> {
    let repo = ctx.repository().await?;
    let r = repo.clone();
    let sets = blocking(move || catalog::backup_sets(&r)).await??;
    let set = catalog::find(&sets, backup, source)?;
    let progress = Progress::default();
    Ok(ctx.with_progress(&progress, Opened::open(repo, &set, databases, &progress)).await?)
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let profile = ctx.profile()?;
    let source = args.source.as_deref();
    if let Some(spec) = &args.objects {
        let (bucket, prefix) = spec.split_once('/').unwrap_or((spec.as_str(), ""));
        let opened = open(ctx, &args.backup, source, &BTreeSet::new()).await?;
        if !opened.manifest.buckets.contains_key(bucket) {
            return Err(Error::bad_input(format!(
                "backup {} has no bucket {bucket:?} (it has: {})",
                opened.set.id,
                opened.manifest.buckets.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let p = prefix.to_string();
        let mut objects = opened.objects(bucket, move |e| e.key.starts_with(&p)).await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        return Ok(Outcome::LsObjects {
            backup_id: opened.set.id.clone(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            objects,
        });
    }
    if args.instances {
        let opened = open(ctx, &args.backup, source, &inspect::databases_of(&profile, &[], true)).await?;
        let instances = inspect::instances(&opened, &profile).await?;
        return Ok(Outcome::LsInstances { backup_id: opened.set.id.clone(), instances });
    }
    if !args.customizations && !args.speakers {
        // A summary of everything.
        let wanted = inspect::databases_of(&profile, &["customization", "speaker"], false);
        let opened = open(ctx, &args.backup, source, &wanted).await?;
        let customizations = inspect::items(&opened, &profile, "customization").await?.len();
        let speakers = inspect::items(&opened, &profile, "speaker").await?.len();
        return Ok(Outcome::LsSummary {
            backup_id: opened.set.id.clone(),
            manifest: Box::new(opened.manifest.clone()),
            customizations,
            speakers,
        });
    }
    let kind = if args.speakers { "speaker" } else { "customization" };
    let opened = open(ctx, &args.backup, source, &inspect::databases_of(&profile, &[kind], false)).await?;
    let items = inspect::items(&opened, &profile, kind).await?;
    Ok(Outcome::LsItems { backup_id: opened.set.id.clone(), speakers: args.speakers, items })
}
