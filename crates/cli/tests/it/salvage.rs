//! A damaged backup still gives back what it can: `restore --salvage` restores everything that
//! reads and names the rest (exit 3); `--fallback-repository` reads what a repository lost
//! from its copy; `check --read-data --repair-from` heals the repository from the copy. On a
//! local repository with its copy in S3 and the other way round; restic checks the result.

use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::Scale;

use crate::common::*;

/// Where a blob of the first file of the part snapshot tagged `tag` lies: `(pack, offset,
/// length)`, read with restic.
fn blob_of(files: &RepoFiles, ws: &Workspace, tag: &str) -> (String, u64, u64) {
    let ok = |args: &[&str]| -> String {
        let out = files.restic(ws, args);
        assert!(out.status.success(), "restic {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let snaps: serde_json::Value = serde_json::from_str(&ok(&["snapshots", "--json", "--tag", tag])).unwrap();
    let snap = snaps[0]["id"].as_str().unwrap_or_else(|| panic!("no snapshot tagged {tag}: {snaps}")).to_string();
    // The first file with content, and its directory's tree.
    let listing = ok(&["ls", "--json", &snap]);
    let (dir, name) = listing
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|n| n["type"] == "file" && n["size"].as_u64().unwrap_or(0) > 0)
        .map(|n| {
            let path = n["path"].as_str().unwrap().to_string();
            let (dir, name) = path.rsplit_once('/').unwrap();
            (if dir.is_empty() { "/".to_string() } else { dir.to_string() }, name.to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("no file in {snap}"));
    // Down the trees from the snapshot's root (restic's `cat tree snap:dir` is newer than Debian's).
    let root: serde_json::Value = serde_json::from_str(&ok(&["cat", "snapshot", &snap])).unwrap();
    let mut tree_id = root["tree"].as_str().unwrap().to_string();
    let child = |tree: &serde_json::Value, name: &str| -> serde_json::Value {
        tree["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap().clone()
    };
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        let tree: serde_json::Value = serde_json::from_str(&ok(&["cat", "blob", &tree_id])).unwrap();
        tree_id = child(&tree, part)["subtree"].as_str().unwrap().to_string();
    }
    let tree: serde_json::Value = serde_json::from_str(&ok(&["cat", "blob", &tree_id])).unwrap();
    let node = child(&tree, &name);
    let blob = node["content"][0].as_str().unwrap().to_string();
    for index in ok(&["list", "index"]).lines() {
        let idx: serde_json::Value = serde_json::from_str(&ok(&["cat", "index", index])).unwrap();
        for pack in idx["packs"].as_array().unwrap() {
            for b in pack["blobs"].as_array().unwrap() {
                if b["id"] == blob.as_str() {
                    return (
                        pack["id"].as_str().unwrap().to_string(),
                        b["offset"].as_u64().unwrap(),
                        b["length"].as_u64().unwrap(),
                    );
                }
            }
        }
    }
    panic!("blob {blob} of {tag} is in no index");
}

/// The path (local) or key (S3) of a pack.
async fn pack_path(files: &RepoFiles, pack: &str) -> String {
    files.files("data").await.into_iter().map(|(p, _)| p).find(|p| p.ends_with(pack)).unwrap()
}

/// Flips bytes in the middle of a blob, inside its pack.
async fn flip_blob(files: &RepoFiles, (pack, offset, length): &(String, u64, u64)) {
    let path = pack_path(files, pack).await;
    let mut bytes = files.read(&path).await;
    let at = (*offset + *length / 2) as usize;
    for b in &mut bytes[at..at + 4] {
        *b ^= 0x5a;
    }
    files.write(&path, &bytes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn salvage_restores_what_reads_and_names_the_rest() {
    let (a, t, u) = tokio::join!(
        TestInstallation::start_with(exe(), "slv-src", Scale::Tiny, 81, |o| o.components = vec!["sttAsync".into()]),
        empty_target("slv-t"),
        empty_target("slv-u"),
    );
    let a = a.unwrap();
    let (ws, files) = workspace_on(false, &[&a.info, &t.info, &u.info]);
    let backup = ws.json(&["backup", "--from", "slv-src"]);
    let id = backup["backup_id"].as_str().unwrap().to_string();
    let parts: Vec<String> =
        ws.backups()[0]["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    let bucket = parts.iter().find(|p| p.starts_with("bucket:")).unwrap().clone();
    let db = parts.iter().find(|p| p.starts_with("db:")).unwrap().clone();

    // One byte flipped inside an object's data: the quick preflight cannot see it.
    let object_blob = blob_of(&files, &ws, &bucket);
    flip_blob(&files, &object_blob).await;
    let out = ws.run(&["restore", &id, "--to", "slv-t"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--salvage") && stderr(&out).contains("--fallback-repository"), "{}", stderr(&out));
    let out = ws.run(&["--json", "restore", &id, "--to", "slv-t", "--salvage", "--verify", "read-back"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost = &r["salvage"];
    assert_eq!(lost["objects_lost"], 1, "{r}");
    assert!(lost["databases"].as_array().unwrap().is_empty(), "{r}");
    let key = lost["objects"][0]["name"].as_str().unwrap().to_string();
    // Everything else is there and verified; the lost object is absent, not half-written.
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let check = r["verify"]["buckets"].as_array().unwrap().iter().find(|b| b["missing_count"] == 0).unwrap().clone();
    assert_eq!(check["unexpected_count"], 0, "{r}");
    let v = ws.run(&["--json", "verify", &id, "--against", "slv-t"]);
    assert_eq!(v.status.code(), Some(3), "the installation lacks the lost object: {}", stderr(&v));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let missing: Vec<&str> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["missing"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()))
        .collect();
    assert_eq!(missing, vec![key.as_str()], "{v}");
    assert!(v["tables"].as_array().unwrap().iter().all(|t| t["ok"] == true), "{v}");

    // A dump damaged too: its database is not restored, the rest is.
    let dump_blob = blob_of(&files, &ws, &db);
    flip_blob(&files, &dump_blob).await;
    let out = ws.run(&["restore", &id, "--to", "slv-u"]);
    // A restore that finds damage fails (exit 1, as restores always have), changing nothing.
    assert_eq!(out.status.code(), Some(1), "the preflight finds a damaged dump: {}", stderr(&out));
    let out = ws.run(&["--json", "restore", &id, "--to", "slv-u", "--salvage"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost_dbs: Vec<&str> =
        r["salvage"]["databases"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(lost_dbs, vec![db.trim_start_matches("db:")], "{r}");
    assert_eq!(r["salvage"]["objects_lost"], 1, "{r}");
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert!(r["databases"].get(db.trim_start_matches("db:")).is_none(), "{r}");
    assert!(stderr(&out).contains("salvaged") && stderr(&out).contains(&key), "{}", stderr(&out));
}

async fn a_lost_pack_is_read_from_the_copy_and_healed(s3: bool) {
    let name = if s3 { "heal-s3" } else { "heal" };
    let target = format!("{name}-t");
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), name, Scale::Tiny, 82, |o| o.components = vec!["sttAsync".into()]),
        empty_target(&target),
    );
    let a = a.unwrap();
    // The repository and its copy: local and S3, or S3 and local.
    let (ws, files) = if s3 {
        let section = s3_repository(&a.info, None, "sv-heal");
        let dir = test_dir("speechvault-offsite-").unwrap();
        std::fs::write(dir.path().join("pw"), format!("{REPO_PASSWORD}\n")).unwrap();
        let offsite = format!(
            "[repositories.offsite]\npath = {:?}\npassword_file = {:?}\n\n",
            dir.path().join("repo").display().to_string(),
            dir.path().join("pw").display().to_string()
        );
        let ws = Workspace::with_repositories(&[&a.info, &t.info], Some(&section), &offsite);
        std::mem::forget(dir);
        (ws, RepoFiles::s3(&section))
    } else {
        let offsite = s3_repository(&a.info, Some("offsite"), "sv-heal-off");
        let ws = Workspace::with_repositories(&[&a.info, &t.info], None, &offsite);
        let files = RepoFiles::local(&ws);
        (ws, files)
    };
    ws.json(&["--repository", "offsite", "init"]);
    let id = ws.json(&["backup", "--from", name])["backup_id"].as_str().unwrap().to_string();
    ws.json(&["copy", &id, "--to-repository", "offsite"]);
    let bucket = ws.backups()[0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .find(|p| p.starts_with("bucket:"))
        .unwrap();

    // The pack holding an object's data is deleted.
    let (pack, _, _) = blob_of(&files, &ws, &bucket);
    files.delete(&pack_path(&files, &pack).await).await;
    let out = ws.run(&["restore", &id, "--to", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--fallback-repository"), "{}", stderr(&out));

    // Read from the copy: a whole, verified restore; neither repository changed.
    let r = ws.json(&["restore", &id, "--to", &target, "--fallback-repository", "offsite", "--verify", "read-back"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert!(r["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("fallback repository")), "{r}");
    assert!(files.files("data").await.iter().all(|(p, _)| !p.ends_with(&pack)));
    let out = ws.run(&["--repository", "offsite", "restore", &id, "--to", &target, "--fallback-repository", "offsite"]);
    assert_eq!(out.status.code(), Some(2), "the copy cannot be its own fallback: {}", stderr(&out));

    // Healed from the copy: the check finds the loss, fetches what was lost, checks clean.
    let out = ws.run(&["check", "--repair-from", "offsite"]);
    assert_eq!(out.status.code(), Some(2), "--repair-from needs --read-data: {}", stderr(&out));
    let c = ws.json(&["check", "--read-data", "--repair-from", "offsite"]);
    assert_eq!(c["ok"], true, "{c}");
    let healed = &c["repaired"]["healed"];
    assert!(!c["repaired"]["found"].as_array().unwrap().is_empty(), "{c}");
    assert!(healed["blobs_lost"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(healed["blobs_still_missing"], 0, "{c}");
    assert!(healed["blobs_copied"].as_u64().unwrap() >= healed["blobs_lost"].as_u64().unwrap(), "{c}");
    assert_eq!(ws.backups().len(), 1, "no snapshot was added");
    let c = ws.json(&["check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let v = ws.json(&["verify", &id, "--against", &target]);
    assert_eq!(v["ok"], true, "{v}");

    // A damaged (not lost) pack is set aside, never deleted, and healed the same way.
    let (pack, offset, length) = blob_of(&files, &ws, &bucket);
    flip_blob(&files, &(pack.clone(), offset, length)).await;
    let c = ws.json(&["check", "--read-data", "--repair-from", "offsite"]);
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["repaired"]["healed"]["packs_set_aside"], serde_json::json!([pack]), "{c}");
    assert!(files.files("damaged/data").await.iter().any(|(p, _)| p.ends_with(&pack)), "set aside under damaged/data");
    let out = files.restic(&ws, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_pack_is_read_from_the_copy_and_healed_local() {
    a_lost_pack_is_read_from_the_copy_and_healed(false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_pack_is_read_from_the_copy_and_healed_s3() {
    a_lost_pack_is_read_from_the_copy_and_healed(true).await
}
