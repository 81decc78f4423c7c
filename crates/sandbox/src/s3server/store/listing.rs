//! Listings as servers write them: keys in byte order, pages, delimiters, and the key
//! encodings of `encoding-type=url` (percent, or `+` for a space as MinIO and AWS write it).

use super::*;

/// Encodes a key for `encoding-type=url` listings: everything but unreserved characters and
/// `/` percent-encoded; in the `plus` dialect (MinIO, AWS) a space is `+` and `*` stays bare.
pub(super) fn url_encode_key(key: &str, dialect: super::super::ListingEncoding) -> String {
    match dialect {
        super::super::ListingEncoding::Percent => speechvault::objstore::sigv4::uri_encode(key, true),
        super::super::ListingEncoding::PercentSlash => speechvault::objstore::sigv4::uri_encode(key, false),
        super::super::ListingEncoding::Plus => {
            let mut out = String::with_capacity(key.len());
            for &b in key.as_bytes() {
                match b {
                    b' ' => out.push('+'),
                    b'/' | b'*' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                    b if b.is_ascii_alphanumeric() => out.push(b as char),
                    b => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        }
    }
}

/// The type MinIO would give a key stored without one.
pub(super) fn type_by_extension(key: &str) -> String {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "text" | "log" => "text/plain",
        "json" => "application/json",
        "xml" => "application/xml",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "abnf" => "application/srgs",
        _ => "application/octet-stream",
    }
    .to_string()
}

pub(super) struct Listing {
    pub(super) objects: Vec<ObjMeta>,
    pub(super) prefixes: Vec<String>,
    pub(super) truncated: bool,
    /// The last key or prefix returned; resume after it.
    pub(super) last: Option<String>,
}

/// Lists keys after `after` with prefix and delimiter, at most `max` entries.
pub(super) fn list(
    objects: &BTreeMap<String, ObjMeta>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Listing {
    use std::ops::Bound;
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    let mut out = Listing { objects: Vec::new(), prefixes: Vec::new(), truncated: false, last: None };
    let mut iter = objects.range((start, Bound::Unbounded)).peekable();
    while let Some((key, meta)) = iter.next() {
        if !key.starts_with(prefix) {
            break;
        }
        if out.objects.len() + out.prefixes.len() >= max {
            out.truncated = true;
            break;
        }
        let rest = &key[prefix.len()..];
        if let Some(d) = delimiter.filter(|d| !d.is_empty())
            && let Some(pos) = rest.find(d)
        {
            let common = format!("{prefix}{}", &rest[..pos + d.len()]);
            // Skip every key under this common prefix.
            while iter.peek().is_some_and(|(k, _)| k.starts_with(&common)) {
                iter.next();
            }
            out.last = Some(common.clone());
            out.prefixes.push(common);
            continue;
        }
        out.last = Some(key.clone());
        out.objects.push(meta.clone());
    }
    if max == 0 {
        out.truncated = objects
            .range::<String, _>((Bound::Included(prefix.to_string()), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix));
    }
    out
}

pub(super) fn to_object(m: &ObjMeta, encode: Option<super::super::ListingEncoding>) -> Object {
    Object {
        key: Some(match encode {
            Some(d) => url_encode_key(&m.key, d),
            None => m.key.clone(),
        }),
        size: Some(m.size as i64),
        e_tag: Some(ETag::Strong(m.etag.clone())),
        last_modified: Some(ts(m.modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}
