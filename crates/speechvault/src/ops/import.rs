//! `import`: a directory made by hand with the manual procedure (`mc cp -r` bucket copies
//! under `minio/<bucket>/`, `pg_dump` plain SQL files as `postgres/<database>.backup.sql`), or
//! by `export`, taken into the repository as a backup set like any other, so existing manual
//! backups can be restored, verified and kept by retention.
//!
//! Each SQL file is loaded into a scratch database (a temporary local cluster, or a database
//! on `--scratch INSTALLATION`'s server), with `OWNER TO`, `GRANT` and `REVOKE` statements for
//! roles that do not exist there left out and every other error fatal, then dumped in custom
//! format, so the imported set has the same shape, row counts, digests and owners as a backup.
//! Objects keep their keys (from `export-report.json` when there is one: escaped keys, content
//! types and metadata come back exactly; otherwise the file's path is the key).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::manifest::{self, BucketEntry, DatabaseEntry, Manifest, ObjectEntry, SourceInfo};
use crate::model::profile::Profile;
use crate::ops::backup::source::{Failures, file_meta, file_node, object_path};
use crate::ops::backup::{self, BackupError, BackupOptions};
use crate::ops::export::{ExportReport, REPORT};
use crate::pg::{PgConfig, execute, quote_ident};
use crate::repository::{Repository, SnapshotSpec};
use crate::support::interrupt::Stop;
use crate::support::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Layout(String),
    #[error("loading {file} into the scratch database failed: {reason}")]
    Load { file: PathBuf, reason: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Pg(#[from] crate::pg::PgError),
    #[error(transparent)]
    Repo(#[from] crate::repository::RepoError),
    #[error("I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub backup_id: String,
    pub installation: String,
    pub databases: BTreeMap<String, backup::DatabaseSummary>,
    pub buckets: BTreeMap<String, backup::BucketSummary>,
    /// Statements left out because their role does not exist on the scratch server.
    pub statements_dropped: usize,
    pub seconds: f64,
}

/// One object found in the directory.
#[derive(Debug, Clone)]
struct Found {
    key: String,
    file: PathBuf,
    size: u64,
    mtime: Option<jiff::Timestamp>,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    attrs: crate::objstore::ObjectAttributes,
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(&p, base, out)?;
        } else if ft.is_file() {
            let rel = p.strip_prefix(base).map_err(std::io::Error::other)?;
            let key =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
            out.push((key, p));
        }
    }
    Ok(())
}

/// The role names a plain SQL dump's `OWNER TO`, `GRANT ... TO` and `REVOKE ... FROM`
/// statement names, if the line is one.
fn roles_of(line: &str) -> Option<Vec<String>> {
    let l = line.trim_end().strip_suffix(';')?;
    let upper = l.to_ascii_uppercase();
    let tail = if upper.starts_with("ALTER ") {
        upper.rfind(" OWNER TO ").map(|i| &l[i + " OWNER TO ".len()..])?
    } else if upper.starts_with("GRANT ") {
        let cut = upper.rfind(" TO ")?;
        let t = &l[cut + 4..];
        t.split(" WITH ").next().unwrap_or(t)
    } else if upper.starts_with("REVOKE ") {
        let cut = upper.rfind(" FROM ")?;
        let t = &l[cut + 6..];
        t.split(" CASCADE").next().unwrap_or(t)
    } else {
        return None;
    };
    Some(
        tail.split(',')
            .map(|r| {
                let r = r.trim();
                if r.starts_with('"') { r.trim_matches('"').replace("\"\"", "\"") } else { r.to_ascii_lowercase() }
            })
            .filter(|r| !r.is_empty() && r != "public")
            .collect(),
    )
}

