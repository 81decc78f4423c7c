//! `speechvault init`: create the repository named in the config.

use speechvault::Error;
use speechvault::repository::Repository;

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Create the repository named in the config (encrypted with its password); an S3
/// repository's bucket is created when missing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// With --repository NAME: chunk like the default repository, so backups copied between
    /// them still deduplicate.
    #[arg(long)]
    pub copy_chunker_params: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<Outcome, Error> {
    let settings = ctx.cfg.named_repository(ctx.repository_name.as_deref())?;
    let location = settings.location.clone();
    let chunker_from = if args.copy_chunker_params {
        if ctx.repository_name.is_none() {
            return Err(Error::bad_input(
                "--copy-chunker-params takes them from the default repository into the one named with --repository",
            ));
        }
        Some(ctx.open_repository(None).await?)
    } else {
        None
    };
    blocking(move || Repository::init(&settings.location, &settings.password, chunker_from.as_deref())).await??;
    Ok(Outcome::Init { location })
}
