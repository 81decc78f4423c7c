//! `export`: a backup set written out in the layout of the manual procedure, for people who
//! must hand a backup to it: `minio/<bucket>/<key>` (as `mc cp -r` writes) and
//! `postgres/<database>.backup.sql` (plain SQL, as `pg_dump` writes it).
//!
//! Not every S3 key can be a file name: `.` and `..` and empty segments, a trailing `/`, a
//! segment over 255 bytes, a key that is also the "directory" of other keys. Such objects are
//! written under `escaped/<bucket>/<SHA-256 of the key>`, never dropped and never outside the
//! directory, and `export-report.json` lists every object with its file, key, size, SHA-256,
//! content type and user metadata (the layout itself cannot carry those).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::catalog::{BackupSet, CatalogError};
use crate::ops::restore::RestoreError;
use crate::repository::{RepoError, Repository, RepositoryReader};
use crate::support::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export directory {0} exists and is not empty; give a new or empty directory")]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Failed(String),
}

/// One exported object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportedObject {
    /// The bucket as named on the source installation.
    pub bucket: String,
    pub key: String,
    /// Path of the file, relative to the export directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Every other attribute (headers, tags, checksums, lock state), as the backup holds it.
    #[serde(default, skip_serializing_if = "crate::objstore::ObjectAttributes::is_empty")]
    pub attrs: crate::objstore::ObjectAttributes,
    /// Why the key could not be a file name, when it could not.
    pub escaped: Option<String>,
}

/// `export-report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub backup_id: String,
    pub installation: String,
    pub exported: String,
    /// Database -> file, relative to the export directory.
    pub databases: BTreeMap<String, String>,
    pub objects: Vec<ExportedObject>,
    /// How many objects had to be written under escaped names.
    pub escaped: usize,
}

/// Report file name inside an export directory.
pub const REPORT: &str = "export-report.json";

/// Why `key` cannot be a relative file path, if it cannot (ignoring conflicts between keys).
pub fn unrepresentable(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("empty key".into());
    }
    for seg in key.split('/') {
        match seg {
            "" => return Some("empty path segment (a leading, trailing or doubled '/')".into()),
            "." | ".." => return Some(format!("'{seg}' path segment")),
            s if s.len() > 255 => return Some(format!("a segment of {} bytes (file names hold 255)", s.len())),
            s if s.contains('\0') => return Some("a NUL byte".into()),
            _ => {}
        }
    }
    None
}

/// Decides where each key goes: its own path, or an escaped name (with the reason).
pub fn plan(bucket: &str, keys: &[String]) -> Vec<(String, Option<String>)> {
    let fine: BTreeSet<&str> = keys.iter().map(String::as_str).filter(|k| unrepresentable(k).is_none()).collect();
    // Every directory the representable keys need.
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for k in &fine {
        let mut rest = *k;
        while let Some((parent, _)) = rest.rsplit_once('/') {
            if !dirs.insert(parent) {
                break;
            }
            rest = parent;
        }
    }
    keys.iter()
        .map(|k| {
            let why = unrepresentable(k).or_else(|| {
                dirs.contains(k.as_str())
                    .then(|| "also the directory of other keys (a file cannot be both)".to_string())
            });
            match why {
                None => (format!("minio/{bucket}/{k}"), None),
                Some(reason) => {
                    (format!("escaped/{bucket}/{}", hex::encode(Sha256::digest(k.as_bytes()))), Some(reason))
                }
            }
        })
        .collect()
}

fn mkdirs(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Writes what `dump` gives into `path`, returning its SHA-256.
fn write_file(
    reader: &RepositoryReader,
    node: &rustic_core::repofile::Node,
    path: &Path,
) -> Result<(String, u64), ExportError> {
    let io = |source| ExportError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        mkdirs(parent).map_err(io)?;
    }
    let f = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path).map_err(io)?;
    struct Hashing<W: Write> {
        w: W,
        h: Sha256,
        n: u64,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.w.write(buf)?;
            self.h.update(&buf[..n]);
            self.n += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.w.flush()
        }
    }
    let mut out = Hashing { w: std::io::BufWriter::new(f), h: Sha256::new(), n: 0 };
    reader.dump(node, &mut out)?;
    out.flush().map_err(io)?;
    Ok((hex::encode(out.h.finalize()), out.n))
}

