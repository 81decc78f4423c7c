//! One database into the repository: `pg_dump` from an exported snapshot, with row counts,
//! content digests and owners read in that very snapshot.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BackupError, BackupOptions, tags};
use crate::model::manifest::DatabaseEntry;
use crate::model::profile::Profile;
use crate::ops::backup::source::{Failures, StreamSource};
use crate::pg::PgConfig;
use crate::pg::catalog;
use crate::pg::{execute, query, quote_ident};
use crate::repository::{Repository, SnapshotSpec};
use crate::support::interrupt::Stop;

/// Everything one database dump works with.
pub(crate) struct DumpJob<'a> {
    pub repo: &'a Arc<Repository>,
    /// The server to dump from.
    pub pg: &'a PgConfig,
    /// The installation the backup is recorded for (snapshot host and tags).
    pub inst_name: &'a str,
    pub profile: &'a Profile,
    pub id: &'a str,
    pub opts: &'a BackupOptions,
    pub pg_dump: &'a Path,
    pub stop: &'a Stop,
}

/// What the snapshot says about a database besides the dump.
struct Described {
    tables: BTreeMap<String, i64>,
    row_samples: BTreeMap<String, crate::model::anomalies::RowSample>,
    digests: BTreeMap<String, String>,
    owners: BTreeMap<String, Vec<String>>,
    owner_columns: BTreeMap<String, Vec<String>>,
}

/// What `pg_dump` left in the repository.
struct Dumped {
    snapshot: String,
    stats: crate::ops::backup::source::stream::StreamStats,
}

/// The manifest's record of a dumped database.
fn entry_of(name: &str, dumped: Dumped, described: Described, owner: Option<String>) -> DatabaseEntry {
    let Dumped { snapshot, stats } = dumped;
    DatabaseEntry {
        snapshot,
        path: format!("/databases/{name}"),
        dump_bytes: stats.bytes,
        dump_parts: stats.parts,
        dump_sha256: stats.sha256,
        tables: described.tables,
        owners: described.owners,
        digests: described.digests,
        row_samples: described.row_samples,
        owner_columns: described.owner_columns,
        owner,
    }
}

/// A database's point in time: an open transaction whose snapshot is exported, held until
/// the dump has attached to it. Taking every database's before listing any bucket makes the
/// backup one point of consistency, and lets the dumps run beside the buckets.
pub(crate) struct HeldSnapshot {
    db: String,
    client: tokio_postgres::Client,
    snapshot_id: String,
    owner: Option<String>,
}

