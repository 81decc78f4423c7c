//! Backing up an installation that keeps running: objects deleted or overwritten while the
//! backup runs, and servers that ignore `If-Match` or `Range`.

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn put() -> speechvault::objstore::PutOptions {
    speechvault::objstore::PutOptions { content_type: Some("audio/flac".into()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_deleted_or_overwritten_during_a_backup_are_left_out_or_taken_as_they_are_now() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "live-src", Scale::Tiny, 31, |o| o.components = vec!["sttAsync".into()]),
        empty_target("live-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let listed = store.list_all(&bucket, "").await.unwrap();
    let (gone, changed) = (listed[0].key.clone(), listed[1].key.clone());

    // The backup has listed the bucket; the services delete one object and rewrite another.
    let paused = ws.run_until("backup:listed", &["--json", "backup", "--from", "live-src"]);
    store.delete_object(&bucket, &gone).await.unwrap();
    let new_body = bytes::Bytes::from(vec![7u8; 12_345]);
    store.put_object(&bucket, &changed, new_body.clone(), &put()).await.unwrap();
    let out = paused.resume();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = &report["buckets"]["stt-async-icp"];
    assert_eq!(b["vanished"], 1, "{report}");
    assert_eq!(b["objects"].as_u64().unwrap() as usize, listed.len() - 1);
    assert!(report["warnings"][0].as_str().unwrap().contains("deleted while the backup ran"), "{report}");
    let manifest = restic(&ws, &["dump", "latest", "--tag", "manifest", "/speechvault/manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["buckets"]["stt-async-icp"]["vanished"], serde_json::json!([gone]));

    // The backup restores and verifies: the vanished object is not part of it, the changed
    // one is there as it is now.
    let r = ws.json(&["restore", report["backup_id"].as_str().unwrap(), "--to", "live-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let target = t.info.object_store().unwrap();
    let tb = t.info.bucket("stt-async-icp");
    assert!(target.head_object(&tb, &gone).await.is_err());
    assert_eq!(target.get_bytes(&tb, &changed).await.unwrap().1, new_body);
    // Verifying the source (which no longer has the vanished object) passes too.
    ws.json(&["verify", "latest", "--against", "live-src"]);
}

/// A server that ignores If-Match serves the new version of an object rewritten after the
/// listing; the answer's ETag gives it away, so the new version is backed up whole, never a
/// splice of two.
#[tokio::test(flavor = "multi_thread")]
async fn servers_that_ignore_if_match_or_range_cannot_splice_versions() {
    if external() {
        return; // needs our server's switches
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "nomatch", Scale::Tiny, 32, |o| {
            o.components = vec!["sttAsync".into()];
            o.s3_behaviour.ignore_if_match = true;
            o.s3_behaviour.ignore_range = true;
        }),
        empty_target("nomatch-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let listed = store.list_all(&bucket, "").await.unwrap();
    let changed = listed[2].clone();
    // Same size, other bytes: only the ETag tells the versions apart.
    let new_body = bytes::Bytes::from(vec![9u8; changed.size as usize]);
    // Every object's body breaks after 1,000 bytes once: the reads resume, and the server
    // answers the resume with the whole object (it ignores Range).
    set_faults(
        &a.info,
        serde_json::json!([{ "method": "GET", "key_contains": "jobs/", "times": 3,
                              "fault": { "kind": "truncate", "after_bytes": 1000 } }]),
    );
    let paused = ws.run_until("backup:listed", &["--json", "backup", "--from", "nomatch"]);
    store.put_object(&bucket, &changed.key, new_body.clone(), &put()).await.unwrap();
    let out = paused.resume();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming object read"), "the truncated reads were resumed: {}", stderr(&out));
    set_faults(&a.info, serde_json::json!([]));
    let r = ws.json(&["restore", "--to", "nomatch-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let target = t.info.object_store().unwrap();
    let tb = t.info.bucket("stt-async-icp");
    assert_eq!(target.get_bytes(&tb, &changed.key).await.unwrap().1, new_body);
    for o in &listed {
        if o.key != changed.key {
            assert_eq!(
                target.get_bytes(&tb, &o.key).await.unwrap().1,
                store.get_bytes(&bucket, &o.key).await.unwrap().1,
                "{:?}",
                o.key
            );
        }
    }
}
