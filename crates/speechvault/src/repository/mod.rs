//! The backup repository: restic format through rustic_core, pinned and wrapped here only.
//!
//! Everything here blocks (rustic_core is synchronous): call it from blocking threads
//! (`tokio::task::spawn_blocking`), never from an async worker.
//!
//! Traps handled here, from the field notes:
//! - the handle that wrote a snapshot cannot read it: [`Repository::reader`] always re-indexes;
//! - errors inside a source are only logged by rustic: the sources of the backup (`ops::backup::source`)
//!   record them, and callers delete the snapshot if any occurred;
//! - entries must arrive in `Path::cmp` order: [`check_path_order`] enforces it;
//! - rustic's local backend writes files in place, so a killed process leaves truncated
//!   files: [`local::LocalStore`] writes through a temporary file and a rename.
//!
//! - [`location`]: local directories and `s3:` URLs; [`store`]: the storage behind both
//!   ([`local`], [`s3`]);
//! - [`lock`]: restic-compatible locks;
//! - [`integrity`]: checks that a backup's data is there and authentic;
//! - [`damage`]: damaged files isolated, reported and set aside (`repair snapshots|index`);
//! - [`fallback`]: what one repository lost, read from a copy (`--fallback-repository`);
//!   [`heal`]: written back from the copy (`check --repair-from`);
//! - [`maintenance`]: check and keys; [`prune`]: prune, also of immutable repositories; [`copy`]: backup sets between repositories.

pub(crate) mod copy;
pub mod damage;
pub(crate) mod fallback;
pub mod heal;
pub(crate) mod integrity;
pub(crate) mod local;
pub mod location;
pub mod lock;
pub mod maintenance;
pub mod prune;
pub mod retention;
pub(crate) mod s3;
pub(crate) mod store;

#[cfg(test)]
mod chunking_tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustic_core::Repository as Rustic;
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, KeyOptions, LsOptions, OpenStatus, ReadSource, RepositoryBackends,
    RepositoryOptions, SnapshotOptions,
};

use crate::support::secret::Secret;

pub use fallback::FallbackRepository;
pub use location::{Immutability, Location, S3Location};
pub use s3::immutable;
pub use s3::repair::{VersionRepair, VersionsRepaired};
pub use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no repository at {location}: run `speechvault init` first")]
    Missing { location: String },
    #[error("a repository already exists at {location}")]
    Exists { location: String },
    #[error(
        "wrong password for the repository at {location} (if the password is right, its key file is damaged: restore keys/ from a copy of the repository)"
    )]
    WrongPassword { location: String },
    #[error("repository at {location}: {reason}")]
    Rustic { location: String, reason: String },
    #[error("repository at {location}: {source}")]
    Io { location: String, source: std::io::Error },
    /// `damaged`: every damaged file when there are several (the reason names a few).
    #[error("repository at {location} is damaged: {reason}")]
    Damaged { location: String, reason: String, damaged: Vec<String> },
    #[error(
        "repository at {location} is locked by {holder}; gave up after {waited}s (wait longer with --lock-wait, or remove a stale lock with `speechvault unlock`)"
    )]
    Locked { location: String, holder: String, waited: u64 },
    #[error("repository at {location}: {reason}")]
    Refused { location: String, reason: String },
    #[error("interrupted while waiting for the lock on the repository at {location}; nothing was done")]
    Interrupted { location: String },
    #[error("entries out of path order: {before:?} came before {after:?}")]
    Order { before: PathBuf, after: PathBuf },
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// An open repository.
pub struct Repository {
    location: Location,
    store: Store,
    repo: Rustic<OpenStatus>,
    /// Kept to reopen cheaply: a password open runs the key derivation again.
    key: rustic_core::repofile::MasterKey,
    /// A runtime of our own when opened outside one (S3 calls need one).
    _runtime: Option<Arc<tokio::runtime::Runtime>>,
    /// The index loaded for writing, shared by the archives of one backup (see
    /// [`Repository::hold_index`]).
    writer: std::sync::Mutex<Option<Arc<Rustic<rustic_core::IndexedIdsStatus>>>>,
    /// Bytes the archives through this handle added to the repository (packed), for reports.
    stored: std::sync::atomic::AtomicU64,
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

/// rustic's error, in one line: the message and its causes, without the report boilerplate
/// rustic's `Display` adds ("Some additional details...", backtraces).
pub fn rustic_message(e: &rustic_core::RusticError) -> String {
    fn own(e: &rustic_core::RusticError) -> String {
        let s = e.display_log();
        let s = s.strip_prefix("Error: ").unwrap_or(&s);
        let s = s.split(": caused by: ").next().unwrap_or(s);
        // "... (kind: related to X)" is rustic's category; keep the category only.
        s.replace(" (kind: related to ", " (")
    }
    let mut parts = vec![own(e)];
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        // rustic boxes its errors before attaching them as causes.
        let rustic = cause
            .downcast_ref::<rustic_core::RusticError>()
            .or_else(|| cause.downcast_ref::<Box<rustic_core::RusticError>>().map(|b| b.as_ref()));
        match rustic {
            Some(r) => parts.push(own(r)),
            None => parts.push(cause.to_string()),
        }
        src = cause.source();
    }
    parts.dedup();
    crate::support::text::one_line(&parts.join(": "))
}

