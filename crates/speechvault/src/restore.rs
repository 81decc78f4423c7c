//! `restore`: a backup set into an installation, then ownership, then verification.
//!
//! The procedure, in order:
//! 1. read the manifest and check the target before changing anything: reachable, and empty
//!    unless `--clean` (drop and recreate) or `--data-only` (load rows into the schema a fresh
//!    installation already created, as the vendor's tooling does);
//! 2. restore each database: the dump's parts are streamed out of the repository into a
//!    private temporary file (checked against the manifest's SHA-256), then `pg_restore` with
//!    parallel jobs, objects owned by the target's user, every error fatal;
//! 3. stream every object back into its bucket (multipart for large ones) with its content
//!    type and user metadata, several at a time;
//! 4. move ownership to the target service instance, if asked;
//! 5. verify the target against the manifest.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{BackupSet, CatalogError};
use crate::config::Installation;
use crate::instance::InstanceId;
use crate::manifest::{BucketEntry, DatabaseEntry, Manifest, ObjectEntry};
use crate::objstore::{ObjStoreError, ObjectStore, PutOptions};
use crate::ownership::{self, OwnershipError, RuleOutcome};
use crate::pg::{PgError, execute, quote_ident};
use crate::profile::Profile;
use crate::progress::Progress;
use crate::repository::{RepoError, Vault, VaultReader};
use crate::verify::{self, VerifyError, VerifyOptions, VerifyReport};

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
        "the target installation {installation} is not empty: {}. Nothing was changed. Use --clean to drop and recreate them, or --data-only to load rows into an existing schema",
        found.join("; ")
    )]
    NotEmpty { installation: String, found: Vec<String> },
    #[error("--data-only needs the schema in place, but {0}. Nothing was changed")]
    NoSchema(String),
    #[error("the backup does not hold component {0:?} (it holds: {1})")]
    NotInBackup(String, String),
    #[error("the repository copy of {what} is damaged: {reason}")]
    Damaged { what: String, reason: String },
    #[error("pg_restore into database {database:?} failed: {reason}")]
    PgRestore { database: String, reason: String },
    #[error("restoring object {key:?} into bucket {bucket}: {reason}")]
    Object { bucket: String, key: String, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to do when the target already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    /// Refuse unless the target's databases and buckets are empty or missing.
    Empty,
    /// Drop and recreate databases, empty buckets, then restore.
    Clean,
    /// Load rows into existing databases (schema from a fresh installation); objects are
    /// written over existing ones.
    DataOnly,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub mode: TargetMode,
    /// Restore only these components (default: all in the backup).
    pub components: Option<Vec<String>>,
    /// Move ownership from the first to the second service instance.
    pub ownership: Option<(InstanceId, InstanceId)>,
    /// Objects transferred at once.
    pub parallel: usize,
    /// `pg_restore --jobs`.
    pub jobs: usize,
    pub verify: bool,
    pub verify_digests: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            mode: TargetMode::Empty,
            components: None,
            ownership: None,
            parallel: crate::backup::default_parallelism(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            verify: true,
            verify_digests: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub source_installation: String,
    pub installation: String,
    pub mode: TargetMode,
    pub databases: BTreeMap<String, DbRestored>,
    pub buckets: BTreeMap<String, BucketRestored>,
    pub ownership: Vec<RuleOutcome>,
    pub verify: Option<VerifyReport>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbRestored {
    pub dump_bytes: u64,
    pub tables: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketRestored {
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
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
        let comp = profile.select(std::slice::from_ref(c)).map_err(|e| RestoreError::Internal(e.to_string()))?;
        dbs.extend(comp[0].1.databases.clone());
        buckets.extend(comp[0].1.buckets.clone());
    }
    m.components = wanted.to_vec();
    m.databases.retain(|d, _| dbs.contains(d));
    m.buckets.retain(|b, _| buckets.contains(b));
    Ok(m)
}

/// Restores `set` into `target`.
pub async fn run(
    vault: Arc<Vault>,
    set: &BackupSet,
    target: &Installation,
    profile: &Profile,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport, RestoreError> {
    let clock = Instant::now();
    progress.phase("reading the backup", 0, 0);
    let v = vault.clone();
    let reader = Arc::new(
        tokio::task::spawn_blocking(move || v.reader()).await.map_err(|e| RestoreError::Internal(e.to_string()))??,
    );
    let manifest = {
        let (r, s) = (reader.clone(), set.clone());
        tokio::task::spawn_blocking(move || s.manifest(&r))
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))??
    };
    let manifest = select(&manifest, profile, opts.components.as_deref())?;
    let store = ObjectStore::new(target.s3.clone())?;

    progress.phase("checking the target", 0, 0);
    preflight(target, &store, &manifest, opts.mode).await?;
    let pg_restore = crate::pg::tool("pg_restore")?;

    let mut touched = Touched::default();
    let written = Job { reader: &reader, set, target, store: &store, opts, pg_restore: &pg_restore, progress }
        .write(&manifest, &mut touched)
        .await;
    let (databases, buckets) = match written {
        Ok(v) => v,
        Err(e) => {
            if opts.mode == TargetMode::Empty {
                touched.roll_back(target, &store).await;
            }
            return Err(e);
        }
    };

    let mut moved = Vec::new();
    if let Some((from, to)) = &opts.ownership {
        progress.phase("moving ownership", 0, 0);
        let dbs: Vec<String> = manifest.databases.keys().cloned().collect();
        moved = ownership::transfer(target, profile, &dbs, from, to, false).await?;
    }

    let verify = if opts.verify {
        let vo = VerifyOptions { digests: opts.verify_digests, parallel: opts.parallel };
        Some(verify::verify(&manifest, target, &vo, progress).await?)
    } else {
        None
    };
    Ok(RestoreReport {
        backup_id: manifest.backup_id.clone(),
        source_installation: manifest.installation.clone(),
        installation: target.name.clone(),
        mode: opts.mode,
        databases,
        buckets,
        ownership: moved,
        verify,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// What a restore created on an empty target, so a failure can take it back.
#[derive(Default)]
struct Touched {
    databases: Vec<String>,
    /// Buckets written to, and whether the restore created them.
    buckets: Vec<(String, bool)>,
}

impl Touched {
    /// Returns an empty target to empty: drops the databases the restore created, deletes the
    /// objects it wrote (the buckets were empty before) and the buckets it created.
    async fn roll_back(&self, target: &Installation, store: &ObjectStore) {
        if let Ok(admin) = target.postgres.connect("postgres").await {
            for db in &self.databases {
                if let Err(e) = crate::pg::drop_database(&admin, db).await {
                    tracing::warn!("rolling back: cannot drop database {db}: {e}");
                }
            }
        }
        for (bucket, created) in &self.buckets {
            if let Err(e) = store.delete_all(bucket, "", 32).await {
                tracing::warn!("rolling back: cannot empty bucket {bucket}: {e}");
            }
            if *created && let Err(e) = store.delete_bucket(bucket).await {
                tracing::warn!("rolling back: cannot delete bucket {bucket}: {e}");
            }
        }
        tracing::warn!("the failed restore was rolled back; the target is as empty as it was");
    }
}

type Written = (BTreeMap<String, DbRestored>, BTreeMap<String, BucketRestored>);

/// Everything the writing half of a restore works with.
struct Job<'a> {
    reader: &'a Arc<VaultReader>,
    set: &'a BackupSet,
    target: &'a Installation,
    store: &'a ObjectStore,
    opts: &'a RestoreOptions,
    pg_restore: &'a std::path::Path,
    progress: &'a Progress,
}

impl Job<'_> {
    /// Restores the databases, then the buckets, recording what it creates in `touched`.
    async fn write(&self, manifest: &Manifest, touched: &mut Touched) -> Result<Written, RestoreError> {
        let mut databases = BTreeMap::new();
        for (db, entry) in &manifest.databases {
            self.progress.phase(format!("restoring database {db}"), entry.dump_bytes, 0);
            restore_database(self, db, entry, touched).await?;
            databases.insert(db.clone(), DbRestored { dump_bytes: entry.dump_bytes, tables: entry.tables.len() });
        }
        let mut buckets = BTreeMap::new();
        for (bucket, entry) in &manifest.buckets {
            let name = self.target.bucket(bucket);
            self.progress.phase(format!("restoring bucket {name}"), entry.bytes, entry.objects);
            restore_bucket(self, &name, entry, touched).await?;
            buckets.insert(bucket.clone(), BucketRestored { name, objects: entry.objects, bytes: entry.bytes });
        }
        Ok((databases, buckets))
    }
}

/// Checks the target before anything is changed.
async fn preflight(
    target: &Installation,
    store: &ObjectStore,
    manifest: &Manifest,
    mode: TargetMode,
) -> Result<(), RestoreError> {
    let admin = target.postgres.connect("postgres").await?;
    let mut found = Vec::new();
    let mut missing_schema = Vec::new();
    for db in manifest.databases.keys() {
        let exists = crate::pg::query(
            &admin,
            "postgres",
            "find database",
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[db],
        )
        .await?[0]
            .get::<_, i64>(0)
            > 0;
        if !exists {
            if mode == TargetMode::DataOnly {
                missing_schema.push(format!(
                    "database {db:?} does not exist on {}:{}",
                    target.postgres.host, target.postgres.port
                ));
            }
            continue;
        }
        let client = target.postgres.connect(db).await?;
        let tables = crate::backup::user_tables(&client, db).await?;
        if mode == TargetMode::Empty && !tables.is_empty() {
            found.push(format!("database {db:?} has {} tables", tables.len()));
        }
        if mode == TargetMode::DataOnly && tables.is_empty() {
            missing_schema.push(format!("database {db:?} has no tables"));
        }
    }
    for bucket in manifest.buckets.keys() {
        let name = target.bucket(bucket);
        if mode == TargetMode::Empty && store.bucket_exists(&name).await? {
            let (page, _) = store.list_page(&name, "", None).await?;
            if !page.is_empty() {
                found.push(format!("bucket {name:?} holds objects"));
            }
        }
    }
    if !found.is_empty() {
        return Err(RestoreError::NotEmpty { installation: target.name.clone(), found });
    }
    if !missing_schema.is_empty() {
        return Err(RestoreError::NoSchema(missing_schema.join("; ")));
    }
    // Also proves the S3 credentials before any database is touched.
    store.list_buckets().await?;
    Ok(())
}

fn snapshot_of<'a>(set: &'a BackupSet, id: &str) -> Result<&'a rustic_core::repofile::SnapshotFile, RestoreError> {
    set.snapshots.iter().find(|s| s.id.to_string() == id).ok_or_else(|| RestoreError::Damaged {
        what: format!("backup {}", set.id),
        reason: format!("snapshot {id} named in the manifest is missing"),
    })
}

