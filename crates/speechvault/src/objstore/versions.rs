//! Object versions and retention (S3 Object Lock): what an immutable repository is built on.
//!
//! In a bucket with object lock, a plain DELETE only adds a delete marker and a PUT over a key
//! only adds a version: the versions written with a retain-until date stay until then. These
//! calls list every version, read and delete one version, and read or extend its retention.
//! The server's clock decides when a retention ends, so [`ObjectStore::server_time`] reads it
//! from the `Date` header rather than trusting the local clock.

use bytes::Bytes;
use http::Method;
use md5::{Digest as _, Md5};

use super::client::{Call, unquote};
use super::listing::decode_listing_key;
use super::{ObjStoreError, ObjectStore, Result, xml};

/// One version (or delete marker) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub etag: String,
    /// RFC 3339, as listed.
    pub last_modified: String,
    pub is_latest: bool,
    /// A delete marker: the key reads as absent while this is its newest version.
    pub delete_marker: bool,
}

/// Object lock's two modes: governance can be bypassed by a key with that permission,
/// compliance by nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn header(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "GOVERNANCE" => Some(Self::Governance),
            "COMPLIANCE" => Some(Self::Compliance),
            _ => None,
        }
    }
}

/// A version's retention, as the server holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: jiff::Timestamp,
}

/// One page of ListObjectVersions: the versions and markers, and where the next page starts.
type VersionsPage = (Vec<ObjectVersion>, Option<(String, String)>);

/// Parses one page of ListObjectVersions (`encoding-type=url`).
pub fn parse_versions_page(body: &[u8]) -> std::result::Result<VersionsPage, String> {
    let root = xml::parse(body)?;
    if root.name != "ListVersionsResult" {
        return Err(format!("expected ListVersionsResult, got {}", root.name));
    }
    let encoded = root.text_of("EncodingType").is_some_and(|e| e.trim().eq_ignore_ascii_case("url"));
    let key_of = |raw: &str| -> std::result::Result<String, String> {
        if encoded {
            decode_listing_key(raw).map_err(|e| format!("listed key {raw:?} is not UTF-8 once decoded: {e}"))
        } else {
            Ok(raw.to_string())
        }
    };
    let mut out = Vec::new();
    for c in &root.children {
        let delete_marker = match c.name.as_str() {
            "Version" => false,
            "DeleteMarker" => true,
            _ => continue,
        };
        let key = key_of(c.text_of("Key").ok_or("an entry has no Key")?)?;
        let size = c.text_of("Size").unwrap_or("0").trim().parse::<u64>().map_err(|e| format!("bad Size: {e}"))?;
        out.push(ObjectVersion {
            key,
            version_id: c.text_of("VersionId").unwrap_or("null").trim().to_string(),
            size,
            etag: unquote(c.text_of("ETag").unwrap_or_default()),
            last_modified: c.text_of("LastModified").unwrap_or_default().trim().to_string(),
            is_latest: c.text_of("IsLatest").is_some_and(|t| t.trim() == "true"),
            delete_marker,
        });
    }
    let next = if root.text_of("IsTruncated").is_some_and(|t| t.trim() == "true") {
        let k = key_of(root.text_of("NextKeyMarker").unwrap_or_default())?;
        let v = root.text_of("NextVersionIdMarker").unwrap_or_default().to_string();
        if k.is_empty() {
            return Err("listing is truncated but names no next key".into());
        }
        Some((k, v))
    } else {
        None
    };
    Ok((out, next))
}

impl ObjectStore {
    /// Every version and delete marker under `prefix`, newest first within a key.
    pub async fn list_versions(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectVersion>> {
        super::validate_bucket_name(bucket)?;
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut call = Call::new("ListObjectVersions", Method::GET, Some(bucket), None)
                .query("versions", "")
                .query("encoding-type", "url");
            if !prefix.is_empty() {
                call = call.query("prefix", prefix);
            }
            if let Some((k, v)) = &marker {
                call = call.query("key-marker", k);
                if !v.is_empty() {
                    call = call.query("version-id-marker", v);
                }
            }
            let (_, body) = self.send_read(&call).await?;
            let (page, next) = parse_versions_page(&body).map_err(|detail| ObjStoreError::Protocol {
                op: call.op.into(),
                target: call.target(),
                detail,
            })?;
            out.extend(page);
            match next {
                Some(n) if Some(&n) != marker.as_ref() => marker = Some(n),
                Some(_) => {
                    return Err(ObjStoreError::Protocol {
                        op: "ListObjectVersions".into(),
                        target: bucket.into(),
                        detail: "the server repeated a page marker".into(),
                    });
                }
                None => return Ok(out),
            }
        }
    }

