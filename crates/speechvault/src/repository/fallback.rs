//! What one repository lost, read from another that holds the same backups
//! (`restore --fallback-repository`).
//!
//! A copy made with `copy` holds the same blobs under the same ids (restic names a blob by the
//! SHA-256 of its plaintext, and a copy moves blobs without cutting them again), and each of
//! its snapshots records the id it had here (`original`). So a blob that is missing or does
//! not authenticate here is fetched there by id, decrypted under that repository's key and
//! checked as every blob is; a tree that does not read here is walked in the copy's snapshot
//! of the same part. Nothing is written to either repository: `check --repair-from` heals the
//! repository itself.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use rustic_core::BlobId;
use rustic_core::repofile::BlobType;
use rustic_core::repofile::{Node, SnapshotFile};

use super::{FileIter, RepoError, RepositoryReader, Result};

/// The other repository, with its snapshots (read once).
pub(crate) struct Fallback {
    reader: Box<RepositoryReader>,
    snapshots: Vec<SnapshotFile>,
    /// Blobs and trees read there rather than here.
    reads: AtomicU64,
}

impl RepositoryReader {
    /// This reader, reading through `other` whatever does not read here.
    pub fn with_fallback(mut self, other: RepositoryReader) -> Result<Self> {
        let mut snapshots = Vec::new();
        // A damaged snapshot file there is only one part it cannot stand in for.
        for (id, mut snap) in other.repo.stream_files::<SnapshotFile>().map_err(|e| other.err(e))?.flatten() {
            snap.id = id;
            snapshots.push(snap);
        }
        self.fallback = Some(Fallback { reader: Box::new(other), snapshots, reads: AtomicU64::new(0) });
        Ok(self)
    }

    /// How many blobs and trees were read from the fallback repository, and where it is.
    pub fn fallback_reads(&self) -> Option<(u64, String)> {
        self.fallback.as_ref().map(|f| (f.reads.load(Ordering::Relaxed), f.reader.location.describe()))
    }
}

impl Fallback {
    /// The fallback's snapshot of the same part: the one copied from `snap`, the one `snap`
    /// was copied from, or a sibling copy of the same original.
    fn same_snapshot(&self, snap: &SnapshotFile) -> Option<&SnapshotFile> {
        let original = snap.original.unwrap_or(snap.id);
        self.snapshots.iter().find(|s| s.id == original || s.original == Some(original))
    }

    fn used(&self, what: &str) {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            tracing::warn!(fallback = %self.reader.location, "{what} does not read in this repository: reading it from the fallback repository");
        }
    }

    pub(super) fn node(&self, own: RepoError, snap: &SnapshotFile, path: &str) -> Result<Node> {
        let Some(there) = self.same_snapshot(snap) else { return Err(own) };
        let node = self.reader.node(there, path).map_err(|_| own)?;
        self.used("a tree");
        Ok(node)
    }

    pub(super) fn file_iter<'a>(&'a self, own: Result<FileIter<'a>>, snap: &SnapshotFile) -> Result<FileIter<'a>> {
        let there = self.same_snapshot(snap).cloned();
        match own {
            Ok(files) => Ok(Box::new(Healing { own: Some(files), theirs: None, fallback: self, there, last: None })),
            Err(e) => {
                let Some(there) = there else { return Err(e) };
                let files = self.reader.file_iter(&there).map_err(|_| e)?;
                self.used("a tree");
                Ok(files)
            }
        }
    }

    pub(super) fn dump(&self, own: &RepositoryReader, node: &Node, w: &mut impl Write) -> Result<()> {
        for id in node.content.iter().flatten() {
            let blob = BlobId::from(**id);
            let data = match own.repo.get_blob_cached(&blob, BlobType::Data) {
                Ok(data) => data,
                Err(here) => match self.reader.repo.get_blob_cached(&blob, BlobType::Data) {
                    Ok(data) => {
                        self.used("a blob");
                        data
                    }
                    Err(there) => {
                        return Err(RepoError::Damaged {
                            location: own.location.describe(),
                            reason: format!(
                                "blob {} of file {:?} does not read here ({}) nor in the fallback repository {} ({})",
                                &blob.to_hex()[..12],
                                node.name(),
                                super::rustic_message(&here),
                                self.reader.location,
                                super::rustic_message(&there)
                            ),
                            damaged: Vec::new(),
                        });
                    }
                },
            };
            w.write_all(&data).map_err(|source| RepoError::Io { location: own.location.describe(), source })?;
        }
        Ok(())
    }

    /// Whether the fallback holds the blobs of `ids`, in packs that check out.
    pub(super) fn has_blobs(&self, nodes: &[Node]) -> Result<super::integrity::PackReport> {
        self.reader.check_packs(nodes)
    }
}

/// A snapshot's files read here until a tree fails, then the rest from the fallback's copy
/// of the snapshot (both in tree order, so the files already given are skipped).
struct Healing<'a> {
    own: Option<FileIter<'a>>,
    theirs: Option<FileIter<'a>>,
    fallback: &'a Fallback,
    there: Option<SnapshotFile>,
    last: Option<PathBuf>,
}

impl Iterator for Healing<'_> {
    type Item = Result<(PathBuf, Node)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(own) = self.own.as_mut() {
            match own.next()? {
                Ok(item) => {
                    self.last = Some(item.0.clone());
                    return Some(Ok(item));
                }
                Err(e) => {
                    self.own = None;
                    let Some(there) = self.there.take() else { return Some(Err(e)) };
                    match self.fallback.reader.file_iter(&there) {
                        Ok(files) => {
                            self.fallback.used("a tree");
                            self.theirs = Some(files);
                        }
                        Err(_) => return Some(Err(e)),
                    }
                }
            }
        }
        let theirs = self.theirs.as_mut()?;
        loop {
            let item = theirs.next()?;
            if let (Ok((path, _)), Some(last)) = (&item, &self.last)
                && path <= last
            {
                continue;
            }
            return Some(item);
        }
    }
}

/// A repository to read from where the one restored from fails (`--fallback-repository`).
#[derive(Clone)]
pub struct FallbackRepository(pub std::sync::Arc<super::Repository>);

impl std::fmt::Debug for FallbackRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FallbackRepository({})", self.0.location())
    }
}

impl super::Repository {
    /// A reader over this repository that reads through `fallback` what does not read here.
    pub fn reader_with(&self, fallback: Option<&FallbackRepository>) -> Result<RepositoryReader> {
        let reader = self.reader()?;
        match fallback {
            None => Ok(reader),
            Some(FallbackRepository(other)) => reader.with_fallback(other.reader()?),
        }
    }
}
