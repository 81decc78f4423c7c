//! Everything a client can set on an object besides its bytes, content type and UTF-8 user
//! metadata, as a GET or HEAD returns it: the other standard headers, storage class, website
//! redirect, checksums, object lock state, user metadata that is not UTF-8, and tags.
//!
//! All of it comes with the GET a backup makes anyway, except the tags: the GET answers only
//! `x-amz-tagging-count`, so the few tagged objects need one `GetObjectTagging` each. On the
//! way back, everything goes out with the PUT (tags as `x-amz-tagging`), so a restore costs no
//! extra request either.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The headers that are stored as sent and returned as stored.
pub const STANDARD_HEADERS: [(&str, Field); 5] = [
    ("content-encoding", Field::ContentEncoding),
    ("content-disposition", Field::ContentDisposition),
    ("content-language", Field::ContentLanguage),
    ("cache-control", Field::CacheControl),
    ("expires", Field::Expires),
];

/// Checksum algorithms S3 records (`x-amz-checksum-<name>`).
pub const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// One attribute, by the name reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    ContentEncoding,
    ContentDisposition,
    ContentLanguage,
    CacheControl,
    Expires,
    StorageClass,
    WebsiteRedirect,
    /// User metadata values that are not UTF-8.
    MetadataBytes,
    Tags,
    Checksums,
    /// Per-object retention and legal hold.
    ObjectLock,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Self::ContentEncoding => "Content-Encoding",
            Self::ContentDisposition => "Content-Disposition",
            Self::ContentLanguage => "Content-Language",
            Self::CacheControl => "Cache-Control",
            Self::Expires => "Expires",
            Self::StorageClass => "storage class",
            Self::WebsiteRedirect => "website redirect",
            Self::MetadataBytes => "user metadata that is not UTF-8",
            Self::Tags => "tags",
            Self::Checksums => "checksums",
            Self::ObjectLock => "object lock retention and legal hold",
        }
    }
}

/// An object's attributes beyond its bytes, content type and UTF-8 user metadata. Empty (and
/// left out of manifests) for most objects. Values are kept as the server returned them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Only when not `STANDARD` (the default everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect: Option<String>,
    /// User metadata whose value is not UTF-8: name -> the value's bytes, base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata_bytes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Algorithm (`sha256`, `crc32c`, ...) -> the value the server gave (base64; a composite
    /// checksum of a multipart upload ends in `-<parts>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    /// `GOVERNANCE` or `COMPLIANCE`, with `lock_retain_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_retain_until: Option<String>,
    /// `ON` or `OFF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold: Option<String>,
}

impl ObjectAttributes {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    fn standard_mut(&mut self, f: Field) -> &mut Option<String> {
        match f {
            Field::ContentEncoding => &mut self.content_encoding,
            Field::ContentDisposition => &mut self.content_disposition,
            Field::ContentLanguage => &mut self.content_language,
            Field::CacheControl => &mut self.cache_control,
            _ => &mut self.expires,
        }
    }

    fn standard(&self, f: Field) -> &Option<String> {
        match f {
            Field::ContentEncoding => &self.content_encoding,
            Field::ContentDisposition => &self.content_disposition,
            Field::ContentLanguage => &self.content_language,
            Field::CacheControl => &self.cache_control,
            _ => &self.expires,
        }
    }

    /// The attributes a restore would send: the fields that are set.
    pub fn fields(&self) -> Vec<Field> {
        let mut out: Vec<Field> =
            STANDARD_HEADERS.iter().filter(|(_, f)| self.standard(*f).is_some()).map(|(_, f)| *f).collect();
        let checks = [
            (Field::StorageClass, self.storage_class.is_some()),
            (Field::WebsiteRedirect, self.website_redirect.is_some()),
            (Field::MetadataBytes, !self.metadata_bytes.is_empty()),
            (Field::Tags, !self.tags.is_empty()),
            (Field::Checksums, !self.restorable_checksums().is_empty()),
            (Field::ObjectLock, self.lock_mode.is_some() || self.legal_hold.as_deref() == Some("ON")),
        ];
        out.extend(checks.into_iter().filter(|(_, set)| *set).map(|(f, _)| f));
        out
    }

