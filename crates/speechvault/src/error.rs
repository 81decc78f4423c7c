//! What kind of failure an error is, and the one error every operation's error converts into.
//!
//! An operator acts on four kinds of failure, each with its own exit status ([`KINDS`], the
//! only place exit statuses are decided). Every error type of the library knows its kind
//! through [`Kinded`]; the implementations stand together in one table (`kinds.rs`), so the
//! rule for each variant can be read and tested in one place. [`Error`] carries any of them
//! to a front end with its kind and the full list of individual failures behind it (the
//! message shows a few; `--json` gets them all).

use std::fmt;

/// The kinds of failure an operator acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The work itself failed (a server went away, a disk filled up, a tool failed).
    Failed,
    /// The command, the config or the input is wrong (a name, an id, a password, a missing
    /// bucket): fix the input and run again. Nothing was changed.
    BadInput,
    /// Verification or a check found differences or damage.
    Differences,
    /// Stopped by a signal (SIGINT, SIGTERM).
    Interrupted,
}

/// Every kind with its exit status and what the status tells the operator: the one table the
/// CLI's exit statuses and its `--help` come from.
pub const KINDS: [(ErrorKind, u8, &str); 4] = [
    (ErrorKind::Failed, 1, "the operation failed"),
    (ErrorKind::BadInput, 2, "bad usage or input (nothing changed)"),
    (ErrorKind::Differences, 3, "verification found differences, or a check found damage"),
    (ErrorKind::Interrupted, 130, "interrupted (SIGINT/SIGTERM)"),
];

impl ErrorKind {
    /// The process exit status for this kind (see [`KINDS`]).
    pub fn exit_code(self) -> u8 {
        KINDS.iter().find(|(k, _, _)| *k == self).map_or(1, |(_, code, _)| *code)
    }

    /// The exit statuses as one line for help texts: "0 success, 1 the operation failed, ...".
    pub fn exit_status_help() -> String {
        let mut parts = vec!["0 success".to_string()];
        parts.extend(KINDS.iter().map(|(_, code, what)| format!("{code} {what}")));
        parts.join(", ")
    }
}

/// An error that knows its [`ErrorKind`], and the individual failures behind it when it
/// stands for many (objects that failed, conflicts, damaged files).
pub trait Kinded {
    fn kind(&self) -> ErrorKind;
    fn failures(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Any error of the library, with its kind and its failures, for a front end.
pub struct Error {
    kind: ErrorKind,
    failures: Vec<String>,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// An error of the front end's own (a refused combination of options, say).
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self { kind, failures: Vec::new(), inner: message.to_string().into() }
    }

    /// Bad usage or input: nothing was changed.
    pub fn bad_input(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// The work failed.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// Every individual failure behind the error (empty when it is one failure).
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The message on one line (library errors carry their causes in their own message).
    pub fn message(&self) -> String {
        crate::support::text::one_line(&self.inner.to_string())
    }

    /// The same error, its message prefixed by what was going on (`"{what}: {message}"`).
    pub fn context(self, what: impl fmt::Display) -> Self {
        let message = format!("{what}: {}", self.message());
        Self { inner: message.into(), ..self }
    }

    /// The same error, standing for these individual failures (all of them go to `--json`).
    pub fn with_failures(self, failures: Vec<String>) -> Self {
        Self { failures, ..self }
    }

    /// The same error with another kind (a failure that is bad input in this context).
    pub fn with_kind(self, kind: ErrorKind) -> Self {
        Self { kind, ..self }
    }

    /// The error it was made from, when it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }
}

impl<E: Kinded + std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Self {
        Self { kind: e.kind(), failures: e.failures(), inner: Box::new(e) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error").field("kind", &self.kind).field("message", &self.message()).finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// Joins many failures into one readable line: the count and the first few. The full list
/// goes to `--json` output through [`Kinded::failures`].
pub fn summarize(items: &[String], shown: usize) -> String {
    match items.len() {
        0 => String::new(),
        n if n <= shown => items.join("; "),
        n => format!("{n} failures, the first {shown}: {} (the rest in --json output)", items[..shown].join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_stay_short() {
        let many: Vec<String> = (0..1000).map(|i| format!("object {i} failed")).collect();
        let s = summarize(&many, 3);
        assert!(s.starts_with("1000 failures, the first 3: object 0 failed; object 1 failed; object 2 failed"));
        assert!(s.len() < 200);
        assert_eq!(summarize(&many[..2], 3), "object 0 failed; object 1 failed");
    }

    #[test]
    fn every_kind_has_one_distinct_exit_status() {
        let kinds = [ErrorKind::Failed, ErrorKind::BadInput, ErrorKind::Differences, ErrorKind::Interrupted];
        for k in kinds {
            assert_eq!(KINDS.iter().filter(|(t, _, _)| *t == k).count(), 1, "{k:?} must be in KINDS once");
        }
        let mut codes: Vec<u8> = KINDS.iter().map(|(_, c, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), KINDS.len(), "exit statuses must differ");
        assert!(!codes.contains(&0), "0 is success");
        assert_eq!(
            kinds.map(|k| k.exit_code()),
            [1, 2, 3, 130],
            "the exit statuses scripts rely on (documented in --help and the docs)"
        );
        assert_eq!(
            ErrorKind::exit_status_help(),
            "0 success, 1 the operation failed, 2 bad usage or input (nothing changed), 3 verification found differences, or a check found damage, 130 interrupted (SIGINT/SIGTERM)"
        );
    }

    #[test]
    fn an_error_keeps_its_kind_and_failures_through_context() {
        let e = Error::bad_input("no such thing").context("restore");
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.message(), "restore: no such thing");
    }
}
