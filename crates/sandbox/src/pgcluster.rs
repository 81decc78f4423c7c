//! The sandbox's PostgreSQL cluster: [`speechvault::pg::cluster`], with the sandbox's errors.

pub use speechvault::pg::cluster::{PgCluster, is_root};

use crate::SandboxError;

impl From<speechvault::pg::cluster::ClusterError> for SandboxError {
    fn from(e: speechvault::pg::cluster::ClusterError) -> Self {
        use speechvault::pg::cluster::ClusterError as C;
        match e {
            C::Missing(m) => SandboxError::MissingPostgres(m),
            C::BadDir(m) => SandboxError::BadInput(m),
            C::PortInUse(port) => SandboxError::PortInUse { what: "PostgreSQL", port },
            C::Failed(m) => SandboxError::Postgres(m),
            C::Io(e) => SandboxError::Io(e),
        }
    }
}

/// Where `initdb`, `pg_ctl` and `postgres` live.
pub fn find_bindir() -> Result<std::path::PathBuf, SandboxError> {
    Ok(speechvault::pg::cluster::find_bindir()?)
}
