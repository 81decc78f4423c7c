//! `speechvault`: the command line over the speechvault library.
//!
//! This file only parses arguments, calls the library and prints. Exit status: 0 success,
//! 1 the operation failed, 2 bad usage or input, 3 verification found differences.

mod sandbox_cmd;
mod vault_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Disaster recovery for the Speech services (speech-to-text, text-to-speech).
///
/// Backs up PostgreSQL databases and S3 buckets of a Speech installation into one encrypted,
/// deduplicated restic-format repository, restores them into another installation, moves
/// ownership to the target service instance, and verifies the result.
#[derive(Debug, Parser)]
#[command(name = "speechvault", version, propagate_version = true, after_help = EXAMPLES)]
struct Cli {
    /// Config file (TOML: [repository] and [installations.NAME]). Default: $SPEECHVAULT_CONFIG,
    /// else ./speechvault.toml when present; AWS_* and PG* variables fill what it leaves out.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Installations are names from the config, or sandbox:NAME for a local sandbox.

Examples:
  speechvault -c speechvault.toml init      create the repository named in the config
  speechvault backup --from prod            back up what is installed on prod
  speechvault snapshots                     list backups
  speechvault restore latest --to dr --from-instance 1612345678901234 --to-instance <uuid>
                                            restore into dr as another service instance, verify
  speechvault verify latest --against dr    compare a live installation with a backup
  speechvault sandbox up --name a           start a local Speech installation
  eval \"$(speechvault sandbox env a)\"       point psql and S3 clients at it

Exit status: 0 success, 1 the operation failed, 2 bad usage or input (nothing changed),
3 verification found differences.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the repository named in the config (encrypted with its password).
    Init,
    /// Back up an installation: databases first, then buckets, then the manifest.
    ///
    /// Detects the installed components (or takes --components), dumps each database with
    /// pg_dump from one consistent snapshot and streams every object into the repository with
    /// its key, size, ETag, content type, user metadata and SHA-256. If anything fails, no
    /// complete-looking backup is left.
    Backup(vault_cmd::BackupArgs),
    /// List backups (complete and incomplete) in the repository.
    Snapshots {
        /// Only backups of this installation.
        #[arg(long)]
        installation: Option<String>,
    },
    /// Restore a backup into an installation, move ownership, verify.
    ///
    /// The target must be empty (missing or empty databases and buckets) unless --clean or
    /// --data-only. Exit status 3 when verification finds differences.
    Restore(vault_cmd::RestoreArgs),
    /// Compare a live installation with a backup: row counts, objects, bytes, SHA-256.
    Verify {
        /// Backup id (or a unique prefix), or `latest`.
        #[arg(default_value = "latest")]
        backup: String,
        /// Installation to check (config name, or sandbox:NAME).
        #[arg(long)]
        against: String,
        /// Compare counts and sizes only, without reading objects back.
        #[arg(long)]
        no_digests: bool,
        #[arg(long)]
        parallel: Option<usize>,
    },
    /// Move ownership of rows from one service instance to another on a live installation.
    TransferOwnership {
        /// Installation to change (config name, or sandbox:NAME).
        #[arg(long)]
        on: String,
        /// Current owner (UUID or numeric Cloud Pak for Data instance id).
        #[arg(long)]
        from_instance: String,
        /// New owner.
        #[arg(long)]
        to_instance: String,
        /// Count the rows that would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Local Speech installations (PostgreSQL + S3 on 127.0.0.1) for demos, tests, benchmarks.
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCmd),
}

/// An error with the exit status it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = if is_bad_input(&error) { 2 } else { 1 };
        Failure { code, error }
    }
}

