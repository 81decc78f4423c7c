//! `drill`: proof that a backup restores, measured. The backup's databases are restored into
//! a private PostgreSQL cluster that the drill starts and removes (the machine's server
//! binaries, of the backup's major version or newer), ownership is moved to a drill service
//! instance, and the rows are compared by their digests; every object is read out of the
//! repository and its size and SHA-256 compared with the backup's record (or, with a scratch
//! S3 target, restored there with `--clean` and verified). Each step is timed (the recovery
//! time, RTO) and the backup's age and the longest gap between complete backups give the
//! recovery point (RPO). The outcome is stored in the repository beside the backup (a
//! snapshot tagged `drill`, forgotten with it) and reported. The installation drilled is
//! never touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::catalog::BackupSet;
use crate::model::config::Installation;
use crate::model::instance::InstanceId;
use crate::model::profile::Profile;
use crate::ops::restore::{self, Phase, RestoreError, RestoreOptions, TargetMode, VerifyMode};
use crate::repository::{RepoError, Repository, RepositoryReader};
use crate::support::interrupt::Stop;
use crate::support::progress::Progress;

/// The drill service instance the ownership is moved to (a fixed, recognisable id).
pub const DRILL_INSTANCE: &str = "d7111000-0000-4000-8000-000000000001";

/// The label and tag of a drill record snapshot.
pub const RECORD_TAG: &str = "drill";

