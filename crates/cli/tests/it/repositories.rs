//! Repositories that live off-site and for years: S3 repositories, copies, retention, locks,
//! integrity checks and keys, on a local repository and on S3 (our server, or Garage when
//! SPEECHVAULT_TEST_S3_ENDPOINT is set).

use std::process::Command;

use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn restic_on(section: &str, args: &[&str], cache: &std::path::Path) -> std::process::Output {
    let mut c = Command::new(which("restic").unwrap());
    c.args(args).env("RESTIC_PASSWORD", REPO_PASSWORD).env("RESTIC_CACHE_DIR", cache);
    for (k, v) in restic_s3_env(section) {
        c.env(k, v);
    }
    c.output().unwrap()
}

async fn add_objects(info: &speechvault_sandbox::SandboxInfo, round: u32) {
    let store = info.object_store().unwrap();
    let bucket = info.bucket("stt-async-icp");
    for i in 0..5 {
        let body: Vec<u8> = (0..50_000u32).map(|x| (x.wrapping_mul(31).wrapping_add(round * 7 + i)) as u8).collect();
        store
            .put_object(&bucket, &format!("jobs/round-{round}/{i}"), bytes::Bytes::from(body), &Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_repository_does_everything_a_local_one_does_and_restic_reads_it() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "s3r-src", Scale::Tiny, 91, |o| o.components =
            vec!["sttAsync".into(), "ttsCustomization".into()]),
        empty_target("s3r-dst")
    );
    let a = a.unwrap();
    let repo = s3_repository(&a.info, None, "sv-repo");
    // The workspace inits it: the bucket did not exist and was created.
    let ws = Workspace::with_repositories(&[&a.info, &t.info], Some(&repo), "");
    let b = ws.json(&["backup", "--from", "s3r-src"]);
    assert_eq!(ws.backups().len(), 1);
    let r = ws.json(&["restore", b["backup_id"].as_str().unwrap(), "--to", "s3r-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    ws.json(&["verify", "latest", "--against", "s3r-src"]);
    ws.json(&["check", "--read-data"]);
    // restic itself reads the S3 repository.
    let cache = ws.dir.path().join("restic-cache");
    let out = restic_on(&repo, &["snapshots"], &cache);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 snapshots"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = restic_on(&repo, &["check", "--read-data"], &cache);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = restic_on(&repo, &["dump", "latest", "--tag", "manifest", "/speechvault/manifest.json"], &cache);
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["backup_id"], b["backup_id"]);
    // The README's recipe: restic alone brings back a database dump and an object, byte-exact.
    let out_dir = ws.dir.path().join("restic-restore");
    let out = restic_on(
        &repo,
        &["restore", "latest", "--tag", "db:tts-customization", "--target", out_dir.to_str().unwrap()],
        &cache,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut parts: Vec<_> =
        std::fs::read_dir(out_dir.join("databases/tts-customization")).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    assert!(!parts.is_empty());
    let dump: Vec<u8> = parts.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(sha256_hex(&dump), manifest["databases"]["tts-customization"]["dump_sha256"].as_str().unwrap());
    assert_eq!(manifest["buckets"]["stt-async-icp"]["objects_file"], "/speechvault/objects/stt-async-icp.jsonl");
    let out =
        restic_on(&repo, &["dump", "latest", "--tag", "manifest", "/speechvault/objects/stt-async-icp.jsonl"], &cache);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines.lines().count() as u64, manifest["buckets"]["stt-async-icp"]["objects"].as_u64().unwrap());
    let entry: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let entry = &entry;
    let out =
        restic_on(&repo, &["dump", "latest", "--tag", "bucket:stt-async-icp", entry["path"].as_str().unwrap()], &cache);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_hex(&out.stdout), entry["sha256"].as_str().unwrap(), "{entry}");
    // A second init is refused; a wrong password too.
    let out = ws.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_are_whole_backups_manifest_last_and_idempotent() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "cp-src", Scale::Tiny, 92, |o| o.components = vec!["sttAsync".into()]),
        empty_target("cp-dst")
    );
    let a = a.unwrap();
    let offsite = s3_repository(&a.info, Some("offsite"), "sv-offsite");
    let ws = Workspace::with_repositories(&[&a.info, &t.info], None, &offsite);
    ws.json(&["--repository", "offsite", "init", "--copy-chunker-params"]);
    let first = ws.json(&["backup", "--from", "cp-src"])["backup_id"].as_str().unwrap().to_string();
    add_objects(&a.info, 1).await;
    let second = ws.json(&["backup", "--from", "cp-src"])["backup_id"].as_str().unwrap().to_string();

    // A copy killed before its manifest leaves an incomplete set there, never restorable.
    let paused = ws.run_until("copy:manifest", &["copy", &first, "--to-repository", "offsite"]);
    paused.kill();
    let sets = ws.json(&["--repository", "offsite", "snapshots"]);
    assert_eq!(sets["backups"][0]["complete"], false, "{sets}");
    let out = ws.run(&["--repository", "offsite", "restore", &first, "--to", "cp-dst"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Copying again finishes it; --all then copies only what is missing.
    let c = ws.json(&["copy", &first, "--to-repository", "offsite"]);
    assert_eq!(c["copied"], serde_json::json!([first]), "{c}");
    let c = ws.json(&["copy", "--all", "--to-repository", "offsite"]);
    assert_eq!(
        (c["copied"].clone(), c["skipped"].clone()),
        (serde_json::json!([second]), serde_json::json!([first])),
        "{c}"
    );
    let c = ws.json(&["copy", "--all", "--to-repository", "offsite"]);
    assert_eq!(c["copied"], serde_json::json!([]), "{c}");
    let sets = ws.json(&["--repository", "offsite", "snapshots"]);
    let complete: Vec<&str> = sets["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["complete"] == true)
        .map(|s| s["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(complete.len(), 2, "{sets}");
    assert_eq!(sets["backups"].as_array().unwrap().len(), 2, "the killed copy's leftovers were replaced: {sets}");
    // The copy restores (re-encrypted under its own key) and checks clean.
    let r = ws.json(&["--repository", "offsite", "restore", &second, "--to", "cp-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    ws.json(&["--repository", "offsite", "check", "--read-data"]);
    let out = ws.run(&["copy", "--all", "--to-repository", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_on_a_local_repository() {
    retention_forgets_whole_backups_by_rule_and_prune_frees_the_space(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_on_an_s3_repository() {
    retention_forgets_whole_backups_by_rule_and_prune_frees_the_space(true).await;
}

async fn retention_forgets_whole_backups_by_rule_and_prune_frees_the_space(s3: bool) {
    let name = if s3 { "ret-s3" } else { "ret-src" };
    let a = TestInstallation::start_with(exe(), name, Scale::Tiny, 93, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info]);
    let mut ids = Vec::new();
    for round in 0..4 {
        add_objects(&a.info, round + 10).await;
        ids.push(ws.json(&["backup", "--from", name])["backup_id"].as_str().unwrap().to_string());
    }
    // A killed backup leaves an incomplete set (killed when every part is written, before
    // the manifest).
    ws.run_until("backup:manifest", &["backup", "--from", name, "--full"]).kill();
    assert_eq!(ws.backups().len(), 5);

    let dry = ws.json(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["removed"], serde_json::json!([ids[0], ids[1]]), "{dry}");
    let young = dry["sets"].as_array().unwrap().iter().find(|s| s["complete"] == false).unwrap();
    assert_eq!(young["keep"], true, "an incomplete set younger than the grace period stays: {dry}");
    assert!(young["reasons"][0].as_str().unwrap().contains("younger than 24h"), "{dry}");
    let kept = dry["sets"].as_array().unwrap().iter().find(|s| s["backup_id"] == ids[3].as_str()).unwrap();
    assert!(kept["reasons"][0].as_str().unwrap().contains("last"), "each kept set says why: {dry}");
    assert_eq!(ws.backups().len(), 5, "a dry run changes nothing");

    let size = |f: Vec<(String, u64)>| f.iter().map(|(_, s)| s).sum::<u64>();
    let before = size(files.files("data").await);
    let done = ws.json(&["forget", "--keep-last", "2", "--incomplete-grace", "0h", "--prune", "--max-unused", "0%"]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 3, "{done}");
    let left: Vec<String> = ws.backups().iter().map(|s| s["backup_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, [ids[2].clone(), ids[3].clone()], "whole sets go, never half of one");
    assert!(size(files.files("data").await) < before, "prune freed space");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ws.json(&["verify", &ids[3], "--against", name]);

    // Configured retention, applied by the backup itself.
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("{cfg}\n[retention]\nkeep_last = 1\nafter_backup = true\n")).unwrap();
    let b = ws.json(&["backup", "--from", name]);
    assert_eq!(b["retention"]["removed"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(ws.backups().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_on_a_local_repository() {
    locks_make_prune_wait_for_a_running_backup_and_restic_respects_them(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_on_an_s3_repository() {
    locks_make_prune_wait_for_a_running_backup_and_restic_respects_them(true).await;
}

async fn locks_make_prune_wait_for_a_running_backup_and_restic_respects_them(s3: bool) {
    let (src, dst) = if s3 { ("lk-s3", "lk-s3-dst") } else { ("lk-src", "lk-dst") };
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), src, Scale::Tiny, 94, |o| o.components = vec!["sttAsync".into()]),
        empty_target(dst)
    );
    let a = a.unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info, &t.info]);
    ws.json(&["backup", "--from", src]);
    add_objects(&a.info, 3).await;
    let running = ws.run_until("backup:objects", &["--json", "backup", "--from", src]);
    // prune waits for the backup's lock, then gives up naming the holder...
    let out = ws.run(&["prune", "--lock-wait", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked by a shared lock") && stderr(&out).contains("(pid "), "{}", stderr(&out));
    // ...and restic sees the lock too.
    let out = files.restic(&ws, &["prune"]);
    assert!(!out.status.success(), "restic prune must not run beside our backup");
    assert!(stderr(&out).to_lowercase().contains("lock"), "{}", stderr(&out));
    // A SIGINT ends a long lock wait at once (exit 130), not at its end.
    let waiting = ws
        .command(&["prune", "--lock-wait", "300s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let asked = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(waiting.id() as i32, libc::SIGINT);
    }
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(asked.elapsed() < std::time::Duration::from_secs(5), "the wait ended late: {:?}", asked.elapsed());
    assert!(stderr(&out).contains("waiting for the lock") && stderr(&out).contains("locked by"), "{}", stderr(&out));
    // A patient prune runs once the backup is done, and the backup stays whole.
    let waiting = ws
        .command(&["--json", "prune", "--lock-wait", "120s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = running.resume();
    assert!(out.status.success(), "{}", stderr(&out));
    let id =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["backup_id"].as_str().unwrap().to_string();
    let pruned = waiting.wait_with_output().unwrap();
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    let r = ws.json(&["restore", &id, "--to", dst]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A restic lock is respected by speechvault: `restic backup --stdin` holds one while it reads.
    let mut holder = Command::new(which("restic").unwrap());
    holder
        .args(["backup", "--stdin", "--stdin-filename", "x"])
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"));
    match &files.section {
        None => {
            holder.env("RESTIC_REPOSITORY", ws.repo());
        }
        Some(section) => {
            for (k, v) in restic_s3_env(section) {
                holder.env(k, v);
            }
        }
    }
    let mut holder = holder
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while files.files("locks").await.is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "restic took no lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = ws.run(&["forget", "--keep-last", "1", "--lock-wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    drop(holder.stdin.take());
    holder.wait().unwrap();

    // A lock left by a killed run is stale: seen as such, removed by unlock (and by the next
    // run that takes a lock).
    ws.run_until("backup:objects", &["backup", "--from", src, "--full"]).kill();
    let locks = ws.json(&["unlock", "--dry-run"]);
    assert_eq!(locks["stale"].as_array().unwrap().len(), 1, "{locks}");
    let u = ws.json(&["unlock"]);
    assert_eq!(u["removed"].as_array().unwrap().len(), 1, "{u}");
    assert!(u["removed"][0]["stale"].as_str().unwrap().contains("gone"), "{u}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_on_a_local_repository() {
    check_names_the_backups_a_damaged_pack_affects(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_on_an_s3_repository() {
    check_names_the_backups_a_damaged_pack_affects(true).await;
}

async fn check_names_the_backups_a_damaged_pack_affects(s3: bool) {
    let name = if s3 { "chk-s3" } else { "chk-src" };
    let a = TestInstallation::start_with(exe(), name, Scale::Tiny, 95, |o| {
        o.components = vec!["sttAsync".into(), "baseModels".into()]
    })
    .await
    .unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info]);
    let id = ws.json(&["backup", "--from", name])["backup_id"].as_str().unwrap().to_string();
    ws.json(&["check", "--read-data-subset", "1/2"]);
    let mut packs: Vec<(u64, String)> = files.files("data").await.into_iter().map(|(n, s)| (s, n)).collect();
    packs.sort();
    let (len, largest) = packs.pop().unwrap();
    let original = files.read(&largest).await;
    let mut flipped = original.clone();
    for b in &mut flipped[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    files.write(&largest, &flipped).await;
    // The structure check does not read data; --read-data finds the damage.
    ws.json(&["check"]);
    for (what, damage) in [("corrupted", false), ("missing", true)] {
        if damage {
            files.delete(&largest).await;
        }
        let args: &[&str] = if damage { &["--json", "check"] } else { &["--json", "check", "--read-data"] };
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(3), "{what}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(report["ok"], false);
        let pack_id = largest.rsplit('/').next().unwrap();
        assert!(report["damaged_packs"].as_array().unwrap().iter().any(|p| p == pack_id), "{what}: {report}");
        let affected = &report["affected"][0];
        assert_eq!(affected["backup_id"], id.as_str(), "{what}: {report}");
        assert!(
            affected["objects"].as_array().unwrap().iter().any(|o| o.as_str().unwrap().ends_with("model.bin")),
            "{what}: the base model is named: {report}"
        );
        assert!(!report.to_string().contains("Some additional details"), "{report}");
    }
    files.write(&largest, &original).await;
    ws.json(&["check", "--read-data"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_on_a_local_repository() {
    keys_rotate_without_rewriting_data_and_the_last_one_stays(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_on_an_s3_repository() {
    keys_rotate_without_rewriting_data_and_the_last_one_stays(true).await;
}

async fn keys_rotate_without_rewriting_data_and_the_last_one_stays(s3: bool) {
    let name = if s3 { "key-s3" } else { "key-src" };
    let a = TestInstallation::start_with(exe(), name, Scale::Tiny, 96, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info]);
    ws.json(&["backup", "--from", name]);
    let keys = ws.json(&["key", "list"]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    let only = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let out = ws.run(&["key", "remove", &only[..8]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
    // Rotate: a new password works, the old one no longer does, the data is untouched.
    let new_pw = ws.dir.path().join("new-password");
    std::fs::write(&new_pw, "a brand new password\n").unwrap();
    let packs_before = files.files("data").await;
    ws.json(&["key", "passwd", "--new-password-file", new_pw.to_str().unwrap()]);
    let out = ws.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2), "the old password is gone: {}", stderr(&out));
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        cfg.replace(&format!("password = {REPO_PASSWORD:?}"), "password = \"a brand new password\""),
    )
    .unwrap();
    std::fs::copy(&new_pw, ws.dir.path().join("repo-password")).unwrap();
    assert_eq!(ws.backups().len(), 1);
    let packs_after = files.files("data").await;
    assert_eq!(packs_before, packs_after, "no data rewritten");
    let second = ws.dir.path().join("second-password");
    std::fs::write(&second, "a second password\n").unwrap();
    let added = ws.json(&["key", "add", "--new-password-file", second.to_str().unwrap()]);
    assert_eq!(ws.json(&["key", "list"])["keys"].as_array().unwrap().len(), 2);
    let id = added["added"].as_str().unwrap();
    ws.json(&["key", "remove", &id[..10]]);
    assert_eq!(ws.json(&["key", "list"])["keys"].as_array().unwrap().len(), 1);
}

/// Unmounts on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_repository_is_restored_from_without_a_lock() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "ro-src", Scale::Tiny, 95, |o| o.components = vec!["sttAsync".into()]),
        empty_target("ro-dst")
    );
    let a = a.unwrap();
    let mount = test_dir("speechvault-ro-").unwrap();
    let section = format!(
        "[repositories.ro]\npath = {:?}\npassword_file = {:?}\n\n",
        mount.path().display().to_string(),
        "REPO_PASSWORD_FILE"
    );
    let ws = Workspace::with_repositories(&[&a.info, &t.info], None, &section);
    let cfg = std::fs::read_to_string(ws.config())
        .unwrap()
        .replace("REPO_PASSWORD_FILE", &ws.dir.path().join("repo-password").display().to_string());
    std::fs::write(ws.config(), cfg).unwrap();
    let id = ws.json(&["backup", "--from", "ro-src"])["backup_id"].as_str().unwrap().to_string();
    // The repository seen through a read-only bind mount (an immutable copy, a snapshot).
    let bound = Command::new("mount").arg("--bind").arg(ws.repo()).arg(mount.path()).status().unwrap();
    assert!(bound.success(), "mount --bind needs root");
    let _mounted = Mounted(mount.path().to_path_buf());
    let ro = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(mount.path()).status().unwrap();
    assert!(ro.success(), "remount read-only");
    assert!(std::fs::write(mount.path().join("probe"), b"x").is_err(), "the mount must be read-only");

    let listed = ws.json(&["--repository", "ro", "snapshots"]);
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "{listed}");
    let out = ws.run(&["--json", "--repository", "ro", "restore", &id, "--to", "ro-dst"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("without a lock"), "said once: {}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let v = ws.json(&["--repository", "ro", "verify", &id, "--against", "ro-dst"]);
    assert_eq!(v["ok"], true, "{v}");
    let c = ws.json(&["--repository", "ro", "--no-lock", "check"]);
    assert_eq!(c["ok"], true, "{c}");
    // Work that writes is refused by the mount, not done without a lock.
    let out = ws.run(&["--repository", "ro", "backup", "--from", "ro-src"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).to_lowercase().contains("read-only"), "{}", stderr(&out));
    // --no-lock on the writable repository: a reading run goes past an exclusive lock.
    let repo = std::sync::Arc::new(
        speechvault::repository::Repository::open(
            &speechvault::repository::Location::Local(ws.repo()),
            &speechvault::support::secret::Secret::new(REPO_PASSWORD.to_string()),
        )
        .unwrap(),
    );
    let held = repo.lock(true, std::time::Duration::ZERO).unwrap();
    let out = ws.run(&["--lock-wait", "1s", "verify", &id, "--against", "ro-dst"]);
    assert_eq!(out.status.code(), Some(1), "held out by the exclusive lock: {}", stderr(&out));
    let out = ws.run(&["--lock-wait", "1s", "--no-lock", "verify", &id, "--against", "ro-dst"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["--lock-wait", "1s", "--no-lock", "backup", "--from", "ro-src"]);
    assert_eq!(out.status.code(), Some(1), "--no-lock never applies to a backup: {}", stderr(&out));
    drop(held);
}
