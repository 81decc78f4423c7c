//! Working against an installation in production: a backup that holds back (read rate,
//! requests, PostgreSQL connections), incremental backups after a day's changes, and the
//! verification levels of a restore.

use std::time::Instant;

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn bucket_of<'a>(report: &'a serde_json::Value, bucket: &str) -> &'a serde_json::Value {
    report["verify"]["buckets"].as_array().unwrap().iter().find(|b| b["bucket"] == bucket).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_holds_back_when_asked_and_still_backs_up_everything() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "gentle-src", Scale::Tiny, 41, |o| o.components = vec!["sttAsync".into()]),
        empty_target("gentle-dst")
    );
    let a = a.unwrap();
    // About 3 MiB more to read.
    let added = speechvault_sandbox::bulk::add_objects(&a.info, 41, "gentle", 400, 16 << 10, 8).await.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let total: u64 = {
        let b = ws.json(&["backup", "--from", "gentle-src", "--max-requests", "1", "--pg-connections", "2"]);
        b["buckets"]["stt-async-icp"]["bytes"].as_u64().unwrap()
    };
    assert!(total > added, "{total} {added}");
    // At 1 MiB/s, reading it all again takes at least total/1MiB seconds, less the burst.
    let started = Instant::now();
    ws.json(&["backup", "--from", "gentle-src", "--full", "--limit-rate", "1MiB/s"]);
    let secs = started.elapsed().as_secs_f64();
    let floor = total as f64 / (1 << 20) as f64 - 0.5;
    assert!(secs >= floor, "a backup of {total} bytes at 1 MiB/s took {secs:.1}s");
    let bad = ws.run(&["backup", "--from", "gentle-src", "--limit-rate", "fast"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    // Both backups are whole: the last one restores and verifies byte for byte.
    let r = ws.json(&["restore", "latest", "--to", "gentle-dst", "--verify", "read-back"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let b = bucket_of(&r, "stt-async-icp");
    assert_eq!(b["digests_checked"], b["expected_objects"], "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_days_changes_only_what_changed_is_read_and_every_level_of_verification_holds() {
    let (a, t) = tokio::join!(TestInstallation::start(exe(), "churn-src", Scale::Tiny, 42), empty_target("churn-dst"));
    let a = a.unwrap();
    speechvault_sandbox::bulk::add_objects(&a.info, 42, "churn", 300, 4 << 10, 8).await.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let first = ws.json(&["backup", "--from", "churn-src"]);
    let objects = first["buckets"]["stt-async-icp"]["objects"].as_u64().unwrap();
    // The benchmark's read ceiling reads exactly what the backup holds.
    let read = speechvault_sandbox::bulk::read_all(&a.info, 8).await.unwrap();
    let backed_up: u64 = first["buckets"].as_object().unwrap().values().map(|b| b["objects"].as_u64().unwrap()).sum();
    let backed_up_bytes: u64 =
        first["buckets"].as_object().unwrap().values().map(|b| b["bytes"].as_u64().unwrap()).sum();
    assert_eq!((read.objects, read.bytes), (backed_up, backed_up_bytes), "{first}");
    let churn = speechvault_sandbox::bulk::churn(&a.info, 7, 10, 4).await.unwrap();
    assert!(churn.objects_rewritten > 0 && churn.rows_updated > 0, "{churn:?}");
    let second = ws.json(&["backup", "--from", "churn-src"]);
    let total_objects: u64 =
        second["buckets"].as_object().unwrap().values().map(|b| b["objects"].as_u64().unwrap()).sum();
    let unchanged: u64 =
        second["buckets"].as_object().unwrap().values().map(|b| b["unchanged"].as_u64().unwrap()).sum();
    assert_eq!(second["buckets"]["stt-async-icp"]["objects"].as_u64().unwrap(), objects);
    assert_eq!(unchanged, total_objects - churn.objects_rewritten, "{second}");
    // The changed rows and objects are what the new backup holds.
    ws.json(&["verify", "latest", "--against", "churn-src"]);

    // The default restore verifies by the server's checks, row digests and a listing.
    let r = ws.json(&["restore", "latest", "--to", "churn-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert_eq!(bucket_of(&r, "stt-async-icp")["digests_checked"], 0);
    assert!(r["verify"]["tables"].as_array().unwrap().iter().all(|t| t["content"] == "same"), "{r}");
    // What a listing proves: an object gone from the target is found.
    let store = t.info.object_store().unwrap();
    let bucket = t.info.bucket("stt-async-icp");
    let gone = store.list_page(&bucket, "bulk/", None).await.unwrap().0[0].key.clone();
    store.delete_object(&bucket, &gone).await.unwrap();
    let out = ws.run(&["--json", "verify", "latest", "--against", "churn-dst", "--no-digests"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = v["buckets"].as_array().unwrap().iter().find(|b| b["bucket"] == "stt-async-icp").unwrap();
    assert_eq!(b["missing"], serde_json::json!([gone]), "{b}");
    // --verify=none skips the step; --no-verify says the same.
    let c = ws.run(&["restore", "latest", "--to", "churn-dst", "--clean", "--verify", "none", "--no-verify"]);
    assert_eq!(c.status.code(), Some(2), "{}", stderr(&c));
    let c = ws.json(&["restore", "latest", "--to", "churn-dst", "--clean", "--no-verify"]);
    assert!(c["verify"].is_null(), "{c}");
    ws.json(&["verify", "latest", "--against", "churn-dst"]);
}

/// A bucket known from the previous backup is listed in key ranges side by side: objects
/// deleted and added anywhere in the key space between two backups (at the ranges' edges too)
/// are all seen, none twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_listed_in_ranges_misses_nothing_and_counts_nothing_twice() {
    let a = TestInstallation::start_with(exe(), "ranges", Scale::Tiny, 43, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    speechvault_sandbox::bulk::add_objects(&a.info, 43, "ranges", 4_500, 64, 16).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    ws.json(&["backup", "--from", "ranges"]);
    // Changes all over the key space: every 37th object deleted, 200 new keys (sorting
    // before, between and after the old ones), one object rewritten.
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let before = store.list_all(&bucket, "").await.unwrap();
    for o in before.iter().step_by(37) {
        store.delete_object(&bucket, &o.key).await.unwrap();
    }
    for i in 0..200 {
        let key = match i % 4 {
            0 => format!("!first-{i}"),
            1 => format!("{}~{i}", before[(i * 21) % before.len()].key),
            2 => format!("zzz/last-{i}"),
            _ => format!("jobs/{i:05}/new"),
        };
        store.put_object(&bucket, &key, bytes::Bytes::from(vec![b'x'; i]), &Default::default()).await.unwrap();
    }
    let second = ws.json(&["backup", "--from", "ranges"]);
    let mut live: Vec<String> = store.list_all(&bucket, "").await.unwrap().into_iter().map(|o| o.key).collect();
    live.sort();
    let listed = ws.json(&["ls", second["backup_id"].as_str().unwrap(), "--objects", "stt-async-icp"]);
    let mut backed: Vec<String> =
        listed["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect();
    backed.sort();
    assert_eq!(backed.len(), live.len());
    assert_eq!(backed, live, "the backup holds exactly the bucket's keys");
    assert!(second["buckets"]["stt-async-icp"]["unchanged"].as_u64().unwrap() > 4_000);
}