/// Differences named in a report at most (all are counted).
const LIST_LIMIT: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the drill needs PostgreSQL server binaries of major version {need} or newer (the backup's), found {found}: install postgresql-{need} (Debian: apt-get install postgresql-{need}) or point SPEECHVAULT_PG_BINDIR at them"
    )]
    NoServer { need: u32, found: String },
    #[error("the scratch PostgreSQL cluster: {0}")]
    Scratch(String),
    #[error("{0}. Nothing was changed")]
    Refused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Recovery objectives (`[installations.NAME.objectives]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Objectives {
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// A scratch installation whose object store receives the objects (`--to`), restored
    /// with `--clean`; its PostgreSQL is not used (the drill's own cluster is).
    pub to: Option<Installation>,
    pub objectives: Objectives,
    /// Objects read (or written) at once.
    pub parallel: usize,
    /// Where the dumps are spooled.
    pub temp_dir: Option<PathBuf>,
    /// How long opening the repository and finding the backup took (measured by the caller).
    pub open_seconds: f64,
}

/// What a drill found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub installation: String,
    /// When the drill ran (RFC 3339, and Unix seconds).
    pub drilled_at: String,
    pub drilled_at_unix: f64,
    /// Verification found no difference (objectives aside).
    pub verified: bool,
    /// Verified, and every objective met.
    pub passed: bool,
    /// The whole recovery, from opening the repository to the end of verification.
    pub rto_seconds: f64,
    /// The backup's age when the drill ran.
    pub rpo_seconds: f64,
    /// The longest time between complete backups of the installation, up to now.
    pub longest_gap_seconds: f64,
    pub phases: Vec<Phase>,
    pub verification: DrillVerification,
    pub objectives: Objectives,
    /// Objectives missed, in words.
    pub missed: Vec<String>,
    /// Where the objects went: `hashed` (read and compared) or the scratch target's name.
    pub objects_to: String,
    /// When a drill of this installation last passed (Unix seconds): now if this one did,
    /// else the newest passing record in the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_passed_unix: Option<f64>,
    /// The record's snapshot in the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrillVerification {
    pub ok: bool,
    pub tables: usize,
    pub rows: i64,
    pub objects: u64,
    pub bytes: u64,
    pub differences_count: usize,
    pub differences: Vec<String>,
}

/// Drills `set` (a backup of `source`); `sets`: every backup, for the recovery point.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    repo: Arc<Repository>,
    sets: &[BackupSet],
    set: &BackupSet,
    source: &Installation,
    profile: &Profile,
    opts: &DrillOptions,
    progress: &Progress,
    stop: &Stop,
) -> Result<DrillReport, DrillError> {
    let clock = Instant::now();
    let drilled_at = jiff::Timestamp::now();
    if let Some(to) = &opts.to
        && to.s3.endpoint == source.s3.endpoint
        && set_buckets(profile).iter().any(|b| to.bucket(b) == source.bucket(b))
    {
        return Err(DrillError::Refused(format!(
            "--to {} shares the object store and bucket names of {}, the installation drilled: a drill never touches its source",
            to.name, source.name
        )));
    }
    let reader = {
        let r = repo.clone();
        Arc::new(tokio::task::spawn_blocking(move || r.reader()).await.map_err(internal)??)
    };
    let manifest = {
        let (r, s) = (reader.clone(), set.clone());
        tokio::task::spawn_blocking(move || s.manifest(&r))
            .await
            .map_err(internal)?
            .map_err(|e| DrillError::Restore(e.into()))?
    };

    progress.phase("starting a scratch PostgreSQL", 0, 0);
    let started = Instant::now();
    let need = manifest.source.postgres_version_num.map(|n| (n / 10000) as u32);
    let scratch = tokio::task::spawn_blocking(crate::pg::cluster::Scratch::start)
        .await
        .map_err(internal)?
        .map_err(|e| DrillError::Scratch(e.to_string()))?;
    let found = scratch_major(&scratch).await?;
    if let Some(need) = need
        && found < need
    {
        return Err(DrillError::NoServer { need, found: found.to_string() });
    }
    let mut phases = vec![
        Phase { name: "repository open".into(), seconds: opts.open_seconds },
        Phase { name: "scratch cluster".into(), seconds: started.elapsed().as_secs_f64() },
    ];

    // The databases (and with --to the objects) through the restore, into the scratch.
    let target = Installation {
        name: format!("drill-of-{}", source.name),
        s3: opts.to.as_ref().map_or_else(|| source.s3.clone(), |t| t.s3.clone()),
        postgres: scratch.pg.clone(),
        buckets: opts.to.as_ref().map(|t| t.buckets.clone()).unwrap_or_default(),
        bucket_suffix: opts.to.as_ref().and_then(|t| t.bucket_suffix.clone()),
        pg_connections: None,
    };
    let owners = manifest.canonical_instance_ids();
    let drill_instance = InstanceId::parse(DRILL_INSTANCE).map_err(|e| DrillError::Internal(e.to_string()))?;
    // The move is proven on the backup's first service instance (the others stay as they are).
    let ownership = owners.iter().next().map(|from| (from.clone(), drill_instance));
    let ropts = RestoreOptions {
        mode: if opts.to.is_some() { TargetMode::Clean } else { TargetMode::Empty },
        ownership,
        temp_dir: opts.temp_dir.clone(),
        parallel: opts.parallel.max(1),
        verify: if opts.to.is_some() { VerifyMode::ReadBack } else { VerifyMode::Server },
        databases_only: opts.to.is_none(),
        in_place: false,
        ..Default::default()
    };
    let restored = restore::run(repo.clone(), set, &target, profile, &ropts, progress, stop).await;
    drop(scratch);
    let restored = restored?;
    phases.extend(restored.phases.iter().cloned());

    let mut verification = DrillVerification::default();
    if let Some(v) = &restored.verify {
        verification.tables = v.tables.len();
        verification.rows = v.tables.iter().map(|t| t.backup_rows).sum();
        for t in v.tables.iter().filter(|t| !t.ok) {
            verification.differences.push(format!(
                "{}.{}: the backup has {} rows, the scratch restore {}; content {}",
                t.database,
                t.table,
                t.backup_rows,
                t.installation_rows.map_or("none".into(), |n| n.to_string()),
                t.content
            ));
        }
        for b in v.buckets.iter().filter(|b| !b.ok) {
            verification.differences.push(format!(
                "bucket {}: {} missing, {} unexpected, {} different",
                b.name, b.missing_count, b.unexpected_count, b.different_count
            ));
        }
    }
    if opts.to.is_none() {
        for bucket in manifest.buckets.keys() {
            if stop.is_stopped() {
                return Err(DrillError::Restore(RestoreError::Interrupted));
            }
            progress.phase(format!("reading and hashing bucket {bucket}"), manifest.buckets[bucket].bytes, 0);
            let since = Instant::now();
            let (r, s, m, b) = (reader.clone(), set.clone(), manifest.clone(), bucket.clone());
            let (objects, bytes, differences) =
                tokio::task::spawn_blocking(move || hash_bucket(&r, &s, &m, &b)).await.map_err(internal)??;
            verification.objects += objects;
            verification.bytes += bytes;
            verification.differences.extend(differences);
            phases.push(Phase { name: format!("bucket {bucket}"), seconds: since.elapsed().as_secs_f64() });
        }
    } else {
        verification.objects = restored.buckets.values().map(|b| b.objects).sum();
        verification.bytes = restored.buckets.values().map(|b| b.bytes).sum();
    }
    verification.differences_count = verification.differences.len();
    verification.differences.truncate(LIST_LIMIT);
    verification.ok = verification.differences_count == 0 && restored.verify.as_ref().is_none_or(|v| v.ok);

    let rto_seconds = opts.open_seconds + clock.elapsed().as_secs_f64();
    let now = drilled_at.as_millisecond() as f64 / 1000.0;
    let rpo_seconds = set.unix_time().map_or(0.0, |t| (now - t).max(0.0));
    let longest_gap_seconds = longest_gap(sets, &set.installation, now);
    let mut missed = Vec::new();
    if let Some(rto) = opts.objectives.rto_seconds
        && rto_seconds > rto
    {
        missed.push(format!("recovery time {rto_seconds:.0}s is over the objective of {rto:.0}s"));
    }
    if let Some(rpo) = opts.objectives.rpo_seconds {
        if rpo_seconds > rpo {
            missed.push(format!("the backup is {rpo_seconds:.0}s old, over the recovery point objective of {rpo:.0}s"));
        }
        if longest_gap_seconds > rpo {
            missed.push(format!(
                "the longest gap between complete backups is {longest_gap_seconds:.0}s, over the recovery point objective of {rpo:.0}s"
            ));
        }
    }
    let mut report = DrillReport {
        backup_id: set.id.clone(),
        installation: set.installation.clone(),
        drilled_at: drilled_at.to_string(),
        drilled_at_unix: now,
        verified: verification.ok,
        passed: verification.ok && missed.is_empty(),
        rto_seconds,
        rpo_seconds,
        longest_gap_seconds,
        phases,
        verification,
        objectives: opts.objectives.clone(),
        missed,
        objects_to: opts.to.as_ref().map_or_else(|| "hashed".to_string(), |t| t.name.clone()),
        last_passed_unix: None,
        record: None,
    };
    report.last_passed_unix = if report.passed { Some(now) } else { last_passed(sets, &set.installation) };
    report.record = Some(record(&repo, &report).await?);
    Ok(report)
}

/// The profile's bucket names (for the `--to` guard).
fn set_buckets(profile: &Profile) -> Vec<String> {
    profile.components.values().flat_map(|c| c.buckets.iter().cloned()).collect()
}

fn internal(e: impl std::fmt::Display) -> DrillError {
    DrillError::Internal(e.to_string())
}

/// The scratch server's major version.
async fn scratch_major(scratch: &crate::pg::cluster::Scratch) -> Result<u32, DrillError> {
    let client = scratch.pg.connect("postgres").await.map_err(|e| DrillError::Scratch(e.to_string()))?;
    let n = crate::pg::catalog::server_version_num(&client, "postgres")
        .await
        .map_err(|e| DrillError::Scratch(e.to_string()))?;
    Ok((n / 10000) as u32)
}

/// Every object of one bucket read out of the repository (each blob authenticated) and its
/// size and SHA-256 compared with the backup's record: `(objects, bytes, differences)`.
fn hash_bucket(
    reader: &RepositoryReader,
    set: &BackupSet,
    manifest: &crate::model::manifest::Manifest,
    bucket: &str,
) -> Result<(u64, u64, Vec<String>), DrillError> {
    let list = set.object_list(reader, manifest, bucket).map_err(|e| DrillError::Restore(e.into()))?;
    let entry = &manifest.buckets[bucket];
    let snap = set
        .snapshot(&entry.snapshot)
        .ok_or_else(|| {
            DrillError::Restore(RestoreError::BackupDamaged(format!("bucket {bucket}: its snapshot is missing")))
        })?
        .clone();
    let pairs =
        crate::model::catalog::PairedObjects::new(reader, &snap, &list).map_err(|e| DrillError::Restore(e.into()))?;
    let (mut objects, mut bytes, mut differences) = (0u64, 0u64, Vec::new());
    for pair in pairs {
        let (e, node) = match pair {
            Ok(p) => p,
            Err(reason) => {
                differences.push(format!("bucket {bucket}: its files do not read: {reason}"));
                break;
            }
        };
        let mut sink = HashingSink { hasher: Sha256::new(), bytes: 0 };
        match reader.dump(&node, &mut sink) {
            Ok(()) => {
                let sha = hex::encode(sink.hasher.finalize());
                if sink.bytes != e.size || sha != e.sha256 {
                    differences.push(format!(
                        "{bucket}/{}: reads as {} bytes with SHA-256 {sha}, the backup recorded {} bytes with {}",
                        e.key, sink.bytes, e.size, e.sha256
                    ));
                }
            }
            Err(err) => differences.push(format!("{bucket}/{}: does not read from the repository: {err}", e.key)),
        }
        objects += 1;
        bytes += sink.bytes;
    }
    if objects != entry.objects {
        differences.push(format!("bucket {bucket}: {objects} objects read, the backup recorded {}", entry.objects));
    }
    Ok((objects, bytes, differences))
}

struct HashingSink {
    hasher: Sha256,
    bytes: u64,
}

impl std::io::Write for HashingSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The longest time between two complete backups of `installation`, or between the last one
/// and `now`.
pub fn longest_gap(sets: &[BackupSet], installation: &str, now: f64) -> f64 {
    let mut times: Vec<f64> = sets
        .iter()
        .filter(|s| s.complete() && s.installation == installation)
        .filter_map(BackupSet::unix_time)
        .collect();
    times.sort_by(f64::total_cmp);
    times.push(now);
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// When a drill of `installation` last passed, from the records in the repository.
pub fn last_passed(sets: &[BackupSet], installation: &str) -> Option<f64> {
    sets.iter()
        .filter(|s| s.installation == installation)
        .flat_map(|s| s.snapshots.iter())
        .filter(|s| s.label == RECORD_TAG && s.tags.contains("drill-passed"))
        .map(|s| s.time.timestamp().as_millisecond() as f64 / 1000.0)
        .max_by(f64::total_cmp)
}

/// Stores the report in the repository as a snapshot of the backup's set (tagged `drill`), so
/// it is kept, copied and forgotten with the backup.
async fn record(repo: &Arc<Repository>, report: &DrillReport) -> Result<String, DrillError> {
    use crate::ops::backup::source::{FileData, FilesSource};
    let data = serde_json::to_vec_pretty(report).map_err(internal)?;
    let name = format!("/drill/{}.json", report.drilled_at.replace(':', ""));
    let mut tags = crate::ops::backup::tags(&report.installation, &report.backup_id, RECORD_TAG);
    tags.push(format!("drill-{}", if report.passed { "passed" } else { "failed" }));
    let spec = crate::repository::SnapshotSpec {
        host: report.installation.clone(),
        label: RECORD_TAG.into(),
        tags,
        path: PathBuf::from("/drill"),
        description: Some(format!("speechvault drill of backup {}", report.backup_id)),
    };
    let v = repo.clone();
    let snap = tokio::task::spawn_blocking(move || {
        v.archive(FilesSource::new(vec![(PathBuf::from(name), FileData::Memory(data))]), &spec, None)
    })
    .await
    .map_err(internal)??;
    Ok(snap.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, time: &str) -> BackupSet {
        let manifest = rustic_core::repofile::SnapshotFile { label: "manifest".into(), ..Default::default() };
        BackupSet {
            id: id.into(),
            installation: "prod".into(),
            time: time.into(),
            snapshots: vec![manifest.clone()],
            manifest: Some(manifest),
        }
    }

    #[test]
    fn the_longest_gap_counts_up_to_now() {
        assert_eq!(longest_gap(&[], "prod", 100.0), 0.0);
        let sets =
            [set("a", "1970-01-01T00:00:10Z"), set("b", "1970-01-01T00:01:00Z"), set("c", "1970-01-01T00:01:30Z")];
        // 10 -> 60 -> 90 -> now 100: the longest is 50 s.
        assert_eq!(longest_gap(&sets, "prod", 100.0), 50.0);
        assert_eq!(longest_gap(&sets, "prod", 200.0), 110.0);
        assert_eq!(longest_gap(&sets, "other", 100.0), 0.0);
    }
}
