//! `speechvault diff`: what changed on an installation since a backup.

use speechvault::Error;
use speechvault::ops::inspect;

use crate::context::Ctx;
use crate::outcome::Outcome;

/// What changed on an installation since a backup: customizations and speakers added,
/// removed or changed, and objects added, removed or changed per bucket. Changes nothing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id (or a unique prefix), or `latest`.
    #[arg(default_value = "latest")]
    pub backup: String,
    /// Installation to compare (config name, or sandbox:NAME).
    #[arg(long)]
    pub against: String,
    /// With `latest`: the latest backup of this installation (default: of the one compared).
    #[arg(long)]
    pub source: Option<String>,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let profile = ctx.profile()?;
    let target = ctx.installation(&args.against)?;
    let source = args.source.unwrap_or_else(|| target.name.clone());
    let wanted = inspect::databases_of(&profile, &["customization", "speaker"], false);
    let opened = super::ls::open(ctx, &args.backup, Some(&source), &wanted).await?;
    let report = inspect::diff(&opened, &target, &profile).await?;
    Ok(Outcome::Diff(report))
}
