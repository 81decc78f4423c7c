//! `restore --salvage`: everything of a damaged backup that reads back and authenticates is
//! restored; the rest is named, and the restore ends with exit status 3.
//!
//! A database whose dump does not read whole is not restored at all (and, with `--clean`, the
//! target's database of that name is left as it is); an object whose data does not read is
//! absent on the target (its upload is abandoned, and an older object under its key is
//! deleted), never half-written. Verification then expects exactly what was restored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::Serialize;

/// What a salvage could not restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Salvaged {
    /// Databases whose dump does not read (not restored).
    pub databases: Vec<Lost>,
    /// Objects whose data does not read (absent on the target); the first
    /// [`LIST_LIMIT`] by name, all of them counted.
    pub objects: Vec<Lost>,
    pub objects_lost: u64,
}

/// Objects named in the report; all are counted and left out of verification.
pub const LIST_LIMIT: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    /// The bucket (the profile's name), for an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The database, or the object's key.
    pub name: String,
    pub reason: String,
}

impl Salvaged {
    pub fn is_empty(&self) -> bool {
        self.databases.is_empty() && self.objects_lost == 0
    }

    /// One line for the exit message.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.databases.is_empty() {
            let names: Vec<&str> = self.databases.iter().map(|d| d.name.as_str()).collect();
            parts.push(format!("databases {}", names.join(", ")));
        }
        if self.objects_lost > 0 {
            let names: Vec<String> = self
                .objects
                .iter()
                .take(3)
                .map(|o| format!("{}/{}", o.bucket.as_deref().unwrap_or("?"), o.name))
                .collect();
            parts.push(format!(
                "{} objects ({}{})",
                self.objects_lost,
                names.join(", "),
                if self.objects_lost > 3 { ", ..." } else { "" }
            ));
        }
        parts.join(" and ")
    }
}

/// The tally a salvaging restore keeps while it runs, and every lost key for verification.
#[derive(Debug, Default)]
pub struct Tally {
    pub report: Salvaged,
    pub lost_keys: BTreeMap<String, BTreeSet<String>>,
}

impl Tally {
    pub fn database(&mut self, db: &str, reason: String) {
        tracing::warn!(database = db, "salvage: the dump does not read, the database is not restored: {reason}");
        self.report.databases.push(Lost { bucket: None, name: db.to_string(), reason });
    }

    pub fn object(&mut self, bucket: &str, key: &str, reason: String) {
        if self.report.objects_lost == 0 {
            tracing::warn!(bucket, key, "salvage: an object does not read and is not restored: {reason}");
        }
        self.report.objects_lost += 1;
        if self.report.objects.len() < LIST_LIMIT {
            self.report.objects.push(Lost { bucket: Some(bucket.to_string()), name: key.to_string(), reason });
        }
        self.lost_keys.entry(bucket.to_string()).or_default().insert(key.to_string());
    }
}

/// Shared by the parts of one restore.
pub type SharedTally = Mutex<Tally>;
