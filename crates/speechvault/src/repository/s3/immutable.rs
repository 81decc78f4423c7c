//! An S3 repository whose files are kept by object lock: what a stolen key cannot undo.
//!
//! The bucket keeps every version of every key; a file we write carries a retain-until date,
//! so until then no key can delete that version (in compliance mode nobody can; in
//! governance mode only a key allowed to bypass it). What such a key can still do:
//!
//! - write a **new version** over a file. restic names every file but `config` by the SHA-256
//!   of its content, so a version whose bytes do not hash to its name is not ours: the newest
//!   version that does is read instead, and the file is reported as *tampered*;
//! - **hide** a file behind a delete marker (a DELETE without a version id is allowed even in
//!   compliance mode): it is read from its newest matching version, and reported as *hidden*;
//! - for `config`, which is not named by a hash, the oldest version is the one `init` wrote.
//!
//! Lock files are written without retention, so a run can always remove its own lock.
//! Removing a file deletes each of its versions; a version still retained is left where it
//! is and reported as held until its date, never as a failure half-way through.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use rustic_core::{FileType, Id};
use serde::Serialize;
use sha2::Digest as _;

use super::S3Store;
use crate::objstore::{ObjStoreError, ObjectVersion, PutOptions, Retention};
use crate::repository::location::Immutability;

/// Files are written (and extended) to be retained this many times `retain`: so a file's
/// retention needs extending at most once every half `retain`.
const HORIZON: f64 = 1.5;

/// The state an immutable repository's storage keeps while open.
#[derive(Debug)]
pub(crate) struct Locked {
    pub policy: Immutability,
    /// Server clock minus local clock, read once from the server's `Date`.
    skew: OnceLock<jiff::SignedDuration>,
    /// Whether the server honours `If-None-Match: *` on PUT in this bucket (probed once).
    conditional: OnceLock<bool>,
    /// Versions of each key, newest first, as last listed (and as we wrote them since).
    versions: Mutex<HashMap<String, Vec<ObjectVersion>>>,
    /// The version chosen to read for each key, with its size.
    chosen: Mutex<HashMap<String, (String, u64)>>,
    findings: Mutex<BTreeMap<String, Finding>>,
    held: Mutex<BTreeMap<String, Option<jiff::Timestamp>>>,
}

/// A file whose newest version is not the one a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The object key in the repository bucket.
    pub key: String,
    /// Newer versions whose content does not match the file's name (written over it).
    pub tampered_versions: usize,
    /// The newest version is a delete marker.
    pub hidden: bool,
    /// The version read instead; `None`: no version matches, the file is lost.
    pub read_version: Option<String>,
}

impl Finding {
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.tampered_versions > 0 {
            what.push(format!("{} version(s) written over it that do not match its name", self.tampered_versions));
        }
        if self.hidden {
            what.push("hidden behind a delete marker".to_string());
        }
        match &self.read_version {
            Some(v) => format!("{}: {} (reading retained version {v})", self.key, what.join(", ")),
            None => format!("{}: {}, and no version matches its name: lost", self.key, what.join(", ")),
        }
    }
}

/// A file a removal had to leave, because its retention has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldFile {
    pub key: String,
    /// When its retention ends, when the server said.
    pub until: Option<String>,
}

/// A delete the server refused for the version's retention (RGW and AWS answer 403
/// AccessDenied, which the client reports as a credentials error).
pub(super) fn refused(e: &ObjStoreError) -> bool {
    match e {
        ObjStoreError::Http { status: 403 | 400, .. } => true,
        ObjStoreError::Credentials { code, .. } => code == "AccessDenied",
        _ => false,
    }
}

impl Locked {
    pub fn new(policy: Immutability) -> Self {
        Self {
            policy,
            skew: OnceLock::new(),
            conditional: OnceLock::new(),
            versions: Mutex::default(),
            chosen: Mutex::default(),
            findings: Mutex::default(),
            held: Mutex::default(),
        }
    }
}

/// What the content of a file must be to be ours.
enum Expect {
    /// Its SHA-256 is its name.
    Named(Id),
    /// `config`: the oldest version.
    Oldest,
}

impl S3Store {
    pub(super) fn locked_state(&self) -> Option<&Locked> {
        self.locked.as_ref()
    }

