//! The backup repository: restic format through rustic_core, pinned and wrapped here only.
//!
//! Everything here blocks (rustic_core is synchronous): call it from blocking threads
//! (`tokio::task::spawn_blocking`), never from an async worker.
//!
//! Traps handled here, from the field notes:
//! - the handle that wrote a snapshot cannot read it: [`Vault::reader`] always re-indexes;
//! - errors inside a source are only logged by rustic: the sources in [`crate::source`]
//!   record them, and callers delete the snapshot if any occurred;
//! - entries must arrive in `Path::cmp` order: [`check_path_order`] enforces it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustic_backend::local::LocalBackend;
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, KeyOptions, LsOptions, OpenStatus, ReadSource, Repository,
    RepositoryBackends, RepositoryOptions, SnapshotOptions,
};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no repository at {path}: run `speechvault init` first")]
    Missing { path: PathBuf },
    #[error("a repository already exists at {path}")]
    Exists { path: PathBuf },
    #[error("wrong password for the repository at {path}")]
    WrongPassword { path: PathBuf },
    #[error("repository at {path}: {reason}")]
    Rustic { path: PathBuf, reason: String },
    #[error("repository at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("entries out of path order: {before:?} came before {after:?}")]
    Order { before: PathBuf, after: PathBuf },
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// An open repository.
pub struct Vault {
    path: PathBuf,
    repo: Repository<OpenStatus>,
    /// Kept to reopen cheaply: a password open runs the key derivation again.
    key: rustic_core::repofile::MasterKey,
}

/// What to record in a new snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    /// The installation name; with label and paths it selects the parent chain.
    pub host: String,
    pub label: String,
    pub tags: Vec<String>,
    /// The one directory the snapshot holds, e.g. `/databases/stt-async`.
    pub path: PathBuf,
    pub description: Option<String>,
}

fn rustic_err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Rustic { path: path.into(), reason: e.to_string() }
}

fn backends(path: &Path) -> Result<RepositoryBackends> {
    let be = LocalBackend::new(path.to_string_lossy(), std::iter::empty()).map_err(|e| rustic_err(path, e))?;
    Ok(RepositoryBackends::new(std::sync::Arc::new(be), None))
}

fn options() -> RepositoryOptions {
    // Local repositories need no cache; a cache directory would be one more place to clean.
    RepositoryOptions::default().no_cache(true)
}

fn has_config(path: &Path) -> bool {
    path.join("config").is_file()
}

/// Checks that `paths` come in the order rustic's archiver needs (`Path::cmp`).
pub fn check_path_order<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    let mut prev: Option<&Path> = None;
    for p in paths {
        if let Some(before) = prev
            && before.cmp(p) != std::cmp::Ordering::Less
        {
            return Err(RepoError::Order { before: before.into(), after: p.into() });
        }
        prev = Some(p);
    }
    Ok(())
}

