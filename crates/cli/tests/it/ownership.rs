//! Ownership that cannot silently do nothing, and verification of row content.

use speechvault::model::instance::InstanceId;
use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::{self, Scale};

use crate::common::*;

const TO: &str = "5a5a5a5a-1b1b-4c2c-8d3d-4e4e4e4e4e4e";

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_the_backup_never_saw_or_a_mismatched_profile_is_refused_before_anything_changes() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "unk-src", Scale::Tiny, 71, |o| o.components = vec!["sttAsync".into()]),
        empty_target("unk-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "unk-src"]);
    let out = ws.run(&["restore", "--to", "unk-dst", "--from-instance", "1612345678999999", "--to-instance", TO]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("holds no rows of service instance 00000000-0000-0000-1612-345678999999"), "{err}");
    for i in seed::instances(71) {
        assert!(err.contains(i.0.as_str()), "the message lists what the backup holds: {err}");
    }
    // The backup already owning rows of the target instance would merge two instances.
    let (x, y) = (seed::instances(71)[0].0.to_string(), seed::instances(71)[1].0.to_string());
    let out = ws.run(&["restore", "--to", "unk-dst", "--from-instance", &x, "--to-instance", &y]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A profile whose rule names a column the backup does not have (another release's
    // spelling) would leave owners behind: refused up front.
    let profile = speechvault::model::profile::BUILTIN
        .replace("columns = [\"instance_id\", \"instanceid\"]", "columns = [\"instanceid\"]");
    let p = ws.dir.path().join("profile.toml");
    std::fs::write(&p, profile).unwrap();
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    let alt = ws.dir.path().join("alt.toml");
    std::fs::write(&alt, format!("profile = {:?}\n{cfg}", p.display().to_string())).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["-c", alt.to_str().unwrap(), "restore", "--to", "unk-dst", "--from-instance", &x, "--to-instance", TO])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("notification_urls.instance_id"), "{}", stderr(&out));
    let n: i64 = t
        .info
        .pg_config()
        .unwrap()
        .connect("postgres")
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM pg_database WHERE datname = 'stt-async'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_the_source_id_moves_and_none_is_left() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "spell-src", Scale::Tiny, 72, |o| o.components = vec!["sttAsync".into()]),
        empty_target("spell-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "spell-src"]);
    let numeric = seed::instances(72)[2].0.clone();
    let raw_number = numeric.as_str().replace('-', "").trim_start_matches('0').to_string();
    // The seed wrote that instance in several spellings: canonical, upper case, no hyphens, raw number.
    let src = a.info.pg_config().unwrap().connect("stt-async").await.unwrap();
    let spellings: Vec<String> = src
        .query("SELECT DISTINCT username FROM jobs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|s| InstanceId::parse(s).is_ok_and(|i| i == numeric))
        .collect();
    assert!(spellings.contains(&raw_number) && spellings.len() >= 3, "{spellings:?}");
    let total: i64 = {
        let mut n = 0;
        for s in &spellings {
            n += src.query_one("SELECT count(*) FROM jobs WHERE username = $1", &[s]).await.unwrap().get::<_, i64>(0);
        }
        n
    };
    let r = ws.json(&["restore", "--to", "spell-dst", "--from-instance", &raw_number, "--to-instance", TO]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    let jobs = r["ownership"].as_array().unwrap().iter().find(|o| o["table"] == "jobs").unwrap();
    assert_eq!(jobs["rows"], total, "{r}");
    assert_eq!(jobs["left"], 0, "{r}");
    let dst = t.info.pg_config().unwrap().connect("stt-async").await.unwrap();
    let moved: i64 = dst.query_one("SELECT count(*) FROM jobs WHERE username = $1", &[&TO]).await.unwrap().get(0);
    assert_eq!(moved, total, "written in canonical form");
    for s in &spellings {
        let left: i64 = dst.query_one("SELECT count(*) FROM jobs WHERE username = $1", &[s]).await.unwrap().get(0);
        assert_eq!(left, 0, "no row still holds {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_compares_row_content_and_maps_moved_owners_back() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "vc-src", Scale::Tiny, 73, |o| {
            o.components = vec!["sttCustomization".into(), "sttAsync".into()]
        }),
        empty_target("vc-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let id = ws.json(&["backup", "--from", "vc-src"])["backup_id"].as_str().unwrap().to_string();
    let from = seed::instances(73)[0].0.to_string();
    ws.json(&["restore", &id, "--to", "vc-dst", "--from-instance", &from, "--to-instance", TO]);
    // With the mapping, the moved rows compare equal to the backup.
    let ok = ws.json(&["verify", &id, "--against", "vc-dst", "--from-instance", &from, "--to-instance", TO]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        ok["tables"].as_array().unwrap().iter().all(|t| t["content"] == "same" || t["content"] == "not-compared"),
        "{ok}"
    );
    // Without it, the moved owners are differences.
    let out = ws.run(&["verify", &id, "--against", "vc-dst"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // A changed row with the same count is found, and the report says which side has what.
    let c = t.info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    c.batch_execute("UPDATE words SET display_as = 'changed' WHERE word_id = (SELECT min(word_id) FROM words)")
        .await
        .unwrap();
    let out = ws.run(&["--json", "verify", &id, "--against", "vc-dst", "--from-instance", &from, "--to-instance", TO]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exactly one JSON document");
    let bad: Vec<&serde_json::Value> = v["tables"].as_array().unwrap().iter().filter(|t| t["ok"] == false).collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["table"], "public.words");
    assert_eq!(bad[0]["content"], "different");
    assert_eq!(bad[0]["backup_rows"], bad[0]["installation_rows"]);
    let text = ws.run(&["verify", &id, "--against", "vc-dst", "--from-instance", &from, "--to-instance", TO]);
    let report = String::from_utf8_lossy(&text.stdout);
    assert!(report.contains("public.words: the backup has") && report.contains("content different"), "{report}");
}
