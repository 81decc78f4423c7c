//! Repository locks, written the way restic writes them, so restic and speechvault respect
//! each other.
//!
//! rustic is lock-free by design; restic is not. A lock is a small encrypted JSON file in
//! `locks/` (`time`, `exclusive`, `hostname`, `username`, `pid`, `uid`, `gid`), named by the
//! SHA-256 of its encrypted bytes. Backups, copies and restores take a shared lock; forget and
//! prune an exclusive one. A lock is refreshed every five minutes while it is held; like
//! restic, a lock is stale when it has not been refreshed for 30 minutes, or when it names a
//! process of this host that no longer runs. A run that finds a conflicting live lock waits
//! (up to `--lock-wait`) and then fails naming the holder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RepoError, Repository, Result};

/// How long an unrefreshed lock is honoured.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is rewritten.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A lock file's content (restic's field names). restic leaves out fields with zero values
/// (`exclusive` when false, `uid`/`gid` when run as root): absent means zero, as for restic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub time: String,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// A lock found in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct FoundLock {
    pub id: String,
    #[serde(flatten)]
    pub info: Option<LockInfo>,
    /// Why it is stale, when it is.
    pub stale: Option<String>,
}

impl FoundLock {
    pub fn describe(&self) -> String {
        match &self.info {
            Some(i) => format!(
                "{} lock {} held by {}@{} (pid {}) since {}",
                if i.exclusive { "an exclusive" } else { "a shared" },
                &self.id[..8.min(self.id.len())],
                i.username,
                i.hostname,
                i.pid,
                i.time
            ),
            None => format!("an unreadable lock {}", &self.id[..8.min(self.id.len())]),
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn username() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        // SAFETY: getuid has no preconditions.
        format!("uid{}", unsafe { libc::getuid() })
    })
}

