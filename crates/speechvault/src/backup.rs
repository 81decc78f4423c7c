//! `backup`: one installation into one snapshot set.
//!
//! The procedure, in order:
//! 1. find what is installed (fail before writing anything if a selected part is missing);
//! 2. optionally wait until no asynchronous job is waiting or processing;
//! 3. dump each database with `pg_dump --format=custom` from an exported snapshot, counting
//!    rows in that same snapshot, streamed into the repository in exact-size parts;
//! 4. stream each bucket's objects into the repository (after the databases, so every object
//!    a dumped row references is in the backup), hashing each with SHA-256 on the way;
//! 5. write the manifest, last. Any failure deletes the snapshots written so far.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Installation;
use crate::inventory::{self, InventoryError};
use crate::manifest::{self, BucketEntry, DatabaseEntry, Manifest, ObjectEntry, SourceInfo};
use crate::objstore::ObjectStore;
use crate::pg::{PgError, query, quote_ident};
use crate::profile::{IdType, Profile};
use crate::progress::Progress;
use crate::repository::{RepoError, SnapshotSpec, Vault};
use crate::source::{self, Failures, MemorySource, StreamSource};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ObjStore(#[from] crate::objstore::ObjStoreError),
    #[error("pg_dump of database {database:?} failed: {reason}")]
    Dump { database: String, reason: String },
    #[error("backing up {part} failed; no snapshot of it was kept: {}", failures.join("; "))]
    Source { part: String, failures: Vec<String> },
    #[error(
        "{busy} asynchronous jobs still waiting or processing in {database}.{table} after {waited:?}; stop the sttAsync services or retry later (nothing was written)"
    )]
    JobsBusy { database: String, table: String, busy: i64, waited: Duration },
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
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            components: None,
            wait_for_async_jobs: None,
            parallel: default_parallelism(),
            dump_part_size: 16 << 20,
            full: false,
        }
    }
}

/// Parallel transfers sized for the host: I/O-bound, so several per core.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16) * 8
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
}

fn tags(inst: &Installation, id: &str, what: &str) -> Vec<String> {
    vec![manifest::TAG.into(), manifest::backup_tag(id), format!("installation:{}", inst.name), what.into()]
}

