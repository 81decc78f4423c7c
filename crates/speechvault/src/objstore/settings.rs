//! A bucket's own settings: versioning, object lock, lifecycle rules, policy, CORS, tags,
//! default encryption, notifications and the rest S3 keeps per bucket, each read and written
//! as the document the server speaks (XML; the policy is JSON), without interpreting it.

use bytes::Bytes;
use http::Method;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use super::client::Call;
use super::{ObjStoreError, ObjectStore, Result, xml};

/// Every per-bucket setting, by its query name.
pub const SETTINGS: [&str; 14] = [
    "versioning",
    "object-lock",
    "lifecycle",
    "policy",
    "cors",
    "tagging",
    "encryption",
    "notification",
    "website",
    "ownershipControls",
    "publicAccessBlock",
    "requestPayment",
    "accelerate",
    "logging",
];

/// The root element of each setting's document (the policy is JSON).
fn root_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "versioning" => "VersioningConfiguration",
        "object-lock" => "ObjectLockConfiguration",
        "lifecycle" => "LifecycleConfiguration",
        "cors" => "CORSConfiguration",
        "tagging" => "Tagging",
        "encryption" => "ServerSideEncryptionConfiguration",
        "notification" => "NotificationConfiguration",
        "website" => "WebsiteConfiguration",
        "ownershipControls" => "OwnershipControls",
        "publicAccessBlock" => "PublicAccessBlockConfiguration",
        "requestPayment" => "RequestPaymentConfiguration",
        "accelerate" => "AccelerateConfiguration",
        "logging" => "BucketLoggingStatus",
        _ => return None,
    })
}

/// One setting of a bucket, as its server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "value", rename_all = "kebab-case")]
pub enum Setting {
    /// Set, with the document that sets it.
    Set(String),
    /// Not set (the server's default).
    Unset,
    /// The server does not implement it (its answer).
    NotSupported(String),
    /// These credentials may not read it (the server's answer).
    Unreadable(String),
}

/// Whether a 200 answer is only the server's default: a document without any value (what
/// RGW answers for encryption and ownership controls that were never set; versioning never
/// enabled; no notifications, logging or acceleration), the owner paying, or a public access
/// block that blocks nothing.
fn is_default(name: &str, body: &[u8]) -> bool {
    let Ok(root) = xml::parse(body) else { return false };
    fn texts<'a>(e: &'a xml::Element, out: &mut Vec<&'a str>) {
        let t = e.text.trim();
        if !t.is_empty() {
            out.push(t);
        }
        for c in &e.children {
            texts(c, out);
        }
    }
    let mut values = Vec::new();
    texts(&root, &mut values);
    match name {
        "policy" => false,
        "requestPayment" => root.text_of("Payer").is_none_or(|p| p == "BucketOwner"),
        "publicAccessBlock" => values.iter().all(|v| v.eq_ignore_ascii_case("false")),
        _ => values.is_empty(),
    }
}

/// The error codes that mean "not set" for a setting read with GET.
fn is_unset_code(code: &str) -> bool {
    matches!(
        code,
        "NoSuchLifecycleConfiguration"
            | "NoSuchBucketPolicy"
            | "NoSuchCORSConfiguration"
            | "NoSuchTagSet"
            | "NoSuchTagSetError"
            | "ServerSideEncryptionConfigurationNotFoundError"
            | "ObjectLockConfigurationNotFoundError"
            | "NoSuchWebsiteConfiguration"
            | "NoSuchPublicAccessBlockConfiguration"
            | "OwnershipControlsNotFoundError"
            | "NoSuchConfiguration"
    )
}

fn not_supported(status: u16, code: &str) -> bool {
    status == 501 || code == "NotImplemented" || code == "MethodNotAllowed" || status == 405
}

