//! `speechvault`: the command line over the speechvault library.
//!
//! This file only parses arguments, calls the library and prints. Exit status comes from the
//! error's own kind: 0 success, 1 the operation failed, 2 bad usage or input, 3 verification
//! found differences, 130 interrupted.

mod observe;
mod output;
mod repo_cmd;
mod restore_cmd;
#[cfg(feature = "sandbox")]
mod sandbox_cmd;
mod selective_cmd;
mod vault_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use speechvault::support::interrupt::{Stop, StopHandle};

use output::Failure;

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
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines on stderr as text, or as one JSON object per line (for log collectors).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", env = "SPEECHVAULT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Work on the repository named NAME in the config ([repositories.NAME]) instead of the
    /// default [repository].
    #[arg(long, global = true, value_name = "NAME")]
    repository: Option<String>,
    /// How long to wait for another run's lock on the repository (e.g. 30s, 10m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "10m", value_parser = vault_cmd::parse_duration)]
    lock_wait: std::time::Duration,
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
  speechvault restore latest --to dr --resume
                                            finish a restore that was interrupted
  speechvault verify latest --against dr    compare a live installation with a backup
  speechvault ls latest --customizations    what a backup holds
  speechvault diff latest --against prod    what changed since
  speechvault restore latest --to prod --customization <id> --dry-run
                                            bring back one customization (plan first)
  speechvault sandbox up --name a           start a local Speech installation
  eval \"$(speechvault sandbox env a)\"       point psql and S3 clients at it