    /// Only `field` of these attributes (what a probe of that one attribute sends).
    pub fn only(&self, field: Field) -> Self {
        let mut a = Self::default();
        match field {
            Field::StorageClass => a.storage_class = self.storage_class.clone(),
            Field::WebsiteRedirect => a.website_redirect = self.website_redirect.clone(),
            Field::MetadataBytes => a.metadata_bytes = self.metadata_bytes.clone(),
            Field::Tags => a.tags = self.tags.clone(),
            Field::Checksums => a.checksums = self.checksums.clone(),
            Field::ObjectLock => {
                a.lock_mode = self.lock_mode.clone();
                a.lock_retain_until = self.lock_retain_until.clone();
                a.legal_hold = self.legal_hold.clone();
            }
            f => *a.standard_mut(f) = self.standard(f).clone(),
        }
        a
    }

    /// The same attributes without `field` (what a target that refuses it can keep).
    pub fn without(&self, field: Field) -> Self {
        let mut a = self.clone();
        match field {
            Field::StorageClass => a.storage_class = None,
            Field::WebsiteRedirect => a.website_redirect = None,
            Field::MetadataBytes => a.metadata_bytes.clear(),
            Field::Tags => a.tags.clear(),
            Field::Checksums => a.checksums.clear(),
            Field::ObjectLock => {
                a.lock_mode = None;
                a.lock_retain_until = None;
                a.legal_hold = None;
            }
            f => *a.standard_mut(f) = None,
        }
        a
    }

    /// Checksums that describe the whole object's bytes, so a single PUT can carry them
    /// (a multipart upload's composite `...-N` value depends on how it was cut).
    pub fn restorable_checksums(&self) -> BTreeMap<&str, &str> {
        self.checksums.iter().filter(|(_, v)| !v.contains('-')).map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// The fields whose values differ between what a backup recorded (`self`) and what a
    /// server returns now (`found`). Composite checksums (of multipart uploads) are derived
    /// like ETags and not compared; object lock state only when `lock` (it is restored only
    /// when asked for).
    pub fn differences(&self, found: &Self, lock: bool) -> Vec<Field> {
        let mut out = Vec::new();
        for (_, f) in STANDARD_HEADERS {
            if self.standard(f) != found.standard(f) {
                out.push(f);
            }
        }
        if self.storage_class != found.storage_class {
            out.push(Field::StorageClass);
        }
        if self.website_redirect != found.website_redirect {
            out.push(Field::WebsiteRedirect);
        }
        if self.metadata_bytes != found.metadata_bytes {
            out.push(Field::MetadataBytes);
        }
        if self.tags != found.tags {
            out.push(Field::Tags);
        }
        let ours = self.restorable_checksums();
        if ours.iter().any(|(k, v)| found.checksums.get(*k).map(String::as_str) != Some(*v)) {
            out.push(Field::Checksums);
        }
        let held = |a: &Self| (a.lock_mode.clone(), a.lock_retain_until.clone(), a.legal_hold.clone());
        if lock && held(self) != held(found) {
            out.push(Field::ObjectLock);
        }
        out
    }
}

/// Reads the attributes out of a GET or HEAD answer's headers. Returns them with the
/// `x-amz-tagging-count` (the tags themselves need `GetObjectTagging`); a header in a form
/// that cannot be taken as it is (a count that is no number) is an error naming it.
pub fn from_headers(h: &http::HeaderMap) -> Result<(ObjectAttributes, u64), String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => match std::str::from_utf8(v.as_bytes()) {
                Ok(s) => Ok(Some(s.to_string())),
                Err(_) => Err(format!("header {name} is not UTF-8: {:?}", String::from_utf8_lossy(v.as_bytes()))),
            },
        }
    };
    let mut a = ObjectAttributes::default();
    for (name, field) in STANDARD_HEADERS {
        *a.standard_mut(field) = text(name)?;
    }
    a.storage_class = text("x-amz-storage-class")?.filter(|c| c != "STANDARD");
    a.website_redirect = text("x-amz-website-redirect-location")?;
    for alg in CHECKSUMS {
        if let Some(v) = text(&format!("x-amz-checksum-{alg}"))? {
            a.checksums.insert(alg.to_string(), v);
        }
    }
    a.lock_mode = text("x-amz-object-lock-mode")?;
    a.lock_retain_until = text("x-amz-object-lock-retain-until-date")?;
    a.legal_hold = text("x-amz-object-lock-legal-hold")?;
    for (name, value) in h {
        if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-")
            && std::str::from_utf8(value.as_bytes()).is_err()
        {
            a.metadata_bytes.insert(meta.to_string(), crate::support::encoding::base64(value.as_bytes()));
        }
    }
    let count = match text("x-amz-tagging-count")? {
        None => 0,
        Some(n) => n.trim().parse::<u64>().map_err(|_| format!("x-amz-tagging-count {n:?} is not a number"))?,
    };
    Ok((a, count))
}