impl Vault {
    /// Creates a new repository; the directory becomes private to its owner.
    pub fn init(path: &Path, password: &Secret) -> Result<Self> {
        if has_config(path) {
            return Err(RepoError::Exists { path: path.into() });
        }
        std::fs::create_dir_all(path).map_err(|source| RepoError::Io { path: path.into(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| RepoError::Io { path: path.into(), source })?;
        let repo = Repository::new(&options(), &backends(path)?).map_err(|e| rustic_err(path, e))?;
        let repo = repo
            .init(&Credentials::password(password.expose()), &KeyOptions::default(), &ConfigOptions::default())
            .map_err(|e| rustic_err(path, e))?;
        let key = repo.key();
        Ok(Self { path: path.into(), repo, key })
    }

    /// Opens an existing repository.
    pub fn open(path: &Path, password: &Secret) -> Result<Self> {
        if !has_config(path) {
            return Err(RepoError::Missing { path: path.into() });
        }
        let repo = Repository::new(&options(), &backends(path)?).map_err(|e| rustic_err(path, e))?;
        let repo = repo.open(&Credentials::password(password.expose())).map_err(|e| {
            if e.is_incorrect_password() { RepoError::WrongPassword { path: path.into() } } else { rustic_err(path, e) }
        })?;
        let key = repo.key();
        Ok(Self { path: path.into(), repo, key })
    }

    /// A second handle on the same repository, opened with the master key.
    fn reopen(&self) -> Result<Repository<OpenStatus>> {
        let repo = Repository::new(&options(), &backends(&self.path)?).map_err(|e| rustic_err(&self.path, e))?;
        repo.open(&Credentials::Masterkey(self.key.clone())).map_err(|e| rustic_err(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every snapshot in the repository.
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>> {
        self.repo.get_all_snapshots().map_err(|e| rustic_err(&self.path, e))
    }

    /// Writes one snapshot from `source`. `parent`: `None` forces a full read (no parent);
    /// `Some(id)` uses that snapshot as parent.
    pub fn archive<R>(&self, source: R, spec: &SnapshotSpec, parent: Option<String>) -> Result<SnapshotFile>
    where
        R: ReadSource + 'static,
        <R as ReadSource>::Open: Send,
        <R as ReadSource>::Iter: Send,
    {
        let p = &self.path;
        let repo = self.reopen()?.to_indexed_ids().map_err(|e| rustic_err(p, e))?;
        let mut opts = SnapshotOptions::default().host(spec.host.clone()).label(spec.label.clone());
        opts.description = spec.description.clone();
        for t in &spec.tags {
            opts = opts.add_tags(t).map_err(|e| rustic_err(p, e))?;
        }
        let snap = SnapshotFile::from_options(&opts).map_err(|e| rustic_err(p, e))?;
        let mut backup = BackupOptions::default();
        match parent {
            None => backup.parent_opts.force = true,
            Some(id) => backup.parent_opts.parents = vec![id],
        }
        repo.archive(&backup, &source, snap, std::slice::from_ref(&spec.path)).map_err(|e| rustic_err(p, e))
    }

    /// Removes snapshots (their data stays until a prune).
    pub fn delete_snapshots(&self, ids: &[rustic_core::repofile::SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.repo.delete_snapshots(ids).map_err(|e| rustic_err(&self.path, e))
    }

    /// A reader over the repository as it is now (freshly indexed, so it sees new snapshots).
    pub fn reader(&self) -> Result<VaultReader> {
        // Reopen from scratch: an index built before our own writes misses their trees.
        let repo = self.reopen()?.to_indexed().map_err(|e| rustic_err(&self.path, e))?;
        Ok(VaultReader { path: self.path.clone(), repo })
    }

    /// Runs rustic's structural check (and with `read_data`, reads every pack).
    pub fn check(&self, read_data: bool) -> Result<()> {
        let mut opts = rustic_core::CheckOptions::default();
        if read_data {
            opts = opts.read_data(true);
        }
        let results = self.repo.check(opts).map_err(|e| rustic_err(&self.path, e))?;
        results.is_ok().map_err(|e| rustic_err(&self.path, e))
    }
}

/// Read access to snapshots' files.
pub struct VaultReader {
    path: PathBuf,
    repo: Repository<rustic_core::IndexedFullStatus>,
}

impl VaultReader {
    /// Every file in the snapshot, with its absolute path inside the snapshot.
    pub fn files(&self, snap: &SnapshotFile) -> Result<Vec<(PathBuf, Node)>> {
        let root = self.repo.node_from_snapshot_and_path(snap, "").map_err(|e| rustic_err(&self.path, e))?;
        let mut out = Vec::new();
        for item in self.repo.ls(&root, &LsOptions::default()).map_err(|e| rustic_err(&self.path, e))? {
            let (path, node) = item.map_err(|e| rustic_err(&self.path, e))?;
            if node.is_file() {
                out.push((Path::new("/").join(path), node));
            }
        }
        Ok(out)
    }

    /// The node at `path` inside a snapshot.
    pub fn node(&self, snap: &SnapshotFile, path: &str) -> Result<Node> {
        self.repo.node_from_snapshot_and_path(snap, path).map_err(|e| rustic_err(&self.path, e))
    }

    /// Streams a file's content into `w`.
    pub fn dump(&self, node: &Node, w: &mut impl Write) -> Result<()> {
        self.repo.dump(node, w).map_err(|e| rustic_err(&self.path, e))
    }

    /// A whole (small) file in memory.
    pub fn read(&self, snap: &SnapshotFile, path: &str) -> Result<Vec<u8>> {
        let node = self.node(snap, path)?;
        let mut buf = Vec::with_capacity(node.meta.size as usize);
        self.dump(&node, &mut buf)?;
        Ok(buf)
    }
}