/// Runs a backup of `inst` into `vault`. On failure, no snapshot of this backup remains.
pub async fn run(
    vault: Arc<Vault>,
    inst: &Installation,
    profile: &Profile,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport, BackupError> {
    let id = manifest::new_backup_id();
    let mut written = Vec::new();
    let result = run_inner(&vault, inst, profile, opts, progress, &id, &mut written).await;
    if result.is_err() && !written.is_empty() {
        let v = vault.clone();
        let ids = written.clone();
        let cleanup = tokio::task::spawn_blocking(move || v.delete_snapshots(&ids)).await;
        match cleanup {
            Ok(Ok(())) => {
                tracing::warn!(backup = %id, "removed {} snapshots of the failed backup", written.len())
            }
            Ok(Err(e)) => {
                tracing::error!(backup = %id, "could not remove snapshots of the failed backup: {e}")
            }
            Err(e) => {
                tracing::error!(backup = %id, "could not remove snapshots of the failed backup: {e}")
            }
        }
    }
    result
}

/// Table name -> `schema.table` quoted, for every user table.
pub async fn user_tables(client: &tokio_postgres::Client, db: &str) -> Result<Vec<(String, String)>, PgError> {
    let rows = query(
        client,
        db,
        "list tables",
        "SELECT n.nspname || '.' || c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
         ORDER BY 1",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Exact row count of every user table.
pub async fn count_rows(client: &tokio_postgres::Client, db: &str) -> Result<BTreeMap<String, i64>, PgError> {
    let mut out = BTreeMap::new();
    for (name, quoted) in user_tables(client, db).await? {
        let rows = query(client, db, "count rows", &format!("SELECT count(*) FROM {quoted}"), &[]).await?;
        out.insert(name, rows[0].get::<_, i64>(0));
    }
    Ok(out)
}

/// The column of an ownership rule that exists in this database, if any: `(table, column)`.
pub async fn rule_column(
    client: &tokio_postgres::Client,
    db: &str,
    table: &str,
    columns: &[String],
) -> Result<Option<String>, PgError> {
    let rows = query(
        client,
        db,
        "find ownership column",
        "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = to_regclass(quote_ident($1)) \
         AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2)",
        &[&table, &columns],
    )
    .await?;
    let present: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(columns.iter().find(|c| present.contains(c)).cloned())
}

async fn wait_for_jobs(
    inst: &Installation,
    profile: &Profile,
    components: &[String],
    limit: Duration,
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
                tokio::time::sleep(delay.min(limit.saturating_sub(waited))).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    vault: &Arc<Vault>,
    inst: &Installation,
    profile: &Profile,
    opts: &BackupOptions,
    progress: &Progress,
    id: &str,
    written: &mut Vec<rustic_core::repofile::SnapshotId>,
) -> Result<BackupReport, BackupError> {
    let started_at = jiff::Timestamp::now();
    let clock = Instant::now();
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
        "SELECT current_setting('server_version'), current_user::text",
        &[],
    )
    .await?;
    let source_info = SourceInfo {
        s3_endpoint: inst.s3.endpoint.clone(),
        postgres: format!("{}:{}", inst.postgres.host, inst.postgres.port),
        postgres_version: version_row[0].get(0),
        postgres_user: version_row[0].get(1),
    };

    if let Some(limit) = opts.wait_for_async_jobs {
        progress.phase("waiting for asynchronous jobs", 0, 0);
        wait_for_jobs(inst, profile, &components, limit).await?;
    }

    let mut db_entries = BTreeMap::new();
    let mut instance_ids = std::collections::BTreeSet::new();
    for db in &databases {
        progress.phase(format!("dumping database {db}"), 0, 0);
        let entry = dump_database(vault, inst, profile, db, id, opts, written).await?;
        for ids in entry.owners.values() {
            instance_ids.extend(ids.iter().cloned());
        }
        db_entries.insert(db.clone(), entry);
    }

    let previous = if opts.full { None } else { previous_manifest(vault, inst).await };
    let mut bucket_entries = BTreeMap::new();
    let mut unchanged = BTreeMap::new();
    for b in &buckets {
        let prev = previous
            .as_ref()
            .filter(|m| m.source.s3_endpoint == inst.s3.endpoint)
            .and_then(|m| m.buckets.get(b))
            .filter(|e| e.source_name == inst.bucket(b));
        let (entry, n) = backup_bucket(vault, inst, &store, b, prev, id, opts, progress, written).await?;
        unchanged.insert(b.clone(), n);
        bucket_entries.insert(b.clone(), entry);
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
    };
    progress.phase("writing the manifest", 0, 0);
    let data = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Internal(e.to_string()))?;
    let spec = SnapshotSpec {
        host: inst.name.clone(),
        label: "manifest".into(),
        tags: tags(inst, id, "manifest"),
        path: PathBuf::from("/speechvault"),
        description: Some(format!("speechvault backup {id} of {}: manifest", inst.name)),
    };
    let v = vault.clone();
    let snap = tokio::task::spawn_blocking(move || {
        v.archive(MemorySource::new(PathBuf::from(manifest::MANIFEST_PATH), data), &spec, None)
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    written.push(snap.id);

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
                        unchanged: unchanged.get(n).copied().unwrap_or(0),
                    },
                )
            })
            .collect(),
        snapshots: written.iter().map(|s| s.to_string()).collect(),
        instance_ids: manifest.instance_ids.clone(),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

