//! `restore`: a backup set into an installation, then ownership, then verification.
//!
//! The procedure, in order; nothing on the target changes before step 4:
//! 1. read the manifest; check the request against it (a `--from-instance` the backup never
//!    saw is refused) and the versions (no restore into an older PostgreSQL major);
//! 2. check the target ([`checks`]): reachable, and empty unless `--clean`, `--data-only` or
//!    `--resume` (which accepts what an interrupted restore of the same backup left);
//! 3. prove the backup good ([`checks`]): every dump is read out of the repository into a
//!    private spool (free space checked first) and authenticated against the manifest's
//!    SHA-256, and every pack the objects need exists at its indexed size with an authentic
//!    header (`--preflight=full` reads every object instead);
//! 4. restore the databases ([`database`]): `pg_restore` into fresh databases, objects owned by
//!    the chosen role, grants kept where the roles exist; or with `--data-only` rows loaded into
//!    the existing schema inside one open transaction per database;
//! 5. stream every object back ([`objects`]), skipping identical ones on `--resume` and
//!    `--clean`, deleting what the backup does not hold on `--clean`;
//! 6. move ownership to the target service instance, if asked (inside the open transactions
//!    with `--data-only`, which then commit together);
//! 7. verify the target against the manifest. Differences are reported, not rolled back.
//!
//! A failure or a stop request during steps 4 to 6 rolls an empty target back to empty
//! ([`rollback`]: only what this restore wrote); on a target it could not roll back, the error
//! says what state the target is in and how to finish.

pub mod checks;
pub(crate) mod database;
pub(crate) mod objects;
mod options;
mod plan;
pub(crate) mod rollback;
pub mod salvage;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::catalog::{BackupSet, CatalogError};
use crate::model::config::Installation;
use crate::model::manifest::Manifest;
use crate::model::profile::Profile;
use crate::objstore::{ObjStoreError, ObjectStore};
use crate::ops::ownership::{self, OwnershipError, RuleOutcome};
use crate::ops::verify::{self, VerifyError, VerifyOptions, VerifyReport};
use crate::pg::PgError;
use crate::repository::{RepoError, Repository, RepositoryReader};
use crate::support::interrupt::{Stop, StopHandle};
use crate::support::progress::Progress;

use rollback::Touched;

pub use options::{Preflight, RestoreOptions, TargetMode, VerifyMode};
use plan::{attribute_policies, settings_plans};

/// How long a rollback may take after a failure or a stop request.
const ROLLBACK_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] ObjStoreError),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(
        "the target installation {installation} is not empty: {}. Nothing was changed. Use --clean to replace what is there, --data-only to load rows into an existing schema, or --resume to finish an interrupted restore of this backup",
        found.join("; ")
    )]
    NotEmpty { installation: String, found: Vec<String> },
    #[error("--data-only needs the schema in place, but {0}. Nothing was changed")]
    NoSchema(String),
    #[error("the backup does not hold component {0:?} (it holds: {1})")]
    NotInBackup(String, String),
    #[error("{0}. Nothing was changed")]
    Refused(String),
    #[error(
        "the target does not keep every attribute the backup's objects have: {}. Nothing was changed. Restore into a target that keeps them, or accept the loss with --allow-attribute-loss",
        crate::error::summarize(refused, 3)
    )]
    AttributesRefused { refused: Vec<String> },
    #[error(
        "the target does not keep every setting of the backup's buckets: {}. Restore into a target that keeps them, give --allow-attribute-loss to accept the loss, or --bucket-config=skip",
        crate::error::summarize(refused, 3)
    )]
    SettingsRefused { refused: Vec<String> },
    #[error(
        "the backup cannot be restored, it is damaged: {0}. Nothing was changed on the target. Restore what reads with --salvage, read the damaged part from a copy with --fallback-repository NAME, or restore an older backup"
    )]
    BackupDamaged(String),
    #[error("the repository copy of {what} is damaged: {reason}")]
    Damaged { what: String, reason: String },
    #[error("pg_restore into database {database:?} failed: {reason}")]
    PgRestore { database: String, reason: String },
    #[error("restoring object {key:?} into bucket {bucket}: {reason}")]
    Object { bucket: String, key: String, reason: String },
    /// The repository, not the target, failed: the object's data does not read back.
    #[error(
        "object {key:?} of bucket {bucket} cannot be read from the repository (it is damaged; the target is not at fault): {reason}; `speechvault check --read-data` names the damaged packs and every backup they affect. Restore everything else with --salvage, read it from a copy with --fallback-repository NAME (or heal the repository with `check --read-data --repair-from NAME`), or restore an older backup"
    )]
    DamagedData { bucket: String, key: String, reason: String },
    #[error("restoring into bucket {bucket} failed for {count} objects: {summary}")]
    Objects { bucket: String, count: usize, summary: String, failures: Vec<String> },
    #[error("the restore was interrupted")]
    Interrupted,
    #[error("{cause}; the restore was rolled back: {note}")]
    RolledBack { cause: Box<RestoreError>, note: String },
    #[error("{cause}. {state}")]
    Partial { cause: Box<RestoreError>, state: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub source_installation: String,
    pub installation: String,
    pub mode: TargetMode,
    pub resumed: bool,
    pub databases: BTreeMap<String, DbRestored>,
    pub buckets: BTreeMap<String, BucketRestored>,
    pub ownership: Vec<RuleOutcome>,
    pub notes: Vec<String>,
    pub verify: Option<VerifyReport>,
    /// What happened to each of the buckets' own settings.
    pub bucket_settings: Vec<crate::ops::settings::SettingOutcome>,
    /// `--salvage`: what could not be read and was not restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvage: Option<salvage::Salvaged>,
    /// How long each step took, in order: `preflight`, `database <name>`, `bucket <name>`,
    /// `ownership`, `verification` (the recovery time of each).
    pub phases: Vec<Phase>,
    pub seconds: f64,
}

