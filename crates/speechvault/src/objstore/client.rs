//! Requests: building, signing, sending with retries and timeouts.
//!
//! Retry policy: a request is repeated only when repeating it cannot do harm. Idempotent
//! requests (GET, HEAD, PUT of a whole object or a part, DELETE, listings) are retried after
//! connection errors, timeouts, 5xx answers and throttling. Others (creating and completing a
//! multipart upload) are retried only when the server certainly did not act on them (the
//! connection was refused, or it answered 503 SlowDown / 429); their callers reconcile every
//! other failure. Backoff is exponential with full jitter and honours `Retry-After`.
//!
//! Timeouts measure stalls: a request fails when neither its body nor the server has made
//! progress for `read_timeout`, so an 8 MiB part over a slow link is not cut off as long as
//! bytes keep moving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Body, ObjStoreError, ObjectStore, Result, sigv4, xml};

/// Longest pause a server can ask for with `Retry-After` before we give up waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Upload bodies are handed to the connection in pieces of this size, so progress is visible.
const BODY_PIECE: usize = 64 * 1024;

/// One request, before signing.
pub(crate) struct Call<'a> {
    pub op: &'static str,
    pub method: Method,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    pub query: Vec<(String, String)>,
    /// Lower-case names; values as bytes (user metadata may hold any byte but control ones).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// Whether sending it twice has the same effect as sending it once.
    pub idempotent: bool,
}

impl<'a> Call<'a> {
    pub fn new(op: &'static str, method: Method, bucket: Option<&'a str>, key: Option<&'a str>) -> Self {
        let idempotent = method != Method::POST;
        Self { op, method, bucket, key, query: Vec::new(), headers: Vec::new(), body: Bytes::new(), idempotent }
    }
    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }
    pub fn header(self, k: &str, v: &str) -> Self {
        self.header_bytes(k, v.as_bytes())
    }
    pub fn header_bytes(mut self, k: &str, v: &[u8]) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.to_vec()));
        self
    }
    pub fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }
    pub fn target(&self) -> String {
        match (self.bucket, self.key) {
            (Some(b), Some(k)) => format!("{b}/{k}"),
            (Some(b), None) => b.to_string(),
            _ => "/".to_string(),
        }
    }
}

pub(crate) fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

/// A failed attempt, and whether (and when) another attempt may follow.
struct Attempt {
    error: ObjStoreError,
    /// The server certainly did not act on the request.
    not_acted: bool,
    /// Transient: worth another try.
    transient: bool,
    retry_after: Option<Duration>,
}

/// Milliseconds since `base`, shared between the body and the watchdog.
#[derive(Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self { base: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
    fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// A request body in pieces that records when the connection takes each one.
fn tracked_body(data: Bytes, activity: Activity) -> Body {
    let pieces: Vec<Bytes> = if data.is_empty() {
        Vec::new()
    } else {
        (0..data.len()).step_by(BODY_PIECE).map(|at| data.slice(at..(at + BODY_PIECE).min(data.len()))).collect()
    };
    let stream = futures_util::stream::iter(pieces).map(move |piece| {
        activity.touch();
        Ok::<_, std::io::Error>(hyper::body::Frame::data(piece))
    });
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

use futures_util::StreamExt as _;

/// Parses `Retry-After` (seconds, or an HTTP date).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or_default().min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter: a random wait between half and all of
/// 200 ms * 2^(attempt-1), capped at 10 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(200u64 << (attempt.saturating_sub(1)).min(6)).min(Duration::from_secs(10));
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    cap.mul_f64(jitter)
}

impl ObjectStore {
    pub(crate) fn path_of(bucket: Option<&str>, key: Option<&str>) -> String {
        match (bucket, key) {
            (Some(b), Some(k)) => format!("/{}/{}", sigv4::uri_encode(b, false), sigv4::uri_encode(k, true)),
            (Some(b), None) => format!("/{}", sigv4::uri_encode(b, false)),
            _ => "/".to_string(),
        }
    }