/// A `dbname=...` connection string for `pg_restore -d` (a bare name containing `=` would be
/// read as a connection string).
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn restore_database(
    job: &Job<'_>,
    db: &str,
    entry: &DatabaseEntry,
    touched: &mut Touched,
) -> Result<(), RestoreError> {
    let Job { reader, set, target, opts, pg_restore, .. } = *job;
    let snap = snapshot_of(set, &entry.snapshot)?.clone();
    // The dump goes to a private temporary file: pg_restore needs a seekable archive for
    // parallel jobs. (Object data is never staged on disk; dumps are small by comparison.)
    let spool = tempfile::Builder::new().prefix("speechvault-dump-").tempfile()?;
    let spool_path = spool.path().to_path_buf();
    {
        let (r, e, file) = (reader.clone(), entry.clone(), spool.reopen()?);
        let db_name = db.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
            let mut files = r.files(&snap)?;
            files.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = HashingWriter { inner: std::io::BufWriter::new(file), hasher: Sha256::new(), bytes: 0 };
            for (_, node) in &files {
                r.dump(node, &mut out)?;
            }
            out.inner.flush()?;
            let digest = hex::encode(out.hasher.finalize());
            if out.bytes != e.dump_bytes || digest != e.dump_sha256 || files.len() as u32 != e.dump_parts {
                return Err(RestoreError::Damaged {
                    what: format!("the dump of {db_name}"),
                    reason: format!("read {} bytes in {} parts with SHA-256 {digest}, the manifest says {} bytes in {} parts with {}", out.bytes, files.len(), e.dump_bytes, e.dump_parts, e.dump_sha256),
                });
            }
            Ok(())
        })
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    }

    let admin = target.postgres.connect("postgres").await?;
    let mut created = false;
    match opts.mode {
        TargetMode::Clean => {
            crate::pg::drop_database(&admin, db).await?;
            execute(&admin, "postgres", "create database", &format!("CREATE DATABASE {}", quote_ident(db))).await?;
            created = true;
        }
        TargetMode::Empty => {
            let exists = crate::pg::query(
                &admin,
                "postgres",
                "find database",
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&db],
            )
            .await?[0]
                .get::<_, i64>(0)
                > 0;
            if !exists {
                execute(&admin, "postgres", "create database", &format!("CREATE DATABASE {}", quote_ident(db))).await?;
                created = true;
                touched.databases.push(db.to_string());
            }
        }
        TargetMode::DataOnly => {}
    }
    let superuser: bool = crate::pg::query(
        &admin,
        "postgres",
        "check role",
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        &[],
    )
    .await?[0]
        .get(0);

    let env = target.postgres.tool_env()?;
    let mut cmd = std::process::Command::new(pg_restore);
    cmd.args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"]);
    if opts.mode == TargetMode::DataOnly {
        // Rows into an existing schema, all or nothing. The archive lists tables by name, not
        // by foreign-key order: a superuser holds triggers (and so key checks) off while
        // loading; other roles depend on the order working out, and pg_restore says if not.
        cmd.args(["--data-only", "--single-transaction"]);
        if superuser {
            cmd.arg("--disable-triggers");
        }
    } else {
        cmd.arg(format!("--jobs={}", opts.jobs.max(1)));
    }
    cmd.arg("--dbname").arg(dbname_conninfo(db)).arg(&spool_path);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    env.apply(&mut cmd);
    let db_name = db.to_string();
    let out =
        tokio::task::spawn_blocking(move || cmd.output()).await.map_err(|e| RestoreError::Internal(e.to_string()))?;
    let out = out.map_err(|e| RestoreError::PgRestore {
        database: db_name.clone(),
        reason: format!("cannot start pg_restore: {e}"),
    })?;
    drop(spool);
    if !out.status.success() {
        if created {
            // Leave no half-restored database behind.
            if let Err(e) = crate::pg::drop_database(&admin, db).await {
                tracing::warn!("could not drop the half-restored database {db}: {e}");
            }
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(RestoreError::PgRestore {
            database: db.into(),
            reason: format!("{}: {}", out.status, tail.into_iter().rev().collect::<Vec<_>>().join("\n")),
        });
    }
    Ok(())
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sends what rustic's `dump` writes into a channel, in chunks of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    bytes: u64,
}

