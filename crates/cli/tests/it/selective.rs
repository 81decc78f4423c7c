//! Restoring one thing into a live installation: `ls`, `diff`, and `restore --customization`,
//! `--speaker`, `--instance` with `--dry-run` and `--replace`. Nothing outside the selection
//! may change: every test compares the whole installation before and after.

use std::collections::BTreeMap;

use speechvault_sandbox::SandboxInfo;
use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

const DATABASES: [&str; 3] = ["stt-customization", "tts-customization", "stt-async"];

/// An object as compared: SHA-256 of its bytes, content type, metadata.
type Stored = (String, Option<String>, BTreeMap<String, String>);

/// Every row of every database, and every object with its bytes, content type and metadata.
#[derive(Debug, PartialEq)]
struct State {
    rows: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    objects: BTreeMap<String, BTreeMap<String, Stored>>,
}

async fn state(info: &SandboxInfo) -> State {
    let mut rows = BTreeMap::new();
    for db in DATABASES {
        rows.insert(db.to_string(), all_rows(info, db).await);
    }
    let store = info.object_store().unwrap();
    let mut objects = BTreeMap::new();
    for bucket in ["stt-customization-icp", "stt-async-icp"] {
        let name = info.bucket(bucket);
        let mut m = BTreeMap::new();
        for o in store.list_all(&name, "").await.unwrap() {
            let (head, body) = store.get_bytes(&name, &o.key).await.unwrap();
            m.insert(o.key.clone(), (sha256_hex(&body), head.content_type, head.metadata));
        }
        objects.insert(bucket.to_string(), m);
    }
    State { rows, objects }
}

async fn delete_prefix(info: &SandboxInfo, bucket: &str, prefix: &str) -> Vec<String> {
    let store = info.object_store().unwrap();
    let name = info.bucket(bucket);
    let keys: Vec<String> = store.list_all(&name, prefix).await.unwrap().into_iter().map(|o| o.key).collect();
    for k in &keys {
        store.delete_object(&name, k).await.unwrap();
    }
    keys
}