    /// The server's clock now.
    pub(crate) fn server_now(&self) -> Result<jiff::Timestamp, ObjStoreError> {
        let l = self.locked_state().ok_or_else(|| self.not_locked())?;
        if let Some(skew) = l.skew.get() {
            return Ok(jiff::Timestamp::now().saturating_add(*skew).unwrap_or_else(|_| jiff::Timestamp::now()));
        }
        let server = self.block_on(self.objects().server_time(self.bucket()))?;
        let skew = server.duration_since(jiff::Timestamp::now());
        if skew.abs().as_secs() > 300 {
            tracing::warn!(
                skew_secs = skew.as_secs(),
                "this machine's clock differs from the repository server's by more than five minutes; retention dates follow the server's"
            );
        }
        let _ = l.skew.set(skew);
        Ok(server)
    }

    fn not_locked(&self) -> ObjStoreError {
        ObjStoreError::Protocol {
            op: "ObjectLock".into(),
            target: self.bucket().into(),
            detail: "the repository is not immutable".into(),
        }
    }

    /// The retain-until date a file written or extended now gets.
    pub(crate) fn retain_until(&self) -> Result<jiff::Timestamp, ObjStoreError> {
        let l = self.locked_state().ok_or_else(|| self.not_locked())?;
        let secs = (l.policy.retain.as_secs() as f64 * HORIZON) as i64;
        let now = self.server_now()?;
        Ok(now.saturating_add(jiff::SignedDuration::from_secs(secs)).unwrap_or(now))
    }

