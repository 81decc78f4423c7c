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
    pub sslmode: SslMode,
    /// CA certificates for `verify-ca`/`verify-full` (libpq's `sslrootcert`).
    pub ca_file: Option<PathBuf>,
}

/// libpq's `sslmode`, as far as it applies here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without checking its certificate (libpq's default).
    #[default]
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS, certificate checked against `ca_file` (rustls also checks the host name, so this
    /// behaves as `verify-full`).
    VerifyCa,
    /// TLS, certificate and host name checked.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
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
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password,
            connect_timeout: Duration::from_secs(10),
            sslmode: SslMode::Prefer,
            ca_file: None,
        }
    }

    fn connect_error(&self, database: &str, reason: String) -> PgError {
        PgError::Connect {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: database.into(),
            reason,
        }
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
        match self.sslmode {
            SslMode::Disable => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                self.finish(cfg, database, tokio_postgres::NoTls).await
            }
            mode => {
                let trust = match mode {
                    SslMode::VerifyCa | SslMode::VerifyFull => {
                        crate::tls::Trust::Roots { ca_file: self.ca_file.clone(), system: self.ca_file.is_none() }
                    }
                    _ => crate::tls::Trust::Anything,
                };
                let tls = crate::tls::client_config(&trust).map_err(|e| self.connect_error(database, e))?;
                cfg.ssl_mode(if mode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                self.finish(cfg, database, tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await
            }
        }
    }

    async fn finish<T>(
        &self,
        cfg: tokio_postgres::Config,
        database: &str,
        tls: T,
    ) -> Result<tokio_postgres::Client, PgError>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Send + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let attempt = tokio::time::timeout(self.connect_timeout + Duration::from_secs(2), cfg.connect(tls)).await;
        let (client, conn) = match attempt {
            Err(_) => {
                return Err(
                    self.connect_error(database, format!("no answer within {}s", self.connect_timeout.as_secs()))
                );
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
                    _ => self.connect_error(database, describe(&e)),
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
            ("PGSSLMODE".to_string(), self.sslmode.as_str().to_string()),
        ];
        let mut vars = vars;
        if let Some(ca) = &self.ca_file {
            vars.push(("PGSSLROOTCERT".to_string(), ca.display().to_string()));
        }
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
