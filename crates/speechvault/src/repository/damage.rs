//! Damage isolated: repository files that cannot be read or authenticated are named, not
//! fatal. rustic reads all snapshot (or index) files in one stream and gives up at the first
//! bad one, so one flipped byte in an old, unrelated snapshot file made every backup
//! unreachable. Here each file stands alone: the readable ones are used, the others reported,
//! and `repair` sets them aside under `damaged/`, a directory restic and rustic do not read.

use std::collections::{BTreeMap, BTreeSet};

use rustic_core::FileType;
use rustic_core::repofile::{IndexFile, RepoFile, SnapshotFile};
use serde::Serialize;

use super::store::Store;
use super::{RepoError, Repository, Result, rustic_message};

/// Where damaged files are moved to (`damaged/snapshots/<id>`, `damaged/index/<id>`).
pub const SET_ASIDE_DIR: &str = "damaged";

/// A repository file that cannot be read, decrypted or parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedFile {
    /// `snapshot`, `index` or `pack`.
    pub kind: String,
    pub id: String,
    pub reason: String,
}

impl DamagedFile {
    /// `snapshots/<id>` or `index/<id>`: where it is in the repository.
    pub fn path(&self) -> String {
        format!("{}/{}", dir_of(&self.kind), name_in_dir(self))
    }
}

fn dir_of(kind: &str) -> &'static str {
    match kind {
        "index" => "index",
        "pack" => "data",
        _ => "snapshots",
    }
}

/// Where a damaged file is inside its directory (packs sit in `data/<first two hex>/`).
fn name_in_dir(d: &DamagedFile) -> String {
    match (d.kind.as_str(), d.id.get(..2)) {
        ("pack", Some(prefix)) => format!("{prefix}/{}", d.id),
        _ => d.id.clone(),
    }
}

/// Every readable snapshot, and every snapshot file that is not.
#[derive(Debug, Default)]
pub struct SnapshotScan {
    pub snapshots: Vec<SnapshotFile>,
    pub damaged: Vec<DamagedFile>,
}

/// What `repair snapshots|index` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repaired {
    pub dry_run: bool,
    /// Files moved under `damaged/` (never deleted: restic can still be pointed at them).
    pub set_aside: Vec<DamagedFile>,
    /// Packs that were in no index and are now (repair index).
    pub packs_indexed: Vec<String>,
    /// Packs whose header cannot be read: their blobs are gone from the index (repair index).
    pub packs_unreadable: Vec<String>,
}

/// The files of one type that read (with their ids), and the ones that do not.
type Scanned<F> = (Vec<(<F as RepoFile>::Id, F)>, Vec<DamagedFile>);

impl Repository {
    /// Every snapshot that reads, and every snapshot file that does not (isolated: one
    /// damaged file hides only the backup it belongs to).
    pub fn snapshot_scan(&self) -> Result<SnapshotScan> {
        let (snapshots, damaged) = self.scan::<SnapshotFile>("snapshot")?;
        // The id is the file's name, not in its content (rustic's own listing sets it too).
        let snapshots = snapshots
            .into_iter()
            .map(|(id, mut s)| {
                s.id = id;
                s
            })
            .collect();
        Ok(SnapshotScan { snapshots, damaged })
    }

    /// Index files that cannot be read.
    pub fn damaged_index_files(&self) -> Result<Vec<DamagedFile>> {
        Ok(self.scan::<IndexFile>("index")?.1)
    }

