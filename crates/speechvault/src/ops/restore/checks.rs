//! Everything a restore checks before it changes anything: the target, the versions, the
//! free space, and the backup itself.

use crate::support::fs::free_space;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Preflight, RestoreError, RestoreOptions, TargetMode};
use crate::model::catalog::BackupSet;
use crate::model::config::Installation;
use crate::model::manifest::Manifest;
use crate::objstore::ObjectStore;
use crate::pg::catalog;
use crate::repository::RepositoryReader;
use crate::support::progress::Progress;

/// The comment a restore puts on each database while it works on it, so `--resume` can tell a
/// database it may replace from one that holds someone's data.
pub fn marker(backup_id: &str) -> String {
    format!("speechvault: restore of backup {backup_id} in progress")
}

/// A database on the target before the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbBefore {
    Missing,
    /// Exists without tables: schemas (name, owner, privileges) to put back on rollback.
    Empty {
        schemas: Vec<SchemaState>,
    },
    /// Carries the marker of an interrupted restore of this backup.
    Interrupted,
    /// Holds data (allowed with `--clean` and `--data-only`).
    InUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    pub name: String,
    pub owner: String,
    /// `GRANT ...` statements that recreate its privileges.
    pub grants: Vec<String>,
}

/// What the target held before the restore.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    pub databases: BTreeMap<String, DbBefore>,
    /// Buckets (as named on the target) that existed.
    pub buckets_existing: Vec<String>,
    pub server_version_num: i32,
    pub superuser: bool,
    /// The role that will own restored databases, if not the login.
    pub db_owner: BTreeMap<String, Option<String>>,
}

