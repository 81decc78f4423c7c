//! The object store: a small S3 client that speechvault owns end to end.
//!
//! Why our own client: S3 keys are arbitrary UTF-8 up to 1,024 bytes, and URL libraries
//! normalise `..` and `//` away, which silently turns one key into another. This client builds
//! `http::Uri`s by hand, signs them with SigV4 ([`sigv4`]), always uses path-style addressing,
//! asks for URL-encoded listings (and decodes both encodings servers use), and retries what is
//! safe to retry. It is the only module that speaks HTTP to an object store.
//!
//! Contract: every call either returns what the server said or an [`ObjStoreError`] naming the
//! endpoint, the operation, and the bucket/key involved. Timeouts bound every wait; an upload
//! is timed by its stalls, not by its total duration.
//!
//! - [`client`]: requests, signing, retries with jittered backoff, timeouts;
//! - [`listing`]: bucket listings and their two URL encodings, multipart upload listings;
//! - [`object`]: reading, writing and deleting objects, multipart uploads;
//! - [`body`]: a GET body that resumes after a broken connection without splicing versions.

pub mod attributes;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod limits;
pub(crate) mod listing;
pub mod object;
pub mod settings;
pub mod sigv4;
pub mod versions;
pub(crate) mod xml;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::secret::Secret;

pub use attributes::{Field, ObjectAttributes};
pub use body::ObjectBody;
pub use limits::Limits;
pub use listing::{MultipartUpload, decode_listing_key};
pub use settings::Setting;
pub use versions::{LockMode, ObjectVersion, Retention};
pub use xml::canonical as xml_tree;

/// Object size above which uploads go multipart.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each multipart part (S3 allows 5 MiB to 5 GiB, at most 10,000 parts; larger
/// objects get larger parts, [`object::part_size_for`]).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// How to reach one S3-compatible endpoint.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    /// PEM bundle of CAs to trust for https, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. Only when the operator asks for it.
    pub insecure: bool,
    pub connect_timeout: Duration,
    /// Longest wait for response headers, for the next piece of a body, or for an upload to
    /// make progress.
    pub read_timeout: Duration,
    /// Attempts for a retryable failure (connection error, timeout, 5xx, throttling).
    pub max_attempts: u32,
    /// Requests in flight and read rate at most (a production server's share).
    pub limits: Limits,
}

impl S3Config {
    pub fn new(endpoint: impl Into<String>, access_key: impl Into<String>, secret_key: Secret) -> Self {
        Self {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key: access_key.into(),
            secret_key,
            session_token: None,
            ca_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_attempts: 5,
            limits: Limits::default(),
        }
    }
}

/// What went wrong talking to the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjStoreError {
    #[error("invalid S3 endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("invalid bucket name {bucket:?}: {reason}")]
    BadBucketName { bucket: String, reason: String },
    #[error("cannot load TLS settings for {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("cannot reach S3 endpoint {endpoint} ({op}): {reason}")]
    Unreachable { endpoint: String, op: String, reason: String },
    #[error("S3 endpoint {endpoint} did not answer {op} within {secs}s")]
    Timeout { endpoint: String, op: String, secs: u64 },
    #[error("S3 endpoint {endpoint} rejected the credentials ({code}) during {op}: check the access and secret key")]
    Credentials { endpoint: String, op: String, code: String },
    #[error("bucket {bucket:?} does not exist on {endpoint}")]
    NoSuchBucket { endpoint: String, bucket: String },
    #[error("object {key:?} does not exist in bucket {bucket:?} on {endpoint}")]
    NoSuchKey { endpoint: String, bucket: String, key: String },
    #[error("object {key:?} in bucket {bucket:?} changed while it was being read ({detail})")]
    Changed { bucket: String, key: String, detail: String },
    #[error("S3 {op} on {target} failed: HTTP {status} {code}: {message}")]
    Http { op: String, target: String, status: u16, code: String, message: String },
    #[error("S3 {op} on {target}: unexpected response: {detail}")]
    Protocol { op: String, target: String, detail: String },
}

impl ObjStoreError {
    /// Whether the object is gone or no longer the version that was listed.
    pub fn is_gone_or_changed(&self) -> bool {
        matches!(self, Self::NoSuchKey { .. } | Self::Changed { .. })
    }
}

pub type Result<T, E = ObjStoreError> = std::result::Result<T, E>;

