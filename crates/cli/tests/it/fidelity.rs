//! Everything an object is comes back: its bytes, content type, user metadata (encoded words
//! as the server returned them), the other standard headers, tags, and keys with control
//! characters. A target that does not keep an attribute is refused by name before anything
//! is written, unless the loss is accepted; an attribute the source answers in a form that
//! cannot be kept fails the backup naming the object.

use std::collections::BTreeMap;

use speechvault::objstore::{ObjectAttributes, PutOptions};
use speechvault_sandbox::SandboxInfo;
use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

/// An object as a client sees it: bytes (SHA-256), type, metadata, attributes with tags.
type Seen = (String, Option<String>, BTreeMap<String, String>, ObjectAttributes);

async fn seen(info: &SandboxInfo, bucket: &str) -> BTreeMap<String, Seen> {
    let store = info.object_store().unwrap();
    let name = info.bucket(bucket);
    let mut out = BTreeMap::new();
    for o in store.list_all(&name, "").await.unwrap() {
        let (head, body) = store.get_bytes(&name, &o.key).await.unwrap();
        let mut attrs = head.attrs.clone();
        attrs.tags = store.get_object_tagging(&name, &o.key).await.unwrap_or_default();
        // Checksums a server computes by itself are not what a client set.
        attrs.checksums.clear();
        out.insert(o.key.clone(), (sha256_hex(&body), head.content_type, head.metadata, attrs));
    }
    out
}