impl ObjectStore {
    /// Reads one setting of `bucket`.
    pub async fn get_bucket_setting(&self, bucket: &str, name: &str) -> Result<Setting> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("GetBucketSetting", Method::GET, Some(bucket), None).query(name, "");
        match self.send_read(&call).await {
            // A server that does not know the setting may answer something else entirely
            // (RGW 16 answers ?encryption with the bucket's listing).
            Ok((_, body))
                if root_of(name).is_some_and(|root| xml::parse(&body).map(|e| e.name) != Ok(root.to_string())) =>
            {
                let found = xml::parse(&body).map(|e| e.name).unwrap_or_else(|_| "no XML".into());
                Ok(Setting::NotSupported(format!("the server answers a {found} document, not a {name} setting")))
            }
            Ok((_, body)) if is_default(name, &body) => Ok(Setting::Unset),
            Ok((_, body)) => match String::from_utf8(body.to_vec()) {
                Ok(text) => Ok(Setting::Set(text)),
                Err(_) => Err(ObjStoreError::Protocol {
                    op: call.op.into(),
                    target: format!("{}?{name}", call.target()),
                    detail: "the setting's document is not UTF-8".into(),
                }),
            },
            Err(ObjStoreError::Http { status, code, .. }) if status == 404 && is_unset_code(&code) => {
                Ok(Setting::Unset)
            }
            Err(ObjStoreError::Http { status, code, message, .. }) if not_supported(status, &code) => {
                Ok(Setting::NotSupported(format!("HTTP {status} {code}: {message}")))
            }
            Err(ObjStoreError::Http { status: 403, code, message, .. }) => {
                Ok(Setting::Unreadable(format!("HTTP 403 {code}: {message}")))
            }
            Err(e) => Err(e),
        }
    }

    /// Every setting of `bucket` ([`SETTINGS`]), read side by side.
    pub async fn bucket_settings(&self, bucket: &str) -> Result<std::collections::BTreeMap<String, Setting>> {
        let reads =
            SETTINGS.iter().map(|name| async move { (name.to_string(), self.get_bucket_setting(bucket, name).await) });
        let mut out = std::collections::BTreeMap::new();
        for (name, setting) in futures_util::future::join_all(reads).await {
            out.insert(name, setting?);
        }
        Ok(out)
    }

    /// Creates `bucket` with object lock (and so versioning) enabled; it cannot be added later.
    pub async fn create_bucket_with_object_lock(&self, bucket: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let mut call = Call::new("CreateBucket", Method::PUT, Some(bucket), None)
            .header("x-amz-bucket-object-lock-enabled", "true");
        if self.inner.cfg.region != "us-east-1" {
            let doc = format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&self.inner.cfg.region)
            );
            call = call.body(Bytes::from(doc));
        }
        self.send(&call).await.map(|_| ())
    }

    /// Writes one setting of `bucket` (with `Content-MD5`, which some of them require).
    pub async fn put_bucket_setting(&self, bucket: &str, name: &str, document: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let body = Bytes::from(document.to_string());
        let md5 = crate::support::encoding::base64(&Md5::digest(&body));
        let call = Call::new("PutBucketSetting", Method::PUT, Some(bucket), None)
            .query(name, "")
            .header("content-md5", &md5)
            .body(body);
        self.send(&call).await.map(|_| ())
    }

    /// Removes one setting of `bucket` (back to the server's default).
    pub async fn delete_bucket_setting(&self, bucket: &str, name: &str) -> Result<()> {
        super::validate_bucket_name(bucket)?;
        let call = Call::new("DeleteBucketSetting", Method::DELETE, Some(bucket), None).query(name, "");
        match self.send(&call).await {
            Ok(_) => Ok(()),
            Err(ObjStoreError::Http { status: 404, code, .. }) if is_unset_code(&code) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `bucket` was created with object lock.
    pub async fn bucket_has_object_lock(&self, bucket: &str) -> Result<bool> {
        Ok(match self.get_bucket_setting(bucket, "object-lock").await? {
            Setting::Set(doc) => xml::parse(doc.as_bytes())
                .map(|root| root.text_of("ObjectLockEnabled") == Some("Enabled"))
                .unwrap_or(false),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_defaults_read_as_unset() {
        assert!(is_default(
            "versioning",
            b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"
        ));
        assert!(!is_default(
            "versioning",
            b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
        ));
        assert!(is_default("notification", b"<NotificationConfiguration></NotificationConfiguration>"));
        assert!(is_default(
            "requestPayment",
            b"<RequestPaymentConfiguration><Payer>BucketOwner</Payer></RequestPaymentConfiguration>"
        ));
        assert!(!is_default(
            "requestPayment",
            b"<RequestPaymentConfiguration><Payer>Requester</Payer></RequestPaymentConfiguration>"
        ));
        assert!(is_default("encryption", b"<ServerSideEncryptionConfiguration/>"), "RGW's answer when never set");
        assert!(!is_default("encryption", b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"));
        assert!(is_default("publicAccessBlock", b"<PublicAccessBlockConfiguration><BlockPublicAcls>false</BlockPublicAcls></PublicAccessBlockConfiguration>"));
        assert!(!is_default(
            "publicAccessBlock",
            b"<PublicAccessBlockConfiguration><BlockPublicAcls>true</BlockPublicAcls></PublicAccessBlockConfiguration>"
        ));
        assert!(is_unset_code("NoSuchBucketPolicy") && !is_unset_code("AccessDenied"));
        assert!(not_supported(501, "") && not_supported(400, "NotImplemented") && !not_supported(403, "AccessDenied"));
    }
}
