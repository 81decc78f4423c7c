//! A restore never destroys its target before the backup is known good, rolls back only what
//! it wrote, says what state the target is in when it cannot, and leaves the services able to
//! read their data.

use std::path::PathBuf;

use speechvault_sandbox::SandboxInfo;
use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::{self, Scale};

use crate::common::*;

/// Everything a target holds: rows per table per database, and objects per bucket.
async fn state(info: &SandboxInfo) -> (Vec<std::collections::BTreeMap<String, Vec<String>>>, Vec<Vec<(String, u64)>>) {
    let admin = info.pg_config().unwrap().connect("postgres").await.unwrap();
    let mut dbs = Vec::new();
    for db in ["stt-async", "stt-customization", "tts-customization"] {
        let n: i64 =
            admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&db]).await.unwrap().get(0);
        dbs.push(if n > 0 { all_rows(info, db).await } else { Default::default() });
    }
    let store = info.object_store().unwrap();
    let mut buckets = Vec::new();
    for (_, b) in &info.s3.buckets {
        let list = if store.bucket_exists(b).await.unwrap() { store.list_all(b, "").await.unwrap() } else { vec![] };
        buckets.push(list.into_iter().map(|o| (o.key, o.size)).collect());
    }
    (dbs, buckets)
}

/// Data packs of the repository, largest first.
fn packs(ws: &Workspace) -> Vec<(u64, PathBuf)> {
    let mut packs = Vec::new();
    for d in std::fs::read_dir(ws.repo().join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            packs.push((f.metadata().unwrap().len(), f.path()));
        }
    }
    packs.sort();
    packs.reverse();
    packs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_restore_from_a_damaged_backup_touches_nothing() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "dmg-src", Scale::Tiny, 61, |o| o.components =
            vec!["sttAsync".into(), "baseModels".into()]),
        empty_target("dmg-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "dmg-src"]);
    ws.json(&["restore", "--to", "dmg-dst"]);
    let before = state(&t.info).await;
    let (len, largest) = packs(&ws)[0].clone();
    let original = std::fs::read(&largest).unwrap();
    use std::os::unix::fs::PermissionsExt;

    // A missing pack, a truncated pack: found before anything is dropped.
    for damage in ["missing", "truncated"] {
        match damage {
            "missing" => std::fs::remove_file(&largest).unwrap(),
            _ => {
                std::fs::write(&largest, &original[..len as usize / 2]).unwrap();
                std::fs::set_permissions(&largest, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let out = ws.run(&["restore", "--to", "dmg-dst", "--clean"]);
        assert_eq!(out.status.code(), Some(1), "{damage}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("damaged") && err.contains("Nothing was changed"), "{damage}: {err}");
        assert!(err.contains(if damage == "missing" { "is missing" } else { "bytes, the index says" }), "{err}");
        assert_eq!(state(&t.info).await, before, "{damage}: the target was not touched");
    }

    // Flipped bytes inside the data pass the quick check; --preflight=full reads everything
    // and finds them before anything changes.
    let mut flipped = original.clone();
    for b in &mut flipped[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    std::fs::write(&largest, &flipped).unwrap();
    let out = ws.run(&["restore", "--to", "dmg-dst", "--clean", "--preflight=full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Nothing was changed"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Some additional details"), "{}", stderr(&out));
    assert_eq!(state(&t.info).await, before);

    // Without the full read, the damage shows once the target is already cleaned: the error
    // says what state the target is in and how to finish; once the pack is repaired, that
    // command finishes the job. (Objects the target still holds intact are kept, not read
    // from the backup: lose them first.)
    let store = t.info.object_store().unwrap();
    for (_, b) in &t.info.s3.buckets {
        if store.bucket_exists(b).await.unwrap() {
            store.delete_all(b, "", 8).await.unwrap();
        }
    }
    let out = ws.run(&["restore", "--to", "dmg-dst", "--clean"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("now holds part of backup") && err.contains("--clean --resume"), "{err}");
    // The repository is blamed, not the target; the databases were restored whole first.
    assert!(err.contains("cannot be read from the repository") && !err.contains("Upload"), "{err}");
    assert_eq!(state(&t.info).await.0, before.0, "the databases are whole after the failed --clean");
    // The suggested `--clean --resume`, with the damage still there, fails the same way and
    // never empties what the failed run restored.
    let out = ws.run(&["restore", "--to", "dmg-dst", "--clean", "--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--salvage"), "{}", stderr(&out));
    assert_eq!(state(&t.info).await.0, before.0, "the databases are whole after the failed --clean --resume");
    // --salvage restores everything else and names the object it could not read (exit 3).
    let out = ws.run(&["--json", "restore", "--to", "dmg-dst", "--clean", "--resume", "--salvage"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["salvage"]["objects_lost"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert_eq!(state(&t.info).await.0, before.0);
    std::fs::write(&largest, &original).unwrap();
    let r = ws.json(&["restore", "--to", "dmg-dst", "--clean", "--resume"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_takes_back_only_what_the_restore_wrote() {
    if external() {
        return; // injects faults through our server
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "rb-src", Scale::Tiny, 62, |o| {
            o.components = vec!["sttAsync".into(), "sttCustomization".into()]
        }),
        empty_target("rb-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "rb-src"]);
    // The target already has an empty stt-async database (with a schema of its own).
    let pg = t.info.pg_config().unwrap();
    let admin = pg.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE \"stt-async\" OWNER speech_svc").await.unwrap();
    pg.connect("stt-async")
        .await
        .unwrap()
        .batch_execute("CREATE SCHEMA audit AUTHORIZATION speech_svc; GRANT USAGE ON SCHEMA audit TO speech_reader")
        .await
        .unwrap();
    let paused = ws.run_until("restore:objects", &["restore", "--to", "rb-dst"]);
    // Meanwhile a service writes into the bucket the restore created, then uploads start failing.
    let store = t.info.object_store().unwrap();
    let bucket = t.info.bucket("stt-async-icp");
    store
        .put_object(&bucket, "jobs/written-by-the-service", bytes::Bytes::from_static(b"mine"), &Default::default())
        .await
        .unwrap();
    set_faults(
        &t.info,
        serde_json::json!([{ "method": "PUT", "fault": { "kind": "status", "status": 500, "code": "InternalError" } }]),
    );
    let out = paused.resume();
    set_faults(&t.info, serde_json::json!([]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(
        store.list_all(&bucket, "").await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>(),
        ["jobs/written-by-the-service"],
        "only the restore's own objects were deleted"
    );
    let dbs: Vec<String> = admin
        .query("SELECT datname::text FROM pg_database WHERE datname LIKE '%-%' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dbs, ["stt-async"], "the created database is gone, the existing one stays");
    let c = pg.connect("stt-async").await.unwrap();
    let tables: i64 = c
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the existing database is empty again");
    let audit: bool =
        c.query_one("SELECT has_schema_privilege('speech_reader', 'audit', 'USAGE')", &[]).await.unwrap().get(0);
    assert!(audit, "its schema came back with its privileges");
    assert!(!store.bucket_exists(&t.info.bucket("stt-customization-icp")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_in_the_ownership_step_or_a_stop_signal_rolls_back() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "own-src", Scale::Tiny, 63, |o| o.components = vec!["sttAsync".into()]),
        empty_target("own-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "own-src"]);
    let from = seed::instances(63)[1].0.to_string();
    let args = [
        "restore",
        "--to",
        "own-dst",
        "--from-instance",
        &from,
        "--to-instance",
        "11111111-2222-4333-8444-555555555555",
    ];
    let empty = state(&t.info).await;

    // The ownership transaction loses its connection before it commits.
    let paused = ws.run_until("restore:ownership", &args);
    let admin = t.info.pg_config().unwrap().connect("postgres").await.unwrap();
    admin
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'stt-async' AND state = 'idle in transaction'")
        .await
        .unwrap();
    let out = paused.resume();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(state(&t.info).await, empty, "after an ownership failure the target is empty again");

    // SIGINT while objects are being written: the restore stops and rolls back, promptly.
    let paused = ws.run_until("restore:objects", &args);
    let start = std::time::Instant::now();
    let out = paused.signal(libc::SIGINT);
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted") && stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(state(&t.info).await, empty, "after SIGINT the target is empty again");
    let store = t.info.object_store().unwrap();
    for (_, b) in &t.info.s3.buckets {
        if store.bucket_exists(b).await.unwrap() {
            assert!(store.list_multipart_uploads(b, "").await.unwrap().is_empty());
        }
    }
    // And the restore works afterwards.
    let mut ok = vec!["--json"];
    ok.extend(args);
    let out = ws.command(&ok).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn differences_found_by_verification_are_reported_not_rolled_back() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "diff-src", Scale::Tiny, 64, |o| o.components = vec!["sttAsync".into()]),
        empty_target("diff-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "diff-src"]);
    let paused = ws.run_until("restore:objects", &["--json", "restore", "--to", "diff-dst"]);
    let store = t.info.object_store().unwrap();
    let bucket = t.info.bucket("stt-async-icp");
    store
        .put_object(&bucket, "jobs/extra-from-a-service", bytes::Bytes::from_static(b"x"), &Default::default())
        .await
        .unwrap();
    let out = paused.resume();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["verify"]["ok"], false);
    assert_eq!(report["verify"]["buckets"][0]["unexpected"], serde_json::json!(["jobs/extra-from-a-service"]));
    // The data stays.
    let n: i64 = t
        .info
        .pg_config()
        .unwrap()
        .connect("stt-async")
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_only_restore_commits_all_databases_or_none() {
    let (a, t) = tokio::join!(TestInstallation::start(exe(), "do2-src", Scale::Tiny, 65), empty_target("do2-dst"));
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "do2-src"]);
    ws.json(&["restore", "--to", "do2-dst", "--no-verify"]);
    let pg = t.info.pg_config().unwrap();
    for db in ["stt-customization", "tts-customization", "stt-async"] {
        pg.connect(db)
            .await
            .unwrap()
            .batch_execute(
                "DO $$ DECLARE r record; BEGIN FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP \
                 EXECUTE 'TRUNCATE ' || quote_ident(r.tablename) || ' CASCADE'; END LOOP; END $$; \
                 SELECT lo_unlink(oid) FROM pg_largeobject_metadata;",
            )
            .await
            .unwrap();
    }
    // The last database's schema differs from the backup's: its load fails after the others
    // were loaded (not committed).
    pg.connect("tts-customization")
        .await
        .unwrap()
        .batch_execute("ALTER TABLE words ADD COLUMN extra text NOT NULL")
        .await
        .unwrap();
    let from = seed::instances(65)[0].0.to_string();
    let out = ws.run(&[
        "restore",
        "--to",
        "do2-dst",
        "--data-only",
        "--from-instance",
        &from,
        "--to-instance",
        "22222222-3333-4444-8555-666666666666",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Nothing was committed"), "{}", stderr(&out));
    for db in ["stt-async", "stt-customization", "tts-customization"] {
        for (table, rows) in all_rows(&t.info, db).await {
            assert!(rows.is_empty(), "{db}.{table} holds {} rows: nothing may be committed", rows.len());
        }
    }
    pg.connect("tts-customization").await.unwrap().batch_execute("ALTER TABLE words DROP COLUMN extra").await.unwrap();
    let r = ws.json(&[
        "restore",
        "--to",
        "do2-dst",
        "--data-only",
        "--from-instance",
        &from,
        "--to-instance",
        "22222222-3333-4444-8555-666666666666",
    ]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_objects_belong_to_the_service_role_and_grants_follow_existing_roles() {
    let (a, t, u) = tokio::join!(
        TestInstallation::start_with(exe(), "role-src", Scale::Tiny, 66, |o| o.components =
            vec!["sttCustomization".into()]),
        empty_target("role-dst"),
        empty_target("role-dst2")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info, &u.info]);
    ws.json(&["backup", "--from", "role-src"]);
    let r = ws.json(&["restore", "--to", "role-dst"]);
    assert_eq!(r["databases"]["stt-customization"]["owner"], "speech_svc", "{r}");
    assert_eq!(r["databases"]["stt-customization"]["grants_skipped"], serde_json::json!([]), "{r}");
    // The services connect as their own role and read their data.
    let pw = std::fs::read_to_string(t.info.dir.join("secrets/pg-service-password")).unwrap();
    let svc = speechvault::pg::PgConfig::new(
        "127.0.0.1",
        t.info.postgres.port,
        "speech_svc",
        Some(speechvault::support::secret::Secret::new(pw)),
    );
    let c = svc.connect("stt-customization").await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM customizations", &[]).await.unwrap().get(0);
    assert!(n > 0);
    let not_theirs: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> 'speech_svc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(not_theirs, 0, "every table, index, sequence and view belongs to the service role");
    let lo: i64 = c
        .query_one("SELECT count(*) FROM pg_largeobject_metadata WHERE pg_get_userbyid(lomowner) <> 'speech_svc'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lo, 0, "large objects too");
    c.execute("UPDATE customizations SET name = name WHERE false", &[]).await.unwrap();
    let reader: bool = c
        .query_one("SELECT has_table_privilege('speech_reader', 'public.customizations', 'SELECT')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reader, "the backup's grant to an existing role is kept");

    // A target without the reader role: the grant is left out and reported.
    u.info
        .pg_config()
        .unwrap()
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute("DROP ROLE speech_reader")
        .await
        .unwrap();
    let r = ws.json(&["restore", "--to", "role-dst2"]);
    assert!(!r["databases"]["stt-customization"]["grants_skipped"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("grants skipped")), "{r}");
    // A --db-owner that does not exist is refused up front.
    let out = ws.run(&["restore", "--to", "role-dst2", "--clean", "--db-owner", "nobody_here"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such role"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_into_an_older_postgres_major_is_refused_up_front() {
    let t = empty_target("old-dst").await;
    let target = t.info.installation().unwrap();
    let store = t.info.object_store().unwrap();
    let manifest = speechvault::model::manifest::Manifest {
        format: 1,
        tool: "test".into(),
        backup_id: "b".into(),
        installation: "src".into(),
        started: String::new(),
        finished: String::new(),
        source: speechvault::model::manifest::SourceInfo {
            s3_endpoint: String::new(),
            postgres: "elsewhere:5432".into(),
            postgres_version: "99.1".into(),
            postgres_user: "u".into(),
            postgres_version_num: Some(990001),
            postgres_system_id: None,
        },
        components: vec![],
        databases: Default::default(),
        buckets: Default::default(),
        instance_ids: vec![],
        retention: None,
        anomalies: vec![],
    };
    let e = speechvault::ops::restore::checks::check_target(&target, &store, &manifest, &Default::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("PostgreSQL 99 and cannot be restored into the older PostgreSQL 15"), "{e}");
    assert_eq!(speechvault::error::Kinded::kind(&e), speechvault::error::ErrorKind::BadInput);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_only_restore_refreshes_materialized_views_and_verify_compares_them() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "mv-src", Scale::Tiny, 67, |o| o.components =
            vec!["sttCustomization".into()]),
        empty_target("mv-dst")
    );
    let a = a.unwrap();
    let view = "CREATE MATERIALIZED VIEW corpus_words AS \
                SELECT customization_id, count(*) AS corpora, sum(total_words) AS words FROM corpora GROUP BY 1";
    let src = a.info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    src.batch_execute(view).await.unwrap();
    // A view never populated holds no rows to back up, and does not stop the backup.
    src.batch_execute("CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS one WITH NO DATA").await.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let b = ws.json(&["backup", "--from", "mv-src"]);
    let id = b["backup_id"].as_str().unwrap().to_string();
    let v = ws.json(&["verify", &id, "--against", "mv-src"]);
    assert!(
        v["tables"].as_array().unwrap().iter().any(|t| t["table"] == "public.corpus_words" && t["content"] == "same"),
        "the backup records the view's rows: {v}"
    );
    // A fresh installation's schema, with the view, and no rows.
    ws.json(&["restore", &id, "--to", "mv-dst", "--no-verify"]);
    let dst = t.info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    dst.batch_execute(
        "TRUNCATE customizations CASCADE; REFRESH MATERIALIZED VIEW corpus_words; \
         SELECT lo_unlink(oid) FROM pg_largeobject_metadata;",
    )
    .await
    .unwrap();
    let stale = ws.run(&["verify", &id, "--against", "mv-dst"]);
    assert_eq!(stale.status.code(), Some(3), "{}", stderr(&stale));

    let r = ws.json(&["restore", &id, "--to", "mv-dst", "--data-only"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let q = "SELECT customization_id::text, corpora, words FROM corpus_words ORDER BY 1";
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    };
    let (want, got) = (rows(src.query(q, &[]).await.unwrap()), rows(dst.query(q, &[]).await.unwrap()));
    assert!(!want.is_empty());
    assert_eq!(got, want, "the view is refreshed from the rows loaded");

    // A tampered large object is named as such, not as a table "the backup has 0 rows" of.
    dst.batch_execute("SELECT lo_put(oid, 0, '\\x00ff'::bytea) FROM pg_largeobject_metadata ORDER BY oid LIMIT 1")
        .await
        .unwrap();
    let out = ws.run(&["verify", &id, "--against", "mv-dst"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the large objects differ") && !text.contains("the backup has 0 rows"), "{text}");
}
