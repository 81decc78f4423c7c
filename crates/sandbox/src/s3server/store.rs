//! The sandbox's object store: the data behind its S3 server.
//!
//! Why not a key-to-path mapping like `s3s-fs`: S3 keys are not paths (`a` and `a/b` are both
//! objects, `..` is an ordinary segment, a key may end in `/` or exceed a file name's length).
//! Here every object lives in files named by the SHA-256 of its key, with a JSON sidecar that
//! holds the key and its metadata, so every valid key is stored exactly and nothing can escape
//! the data directory. The index is kept in memory (a `BTreeMap` per bucket, so listings come
//! out in byte order) and rebuilt from the sidecars at start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest as _, Md5};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

pub(crate) mod attrs;
mod listing;
use attrs::{StoredAttrs, fill_output, from_input};
use listing::{list, to_object, type_by_extension, url_encode_key};

/// What the store remembers about one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjMeta {
    key: String,
    size: u64,
    etag: String,
    /// Unix time in milliseconds.
    modified_ms: i64,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    /// File name of the data, beside the sidecar.
    data: String,
    #[serde(default)]
    attrs: StoredAttrs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    /// Unix time in milliseconds.
    #[serde(default)]
    initiated_ms: i64,
    #[serde(default)]
    attrs: StoredAttrs,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, ObjMeta>>,
    created: HashMap<String, i64>,
}

/// Object storage in one directory, safe for any key.
pub struct DigestStore {
    root: PathBuf,
    state: Mutex<State>,
    counter: AtomicU64,
    behaviour: super::Behaviour,
}

fn internal(e: impl std::fmt::Display) -> s3s::S3Error {
    s3_error!(InternalError, "{e}")
}

fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ts(ms: i64) -> Timestamp {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    Timestamp::from(t)
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(bytes).await?;
    f.sync_data().await?;
    drop(f);
    tokio::fs::rename(&tmp, path).await
}

