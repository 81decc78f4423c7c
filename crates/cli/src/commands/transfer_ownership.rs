//! `speechvault transfer-ownership`: rows from one service instance to another, in place.

use speechvault::Error;
use speechvault::objstore::ObjectStore;

use crate::context::Ctx;
use crate::outcome::Outcome;

/// Move ownership of rows from one service instance to another on a live installation.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Installation to change (config name, or sandbox:NAME).
    #[arg(long)]
    pub on: String,
    /// Current owner (UUID or numeric Cloud Pak for Data instance id).
    #[arg(long)]
    pub from_instance: String,
    /// New owner.
    #[arg(long)]
    pub to_instance: String,
    /// Count the rows that would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let from = crate::settings::instance(&args.from_instance)?;
    let to = crate::settings::instance(&args.to_instance)?;
    let inst = ctx.installation(&args.on)?;
    let profile = ctx.profile()?;
    let store = ObjectStore::new(inst.s3.clone())?;
    let inventory = speechvault::model::inventory::take(&inst, &profile, &store).await?;
    let dbs: Vec<String> = inventory.databases.into_iter().collect();
    let rules = speechvault::ops::ownership::transfer(&inst, &profile, &dbs, &from, &to, args.dry_run, None).await?;
    if rules.iter().all(|o| o.rows == 0) {
        // A transfer that moves nothing is almost always a wrong id: say so, do not succeed.
        return Err(Error::bad_input(format!(
            "no row of any ownership rule on {} holds service instance {from}; nothing was changed (check --from-instance)",
            inst.name
        )));
    }
    Ok(Outcome::Ownership { installation: inst.name, from, to, dry_run: args.dry_run, rules })
}
