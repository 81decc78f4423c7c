//! Prints outcomes and errors: text for people, or one JSON document for scripts.
//!
//! With `--json` the whole of stdout is one JSON object: the outcome's document, and when
//! the command failed, `error`, `kind`, `exit_code` and (when the error stands for several)
//! `failures` beside it. Text goes to stdout line by line; a reader that goes away
//! (`speechvault ... | head -1`) ends the output quietly. Errors in text mode go to stderr.

mod backup;
mod repository;
mod restore;
mod selective;

use std::io::Write;

use speechvault::Error;

use crate::outcome::Outcome;

/// Lines of text being built for stdout.
#[derive(Default)]
pub struct Lines(Vec<String>);

impl Lines {
    pub fn push(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }
}

/// `lines.push(format!(...))`.
macro_rules! line {
    ($lines:expr, $($arg:tt)*) => { $lines.push(format!($($arg)*)) };
}
pub(crate) use line;

/// Rows moved per ownership rule (restore and transfer-ownership).
fn ownership(lines: &mut Lines, outcomes: &[speechvault::ops::ownership::RuleOutcome]) {
    if outcomes.is_empty() {
        return;
    }
    lines.push("ownership:");
    for o in outcomes {
        match (&o.column, &o.skipped) {
            (Some(c), _) => line!(lines, "  {}: {}.{c}: {} rows moved, {} left", o.database, o.table, o.rows, o.left),
            (None, Some(why)) => line!(lines, "  {}: {}: skipped ({why})", o.database, o.table),
            (None, None) => {}
        }
    }
}

/// The text of an outcome, line by line.
fn text(outcome: &Outcome, lines: &mut Lines) {
    match outcome {
        Outcome::Init { .. }
        | Outcome::Snapshots { .. }
        | Outcome::Copy(_)
        | Outcome::Forget(_)
        | Outcome::Prune(_)
        | Outcome::Check(_)
        | Outcome::Keys(_)
        | Outcome::KeyAdded(_)
        | Outcome::KeyRemoved(_)
        | Outcome::KeyReplaced { .. }
        | Outcome::Locks { .. }
        | Outcome::Unlocked { .. }
        | Outcome::VersionsRepaired(_)
        | Outcome::Repaired { .. }
        | Outcome::Export { .. }
        | Outcome::Import { .. } => repository::text(outcome, lines),
        Outcome::Backup { .. } | Outcome::Doctor(_) | Outcome::Ownership { .. } => backup::text(outcome, lines),
        Outcome::Restore(_) | Outcome::Verify(_) | Outcome::Drill(_) => restore::text(outcome, lines),
        Outcome::Selective(_)
        | Outcome::LsObjects { .. }
        | Outcome::LsInstances { .. }
        | Outcome::LsSummary { .. }
        | Outcome::LsItems { .. }
        | Outcome::Diff(_) => selective::text(outcome, lines),
        #[cfg(feature = "sandbox")]
        Outcome::Sandbox(s) => s.text(lines),
        Outcome::Text(_) => {}
        #[cfg(feature = "sandbox")]
        Outcome::Nothing => {}
    }
}

/// Prints what a command ended with on stdout: its outcome (if it got that far) and, with
/// `--json`, its error (if it failed; in text mode the caller prints the error on stderr).
/// Returns false when stdout could not take all of it for another reason than its reader
/// going away (`| head` ends the output quietly): a full disk, a closed descriptor.
pub fn emit(outcome: Option<&Outcome>, error: Option<&Error>, json: bool) -> bool {
    if json {
        let mut doc = match outcome.map(Outcome::json) {
            Some(Ok(doc)) => doc,
            Some(Err(e)) => serde_json::json!({ "error": format!("cannot render the report: {}", e.message()) }),
            None => serde_json::json!({}),
        };
        if let Some(e) = error {
            doc["error"] = e.message().into();
            doc["kind"] = serde_json::json!(e.kind());
            doc["exit_code"] = e.exit_code().into();
            // Not twice: a report that lists its errors already (check) keeps them there.
            let failures = serde_json::json!(e.failures());
            if !e.failures().is_empty() && doc.get("errors") != Some(&failures) {
                doc["failures"] = failures;
            }
        }
        return write_line(&doc.to_string());
    }
    let mut ok = true;
    match outcome {
        Some(Outcome::Text(text)) => ok = write_raw(text),
        Some(o) => {
            let mut lines = Lines::default();
            text(o, &mut lines);
            for l in &lines.0 {
                if !write_line(l) {
                    ok = false;
                    break;
                }
            }
        }
        None => {}
    }
    ok
}

/// Writes one line to stdout. Returns false once stdout fails (see [`emit`] for which
/// failures count).
fn write_line(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    settled(writeln!(out, "{text}").and_then(|()| out.flush()))
}

fn write_raw(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    settled(write!(out, "{text}").and_then(|()| out.flush()))
}

/// A write's outcome: its reader gone is no failure of ours (but ends the output).
fn settled(r: std::io::Result<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, std::sync::atomic::Ordering::Relaxed);
            false
        }
        Err(_) => false,
    }
}

/// Set once stdout's reader went away.
static READER_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdout's reader went away (the output ended early, quietly).
pub fn reader_gone() -> bool {
    READER_GONE.load(std::sync::atomic::Ordering::Relaxed)
}