const CHUNK: usize = 1 << 20;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.bytes += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other("upload stopped"))
    }
}

async fn restore_bucket(
    job: &Job<'_>,
    name: &str,
    entry: &BucketEntry,
    touched: &mut Touched,
) -> Result<(), RestoreError> {
    let Job { reader, set, store, opts, progress, .. } = *job;
    let snap = snapshot_of(set, &entry.snapshot)?.clone();
    let files = {
        let r = reader.clone();
        tokio::task::spawn_blocking(move || r.files(&snap))
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))??
    };
    let nodes: HashMap<String, rustic_core::repofile::Node> =
        files.into_iter().map(|(p, n)| (p.display().to_string(), n)).collect();
    let existed = store.bucket_exists(name).await?;
    if !existed {
        store.create_bucket(name).await?;
    }
    touched.buckets.push((name.to_string(), !existed));
    if opts.mode == TargetMode::Clean {
        store.delete_all(name, "", opts.parallel).await?;
    }
    let mut jobs = Vec::with_capacity(entry.entries.len());
    for e in &entry.entries {
        let node = nodes.get(&e.path).cloned().ok_or_else(|| RestoreError::Damaged {
            what: format!("bucket {}", entry.source_name),
            reason: format!("object {:?} (file {}) is missing from snapshot {}", e.key, e.path, entry.snapshot),
        })?;
        if node.meta.size != e.size {
            return Err(RestoreError::Damaged {
                what: format!("bucket {}", entry.source_name),
                reason: format!(
                    "object {:?} has {} bytes in the snapshot, {} in the manifest",
                    e.key, node.meta.size, e.size
                ),
            });
        }
        jobs.push((e, node));
    }
    let mut uploads = futures_util::stream::iter(
        jobs.into_iter().map(|(e, node)| restore_object(reader.clone(), store, name, e, node, progress)),
    )
    .buffer_unordered(opts.parallel.max(1));
    while let Some(r) = uploads.next().await {
        r?;
    }
    Ok(())
}

