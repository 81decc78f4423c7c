//! Bucket settings for the sandbox's server: versioning, object lock, lifecycle, policy, CORS,
//! tags, encryption, notifications and the rest, each kept as the document a client PUT (as
//! S3 keeps them) and answered back with GET, or removed with DELETE. A server that answers
//! these lets a test back up and restore a bucket's own settings.
//!
//! The requests are answered here, in front of `s3s`, as documents (s3s would parse each kind
//! into its own type). They must carry the server's access key in their `Authorization`; the
//! signature itself is not checked for these requests (this is a test server).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, StatusCode};

/// The settings this server keeps, with the error code S3 answers when one is not set
/// (`None`: an empty default document instead).
const SETTINGS: [(&str, Option<&str>, &str); 14] = [
    ("versioning", None, "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"),
    ("object-lock", Some("ObjectLockConfigurationNotFoundError"), ""),
    ("lifecycle", Some("NoSuchLifecycleConfiguration"), ""),
    ("policy", Some("NoSuchBucketPolicy"), ""),
    ("cors", Some("NoSuchCORSConfiguration"), ""),
    ("tagging", Some("NoSuchTagSet"), ""),
    ("encryption", Some("ServerSideEncryptionConfigurationNotFoundError"), ""),
    ("notification", None, "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"),
    ("website", Some("NoSuchWebsiteConfiguration"), ""),
    ("ownershipControls", Some("OwnershipControlsNotFoundError"), ""),
    ("publicAccessBlock", Some("NoSuchPublicAccessBlockConfiguration"), ""),
    (
        "requestPayment",
        None,
        "<RequestPaymentConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Payer>BucketOwner</Payer></RequestPaymentConfiguration>",
    ),
    ("accelerate", None, "<AccelerateConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"),
    ("logging", None, "<BucketLoggingStatus xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"),
];

const LOCKED: &str = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>";
const VERSIONED: &str = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>";

/// Where one bucket's settings live.
pub fn dir(root: &Path, bucket: &str) -> PathBuf {
    root.join("settings").join(bucket)
}

/// The bucket and setting a request is about, when it is a settings request: a path of one
/// segment and a query of exactly one setting name.
pub fn setting_of<'a>(path: &'a str, query: &'a str) -> Option<(&'a str, &'static str)> {
    let bucket = path.strip_prefix('/')?.trim_end_matches('/');
    if bucket.is_empty() || bucket.contains('/') {
        return None;
    }
    let name = query.split('&').next()?.split('=').next()?;
    let (setting, _, _) = SETTINGS.iter().find(|(s, _, _)| *s == name)?;
    (!query.contains('&')).then_some((bucket, setting))
}

fn answer(status: StatusCode, content_type: &str, body: String) -> http::Response<s3s::Body> {
    let mut r = http::Response::new(s3s::Body::from(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> http::Response<s3s::Body> {
    answer(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
}

/// Whether the request names this server's access key (see the module docs).
pub fn signed_by(headers: &http::HeaderMap, access_key: &str) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(&format!("Credential={access_key}/")))
}

/// Answers a settings request on `bucket` (the bucket must exist under `buckets`).
pub async fn handle(
    root: &Path,
    method: &Method,
    bucket: &str,
    setting: &str,
    body: Bytes,
) -> http::Response<s3s::Body> {
    if !root.join("buckets").join(bucket).is_dir() {
        return error(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist");
    }
    let dir = dir(root, bucket);
    let file = dir.join(setting);
    let (_, unset_code, default) = SETTINGS.iter().find(|(s, _, _)| *s == setting).copied().unwrap_or(("", None, ""));
    let content_type = if setting == "policy" { "application/json" } else { "application/xml" };
    match *method {
        Method::GET => match tokio::fs::read_to_string(&file).await {
            Ok(doc) => answer(StatusCode::OK, content_type, doc),
            Err(_) => match unset_code {
                Some(code) => error(StatusCode::NOT_FOUND, code, "not set"),
                None => answer(StatusCode::OK, content_type, default.to_string()),
            },
        },
        Method::PUT => {
            let Ok(doc) = String::from_utf8(body.to_vec()) else {
                return error(StatusCode::BAD_REQUEST, "MalformedXML", "not UTF-8");
            };
            if setting == "object-lock" && !tokio::fs::try_exists(dir.join("object-lock")).await.unwrap_or(false) {
                return error(
                    StatusCode::CONFLICT,
                    "InvalidBucketState",
                    "Object Lock configuration cannot be enabled on existing buckets",
                );
            }
            let stored = match setting {
                "policy" if serde_json::from_str::<serde_json::Value>(&doc).is_err() => {
                    return error(StatusCode::BAD_REQUEST, "MalformedPolicy", "not JSON");
                }
                "policy" => doc,
                _ if quick_xml_ok(&doc) => doc,
                _ => return error(StatusCode::BAD_REQUEST, "MalformedXML", "not XML"),
            };
            if tokio::fs::create_dir_all(&dir).await.is_err() || tokio::fs::write(&file, stored).await.is_err() {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "cannot store the setting");
            }
            answer(StatusCode::OK, "application/xml", String::new())
        }
        Method::DELETE => {
            let _ = tokio::fs::remove_file(&file).await;
            answer(StatusCode::NO_CONTENT, "application/xml", String::new())
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not allowed"),
    }
}

/// A bucket created with `x-amz-bucket-object-lock-enabled: true` has object lock and
/// versioning from the start.
pub async fn created(root: &Path, bucket: &str, object_lock: bool) {
    let dir = dir(root, bucket);
    let _ = tokio::fs::remove_dir_all(&dir).await;
    if object_lock && tokio::fs::create_dir_all(&dir).await.is_ok() {
        let _ = tokio::fs::write(dir.join("object-lock"), LOCKED).await;
        let _ = tokio::fs::write(dir.join("versioning"), VERSIONED).await;
    }
}

/// A deleted bucket's settings go with it.
pub async fn deleted(root: &Path, bucket: &str) {
    let _ = tokio::fs::remove_dir_all(dir(root, bucket)).await;
}

fn quick_xml_ok(doc: &str) -> bool {
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut depth = 0i32;
    let mut seen = false;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                seen = true;
            }
            Ok(quick_xml::events::Event::Empty(_)) => seen = true,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => return seen && depth == 0,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_requests_are_recognized() {
        assert_eq!(setting_of("/b", "lifecycle"), Some(("b", "lifecycle")));
        assert_eq!(setting_of("/b/", "policy="), Some(("b", "policy")));
        assert_eq!(setting_of("/b/key", "tagging"), None, "object tagging is the store's");
        assert_eq!(setting_of("/b", "list-type=2&prefix=a"), None);
        assert_eq!(setting_of("/b", "uploads"), None);
        assert!(quick_xml_ok("<A><B>x</B></A>") && !quick_xml_ok("<A><B>") && !quick_xml_ok("{}"));
    }
}