/// The request headers that store `a` with a PUT or CreateMultipartUpload. `whole_body`:
/// the request carries the whole object, so whole-object checksums can go with it.
pub fn to_headers(a: &ObjectAttributes, whole_body: bool) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, field) in STANDARD_HEADERS {
        if let Some(v) = a.standard(field) {
            out.push((name.to_string(), v.as_bytes().to_vec()));
        }
    }
    if let Some(c) = &a.storage_class {
        out.push(("x-amz-storage-class".into(), c.as_bytes().to_vec()));
    }
    if let Some(r) = &a.website_redirect {
        out.push(("x-amz-website-redirect-location".into(), r.as_bytes().to_vec()));
    }
    for (name, b64) in &a.metadata_bytes {
        let bytes = crate::support::encoding::base64_decode(b64)
            .ok_or_else(|| format!("user metadata {name}: {b64:?} is not base64"))?;
        out.push((format!("x-amz-meta-{name}"), bytes));
    }
    if !a.tags.is_empty() {
        out.push(("x-amz-tagging".into(), tagging_header(&a.tags).into_bytes()));
    }
    if whole_body {
        for (alg, v) in a.restorable_checksums() {
            out.push((format!("x-amz-checksum-{alg}"), v.as_bytes().to_vec()));
        }
    }
    if let (Some(mode), Some(until)) = (&a.lock_mode, &a.lock_retain_until) {
        out.push(("x-amz-object-lock-mode".into(), mode.as_bytes().to_vec()));
        out.push(("x-amz-object-lock-retain-until-date".into(), until.as_bytes().to_vec()));
    }
    if let Some(hold) = &a.legal_hold {
        out.push(("x-amz-object-lock-legal-hold".into(), hold.as_bytes().to_vec()));
    }
    Ok(out)
}

