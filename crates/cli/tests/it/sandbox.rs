//! Sandboxes are real installations: these tests start PostgreSQL and an S3 server (ours, or
//! the external one named by SPEECHVAULT_TEST_S3_ENDPOINT) and read back what was seeded.

use std::path::Path;
use std::process::Command;

use speechvault::objstore::{ObjStoreError, ObjectStore, PutOptions};
use speechvault_sandbox::harness::{TestInstallation, external_s3_from_env, test_dir};
use speechvault_sandbox::seed::{self, Scale};

const EXE: &str = env!("CARGO_BIN_EXE_speechvault");

fn exe() -> &'static Path {
    Path::new(EXE)
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_edge_case_keys_read_back_byte_exact_with_metadata() {
    let inst = TestInstallation::start(exe(), "edge", Scale::Tiny, 42).await.unwrap();
    let store = inst.info.object_store().unwrap();
    let bucket = inst.info.bucket("stt-customization-icp");
    let listed = store.list_all(&bucket, "customizations/edge-cases/").await.unwrap();
    let edge = seed::edge_case_objects();
    assert_eq!(listed.len(), edge.len(), "every edge-case key is listed exactly once: {listed:?}");
    for obj in &edge {
        let (head, body) = store.get_bytes(&bucket, &obj.key).await.unwrap_or_else(|e| panic!("{:?}: {e}", obj.key));
        assert_eq!(body, seed::body_of(42, obj, 0, obj.size), "body of {:?}", obj.key);
        match (&obj.content_type, &head.content_type) {
            (Some(want), got) => assert_eq!(got.as_deref(), Some(want.as_str()), "content type of {:?}", obj.key),
            // Stored without a type: nothing, or the server's default for the key.
            (None, None) => {}
            (None, Some(got)) => assert!(
                speechvault::ops::verify::is_server_default_type(got, &obj.key),
                "{:?} came back with {got:?}",
                obj.key
            ),
        }
        assert_eq!(head.metadata, obj.metadata, "metadata of {:?}", obj.key);
        assert!(
            listed.iter().any(|l| l.key == obj.key && l.size == obj.size as u64),
            "{:?} listed with its size",
            obj.key
        );
    }
    // The report counts what is really there.
    let all: u64 = inst.report.buckets.values().map(|b| b.objects).sum();
    assert_eq!(all as usize, seed::objects(42, Scale::Tiny, &inst.info.components).len());
    // Base models were uploaded multipart (ETag of the form md5-N).
    let models = store.list_all(&inst.info.bucket("speech-service-base-models"), "").await.unwrap();
    assert!(
        models.iter().any(|m| m.key.ends_with("model.bin") && m.etag.contains('-') && m.size > 10 << 20),
        "{models:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_databases_have_the_columns_the_procedures_touch() {
    let inst = TestInstallation::start(exe(), "dbs", Scale::Tiny, 7).await.unwrap();
    let pg = inst.info.pg_config().unwrap();
    let instances: Vec<String> = seed::instances(7).into_iter().map(|(i, _)| i.to_string()).collect();
    assert!(instances[2].starts_with("00000000-0000-0000-1612-"), "one instance is a numeric CP4D id");
    for (db, table, column) in [
        ("stt-customization", "customizations", "owner"),
        ("tts-customization", "customizations", "owner"),
        ("tts-customization", "speakers", "owner"),
    ] {
        let c = pg.connect(db).await.unwrap();
        let rows = c.query(&format!("SELECT DISTINCT {column}::text FROM {table} ORDER BY 1"), &[]).await.unwrap();
        let mut owners: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        owners.sort();
        let mut expected = instances.clone();
        expected.sort();
        assert_eq!(owners, expected, "{db}.{table}.{column} rows belong to all three instances");
    }
    let c = pg.connect("stt-async").await.unwrap();
    let statuses: Vec<String> = c
        .query("SELECT DISTINCT status::text FROM jobs ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["completed", "failed", "processing", "waiting"]);
    let urls = c.query("SELECT count(*) FROM notification_urls WHERE username = instance_id", &[]).await.unwrap();
    assert!(urls[0].get::<_, i64>(0) > 0);
    // The companions: enum, jsonb, arrays, bytea, view, trigger, large object, sequences, FKs.
    let c = pg.connect("stt-customization").await.unwrap();
    let q = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert!(q("SELECT count(*) FROM pg_largeobject_metadata").await >= 1);
    assert_eq!(q("SELECT count(*) FROM pg_views WHERE viewname = 'customization_summary'").await, 1);
    assert_eq!(q("SELECT count(*) FROM pg_trigger WHERE tgname = 'customizations_touch'").await, 1);
    assert_eq!(q("SELECT count(*) FROM pg_type WHERE typname = 'model_status' AND typtype = 'e'").await, 1);
    assert!(q("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").await >= 4);
    assert!(q("SELECT count(*) FROM pg_class WHERE relkind = 'S'").await >= 4);
    assert!(
        q("SELECT count(*) FROM audio_resources WHERE octet_length(checksum) = 16 AND details ? 'codec'").await > 0
    );
    // Every object a row references exists in the bucket.
    let store = inst.info.object_store().unwrap();
    let keys: Vec<String> = c
        .query("SELECT object_key FROM corpora UNION ALL SELECT object_key FROM audio_resources", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let listed = store.list_all(&inst.info.bucket("stt-customization-icp"), "customizations/").await.unwrap();
    for k in &keys {
        assert!(listed.iter().any(|o| &o.key == k), "row references {k}, which must exist");
    }
    // Same seed, same data: the report is a pure function of the seed and scale.
    assert_eq!(inst.report.databases["stt-customization"]["words"], 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sandboxes_run_side_by_side() {
    let (a, b) = tokio::join!(
        TestInstallation::start(exe(), "side-a", Scale::Tiny, 1),
        TestInstallation::start(exe(), "side-b", Scale::Tiny, 2)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.info.postgres.port, b.info.postgres.port);
    if external_s3_from_env().is_none() {
        assert_ne!(a.info.s3.endpoint, b.info.s3.endpoint);
    }
    let sa = a.info.object_store().unwrap();
    let sb = b.info.object_store().unwrap();
    let ka = sa.list_all(&a.info.bucket("stt-async-icp"), "").await.unwrap();
    let kb = sb.list_all(&b.info.bucket("stt-async-icp"), "").await.unwrap();
    assert_ne!(ka, kb, "different seeds give different data");
    // Credentials are per sandbox: a's keys do not open b's server.
    if external_s3_from_env().is_none() {
        let mut cross = a.info.s3_config().unwrap();
        cross.endpoint = b.info.s3.endpoint.clone();
        let err = ObjectStore::new(cross).unwrap().list_buckets().await.unwrap_err();
        assert!(matches!(err, ObjStoreError::Credentials { .. }), "{err}");
    }
    let home_b = b.home().to_path_buf();
    drop(b);
    assert!(speechvault_sandbox::list_in(&home_b).unwrap().is_empty());
    assert_eq!(sa.list_all(&a.info.bucket("stt-async-icp"), "").await.unwrap(), ka, "a is untouched by b's teardown");
    a.info.pg_config().unwrap().connect("stt-async").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_server_pages_delimits_and_guards_writes() {
    let inst = TestInstallation::start_with(exe(), "proto", Scale::Tiny, 3, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let store = inst.info.object_store().unwrap();
    let bucket = inst.info.bucket("stt-async-icp");
    // 1,203 keys force two full pages of 1,000 and a partial third on any server.
    let keys: Vec<String> = (0..1203).map(|i| format!("paging/{i:05}/x")).collect();
    let none = PutOptions::default();
    let puts = keys.iter().map(|k| store.put_object(&bucket, k, bytes::Bytes::from_static(b"p"), &none));
    for r in futures_util::future::join_all(puts).await {
        r.unwrap();
    }
    let listed = store.list_all(&bucket, "paging/").await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), keys);
    // A changed object is refused by If-Match, so a backup notices.
    let first = &listed[0];
    store.put_object(&bucket, &first.key, bytes::Bytes::from_static(b"changed"), &PutOptions::default()).await.unwrap();
    match store.get_object(&bucket, &first.key, Some(first)).await {
        Err(ObjStoreError::Changed { .. }) => {}
        Err(e) => panic!("expected Changed, got {e}"),
        Ok(_) => panic!("expected Changed, got the new object"),
    }
    // Streamed uploads above the threshold go multipart and read back whole.
    let big: Vec<u8> =
        (0..(speechvault::objstore::MULTIPART_THRESHOLD as usize * 3 + 1234)).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<std::io::Result<bytes::Bytes>> =
        big.chunks(1 << 20).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let up = store
        .upload_stream(&bucket, "big/object", &PutOptions::default(), None, futures_util::stream::iter(chunks))
        .await
        .unwrap();
    let parts = big.len().div_ceil(speechvault::objstore::PART_SIZE);
    // More parts than go out at once, so the upload waits for parts on their way.
    assert!(parts > speechvault::objstore::object::PARTS_IN_FLIGHT, "the test object is too small");
    assert!(up.etag.ends_with(&format!("-{parts}")), "multipart ETag: {up:?}");
    assert_eq!(up.etag_confirms(), Some(true), "the server's ETag is the one the bytes imply: {up:?}");
    assert_eq!(store.get_bytes(&bucket, "big/object").await.unwrap().1.as_ref(), big.as_slice());
    // A known size reserves the buffer up front; the bytes arrive in pieces of any size.
    let odd: Vec<std::io::Result<bytes::Bytes>> =
        big.chunks(777_777).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let size = Some(big.len() as u64);
    let up = store
        .upload_stream(&bucket, "big/odd", &PutOptions::default(), size, futures_util::stream::iter(odd))
        .await
        .unwrap();
    assert_eq!(up.etag_confirms(), Some(true), "{up:?}");
    assert_eq!(store.get_bytes(&bucket, "big/odd").await.unwrap().1.as_ref(), big.as_slice());
    // A stream that ends short of its size, or runs past it, fails and leaves no object.
    let short: Vec<std::io::Result<bytes::Bytes>> =
        big[..big.len() - 1].chunks(1 << 20).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let long = vec![Ok(bytes::Bytes::from_static(b"eleven bytes"))];
    for (key, size, chunks) in [("big/short", size, short), ("small/long", Some(11), long)] {
        let r =
            store.upload_stream(&bucket, key, &PutOptions::default(), size, futures_util::stream::iter(chunks)).await;
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("ended after") || err.contains("more than the expected"), "{key}: {err:?}");
        assert!(matches!(store.get_bytes(&bucket, key).await, Err(ObjStoreError::NoSuchKey { .. })), "{key}");
    }
    // Missing things are named.
    match store.get_bytes(&bucket, "no/such/key").await {
        Err(ObjStoreError::NoSuchKey { key, .. }) => assert_eq!(key, "no/such/key"),
        other => panic!("expected NoSuchKey, got {:?}", other.map(|_| ())),
    }
    assert!(!store.bucket_exists("speechvault-no-such-bucket").await.unwrap());
}

fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(EXE).args(args).env("SPEECHVAULT_SANDBOX_HOME", home).output().unwrap()
}

#[test]
fn cli_up_env_list_down_leaves_nothing_behind() {
    if external_s3_from_env().is_some() {
        return; // exercises our own server's process handling
    }
    let root = test_dir("speechvault-cli-").unwrap();
    let home = root.path().join("home");
    let out = cli(&home, &["--json", "sandbox", "up", "--name", "c1", "--scale", "tiny"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let up: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s3_pid = up["sandbox"]["s3"]["pid"].as_u64().unwrap() as i32;
    let dir = std::path::PathBuf::from(up["sandbox"]["dir"].as_str().unwrap());
    let pg_pid: i32 =
        std::fs::read_to_string(dir.join("pg/postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    assert!(speechvault_sandbox::process_alive(s3_pid) && speechvault_sandbox::process_alive(pg_pid));
    let json = String::from_utf8_lossy(&out.stdout);
    let secret = std::fs::read_to_string(dir.join("secrets/s3-secret-key")).unwrap();
    assert!(!json.contains(&secret), "--json output must not carry secrets");

    let env = cli(&home, &["sandbox", "env", "c1"]);
    let env = String::from_utf8(env.stdout).unwrap();
    for var in
        ["PGHOST", "PGPORT", "PGUSER", "PGPASSFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    {
        assert!(env.contains(&format!("export {var}=")), "{var} missing in {env}");
    }
    // psql, driven only by those variables, lists the databases.
    let script = format!("{env}\npsql -Atc 'SELECT datname FROM pg_database ORDER BY 1'");
    let psql = Command::new("bash").args(["-c", &script]).env_remove("PGPASSWORD").output().unwrap();
    let dbs = String::from_utf8_lossy(&psql.stdout);
    assert!(
        dbs.contains("stt-customization") && dbs.contains("tts-customization") && dbs.contains("stt-async"),
        "{dbs} {}",
        String::from_utf8_lossy(&psql.stderr)
    );

    let list = cli(&home, &["--json", "sandbox", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["sandboxes"][0]["state"], "running");

    let again = cli(&home, &["sandbox", "up", "--name", "c1"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(speechvault_sandbox::process_alive(s3_pid), "a refused second `up` must not disturb the first");

    let down = cli(&home, &["sandbox", "down", "c1"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(!dir.exists());
    assert!(!speechvault_sandbox::process_alive(s3_pid) && !speechvault_sandbox::process_alive(pg_pid));
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0, "registry is empty");
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_half_started() {
    let root = test_dir("speechvault-bad-").unwrap();
    let home = root.path().join("home");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--scale", "huge"], "unknown scale"),
        (vec!["--components", "sttCustomization,nope"], "unknown component"),
        (vec!["--pg-port", &port], "already in use"),
        (vec!["--s3-port", &port], "already in use"),
        (vec!["--name", "Bad Name"], "invalid sandbox name"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["sandbox", "up", "--name", "bad"];
        args.extend(extra.iter().copied());
        if args.iter().filter(|a| **a == "--name").count() > 1 {
            args.drain(2..4);
        }
        let out = cli(&home, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left: Vec<_> =
            std::fs::read_dir(&home).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    let out = Command::new(EXE)
        .args(["sandbox", "up", "--name", "nopg"])
        .env("SPEECHVAULT_SANDBOX_HOME", &home)
        .env("SPEECHVAULT_PG_BINDIR", root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("apt-get install postgresql"));
    let out = cli(&home, &["sandbox", "down", "ghost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sandbox named"));
}

#[test]
fn a_crashed_sandbox_can_still_be_removed() {
    if external_s3_from_env().is_some() {
        return;
    }
    let root = test_dir("speechvault-crash-").unwrap();
    let home = root.path().join("home");
    let out = cli(&home, &["--json", "sandbox", "up", "--name", "crash", "--components", "sttAsync"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let up: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = std::path::PathBuf::from(up["sandbox"]["dir"].as_str().unwrap());
    let s3_pid = up["sandbox"]["s3"]["pid"].as_u64().unwrap() as i32;
    let pg_pid: i32 =
        std::fs::read_to_string(dir.join("pg/postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    // SAFETY: killing processes this test started.
    unsafe {
        libc::kill(s3_pid, libc::SIGKILL);
        libc::kill(pg_pid, libc::SIGKILL);
    }
    speechvault_sandbox::wait_gone(s3_pid, std::time::Duration::from_secs(5));
    let list: serde_json::Value = serde_json::from_slice(&cli(&home, &["--json", "sandbox", "list"]).stdout).unwrap();
    assert_eq!(list["sandboxes"][0]["state"], "degraded");
    let down = cli(&home, &["sandbox", "down", "crash"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(!dir.exists());
    // Postgres children of the killed postmaster exit on their own; none may linger here.
    let lingering = Command::new("pgrep").args(["-f", &dir.display().to_string()]).output().unwrap();
    assert!(lingering.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&lingering.stdout));
}
