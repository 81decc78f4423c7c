//! Pre-flight checks: would a backup of this installation run now, into this repository?
//!
//! Each check reaches the real system with the configured settings (TLS included) and says
//! what it found, or what is wrong and how to fix it. Nothing is written anywhere.

use std::time::Instant;

use serde::Serialize;

use crate::model::config::{Installation, RepositorySettings};
use crate::model::profile::Profile;
use crate::objstore::ObjectStore;
use crate::repository::Repository;
use crate::support::units::human_bytes;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but the operator should act (one repository key, little free space).
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DoctorReport {
    pub installation: String,
    /// True when a backup would run: no check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
    pub components: Vec<String>,
    pub buckets: Vec<BucketUsage>,
    pub databases: Vec<DatabaseUsage>,
    pub postgres_version: Option<String>,
    pub pg_dump_version: Option<String>,
    pub pg_restore_version: Option<String>,
    pub repository_keys: Option<usize>,
    pub repository_free_bytes: Option<u64>,
    pub estimate: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketUsage {
    pub bucket: String,
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseUsage {
    pub database: String,
    pub bytes: i64,
}

/// What the next backup will take, from the last complete one.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub last_backup: String,
    pub last_backup_bytes: u64,
    pub last_backup_seconds: f64,
    /// The installation's objects now plus the last backup's dump sizes.
    pub size_bytes: u64,
    /// A first backup reads everything; later ones read what changed: this is the upper bound.
    pub full_backup_seconds: f64,
}

impl DoctorReport {
    fn push(&mut self, name: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.checks.push(Check { name: name.into(), status, detail: detail.into(), fix });
    }
    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Status::Ok, detail, None);
    }
    fn fail(&mut self, name: impl Into<String>, detail: impl std::fmt::Display, fix: impl Into<String>) {
        self.push(name, Status::Fail, crate::support::text::one_line(&detail.to_string()), Some(fix.into()));
    }
}

/// Runs every check. A check that cannot run because an earlier one failed is left out.
/// `repository` is the configured repository, or why the config names none usable.
pub async fn run(
    inst: &Installation,
    profile: &Profile,
    repository: Result<&RepositorySettings, String>,
) -> DoctorReport {
    let mut r = DoctorReport { installation: inst.name.clone(), ..Default::default() };
    let s3_ok = check_object_store(&mut r, inst).await;
    let pg_ok = check_postgres(&mut r, inst).await;
    if s3_ok && pg_ok {
        check_components(&mut r, inst, profile).await;
    }
    match repository {
        Ok(settings) => check_repository(&mut r, inst, settings).await,
        Err(why) => r.fail(
            "repository",
            why,
            "configure [repository] (path or url, and password_file) in the config, or SPEECHVAULT_REPOSITORY and SPEECHVAULT_PASSWORD_FILE",
        ),
    }
    r.ok = r.checks.iter().all(|c| c.status != Status::Fail);
    r
}

async fn check_object_store(r: &mut DoctorReport, inst: &Installation) -> bool {
    let name = format!("object store {}", inst.s3.endpoint);
    let store = match ObjectStore::new(inst.s3.clone()) {
        Ok(s) => s,
        Err(e) => {
            r.fail(name, e, "fix s3.endpoint (https://host:port) and s3.ca_file in the config");
            return false;
        }
    };
    match store.list_buckets().await {
        Ok(b) => {
            r.pass(name, format!("reachable, signed in, {} buckets visible", b.len()));
            true
        }
        // A key allowed only its own buckets may not list them all: the component check
        // below still tells whether the installation's buckets can be read.
        Err(crate::objstore::ObjStoreError::Http { status: 403, .. }) => {
            r.pass(name, "reachable, signed in (not allowed to list all buckets)");
            true
        }
        Err(e) => {
            let fix = match &e {
                crate::objstore::ObjStoreError::Credentials { .. } => {
                    "check s3.access_key_file and s3.secret_key_file (the installation's MinIO secret: accesskey/secretkey)"
                }
                crate::objstore::ObjStoreError::Tls { .. } => {
                    "check s3.ca_file: it must hold the CA that signed the object store's certificate"
                }
                _ => "check s3.endpoint and that this host can reach it (network policy, DNS, port)",
            };
            r.fail(name, e, fix);
            false
        }
    }
}