    /// The whole body of one version.
    pub async fn get_version_bytes(&self, bucket: &str, key: &str, version: &str) -> Result<Bytes> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("GetObject", Method::GET, Some(bucket), Some(key)).query("versionId", version);
        Ok(self.send_read(&call).await?.1)
    }

    /// `length` bytes at `offset` of one version.
    pub async fn get_version_range(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes> {
        self.get_range_of(bucket, key, Some(version), offset, length).await
    }

    /// The retention of one version (`None`: it has none).
    pub async fn get_retention(&self, bucket: &str, key: &str, version: &str) -> Result<Option<Retention>> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("GetObjectRetention", Method::GET, Some(bucket), Some(key))
            .query("retention", "")
            .query("versionId", version);
        let root = match self.xml_of(&call).await {
            Ok(r) => r,
            Err(ObjStoreError::Http { status: 404, code, .. } | ObjStoreError::Http { status: 400, code, .. })
                if code.contains("NoSuchObjectLockConfiguration") || code == "InvalidRequest" =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mode = root.text_of("Mode").and_then(LockMode::parse);
        let until = root.text_of("RetainUntilDate").and_then(|t| t.trim().parse::<jiff::Timestamp>().ok());
        Ok(mode.zip(until).map(|(mode, until)| Retention { mode, until }))
    }

    /// Sets the retention of one version (it can only be extended, in compliance mode).
    pub async fn put_retention(&self, bucket: &str, key: &str, version: &str, r: Retention) -> Result<()> {
        self.put_retention_as(bucket, key, version, r, false).await
    }

    /// Sets the retention of one version bypassing governance retention (which lets it be
    /// shortened, by a key allowed `s3:BypassGovernanceRetention`).
    pub async fn put_retention_bypassing(&self, bucket: &str, key: &str, version: &str, r: Retention) -> Result<()> {
        self.put_retention_as(bucket, key, version, r, true).await
    }

    async fn put_retention_as(&self, bucket: &str, key: &str, version: &str, r: Retention, bypass: bool) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let doc = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            r.mode.header(),
            retain_date(r.until)
        );
        let body = Bytes::from(doc);
        let md5 = crate::support::encoding::base64(&Md5::digest(&body));
        let call = Call::new("PutObjectRetention", Method::PUT, Some(bucket), Some(key))
            .query("retention", "")
            .query("versionId", version)
            .header("content-md5", &md5)
            .body(body);
        let call = if bypass { call.header("x-amz-bypass-governance-retention", "true") } else { call };
        self.send(&call).await.map(|_| ())
    }

    /// The server's clock, from the `Date` of a cheap answer (HEAD of the bucket).
    pub async fn server_time(&self, bucket: &str) -> Result<jiff::Timestamp> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("HeadBucket", Method::HEAD, Some(bucket), None);
        let resp = self.send(&call).await?;
        let date = resp.headers().get("date").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        parse_http_date(&date).ok_or_else(|| ObjStoreError::Protocol {
            op: call.op.into(),
            target: call.target(),
            detail: format!("the answer's Date {date:?} is not an HTTP date"),
        })
    }
}

/// A retain-until date as S3 takes it (RFC 3339, UTC, whole seconds).
pub fn retain_date(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).map(|r| r.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|_| t.to_string())
}

/// An RFC 7231 date (`Mon, 07 Dec 2026 11:00:49 GMT`).
pub fn parse_http_date(s: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::parse(s.trim()).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pages_parse_with_markers_and_encoded_keys() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextKeyMarker>data/ab/x%20y</NextKeyMarker><NextVersionIdMarker>v2</NextVersionIdMarker>
<Version><Key>data/ab/x%20y</Key><VersionId>v3</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-07T11:00:49.000Z</LastModified><ETag>&quot;5d41402abc4b2a76b9719d911017c592&quot;</ETag><Size>5</Size></Version>
<DeleteMarker><Key>data/ab/x%20y</Key><VersionId>v4</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-07T11:01:00.000Z</LastModified></DeleteMarker>
</ListVersionsResult>"#;
        let (v, next) = parse_versions_page(body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key, "data/ab/x y");
        assert!(!v[0].delete_marker && v[1].delete_marker && v[1].is_latest);
        assert_eq!(v[0].etag, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(next, Some(("data/ab/x y".into(), "v2".into())));
        assert!(parse_versions_page(b"<ListBucketResult/>").is_err());
    }

    #[test]
    fn dates_round_trip() {
        let t = parse_http_date("Mon, 07 Dec 2026 11:00:49 GMT").unwrap();
        assert_eq!(retain_date(t), "2026-12-07T11:00:49Z");
        assert!(parse_http_date("yesterday").is_none());
    }
}
