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
    assert!(control.len() >= 4, "the seed holds keys with a tab, a newline, a CR and U+0001: {control:?}");
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
    let opts = PutOptions { content_type: head.content_type.clone(), metadata: head.metadata.clone(), attrs };
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
