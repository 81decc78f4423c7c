//! Immutable repositories: object-locked files that the key writing the backups cannot erase.
//!
//! On a server that enforces S3 Object Lock (Ceph RGW: SPEECHVAULT_TEST_S3_OBJECT_LOCK is set)
//! the attack runs: with the backup's own key, delete every version of every repository file
//! and write over or hide the rest; the backups survive and restore exactly. Elsewhere (our
//! sandbox server, Garage) `init` refuses an immutable repository and names why.

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn restic_on_repo(section: &str, args: &[&str], ws: &Workspace) -> std::process::Output {
    let mut c = std::process::Command::new(which("restic").unwrap());
    c.args(args).env("RESTIC_PASSWORD", REPO_PASSWORD).env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"));
    for (k, v) in restic_s3_env(section) {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "restic {args:?}: {}", stderr(&out));
    out
}

fn object_lock_server() -> bool {
    std::env::var_os("SPEECHVAULT_TEST_S3_OBJECT_LOCK").is_some()
}

fn immutable(section: &str, header: &str, mode: &str, retain: &str) -> String {
    format!("{section}[{header}.immutable]\nmode = {mode:?}\nretain = {retain:?}\n\n")
}

/// `(store, bucket, prefix)` of an S3 repository section.
fn repository_bucket(section: &str) -> (speechvault::objstore::ObjectStore, String, String) {
    let env = restic_s3_env(section);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let (endpoint, bucket, prefix) =
        speechvault::repository::location::parse_s3_url(&get("RESTIC_REPOSITORY")).unwrap();
    let mut cfg = speechvault::objstore::S3Config::new(
        endpoint,
        get("AWS_ACCESS_KEY_ID"),
        speechvault::support::secret::Secret::new(get("AWS_SECRET_ACCESS_KEY")),
    );
    cfg.region = get("AWS_DEFAULT_REGION");
    (speechvault::objstore::ObjectStore::new(cfg).unwrap(), bucket, prefix)
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_an_immutable_repository_where_object_lock_is_not_enforced() {
    if object_lock_server() {
        return;
    }
    let a = TestInstallation::start_with(exe(), "imm-no", Scale::Tiny, 0, |o| o.seed_data = false).await.unwrap();
    let locked =
        immutable(&s3_repository(&a.info, Some("locked"), "sv-imm-no"), "repositories.locked", "compliance", "1d");
    let ws = Workspace::with_repositories(&[&a.info], None, &locked);
    let out = ws.run(&["--json", "init", "--repository", "locked"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = err["error"].as_str().unwrap();
    // Our server stores the object-lock setting but keeps no versions; Garage has neither.
    assert!(
        msg.contains("does not implement S3 Object Lock")
            || msg.contains("does not keep versions")
            || msg.contains("does not enforce it"),
        "{msg}"
    );
    assert!(!msg.contains("Error:"), "one clear line: {msg}");
    // Nothing was written: the repository is not there.
    let out = ws.run(&["--json", "snapshots", "--repository", "locked"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A local directory cannot be immutable; a retention that does not parse is refused.
    let bad = "[repositories.dir]\npath = \"/tmp/x\"\npassword = \"p\"\n[repositories.dir.immutable]\nmode = \"governance\"\nretain = \"1d\"\n";
    let ws2 = Workspace::with_repositories(&[&a.info], None, bad);
    let out = ws2.run(&["init", "--repository", "dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs an s3: repository"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backup_key_cannot_erase_an_immutable_repository() {
    if !object_lock_server() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "imm-src", Scale::Tiny, 93, |o| o.components =
            vec!["sttAsync".into(), "ttsCustomization".into()]),
        empty_target("imm-dst")
    );
    let a = a.unwrap();
    let repo = immutable(&s3_repository(&a.info, None, "sv-imm"), "repository", "compliance", "1d");
    let ws = Workspace::with_repositories(&[&a.info, &t.info], Some(&repo), "");
    let first = ws.json(&["backup", "--from", "imm-src"]);
    let store = a.info.object_store().unwrap();
    let async_bucket = a.info.bucket("stt-async-icp");
    store
        .put_object(&async_bucket, "jobs/late.json", bytes::Bytes::from_static(b"{\"late\":1}"), &Default::default())
        .await
        .unwrap();
    let second = ws.json(&["backup", "--from", "imm-src"]);
    assert!(second["warnings"].as_array().unwrap().is_empty(), "{second}");

    // Every file was written with a retention, lock files excepted.
    let (rs, bucket, prefix) = repository_bucket(&repo);
    let versions = rs.list_versions(&bucket, &format!("{prefix}/")).await.unwrap();
    let files: Vec<_> = versions.iter().filter(|v| !v.delete_marker && !v.key.contains("/locks/")).cloned().collect();
    assert!(files.iter().any(|v| v.key.contains("/data/")) && files.iter().any(|v| v.key.ends_with("/config")));
    for v in &files {
        let r = rs.get_retention(&bucket, &v.key, &v.version_id).await.unwrap();
        let r = r.unwrap_or_else(|| panic!("{} has no retention", v.key));
        assert_eq!(r.mode, speechvault::objstore::LockMode::Compliance);
        assert!(r.until > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(30), "{}: {:?}", v.key, r.until);
    }
    assert!(versions.iter().all(|v| !v.key.contains("/locks/")), "locks are removed, every version");
    // Each backup records until when everything the backups need is retained.
    let out = restic_on_repo(&repo, &["dump", "latest", "--tag", "manifest", "/speechvault/manifest.json"], &ws);
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let until: jiff::Timestamp = manifest["retention"]["retained_until"].as_str().unwrap().parse().unwrap();
    assert!(until > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(30), "{}", manifest["retention"]);
    // (restic's own lock leaves a version and a delete marker under locks/.)
    let check = ws.json(&["check"]);
    assert!(check.get("short_retention").is_none(), "{check}");

    // The attack, with the backup's own key: delete every version of every file, also
    // bypassing governance; write over every snapshot, index and key file and the config;
    // hide the snapshots behind delete markers.
    for v in &files {
        assert!(rs.delete_object_version(&bucket, &v.key, &v.version_id).await.is_err(), "{} deleted", v.key);
        assert!(
            rs.delete_object_version_bypassing(&bucket, &v.key, &v.version_id).await.is_err(),
            "{} bypassed",
            v.key
        );
    }
    let mut tampered = 0;
    for v in &files {
        if v.key.contains("/data/") {
            continue;
        }
        rs.put_object(&bucket, &v.key, bytes::Bytes::from_static(b"encrypted by ransomware"), &Default::default())
            .await
            .unwrap();
        tampered += 1;
        if v.key.contains("/snapshots/") {
            rs.delete_object(&bucket, &v.key).await.unwrap();
        }
    }
    // One pack written over too: reads take the version that matches its name.
    let pack = files.iter().find(|v| v.key.contains("/data/")).unwrap();
    rs.put_object(&bucket, &pack.key, bytes::Bytes::from(vec![7u8; 4096]), &Default::default()).await.unwrap();
    tampered += 1;
    let left = rs.list_versions(&bucket, &format!("{prefix}/")).await.unwrap();
    for v in &files {
        assert!(left.iter().any(|l| l.key == v.key && l.version_id == v.version_id), "{} is gone", v.key);
    }

    // Both backups are still there, check names every tampered file, the latest restores exactly.
    let backups = ws.backups();
    let ids: Vec<_> = backups.iter().map(|b| b["backup_id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&first["backup_id"].as_str().unwrap().to_string()), "{ids:?}");
    assert!(ids.contains(&second["backup_id"].as_str().unwrap().to_string()), "{ids:?}");
    let check = ws.json(&["check"]);
    assert_eq!(check["ok"], true, "{check}");
    let found = check["tampered"].as_array().unwrap();
    assert_eq!(found.len(), tampered, "{check}");
    assert!(found.iter().any(|f| f["hidden"] == true && f["key"].as_str().unwrap().contains("/snapshots/")));
    assert!(found.iter().all(|f| f["read_version"].is_string()), "{check}");
    let r = ws.json(&["restore", second["backup_id"].as_str().unwrap(), "--to", "imm-dst", "--verify", "read-back"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let (_, late) =
        t.info.object_store().unwrap().get_bytes(&t.info.bucket("stt-async-icp"), "jobs/late.json").await.unwrap();
    assert_eq!(&late[..], b"{\"late\":1}");
    // A backup into the tampered repository completes, and its warnings name the files.
    let third = ws.json(&["backup", "--from", "imm-src"]);
    let warnings = third["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("tampered repository file")), "{third}");
    // forget cannot remove what is retained: it reports the files held, and fails nothing.
    let f = ws.json(&["forget", "--keep-last", "1"]);
    assert!(!f["held"].as_array().unwrap().is_empty(), "{f}");
    assert_eq!(ws.backups().len(), 3, "the retained snapshots are all still readable");
}

#[tokio::test(flavor = "multi_thread")]
async fn governance_retention_cut_short_is_found_and_extended_by_check() {
    if !object_lock_server() {
        return;
    }
    let a = TestInstallation::start_with(exe(), "imm-gov", Scale::Tiny, 95, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let gov = immutable(&s3_repository(&a.info, Some("gov"), "sv-imm-gov"), "repositories.gov", "governance", "2d");
    let ws = Workspace::with_repositories(&[&a.info], None, &gov);
    // This key owns the bucket, so it may bypass governance: init says the repository is not
    // immutable against it.
    let out = ws.run(&["init", "--repository", "gov"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not immutable against it"), "{}", stderr(&out));
    ws.json(&["--repository", "gov", "backup", "--from", "imm-gov"]);
    // With the bypass, one pack's retention is cut to an hour.
    let (rs, bucket, prefix) = repository_bucket(&gov);
    let versions = rs.list_versions(&bucket, &format!("{prefix}/data/")).await.unwrap();
    let pack = &versions[0];
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let r = speechvault::objstore::Retention { mode: speechvault::objstore::LockMode::Governance, until: soon };
    rs.put_retention_bypassing(&bucket, &pack.key, &pack.version_id, r).await.unwrap();
    let check = ws.json(&["--repository", "gov", "check"]);
    let short = check["short_retention"].as_array().unwrap();
    assert_eq!(short.len(), 1, "{check}");
    assert_eq!(short[0]["key"], pack.key.as_str());
    assert_eq!(short[0]["extended"], true);
    let now = rs.get_retention(&bucket, &pack.key, &pack.version_id).await.unwrap().unwrap();
    assert!(now.until > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(60), "{:?}", now.until);
    let again = ws.json(&["--repository", "gov", "check"]);
    assert!(again.get("short_retention").is_none(), "{again}");
}
