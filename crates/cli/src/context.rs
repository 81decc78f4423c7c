//! What every command works with: the config, the output mode, which repository
//! (`--repository`), how long to wait for a lock, and the stop flag.

use std::io::IsTerminal;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use speechvault::model::config::{Config, Installation};
use speechvault::model::profile::Profile;
use speechvault::repository::Repository;
use speechvault::repository::lock::RepoLock;
use speechvault::support::interrupt::Stop;
use speechvault::support::progress::Progress;
use speechvault::support::units::human_bytes;
use speechvault::{Error, ErrorKind};

pub struct Ctx {
    pub cfg: Config,
    pub json: bool,
    /// `--repository NAME` (`None`: the default `[repository]`).
    pub repository_name: Option<String>,
    pub lock_wait: Duration,
    /// `--no-lock`: reading commands take no lock.
    pub no_lock: bool,
    pub stop: Stop,
}

impl Ctx {
    /// Opens the repository chosen with `--repository`.
    pub async fn repository(&self) -> Result<Arc<Repository>, Error> {
        self.open_repository(self.repository_name.as_deref()).await
    }

    /// Opens `[repositories.NAME]`, or `[repository]` for `None`.
    pub async fn open_repository(&self, name: Option<&str>) -> Result<Arc<Repository>, Error> {
        let settings = self.cfg.named_repository(name)?;
        Ok(Arc::new(blocking(move || Repository::open(&settings.location, &settings.password)).await??))
    }

    /// The repository for maintenance (forget, prune, unlock): through its `s3.maintenance_*`
    /// keys when the config sets them (the backup's keys may then be write-only), else as
    /// [`Context::repository`] opens it.
    pub async fn maintenance_repository(&self) -> Result<Arc<Repository>, Error> {
        let mut settings = self.cfg.named_repository(self.repository_name.as_deref())?;
        if let Some(m) = settings.maintenance.take() {
            settings.location = m;
        }
        Ok(Arc::new(blocking(move || Repository::open(&settings.location, &settings.password)).await??))
    }

    /// Whether the repository has keys of its own for maintenance.
    pub fn has_maintenance_keys(&self) -> Result<bool, Error> {
        Ok(self.cfg.named_repository(self.repository_name.as_deref())?.maintenance.is_some())
    }

    /// Takes the repository's lock (shared, or exclusive for forget and prune), waiting up to
    /// `--lock-wait` for another run's.
    /// A lock for work that only reads the repository (see [`Repository::read_lock`]).
    pub async fn read_lock(&self, repo: &Arc<Repository>) -> Result<RepoLock, Error> {
        let (r, wait, stop, no_lock) = (repo.clone(), self.lock_wait, self.stop.clone(), self.no_lock);
        Ok(blocking(move || r.read_lock(wait, &stop, no_lock)).await??)
    }

    pub async fn lock(&self, repo: &Arc<Repository>, exclusive: bool) -> Result<RepoLock, Error> {
        let (r, wait, stop) = (repo.clone(), self.lock_wait, self.stop.clone());
        Ok(blocking(move || r.lock_unless_stopped(exclusive, wait, &stop)).await??)
    }

    /// An installation of the config, or `sandbox:NAME`.
    pub fn installation(&self, spec: &str) -> Result<Installation, Error> {
        crate::settings::installation(&self.cfg, spec)
    }

    pub fn profile(&self) -> Result<Profile, Error> {
        Ok(self.cfg.profile()?)
    }

    /// Runs `work`, drawing a progress line on stderr while it runs when stderr is a terminal
    /// and the output is text.
    pub async fn with_progress<T>(&self, progress: &Progress, work: impl std::future::Future<Output = T>) -> T {
        if self.json || !std::io::stderr().is_terminal() {
            return work.await;
        }
        let p = progress.clone();
        let drawer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let v = p.view();
                let mut line = v.phase.clone();
                if v.bytes_total > 0 {
                    line.push_str(&format!(
                        ": {} / {} ({:.0}%)",
                        human_bytes(v.bytes_done),
                        human_bytes(v.bytes_total),
                        100.0 * v.bytes_done as f64 / v.bytes_total as f64
                    ));
                }
                if v.items_total > 0 {
                    line.push_str(&format!(", {} / {} objects", v.items_done, v.items_total));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
            }
        });
        let out = work.await;
        drawer.abort();
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
        out
    }

    /// The `installation` label of a run's metrics: the installation's own name (`sandbox:a`
    /// is `a`), as its backups record it.
    pub fn installation_label(&self, spec: &str) -> String {
        self.installation(spec).map(|i| i.name).unwrap_or_else(|_| spec.to_string())
    }

    /// The label of runs on a whole repository (forget of every installation, check).
    pub fn repository_label(&self) -> String {
        format!("repository:{}", self.repository_name.as_deref().unwrap_or("default"))
    }
}

/// Runs blocking library work (the repository, rustic_core) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Failed, format!("background task failed: {e}")))
}
