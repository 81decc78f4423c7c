//! The manifest: what one backup holds, written last as its own snapshot.
//!
//! A backup is a *set* of snapshots sharing the tag `backup:<id>`: one per database, one per
//! bucket, and the manifest. The manifest snapshot is written only after every other part
//! succeeded, so a set without it is incomplete by construction, whatever killed the backup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objstore::{ObjectAttributes, ObjectHead};

/// The manifest format this release writes; it reads every format up to this one.
///
/// - 1: every object's entry inline in `manifest.json`.
/// - 2: each bucket's entries in their own file of the manifest snapshot
///   (`/speechvault/objects/<bucket>.jsonl`, one JSON object per line, in archive order), so
///   that a bucket of any size is written and read as a stream.
/// - 3: every other attribute of each object (`ObjectEntry::attrs`: headers, tags, checksums,
///   lock state, metadata that is not UTF-8) and each bucket's own settings.
pub const FORMAT: u32 = 3;
/// Directory of the object lists inside the manifest snapshot (format 2).
pub const OBJECTS_DIR: &str = "/speechvault/objects";

/// Path of a bucket's object list inside the manifest snapshot.
pub fn objects_path(bucket: &str) -> String {
    format!("{OBJECTS_DIR}/{bucket}.jsonl")
}
/// Tag on every snapshot speechvault writes.
pub const TAG: &str = "speechvault";
/// Path of the manifest file inside its snapshot.
pub const MANIFEST_PATH: &str = "/speechvault/manifest.json";
/// Tag of the manifest snapshot of a backup marked as looking like ransomware happened
/// (so `snapshots`, retention and restic see it without reading the manifest).
pub const ANOMALOUS_TAG: &str = "anomalous";
/// Tag of the manifest snapshot: `parts:N`, the number of the set's other snapshots.
pub const PARTS_TAG_PREFIX: &str = "parts:";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    pub backup_id: String,
    pub installation: String,
    pub started: String,
    pub finished: String,
    pub source: SourceInfo,
    pub components: Vec<String>,
    pub databases: BTreeMap<String, DatabaseEntry>,
    /// By profile bucket name.
    pub buckets: BTreeMap<String, BucketEntry>,
    /// Service instance ids found in the profile's ownership columns.
    pub instance_ids: Vec<String>,
    /// In an immutable repository: until when every file the backups needed is retained
    /// (written by the backup that extended it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::repository::retention::RetentionRecord>,
    /// What made this backup look like ransomware happened (empty: nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<super::anomalies::Anomaly>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub s3_endpoint: String,
    pub postgres: String,
    pub postgres_version: String,
    pub postgres_user: String,
    /// `server_version_num` (150008 for 15.8); a restore refuses an older major version.
    #[serde(default)]
    pub postgres_version_num: Option<i32>,
    /// PostgreSQL's system identifier (`pg_control_system()`), when the login may read it:
    /// with the endpoint and bucket names it tells a restore onto the backup's own source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_system_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseEntry {
    pub snapshot: String,
    /// Directory in the snapshot holding the dump's parts.
    pub path: String,
    pub dump_bytes: u64,
    pub dump_parts: u32,
    pub dump_sha256: String,
    /// `schema.table` -> rows, counted in the snapshot the dump was taken from.
    pub tables: BTreeMap<String, i64>,
    /// Distinct values per ownership column, `table.column` -> ids.
    pub owners: BTreeMap<String, Vec<String>>,
    /// Content digest per table (`schema.table`, and large objects), taken in the dump's
    /// snapshot; see [`crate::pg::catalog`]. Empty in backups made before digests existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// A sample of each table's row hashes (`schema.table`), to tell next time how many rows
    /// changed in place. Empty in backups made before, and of servers before PostgreSQL 11.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_samples: BTreeMap<String, crate::model::anomalies::RowSample>,
    /// Columns digested in canonical instance-id form, by `schema.table`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owner_columns: BTreeMap<String, Vec<String>>,
    /// The role that owned the database.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BucketEntry {
    /// The bucket's name on the source server.
    pub source_name: String,
    pub snapshot: String,
    pub path: String,
    pub objects: u64,
    pub bytes: u64,
    /// Format 1: every object inline. Format 2 leaves this empty and names `objects_file`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<ObjectEntry>,
    /// Format 2: the file of the manifest snapshot holding this bucket's object list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_file: Option<String>,
    /// Keys listed but deleted before they could be read (a live installation); not part of
    /// the backup, not restored, not verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vanished: Vec<String>,
    /// Format 3: the bucket's own settings (versioning, lifecycle, policy, ...), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, crate::objstore::Setting>,
    /// How the bucket's data compresses (packed / added bytes of the data backups added),
    /// carried from backup to backup: a backup whose new data compresses far worse is marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_baseline: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: String,
    pub sha256: String,
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// File path inside the bucket snapshot.
    pub path: String,
    /// Format 3: every other attribute the object had (headers, tags, checksums, lock state).
    #[serde(default, skip_serializing_if = "ObjectAttributes::is_empty")]
    pub attrs: ObjectAttributes,
}

