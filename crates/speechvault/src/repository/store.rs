//! The two places a repository can live, behind one type: what rustic needs (its backend
//! traits) plus what it does not cover (lock files).

use std::sync::Arc;

use bytes::Bytes;
use rustic_core::WriteBackend;

use super::local::LocalStore;
use super::location::Location;
use super::s3::S3Store;

/// A repository's storage.
#[derive(Clone, Debug)]
pub enum Store {
    Local(Arc<LocalStore>),
    S3(Arc<S3Store>),
}

fn io<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Store {
    /// Opens the storage of `location`; S3 calls run on `handle`.
    pub fn open(location: &Location, handle: tokio::runtime::Handle) -> std::io::Result<Self> {
        Ok(match location {
            Location::Local(p) => Self::Local(Arc::new(LocalStore::new(p))),
            Location::S3(s) => Self::S3(Arc::new(S3Store::new(s, handle).map_err(io)?)),
        })
    }

    /// The storage as rustic's backend.
    pub fn backend(&self) -> Arc<dyn WriteBackend> {
        match self {
            Self::Local(l) => l.clone(),
            Self::S3(s) => s.clone(),
        }
    }

    /// Names of the files in `locks/`.
    pub fn list_locks(&self) -> std::io::Result<Vec<String>> {
        match self {
            Self::Local(l) => match std::fs::read_dir(l.locks_dir()) {
                Ok(rd) => Ok(rd
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                    .collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            Self::S3(s) => Ok(s
                .list_dir("locks")
                .map_err(io)?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()),
        }
    }

    pub fn read_lock(&self, name: &str) -> std::io::Result<Bytes> {
        match self {
            Self::Local(l) => std::fs::read(l.locks_dir().join(name)).map(Bytes::from),
            Self::S3(s) => s.read_key(&s.key_in("locks", name)).map_err(io),
        }
    }

    pub fn write_lock(&self, name: &str, data: Bytes) -> std::io::Result<()> {
        match self {
            Self::Local(l) => {
                let dir = l.locks_dir();
                if !dir.is_dir() {
                    std::fs::create_dir_all(&dir)?;
                }
                l.write_atomic(&dir.join(name), &[data])
            }
            Self::S3(s) => s.write_key(&s.key_in("locks", name), data).map_err(io),
        }
    }

    pub fn remove_lock(&self, name: &str) -> std::io::Result<()> {
        match self {
            Self::Local(l) => match std::fs::remove_file(l.locks_dir().join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Self::S3(s) => s.remove_key(&s.key_in("locks", name)).map_err(io),
        }
    }

    /// Free bytes where a local repository lives (`None` for S3).
    pub fn free_space(&self) -> Option<u64> {
        match self {
            Self::Local(l) => crate::support::fs::free_space(l.path()).ok(),
            Self::S3(_) => None,
        }
    }
}
