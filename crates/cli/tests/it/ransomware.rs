//! A backup that notices ransomware: a day of churn is normal, 60% of a bucket rewritten with
//! random bytes is not. The anomalous backup completes, is marked, is counted in the
//! metrics, and retention keeps the clean backup before it. On a server with object lock
//! (RGW) the repository is a compliance-mode immutable one, as an operator would run it.

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_day_of_churn_is_normal_and_encrypted_objects_mark_the_backup() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "ransom", Scale::Tiny, 97, |o| {
            o.components = vec!["sttCustomization".into(), "sttAsync".into()]
        }),
        empty_target("ransom-dst")
    );
    let a = a.unwrap();
    let ws = if crate::immutable::object_lock_server() {
        let repo =
            crate::immutable::immutable(&s3_repository(&a.info, None, "sv-ransom"), "repository", "compliance", "1d");
        Workspace::with_repositories(&[&a.info, &t.info], Some(&repo), "")
    } else {
        Workspace::new(&[&a.info, &t.info])
    };
    let first = ws.json(&["backup", "--from", "ransom"]);
    assert!(first["anomalies"].as_array().unwrap().is_empty(), "{first}");

    // Ten days' worth of churn at once (10% of every bucket, 10% of the rows): still normal.
    speechvault_sandbox::bulk::churn(&a.info, 5, 10, 8).await.unwrap();
    let second = ws.json(&["backup", "--from", "ransom"]);
    assert!(second["anomalies"].as_array().unwrap().is_empty(), "{second}");

    // 60% of the customization bucket rewritten with random bytes (what encryption leaves).
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket("stt-customization-icp");
    let objects = store.list_all(&bucket, "").await.unwrap();
    assert!(objects.len() >= 10, "{} objects", objects.len());
    let hit = objects.len() * 6 / 10;
    for o in objects.iter().take(hit) {
        let mut body = vec![0u8; o.size.max(16) as usize];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut body);
        store.put_object(&bucket, &o.key, bytes::Bytes::from(body), &Default::default()).await.unwrap();
    }
    // And the job results (JSON) of the async bucket: a fifth of its objects, under the
    // rewrite threshold, but text that turned into random bytes.
    let async_bucket = a.info.bucket("stt-async-icp");
    let results: Vec<_> =
        store.list_all(&async_bucket, "").await.unwrap().into_iter().filter(|o| o.key.ends_with(".json")).collect();
    assert!(results.len() >= 3, "{results:?}");
    for o in &results {
        let mut body = vec![0u8; o.size.max(16) as usize];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut body);
        store.put_object(&async_bucket, &o.key, bytes::Bytes::from(body), &Default::default()).await.unwrap();
    }
    // And 70% of the rows of one table rewritten in place (the count does not change).
    let client = a.info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    let words: i64 = client.query_one("SELECT count(*) FROM words", &[]).await.unwrap().get(0);
    assert!(words >= 50, "{words} words: fewer are not judged alone (min_rows)");
    let changed = client.execute("UPDATE words SET word = md5(word) WHERE word_id % 10 < 7", &[]).await.unwrap();
    assert!(changed >= 5, "{changed} rows");
    let metrics = ws.dir.path().join("backup.prom");
    let third = ws.json(&["backup", "--from", "ransom", "--metrics-file", metrics.to_str().unwrap()]);
    let anomalies = third["anomalies"].as_array().unwrap();
    let rewritten = anomalies
        .iter()
        .find(|x| x["measure"] == "objects_rewritten_share" && x["scope"] == "bucket:stt-customization-icp")
        .unwrap_or_else(|| panic!("{third}"));
    assert!(rewritten["value"].as_f64().unwrap() >= 0.59, "{rewritten}");
    assert_eq!(rewritten["threshold"], 0.5);
    assert!(
        anomalies.iter().any(|x| x["measure"] == "text_randomized_share" && x["scope"] == "bucket:stt-async-icp"),
        "JSON that turned random: {third}"
    );
    let rows = anomalies
        .iter()
        .find(|x| x["measure"] == "rows_changed_share" && x["scope"] == "table:stt-customization/public.words")
        .unwrap_or_else(|| panic!("rows changed in place: {third}"));
    assert!(rows["value"].as_f64().unwrap() > 0.6, "{rows}");
    assert!(!anomalies.iter().any(|x| x["measure"] == "rows_drop_share"), "{third}");
    assert!(
        !anomalies.iter().any(|x| x["measure"] == "objects_rewritten_share" && x["scope"] == "bucket:stt-async-icp"),
        "{third}"
    );
    assert!(third["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("ransomware")));
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let line =
        prom.lines().find(|l| l.starts_with("speechvault_backup_anomalies{")).unwrap_or_else(|| panic!("{prom}"));
    assert!(line.ends_with(&format!(" {}", anomalies.len())), "{line}");

    // snapshots shows the mark; text and JSON.
    let backups = ws.backups();
    let marked: Vec<bool> = backups.iter().map(|b| b["anomalous"].as_bool().unwrap()).collect();
    assert_eq!(marked, [false, false, true], "{backups:?}");
    let out = ws.run(&["snapshots"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ANOMALOUS"), "{}", String::from_utf8_lossy(&out.stdout));

    // keep_last = 1 keeps the marked backup and the clean one before it.
    let f = ws.json(&["forget", "--keep-last", "1"]);
    let kept: Vec<&str> = f["sets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| s["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [second["backup_id"].as_str().unwrap(), third["backup_id"].as_str().unwrap()], "{f}");
    // The clean backup restores what was there before the attack.
    let r = ws.json(&["restore", second["backup_id"].as_str().unwrap(), "--to", "ransom-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
}
