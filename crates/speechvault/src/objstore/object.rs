//! Objects: HEAD, GET, PUT, DELETE and multipart uploads.
//!
//! Writes carry `Content-MD5`, so the server itself rejects a body damaged on the way, and
//! every upload returns the ETag the server should have given it (the MD5 of the body, or for
//! a multipart upload the MD5 of the parts' MD5s with the part count), so a caller can check
//! the stored object without reading it back.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response};
use hyper::body::Incoming;
use md5::{Digest as _, Md5};

use super::body::ObjectBody;
use super::client::{Call, backoff, unquote};
use super::{MULTIPART_THRESHOLD, ObjStoreError, ObjectHead, ObjectInfo, ObjectStore, PART_SIZE, PutOptions, Result};

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The ETag the server answered with.
    pub etag: String,
    /// The ETag an S3 server computes for these bytes sent this way (MD5-based).
    pub expected_etag: String,
    pub size: u64,
    /// The version the server gave it, in a versioned bucket (single PUTs only).
    pub version_id: Option<String>,
}

impl Uploaded {
    /// Whether the server's ETag confirms the bytes. Servers that do not use MD5 ETags (or
    /// encrypt with KMS) give something else: then this says nothing either way.
    pub fn etag_confirms(&self) -> Option<bool> {
        let looks_md5 = |e: &str| {
            let base = e.split('-').next().unwrap_or("");
            base.len() == 32 && base.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !looks_md5(&self.etag) {
            return None;
        }
        Some(self.etag.eq_ignore_ascii_case(&self.expected_etag))
    }
}

impl ObjectStore {
    /// The ETag an upload's answer carries.
    pub(crate) fn etag_of(resp: &Response<Incoming>) -> String {
        resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(unquote).unwrap_or_default()
    }

    /// What a HEAD or GET answer says about the object. An attribute in a form that cannot be
    /// kept as it is fails, naming the object ([`ObjStoreError::Protocol`]).
    pub(crate) fn head_from(resp: &Response<Incoming>, call: &Call<'_>) -> Result<ObjectHead> {
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut metadata = BTreeMap::new();
        for (name, value) in h {
            if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-")
                && let Ok(text) = std::str::from_utf8(value.as_bytes())
            {
                metadata.insert(meta.to_string(), text.to_string());
            }
        }
        let (attrs, tag_count) = super::attributes::from_headers(h).map_err(|detail| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail: format!("an attribute cannot be kept as it is: {detail}"),
        })?;
        // A ranged answer's Content-Length is the range's; the object's size is in Content-Range.
        let size = get("content-range")
            .and_then(|r| r.rsplit('/').next().and_then(|t| t.trim().parse().ok()))
            .or_else(|| get("content-length").and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        Ok(ObjectHead {
            size,
            etag: get("etag").map(|e| unquote(&e)).unwrap_or_default(),
            last_modified: get("last-modified"),
            content_type: get("content-type"),
            metadata,
            attrs,
            tag_count,
        })
    }

    /// Size, ETag, content type and user metadata of one object.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectHead> {
        super::validate_bucket_name(bucket)?;
        let call =
            Call::new("HeadObject", Method::HEAD, Some(bucket), Some(key)).header("x-amz-checksum-mode", "ENABLED");
        let resp = self.send(&call).await?;
        Self::head_from(&resp, &call)
    }

