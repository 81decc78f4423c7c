//! Bad input, output hygiene, secrets and TLS.

use std::process::Command;

use speechvault_sandbox::harness::TestInstallation;
use speechvault_sandbox::seed::Scale;

use crate::common::*;

/// Lines of stderr that are not log lines (those start with a timestamp).
fn message_lines(o: &std::process::Output) -> Vec<String> {
    stderr(o).lines().filter(|l| !l.starts_with("20") && !l.trim().is_empty()).map(str::to_string).collect()
}

fn private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_line_naming_the_thing_the_right_exit_code_and_changes_nothing() {
    let (a, t) = tokio::join!(
        TestInstallation::start_with(exe(), "bi-src", Scale::Tiny, 81, |o| o.components = vec!["sttAsync".into()]),
        empty_target("bi-dst")
    );
    let a = a.unwrap();
    let ws = Workspace::new(&[&a.info, &t.info]);
    ws.json(&["backup", "--from", "bi-src"]);
    let base = std::fs::read_to_string(ws.config()).unwrap();
    // A login that may not create databases on the target.
    let admin = t.info.pg_config().unwrap().connect("postgres").await.unwrap();
    admin.batch_execute("CREATE ROLE limited LOGIN PASSWORD 'limited-pw' NOCREATEDB").await.unwrap();
    let pw_line = format!("postgres.password_file = {:?}", t.info.postgres.password_file.display().to_string());
    let limited = {
        // Only bi-dst's section changes: its user and password.
        let (head, tail) = base.split_at(base.find("[installations.bi-dst]").unwrap());
        let tail = tail.replacen("postgres.user = \"postgres\"", "postgres.user = \"limited\"", 1).replacen(
            &pw_line,
            "postgres.password = \"limited-pw\"",
            1,
        );
        format!("{head}{tail}")
    };
    let cases: Vec<(&str, String, Vec<&str>, i32, &str)> = vec![
        ("malformed config", "[repository\npath = 1".into(), vec!["snapshots"], 2, "line 1, column"),
        (
            "unknown setting",
            format!("{base}\n[installations.x]\ns3.endpont = \"http://h\"\n"),
            vec!["snapshots"],
            2,
            "unknown field `endpont`",
        ),
        (
            "unknown component",
            base.clone(),
            vec!["backup", "--from", "bi-src", "--components", "sttAsinc"],
            2,
            "unknown component \"sttAsinc\"",
        ),
        (
            "malformed instance id",
            base.clone(),
            vec!["restore", "--to", "bi-dst", "--from-instance", "12-34", "--to-instance", "1"],
            2,
            "malformed instance id \"12-34\"",
        ),
        (
            "missing bucket",
            base.replacen(
                "[installations.bi-src]\n",
                "[installations.bi-src]\nbuckets = { \"stt-async-icp\" = \"no-such-bucket\" }\n",
                1,
            ),
            vec!["backup", "--from", "bi-src"],
            2,
            "bucket \"no-such-bucket\"",
        ),
        (
            "bad bucket name",
            base.replacen(
                "[installations.bi-src]\n",
                "[installations.bi-src]\nbuckets = { \"stt-async-icp\" = \"../etc\" }\n",
                1,
            ),
            vec!["snapshots"],
            2,
            "invalid bucket name \"../etc\"",
        ),
        ("read-only target", limited, vec!["restore", "--to", "bi-dst"], 2, "permission denied to create database"),
    ];
    for (what, cfg, args, code, needle) in cases {
        let path = ws.dir.path().join("case.toml");
        private(&path, &cfg);
        let out = Command::new(EXE).arg("-c").arg(&path).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(&out));
        let lines = message_lines(&out);
        assert_eq!(lines.len(), 1, "{what}: one line: {lines:?}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{what}: {lines:?}");
        // --json gives exactly one document with the same error.
        let out = Command::new(EXE).arg("-c").arg(&path).arg("--json").args(&args).output().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(doc["exit_code"], code, "{what}: {doc}");
        assert!(doc["error"].as_str().unwrap().contains(needle), "{what}: {doc}");
    }
    // Nothing changed: one backup, and the target has no database.
    assert_eq!(ws.backups().len(), 1);
    let n: i64 =
        admin.query_one("SELECT count(*) FROM pg_database WHERE datname = 'stt-async'", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_the_output_quietly() {
    let a =
        TestInstallation::start_with(exe(), "pipe-src", Scale::Tiny, 82, |o| o.components = vec!["sttAsync".into()])
            .await
            .unwrap();
    let ws = Workspace::new(&[&a.info]);
    for _ in 0..2 {
        ws.json(&["backup", "--from", "pipe-src"]);
    }
    // As `speechvault snapshots | head -0`: the reader is gone before the first line.
    let mut child = ws
        .command(&["snapshots"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A backup at -vv whose stderr reader is gone: every log line fails, the backup does not.
    let mut child = ws
        .command(&["-vv", "--json", "backup", "--from", "pipe-src"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a log line aborted the backup");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["backup_id"].is_string(), "{r}");
    assert_eq!(ws.backups().len(), 3);
    // A report stdout cannot take is an error once the work is done (exit 1).
    let out = ws
        .command(&["snapshots"])
        .stdout(std::fs::File::options().write(true).open("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tools_get_a_cleared_environment() {
    let a = TestInstallation::start_with(exe(), "env-src", Scale::Tiny, 83, |o| {
        o.components = vec!["ttsCustomization".into()]
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let bin = ws.dir.path().join("spy-bin");
    std::fs::create_dir(&bin).unwrap();
    let real = speechvault::pg::tool("pg_dump").unwrap();
    let seen = ws.dir.path().join("pg_dump.env");
    let spy = bin.join("pg_dump");
    std::fs::write(
        &spy,
        format!("#!/bin/sh\nenv > {:?}\nexec {:?} \"$@\"\n", seen.display().to_string(), real.display().to_string()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ws
        .command(&["backup", "--from", "env-src"])
        .env("SPEECHVAULT_PG_BINDIR", &bin)
        .env("AWS_SECRET_ACCESS_KEY", "leaked-aws-secret")
        .env("AWS_SESSION_TOKEN", "leaked-token")
        .env("SPEECHVAULT_PASSWORD", "leaked-repo-password")
        .env("PGPASSWORD", "leaked-pg-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let env = std::fs::read_to_string(&seen).unwrap();
    for leak in
        ["leaked-aws-secret", "leaked-token", "leaked-repo-password", "leaked-pg-password", "AWS_", "SPEECHVAULT_"]
    {
        assert!(!env.contains(leak), "pg_dump saw {leak}: {env}");
    }
    assert!(env.contains("PGPASSFILE="), "{env}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_checks_the_chain_and_verify_full_also_the_host_name() {
    let a = TestInstallation::start_with(exe(), "vca", Scale::Tiny, 84, |o| {
        o.pg_tls = true;
        o.components = vec!["sttAsync".into()];
    })
    .await
    .unwrap();
    // PostgreSQL gets a certificate for another host than the one we connect to (127.0.0.1),
    // which the CA file still vouches for.
    let admin = a.info.pg_config().unwrap().connect("postgres").await.unwrap();
    let (cert, key) = speechvault_sandbox::s3server::self_signed_cert_for(&["speech-db.example".into()]).unwrap();
    let data = a.info.dir.join("pg");
    std::fs::write(data.join("server.crt"), &cert).unwrap();
    std::fs::write(data.join("server.key"), &key).unwrap();
    std::fs::write(a.info.postgres.ca_file.as_ref().unwrap(), &cert).unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ws = Workspace::new(&[&a.info]);
    let full = std::fs::read_to_string(ws.config()).unwrap();
    let out = ws.run(&["backup", "--from", "vca"]);
    assert_eq!(out.status.code(), Some(2), "verify-full: {}", stderr(&out));
    assert!(stderr(&out).to_lowercase().contains("certificate"), "{}", stderr(&out));
    let ca = ws.dir.path().join("ca.toml");
    private(&ca, &full.replace("postgres.sslmode = \"verify-full\"", "postgres.sslmode = \"verify-ca\""));
    let out = Command::new(EXE).args(["-c", ca.to_str().unwrap(), "backup", "--from", "vca"]).output().unwrap();
    assert!(out.status.success(), "verify-ca (our client and pg_dump alike): {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_presented_to_postgres() {
    let a = TestInstallation::start_with(exe(), "ccert", Scale::Tiny, 85, |o| {
        o.pg_client_certs = true;
        o.components = vec!["sttAsync".into()];
    })
    .await
    .unwrap();
    let ws = Workspace::new(&[&a.info]);
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    assert!(cfg.contains("postgres.cert_file"), "{cfg}");
    ws.json(&["backup", "--from", "ccert"]);
    // Without the certificate the server refuses the login.
    let no_cert: String = cfg
        .lines()
        .filter(|l| !l.starts_with("postgres.cert_file") && !l.starts_with("postgres.key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let p = ws.dir.path().join("nocert.toml");
    private(&p, &no_cert);
    let out = Command::new(EXE).args(["-c", p.to_str().unwrap(), "backup", "--from", "ccert"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
}

#[test]
fn a_config_others_can_read_with_inline_secrets_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[repository]\npath = {:?}\npassword = \"inline\"\n", dir.path().join("r").display().to_string()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(EXE).args(["-c", cfg.to_str().unwrap(), "init"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("holds secrets inline").count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(EXE).args(["-c", cfg.to_str().unwrap(), "snapshots"]).output().unwrap();
    assert!(!stderr(&out).contains("holds secrets inline"), "{}", stderr(&out));
}