async fn schemas_of(client: &tokio_postgres::Client, db: &str) -> Result<Vec<SchemaState>, RestoreError> {
    let rows = crate::pg::query(
        client,
        db,
        "list schemas",
        "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, \
           coalesce((SELECT array_agg(format('GRANT %s ON SCHEMA %I TO %s', a.privilege_type, n.nspname, \
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)) \
             FROM aclexplode(n.nspacl) a), '{}') \
         FROM pg_namespace n WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| SchemaState { name: r.get(0), owner: r.get(1), grants: r.get(2) }).collect())
}

/// Why `target` is the installation the backup was taken from, if it is: the same
/// PostgreSQL cluster (by system identifier, else by address) and the same S3 endpoint with
/// the same bucket names. A DR copy (same system identifier, other buckets) is not.
pub fn own_source(target: &Installation, manifest: &Manifest, system_id: Option<&str>) -> Option<String> {
    let src = &manifest.source;
    let same_pg = match (src.postgres_system_id.as_deref(), system_id) {
        (Some(a), Some(b)) => a == b,
        _ => src.postgres == target.postgres.address(),
    };
    let endpoint = |e: &str| e.trim_end_matches('/').to_ascii_lowercase();
    let same_s3 = endpoint(&src.s3_endpoint) == endpoint(&target.s3.endpoint)
        && !manifest.buckets.is_empty()
        && manifest.buckets.iter().all(|(b, e)| e.source_name == target.bucket(b));
    (same_pg && same_s3).then(|| {
        format!(
            "PostgreSQL at {} is the cluster it came from{} and the buckets are the same ones at {}",
            target.postgres.address(),
            if system_id.is_some() && src.postgres_system_id.is_some() { " (same system identifier)" } else { "" },
            target.s3.endpoint
        )
    })
}

/// Checks the target before anything is changed.
pub async fn check_target(
    target: &Installation,
    store: &ObjectStore,
    manifest: &Manifest,
    opts: &RestoreOptions,
) -> Result<TargetState, RestoreError> {
    let admin = target.postgres.connect("postgres").await?;
    let mut state = TargetState {
        server_version_num: catalog::server_version_num(&admin, "postgres").await?,
        superuser: catalog::is_superuser(&admin, "postgres").await?,
        ..TargetState::default()
    };
    // pg_restore cannot load a dump into an older major version.
    if let Some(src) = manifest.source.postgres_version_num
        && src / 10_000 > state.server_version_num / 10_000
    {
        return Err(RestoreError::Refused(format!(
            "the backup comes from PostgreSQL {} and cannot be restored into the older PostgreSQL {} at {}; restore into PostgreSQL {} or newer",
            src / 10_000,
            state.server_version_num / 10_000,
            target.postgres.address(),
            src / 10_000
        )));
    }
    if !manifest.databases.is_empty() {
        let pg_restore = crate::pg::tool("pg_restore")?;
        let needed = manifest.source.postgres_version_num.unwrap_or(0).max(state.server_version_num);
        crate::pg::tools::check_tool_version(&pg_restore, needed, &target.postgres.address())?;
    }
    if let Some(role) = &opts.db_owner
        && !catalog::role_exists(&admin, "postgres", role).await?
    {
        return Err(RestoreError::Refused(format!(
            "--db-owner {role}: no such role on PostgreSQL at {}",
            target.postgres.address()
        )));
    }
    if matches!(opts.mode, TargetMode::Clean | TargetMode::DataOnly) && !opts.in_place {
        let system_id = catalog::system_identifier(&admin).await;
        if let Some(why) = own_source(target, manifest, system_id.as_deref()) {
            return Err(RestoreError::Refused(format!(
                "this is the backup's own source: {why}. A {} restore would replace the installation backup {} was taken from; add --in-place if that is what you mean (nothing was changed)",
                if opts.mode == TargetMode::Clean { "--clean" } else { "--data-only" },
                manifest.backup_id
            )));
        }
    }
    let mark = marker(&manifest.backup_id);
    let mut found = Vec::new();
    let mut missing_schema = Vec::new();
    for (db, entry) in &manifest.databases {
        let owner = match &opts.db_owner {
            Some(r) => Some(r.clone()),
            None => match &entry.owner {
                Some(r) if catalog::role_exists(&admin, "postgres", r).await? => Some(r.clone()),
                _ => None,
            },
        };
        state.db_owner.insert(db.clone(), owner);
        if !crate::pg::database_exists(&admin, db).await? {
            if opts.mode == TargetMode::DataOnly {
                missing_schema.push(format!("database {db:?} does not exist on {}", target.postgres.address()));
            }
            state.databases.insert(db.clone(), DbBefore::Missing);
            continue;
        }
        let comment: Option<String> = crate::pg::query(
            &admin,
            "postgres",
            "read database comment",
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[db],
        )
        .await?
        .first()
        .and_then(|r| r.get(0));
        let client = target.postgres.connect(db).await?;
        let tables = catalog::user_tables(&client, db).await?;
        let before = if comment.as_deref() == Some(mark.as_str()) {
            DbBefore::Interrupted
        } else if tables.is_empty() {
            DbBefore::Empty { schemas: schemas_of(&client, db).await? }
        } else {
            DbBefore::InUse
        };
        match (&before, opts.mode) {
            (DbBefore::InUse, TargetMode::Empty) => found.push(format!("database {db:?} has {} tables", tables.len())),
            (DbBefore::Interrupted, TargetMode::Empty) if !opts.resume => found.push(format!(
                "database {db:?} was left by an interrupted restore of this backup (use --resume to finish it)"
            )),
            (DbBefore::Empty { .. }, TargetMode::DataOnly) => {
                missing_schema.push(format!("database {db:?} has no tables"))
            }
            _ => {}
        }
        state.databases.insert(db.clone(), before);
    }
    for bucket in manifest.buckets.keys() {
        let name = target.bucket(bucket);
        if !store.bucket_exists(&name).await? {
            continue;
        }
        state.buckets_existing.push(name.clone());
        if opts.mode == TargetMode::Empty && !opts.resume {
            let (page, _) = store.list_page_max(&name, "", None, 1).await?;
            if !page.is_empty() {
                found.push(format!("bucket {name:?} holds objects"));
            }
        }
    }
    if !found.is_empty() {
        return Err(RestoreError::NotEmpty { installation: target.name.clone(), found });
    }
    let creates =
        opts.mode != TargetMode::DataOnly && state.databases.values().any(|b| !matches!(b, DbBefore::Empty { .. }));
    if creates && !state.superuser {
        let may: bool = crate::pg::query(
            &admin,
            "postgres",
            "check CREATEDB",
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .first()
        .is_some_and(|r| r.get(0));
        if !may {
            return Err(RestoreError::Refused(format!(
                "{} may not create databases on {} (permission denied to create database): grant it CREATEDB, or log in as a role that has it",
                target.postgres.user,
                target.postgres.address()
            )));
        }
    }
    if !missing_schema.is_empty() {
        return Err(RestoreError::NoSchema(missing_schema.join("; ")));
    }
    // Also proves the S3 credentials before any database is touched.
    store.list_buckets().await?;
    Ok(state)
}

/// The dumps of a backup, read out of the repository and authenticated, in a private
/// temporary directory removed when this is dropped.
pub struct Spool {
    _dir: tempfile::TempDir,
    pub files: BTreeMap<String, PathBuf>,
    /// Per bucket (the profile's name): the object attributes its objects use.
    pub attributes: BTreeMap<String, crate::ops::attributes::AttributeUse>,
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

/// Step 3: reads every dump into the spool (checking size, part count and SHA-256) and checks
/// the packs behind every object. Nothing on the target has changed yet.
pub async fn prove_backup(
    reader: &Arc<RepositoryReader>,
    set: &BackupSet,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &Progress,
    tally: &super::salvage::SharedTally,
) -> Result<Spool, RestoreError> {
    let base = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let need: u64 = manifest.databases.values().map(|d| d.dump_bytes).sum();
    let free = free_space(&base)
        .map_err(|e| RestoreError::Refused(format!("cannot use temporary directory {}: {e}", base.display())))?;
    // Room for the dumps plus a margin for pg_restore's own temporary files.
    let margin = 64 << 20;
    if free < need + margin {
        return Err(RestoreError::Refused(format!(
            "the dumps need {} MiB of temporary space and {} has {} MiB free; point --temp-dir at a larger file system",
            (need + margin) >> 20,
            base.display(),
            free >> 20
        )));
    }
    let mut spool =
        spool_dumps_salvaging(reader, set, manifest, &base, progress, opts.salvage.then_some(tally)).await?;
    progress.phase("checking the object data in the repository", 0, 0);
    for (bucket, entry) in &manifest.buckets {
        let snap = match snapshot_of(set, &entry.snapshot) {
            Ok(snap) => snap.clone(),
            // Its objects are named as lost when the bucket is restored.
            Err(_) if opts.salvage => continue,
            Err(e) => return Err(e),
        };
        let (r, mode, name, set, m) = (reader.clone(), opts.preflight, bucket.clone(), set.clone(), manifest.clone());
        let salvage = opts.salvage;
        let used =
            tokio::task::spawn_blocking(move || -> Result<crate::ops::attributes::AttributeUse, RestoreError> {
                let bucket = name;
                let list = set.object_list(&r, &m, &bucket)?;
                let mut broken = None;
                let mut used = crate::ops::attributes::AttributeUse::default();
                let nodes = crate::model::catalog::PairedObjects::new(&r, &snap, &list)?.map_while(|p| match p {
                    Ok((entry, node)) => {
                        used.record(&entry);
                        Some(node)
                    }
                    Err(e) => {
                        broken = Some(e);
                        None
                    }
                });
                let checked = match mode {
                    Preflight::Quick => r.check_packs(nodes).map(|_| ()),
                    Preflight::Full => r.read_all(nodes).map(|_| ()),
                };
                let damage = match (broken, checked) {
                    (Some(e), _) => Some(e),
                    (None, Err(e)) => Some(e.to_string()),
                    (None, Ok(())) => None,
                };
                match damage {
                    // What does not read is found, named and left out as the objects go.
                    Some(e) if salvage => {
                        tracing::warn!(
                            bucket,
                            "salvage: damage in the bucket's data, its objects that read are restored: {e}"
                        )
                    }
                    Some(e) => return Err(RestoreError::BackupDamaged(format!("bucket {bucket}: {e}"))),
                    None => {}
                }
                Ok(used)
            })
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))?
            .map_err(damaged)?;
        spool.attributes.insert(bucket.clone(), used);
    }
    Ok(spool)
}

/// Reads every dump of `manifest` out of the repository into a private directory under
/// `base`, checking size, part count and SHA-256 against the manifest.
pub async fn spool_dumps(
    reader: &Arc<RepositoryReader>,
    set: &BackupSet,
    manifest: &Manifest,
    base: &Path,
    progress: &Progress,
) -> Result<Spool, RestoreError> {
    spool_dumps_salvaging(reader, set, manifest, base, progress, None).await
}

/// [`spool_dumps`]; with a `tally` (`--salvage`), a dump that does not read is recorded there
/// and left out of the spool instead of failing.
async fn spool_dumps_salvaging(
    reader: &Arc<RepositoryReader>,
    set: &BackupSet,
    manifest: &Manifest,
    base: &Path,
    progress: &Progress,
    tally: Option<&super::salvage::SharedTally>,
) -> Result<Spool, RestoreError> {
    let need: u64 = manifest.databases.values().map(|d| d.dump_bytes).sum();
    let dir = tempfile::Builder::new()
        .prefix("speechvault-restore-")
        .tempdir_in(base)
        .map_err(|e| RestoreError::Refused(format!("cannot use temporary directory {}: {e}", base.display())))?;
    let mut files = BTreeMap::new();
    progress.phase("reading and authenticating the dumps", need, manifest.databases.len() as u64);
    for (db, entry) in &manifest.databases {
        let snap = match (snapshot_of(set, &entry.snapshot), tally) {
            (Ok(snap), _) => snap.clone(),
            (Err(RestoreError::BackupDamaged(reason)), Some(tally)) => {
                if let Ok(mut t) = tally.lock() {
                    t.database(db, reason);
                }
                continue;
            }
            (Err(e), _) => return Err(e),
        };
        let path = dir.path().join(format!("{}.dump", hex::encode(db.as_bytes())));
        let (r, e, file, db_name) = (reader.clone(), entry.clone(), std::fs::File::create(&path)?, db.clone());
        let read = tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
            let mut parts = r.files(&snap)?;
            parts.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = HashingWriter { inner: std::io::BufWriter::new(file), hasher: Sha256::new(), bytes: 0 };
            for (_, node) in &parts {
                r.dump(node, &mut out)?;
            }
            out.inner.flush()?;
            let digest = hex::encode(out.hasher.finalize());
            if out.bytes != e.dump_bytes || digest != e.dump_sha256 || parts.len() as u32 != e.dump_parts {
                return Err(RestoreError::BackupDamaged(format!(
                    "the dump of {db_name} reads as {} bytes in {} parts with SHA-256 {digest}, the manifest says {} bytes in {} parts with {}",
                    out.bytes,
                    parts.len(),
                    e.dump_bytes,
                    e.dump_parts,
                    e.dump_sha256
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?
        .map_err(damaged);
        progress.item_done();
        match (read, tally) {
            (Ok(()), _) => {
                files.insert(db.clone(), path);
            }
            (Err(RestoreError::BackupDamaged(reason)), Some(tally)) => {
                let _ = std::fs::remove_file(&path);
                if let Ok(mut t) = tally.lock() {
                    t.database(db, reason);
                }
            }
            (Err(e), _) => return Err(e),
        }
    }
    Ok(Spool { _dir: dir, files, attributes: BTreeMap::new() })
}

/// A repository error while proving the backup means the backup is damaged.
fn damaged(e: RestoreError) -> RestoreError {
    match e {
        RestoreError::Repo(r) => RestoreError::BackupDamaged(r.to_string()),
        other => other,
    }
}

pub(crate) fn snapshot_of<'a>(
    set: &'a BackupSet,
    id: &str,
) -> Result<&'a rustic_core::repofile::SnapshotFile, RestoreError> {
    set.snapshot(id).ok_or_else(|| {
        RestoreError::BackupDamaged(format!("snapshot {id} named in the manifest of backup {} is missing", set.id))
    })
}