/// Tags as `x-amz-tagging` takes them: a URL query string.
pub fn tagging_header(tags: &BTreeMap<String, String>) -> String {
    let enc = |s: &str| super::sigv4::uri_encode(s, false);
    tags.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The tags of a `GetObjectTagging` answer (`<Tagging><TagSet><Tag><Key/><Value/>`).
pub fn parse_tagging(root: &super::xml::Element) -> Result<BTreeMap<String, String>, String> {
    let set = root.child("TagSet").ok_or("no TagSet in the tagging answer")?;
    let mut tags = BTreeMap::new();
    for tag in set.all("Tag") {
        let key = tag.text_of("Key").ok_or("a tag without a Key")?;
        let value = tag.text_of("Value").unwrap_or_default();
        if tags.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("tag {key:?} twice"));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn every_attribute_round_trips_through_headers() {
        let h = headers(&[
            ("content-encoding", b"gzip"),
            ("content-disposition", b"attachment; filename=\"a b.wav\""),
            ("content-language", b"de-CH"),
            ("cache-control", b"no-cache"),
            ("expires", b"Thu, 01 Dec 2039 16:00:00 GMT"),
            ("x-amz-storage-class", b"STANDARD_IA"),
            ("x-amz-website-redirect-location", b"/other"),
            ("x-amz-checksum-sha256", b"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="),
            ("x-amz-checksum-crc32c", b"AAAAAA==-3"),
            ("x-amz-object-lock-mode", b"GOVERNANCE"),
            ("x-amz-object-lock-retain-until-date", b"2030-01-01T00:00:00.000Z"),
            ("x-amz-meta-plain", b"caf\xc3\xa9"),
            ("x-amz-meta-latin1", b"caf\xe9"),
            ("x-amz-meta-encoded", b"=?UTF-8?B?w7w=?="),
            ("x-amz-tagging-count", b"2"),
        ]);
        let (a, count) = from_headers(&h).unwrap();
        assert_eq!(count, 2);
        assert_eq!(a.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(a.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(a.metadata_bytes.len(), 1, "UTF-8 values and encoded words stay plain metadata");
        assert_eq!(a.restorable_checksums().len(), 1, "a composite checksum cannot go with a PUT");
        let sent = to_headers(&a, true).unwrap();
        let again = headers(&sent.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect::<Vec<_>>());
        let (b, _) = from_headers(&again).unwrap();
        assert_eq!(b.differences(&a, true), [], "{sent:?}");
        assert!(sent.iter().any(|(k, v)| k == "x-amz-meta-latin1" && v == b"caf\xe9"), "byte-exact");
        assert!(!to_headers(&a, false).unwrap().iter().any(|(k, _)| k.starts_with("x-amz-checksum-")));
    }

    #[test]
    fn defaults_are_not_attributes_and_bad_forms_are_errors() {
        let (a, count) = from_headers(&headers(&[("x-amz-storage-class", b"STANDARD")])).unwrap();
        assert!(a.is_empty() && count == 0, "STANDARD is the default: {a:?}");
        assert!(from_headers(&headers(&[("x-amz-tagging-count", b"two")])).unwrap_err().contains("tagging-count"));
        assert!(from_headers(&headers(&[("content-language", b"\xff")])).unwrap_err().contains("content-language"));
    }

    #[test]
    fn tags_are_sent_url_encoded_and_parsed_from_tagging_xml() {
        let tags = BTreeMap::from([("a b".to_string(), "x&y=z".to_string()), ("k".to_string(), String::new())]);
        assert_eq!(tagging_header(&tags), "a%20b=x%26y%3Dz&k=");
        let root = super::super::xml::parse(
            b"<Tagging><TagSet><Tag><Key>a b</Key><Value>x&amp;y=z</Value></Tag><Tag><Key>k</Key><Value></Value></Tag></TagSet></Tagging>",
        )
        .unwrap();
        assert_eq!(parse_tagging(&root).unwrap(), tags);
        let twice = super::super::xml::parse(
            b"<Tagging><TagSet><Tag><Key>k</Key></Tag><Tag><Key>k</Key></Tag></TagSet></Tagging>",
        )
        .unwrap();
        assert!(parse_tagging(&twice).is_err());
    }

    #[test]
    fn differences_name_each_field_and_skip_lock_unless_asked() {
        let a = ObjectAttributes {
            cache_control: Some("max-age=60".into()),
            tags: BTreeMap::from([("t".into(), "1".into())]),
            legal_hold: Some("ON".into()),
            ..Default::default()
        };
        let found = a.without(Field::Tags).without(Field::ObjectLock);
        assert_eq!(a.differences(&found, false), [Field::Tags]);
        assert_eq!(a.differences(&found, true), [Field::Tags, Field::ObjectLock]);
        assert_eq!(a.fields(), [Field::CacheControl, Field::Tags, Field::ObjectLock]);
    }
}
