//! `speechvault`: the command line over the speechvault library.
//!
//! This file only parses arguments, calls the library and prints. Exit status: 0 success,
//! 1 the operation failed, 2 bad usage or input, 3 verification found differences.

mod sandbox_cmd;

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
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  speechvault sandbox up --name a --scale small     start a local Speech installation
  eval \"$(speechvault sandbox env a)\"               point psql and S3 clients at it
  speechvault sandbox down a                         stop it and delete its data";

#[derive(Debug, Subcommand)]
enum Command {
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
        let code = match error.downcast_ref::<speechvault_sandbox::SandboxError>() {
            Some(
                speechvault_sandbox::SandboxError::BadInput(_)
                | speechvault_sandbox::SandboxError::Exists { .. }
                | speechvault_sandbox::SandboxError::NotFound(_)
                | speechvault_sandbox::SandboxError::PortInUse { .. }
                | speechvault_sandbox::SandboxError::Profile(_)
                | speechvault_sandbox::SandboxError::MissingPostgres(_),
            ) => 2,
            _ => 1,
        };
        Failure { code, error }
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Sandbox(cmd) => sandbox_cmd::run(cmd, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                let v =
                    serde_json::json!({ "error": format!("{:#}", f.error), "exit_code": f.code });
                println!("{v}");
            }
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
