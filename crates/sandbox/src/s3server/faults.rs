//! Faults on demand, for the tests: a layer in front of the S3 service that, following rules
//! in `<sandbox>/faults.json`, answers 500/503/SlowDown (with or without `Retry-After`), resets
//! connections (before or after carrying out a request), stalls, truncates response bodies and
//! adds latency. The file is read again whenever it changes, so a test can change the faults
//! while a backup or restore runs; each rule fires a given number of times.
//!
//! ```json
//! [{"method": "GET", "key_contains": "audio", "skip": 2, "times": 3,
//!   "fault": {"kind": "status", "status": 503, "code": "SlowDown", "retry_after": 1}}]
//! ```

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a matching request gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// An error answer instead of carrying out the request.
    Status { status: u16, code: String, retry_after: Option<u64> },
    /// The connection closes without an answer; the request is not carried out.
    Reset,
    /// The request is carried out, then the connection closes without an answer.
    ResetAfter,
    /// Nothing happens for `secs`, then the connection closes.
    Stall { secs: u64 },
    /// The answer's body stops after `after_bytes` and the connection breaks.
    Truncate { after_bytes: u64 },
    /// The request is carried out after `ms` milliseconds.
    Latency { ms: u64 },
    /// The request body is read (and the answer's body sent) at this rate: a slow link.
    SlowBody { bytes_per_sec: u64 },
    /// The request is carried out and its answer carries this header with this value (a
    /// server that answers something in a form a client cannot take as it is).
    Header { name: String, value: String },
}

/// Which requests a rule applies to, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// HTTP method (`GET`, `PUT`, `POST`, `DELETE`, `HEAD`); any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A query parameter the request must carry (`uploads`, `uploadId`, `partNumber`, `list-type`).
    #[serde(default)]
    pub query_has: Option<String>,
    /// A substring of the request path (bucket and percent-encoded key).
    #[serde(default)]
    pub key_contains: Option<String>,
    /// Matching requests to let through before the fault starts.
    #[serde(default)]
    pub skip: u32,
    /// Matching requests that get the fault (then the rule is spent); 0 means always.
    #[serde(default)]
    pub times: u32,
    pub fault: Fault,
}

impl Rule {
    fn matches(&self, method: &http::Method, path: &str, query: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.key_contains.as_deref().is_none_or(|k| path.contains(k))
            && self.query_has.as_deref().is_none_or(|q| query.split('&').any(|p| p.split('=').next() == Some(q)))
    }
}

struct Loaded {
    modified: Option<SystemTime>,
    rules: Vec<Rule>,
    /// Per rule: matches seen, faults given.
    counts: Vec<(u32, u32)>,
}

/// The rules of one server, re-read when their file changes.
pub struct Faults {
    path: PathBuf,
    state: Mutex<Loaded>,
}

impl Faults {
    pub fn new(path: PathBuf) -> Self {
        Self { path, state: Mutex::new(Loaded { modified: None, rules: Vec::new(), counts: Vec::new() }) }
    }

    /// The fault for this request, if a rule gives one.
    pub fn pick(&self, method: &http::Method, path: &str, query: &str) -> Option<Fault> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut st = self.state.lock().ok()?;
        if modified != st.modified {
            st.modified = modified;
            st.rules = std::fs::read(&self.path)
                .ok()
                .and_then(|raw| match serde_json::from_slice::<Vec<Rule>>(&raw) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!("faults file {}: {e}", self.path.display());
                        None
                    }
                })
                .unwrap_or_default();
            st.counts = vec![(0, 0); st.rules.len()];
        }
        for i in 0..st.rules.len() {
            if !st.rules[i].matches(method, path, query) {
                continue;
            }
            let (skip, times) = (st.rules[i].skip, st.rules[i].times);
            let (seen, given) = st.counts[i];
            st.counts[i].0 = seen + 1;
            if seen < skip || (times > 0 && given >= times) {
                continue;
            }
            st.counts[i].1 = given + 1;
            tracing::info!(%method, path, fault = ?st.rules[i].fault, "injecting fault");
            return Some(st.rules[i].fault.clone());
        }
        None
    }
}

/// A response body that breaks after `left` bytes.
pub struct Truncated<B> {
    pub inner: B,
    pub left: u64,
}

impl<B> hyper::body::Body for Truncated<B>
where
    B: hyper::body::Body<Data = Bytes, Error = s3s::StdError> + Unpin,
{
    type Data = Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.left == 0 {
            return Poll::Ready(Some(Err("injected fault: body truncated".into())));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() as u64 > self.left {
                        data = data.slice(..self.left as usize);
                    }
                    self.left -= data.len() as u64;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }
}

/// A body that moves at most `rate` bytes per second.
pub struct Throttled<B> {
    pub inner: B,
    pub rate: u64,
    pub wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Throttled<B> {
    pub fn new(inner: B, rate: u64) -> Self {
        Self { inner, rate: rate.max(1), wait: None }
    }
}

impl<B> hyper::body::Body for Throttled<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(w) = self.wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let secs = data.len() as f64 / self.rate as f64;
            self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(secs))));
        }
        polled
    }
}

use std::future::Future as _;

/// How long a stall lasts at most, whatever the rule says.
pub const MAX_STALL: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_skip_then_fire_a_number_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.json");
        let rules = vec![Rule {
            method: Some("GET".into()),
            query_has: None,
            key_contains: Some("audio".into()),
            skip: 1,
            times: 2,
            fault: Fault::Status { status: 503, code: "SlowDown".into(), retry_after: Some(1) },
        }];
        std::fs::write(&path, serde_json::to_vec(&rules).unwrap()).unwrap();
        let f = Faults::new(path);
        let get = http::Method::GET;
        assert_eq!(f.pick(&get, "/b/other", ""), None);
        assert_eq!(f.pick(&get, "/b/audio.wav", ""), None, "skipped");
        assert!(f.pick(&get, "/b/audio.wav", "").is_some());
        assert!(f.pick(&http::Method::PUT, "/b/audio.wav", "").is_none());
        assert!(f.pick(&get, "/b/audio.wav", "").is_some());
        assert_eq!(f.pick(&get, "/b/audio.wav", ""), None, "spent");
    }
}