/// One entry of a bucket listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// As the server gave it, quotes removed. Not a digest: multipart ETags are not MD5s.
    pub etag: String,
    /// RFC 3339, as listed.
    pub last_modified: String,
}

/// What HEAD or GET says about one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`) with UTF-8 values, names lower-case without the prefix
    /// (other values are in `attrs.metadata_bytes`).
    pub metadata: BTreeMap<String, String>,
    /// Everything else a client set on the object (tags only after `get_object_tagging`).
    pub attrs: ObjectAttributes,
    /// `x-amz-tagging-count`: how many tags `get_object_tagging` would return.
    pub tag_count: u64,
}

/// Content type, user metadata and attributes to store with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub attrs: ObjectAttributes,
    /// Send `If-None-Match: *`: the server refuses (412) to store over an existing key, where
    /// it honours the header (not every server does; probe before relying on it).
    #[serde(default)]
    pub if_none_match: bool,
    /// Send `x-amz-acl: bucket-owner-full-control`: a key that is not the bucket's owner
    /// writes objects the owner (the maintenance key) may still read and manage.
    #[serde(default)]
    pub bucket_owner_full_control: bool,
}

/// Checks a bucket name against S3's rules (3 to 63 lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit) before it is used in a request or a path.
pub fn validate_bucket_name(bucket: &str) -> Result<()> {
    let bad = |reason: &str| Err(ObjStoreError::BadBucketName { bucket: bucket.into(), reason: reason.into() });
    let b = bucket.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-') {
        return bad("only lower-case letters, digits, '.' and '-' are allowed");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return bad("must not contain '..'");
    }
    Ok(())
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

struct Inner {
    cfg: S3Config,
    scheme: String,
    authority: String,
    client: HttpsClient,
    /// Multipart uploads started and not yet completed or aborted: upload id -> (bucket, key).
    /// Whatever stops an upload half-way (an error, a cancelled task) leaves it here for
    /// [`ObjectStore::abort_pending_uploads`].
    uploads: Mutex<HashMap<String, (String, String)>>,
    limiter: limits::Limiter,
    /// Upload buffers' share of memory, in units ([`object::UPLOAD_MEMORY`]).
    upload_memory: Arc<tokio::sync::Semaphore>,
}

/// A connection to one S3 endpoint. Cheap to clone; share it between tasks.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").field("endpoint", &self.inner.cfg.endpoint).finish()
    }
}

fn tls_config(cfg: &S3Config) -> Result<rustls::ClientConfig> {
    // System roots are loaded only when they can matter: plain-http endpoints (the sandbox,
    // tests) must not depend on the machine's CA setup (AWS_CA_BUNDLE and friends).
    let trust = if cfg.insecure {
        crate::tls::Trust::Anything
    } else {
        crate::tls::Trust::Roots { ca_file: cfg.ca_file.clone(), system: cfg.endpoint.starts_with("https") }
    };
    crate::tls::client_config(&trust, None)
        .map_err(|reason| ObjStoreError::Tls { endpoint: cfg.endpoint.clone(), reason })
}

impl ObjectStore {
    /// Prepares a client for `cfg`. Nothing is sent yet; see [`ObjectStore::list_buckets`] to
    /// test the connection.
    pub fn new(cfg: S3Config) -> Result<Self> {
        let bad = |reason: &str| ObjStoreError::BadEndpoint { endpoint: cfg.endpoint.clone(), reason: reason.into() };
        let uri: http::Uri = cfg.endpoint.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme_str().ok_or_else(|| bad("missing http:// or https://"))?.to_string();
        if scheme != "http" && scheme != "https" {
            return Err(bad("scheme must be http or https"));
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?.to_string();
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("a path after the host is not supported; give only scheme, host and port"));
        }
        let tls = tls_config(&cfg)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(64)
            .build(https);
        let limiter = limits::Limiter::new(cfg.limits);
        let upload_memory = Arc::new(tokio::sync::Semaphore::new(object::UPLOAD_MEMORY / object::MEMORY_UNIT));
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                scheme,
                authority,
                client,
                uploads: Mutex::default(),
                limiter,
                upload_memory,
            }),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.cfg.endpoint
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "stt-async-icp", "stt-async-icp-ibm-speech-zen", "a.b-c", &"a".repeat(63)] {
            validate_bucket_name(ok).unwrap();
        }
        for bad in ["ab", "Abc", "a_b", "-ab", "ab-", "a..b", "../etc", "a/b", &"a".repeat(64), ""] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