    /// Reads every file of one type, each on its own. A file that fails in the stream is
    /// read once more alone, for its own error (and in case it was written meanwhile).
    fn scan<F: RepoFile>(&self, kind: &str) -> Result<Scanned<F>> {
        let listed: BTreeMap<String, F::Id> =
            self.repo.list::<F::Id>().map_err(|e| self.err(e))?.map(|id| (id.to_hex().to_string(), id)).collect();
        let mut good = Vec::new();
        let mut seen = BTreeSet::new();
        for (id, file) in self.repo.stream_files::<F>().map_err(|e| self.err(e))?.flatten() {
            seen.insert(id.to_hex().to_string());
            good.push((id, file));
        }
        let mut damaged = Vec::new();
        for (hex, id) in listed {
            if seen.contains(&hex) {
                continue;
            }
            match self.repo.get_file::<F>(&id) {
                Ok(file) => good.push((id, file)),
                // Gone since the listing (forgotten meanwhile): not damage.
                Err(_) if !self.exists(F::TYPE, &id) => {}
                Err(e) => damaged.push(DamagedFile { kind: kind.to_string(), id: hex, reason: rustic_message(&e) }),
            }
        }
        Ok((good, damaged))
    }

    fn exists(&self, tpe: FileType, id: &rustic_core::Id) -> bool {
        self.store.backend().list(tpe).map(|l| l.contains(id)).unwrap_or(true)
    }

    /// Moves damaged snapshot files under `damaged/snapshots/` (with `dry_run`, finds them).
    pub fn repair_snapshots(&self, dry_run: bool) -> Result<Repaired> {
        self.refuse_immutable()?;
        let damaged = self.snapshot_scan()?.damaged;
        let mut out = Repaired { dry_run, ..Default::default() };
        for d in damaged {
            if !dry_run {
                self.set_aside(&d)?;
            }
            out.set_aside.push(d);
        }
        Ok(out)
    }

    /// Rebuilds the index from the packs, as restic's `repair index` does: damaged index
    /// files are set aside first (rustic's repair stops at the first one), then every pack no
    /// index names has its header read and is indexed again; a pack whose header does not
    /// read stays out of the index and is reported.
    pub fn repair_index(&self, dry_run: bool) -> Result<Repaired> {
        self.refuse_immutable()?;
        let mut out = Repaired { dry_run, ..Default::default() };
        for d in self.damaged_index_files()? {
            if !dry_run {
                self.set_aside(&d)?;
            }
            out.set_aside.push(d);
        }
        let before = self.unindexed_packs(&out.set_aside)?;
        if dry_run {
            out.packs_indexed = before;
            return Ok(out);
        }
        self.repo.repair_index(&rustic_core::RepairIndexOptions::default(), false).map_err(|e| self.err(e))?;
        let after: BTreeSet<String> = self.unindexed_packs(&[])?.into_iter().collect();
        for p in before {
            if after.contains(&p) {
                out.packs_unreadable.push(p);
            } else {
                out.packs_indexed.push(p);
            }
        }
        Ok(out)
    }

    /// Packs present but named by no readable index file (`ignoring`: index files not to
    /// count, e.g. the ones about to be set aside).
    fn unindexed_packs(&self, ignoring: &[DamagedFile]) -> Result<Vec<String>> {
        let skip: BTreeSet<&str> = ignoring.iter().map(|d| d.id.as_str()).collect();
        let (indexes, _) = self.scan::<IndexFile>("index")?;
        let mut indexed = BTreeSet::new();
        for (id, index) in indexes {
            if skip.contains(id.to_hex().as_str()) {
                continue;
            }
            for p in index.packs.iter().chain(index.packs_to_delete.iter()) {
                indexed.insert(p.id.to_hex().to_string());
            }
        }
        let packs = self.store.backend().list(FileType::Pack).map_err(|e| self.err(e))?;
        Ok(packs.into_iter().map(|id| id.to_hex().to_string()).filter(|p| !indexed.contains(p)).collect())
    }

    pub(super) fn refuse_immutable(&self) -> Result<()> {
        if self.immutability().is_some() {
            return Err(RepoError::Refused {
                location: self.location.describe(),
                reason: "it is immutable: a damaged newest version is read from its retained version already; run `speechvault repair versions` to clean up".into(),
            });
        }
        Ok(())
    }

