//! The repository engine writes what restic would: the same chunk boundaries (speechvault's
//! patched chunker against restic's own), compressed where compression pays and stored as is
//! where it does not, and restic reads it all back.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use speechvault::objstore::PutOptions;
use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::{Scale, SeedObject, body_of};

use crate::common::*;

/// restic with the test repository's password, on `repo`.
fn restic_on(repo: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(which("restic").expect("restic must be installed (scripts/setup.sh installs it)"))
        .args(args)
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .env("RESTIC_FROM_PASSWORD", REPO_PASSWORD)
        .env("RESTIC_CACHE_DIR", cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "restic {args:?}: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// Data blob ids of a repository, each with whether it is stored compressed (its index entry
/// has an uncompressed length), read through restic.
fn data_blobs(repo: &std::path::Path, cache: &std::path::Path) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let ids = restic_on(repo, cache, &["list", "index"]);
    for id in ids.as_str().unwrap().split_whitespace() {
        let index = restic_on(repo, cache, &["cat", "index", id]);
        for pack in index["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                if blob["type"] == "data" {
                    let compressed = blob.get("uncompressed_length").is_some_and(|l| !l.is_null());
                    out.insert(blob["id"].as_str().unwrap().to_string(), compressed);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_like_restic_and_compresses_only_what_compresses() {
    let a = TestInstallation::start_with(exe(), "engine-src", Scale::Tiny, 51, |o| {
        o.components = vec!["baseModels".into()]
    })
    .await
    .unwrap();
    // Model weights (random bytes: no compression pays) and a large text corpus.
    let weights = speechvault_sandbox::bulk::add_large_object(&a.info, 52, 21 << 20).await.unwrap();
    let corpus = SeedObject {
        bucket: speechvault_sandbox::bulk::LARGE_BUCKET.into(),
        key: "corpora/large.txt".into(),
        size: 9 << 20,
        text: true,
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::new(),
        multipart_part: None,
        attrs: Default::default(),
    };
    let store = a.info.object_store().unwrap();
    let bucket = a.info.bucket(speechvault_sandbox::bulk::LARGE_BUCKET);
    let corpus_bytes = body_of(53, &corpus, 0, corpus.size);
    store.put_object(&bucket, &corpus.key, corpus_bytes.clone(), &PutOptions::default()).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    ws.json(&["backup", "--from", "engine-src"]);

    // restic, with our repository's chunker polynomial, backs up the same bytes from files,
    // each into a repository of its own (so each one's blobs are that file's chunks).
    let dir = test_dir("speechvault-engine-").unwrap();
    let cache = dir.path().join("cache");
    let ours = ws.repo();
    let weights_bytes = store.get_bytes(&bucket, &weights).await.unwrap().1;
    let restic_chunks = |name: &str, data: &[u8]| -> BTreeSet<String> {
        let (files, repo) = (dir.path().join(format!("{name}-files")), dir.path().join(name));
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join(name), data).unwrap();
        restic_on(&repo, &cache, &["init", "--from-repo", ours.to_str().unwrap(), "--copy-chunker-params"]);
        restic_on(&repo, &cache, &["backup", "--quiet", files.to_str().unwrap()]);
        data_blobs(&repo, &cache).into_keys().collect()
    };
    let weight_chunks = restic_chunks("weights", &weights_bytes);
    let corpus_chunks = restic_chunks("corpus", &corpus_bytes);
    // The repository's chunker polynomial is random, so the counts vary from run to run (9 MiB
    // cut at 0.5 to 8 MiB, about 1 MiB on average): several chunks each, not a fixed number.
    assert!(weight_chunks.len() >= 10 && corpus_chunks.len() >= 3, "{weight_chunks:?} {corpus_chunks:?}");

    // Every chunk restic cut is a chunk we stored: the same boundaries, byte for byte.
    let ours_blobs = data_blobs(&ours, &cache);
    let missing: Vec<&String> =
        weight_chunks.iter().chain(&corpus_chunks).filter(|id| !ours_blobs.contains_key(*id)).collect();
    assert!(missing.is_empty(), "chunks restic cut that we did not: {missing:?}");

    // Random bytes are stored as is; text is compressed.
    for id in &weight_chunks {
        assert!(!ours_blobs[id], "random data chunk {id} was compressed");
    }
    for id in &corpus_chunks {
        assert!(ours_blobs[id], "text chunk {id} was stored uncompressed");
    }
    // restic reads every blob back, both forms.
    assert_restic_check(&ws);
}
