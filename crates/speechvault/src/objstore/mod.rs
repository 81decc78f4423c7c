//! The object store: a small S3 client that speechvault owns end to end.
//!
//! Why our own client: S3 keys are arbitrary UTF-8 up to 1,024 bytes, and URL libraries
//! normalise `..` and `//` away, which silently turns one key into another. This client builds
//! `http::Uri`s by hand, signs them with SigV4 ([`sigv4`]), always uses path-style addressing,
//! asks for URL-encoded listings, and retries what is safe to retry. It is the only module
//! that speaks HTTP to an object store.
//!
//! Contract: every call either returns what the server said or an [`ObjStoreError`] naming the
//! endpoint, the operation, and the bucket/key involved. Timeouts bound every wait.

pub mod sigv4;
pub mod xml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::secret::Secret;

/// Object size above which uploads go multipart.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each multipart part (S3 allows 5 MiB to 5 GiB, at most 10,000 parts).
pub const PART_SIZE: usize = 16 * 1024 * 1024;

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
    /// Longest wait for response headers or for the next piece of a body.
    pub read_timeout: Duration,
    /// Attempts for a retryable failure (connection error, timeout, 5xx, throttling).
    pub max_attempts: u32,
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
            max_attempts: 4,
        }
    }
}

/// What went wrong talking to the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjStoreError {
    #[error("invalid S3 endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
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
    /// User metadata (`x-amz-meta-*`), names lower-case without the prefix.
    pub metadata: BTreeMap<String, String>,
}

/// Content type and user metadata to store with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

struct Inner {
    cfg: S3Config,
    scheme: String,
    authority: String,
    client: HttpsClient,
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

/// One request, before signing.
struct Call<'a> {
    op: &'static str,
    method: Method,
    bucket: Option<&'a str>,
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, bucket: Option<&'a str>, key: Option<&'a str>) -> Self {
        Self { op, method, bucket, key, query: Vec::new(), headers: Vec::new(), body: Bytes::new() }
    }
    fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }
    fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }
    fn target(&self) -> String {
        match (self.bucket, self.key) {
            (Some(b), Some(k)) => format!("{b}/{k}"),
            (Some(b), None) => b.to_string(),
            _ => "/".to_string(),
        }
    }
}

fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

fn tls_config(cfg: &S3Config) -> Result<rustls::ClientConfig> {
    // System roots are loaded only when they can matter: plain-http endpoints (the sandbox,
    // tests) must not depend on the machine's CA setup (AWS_CA_BUNDLE and friends).
    let trust = if cfg.insecure {
        crate::tls::Trust::Anything
    } else {
        crate::tls::Trust::Roots { ca_file: cfg.ca_file.clone(), system: cfg.endpoint.starts_with("https") }
    };
    crate::tls::client_config(&trust).map_err(|reason| ObjStoreError::Tls { endpoint: cfg.endpoint.clone(), reason })
}

impl ObjectStore {
    /// Prepares a client for `cfg`. Nothing is sent yet; see [`ObjectStore::list_buckets`] to
    /// test the connection.
    pub fn new(cfg: S3Config) -> Result<Self> {
        let bad = |reason: &str| ObjStoreError::BadEndpoint { endpoint: cfg.endpoint.clone(), reason: reason.into() };
        let uri: Uri = cfg.endpoint.parse().map_err(|_| bad("not a URL"))?;
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
        Ok(Self { inner: Arc::new(Inner { cfg, scheme, authority, client }) })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.cfg.endpoint
    }

    fn path_of(bucket: Option<&str>, key: Option<&str>) -> String {
        match (bucket, key) {
            (Some(b), Some(k)) => format!("/{}/{}", sigv4::uri_encode(b, false), sigv4::uri_encode(k, true)),
            (Some(b), None) => format!("/{}", sigv4::uri_encode(b, false)),
            _ => "/".to_string(),
        }
    }

