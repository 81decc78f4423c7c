//! Commands run before and after an operation: quiesce the services before a backup, bring
//! them back after it, notify someone.
//!
//! A hook is a command line run by `sh -c`, or an argument list run as it is. It runs with a
//! time limit (its whole process group is killed when the limit passes) and speechvault's own
//! environment minus the secrets speechvault may have been given there (`SPEECHVAULT_PASSWORD`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `PGPASSWORD`), plus `SPEECHVAULT_OPERATION`,
//! `SPEECHVAULT_INSTALLATION` and, for the post-hook, the outcome
//! (`SPEECHVAULT_OUTCOME=success|failure`, `SPEECHVAULT_EXIT_CODE`, `SPEECHVAULT_ERROR`,
//! `SPEECHVAULT_BACKUP_ID`). Its output goes to speechvault's stderr, so stdout stays one
//! `--json` document.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

/// Environment variables a hook never sees.
const WITHHELD: [&str; 5] =
    ["SPEECHVAULT_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD", "RESTIC_PASSWORD"];

/// The default time limit of a hook.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the {which} hook could not be started: {reason}")]
    Start { which: &'static str, reason: String },
    #[error("the {which} hook failed ({status}){output}")]
    Failed { which: &'static str, status: String, output: String },
    #[error("the {which} hook did not finish within {limit:?} and was killed; raise --hook-timeout or fix the hook")]
    TimedOut { which: &'static str, limit: Duration },
    #[error("the {which} hook is empty: give a command line or a non-empty argument list")]
    Empty { which: &'static str },
}

/// A hook command: `"scale-down.sh zen"` (run by `sh -c`) or `["kubectl", "scale", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    Shell(String),
    Args(Vec<String>),
}

impl HookCommand {
    fn command(&self, which: &'static str) -> Result<tokio::process::Command, HookError> {
        match self {
            Self::Shell(line) if line.trim().is_empty() => Err(HookError::Empty { which }),
            Self::Shell(line) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(line);
                Ok(c)
            }
            Self::Args(args) => match args.split_first() {
                Some((program, rest)) if !program.is_empty() => {
                    let mut c = tokio::process::Command::new(program);
                    c.args(rest);
                    Ok(c)
                }
                _ => Err(HookError::Empty { which }),
            },
        }
    }
}

/// The `[hooks]` table of the config; command-line flags replace its entries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    pub pre: Option<HookCommand>,
    pub post: Option<HookCommand>,
    /// Time limit of each hook in seconds (default 600).
    pub timeout_secs: Option<u64>,
}

/// What the post-hook is told about the run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub success: bool,
    pub exit_code: u8,
    /// The error's one-line message, when the run failed.
    pub error: Option<String>,
    pub backup_id: Option<String>,
}

/// Runs one hook to its end. `which` is "pre" or "post".
pub async fn run(
    which: &'static str,
    hook: &HookCommand,
    timeout: Duration,
    operation: &str,
    installation: &str,
    outcome: Option<&Outcome>,
) -> Result<(), HookError> {
    let mut cmd = hook.command(which)?;
    for name in WITHHELD {
        cmd.env_remove(name);
    }
    cmd.env("SPEECHVAULT_HOOK", which)
        .env("SPEECHVAULT_OPERATION", operation)
        .env("SPEECHVAULT_INSTALLATION", installation);
    if let Some(o) = outcome {
        cmd.env("SPEECHVAULT_OUTCOME", if o.success { "success" } else { "failure" })
            .env("SPEECHVAULT_EXIT_CODE", o.exit_code.to_string())
            .env("SPEECHVAULT_ERROR", o.error.as_deref().unwrap_or(""))
            .env("SPEECHVAULT_BACKUP_ID", o.backup_id.as_deref().unwrap_or(""));
    }
    // The hook's output is the operator's: to stderr, line by line, stdout kept for --json.
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    // Its own process group, so a timeout ends everything it started.
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| HookError::Start { which, reason: e.to_string() })?;
    let pid = child.id();
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<String>::new()));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, which, tail.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, which, tail.clone())));
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| HookError::Start { which, reason: e.to_string() })?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: signals the hook's own process group, created above.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            for p in pumps {
                p.abort();
            }
            return Err(HookError::TimedOut { which, limit: timeout });
        }
    };
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
    }
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    };
    let lines: Vec<String> = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    let output = if lines.is_empty() { String::new() } else { format!(": {}", lines.join(" | ")) };
    Err(HookError::Failed { which, status, output })
}

/// Copies a hook's output to stderr, keeping its last lines for the error message.
async fn pump(
    stream: impl tokio::io::AsyncRead + Unpin,
    which: &'static str,
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(std::io::stderr(), "[{which}-hook] {line}");
        if let Ok(mut t) = tail.lock() {
            t.push_back(line.chars().take(200).collect());
            if t.len() > 3 {
                t.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> HookCommand {
        HookCommand::Shell(s.into())
    }

    #[tokio::test]
    async fn a_hook_sees_the_outcome() {
        // That it does not see the secrets is tested through the command (tests/cluster.rs):
        // setting them here would change the environment of every other test.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let outcome = Outcome { success: false, exit_code: 1, error: Some("boom".into()), backup_id: None };
        run(
            "post",
            &sh(&format!("env > {}", out.display())),
            Duration::from_secs(10),
            "backup",
            "prod",
            Some(&outcome),
        )
        .await
        .unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        for want in [
            "SPEECHVAULT_OUTCOME=failure",
            "SPEECHVAULT_EXIT_CODE=1",
            "SPEECHVAULT_ERROR=boom",
            "SPEECHVAULT_OPERATION=backup",
        ] {
            assert!(env.lines().any(|l| l == want), "{want} missing from {env}");
        }
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_errors_that_say_so() {
        let e = run("pre", &sh("echo cannot scale >&2; exit 7"), Duration::from_secs(10), "backup", "p", None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exit status 7") && e.to_string().contains("cannot scale"), "{e}");
        let start = std::time::Instant::now();
        let e =
            run("pre", &sh("sleep 30 & sleep 30"), Duration::from_millis(300), "backup", "p", None).await.unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10), "the hook and its children were killed");
        let args = HookCommand::Args(vec!["sh".into(), "-c".into(), "exit 0".into()]);
        run("post", &args, Duration::from_secs(10), "backup", "p", None).await.unwrap();
        assert!(matches!(
            run("pre", &HookCommand::Args(vec![]), Duration::from_secs(1), "b", "p", None).await,
            Err(HookError::Empty { .. })
        ));
    }
}