/// Exports `set` into `dir` (new or empty). Objects are checked against their SHA-256.
pub async fn export(
    repo: Arc<Repository>,
    set: &BackupSet,
    dir: &Path,
    progress: &Progress,
) -> Result<ExportReport, ExportError> {
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(ExportError::NotEmpty(dir.to_path_buf()));
    }
    mkdirs(dir).map_err(|source| ExportError::Io { path: dir.to_path_buf(), source })?;
    let v = repo.clone();
    let reader = Arc::new(
        tokio::task::spawn_blocking(move || v.reader()).await.map_err(|e| ExportError::Failed(e.to_string()))??,
    );
    let (r, s) = (reader.clone(), set.clone());
    let manifest =
        tokio::task::spawn_blocking(move || s.manifest(&r)).await.map_err(|e| ExportError::Failed(e.to_string()))??;

    // Databases: the custom-format dump as plain SQL (pg_restore needs no server for that).
    let spool = crate::ops::restore::checks::spool_dumps(&reader, set, &manifest, dir, progress).await?;
    let mut databases = BTreeMap::new();
    if !manifest.databases.is_empty() {
        let pg_restore = crate::pg::tool("pg_restore").map_err(|e| ExportError::Failed(e.to_string()))?;
        let pg_dir = dir.join("postgres");
        mkdirs(&pg_dir).map_err(|source| ExportError::Io { path: pg_dir.clone(), source })?;
        for (db, file) in &spool.files {
            let rel = format!("postgres/{db}.backup.sql");
            let out = std::process::Command::new(&pg_restore)
                .arg("--file")
                .arg(dir.join(&rel))
                .arg(file)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .output()
                .map_err(|e| ExportError::Failed(format!("cannot run pg_restore: {e}")))?;
            if !out.status.success() {
                return Err(ExportError::Failed(format!(
                    "pg_restore could not write {rel}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            databases.insert(db.clone(), rel);
        }
    }
    drop(spool);

    // Objects.
    let mut objects = Vec::new();
    for (bucket, entry) in &manifest.buckets {
        let snap = set.snapshot(&entry.snapshot).cloned().ok_or_else(|| {
            ExportError::Failed(format!("snapshot {} of bucket {} is missing", entry.snapshot, entry.source_name))
        })?;
        progress.phase(format!("exporting bucket {}", entry.source_name), entry.bytes, entry.objects);
        let (r, e, base, p) = (reader.clone(), entry.clone(), dir.to_path_buf(), progress.clone());
        let (set, m, bucket) = (set.clone(), manifest.clone(), bucket.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<Vec<ExportedObject>, ExportError> {
            let list = set.object_list(&r, &m, &bucket).map_err(|e| ExportError::Failed(e.to_string()))?;
            // Where each key goes depends on the other keys (a key that is also a prefix).
            let keys: Vec<String> = list
                .iter()
                .and_then(|i| i.map(|e| e.map(|e| e.key)).collect())
                .map_err(|e| ExportError::Failed(format!("object list: {e}")))?;
            let places = plan(&e.source_name, &keys);
            drop(keys);
            let pairs = crate::model::catalog::PairedObjects::new(&r, &snap, &list)
                .map_err(|e| ExportError::Failed(e.to_string()))?;
            let mut out = Vec::with_capacity(list.count as usize);
            for (pair, (file, escaped)) in pairs.zip(places) {
                let (o, node) = pair.map_err(ExportError::Failed)?;
                let (sha256, size) = write_file(&r, &node, &base.join(&file))?;
                if sha256 != o.sha256 || size != o.size {
                    return Err(ExportError::Failed(format!(
                        "object {:?} reads back differently from the manifest",
                        o.key
                    )));
                }
                p.add_bytes(size);
                p.item_done();
                out.push(ExportedObject {
                    bucket: e.source_name.clone(),
                    key: o.key.clone(),
                    file,
                    size,
                    sha256,
                    content_type: o.content_type.clone(),
                    metadata: o.metadata.clone(),
                    attrs: o.attrs.clone(),
                    escaped,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| ExportError::Failed(e.to_string()))??;
        objects.extend(done);
    }
    let report = ExportReport {
        backup_id: manifest.backup_id.clone(),
        installation: manifest.installation.clone(),
        exported: jiff::Timestamp::now().to_string(),
        databases,
        escaped: objects.iter().filter(|o| o.escaped.is_some()).count(),
        objects,
    };
    let path = dir.join(REPORT);
    let json = serde_json::to_vec_pretty(&report).map_err(|e| ExportError::Failed(e.to_string()))?;
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&json))
        .map_err(|source| ExportError::Io { path, source })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_a_file_system_cannot_hold_are_escaped_and_the_rest_keep_their_paths() {
        let keys: Vec<String> =
            ["a", "a/b", "x/../y", "x//y", "t/", "/lead", "ok/file.txt", &"n".repeat(300), "sp ace/+%.txt"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let p = plan("bkt", &keys);
        let escaped: Vec<&str> =
            keys.iter().zip(&p).filter(|(_, (_, e))| e.is_some()).map(|(k, _)| k.as_str()).collect();
        assert_eq!(escaped, ["a", "x/../y", "x//y", "t/", "/lead", &"n".repeat(300)]);
        assert_eq!(p[1].0, "minio/bkt/a/b");
        assert_eq!(p[8].0, "minio/bkt/sp ace/+%.txt");
        assert!(p[0].0.starts_with("escaped/bkt/") && p[0].1.as_ref().unwrap().contains("directory"));
        let files: BTreeSet<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(files.len(), keys.len(), "every key has a file of its own");
    }
}
