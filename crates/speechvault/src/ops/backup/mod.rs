//! `backup`: one installation into one snapshot set.
//!
//! The procedure, in order:
//! 1. find what is installed (fail before writing anything if a selected part is missing);
//! 2. optionally wait until no asynchronous job is waiting or processing;
//! 3. dump each database with `pg_dump --format=custom` from an exported snapshot, counting and
//!    digesting rows in that same snapshot, streamed into the repository in exact-size parts
//!    ([`database`]); this is the backup's point of consistency;
//! 4. stream each bucket's objects into the repository (after the databases, so every object
//!    a dumped row references is in the backup), hashing each with SHA-256 on the way; objects
//!    deleted meanwhile are recorded as vanished, objects overwritten meanwhile are read as
//!    they are now ([`bucket`]);
//! 5. write the manifest, last. Any failure, or a stop request, deletes the snapshots written
//!    so far.

pub(crate) mod bucket;
pub(crate) mod database;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::config::Installation;
use crate::model::inventory::{self, InventoryError};
use crate::model::manifest::{self, Manifest, SourceInfo};
use crate::model::profile::Profile;
use crate::objstore::ObjectStore;
use crate::ops::backup::source::{FileData, FilesSource};
use crate::pg::{PgError, query, quote_ident};
use crate::repository::{RepoError, Repository, SnapshotSpec};
use crate::support::interrupt::Stop;
use crate::support::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Profile(#[from] crate::model::profile::ProfileError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] crate::objstore::ObjStoreError),
    #[error("pg_dump of database {database:?} failed: {reason}")]
    Dump { database: String, reason: String },
    #[error("backing up {part} failed; no snapshot of it was kept: {}", crate::error::summarize(failures, 3))]
    Source { part: String, failures: Vec<String> },
    #[error(
        "{busy} asynchronous jobs still waiting or processing in {database}.{table} after {waited:?}; stop the sttAsync services or retry later (nothing was written)"
    )]
    JobsBusy { database: String, table: String, busy: i64, waited: Duration },
    #[error("the backup was interrupted; the snapshots it had written were removed")]
    Interrupted,
    #[error("internal error: {0}")]
    Internal(String),
}

/// How to back up.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Components to back up; `None` backs up what is installed.
    pub components: Option<Vec<String>>,
    /// Wait up to this long for asynchronous jobs to finish before dumping.
    pub wait_for_async_jobs: Option<Duration>,
    /// Objects fetched at once.
    pub parallel: usize,
    /// Size of the in-memory parts a dump is cut into.
    pub dump_part_size: usize,
    /// Read every object again instead of reusing what the previous backup of the same
    /// installation holds for unchanged objects (same key, size, ETag and last-modified).
    pub full: bool,
    /// PostgreSQL connections open at once at most (speechvault's and pg_dump's together).
    /// Every database's snapshot is held open through the backup when this allows one per
    /// database plus one for pg_dump; otherwise databases are backed up one at a time.
    pub pg_connections: usize,
    /// When the backup is marked as looking like ransomware happened.
    pub anomalies: crate::model::anomalies::Thresholds,
    /// Immutable repositories: the backups whose files the backup keeps retained.
    pub keep: crate::ops::immutability::KeepPolicy,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            components: None,
            wait_for_async_jobs: None,
            parallel: READ_AHEAD,
            dump_part_size: 16 << 20,
            full: false,
            pg_connections: 4,
            anomalies: Default::default(),
            keep: Default::default(),
        }
    }
}

/// Objects a backup reads ahead in each bucket. Reading is bound by the server's latency per
/// GET, not by our CPU: on Garage (20-50 ms a GET) 16 at a time read the medium sandbox in
/// 60 s and 64 in 27 s. An object read ahead holds at most 8 body chunks until the archiver
/// takes it, so memory stays bounded; `--max-requests` caps what the source sees.
pub const READ_AHEAD: usize = 64;

/// Objects a restore or a verification moves at once. Small objects are bound by the
/// target's time per request, not by our CPU: with 20 ms per PUT, 16 at a time restored the
/// medium sandbox in 44.8 s and 64 in 23.8 s, at the same peak memory. Memory does not grow
/// with it: upload buffers share one budget ([`crate::objstore::object::UPLOAD_MEMORY`]) and
/// only a few large objects are read from the repository at once (`LARGE_READS` in
/// `restore::objects`).
pub const TRANSFERS: usize = 64;

