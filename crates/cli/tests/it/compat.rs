//! Backups written by earlier releases stay restorable. `tests/fixtures/format1-repo` was
//! written by the first release (manifest format 1, no row digests, no vanished lists) from a
//! tiny sandbox (seed 21, components sttAsync and ttsCustomization); `format2-repo` by the
//! release before object attributes (manifest format 2: object lists in their own file, v2 row
//! digests, objects with content type and user metadata only), seed 22, the same components.

use speechvault_sandbox::harness::test_dir;

use crate::common::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Restores the fixture repository `name` into a new empty installation; returns the
/// snapshots and the restore's reports.
async fn restore_fixture(name: &str, target: &str) -> (serde_json::Value, serde_json::Value) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let t = empty_target(target).await;
    let dir = test_dir("speechvault-compat-").unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixtures.join(format!("{name}-repo")), &repo);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\npath = {:?}\npassword_file = {:?}\n\n{}",
            repo.display().to_string(),
            fixtures.join(format!("{name}-repo.password")).display().to_string(),
            t.info.config_section()
        ),
    )
    .unwrap();
    let run =
        |args: &[&str]| std::process::Command::new(EXE).arg("-c").arg(&cfg).arg("--json").args(args).output().unwrap();
    let out = run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sets: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = run(&["restore", "latest", "--to", target, "--verify=read-back"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let out = run(&["verify", "latest", "--against", target]);
    assert!(out.status.success(), "verify of the restored installation: {}", stderr(&out));
    drop(t);
    (sets, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_made_by_the_first_release_restores_and_verifies() {
    let (sets, r) = restore_fixture("format1", "compat-dst").await;
    assert_eq!(sets["backups"][0]["backup_id"], "20261125T084248Z-024013", "{sets}");
    // Row content was not recorded then: counts are compared, content is "not compared".
    assert!(r["verify"]["tables"].as_array().unwrap().iter().all(|t| t["content"] == "not-compared"), "{r}");
    assert_eq!(r["buckets"]["stt-async-icp"]["objects"], 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_made_before_object_attributes_restores_and_verifies() {
    let (sets, r) = restore_fixture("format2", "compat-dst2").await;
    assert_eq!(sets["backups"][0]["backup_id"], "20261207T075846Z-abf11c", "{sets}");
    assert!(r["verify"]["tables"].as_array().unwrap().iter().all(|t| t["content"] == "same"), "{r}");
    assert_eq!(r["buckets"]["stt-async-icp"]["objects"], 15);
}

/// Row digests recorded by earlier releases (v1) keep their value, so those backups still
/// verify; backups now record v2, which is computed differently but has the same properties:
/// row order does not matter, one changed value does.
#[tokio::test(flavor = "multi_thread")]
async fn row_digests_of_every_version_keep_their_meaning() {
    use speechvault::pg::catalog::{DigestVersion, FIXED_RENDERING, table_digests};
    let t = empty_target("compat-digest").await;
    let pg = t.info.pg_config().unwrap();
    let admin = pg.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE digests").await.unwrap();
    let c = pg.connect("digests").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id int, name text, at timestamptz, score float8, doc jsonb, raw bytea); \
         INSERT INTO t VALUES (1, 'a', '2026-01-02 03:04:05+02', 0.1, '{\"k\": [1, 2]}', '\\x00ff'), \
         (2, NULL, NULL, 1e300, 'null', ''), (3, 'ü ''q''', '1999-12-31 23:59:59.999999+00', -0.0, '{}', '\\x01')",
    )
    .await
    .unwrap();
    let none = std::collections::BTreeMap::new();
    let v1 = table_digests(&c, "digests", &none, &[], DigestVersion::V1).await.unwrap()["public.t"].clone();
    let v2 = table_digests(&c, "digests", &none, &[], DigestVersion::V2).await.unwrap()["public.t"].clone();

    // v1 exactly as the releases before v2 computed it (their SQL, copied here).
    c.batch_execute(FIXED_RENDERING).await.unwrap();
    let old = c
        .query_one(
            "SELECT count(*), \
             coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text, \
             coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text \
             FROM (SELECT md5(ROW(t.\"at\", t.\"doc\", t.\"id\", t.\"name\", t.\"raw\", t.\"score\")::text) AS h \
             FROM public.t t) s",
            &[],
        )
        .await
        .unwrap();
    let (rows, a, b): (i64, String, String) = (old.get(0), old.get(1), old.get(2));
    let expected = format!("v1:{}", &sha256_hex(format!("{rows}:{a}:{b}").as_bytes())[..32]);
    assert_eq!(v1.digest, expected);
    assert_eq!(v1.rows, 3);
    assert!(v2.digest.starts_with("v2:") && v2.digest.len() == 35, "{v2:?}");
    assert_eq!(v2.rows, 3);
    assert_eq!(DigestVersion::of_recorded([v1.digest.clone()].iter()), DigestVersion::V1);
    assert_eq!(DigestVersion::of_recorded([v2.digest.clone()].iter()), DigestVersion::V2);

    // The same rows in another physical order digest alike; one changed value does not.
    c.batch_execute("CREATE TABLE t2 AS SELECT * FROM t ORDER BY id DESC; DROP TABLE t; ALTER TABLE t2 RENAME TO t")
        .await
        .unwrap();
    for (version, before) in [(DigestVersion::V1, &v1), (DigestVersion::V2, &v2)] {
        let again = table_digests(&c, "digests", &none, &[], version).await.unwrap()["public.t"].clone();
        assert_eq!(&again, before, "{version:?}: row order changed the digest");
    }
    c.batch_execute("UPDATE t SET score = 0.1000000000000001 WHERE id = 1").await.unwrap();
    for (version, before) in [(DigestVersion::V1, &v1), (DigestVersion::V2, &v2)] {
        let changed = table_digests(&c, "digests", &none, &[], version).await.unwrap()["public.t"].clone();
        assert_ne!(changed.digest, before.digest, "{version:?}: a changed value kept the digest");
        assert_eq!(changed.rows, 3);
    }
}
