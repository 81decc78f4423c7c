//! What kind of failure an error is, so a front end can map it to an exit status without
//! knowing every error type.
//!
//! Every error enum of the library implements [`Kinded`]; wrappers delegate to what they wrap.
//! The CLI turns [`ErrorKind`] into its exit status (0 success, 1 failed, 2 bad input,
//! 3 differences or damage found, 130 interrupted).

/// The kinds of failure an operator acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The command, the config or the input is wrong (a name, an id, a password, a missing
    /// bucket): fix the input and run again. Nothing was changed.
    BadInput,
    /// The work itself failed (a server went away, a disk filled up, a tool failed).
    Failed,
    /// Verification or a check found differences or damage.
    Differences,
    /// Stopped by a signal (SIGINT, SIGTERM).
    Interrupted,
}

impl ErrorKind {
    /// The process exit status for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Failed => 1,
            Self::BadInput => 2,
            Self::Differences => 3,
            Self::Interrupted => 130,
        }
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Kinded {
    fn kind(&self) -> ErrorKind;
}

impl Kinded for std::io::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

/// Joins many failures into one readable line: the count and the first few. The full list
/// belongs in `--json` output.
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
        assert_eq!(ErrorKind::BadInput.exit_code(), 2);
    }
}