/// Writes `src` to `dst` without the ownership and privilege statements naming roles missing
/// from `roles`; returns how many were dropped and the role most tables belonged to.
fn filter_sql(src: &Path, dst: &Path, roles: &[String]) -> Result<(usize, Option<String>), ImportError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ImportError::Io { path: p.clone(), source }
    };
    let text = std::fs::read(src).map_err(io(src))?;
    let text = String::from_utf8_lossy(&text);
    let mut out = String::with_capacity(text.len());
    let mut dropped = 0;
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut in_copy = false;
    for line in text.split_inclusive('\n') {
        if in_copy {
            if line.trim_end_matches(['\n', '\r']) == "\\." {
                in_copy = false;
            }
            out.push_str(line);
            continue;
        }
        if line.starts_with("COPY ") && line.trim_end().ends_with("FROM stdin;") {
            in_copy = true;
        }
        if let Some(named) = roles_of(line) {
            if line.to_ascii_uppercase().starts_with("ALTER TABLE ") {
                for r in &named {
                    *owners.entry(r.clone()).or_default() += 1;
                }
            }
            if named.iter().any(|r| !roles.contains(r)) {
                dropped += 1;
                continue;
            }
        }
        out.push_str(line);
    }
    std::fs::write(dst, out).map_err(io(dst))?;
    let owner = owners.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r);
    Ok((dropped, owner))
}

/// Local files as a bucket snapshot, SHA-256 taken as they are read.
struct FilesSource {
    entries: Mutex<Option<Vec<(PathBuf, Found)>>>,
    digests: Arc<Mutex<HashMap<String, String>>>,
    failures: Failures,
}

struct HashingFile {
    file: std::fs::File,
    key: String,
    hasher: Option<Sha256>,
    digests: Arc<Mutex<HashMap<String, String>>>,
}

impl Read for HashingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 {
            if let Some(h) = self.hasher.take()
                && let Ok(mut d) = self.digests.lock()
            {
                d.insert(self.key.clone(), hex::encode(h.finalize()));
            }
        } else if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl ReadSource for FilesSource {
    type Open = HashingFile;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<HashingFile>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(self.entries.lock().ok().and_then(|e| e.as_ref().map(|v| v.iter().map(|(_, f)| f.size).sum())))
    }

    fn entries(&self) -> Self::Iter {
        let list = self.entries.lock().ok().and_then(|mut e| e.take()).unwrap_or_default();
        let mut out = Vec::with_capacity(list.len());
        for (path, f) in list {
            match std::fs::File::open(&f.file) {
                Ok(file) => {
                    let meta = file_meta(f.size, f.mtime, None, &[("user.s3.key", f.key.as_bytes())]);
                    let node = file_node(&path, meta);
                    let open = HashingFile {
                        file,
                        key: f.key.clone(),
                        hasher: Some(Sha256::new()),
                        digests: self.digests.clone(),
                    };
                    out.push(Ok(ReadSourceEntry { path, node, open: Some(open) }));
                }
                Err(e) => self.failures.record(format!("cannot open {}: {e}", f.file.display())),
            }
        }
        out.into_iter()
    }
}

/// The profile bucket a directory under `minio/` stands for: its own name, or a name with a
/// suffix (`stt-async-icp-ibm-speech-zen`).
fn profile_bucket(profile: &Profile, dir_name: &str) -> Option<String> {
    let all: Vec<&String> = profile.components.values().flat_map(|c| c.buckets.iter()).collect();
    all.iter().find(|b| b.as_str() == dir_name).map(|b| b.to_string()).or_else(|| {
        all.iter().filter(|b| dir_name.starts_with(&format!("{b}-"))).max_by_key(|b| b.len()).map(|b| b.to_string())
    })
}

/// Options for [`import`].
pub struct ImportOptions {
    pub dir: PathBuf,
    /// The installation the set is recorded for.
    pub installation: String,
    /// A server to load the SQL files into instead of a temporary local cluster.
    pub scratch: Option<PgConfig>,
}