impl DumpJob<'_> {
    /// Dumps database `db` of the server, recorded in the backup as `name` (the same, except
    /// for an import, whose scratch databases have names of their own).
    pub async fn run(
        &self,
        db: &str,
        name: &str,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<DatabaseEntry, BackupError> {
        let held = self.begin(db).await?;
        self.dump(held, name, written).await
    }

    /// Takes database `db`'s point in time (one connection, held until [`DumpJob::dump`]).
    pub async fn begin(&self, db: &str) -> Result<HeldSnapshot, BackupError> {
        let pg = self.pg;
        let admin = pg.connect("postgres").await?;
        let owner = catalog::database_owner(&admin, db).await?;
        drop(admin);
        // The exported snapshot is the point in time of this database's backup: pg_dump
        // attaches to it, and counts, digests and owners are read in it.
        let client = pg.connect(db).await?;
        execute(&client, db, "begin snapshot", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let snapshot_id: String =
            query(&client, db, "export snapshot", "SELECT pg_export_snapshot()", &[]).await?[0].get(0);
        Ok(HeldSnapshot { db: db.to_string(), client, snapshot_id, owner })
    }

    /// Dumps a database from its held point in time, recorded in the backup as `name`; its
    /// counts, digests and owners are read meanwhile on the held connection.
    pub async fn dump(
        &self,
        held: HeldSnapshot,
        name: &str,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<DatabaseEntry, BackupError> {
        let (described, dumped) =
            tokio::join!(self.describe(&held.client, &held.db, name), self.archive_dump(&held, name, written));
        let _ = execute(&held.client, &held.db, "end snapshot", "COMMIT").await;
        Ok(entry_of(name, dumped?, described?, held.owner))
    }

    /// Dumps every held database, one `pg_dump` at a time, while counts, digests and owners
    /// are read in all of them at once, each on its own held connection (no connection more).
    /// With one large database among small ones, its digests no longer wait for the dumps
    /// before it. The first failure stops the rest.
    pub async fn dump_all(
        &self,
        held: Vec<HeldSnapshot>,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<BTreeMap<String, DatabaseEntry>, BackupError> {
        let describe_failed = std::sync::atomic::AtomicBool::new(false);
        let dump_failed = tokio::sync::Notify::new();
        let describes = async {
            let all = futures_util::future::try_join_all(held.iter().map(|h| self.describe(&h.client, &h.db, &h.db)));
            tokio::select! {
                r = all => {
                    if r.is_err() {
                        describe_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    r
                }
                () = dump_failed.notified() => Err(BackupError::Interrupted),
            }
        };
        let dumps = async {
            let result = async {
                let mut out = Vec::new();
                for h in &held {
                    if self.stop.is_stopped() || describe_failed.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(BackupError::Interrupted);
                    }
                    out.push(self.archive_dump(h, &h.db, written).await?);
                }
                Ok(out)
            }
            .await;
            if result.is_err() {
                // A permit is kept if the digests are not waiting yet.
                dump_failed.notify_one();
            }
            result
        };
        let (described, dumped) = tokio::join!(describes, dumps);
        if dumped.is_ok() {
            for h in &held {
                let _ = execute(&h.client, &h.db, "end snapshot", "COMMIT").await;
            }
        }
        // The first real failure is the backup's, not a part that stopped because of it.
        let (described, dumped) = match (described, dumped) {
            (Ok(d), Ok(p)) => (d, p),
            (_, Err(e)) if !matches!(e, BackupError::Interrupted) => return Err(e),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        Ok(held
            .into_iter()
            .zip(described)
            .zip(dumped)
            .map(|((h, d), dump)| (h.db.clone(), entry_of(&h.db, dump, d, h.owner)))
            .collect())
    }

    /// Runs `pg_dump` attached to the held snapshot and streams its output into the
    /// repository; the snapshot written is recorded in `written` at once.
    async fn archive_dump(
        &self,
        held: &HeldSnapshot,
        name: &str,
        written: &mut Vec<rustic_core::repofile::SnapshotId>,
    ) -> Result<Dumped, BackupError> {
        let DumpJob { repo, pg, inst_name, id, opts, .. } = *self;
        let (db, snapshot_id) = (held.db.as_str(), held.snapshot_id.as_str());

        let env = pg.tool_env()?;
        let mut cmd = std::process::Command::new(self.pg_dump);
        // Uncompressed, so the repository can deduplicate unchanged rows between backups and
        // compress with zstd itself.
        cmd.args(["--format=custom", "--compress=0", "--no-password", "--snapshot", snapshot_id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        env.apply(&mut cmd);
        cmd.env("PGDATABASE", db).env("PGAPPNAME", "speechvault/pg_dump");
        crate::pg::tools::die_with_parent(&mut cmd);
        let failures = Failures::default();
        let spec = SnapshotSpec {
            host: inst_name.to_string(),
            label: format!("db:{name}"),
            tags: tags(inst_name, id, &format!("db:{name}")),
            path: PathBuf::from(format!("/databases/{name}")),
            description: Some(format!(
                "speechvault backup {id} of {inst_name}: database {name} (pg_dump custom format, in parts)"
            )),
        };
        let v = repo.clone();
        let part_size = opts.dump_part_size;
        let f2 = failures.clone();
        let dbname = db.to_string();
        let stop = self.stop.clone();
        let archive = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
            let mut child = cmd.spawn().map_err(|e| BackupError::Dump {
                database: dbname.clone(),
                reason: format!("cannot start pg_dump: {e}"),
            })?;
            let stdout = child.stdout.take().ok_or_else(|| BackupError::Internal("pg_dump has no stdout".into()))?;
            let mut stderr =
                child.stderr.take().ok_or_else(|| BackupError::Internal("pg_dump has no stderr".into()))?;
            let err_reader = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                s
            });
            let src = StreamSource::new(spec.path.clone(), Box::new(stdout), part_size, f2, stop);
            let stats = src.stats();
            let snap = v.archive(src, &spec, None);
            let status = child.wait();
            let errors = err_reader.join().unwrap_or_default();
            let stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
            Ok((snap, status, errors, stats))
        });
        let outcome = archive.await.map_err(|e| BackupError::Internal(e.to_string()))??;
        drop(env);
        let (snap, status, errors, stats) = outcome;
        let snap = snap?;
        tracing::info!(database = %name, "dumped");
        written.push(snap.id);
        let status = status.map_err(|e| BackupError::Dump { database: db.into(), reason: e.to_string() })?;
        if !status.success() {
            return Err(BackupError::Dump {
                database: name.into(),
                reason: format!("exit status {status}: {}", errors.trim()),
            });
        }
        let fails = failures.list();
        if !fails.is_empty() {
            return Err(BackupError::Source { part: format!("database {name}"), failures: fails });
        }
        Ok(Dumped { snapshot: snap.id.to_string(), stats })
    }

    async fn describe(&self, client: &tokio_postgres::Client, db: &str, name: &str) -> Result<Described, BackupError> {
        let mut owners = BTreeMap::new();
        let mut owner_columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in self.profile.ownership.iter().filter(|r| r.database == name) {
            let Some(col) = catalog::rule_column(client, db, &rule.table, &rule.columns).await? else {
                continue;
            };
            let sql = format!(
                "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 10000",
                c = quote_ident(&col),
                t = quote_ident(&rule.table)
            );
            let rows = query(client, db, "read owners", &sql, &[]).await?;
            owners.insert(
                format!("{}.{col}", rule.table),
                rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(),
            );
            if let Some(q) = catalog::qualified_name(client, db, &rule.table).await? {
                owner_columns.entry(q).or_default().push(col);
            }
        }
        let version = catalog::DigestVersion::for_server(catalog::server_version_num(client, db).await?);
        let digests = catalog::table_digests(client, db, &owner_columns, &[], version).await?;
        let tables = digests
            .iter()
            .filter(|(t, _)| t.as_str() != catalog::LARGE_OBJECTS)
            .map(|(t, d)| (t.clone(), d.rows))
            .collect();
        let row_samples = digests
            .iter()
            .filter_map(|(t, d)| {
                let s = d.sample.as_ref()?;
                Some((t.clone(), crate::model::anomalies::RowSample { bits: s.bits, hashes: s.hashes.clone() }))
            })
            .collect();
        Ok(Described {
            tables,
            row_samples,
            digests: digests.into_iter().map(|(t, d)| (t, d.digest)).collect(),
            owners,
            owner_columns,
        })
    }
}