    /// Starts reading an object. With `expect`, the server must still hold exactly that
    /// version: the request carries `If-Match` on the listed ETag, and the answer's ETag and
    /// size are checked too (some servers ignore `If-Match`). Otherwise the read fails with
    /// [`ObjStoreError::Changed`].
    pub async fn get_object(&self, bucket: &str, key: &str, expect: Option<&ObjectInfo>) -> Result<ObjectBody> {
        super::validate_bucket_name(bucket)?;
        // Checksums come only when asked for; servers without them ignore the header.
        let mut call =
            Call::new("GetObject", Method::GET, Some(bucket), Some(key)).header("x-amz-checksum-mode", "ENABLED");
        if let Some(info) = expect {
            call = call.header("if-match", &format!("\"{}\"", info.etag));
        }
        let resp = self.send(&call).await?;
        let head = Self::head_from(&resp, &call)?;
        if let Some(info) = expect {
            let changed = |detail: String| ObjStoreError::Changed { bucket: bucket.into(), key: key.into(), detail };
            if head.etag != info.etag {
                return Err(changed(format!("listed with ETag {}, now {}", info.etag, head.etag)));
            }
            if head.size != info.size {
                return Err(changed(format!("listed with {} bytes, now {} bytes", info.size, head.size)));
            }
        }
        Ok(ObjectBody::new(self.clone(), bucket, key, head, resp))
    }

    /// Reads `length` bytes at `offset` of an object into memory (a ranged GET; a server that
    /// ignores Range is handled by skipping). Fails if fewer bytes come back.
    pub async fn get_range(&self, bucket: &str, key: &str, offset: u64, length: u64) -> Result<Bytes> {
        self.get_range_of(bucket, key, None, offset, length).await
    }

    /// [`ObjectStore::get_range`] of one version (`None`: the newest).
    pub(crate) async fn get_range_of(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<Bytes> {
        super::validate_bucket_name(bucket)?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let mut call = Call::new("GetObject", Method::GET, Some(bucket), Some(key))
            .header("range", &format!("bytes={offset}-{}", offset + length - 1));
        if let Some(v) = version {
            call = call.query("versionId", v);
        }
        let (headers, body) = self.send_read(&call).await?;
        let ranged = headers.contains_key("content-range");
        let data = if ranged { body } else { body.slice((offset as usize).min(body.len())..) };
        if (data.len() as u64) < length {
            return Err(ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail: format!("asked for {length} bytes at {offset}, got {}", data.len()),
            });
        }
        Ok(data.slice(..length as usize))
    }

    /// Reads a whole object into memory; for small objects and tests.
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<(ObjectHead, Bytes)> {
        let mut body = self.get_object(bucket, key, None).await?;
        let mut buf = Vec::with_capacity(body.head.size as usize);
        while let Some(chunk) = body.chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok((body.head.clone(), Bytes::from(buf)))
    }

