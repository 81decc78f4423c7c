//! Data for benchmarks and scaling runs, added to a running sandbox: many small objects, one
//! very large object, and churn (a share of objects rewritten and of rows updated, as a day of
//! service use would).
//!
//! Everything is generated on the fly (nothing proportional to the object count is held in
//! memory), deterministic from the seed, and uploaded through the sandbox's S3 endpoint, so
//! it works the same on our server and on an external one.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use speechvault::objstore::{ObjectStore, PutOptions};

use crate::seed::{SeedObject, body_of};
use crate::{SandboxError, SandboxInfo};

/// The profile bucket small objects go to: async jobs are where object counts grow.
pub const BULK_BUCKET: &str = "stt-async-icp";
/// The profile bucket a large object goes to: base models are the large objects.
pub const LARGE_BUCKET: &str = "speech-service-base-models";

/// Small object `i` of a bulk set: alternately a JSON result (compressible) and an audio
/// fragment (incompressible), 1 to `max_size` bytes, under `bulk/<set>/`.
pub fn bulk_object(set: &str, i: u64, max_size: usize) -> SeedObject {
    let size = 1 + ((i.wrapping_mul(2_654_435_761) >> 7) as usize % max_size.max(1));
    let (name, text, ct) = if i.is_multiple_of(2) {
        ("results.json", true, "application/json")
    } else {
        ("chunk.flac", false, "audio/flac")
    };
    SeedObject {
        bucket: BULK_BUCKET.into(),
        key: format!("bulk/{set}/{:02x}/{i:08}/{name}", i % 251),
        size,
        text,
        content_type: Some(ct.into()),
        metadata: BTreeMap::from([("job-id".to_string(), format!("bulk-{i}"))]),
        multipart_part: None,
        attrs: Default::default(),
    }
}

/// Adds `count` small objects (see [`bulk_object`]) to the sandbox, `parallel` uploads at a
/// time; returns the bytes written.
pub async fn add_objects(
    info: &SandboxInfo,
    seed: u64,
    set: &str,
    count: u64,
    max_size: usize,
    parallel: usize,
) -> Result<u64, SandboxError> {
    if count == 0 {
        // Creating the bucket alone would make its component look half-installed.
        return Ok(0);
    }
    let store = info.object_store()?;
    let bucket = info.bucket(BULK_BUCKET);
    ensure_bucket(&store, &bucket).await?;
    let uploads = futures_util::stream::iter(0..count)
        .map(|i| {
            let (store, bucket) = (store.clone(), bucket.clone());
            async move {
                let obj = bulk_object(set, i, max_size);
                let opts = PutOptions {
                    content_type: obj.content_type.clone(),
                    metadata: obj.metadata.clone(),
                    attrs: obj.attrs.clone(),
                    ..Default::default()
                };
                store
                    .put_object(&bucket, &obj.key, body_of(seed, &obj, 0, obj.size), &opts)
                    .await
                    .map(|_| obj.size as u64)
                    .map_err(|e| SandboxError::Seed(format!("upload {bucket}/{}: {e}", obj.key)))
            }
        })
        .buffer_unordered(parallel.max(1));
    futures_util::pin_mut!(uploads);
    let mut bytes = 0;
    while let Some(r) = uploads.next().await {
        bytes += r?;
    }
    Ok(bytes)
}

/// Adds one object of `size` bytes (incompressible, like model weights), uploaded in parts
/// generated as they are sent; returns its key.
pub async fn add_large_object(info: &SandboxInfo, seed: u64, size: u64) -> Result<String, SandboxError> {
    let store = info.object_store()?;
    let bucket = info.bucket(LARGE_BUCKET);
    ensure_bucket(&store, &bucket).await?;
    let obj = SeedObject {
        bucket: LARGE_BUCKET.into(),
        key: format!("bulk/large-{size}.bin"),
        size: usize::try_from(size).map_err(|_| SandboxError::BadInput(format!("{size} bytes is too large")))?,
        text: false,
        content_type: Some("application/octet-stream".into()),
        metadata: BTreeMap::new(),
        multipart_part: Some(16 << 20),
        attrs: Default::default(),
    };
    let opts = PutOptions {
        content_type: obj.content_type.clone(),
        metadata: obj.metadata.clone(),
        attrs: obj.attrs.clone(),
        ..Default::default()
    };
    store
        .upload_stream(&bucket, &obj.key, &opts, Some(size), generated(seed, &obj))
        .await
        .map_err(|e| SandboxError::Seed(format!("upload {bucket}/{}: {e}", obj.key)))?;
    Ok(obj.key)
}

/// `obj`'s body as 16 MiB chunks, each generated when it is asked for.
fn generated(seed: u64, obj: &SeedObject) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin {
    const PART: usize = 16 << 20;
    let obj = obj.clone();
    futures_util::stream::iter((0..obj.size.div_ceil(PART)).map(move |n| {
        let offset = n * PART;
        Ok(body_of(seed, &obj, offset, PART.min(obj.size - offset)))
    }))
}

async fn ensure_bucket(store: &ObjectStore, bucket: &str) -> Result<(), SandboxError> {
    match store.bucket_exists(bucket).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            store.create_bucket(bucket).await.map_err(|e| SandboxError::Seed(format!("create bucket {bucket}: {e}")))
        }
        Err(e) => Err(SandboxError::Seed(format!("bucket {bucket}: {e}"))),
    }
}