async fn check_postgres(r: &mut DoctorReport, inst: &Installation) -> bool {
    let name = format!("PostgreSQL {}", inst.postgres.address());
    let client = match inst.postgres.connect("postgres").await {
        Ok(c) => c,
        Err(e) => {
            let fix = match &e {
                crate::pg::PgError::Auth { .. } => {
                    "check postgres.user and the password (postgres.password_file, postgres.password, PGPASSWORD or PGPASSFILE; in the cluster the installation's PostgreSQL secret, key password)"
                }
                crate::pg::PgError::Tls { .. } => "check postgres.sslmode and postgres.ca_file",
                _ => "check postgres.host and postgres.port and that this host can reach them",
            };
            r.fail(name, e, fix);
            return false;
        }
    };
    let version = crate::pg::query(
        &client,
        "postgres",
        "server version",
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
        &[],
    )
    .await
    .map(|rows| (rows[0].get::<_, String>(0), rows[0].get::<_, i32>(1)));
    let (version, version_num) = match version {
        Ok(v) => v,
        Err(e) => {
            r.fail(name, e, "the login cannot read server settings: use the installation's admin user");
            return false;
        }
    };
    r.pass(name.clone(), format!("connected, PostgreSQL {version}"));
    r.postgres_version = Some(version.clone());
    for (tool, slot) in [("pg_dump", 0), ("pg_restore", 1)] {
        let check = format!("{tool} for the PostgreSQL {} server", version_num / 10_000);
        let path = match crate::pg::tool(tool) {
            Ok(p) => p,
            Err(e) => {
                r.fail(check, e, "install the PostgreSQL client tools (apt-get install postgresql-client)");
                continue;
            }
        };
        let found = crate::pg::tools::tool_version(&path).map(|(_, v)| v).ok();
        if slot == 0 {
            r.pg_dump_version = found.clone();
        } else {
            r.pg_restore_version = found.clone();
        }
        match crate::pg::tools::check_tool_version(&path, version_num, &inst.postgres.address()) {
            Ok(()) => r.pass(check, format!("{} {}", path.display(), found.unwrap_or_default())),
            Err(e) => r.fail(
                check,
                e,
                format!(
                    "install the PostgreSQL {} client tools or newer (e.g. postgresql-client-{} from apt.postgresql.org) and point SPEECHVAULT_PG_BINDIR at their bin directory",
                    version_num / 10_000,
                    version_num / 10_000
                ),
            ),
        }
    }
    true
}

async fn check_components(r: &mut DoctorReport, inst: &Installation, profile: &Profile) {
    let store = match ObjectStore::new(inst.s3.clone()) {
        Ok(s) => s,
        Err(_) => return,
    };
    let inv = match crate::model::inventory::take(inst, profile, &store).await {
        Ok(i) => i,
        Err(e) => {
            r.fail("components", e, "check the object store's and PostgreSQL's permissions for this login");
            return;
        }
    };
    let components = match crate::model::inventory::components(inst, profile, &inv, None) {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                "components",
                e,
                "create what is missing, or fix bucket_suffix / buckets and postgres.host in the config, or back up only what is there with --components",
            );
            return;
        }
    };
    r.pass("components", format!("installed: {}", components.join(", ")));
    r.components = components.clone();
    let selected = match profile.select(&components) {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut buckets: Vec<String> = selected.iter().flat_map(|(_, c)| c.buckets.clone()).collect();
    buckets.sort();
    buckets.dedup();
    let mut databases: Vec<String> = selected.iter().flat_map(|(_, c)| c.databases.clone()).collect();
    databases.sort();
    databases.dedup();
    for b in buckets {
        let actual = inst.bucket(&b);
        match store.bucket_usage(&actual).await {
            Ok((objects, bytes)) => {
                r.pass(format!("bucket {actual}"), format!("readable: {objects} objects, {}", human_bytes(bytes)));
                r.buckets.push(BucketUsage { bucket: b, name: actual, objects, bytes });
            }
            Err(e) => r.fail(format!("bucket {actual}"), e, "grant this access key read and list on the bucket"),
        }
    }
    for db in databases {
        let size = match inst.postgres.connect(&db).await {
            Ok(client) => crate::pg::catalog::database_size(&client, &db).await,
            Err(e) => Err(e),
        };
        match size {
            Ok(bytes) => {
                r.pass(format!("database {db}"), format!("readable: {} on disk", human_bytes(bytes.max(0) as u64)));
                r.databases.push(DatabaseUsage { database: db, bytes });
            }
            Err(e) => {
                r.fail(format!("database {db}"), e, "grant this login CONNECT on the database and SELECT on its tables")
            }
        }
    }
}