fn options() -> RepositoryOptions {
    // No cache: one more place to clean, and local repositories do not need it.
    RepositoryOptions::default().no_cache(true)
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

/// The runtime S3 calls run on: the current one, else a small one of our own.
fn runtime() -> std::io::Result<(tokio::runtime::Handle, Option<Arc<tokio::runtime::Runtime>>)> {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        return Ok((h, None));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    Ok((rt.handle().clone(), Some(Arc::new(rt))))
}

fn open_store(location: &Location) -> Result<(Store, Option<Arc<tokio::runtime::Runtime>>)> {
    let io = |source| RepoError::Io { location: location.describe(), source };
    if let Location::Local(p) = location
        && p.exists()
        && !p.is_dir()
    {
        return Err(RepoError::Refused {
            location: location.describe(),
            reason: "it is a file, not a directory: point the repository's path at a directory (init creates it)"
                .into(),
        });
    }
    let (handle, rt) = runtime().map_err(io)?;
    Ok((Store::open(location, handle).map_err(io)?, rt))
}

fn has_config(store: &Store, location: &Location) -> Result<bool> {
    let list = store
        .backend()
        .list_with_size(rustic_core::FileType::Config)
        .map_err(|e| RepoError::Rustic { location: location.describe(), reason: rustic_message(&e) })?;
    Ok(!list.is_empty())
}

impl Repository {
    pub(crate) fn err(&self, e: impl std::borrow::Borrow<rustic_core::RusticError>) -> RepoError {
        damage::classify(&self.location.describe(), rustic_message(e.borrow()))
    }

    pub(crate) fn io(&self, source: std::io::Error) -> RepoError {
        RepoError::Io { location: self.location.describe(), source }
    }

    /// Creates a new repository (a local one private to its owner; an S3 one creates its
    /// bucket when missing). With `chunker_from`, the new repository chunks like that one, so
    /// backup sets copied between them still deduplicate.
    pub fn init(location: &Location, password: &Secret, chunker_from: Option<&Repository>) -> Result<Self> {
        let (store, rt) = open_store(location)?;
        let err = |e: Box<rustic_core::RusticError>| RepoError::Rustic {
            location: location.describe(),
            reason: rustic_message(&e),
        };
        // First, for an immutable one: a server without versions cannot even be asked
        // whether a config is there.
        if let Store::S3(s) = &store
            && s.is_immutable()
        {
            s.ensure_object_lock().map_err(|reason| RepoError::Refused { location: location.describe(), reason })?;
        }
        if has_config(&store, location)? {
            return Err(RepoError::Exists { location: location.describe() });
        }
        store.backend().create().map_err(err)?;
        let repo = Rustic::new(&options(), &RepositoryBackends::new(store.backend(), None)).map_err(err)?;
        let creds = Credentials::password(password.expose());
        let repo = match chunker_from {
            None => repo.init(&creds, &KeyOptions::default(), &ConfigOptions::default()).map_err(err)?,
            Some(other) => {
                let mut config = other.repo.config().clone();
                config.id = rustic_core::Id::random().into();
                config.is_hot = None;
                config.append_only = None;
                repo.init_with_config(&creds, &KeyOptions::default(), config).map_err(err)?
            }
        };
        let key = repo.key();
        Ok(Self {
            location: location.clone(),
            store,
            repo,
            key,
            _runtime: rt,
            writer: Default::default(),
            stored: Default::default(),
        })
    }

    /// Opens an existing repository.
    pub fn open(location: &Location, password: &Secret) -> Result<Self> {
        let (store, rt) = open_store(location)?;
        if let Store::S3(s) = &store {
            s.check_versions().map_err(|reason| RepoError::Refused { location: location.describe(), reason })?;
        }
        if !has_config(&store, location)? {
            // Keys without a config: a repository that lost its config, not no repository.
            let keys = store.backend().list(rustic_core::FileType::Key).unwrap_or_default();
            if !keys.is_empty() {
                return Err(RepoError::Damaged {
                    location: location.describe(),
                    reason: "its config file is missing (the keys are there): restore `config` from a copy of the repository; `init` would not help".into(),
                    damaged: vec!["config".into()],
                });
            }
            return Err(RepoError::Missing { location: location.describe() });
        }
        let keys = store
            .backend()
            .list(rustic_core::FileType::Key)
            .map_err(|e| RepoError::Rustic { location: location.describe(), reason: rustic_message(&e) })?;
        if keys.is_empty() {
            return Err(RepoError::Damaged {
                location: location.describe(),
                reason: "it has a config file but no keys: it is not a usable restic repository".into(),
                damaged: Vec::new(),
            });
        }
        let repo = Rustic::new(&options(), &RepositoryBackends::new(store.backend(), None))
            .map_err(|e| RepoError::Rustic { location: location.describe(), reason: rustic_message(&e) })?;
        let repo = repo.open(&Credentials::password(password.expose())).map_err(|e| {
            if e.is_incorrect_password() {
                damage::damaged_keys(&store, location, &keys)
                    .unwrap_or_else(|| RepoError::WrongPassword { location: location.describe() })
            } else if rustic_message(&e).contains("deserialize the data for key") {
                damage::damaged_keys(&store, location, &keys).unwrap_or_else(|| RepoError::Damaged {
                    location: location.describe(),
                    reason: format!("a key file cannot be read ({})", rustic_message(&e)),
                    damaged: Vec::new(),
                })
            } else {
                damage::classify(&location.describe(), rustic_message(&e))
            }
        })?;
        let key = repo.key();
        Ok(Self {
            location: location.clone(),
            store,
            repo,
            key,
            _runtime: rt,
            writer: Default::default(),
            stored: Default::default(),
        })
    }

    /// A second handle on the same repository, opened with the master key.
    pub(crate) fn reopen(&self) -> Result<Rustic<OpenStatus>> {
        let repo =
            Rustic::new(&options(), &RepositoryBackends::new(self.store.backend(), None)).map_err(|e| self.err(e))?;
        repo.open(&Credentials::Masterkey(self.key.clone())).map_err(|e| self.err(e))
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How the repository's files are kept by object lock (`None`: they are not).
    pub fn immutability(&self) -> Option<Immutability> {
        match &self.location {
            Location::S3(s) => s.immutable,
            Location::Local(_) => None,
        }
    }

    /// In an immutable repository, every file whose newest version is not the one a backup
    /// wrote (written over, or hidden behind a delete marker): one version listing per
    /// directory, and a read of each suspicious file's versions. Empty otherwise.
    pub fn immutable_findings(&self) -> Result<Vec<immutable::Finding>> {
        match &self.store {
            Store::S3(s) if s.is_immutable() => s.audit().map_err(|e| RepoError::Io {
                location: self.location.describe(),
                source: std::io::Error::other(e.to_string()),
            }),
            _ => Ok(Vec::new()),
        }
    }

    /// In an immutable repository, makes every file's newest version the one a backup wrote
    /// again, so that restic reads the repository after an attack (see
    /// [`s3::repair`]). Refused for a repository that is not immutable. Blocking.
    pub fn repair_versions(&self, dry_run: bool) -> Result<VersionsRepaired> {
        match &self.store {
            Store::S3(s) if s.is_immutable() => s.repair_versions(dry_run).map_err(|e| RepoError::Io {
                location: self.location.describe(),
                source: std::io::Error::other(e.to_string()),
            }),
            _ => Err(RepoError::Refused {
                location: self.location.describe(),
                reason: "repair versions is for immutable repositories (an [immutable] section): this one keeps one version of each file".into(),
            }),
        }
    }

    /// Files removals left in place because their retention has not ended.
    pub fn held_files(&self) -> Vec<immutable::HeldFile> {
        match &self.store {
            Store::S3(s) => s.held(),
            Store::Local(_) => Vec::new(),
        }
    }

    /// Every snapshot in the repository; fails on the first damaged snapshot file
    /// ([`Repository::snapshot_scan`] isolates them).
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>> {
        self.repo.get_all_snapshots().map_err(|e| self.err(e))
    }

    /// Writes one snapshot from `source`. `parent`: `None` forces a full read (no parent);
    /// `Some(id)` uses that snapshot as parent.
    pub fn archive<R>(&self, source: R, spec: &SnapshotSpec, parent: Option<String>) -> Result<SnapshotFile>
    where
        R: ReadSource + 'static,
        <R as ReadSource>::Open: Send,
        <R as ReadSource>::Iter: Send,
    {
        let held = self.writer.lock().ok().and_then(|w| w.clone());
        let repo = match held {
            Some(repo) => repo,
            None => Arc::new(self.reopen()?.to_indexed_ids().map_err(|e| self.err(e))?),
        };
        let mut opts = SnapshotOptions::default().host(spec.host.clone()).label(spec.label.clone());
        opts.description = spec.description.clone();
        for t in &spec.tags {
            opts = opts.add_tags(t).map_err(|e| self.err(e))?;
        }
        let snap = SnapshotFile::from_options(&opts).map_err(|e| self.err(e))?;
        let mut backup = BackupOptions::default();
        match parent {
            None => backup.parent_opts.force = true,
            Some(id) => backup.parent_opts.parents = vec![id],
        }
        let snap = repo.archive(&backup, &source, snap, std::slice::from_ref(&spec.path)).map_err(|e| self.err(e))?;
        if let Some(summary) = &snap.summary {
            self.stored.fetch_add(summary.data_added_packed, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(snap)
    }

    /// Bytes added to the repository by every archive made through this handle so far.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Loads the index once for the archives that follow (until [`Repository::release_index`]):
    /// a backup writes several snapshots, at once, and each would otherwise read the whole
    /// index again. The parents they use are older backups, which the index already holds.
    pub fn hold_index(&self) -> Result<()> {
        let repo = Arc::new(self.reopen()?.to_indexed_ids().map_err(|e| self.err(e))?);
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(repo);
        }
        Ok(())
    }

    /// Drops the index [`Repository::hold_index`] loaded.
    pub fn release_index(&self) {
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
    }

    /// Removes snapshots (their data stays until a prune).
    pub fn delete_snapshots(&self, ids: &[rustic_core::repofile::SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.repo.delete_snapshots(ids).map_err(|e| self.err(e))
    }

    /// The repository with its full index, read afresh (an index built before our own writes
    /// misses their trees). A damaged index file hides only what it describes: the packs it
    /// named are then indexed from their headers (in memory; nothing is written), as
    /// `repair index` would, so every backup whose data is there still reads.
    pub(crate) fn indexed(&self) -> Result<Rustic<rustic_core::IndexedFullStatus>> {
        match self.reopen()?.to_indexed() {
            Ok(repo) => Ok(repo),
            Err(e) if rustic_message(&e).contains("error processing Index") => {
                tracing::warn!(
                    repository = %self.location,
                    "an index file does not read: the packs are indexed from their headers for this run (`speechvault repair index` fixes it for good)"
                );
                self.reopen()?.to_indexed_checked().map_err(|e| self.err(e))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// A reader over the repository as it is now (freshly indexed, so it sees new snapshots).
    pub fn reader(&self) -> Result<RepositoryReader> {
        let repo = self.indexed()?;
        Ok(RepositoryReader {
            location: self.location.clone(),
            backend: self.store.backend(),
            key: self.key.clone(),
            repo,
            fallback: None,
        })
    }
}

/// A snapshot's files, one at a time (see [`RepositoryReader::file_iter`]).
pub type FileIter<'a> = Box<dyn Iterator<Item = Result<(PathBuf, Node)>> + Send + 'a>;

/// Read access to snapshots' files.
pub struct RepositoryReader {
    location: Location,
    backend: Arc<dyn rustic_core::WriteBackend>,
    key: rustic_core::repofile::MasterKey,
    repo: Rustic<rustic_core::IndexedFullStatus>,
    /// Another repository holding the same backups, read where this one fails.
    fallback: Option<fallback::Fallback>,
}

impl RepositoryReader {
    fn err(&self, e: impl std::borrow::Borrow<rustic_core::RusticError>) -> RepoError {
        damage::classify(&self.location.describe(), rustic_message(e.borrow()))
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Every file in the snapshot, with its absolute path inside the snapshot.
    pub fn files(&self, snap: &SnapshotFile) -> Result<Vec<(PathBuf, Node)>> {
        self.file_iter(snap)?.collect()
    }

    /// Every file in the snapshot in tree order (sorted by path), loading one directory's tree
    /// at a time. With a fallback, a tree that does not read here is read there.
    pub fn file_iter<'a>(&'a self, snap: &SnapshotFile) -> Result<FileIter<'a>> {
        match (self.own_file_iter(snap), &self.fallback) {
            (Ok(files), None) => Ok(files),
            (Err(e), None) => Err(e),
            (files, Some(fb)) => fb.file_iter(files, snap),
        }
    }

    fn own_file_iter<'a>(&'a self, snap: &SnapshotFile) -> Result<FileIter<'a>> {
        let root = self.repo.node_from_snapshot_and_path(snap, "").map_err(|e| self.err(e))?;
        let iter = self.repo.ls(&root, &LsOptions::default()).map_err(|e| self.err(e))?;
        Ok(Box::new(iter.filter_map(move |item| match item {
            Ok((path, node)) => node.is_file().then(|| Ok((Path::new("/").join(path), node))),
            Err(e) => Some(Err(self.err(e))),
        })))
    }

    /// The node at `path` inside a snapshot.
    pub fn node(&self, snap: &SnapshotFile, path: &str) -> Result<Node> {
        match (self.repo.node_from_snapshot_and_path(snap, path).map_err(|e| self.err(e)), &self.fallback) {
            (Err(e), Some(fb)) => fb.node(e, snap, path),
            (found, _) => found,
        }
    }

    /// Streams a file's content into `w`; every blob is authenticated on the way. With a
    /// fallback, each blob that does not read here is read there.
    pub fn dump(&self, node: &Node, w: &mut impl Write) -> Result<()> {
        match &self.fallback {
            None => self.repo.dump(node, w).map_err(|e| self.err(e)),
            Some(fb) => fb.dump(self, node, w),
        }
    }

    /// A whole (small) file in memory.
    pub fn read(&self, snap: &SnapshotFile, path: &str) -> Result<Vec<u8>> {
        let node = self.node(snap, path)?;
        let mut buf = Vec::with_capacity(node.meta.size as usize);
        self.dump(&node, &mut buf)?;
        Ok(buf)
    }
}
