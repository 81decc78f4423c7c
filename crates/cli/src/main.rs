//! `speechvault`: the command line over the speechvault library.
//!
//! - [`commands`]: one file per command, each its clap `Args` and a `run` that returns an
//!   [`outcome::Outcome`];
//! - [`settings`]: the command line over the config over the environment, resolved once;
//! - [`render`]: outcomes as text, or as one JSON document;
//! - [`observe`]: hooks and metrics around scheduled runs, read from the outcome;
//! - [`context`]: what every command works with (config, repository, lock wait, stop flag).
//!
//! The exit status comes from the error's kind (`speechvault::error::KINDS`).

mod commands;
mod context;
#[cfg(test)]
mod docs_examples;
mod observe;
mod outcome;
mod render;
mod settings;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use speechvault::support::interrupt::{Stop, StopHandle};
use speechvault::{Error, ErrorKind};

/// Disaster recovery for the Speech services (speech-to-text, text-to-speech).
///
/// Backs up PostgreSQL databases and S3 buckets of a Speech installation into one encrypted,
/// deduplicated restic-format repository, restores them into another installation, moves
/// ownership to the target service instance, and verifies the result.
#[derive(Debug, Parser)]
#[command(name = "speechvault", version, propagate_version = true)]
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
    #[arg(long, global = true, value_name = "DURATION", default_value = "10m", value_parser = settings::parse_duration)]
    lock_wait: std::time::Duration,
    /// Commands that only read the repository (restore, verify, check, snapshots, ls, diff,
    /// export) take no lock, as restic's --no-lock: for a repository on a read-only mount
    /// (detected by itself too). Commands that write ignore it.
    #[arg(long, global = true)]
    no_lock: bool,
    #[command(subcommand)]
    command: commands::Command,
}

const EXAMPLES: &str = "Installations are names from the config, or sandbox:NAME for a local sandbox.

Examples:
  speechvault -c speechvault.toml init      create the repository named in the config
  speechvault backup --from prod            back up what is installed on prod
  speechvault snapshots                     list backups
  speechvault restore latest --to dr --from-instance 1612345678901234 --to-instance 9d0b6c1e-0f6a-4c55-a6b1-2a2f5b7c9e10
                                            restore into dr as another service instance, verify
  speechvault restore latest --to dr --resume
                                            finish a restore that was interrupted
  speechvault verify latest --against dr    compare a live installation with a backup
  speechvault ls latest --customizations    what a backup holds
  speechvault diff latest --against prod    what changed since
  speechvault restore latest --to prod --customization 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f --dry-run
                                            bring back one customization (plan first)
  speechvault sandbox up --name a           start a local Speech installation
  eval \"$(speechvault sandbox env a)\"       point psql and S3 clients at it";

/// The command line's definition, with its examples and exit statuses (for `--help`, the man
/// pages and the completions).
pub fn cli() -> clap::Command {
    let exit = format!(
        "Exit status: {}. What a restore wrote into an empty target is rolled back on failure or interruption; an interrupted backup leaves no backup.",
        ErrorKind::exit_status_help()
    );
    Cli::command().after_help(format!("{EXAMPLES}\n\n{exit}"))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,speechvault=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A log line stderr cannot take is dropped: tracing's own report of that failure goes
    // through eprintln!, which panics on a closed or broken stderr and would abort the work.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
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
        let _ = writeln!(std::io::stderr(), "speechvault: stopping (cleaning up; a second signal ends it at once)");
        handle.stop();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        std::process::exit(130);
    });
}

/// Parses the command line. A usage error exits 2, and with `--json` says so in JSON too.
fn parse() -> Result<Cli, ExitCode> {
    use clap::FromArgMatches;
    let matches = cli().try_get_matches();
    match matches.and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let usage =
                !matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
            if usage && std::env::args().any(|a| a == "--json") {
                // clap's message up to its usage block, on one line.
                let message = e.render().to_string();
                let head: Vec<&str> = message
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let error = Error::bad_input(head.join(" ").trim_start_matches("error: "));
                render::emit(None, Some(&error), true);
            }
            let _ = e.print();
            Err(ExitCode::from(if usage { ErrorKind::BadInput.exit_code() } else { 0 }))
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            return ExitCode::from(ErrorKind::Failed.exit_code());
        }
    };
    // Everything speechvault creates (repository files, spooled dumps) is private.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let (json, log_format) = (cli.json, cli.log_format);
    let finished = runtime.block_on(async move {
        let (handle, stop) = Stop::new();
        let cfg = if cli.command.needs_config() {
            watch_signals(handle);
            match settings::load_config(cli.config.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => return observe::Finished { outcome: None, error: Some(e) },
            }
        } else {
            Default::default()
        };
        let ctx = context::Ctx {
            cfg,
            json,
            repository_name: cli.repository,
            lock_wait: cli.lock_wait,
            no_lock: cli.no_lock,
            stop,
        };
        commands::run(cli.command, &ctx).await
    });
    let reported = render::emit(finished.outcome.as_ref(), finished.error.as_ref(), json) || render::reader_gone();
    match finished.error {
        // The work is done; its report is lost (stdout closed or full): say so, exit 1.
        None if !reported => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "error: the command succeeded, but its report could not be written to stdout (closed or full)"
            );
            ExitCode::from(ErrorKind::Failed.exit_code())
        }
        None => ExitCode::SUCCESS,
        Some(e) => {
            let code = e.exit_code();
            if matches!(log_format, LogFormat::Json) {
                tracing::error!(exit_code = code, kind = ?e.kind(), "{}", e.message());
            } else {
                let _ = writeln!(std::io::stderr(), "error: {}", e.message());
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command: names, groups, conflicts, requires.
    #[test]
    fn the_command_line_is_consistent() {
        super::cli().debug_assert();
    }
}