    /// The headers that store `opts` with the object. `whole_body`: the request carries the
    /// whole object (a single PUT), so its whole-object checksums can go with it.
    fn put_headers<'a>(mut call: Call<'a>, opts: &PutOptions, whole_body: bool) -> Result<Call<'a>> {
        if let Some(ct) = &opts.content_type {
            call = call.header("content-type", ct);
        }
        for (k, v) in &opts.metadata {
            call = call.header(&format!("x-amz-meta-{k}"), v);
        }
        let extra = super::attributes::to_headers(&opts.attrs, whole_body)
            .map_err(|detail| ObjStoreError::Protocol { op: call.op.into(), target: call.target(), detail })?;
        for (k, v) in extra {
            call = call.header_bytes(&k, &v);
        }
        if opts.if_none_match {
            call = call.header("if-none-match", "*");
        }
        if opts.bucket_owner_full_control {
            call = call.header("x-amz-acl", "bucket-owner-full-control");
        }
        Ok(call)
    }

    /// The tags of an object (`GetObjectTagging`).
    pub async fn get_object_tagging(&self, bucket: &str, key: &str) -> Result<BTreeMap<String, String>> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("GetObjectTagging", Method::GET, Some(bucket), Some(key)).query("tagging", "");
        let root = self.xml_of(&call).await?;
        super::attributes::parse_tagging(&root).map_err(|detail| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail,
        })
    }

    /// HEAD, with the tags when the answer counts some or `want_tags` (a HEAD answers no tag
    /// count on AWS): every attribute a restore sets.
    pub async fn head_with_tags(&self, bucket: &str, key: &str, want_tags: bool) -> Result<ObjectHead> {
        let mut head = self.head_object(bucket, key).await?;
        if head.tag_count > 0 || want_tags {
            head.attrs.tags = self.get_object_tagging(bucket, key).await?;
        }
        Ok(head)
    }

    /// Stores a whole object in one request. Returns its ETag.
    pub async fn put_object(&self, bucket: &str, key: &str, body: Bytes, opts: &PutOptions) -> Result<String> {
        Ok(self.put_checked(bucket, key, body, opts).await?.etag)
    }

    /// Stores a whole object with `Content-MD5`; returns what was stored.
    pub async fn put_checked(&self, bucket: &str, key: &str, body: Bytes, opts: &PutOptions) -> Result<Uploaded> {
        super::validate_bucket_name(bucket)?;
        let digest = Md5::digest(&body);
        let size = body.len() as u64;
        let call = Self::put_headers(Call::new("PutObject", Method::PUT, Some(bucket), Some(key)), opts, true)?
            .header("content-md5", &crate::support::encoding::base64(&digest))
            .body(body);
        let resp = self.send(&call).await?;
        let version_id = resp.headers().get("x-amz-version-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Uploaded { etag: Self::etag_of(&resp), expected_etag: hex::encode(digest), size, version_id })
    }

    fn register(&self, upload_id: &str, bucket: &str, key: &str) {
        if let Ok(mut u) = self.inner.uploads.lock() {
            u.insert(upload_id.to_string(), (bucket.to_string(), key.to_string()));
        }
    }

    fn unregister(&self, upload_id: &str) {
        if let Ok(mut u) = self.inner.uploads.lock() {
            u.remove(upload_id);
        }
    }

    /// Starts a multipart upload and returns its id. Creating is not idempotent: when the
    /// answer is lost, uploads for the key that the server started since are aborted before
    /// trying again, so no orphan is left.
    pub async fn create_multipart(&self, bucket: &str, key: &str, opts: &PutOptions) -> Result<String> {
        super::validate_bucket_name(bucket)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = jiff::Timestamp::now();
            let call = Self::put_headers(
                Call::new("CreateMultipartUpload", Method::POST, Some(bucket), Some(key)).query("uploads", ""),
                opts,
                false,
            )?;
            let err = match self.xml_of(&call).await {
                Ok(root) => {
                    let id =
                        root.text_of("UploadId").map(str::to_string).filter(|s| !s.is_empty()).ok_or_else(|| {
                            ObjStoreError::Protocol {
                                op: call.op.into(),
                                target: call.target(),
                                detail: "no UploadId in answer".into(),
                            }
                        })?;
                    self.register(&id, bucket, key);
                    return Ok(id);
                }
                Err(e) => e,
            };
            if !Self::ambiguous(&err) || attempt >= self.inner.cfg.max_attempts {
                return Err(err);
            }
            tracing::warn!(bucket, key, error = %err, "creating a multipart upload may have succeeded; reconciling");
            self.abort_unknown_uploads(bucket, key, started).await;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Whether a failed non-idempotent request may still have been carried out.
    fn ambiguous(e: &ObjStoreError) -> bool {
        match e {
            ObjStoreError::Timeout { .. } | ObjStoreError::Unreachable { .. } => true,
            ObjStoreError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Aborts uploads of `key` started since `since` (minus clock slack) that are not ours.
    async fn abort_unknown_uploads(&self, bucket: &str, key: &str, since: jiff::Timestamp) {
        let ours: Vec<String> = self.inner.uploads.lock().map(|u| u.keys().cloned().collect()).unwrap_or_default();
        let slack = since.checked_sub(jiff::SignedDuration::from_secs(300)).unwrap_or(since);
        match self.list_multipart_uploads(bucket, key).await {
            Ok(list) => {
                for u in list.into_iter().filter(|u| u.key == key && !ours.contains(&u.upload_id)) {
                    let recent = u.initiated.parse::<jiff::Timestamp>().map_or(true, |t| t >= slack);
                    if recent && let Err(e) = self.abort_multipart(bucket, key, &u.upload_id).await {
                        tracing::warn!(bucket, key, upload = %u.upload_id, error = %e, "cannot abort a stray upload");
                    }
                }
            }
            Err(e) => tracing::warn!(bucket, key, error = %e, "cannot list multipart uploads to reconcile"),
        }
    }

    /// Uploads part `number` (1-based) with `Content-MD5`; returns its ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String> {
        let md5: [u8; 16] = Md5::digest(&body).into();
        self.upload_part_md5(bucket, key, upload_id, number, body, &md5).await
    }

    /// [`ObjectStore::upload_part`] with the body's MD5 already known (one pass over the bytes).
    async fn upload_part_md5(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
        md5: &[u8; 16],
    ) -> Result<String> {
        let call = Call::new("UploadPart", Method::PUT, Some(bucket), Some(key))
            .query("partNumber", &number.to_string())
            .query("uploadId", upload_id)
            .header("content-md5", &crate::support::encoding::base64(md5))
            .body(body);
        let resp = self.send(&call).await?;
        let etag = Self::etag_of(&resp);
        if etag.is_empty() {
            return Err(ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail: "part has no ETag".into(),
            });
        }
        Ok(etag)
    }

    /// Completes a multipart upload from `(part number, ETag)` pairs; returns the object's
    /// ETag. Completing is not idempotent: when the answer is lost, the outcome is read from
    /// the server (the upload is gone and the object has the expected size) before retrying.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        expected_size: Option<u64>,
    ) -> Result<String> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>",
                super::xml::escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let mut attempt = 0;
        let started = Instant::now();
        loop {
            attempt += 1;
            let call = Call::new("CompleteMultipartUpload", Method::POST, Some(bucket), Some(key))
                .query("uploadId", upload_id)
                .header("content-type", "application/xml")
                .body(Bytes::from(xml.clone()));
            let err = match self.xml_of(&call).await {
                Ok(root) => {
                    self.unregister(upload_id);
                    return Ok(unquote(root.text_of("ETag").unwrap_or_default()));
                }
                Err(e) => e,
            };
            let gone = matches!(&err, ObjStoreError::Http { code, .. } if code == "NoSuchUpload");
            if !(Self::ambiguous(&err) || (gone && attempt > 1)) || attempt >= self.inner.cfg.max_attempts {
                return Err(err);
            }
            tracing::warn!(bucket, key, error = %err, "completing a multipart upload may have succeeded; reconciling");
            if let Some(etag) = self.completed_upload(bucket, key, upload_id, expected_size, started).await {
                self.unregister(upload_id);
                return Ok(etag);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// After a lost CompleteMultipartUpload answer: the object's ETag when the upload is no
    /// longer open and the object is there with the expected size and a fresh date.
    async fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        expected_size: Option<u64>,
        started: Instant,
    ) -> Option<String> {
        let open = self.list_multipart_uploads(bucket, key).await.ok()?.iter().any(|u| u.upload_id == upload_id);
        if open {
            return None;
        }
        let head = self.head_object(bucket, key).await.ok()?;
        let fresh = head.last_modified.as_deref().and_then(|d| jiff::fmt::rfc2822::parse(d).ok()).is_none_or(|t| {
            let age = jiff::Timestamp::now().duration_since(t.timestamp());
            age.as_secs() <= started.elapsed().as_secs() as i64 + 300
        });
        (expected_size.is_none_or(|s| s == head.size) && fresh).then_some(head.etag)
    }

    /// Abandons a multipart upload so its parts do not linger on the server.
    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let call =
            Call::new("AbortMultipartUpload", Method::DELETE, Some(bucket), Some(key)).query("uploadId", upload_id);
        let r = match self.send(&call).await {
            Ok(_) => Ok(()),
            Err(ObjStoreError::Http { code, .. }) if code == "NoSuchUpload" => Ok(()),
            Err(e) => Err(e),
        };
        if r.is_ok() {
            self.unregister(upload_id);
        }
        r
    }

    /// Aborts every multipart upload this client started and did not finish (after an error
    /// or a cancelled task). Returns how many were aborted.
    pub async fn abort_pending_uploads(&self) -> usize {
        let pending: Vec<(String, (String, String))> = self
            .inner
            .uploads
            .lock()
            .map(|u| u.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut n = 0;
        for (id, (bucket, key)) in pending {
            match self.abort_multipart(&bucket, &key, &id).await {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(bucket, key, error = %e, "could not abort multipart upload"),
            }
        }
        n
    }

    /// Deletes one object (no error when it is already gone).
    /// Deletes one version of an object (in a versioned bucket a plain delete only hides it).
    pub async fn delete_object_version(&self, bucket: &str, key: &str, version: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("DeleteObject", Method::DELETE, Some(bucket), Some(key)).query("versionId", version);
        match self.send(&call).await {
            Ok(_) | Err(ObjStoreError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes one version, bypassing governance retention (allowed only to keys with
    /// `s3:BypassGovernanceRetention`; compliance retention is never bypassed).
    pub async fn delete_object_version_bypassing(&self, bucket: &str, key: &str, version: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("DeleteObject", Method::DELETE, Some(bucket), Some(key))
            .query("versionId", version)
            .header("x-amz-bypass-governance-retention", "true");
        self.send(&call).await.map(|_| ())
    }

    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        match self.send(&Call::new("DeleteObject", Method::DELETE, Some(bucket), Some(key))).await {
            Ok(_) | Err(ObjStoreError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the given keys, `parallel` requests at a time.
    pub async fn delete_keys(&self, bucket: &str, keys: &[String], parallel: usize) -> Result<u64> {
        use futures_util::StreamExt;
        let mut deletes = futures_util::stream::iter(keys.iter().map(|k| self.delete_object(bucket, k)))
            .buffer_unordered(parallel.max(1));
        let mut n = 0;
        while let Some(r) = deletes.next().await {
            r?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes every object under `prefix`, `parallel` requests at a time; returns how many.
    pub async fn delete_all(&self, bucket: &str, prefix: &str, parallel: usize) -> Result<u64> {
        let keys: Vec<String> = self.list_all(bucket, prefix).await?.into_iter().map(|o| o.key).collect();
        self.delete_keys(bucket, &keys, parallel).await
    }

    /// Reserves `bytes` of the store's upload memory (see [`UPLOAD_MEMORY`]); waits until
    /// other uploads have given back enough.
    async fn reserve(&self, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let units = bytes.div_ceil(MEMORY_UNIT).clamp(1, UPLOAD_MEMORY / MEMORY_UNIT) as u32;
        self.inner.upload_memory.clone().acquire_many_owned(units).await.map_err(|_| ObjStoreError::Protocol {
            op: "Upload".into(),
            target: self.endpoint().to_string(),
            detail: "the upload memory budget was closed".into(),
        })
    }

    /// Uploads an object whose bytes arrive as chunks (of any size). `size` is the object's
    /// size when known: up to [`MULTIPART_THRESHOLD`] it goes up in one PUT from a buffer of
    /// exactly that size; above, in parts of [`part_size_for`] (within S3's 10,000 parts),
    /// up to [`PARTS_IN_FLIGHT`] on their way at once so a large object keeps several
    /// connections busy. A stream that ends short of `size` or runs past it fails. With no
    /// size, an object that fits one part goes up in one PUT and a larger one multipart.
    ///
    /// Memory: every buffer (the part being filled, each part on its way) is allocated at its
    /// final size and holds that much of the store's upload memory until sent, so any number
    /// of concurrent uploads stays within [`UPLOAD_MEMORY`] (a part larger than the whole
    /// budget, for objects over about 1.9 TB, holds all of it and goes alone). No upload
    /// waits for memory while holding some, so uploads cannot starve each other for good.
    ///
    /// On failure a started multipart upload is aborted, so nothing half-written is left
    /// visible; if the task is cancelled instead, the upload stays registered for
    /// [`ObjectStore::abort_pending_uploads`].
    pub async fn upload_stream<S>(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        size: Option<u64>,
        mut chunks: S,
    ) -> Result<Uploaded>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        use futures_util::StreamExt;
        let target = format!("{bucket}/{key}");
        let part_size = part_size_for(size);
        // The one-PUT buffer of a small object of known size is that size; otherwise a part.
        let capacity = match size {
            Some(s) if s <= MULTIPART_THRESHOLD => s as usize,
            _ => part_size,
        };
        let mut buf: Vec<u8> = Vec::new();
        // The memory `buf` holds; taken before it is allocated, handed to the part it becomes.
        let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let mut upload: Option<String> = None;
        let mut parts: Vec<(u32, String)> = Vec::new();
        let mut in_flight: tokio::task::JoinSet<Result<(u32, String)>> = tokio::task::JoinSet::new();
        let mut part_md5s: Vec<u8> = Vec::new();
        let mut total = 0u64;
        let protocol = |detail: String| ObjStoreError::Protocol { op: "Upload".into(), target: target.clone(), detail };
        let result: Result<Uploaded> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| protocol(format!("source failed: {e}")))?;
                let mut rest: &[u8] = &chunk;
                while !rest.is_empty() {
                    if capacity == 0 {
                        return Err(protocol("the source sent bytes for an empty object".into()));
                    }
                    if buf.len() == capacity {
                        // A full buffer and more to come: it becomes a part.
                        if size.is_some_and(|s| s <= MULTIPART_THRESHOLD) {
                            return Err(protocol(format!("the source sent more than the expected {capacity} bytes")));
                        }
                        let id = match &upload {
                            Some(id) => id.clone(),
                            None => {
                                let id = self.create_multipart(bucket, key, opts).await?;
                                upload = Some(id.clone());
                                id
                            }
                        };
                        self.send_part(
                            &mut in_flight,
                            &mut parts,
                            &mut part_md5s,
                            (bucket, key, &id),
                            &mut buf,
                            &mut held,
                        )
                        .await?;
                    }
                    if held.is_none() {
                        held = Some(self.reserve(capacity).await?);
                        buf = Vec::with_capacity(capacity);
                    }
                    let take = rest.len().min(capacity - buf.len());
                    buf.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    total += take as u64;
                }
            }
            if let Some(expected) = size
                && expected != total
            {
                return Err(protocol(format!("the source ended after {total} of {expected} bytes")));
            }
            let Some(id) = upload.clone() else {
                let body = Bytes::from(std::mem::take(&mut buf));
                let put = self.put_checked(bucket, key, body, opts).await;
                drop(held.take());
                return put;
            };
            self.send_part(&mut in_flight, &mut parts, &mut part_md5s, (bucket, key, &id), &mut buf, &mut held).await?;
            while !in_flight.is_empty() {
                collect_part(&mut in_flight, &mut parts, &target).await?;
            }
            parts.sort_by_key(|(n, _)| *n);
            let etag = self.complete_multipart(bucket, key, &id, &parts, Some(total)).await?;
            let expected = format!("{}-{}", hex::encode(Md5::digest(&part_md5s)), parts.len());
            Ok(Uploaded { etag, expected_etag: expected, size: total, version_id: None })
        }
        .await;
        if result.is_err() {
            // Parts still on their way are stopped before the upload is abandoned.
            in_flight.shutdown().await;
            if let Some(id) = &upload
                && let Err(e) = self.abort_multipart(bucket, key, id).await
            {
                tracing::warn!(bucket, key, error = %e, "could not abort multipart upload");
            }
        }
        result
    }

    /// Sends `buf` as the next part of upload `id` (with its memory), once fewer than
    /// [`PARTS_IN_FLIGHT`] parts are on their way; fails past S3's 10,000 parts.
    #[allow(clippy::too_many_arguments)]
    async fn send_part(
        &self,
        in_flight: &mut tokio::task::JoinSet<Result<(u32, String)>>,
        parts: &mut Vec<(u32, String)>,
        part_md5s: &mut Vec<u8>,
        (bucket, key, id): (&str, &str, &str),
        buf: &mut Vec<u8>,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<()> {
        let target = format!("{bucket}/{key}");
        let n = (part_md5s.len() / 16 + 1) as u32;
        if u64::from(n) > MAX_PARTS {
            return Err(ObjStoreError::Protocol {
                op: "UploadPart".into(),
                target,
                detail: format!(
                    "the object needs more than {MAX_PARTS} parts (S3's limit): it is larger than expected"
                ),
            });
        }
        while in_flight.len() >= PARTS_IN_FLIGHT {
            collect_part(in_flight, parts, &target).await?;
        }
        let part = Bytes::from(std::mem::take(buf));
        let md5: [u8; 16] = Md5::digest(&part).into();
        part_md5s.extend_from_slice(&md5);
        let (store, bucket, key, id, permit) =
            (self.clone(), bucket.to_string(), key.to_string(), id.to_string(), held.take());
        in_flight.spawn(async move {
            let _memory = permit;
            let etag = store.upload_part_md5(&bucket, &key, &id, n, part, &md5).await?;
            Ok((n, etag))
        });
        Ok(())
    }
}

/// Parts of one multipart upload on their way at once.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Memory all uploads of one store may hold in buffers at once: the part being filled and
/// the parts on their way, of every object. 16 objects of 16 MiB buffered side by side made
/// the restore's peak; the budget keeps it bounded whatever `--parallel` is.
pub const UPLOAD_MEMORY: usize = 192 << 20;

/// The upload memory's unit of account.
pub(crate) const MEMORY_UNIT: usize = 64 << 10;

/// S3 allows at most 10,000 parts per upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for an object of `size` bytes: [`PART_SIZE`], or larger (whole MiB) when
/// the object would otherwise need more than 10,000 parts.
pub fn part_size_for(size: Option<u64>) -> usize {
    let needed = size.unwrap_or(0).div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    (needed as usize).max(PART_SIZE)
}

/// Waits for one part on its way and records its ETag.
async fn collect_part(
    in_flight: &mut tokio::task::JoinSet<Result<(u32, String)>>,
    parts: &mut Vec<(u32, String)>,
    target: &str,
) -> Result<()> {
    match in_flight.join_next().await {
        Some(Ok(done)) => {
            parts.push(done?);
            Ok(())
        }
        Some(Err(e)) => Err(ObjStoreError::Protocol {
            op: "UploadPart".into(),
            target: target.to_string(),
            detail: format!("the part's task ended: {e}"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_confirm_only_when_they_look_like_md5() {
        let u = |etag: &str, exp: &str| Uploaded {
            etag: etag.into(),
            expected_etag: exp.into(),
            size: 1,
            version_id: None,
        };
        let md5 = "0cc175b9c0f1b6a831c399e269772661";
        assert_eq!(u(md5, md5).etag_confirms(), Some(true));
        assert_eq!(u(&md5.to_uppercase(), md5).etag_confirms(), Some(true));
        assert_eq!(u("0cc175b9c0f1b6a831c399e269772662", md5).etag_confirms(), Some(false));
        assert_eq!(u("abc", md5).etag_confirms(), None);
        let mp = format!("{md5}-3");
        assert_eq!(u(&mp, &mp).etag_confirms(), Some(true));
    }

    #[test]
    fn parts_stay_within_ten_thousand() {
        assert_eq!(part_size_for(None), PART_SIZE);
        assert_eq!(part_size_for(Some(1)), PART_SIZE);
        assert_eq!(part_size_for(Some(PART_SIZE as u64 * MAX_PARTS)), PART_SIZE);
        for size in [PART_SIZE as u64 * MAX_PARTS + 1, 5 << 40, 123_456_789_012_345] {
            let part = part_size_for(Some(size)) as u64;
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size}: {part}");
            assert_eq!(part % (1 << 20), 0);
        }
    }
}
