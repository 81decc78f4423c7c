//! `speechvault key`: the repository's keys (passwords).

use std::path::{Path, PathBuf};

use speechvault::Error;
use speechvault::support::secret::{Secret, read_secret_file};

use crate::context::{Ctx, blocking};
use crate::outcome::Outcome;

/// Manage the repository's keys (passwords).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the repository's keys (the current one is marked).
    List,
    /// Add a key for another password (read from PASSWORD_FILE).
    Add {
        #[arg(long, value_name = "PASSWORD_FILE")]
        new_password_file: PathBuf,
    },
    /// Remove a key (an id or a unique prefix). The last key cannot be removed.
    Remove { id: String },
    /// Replace the current key with one for a new password; no data is rewritten.
    Passwd {
        #[arg(long, value_name = "PASSWORD_FILE")]
        new_password_file: PathBuf,
    },
}

fn read_password(path: &Path) -> Result<Secret, Error> {
    let p = read_secret_file(path)
        .map_err(|e| Error::bad_input(format!("cannot read password file {}: {e}", path.display())))?;
    if p.is_empty() {
        return Err(Error::bad_input(format!("password file {} is empty", path.display())));
    }
    Ok(p)
}

pub async fn run(cmd: Command, ctx: &Ctx) -> Result<Outcome, Error> {
    let repo = ctx.repository().await?;
    let r = repo.clone();
    Ok(match cmd {
        Command::List => Outcome::Keys(blocking(move || r.keys()).await??),
        Command::Add { new_password_file } => {
            let pw = read_password(&new_password_file)?;
            let _lock = ctx.lock(&repo, false).await?;
            Outcome::KeyAdded(blocking(move || r.add_key(&pw)).await??)
        }
        Command::Remove { id } => {
            let _lock = ctx.lock(&repo, true).await?;
            Outcome::KeyRemoved(blocking(move || r.remove_key(&id)).await??)
        }
        Command::Passwd { new_password_file } => {
            let pw = read_password(&new_password_file)?;
            let _lock = ctx.lock(&repo, true).await?;
            let (removed, added) = blocking(move || r.change_password(&pw)).await??;
            Outcome::KeyReplaced { removed, added }
        }
    })
}
