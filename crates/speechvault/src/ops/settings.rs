//! A bucket's own settings on the way back, and how they are compared.
//!
//! What goes when (`restore --bucket-config=apply`, the default):
//! - **before the objects**: object lock (only when the bucket is created: a target bucket that
//!   exists without it is refused before anything is written), versioning, default
//!   encryption, so the objects land as on the source;
//! - **after the objects are verified** (a rollback can still delete what was written):
//!   lifecycle rules, the object lock default retention, the policy, and the rest (CORS, tags,
//!   website, ownership controls, public access block, request payment, acceleration,
//!   logging). A policy changes what the target's services may do: it is applied only when
//!   the target bucket had none, or with `--clean`. Notification settings point at the
//!   source's endpoints: only with `--bucket-config=apply-all`.
//!
//! With `--clean`, a setting the source did not have is removed from the target too. A
//! setting the target refuses, or accepts and does not keep, fails the restore by name unless
//! `--allow-attribute-loss`. Documents are compared as XML trees (or JSON for the policy), so
//! a server's own formatting is not a difference.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::objstore::{ObjStoreError, ObjectStore, Setting};

/// `--bucket-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketConfigMode {
    /// Every setting but notifications (and the policy only when the target had none).
    #[default]
    Apply,
    /// No setting is changed.
    Skip,
    /// Notifications too.
    ApplyAll,
}

impl std::str::FromStr for BucketConfigMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "apply" => Ok(Self::Apply),
            "skip" => Ok(Self::Skip),
            "apply-all" => Ok(Self::ApplyAll),
            other => Err(format!("{other:?}: use apply, skip or apply-all")),
        }
    }
}

/// Settings written before the objects.
pub const BEFORE_OBJECTS: [&str; 2] = ["versioning", "encryption"];

/// What happened to one setting of one bucket.
#[derive(Debug, Clone, Serialize)]
pub struct SettingOutcome {
    pub bucket: String,
    pub setting: String,
    /// `applied`, `removed`, `kept` (left as the target has it), or `refused`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether the backup's settings had object lock enabled.
pub fn had_object_lock(settings: &BTreeMap<String, Setting>) -> bool {
    match settings.get("object-lock") {
        Some(Setting::Set(doc)) => doc.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>"),
        _ => false,
    }
}

/// Whether an object lock document holds a default retention rule (more than "enabled").
fn has_default_retention(doc: &str) -> bool {
    doc.contains("<Rule>") || doc.contains("<Rule ")
}

/// A document's canonical form: XML as a tree without whitespace-only text or namespaces, or
/// the policy as JSON.
fn canonical(name: &str, doc: &str) -> String {
    if name == "policy" {
        return serde_json::from_str::<serde_json::Value>(doc)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| doc.to_string());
    }
    match crate::objstore::xml_tree(doc.as_bytes()) {
        Ok(tree) => tree,
        Err(_) => doc.trim().to_string(),
    }
}

/// Whether two documents of setting `name` say the same.
pub fn same(name: &str, a: &str, b: &str) -> bool {
    canonical(name, a) == canonical(name, b)
}

/// The settings of the backup (`recorded`) that the bucket does not have as recorded now
/// (`now`), by name; notifications only when `notifications`.
pub fn differences(
    recorded: &BTreeMap<String, Setting>,
    now: &BTreeMap<String, Setting>,
    notifications: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, setting) in recorded {
        if name == "notification" && !notifications {
            continue;
        }
        let here = now.get(name);
        let differs = match (setting, here) {
            (Setting::Set(a), Some(Setting::Set(b))) => !same(name, a, b),
            (Setting::Set(_), _) => true,
            (Setting::Unset, Some(Setting::Set(_))) => true,
            // Not supported or unreadable at the source: nothing recorded to compare.
            _ => false,
        };
        if differs {
            out.push(name.clone());
        }
    }
    out
}

/// Writes `doc` as setting `name` of `bucket` and reads it back: `Ok(None)` when it is there
/// as sent, `Ok(Some(why))` when the target refused it or did not keep it.
pub async fn put_and_confirm(
    store: &ObjectStore,
    bucket: &str,
    name: &str,
    doc: &str,
) -> Result<Option<String>, ObjStoreError> {
    match store.put_bucket_setting(bucket, name, doc).await {
        Ok(()) => {}
        Err(ObjStoreError::Http { status, code, message, .. }) if (400..500).contains(&status) || status == 501 => {
            return Ok(Some(format!("refused: HTTP {status} {code}: {message}")));
        }
        Err(e) => return Err(e),
    }
    Ok(match store.get_bucket_setting(bucket, name).await? {
        Setting::Set(back) if same(name, doc, &back) => None,
        Setting::Set(_) => Some("accepted, but answers another document".into()),
        Setting::Unset => Some("accepted, but does not keep it".into()),
        Setting::NotSupported(why) | Setting::Unreadable(why) => Some(why),
    })
}

