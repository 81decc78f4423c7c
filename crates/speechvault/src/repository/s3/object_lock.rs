//! What `init` and opening make sure of before an immutable repository is used: the bucket
//! has object lock, the server enforces it (proved with a probe, never assumed), and it keeps
//! versions.

use bytes::Bytes;
use rustic_core::{FileType, Id};

use super::S3Store;
use super::immutable::refused;
use crate::objstore::{ObjStoreError, PutOptions};

impl S3Store {
    /// Makes sure the repository bucket has object lock: creates it so when missing; refuses
    /// an existing bucket without it, and a server that does not implement it, naming its
    /// answer.
    pub(crate) fn ensure_object_lock(&self) -> Result<(), String> {
        let (store, bucket) = (self.objects(), self.bucket());
        let exists = self.block_on(store.bucket_exists(bucket)).map_err(|e| e.to_string())?;
        if !exists {
            self.block_on(store.create_bucket_with_object_lock(bucket))
                .map_err(|e| format!("cannot create bucket {bucket:?} with object lock: {e}"))?;
        }
        let checked = self.check_object_lock(exists);
        if checked.is_err() && !exists {
            // Refused: leave nothing behind, not even the bucket made for it.
            if let Err(e) = self.block_on(store.delete_all(bucket, "", 4)) {
                tracing::debug!(error = %e, "cannot empty the bucket created for the refused repository");
            }
            if let Err(e) = self.block_on(store.delete_bucket(bucket)) {
                tracing::warn!(bucket, error = %e, "cannot remove the bucket created for the refused repository");
            }
        }
        checked
    }

    /// For an immutable repository: refuses a server that keeps no versions (it could not
    /// have held a retention), naming its answer. Nothing for other repositories.
    pub(crate) fn check_versions(&self) -> Result<(), String> {
        if !self.is_immutable() {
            return Ok(());
        }
        match self.block_on(self.objects().list_versions(self.bucket(), &self.key(FileType::Config, &Id::default()))) {
            Err(ObjStoreError::Http { status, code, message, .. }) if status == 501 || code == "NotImplemented" => {
                Err(format!(
                    "the S3 server at {} does not list object versions (HTTP {status} {code}: {message}): the repository is configured immutable, which needs S3 Object Lock",
                    self.objects().endpoint()
                ))
            }
            _ => Ok(()),
        }
    }

    fn check_object_lock(&self, exists: bool) -> Result<(), String> {
        use crate::objstore::Setting;
        let (store, bucket) = (self.objects(), self.bucket());
        match self.block_on(store.get_bucket_setting(bucket, "object-lock")).map_err(|e| e.to_string())? {
            Setting::Set(doc) if doc.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") => {
                self.probe_enforcement()
            }
            other => {
                let answer = match &other {
                    Setting::Set(doc) => format!("its object-lock configuration is {doc}"),
                    Setting::Unset => "it has no object-lock configuration".to_string(),
                    Setting::NotSupported(why) | Setting::Unreadable(why) => {
                        format!("the server answered GetObjectLockConfiguration with {why}")
                    }
                };
                let supported = !matches!(other, Setting::NotSupported(_));
                Err(if !exists && !supported {
                    format!(
                        "the S3 server at {} does not implement S3 Object Lock ({answer}): an immutable repository needs a server that does (Ceph RGW, MinIO, AWS S3), or remove [immutable] from the repository's section",
                        store.endpoint()
                    )
                } else if !exists {
                    format!(
                        "bucket {bucket:?} was created but object lock is not enabled ({answer}): the server at {} ignored the request for it",
                        store.endpoint()
                    )
                } else {
                    format!(
                        "bucket {bucket:?} exists without object lock ({answer}); object lock can only be enabled when a bucket is created: name a new bucket in the repository's url and run init again"
                    )
                })
            }
        }
    }

    /// Proves the server enforces retention, never assumes it: a probe object retained for a
    /// few seconds must refuse a version delete (and, in governance mode, a delete that
    /// bypasses governance: if this key may, the repository is not immutable against it).
    fn probe_enforcement(&self) -> Result<(), String> {
        let (store, bucket) = (self.objects(), self.bucket());
        let l = self.locked_state().ok_or("the repository is not immutable")?;
        let key = self.key_in("locks", &format!("speechvault-lock-probe-{}", Id::random().to_hex().as_str()));
        let now = self.server_now().map_err(|e| e.to_string())?;
        let until = now.saturating_add(jiff::SignedDuration::from_secs(3)).unwrap_or(now);
        let mut opts = PutOptions::default();
        opts.attrs.lock_mode = Some(l.policy.mode.header().to_string());
        opts.attrs.lock_retain_until = Some(crate::objstore::versions::retain_date(until));
        let up = self
            .block_on(store.put_checked(bucket, &key, Bytes::from_static(b"probe"), &opts))
            .map_err(|e| format!("cannot write a retained probe object: {e}"))?;
        let Some(version) = up.version_id else {
            self.remove_all_versions(&key, false);
            return Err(format!(
                "the S3 server at {} gave the probe object no version id: it does not keep versions, so it cannot hold a retention",
                store.endpoint()
            ));
        };
        let deleted = self.block_on(store.delete_object_version(bucket, &key, &version));
        match deleted {
            Err(ref e) if refused(e) => {}
            Ok(()) => {
                return Err(format!(
                    "the S3 server at {} accepts object lock but does not enforce it: it deleted a version still retained; an immutable repository needs a server that enforces retention",
                    store.endpoint()
                ));
            }
            Err(e) => return Err(format!("cannot probe the retention of bucket {bucket:?}: {e}")),
        }
        if l.policy.mode == crate::objstore::LockMode::Governance
            && self.block_on(store.delete_object_version_bypassing(bucket, &key, &version)).is_ok()
        {
            tracing::warn!(
                "this key may bypass governance retention: the repository is not immutable against it; use compliance mode, or a key without s3:BypassGovernanceRetention"
            );
        }
        // Wait out the probe's retention and remove it (a leftover would only be a stray
        // version under locks/, which maintenance removes).
        std::thread::sleep(std::time::Duration::from_secs(4));
        if !self.remove_all_versions(&key, false) {
            tracing::debug!(key, "the retention probe is left for maintenance");
        }
        Ok(())
    }
}