async fn sql(info: &SandboxInfo, db: &str, statement: &str) {
    let c = info.pg_config().unwrap().connect(db).await.unwrap();
    c.batch_execute(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn first_customizations(info: &SandboxInfo) -> (String, String) {
    let c = info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    let rows =
        c.query("SELECT customization_id::text FROM customizations ORDER BY created LIMIT 2", &[]).await.unwrap();
    (rows[0].get(0), rows[1].get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_customization_comes_back_byte_exact_and_nothing_else_changes() {
    let a = TestInstallation::start(exe(), "sel-a", Scale::Tiny, 71).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let backup = ws.json(&["backup", "--from", "sel-a"])["backup_id"].as_str().unwrap().to_string();
    let original = state(&a.info).await;
    // The first customization owns the large object and the keys a file system mangles.
    let (deleted, modified) = first_customizations(&a.info).await;
    let prefix = format!("customizations/{deleted}/");
    assert!(
        original.objects["stt-customization-icp"].keys().any(|k| k.starts_with(&prefix) && k.contains("/../")),
        "the seed keeps hostile keys under the customization's own prefix"
    );

    // The customization ls shows, as the backup holds it.
    let listed = ws.json(&["ls", &backup, "--customizations"]);
    let entry = listed["customizations"].as_array().unwrap().iter().find(|c| c["id"] == deleted.as_str()).unwrap();
    assert_eq!(entry["database"], "stt-customization");
    assert_eq!(entry["fields"]["name"], "model-1");
    let objects = ws.json(&["ls", &backup, "--objects", &format!("stt-customization-icp/{prefix}")]);
    let backed_keys: Vec<String> =
        objects["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        backed_keys.len(),
        original.objects["stt-customization-icp"].keys().filter(|k| k.starts_with(&prefix)).count()
    );

    // A user deletes one customization (rows and objects) and changes another.
    sql(&a.info, "stt-customization", &format!("DELETE FROM customizations WHERE customization_id = '{deleted}'"))
        .await;
    let mut gone = delete_prefix(&a.info, "stt-customization-icp", &prefix).await;
    gone.sort();
    sql(
        &a.info,
        "stt-customization",
        &format!("UPDATE customizations SET name = 'renamed' WHERE customization_id = '{modified}'"),
    )
    .await;
    let changed_key = format!("customizations/{modified}/grammars/grammar-1.abnf");
    let store = a.info.object_store().unwrap();
    store
        .put_object(
            &a.info.bucket("stt-customization-icp"),
            &changed_key,
            bytes::Bytes::from_static(b"changed"),
            &Default::default(),
        )
        .await
        .unwrap();

    // diff reports exactly those.
    let d = ws.json(&["diff", &backup, "--against", "sel-a"]);
    let stt = &d["customizations"]["stt-customization"];
    assert_eq!(stt["removed"], serde_json::json!([deleted]));
    assert_eq!(stt["changed"], serde_json::json!([modified]));
    assert_eq!(stt["added"], serde_json::json!([]));
    assert!(d["customizations"]["tts-customization"]["changed"].as_array().unwrap().is_empty());
    let bucket = d["buckets"].as_array().unwrap().iter().find(|b| b["bucket"] == "stt-customization-icp").unwrap();
    let removed: Vec<String> =
        bucket["removed"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    assert_eq!(removed, gone);
    assert_eq!(bucket["changed"], serde_json::json!([changed_key]));
    assert_eq!(bucket["added"], serde_json::json!([]));
    for other in d["buckets"].as_array().unwrap().iter().filter(|b| b["bucket"] != "stt-customization-icp") {
        assert_eq!(other["removed"], serde_json::json!([]), "{other}");
        assert_eq!(other["changed"], serde_json::json!([]), "{other}");
    }

    let damaged = state(&a.info).await;
    // The modified one conflicts: refused, exit 2, nothing changed; its dry run says so too.
    let out = ws.run(&["restore", &backup, "--to", "sel-a", "--customization", &modified]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
    let out = ws.run(&["restore", &backup, "--to", "sel-a", "--customization", &modified, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONFLICT"));
    assert_eq!(state(&a.info).await, damaged, "a refused restore changes nothing");

    // The plan, then the restore of the deleted one.
    let plan = ws.json(&["restore", &backup, "--to", "sel-a", "--customization", &deleted, "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    let stt_plan = plan["databases"].as_array().unwrap().iter().find(|d| d["database"] == "stt-customization").unwrap();
    let tables = stt_plan["tables"].as_array().unwrap();
    let customizations = tables.iter().find(|t| t["table"] == "public.customizations").unwrap();
    assert_eq!(customizations["insert"], serde_json::json!([deleted]));
    let words = tables.iter().find(|t| t["table"] == "public.words").unwrap();
    assert!(!words["insert"].as_array().unwrap().is_empty());
    let bucket_of = |r: &serde_json::Value| {
        r["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bucket"] == "stt-customization-icp")
            .unwrap_or_else(|| panic!("{r:#}"))
            .clone()
    };
    let plan_bucket = &bucket_of(&plan);
    let mut to_write: Vec<String> =
        plan_bucket["write"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    to_write.sort();
    assert_eq!(to_write, gone, "every deleted object, hostile keys included");
    assert_eq!(state(&a.info).await, damaged, "a dry run changes nothing");

    let report = ws.json(&["restore", &backup, "--to", "sel-a", "--customization", &deleted]);
    assert_eq!(report["verified"], true);
    let mut expected = original;
    // Only the modified customization still differs from the backup.
    let now = state(&a.info).await;
    expected
        .rows
        .get_mut("stt-customization")
        .unwrap()
        .insert("customizations".into(), now.rows["stt-customization"]["customizations"].clone());
    let modified_object = now.objects["stt-customization-icp"][&changed_key].clone();
    expected.objects.get_mut("stt-customization-icp").unwrap().insert(changed_key.clone(), modified_object);
    assert_eq!(now, expected, "the deleted customization is back byte-exact; nothing else changed");
    let renamed = now.rows["stt-customization"]["customizations"].iter().filter(|r| r.contains("\"renamed\"")).count();
    assert_eq!(renamed, 1, "the modified one is left alone");

    // --replace brings the modified one back too: the installation equals the backup.
    ws.json(&["restore", &backup, "--to", "sel-a", "--customization", &modified, "--replace"]);
    let out = ws.run(&["verify", &backup, "--against", "sel-a"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    // Nothing left to restore: identical rows and objects are skipped.
    let again = ws.json(&["restore", &backup, "--to", "sel-a", "--customization", &deleted]);
    let inserted: usize = again["databases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["tables"].as_array().unwrap().iter())
        .map(|t| t["insert"].as_array().unwrap().len())
        .sum();
    assert_eq!(inserted, 0);
    assert!(again["buckets"].as_array().unwrap().iter().all(|b| b["write"].as_array().unwrap().is_empty()));
    assert!(bucket_of(&again)["identical"].as_u64().unwrap() >= gone.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_comes_back_as_another_service_instance() {
    let (a, b) =
        tokio::join!(TestInstallation::start(exe(), "tenant-src", Scale::Tiny, 72), empty_target("tenant-dst"));
    let (a, b) = (a.unwrap(), b);
    let ws = Workspace::new(&[&a.info, &b.info]);
    let backup = ws.json(&["backup", "--from", "tenant-src"])["backup_id"].as_str().unwrap().to_string();
    ws.json(&["restore", &backup, "--to", "tenant-dst"]);
    let instances = ws.json(&["ls", &backup, "--instances"]);
    let tenant = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["objects"].as_u64().unwrap() > 0 && i["rows"].as_object().unwrap().len() >= 4)
        .unwrap()
        .clone();
    let x = tenant["instance"].as_str().unwrap().to_string();
    let y = "7d3c1f0e-5a4b-4c2d-9e8f-0123456789ab";

    // One tenant's data is lost on the target: rows (in every spelling) and objects.
    let c = b.info.pg_config().unwrap().connect("stt-customization").await.unwrap();
    let ids: Vec<String> = c
        .query("SELECT customization_id::text FROM customizations WHERE owner = $1::text::uuid", &[&x])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    sql(&b.info, "stt-customization", &format!("DELETE FROM customizations WHERE owner = '{x}'")).await;
    for id in &ids {
        delete_prefix(&b.info, "stt-customization-icp", &format!("customizations/{id}/")).await;
    }
    sql(
        &b.info,
        "tts-customization",
        &format!(
            "DELETE FROM prompts WHERE speaker_id IN (SELECT speaker_id FROM speakers WHERE owner = '{x}'); \
             DELETE FROM customizations WHERE owner = '{x}'; DELETE FROM speakers WHERE owner = '{x}'"
        ),
    )
    .await;
    let canon = "CASE WHEN v ~ '^[0-9]+$' THEN lpad(v, 32, '0') ELSE lower(replace(v, '-', '')) END";
    let x_compact = x.replace('-', "");
    let a_jobs = a.info.pg_config().unwrap().connect("stt-async").await.unwrap();
    let jobs: Vec<String> = a_jobs
        .query(
            &format!("SELECT job_id FROM (SELECT job_id, username AS v FROM jobs) j WHERE {canon} = $1"),
            &[&x_compact],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!jobs.is_empty());
    sql(
        &b.info,
        "stt-async",
        &format!(
            "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM (SELECT job_id, username AS v FROM jobs) j WHERE {canon} = '{x_compact}'); \
             DELETE FROM notification_urls WHERE url_id IN (SELECT url_id FROM (SELECT url_id, instance_id AS v FROM notification_urls) n WHERE {canon} = '{x_compact}')"
        ),
    )
    .await;
    for j in &jobs {
        delete_prefix(&b.info, "stt-async-icp", &format!("jobs/{j}/")).await;
    }

    let out = ws.run(&["restore", &backup, "--to", "tenant-dst", "--instance", &x, "--to-instance", "not-an-id"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Landing as an instance that owns rows in the backup would merge two tenants: refused.
    let other = instances["instances"].as_array().unwrap().iter().find(|i| i["instance"] != x.as_str()).unwrap();
    let out = ws.run(&[
        "restore",
        &backup,
        "--to",
        "tenant-dst",
        "--instance",
        &x,
        "--to-instance",
        other["instance"].as_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = ws.json(&["restore", &backup, "--to", "tenant-dst", "--instance", &x, "--to-instance", y]);
    assert_eq!(report["verified"], true);
    // The whole target equals the backup with the tenant's rows moved to the new instance:
    // nothing else was written or deleted.
    let out = ws.run(&["verify", &backup, "--against", "tenant-dst", "--from-instance", &x, "--to-instance", y]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let owned: i64 =
        c.query_one("SELECT count(*) FROM customizations WHERE owner = $1::text::uuid", &[&y]).await.unwrap().get(0);
    assert_eq!(owned as usize, ids.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn selections_refuse_bad_input_without_changing_anything() {
    let a = TestInstallation::start_with(exe(), "sel-bad", Scale::Tiny, 73, |o| {
        o.components = vec!["ttsCustomization".into()]
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    ws.json(&["backup", "--from", "sel-bad"]);
    let before = all_rows(&a.info, "tts-customization").await;
    let speaker: String = a
        .info
        .pg_config()
        .unwrap()
        .connect("tts-customization")
        .await
        .unwrap()
        .query_one("SELECT speaker_id::text FROM speakers ORDER BY 1 LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    for args in [
        vec!["restore", "--to", "sel-bad", "--customization", "not-a-uuid"],
        vec!["restore", "--to", "sel-bad", "--speaker", &speaker, "--clean"],
        vec!["restore", "--to", "sel-bad", "--speaker", &speaker, "--data-only"],
        vec!["restore", "--to", "sel-bad", "--speaker", &speaker, "--components", "ttsCustomization"],
        vec!["restore", "--to", "sel-bad", "--customization", "0c0ffee0-0000-4000-8000-000000000000"],
        vec!["restore", "--to", "sel-bad", "--dry-run"],
        vec!["restore", "--to", "sel-bad", "--replace"],
        vec!["restore", "--to", "sel-bad", "--speaker", &speaker, "--jobs", "2"],
        vec![
            "restore",
            "--to",
            "sel-bad",
            "--speaker",
            &speaker,
            "--to-instance",
            "0c0ffee0-0000-4000-8000-000000000001",
        ],
        vec![
            "restore",
            "--to",
            "sel-bad",
            "--speaker",
            &speaker,
            "--from-instance",
            "0c0ffee0-0000-4000-8000-000000000001",
        ],
        vec!["restore", "--to", "sel-bad", "--speaker", &speaker, "--verify", "sometimes"],
    ] {
        let out = ws.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A speaker that is there already: everything identical, nothing written.
    let r = ws.json(&["restore", "--to", "sel-bad", "--speaker", &speaker]);
    let tables = r["databases"][0]["tables"].as_array().unwrap();
    assert!(
        tables
            .iter()
            .all(|t| t["insert"].as_array().unwrap().is_empty() && t["conflicts"].as_array().unwrap().is_empty())
    );
    assert!(tables.iter().any(|t| t["identical"].as_u64().unwrap() > 0));
    assert_eq!(all_rows(&a.info, "tts-customization").await, before);
}

/// Any schema: quoted names, an identity key, a table without a primary key, a composite
/// foreign key, a self-reference, types without `=` (json, point). The selection follows them all and writes exactly them.
#[tokio::test(flavor = "multi_thread")]
async fn any_schema_shape_is_followed_and_restored_exactly() {
    let a = TestInstallation::start_with(exe(), "sel-shapes", Scale::Tiny, 74, |o| {
        o.components = vec!["ttsCustomization".into()]
    })
    .await
    .unwrap();
    sql(
        &a.info,
        "tts-customization",
        r#"CREATE SCHEMA "Extra Schema";
           CREATE TABLE "Extra Schema"."Odd ""Table""" (
               "Id" int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               "Customization" uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
               "Parent" int REFERENCES "Extra Schema"."Odd ""Table""" ON DELETE CASCADE,
               "Note" text,
               "Doc" json DEFAULT '{"a": [1, 2], "b": null}',
               "At" point DEFAULT '(1.5,2)',
               "Tags" text[] DEFAULT '{x,"y z"}');
           CREATE TABLE no_key (customization_id uuid REFERENCES customizations ON DELETE CASCADE, tag text, n int);
           CREATE TABLE word_notes (customization_id uuid, word text, note text,
               FOREIGN KEY (customization_id, word) REFERENCES words ON DELETE CASCADE);
           INSERT INTO "Extra Schema"."Odd ""Table""" ("Customization", "Note")
               SELECT customization_id, E'tab\there, newline\nand \\ backslash' FROM customizations;
           INSERT INTO "Extra Schema"."Odd ""Table""" ("Customization", "Parent", "Note")
               SELECT "Customization", "Id", NULL FROM "Extra Schema"."Odd ""Table""";
           INSERT INTO no_key SELECT customization_id, 'x', 1 FROM customizations;
           INSERT INTO no_key SELECT customization_id, 'x', 1 FROM customizations;
           INSERT INTO word_notes SELECT customization_id, word, 'note ' || word FROM words;"#,
    )
    .await;
    let ws = Workspace::new(&[&a.info]);
    let backup = ws.json(&["backup", "--from", "sel-shapes"])["backup_id"].as_str().unwrap().to_string();
    let original = all_rows(&a.info, "tts-customization").await;
    let c = a.info.pg_config().unwrap().connect("tts-customization").await.unwrap();
    let id: String =
        c.query_one("SELECT customization_id::text FROM customizations ORDER BY 1 LIMIT 1", &[]).await.unwrap().get(0);
    let odd_before: Vec<String> = c
        .query(r#"SELECT row_to_json(t)::text FROM "Extra Schema"."Odd ""Table""" t ORDER BY "Id""#, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.batch_execute(&format!("DELETE FROM customizations WHERE customization_id = '{id}'")).await.unwrap();
    let report = ws.json(&["restore", &backup, "--to", "sel-shapes", "--customization", &id]);
    assert_eq!(report["verified"], true);
    assert_eq!(all_rows(&a.info, "tts-customization").await, original);
    let odd_after: Vec<String> = c
        .query(r#"SELECT row_to_json(t)::text FROM "Extra Schema"."Odd ""Table""" t ORDER BY "Id""#, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(odd_after, odd_before, "identity keys, self-references and escapes come back as they were");
    let no_key: i64 = c
        .query_one("SELECT count(*) FROM no_key WHERE customization_id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(no_key, 2, "both identical rows of a table without a key");
    // A changed row is a conflict; --replace writes it back (the identity key left as it is).
    c.batch_execute(&format!(
        r#"UPDATE "Extra Schema"."Odd ""Table""" SET "Doc" = '{{"changed": true}}' WHERE "Customization" = '{id}'"#
    ))
    .await
    .unwrap();
    let out = ws.run(&["restore", &backup, "--to", "sel-shapes", "--customization", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    ws.json(&["restore", &backup, "--to", "sel-shapes", "--customization", &id, "--replace"]);
    let replaced: Vec<String> = c
        .query(r#"SELECT row_to_json(t)::text FROM "Extra Schema"."Odd ""Table""" t ORDER BY "Id""#, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(replaced, odd_before);
    // A new row after the restore gets a fresh identity value, not one of the restored ones.
    c.batch_execute(&format!(r#"INSERT INTO "Extra Schema"."Odd ""Table""" ("Customization") VALUES ('{id}')"#))
        .await
        .unwrap();
}

/// `--preflight` and `--verify` are honoured by a selective restore: a damaged pack behind a
/// selected object passes the quick preflight (its header is intact) but not the full one,
/// which refuses before anything is written; `--verify=read-back` reads every written object
/// back.
#[tokio::test(flavor = "multi_thread")]
async fn a_selection_honours_preflight_and_verify() {
    let a = TestInstallation::start(exe(), "sel-pv", Scale::Tiny, 74).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let backup = ws.json(&["backup", "--from", "sel-pv"])["backup_id"].as_str().unwrap().to_string();
    let original = state(&a.info).await;
    let (deleted, _) = first_customizations(&a.info).await;
    let prefix = format!("customizations/{deleted}/");
    sql(&a.info, "stt-customization", &format!("DELETE FROM customizations WHERE customization_id = '{deleted}'"))
        .await;
    delete_prefix(&a.info, "stt-customization-icp", &prefix).await;
    let damaged_state = state(&a.info).await;

    // Find a pack whose damage hits objects of this customization and no database dump: flip
    // bytes in its middle and ask check which backups, databases and objects it affects.
    let mut packs = Vec::new();
    for d in std::fs::read_dir(ws.repo().join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            packs.push((f.metadata().unwrap().len(), f.path()));
        }
    }
    packs.sort();
    packs.reverse();
    use std::os::unix::fs::PermissionsExt;
    let mut flipped = None;
    for (len, pack) in packs {
        if len < 8 {
            continue;
        }
        let original_bytes = std::fs::read(&pack).unwrap();
        // Every blob of the pack damaged, its header (at the end, its length in the last four
        // bytes) intact: what the quick preflight reads still authenticates.
        let mut bytes = original_bytes.clone();
        let n = len as usize;
        let header = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let Some(data_end) = n.checked_sub(4 + header) else { continue };
        for b in &mut bytes[..data_end] {
            *b ^= 0xff;
        }
        std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&pack, &bytes).unwrap();
        let out = ws.run(&["--json", "check", "--read-data"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let hits = doc["affected"].as_array().is_some_and(|sets| {
            sets.iter().all(|s| s["databases"].as_array().unwrap().is_empty())
                && sets
                    .iter()
                    .any(|s| s["objects"].as_array().unwrap().iter().any(|o| o.as_str().unwrap().contains(&prefix)))
        });
        if hits {
            flipped = Some((pack, original_bytes));
            break;
        }
        std::fs::write(&pack, &original_bytes).unwrap();
    }
    let (pack, original_bytes) = flipped.expect("a pack holding only this customization's object data");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", &backup, "--to", "sel-pv", "--customization", &deleted];
        args.extend_from_slice(extra);
        ws.run(&args)
    };
    // The quick preflight sees intact pack headers: the dry run plans the restore.
    let out = restore(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The full one reads the data and refuses, in a dry run and for real, changing nothing.
    for extra in [&["--preflight=full", "--dry-run"][..], &["--preflight=full"][..]] {
        let out = restore(extra);
        assert_ne!(out.status.code(), Some(0), "{extra:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr(&out).contains("damaged") || stderr(&out).contains("authentic"), "{extra:?}: {}", stderr(&out));
        assert_eq!(state(&a.info).await, damaged_state, "{extra:?} changed nothing");
    }

    // With the pack repaired, the restore reads every written object back.
    std::fs::write(&pack, &original_bytes).unwrap();
    let out = restore(&["--verify=read-back", "--preflight=full", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verification"], "read-back", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(state(&a.info).await, original, "the customization is back exactly");
}