/// Applies the backup's settings of one bucket that go `before` or after the objects,
/// following `mode` and `clean`; `target_policy` says whether the target bucket had a policy
/// before the restore.
pub async fn apply(
    store: &ObjectStore,
    bucket: &str,
    recorded: &BTreeMap<String, Setting>,
    before: bool,
    mode: BucketConfigMode,
    clean: bool,
    target_policy: bool,
) -> Result<Vec<SettingOutcome>, ObjStoreError> {
    let mut out = Vec::new();
    if mode == BucketConfigMode::Skip {
        return Ok(out);
    }
    let outcome = |setting: &str, action: &'static str, reason: Option<String>| SettingOutcome {
        bucket: bucket.to_string(),
        setting: setting.to_string(),
        action,
        reason,
    };
    for (name, setting) in recorded {
        let early = BEFORE_OBJECTS.contains(&name.as_str());
        if early != before {
            continue;
        }
        if name == "notification" && mode != BucketConfigMode::ApplyAll {
            if matches!(setting, Setting::Set(_)) {
                out.push(outcome(
                    name,
                    "kept",
                    Some(
                        "notifications point at the source's endpoints: --bucket-config=apply-all applies them".into(),
                    ),
                ));
            }
            continue;
        }
        match setting {
            Setting::Set(doc) => {
                if name == "object-lock" && !has_default_retention(doc) {
                    // Object lock itself comes with the bucket's creation.
                    continue;
                }
                if name == "policy" && target_policy && !clean {
                    out.push(outcome(
                        name,
                        "kept",
                        Some("the target bucket has a policy of its own: --clean replaces it".into()),
                    ));
                    continue;
                }
                match put_and_confirm(store, bucket, name, doc).await? {
                    None => out.push(outcome(name, "applied", None)),
                    Some(why) => out.push(outcome(name, "refused", Some(why))),
                }
            }
            Setting::Unset if clean && !matches!(name.as_str(), "versioning" | "object-lock") => {
                if matches!(store.get_bucket_setting(bucket, name).await?, Setting::Set(_)) {
                    store.delete_bucket_setting(bucket, name).await?;
                    out.push(outcome(name, "removed", Some("the backup's bucket did not have it".into())));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_compare_by_content_not_formatting() {
        let a = "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ID>expire</ID><Status>Enabled</Status></Rule></LifecycleConfiguration>";
        let b = "<?xml version=\"1.0\"?>\n<LifecycleConfiguration>\n  <Rule>\n    <ID>expire</ID>\n    <Status>Enabled</Status>\n  </Rule>\n</LifecycleConfiguration>";
        assert!(same("lifecycle", a, b));
        assert!(!same("lifecycle", a, &b.replace("Enabled", "Disabled")));
        assert!(same("policy", "{\"Version\": \"2012-10-17\"}", "{\"Version\":\"2012-10-17\"}"));
    }

    #[test]
    fn differences_name_the_settings_and_leave_notifications_out_unless_asked() {
        let set = |d: &str| Setting::Set(d.to_string());
        let recorded = BTreeMap::from([
            ("cors".to_string(), set("<CORSConfiguration><CORSRule/></CORSConfiguration>")),
            ("tagging".to_string(), Setting::Unset),
            (
                "notification".to_string(),
                set("<NotificationConfiguration><QueueConfiguration/></NotificationConfiguration>"),
            ),
            ("website".to_string(), Setting::NotSupported("501".into())),
        ]);
        let now = BTreeMap::from([
            ("cors".to_string(), set("<CORSConfiguration> <CORSRule/> </CORSConfiguration>")),
            ("tagging".to_string(), set("<Tagging/>")),
            ("notification".to_string(), Setting::Unset),
        ]);
        assert_eq!(differences(&recorded, &now, false), ["tagging"]);
        assert_eq!(differences(&recorded, &now, true), ["notification", "tagging"]);
        assert!(had_object_lock(&BTreeMap::from([(
            "object-lock".to_string(),
            set("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>")
        )])));
        assert!("apply-all".parse::<BucketConfigMode>().is_ok() && "always".parse::<BucketConfigMode>().is_err());
    }
}
