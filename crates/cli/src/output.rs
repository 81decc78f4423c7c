//! What the command prints, and how failures become exit codes.
//!
//! Every library error knows its kind ([`speechvault::error::Kinded`]); [`Failure`] carries it
//! to `main`, which maps it to the exit status. Output goes through [`out!`]: a closed stdout
//! (`speechvault ... | head -1`) ends the output quietly instead of panicking.

use std::io::Write;

use speechvault::error::{ErrorKind, Kinded};

/// An error on its way out, with its kind.
pub struct Failure {
    pub kind: ErrorKind,
    pub error: anyhow::Error,
    /// Every individual failure behind the error, for `--json` (the message shows a few).
    pub failures: Vec<String>,
    /// The command already printed its `--json` document (a verification report).
    pub reported: bool,
}

impl Failure {
    pub fn new(kind: ErrorKind, error: impl Into<anyhow::Error>) -> Self {
        Self { kind, error: error.into(), failures: Vec::new(), reported: false }
    }
    pub fn bad_input(msg: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::BadInput, anyhow::anyhow!("{msg}"))
    }
    pub fn already_reported(mut self) -> Self {
        self.reported = true;
        self
    }
}

/// Converts each library error with its own kind.
macro_rules! kinded {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::new(e.kind(), e)
            }
        }
    )*};
}

kinded!(
    speechvault::ops::backup::BackupError,
    speechvault::model::catalog::CatalogError,
    speechvault::model::config::ConfigError,
    speechvault::model::instance::InstanceIdError,
    speechvault::model::inventory::InventoryError,
    speechvault::objstore::ObjStoreError,
    speechvault::ops::ownership::OwnershipError,
    speechvault::pg::PgError,
    speechvault::model::profile::ProfileError,
    speechvault::repository::RepoError,
    speechvault::ops::verify::VerifyError,
    speechvault::ops::check::CheckError,
    speechvault::ops::copy::CopyError,
    speechvault::ops::retention::RetentionError,
    speechvault::ops::export::ExportError,
    speechvault::ops::import::ImportError,
    speechvault::observe::hooks::HookError,
    speechvault::observe::metrics::MetricsError,
    speechvault::ops::selective::SelectiveError,
);
#[cfg(feature = "sandbox")]
kinded!(speechvault_sandbox::SandboxError);

impl From<speechvault::ops::restore::RestoreError> for Failure {
    fn from(e: speechvault::ops::restore::RestoreError) -> Self {
        let failures = e.failures();
        Failure { failures, ..Failure::new(e.kind(), e) }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(ErrorKind::Failed, e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::new(ErrorKind::Failed, e)
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::new(ErrorKind::Failed, anyhow::anyhow!("background task failed: {e}"))
    }
}

/// Writes one line to stdout. Returns false once stdout is closed (the reader went away).
pub fn line(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(_) => false,
    }
}

/// `println!` that stops quietly when stdout is closed.
macro_rules! out {
    () => { $crate::output::line("") };
    ($($arg:tt)*) => { $crate::output::line(&format!($($arg)*)) };
}
pub(crate) use out;

/// Prints a `--json` document (one line).
pub fn json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)?;
    line(&text);
    Ok(())
}
