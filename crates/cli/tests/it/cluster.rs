//! Running in the cluster: hooks around a run, metrics for Prometheus (textfile and a real
//! Pushgateway), JSON logs, the pre-flight `doctor`, the pg_dump version check, and the
//! production build (no sandbox in it; runs unprivileged with only its own directories
//! writable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::Scale;

use crate::common::*;

fn only_stt_async(o: &mut speechvault_sandbox::UpOptions) {
    o.components = vec!["sttAsync".into()];
}

/// A tool the test suite needs: on PATH, or where `scripts/check-deploy.sh` unpacks it.
fn tool(name: &str) -> PathBuf {
    which(name)
        .or_else(|| Some(Path::new("/opt/speechvault-tools/usr/bin").join(name)).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} not found: run scripts/check-deploy.sh (scripts/test.sh does) to unpack it"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP GET over loopback; returns (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A real Prometheus Pushgateway on a free loopback port, stopped on drop.
struct Pushgateway {
    child: Child,
    port: u16,
}

impl Pushgateway {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(tool("prometheus-pushgateway"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gw = Self { child, port };
        let start = Instant::now();
        while http_get(port, "/-/ready").map(|r| r.0) != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(20), "the Pushgateway did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        gw
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every speechvault series the Pushgateway exposes, parsed.
    fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.port, "/metrics").unwrap();
        assert_eq!(status, 200);
        parse_metrics(&body)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Series by name and sorted labels (`job` and `instance`, which the Pushgateway adds, left
/// out), from the text exposition format.
type Metrics = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_metrics(text: &str) -> Metrics {
    let mut out = Metrics::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with("speechvault_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here hold no comma or quote.
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            if k != "job" && k != "instance" {
                map.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        out.insert((name.to_string(), map), value.parse().unwrap());
    }
    out
}

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    *m.get(&(name.to_string(), key.clone())).unwrap_or_else(|| panic!("no {name}{key:?} in {m:#?}"))
}

fn promtool_check_metrics(path: &Path) {
    let out = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unix_time(rfc3339: &str) -> f64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_reach_a_textfile_and_a_real_pushgateway_and_match_the_report() {
    let a = TestInstallation::start_with(exe(), "metrics", Scale::Tiny, 61, only_stt_async).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let gw = Pushgateway::start();
    let file = ws.dir.path().join("textfile").join("speechvault-backup.prom");
    let file_arg = file.display().to_string();
    let url = gw.url();
    let observe = ["--metrics-file", file_arg.as_str(), "--pushgateway", url.as_str()];

    let mut args = vec!["backup", "--from", "metrics"];
    args.extend_from_slice(&observe);
    let report = ws.json(&args);
    let labels = [("installation", "metrics"), ("operation", "backup")];
    let objects: u64 = report["buckets"].as_object().unwrap().values().map(|b| b["objects"].as_u64().unwrap()).sum();
    let bytes: u64 = report["buckets"].as_object().unwrap().values().map(|b| b["bytes"].as_u64().unwrap()).sum::<u64>()
        + report["databases"].as_object().unwrap().values().map(|d| d["dump_bytes"].as_u64().unwrap()).sum::<u64>();
    let rows = report["databases"]["stt-async"]["rows"].as_f64().unwrap();
    let backup_time = unix_time(ws.backups()[0]["time"].as_str().unwrap());

    promtool_check_metrics(&file);
    let text = parse_metrics(&std::fs::read_to_string(&file).unwrap());
    let pushed = gw.metrics();
    for m in [&text, &pushed] {
        assert_eq!(value(m, "speechvault_last_run_success", &labels), 1.0);
        assert_eq!(value(m, "speechvault_backup_objects", &labels), objects as f64);
        assert_eq!(value(m, "speechvault_read_objects", &labels), objects as f64, "a first backup reads everything");
        assert_eq!(value(m, "speechvault_reused_objects", &labels), 0.0);
        assert_eq!(value(m, "speechvault_backup_bytes", &labels), bytes as f64);
        assert_eq!(value(m, "speechvault_stored_bytes", &labels), report["stored_bytes"].as_f64().unwrap());
        assert!(report["stored_bytes"].as_u64().unwrap() > 0);
        assert_eq!(value(m, "speechvault_database_rows", &[labels[0], labels[1], ("database", "stt-async")]), rows);
        assert!((value(m, "speechvault_last_success_timestamp_seconds", &labels) - backup_time).abs() < 0.01);
    }

    // Nothing changed: everything is reused, nothing read.
    let report2 = ws.json(&args);
    let second_time = unix_time(ws.backups()[1]["time"].as_str().unwrap());
    let text = parse_metrics(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(value(&text, "speechvault_read_objects", &labels), 0.0);
    assert_eq!(value(&text, "speechvault_reused_objects", &labels), objects as f64);
    assert_eq!(report2["buckets"]["stt-async-icp"]["unchanged"].as_u64().unwrap(), objects);

    // A failed run: the outcome is recorded, the last success stays that of the last backup.
    let mut failing = vec!["backup", "--from", "metrics", "--pre-hook", "exit 4"];
    failing.extend_from_slice(&observe);
    let out = ws.run(&failing);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    promtool_check_metrics(&file);
    let text = parse_metrics(&std::fs::read_to_string(&file).unwrap());
    let pushed = gw.metrics();
    for m in [&text, &pushed] {
        assert_eq!(value(m, "speechvault_last_run_success", &labels), 0.0);
        assert_eq!(value(m, "speechvault_last_run_exit_code", &labels), 1.0);
        assert!((value(m, "speechvault_last_success_timestamp_seconds", &labels) - second_time).abs() < 0.01);
        assert!(value(m, "speechvault_last_attempt_timestamp_seconds", &labels) > second_time);
    }

    // Another operation gets its own group and file: the backup's metrics stay.
    let verify_file = ws.dir.path().join("textfile").join("speechvault-verify.prom");
    let out = ws.run(&[
        "verify",
        "--against",
        "metrics",
        "--metrics-file",
        &verify_file.display().to_string(),
        "--pushgateway",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    promtool_check_metrics(&verify_file);
    let pushed = gw.metrics();
    let vlabels = [("installation", "metrics"), ("operation", "verify")];
    assert_eq!(value(&pushed, "speechvault_verification_differences", &vlabels), 0.0);
    assert_eq!(value(&pushed, "speechvault_last_run_success", &vlabels), 1.0);
    assert_eq!(value(&pushed, "speechvault_last_run_success", &labels), 0.0, "the backup group is untouched");

    // Settings that cannot work are refused before the run: no backup is made.
    let backups = ws.backups().len();
    let out = ws.run(&["backup", "--from", "metrics", "--pushgateway", "not-a-url"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = ws.run(&["backup", "--from", "metrics", "--metrics-file", "/proc/no-such-dir/backup.prom"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(ws.backups().len(), backups);

    // A Pushgateway that is not there: the run says so and fails.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = ws.run(&["verify", "--against", "metrics", "--pushgateway", &dead]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("itself succeeded") && stderr(&out).contains("Pushgateway"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_around_a_backup_and_the_post_hook_always_learns_the_outcome() {
    let a = TestInstallation::start_with(exe(), "hooks", Scale::Tiny, 62, only_stt_async).await.unwrap();
    let dir = test_dir("speechvault-hooks-").unwrap();
    let post_env = dir.path().join("post.env");
    let post = format!("env > {}", post_env.display());
    // The config's post-hook, as an argument list.
    let ws = Workspace::with_repositories(&[&a.info], None, &format!("[hooks]\npost = [\"sh\", \"-c\", {post:?}]\n"));
    let read_env = || -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(&post_env).unwrap_or_default();
        let _ = std::fs::remove_file(&post_env);
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };

    // A failing pre-hook: no backup, exit 1, the post-hook runs and is told.
    let out = ws.run(&["backup", "--from", "hooks", "--pre-hook", "echo cannot scale the front end >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pre hook failed (exit status 3)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot scale the front end"), "{}", stderr(&out));
    assert!(ws.backups().is_empty(), "the backup did not run");
    let env = read_env();
    assert_eq!(env.get("SPEECHVAULT_OUTCOME").map(String::as_str), Some("failure"), "{env:?}");
    assert_eq!(env.get("SPEECHVAULT_EXIT_CODE").map(String::as_str), Some("1"));
    assert!(env["SPEECHVAULT_ERROR"].contains("pre hook failed"), "{env:?}");

    // A pre-hook that hangs is killed at the time limit, with what it started.
    let started = Instant::now();
    let out = ws.run(&["backup", "--from", "hooks", "--pre-hook", "sleep 300 & sleep 300", "--hook-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert!(stderr(&out).contains("did not finish within 2s"), "{}", stderr(&out));
    assert!(ws.backups().is_empty());
    assert_eq!(read_env().get("SPEECHVAULT_OUTCOME").map(String::as_str), Some("failure"));

    // Hooks that succeed: the backup runs between them; secrets given to speechvault in its
    // environment do not reach the hooks.
    let pre_mark = dir.path().join("pre.mark");
    let out = ws
        .command(&[
            "--json",
            "backup",
            "--from",
            "hooks",
            "--pre-hook",
            &format!("echo \"$SPEECHVAULT_OPERATION $SPEECHVAULT_INSTALLATION\" > {}", pre_mark.display()),
        ])
        .env("AWS_SECRET_ACCESS_KEY", "hook-must-not-see-this-key")
        .env("SPEECHVAULT_PASSWORD", "hook-must-not-see-this-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(std::fs::read_to_string(&pre_mark).unwrap().trim(), "backup hooks");
    let env = read_env();
    assert_eq!(env.get("SPEECHVAULT_OUTCOME").map(String::as_str), Some("success"));
    assert_eq!(env.get("SPEECHVAULT_EXIT_CODE").map(String::as_str), Some("0"));
    assert_eq!(env.get("SPEECHVAULT_BACKUP_ID").map(String::as_str), report["backup_id"].as_str());
    assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY") && !env.contains_key("SPEECHVAULT_PASSWORD"), "{env:?}");
    assert_eq!(ws.backups().len(), 1);

    // A post-hook that fails after a good backup: exit 1, the message says both.
    let out = ws.run(&["backup", "--from", "hooks", "--post-hook", "echo cannot scale back >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the backup itself succeeded") && err.contains("post hook failed (exit status 5)"), "{err}");
    assert_eq!(ws.backups().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_healthy_installation_and_names_the_fix_for_each_fault() {
    let a = TestInstallation::start_with(exe(), "doctor", Scale::Tiny, 63, only_stt_async).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    ws.json(&["backup", "--from", "doctor"]);
    let report = ws.json(&["doctor", "--installation", "doctor"]);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["components"], serde_json::json!(["sttAsync"]));
    assert_eq!(report["repository_keys"], 1);
    assert_eq!(report["pg_dump_version"].as_str().unwrap().split('.').next(), Some("15"));
    let checks = report["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {report:#}"))["status"]
            .clone()
    };
    assert_eq!(status("repository keys"), "warn", "one key is worth a warning");
    assert_eq!(status("bucket "), "ok");
    assert_eq!(status("database stt-async"), "ok");
    assert!(report["estimate"]["last_backup_bytes"].as_u64().unwrap() > 0);
    assert!(report["buckets"][0]["objects"].as_u64().unwrap() > 0);
    let out = ws.run(&["doctor", "--installation", "doctor"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("✔ components: installed: sttAsync"));

    // Each fault: a ✘ that names the fix, exit 1.
    let failing = |ws: &Workspace, envs: &[(&str, &Path)], check: &str, fix: &str| {
        let mut c = ws.command(&["doctor", "--installation", "doctor"]);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
        let line = text
            .lines()
            .position(|l| l.contains("✘") && l.contains(check))
            .unwrap_or_else(|| panic!("no ✘ {check}: {text}"));
        let next = text.lines().nth(line + 1).unwrap_or_default();
        assert!(next.contains("fix:") && next.contains(fix), "{check}: {next}\n{text}");
    };
    let wrong_pw = Workspace::new_with(&[&a.info], "postgres.password = \"not-the-password\"\n");
    failing(&wrong_pw, &[], "PostgreSQL", "postgres.password_file");
    let no_bucket = Workspace::new_with(&[&a.info], "buckets = { \"stt-async-icp\" = \"no-such-bucket-doctor\" }\n");
    failing(&no_bucket, &[], "components", "bucket_suffix");
    let bin = ws.dir.path().join("old-tools");
    fake_old_tools(&bin);
    failing(&ws, &[("SPEECHVAULT_PG_BINDIR", &bin)], "pg_dump", "PostgreSQL 15 client tools");

    // A config that does not parse is a usage error.
    std::fs::write(ws.dir.path().join("bad.toml"), "[installations.x\n").unwrap();
    let out = Command::new(EXE)
        .args(["-c", &ws.dir.path().join("bad.toml").display().to_string(), "doctor", "--installation", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// pg_dump, pg_restore and psql that say they are PostgreSQL 14 (older than the server).
fn fake_old_tools(bin: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    for tool in ["pg_dump", "pg_restore", "psql"] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{tool} (PostgreSQL) 14.11'; exit 0; fi\nexit 1\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_older_than_the_server_is_refused_before_anything_is_written() {
    let a = TestInstallation::start_with(exe(), "oldtools", Scale::Tiny, 64, only_stt_async).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let bin = ws.dir.path().join("old-tools");
    fake_old_tools(&bin);
    let out = ws.command(&["backup", "--from", "oldtools"]).env("SPEECHVAULT_PG_BINDIR", &bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("pg_dump 14.11 is older than the PostgreSQL 15."), "{err}");
    assert!(err.contains("install the PostgreSQL 15 client tools"), "{err}");
    assert!(ws.backups().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_are_json_objects_with_log_format_json() {
    let a = TestInstallation::start_with(exe(), "jsonlog", Scale::Tiny, 65, only_stt_async).await.unwrap();
    let ws = Workspace::new(&[&a.info]);
    let out = ws.run(&["-v", "--log-format", "json", "backup", "--from", "jsonlog"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "-v logs something");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
}

/// The production build carries no sandbox: its S3 server (s3s), certificate generator
/// (rcgen) and seeder stay out of `cargo build --no-default-features`.
#[test]
fn the_production_build_leaves_the_sandbox_out() {
    let tree = |extra: &[&str]| -> String {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--locked", "-p", "speechvault-cli", "-e", "normal", "--prefix", "none"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let crates = |t: &str| -> Vec<String> {
        t.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
    };
    let production = crates(&tree(&["--no-default-features"]));
    let development = crates(&tree(&[]));
    for sandbox_only in ["speechvault-sandbox", "s3s", "rcgen"] {
        assert!(!production.iter().any(|c| c == sandbox_only), "{sandbox_only} is in the production build");
        assert!(development.iter().any(|c| c == sandbox_only), "{sandbox_only} missing from the default build");
    }
    assert!(production.iter().any(|c| c == "speechvault"));
}

/// As a container runs it: an unprivileged user (any UID), HOME not writable, the working
/// directory `/`, only the repository, the spool and the metrics directory writable.
#[tokio::test(flavor = "multi_thread")]
async fn runs_as_an_unprivileged_user_with_only_its_own_directories_writable() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test switches to the user nobody: run the suite as root (CI does)");
    let a = TestInstallation::start_with(exe(), "nobody", Scale::Tiny, 66, only_stt_async).await.unwrap();
    let root = test_dir("speechvault-nobody-").unwrap();
    let (uid, gid) = (65534u32, 65534u32);
    let chown = |p: &Path| std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Read-only for the user: the binary, the config and the secrets (0400, its own, as a
    // Secret volume with defaultMode 0400 and fsGroup gives them).
    let bin = root.path().join("speechvault");
    std::fs::copy(EXE, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secrets = root.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut section = a.info.config_section();
    for (name, from) in [
        ("accesskey", &a.info.s3.access_key_file),
        ("secretkey", &a.info.s3.secret_key_file),
        ("password", &a.info.postgres.password_file),
    ] {
        let to = secrets.join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).unwrap();
        chown(&to);
        section =
            section.replace(&format!("{:?}", from.display().to_string()), &format!("{:?}", to.display().to_string()));
    }
    let repo_password = secrets.join("repository-password");
    std::fs::write(&repo_password, "unprivileged but secret\n").unwrap();
    std::fs::set_permissions(&repo_password, std::fs::Permissions::from_mode(0o400)).unwrap();
    chown(&repo_password);
    // Writable: the repository, the spool, the metrics.
    let var = root.path().join("var");
    for d in ["repository", "tmp", "metrics"] {
        std::fs::create_dir_all(var.join(d)).unwrap();
        chown(&var.join(d));
    }
    let config = root.path().join("speechvault.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = {:?}\npassword_file = {:?}\n\n{section}",
            var.join("repository/repo").display().to_string(),
            repo_password.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let run = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&bin)
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("TMPDIR", var.join("tmp"))
            .env("SPEECHVAULT_TEMP_DIR", var.join("tmp"))
            .current_dir("/")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} as nobody: {}", stderr(&out));
        out
    };
    run(&["init"]);
    let metrics = var.join("metrics/backup.prom");
    let out = run(&["--json", "backup", "--from", "nobody", "--metrics-file", &metrics.display().to_string()]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["backup_id"].is_string());
    assert!(std::fs::read_to_string(&metrics).unwrap().contains("speechvault_last_run_success"));
    let out = run(&["--json", "snapshots"]);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps["backups"][0]["complete"], true);
    use std::os::unix::fs::MetadataExt;
    let config_file = var.join("repository/repo/config");
    assert_eq!(
        std::fs::metadata(&config_file).unwrap().uid(),
        uid,
        "the repository was written by the unprivileged user"
    );
    // What it wrote is in its directories and nowhere else it could write.
    for shared in ["/tmp", "/var/tmp", "/dev/shm"] {
        let out = Command::new("find").args([shared, "-xdev", "-user", "nobody"]).output().unwrap();
        let strays: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !Path::new(l).starts_with(root.path()))
            .map(str::to_string)
            .collect();
        assert!(strays.is_empty(), "files left by the unprivileged run outside its directories: {strays:?}");
    }
    let spool: Vec<_> = std::fs::read_dir(var.join("tmp")).unwrap().collect();
    assert!(spool.is_empty(), "the spool is cleaned up: {spool:?}");
}

/// The configs the manifests ship parse as speechvault configs (names, keys and sections as
/// the loader knows them), and name the Secrets' files by their own key names.
#[test]
fn the_shipped_cluster_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/overlays");
    let mut seen = 0;
    for overlay in std::fs::read_dir(&root).unwrap().flatten() {
        // The maintenance CronJob's config (immutable-repository) names no installation.
        let maintenance = overlay.path().join("maintenance.toml");
        if maintenance.is_file() {
            let text = std::fs::read_to_string(&maintenance).unwrap();
            let cfg = speechvault::model::config::Config::parse(&text, &maintenance)
                .unwrap_or_else(|e| panic!("{}: {e}", maintenance.display()));
            assert!(cfg.file.installations.is_empty() && text.contains("s3.maintenance_access_key_file"), "{text}");
        }
        let path = overlay.path().join("speechvault.toml");
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = speechvault::model::config::Config::parse(&text, &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(cfg.file.installations.contains_key("speech"), "{}", path.display());
        assert!(
            text.contains("/accesskey\"") && text.contains("/secretkey\"") && text.contains("/password\""),
            "{text}"
        );
        seen += 1;
    }
    assert!(seen >= 2, "the local-volume and s3-repository overlays each ship a config");
}
