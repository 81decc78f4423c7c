//! Faults injected into the object store and PostgreSQL: each backup and restore either
//! succeeds by retrying or fails cleanly. These run once, against our own S3 server (its fault
//! layer), not again against external servers.

use std::time::{Duration, Instant};

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

/// Short timeouts so stalls are noticed quickly.
const FAST: &str = "s3.read_timeout_secs = 2\n";

async fn pending_uploads(info: &speechvault_sandbox::SandboxInfo) -> usize {
    let store = info.object_store().unwrap();
    let mut n = 0;
    for (_, b) in &info.s3.buckets {
        if store.bucket_exists(b).await.unwrap() {
            n += store.list_multipart_uploads(b, "").await.unwrap().len();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_s3_faults_are_survived_by_retrying() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "flt-src", Scale::Small, 41, |o| {
            o.components = vec!["sttAsync".into(), "baseModels".into()]
        }),
        empty_target("flt-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new_with(&[&a.info, &t.info], FAST);
    let fault = |method: &str, query: Option<&str>, key: Option<&str>, skip: u32, times: u32, f: serde_json::Value| serde_json::json!({ "method": method, "query_has": query, "key_contains": key, "skip": skip, "times": times, "fault": f });
    set_faults(
        &a.info,
        serde_json::json!([
            fault(
                "GET",
                Some("list-type"),
                None,
                0,
                2,
                serde_json::json!({"kind": "status", "status": 500, "code": "InternalError"})
            ),
            fault(
                "GET",
                None,
                Some("jobs/"),
                0,
                3,
                serde_json::json!({"kind": "status", "status": 503, "code": "SlowDown", "retry_after": 1})
            ),
            fault(
                "GET",
                None,
                Some("jobs/"),
                0,
                3,
                serde_json::json!({"kind": "status", "status": 503, "code": "SlowDown"})
            ),
            fault("GET", None, Some("jobs/"), 0, 2, serde_json::json!({"kind": "reset"})),
            fault("GET", None, Some("jobs/"), 0, 2, serde_json::json!({"kind": "truncate", "after_bytes": 777})),
            fault(
                "GET",
                None,
                Some("model.bin"),
                0,
                1,
                serde_json::json!({"kind": "truncate", "after_bytes": 3000000})
            ),
            fault("GET", None, Some("jobs/"), 0, 1, serde_json::json!({"kind": "stall", "secs": 30})),
            fault("GET", None, Some("jobs/"), 0, 5, serde_json::json!({"kind": "latency", "ms": 300})),
        ]),
    );
    let start = Instant::now();
    let backup = ws.command(&["--json", "backup", "--from", "flt-src"]).output().unwrap();
    assert!(backup.status.success(), "{}", stderr(&backup));
    assert!(start.elapsed() < Duration::from_secs(120));
    let log = stderr(&backup);
    assert!(log.contains("retrying S3 request") && log.contains("resuming object read"), "{log}");
    let id =
        serde_json::from_slice::<serde_json::Value>(&backup.stdout).unwrap()["backup_id"].as_str().unwrap().to_string();
    set_faults(&a.info, serde_json::json!([]));

    // The restore meets its own faults: throttled and failing PUTs, a lost part, and lost
    // answers to creating and completing multipart uploads (which must be reconciled, not
    // blindly repeated).
    set_faults(
        &t.info,
        serde_json::json!([
            fault(
                "PUT",
                None,
                Some("jobs/"),
                0,
                3,
                serde_json::json!({"kind": "status", "status": 503, "code": "SlowDown", "retry_after": 1})
            ),
            fault(
                "PUT",
                None,
                Some("jobs/"),
                0,
                2,
                serde_json::json!({"kind": "status", "status": 500, "code": "InternalError"})
            ),
            fault("PUT", Some("partNumber"), None, 1, 1, serde_json::json!({"kind": "reset"})),
            fault("POST", Some("uploads"), None, 0, 1, serde_json::json!({"kind": "reset_after"})),
            fault("POST", Some("uploadId"), None, 0, 1, serde_json::json!({"kind": "reset_after"})),
        ]),
    );
    let out = ws.command(&["--json", "restore", &id, "--to", "flt-dst"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert!(stderr(&out).contains("reconciling"), "{}", stderr(&out));
    assert_eq!(pending_uploads(&t.info).await, 0, "no multipart upload is left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_time_out_on_stalls_not_on_total_time() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "slow-src", Scale::Small, 42, |o| o.components = vec!["baseModels".into()]),
        empty_target("slow-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new_with(&[&a.info, &t.info], FAST);
    ws.json(&["backup", "--from", "slow-src"]);
    // An 8 MiB part at 2 MiB/s takes 4 s, twice the 2 s timeout, yet bytes keep moving.
    set_faults(
        &t.info,
        serde_json::json!([{ "method": "PUT", "query_has": "partNumber", "times": 2,
                             "fault": { "kind": "slow_body", "bytes_per_sec": 2097152 } }]),
    );
    let r = ws.json(&["restore", "--to", "slow-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_s3_faults_fail_cleanly_and_leave_nothing_behind() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "dead-src", Scale::Small, 43, |o| {
            o.components = vec!["sttAsync".into(), "baseModels".into()]
        }),
        empty_target("dead-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new_with(&[&a.info, &t.info], FAST);
    // Every object read fails: the backup fails, naming the endpoint, and leaves nothing.
    set_faults(
        &a.info,
        serde_json::json!([{ "method": "GET", "key_contains": "jobs/", "fault": { "kind": "status", "status": 500, "code": "InternalError" } }]),
    );
    let out = ws.run(&["backup", "--from", "dead-src"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&a.info.s3.endpoint) || stderr(&out).contains("InternalError"), "{}", stderr(&out));
    assert!(ws.backups().is_empty());
    set_faults(&a.info, serde_json::json!([]));
    ws.json(&["backup", "--from", "dead-src"]);

    // Every part upload fails on the target: the restore fails, is rolled back, and aborts its
    // multipart uploads; --json lists every failed object while the message stays short.
    set_faults(
        &t.info,
        serde_json::json!([
            { "method": "PUT", "query_has": "partNumber", "fault": { "kind": "status", "status": 500, "code": "InternalError" } },
            { "method": "PUT", "key_contains": "jobs/", "fault": { "kind": "status", "status": 500, "code": "InternalError" } }
        ]),
    );
    let out = ws.run(&["restore", "--to", "dead-dst", "--components", "baseModels"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(pending_uploads(&t.info).await, 0, "multipart uploads are aborted on failure");
    let out = ws.run(&["--json", "restore", "--to", "dead-dst", "--components", "sttAsync", "--parallel", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.len() < 1500, "one short line: {line}");
    assert!(line.contains("rolled back") && line.contains("failures, the first 3"), "{line}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["failures"].as_array().unwrap().len() > 3, "{doc}");
    set_faults(&t.info, serde_json::json!([]));
    assert_eq!(pending_uploads(&t.info).await, 0, "aborted on failure");
    let store = t.info.object_store().unwrap();
    for (_, b) in &t.info.s3.buckets {
        assert!(!store.bucket_exists(b).await.unwrap(), "bucket {b} created by the failed restore is gone");
    }
}

/// pg_dump's connection is killed while it dumps: the backup fails cleanly, the next works.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_connection_killed_mid_dump_fails_the_backup_cleanly() {
    let a = TestInstallation::start_with(exe(), "pgkill", Scale::Small, 44, |o| {
        o.components = vec!["sttCustomization".into()]
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let paused = ws.run_until("backup:pg_dump", &["backup", "--from", "pgkill"]);
    let admin = a.info.pg_config().unwrap().connect("postgres").await.unwrap();
    let start = Instant::now();
    loop {
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = 'stt-customization' AND application_name = 'speechvault/pg_dump'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if killed > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "pg_dump's connection was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = paused.resume();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pg_dump of database \"stt-customization\" failed"), "{}", stderr(&out));
    assert!(ws.backups().is_empty(), "{:?}", ws.backups());
    assert_restic_check(&ws);
    ws.json(&["backup", "--from", "pgkill"]);
}

/// pg_restore's connection is killed while it restores: the restore fails and is rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_connection_killed_mid_restore_rolls_back() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "pgr-src", Scale::Tiny, 45, |o| o.components =
            vec!["ttsCustomization".into()]),
        empty_target("pgr-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "pgr-src"]);
    let paused = ws.run_until("restore:pg_restore", &["restore", "--to", "pgr-dst", "--jobs", "1"]);
    // Hold pg_restore at its first catalog access, then cut its connection.
    let pg = t.info.pg_config().unwrap();
    let blocker = pg.connect("tts-customization").await.unwrap();
    blocker.batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let blocker_pid: i32 = blocker.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let admin = pg.connect("postgres").await.unwrap();
    let start = Instant::now();
    let paused_child = paused;
    let resume = std::thread::spawn(move || paused_child.resume());
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = 'tts-customization' AND pid <> $1 AND backend_type = 'client backend'",
                &[&blocker_pid],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "pg_restore never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(blocker);
    let out = resume.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pg_restore") && stderr(&out).contains("rolled back"), "{}", stderr(&out));
    let exists: i64 = admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = 'tts-customization'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, 0, "the database the restore created was dropped");
}
