//! Backups written by earlier releases stay restorable. `tests/fixtures/format1-repo` was
//! written by the first release (manifest format 1, no row digests, no vanished lists) from a
//! tiny sandbox (seed 21, components sttAsync and ttsCustomization).

use speechvault_sandbox::harness::test_dir;

mod common;
use common::*;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_made_by_the_first_release_restores_and_verifies() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let t = empty_target("compat-dst").await;
    let dir = test_dir("speechvault-compat-").unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixtures.join("format1-repo"), &repo);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\npath = {:?}\npassword_file = {:?}\n\n{}",
            repo.display().to_string(),
            fixtures.join("format1-repo.password").display().to_string(),
            t.info.config_section()
        ),
    )
    .unwrap();
    let run =
        |args: &[&str]| std::process::Command::new(EXE).arg("-c").arg(&cfg).arg("--json").args(args).output().unwrap();
    let out = run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sets: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sets["backups"][0]["backup_id"], "20261125T084248Z-024013", "{sets}");
    let out = run(&["restore", "latest", "--to", "compat-dst"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verify"]["ok"], true, "{r}");
    // Row content was not recorded then: counts are compared, content is "not compared".
    assert!(r["verify"]["tables"].as_array().unwrap().iter().all(|t| t["content"] == "not-compared"), "{r}");
    assert_eq!(r["buckets"]["stt-async-icp"]["objects"], 15);
}