/// One step of a restore and its duration.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbRestored {
    pub dump_bytes: u64,
    pub tables: usize,
    /// The role that owns the database and its objects (not set for `--data-only`).
    pub owner: Option<String>,
    /// GRANTs of the backup that were left out because their role does not exist here.
    pub grants_skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketRestored {
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
    /// Objects already there, identical, and not written again (`--resume`, `--clean`).
    pub kept: u64,
    /// Objects deleted because the backup does not hold them (`--clean`).
    pub deleted: u64,
}

/// The part of a manifest the selected components cover.
pub fn select(manifest: &Manifest, profile: &Profile, components: Option<&[String]>) -> Result<Manifest, RestoreError> {
    let Some(wanted) = components else {
        return Ok(manifest.clone());
    };
    let mut m = manifest.clone();
    let mut dbs = Vec::new();
    let mut buckets = Vec::new();
    for c in wanted {
        if !manifest.components.contains(c) {
            return Err(RestoreError::NotInBackup(c.clone(), manifest.components.join(", ")));
        }
        let comp = profile.select(std::slice::from_ref(c)).map_err(|e| RestoreError::Refused(e.to_string()))?;
        dbs.extend(comp[0].1.databases.clone());
        buckets.extend(comp[0].1.buckets.clone());
    }
    m.components = wanted.to_vec();
    m.databases.retain(|d, _| dbs.contains(d));
    m.buckets.retain(|b, _| buckets.contains(b));
    Ok(m)
}

/// Everything the writing half of a restore works with.
#[derive(Clone)]
pub(crate) struct Job<'a> {
    pub reader: &'a Arc<RepositoryReader>,
    pub set: &'a BackupSet,
    pub manifest: &'a Manifest,
    pub target: &'a Installation,
    pub store: &'a ObjectStore,
    pub profile: &'a Profile,
    pub opts: &'a RestoreOptions,
    pub progress: &'a Progress,
    pub touched: &'a Arc<Mutex<Touched>>,
    pub spool: &'a checks::Spool,
    /// Checked between steps; running tools are killed, uploads in flight finish.
    pub stop: &'a Stop,
    /// Uploads in flight across all buckets (`--parallel`): buckets restore side by side, so
    /// one bucket of a few large objects does not leave the target idle.
    pub transfers: Arc<tokio::sync::Semaphore>,
    /// Per bucket (the profile's name): which attributes its uploads send.
    pub attributes: &'a BTreeMap<String, crate::ops::attributes::AttributePolicy>,
    /// Per bucket (the profile's name): how its own settings go.
    pub settings: &'a BTreeMap<String, BucketSettingsPlan>,
    /// What happened to the buckets' settings so far.
    pub setting_outcomes: &'a Mutex<Vec<crate::ops::settings::SettingOutcome>>,
    /// `--salvage`: what could not be restored.
    pub tally: &'a salvage::SharedTally,
    /// The steps' durations so far ([`RestoreReport::phases`]).
    pub phases: &'a Mutex<Vec<Phase>>,
}