async fn dump_database(
    vault: &Arc<Vault>,
    inst: &Installation,
    profile: &Profile,
    db: &str,
    id: &str,
    opts: &BackupOptions,
    written: &mut Vec<rustic_core::repofile::SnapshotId>,
) -> Result<DatabaseEntry, BackupError> {
    // Count rows and read owners in the very snapshot pg_dump will dump from.
    let client = inst.postgres.connect(db).await?;
    let snapshot_id: String = {
        crate::pg::execute(&client, db, "begin snapshot", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        query(&client, db, "export snapshot", "SELECT pg_export_snapshot()", &[]).await?[0].get(0)
    };
    let tables = count_rows(&client, db).await?;
    let mut owners = BTreeMap::new();
    for rule in profile.ownership.iter().filter(|r| r.database == db) {
        if let Some(col) = rule_column(&client, db, &rule.table, &rule.columns).await? {
            let cast = match rule.id_type {
                IdType::Uuid | IdType::Text => "::text",
            };
            let sql = format!(
                "SELECT DISTINCT {c}{cast} FROM {t} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 10000",
                c = quote_ident(&col),
                t = quote_ident(&rule.table)
            );
            let rows = query(&client, db, "read owners", &sql, &[]).await?;
            owners.insert(
                format!("{}.{col}", rule.table),
                rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(),
            );
        }
    }

    let env = inst.postgres.tool_env()?;
    let pg_dump = crate::pg::tool("pg_dump")?;
    let mut cmd = std::process::Command::new(&pg_dump);
    // Uncompressed, so the repository can deduplicate unchanged rows between backups and
    // compress with zstd itself.
    cmd.args(["--format=custom", "--compress=0", "--no-password", "--snapshot", &snapshot_id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    env.apply(&mut cmd);
    cmd.env("PGDATABASE", db);
    let failures = Failures::default();
    let spec = SnapshotSpec {
        host: inst.name.clone(),
        label: format!("db:{db}"),
        tags: tags(inst, id, &format!("db:{db}")),
        path: PathBuf::from(format!("/databases/{db}")),
        description: Some(format!(
            "speechvault backup {id} of {}: database {db} (pg_dump custom format, in parts)",
            inst.name
        )),
    };
    let v = vault.clone();
    let part_size = opts.dump_part_size;
    let f2 = failures.clone();
    let dbname = db.to_string();
    let outcome = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
        let mut child = cmd.spawn().map_err(|e| BackupError::Dump {
            database: dbname.clone(),
            reason: format!("cannot start {}: {e}", pg_dump.display()),
        })?;
        let stdout = child.stdout.take().ok_or_else(|| BackupError::Internal("pg_dump has no stdout".into()))?;
        let mut stderr = child.stderr.take().ok_or_else(|| BackupError::Internal("pg_dump has no stderr".into()))?;
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let src = StreamSource::new(spec.path.clone(), Box::new(stdout), part_size, f2);
        let stats = src.stats();
        let snap = v.archive(src, &spec, None);
        let status = child.wait();
        let errors = err_reader.join().unwrap_or_default();
        let stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
        Ok((snap, status, errors, stats))
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    drop(env);
    let (snap, status, errors, stats) = outcome;
    // The exported snapshot had to stay valid until pg_dump attached to it.
    crate::pg::execute(&client, db, "end snapshot", "COMMIT").await?;
    let snap = snap?;
    written.push(snap.id);
    let status = status.map_err(|e| BackupError::Dump { database: db.into(), reason: e.to_string() })?;
    if !status.success() {
        return Err(BackupError::Dump {
            database: db.into(),
            reason: format!("exit status {status}: {}", errors.trim()),
        });
    }
    let fails = failures.list();
    if !fails.is_empty() {
        return Err(BackupError::Source { part: format!("database {db}"), failures: fails });
    }
    Ok(DatabaseEntry {
        snapshot: snap.id.to_string(),
        path: format!("/databases/{db}"),
        dump_bytes: stats.bytes,
        dump_parts: stats.parts,
        dump_sha256: stats.sha256,
        tables,
        owners,
    })
}

/// The manifest of the latest complete backup of `inst`, if there is one and it reads; a
/// damaged or missing one only means a full read.
async fn previous_manifest(vault: &Arc<Vault>, inst: &Installation) -> Option<Manifest> {
    let (v, name) = (vault.clone(), inst.name.clone());
    let found = tokio::task::spawn_blocking(move || -> Result<Option<Manifest>, crate::catalog::CatalogError> {
        let sets = crate::catalog::backup_sets(&v)?;
        let Some(set) = sets.iter().rev().find(|s| s.complete() && s.installation == name) else {
            return Ok(None);
        };
        let reader = v.reader()?;
        set.manifest(&reader).map(Some)
    })
    .await;
    match found {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("cannot use the previous backup, reading everything: {e}");
            None
        }
    }
}

/// Backs up one bucket; returns its manifest entry and how many objects were unchanged.
#[allow(clippy::too_many_arguments)]
async fn backup_bucket(
    vault: &Arc<Vault>,
    inst: &Installation,
    store: &ObjectStore,
    bucket: &str,
    previous: Option<&BucketEntry>,
    id: &str,
    opts: &BackupOptions,
    progress: &Progress,
    written: &mut Vec<rustic_core::repofile::SnapshotId>,
) -> Result<(BucketEntry, u64), BackupError> {
    let actual = inst.bucket(bucket);
    progress.phase(format!("listing bucket {actual}"), 0, 0);
    let listed = store.list_all(&actual, "").await?;
    let root = PathBuf::from(format!("/buckets/{bucket}"));
    let planned = source::plan_objects(&root, listed);
    crate::repository::check_path_order(planned.iter().map(|p| p.path.as_path()))?;
    let total: u64 = planned.iter().map(|p| p.info.size).sum();
    progress.phase(format!("backing up bucket {actual}"), total, planned.len() as u64);
    let failures = Failures::default();
    let p2 = progress.clone();
    let counter: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| p2.add_bytes(n));
    let known: Vec<Option<(String, crate::objstore::ObjectHead)>> = match previous {
        None => vec![None; planned.len()],
        Some(prev) => {
            let by_key: std::collections::HashMap<&str, &ObjectEntry> =
                prev.entries.iter().map(|e| (e.key.as_str(), e)).collect();
            planned
                .iter()
                .map(|p| {
                    by_key
                        .get(p.info.key.as_str())
                        .filter(|e| {
                            e.size == p.info.size && e.etag == p.info.etag && e.last_modified == p.info.last_modified
                        })
                        .map(|e| (e.sha256.clone(), e.head()))
                })
                .collect()
        }
    };
    let unchanged = known.iter().filter(|k| k.is_some()).count() as u64;
    let parent = previous.filter(|_| unchanged > 0).map(|p| p.snapshot.clone());
    let (src, digests) =
        source::bucket_source(store, &actual, &planned, known, opts.parallel, &failures, Some(counter));
    let spec = SnapshotSpec {
        host: inst.name.clone(),
        label: format!("bucket:{bucket}"),
        tags: tags(inst, id, &format!("bucket:{bucket}")),
        path: root.clone(),
        description: Some(format!(
            "speechvault backup {id} of {}: bucket {actual} (files named by SHA-256 of the key; key in user.s3.key)",
            inst.name
        )),
    };
    let v = vault.clone();
    let snap = tokio::task::spawn_blocking(move || v.archive(src, &spec, parent))
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?;
    let snap = snap?;
    written.push(snap.id);
    let mut fails = failures.list();
    let digests = digests.lock().map(|d| d.clone()).unwrap_or_default();
    let mut entries = Vec::with_capacity(planned.len());
    for (p, d) in planned.iter().zip(digests) {
        match d {
            Some((sha256, head)) => entries.push(ObjectEntry {
                key: p.info.key.clone(),
                size: p.info.size,
                etag: p.info.etag.clone(),
                last_modified: p.info.last_modified.clone(),
                sha256,
                content_type: head.content_type,
                metadata: head.metadata,
                path: p.path.display().to_string(),
            }),
            None => fails.push(format!("object {:?} was not read completely", p.info.key)),
        }
    }
    if !fails.is_empty() {
        fails.truncate(20);
        return Err(BackupError::Source { part: format!("bucket {actual}"), failures: fails });
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let entry = BucketEntry {
        source_name: actual,
        snapshot: snap.id.to_string(),
        path: root.display().to_string(),
        objects: entries.len() as u64,
        bytes: total,
        entries,
    };
    Ok((entry, unchanged))
}
