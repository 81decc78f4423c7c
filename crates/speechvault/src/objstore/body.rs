//! The body of a GET, read piece by piece with a timeout on each piece.
//!
//! A connection that breaks mid-body is resumed with a ranged GET pinned to the same ETag
//! (`If-Match`). The answer is checked before a byte of it is used: its ETag must be the
//! original one and its `Content-Range` must start where the read stopped and name the same
//! total size, so a server that ignores `If-Match` can never splice two versions of an object.
//! A server that ignores `Range` (answers 200 with the whole object) is handled by skipping
//! the bytes already read, again only when the ETag matches.

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::client::Call;
use super::{ObjStoreError, ObjectHead, ObjectStore, Result};

pub struct ObjectBody {
    store: ObjectStore,
    bucket: String,
    key: String,
    /// What the server said about the object when the read began.
    pub head: ObjectHead,
    offset: u64,
    body: Option<Incoming>,
    /// Bytes of the current body to drop before delivering (a resume the server answered
    /// with the whole object).
    skip: u64,
    resumes: u32,
    /// The request slot of the current body (see [`super::Limits`]).
    slot: Option<super::limits::RequestSlot>,
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total.trim().parse().ok()?))
}

impl ObjectBody {
    pub(crate) fn new(
        store: ObjectStore,
        bucket: &str,
        key: &str,
        head: ObjectHead,
        mut resp: http::Response<Incoming>,
    ) -> Self {
        let slot = resp.extensions_mut().remove::<super::limits::RequestSlot>();
        Self {
            store,
            bucket: bucket.into(),
            key: key.into(),
            head,
            offset: 0,
            body: Some(resp.into_body()),
            skip: 0,
            resumes: 0,
            slot,
        }
    }

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
                        if let Ok(mut data) = frame.into_data() {
                            if self.skip > 0 {
                                let drop = self.skip.min(data.len() as u64) as usize;
                                self.skip -= drop as u64;
                                data = data.slice(drop..);
                            }
                            self.offset += data.len() as u64;
                            if self.offset > self.head.size {
                                return Err(self.changed("more bytes than its size"));
                            }
                            if !data.is_empty() {
                                self.store.inner.limiter.read(data.len()).await;
                                return Ok(Some(data));
                            }
                        }
                        continue;
                    }
                    Ok(None) => {
                        self.body = None;
                        self.slot = None;
                        if self.offset == self.head.size && self.skip == 0 {
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
            self.resume().await?;
        }
    }

    async fn resume(&mut self) -> Result<()> {
        let call = Call::new("GetObject", Method::GET, Some(&self.bucket), Some(&self.key))
            .header("if-match", &format!("\"{}\"", self.head.etag))
            .header("range", &format!("bytes={}-", self.offset));
        // The broken body's slot goes first: with --max-requests 1 the resume needs it.
        self.body = None;
        self.slot = None;
        let mut resp = self.store.send(&call).await?;
        self.slot = resp.extensions_mut().remove::<super::limits::RequestSlot>();
        let status = resp.status();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(super::client::unquote);
        if etag.as_deref() != Some(self.head.etag.as_str()) {
            return Err(self.changed(&format!(
                "resumed read answered with ETag {}, expected {}",
                etag.unwrap_or_default(),
                self.head.etag
            )));
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).and_then(content_range);
                match range {
                    Some((start, _, total)) if start == self.offset && total == self.head.size => self.skip = 0,
                    other => {
                        return Err(self.changed(&format!(
                            "resumed read at byte {} answered with range {other:?} of {} bytes",
                            self.offset, self.head.size
                        )));
                    }
                }
            }
            StatusCode::OK => {
                // The server ignored Range: the same version (ETag checked) from its first byte.
                // Drop what was already delivered; `offset` keeps counting delivered bytes.
                tracing::debug!(bucket = %self.bucket, key = %self.key, "server ignored Range; skipping");
                self.skip = self.offset;
            }
            other => return Err(self.changed(&format!("resumed read answered with status {other}"))),
        }
        self.body = Some(resp.into_body());
        Ok(())
    }

    fn changed(&self, detail: &str) -> ObjStoreError {
        ObjStoreError::Changed { bucket: self.bucket.clone(), key: self.key.clone(), detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 100-199/1000"), Some((100, 199, 1000)));
        assert_eq!(content_range(" bytes 0-0/1 "), Some((0, 0, 1)));
        assert_eq!(content_range("bytes */1000"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
