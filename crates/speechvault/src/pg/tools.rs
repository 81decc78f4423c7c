//! The PostgreSQL client tools: where they are, which version they are, and the environment
//! they run in.
//!
//! The tools get a cleared environment: the connection settings we choose (`PGHOST`..., a
//! private `PGPASSFILE`, TLS files) plus a short allow-list (`PATH`, locale, `TZ`, `TMPDIR`).
//! Nothing else leaks into them: no `AWS_*` keys, no repository password.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{PgConfig, PgError};

/// Variables a tool inherits from our environment; everything else is cleared.
const INHERITED: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR"];

/// Environment for `pg_dump`/`pg_restore`/`psql`; removes the password file when dropped.
pub struct ToolEnv {
    _dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
    pub passfile: PathBuf,
}

impl ToolEnv {
    /// Gives a command exactly the allowed environment plus the connection variables.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        cmd.env_clear();
        for k in INHERITED {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }

    /// Same as [`ToolEnv::apply`], for tokio's command.
    pub fn apply_tokio(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear();
        for k in INHERITED {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }
}

impl PgConfig {
    /// Writes a private password file for the client tools and returns the environment they
    /// need. Keep the returned guard alive while the tool runs.
    pub fn tool_env(&self) -> Result<ToolEnv, PgError> {
        let dir = tempfile::Builder::new().prefix("speechvault-pg-").tempdir()?;
        let passfile = dir.path().join("pgpass");
        let mut f = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&passfile)?;
        if let Some(pw) = &self.password {
            // .pgpass format: host:port:database:user:password, with : and \ escaped.
            let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
            writeln!(f, "{}:{}:*:{}:{}", esc(&self.host), self.port, esc(&self.user), esc(pw.expose()))?;
        }
        drop(f);
        let mut vars = vec![
            ("PGHOST".to_string(), self.host.clone()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.user.clone()),
            ("PGPASSFILE".to_string(), passfile.display().to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), self.connect_timeout.as_secs().max(2).to_string()),
            ("PGSSLMODE".to_string(), self.sslmode.as_str().to_string()),
            ("PGAPPNAME".to_string(), "speechvault".to_string()),
        ];
        if let Some(ca) = &self.ca_file {
            vars.push(("PGSSLROOTCERT".to_string(), ca.display().to_string()));
        } else if matches!(self.sslmode, super::SslMode::VerifyCa | super::SslMode::VerifyFull) {
            // Our client trusts the system's CAs here; so does libpq with this value.
            vars.push(("PGSSLROOTCERT".to_string(), "system".to_string()));
        }
        if let Some(c) = &self.client_cert {
            vars.push(("PGSSLCERT".to_string(), c.cert_file.display().to_string()));
            vars.push(("PGSSLKEY".to_string(), c.key_file.display().to_string()));
        }
        Ok(ToolEnv { _dir: dir, vars, passfile })
    }
}

/// Makes a child process die with us (Linux `PR_SET_PDEATHSIG`), so a killed speechvault
/// leaves no `pg_dump` or `pg_restore` working on behind it. Spawn and wait for the child
/// from the same thread: the signal follows the thread that forked.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The first directory holding all of `programs`: `SPEECHVAULT_PG_BINDIR` alone when it is set
/// (the operator chose those binaries), else `PATH`, then `pg_config --bindir`, then Debian's
/// versioned directories, newest first (a newer client reads older servers; Debian keeps the
/// server binaries outside `PATH`).
pub fn find_bindir(programs: &[&str]) -> Option<PathBuf> {
    let has_all = |dir: &Path| programs.iter().all(|p| dir.join(p).is_file());
    if let Some(dir) = std::env::var_os("SPEECHVAULT_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return has_all(&dir).then_some(dir);
    }
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort_by_key(|d| {
        std::cmp::Reverse(
            d.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    candidates.extend(debian);
    candidates.into_iter().find(|d| has_all(d))
}

/// Finds a PostgreSQL client tool (`pg_dump`, `pg_restore`, `psql`); see [`find_bindir`].
pub fn tool(name: &str) -> Result<PathBuf, PgError> {
    find_bindir(&[name]).map(|d| d.join(name)).ok_or_else(|| {
        PgError::Tool(format!(
            "{name} not found: install the PostgreSQL client (apt-get install postgresql-client) or set SPEECHVAULT_PG_BINDIR"
        ))
    })
}

/// A tool's version as `(major, full text)`, from `TOOL --version` ("pg_dump (PostgreSQL) 15.8").
pub fn tool_version(path: &Path) -> Result<(u32, String), PgError> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .map_err(|e| PgError::Tool(format!("cannot run {} --version: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // "pg_dump (PostgreSQL) 15.8 (Debian 15.8-1)": the word after "(PostgreSQL)", else the last.
    let words: Vec<&str> = text.split_whitespace().collect();
    let version = words
        .iter()
        .position(|w| *w == "(PostgreSQL)")
        .and_then(|i| words.get(i + 1))
        .or(words.last())
        .copied()
        .unwrap_or("")
        .to_string();
    let major = parse_major(&version)
        .ok_or_else(|| PgError::Tool(format!("cannot read the version of {}: {text:?}", path.display())))?;
    Ok((major, version))
}

/// The major version of "15.8", "16beta1", "9.6.24" (as 9).
pub fn parse_major(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Fails unless `tool` can work with a server of `server_version_num` (e.g. 150008): the
/// client's major version must be at least the server's.
pub fn check_tool_version(tool_path: &Path, server_version_num: i32, server: &str) -> Result<(), PgError> {
    let (major, version) = tool_version(tool_path)?;
    let server_major = (server_version_num / 10_000) as u32;
    if major < server_major {
        let name = tool_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Err(PgError::ToolTooOld {
            tool: name,
            tool_version: version,
            server_version: format!("{}.{}", server_major, server_version_num % 10_000),
            server_major,
            server: server.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_major("15.8"), Some(15));
        assert_eq!(parse_major("16beta1"), Some(16));
        assert_eq!(parse_major("9.6.24"), Some(9));
        assert_eq!(parse_major("x"), None);
    }

    #[test]
    fn tools_get_no_foreign_secrets() {
        let pg = PgConfig::new("h", 1, "u", Some(crate::support::secret::Secret::new("pw")));
        let env = pg.tool_env().unwrap();
        let mut cmd = std::process::Command::new("env");
        env.apply(&mut cmd);
        let vars: Vec<String> = cmd.get_envs().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert!(vars.iter().all(|k| k.starts_with("PG") || INHERITED.contains(&k.as_str())), "{vars:?}");
        assert!(vars.contains(&"PGPASSFILE".to_string()));
        let text = std::fs::read_to_string(&env.passfile).unwrap();
        assert_eq!(text, "h:1:*:u:pw\n");
    }
}