    pub(super) fn set_aside(&self, d: &DamagedFile) -> Result<()> {
        let dir = dir_of(&d.kind);
        let io = |e: std::io::Error| self.io(e);
        match &self.store {
            Store::Local(l) => {
                let to = l.path().join(SET_ASIDE_DIR).join(dir);
                std::fs::create_dir_all(&to).map_err(io)?;
                std::fs::rename(l.path().join(dir).join(name_in_dir(d)), to.join(&d.id)).map_err(io)
            }
            Store::S3(s) => {
                let from = s.key_in(dir, &name_in_dir(d));
                let other = |e: crate::objstore::ObjStoreError| self.io(std::io::Error::other(e.to_string()));
                let data = s.read_key(&from).map_err(other)?;
                s.write_key(&s.key_in(&format!("{SET_ASIDE_DIR}/{dir}"), &d.id), data).map_err(other)?;
                s.remove_key(&from).map_err(other)
            }
        }
    }
}

/// When no key opens the repository: the key files that are not restic key files at all
/// (truncated, not JSON) are damage, not a wrong password. `None` when every key file reads
/// (then the password is wrong; a flipped byte inside a key's encrypted part cannot be told
/// from a wrong password).
pub(crate) fn damaged_keys(store: &Store, location: &super::Location, keys: &[rustic_core::Id]) -> Option<RepoError> {
    let backend = store.backend();
    let bad: Vec<String> = keys
        .iter()
        .filter(|id| {
            backend
                .read_full(FileType::Key, id)
                .ok()
                .and_then(|raw| serde_json::from_slice::<rustic_core::repofile::KeyFile>(&raw).ok())
                .is_none()
        })
        .map(|id| format!("keys/{}", id.to_hex().as_str()))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let reason = if bad.len() == keys.len() {
        format!(
            "no key file reads ({}): they are damaged, not the password; restore the keys/ directory from a copy of the repository",
            bad.join(", ")
        )
    } else {
        format!(
            "the password opens none of the key files that read, and {} cannot be read at all: the password is wrong, or it belongs to the damaged key; add a key with `speechvault key add` from a working password",
            bad.join(", ")
        )
    };
    Some(RepoError::Damaged { location: location.describe(), reason, damaged: bad })
}

/// rustic's error as ours: the ones that mean a damaged or lost file become
/// [`RepoError::Damaged`], saying what to run (rustic's own words suggest nothing, or rustic's
/// commands).
pub(crate) fn classify(location: &str, reason: String) -> RepoError {
    let damaged = |what: &str, fix: &str| RepoError::Damaged {
        location: location.to_string(),
        reason: format!("{what} ({reason}); {fix}"),
        damaged: Vec::new(),
    };
    if reason.contains("error processing Config") {
        damaged("the config file cannot be read", "restore `config` from a copy of the repository")
    } else if reason.contains("error processing Index") {
        damaged("an index file cannot be read", "run `speechvault repair index` (it rebuilds the index from the packs)")
    } else if reason.contains("not found in index") {
        damaged(
            "data the backup needs is in no index: an index file or a pack is lost",
            "run `speechvault repair index`, then `speechvault check` to name the backups still affected",
        )
    } else if reason.contains("error processing Snapshot") {
        damaged("a snapshot file cannot be read", "run `speechvault repair snapshots` to set it aside")
    } else {
        RepoError::Rustic { location: location.to_string(), reason }
    }
}

/// The error for work that must not decide from unreadable data (forget, prune).
pub fn refuse_damaged(location: &str, damaged: &[DamagedFile], what: &str) -> RepoError {
    let names: Vec<String> = damaged.iter().map(|d| format!("{} ({})", d.path(), d.reason)).collect();
    RepoError::Damaged {
        location: location.to_string(),
        reason: format!(
            "{} repository file{} cannot be read, so {what} cannot know what they hold: {}; set them aside with `speechvault repair snapshots`/`repair index` (or pass --ignore-damaged to plan around them)",
            damaged.len(),
            if damaged.len() == 1 { "" } else { "s" },
            names.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        ),
        damaged: names,
    }
}