    fn build(&self, call: &Call<'_>) -> Result<Request<Body>> {
        let cfg = &self.inner.cfg;
        let path = Self::path_of(call.bucket, call.key);
        let query = sigv4::canonical_query(&call.query);
        let pq = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let uri = format!("{}://{}{}", self.inner.scheme, self.inner.authority, pq);
        let amz_date = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let payload_hash =
            if call.body.is_empty() { sigv4::EMPTY_SHA256.to_string() } else { sigv4::UNSIGNED_PAYLOAD.to_string() };
        let mut headers = call.headers.clone();
        headers.push(("host".into(), self.inner.authority.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        if let Some(token) = &cfg.session_token {
            headers.push(("x-amz-security-token".into(), token.expose().to_string()));
        }
        let auth = sigv4::authorization(&sigv4::SignInput {
            method: call.method.as_str(),
            canonical_uri: &path,
            query: &call.query,
            headers: &headers,
            payload_hash: &payload_hash,
            amz_date: &amz_date,
            region: &cfg.region,
            access_key: &cfg.access_key,
            secret_key: cfg.secret_key.expose(),
        });
        let mut req = Request::builder().method(call.method.clone()).uri(&uri);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header("authorization", auth).header("content-length", call.body.len().to_string());
        let body: Body = Full::new(call.body.clone()).map_err(|never| match never {}).boxed();
        req.body(body).map_err(|e| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail: format!("cannot build request: {e}"),
        })
    }

    /// Sends with retries; returns the response once its status is a success.
    async fn send(&self, call: &Call<'_>) -> Result<Response<Incoming>> {
        let cfg = &self.inner.cfg;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self.build(call)?;
            let outcome = tokio::time::timeout(cfg.read_timeout, self.inner.client.request(req)).await;
            let retryable_err = match outcome {
                Err(_) => ObjStoreError::Timeout {
                    endpoint: cfg.endpoint.clone(),
                    op: call.op.into(),
                    secs: cfg.read_timeout.as_secs(),
                },
                Ok(Err(e)) => {
                    let mut reason = e.to_string();
                    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                    while let Some(s) = src {
                        reason.push_str(": ");
                        reason.push_str(&s.to_string());
                        src = s.source();
                    }
                    ObjStoreError::Unreachable { endpoint: cfg.endpoint.clone(), op: call.op.into(), reason }
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    if status.is_success() || status == StatusCode::NOT_MODIFIED {
                        return Ok(resp);
                    }
                    let err = self.error_from(call, resp).await;
                    let retry = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if !retry {
                        return Err(err);
                    }
                    err
                }
            };
            if attempt >= cfg.max_attempts {
                return Err(retryable_err);
            }
            let backoff = Duration::from_millis(200 * (1 << (attempt - 1).min(5)));
            tracing::warn!(op = call.op, target = %call.target(), attempt, error = %retryable_err, "retrying S3 request");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn error_from(&self, call: &Call<'_>, resp: Response<Incoming>) -> ObjStoreError {
        let status = resp.status();
        let body = match tokio::time::timeout(self.inner.cfg.read_timeout, resp.into_body().collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        let (code, message) = match xml::parse(&body) {
            Ok(root) => (
                root.text_of("Code").unwrap_or_default().to_string(),
                root.text_of("Message").unwrap_or_default().to_string(),
            ),
            Err(_) => (String::new(), String::new()),
        };
        let endpoint = self.inner.cfg.endpoint.clone();
        let code = if code.is_empty() {
            match status {
                StatusCode::NOT_FOUND if call.key.is_some() && call.method == Method::HEAD => "NoSuchKey".into(),
                StatusCode::NOT_FOUND if call.method == Method::HEAD => "NoSuchBucket".into(),
                StatusCode::PRECONDITION_FAILED => "PreconditionFailed".into(),
                StatusCode::FORBIDDEN => "AccessDenied".into(),
                _ => status.canonical_reason().unwrap_or("error").to_string(),
            }
        } else {
            code
        };
        match code.as_str() {
            "NoSuchBucket" => ObjStoreError::NoSuchBucket { endpoint, bucket: call.bucket.unwrap_or("").into() },
            "NoSuchKey" => ObjStoreError::NoSuchKey {
                endpoint,
                bucket: call.bucket.unwrap_or("").into(),
                key: call.key.unwrap_or("").into(),
            },
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "NotSignedUp"
            | "InvalidSecurity"
            | "AccountProblem"
            | "ExpiredToken" => ObjStoreError::Credentials { endpoint, op: call.op.into(), code },
            "PreconditionFailed" => ObjStoreError::Changed {
                bucket: call.bucket.unwrap_or("").into(),
                key: call.key.unwrap_or("").into(),
                detail: "its ETag no longer matches the listing".into(),
            },
            _ => ObjStoreError::Http {
                op: call.op.into(),
                target: call.target(),
                status: status.as_u16(),
                code,
                message,
            },
        }
    }

    async fn body_bytes(&self, call: &Call<'_>, resp: Response<Incoming>) -> Result<Bytes> {
        match tokio::time::timeout(self.inner.cfg.read_timeout, resp.into_body().collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) => Err(ObjStoreError::Unreachable {
                endpoint: self.inner.cfg.endpoint.clone(),
                op: call.op.into(),
                reason: e.to_string(),
            }),
            Err(_) => Err(ObjStoreError::Timeout {
                endpoint: self.inner.cfg.endpoint.clone(),
                op: call.op.into(),
                secs: self.inner.cfg.read_timeout.as_secs(),
            }),
        }
    }

    async fn xml_of(&self, call: &Call<'_>) -> Result<xml::Element> {
        let resp = self.send(call).await?;
        let body = self.body_bytes(call, resp).await?;
        let root = xml::parse(&body).map_err(|detail| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail,
        })?;
        if root.name == "Error" {
            return Err(ObjStoreError::Http {
                op: call.op.into(),
                target: call.target(),
                status: 200,
                code: root.text_of("Code").unwrap_or_default().into(),
                message: root.text_of("Message").unwrap_or_default().into(),
            });
        }
        Ok(root)
    }

    /// Names of all buckets the credentials can see. Also the cheapest connection check.
    pub async fn list_buckets(&self) -> Result<Vec<String>> {
        let call = Call::new("ListBuckets", Method::GET, None, None);
        let root = self.xml_of(&call).await?;
        let mut names: Vec<String> = root
            .child("Buckets")
            .map(|b| b.all("Bucket").filter_map(|x| x.text_of("Name")).map(str::to_string).collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// Whether `bucket` exists (and is readable with these credentials).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let call = Call::new("HeadBucket", Method::HEAD, Some(bucket), None);
        match self.send(&call).await {
            Ok(_) => Ok(true),
            Err(ObjStoreError::NoSuchBucket { .. }) => Ok(false),
            Err(ObjStoreError::Http { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `bucket`; succeeds when it already exists and is ours.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let mut call = Call::new("CreateBucket", Method::PUT, Some(bucket), None);
        if self.inner.cfg.region != "us-east-1" {
            let xml = format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&self.inner.cfg.region)
            );
            call = call.body(Bytes::from(xml));
        }
        match self.send(&call).await {
            Ok(_) => Ok(()),
            Err(ObjStoreError::Http { code, .. }) if code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.send(&Call::new("DeleteBucket", Method::DELETE, Some(bucket), None)).await.map(|_| ())
    }

    /// One page of a listing (at most 1,000 keys), starting after `token`.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<ObjectInfo>, Option<String>)> {
        let mut call = Call::new("ListObjectsV2", Method::GET, Some(bucket), None)
            .query("list-type", "2")
            .query("encoding-type", "url")
            .query("max-keys", "1000");
        if !prefix.is_empty() {
            call = call.query("prefix", prefix);
        }
        if let Some(t) = token {
            call = call.query("continuation-token", t);
        }
        let root = self.xml_of(&call).await?;
        let encoded = root.text_of("EncodingType").is_some_and(|e| e.eq_ignore_ascii_case("url"));
        let decode = |s: &str| -> Result<String> {
            if !encoded {
                return Ok(s.to_string());
            }
            percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|e| {
                ObjStoreError::Protocol {
                    op: call.op.into(),
                    target: call.target(),
                    detail: format!("listed key is not UTF-8: {e}"),
                }
            })
        };
        let mut out = Vec::new();
        for c in root.all("Contents") {
            let key = decode(c.text_of("Key").unwrap_or_default())?;
            let size = c.text_of("Size").unwrap_or("0").trim().parse::<u64>().map_err(|e| ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail: format!("bad Size for {key:?}: {e}"),
            })?;
            out.push(ObjectInfo {
                key,
                size,
                etag: unquote(c.text_of("ETag").unwrap_or_default()),
                last_modified: c.text_of("LastModified").unwrap_or_default().to_string(),
            });
        }
        let truncated = root.text_of("IsTruncated").is_some_and(|t| t.trim() == "true");
        let next = if truncated {
            let t = root.text_of("NextContinuationToken").unwrap_or_default().to_string();
            if t.is_empty() {
                return Err(ObjStoreError::Protocol {
                    op: call.op.into(),
                    target: call.target(),
                    detail: "listing is truncated but carries no continuation token".into(),
                });
            }
            Some(t)
        } else {
            None
        };
        Ok((out, next))
    }

    /// Every object under `prefix`, in the server's (byte) order.
    pub async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = self.list_page(bucket, prefix, token.as_deref()).await?;
            all.extend(page);
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                Some(_) => {
                    return Err(ObjStoreError::Protocol {
                        op: "ListObjectsV2".into(),
                        target: bucket.into(),
                        detail: "server repeated a continuation token".into(),
                    });
                }
                None => return Ok(all),
            }
        }
    }

    fn head_from(resp: &Response<Incoming>) -> ObjectHead {
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut metadata = BTreeMap::new();
        for (name, value) in h {
            if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-") {
                metadata.insert(meta.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
        }
        ObjectHead {
            size: get("content-length").and_then(|s| s.parse().ok()).unwrap_or(0),
            etag: get("etag").map(|e| unquote(&e)).unwrap_or_default(),
            last_modified: get("last-modified"),
            content_type: get("content-type"),
            metadata,
        }
    }

    /// Size, ETag, content type and user metadata of one object.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectHead> {
        let resp = self.send(&Call::new("HeadObject", Method::HEAD, Some(bucket), Some(key))).await?;
        Ok(Self::head_from(&resp))
    }

    /// Starts reading an object. With `expect`, the server must still hold exactly that
    /// version (`If-Match` on its ETag, and the listed size), or the read fails with
    /// [`ObjStoreError::Changed`].
    pub async fn get_object(&self, bucket: &str, key: &str, expect: Option<&ObjectInfo>) -> Result<ObjectBody> {
        let mut call = Call::new("GetObject", Method::GET, Some(bucket), Some(key));
        if let Some(info) = expect {
            call = call.header("if-match", &format!("\"{}\"", info.etag));
        }
        let resp = self.send(&call).await?;
        let head = Self::head_from(&resp);
        if let Some(info) = expect
            && head.size != info.size
        {
            return Err(ObjStoreError::Changed {
                bucket: bucket.into(),
                key: key.into(),
                detail: format!("listed with {} bytes, now {} bytes", info.size, head.size),
            });
        }
        Ok(ObjectBody {
            store: self.clone(),
            bucket: bucket.into(),
            key: key.into(),
            head,
            offset: 0,
            body: Some(resp.into_body()),
            resumes: 0,
        })
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

    fn put_headers<'a>(mut call: Call<'a>, opts: &PutOptions) -> Call<'a> {
        if let Some(ct) = &opts.content_type {
            call = call.header("content-type", ct);
        }
        for (k, v) in &opts.metadata {
            call = call.header(&format!("x-amz-meta-{k}"), v);
        }
        call
    }

    /// Stores a whole object in one request. Returns its ETag.
    pub async fn put_object(&self, bucket: &str, key: &str, body: Bytes, opts: &PutOptions) -> Result<String> {
        let call = Self::put_headers(Call::new("PutObject", Method::PUT, Some(bucket), Some(key)), opts).body(body);
        let resp = self.send(&call).await?;
        Ok(Self::head_from(&resp).etag)
    }

    /// Starts a multipart upload and returns its id.
    pub async fn create_multipart(&self, bucket: &str, key: &str, opts: &PutOptions) -> Result<String> {
        let call = Self::put_headers(
            Call::new("CreateMultipartUpload", Method::POST, Some(bucket), Some(key)).query("uploads", ""),
            opts,
        );
        let root = self.xml_of(&call).await?;
        root.text_of("UploadId").map(str::to_string).filter(|s| !s.is_empty()).ok_or_else(|| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail: "no UploadId in answer".into(),
        })
    }

    /// Uploads part `number` (1-based) and returns its ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String> {
        let call = Call::new("UploadPart", Method::PUT, Some(bucket), Some(key))
            .query("partNumber", &number.to_string())
            .query("uploadId", upload_id)
            .body(body);
        let resp = self.send(&call).await?;
        let etag = Self::head_from(&resp).etag;
        if etag.is_empty() {
            return Err(ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail: "part has no ETag".into(),
            });
        }
        Ok(etag)
    }

    /// Completes a multipart upload from `(part number, ETag)` pairs; returns the object's ETag.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<String> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>", xml::escape(etag)));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let call = Call::new("CompleteMultipartUpload", Method::POST, Some(bucket), Some(key))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml")
            .body(Bytes::from(xml));
        let root = self.xml_of(&call).await?;
        Ok(unquote(root.text_of("ETag").unwrap_or_default()))
    }

    /// Abandons a multipart upload so its parts do not linger on the server.
    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let call =
            Call::new("AbortMultipartUpload", Method::DELETE, Some(bucket), Some(key)).query("uploadId", upload_id);
        self.send(&call).await.map(|_| ())
    }

    /// Deletes one object (no error when it is already gone).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        match self.send(&Call::new("DeleteObject", Method::DELETE, Some(bucket), Some(key))).await {
            Ok(_) | Err(ObjStoreError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes every object under `prefix`, `parallel` requests at a time; returns how many.
    pub async fn delete_all(&self, bucket: &str, prefix: &str, parallel: usize) -> Result<u64> {
        use futures_util::StreamExt;
        let objects = self.list_all(bucket, prefix).await?;
        let n = objects.len() as u64;
        let mut deletes = futures_util::stream::iter(objects.iter().map(|o| self.delete_object(bucket, &o.key)))
            .buffer_unordered(parallel.max(1));
        while let Some(r) = deletes.next().await {
            r?;
        }
        Ok(n)
    }

    /// Uploads an object whose bytes arrive as chunks, going multipart above
    /// [`MULTIPART_THRESHOLD`]. Memory stays within one part. On failure a started multipart
    /// upload is aborted, so nothing half-written is left visible.
    pub async fn upload_stream<S>(&self, bucket: &str, key: &str, opts: &PutOptions, mut chunks: S) -> Result<String>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        use futures_util::StreamExt;
        let mut buf: Vec<u8> = Vec::new();
        let mut upload: Option<(String, Vec<(u32, String)>)> = None;
        let fail = |e: std::io::Error| ObjStoreError::Protocol {
            op: "Upload".into(),
            target: format!("{bucket}/{key}"),
            detail: format!("source failed: {e}"),
        };
        let result: Result<String> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(fail)?;
                buf.extend_from_slice(&chunk);
                while buf.len() >= PART_SIZE {
                    if upload.is_none() {
                        upload = Some((self.create_multipart(bucket, key, opts).await?, Vec::new()));
                    }
                    let rest = buf.split_off(PART_SIZE);
                    let part = Bytes::from(std::mem::replace(&mut buf, rest));
                    if let Some((id, parts)) = upload.as_mut() {
                        let n = parts.len() as u32 + 1;
                        let etag = self.upload_part(bucket, key, id, n, part).await?;
                        parts.push((n, etag));
                    }
                }
            }
            match upload.as_mut() {
                None => self.put_object(bucket, key, Bytes::from(std::mem::take(&mut buf)), opts).await,
                Some((id, parts)) => {
                    if !buf.is_empty() {
                        let n = parts.len() as u32 + 1;
                        let etag = self.upload_part(bucket, key, id, n, Bytes::from(std::mem::take(&mut buf))).await?;
                        parts.push((n, etag));
                    }
                    self.complete_multipart(bucket, key, id, parts).await
                }
            }
        }
        .await;
        if result.is_err()
            && let Some((id, _)) = &upload
            && let Err(e) = self.abort_multipart(bucket, key, id).await
        {
            tracing::warn!(bucket, key, error = %e, "could not abort multipart upload");
        }
        result
    }
}

