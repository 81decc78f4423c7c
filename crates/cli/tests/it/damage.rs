//! A damaged repository still gives back what it can: a damaged snapshot file hides only its
//! own backup, forget and prune refuse to decide from it, `repair snapshots` sets it aside;
//! a lost or damaged index is rebuilt from the packs by `repair index`. On a local and on an
//! S3 repository; restic checks the result.

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// Flips bytes in the middle of a repository file.
async fn flip(files: &RepoFiles, path: &str) {
    let mut bytes = files.read(path).await;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xff;
    }
    files.write(path, &bytes).await;
}

async fn one_damaged_snapshot_file_hides_only_its_backup(s3: bool) {
    let name = if s3 { "dmg-snap-s3" } else { "dmg-snap" };
    let a = TestInstallation::start_with(exe(), name, Scale::Tiny, 71, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info]);
    let first = ws.json(&["backup", "--from", name]);
    let second = ws.json(&["backup", "--from", name]);
    let sets = ws.backups();
    assert_eq!(sets.len(), 2);
    let old = &sets[0];
    assert_eq!(old["backup_id"], first["backup_id"]);
    assert!(old["damaged"].is_null(), "{old}");
    // One part snapshot of the older backup (a database's), damaged by a flipped byte.
    let part = old["parts"].as_array().unwrap().iter().position(|p| p.as_str().unwrap().starts_with("db:")).unwrap();
    let short = old["snapshots"][part].as_str().unwrap().to_string();
    let path = files
        .files("snapshots")
        .await
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| name_of(p).starts_with(&short))
        .unwrap_or_else(|| panic!("snapshot file {short}: {old}"));
    let victim = name_of(&path).to_string();
    flip(&files, &path).await;

    // Listed: both backups, the older one marked, the file named.
    let listing = ws.json(&["snapshots"]);
    let backups = listing["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{listing}");
    assert!(backups[0]["damaged"].as_str().unwrap().contains("1 of its"), "{listing}");
    assert!(backups[1]["damaged"].is_null(), "{listing}");
    let damaged = listing["damaged_files"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{listing}");
    assert_eq!(damaged[0]["id"], victim.as_str());
    assert_eq!(damaged[0]["kind"], "snapshot");
    let text = ws.run(&["snapshots"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("DAMAGED"), "{}", String::from_utf8_lossy(&text.stdout));

    // The intact backup still verifies against its source.
    let v = ws.json(&["verify", "latest", "--against", name]);
    assert_eq!(v["backup_id"], second["backup_id"]);
    assert_eq!(v["ok"], true, "{v}");

    // forget and prune refuse to decide from it, naming the file; nothing goes.
    for args in [&["forget", "--keep-last", "1"][..], &["prune"][..]] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&victim[..8]), "{args:?} names the file: {}", stderr(&out));
        assert!(stderr(&out).contains("repair snapshots"), "{}", stderr(&out));
    }
    assert_eq!(ws.backups().len(), 2);
    let planned = ws.json(&["forget", "--keep-last", "1", "--ignore-damaged", "--dry-run"]);
    assert_eq!(planned["removed"].as_array().unwrap().len(), 1, "{planned}");

    // repair snapshots: --dry-run changes nothing, then the file is set aside, not deleted.
    let dry = ws.json(&["repair", "snapshots", "--dry-run"]);
    assert_eq!(dry["set_aside"].as_array().unwrap().len(), 1, "{dry}");
    assert!(files.files("snapshots").await.iter().any(|(p, _)| name_of(p) == victim));
    let done = ws.json(&["repair", "snapshots"]);
    assert_eq!(done["set_aside"][0]["id"], victim.as_str(), "{done}");
    assert!(!files.files("snapshots").await.iter().any(|(p, _)| name_of(p) == victim));
    assert!(files.files("damaged/snapshots").await.iter().any(|(p, _)| name_of(p) == victim));
    let listing = ws.json(&["snapshots"]);
    assert!(listing["damaged_files"].as_array().unwrap().is_empty(), "{listing}");
    assert!(listing["backups"][0]["damaged"].is_string(), "still missing a part: {listing}");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));

    // Now forget and prune decide again.
    let forgot = ws.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(forgot["removed"][0], first["backup_id"], "{forgot}");
    let v = ws.json(&["verify", "latest", "--against", name]);
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_damaged_snapshot_file_hides_only_its_backup_local() {
    one_damaged_snapshot_file_hides_only_its_backup(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_damaged_snapshot_file_hides_only_its_backup_s3() {
    one_damaged_snapshot_file_hides_only_its_backup(true).await;
}

async fn a_lost_index_is_rebuilt_from_the_packs(s3: bool) {
    let name = if s3 { "dmg-index-s3" } else { "dmg-index" };
    let a = TestInstallation::start_with(exe(), name, Scale::Tiny, 72, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    let (ws, files) = workspace_on(s3, &[&a.info]);
    ws.json(&["backup", "--from", name]);
    ws.json(&["backup", "--from", name]);
    let index: Vec<String> = files.files("index").await.into_iter().map(|(p, _)| p).collect();
    assert!(index.len() >= 2, "{index:?}");
    // One index file lost: check names the damage and the fix, without a panic.
    files.delete(&index[0]).await;
    let out = ws.run(&["check"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(!said.contains("panicked") && said.contains("speechvault repair index"), "{said}");
    let doc: serde_json::Value = serde_json::from_slice(&ws.run(&["--json", "check"]).stdout).unwrap();
    assert_eq!(doc["exit_code"], 3, "{doc}");
    assert_eq!(doc["kind"], "differences", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("repair index"), "{doc}");
    assert!(doc.get("failures").is_none(), "errors are listed once: {doc}");
    // And another damaged.
    flip(&files, &index[1]).await;

    // A damaged index file hides nothing: the packs are indexed from their headers for the
    // run (nothing written), with a warning naming the fix; check says what is wrong and what
    // to do, without a panic.
    let out = ws.run(&["verify", "latest", "--against", name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair index"), "{}", stderr(&out));
    assert!(files.files("index").await.iter().any(|(p, _)| p == &index[1]), "nothing was written");
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repair index") || stderr(&out).contains("repair index"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    let dry = ws.json(&["repair", "index", "--dry-run"]);
    assert_eq!(dry["set_aside"].as_array().unwrap().len(), 1, "{dry}");
    assert!(!dry["packs_indexed"].as_array().unwrap().is_empty(), "{dry}");
    let done = ws.json(&["repair", "index"]);
    assert_eq!(done["set_aside"][0]["id"], name_of(&index[1]), "{done}");
    assert!(done["packs_unreadable"].as_array().unwrap().is_empty(), "{done}");
    assert!(files.files("damaged/index").await.iter().any(|(p, _)| name_of(p) == name_of(&index[1])));

    let v = ws.json(&["verify", "latest", "--against", name]);
    assert_eq!(v["ok"], true, "{v}");
    let c = ws.json(&["check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_index_is_rebuilt_from_the_packs_local() {
    a_lost_index_is_rebuilt_from_the_packs(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_index_is_rebuilt_from_the_packs_s3() {
    a_lost_index_is_rebuilt_from_the_packs(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_over_its_own_source_needs_in_place() {
    let a = TestInstallation::start_with(exe(), "own-src", Scale::Tiny, 73, |o| o.components = vec!["sttAsync".into()])
        .await
        .unwrap();
    // A second config entry for the very same servers and buckets.
    let alias = a.info.config_section().replace("[installations.own-src", "[installations.own-again");
    let ws = Workspace::with_repositories(&[&a.info], None, &alias);
    let id = ws.json(&["backup", "--from", "own-src"])["backup_id"].as_str().unwrap().to_string();
    let before = all_rows(&a.info, "stt-async").await;
    for mode in ["--clean", "--data-only"] {
        let out = ws.run(&["restore", &id, "--to", "own-again", mode]);
        assert_eq!(out.status.code(), Some(2), "{mode}: {}", stderr(&out));
        assert!(stderr(&out).contains("own source") && stderr(&out).contains("--in-place"), "{}", stderr(&out));
        assert_eq!(all_rows(&a.info, "stt-async").await, before, "{mode}: nothing changed");
    }
    let r = ws.json(&["restore", &id, "--to", "own-again", "--clean", "--in-place"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert_eq!(all_rows(&a.info, "stt-async").await, before);
}

/// Edges a hostile trial found: each gets a clear error (exit 2) and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn edges_of_the_trial_get_clear_errors() {
    let comps = |o: &mut speechvault_sandbox::UpOptions| o.components = vec!["sttAsync".into()];
    let (a, b, t) = tokio::join!(
        TestInstallation::start_with(exe(), "edge-a", Scale::Tiny, 74, comps),
        TestInstallation::start_with(exe(), "edge-b", Scale::Tiny, 75, comps),
        empty_target("edge-dst")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ws = Workspace::new(&[&a.info, &b.info, &t.info]);
    ws.json(&["backup", "--from", "edge-a"]);
    ws.json(&["backup", "--from", "edge-b"]);

    // `latest` into an installation without backups, among two installations' backups.
    for args in [&["restore", "latest", "--to", "edge-dst"][..], &["verify", "latest", "--against", "edge-dst"][..]] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("edge-a, edge-b") && stderr(&out).contains("--source"), "{}", stderr(&out));
    }
    let store = t.info.object_store().unwrap();
    for (_, bucket) in &t.info.s3.buckets {
        assert!(!store.bucket_exists(bucket).await.unwrap(), "nothing was restored");
    }
    let r = ws.json(&["restore", "latest", "--to", "edge-dst", "--source", "edge-a"]);
    assert_eq!(r["source_installation"], "edge-a", "{r}");
    let v = ws.json(&["verify", "latest", "--against", "edge-dst", "--source", "edge-a"]);
    assert_eq!(v["ok"], true, "{v}");

    // A password given inline and as a file.
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    let twice = ws.dir.path().join("twice.toml");
    std::fs::write(&twice, cfg.replacen("password_file = ", "password = \"inline-pw-9\"\npassword_file = ", 1))
        .unwrap();
    let out = std::process::Command::new(exe()).arg("-c").arg(&twice).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("set twice") && !stderr(&out).contains("inline-pw-9"), "{}", stderr(&out));

    // A repository path that is a file: init and every command say so.
    let file = ws.dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let at_file = ws.dir.path().join("file.toml");
    std::fs::write(
        &at_file,
        cfg.replacen(
            &format!("{:?}", ws.repo().display().to_string()),
            &format!("{:?}", file.display().to_string()),
            1,
        ),
    )
    .unwrap();
    for cmd in ["init", "snapshots"] {
        let out = std::process::Command::new(exe()).arg("-c").arg(&at_file).arg(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("is a file, not a directory"), "{cmd}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    // A report that stdout cannot take (a full disk) is a failure, not a silent success.
    for json in [false, true] {
        let mut c = ws.command(if json { &["--json", "snapshots"][..] } else { &["snapshots"][..] });
        let out = c.stdout(std::fs::File::create("/dev/full").unwrap()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "json {json}: {}", stderr(&out));
        assert!(stderr(&out).contains("could not be written to stdout"), "{}", stderr(&out));
    }

    // A truncated key file is damage, not a wrong password (last: the repository is unusable).
    for key in std::fs::read_dir(ws.repo().join("keys")).unwrap().flatten() {
        let raw = std::fs::read(key.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(key.path(), &raw[..raw.len() / 2]).unwrap();
    }
    let out = ws.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged, not the password"), "{}", stderr(&out));
}

/// The damage matrix: every kind of repository file truncated, bit-flipped and deleted, each
/// against `snapshots`, `verify` of the newest (intact) backup, `check` and `forget`. Never
/// a panic, never a silent success where the damage matters, and each failure one `error:`
/// line. Damage to the older backup's snapshot and to a lock leaves the newest backup whole.
#[tokio::test(flavor = "multi_thread")]
async fn damage_matrix() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "matrix", Scale::Tiny, 76, |o| o.components = vec!["sttAsync".into()]),
        empty_target("matrix-t")
    );
    let a = a.unwrap();
    let off = "[repositories.off]\npath = \"OFF\"\npassword_file = \"PW\"\n\n";
    let ws = Workspace::with_repositories(&[&a.info, &t.info], None, off);
    let cfg = std::fs::read_to_string(ws.config())
        .unwrap()
        .replace("OFF", &ws.dir.path().join("off").display().to_string())
        .replace("PW", &ws.dir.path().join("repo-password").display().to_string());
    std::fs::write(ws.config(), cfg).unwrap();
    ws.json(&["--repository", "off", "init"]);
    let old_id = ws.json(&["backup", "--from", "matrix"])["backup_id"].as_str().unwrap().to_string();
    // The older backup's snapshot file of a database part: damaged in the snapshot rows.
    let old = ws.backups()[0].clone();
    let part = old["parts"].as_array().unwrap().iter().position(|p| p.as_str().unwrap().starts_with("db:")).unwrap();
    let old_snaps = [old["snapshots"][part].to_string()];
    ws.json(&["backup", "--from", "matrix"]);
    let repo = ws.repo();
    let pristine = ws.dir.path().join("pristine");
    let (off_repo, off_pristine) = (ws.dir.path().join("off"), ws.dir.path().join("off-pristine"));
    let cp = |from: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(to);
        let ok = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
        assert!(ok);
    };
    cp(&repo, &pristine);
    cp(&off_repo, &off_pristine);
    // A lock as restic leaves one behind (a run that died), for the lock row.
    let lock_body =
        br#"{"time":"2026-12-07T10:00:00Z","exclusive":false,"hostname":"gone","username":"x","pid":999999}"#;
    let pick = |kind: &str| -> Vec<std::path::PathBuf> {
        let files = |dir: &str| -> Vec<std::path::PathBuf> {
            let mut out = Vec::new();
            let mut stack = vec![repo.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() { stack.push(e.path()) } else { out.push(e.path()) }
                }
            }
            out.sort();
            out
        };
        // Every index file: which one holds the newest backup's blobs differs run to run.
        vec![match kind {
            "config" => repo.join("config"),
            "key" => files("keys")[0].clone(),
            "snapshot" => files("snapshots")
                .into_iter()
                .find(|p| {
                    old_snaps.iter().any(|s| p.file_name().unwrap().to_str().unwrap().starts_with(s.trim_matches('"')))
                })
                .unwrap(),
            "index" => return files("index"),
            "pack" => {
                let mut packs = files("data");
                packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
                packs.pop().unwrap()
            }
            _ => {
                std::fs::create_dir_all(repo.join("locks")).unwrap();
                let p = repo.join("locks").join("ab".repeat(32));
                std::fs::write(&p, lock_body).unwrap();
                p
            }
        }]
    };
    let mut table = Vec::new();
    for kind in ["config", "key", "snapshot", "index", "pack", "lock"] {
        for damage in ["truncated", "flipped", "deleted"] {
            cp(&pristine, &repo);
            cp(&off_pristine, &off_repo);
            for file in pick(kind) {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
                let raw = std::fs::read(&file).unwrap();
                match damage {
                    "truncated" => std::fs::write(&file, &raw[..raw.len() / 2]).unwrap(),
                    // A key file stays valid JSON and base64 with one letter of its sealed
                    // data changed (a bit flip there may make it neither, run to run).
                    "flipped" if kind == "key" => {
                        let mut b = raw.clone();
                        let at = raw.windows(8).position(|w| w == b"\"data\":\"").unwrap() + 20;
                        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
                        std::fs::write(&file, b).unwrap();
                    }
                    "flipped" => {
                        let mut b = raw.clone();
                        let mid = b.len() / 2;
                        b[mid] ^= 0x01;
                        std::fs::write(&file, b).unwrap();
                    }
                    _ => std::fs::remove_file(&file).unwrap(),
                }
            }
            let mut row = vec![format!("{kind} {damage}")];
            for args in [
                &["snapshots"][..],
                &["verify", "latest", "--against", "matrix", "--no-digests"][..],
                &["check", "--read-data"][..],
                &["forget", "--keep-last", "1", "--dry-run"][..],
                // The older backup (whose snapshot file is the one damaged in the snapshot
                // rows), then the newest, each over the same target.
                &["restore", &old_id, "--to", "matrix-t", "--clean"][..],
                &["restore", &old_id, "--to", "matrix-t", "--clean", "--salvage"][..],
                &["restore", "latest", "--source", "matrix", "--to", "matrix-t", "--clean"][..],
                &["copy", "--all", "--to-repository", "off"][..],
            ] {
                let mut all = vec!["--lock-wait", "5s"];
                all.extend_from_slice(args);
                let out = ws.run(&all);
                let err = stderr(&out);
                let code = out.status.code();
                assert!(!err.contains("panicked") && code != Some(101), "{kind} {damage} {args:?}: {err}");
                if code != Some(0) {
                    let lines = err.lines().filter(|l| l.starts_with("error: ")).count();
                    assert_eq!(lines, 1, "{kind} {damage} {args:?}: one error line: {err}");
                }
                row.push(format!("{}", code.unwrap_or(-1)));
                if code != Some(0) {
                    println!(
                        "{kind} {damage} {}: {}",
                        args[0],
                        err.lines().find(|l| l.starts_with("error: ")).unwrap_or("")
                    );
                }
                if args[0] == "copy" && code != Some(0) && !["config", "key"].contains(&kind) {
                    assert!(
                        !err.contains("repository at") || err.contains("/repo"),
                        "{kind} {damage}: copy blames the source: {err}"
                    );
                }
                if ["snapshot", "lock"].contains(&kind) && args[0] == "verify" {
                    assert_eq!(code, Some(0), "{kind} {damage}: the newest backup is whole: {err}");
                }
                if args[0] == "check" && !(kind == "lock" || (kind == "snapshot" && damage == "deleted")) {
                    assert_ne!(
                        code,
                        Some(0),
                        "{kind} {damage}: check must not pass: {}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                }
            }
            table.push(row.join(" | "));
        }
    }
    println!(
        "damage | snapshots | verify | check | forget | restore old | restore old --salvage | restore latest | copy\n{}",
        table.join("\n")
    );
    // Exit statuses: 3 damage, 2 a wrong password (a flipped byte in the only key's sealed
    // part cannot be told from one) or a backup that cannot be used (the older backup's
    // damaged snapshot file leaves it incomplete; the newest restores), 1 a restore that
    // found damage before changing anything (as restores always have); `--salvage` restores
    // what reads and ends in 3 when it left something out. `verify --no-digests`
    // reads no pack data; a dry-run forget reads no index; a damaged index file is read
    // around (its packs indexed from their headers for the run), a lost one is not noticed
    // until a tree is missing; a `--clean` restore keeps the
    // objects already there intact, so a flipped byte in their pack is not read; a copy
    // blames the damaged source, not the target.
    let expected = [
        "config truncated | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 3",
        "config flipped | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 3",
        "config deleted | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 3",
        "key truncated | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 3",
        "key flipped | 2 | 2 | 2 | 2 | 2 | 2 | 2 | 2",
        "key deleted | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 3",
        "snapshot truncated | 0 | 0 | 3 | 3 | 1 | 3 | 0 | 0",
        "snapshot flipped | 0 | 0 | 3 | 3 | 1 | 3 | 0 | 0",
        "snapshot deleted | 0 | 0 | 0 | 0 | 1 | 3 | 0 | 0",
        "index truncated | 0 | 0 | 3 | 0 | 0 | 0 | 0 | 0",
        "index flipped | 0 | 0 | 3 | 0 | 0 | 0 | 0 | 0",
        "index deleted | 0 | 3 | 3 | 0 | 3 | 3 | 3 | 3",
        "pack truncated | 0 | 0 | 3 | 0 | 1 | 0 | 1 | 3",
        "pack flipped | 0 | 0 | 3 | 0 | 0 | 0 | 0 | 3",
        "pack deleted | 0 | 0 | 3 | 0 | 1 | 0 | 1 | 3",
        "lock truncated | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0",
        "lock flipped | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0",
        "lock deleted | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0",
    ];
    assert_eq!(table, expected);
}