/// Whether an error is the caller's to fix by changing the command or the config (exit 2),
/// rather than a failure of the work itself (exit 1).
fn is_bad_input(error: &anyhow::Error) -> bool {
    use speechvault::{
        backup::BackupError, catalog::CatalogError, inventory::InventoryError, repository::RepoError,
        restore::RestoreError,
    };
    use speechvault_sandbox::SandboxError;
    let inventory = |e: &InventoryError| {
        matches!(e, InventoryError::Missing { .. } | InventoryError::Nothing { .. } | InventoryError::Profile(_))
    };
    let repo = |e: &RepoError| {
        matches!(e, RepoError::Missing { .. } | RepoError::Exists { .. } | RepoError::WrongPassword { .. })
    };
    let catalog = |e: &CatalogError| match e {
        CatalogError::Repo(r) => repo(r),
        CatalogError::NoBackup { .. }
        | CatalogError::NotFound(_)
        | CatalogError::Ambiguous(_)
        | CatalogError::Incomplete(_) => true,
        CatalogError::BadManifest { .. } => false,
    };
    // Rejected credentials are the operator's input to fix, wherever they surface.
    use speechvault::{objstore::ObjStoreError, pg::PgError};
    let creds_s3 = |e: &ObjStoreError| matches!(e, ObjStoreError::Credentials { .. });
    let creds_pg = |e: &PgError| matches!(e, PgError::Auth { .. });
    let creds_inventory = |e: &InventoryError| match e {
        InventoryError::Pg(p) => creds_pg(p),
        InventoryError::ObjStore(o) => creds_s3(o),
        _ => false,
    };
    let credentials = match (
        error.downcast_ref::<BackupError>(),
        error.downcast_ref::<RestoreError>(),
        error.downcast_ref::<speechvault::verify::VerifyError>(),
        error.downcast_ref::<InventoryError>(),
    ) {
        (Some(BackupError::ObjStore(o)), ..) => creds_s3(o),
        (Some(BackupError::Pg(p)), ..) => creds_pg(p),
        (Some(BackupError::Inventory(i)), ..) => creds_inventory(i),
        (_, Some(RestoreError::ObjStore(o)), ..) => creds_s3(o),
        (_, Some(RestoreError::Pg(p)), ..) => creds_pg(p),
        (_, _, Some(speechvault::verify::VerifyError::ObjStore(o)), _) => creds_s3(o),
        (_, _, Some(speechvault::verify::VerifyError::Pg(p)), _) => creds_pg(p),
        (_, _, _, Some(i)) => creds_inventory(i),
        _ => {
            error.downcast_ref::<ObjStoreError>().is_some_and(creds_s3)
                || error.downcast_ref::<PgError>().is_some_and(creds_pg)
        }
    };
    if credentials {
        return true;
    }
    if let Some(e) = error.downcast_ref::<SandboxError>() {
        return matches!(
            e,
            SandboxError::BadInput(_)
                | SandboxError::Exists { .. }
                | SandboxError::NotFound(_)
                | SandboxError::PortInUse { .. }
                | SandboxError::Profile(_)
                | SandboxError::MissingPostgres(_)
        );
    }
    if let Some(e) = error.downcast_ref::<BackupError>() {
        return match e {
            BackupError::Inventory(i) => inventory(i),
            BackupError::Repo(r) => repo(r),
            BackupError::Profile(_) => true,
            _ => false,
        };
    }
    if let Some(e) = error.downcast_ref::<RestoreError>() {
        return match e {
            RestoreError::Catalog(c) => catalog(c),
            RestoreError::Repo(r) => repo(r),
            RestoreError::NotEmpty { .. } | RestoreError::NoSchema(_) | RestoreError::NotInBackup(..) => true,
            RestoreError::Ownership(speechvault::ownership::OwnershipError::Same(_)) => true,
            _ => false,
        };
    }
    if let Some(e) = error.downcast_ref::<CatalogError>() {
        return catalog(e);
    }
    if let Some(e) = error.downcast_ref::<RepoError>() {
        return repo(e);
    }
    if let Some(e) = error.downcast_ref::<InventoryError>() {
        return inventory(e);
    }
    error.downcast_ref::<speechvault::config::ConfigError>().is_some()
        || error.downcast_ref::<speechvault::instance::InstanceIdError>().is_some()
        || matches!(
            error.downcast_ref::<speechvault::ownership::OwnershipError>(),
            Some(speechvault::ownership::OwnershipError::Same(_))
        )
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,speechvault=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Everything speechvault creates (repository files, spooled dumps) is private.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let json = cli.json;
    let config = cli.config.clone();
    let result = runtime.block_on(async move {
        let cfg = || vault_cmd::load_config(config.as_deref()).map_err(Failure::from);
        match cli.command {
            Command::Sandbox(cmd) => sandbox_cmd::run(cmd, json).await,
            Command::Init => vault_cmd::init(&cfg()?, json).await,
            Command::Backup(args) => vault_cmd::backup(&cfg()?, args, json).await,
            Command::Snapshots { installation } => vault_cmd::snapshots(&cfg()?, installation, json).await,
            Command::Restore(args) => vault_cmd::restore(&cfg()?, args, json).await,
            Command::Verify { backup, against, no_digests, parallel } => {
                vault_cmd::verify_cmd(&cfg()?, backup, against, !no_digests, parallel, json).await
            }
            Command::TransferOwnership { on, from_instance, to_instance, dry_run } => {
                vault_cmd::transfer_ownership(&cfg()?, on, from_instance, to_instance, dry_run, json).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                let v = serde_json::json!({ "error": format!("{:#}", f.error), "exit_code": f.code });
                println!("{v}");
            }
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
