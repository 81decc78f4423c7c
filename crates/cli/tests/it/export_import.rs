//! The manual procedure's layout, out and in: `export` writes it (no key dropped, none outside
//! the directory), `import` takes it (or a hand-made one) back as a backup set.

use std::path::Path;

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::{self, Scale};

use crate::common::*;

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn assert_same_objects(a: &speechvault_sandbox::SandboxInfo, b: &speechvault_sandbox::SandboxInfo, bucket: &str) {
    let (sa, sb) = (a.object_store().unwrap(), b.object_store().unwrap());
    let la = sa.list_all(&a.bucket(bucket), "").await.unwrap();
    let lb = sb.list_all(&b.bucket(bucket), "").await.unwrap();
    assert_eq!(
        la.iter().map(|o| (&o.key, o.size)).collect::<Vec<_>>(),
        lb.iter().map(|o| (&o.key, o.size)).collect::<Vec<_>>()
    );
    for o in &la {
        assert_eq!(
            sa.get_bytes(&a.bucket(bucket), &o.key).await.unwrap().1,
            sb.get_bytes(&b.bucket(bucket), &o.key).await.unwrap().1,
            "{bucket}/{:?}",
            o.key
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_then_restore_is_byte_exact_with_every_hostile_key() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "ex-src", Scale::Tiny, 101, |o| {
            o.components = vec!["sttCustomization".into(), "sttAsync".into()]
        }),
        empty_target("ex-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    let id = ws.json(&["backup", "--from", "ex-src"])["backup_id"].as_str().unwrap().to_string();
    let dir = ws.dir.path().join("export");
    let report = ws.json(&["export", &id, "--to", dir.to_str().unwrap()]);
    // The seed's layout.
    assert!(dir.join("postgres/stt-customization.backup.sql").is_file());
    let sql = std::fs::read_to_string(dir.join("postgres/stt-async.backup.sql")).unwrap();
    assert!(sql.contains("CREATE TABLE public.jobs") && sql.contains("COPY public.jobs"), "plain SQL");
    let edge = seed::edge_case_objects();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(
        objects.iter().filter(|o| o["key"].as_str().unwrap().starts_with("customizations/edge-cases/")).count(),
        edge.len()
    );
    let escaped: Vec<&str> =
        objects.iter().filter(|o| !o["escaped"].is_null()).map(|o| o["key"].as_str().unwrap()).collect();
    for k in [
        "customizations/edge-cases/dot-dot/../escape.txt",
        "customizations/edge-cases/double//slash.txt",
        "customizations/edge-cases/trailing-slash/",
        "customizations/edge-cases/prefix",
    ] {
        assert!(escaped.contains(&k), "{k} is escaped and listed: {escaped:?}");
    }
    assert!(
        dir.join(format!(
            "minio/{}/customizations/edge-cases/prefix/child.txt",
            a.info.bucket("stt-customization-icp")
        ))
        .is_file()
    );
    assert!(
        dir.join(format!("minio/{}/customizations/edge-cases/a space.txt", a.info.bucket("stt-customization-icp")))
            .is_file()
    );
    // Nothing dropped, nothing outside the directory: every file is an object, a dump or the report.
    let files = files_under(&dir);
    assert_eq!(files.len(), objects.len() + 2 + 1, "{files:?}");
    assert!(objects.iter().all(|o| o["content_type"].is_string() || o["key"].as_str().unwrap().contains("no-type")));
    let out = ws.run(&["export", &id, "--to", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a non-empty directory is refused: {}", stderr(&out));

    // Import it back as a backup of its own, restore it, and compare with the source.
    let imported = ws.json(&["import", dir.to_str().unwrap(), "--as", "ex-src"]);
    let iid = imported["backup_id"].as_str().unwrap();
    assert_ne!(iid, id);
    let r = ws.json(&["restore", iid, "--to", "ex-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    for b in ["stt-customization-icp", "stt-async-icp"] {
        assert_same_objects(&a.info, &t.info, b).await;
    }
    let tb = t.info.object_store().unwrap();
    let (head, _) = tb
        .get_bytes(
            &t.info.bucket("stt-async-icp"),
            &a.info.object_store().unwrap().list_all(&a.info.bucket("stt-async-icp"), "").await.unwrap()[0].key,
        )
        .await
        .unwrap();
    assert_eq!(head.content_type.as_deref(), Some("audio/flac"), "content types come back from the report");
    for db in ["stt-customization", "stt-async"] {
        assert_eq!(all_rows(&a.info, db).await, all_rows(&t.info, db).await, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_made_manual_backup_imports_and_restores() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "hm-src", Scale::Tiny, 102, |o| o.components = vec!["sttAsync".into()]),
        empty_target("hm-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    // As the seed page does it: mc cp -r the bucket, pg_dump -f the database.
    let dir = ws.dir.path().join("manual");
    let bucket = a.info.bucket("stt-async-icp");
    let store = a.info.object_store().unwrap();
    for o in store.list_all(&bucket, "").await.unwrap() {
        let p = dir.join("minio").join(&bucket).join(&o.key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, store.get_bytes(&bucket, &o.key).await.unwrap().1).unwrap();
    }
    std::fs::create_dir_all(dir.join("postgres")).unwrap();
    let out = std::process::Command::new(speechvault::pg::tool("pg_dump").unwrap())
        .args(["-f"])
        .arg(dir.join("postgres/stt-async.backup.sql"))
        .env("PGHOST", &a.info.postgres.host)
        .env("PGPORT", a.info.postgres.port.to_string())
        .env("PGUSER", &a.info.postgres.user)
        .env("PGPASSFILE", &a.info.postgres.passfile)
        .env("PGDATABASE", "stt-async")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sql = std::fs::read_to_string(dir.join("postgres/stt-async.backup.sql")).unwrap();
    assert!(sql.contains("OWNER TO speech_svc"), "a real dump names its roles");
    let imported = ws.json(&["import", dir.to_str().unwrap(), "--as", "hm-src"]);
    assert!(imported["statements_dropped"].as_u64().unwrap() > 0, "the scratch server lacks speech_svc: {imported}");
    let r = ws.json(&["restore", imported["backup_id"].as_str().unwrap(), "--to", "hm-dst"]);
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert_eq!(
        r["databases"]["stt-async"]["owner"], "speech_svc",
        "the dump's table owner owns the restored database: {r}"
    );
    assert_same_objects(&a.info, &t.info, "stt-async-icp").await;
    assert_eq!(all_rows(&a.info, "stt-async").await, all_rows(&t.info, "stt-async").await);
    // A directory that is not the layout is refused, naming what is wrong.
    let bad = ws.dir.path().join("bad");
    std::fs::create_dir_all(bad.join("minio/some-other-bucket")).unwrap();
    let out = ws.run(&["import", bad.to_str().unwrap(), "--as", "hm-src"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("minio/some-other-bucket"), "{}", stderr(&out));
}