async fn check_repository(r: &mut DoctorReport, inst: &Installation, settings: &RepositorySettings) {
    let name = format!("repository {}", settings.location.describe());
    let (location, password) = (settings.location.clone(), settings.password.clone());
    let opened =
        tokio::task::spawn_blocking(move || Repository::open(&location, &password)).await.map_err(|e| e.to_string());
    let repo = match opened {
        Ok(Ok(v)) => std::sync::Arc::new(v),
        Ok(Err(e)) => {
            let fix = match &e {
                crate::repository::RepoError::Missing { .. } => "create it with `speechvault init`",
                crate::repository::RepoError::WrongPassword { .. } => {
                    "check the repository password file (SPEECHVAULT_PASSWORD_FILE / password_file)"
                }
                _ => "check the repository location, its credentials and that this host can reach it",
            };
            r.fail(name, e, fix);
            return;
        }
        Err(e) => {
            r.fail(name, e, "retry");
            return;
        }
    };
    let v = repo.clone();
    let (keys, free) =
        match tokio::task::spawn_blocking(move || (v.keys().map(|k| k.len()), v.store().free_space())).await {
            Ok(x) => x,
            Err(e) => {
                r.fail(name, e, "retry");
                return;
            }
        };
    r.repository_free_bytes = free;
    let free_text = free.map(|f| format!(", {} free", human_bytes(f))).unwrap_or_default();
    r.pass(name, format!("opened with the configured password{free_text}"));
    match keys {
        Ok(1) => {
            r.repository_keys = Some(1);
            r.push(
                "repository keys",
                Status::Warn,
                "one key only: if its password is lost, every backup is lost",
                Some(
                    "add a second key and keep its password elsewhere: speechvault key add --new-password-file FILE"
                        .into(),
                ),
            );
        }
        Ok(n) => {
            r.repository_keys = Some(n);
            r.pass("repository keys", format!("{n} keys"));
        }
        Err(e) => r.fail("repository keys", e, "check the repository's permissions"),
    }
    // An estimate needs the installation's sizes: only when they were measured.
    if r.checks.iter().any(|c| c.name == "components" && c.status == Status::Ok) {
        estimate(r, inst, repo).await;
    }
    if let (Some(free), Some(est)) = (r.repository_free_bytes, &r.estimate) {
        // A first backup of this size cannot be larger than the data (before compression).
        if free < est.size_bytes / 4 {
            r.push(
                "repository space",
                Status::Warn,
                format!("{} free, the installation holds {}", human_bytes(free), human_bytes(est.size_bytes)),
                Some("grow the repository's volume before the next full backup".into()),
            );
        }
    }
}

async fn estimate(r: &mut DoctorReport, inst: &Installation, repo: std::sync::Arc<Repository>) {
    let clock = Instant::now();
    let name = inst.name.clone();
    let last = tokio::task::spawn_blocking(move || -> Option<(String, crate::model::manifest::Manifest)> {
        let sets = crate::model::catalog::backup_sets(&repo).ok()?;
        let set = sets.into_iter().rfind(|s| s.complete() && s.installation == name)?;
        let reader = repo.reader().ok()?;
        let manifest = set.manifest(&reader).ok()?;
        Some((set.id.clone(), manifest))
    })
    .await
    .ok()
    .flatten();
    let objects_now: u64 = r.buckets.iter().map(|b| b.bytes).sum();
    let Some((id, m)) = last else {
        r.pass(
            "last backup",
            format!(
                "none of {} in this repository yet; the first backup reads everything ({} of objects)",
                inst.name,
                human_bytes(objects_now)
            ),
        );
        return;
    };
    let dumps: u64 = m.databases.values().map(|d| d.dump_bytes).sum();
    let last_bytes: u64 = m.buckets.values().map(|b| b.bytes).sum::<u64>() + dumps;
    let seconds = match (m.started.parse::<jiff::Timestamp>(), m.finished.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0,
        _ => 0.0,
    };
    let size = objects_now + dumps;
    let full = if last_bytes > 0 { seconds * size as f64 / last_bytes as f64 } else { seconds };
    r.pass(
        "last backup",
        format!(
            "{id}: {} in {seconds:.0} s; now {}, a full backup about {full:.0} s (unchanged objects are not read again)",
            human_bytes(last_bytes),
            human_bytes(size)
        ),
    );
    r.estimate = Some(Estimate {
        last_backup: id,
        last_backup_bytes: last_bytes,
        last_backup_seconds: seconds,
        size_bytes: size,
        full_backup_seconds: full,
    });
    tracing::debug!("estimate read in {:?}", clock.elapsed());
}
