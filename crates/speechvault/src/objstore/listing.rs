//! Buckets and listings.
//!
//! Listings ask for `encoding-type=url`, since XML 1.0 cannot carry every byte a key may hold.
//! Servers disagree on the encoding: MinIO and AWS follow HTML form encoding (a space is `+`,
//! a literal `+` is `%2B`), Garage, moto and our sandbox write `%20`. Both are decoded by
//! [`decode_listing_key`]: `+` means a space, then percent-escapes are undone, exactly once.

use http::Method;

use super::client::{Call, unquote};
use super::{ObjStoreError, ObjectInfo, ObjectStore, Result, xml};

/// Decodes a key from an `encoding-type=url` listing, in either servers' dialect.
pub fn decode_listing_key(s: &str) -> std::result::Result<String, std::str::Utf8Error> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().map(|c| c.into_owned())
}

/// A multipart upload the server holds open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    /// RFC 3339, as the server gave it.
    pub initiated: String,
}

/// One parsed page of ListObjectsV2: the objects and the continuation token, if truncated.
pub fn parse_list_page(body: &[u8]) -> std::result::Result<(Vec<ObjectInfo>, Option<String>), String> {
    let root = xml::parse(body)?;
    if root.name != "ListBucketResult" {
        return Err(format!("expected ListBucketResult, got {}", root.name));
    }
    let encoded = root.text_of("EncodingType").is_some_and(|e| e.trim().eq_ignore_ascii_case("url"));
    let mut out = Vec::new();
    for c in root.all("Contents") {
        let raw = c.text_of("Key").ok_or("an entry has no Key")?;
        let key = if encoded {
            decode_listing_key(raw).map_err(|e| format!("listed key {raw:?} is not UTF-8 once decoded: {e}"))?
        } else {
            raw.to_string()
        };
        let size =
            c.text_of("Size").unwrap_or("0").trim().parse::<u64>().map_err(|e| format!("bad Size for {key:?}: {e}"))?;
        out.push(ObjectInfo {
            key,
            size,
            etag: unquote(c.text_of("ETag").unwrap_or_default()),
            last_modified: c.text_of("LastModified").unwrap_or_default().trim().to_string(),
        });
    }
    let truncated = root.text_of("IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = if truncated {
        let t = root.text_of("NextContinuationToken").unwrap_or_default().to_string();
        if t.is_empty() {
            return Err("listing is truncated but carries no continuation token".into());
        }
        Some(t)
    } else {
        None
    };
    Ok((out, next))
}