/// The body of a GET, read piece by piece with a timeout on each piece. A connection that
/// breaks mid-body is resumed with a ranged GET pinned to the same ETag, so a large object
/// survives a flaky network without being read twice.
pub struct ObjectBody {
    store: ObjectStore,
    bucket: String,
    key: String,
    /// What the server said about the object when the read began.
    pub head: ObjectHead,
    offset: u64,
    body: Option<Incoming>,
    resumes: u32,
}

impl ObjectBody {
    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next piece of the body, `None` at the end. Fails if the object turns out shorter or
    /// longer than announced, or changes.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let timeout = self.store.inner.cfg.read_timeout;
            let failure = match self.body.as_mut() {
                None => None,
                Some(body) => match tokio::time::timeout(timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.offset += data.len() as u64;
                            if self.offset > self.head.size {
                                return Err(self.changed("more bytes than its size"));
                            }
                            if !data.is_empty() {
                                return Ok(Some(data));
                            }
                        }
                        continue;
                    }
                    Ok(None) => {
                        self.body = None;
                        if self.offset == self.head.size {
                            return Ok(None);
                        }
                        Some(format!("body ended after {} of {} bytes", self.offset, self.head.size))
                    }
                    Ok(Some(Err(e))) => Some(e.to_string()),
                    Err(_) => Some(format!("no data for {}s", timeout.as_secs())),
                },
            };
            let Some(reason) = failure else {
                return Ok(None);
            };
            if self.resumes >= self.store.inner.cfg.max_attempts {
                return Err(ObjStoreError::Unreachable {
                    endpoint: self.store.endpoint().into(),
                    op: "GetObject".into(),
                    reason: format!("{}/{}: {reason}", self.bucket, self.key),
                });
            }
            self.resumes += 1;
            tracing::warn!(bucket = %self.bucket, key = %self.key, offset = self.offset, %reason, "resuming object read");
            let call = Call::new("GetObject", Method::GET, Some(&self.bucket), Some(&self.key))
                .header("if-match", &format!("\"{}\"", self.head.etag))
                .header("range", &format!("bytes={}-", self.offset));
            let resp = self.store.send(&call).await?;
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(self.changed("server ignored the resume range"));
            }
            self.body = Some(resp.into_body());
        }
    }

    fn changed(&self, detail: &str) -> ObjStoreError {
        ObjStoreError::Changed { bucket: self.bucket.clone(), key: self.key.clone(), detail: detail.into() }
    }
}