async fn restore_object(
    reader: Arc<VaultReader>,
    store: &ObjectStore,
    bucket: &str,
    e: &ObjectEntry,
    node: rustic_core::repofile::Node,
    progress: &Progress,
) -> Result<(), RestoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let expected = e.size;
    let dumper = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK.min(expected as usize)), bytes: 0 };
        let result =
            reader.dump(&node, &mut w).map_err(|e| e.to_string()).and_then(|()| w.flush().map_err(|e| e.to_string()));
        let verdict = match result {
            Err(msg) => Err(msg),
            Ok(()) if w.bytes != expected => Err(format!("repository gave {} bytes, expected {expected}", w.bytes)),
            Ok(()) => Ok(()),
        };
        if let Err(msg) = &verdict {
            // The upload sees the error before its end and abandons the object.
            let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
        }
        verdict
    });
    let opts = PutOptions { content_type: e.content_type.clone(), metadata: e.metadata.clone() };
    let p = progress.clone();
    let stream = tokio_stream_from(rx).map(move |item| {
        if let Ok(b) = &item {
            p.add_bytes(b.len() as u64);
        }
        item
    });
    let uploaded = store.upload_stream(bucket, &e.key, &opts, Box::pin(stream)).await;
    let dumped = dumper.await.map_err(|err| RestoreError::Internal(err.to_string()))?;
    let fail = |reason: String| RestoreError::Object { bucket: bucket.into(), key: e.key.clone(), reason };
    dumped.map_err(fail)?;
    uploaded.map_err(|err| fail(err.to_string()))?;
    progress.item_done();
    Ok(())
}

/// A stream over a tokio receiver (without pulling in tokio-stream).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
