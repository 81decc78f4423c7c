//! Crashes (`kill -9` at every phase), a full disk, and concurrent runs. After each, the
//! repository checks clean with restic, no incomplete backup is ever restored, the next
//! backup works, and a killed restore finishes with `restore --resume`. These run once,
//! against our own S3 server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::{self, Scale};

use crate::common::*;

/// A set's state as `snapshots --json` reports it: (complete sets, incomplete sets).
fn sets(ws: &Workspace) -> (Vec<String>, Vec<String>) {
    let all = ws.backups();
    let ids = |complete: bool| {
        all.iter()
            .filter(|s| s["complete"] == complete)
            .map(|s| s["backup_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    (ids(true), ids(false))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_killed_at_any_phase_leaves_a_clean_repository_and_nothing_restorable() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "crash-src", Scale::Small, 51, |o| {
            o.components = vec!["sttCustomization".into(), "sttAsync".into()]
        }),
        empty_target("crash-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    for (round, point) in ["backup:pg_dump", "backup:objects", "backup:snapshot", "backup:manifest"].iter().enumerate()
    {
        let paused = ws.run_until(point, &["backup", "--from", "crash-src", "--full"]);
        paused.kill();
        // pg_dump died with us (it was told to, before it started).
        let admin = a.info.pg_config().unwrap().connect("postgres").await.unwrap();
        let start = Instant::now();
        loop {
            let n: i64 = admin
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'speechvault/pg_dump'", &[])
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{point}: pg_dump outlived speechvault");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The killed run's lock is left behind; restic refuses to check past it until it is
        // removed, as an operator would (speechvault's own next run removes it by itself).
        let u = ws.json(&["unlock"]);
        assert_eq!(u["removed"].as_array().unwrap().len(), 1, "{point}: {u}");
        assert_restic_check(&ws);
        let (complete, incomplete) = sets(&ws);
        assert_eq!(complete.len(), round, "{point}: no new complete backup");
        for id in &incomplete {
            let out = ws.run(&["restore", id, "--to", "crash-dst"]);
            assert_eq!(out.status.code(), Some(2), "{point}: {}", stderr(&out));
            assert!(stderr(&out).contains("incomplete"), "{point}: {}", stderr(&out));
        }
        if round == 0 {
            let out = ws.run(&["restore", "latest", "--to", "crash-dst"]);
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(stderr(&out).contains("no complete backup"), "{}", stderr(&out));
        }
        // The next backup works.
        ws.json(&["backup", "--from", "crash-src"]);
        assert_restic_check(&ws);
    }
    let r = ws.json(&["restore", "latest", "--to", "crash-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_at_any_phase_finishes_with_resume() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "rcrash-src", Scale::Tiny, 52, |o| {
            o.components = vec!["sttCustomization".into(), "sttAsync".into()]
        }),
        empty_target("rcrash-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let id = ws.json(&["backup", "--from", "rcrash-src"])["backup_id"].as_str().unwrap().to_string();
    let from = seed::instances(52)[0].0.to_string();
    let to = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let own = ["--from-instance", from.as_str(), "--to-instance", to];
    for (point, mode) in
        [("restore:pg_restore", None), ("restore:objects", Some("--clean")), ("restore:ownership", Some("--clean"))]
    {
        let mut args = vec!["restore", id.as_str(), "--to", "rcrash-dst"];
        args.extend(mode);
        args.extend(own);
        if mode.is_some() {
            // Some objects to write again, some to keep.
            let store = t.info.object_store().unwrap();
            for (_, b) in &t.info.s3.buckets {
                if !store.bucket_exists(b).await.unwrap() {
                    continue;
                }
                let keys: Vec<String> =
                    store.list_all(b, "").await.unwrap().into_iter().map(|o| o.key).step_by(2).collect();
                store.delete_keys(b, &keys, 8).await.unwrap();
            }
        }
        let paused = ws.run_until(point, &args);
        paused.kill();
        // Without --resume, an interrupted restore's target is not taken for an empty one.
        if mode.is_none() {
            let out = ws.run(&args);
            assert_eq!(out.status.code(), Some(2), "{point}: {}", stderr(&out));
            assert!(stderr(&out).contains("--resume"), "{point}: {}", stderr(&out));
        }
        let mut again = args.clone();
        again.push("--resume");
        let r = ws.json(&again);
        assert_eq!(r["verify"]["ok"], true, "{point}: {r}");
        assert_eq!(r["resumed"], true);
        if point == "restore:objects" {
            let kept: u64 = r["buckets"].as_object().unwrap().values().map(|b| b["kept"].as_u64().unwrap()).sum();
            assert!(kept > 0, "{point}: objects already restored are kept: {r}");
        }
        let moved: u64 = r["ownership"].as_array().unwrap().iter().map(|o| o["rows"].as_u64().unwrap()).sum();
        assert!(moved > 0, "{point}: {r}");
    }
}

/// A tmpfs of `size` mounted at `dir` for the life of the guard; `None` where mounting is not
/// allowed.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }
    fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_repository_disk_fails_clearly_and_the_next_backup_works() {
    if external() {
        return;
    }
    let a = TestInstallation::start_with(exe(), "full-src", Scale::Tiny, 53, |o| {
        o.components = vec!["baseModels".into(), "sttAsync".into()]
    })
    .await
    .unwrap();
    let dir = test_dir("speechvault-full-").unwrap();
    let repo = dir.path().join("repo");
    let mount = Mount::tmpfs(&repo, "3m");
    std::fs::write(dir.path().join("pw"), REPO_PASSWORD).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\npath = {:?}\npassword_file = {:?}\n\n{}",
            repo.display().to_string(),
            dir.path().join("pw").display().to_string(),
            a.info.config_section()
        ),
    )
    .unwrap();
    let sv = |args: &[&str], full_after: Option<&str>| {
        let mut c = Command::new(EXE);
        c.arg("-c").arg(&cfg).args(args);
        if let Some(n) = full_after {
            c.env("SPEECHVAULT_TEST_REPO_FULL_AFTER", n);
        }
        c.output().unwrap()
    };
    assert!(sv(&["init"], None).status.success());
    // Where the machine allows a tmpfs, the disk really fills up; elsewhere the repository
    // backend is told to fail with ENOSPC after 3 MB.
    let limit = if mount.is_some() { None } else { Some("3000000") };
    let out = sv(&["backup", "--from", "full-src"], limit);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("Some additional details"), "rustic's boilerplate stays out: {err}");
    let restic_env = |c: &mut Command| {
        c.env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD", REPO_PASSWORD)
            .env("RESTIC_CACHE_DIR", dir.path().join("rc"));
    };
    let mut check = Command::new(which("restic").unwrap());
    check.args(["check", "--read-data"]);
    restic_env(&mut check);
    let out = check.output().unwrap();
    assert!(out.status.success(), "restic check after a full disk: {}", stderr(&out));
    if let Some(m) = &mount {
        m.resize("64m");
    }
    let out = sv(&["--json", "backup", "--from", "full-src"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = check.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sv(&["--json", "snapshots"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backups"].as_array().unwrap().iter().filter(|b| b["complete"] == true).count(), 1);
    drop(mount);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backups_at_once_never_corrupt_anything() {
    if external() {
        return;
    }
    let (a, b, t) = tokio::join!(
        TestInstallation::start_with(exe(), "conc-a", Scale::Tiny, 54, |o| o.components =
            vec!["sttAsync".into(), "ttsCustomization".into()]),
        TestInstallation::start_with(exe(), "conc-b", Scale::Tiny, 55, |o| o.components =
            vec!["sttCustomization".into()]),
        empty_target("conc-dst")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ws = Workspace::new(&[&a.info, &b.info, &t.info]);
    let spawn = |name: &str| {
        ws.command(&["--json", "backup", "--from", name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs = [spawn("conc-a"), spawn("conc-a"), spawn("conc-b")];
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (complete, incomplete) = sets(&ws);
    assert_eq!((complete.len(), incomplete.len()), (3, 0));
    assert_restic_check(&ws);
    for id in &complete {
        ws.json(&[
            "verify",
            id,
            "--against",
            if ws.backups().iter().any(|s| s["backup_id"] == id.as_str() && s["installation"] == "conc-b") {
                "conc-b"
            } else {
                "conc-a"
            },
        ]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dump_spool_checks_its_free_space_before_anything_changes() {
    if external() {
        return;
    }
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "spool-src", Scale::Tiny, 56, |o| o.components = vec!["sttAsync".into()]),
        empty_target("spool-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "spool-src"]);
    let small = ws.dir.path().join("small-tmp");
    let Some(_mount) = Mount::tmpfs(&small, "1m") else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs");
        return;
    };
    let out = ws.run(&["restore", "--to", "spool-dst", "--temp-dir", small.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("temporary space") && stderr(&out).contains("--temp-dir"), "{}", stderr(&out));
    let admin = t.info.pg_config().unwrap().connect("postgres").await.unwrap();
    let n: i64 =
        admin.query_one("SELECT count(*) FROM pg_database WHERE datname = 'stt-async'", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "nothing changed");
    // A roomy --temp-dir works.
    let roomy = ws.dir.path().join("roomy");
    std::fs::create_dir(&roomy).unwrap();
    let r = ws.json(&["restore", "--to", "spool-dst", "--temp-dir", roomy.to_str().unwrap()]);
    assert_eq!(r["verify"]["ok"], true);
}
