//! PostgreSQL: connections for queries, and the environment for `pg_dump`/`pg_restore`.
//!
//! The only module that talks to PostgreSQL. Passwords reach the client tools through a
//! private, temporary password file (`PGPASSFILE`), never through arguments or logs.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// How to reach one PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user} (database {database:?}): {reason}")]
    Connect { host: String, port: u16, user: String, database: String, reason: String },
    #[error("PostgreSQL at {host}:{port} rejected the login of {user}: {reason}")]
    Auth { host: String, port: u16, user: String, reason: String },
    #[error("database {database:?} does not exist on PostgreSQL at {host}:{port}")]
    NoSuchDatabase { host: String, port: u16, database: String },
    #[error("PostgreSQL query failed on {database:?} ({what}): {reason}")]
    Query { database: String, what: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl PgConfig {
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>, password: Option<Secret>) -> Self {
        Self { host: host.into(), port, user: user.into(), password, connect_timeout: Duration::from_secs(10) }
    }

    /// Opens a connection to `database`; the connection task runs on the current runtime.
    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("speechvault")
            .connect_timeout(self.connect_timeout);
        if let Some(pw) = &self.password {
            cfg.password(pw.expose());
        }
        let attempt =
            tokio::time::timeout(self.connect_timeout + Duration::from_secs(2), cfg.connect(tokio_postgres::NoTls))
                .await;
        let (client, conn) = match attempt {
            Err(_) => {
                return Err(PgError::Connect {
                    host: self.host.clone(),
                    port: self.port,
                    user: self.user.clone(),
                    database: database.into(),
                    reason: format!("no answer within {}s", self.connect_timeout.as_secs()),
                });
            }
            Ok(Err(e)) => {
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                return Err(match code.as_deref() {
                    Some("3D000") => {
                        PgError::NoSuchDatabase { host: self.host.clone(), port: self.port, database: database.into() }
                    }
                    Some("28P01") | Some("28000") => PgError::Auth {
                        host: self.host.clone(),
                        port: self.port,
                        user: self.user.clone(),
                        reason: describe(&e),
                    },
                    _ => PgError::Connect {
                        host: self.host.clone(),
                        port: self.port,
                        user: self.user.clone(),
                        database: database.into(),
                        reason: describe(&e),
                    },
                });
            }
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }

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
        let vars = vec![
            ("PGHOST".to_string(), self.host.clone()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.user.clone()),
            ("PGPASSFILE".to_string(), passfile.display().to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), self.connect_timeout.as_secs().max(2).to_string()),
        ];
        Ok(ToolEnv { _dir: dir, vars, passfile })
    }
}

/// Environment for `pg_dump`/`pg_restore`/`psql`; removes the password file when dropped.
pub struct ToolEnv {
    _dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
    pub passfile: PathBuf,
}

impl ToolEnv {
    /// Applies the variables to a command, clearing the `PG*` ones it would otherwise inherit.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }
}

/// Drops a database if it exists, ending its sessions first (`WITH (FORCE)` on PostgreSQL 13
/// and later; older servers get the sessions terminated by hand).
pub async fn drop_database(admin: &tokio_postgres::Client, db: &str) -> Result<(), PgError> {
    let version: i32 =
        query(admin, "postgres", "server version", "SELECT current_setting('server_version_num')::int", &[]).await?[0]
            .get(0);
    if version >= 130_000 {
        return execute(
            admin,
            "postgres",
            "drop database",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)),
        )
        .await;
    }
    query(
        admin,
        "postgres",
        "end sessions",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db],
    )
    .await?;
    execute(admin, "postgres", "drop database", &format!("DROP DATABASE IF EXISTS {}", quote_ident(db))).await
}

/// Quotes an identifier for SQL (`"stt-customization"`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs a query, mapping errors to [`PgError::Query`].
pub async fn query(
    client: &tokio_postgres::Client,
    database: &str,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, PgError> {
    client.query(sql, params).await.map_err(|e| PgError::Query {
        database: database.into(),
        what: what.into(),
        reason: describe(&e),
    })
}

/// Runs statements without results, mapping errors to [`PgError::Query`].
pub async fn execute(client: &tokio_postgres::Client, database: &str, what: &str, sql: &str) -> Result<(), PgError> {
    client.batch_execute(sql).await.map_err(|e| PgError::Query {
        database: database.into(),
        what: what.into(),
        reason: describe(&e),
    })
}

/// The first directory holding all of `programs`: `SPEECHVAULT_PG_BINDIR` alone when it is set
/// (the operator chose those binaries), else `PATH`, then `pg_config --bindir`, then Debian's
/// versioned directories, newest first (a newer client reads older servers; Debian keeps the
/// server binaries outside `PATH`).
pub fn find_bindir(programs: &[&str]) -> Option<PathBuf> {
    let has_all = |dir: &std::path::Path| programs.iter().all(|p| dir.join(p).is_file());
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

/// Finds a PostgreSQL client tool (`pg_dump`, `pg_restore`); see [`find_bindir`].
pub fn tool(name: &str) -> Result<PathBuf, PgError> {
    find_bindir(&[name]).map(|d| d.join(name)).ok_or_else(|| {
        PgError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{name} not found: install the PostgreSQL client (apt-get install postgresql-client) or set SPEECHVAULT_PG_BINDIR"),
        ))
    })
}
