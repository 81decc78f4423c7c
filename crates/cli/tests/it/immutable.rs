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

pub(crate) fn object_lock_server() -> bool {
    std::env::var_os("SPEECHVAULT_TEST_S3_OBJECT_LOCK").is_some()
}

pub(crate) fn immutable(section: &str, header: &str, mode: &str, retain: &str) -> String {
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
    // One index file is written over with a version the attacker retains too.
    let retained_over = files.iter().find(|v| v.key.contains("/index/")).unwrap().key.clone();
    for v in &files {
        if v.key.contains("/data/") {
            continue;
        }
        let mut opts = speechvault::objstore::PutOptions::default();
        if v.key == retained_over {
            opts.attrs.lock_mode = Some("COMPLIANCE".into());
            opts.attrs.lock_retain_until = Some(speechvault::objstore::versions::retain_date(
                jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2),
            ));
        }
        rs.put_object(&bucket, &v.key, bytes::Bytes::from_static(b"encrypted by ransomware"), &opts).await.unwrap();
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
    // prune deletes nothing retained and fails nothing (restic checks the result below,
    // once the versions are repaired).
    let p = ws.json(&["prune", "--max-unused", "0%"]);
    assert_eq!(p["dry_run"], false, "{p}");

    // Maintenance puts the repository back the way restic reads it: the markers and the
    // versions written over the files removed (none of the attacker's was retained).
    // (forget's removal of the held snapshot files already deleted what was not retained.)
    let left = ws.json(&["check"])["tampered"].as_array().unwrap().len();
    assert!(left > 0 && left <= tampered, "{left}");
    let dry = ws.json(&["repair", "versions", "--dry-run"]);
    assert_eq!(dry["files"].as_array().unwrap().len(), left, "{dry}");
    assert_eq!(ws.json(&["check"])["tampered"].as_array().unwrap().len(), left, "a dry run changes nothing");
    let fixed = ws.json(&["repair", "versions"]);
    let files = fixed["files"].as_array().unwrap();
    assert_eq!(files.len(), left, "{fixed}");
    assert!(files.iter().all(|f| f["lost"] == false), "{fixed}");
    for f in files {
        if f["key"] == retained_over.as_str() {
            // The attacker's retained version stays, under a copy of ours.
            assert_eq!((f["kept_retained"].as_u64(), f["rewritten"].as_bool()), (Some(1), Some(true)), "{f}");
        } else {
            assert!(f["versions_removed"].as_u64().unwrap() >= 1 && f["rewritten"] == false, "{f}");
        }
    }
    assert!(files.iter().any(|f| f["key"] == retained_over.as_str()), "{fixed}");
    let check = ws.json(&["check"]);
    assert!(check.get("tampered").is_none_or(|t| t.as_array().unwrap().is_empty()), "{check}");
    restic_on_repo(&repo, &["check", "--read-data"], &ws);
    let listed = restic_on_repo(&repo, &["snapshots", "--json"], &ws);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.as_array().unwrap().len() >= 3, "restic lists every snapshot again: {listed}");
    assert_eq!(ws.json(&["repair", "versions"])["files"].as_array().unwrap().len(), 0, "nothing left to repair");
}

/// Every version under the repository's prefix (locks aside) retained only until `until`,
/// cut short with the governance bypass this key has; `only`: keys containing it.
async fn cut_retention(section: &str, until: jiff::Timestamp, only: &str, except: &str) -> usize {
    let (rs, bucket, prefix) = repository_bucket(section);
    let mut n = 0;
    for v in rs.list_versions(&bucket, &format!("{prefix}/")).await.unwrap() {
        if v.delete_marker
            || v.key.contains("/locks/")
            || !v.key.contains(only)
            || (!except.is_empty() && v.key.contains(except))
        {
            continue;
        }
        let r = speechvault::objstore::Retention { mode: speechvault::objstore::LockMode::Governance, until };
        rs.put_retention_bypassing(&bucket, &v.key, &v.version_id, r).await.unwrap();
        n += 1;
    }
    n
}

