//! `drill`: a backup restored into a scratch PostgreSQL the drill starts and removes, every
//! object read and hashed, ownership moved to a drill instance, verified, timed, recorded in
//! the repository; objectives missed and damage found end in exit 3; the installation drilled
//! is never touched.

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_restores_into_scratch_verifies_measures_and_records() {
    let a = TestInstallation::start_with(exe(), "drl-src", Scale::Tiny, 91, |o| {
        o.components = vec!["sttCustomization".into(), "sttAsync".into()]
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let id = ws.json(&["backup", "--from", "drl-src"])["backup_id"].as_str().unwrap().to_string();
    let before = all_rows(&a.info, "stt-customization").await;

    let r = ws.json(&["drill", "latest", "--installation", "drl-src", "--scratch"]);
    assert_eq!(r["backup_id"], id.as_str(), "{r}");
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["verification"]["differences_count"], 0, "{r}");
    assert!(r["verification"]["tables"].as_u64().unwrap() > 0, "{r}");
    assert!(r["verification"]["objects"].as_u64().unwrap() > 0, "{r}");
    let phases: Vec<&str> = r["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in
        ["repository open", "scratch cluster", "preflight", "database stt-customization", "ownership", "verification"]
    {
        assert!(phases.contains(&want), "phase {want}: {phases:?}");
    }
    assert!(phases.iter().any(|p| p.starts_with("bucket ")), "{phases:?}");
    let total: f64 = r["phases"].as_array().unwrap().iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    let rto = r["rto_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && total <= rto * 1.05 + 0.5, "phases {total} within the recovery time {rto}");
    assert!(r["rpo_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    // Recorded beside the backup (restic-readable), which stays whole and undamaged.
    let record = r["record"].as_str().unwrap();
    let set = &ws.backups()[0];
    assert!(set["parts"].as_array().unwrap().iter().any(|p| p == "drill"), "{set}");
    assert!(set["damaged"].is_null(), "{set}");
    let out = restic(&ws, &["snapshots", "--json", "--tag", "drill"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&record[..8]), "restic lists the record");
    // The installation drilled is untouched.
    assert_eq!(all_rows(&a.info, "stt-customization").await, before);
    let v = ws.json(&["verify", &id, "--against", "drl-src"]);
    assert_eq!(v["ok"], true, "{v}");
    // The backup still restores normally with its record in the set.
    let c = ws.json(&["check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");

    // An objective missed: verified, exit 3, the objective named.
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("{cfg}\n[installations.drl-src.objectives]\nrto = \"1h\"\nrpo = \"1s\"\n"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = ws.run(&["--json", "drill", "latest", "--installation", "drl-src"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["verified"].clone(), r["passed"].clone()), (true.into(), false.into()), "{r}");
    assert!(r["missed"][0].as_str().unwrap().contains("recovery point objective"), "{r}");
    std::fs::write(ws.config(), &cfg).unwrap();

    // The source as --to is refused, nothing changed.
    let out = ws.run(&["drill", "latest", "--installation", "drl-src", "--to", "drl-src"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Retention never forgets the newest backup a drill proved.
    let newer = ws.json(&["backup", "--from", "drl-src"])["backup_id"].as_str().unwrap().to_string();
    let f = ws.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let kept: Vec<&str> = f["sets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec![id.as_str(), newer.as_str()], "{f}");

    // A damaged backup: the drill fails with exit 3 and names the damage.
    let mut packs: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![ws.repo().join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { packs.push(e.path()) }
        }
    }
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let largest = packs.pop().unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let mid = bytes.len() / 3;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&largest, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&largest, &bytes).unwrap();
    let out = ws.run(&["--json", "drill", &id, "--installation", "drl-src"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = doc.to_string();
    assert!(said.contains("damaged") || said.contains("does not read") || said.contains("differences"), "{said}");
}