impl Job<'_> {
    /// Records that step `name` took since `since`.
    pub(crate) fn timed(&self, name: impl Into<String>, since: Instant) {
        if let Ok(mut p) = self.phases.lock() {
            p.push(Phase { name: name.into(), seconds: since.elapsed().as_secs_f64() });
        }
    }
}

/// How one bucket's own settings are restored, decided before anything is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct BucketSettingsPlan {
    /// The bucket is created with object lock (the source's had it, the target has none yet).
    pub create_with_object_lock: bool,
    /// The target bucket had a policy before the restore.
    pub target_policy: bool,
}

/// Restores `set` into `target`. `stop` interrupts it (and rolls back what can be).
pub async fn run(
    repo: Arc<Repository>,
    set: &BackupSet,
    target: &Installation,
    profile: &Profile,
    opts: &RestoreOptions,
    progress: &Progress,
    stop: &Stop,
) -> Result<RestoreReport, RestoreError> {
    let clock = Instant::now();
    progress.phase("reading the backup", 0, 0);
    let (v, fallback) = (repo.clone(), opts.fallback.clone());
    let reader = Arc::new(
        tokio::task::spawn_blocking(move || v.reader_with(fallback.as_ref()))
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))??,
    );
    let manifest = {
        let (r, s) = (reader.clone(), set.clone());
        tokio::task::spawn_blocking(move || s.manifest(&r))
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))??
    };
    let mut manifest = select(&manifest, profile, opts.components.as_deref())?;
    if opts.databases_only {
        manifest.buckets.clear();
    }
    if opts.resume && opts.mode == TargetMode::DataOnly {
        return Err(RestoreError::Refused(
            "--resume does not apply to --data-only: such a restore commits nothing until its end, so run it again"
                .into(),
        ));
    }
    if let Some((from, to)) = &opts.ownership {
        ownership::check_request(&manifest.canonical_instance_ids(), from, to)?;
        let recorded: ownership::RecordedOwners =
            manifest.databases.iter().map(|(d, e)| (d.clone(), e.owners.clone())).collect();
        ownership::check_rules(profile, &recorded)?;
    }
    let store = ObjectStore::new(target.s3.clone())?;

    progress.phase("checking the target", 0, 0);
    let target_state = checks::check_target(target, &store, &manifest, opts).await?;
    progress.phase("checking the backup", 0, 0);
    let tally = salvage::SharedTally::default();
    let preflight = Instant::now();
    let spool = checks::prove_backup(&reader, set, &manifest, opts, progress, &tally).await?;
    // A salvage restores only the databases whose dumps read.
    manifest.databases.retain(|db, _| spool.files.contains_key(db));
    progress.phase("checking which object attributes the target keeps", 0, 0);
    let (policies, attribute_notes) = attribute_policies(&store, target, &spool, opts).await?;
    let settings = settings_plans(&store, target, &manifest, opts).await?;
    let setting_outcomes = Mutex::new(Vec::new());
    if stop.is_stopped() {
        return Err(RestoreError::Interrupted);
    }

    let touched = Arc::new(Mutex::new(Touched::new(target_state)));
    let phases = Mutex::new(Vec::new());
    let job = Job {
        reader: &reader,
        set,
        manifest: &manifest,
        target,
        store: &store,
        profile,
        opts,
        progress,
        touched: &touched,
        spool: &spool,
        stop,
        transfers: Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1))),
        attributes: &policies,
        settings: &settings,
        setting_outcomes: &setting_outcomes,
        tally: &tally,
        phases: &phases,
    };
    job.timed("preflight", preflight);
    let written = job.write().await;
    let (databases, buckets, moved, mut notes) = match written {
        Ok(v) => v,
        Err(cause) => return Err(rollback::after_failure(&job, cause).await),
    };
    notes.extend(attribute_notes);

    let verify = if opts.verify == VerifyMode::None {
        None
    } else {
        let vo = VerifyOptions {
            digests: opts.verify == VerifyMode::ReadBack,
            parallel: opts.parallel,
            ownership: opts.ownership.clone(),
            attributes: policies.clone(),
            settings: false,
            lost: tally.lock().map(|t| t.lost_keys.clone()).unwrap_or_default(),
        };
        let lists = verify::BackupLists { reader: &reader, set };
        let since = Instant::now();
        let report = verify::verify(&manifest, lists, target, &vo, progress).await?;
        job.timed("verification", since);
        Some(report)
    };
    // The settings that go after the objects, once they are verified (a rollback can still
    // delete what was written).
    if verify.as_ref().is_none_or(|v| v.ok) {
        progress.phase("restoring the buckets' settings", 0, 0);
        if let Err(cause) = job.apply_settings(false).await {
            return Err(rollback::after_failure(&job, cause).await);
        }
    } else {
        notes.push("the buckets' lifecycle rules, policies and other settings were not restored: the objects differ from the backup".into());
    }
    let bucket_settings = setting_outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    if let Some((reads, from)) = reader.fallback_reads()
        && reads > 0
    {
        notes.push(format!(
            "{reads} blobs and trees that do not read in this repository were read from the fallback repository {from}"
        ));
    }
    Ok(RestoreReport {
        backup_id: manifest.backup_id.clone(),
        source_installation: manifest.installation.clone(),
        installation: target.name.clone(),
        mode: opts.mode,
        resumed: opts.resume,
        databases,
        buckets,
        ownership: moved,
        notes,
        verify,
        bucket_settings,
        salvage: opts.salvage.then(|| tally.lock().map(|t| t.report.clone()).unwrap_or_default()),
        phases: phases.lock().map(|p| p.clone()).unwrap_or_default(),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

type Written = (BTreeMap<String, DbRestored>, BTreeMap<String, BucketRestored>, Vec<RuleOutcome>, Vec<String>);

impl Job<'_> {
    /// Steps 4 to 6: databases, objects, ownership. Records what it creates in `touched`.
    fn check_stop(&self) -> Result<(), RestoreError> {
        if self.stop.is_stopped() { Err(RestoreError::Interrupted) } else { Ok(()) }
    }

    async fn write(&self) -> Result<Written, RestoreError> {
        // Databases and buckets are independent until ownership moves: restore them side by
        // side. The first failure ends the others (what they wrote is rolled back with it).
        let (bytes, objects) = self.manifest.buckets.values().fold((0, 0), |(b, o), e| (b + e.bytes, o + e.objects));
        self.progress.phase(
            format!(
                "restoring {} databases and {objects} objects in {} buckets",
                self.manifest.databases.len(),
                self.manifest.buckets.len()
            ),
            bytes,
            objects,
        );
        // A part that fails stops the others, which end as for a stop request (tools killed,
        // uploads in flight finished and recorded); nothing is dropped half-way, so the
        // rollback knows everything that was written.
        let (failed, part_stop) = self.stop.child();
        let part = Job { stop: &part_stop, ..self.clone() };
        let failed = &failed;
        let databases = async {
            let r = part.write_databases().await;
            if r.is_err() {
                failed.stop();
            }
            r
        };
        let buckets = async {
            let r = part.write_buckets(failed).await;
            if r.is_err() {
                failed.stop();
            }
            r
        };
        let (dbs, buckets) = if self.opts.mode == TargetMode::Clean {
            // `--clean` cannot be rolled back: the databases are whole before any object is
            // written, so damage found inside object data (which the quick preflight does not
            // read) leaves restored databases and the objects already written, not a half.
            let dbs = databases.await;
            match dbs {
                Ok(_) => (dbs, buckets.await),
                Err(_) => (dbs, Err(RestoreError::Interrupted)),
            }
        } else {
            tokio::join!(databases, buckets)
        };
        let ((databases, loads, notes), buckets) = match (dbs, buckets) {
            (Ok(d), Ok(b)) => (d, b),
            (Err(a), Err(b)) => return Err(cause(a, b)),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let mut moved = Vec::new();
        let recorded: ownership::RecordedOwners =
            self.manifest.databases.iter().map(|(d, e)| (d.clone(), e.owners.clone())).collect();
        self.check_stop()?;
        let since = Instant::now();
        if let Some((from, to)) = &self.opts.ownership {
            self.progress.phase("moving ownership", 0, 0);
            if self.opts.mode == TargetMode::DataOnly {
                for load in &loads {
                    let rec = recorded.get(&load.db);
                    moved.extend(ownership::apply(&load.client, self.profile, &load.db, from, to, false, rec).await?);
                }
            } else {
                let dbs: Vec<String> = self.manifest.databases.keys().cloned().collect();
                moved = ownership::transfer(self.target, self.profile, &dbs, from, to, false, Some(&recorded)).await?;
            }
        }
        if self.opts.ownership.is_some() {
            self.timed("ownership", since);
        }
        self.check_stop()?;
        if !loads.is_empty() {
            database::commit_all(self, loads).await?;
        }
        database::clear_markers(self).await;
        Ok((databases, buckets, moved, notes))
    }

    /// Step 4: the databases, one after another (each `pg_restore` runs `--jobs` itself).
    async fn write_databases(
        &self,
    ) -> Result<(BTreeMap<String, DbRestored>, Vec<database::Load>, Vec<String>), RestoreError> {
        let mut notes = Vec::new();
        let mut databases = BTreeMap::new();
        let mut loads = Vec::new();
        for (db, entry) in &self.manifest.databases {
            self.check_stop()?;
            let since = Instant::now();
            let _timed = Timed { job: self, name: format!("database {db}"), since };
            if self.opts.mode == TargetMode::DataOnly {
                loads.push(database::load_rows(self, db).await?);
                databases.insert(
                    db.clone(),
                    DbRestored {
                        dump_bytes: entry.dump_bytes,
                        tables: entry.tables.len(),
                        owner: None,
                        grants_skipped: Vec::new(),
                    },
                );
            } else {
                let restored = database::restore_database(self, db, entry).await?;
                notes.extend(restored.notes.iter().cloned());
                databases.insert(db.clone(), restored.summary);
            }
        }
        Ok((databases, loads, notes))
    }

    /// Applies the buckets' settings that go before (`before`) or after the objects. A setting
    /// the target refuses fails the restore unless `--allow-attribute-loss`.
    pub(crate) async fn apply_settings(&self, before: bool) -> Result<(), RestoreError> {
        for (bucket, plan) in self.settings {
            self.apply_bucket_settings(bucket, plan, before).await?;
        }
        Ok(())
    }

    /// [`Job::apply_settings`] for one bucket.
    pub(crate) async fn apply_bucket_settings(
        &self,
        bucket: &str,
        plan: &BucketSettingsPlan,
        before: bool,
    ) -> Result<(), RestoreError> {
        let Some(entry) = self.manifest.buckets.get(bucket) else { return Ok(()) };
        let name = self.target.bucket(bucket);
        let outcomes = crate::ops::settings::apply(
            self.store,
            &name,
            &entry.settings,
            before,
            self.opts.bucket_config,
            self.opts.mode == TargetMode::Clean,
            plan.target_policy,
        )
        .await?;
        let refused: Vec<String> = outcomes
            .iter()
            .filter(|o| o.action == "refused")
            .map(|o| format!("bucket {}: setting {}: {}", o.bucket, o.setting, o.reason.clone().unwrap_or_default()))
            .collect();
        if let Ok(mut all) = self.setting_outcomes.lock() {
            all.extend(outcomes);
        }
        if !refused.is_empty() && !self.opts.allow_attribute_loss {
            return Err(RestoreError::SettingsRefused { refused });
        }
        Ok(())
    }

    /// Step 5: every bucket, side by side, sharing [`Job::transfers`].
    async fn write_buckets(&self, failed: &StopHandle) -> Result<BTreeMap<String, BucketRestored>, RestoreError> {
        self.check_stop()?;
        let each = self.manifest.buckets.iter().map(|(bucket, entry)| async move {
            let name = self.target.bucket(bucket);
            let since = Instant::now();
            let r = objects::restore_bucket(self, bucket, &name, entry).await;
            if r.is_ok() {
                self.timed(format!("bucket {bucket}"), since);
            }
            if r.is_err() {
                failed.stop();
            }
            r.map(|r| (bucket.clone(), r))
        });
        let mut restored = BTreeMap::new();
        let mut error: Option<RestoreError> = None;
        for r in futures_util::future::join_all(each).await {
            match r {
                Ok((b, r)) => {
                    restored.insert(b, r);
                }
                Err(e) => {
                    error = Some(match error.take() {
                        None => e,
                        Some(earlier) => cause(earlier, e),
                    })
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(restored),
        }
    }
}

/// Records a step's duration when it ends (dropped), however it ends.
struct Timed<'j, 'a> {
    job: &'j Job<'a>,
    name: String,
    since: Instant,
}

impl Drop for Timed<'_, '_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.job.timed(std::mem::take(&mut self.name), self.since);
        }
    }
}

/// Of two parts' errors, the one that caused the stop: a part that only stopped because the
/// other failed reports `Interrupted`.
fn cause(a: RestoreError, b: RestoreError) -> RestoreError {
    if matches!(a, RestoreError::Interrupted) { b } else { a }
}
