//! PostgreSQL: connections for queries, the catalog questions speechvault asks, and the
//! client tools (`pg_dump`, `pg_restore`, `psql`).
//!
//! The only module that talks to PostgreSQL. Passwords reach the client tools through a
//! private, temporary password file (`PGPASSFILE`), never through arguments or logs, and the
//! tools run with a cleared environment ([`tools`]).
//!
//! TLS follows libpq's `sslmode`: `prefer` (libpq's default: TLS when the server offers it,
//! certificate not checked), `require` (TLS, not checked), `verify-ca` (the chain is checked
//! against the CA file, the host name is not), `verify-full` (chain and host name). Our client
//! and the tools get the same mode, CA file and client certificate.
//!
//! - [`catalog`]: tables, row counts, content digests, owners, roles, versions;
//! - [`tools`]: finding the client tools, their version, and their environment;
//! - [`dumpdata`]: rows and large objects read out of a dump archive without a server.

pub mod catalog;
pub mod cluster;
pub(crate) mod dumpdata;
pub(crate) mod tools;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::secret::Secret;

pub use tools::{ToolEnv, find_bindir, tool};

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
    /// Client certificate and key for servers that require one (libpq's `sslcert`/`sslkey`).
    pub client_cert: Option<crate::tls::ClientCert>,
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
    /// TLS, certificate chain checked against `ca_file`; the host name is not checked.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
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
    /// `refused`: the server (or its TLS) turned the connection down, a setting to fix; not
    /// refused: it could not be reached.
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user} (database {database:?}): {reason}")]
    Connect { host: String, port: u16, user: String, database: String, reason: String, refused: bool },
    #[error("PostgreSQL at {host}:{port} rejected the login of {user}: {reason}")]
    Auth { host: String, port: u16, user: String, reason: String },
    #[error("PostgreSQL at {host}:{port}: TLS settings: {reason}")]
    Tls { host: String, port: u16, reason: String },
    #[error("database {database:?} does not exist on PostgreSQL at {host}:{port}")]
    NoSuchDatabase { host: String, port: u16, database: String },
    /// `sqlstate`: the server's error code, when it sent one (42501: missing privileges).
    #[error("PostgreSQL query failed on {database:?} ({what}): {reason}")]
    Query { database: String, what: String, reason: String, sqlstate: Option<String> },
    #[error(
        "{tool} {tool_version} is older than the PostgreSQL {server_version} server at {server}: install the PostgreSQL {server_major} client tools (or newer) and point SPEECHVAULT_PG_BINDIR at them"
    )]
    ToolTooOld { tool: String, tool_version: String, server_version: String, server_major: u32, server: String },
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
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

impl PgError {
    /// A failed query, with the server's SQLSTATE when it sent one.
    pub fn query(database: &str, what: &str, e: &tokio_postgres::Error) -> Self {
        Self::Query { database: database.into(), what: what.into(), reason: describe(e), sqlstate: sqlstate(e) }
    }

    /// A failure found by speechvault itself while querying (no server error behind it).
    pub fn query_failed(database: &str, what: &str, reason: impl Into<String>) -> Self {
        Self::Query { database: database.into(), what: what.into(), reason: reason.into(), sqlstate: None }
    }

    /// The server's SQLSTATE behind a failed query, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Query { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }
}

/// Whether a connection failure is the server (or TLS) turning it down, which is a setting
/// to fix: the server answered with an error, or the TLS handshake failed. tokio-postgres
/// has no public kind for "server does not support TLS", so that one is found by its
/// message; everything else by type.
fn refused(e: &tokio_postgres::Error) -> bool {
    if e.as_db_error().is_some() || e.to_string().contains("TLS") {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        src = inner.source();
    }
    false
}

/// The SQLSTATE of a failed query, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
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
            client_cert: None,
        }
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn connect_error(&self, database: &str, reason: String, refused: bool) -> PgError {
        PgError::Connect {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: database.into(),
            reason,
            refused,
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
                let system = self.ca_file.is_none();
                let trust = match mode {
                    SslMode::VerifyFull => crate::tls::Trust::Roots { ca_file: self.ca_file.clone(), system },
                    SslMode::VerifyCa => crate::tls::Trust::ChainOnly { ca_file: self.ca_file.clone(), system },
                    _ => crate::tls::Trust::Anything,
                };
                let tls = crate::tls::client_config(&trust, self.client_cert.as_ref())
                    .map_err(|reason| PgError::Tls { host: self.host.clone(), port: self.port, reason })?;
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
                return Err(self.connect_error(
                    database,
                    format!("no answer within {}s", self.connect_timeout.as_secs()),
                    false,
                ));
            }
            Ok(Err(e)) => {
                return Err(match sqlstate(&e).as_deref() {
                    Some("3D000") => {
                        PgError::NoSuchDatabase { host: self.host.clone(), port: self.port, database: database.into() }
                    }
                    Some("28P01") | Some("28000") => PgError::Auth {
                        host: self.host.clone(),
                        port: self.port,
                        user: self.user.clone(),
                        reason: describe(&e),
                    },
                    _ => self.connect_error(database, describe(&e), refused(&e)),
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
}

/// Drops a database if it exists, ending its sessions first (`WITH (FORCE)` on PostgreSQL 13
/// and later; older servers get the sessions terminated by hand).
pub async fn drop_database(admin: &tokio_postgres::Client, db: &str) -> Result<(), PgError> {
    let version = catalog::server_version_num(admin, "postgres").await?;
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
    client.query(sql, params).await.map_err(|e| PgError::query(database, what, &e))
}

/// Runs statements without results, mapping errors to [`PgError::Query`].
pub async fn execute(client: &tokio_postgres::Client, database: &str, what: &str, sql: &str) -> Result<(), PgError> {
    client.batch_execute(sql).await.map_err(|e| PgError::query(database, what, &e))
}

/// Whether `db` exists on the server behind `admin`.
pub async fn database_exists(admin: &tokio_postgres::Client, db: &str) -> Result<bool, PgError> {
    let rows = query(admin, "postgres", "find database", "SELECT count(*) FROM pg_database WHERE datname = $1", &[&db])
        .await?;
    Ok(rows[0].get::<_, i64>(0) > 0)
}