/// Imports `opts.dir` into `repo` as a backup set.
pub async fn import(
    repo: Arc<Repository>,
    profile: &Profile,
    opts: &ImportOptions,
    progress: &Progress,
    stop: &Stop,
) -> Result<ImportReport, ImportError> {
    let clock = std::time::Instant::now();
    let started = jiff::Timestamp::now();
    let layout = |m: String| ImportError::Layout(m);
    if !opts.dir.is_dir() {
        return Err(layout(format!("{} is not a directory", opts.dir.display())));
    }
    let report: Option<ExportReport> = match std::fs::read(opts.dir.join(REPORT)) {
        Ok(raw) => Some(serde_json::from_slice(&raw).map_err(|e| layout(format!("{REPORT}: {e}")))?),
        Err(_) => None,
    };
    // Objects, by profile bucket.
    let mut buckets: BTreeMap<String, (String, Vec<Found>)> = BTreeMap::new();
    let minio = opts.dir.join("minio");
    if minio.is_dir() {
        for e in std::fs::read_dir(&minio).map_err(|source| ImportError::Io { path: minio.clone(), source })? {
            let e = e.map_err(|source| ImportError::Io { path: minio.clone(), source })?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pb) = profile_bucket(profile, &name) else {
                return Err(layout(format!(
                    "minio/{name} is not a bucket of the profile (expected one of {})",
                    profile.components.values().flat_map(|c| c.buckets.clone()).collect::<Vec<_>>().join(", ")
                )));
            };
            let mut files = Vec::new();
            walk(&e.path(), &e.path(), &mut files).map_err(|source| ImportError::Io { path: e.path(), source })?;
            buckets.entry(pb).or_insert_with(|| (name.clone(), Vec::new())).1.extend(files.into_iter().map(
                |(key, file)| Found {
                    key,
                    file,
                    size: 0,
                    mtime: None,
                    content_type: None,
                    metadata: BTreeMap::new(),
                    attrs: Default::default(),
                },
            ));
        }
    }
    // The export report names the true keys of escaped files, and every object's headers.
    if let Some(r) = &report {
        let by_file: HashMap<&str, &crate::ops::export::ExportedObject> =
            r.objects.iter().map(|o| (o.file.as_str(), o)).collect();
        for (pb, (name, found)) in buckets.iter_mut() {
            for f in found.iter_mut() {
                if let Some(o) = by_file.get(format!("minio/{name}/{}", f.key).as_str()) {
                    f.content_type = o.content_type.clone();
                    f.metadata = o.metadata.clone();
                    f.attrs = o.attrs.clone();
                }
            }
            for o in r.objects.iter().filter(|o| o.escaped.is_some() && &o.bucket == name) {
                found.push(Found {
                    key: o.key.clone(),
                    file: opts.dir.join(&o.file),
                    size: 0,
                    mtime: None,
                    content_type: o.content_type.clone(),
                    metadata: o.metadata.clone(),
                    attrs: o.attrs.clone(),
                });
            }
            let _ = pb;
        }
    }
    for (_, found) in buckets.values_mut() {
        for f in found.iter_mut() {
            let meta = std::fs::metadata(&f.file).map_err(|source| ImportError::Io { path: f.file.clone(), source })?;
            f.size = meta.len();
            f.mtime = meta.modified().ok().and_then(|t| jiff::Timestamp::try_from(t).ok());
        }
    }
    // Databases.
    let mut sql: BTreeMap<String, PathBuf> = BTreeMap::new();
    let pg_dir = opts.dir.join("postgres");
    if pg_dir.is_dir() {
        let known: Vec<String> = profile.components.values().flat_map(|c| c.databases.clone()).collect();
        for e in
            std::fs::read_dir(&pg_dir).map_err(|source| ImportError::Io { path: pg_dir.clone(), source })?.flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let db = name.strip_suffix(".backup.sql").or_else(|| name.strip_suffix(".sql"));
            match db {
                Some(db) if known.iter().any(|k| k == db) => {
                    sql.insert(db.to_string(), e.path());
                }
                _ => {
                    return Err(layout(format!(
                        "postgres/{name} is not a dump of a profile database ({}.backup.sql)",
                        known.join(".backup.sql, ")
                    )));
                }
            }
        }
    }
    if buckets.is_empty() && sql.is_empty() {
        return Err(layout(format!(
            "{} holds neither minio/<bucket>/ nor postgres/<database>.backup.sql",
            opts.dir.display()
        )));
    }

    let id = manifest::new_backup_id();
    let mut written = Vec::new();
    let result = write_set(&repo, profile, opts, &id, buckets, sql, progress, stop, &mut written, started).await;
    if result.is_err() && !written.is_empty() {
        let v = repo.clone();
        let ids = written.clone();
        let _ = tokio::task::spawn_blocking(move || v.delete_snapshots(&ids)).await;
    }
    let (databases, buckets, dropped) = result?;
    Ok(ImportReport {
        backup_id: id,
        installation: opts.installation.clone(),
        databases,
        buckets,
        statements_dropped: dropped,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

type Written = (BTreeMap<String, backup::DatabaseSummary>, BTreeMap<String, backup::BucketSummary>, usize);

#[allow(clippy::too_many_arguments)]
async fn write_set(
    repo: &Arc<Repository>,
    profile: &Profile,
    opts: &ImportOptions,
    id: &str,
    buckets: BTreeMap<String, (String, Vec<Found>)>,
    sql: BTreeMap<String, PathBuf>,
    progress: &Progress,
    stop: &Stop,
    written: &mut Vec<rustic_core::repofile::SnapshotId>,
    started: jiff::Timestamp,
) -> Result<Written, ImportError> {
    let inst = opts.installation.as_str();
    let mut db_entries = BTreeMap::new();
    let mut dropped_total = 0;
    let mut version = (String::new(), None, String::new());
    if !sql.is_empty() {
        let scratch = match &opts.scratch {
            Some(_) => None,
            None => Some(
                tokio::task::spawn_blocking(crate::pg::cluster::Scratch::start)
                    .await
                    .map_err(|e| ImportError::Layout(e.to_string()))?
                    .map_err(crate::pg::PgError::from)?,
            ),
        };
        let pg = opts.scratch.clone().unwrap_or_else(|| {
            scratch.as_ref().map(|s| s.pg.clone()).unwrap_or_else(|| PgConfig::new("", 0, "", None))
        });
        let admin = pg.connect("postgres").await?;
        let roles: Vec<String> =
            crate::pg::query(&admin, "postgres", "list roles", "SELECT rolname::text FROM pg_roles", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        let v = crate::pg::query(
            &admin,
            "postgres",
            "server version",
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_user::text",
            &[],
        )
        .await?;
        version = (v[0].get(0), Some(v[0].get::<_, i32>(1)), v[0].get(2));
        let pg_dump = crate::pg::tool("pg_dump")?;
        let psql = crate::pg::tool("psql")?;
        let tmp = tempfile::tempdir().map_err(|source| ImportError::Io { path: std::env::temp_dir(), source })?;
        for (db, file) in &sql {
            progress.phase(format!("loading {}", file.display()), 0, 0);
            let scratch_db = format!("speechvault-import-{}-{db}", &id[id.len() - 6..]);
            let filtered = tmp.path().join(format!("{}.sql", hex::encode(db.as_bytes())));
            let (dropped, owner) = filter_sql(file, &filtered, &roles)?;
            dropped_total += dropped;
            crate::pg::drop_database(&admin, &scratch_db).await?;
            execute(
                &admin,
                "postgres",
                "create scratch database",
                &format!("CREATE DATABASE {}", quote_ident(&scratch_db)),
            )
            .await?;
            let env = pg.tool_env()?;
            let mut cmd = std::process::Command::new(&psql);
            env.apply(&mut cmd);
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-f"])
                .arg(&filtered)
                .env("PGDATABASE", &scratch_db);
            let out = cmd.output().map_err(|e| ImportError::Load { file: file.clone(), reason: e.to_string() })?;
            if !out.status.success() {
                let _ = crate::pg::drop_database(&admin, &scratch_db).await;
                return Err(ImportError::Load {
                    file: file.clone(),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            let job = backup::database::DumpJob {
                repo,
                pg: &pg,
                inst_name: inst,
                profile,
                id,
                opts: &BackupOptions::default(),
                pg_dump: &pg_dump,
                stop,
            };
            let entry = job.run(&scratch_db, db, written).await;
            let _ = crate::pg::drop_database(&admin, &scratch_db).await;
            let mut entry: DatabaseEntry = entry?;
            entry.owner = owner;
            db_entries.insert(db.clone(), entry);
        }
        drop(scratch);
    }
    let mut bucket_entries = BTreeMap::new();
    let mut lists = BTreeMap::new();
    for (pb, (name, found)) in buckets {
        let root = PathBuf::from(format!("/buckets/{pb}"));
        let mut planned: Vec<(PathBuf, Found)> = found.into_iter().map(|f| (object_path(&root, &f.key), f)).collect();
        planned.sort_by(|a, b| a.0.cmp(&b.0));
        let total: u64 = planned.iter().map(|(_, f)| f.size).sum();
        progress.phase(format!("importing minio/{name}"), total, planned.len() as u64);
        let digests = Arc::new(Mutex::new(HashMap::new()));
        let failures = Failures::default();
        let src = FilesSource {
            entries: Mutex::new(Some(planned.clone())),
            digests: digests.clone(),
            failures: failures.clone(),
        };
        let spec = SnapshotSpec {
            host: inst.to_string(),
            label: format!("bucket:{pb}"),
            tags: backup::tags(inst, id, &format!("bucket:{pb}")),
            path: root.clone(),
            description: Some(format!(
                "speechvault backup {id} of {inst}: bucket {name}, imported from {}",
                opts.dir.display()
            )),
        };
        let v = repo.clone();
        let snap = tokio::task::spawn_blocking(move || v.archive(src, &spec, None))
            .await
            .map_err(|e| ImportError::Layout(e.to_string()))??;
        written.push(snap.id);
        let fails = failures.list();
        if !fails.is_empty() {
            return Err(BackupError::Source { part: format!("minio/{name}"), failures: fails }.into());
        }
        let digests = digests.lock().map(|d| d.clone()).unwrap_or_default();
        let mut entries = Vec::with_capacity(planned.len());
        for (path, f) in planned {
            let sha256 = digests
                .get(&f.key)
                .cloned()
                .ok_or_else(|| ImportError::Layout(format!("{} was not read", f.file.display())))?;
            entries.push(ObjectEntry {
                etag: String::new(),
                last_modified: f.mtime.map(|t| t.to_string()).unwrap_or_default(),
                key: f.key,
                size: f.size,
                sha256,
                content_type: f.content_type,
                metadata: f.metadata,
                path: path.display().to_string(),
                attrs: f.attrs,
            });
        }
        let list = crate::model::spool::ObjectList::from_entries(entries)
            .map_err(|e| ImportError::Layout(format!("bucket {pb}: a temporary object list: {e}")))?;
        bucket_entries.insert(
            pb.clone(),
            BucketEntry {
                source_name: name,
                snapshot: snap.id.to_string(),
                path: root.display().to_string(),
                objects: list.count,
                bytes: total,
                entries: Vec::new(),
                objects_file: Some(manifest::objects_path(&pb)),
                vanished: Vec::new(),
                settings: BTreeMap::new(),
                compression_baseline: None,
            },
        );
        lists.insert(pb.clone(), list);
    }
    let components: Vec<String> = profile
        .components
        .iter()
        .filter(|(_, c)| {
            c.databases.iter().all(|d| db_entries.contains_key(d))
                && c.buckets.iter().all(|b| bucket_entries.contains_key(b))
        })
        .map(|(n, _)| n.clone())
        .collect();
    let mut instance_ids = std::collections::BTreeSet::new();
    for e in db_entries.values() {
        for ids in e.owners.values() {
            instance_ids.extend(ids.iter().cloned());
        }
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        tool: format!("speechvault {} import", env!("CARGO_PKG_VERSION")),
        backup_id: id.to_string(),
        installation: inst.to_string(),
        started: started.to_string(),
        finished: jiff::Timestamp::now().to_string(),
        source: SourceInfo {
            s3_endpoint: format!("import:{}", opts.dir.display()),
            postgres: "scratch".into(),
            postgres_version: version.0,
            postgres_user: version.2,
            postgres_version_num: version.1,
            postgres_system_id: None,
        },
        components,
        databases: db_entries,
        buckets: bucket_entries,
        instance_ids: instance_ids.into_iter().collect(),
        retention: None,
        anomalies: Vec::new(),
    };
    let snap = backup::write_manifest(repo, inst, id, &manifest, &lists, written.len()).await?;
    written.push(snap);
    let summary = |m: &Manifest| -> Written {
        (
            m.databases
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        backup::DatabaseSummary {
                            dump_bytes: d.dump_bytes,
                            tables: d.tables.len(),
                            rows: d.tables.values().sum(),
                        },
                    )
                })
                .collect(),
            m.buckets
                .iter()
                .map(|(n, b)| {
                    (
                        n.clone(),
                        backup::BucketSummary {
                            objects: b.objects,
                            bytes: b.bytes,
                            unchanged: 0,
                            unchanged_bytes: 0,
                            vanished: 0,
                        },
                    )
                })
                .collect(),
            0,
        )
    };
    let (d, b, _) = summary(&manifest);
    Ok((d, b, dropped_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_and_privilege_statements_name_their_roles() {
        assert_eq!(roles_of("ALTER TABLE public.jobs OWNER TO stolon;"), Some(vec!["stolon".to_string()]));
        assert_eq!(roles_of("ALTER SCHEMA x OWNER TO \"Mixed Case\";"), Some(vec!["Mixed Case".to_string()]));
        assert_eq!(
            roles_of("GRANT SELECT ON TABLE public.t TO reader, \"Other\";"),
            Some(vec!["reader".into(), "Other".into()])
        );
        assert_eq!(roles_of("GRANT ALL ON SCHEMA public TO PUBLIC;"), Some(vec![]));
        assert_eq!(roles_of("REVOKE ALL ON SCHEMA public FROM PUBLIC;"), Some(vec![]));
        assert_eq!(roles_of("GRANT USAGE ON SCHEMA s TO app WITH GRANT OPTION;"), Some(vec!["app".to_string()]));
        assert_eq!(roles_of("CREATE TABLE t (a int);"), None);
        assert_eq!(roles_of("ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY (a);"), None);
    }

    #[test]
    fn missing_roles_lose_their_statements_and_copy_data_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.sql");
        std::fs::write(
            &src,
            "CREATE TABLE t (a text);\nALTER TABLE public.t OWNER TO stolon;\nCOPY public.t (a) FROM stdin;\nGRANT x TO nobody;\n\\.\nGRANT SELECT ON TABLE public.t TO reader;\n",
        )
        .unwrap();
        let dst = dir.path().join("out.sql");
        let (dropped, owner) = filter_sql(&src, &dst, &["reader".to_string()]).unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(owner.as_deref(), Some("stolon"));
        let out = std::fs::read_to_string(dst).unwrap();
        assert!(!out.contains("OWNER TO stolon") && out.contains("GRANT x TO nobody") && out.contains("TO reader"));
    }
}
