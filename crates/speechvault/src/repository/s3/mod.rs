//! A repository in an S3 bucket, in restic's layout (`<prefix>/config`, `keys/`, `snapshots/`,
//! `index/`, `data/<2 hex>/`, `locks/`), through speechvault's own S3 client.
//!
//! Why our client rather than rustic's opendal backend: one S3 stack to trust, with the
//! retries, stall timeouts, `Content-MD5` on every write and the path-style addressing
//! MinIO, Garage and Ceph need; and no second HTTP/TLS tree in the build. rustic calls a
//! backend from its own threads, so every call is a `block_on` on the runtime the repo was
//! opened in (never from one of that runtime's workers: the repo is used from blocking tasks).

use bytes::Bytes;
use rustic_core::{BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend};

pub mod immutable;
mod object_lock;
pub mod repair;

use super::location::S3Location;
use crate::objstore::{ObjStoreError, ObjectStore, PutOptions};

pub struct S3Store {
    store: ObjectStore,
    bucket: String,
    prefix: String,
    handle: tokio::runtime::Handle,
    location: String,
    /// Object lock state, for an immutable repository ([`immutable`]).
    pub(crate) locked: Option<immutable::Locked>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location)
    }
}

fn err(what: &str, key: &str, e: ObjStoreError) -> Box<RusticError> {
    RusticError::with_source(ErrorKind::Backend, "{what} {key}", e)
        .attach_context("what", what.to_string())
        .attach_context("key", key.to_string())
}

impl S3Store {
    pub fn new(loc: &S3Location, handle: tokio::runtime::Handle) -> Result<Self, ObjStoreError> {
        Ok(Self {
            store: ObjectStore::new(loc.s3.clone())?,
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            handle,
            location: super::Location::S3(Box::new(loc.clone())).describe(),
            locked: loc.immutable.map(immutable::Locked::new),
        })
    }

    fn base(&self) -> String {
        if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
    }

    /// The object key of a repository file.
    pub fn key(&self, tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => format!("{}config", self.base()),
            FileType::Pack => format!("{}data/{}/{}", self.base(), &hex[..2], hex.as_str()),
            other => format!("{}{}/{}", self.base(), other.dirname(), hex.as_str()),
        }
    }

    /// Key of a file in `dir` (`locks`), for what rustic's file types do not cover.
    pub fn key_in(&self, dir: &str, name: &str) -> String {
        format!("{}{dir}/{name}", self.base())
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.store
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `(name, size)` of every file under `dir/` (one level of `data/xx/` for packs).
    pub fn list_dir(&self, dir: &str) -> Result<Vec<(String, u64)>, ObjStoreError> {
        let prefix = format!("{}{dir}/", self.base());
        let listed = self.block_on(self.store.list_all(&self.bucket, &prefix))?;
        Ok(listed.into_iter().filter_map(|o| o.key.rsplit('/').next().map(|n| (n.to_string(), o.size))).collect())
    }

    pub fn read_key(&self, key: &str) -> Result<Bytes, ObjStoreError> {
        self.block_on(async { self.store.get_bytes(&self.bucket, key).await.map(|(_, b)| b) })
    }

    pub fn write_key(&self, key: &str, data: Bytes) -> Result<(), ObjStoreError> {
        let opts = PutOptions { bucket_owner_full_control: self.is_immutable(), ..Default::default() };
        self.block_on(self.store.put_checked(&self.bucket, key, data, &opts)).and_then(|up| {
            if up.etag_confirms() == Some(false) {
                return Err(ObjStoreError::Protocol {
                    op: "PutObject".into(),
                    target: format!("{}/{key}", self.bucket),
                    detail: format!("stored with ETag {}, its bytes give {}", up.etag, up.expected_etag),
                });
            }
            Ok(())
        })
    }

    /// Whether the repository's files are kept by object lock.
    pub fn is_immutable(&self) -> bool {
        self.locked.is_some()
    }

    /// Removes a file that is not a repository file (a lock). In an immutable repository its
    /// versions are deleted; one that cannot be (a bucket default retention held it) is
    /// hidden behind a delete marker instead, so a lock never stays in the way.
    pub fn remove_key(&self, key: &str) -> Result<(), ObjStoreError> {
        if self.is_immutable() && self.remove_all_versions(key, false) {
            return Ok(());
        }
        self.block_on(self.store.delete_object(&self.bucket, key))
    }
}