fn only_stt_customization(o: &mut speechvault_sandbox::UpOptions) {
    o.components = vec!["sttCustomization".into()];
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attribute_and_every_key_comes_back_exactly() {
    let (a, b) = tokio::join!(
        TestInstallation::start_with(exe(), "fid-a", Scale::Tiny, 81, only_stt_customization),
        TestInstallation::start_with(exe(), "fid-b", Scale::Tiny, 0, |o| o.seed_data = false)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let source = seen(&a.info, "stt-customization-icp").await;
    let control: Vec<&String> = source.keys().filter(|k| k.chars().any(|c| c.is_control())).collect();
    // Our server and Garage store keys with a tab, a newline, a CR and U+0001; moto only the
    // tab (its routing answers 404 to the others, so the seed leaves them out there).
    let expected = if external() { 1 } else { 4 };
    assert!(control.len() >= expected, "keys with control characters: {control:?}");
    let gz = &source["customizations/edge-cases/attributes/model.json.gz"].3;
    assert_eq!(gz.content_encoding.as_deref(), Some("gzip"), "the server kept the seed's headers");
    let words = &source["customizations/edge-cases/attributes/encoded-words.txt"].2;
    assert_eq!(words["title"], "=?UTF-8?B?w7xiZXIgZGllIEJyw7xja2U=?=");

    let ws = Workspace::new(&[&a.info, &b.info]);
    let backup = ws.json(&["backup", "--from", "fid-a"]);
    assert_eq!(backup["buckets"]["stt-customization-icp"]["objects"], source.len());
    let out = ws.run(&["--json", "restore", "latest", "--to", "fid-b", "--verify=read-back"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(seen(&b.info, "stt-customization-icp").await, source, "every object, every attribute");
    let v = ws.json(&["verify", "latest", "--against", "fid-b"]);
    assert_eq!(v["ok"], true, "{v}");

    // Attributes changed on the installation are differences, by name.
    let store = b.info.object_store().unwrap();
    let name = b.info.bucket("stt-customization-icp");
    let key = "customizations/edge-cases/attributes/model.json.gz";
    let (head, body) = store.get_bytes(&name, key).await.unwrap();
    let mut attrs = head.attrs.clone();
    attrs.cache_control = Some("max-age=86400".into());
    let opts = PutOptions {
        content_type: head.content_type.clone(),
        metadata: head.metadata.clone(),
        attrs,
        ..Default::default()
    };
    store.put_object(&name, key, body, &opts).await.unwrap();
    let out = ws.run(&["--json", "verify", "latest", "--against", "fid-b"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let differs = v["buckets"][0]["different"].to_string();
    assert!(differs.contains("Cache-Control") && differs.contains("model.json.gz"), "{differs}");
    // Without reading the objects back, the attributes are still compared (HEAD).
    let out = ws.run(&["--json", "restore", "latest", "--to", "fid-b", "--clean"]);
    assert!(out.status.success(), "--clean rewrites the object whose attributes differ: {}", stderr(&out));
    assert_eq!(seen(&b.info, "stt-customization-icp").await, source);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_drops_tags_is_refused_by_name_unless_the_loss_is_accepted() {
    if external() {
        return; // the target's behaviour is a property of our own server
    }
    let (a, b) = tokio::join!(
        TestInstallation::start_with(exe(), "fid-tags-a", Scale::Tiny, 82, only_stt_customization),
        TestInstallation::start_with(exe(), "fid-tags-b", Scale::Tiny, 0, |o| {
            o.seed_data = false;
            o.s3_behaviour.drop_tags = true;
        })
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ws = Workspace::new(&[&a.info, &b.info]);
    ws.json(&["backup", "--from", "fid-tags-a"]);
    let out = ws.run(&["--json", "restore", "latest", "--to", "fid-tags-b"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"].as_str().unwrap().contains("does not keep tags"), "{doc}");
    assert!(doc["failures"][0].as_str().unwrap().contains("stt-customization-icp"), "{doc}");
    let store = b.info.object_store().unwrap();
    assert!(!store.bucket_exists(&b.info.bucket("stt-customization-icp")).await.unwrap(), "nothing was written");
    let pg = b.info.pg_config().unwrap().connect("postgres").await.unwrap();
    let dbs: i64 =
        pg.query_one("SELECT count(*) FROM pg_database WHERE datname = 'stt-customization'", &[]).await.unwrap().get(0);
    assert_eq!(dbs, 0, "no database was created");

    let r = ws.json(&["restore", "latest", "--to", "fid-tags-b", "--allow-attribute-loss"]);
    assert_eq!(r["verify"]["ok"], true, "the restore verifies what it could set: {r}");
    assert!(r["notes"].to_string().contains("does not keep tags"), "{r}");
    // verify of the installation as it is: the tags are missing, and it says so.
    let out = ws.run(&["--json", "verify", "latest", "--against", "fid-tags-b"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tags"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attribute_the_source_answers_in_a_form_that_cannot_be_kept_fails_the_backup_by_key() {
    if external() {
        return; // faults are injected into our own server
    }
    let a = TestInstallation::start_with(exe(), "fid-bad", Scale::Tiny, 83, only_stt_customization).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    set_faults(
        &a.info,
        serde_json::json!([{"method": "GET", "key_contains": "attributes/tagged.txt",
            "fault": {"kind": "header", "name": "x-amz-tagging-count", "value": "many"}}]),
    );
    let out = ws.run(&["--json", "backup", "--from", "fid-bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = doc.to_string();
    assert!(all.contains("attributes/tagged.txt") && all.contains("x-amz-tagging-count"), "{doc}");
    assert!(ws.backups().iter().all(|b| b["complete"] == false), "no complete backup is left");
}

async fn setting(info: &SandboxInfo, bucket: &str, name: &str) -> speechvault::objstore::Setting {
    info.object_store().unwrap().get_bucket_setting(&info.bucket(bucket), name).await.unwrap()
}

/// A bucket's own settings come back with it: lifecycle rules, CORS, tags (seeded), and a
/// policy, encryption and versioning set here; notifications only when asked for; a policy of
/// the target's own only replaced with --clean; object lock only into a bucket that has it.
#[tokio::test(flavor = "multi_thread")]
async fn a_buckets_own_settings_come_back_as_the_rules_say() {
    use speechvault::objstore::Setting;
    if external() {
        return; // which settings a server keeps differs; this is about the rules
    }
    let components = |o: &mut speechvault_sandbox::UpOptions| o.components = vec!["sttAsync".into()];
    let (a, b, c, d) = tokio::join!(
        TestInstallation::start_with(exe(), "set-a", Scale::Tiny, 84, components),
        TestInstallation::start_with(exe(), "set-b", Scale::Tiny, 0, |o| o.seed_data = false),
        TestInstallation::start_with(exe(), "set-c", Scale::Tiny, 0, |o| o.seed_data = false),
        TestInstallation::start_with(exe(), "set-d", Scale::Tiny, 0, |o| o.seed_data = false)
    );
    let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::x/*"}]}"#;
    let notification = "<NotificationConfiguration><QueueConfiguration><Queue>arn:aws:sqs:us-east-1:1:jobs</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>";
    let encryption = "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>";
    store.put_bucket_setting(&bucket, "policy", policy).await.unwrap();
    store.put_bucket_setting(&bucket, "notification", notification).await.unwrap();
    store.put_bucket_setting(&bucket, "encryption", encryption).await.unwrap();
    store
        .put_bucket_setting(
            &bucket,
            "versioning",
            "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        )
        .await
        .unwrap();
    // Target c's bucket exists, empty, with a policy of its own.
    let c_store = c.info.object_store().unwrap();
    let c_bucket = c.info.bucket("stt-async-icp");
    c_store.create_bucket(&c_bucket).await.unwrap();
    let own = r#"{"Version":"2012-10-17","Statement":[]}"#;
    c_store.put_bucket_setting(&c_bucket, "policy", own).await.unwrap();

    let ws = Workspace::new(&[&a.info, &b.info, &c.info, &d.info]);
    let backup = ws.json(&["backup", "--from", "set-a"]);
    assert_eq!(backup["buckets"]["stt-async-icp"]["objects"].as_u64().map(|n| n > 0), Some(true));

    let r = ws.json(&["restore", "latest", "--to", "set-b"]);
    let applied: Vec<String> = r["bucket_settings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "applied")
        .map(|s| s["setting"].as_str().unwrap().to_string())
        .collect();
    for name in ["lifecycle", "policy", "encryption", "versioning"] {
        assert!(applied.contains(&name.to_string()), "{name} applied: {r}");
    }
    assert!(
        matches!(setting(&b.info, "stt-async-icp", "lifecycle").await, Setting::Set(d) if d.contains("expire-job-results"))
    );
    assert_eq!(setting(&b.info, "stt-async-icp", "notification").await, Setting::Unset, "notifications need apply-all");
    assert!(r["bucket_settings"].to_string().contains("apply-all"), "{r}");
    let v = ws.json(&["verify", "latest", "--against", "set-b"]);
    assert_eq!(v["ok"], true, "{v}");

    // Changed on the installation: diff and verify name the setting.
    b.info
        .object_store()
        .unwrap()
        .put_bucket_setting(&b.info.bucket("stt-async-icp"), "lifecycle", "<LifecycleConfiguration><Rule><ID>other</ID><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>")
        .await
        .unwrap();
    let out = ws.run(&["--json", "verify", "latest", "--against", "set-b"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"settings_different\":[\"lifecycle\"]"));
    let changes = ws.json(&["diff", "latest", "--source", "set-a", "--against", "set-b"]);
    let changed = changes["buckets"][0]["settings"].to_string();
    assert!(changed.contains("lifecycle"), "{changes}");

    // The target's own policy stays without --clean; apply-all brings the notifications.
    let r = ws.json(&["restore", "latest", "--to", "set-c", "--bucket-config", "apply-all"]);
    assert!(matches!(setting(&c.info, "stt-async-icp", "policy").await, Setting::Set(d) if d == own), "{r}");
    assert!(matches!(setting(&c.info, "stt-async-icp", "notification").await, Setting::Set(_)));
    let r = ws.json(&["restore", "latest", "--to", "set-c", "--clean"]);
    assert!(
        matches!(setting(&c.info, "stt-async-icp", "policy").await, Setting::Set(d) if d.contains("s3:GetObject")),
        "{r}"
    );

    // --bucket-config=skip leaves a target's settings alone.
    ws.json(&["restore", "latest", "--to", "set-d", "--bucket-config", "skip"]);
    assert_eq!(setting(&d.info, "stt-async-icp", "lifecycle").await, Setting::Unset);
}

#[tokio::test(flavor = "multi_thread")]
async fn object_lock_goes_only_into_a_bucket_created_with_it() {
    use speechvault::objstore::Setting;
    if external() {
        return;
    }
    let (a, b, c) = tokio::join!(
        TestInstallation::start_with(exe(), "lock-a", Scale::Tiny, 85, |o| o.components = vec!["sttAsync".into()]),
        TestInstallation::start_with(exe(), "lock-b", Scale::Tiny, 0, |o| o.seed_data = false),
        TestInstallation::start_with(exe(), "lock-c", Scale::Tiny, 0, |o| o.seed_data = false)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    // The source bucket is created again, with object lock and a default retention.
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    for o in store.list_all(&bucket, "").await.unwrap() {
        store.delete_object(&bucket, &o.key).await.unwrap();
    }
    store.delete_bucket(&bucket).await.unwrap();
    store.create_bucket_with_object_lock(&bucket).await.unwrap();
    store
        .put_bucket_setting(&bucket, "object-lock", "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>")
        .await
        .unwrap();
    store.put_object(&bucket, "jobs/1.json", bytes::Bytes::from_static(b"{}"), &Default::default()).await.unwrap();
    // Target c already has the bucket, without object lock.
    c.info.object_store().unwrap().create_bucket(&c.info.bucket("stt-async-icp")).await.unwrap();
    let ws = Workspace::new(&[&a.info, &b.info, &c.info]);
    ws.json(&["backup", "--from", "lock-a", "--components", "sttAsync"]);
    let out = ws.run(&["--json", "restore", "latest", "--to", "lock-c"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("without object lock"), "{}", stderr(&out));
    let c_store = c.info.object_store().unwrap();
    assert!(c_store.list_all(&c.info.bucket("stt-async-icp"), "").await.unwrap().is_empty(), "nothing was written");

    ws.json(&["restore", "latest", "--to", "lock-b"]);
    let b_store = b.info.object_store().unwrap();
    let b_bucket = b.info.bucket("stt-async-icp");
    assert!(b_store.bucket_has_object_lock(&b_bucket).await.unwrap(), "created with object lock");
    assert!(
        matches!(b_store.get_bucket_setting(&b_bucket, "object-lock").await.unwrap(), Setting::Set(d) if d.contains("GOVERNANCE"))
    );
}
