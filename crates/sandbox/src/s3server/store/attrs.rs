//! The object attributes the sandbox's server keeps besides type and user metadata, as S3
//! does: the standard headers, storage class, website redirect, checksums, object lock state
//! and tags. What a PUT (or CreateMultipartUpload) sets comes back with GET and HEAD.

use std::collections::BTreeMap;

use s3s::dto::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// HTTP date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mode: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold: Option<String>,
}

pub(crate) fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub(crate) fn date_time(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::DateTime, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// Tags as `x-amz-tagging` carries them: a URL query string.
pub(crate) fn parse_tagging_header(h: &str) -> Result<BTreeMap<String, String>, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|e| format!("x-amz-tagging is not UTF-8: {e}"))
    };
    let mut tags = BTreeMap::new();
    for pair in h.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if tags.insert(decode(k)?, decode(v)?).is_some() {
            return Err(format!("tag {k:?} twice"));
        }
    }
    if tags.len() > 10 {
        return Err("more than 10 tags".into());
    }
    Ok(tags)
}

/// What an object's writer set: the fields PutObject and CreateMultipartUpload share.
macro_rules! from_input {
    ($input:expr) => {{
        let i = &$input;
        let mut a = $crate::s3server::store::attrs::StoredAttrs {
            content_encoding: i.content_encoding.clone(),
            content_disposition: i.content_disposition.clone(),
            content_language: i.content_language.clone(),
            cache_control: i.cache_control.clone(),
            expires: i.expires.as_ref().and_then($crate::s3server::store::attrs::http_date),
            storage_class: i.storage_class.as_ref().map(|c| c.as_str().to_string()).filter(|c| c != "STANDARD"),
            website_redirect: i.website_redirect_location.clone(),
            lock_mode: i.object_lock_mode.as_ref().map(|m| m.as_str().to_string()),
            lock_until: i.object_lock_retain_until_date.as_ref().and_then($crate::s3server::store::attrs::date_time),
            legal_hold: i.object_lock_legal_hold_status.as_ref().map(|m| m.as_str().to_string()),
            ..Default::default()
        };
        if let Some(t) = &i.tagging {
            a.tags = $crate::s3server::store::attrs::parse_tagging_header(t)
                .map_err(|e| s3s::s3_error!(InvalidArgument, "x-amz-tagging: {e}"))?;
        }
        a
    }};
}
pub(crate) use from_input;

/// The checksums a PutObject carried.
pub(crate) fn checksums_of(i: &PutObjectInput) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, v) in [
        ("crc32", &i.checksum_crc32),
        ("crc32c", &i.checksum_crc32c),
        ("crc64nvme", &i.checksum_crc64nvme),
        ("sha1", &i.checksum_sha1),
        ("sha256", &i.checksum_sha256),
    ] {
        if let Some(v) = v {
            out.insert(name.to_string(), v.clone());
        }
    }
    out
}

/// Sets the attributes on a GET or HEAD answer (the fields both share).
macro_rules! fill_output {
    ($out:expr, $a:expr) => {{
        let (o, a) = (&mut $out, &$a);
        o.content_encoding = a.content_encoding.clone();
        o.content_disposition = a.content_disposition.clone();
        o.content_language = a.content_language.clone();
        o.cache_control = a.cache_control.clone();
        o.expires = a.expires.as_deref().and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok());
        o.storage_class = a.storage_class.clone().map(StorageClass::from);
        o.website_redirect_location = a.website_redirect.clone();
        o.object_lock_mode = a.lock_mode.clone().map(ObjectLockMode::from);
        o.object_lock_retain_until_date =
            a.lock_until.as_deref().and_then(|s| Timestamp::parse(TimestampFormat::DateTime, s).ok());
        o.object_lock_legal_hold_status = a.legal_hold.clone().map(ObjectLockLegalHoldStatus::from);
        o.checksum_crc32 = a.checksums.get("crc32").cloned();
        o.checksum_crc32c = a.checksums.get("crc32c").cloned();
        o.checksum_crc64nvme = a.checksums.get("crc64nvme").cloned();
        o.checksum_sha1 = a.checksums.get("sha1").cloned();
        o.checksum_sha256 = a.checksums.get("sha256").cloned();
    }};
}
pub(crate) use fill_output;

/// A `Tagging` document's tags.
pub(crate) fn tags_of(t: &Tagging) -> BTreeMap<String, String> {
    t.tag_set.iter().map(|tag| (tag.key.clone().unwrap_or_default(), tag.value.clone().unwrap_or_default())).collect()
}

/// Tags as a `TagSet`.
pub(crate) fn tag_set(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter().map(|(k, v)| Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_headers_decode() {
        let tags = parse_tagging_header("a%20b=x%26y%3Dz&k=&plus=1+2").unwrap();
        assert_eq!(tags["a b"], "x&y=z");
        assert_eq!(tags["k"], "");
        assert_eq!(tags["plus"], "1 2");
        assert!(parse_tagging_header("a=1&a=2").is_err());
    }
}