Exit status: 0 success, 1 the operation failed, 2 bad usage or input (nothing changed),
3 verification found differences, 130 interrupted (SIGINT/SIGTERM; what a restore wrote into
an empty target is rolled back, an interrupted backup leaves no backup).";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the repository named in the config (encrypted with its password); an S3
    /// repository's bucket is created when missing.
    Init {
        /// With --repository NAME: chunk like the default repository, so backups copied
        /// between them still deduplicate.
        #[arg(long)]
        copy_chunker_params: bool,
    },
    /// Back up an installation: databases first, then buckets, then the manifest.
    ///
    /// Detects the installed components (or takes --components), dumps each database with
    /// pg_dump from one consistent snapshot (row counts and content digests are read in that
    /// same snapshot) and streams every object into the repository with its key, size, ETag,
    /// content type, user metadata and SHA-256. Objects deleted while the backup runs are
    /// recorded as vanished; objects changed meanwhile are read as they are now. If anything
    /// fails, no complete-looking backup is left.
    Backup(vault_cmd::BackupArgs),
    /// List backups (complete and incomplete) in the repository.
    Snapshots {
        /// Only backups of this installation.
        #[arg(long)]
        installation: Option<String>,
    },
    /// Restore a backup into an installation, move ownership, verify.
    ///
    /// Before anything on the target changes, the target is checked (empty unless --clean,
    /// --data-only or --resume), every dump is read and authenticated, and every pack the
    /// objects need is checked. A restore into an empty target that fails or is interrupted
    /// is rolled back. Exit status 3 when verification finds differences (nothing is rolled
    /// back then: the report says what differs).
    Restore(vault_cmd::RestoreArgs),
    /// Compare a live installation with a backup: rows (counts and content), objects, bytes,
    /// SHA-256, content types and metadata.
    Verify(vault_cmd::VerifyArgs),
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
    /// Copy backups into another repository (3-2-1), re-encrypted under its key.
    ///
    /// Whole backup sets, manifest last; sets the target already holds are skipped.
    Copy(repo_cmd::CopyArgs),
    /// Remove backups by retention rules (per installation, whole backups only), and
    /// incomplete backups older than a grace period.
    ///
    /// Rules come from the config ([retention], [installations.NAME.retention]) unless given
    /// here. --dry-run shows what would go and why each kept backup stays.
    Forget(repo_cmd::ForgetArgs),
    /// Free the space of removed backups.
    Prune {
        /// Unused space to leave (e.g. 5%, 1GiB, unlimited).
        #[arg(long)]
        max_unused: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the repository's structure; with --read-data read and authenticate every byte.
    ///
    /// Damage is reported with the backups, databases and objects it affects; exit status 3.
    Check {
        #[arg(long)]
        read_data: bool,
        /// Read only part of the data: N% (at random) or n/m (run 1/m .. m/m to cover all).
        #[arg(long, value_name = "N%|n/m", value_parser = |s: &str| s.parse::<speechvault::repository::maintenance::ReadSubset>())]
        read_data_subset: Option<speechvault::repository::maintenance::ReadSubset>,
        #[command(flatten)]
        run: observe::RunArgs,
    },
    /// Look inside a backup without restoring anything (no database server needed): its
    /// customizations, speakers, service instances, or objects under a prefix.
    Ls(selective_cmd::LsArgs),
    /// What changed on an installation since a backup: customizations and speakers added,
    /// removed or changed, and objects added, removed or changed per bucket. Changes nothing.
    Diff {
        /// Backup id (or a unique prefix), or `latest`.
        #[arg(default_value = "latest")]
        backup: String,
        /// Installation to compare (config name, or sandbox:NAME).
        #[arg(long)]
        against: String,
        /// With `latest`: the latest backup of this installation (default: of the one
        /// compared).
        #[arg(long)]
        source: Option<String>,
    },
    /// Pre-flight check: would a backup of this installation run now?
    ///
    /// Reaches the object store and PostgreSQL with the configured TLS, finds the installed
    /// components, checks the pg_dump/pg_restore versions against the server, measures every
    /// bucket and database, opens the repository (free space, keys) and estimates the next
    /// backup from the last one. Each check is marked ✔, ! (works, but act) or ✘ with the fix.
    /// Exit status 0 when a backup would run, 1 when a check failed, 2 for a bad config.
    /// Nothing is written.
    Doctor {
        /// Installation to check (config name, or sandbox:NAME).
        #[arg(long)]
        installation: String,
    },
    /// Manage the repository's keys (passwords).
    #[command(subcommand)]
    Key(repo_cmd::KeyCmd),
    /// Remove stale locks (of runs that are gone); with --remove-all every lock.
    Unlock {
        #[arg(long)]
        remove_all: bool,
        /// Only list the locks and which are stale.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a backup out in the manual procedure's layout: minio/<bucket>/<key> and
    /// postgres/<database>.backup.sql, with export-report.json (keys a file system cannot
    /// hold are written under escaped/ and listed there, with every content type and metadata).
    Export {
        /// Backup id (or a unique prefix), or `latest`.
        backup: String,
        /// A new or empty directory.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Take a directory made with the manual procedure (or by export) into the repository as
    /// a backup.
    ///
    /// The SQL files are loaded into a scratch database (a temporary local cluster, or
    /// --scratch INSTALLATION's server) and dumped like any backup.
    Import {
        /// The directory (minio/<bucket>/..., postgres/<database>.backup.sql).
        dir: std::path::PathBuf,
        /// The installation the backup is recorded for.
        #[arg(long = "as", value_name = "INSTALLATION")]
        as_installation: String,
        /// Load the SQL files on this installation's PostgreSQL server (into temporary
        /// databases) instead of a temporary local cluster.
        #[arg(long, value_name = "INSTALLATION")]
        scratch: Option<String>,
    },
    /// Local Speech installations (PostgreSQL + S3 on 127.0.0.1) for demos, tests, benchmarks.
    #[cfg(feature = "sandbox")]
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCmd),
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,speechvault=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// The first SIGINT or SIGTERM asks the running operation to stop and clean up; a second one
/// ends the process at once.
fn watch_signals(handle: StopHandle) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("speechvault: stopping (cleaning up; a second signal ends it at once)");
        handle.stop();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        std::process::exit(130);
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let log_format = cli.log_format;
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
    let (repository, lock_wait) = (cli.repository.clone(), cli.lock_wait);
    let result = runtime.block_on(async move {
        let (handle, stop) = Stop::new();
        #[cfg(feature = "sandbox")]
        if let Command::Sandbox(cmd) = cli.command {
            return sandbox_cmd::run(cmd, json).await;
        }
        watch_signals(handle);
        let cfg = vault_cmd::load_config(config.as_deref())?;
        let ctx = vault_cmd::Ctx { cfg, json, repository, lock_wait, stop, recorded: Default::default() };
        run(cli.command, &ctx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let code = f.kind.exit_code();
            // Library errors carry their causes in their own message: print it once, on one line.
            let message = speechvault::support::text::one_line(&f.error.to_string());
            if json && !f.reported {
                let mut doc = serde_json::json!({
                    "error": message,
                    "kind": f.kind,
                    "exit_code": code,
                });
                if !f.failures.is_empty() {
                    doc["failures"] = serde_json::json!(f.failures);
                }
                output::line(&doc.to_string());
            }
            if matches!(log_format, LogFormat::Json) {
                tracing::error!(exit_code = code, kind = ?f.kind, "{message}");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command, ctx: &vault_cmd::Ctx) -> Result<(), Failure> {
    match command {
        #[cfg(feature = "sandbox")]
        Command::Sandbox(_) => Ok(()),
        Command::Init { copy_chunker_params } => vault_cmd::init(ctx, copy_chunker_params).await,
        Command::Backup(args) => {
            let (run, label) = (args.run.clone(), installation_label(ctx, &args.from));
            observe::observed(ctx, "backup", &label, &run, vault_cmd::backup(ctx, args)).await
        }
        Command::Snapshots { installation } => vault_cmd::snapshots(ctx, installation).await,
        Command::Restore(args) => {
            let (run, label) = (args.run.clone(), installation_label(ctx, &args.to));
            observe::observed(ctx, "restore", &label, &run, vault_cmd::restore(ctx, args)).await
        }
        Command::Verify(args) => {
            let (run, label) = (args.run.clone(), installation_label(ctx, &args.against));
            observe::observed(ctx, "verify", &label, &run, vault_cmd::verify_cmd(ctx, args)).await
        }
        Command::TransferOwnership { on, from_instance, to_instance, dry_run } => {
            vault_cmd::transfer_ownership(ctx, on, from_instance, to_instance, dry_run).await
        }
        Command::Copy(args) => repo_cmd::copy(ctx, args).await,
        Command::Forget(args) => {
            let run = args.run.clone();
            let label = if args.installation.len() == 1 { args.installation[0].clone() } else { repository_label(ctx) };
            observe::observed(ctx, "forget", &label, &run, repo_cmd::forget(ctx, args)).await
        }
        Command::Prune { max_unused, dry_run } => repo_cmd::prune(ctx, max_unused, dry_run).await,
        Command::Check { read_data, read_data_subset, run } => {
            let label = repository_label(ctx);
            observe::observed(ctx, "check", &label, &run, repo_cmd::check(ctx, read_data, read_data_subset)).await
        }
        Command::Key(cmd) => repo_cmd::key(ctx, cmd).await,
        Command::Ls(args) => selective_cmd::ls(ctx, args).await,
        Command::Diff { backup, against, source } => selective_cmd::diff(ctx, &backup, &against, source).await,
        Command::Doctor { installation } => vault_cmd::doctor(ctx, &installation).await,
        Command::Unlock { remove_all, dry_run } => repo_cmd::unlock(ctx, remove_all, dry_run).await,
        Command::Export { backup, to } => repo_cmd::export(ctx, backup, to).await,
        Command::Import { dir, as_installation, scratch } => repo_cmd::import(ctx, dir, as_installation, scratch).await,
    }
}

/// The `installation` label of a run's metrics: the installation's own name (`sandbox:a` is
/// `a`), as its backups record it.
fn installation_label(ctx: &vault_cmd::Ctx, spec: &str) -> String {
    vault_cmd::installation(&ctx.cfg, spec).map(|i| i.name).unwrap_or_else(|_| spec.to_string())
}

/// The label of runs on a whole repository (forget of every installation, check).
fn repository_label(ctx: &vault_cmd::Ctx) -> String {
    format!("repository:{}", ctx.repository.as_deref().unwrap_or("default"))
}
