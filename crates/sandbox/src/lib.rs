//! Local Speech installations on demand, for speechvault's demo, tests and benchmarks.
//!
//! A sandbox is one Speech installation on 127.0.0.1: a private PostgreSQL cluster and an S3
//! server (ours, [`s3server`], or an external one), seeded with deterministic data
//! ([`seed`]). Everything a sandbox owns lives in its directory; a small registry in the
//! sandbox home maps names to directories so `down`, `list` and `env` find them again, even
//! after a crash.
//!
//! Lifecycle: [`up`] starts and seeds (and on any failure stops and removes whatever it had
//! started), [`down`] stops processes and deletes the directory, [`list`] reports, and
//! [`SandboxInfo::env_exports`] prints the standard `PG*`/`AWS_*` variables.

pub mod bulk;
pub mod harness;
mod info;
mod lifecycle;
pub mod pgcluster;
pub mod s3server;
pub mod seed;

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use speechvault::model::profile::Profile;
use speechvault::objstore::{ObjectStore, S3Config};
use speechvault::pg::PgConfig;
use speechvault::support::secret::{Secret, read_secret_file};

pub use info::{PgInfo, S3Info, SandboxInfo};
pub use lifecycle::*;
pub use seed::{Scale, SeedReport};

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    BadInput(String),
    #[error(
        "PostgreSQL server binaries are missing: {0}. Install them with `apt-get install postgresql` (Debian package postgresql-15) or set SPEECHVAULT_PG_BINDIR"
    )]
    MissingPostgres(String),
    #[error("{what} port {port} on 127.0.0.1 is already in use; pick another or leave it out to get a free one")]
    PortInUse { what: &'static str, port: u16 },
    #[error("a sandbox named {name:?} already exists (directory {dir}); run `speechvault sandbox down {name}` first")]
    Exists { name: String, dir: String },
    #[error("no sandbox named {0:?}; `speechvault sandbox list` shows the existing ones")]
    NotFound(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("S3 server: {0}")]
    S3Server(String),
    #[error("seeding failed: {0}")]
    Seed(String),
    #[error(transparent)]
    Pg(#[from] speechvault::pg::PgError),
    #[error(transparent)]
    ObjStore(#[from] speechvault::objstore::ObjStoreError),
    #[error(transparent)]
    Profile(#[from] speechvault::model::profile::ProfileError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl speechvault::error::Kinded for SandboxError {
    fn kind(&self) -> speechvault::error::ErrorKind {
        use speechvault::error::ErrorKind;
        match self {
            Self::BadInput(_)
            | Self::Exists { .. }
            | Self::NotFound(_)
            | Self::PortInUse { .. }
            | Self::Profile(_)
            | Self::MissingPostgres(_) => ErrorKind::BadInput,
            Self::Pg(e) => e.kind(),
            Self::ObjStore(e) => e.kind(),
            _ => ErrorKind::Failed,
        }
    }
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// What `up` should build.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    /// Where the sandbox keeps its files; default `<home>/<name>`.
    pub dir: Option<PathBuf>,
    pub scale: Scale,
    pub seed: u64,
    /// Profile component names; empty means all.
    pub components: Vec<String>,
    pub pg_port: Option<u16>,
    pub pg_user: String,
    pub s3_port: Option<u16>,
    /// Use this S3 server instead of starting ours (credentials from `external_keys`).
    pub external_s3: Option<ExternalS3>,
    pub bucket_suffix: Option<String>,
    /// The `speechvault` executable, which runs our S3 server as `sandbox serve-s3`.
    pub server_exe: PathBuf,
    /// Parallel uploads while seeding.
    pub parallel: usize,
    /// The registry directory (default [`home`]).
    pub home: PathBuf,
    /// Create databases and buckets and fill them; `false` gives bare servers (a restore
    /// target).
    pub seed_data: bool,
    /// Serve S3 over https with a self-signed certificate.
    pub tls: bool,
    /// PostgreSQL accepts TLS connections only, with a self-signed certificate.
    pub pg_tls: bool,
    /// Names in PostgreSQL's certificate (default 127.0.0.1 and localhost).
    pub pg_tls_names: Vec<String>,
    /// PostgreSQL also requires a client certificate (implies `pg_tls`).
    pub pg_client_certs: bool,
    /// How our S3 server behaves (listing encoding, default content type...).
    pub s3_behaviour: s3server::Behaviour,
}

/// An S3 endpoint that is not ours (Garage, MinIO, ...), for the sandbox's buckets.
#[derive(Debug, Clone)]
pub struct ExternalS3 {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
}

impl UpOptions {
    pub fn new(name: impl Into<String>, server_exe: PathBuf) -> Self {
        Self {
            name: name.into(),
            dir: None,
            scale: Scale::Tiny,
            seed: 1,
            components: Vec::new(),
            pg_port: None,
            pg_user: "postgres".into(),
            s3_port: None,
            external_s3: None,
            bucket_suffix: None,
            server_exe,
            parallel: 16,
            home: home(),
            seed_data: true,
            tls: false,
            pg_tls: false,
            pg_tls_names: vec!["127.0.0.1".into(), "localhost".into()],
            pg_client_certs: false,
            s3_behaviour: s3server::Behaviour::default(),
        }
    }
}

/// Runs our S3 server for the sandbox in `dir` until SIGTERM or SIGINT (the hidden
/// `sandbox serve-s3` command). Faults are read from `<dir>/faults.json` when it exists.
pub async fn serve_s3(dir: &Path, port: u16, behaviour: s3server::Behaviour) -> Result<()> {
    let ak = read_secret_file(&dir.join("secrets/s3-access-key"))?;
    let sk = read_secret_file(&dir.join("secrets/s3-secret-key"))?;
    let store = s3server::DigestStore::open(&dir.join("s3"), behaviour)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    std::fs::write(dir.join("s3.pid"), std::process::id().to_string())?;
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    // `up --tls` leaves a certificate and key beside the other secrets.
    let cert = dir.join("secrets/s3-tls.pem");
    let tls = if cert.is_file() {
        Some(s3server::tls_config(&std::fs::read(&cert)?, &std::fs::read(dir.join("secrets/s3-tls.key"))?)?)
    } else {
        None
    };
    tracing::info!(port, tls = tls.is_some(), "S3 server listening on 127.0.0.1");
    let faults = dir.join("faults.json");
    s3server::serve(store, listener, ak.expose(), sk.expose(), tls, Some(&faults), shutdown).await?;
    Ok(())
}