/// The keys under the repository's `data/` that have any version.
async fn pack_keys(
    rs: &speechvault::objstore::ObjectStore,
    bucket: &str,
    prefix: &str,
) -> std::collections::BTreeSet<String> {
    rs.list_versions(bucket, &format!("{prefix}/data/")).await.unwrap().into_iter().map(|v| v.key).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_frees_only_what_object_lock_no_longer_retains() {
    if !object_lock_server() {
        return;
    }
    let a =
        TestInstallation::start_with(exe(), "imm-prune", Scale::Tiny, 97, |o| o.components = vec!["sttAsync".into()])
            .await
            .unwrap();
    let gov = immutable(&s3_repository(&a.info, Some("gov"), "sv-imm-prune"), "repositories.gov", "governance", "1d");
    let ws = Workspace::with_repositories(&[&a.info], None, &gov);
    let out = ws.run(&["init", "--repository", "gov"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The first backup holds data the second no longer needs.
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-async-icp");
    let big: Vec<u8> = (0..600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    store.put_object(&bucket, "jobs/old-audio.bin", bytes::Bytes::from(big), &Default::default()).await.unwrap();
    let first = ws.json(&["--repository", "gov", "backup", "--from", "imm-prune"]);
    // Written over with other bytes of the same size (a deletion this big would mark the
    // backup anomalous, and retention would keep the first).
    let other: Vec<u8> = (0..600_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8 ^ 0x5a).collect();
    store.put_object(&bucket, "jobs/old-audio.bin", bytes::Bytes::from(other), &Default::default()).await.unwrap();
    let second = ws.json(&["--repository", "gov", "backup", "--from", "imm-prune"]);
    let (rs, rbucket, prefix) = repository_bucket(&gov);
    let packs_before = pack_keys(&rs, &rbucket, &prefix).await;

    // Everything but the index files stops being retained: forget removes the first backup,
    // prune must leave every pack an index file still retained names (and say until when).
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    assert!(cut_retention(&gov, soon, "/", "/index/").await > 0);
    // The config's retention keeps the second backup only: check extends what that one needs
    // again, never the first's snapshot files (else a forgotten backup would stay forever).
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    assert!(!cfg.contains("[retention]"));
    std::fs::write(ws.config(), format!("{cfg}\n[retention]\nkeep_last = 1\n")).unwrap();
    let check = ws.json(&["--repository", "gov", "check"]);
    let short: Vec<String> =
        check["short_retention"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    let in_short = |snaps: &serde_json::Value| {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|id| short.iter().any(|k| k.contains(&format!("/snapshots/{}", id.as_str().unwrap()))))
    };
    assert!(in_short(&second["snapshots"]), "{check}");
    assert!(!in_short(&first["snapshots"]), "{check}");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let f = ws.json(&["--repository", "gov", "forget", "--keep-last", "1"]);
    assert!(f.get("held").is_none_or(|h| h.as_array().unwrap().is_empty()), "nothing retained to forget: {f}");
    let listed = ws.json(&["--repository", "gov", "snapshots"]);
    let ids: Vec<String> =
        listed["backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![second["backup_id"].as_str().unwrap().to_string()], "{first}\n{f}");
    let p = ws.json(&["--repository", "gov", "prune", "--max-unused", "0%"]);
    assert!(p["packs_held"].as_u64().unwrap() > 0, "{p}");
    let held = p["held"].as_array().unwrap();
    assert!(held.iter().all(|h| h["key"].as_str().unwrap().contains("/index/") && h["until"].is_string()), "{p}");
    let packs_now = pack_keys(&rs, &rbucket, &prefix).await;
    assert!(packs_before.is_subset(&packs_now), "a pack a retained index names was deleted");
    restic_on_repo(&gov, &["check"], &ws);

    // Once the index files' retention ends too, prune frees the first backup's data.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    assert!(cut_retention(&gov, soon, "/index/", "").await > 0);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let p = ws.json(&["--repository", "gov", "prune", "--max-unused", "0%"]);
    // (Packs the second backup needs that prune would repack are retained since check
    // extended them: those stay.)
    let held = p.get("held").and_then(|h| h.as_array().cloned()).unwrap_or_default();
    assert!(held.iter().all(|h| h["key"].as_str().unwrap().contains("/data/")), "{p}");
    assert!(p["packs_removed"].as_u64().unwrap() + p["packs_repacked"].as_u64().unwrap() > 0, "{p}");
    let packs_after = pack_keys(&rs, &rbucket, &prefix).await;
    assert!(!packs_before.is_subset(&packs_after), "prune removed no pack: {p}");
    restic_on_repo(&gov, &["check", "--read-data"], &ws);
    let check = ws.json(&["--repository", "gov", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    let t =
        ws.json(&["--repository", "gov", "verify", second["backup_id"].as_str().unwrap(), "--against", "imm-prune"]);
    assert_eq!(t["ok"], true, "{t}");
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

/// The bucket policy `docs/configuration.md` gives for a write-only backup key on RGW: read,
/// list (also versions), put and retention; delete only under `locks/`.
fn write_only_policy(bucket: &str, prefix: &str, user: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
{{"Effect":"Allow","Principal":{{"AWS":["arn:aws:iam:::user/{user}"]}},
 "Action":["s3:GetObject","s3:GetObjectVersion","s3:PutObject","s3:GetObjectRetention","s3:PutObjectRetention",
  "s3:ListBucket","s3:ListBucketVersions","s3:GetBucketObjectLockConfiguration","s3:GetBucketLocation","s3:GetBucketVersioning"],
 "Resource":["arn:aws:s3:::{bucket}","arn:aws:s3:::{bucket}/*"]}},
{{"Effect":"Allow","Principal":{{"AWS":["arn:aws:iam:::user/{user}"]}},
 "Action":["s3:DeleteObject","s3:DeleteObjectVersion"],
 "Resource":["arn:aws:s3:::{bucket}/{prefix}/locks/*"]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_run_with_a_key_that_cannot_delete_and_maintenance_has_its_own() {
    if !object_lock_server() {
        return;
    }
    let (Ok(user), Ok(wak), Ok(wsk)) = (
        std::env::var("SPEECHVAULT_TEST_S3_WRITER_USER"),
        std::env::var("SPEECHVAULT_TEST_S3_WRITER_ACCESS_KEY"),
        std::env::var("SPEECHVAULT_TEST_S3_WRITER_SECRET_KEY"),
    ) else {
        panic!("the RGW harness names a writer user (.ci/rgw-up.sh)");
    };
    let a = TestInstallation::start_with(exe(), "imm-wo", Scale::Tiny, 99, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    // The owner's (maintenance) section, then the same repository through the writer's key.
    let admin = s3_repository(&a.info, None, "sv-imm-wo");
    let (admin_store, bucket, prefix) = repository_bucket(&admin);
    let get = |k: &str| admin.lines().find_map(|l| l.strip_prefix(&format!("{k} = "))).unwrap().to_string();
    let writer = format!(
        "[repository]\nurl = {}\npassword = {}\ns3.region = {}\ns3.access_key = {wak:?}\ns3.secret_key = {wsk:?}\ns3.maintenance_access_key = {}\ns3.maintenance_secret_key = {}\n\n[repository.immutable]\nmode = \"compliance\"\nretain = \"1d\"\n\n[retention]\nkeep_last = 1\nafter_backup = true\n",
        get("url"),
        get("password"),
        get("s3.region"),
        get("s3.access_key"),
        get("s3.secret_key"),
    );
    // The owner creates the bucket with object lock and grants the writer what a backup needs.
    admin_store.create_bucket_with_object_lock(&bucket).await.unwrap();
    admin_store.put_bucket_setting(&bucket, "policy", &write_only_policy(&bucket, &prefix, &user)).await.unwrap();
    // init, backups and check with the writer's key (the workspace inits it).
    let ws = Workspace::with_repositories(&[&a.info], Some(&writer), "");
    let first = ws.json(&["backup", "--from", "imm-wo"]);
    // after_backup ran through the maintenance keys: forget kept one, deleted nothing retained.
    assert!(first["warnings"].as_array().unwrap().is_empty(), "{first}");
    let second = ws.json(&["backup", "--from", "imm-wo"]);
    assert_eq!(ws.backups().len(), 2, "retained backups stay although keep_last = 1: {second}");

    // The writer's key cannot delete any version of any repository file.
    let mut wcfg = speechvault::objstore::S3Config::new(
        admin_store.endpoint().to_string(),
        wak.clone(),
        speechvault::support::secret::Secret::new(wsk.clone()),
    );
    wcfg.region = get("s3.region").trim_matches('"').to_string();
    let ws3 = speechvault::objstore::ObjectStore::new(wcfg).unwrap();
    let versions = admin_store.list_versions(&bucket, &format!("{prefix}/")).await.unwrap();
    let files: Vec<_> = versions.iter().filter(|v| !v.key.contains("/locks/") && !v.delete_marker).collect();
    assert!(files.iter().any(|v| v.key.contains("/data/")) && files.iter().any(|v| v.key.contains("/snapshots/")));
    for v in &files {
        assert!(ws3.delete_object_version(&bucket, &v.key, &v.version_id).await.is_err(), "writer deleted {}", v.key);
    }
    // An overwrite only adds a version that speechvault ignores and check reports.
    let snap = files.iter().find(|v| v.key.contains("/snapshots/")).unwrap();
    ws3.put_object(&bucket, &snap.key, bytes::Bytes::from_static(b"garbage"), &Default::default()).await.unwrap();
    let check = ws.json(&["check"]);
    assert_eq!(check["tampered"].as_array().unwrap().len(), 1, "{check}");
    let third = ws.json(&["backup", "--from", "imm-wo"]);
    assert!(third["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("tampered")), "{third}");
    // Without maintenance keys an immutable repository's backup leaves retention to the
    // maintenance job, and says so.
    let no_maint: String = writer.lines().filter(|l| !l.starts_with("s3.maintenance_")).collect::<Vec<_>>().join("\n");
    std::fs::write(ws.config(), format!("{no_maint}\n{}", a.info.config_section())).unwrap();
    let fourth = ws.json(&["backup", "--from", "imm-wo"]);
    assert!(
        fourth["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("no s3.maintenance_* keys")),
        "{fourth}"
    );
}