impl DigestStore {
    /// Opens (or creates) a store under `root` and loads its index.
    pub fn open(root: &Path, behaviour: super::Behaviour) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("buckets"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        let mut state = State::default();
        for entry in std::fs::read_dir(root.join("buckets"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let created = entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            let mut objects = BTreeMap::new();
            for fan in std::fs::read_dir(entry.path())? {
                let fan = fan?;
                for f in std::fs::read_dir(fan.path())? {
                    let p = f?.path();
                    if p.extension().is_some_and(|e| e == "json") {
                        let meta: ObjMeta = serde_json::from_slice(&std::fs::read(&p)?)
                            .map_err(|e| std::io::Error::other(format!("{}: {e}", p.display())))?;
                        objects.insert(meta.key.clone(), meta);
                    }
                }
            }
            state.created.insert(name.clone(), created);
            state.buckets.insert(name, objects);
        }
        // Leftovers of writes cut short by a crash are never referenced; drop them.
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Self { root: root.to_path_buf(), state: Mutex::new(state), counter: AtomicU64::new(0), behaviour })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_dir(&self, bucket: &str, digest: &str) -> PathBuf {
        self.root.join("buckets").join(bucket).join(&digest[..2])
    }

    fn unique(&self) -> String {
        format!("{}-{}-{}", std::process::id(), now_ms(), self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Streams a request body into a private temporary file, returning its path, size and MD5.
    async fn spool(&self, body: StreamingBlob) -> S3Result<(PathBuf, u64, [u8; 16])> {
        let path = self.root.join("tmp").join(self.unique());
        let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(s3_error!(IncompleteBody, "{e}"));
                }
            };
            md5.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        Ok((path, size, md5.finalize().into()))
    }

    /// Makes a spooled file the current version of `key`.
    async fn commit(&self, bucket: &str, key: &str, spooled: &Path, mut meta: ObjMeta) -> S3Result<()> {
        let digest = key_digest(key);
        let dir = self.object_dir(bucket, &digest);
        let mut state = self.state.lock().await;
        let objects = state.buckets.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
        meta.data = format!("{digest}.{}.data", self.unique());
        tokio::fs::rename(spooled, dir.join(&meta.data)).await.map_err(internal)?;
        let json = serde_json::to_vec(&meta).map_err(internal)?;
        write_atomic(&dir.join(format!("{digest}.json")), &json).await.map_err(internal)?;
        if let Some(old) = objects.insert(key.to_string(), meta) {
            let _ = tokio::fs::remove_file(dir.join(old.data)).await;
        }
        Ok(())
    }

    /// Changes an object's sidecar (its tags) without touching its data.
    async fn update_meta(&self, bucket: &str, key: &str, change: impl FnOnce(&mut ObjMeta)) -> S3Result<()> {
        let digest = key_digest(key);
        let dir = self.object_dir(bucket, &digest);
        let mut state = self.state.lock().await;
        let objects = state.buckets.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let meta = objects.get_mut(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        change(meta);
        let json = serde_json::to_vec(&meta).map_err(internal)?;
        write_atomic(&dir.join(format!("{digest}.json")), &json).await.map_err(internal)
    }

    async fn lookup(&self, bucket: &str, key: &str) -> S3Result<ObjMeta> {
        let state = self.state.lock().await;
        let objects = state.buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        objects.get(key).cloned().ok_or_else(|| s3_error!(NoSuchKey))
    }

    fn data_path(&self, bucket: &str, meta: &ObjMeta) -> PathBuf {
        self.object_dir(bucket, &key_digest(&meta.key)).join(&meta.data)
    }

    fn upload_dir(&self, id: &str) -> S3Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(self.root.join("uploads").join(id))
    }

    /// The type an object is stored with: the one given, else this server's default.
    fn content_type_for(&self, key: &str, given: Option<String>) -> Option<String> {
        given.or_else(|| match &self.behaviour.default_content_type {
            super::DefaultContentType::None => None,
            super::DefaultContentType::ByExtension => Some(type_by_extension(key)),
            super::DefaultContentType::Fixed(t) => Some(t.clone()),
        })
    }

    async fn load_upload(&self, id: &str) -> S3Result<(PathBuf, Upload)> {
        let dir = self.upload_dir(id)?;
        let raw = tokio::fs::read(dir.join("upload.json")).await.map_err(|_| s3_error!(NoSuchUpload))?;
        let up: Upload = serde_json::from_slice(&raw).map_err(internal)?;
        Ok((dir, up))
    }
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

fn sorted_meta(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

fn to_metadata(m: &BTreeMap<String, String>) -> Option<Metadata> {
    if m.is_empty() { None } else { Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()) }
}

#[async_trait::async_trait]
impl S3 for DigestStore {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let state = self.state.lock().await;
        let buckets = state
            .buckets
            .keys()
            .map(|name| Bucket {
                name: Some(name.clone()),
                creation_date: Some(ts(state.created.get(name).copied().unwrap_or(0))),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let mut state = self.state.lock().await;
        if state.buckets.contains_key(&bucket) {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        tokio::fs::create_dir_all(self.root.join("buckets").join(&bucket)).await.map_err(internal)?;
        state.buckets.insert(bucket.clone(), BTreeMap::new());
        state.created.insert(bucket, now_ms());
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let state = self.state.lock().await;
        if !state.buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let state = self.state.lock().await;
        if !state.buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let mut state = self.state.lock().await;
        match state.buckets.get(&bucket) {
            None => return Err(s3_error!(NoSuchBucket)),
            Some(objects) if !objects.is_empty() => return Err(s3_error!(BucketNotEmpty)),
            Some(_) => {}
        }
        tokio::fs::remove_dir_all(self.root.join("buckets").join(&bucket)).await.map_err(internal)?;
        state.buckets.remove(&bucket);
        state.created.remove(&bucket);
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL)
            .then_some(self.behaviour.listing_encoding);
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let token = match &input.continuation_token {
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "bad continuation token"))?,
            ),
            None => None,
        };
        let after = match (&token, &input.start_after) {
            (Some(t), Some(s)) => Some(if t >= s { t.clone() } else { s.clone() }),
            (Some(t), None) => Some(t.clone()),
            (None, s) => s.clone(),
        };
        let state = self.state.lock().await;
        let objects = state.buckets.get(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let l = list(objects, &prefix, input.delimiter.as_deref(), after.as_deref(), max);
        // Prefixes are encoded like keys, except by RGW, which leaves them as they are.
        let enc = |s: &str| match encode {
            Some(super::ListingEncoding::PercentSlash) | None => s.to_string(),
            Some(d) => url_encode_key(s, d),
        };
        let contents: Vec<Object> = l.objects.iter().map(|m| to_object(m, encode)).collect();
        let prefixes: Vec<CommonPrefix> = l.prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix.map(|p| enc(&p)),
            delimiter: input.delimiter.map(|d| enc(&d)),
            start_after: input.start_after.map(|s| enc(&s)),
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(l.truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            continuation_token: input.continuation_token,
            next_continuation_token: if l.truncated { l.last.map(hex::encode) } else { None },
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL)
            .then_some(self.behaviour.listing_encoding);
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let state = self.state.lock().await;
        let objects = state.buckets.get(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let l = list(objects, &prefix, input.delimiter.as_deref(), input.marker.as_deref(), max);
        // Prefixes are encoded like keys, except by RGW, which leaves them as they are.
        let enc = |s: &str| match encode {
            Some(super::ListingEncoding::PercentSlash) | None => s.to_string(),
            Some(d) => url_encode_key(s, d),
        };
        let contents: Vec<Object> = l.objects.iter().map(|m| to_object(m, encode)).collect();
        let prefixes: Vec<CommonPrefix> = l.prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
        let output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix.map(|p| enc(&p)),
            delimiter: input.delimiter.map(|d| enc(&d)),
            marker: input.marker.map(|m| enc(&m)),
            max_keys: Some(max as i32),
            is_truncated: Some(l.truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            next_marker: if l.truncated { l.last.map(|s| enc(&s)) } else { None },
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        {
            let state = self.state.lock().await;
            let objects = state.buckets.get(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
            let current = objects.get(&input.key);
            if let Some(cond) = &input.if_none_match
                && current.is_some_and(|m| etag_matches(cond, &m.etag))
            {
                return Err(s3_error!(PreconditionFailed));
            }
            if let Some(cond) = &input.if_match
                && !current.is_some_and(|m| etag_matches(cond, &m.etag))
            {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        let mut attrs = from_input!(input);
        attrs.checksums = attrs::checksums_of(&input);
        if self.behaviour.drop_tags {
            attrs.tags.clear();
        }
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let (spooled, size, md5) = self.spool(body).await?;
        if let Some(expected) = input.content_length
            && expected as u64 != size
        {
            let _ = tokio::fs::remove_file(&spooled).await;
            return Err(s3_error!(IncompleteBody, "got {size} bytes, announced {expected}"));
        }
        if let Some(content_md5) = &input.content_md5
            && *content_md5 != speechvault::support::encoding::base64(&md5)
        {
            let _ = tokio::fs::remove_file(&spooled).await;
            return Err(s3_error!(BadDigest));
        }
        let etag = hex::encode(md5);
        let content_type = self.content_type_for(&input.key, input.content_type);
        let meta = ObjMeta {
            key: input.key.clone(),
            size,
            etag: etag.clone(),
            modified_ms: now_ms(),
            content_type,
            metadata: sorted_meta(input.metadata),
            data: String::new(),
            attrs,
        };
        if let Err(e) = self.commit(&input.bucket, &input.key, &spooled, meta).await {
            let _ = tokio::fs::remove_file(&spooled).await;
            return Err(e);
        }
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let meta = self.lookup(&input.bucket, &input.key).await?;
        if let Some(cond) = &input.if_match
            && !self.behaviour.ignore_if_match
            && !etag_matches(cond, &meta.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let mut out = HeadObjectOutput {
            content_length: Some(meta.size as i64),
            content_type: meta.content_type.clone(),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(ts(meta.modified_ms)),
            metadata: to_metadata(&meta.metadata),
            ..Default::default()
        };
        fill_output!(out, meta.attrs);
        Ok(S3Response::new(out))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let meta = self.lookup(&input.bucket, &input.key).await?;
        if let Some(cond) = &input.if_match
            && !self.behaviour.ignore_if_match
            && !etag_matches(cond, &meta.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let range = if self.behaviour.ignore_range { None } else { input.range };
        let mut file = tokio::fs::File::open(self.data_path(&input.bucket, &meta)).await.map_err(internal)?;
        let (start, len, content_range) = match range {
            None => (0, meta.size, None),
            Some(range) => {
                let r = range.check(meta.size)?;
                let len = r.end - r.start;
                let cr = format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), meta.size);
                (r.start, len, Some(cr))
            }
        };
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(internal)?;
        }
        let stream = futures_util::stream::unfold((file, len), |(mut file, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            let want = remaining.min(256 * 1024) as usize;
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => {
                    Some((Err(std::io::Error::other("object data file is shorter than its index entry")), (file, 0)))
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, remaining - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        });
        let mut out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len as i64),
            content_range,
            content_type: meta.content_type.clone(),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(ts(meta.modified_ms)),
            metadata: to_metadata(&meta.metadata),
            accept_ranges: Some("bytes".into()),
            tag_count: (!meta.attrs.tags.is_empty()).then_some(meta.attrs.tags.len() as i32),
            ..Default::default()
        };
        fill_output!(out, meta.attrs);
        Ok(S3Response::new(out))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let mut state = self.state.lock().await;
        let objects = state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        if let Some(old) = objects.remove(&input.key) {
            let digest = key_digest(&input.key);
            let dir = self.object_dir(&input.bucket, &digest);
            let _ = tokio::fs::remove_file(dir.join(format!("{digest}.json"))).await;
            let _ = tokio::fs::remove_file(dir.join(&old.data)).await;
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let mut deleted = Vec::new();
        let mut state = self.state.lock().await;
        let objects = state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        for id in input.delete.objects {
            if let Some(old) = objects.remove(&id.key) {
                let digest = key_digest(&id.key);
                let dir = self.object_dir(&input.bucket, &digest);
                let _ = tokio::fs::remove_file(dir.join(format!("{digest}.json"))).await;
                let _ = tokio::fs::remove_file(dir.join(&old.data)).await;
            }
            deleted.push(DeletedObject { key: Some(id.key), ..Default::default() });
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        {
            let state = self.state.lock().await;
            if !state.buckets.contains_key(&input.bucket) {
                return Err(s3_error!(NoSuchBucket));
            }
        }
        let id = self.unique();
        let dir = self.upload_dir(&id)?;
        tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
        let mut attrs = from_input!(input);
        if self.behaviour.drop_tags {
            attrs.tags.clear();
        }
        let up = Upload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: self.content_type_for(&input.key, input.content_type),
            metadata: sorted_meta(input.metadata),
            initiated_ms: now_ms(),
            attrs,
        };
        write_atomic(&dir.join("upload.json"), &serde_json::to_vec(&up).map_err(internal)?).await.map_err(internal)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let (dir, up) = self.load_upload(&input.upload_id).await?;
        if up.bucket != input.bucket || up.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1 to 10000"));
        }
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let (spooled, size, md5) = self.spool(body).await?;
        if let Some(expected) = input.content_length
            && expected as u64 != size
        {
            let _ = tokio::fs::remove_file(&spooled).await;
            return Err(s3_error!(IncompleteBody));
        }
        let etag = hex::encode(md5);
        let part = dir.join(format!("part-{:05}.{etag}", input.part_number));
        // A re-sent part replaces the earlier one.
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            let prefix = format!("part-{:05}.", input.part_number);
            while let Ok(Some(e)) = rd.next_entry().await {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = tokio::fs::remove_file(e.path()).await;
                }
            }
        }
        tokio::fs::rename(&spooled, &part).await.map_err(internal)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let (dir, up) = self.load_upload(&input.upload_id).await?;
        if up.bucket != input.bucket || up.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        let parts = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts given"));
        }
        let out_path = self.root.join("tmp").join(self.unique());
        let mut out = tokio::fs::File::create(&out_path).await.map_err(internal)?;
        let mut md5_of_md5s = Md5::new();
        let mut size = 0u64;
        let mut last = 0;
        for (i, p) in parts.iter().enumerate() {
            let n = p.part_number.unwrap_or(0);
            let etag = p.e_tag.as_ref().map(|e| e.value().to_string()).unwrap_or_default();
            if n <= last {
                let _ = tokio::fs::remove_file(&out_path).await;
                return Err(s3_error!(InvalidPartOrder));
            }
            last = n;
            let path = dir.join(format!("part-{n:05}.{etag}"));
            let mut f = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(_) => {
                    let _ = tokio::fs::remove_file(&out_path).await;
                    return Err(s3_error!(InvalidPart, "part {n} with ETag {etag} was not uploaded"));
                }
            };
            let len = f.metadata().await.map_err(internal)?.len();
            if i + 1 < parts.len() && len < 5 * 1024 * 1024 {
                let _ = tokio::fs::remove_file(&out_path).await;
                return Err(s3_error!(EntityTooSmall));
            }
            tokio::io::copy(&mut f, &mut out).await.map_err(internal)?;
            size += len;
            md5_of_md5s.update(hex::decode(&etag).map_err(internal)?);
        }
        out.flush().await.map_err(internal)?;
        drop(out);
        let etag = format!("{}-{}", hex::encode(md5_of_md5s.finalize()), parts.len());
        let meta = ObjMeta {
            key: up.key.clone(),
            size,
            etag: etag.clone(),
            modified_ms: now_ms(),
            content_type: up.content_type,
            metadata: up.metadata,
            data: String::new(),
            attrs: up.attrs,
        };
        self.commit(&up.bucket, &up.key, &out_path, meta).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(up.bucket),
            key: Some(up.key),
            e_tag: (!self.behaviour.no_complete_etag).then_some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let meta = self.lookup(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(GetObjectTaggingOutput { tag_set: attrs::tag_set(&meta.attrs.tags), version_id: None }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let tags = if self.behaviour.drop_tags { BTreeMap::new() } else { attrs::tags_of(&req.input.tagging) };
        self.update_meta(&req.input.bucket, &req.input.key, |m| m.attrs.tags = tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.update_meta(&req.input.bucket, &req.input.key, |m| m.attrs.tags.clear()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        {
            let state = self.state.lock().await;
            if !state.buckets.contains_key(&input.bucket) {
                return Err(s3_error!(NoSuchBucket));
            }
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL)
            .then_some(self.behaviour.listing_encoding);
        let mut found: Vec<(String, String, i64)> = Vec::new();
        let mut rd = tokio::fs::read_dir(self.root.join("uploads")).await.map_err(internal)?;
        while let Some(e) = rd.next_entry().await.map_err(internal)? {
            let id = e.file_name().to_string_lossy().into_owned();
            let Ok(raw) = tokio::fs::read(e.path().join("upload.json")).await else { continue };
            let Ok(up) = serde_json::from_slice::<Upload>(&raw) else { continue };
            if up.bucket == input.bucket && up.key.starts_with(&prefix) {
                found.push((up.key, id, up.initiated_ms));
            }
        }
        found.sort();
        let uploads: Vec<MultipartUpload> = found
            .into_iter()
            .map(|(key, id, at)| MultipartUpload {
                key: Some(match encode {
                    Some(d) => url_encode_key(&key, d),
                    None => key,
                }),
                upload_id: Some(id),
                initiated: Some(ts(at)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            encoding_type: input.encoding_type,
            is_truncated: Some(false),
            uploads: (!uploads.is_empty()).then_some(uploads),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let dir = self.upload_dir(&req.input.upload_id)?;
        if !dir.exists() {
            return Err(s3_error!(NoSuchUpload));
        }
        tokio::fs::remove_dir_all(&dir).await.map_err(internal)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjMeta {
        ObjMeta {
            key: key.into(),
            size: 0,
            etag: String::new(),
            modified_ms: 0,
            content_type: None,
            metadata: BTreeMap::new(),
            data: String::new(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn listing_pages_and_delimits() {
        let mut m = BTreeMap::new();
        for k in ["a", "a/b", "a/c/d", "b", "c//d", "c/../e"] {
            m.insert(k.to_string(), meta(k));
        }
        let l = list(&m, "", None, None, 2);
        assert_eq!(l.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["a", "a/b"]);
        assert!(l.truncated);
        let l2 = list(&m, "", None, l.last.as_deref(), 1000);
        assert_eq!(l2.objects.len(), 4);
        assert!(!l2.truncated);
        let d = list(&m, "", Some("/"), None, 1000);
        assert_eq!(d.prefixes, ["a/", "c/"]);
        assert_eq!(d.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let p = list(&m, "a/", Some("/"), None, 1000);
        assert_eq!(p.prefixes, ["a/c/"]);
        assert_eq!(p.objects.len(), 1);
    }
}
