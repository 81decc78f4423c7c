//! Backup, restore, verify and ownership against real installations (sandboxes, and the
//! external S3 server when SPEECHVAULT_TEST_S3_ENDPOINT is set), through the real binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use speechvault::model::instance::InstanceId;
use speechvault_sandbox::harness::{TestInstallation, external_s3_from_env, test_dir};
use speechvault_sandbox::seed::{self, Scale};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_is_byte_exact_and_moves_ownership_of_exactly_the_right_rows() {
    let (a, b) = tokio::join!(TestInstallation::start(exe(), "src", Scale::Tiny, 11), empty_target("dst"));
    let (a, b) = (a.unwrap(), b);
    let ws = Workspace::new(&[&a.info, &b.info]);
    let backup = ws.json(&["backup", "--from", "src"]);
    let id = backup["backup_id"].as_str().unwrap().to_string();
    assert_eq!(backup["components"].as_array().unwrap().len(), 4);

    let from = seed::instances(11)[2].0.clone(); // the numeric CP4D instance
    let numeric = "1612345678900011";
    assert_eq!(InstanceId::parse(numeric).unwrap(), from);
    let to = "5f0c6a5e-7d1b-4c1e-9a53-2b8e8c1d0f42";
    let report = ws.json(&["restore", &id, "--to", "dst", "--from-instance", numeric, "--to-instance", to]);
    assert_eq!(report["verify"]["ok"], true, "{report}");

    // Objects: byte-exact with content type and metadata, read independently of verify.
    let (sa, sb) = (a.info.object_store().unwrap(), b.info.object_store().unwrap());
    for bucket in ["speech-service-base-models", "stt-customization-icp", "stt-async-icp"] {
        let la = sa.list_all(&a.info.bucket(bucket), "").await.unwrap();
        let lb = sb.list_all(&b.info.bucket(bucket), "").await.unwrap();
        assert_eq!(
            la.iter().map(|o| (&o.key, o.size)).collect::<Vec<_>>(),
            lb.iter().map(|o| (&o.key, o.size)).collect::<Vec<_>>()
        );
        for o in &la {
            let (ha, ba) = sa.get_bytes(&a.info.bucket(bucket), &o.key).await.unwrap();
            let (hb, bb) = sb.get_bytes(&b.info.bucket(bucket), &o.key).await.unwrap();
            assert_eq!(ba, bb, "{bucket}/{:?}", o.key);
            assert_eq!((ha.content_type, ha.metadata), (hb.content_type, hb.metadata), "{bucket}/{:?}", o.key);
        }
    }
    // Every edge-case key the source server stored came back (servers that refuse control
    // characters in keys store the others).
    let edge = "customizations/edge-cases/";
    let stored = sa.list_all(&a.info.bucket("stt-customization-icp"), edge).await.unwrap().len();
    let refusable = seed::edge_case_objects().iter().filter(|o| o.key.chars().any(char::is_control)).count();
    assert!(stored >= seed::edge_case_objects().len() - refusable, "only {stored} edge-case keys in the source");
    assert_eq!(sb.list_all(&b.info.bucket("stt-customization-icp"), edge).await.unwrap().len(), stored);

    // Schemas identical.
    for db in ["stt-customization", "tts-customization", "stt-async"] {
        assert_eq!(schema_dump(&a.info, db), schema_dump(&b.info, db), "schema of {db}");
    }

    // Ownership: exactly the source instance's rows moved, nothing else changed in any row.
    let (pa, pb) = (a.info.pg_config().unwrap(), b.info.pg_config().unwrap());
    let profile = speechvault::model::profile::Profile::builtin();
    for db in ["stt-customization", "tts-customization", "stt-async"] {
        let (ca, cb) = (pa.connect(db).await.unwrap(), pb.connect(db).await.unwrap());
        let tables: Vec<String> = ca
            .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in tables {
            let cols: Vec<&str> = profile
                .ownership
                .iter()
                .filter(|r| r.database == db && r.table == table)
                .map(|r| r.columns[0].as_str())
                .collect();
            let mut before = rows_without(&ca, &table, None).await;
            let mut after = rows_without(&cb, &table, None).await;
            if !cols.is_empty() {
                // Strip every owner column, then compare what remains.
                let strip = |rows: &mut Vec<String>| {
                    for r in rows.iter_mut() {
                        let mut v: serde_json::Value = serde_json::from_str(r).unwrap();
                        for c in &cols {
                            v.as_object_mut().unwrap().remove(*c);
                        }
                        *r = v.to_string();
                    }
                    rows.sort();
                };
                strip(&mut before);
                strip(&mut after);
                for c in &cols {
                    let oa = owner_counts(&ca, &table, c).await;
                    let ob = owner_counts(&cb, &table, c).await;
                    let moved = oa.get(from.as_str()).copied().unwrap_or(0);
                    assert!(moved > 0, "{db}.{table}.{c} has rows of the source instance");
                    assert_eq!(ob.get(to).copied(), Some(moved), "{db}.{table}.{c}: all of them moved");
                    assert_eq!(ob.get(from.as_str()), None, "{db}.{table}.{c}: none left behind");
                    for (owner, n) in &oa {
                        if owner != from.as_str() {
                            assert_eq!(ob.get(owner), Some(n), "{db}.{table}.{c}: other owners untouched");
                        }
                    }
                }
            }
            assert_eq!(before, after, "{db}.{table}: rows identical apart from ownership");
        }
    }
    let tg = pb.connect("stt-customization").await.unwrap();
    let state: String = tg
        .query_one("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'customizations_touch'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "O", "the trigger held off during the transfer is enabled again");

    // `verify` against the live source passes; after a change it fails with exit status 3.
    let v = ws.json(&["verify", &id, "--against", "src"]);
    assert_eq!(v["ok"], true);
    sa.put_object(
        &a.info.bucket("stt-async-icp"),
        "jobs/new-after-backup",
        bytes::Bytes::from_static(b"x"),
        &Default::default(),
    )
    .await
    .unwrap();
    let out = ws.run(&["verify", &id, "--against", "src"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("jobs/new-after-backup"));
}

#[tokio::test(flavor = "multi_thread")]
async fn restic_reads_the_repository_and_the_dump_parts_have_exact_sizes() {
    let a = TestInstallation::start_with(exe(), "restic", Scale::Tiny, 4, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let backup = ws.json(&["backup", "--from", "restic"]);
    let restic = which("restic").expect("restic must be installed (scripts/setup.sh installs it)");
    let run = |args: &[&str]| {
        Command::new(&restic)
            .args(args)
            .env("RESTIC_REPOSITORY", ws.repo())
            .env("RESTIC_PASSWORD", REPO_PASSWORD)
            .env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"))
            .output()
            .unwrap()
    };
    let check = run(&["check", "--read-data"]);
    assert!(check.status.success(), "restic check: {}", stderr(&check));
    // restic's own restore writes files with their declared sizes: the dump must come out whole.
    let target = ws.dir.path().join("restic-restore");
    let restore = run(&["restore", "latest", "--tag", "db:stt-async", "--target", target.to_str().unwrap()]);
    assert!(restore.status.success(), "restic restore: {}", stderr(&restore));
    let dir = target.join("databases/stt-async");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    let mut whole = Vec::new();
    for p in &parts {
        whole.extend(std::fs::read(p).unwrap());
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&whole));
    let manifest = run(&["dump", "latest", "--tag", "manifest", "/speechvault/manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["backup_id"], backup["backup_id"]);
    assert_eq!(manifest["databases"]["stt-async"]["dump_sha256"], digest.as_str());
    assert!(whole.starts_with(b"PGDMP"), "a pg_dump custom-format archive");
    // Every object's key is kept in an attribute restic shows.
    let list = run(&["dump", "latest", "--tag", "manifest", "/speechvault/objects/stt-async-icp.jsonl"]);
    let first = String::from_utf8(list.stdout).unwrap().lines().next().unwrap().to_string();
    let obj: serde_json::Value = serde_json::from_str(&first).unwrap();
    let listed = run(&["ls", "--long", "latest", "--tag", "bucket:stt-async-icp", obj["path"].as_str().unwrap()]);
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_is_not_installed_fails_before_anything_is_written() {
    let a = TestInstallation::start_with(exe(), "partial", Scale::Tiny, 2, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let out = ws.run(&["backup", "--from", "partial", "--components", "sttCustomization"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"stt-customization\"") && err.contains(&format!("127.0.0.1:{}", a.info.postgres.port)),
        "{err}"
    );
    assert!(err.contains(&a.info.bucket("stt-customization-icp")), "{err}");
    assert!(ws.backups().is_empty(), "nothing was written");
    // Without --components, exactly what is installed is backed up.
    let b = ws.json(&["backup", "--from", "partial"]);
    assert_eq!(b["components"], serde_json::json!(["sttAsync"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (a, t) = tokio::join!(TestInstallation::start(exe(), "bad-src", Scale::Tiny, 3), empty_target("bad-dst"));
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "bad-src"]);

    // Wrong repository password.
    let out = ws.command(&["backup", "--from", "bad-src"]).env("SPEECHVAULT_PASSWORD", "nope").output().unwrap();
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    let wrong = cfg.replace(
        &format!("password_file = {:?}", ws.dir.path().join("repo-password").display().to_string()),
        "password = \"wrong\"",
    );
    std::fs::write(ws.dir.path().join("wrong.toml"), wrong).unwrap();
    let out2 = Command::new(EXE)
        .args(["-c", ws.dir.path().join("wrong.toml").to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(2), "{}", stderr(&out2));
    assert!(stderr(&out2).contains("wrong password"), "{}", stderr(&out2));
    assert!(out.status.success(), "the config's password file wins over the environment");

    // Wrong S3 keys or database password: exit 2, and the message says which.
    let cfg_text = std::fs::read_to_string(ws.config()).unwrap();
    let before = ws.backups().len();
    let sk_line = format!("s3.secret_key_file = {:?}", a.info.s3.secret_key_file.display().to_string());
    let pw_line = format!("postgres.password_file = {:?}", a.info.postgres.password_file.display().to_string());
    for (name, from, to, needle) in [
        ("s3", &sk_line, "s3.secret_key = \"wrong\"", "rejected the credentials"),
        ("pg", &pw_line, "postgres.password = \"wrong\"", "rejected the login"),
    ] {
        if name == "s3" && !server_checks_credentials() {
            continue;
        }
        let path = ws.dir.path().join(format!("bad-{name}.toml"));
        let text = cfg_text.replacen(from.as_str(), to, 1);
        assert_ne!(text, cfg_text);
        std::fs::write(&path, text).unwrap();
        let out =
            Command::new(EXE).args(["-c", path.to_str().unwrap(), "backup", "--from", "bad-src"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
    }
    assert_eq!(ws.backups().len(), before, "nothing written by the refused backups");

    // Malformed instance id: refused before the target is touched.
    let out = ws.run(&["restore", "--to", "bad-dst", "--from-instance", "not-an-id", "--to-instance", "1234"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("malformed instance id \"not-an-id\""), "{}", stderr(&out));
    let store = t.info.object_store().unwrap();
    for b in ["speech-service-base-models", "stt-customization-icp", "stt-async-icp"] {
        assert!(!store.bucket_exists(&t.info.bucket(b)).await.unwrap(), "target untouched: {b}");
    }

    // Unknown backup id, unknown installation.
    let out = ws.run(&["restore", "20990101", "--to", "bad-dst"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no backup \"20990101\""), "{}", stderr(&out));
    let out = ws.run(&["backup", "--from", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no installation named \"nowhere\""), "{}", stderr(&out));

    // A non-empty target is refused without --clean, naming what is in the way.
    let out = ws.run(&["restore", "--to", "bad-src"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not empty") && stderr(&out).contains("--clean"), "{}", stderr(&out));
    assert_eq!(
        t.info.pg_config().unwrap().connect("stt-async").await.err().map(|e| e.to_string().contains("does not exist")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_fails_within_bounded_time_and_says_which() {
    let a = TestInstallation::start_with(exe(), "reach", Scale::Tiny, 3, |o| {
        o.components = vec!["ttsCustomization".into()]
    })
    .await
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ws = Workspace::new(&[&a.info]);
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    let broken_s3 = cfg.replace(&a.info.s3.endpoint, &format!("http://127.0.0.1:{closed}"));
    let broken_pg =
        cfg.replace(&format!("postgres.port = {}", a.info.postgres.port), &format!("postgres.port = {closed}"));
    for (name, text, needle) in
        [("s3", broken_s3, format!("http://127.0.0.1:{closed}")), ("pg", broken_pg, format!("127.0.0.1:{closed}"))]
    {
        let path = ws.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let start = Instant::now();
        let out = Command::new(EXE).args(["-c", path.to_str().unwrap(), "backup", "--from", "reach"]).output().unwrap();
        assert!(start.elapsed() < Duration::from_secs(30), "{name}: took {:?}", start.elapsed());
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(&needle), "{name}: {}", stderr(&out));
    }
    assert!(ws.backups().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_leaves_no_complete_backup_and_the_next_one_succeeds() {
    let a = TestInstallation::start(exe(), "killed", Scale::Small, 5).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    // Slow reads keep the buckets in progress when the databases are done.
    set_faults(&a.info, serde_json::json!([{"method": "GET", "fault": {"kind": "latency", "ms": 400}}]));
    let mut child = ws
        .command(&["backup", "--from", "killed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the database snapshots exist, while the buckets are being read.
    let snapshots = ws.repo().join("snapshots");
    let start = Instant::now();
    while std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(child.try_wait().unwrap().is_none(), "backup finished before it could be killed");
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    set_faults(&a.info, serde_json::json!([]));
    let sets = ws.backups();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["complete"], false, "{sets:?}");
    let out = ws.run(&["restore", "latest", "--to", "killed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no complete backup"), "{}", stderr(&out));
    let out = ws.run(&["restore", sets[0]["backup_id"].as_str().unwrap(), "--to", "killed"]);
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
    // The next backup works and is the one `latest` finds.
    let next = ws.json(&["backup", "--from", "killed"]);
    assert_eq!(ws.json(&["verify", "latest", "--against", "killed"])["backup_id"], next["backup_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_object_store_removes_the_partial_backup() {
    if external_s3_from_env().is_some() {
        return; // stops our own server mid-backup
    }
    let a = TestInstallation::start(exe(), "flaky", Scale::Small, 6).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    // Slow reads keep the buckets in progress when the databases are done (a small installation
    // is read in well under a second, so otherwise the race is lost now and then).
    set_faults(&a.info, serde_json::json!([{"method": "GET", "fault": {"kind": "latency", "ms": 400}}]));
    let mut child = ws
        .command(&["backup", "--from", "flaky"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let snapshots = ws.repo().join("snapshots");
    let start = Instant::now();
    while std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(child.try_wait().unwrap().is_none(), "backup finished before the server could be stopped");
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: stopping the S3 server this test started.
    unsafe {
        libc::kill(a.info.s3.pid.unwrap() as i32, libc::SIGKILL);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach S3 endpoint"), "{}", stderr(&out));
    assert!(ws.backups().is_empty(), "the snapshots written before the failure were removed: {:?}", ws.backups());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_json_or_arguments() {
    let a = TestInstallation::start(exe(), "secrets", Scale::Tiny, 8).await.unwrap();
    let t = empty_target("secrets-dst").await;
    let ws = Workspace::new(&[&a.info, &t.info]);
    let secrets: Vec<String> = [
        &a.info.postgres.password_file,
        &a.info.s3.secret_key_file,
        &t.info.postgres.password_file,
        &t.info.s3.secret_key_file,
    ]
    .iter()
    .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    .chain([REPO_PASSWORD.to_string()])
    .collect();
    let mut outputs = Vec::new();
    for args in [
        vec!["--json", "-vv", "backup", "--from", "secrets"],
        vec!["--json", "-vv", "restore", "--to", "secrets-dst"],
        vec!["--json", "-vv", "verify", "--against", "secrets-dst"],
        vec!["--json", "snapshots"],
    ] {
        let out = ws.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out));
    }
    // pg_dump and pg_restore get the password through a private file, not their arguments:
    // check by looking at our own process list while a backup runs.
    let mut child = ws
        .command(&["backup", "--from", "secrets"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    while child.try_wait().unwrap().is_none() {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                seen.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
                seen.push('\n');
            }
        }
    }
    outputs.push(seen);
    for (i, text) in outputs.iter().enumerate() {
        for s in &secrets {
            let line = text.lines().find(|l| l.contains(s.as_str()));
            assert!(
                line.is_none(),
                "output {i} leaks a secret: {}",
                line.unwrap_or_default().replace(s.as_str(), "<SECRET>")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_ownership_on_a_live_installation_and_dry_run() {
    let a = TestInstallation::start(exe(), "live", Scale::Tiny, 9).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let from = seed::instances(9)[0].0.to_string();
    let to = "1612345678909999";
    let dry =
        ws.json(&["transfer-ownership", "--on", "live", "--from-instance", &from, "--to-instance", to, "--dry-run"]);
    let rules = dry["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 6, "{dry}");
    assert!(rules.iter().all(|r| r["skipped"].is_null() && r["rows"].as_u64().unwrap() > 0), "{dry}");
    let pg = a.info.pg_config().unwrap();
    let c = pg.connect("stt-customization").await.unwrap();
    assert!(owner_counts(&c, "customizations", "owner").await.contains_key(&from), "dry run changed nothing");
    let done = ws.json(&["transfer-ownership", "--on", "live", "--from-instance", &from, "--to-instance", to]);
    assert_eq!(done["rules"], dry["rules"], "the dry run predicted the counts");
    let counts = owner_counts(&c, "customizations", "owner").await;
    assert!(!counts.contains_key(&from));
    assert!(counts.contains_key("00000000-0000-0000-1612-345678909999"));
    // The same ids twice is refused.
    let out = ws.run(&["transfer-ownership", "--on", "live", "--from-instance", to, "--to-instance", to]);
    assert_eq!(out.status.code(), Some(2));
    // A release spelling the column `instanceid` is handled by the profile's alternatives.
    let sa = pg.connect("stt-async").await.unwrap();
    sa.batch_execute("ALTER TABLE notification_urls RENAME COLUMN instance_id TO instanceid").await.unwrap();
    let again = ws.json(&["transfer-ownership", "--on", "live", "--from-instance", to, "--to-instance", &from]);
    assert!(
        again["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["column"] == "instanceid" && r["rows"].as_u64().unwrap() > 0),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_only_restore_loads_rows_into_an_existing_schema_and_clean_replaces() {
    let a = TestInstallation::start(exe(), "do-src", Scale::Tiny, 12).await.unwrap();
    let t = empty_target("do-dst").await;
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "do-src"]);
    ws.json(&["restore", "--to", "do-dst", "--no-verify"]);
    // Simulate a freshly installed target: schema present, no rows.
    let pg = t.info.pg_config().unwrap();
    for db in ["stt-customization", "tts-customization", "stt-async"] {
        let c = pg.connect(db).await.unwrap();
        c.batch_execute(
            "DO $$ DECLARE r record; BEGIN FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP \
             EXECUTE 'TRUNCATE ' || quote_ident(r.tablename) || ' CASCADE'; END LOOP; END $$; \
             SELECT lo_unlink(oid) FROM pg_largeobject_metadata;",
        )
        .await
        .unwrap();
    }
    let r = ws.json(&["restore", "--to", "do-dst", "--data-only"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    // --data-only into a target without the schema is refused.
    let bare = empty_target("do-bare").await;
    let ws2 = Workspace::new(&[&a.info, &bare.info]);
    ws2.json(&["backup", "--from", "do-src"]);
    let out = ws2.run(&["restore", "--to", "do-bare", "--data-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // --clean replaces a populated target.
    let r = ws.json(&["restore", "--to", "do-dst", "--clean"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_async_jobs_gives_up_clearly_and_proceeds_once_they_finish() {
    let a = TestInstallation::start_with(exe(), "jobs", Scale::Tiny, 13, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let start = Instant::now();
    let out = ws.run(&["backup", "--from", "jobs", "--wait-for-async-jobs=2s"]);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("still waiting or processing"), "{}", stderr(&out));
    assert!(ws.backups().is_empty());
    let c = a.info.pg_config().unwrap().connect("stt-async").await.unwrap();
    c.batch_execute("UPDATE jobs SET status = 'completed' WHERE status IN ('waiting', 'processing')").await.unwrap();
    ws.json(&["backup", "--from", "jobs", "--wait-for-async-jobs=2s"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_reads_back_a_backup_through_the_handle_that_wrote_it() {
    let a = TestInstallation::start_with(exe(), "lib", Scale::Tiny, 14, |o| o.components = vec!["baseModels".into()])
        .await
        .unwrap();
    let t = empty_target("lib-dst").await;
    let dir = test_dir("speechvault-lib-").unwrap();
    let pw = speechvault::support::secret::Secret::new("pw");
    let path = dir.path().join("repo");
    let repo = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || {
            speechvault::repository::Repository::init(&speechvault::repository::Location::Local(path), &pw, None)
        })
        .await
        .unwrap()
        .unwrap(),
    );
    let profile = speechvault::model::profile::Profile::builtin();
    let progress = speechvault::support::progress::Progress::default();
    let stop = speechvault::support::interrupt::Stop::never();
    let inst = a.info.installation().unwrap();
    let report = speechvault::ops::backup::run(repo.clone(), &inst, &profile, &Default::default(), &progress, &stop)
        .await
        .unwrap();
    let v = repo.clone();
    let sets =
        tokio::task::spawn_blocking(move || speechvault::model::catalog::backup_sets(&v)).await.unwrap().unwrap();
    let set = speechvault::model::catalog::find(&sets, &report.backup_id, None).unwrap();
    let target = t.info.installation().unwrap();
    let r = speechvault::ops::restore::run(repo, &set, &target, &profile, &Default::default(), &progress, &stop)
        .await
        .unwrap();
    assert!(r.verify.unwrap().ok);
    let mode = std::fs::metadata(dir.path().join("repo")).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o077, 0, "the repository directory is private to its owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_pg_dump_fails_the_backup_and_leaves_nothing() {
    let a = TestInstallation::start_with(exe(), "dumpfail", Scale::Tiny, 15, |o| {
        o.components = vec!["ttsCustomization".into()]
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    // A pg_dump that writes the start of an archive, complains and exits 1, like one that
    // loses its connection half-way.
    let bin = ws.dir.path().join("fake-bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("pg_dump");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 99.0'; exit 0; fi\n\
         printf 'PGDMP-partial'\necho 'pg_dump: error: connection lost' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ws.command(&["backup", "--from", "dumpfail"]).env("SPEECHVAULT_PG_BINDIR", &bin).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pg_dump of database \"tts-customization\" failed") && err.contains("connection lost"),
        "{err}"
    );
    assert!(ws.backups().is_empty(), "the dump's snapshot was removed: {:?}", ws.backups());
    ws.json(&["backup", "--from", "dumpfail"]);
    assert_eq!(ws.backups().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_repository_fails_the_restore_and_the_empty_target_stays_empty() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "corrupt", Scale::Tiny, 16, |o| o.components =
            vec!["sttAsync".into(), "baseModels".into()]),
        empty_target("corrupt-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "corrupt"]);
    // Flip bytes in the middle of the largest pack (object data).
    let mut packs = Vec::new();
    for d in std::fs::read_dir(ws.repo().join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            packs.push((f.metadata().unwrap().len(), f.path()));
        }
    }
    packs.sort();
    let (len, largest) = packs.pop().unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    for b in &mut bytes[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&largest, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&largest, bytes).unwrap();
    let out = ws.run(&["restore", "--to", "corrupt-dst"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let pg = t.info.pg_config().unwrap();
    let admin = pg.connect("postgres").await.unwrap();
    let dbs: i64 =
        admin.query_one("SELECT count(*) FROM pg_database WHERE datname = 'stt-async'", &[]).await.unwrap().get(0);
    assert_eq!(dbs, 0, "the database created by the failed restore was dropped");
    let store = t.info.object_store().unwrap();
    for b in ["speech-service-base-models", "stt-async-icp"] {
        assert!(
            !store.bucket_exists(&t.info.bucket(b)).await.unwrap(),
            "bucket {b} created by the failed restore was removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_over_tls_trust_only_the_named_ca() {
    if external_s3_from_env().is_some() {
        return; // TLS is a property of our own server here
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "tls-src", Scale::Tiny, 17, |o| {
            o.tls = true;
            o.pg_tls = true;
            o.components = vec!["sttAsync".into()];
        }),
        TestInstallation::start_with(exe(), "tls-dst", Scale::Tiny, 0, |o| {
            o.tls = true;
            o.pg_tls = true;
            o.seed_data = false;
        })
    );
    let (a, t) = (a.unwrap(), t.unwrap());
    assert!(a.info.s3.endpoint.starts_with("https://127.0.0.1:"));
    assert!(a.info.postgres.ca_file.is_some());
    // pg_dump and pg_restore run with verify-full against the sandbox's CA, like our client.
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "tls-src"]);
    let r = ws.json(&["restore", "--to", "tls-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    // The servers accept TLS only: sslmode = disable is refused (a configuration error, exit 2)
    // with the server's reason.
    let plain = ws.dir.path().join("plain.toml");
    let text = std::fs::read_to_string(ws.config())
        .unwrap()
        .replace("postgres.sslmode = \"verify-full\"", "postgres.sslmode = \"disable\"");
    std::fs::write(&plain, text).unwrap();
    let out = Command::new(EXE).args(["-c", plain.to_str().unwrap(), "backup", "--from", "tls-src"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no encryption"), "{}", stderr(&out));

    // Without the CA file the self-signed certificate is refused, and the error says where.
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    let ca_line = format!("s3.ca_file = {:?}\n", a.info.s3.ca_file.as_ref().unwrap().display().to_string());
    assert!(cfg.contains(&ca_line));
    let no_ca = ws.dir.path().join("no-ca.toml");
    std::fs::write(&no_ca, cfg.replace(&ca_line, "")).unwrap();
    let out = Command::new(EXE)
        .args(["-c", no_ca.to_str().unwrap(), "backup", "--from", "tls-src"])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&a.info.s3.endpoint) && stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    // ... unless the operator explicitly turns verification off.
    let insecure = ws.dir.path().join("insecure.toml");
    std::fs::write(&insecure, cfg.replace(&ca_line, "s3.insecure = true\n")).unwrap();
    let out = Command::new(EXE)
        .args(["-c", insecure.to_str().unwrap(), "backup", "--from", "tls-src"])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_backup_reuses_unchanged_objects_and_still_restores_exactly() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "incr", Scale::Tiny, 18, |o| o.components = vec!["sttAsync".into()]),
        empty_target("incr-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let first = ws.json(&["backup", "--from", "incr"]);
    assert_eq!(first["buckets"]["stt-async-icp"]["unchanged"], 0);
    let total = first["buckets"]["stt-async-icp"]["objects"].as_u64().unwrap();

    // Change one object (same size, new content), delete one, add one.
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let objects = store.list_all(&bucket, "").await.unwrap();
    let (changed, deleted) = (&objects[0], &objects[1]);
    let (head, body) = store.get_bytes(&bucket, &changed.key).await.unwrap();
    let flipped: Vec<u8> = body.iter().map(|b| b ^ 0x5a).collect();
    let put = speechvault::objstore::PutOptions {
        content_type: head.content_type.clone(),
        metadata: head.metadata.clone(),
        attrs: head.attrs.clone(),
        ..Default::default()
    };
    store.put_object(&bucket, &changed.key, bytes::Bytes::from(flipped.clone()), &put).await.unwrap();
    store.delete_object(&bucket, &deleted.key).await.unwrap();
    store.put_object(&bucket, "jobs/added/audio.flac", bytes::Bytes::from_static(b"new"), &put).await.unwrap();

    let second = ws.json(&["backup", "--from", "incr"]);
    assert_eq!(second["buckets"]["stt-async-icp"]["objects"].as_u64().unwrap(), total);
    assert_eq!(second["buckets"]["stt-async-icp"]["unchanged"].as_u64().unwrap(), total - 2, "{second}");
    let full = ws.json(&["backup", "--from", "incr", "--full"]);
    assert_eq!(full["buckets"]["stt-async-icp"]["unchanged"], 0);

    let id = second["backup_id"].as_str().unwrap();
    let r = ws.json(&["restore", id, "--to", "incr-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let target = t.info.object_store().unwrap();
    let tb = t.info.bucket("stt-async-icp");
    assert_eq!(target.get_bytes(&tb, &changed.key).await.unwrap().1.as_ref(), flipped.as_slice());
    assert!(target.get_bytes(&tb, &deleted.key).await.is_err());
    assert_eq!(target.get_bytes(&tb, "jobs/added/audio.flac").await.unwrap().1.as_ref(), b"new");
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_objects_are_read_again_when_the_parent_snapshot_is_gone() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "lazy", Scale::Tiny, 19, |o| o.components = vec!["sttAsync".into()]),
        empty_target("lazy-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let first = ws.json(&["backup", "--from", "lazy"]);
    // Remove the first backup's bucket snapshot behind speechvault's back (its manifest stays).
    let restic = which("restic").expect("restic must be installed (scripts/setup.sh installs it)");
    let sets = ws.backups();
    let parts = sets[0]["parts"].as_array().unwrap();
    let snaps = sets[0]["snapshots"].as_array().unwrap();
    let idx = parts.iter().position(|p| p == "bucket:stt-async-icp").unwrap();
    let out = Command::new(&restic)
        .args(["forget", snaps[idx].as_str().unwrap()])
        .env("RESTIC_REPOSITORY", ws.repo())
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let second = ws.json(&["backup", "--from", "lazy"]);
    assert_eq!(second["buckets"]["stt-async-icp"]["unchanged"], first["buckets"]["stt-async-icp"]["objects"]);
    let r = ws.json(&["restore", second["backup_id"].as_str().unwrap(), "--to", "lazy-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}