impl ObjectStore {
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
        super::validate_bucket_name(bucket)?;
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
        super::validate_bucket_name(bucket)?;
        let mut call = Call::new("CreateBucket", Method::PUT, Some(bucket), None);
        if self.inner.cfg.region != "us-east-1" {
            let xml = format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&self.inner.cfg.region)
            );
            call = call.body(bytes::Bytes::from(xml));
        }
        match self.send(&call).await {
            Ok(_) => Ok(()),
            Err(ObjStoreError::Http { code, .. }) if code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        self.send(&Call::new("DeleteBucket", Method::DELETE, Some(bucket), None)).await.map(|_| ())
    }

    /// One page of a listing (at most `max` keys, at most 1,000), starting after `token`.
    pub async fn list_page_max(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        max: u32,
    ) -> Result<(Vec<ObjectInfo>, Option<String>)> {
        self.list_page_after(bucket, prefix, token, None, max).await
    }

    /// One page of a listing: after `token`, or (the first page) after the key `start_after`.
    pub async fn list_page_after(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
        max: u32,
    ) -> Result<(Vec<ObjectInfo>, Option<String>)> {
        super::validate_bucket_name(bucket)?;
        let mut call = Call::new("ListObjectsV2", Method::GET, Some(bucket), None)
            .query("list-type", "2")
            .query("encoding-type", "url")
            .query("max-keys", &max.clamp(1, 1000).to_string());
        if !prefix.is_empty() {
            call = call.query("prefix", prefix);
        }
        if let Some(t) = token {
            call = call.query("continuation-token", t);
        } else if let Some(k) = start_after {
            call = call.query("start-after", k);
        }
        let (_, body) = self.send_read(&call).await?;
        parse_list_page(&body).map_err(|detail| match xml::parse(&body) {
            Ok(root) if root.name == "Error" => ObjStoreError::Http {
                op: call.op.into(),
                target: call.target(),
                status: 200,
                code: root.text_of("Code").unwrap_or_default().into(),
                message: root.text_of("Message").unwrap_or_default().into(),
            },
            _ => ObjStoreError::Protocol { op: call.op.into(), target: call.target(), detail },
        })
    }

    /// One page of a listing (at most 1,000 keys), starting after `token`.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<ObjectInfo>, Option<String>)> {
        self.list_page_max(bucket, prefix, token, 1000).await
    }

    /// The objects with keys in `(after, upto]` (open ends for `None`), page by page, each
    /// page sent to `pages`. Fails with [`ObjStoreError::Protocol`] when the server does not
    /// honour `start-after` (its first key is not after it), so the caller can list the
    /// whole bucket in one piece instead.
    pub async fn list_range(
        &self,
        bucket: &str,
        after: Option<&str>,
        upto: Option<&str>,
        pages: tokio::sync::mpsc::Sender<Vec<ObjectInfo>>,
    ) -> Result<()> {
        let mut token: Option<String> = None;
        let mut first = true;
        loop {
            let (mut page, next) = self.list_page_after(bucket, "", token.as_deref(), after, 1000).await?;
            if first
                && let (Some(a), Some(o)) = (after, page.first())
                && o.key.as_bytes() <= a.as_bytes()
            {
                return Err(ObjStoreError::Protocol {
                    op: "ListObjectsV2".into(),
                    target: bucket.into(),
                    detail: "the server ignores start-after".into(),
                });
            }
            first = false;
            let mut done = false;
            if let Some(u) = upto
                && page.last().is_some_and(|o| o.key.as_bytes() > u.as_bytes())
            {
                page.retain(|o| o.key.as_bytes() <= u.as_bytes());
                done = true;
            }
            if !page.is_empty() && pages.send(page).await.is_err() {
                return Ok(());
            }
            match next {
                _ if done => return Ok(()),
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                Some(_) => {
                    return Err(ObjStoreError::Protocol {
                        op: "ListObjectsV2".into(),
                        target: bucket.into(),
                        detail: "server repeated a continuation token".into(),
                    });
                }
                None => return Ok(()),
            }
        }
    }

    /// Every page of the listing under `prefix`, in the server's (byte) order, handed to `page`.
    async fn each_page(&self, bucket: &str, prefix: &str, mut page: impl FnMut(Vec<ObjectInfo>)) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let (objects, next) = self.list_page(bucket, prefix, token.as_deref()).await?;
            page(objects);
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                Some(_) => {
                    return Err(ObjStoreError::Protocol {
                        op: "ListObjectsV2".into(),
                        target: bucket.into(),
                        detail: "server repeated a continuation token".into(),
                    });
                }
                None => return Ok(()),
            }
        }
    }

    /// Every object under `prefix`, in the server's (byte) order.
    pub async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut all = Vec::new();
        self.each_page(bucket, prefix, |page| all.extend(page)).await?;
        Ok(all)
    }

    /// How many objects a bucket holds and their bytes, page by page (nothing kept).
    pub async fn bucket_usage(&self, bucket: &str) -> Result<(u64, u64)> {
        let (mut objects, mut bytes) = (0u64, 0u64);
        self.each_page(bucket, "", |page| {
            objects += page.len() as u64;
            bytes += page.iter().map(|o| o.size).sum::<u64>();
        })
        .await?;
        Ok((objects, bytes))
    }

    /// The current listing entry of exactly `key`, or `None` when it does not exist. The key
    /// itself sorts first among the keys it prefixes, so one entry is enough.
    pub async fn find_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        let (page, _) = self.list_page_max(bucket, key, None, 1).await?;
        Ok(page.into_iter().find(|o| o.key == key))
    }

    /// Multipart uploads in progress under `prefix` (every page).
    pub async fn list_multipart_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<MultipartUpload>> {
        super::validate_bucket_name(bucket)?;
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new("ListMultipartUploads", Method::GET, Some(bucket), None)
                .query("uploads", "")
                .query("encoding-type", "url");
            if !prefix.is_empty() {
                call = call.query("prefix", prefix);
            }
            if let Some((k, u)) = &markers {
                call = call.query("key-marker", k).query("upload-id-marker", u);
            }
            let root = self.xml_of(&call).await?;
            let encoded = root.text_of("EncodingType").is_some_and(|e| e.trim().eq_ignore_ascii_case("url"));
            for u in root.all("Upload") {
                let raw = u.text_of("Key").unwrap_or_default();
                let key = if encoded {
                    decode_listing_key(raw).map_err(|e| ObjStoreError::Protocol {
                        op: call.op.into(),
                        target: call.target(),
                        detail: format!("bad key {raw:?}: {e}"),
                    })?
                } else {
                    raw.to_string()
                };
                out.push(MultipartUpload {
                    key,
                    upload_id: u.text_of("UploadId").unwrap_or_default().to_string(),
                    initiated: u.text_of("Initiated").unwrap_or_default().to_string(),
                });
            }
            let truncated = root.text_of("IsTruncated").is_some_and(|t| t.trim() == "true");
            let next = (
                root.text_of("NextKeyMarker").unwrap_or_default().to_string(),
                root.text_of("NextUploadIdMarker").unwrap_or_default().to_string(),
            );
            if !truncated || next.0.is_empty() || markers.as_ref() == Some(&next) {
                return Ok(out);
            }
            markers = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MinIO's and AWS's listing encoding (Go's `url.QueryEscape`, then `/` and `*` bare).
    fn encode_plus(key: &str) -> String {
        let mut out = String::new();
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

    fn page(keys: &[String], encoding: Option<&str>) -> String {
        let mut doc = String::from("<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name>");
        if let Some(e) = encoding {
            doc.push_str(&format!("<EncodingType>{e}</EncodingType>"));
        }
        for k in keys {
            doc.push_str(&format!(
                "<Contents><Key>{}</Key><Size>7</Size><ETag>&quot;abc&quot;</ETag><LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>",
                xml::escape(k)
            ));
        }
        doc.push_str("<IsTruncated>false</IsTruncated></ListBucketResult>");
        doc
    }

    #[test]
    fn both_dialects_decode_spaces_and_pluses() {
        let key = "a b+c%20d/ü";
        assert_eq!(decode_listing_key("a+b%2Bc%2520d/%C3%BC").unwrap(), key);
        assert_eq!(decode_listing_key("a%20b%2Bc%2520d/%C3%BC").unwrap(), key);
        assert_eq!(decode_listing_key(&encode_plus(key)).unwrap(), key);
        let (objs, next) = parse_list_page(page(&[encode_plus(key)], Some("url")).as_bytes()).unwrap();
        assert_eq!(objs[0].key, key);
        assert_eq!(objs[0].etag, "abc");
        assert!(next.is_none());
    }

    proptest! {
        /// Every valid key (any UTF-8 up to 1,024 bytes) survives both servers' encodings.
        #[test]
        fn any_key_round_trips_through_both_listing_encodings(key in "(?s).{1,200}") {
            let percent = super::super::sigv4::uri_encode(&key, true);
            prop_assert_eq!(decode_listing_key(&percent).unwrap(), key.clone());
            prop_assert_eq!(decode_listing_key(&encode_plus(&key)).unwrap(), key.clone());
            let (objs, _) = parse_list_page(page(std::slice::from_ref(&encode_plus(&key)), Some("url")).as_bytes()).unwrap();
            prop_assert_eq!(&objs[0].key, &key);
        }

        /// Without `encoding-type=url` the key is taken as the XML gave it.
        #[test]
        fn unencoded_listings_keep_xml_text(key in "[a-zA-Z0-9 +%&<>/._-]{1,64}") {
            let (objs, _) = parse_list_page(page(std::slice::from_ref(&key), None).as_bytes()).unwrap();
            prop_assert_eq!(&objs[0].key, &key);
        }

        /// The parser never panics, whatever the bytes.
        #[test]
        fn the_listing_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_list_page(&body);
        }
    }
}
