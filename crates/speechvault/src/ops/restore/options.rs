//! What a restore is asked to do.

use std::path::PathBuf;

use serde::Serialize;

use crate::model::instance::InstanceId;

/// What to do when the target already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    /// Refuse unless the target's databases and buckets are empty or missing.
    Empty,
    /// Drop and recreate databases, replace objects that differ, delete objects the backup
    /// does not hold.
    Clean,
    /// Load rows into existing databases (schema from a fresh installation); objects are
    /// written over existing ones.
    DataOnly,
}

/// How much of the backup to read before touching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preflight {
    /// Dumps read in full; object packs checked for presence, size and an authentic header.
    #[default]
    Quick,
    /// Every byte of every object read and authenticated too.
    Full,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub mode: TargetMode,
    /// Finish an interrupted restore of the same backup: databases are restored again,
    /// objects already there with the right size and SHA-256 are kept.
    pub resume: bool,
    pub preflight: Preflight,
    /// Restore only these components (default: all in the backup).
    pub components: Option<Vec<String>>,
    /// Move ownership from the first to the second service instance.
    pub ownership: Option<(InstanceId, InstanceId)>,
    /// Role to own restored databases and their objects (default: the backup's database owner
    /// when that role exists on the target, else the login).
    pub db_owner: Option<String>,
    /// Where dumps are spooled (default: the system's temporary directory).
    pub temp_dir: Option<PathBuf>,
    /// Objects transferred at once.
    pub parallel: usize,
    /// `pg_restore --jobs`.
    pub jobs: usize,
    /// How the restored objects are checked (the databases are always compared).
    pub verify: VerifyMode,
    /// Restore objects without the attributes the target does not keep, instead of refusing.
    pub allow_attribute_loss: bool,
    /// `--in-place`: a `--clean` or `--data-only` restore onto the installation the backup
    /// was taken from is meant (refused without it).
    pub in_place: bool,
    /// Also restore per-object retention and legal holds (`--object-lock-settings`).
    pub object_lock_settings: bool,
    /// Which of the buckets' own settings to restore (`--bucket-config`).
    pub bucket_config: crate::ops::settings::BucketConfigMode,
    /// Another repository holding the same backup, read where this one fails.
    pub fallback: Option<crate::repository::FallbackRepository>,
    /// `--salvage`: restore what reads of a damaged backup, name the rest ([`super::salvage`]).
    pub salvage: bool,
    /// Restore the databases only (a drill checks the objects without writing them).
    pub databases_only: bool,
}

/// How a restore checks what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// No verification step (each upload is still checked against its Content-MD5 and ETag).
    None,
    /// Every upload carries Content-MD5, so the server rejects a corrupt body, and its answered
    /// ETag is checked against the bytes sent, as the objects go; then the databases are
    /// compared (row counts and content digests) and a listing of each bucket proves every
    /// object is there with its size and nothing else is.
    #[default]
    Server,
    /// As `server`, and every object is read back and compared by SHA-256, content type and
    /// metadata.
    ReadBack,
}

impl std::str::FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "server" => Ok(Self::Server),
            "read-back" => Ok(Self::ReadBack),
            other => Err(format!("{other:?}: use none, server or read-back")),
        }
    }
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            mode: TargetMode::Empty,
            resume: false,
            preflight: Preflight::Quick,
            components: None,
            ownership: None,
            db_owner: None,
            temp_dir: None,
            parallel: crate::ops::backup::default_parallelism(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            verify: VerifyMode::Server,
            allow_attribute_loss: false,
            in_place: false,
            object_lock_settings: false,
            bucket_config: Default::default(),
            fallback: None,
            salvage: false,
            databases_only: false,
        }
    }
}