    /// Every version of `key`, newest first (listed once, then kept up to date by our writes).
    pub(super) fn versions_of(&self, key: &str) -> Result<Vec<ObjectVersion>, ObjStoreError> {
        let Some(l) = self.locked_state() else { return Ok(Vec::new()) };
        if let Some(v) = l.versions.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(v);
        }
        let listed: Vec<ObjectVersion> = self
            .block_on(self.objects().list_versions(self.bucket(), key))?
            .into_iter()
            .filter(|v| v.key == key)
            .collect();
        if let Ok(mut m) = l.versions.lock() {
            m.insert(key.to_string(), listed.clone());
        }
        Ok(listed)
    }

    /// Forgets what is known of `key` (its versions, the one chosen, a finding): it changed.
    pub(super) fn forget_cached(&self, key: &str) {
        let Some(l) = self.locked_state() else { return };
        if let Ok(mut m) = l.versions.lock() {
            m.remove(key);
        }
        if let Ok(mut m) = l.chosen.lock() {
            m.remove(key);
        }
        if let Ok(mut m) = l.findings.lock() {
            m.remove(key);
        }
    }

    /// How a file is written: with the retention of the policy from now, readable by the
    /// bucket's owner.
    pub(super) fn retained_put(&self) -> Result<PutOptions, ObjStoreError> {
        let l = self.locked_state().ok_or_else(|| self.not_locked())?;
        let until = self.retain_until()?;
        let mut opts = PutOptions::default();
        opts.attrs.lock_mode = Some(l.policy.mode.header().to_string());
        opts.attrs.lock_retain_until = Some(crate::objstore::versions::retain_date(until));
        // The backup's key may not own the bucket; the owner's maintenance key must be able
        // to read and remove what it writes.
        opts.bucket_owner_full_control = true;
        Ok(opts)
    }

    /// Lists the versions under `dir/` afresh: `(key, versions newest first)`.
    pub(crate) fn list_versions_in(&self, dir: &str) -> Result<BTreeMap<String, Vec<ObjectVersion>>, ObjStoreError> {
        let prefix = self.key_in(dir, "");
        let mut by_key: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
        for v in self.block_on(self.objects().list_versions(self.bucket(), &prefix))? {
            by_key.entry(v.key.clone()).or_default().push(v);
        }
        if let Some(l) = self.locked_state()
            && let Ok(mut m) = l.versions.lock()
        {
            for (k, v) in &by_key {
                m.insert(k.clone(), v.clone());
            }
        }
        Ok(by_key)
    }

    /// The version of `key` to read and its size, resolving tampering and delete markers;
    /// `None` when no version is ours.
    fn choose(&self, key: &str, expect: &Expect) -> Result<Option<(String, u64)>, ObjStoreError> {
        let Some(l) = self.locked_state() else { return Ok(None) };
        if let Some(c) = l.chosen.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(Some(c));
        }
        let all = self.versions_of(key)?;
        let hidden = all.first().is_some_and(|v| v.delete_marker);
        let real: Vec<&ObjectVersion> = all.iter().filter(|v| !v.delete_marker).collect();
        let (pick, tampered) = match expect {
            _ if real.len() == 1 && !hidden => (Some(real[0]), 0),
            Expect::Oldest => {
                // Newer versions with the same bytes (a copy `repair versions` put on top so
                // restic reads it) are not tampering.
                let oldest = real.last().copied();
                let mut newer = 0;
                if let Some(o) = oldest {
                    let ours = self.block_on(self.objects().get_version_bytes(self.bucket(), key, &o.version_id))?;
                    for v in &real[..real.len() - 1] {
                        match self.block_on(self.objects().get_version_bytes(self.bucket(), key, &v.version_id)) {
                            Ok(b) if b == ours => {}
                            Ok(_) => newer += 1,
                            Err(e) if refused(&e) => newer += 1,
                            Err(e) => return Err(e),
                        }
                    }
                }
                (oldest, newer)
            }
            Expect::Named(id) => {
                let mut pick = None;
                let mut newer = 0;
                for v in &real {
                    // A version this key may not read (written by another key without
                    // granting the bucket's owner access) is not one of ours either.
                    let bytes = match self.block_on(self.objects().get_version_bytes(self.bucket(), key, &v.version_id))
                    {
                        Ok(b) => b,
                        Err(e) if refused(&e) => {
                            tracing::debug!(key, version = v.version_id, error = %e, "a version that cannot be read");
                            newer += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if hex::encode(sha2::Sha256::digest(&bytes)) == id.to_hex().as_str() {
                        pick = Some(*v);
                        break;
                    }
                    newer += 1;
                }
                (pick, newer)
            }
        };
        if hidden || tampered > 0 || pick.is_none() && !real.is_empty() {
            let f = Finding {
                key: key.to_string(),
                tampered_versions: tampered,
                hidden,
                read_version: pick.map(|v| v.version_id.clone()),
            };
            tracing::warn!("repository file {}", f.describe());
            if let Ok(mut m) = l.findings.lock() {
                m.insert(key.to_string(), f);
            }
        }
        let chosen = pick.map(|v| (v.version_id.clone(), v.size));
        if let (Some(c), Ok(mut m)) = (&chosen, l.chosen.lock()) {
            m.insert(key.to_string(), c.clone());
        }
        Ok(chosen)
    }

    fn expect_for(tpe: FileType, id: &Id) -> Expect {
        if tpe == FileType::Config { Expect::Oldest } else { Expect::Named(*id) }
    }

    /// The files of one type with their sizes, as an immutable repository sees them: every
    /// key with a version of ours, hidden or not.
    pub(crate) fn locked_list(&self, tpe: FileType) -> Result<Vec<(Id, u32)>, ObjStoreError> {
        let dir = if tpe == FileType::Pack { "data".to_string() } else { tpe.dirname().to_string() };
        let mut out = Vec::new();
        for (key, versions) in self.list_versions_in(&dir)? {
            let Some(name) = key.rsplit('/').next() else { continue };
            let Ok(id) = name.parse::<Id>() else { continue };
            if name.len() != 64 || versions.iter().all(|v| v.delete_marker) {
                continue;
            }
            let plain = versions.len() == 1;
            let size = if plain { Some(versions[0].size) } else { self.choose(&key, &Expect::Named(id))?.map(|c| c.1) };
            if let Some(size) = size {
                out.push((id, u32::try_from(size).unwrap_or(u32::MAX)));
            }
        }
        Ok(out)
    }

    /// Whether the repository's `config` exists (any version: a hidden one counts).
    pub(crate) fn locked_has_config(&self) -> Result<Option<u64>, ObjStoreError> {
        let key = self.key(FileType::Config, &Id::default());
        Ok(self.choose(&key, &Expect::Oldest)?.map(|c| c.1))
    }

    pub(crate) fn locked_read(&self, tpe: FileType, id: &Id) -> Result<Bytes, ObjStoreError> {
        let key = self.key(tpe, id);
        match self.choose(&key, &Self::expect_for(tpe, id))? {
            Some((version, _)) => self.block_on(self.objects().get_version_bytes(self.bucket(), &key, &version)),
            None => Err(ObjStoreError::NoSuchKey {
                endpoint: self.objects().endpoint().to_string(),
                bucket: self.bucket().to_string(),
                key,
            }),
        }
    }

    pub(crate) fn locked_read_range(
        &self,
        tpe: FileType,
        id: &Id,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, ObjStoreError> {
        let key = self.key(tpe, id);
        match self.choose(&key, &Self::expect_for(tpe, id))? {
            Some((version, _)) => {
                self.block_on(self.objects().get_version_range(self.bucket(), &key, &version, offset, length))
            }
            None => Err(ObjStoreError::NoSuchKey {
                endpoint: self.objects().endpoint().to_string(),
                bucket: self.bucket().to_string(),
                key,
            }),
        }
    }

    /// Whether `If-None-Match: *` is honoured here: one probe key under `locks/`, written
    /// twice, its versions deleted after.
    fn conditional_writes(&self) -> bool {
        let Some(l) = self.locked_state() else { return false };
        *l.conditional.get_or_init(|| {
            let key = self.key_in("locks", &format!("speechvault-probe-{}", Id::random().to_hex().as_str()));
            let body = Bytes::from_static(b"probe");
            let once = PutOptions { if_none_match: true, ..Default::default() };
            let honoured = match self.block_on(self.objects().put_checked(self.bucket(), &key, body.clone(), &once)) {
                Ok(_) => matches!(
                    self.block_on(self.objects().put_checked(self.bucket(), &key, body, &once)),
                    Err(ObjStoreError::Http { status: 412, .. })
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "If-None-Match probe failed");
                    false
                }
            };
            self.remove_all_versions(&key, false);
            tracing::debug!(honoured, "If-None-Match: * probed in the repository bucket");
            honoured
        })
    }

    /// Writes a repository file with its retention (lock files: without).
    pub(crate) fn locked_write(&self, tpe: FileType, id: &Id, data: Bytes) -> Result<(), ObjStoreError> {
        let key = self.key(tpe, id);
        let l = self.locked_state().ok_or_else(|| self.not_locked())?;
        let mut opts = self.retained_put()?;
        opts.if_none_match = self.conditional_writes();
        let up = match self.block_on(self.objects().put_checked(self.bucket(), &key, data.clone(), &opts)) {
            Ok(up) => up,
            // Already there: fine when what is there is ours (a repeated write of the same
            // content); else written as a new version, which reads take over the other.
            Err(ObjStoreError::Http { status: 412, .. }) => {
                if self.choose(&key, &Self::expect_for(tpe, id))?.is_some() {
                    return Ok(());
                }
                opts.if_none_match = false;
                self.block_on(self.objects().put_checked(self.bucket(), &key, data.clone(), &opts))?
            }
            Err(e) => return Err(e),
        };
        if up.etag_confirms() == Some(false) {
            return Err(ObjStoreError::Protocol {
                op: "PutObject".into(),
                target: format!("{}/{key}", self.bucket()),
                detail: format!("stored with ETag {}, its bytes give {}", up.etag, up.expected_etag),
            });
        }
        if let Some(version) = up.version_id {
            let v = ObjectVersion {
                key: key.clone(),
                version_id: version.clone(),
                size: up.size,
                etag: up.etag,
                last_modified: String::new(),
                is_latest: true,
                delete_marker: false,
            };
            if let Ok(mut m) = l.versions.lock() {
                m.entry(key.clone()).or_default().insert(0, v);
            }
            if let Ok(mut m) = l.chosen.lock() {
                m.insert(key, (version, up.size));
            }
        }
        Ok(())
    }

    /// Deletes every version of `key`; versions still retained stay and are recorded as
    /// held (`record`). Never fails: what could not be deleted is reported instead. Returns
    /// whether every version is gone.
    pub(crate) fn remove_all_versions(&self, key: &str, record: bool) -> bool {
        let versions = match self.block_on(self.objects().list_versions(self.bucket(), key)) {
            Ok(v) => v.into_iter().filter(|v| v.key == key).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot list the versions of a repository file to remove it");
                return false;
            }
        };
        let mut held: Option<Option<jiff::Timestamp>> = None;
        for v in &versions {
            match self.block_on(self.objects().delete_object_version(self.bucket(), key, &v.version_id)) {
                Ok(()) => {}
                Err(e) if refused(&e) => {
                    let until = self
                        .block_on(self.objects().get_retention(self.bucket(), key, &v.version_id))
                        .ok()
                        .flatten()
                        .map(|r: Retention| r.until);
                    held = Some(match held.flatten() {
                        Some(t) if until.is_some_and(|u| u < t) => Some(t),
                        _ => until,
                    });
                }
                Err(e) => {
                    tracing::warn!(key, version = v.version_id, error = %e, "cannot delete a version");
                    held.get_or_insert(None);
                }
            }
        }
        if let Some(l) = self.locked_state() {
            if let Ok(mut m) = l.versions.lock() {
                m.remove(key);
            }
            if let Ok(mut m) = l.chosen.lock() {
                m.remove(key);
            }
            if record
                && let Some(until) = held
                && let Ok(mut m) = l.held.lock()
            {
                m.insert(key.to_string(), until);
            }
        }
        held.is_none()
    }

    /// When the version read of each repository file was written (one version listing per
    /// directory).
    pub(crate) fn write_times(&self) -> Result<HashMap<String, jiff::Timestamp>, ObjStoreError> {
        let mut out = HashMap::new();
        let config = self.key(FileType::Config, &Id::default());
        let mut all = Vec::new();
        for dir in ["keys", "snapshots", "index", "data"] {
            all.extend(self.list_versions_in(dir)?);
        }
        all.push((config.clone(), self.versions_of(&config)?));
        for (key, versions) in all {
            let plain = versions.len() == 1 && !versions[0].delete_marker;
            let chosen = if plain {
                Some(versions[0].version_id.clone())
            } else {
                let expect = match key.rsplit('/').next().map(str::parse::<Id>) {
                    _ if key == config => Expect::Oldest,
                    Some(Ok(id)) => Expect::Named(id),
                    _ => continue,
                };
                self.choose(&key, &expect)?.map(|c| c.0)
            };
            if let Some(v) = chosen.and_then(|c| versions.iter().find(|v| v.version_id == c))
                && let Ok(t) = v.last_modified.parse::<jiff::Timestamp>()
            {
                out.insert(key, t);
            }
        }
        Ok(out)
    }

    /// Extends the retention of the version of a repository file that is ours to `until`.
    pub(crate) fn extend_file(&self, tpe: FileType, id: &Id, until: jiff::Timestamp) -> Result<(), ObjStoreError> {
        let l = self.locked_state().ok_or_else(|| self.not_locked())?;
        let key = self.key(tpe, id);
        let Some((version, _)) = self.choose(&key, &Self::expect_for(tpe, id))? else {
            return Err(ObjStoreError::NoSuchKey {
                endpoint: self.objects().endpoint().to_string(),
                bucket: self.bucket().to_string(),
                key,
            });
        };
        let r = Retention { mode: l.policy.mode, until };
        self.block_on(self.objects().put_retention(self.bucket(), &key, &version, r))
    }

    /// The retention of the version of a repository file that is ours (`None`: none).
    pub(crate) fn retention_of(&self, tpe: FileType, id: &Id) -> Result<Option<jiff::Timestamp>, ObjStoreError> {
        let key = self.key(tpe, id);
        let Some((version, _)) = self.choose(&key, &Self::expect_for(tpe, id))? else { return Ok(None) };
        Ok(self.block_on(self.objects().get_retention(self.bucket(), &key, &version))?.map(|r| r.until))
    }

    /// Files whose newest version is not ours, found so far (every one after [`Self::audit`]).
    pub(crate) fn findings(&self) -> Vec<Finding> {
        self.locked_state()
            .and_then(|l| l.findings.lock().ok().map(|m| m.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// Files removals had to leave, with the end of their retention.
    pub(crate) fn held(&self) -> Vec<HeldFile> {
        self.locked_state()
            .and_then(|l| {
                l.held.lock().ok().map(|m| {
                    m.iter()
                        .map(|(k, u)| HeldFile { key: k.clone(), until: u.map(crate::objstore::versions::retain_date) })
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Looks at every repository file's versions (one listing per directory) and resolves
    /// each that has more than one or is hidden: afterwards [`Self::findings`] names every
    /// tampered and hidden file.
    pub(crate) fn audit(&self) -> Result<Vec<Finding>, ObjStoreError> {
        for (dir, tpe) in [
            ("keys", FileType::Key),
            ("snapshots", FileType::Snapshot),
            ("index", FileType::Index),
            ("data", FileType::Pack),
        ] {
            for (key, versions) in self.list_versions_in(dir)? {
                let suspicious = versions.len() > 1 || versions.first().is_some_and(|v| v.delete_marker);
                let Some(Ok(id)) = key.rsplit('/').next().map(str::parse::<Id>) else { continue };
                if suspicious {
                    self.choose(&key, &Self::expect_for(tpe, &id))?;
                }
            }
        }
        let config = self.key(FileType::Config, &Id::default());
        self.choose(&config, &Expect::Oldest)?;
        Ok(self.findings())
    }
}