/// What [`churn`] changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChurnReport {
    pub objects_rewritten: u64,
    pub bytes_rewritten: u64,
    pub rows_updated: u64,
}

/// Rows changed by churn, per seeded database: every `n`th row of its largest tables.
fn churn_sql(db: &str, n: u32) -> Vec<String> {
    match db {
        "stt-customization" => vec![
            format!("UPDATE words SET word = word || 's' WHERE word_id % {n} = 0"),
            format!("UPDATE corpora SET total_words = total_words + 1 WHERE corpus_id % {n} = 0"),
        ],
        "tts-customization" => {
            vec![format!("UPDATE words SET translation = translation || '.' WHERE abs(hashtext(word)) % {n} = 0")]
        }
        "stt-async" => vec![format!(
            "UPDATE job_results SET result = result || jsonb_build_object('revised', true) \
             WHERE abs(hashtext(job_id)) % {n} = seq % {n}"
        )],
        _ => Vec::new(),
    }
}

/// Rewrites every `100 / percent`th object of every bucket (same key, size, type and
/// metadata; new content of the same kind: text stays text) and updates about `percent`% of the rows of the seeded tables.
pub async fn churn(info: &SandboxInfo, seed: u64, percent: u32, parallel: usize) -> Result<ChurnReport, SandboxError> {
    if percent == 0 || percent > 100 {
        return Err(SandboxError::BadInput(format!("--percent {percent}: use 1 to 100")));
    }
    let n = 100 / percent;
    let store = info.object_store()?;
    let mut report = ChurnReport::default();
    for (_, bucket) in &info.s3.buckets {
        let listed = store.list_all(bucket, "").await.map_err(|e| SandboxError::Seed(format!("list {bucket}: {e}")))?;
        let picked: Vec<_> =
            listed.into_iter().enumerate().filter(|(i, _)| i % n as usize == 0).map(|(_, o)| o).collect();
        let rewrites = futures_util::stream::iter(picked)
            .map(|o| {
                let (store, bucket) = (store.clone(), bucket.clone());
                async move {
                    let err = |e: speechvault::objstore::ObjStoreError| {
                        SandboxError::Seed(format!("rewrite {bucket}/{}: {e}", o.key))
                    };
                    let head = store.head_object(&bucket, &o.key).await.map_err(err)?;
                    // A day of use rewrites text as text (JSON results, corpora), binaries as
                    // binaries: new content of the same kind.
                    let text = head
                        .content_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with("text/") || t.contains("json") || t.contains("xml"));
                    let obj = SeedObject {
                        bucket: bucket.clone(),
                        key: format!("{}\0churn-{seed}", o.key),
                        size: o.size as usize,
                        text,
                        content_type: None,
                        metadata: BTreeMap::new(),
                        multipart_part: None,
                        attrs: Default::default(),
                    };
                    let opts = PutOptions {
                        content_type: head.content_type,
                        metadata: head.metadata,
                        attrs: head.attrs,
                        ..Default::default()
                    };
                    store
                        .upload_stream(&bucket, &o.key, &opts, Some(o.size), generated(seed, &obj))
                        .await
                        .map_err(err)?;
                    Ok::<u64, SandboxError>(o.size)
                }
            })
            .buffer_unordered(parallel.max(1));
        futures_util::pin_mut!(rewrites);
        while let Some(r) = rewrites.next().await {
            report.bytes_rewritten += r?;
            report.objects_rewritten += 1;
        }
    }
    let pg = info.pg_config()?;
    for db in info.databases() {
        let client = pg.connect(&db).await.map_err(|e| SandboxError::Seed(format!("connect {db}: {e}")))?;
        for sql in churn_sql(&db, n) {
            report.rows_updated +=
                client.execute(sql.as_str(), &[]).await.map_err(|e| SandboxError::Seed(format!("{db}: {sql}: {e}")))?;
        }
    }
    Ok(report)
}

/// What [`read_all`] read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReadReport {
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// GETs every object of every bucket of the sandbox, `parallel` at a time, and discards the
/// bytes: the ceiling a backup that reads the same objects can approach (the benchmark's
/// "parallel reader"). Listing pages are read one at a time, so memory stays flat.
pub async fn read_all(info: &SandboxInfo, parallel: usize) -> Result<ReadReport, SandboxError> {
    let store = info.object_store()?;
    let started = std::time::Instant::now();
    let mut report = ReadReport::default();
    for (_, bucket) in &info.s3.buckets {
        let mut token: Option<String> = None;
        loop {
            let (page, next) = store
                .list_page(bucket, "", token.as_deref())
                .await
                .map_err(|e| SandboxError::Seed(format!("list {bucket}: {e}")))?;
            let reads = futures_util::stream::iter(page)
                .map(|o| {
                    let (store, bucket) = (store.clone(), bucket.clone());
                    async move {
                        let err = |e: speechvault::objstore::ObjStoreError| {
                            SandboxError::Seed(format!("read {bucket}/{}: {e}", o.key))
                        };
                        let mut body = store.get_object(&bucket, &o.key, Some(&o)).await.map_err(err)?;
                        let mut n = 0u64;
                        while let Some(chunk) = body.chunk().await.map_err(err)? {
                            n += chunk.len() as u64;
                        }
                        Ok::<u64, SandboxError>(n)
                    }
                })
                .buffer_unordered(parallel.max(1));
            futures_util::pin_mut!(reads);
            while let Some(r) = reads.next().await {
                report.bytes += r?;
                report.objects += 1;
            }
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