/// Parallel transfers for restore and verify ([`TRANSFERS`]).
pub fn default_parallelism() -> usize {
    TRANSFERS
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub installation: String,
    pub components: Vec<String>,
    pub databases: BTreeMap<String, DatabaseSummary>,
    pub buckets: BTreeMap<String, BucketSummary>,
    pub snapshots: Vec<String>,
    pub instance_ids: Vec<String>,
    /// Things the operator should know that did not fail the backup (vanished objects).
    pub warnings: Vec<String>,
    /// Measures over their thresholds: the backup looks like ransomware happened since the
    /// previous one (see [`crate::model::anomalies`]). Empty when nothing does.
    pub anomalies: Vec<crate::model::anomalies::Anomaly>,
    /// Bytes this backup added to the repository (new data after deduplication and
    /// compression, packed and encrypted).
    pub stored_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseSummary {
    pub dump_bytes: u64,
    pub tables: usize,
    pub rows: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Objects unchanged since the previous backup, whose content was not read again.
    pub unchanged: u64,
    /// Bytes of those unchanged objects.
    pub unchanged_bytes: u64,
    /// Objects deleted between the listing and their GET: not in the backup.
    pub vanished: u64,
}

pub(crate) fn tags(installation: &str, id: &str, what: &str) -> Vec<String> {
    vec![manifest::TAG.into(), manifest::backup_tag(id), format!("installation:{installation}"), what.into()]
}

/// Runs a backup of `inst` into `repo`. On failure or a stop request, no snapshot of this
/// backup remains.
pub async fn run(
    repo: Arc<Repository>,
    inst: &Installation,
    profile: &Profile,
    opts: &BackupOptions,
    progress: &Progress,
    stop: &Stop,
) -> Result<BackupReport, BackupError> {
    let id = manifest::new_backup_id();
    let mut written = Vec::new();
    let result = run_inner(&repo, inst, profile, opts, progress, stop, &id, &mut written).await;
    repo.release_index();
    let result = match result {
        Err(_) if stop.is_stopped() => Err(BackupError::Interrupted),
        other => other,
    };
    if result.is_err() && !written.is_empty() {
        let v = repo.clone();
        let ids = written.clone();
        let cleanup = tokio::task::spawn_blocking(move || v.delete_snapshots(&ids)).await;
        match cleanup {
            Ok(Ok(())) => tracing::warn!(backup = %id, "removed {} snapshots of the failed backup", written.len()),
            Ok(Err(e)) => tracing::error!(backup = %id, "could not remove snapshots of the failed backup: {e}"),
            Err(e) => tracing::error!(backup = %id, "could not remove snapshots of the failed backup: {e}"),
        }
    }
    result
}

/// Writes a backup set's manifest, its last snapshot: the set is complete once it exists.
pub(crate) async fn write_manifest(
    repo: &Arc<Repository>,
    installation: &str,
    id: &str,
    manifest: &Manifest,
    lists: &BTreeMap<String, crate::model::spool::ObjectList>,
    parts: usize,
) -> Result<rustic_core::repofile::SnapshotId, BackupError> {
    let data = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Internal(e.to_string()))?;
    let mut files = vec![(PathBuf::from(manifest::MANIFEST_PATH), FileData::Memory(data))];
    for (bucket, list) in lists {
        files.push((PathBuf::from(manifest::objects_path(bucket)), FileData::Local(list.path().to_path_buf())));
    }
    let spec = SnapshotSpec {
        host: installation.to_string(),
        label: "manifest".into(),
        tags: {
            let mut t = tags(installation, id, "manifest");
            // How many snapshots the set has besides this one: a part whose snapshot file is
            // lost or damaged is then seen without reading the manifest.
            t.push(format!("{}{parts}", manifest::PARTS_TAG_PREFIX));
            if !manifest.anomalies.is_empty() {
                t.push(manifest::ANOMALOUS_TAG.into());
            }
            t
        },
        path: PathBuf::from("/speechvault"),
        description: Some(format!("speechvault backup {id} of {installation}: manifest")),
    };
    let v = repo.clone();
    let snap = tokio::task::spawn_blocking(move || {
        crate::support::interrupt::pause_point("backup:manifest");
        v.archive(FilesSource::new(files), &spec, None)
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    Ok(snap.id)
}

async fn wait_for_jobs(
    inst: &Installation,
    profile: &Profile,
    components: &[String],
    limit: Duration,
    stop: &Stop,
) -> Result<(), BackupError> {
    for name in components {
        let Some(busy) = &profile.components[name].busy_jobs else {
            continue;
        };
        for db in &profile.components[name].databases {
            let client = inst.postgres.connect(db).await?;
            let sql = format!(
                "SELECT count(*) FROM {} WHERE {}::text = ANY($1)",
                quote_ident(&busy.table),
                quote_ident(&busy.column)
            );
            let start = Instant::now();
            let mut delay = Duration::from_secs(1);
            loop {
                let rows = query(&client, db, "count busy jobs", &sql, &[&busy.values]).await?;
                let n: i64 = rows[0].get(0);
                if n == 0 {
                    break;
                }
                let waited = start.elapsed();
                if waited >= limit {
                    return Err(BackupError::JobsBusy {
                        database: db.clone(),
                        table: busy.table.clone(),
                        busy: n,
                        waited,
                    });
                }
                tracing::warn!(database = %db, busy = n, "waiting for asynchronous jobs to finish");
                tokio::select! {
                    () = tokio::time::sleep(delay.min(limit.saturating_sub(waited))) => {}
                    () = stop.stopped() => return Err(BackupError::Interrupted),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    repo: &Arc<Repository>,
    inst: &Installation,
    profile: &Profile,
    opts: &BackupOptions,
    progress: &Progress,
    stop: &Stop,
    id: &str,
    written: &mut Vec<rustic_core::repofile::SnapshotId>,
) -> Result<BackupReport, BackupError> {
    let started_at = jiff::Timestamp::now();
    let clock = Instant::now();
    let stored_before = repo.stored_bytes();
    let store = ObjectStore::new(inst.s3.clone())?;
    progress.phase("checking the installation", 0, 0);
    let inv = inventory::take(inst, profile, &store).await?;
    let components = inventory::components(inst, profile, &inv, opts.components.as_deref())?;
    let selected = profile.select(&components)?;
    let mut databases: Vec<String> = selected.iter().flat_map(|(_, c)| c.databases.clone()).collect();
    databases.sort();
    databases.dedup();
    let mut buckets: Vec<String> = selected.iter().flat_map(|(_, c)| c.buckets.clone()).collect();
    buckets.sort();
    buckets.dedup();

    let admin = inst.postgres.connect("postgres").await?;
    let version_row = query(
        &admin,
        "postgres",
        "server version",
        "SELECT current_setting('server_version'), current_user::text, current_setting('server_version_num')::int",
        &[],
    )
    .await?;
    let version_num: i32 = version_row[0].get(2);
    let source_info = SourceInfo {
        s3_endpoint: inst.s3.endpoint.clone(),
        postgres: inst.postgres.address(),
        postgres_version: version_row[0].get(0),
        postgres_user: version_row[0].get(1),
        postgres_version_num: Some(version_num),
        postgres_system_id: crate::pg::catalog::system_identifier(&admin).await,
    };
    let pg_dump = crate::pg::tool("pg_dump")?;
    if !databases.is_empty() {
        // pg_dump refuses servers newer than itself, after a connection: say so up front.
        crate::pg::tools::check_tool_version(&pg_dump, version_num, &inst.postgres.address())?;
    }

    if let Some(limit) = opts.wait_for_async_jobs {
        progress.phase("waiting for asynchronous jobs", 0, 0);
        wait_for_jobs(inst, profile, &components, limit, stop).await?;
    }

    // The point of consistency: every database's snapshot is taken before any bucket is
    // listed, so every object a dumped row references is listed after it (and is in the backup
    // unless deleted meanwhile). Then dumps and buckets run at once. With too few PostgreSQL
    // connections allowed to hold every snapshot open, databases go one at a time, first.
    let concurrent = opts.pg_connections > databases.len();
    progress.phase(format!("backing up {} databases and {} buckets", databases.len(), buckets.len()), 0, 0);
    // A part that fails stops the others (they clean up as for a stop request); all are
    // awaited, so every snapshot written is known, and removed, before the error is returned.
    let (failed, part_stop) = stop.child();
    let dump_job = database::DumpJob {
        repo,
        pg: &inst.postgres,
        inst_name: &inst.name,
        profile,
        id,
        opts,
        pg_dump: &pg_dump,
        stop: &part_stop,
    };
    let mut held = Vec::new();
    if concurrent {
        for db in &databases {
            held.push(dump_job.begin(db).await?);
        }
    }
    {
        let v = repo.clone();
        tokio::task::spawn_blocking(move || v.hold_index())
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))??;
    }
    let dumps = async {
        let mut written = Vec::new();
        let mut entries = BTreeMap::new();
        let result: Result<(), BackupError> = async {
            if concurrent {
                // Every snapshot is held: digests of all run while the dumps go one by one.
                entries = dump_job.dump_all(held, &mut written).await?;
                return Ok(());
            }
            for db in &databases {
                if part_stop.is_stopped() {
                    return Err(BackupError::Interrupted);
                }
                let snapshot = dump_job.begin(db).await?;
                let entry = dump_job.dump(snapshot, db, &mut written).await?;
                entries.insert(db.clone(), entry);
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            failed.stop();
        }
        (result, written, entries)
    };
    // Loaded for --full too: the anomaly measures compare with it.
    let previous = bucket::previous_backup(repo, inst).await;
    let part_stop = &part_stop;
    let bucket_parts = buckets.iter().map(|b| {
        let prev = previous.buckets.get(b);
        // Each bucket fetches ahead on its own budget: a permit is held until the archiver has
        // read its object, so a shared budget let one bucket's waiting objects starve the
        // others (on a server with 20-50 ms per GET, the backup fell to a few GETs at a time).
        // The requests in flight are capped for all buckets together by the store's limits.
        let transfers = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
        let job = bucket::BucketJob {
            repo,
            inst,
            store: &store,
            id,
            progress,
            stop: part_stop,
            transfers: transfers.clone(),
            reuse: !opts.full,
        };
        let failed = &failed;
        async move {
            let mut written = Vec::new();
            let result = if part_stop.is_stopped() {
                Err(BackupError::Interrupted)
            } else {
                job.run(b, prev, &mut written).await
            };
            if result.is_err() {
                failed.stop();
            }
            (b.clone(), result, written)
        }
    });
    let all_buckets = futures_util::future::join_all(bucket_parts);
    let ((dump_result, dump_written, db_entries), bucket_results) = if concurrent {
        tokio::join!(dumps, all_buckets)
    } else {
        let d = dumps.await;
        (d, all_buckets.await)
    };
    // Every snapshot written is recorded first, whatever failed; then the first real error
    // (not a part that stopped because another failed) is the backup's.
    written.extend(dump_written);
    let mut first_error: Option<BackupError> = None;
    let mut keep = |e: BackupError| match &first_error {
        None => first_error = Some(e),
        Some(BackupError::Interrupted) if !matches!(e, BackupError::Interrupted) => first_error = Some(e),
        Some(_) => {}
    };
    if let Err(e) = dump_result {
        keep(e);
    }
    let mut bucket_entries = BTreeMap::new();
    let mut lists = BTreeMap::new();
    let mut unchanged = BTreeMap::new();
    let mut changes = BTreeMap::new();
    let mut warnings = Vec::new();
    for (b, result, w) in bucket_results {
        written.extend(w);
        match result {
            Ok(bucket::BucketDone { entry, list, unchanged: n, unchanged_bytes: nb, change }) => {
                changes.insert(b.clone(), change);
                if !entry.vanished.is_empty() {
                    warnings.push(format!(
                        "bucket {}: {} objects were deleted while the backup ran and are not in it (first: {:?})",
                        entry.source_name,
                        entry.vanished.len(),
                        entry.vanished[0]
                    ));
                }
                for (name, setting) in &entry.settings {
                    if let crate::objstore::Setting::Unreadable(why) = setting {
                        warnings.push(format!(
                            "bucket {}: its {name} setting could not be read ({why}); the backup does not hold it",
                            entry.source_name
                        ));
                    }
                }
                unchanged.insert(b.clone(), (n, nb));
                lists.insert(b.clone(), list);
                bucket_entries.insert(b, entry);
            }
            Err(e) => keep(e),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut instance_ids = std::collections::BTreeSet::new();
    for entry in db_entries.values() {
        for ids in entry.owners.values() {
            instance_ids.extend(ids.iter().cloned());
        }
    }
    // Does this look like ransomware happened since the previous backup?
    let tables: BTreeMap<String, crate::model::anomalies::TableChange> = db_entries
        .iter()
        .flat_map(|(db, e)| e.tables.iter().map(move |(t, rows)| (format!("{db}/{t}"), *rows, e.row_samples.get(t))))
        .filter_map(|(name, rows_now, sample)| {
            let rows_before = *previous.tables.get(&name)?;
            let changed_share = sample.zip(previous.row_samples.get(&name)).and_then(|(now, before)| {
                crate::model::anomalies::rows_changed_share(before, now, opts.anomalies.min_rows)
            });
            Some((name, crate::model::anomalies::TableChange { rows_before, rows_now, changed_share }))
        })
        .collect();
    let anomalies = crate::model::anomalies::detect(&changes, &tables, &opts.anomalies);
    if !anomalies.is_empty() {
        let what: Vec<String> = anomalies
            .iter()
            .map(|a| format!("{} {} = {} (threshold {})", a.scope, a.measure, a.value, a.threshold))
            .collect();
        warnings.push(format!(
            "this backup looks like ransomware or mass deletion happened since the previous one: {}; it is kept and marked anomalous, and retention keeps the last backup before it",
            what.join(", ")
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let manifest = Manifest {
        format: manifest::FORMAT,
        tool: format!("speechvault {}", env!("CARGO_PKG_VERSION")),
        backup_id: id.to_string(),
        installation: inst.name.clone(),
        started: started_at.to_string(),
        finished: jiff::Timestamp::now().to_string(),
        source: source_info,
        components: components.clone(),
        databases: db_entries,
        buckets: bucket_entries,
        instance_ids: instance_ids.into_iter().collect(),
        retention: None,
        anomalies: anomalies.clone(),
    };
    if stop.is_stopped() {
        return Err(BackupError::Interrupted);
    }
    let mut manifest = manifest;
    if repo.immutability().is_some() {
        let (r, name) = (repo.clone(), inst.name.clone());
        if let Ok(Some(w)) =
            tokio::task::spawn_blocking(move || crate::ops::immutability::interval_warning(&r, &name)).await
        {
            tracing::warn!("{w}");
            warnings.push(w);
        }
        progress.phase("extending the retention of what the backups need", 0, 0);
        let (r, ids, keep) = (repo.clone(), written.clone(), opts.keep.clone());
        let extended = tokio::task::spawn_blocking(move || crate::ops::immutability::extend(&r, &ids, &keep))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        match extended {
            Ok(Some((record, _))) => manifest.retention = Some(record),
            Ok(None) => {}
            // The backup's data is whole; its old packs may lose their retention early.
            Err(e) => {
                let w = format!(
                    "could not extend the retention of the files the backups need ({e}); the next backup tries again"
                );
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }
    }
    progress.phase("writing the manifest", 0, 0);
    let snap = write_manifest(repo, &inst.name, id, &manifest, &lists, written.len()).await?;
    written.push(snap);
    // A key that may write may also write over a file or hide it: say so at once, every
    // backup, rather than at the next check (the backup itself is whole: reads take the
    // retained versions).
    if repo.immutability().is_some() {
        let r = repo.clone();
        let findings = tokio::task::spawn_blocking(move || r.immutable_findings()).await;
        match findings {
            Ok(Ok(found)) => {
                for f in found {
                    let w = format!("tampered repository file {}", f.describe());
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
            }
            Ok(Err(e)) => warnings.push(format!("could not look for tampered repository files: {e}")),
            Err(e) => warnings.push(format!("could not look for tampered repository files: {e}")),
        }
    }

    Ok(BackupReport {
        backup_id: id.to_string(),
        installation: inst.name.clone(),
        components,
        databases: manifest
            .databases
            .iter()
            .map(|(n, d)| {
                (
                    n.clone(),
                    DatabaseSummary { dump_bytes: d.dump_bytes, tables: d.tables.len(), rows: d.tables.values().sum() },
                )
            })
            .collect(),
        buckets: manifest
            .buckets
            .iter()
            .map(|(n, b)| {
                (
                    n.clone(),
                    BucketSummary {
                        objects: b.objects,
                        bytes: b.bytes,
                        unchanged: unchanged.get(n).map_or(0, |u| u.0),
                        unchanged_bytes: unchanged.get(n).map_or(0, |u| u.1),
                        vanished: b.vanished.len() as u64,
                    },
                )
            })
            .collect(),
        snapshots: written.iter().map(|s| s.to_string()).collect(),
        instance_ids: manifest.canonical_instance_ids().iter().map(|i| i.to_string()).collect(),
        warnings,
        anomalies,
        stored_bytes: repo.stored_bytes().saturating_sub(stored_before),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