impl ObjectEntry {
    pub fn head(&self) -> ObjectHead {
        ObjectHead {
            size: self.size,
            etag: self.etag.clone(),
            last_modified: Some(self.last_modified.clone()),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            attrs: self.attrs.clone(),
            tag_count: self.attrs.tags.len() as u64,
        }
    }
}

impl Manifest {
    /// Parses a manifest, refusing formats newer than this release understands.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
        if probe.format > FORMAT {
            return Err(format!(
                "it has format {}, this speechvault reads formats up to {FORMAT}: use a newer speechvault",
                probe.format
            ));
        }
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }

    /// Every service instance id the backup recorded, in canonical form.
    pub fn canonical_instance_ids(&self) -> std::collections::BTreeSet<crate::model::instance::InstanceId> {
        self.instance_ids.iter().filter_map(|s| crate::model::instance::InstanceId::parse(s).ok()).collect()
    }
}

/// Tags of the snapshots of one backup.
pub fn backup_tag(id: &str) -> String {
    format!("backup:{id}")
}

/// A new backup id: UTC time plus a random suffix, sortable.
pub fn new_backup_id() -> String {
    let now = jiff::Timestamp::now();
    let mut r = [0u8; 3];
    if getrandom(&mut r).is_err() {
        r = (now.subsec_nanosecond() as u32).to_le_bytes()[..3].try_into().unwrap_or([0; 3]);
    }
    format!("{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), hex::encode(r))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest_with(keys: Vec<(String, u64)>, format: u32) -> Manifest {
        let entries = keys
            .into_iter()
            .map(|(key, size)| ObjectEntry {
                path: format!("/buckets/b/{}", key.len()),
                key,
                size,
                etag: "e".into(),
                last_modified: "2024-01-01T00:00:00Z".into(),
                sha256: "s".into(),
                content_type: None,
                metadata: BTreeMap::new(),
                attrs: Default::default(),
            })
            .collect::<Vec<_>>();
        Manifest {
            format,
            tool: "t".into(),
            backup_id: "id".into(),
            installation: "i".into(),
            started: "s".into(),
            finished: "f".into(),
            source: SourceInfo {
                s3_endpoint: "e".into(),
                postgres: "p".into(),
                postgres_version: "15".into(),
                postgres_user: "u".into(),
                postgres_version_num: Some(150000),
                postgres_system_id: None,
            },
            components: vec![],
            databases: BTreeMap::new(),
            buckets: BTreeMap::from([(
                "b".to_string(),
                BucketEntry {
                    source_name: "b".into(),
                    snapshot: "x".into(),
                    path: "/buckets/b".into(),
                    objects: entries.len() as u64,
                    bytes: 0,
                    entries,
                    objects_file: None,
                    vanished: vec![],
                    settings: BTreeMap::new(),
                    compression_baseline: None,
                },
            )]),
            instance_ids: vec![],
            retention: None,
            anomalies: vec![],
        }
    }

    proptest! {
        /// Whatever a manifest holds (any key), it reads back as written.
        #[test]
        fn manifests_round_trip(keys in proptest::collection::vec(("(?s).{0,64}", any::<u64>()), 0..20)) {
            let m = manifest_with(keys, FORMAT);
            let raw = serde_json::to_vec_pretty(&m).unwrap();
            prop_assert_eq!(Manifest::parse(&raw).unwrap(), m);
        }

        /// Damaged bytes give an error, never a panic.
        #[test]
        fn damaged_manifests_fail_cleanly(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::parse(&raw);
        }
    }

    #[test]
    fn newer_formats_are_refused_with_advice() {
        let raw = serde_json::to_vec(&manifest_with(vec![], FORMAT + 1)).unwrap();
        assert!(Manifest::parse(&raw).unwrap_err().contains("use a newer speechvault"));
    }
}