fn stale_reason(info: &LockInfo) -> Option<String> {
    if let Ok(t) = info.time.parse::<jiff::Timestamp>() {
        let age = jiff::Timestamp::now().duration_since(t);
        if age.as_secs() > STALE_AFTER.as_secs() as i64 {
            return Some(format!("not refreshed for {} minutes", age.as_secs() / 60));
        }
    }
    if info.hostname == hostname() && info.pid > 0 && !process_alive(info.pid as i32) {
        return Some(format!("process {} on this host is gone", info.pid));
    }
    None
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

impl Repository {
    /// Every lock in the repository, decoded where the key can.
    pub fn locks(&self) -> Result<Vec<FoundLock>> {
        let mut out = Vec::new();
        for name in self.store.list_locks().map_err(|e| self.io(e))? {
            let info = self
                .store
                .read_lock(&name)
                .ok()
                .and_then(|raw| super::integrity::decrypt(&self.key, &raw))
                .and_then(|plain| serde_json::from_slice::<LockInfo>(&plain).ok());
            let stale = info.as_ref().and_then(stale_reason);
            out.push(FoundLock { id: name, info, stale });
        }
        Ok(out)
    }

    /// Removes stale locks (or, with `all`, every lock); returns what was removed.
    pub fn unlock(&self, all: bool) -> Result<Vec<FoundLock>> {
        let mut removed = Vec::new();
        for lock in self.locks()? {
            if all || lock.stale.is_some() {
                self.store.remove_lock(&lock.id).map_err(|e| self.io(e))?;
                removed.push(lock);
            }
        }
        Ok(removed)
    }

    fn write_lock(&self, info: &LockInfo) -> Result<String> {
        let plain = serde_json::to_vec(info).map_err(|e| self.io(std::io::Error::other(e)))?;
        let data = super::integrity::encrypt(&self.key, &plain)
            .ok_or_else(|| self.io(std::io::Error::other("cannot encrypt the lock")))?;
        let name = hex::encode(Sha256::digest(&data));
        self.store.write_lock(&name, data.into()).map_err(|e| self.io(e))?;
        Ok(name)
    }

    /// Takes a lock, waiting up to `wait` for conflicting live locks to go away.
    pub fn lock(self: &Arc<Self>, exclusive: bool, wait: Duration) -> Result<RepoLock> {
        self.lock_unless_stopped(exclusive, wait, &crate::support::interrupt::Stop::never())
    }

    /// [`Repository::lock`], giving up at once (with [`RepoError::Interrupted`]) when `stop`
    /// is raised while it waits: a SIGINT ends the wait, not the next retry.
    pub fn lock_unless_stopped(
        self: &Arc<Self>,
        exclusive: bool,
        wait: Duration,
        stop: &crate::support::interrupt::Stop,
    ) -> Result<RepoLock> {
        self.take_lock(exclusive, wait, stop, false)
    }

    /// A lock for work that only reads (restore, verify, check, listings), as restic takes
    /// one: shared, or none with `no_lock` (`--no-lock`), or none when the repository cannot
    /// be written at all (a read-only mount, an immutable copy, read-only keys), which is
    /// said once. Never for work that writes: prune could delete what it writes.
    pub fn read_lock(
        self: &Arc<Self>,
        wait: Duration,
        stop: &crate::support::interrupt::Stop,
        no_lock: bool,
    ) -> Result<RepoLock> {
        if no_lock {
            return Ok(RepoLock::none(self.clone()));
        }
        self.take_lock(false, wait, stop, true)
    }

    fn take_lock(
        self: &Arc<Self>,
        exclusive: bool,
        wait: Duration,
        stop: &crate::support::interrupt::Stop,
        read_only_ok: bool,
    ) -> Result<RepoLock> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        // Locks of runs that are gone would stop restic (which removes them only on `unlock`):
        // clear them, as `unlock` would.
        for lock in self.locks()?.into_iter().filter(|l| l.stale.is_some()) {
            tracing::info!("removing {}: {}", lock.describe(), lock.stale.as_deref().unwrap_or(""));
            let _ = self.store.remove_lock(&lock.id);
        }
        loop {
            let conflict = self.conflicting(exclusive, None)?;
            if conflict.is_none() {
                let info = LockInfo {
                    time: jiff::Timestamp::now().to_string(),
                    exclusive,
                    hostname: hostname(),
                    username: username(),
                    pid: i64::from(std::process::id()),
                    // SAFETY: getuid/getgid have no preconditions.
                    uid: unsafe { libc::getuid() },
                    gid: unsafe { libc::getgid() },
                };
                let id = match self.write_lock(&info) {
                    Ok(id) => id,
                    Err(RepoError::Io { source, .. }) if read_only_ok && cannot_write(&source) => {
                        tracing::warn!(
                            "the repository cannot be written ({source}): reading it without a lock, as `--no-lock` would"
                        );
                        return Ok(RepoLock::none(self.clone()));
                    }
                    Err(e) => return Err(e),
                };
                // Someone may have locked at the same moment: look again, and back off if so.
                match self.conflicting(exclusive, Some(&id))? {
                    None => return Ok(RepoLock::start(self.clone(), id, info)),
                    Some(_) => {
                        let _ = self.store.remove_lock(&id);
                    }
                }
            }
            if start.elapsed() >= wait {
                let holder =
                    self.conflicting(exclusive, None)?.map(|l| l.describe()).unwrap_or_else(|| "another run".into());
                return Err(RepoError::Locked {
                    location: self.location.describe(),
                    holder,
                    waited: start.elapsed().as_secs(),
                });
            }
            if delay == Duration::from_millis(200)
                && let Some(holder) = &conflict
            {
                // Once, at default verbosity: a run that waits silently looks hung.
                tracing::warn!(
                    "the repository is locked by {}; waiting up to {}s (--lock-wait)",
                    holder.describe(),
                    wait.as_secs()
                );
            }
            let pause = delay.min(wait.saturating_sub(start.elapsed())).max(Duration::from_millis(50));
            let until = Instant::now() + pause;
            while Instant::now() < until {
                if stop.is_stopped() {
                    return Err(RepoError::Interrupted { location: self.location.describe() });
                }
                std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// A live lock that conflicts with taking one (`ours` excluded). A lock that cannot be
    /// read (damaged, or another repository key's) keeps out exclusive work only: reading
    /// never deletes, so a restore is not held up by a lock nobody can identify.
    fn conflicting(&self, exclusive: bool, ours: Option<&str>) -> Result<Option<FoundLock>> {
        Ok(self.locks()?.into_iter().find(|l| {
            Some(l.id.as_str()) != ours
                && l.stale.is_none()
                && (exclusive || l.info.as_ref().is_some_and(|i| i.exclusive))
        }))
    }
}

/// A held lock: refreshed in the background, removed when dropped.
pub struct RepoLock {
    repo: Arc<Repository>,
    id: Arc<std::sync::Mutex<String>>,
    done: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// Whether a write failed because the repository is read-only to us (a read-only mount,
/// permissions, a key the object store lets read only).
fn cannot_write(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied) {
        return true;
    }
    let text = e.to_string();
    ["AccessDenied", "Access Denied", "Forbidden", "403"].iter().any(|m| text.contains(m))
}

impl RepoLock {
    /// No lock at all (`--no-lock`, a read-only repository): nothing to refresh or remove.
    fn none(repo: Arc<Repository>) -> Self {
        Self {
            repo,
            id: Arc::new(std::sync::Mutex::new(String::new())),
            done: Arc::new(AtomicBool::new(true)),
            refresher: None,
        }
    }

    fn start(repo: Arc<Repository>, id: String, info: LockInfo) -> Self {
        let id = Arc::new(std::sync::Mutex::new(id));
        let done = Arc::new(AtomicBool::new(false));
        let (v, i, d) = (repo.clone(), id.clone(), done.clone());
        let refresher = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if last.elapsed() < REFRESH_EVERY {
                    continue;
                }
                last = Instant::now();
                let fresh = LockInfo { time: jiff::Timestamp::now().to_string(), ..info.clone() };
                match v.write_lock(&fresh) {
                    Ok(new) => {
                        if let Ok(mut cur) = i.lock() {
                            let old = std::mem::replace(&mut *cur, new);
                            let _ = v.store.remove_lock(&old);
                        }
                    }
                    Err(e) => tracing::warn!("cannot refresh the repository lock: {e}"),
                }
            }
        });
        Self { repo, id, done, refresher: Some(refresher) }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let id = self.id.lock().map(|i| i.clone()).unwrap_or_default();
        if id.is_empty() {
            return;
        }
        // Removal may block on the network; never on an async worker: use a thread of its own.
        let repo = self.repo.clone();
        let removed = std::thread::spawn(move || repo.store.remove_lock(&id).map_err(|e| format!("{id}: {e}"))).join();
        if let Ok(Err(e)) = removed {
            tracing::warn!("cannot remove the repository lock {e}");
        }
    }
}