    fn build(&self, call: &Call<'_>, activity: &Activity) -> Result<Request<Body>> {
        let cfg = &self.inner.cfg;
        let path = Self::path_of(call.bucket, call.key);
        let query = sigv4::canonical_query(&call.query);
        let pq = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let uri = format!("{}://{}{}", self.inner.scheme, self.inner.authority, pq);
        let amz_date = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let payload_hash =
            if call.body.is_empty() { sigv4::EMPTY_SHA256.to_string() } else { sigv4::UNSIGNED_PAYLOAD.to_string() };
        let mut headers = call.headers.clone();
        headers.push(("host".into(), self.inner.authority.clone().into_bytes()));
        headers.push(("x-amz-date".into(), amz_date.clone().into_bytes()));
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone().into_bytes()));
        if let Some(token) = &cfg.session_token {
            headers.push(("x-amz-security-token".into(), token.expose().as_bytes().to_vec()));
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
            let value = http::HeaderValue::from_bytes(v).map_err(|e| ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail: format!("header {k} cannot be sent: {e}"),
            })?;
            req = req.header(k.as_str(), value);
        }
        req = req.header("authorization", auth).header("content-length", call.body.len().to_string());
        req.body(tracked_body(call.body.clone(), activity.clone())).map_err(|e| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail: format!("cannot build request: {e}"),
        })
    }

    /// One attempt: sends and waits for the response headers, failing when nothing moved for
    /// `read_timeout`.
    async fn attempt(&self, call: &Call<'_>) -> std::result::Result<Response<Incoming>, Attempt> {
        let cfg = &self.inner.cfg;
        let activity = Activity::new();
        let req = self.build(call, &activity).map_err(|error| Attempt {
            error,
            not_acted: true,
            transient: false,
            retry_after: None,
        })?;
        let mut fut = std::pin::pin!(self.inner.client.request(req));
        let outcome = loop {
            let idle = activity.idle();
            if idle >= cfg.read_timeout {
                break None;
            }
            tokio::select! {
                r = &mut fut => break Some(r),
                () = tokio::time::sleep(cfg.read_timeout - idle) => {}
            }
        };
        let timeout = || ObjStoreError::Timeout {
            endpoint: cfg.endpoint.clone(),
            op: call.op.into(),
            secs: cfg.read_timeout.as_secs(),
        };
        match outcome {
            None => Err(Attempt { error: timeout(), not_acted: false, transient: true, retry_after: None }),
            Some(Err(e)) => {
                let not_acted = e.is_connect();
                let mut reason = e.to_string();
                let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason.push_str(": ");
                    reason.push_str(&s.to_string());
                    src = s.source();
                }
                Err(Attempt {
                    error: ObjStoreError::Unreachable { endpoint: cfg.endpoint.clone(), op: call.op.into(), reason },
                    not_acted,
                    transient: true,
                    retry_after: None,
                })
            }
            Some(Ok(resp)) => {
                let status = resp.status();
                if status.is_success() || status == StatusCode::NOT_MODIFIED {
                    return Ok(resp);
                }
                let wait = retry_after(resp.headers());
                let error = self.error_from(call, resp).await;
                let code = match &error {
                    ObjStoreError::Http { code, .. } => code.as_str(),
                    _ => "",
                };
                let throttled = status == StatusCode::TOO_MANY_REQUESTS || code == "SlowDown";
                // 501 Not Implemented is an answer, not a passing fault.
                let transient = (status.is_server_error() && status.as_u16() != 501) || throttled;
                Err(Attempt { error, not_acted: throttled, transient, retry_after: wait })
            }
        }
    }

    /// Sends with retries; returns the response once its status is a success.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Response<Incoming>> {
        let cfg = &self.inner.cfg;
        // One slot for the request, whatever it takes; the response carries it (a GET's body
        // keeps it until read), so `--max-requests` bounds connections really in use.
        let slot = self.inner.limiter.slot().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failed = match self.attempt(call).await {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(slot);
                    return Ok(resp);
                }
                Err(a) => a,
            };
            let may_repeat = failed.transient && (call.idempotent || failed.not_acted);
            if !may_repeat || attempt >= cfg.max_attempts {
                return Err(failed.error);
            }
            let wait = failed.retry_after.unwrap_or_else(|| backoff(attempt));
            tracing::warn!(op = call.op, target = %call.target(), attempt, wait_ms = wait.as_millis() as u64,
                error = %failed.error, "retrying S3 request");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends and reads the whole (small) response body; a body cut short is retried like a
    /// failed request when the call is idempotent.
    pub(crate) async fn send_read(&self, call: &Call<'_>) -> Result<(http::HeaderMap, Bytes)> {
        let cfg = &self.inner.cfg;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(call).await?;
            let headers = resp.headers().clone();
            let err = match tokio::time::timeout(cfg.read_timeout, resp.into_body().collect()).await {
                Ok(Ok(c)) => return Ok((headers, c.to_bytes())),
                Ok(Err(e)) => ObjStoreError::Unreachable {
                    endpoint: cfg.endpoint.clone(),
                    op: call.op.into(),
                    reason: format!("response body broken: {e}"),
                },
                Err(_) => ObjStoreError::Timeout {
                    endpoint: cfg.endpoint.clone(),
                    op: call.op.into(),
                    secs: cfg.read_timeout.as_secs(),
                },
            };
            if !call.idempotent || attempt >= cfg.max_attempts {
                return Err(err);
            }
            tracing::warn!(op = call.op, target = %call.target(), attempt, error = %err, "retrying S3 request");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Sends and parses an XML answer. S3 may answer 200 with an `<Error>` document (notably
    /// CompleteMultipartUpload); that is an error too.
    pub(crate) async fn xml_of(&self, call: &Call<'_>) -> Result<xml::Element> {
        let (_, body) = self.send_read(call).await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(10), "{d:?}");
            assert!(d >= Duration::from_millis(100), "{d:?}");
        }
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