impl ReadBackend for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if self.is_immutable() {
            if tpe == FileType::Config {
                return match self.locked_has_config() {
                    Ok(Some(size)) => Ok(vec![(Id::default(), u32::try_from(size).unwrap_or(u32::MAX))]),
                    Ok(None) | Err(ObjStoreError::NoSuchBucket { .. }) => Ok(Vec::new()),
                    Err(e) => Err(err("cannot look for", "config", e)),
                };
            }
            return match self.locked_list(tpe) {
                Ok(l) => Ok(l),
                Err(ObjStoreError::NoSuchBucket { .. }) => Ok(Vec::new()),
                Err(e) => Err(err("cannot list", tpe.dirname(), e)),
            };
        }
        if tpe == FileType::Config {
            let key = self.key(FileType::Config, &Id::default());
            return match self.block_on(self.store.head_object(&self.bucket, &key)) {
                Ok(h) => Ok(vec![(Id::default(), u32::try_from(h.size).unwrap_or(u32::MAX))]),
                Err(ObjStoreError::NoSuchKey { .. }) | Err(ObjStoreError::NoSuchBucket { .. }) => Ok(Vec::new()),
                Err(ObjStoreError::Http { status: 404, .. }) => Ok(Vec::new()),
                Err(e) => Err(err("cannot look for", &key, e)),
            };
        }
        let files = match self.list_dir(tpe.dirname()) {
            Ok(f) => f,
            Err(ObjStoreError::NoSuchBucket { .. }) => Vec::new(),
            Err(e) => return Err(err("cannot list", tpe.dirname(), e)),
        };
        Ok(files
            .into_iter()
            .filter(|(n, _)| n.len() == 64)
            .filter_map(|(n, size)| n.parse::<Id>().ok().map(|id| (id, u32::try_from(size).unwrap_or(u32::MAX))))
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        if self.is_immutable() {
            return self.locked_read(tpe, id).map_err(|e| err("cannot read", &key, e));
        }
        self.read_key(&key).map_err(|e| err("cannot read", &key, e))
    }

    fn read_partial(&self, tpe: FileType, id: &Id, _cacheable: bool, offset: u32, length: u32) -> RusticResult<Bytes> {
        let key = self.key(tpe, id);
        if self.is_immutable() {
            return self
                .locked_read_range(tpe, id, offset.into(), length.into())
                .map_err(|e| err("cannot read", &key, e));
        }
        self.block_on(self.store.get_range(&self.bucket, &key, offset.into(), length.into()))
            .map_err(|e| err("cannot read", &key, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.key(tpe, id)
    }
}

impl WriteBackend for S3Store {
    fn create(&self) -> RusticResult<()> {
        if self.is_immutable() {
            return self.ensure_object_lock().map_err(|reason| {
                RusticError::new(ErrorKind::Backend, "{reason}").attach_context("reason", reason.clone())
            });
        }
        let exists = self
            .block_on(self.store.bucket_exists(&self.bucket))
            .map_err(|e| err("cannot look for bucket", &self.bucket, e))?;
        if !exists {
            self.block_on(self.store.create_bucket(&self.bucket))
                .map_err(|e| err("cannot create bucket", &self.bucket, e))?;
        }
        Ok(())
    }

    fn write_bytes(&self, tpe: FileType, id: &Id, _cacheable: bool, content: BytesList) -> RusticResult<()> {
        let key = self.key(tpe, id);
        let parts = content.into_vec();
        let data = if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            let mut buf = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in parts {
                buf.extend_from_slice(&p);
            }
            Bytes::from(buf)
        };
        if self.is_immutable() {
            return self.locked_write(tpe, id, data).map_err(|e| err("cannot write", &key, e));
        }
        self.write_key(&key, data).map_err(|e| err("cannot write", &key, e))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let key = self.key(tpe, id);
        if self.is_immutable() {
            // What is still retained stays, reported as held; never a failure half-way.
            // Except an index file: prune deletes the old index files before the packs they
            // name, and one left behind must stop it there (prune keeps the index files it
            // knows are retained; this is one it could not know of, or a failed delete).
            let gone = self.remove_all_versions(&key, true);
            if !gone && tpe == FileType::Index {
                return Err(err(
                    "cannot remove",
                    &key,
                    ObjStoreError::Protocol {
                        op: "DeleteObjectVersion".into(),
                        target: key.clone(),
                        detail: "a version of this index file is still there (retained, or the delete failed); prune stops before deleting the packs it names: run it again later".into(),
                    },
                ));
            }
            return Ok(());
        }
        self.remove_key(&key).map_err(|e| err("cannot remove", &key, e))
    }
}
