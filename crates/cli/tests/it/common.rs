//! Helpers shared by the integration tests: a repository with a config naming the test's
//! installations, the real binary, and ways to reach into a run (pause points, fault rules).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use speechvault::model::instance::InstanceId;
use speechvault_sandbox::harness::{TestInstallation, test_dir};
use speechvault_sandbox::seed::Scale;
use speechvault_sandbox::{SandboxInfo, UpOptions};

pub const EXE: &str = env!("CARGO_BIN_EXE_speechvault");
pub const REPO_PASSWORD: &str = "correct horse battery staple";

pub fn exe() -> &'static Path {
    Path::new(EXE)
}

/// A repository and a config naming the given installations.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(installations: &[&SandboxInfo]) -> Self {
        Self::new_with(installations, "")
    }

    /// Like [`Workspace::new`], with `extra` appended to every installation's section
    /// (e.g. `s3.read_timeout_secs = 2`).
    pub fn new_with(installations: &[&SandboxInfo], extra: &str) -> Self {
        Self::build(installations, extra, None, "")
    }

    /// A workspace whose default repository is `repository` (a `[repository]` section; `None`
    /// for a local directory), with `more` (e.g. `[repositories.NAME]` sections) appended.
    pub fn with_repositories(installations: &[&SandboxInfo], repository: Option<&str>, more: &str) -> Self {
        Self::build(installations, "", repository, more)
    }

    fn build(installations: &[&SandboxInfo], extra: &str, repository: Option<&str>, more: &str) -> Self {
        let dir = test_dir("speechvault-ws-").unwrap();
        std::fs::write(dir.path().join("repo-password"), format!("{REPO_PASSWORD}\n")).unwrap();
        let mut cfg = match repository {
            Some(r) => format!("{r}\n"),
            None => format!(
                "[repository]\npath = {:?}\npassword_file = {:?}\n\n",
                dir.path().join("repo").display().to_string(),
                dir.path().join("repo-password").display().to_string()
            ),
        };
        for i in installations {
            cfg.push_str(&i.config_section());
            cfg.push_str(extra);
            cfg.push('\n');
        }
        cfg.push_str(more);
        std::fs::write(dir.path().join("speechvault.toml"), cfg).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("speechvault.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let ws = Self { dir };
        let out = ws.run(&["init"]);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        ws
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("speechvault.toml")
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.arg("-c").arg(self.config()).args(args).env_remove("SPEECHVAULT_PASSWORD");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn backups(&self) -> Vec<serde_json::Value> {
        self.json(&["snapshots"])["backups"].as_array().cloned().unwrap_or_default()
    }
}

/// Runs restic on the workspace's repository.
pub fn restic(ws: &Workspace, args: &[&str]) -> Output {
    let restic = which("restic").expect("restic must be installed (scripts/setup.sh installs it)");
    Command::new(restic)
        .args(args)
        .env("RESTIC_REPOSITORY", ws.repo())
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"))
        .output()
        .unwrap()
}

/// `restic check --read-data` passes on the workspace's repository.
pub fn assert_restic_check(ws: &Workspace) {
    let out = restic(ws, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

/// A run of the binary stopped at a pause point (see `speechvault::support::interrupt`).
pub struct Paused {
    pub child: std::process::Child,
    file: PathBuf,
}

impl Workspace {
    /// Starts `args` with the pause point `point` armed, and waits until it is reached.
    pub fn run_until(&self, point: &str, args: &[&str]) -> Paused {
        let file = self.dir.path().join(format!("pause-{}", point.replace(':', "-")));
        let _ = std::fs::remove_file(&file);
        let mut cmd = self.command(args);
        cmd.env("SPEECHVAULT_TEST_PAUSE_AT", point)
            .env("SPEECHVAULT_TEST_PAUSE_FILE", &file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let start = Instant::now();
        while !file.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!("{args:?} ended ({status}) before reaching {point}: {}", stderr(&out));
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{point} not reached within 120s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Paused { child, file }
    }
}

impl Paused {
    /// Lets the run go on and waits for it to end.
    pub fn resume(self) -> Output {
        let mut c = self.file.clone().into_os_string();
        c.push(".continue");
        std::fs::write(c, b"go").unwrap();
        self.child.wait_with_output().unwrap()
    }

    /// `kill -9`, as a crash would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal (SIGINT, SIGTERM) and waits for the run to end.
    pub fn signal(self, sig: i32) -> Output {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
        let mut c = self.file.clone().into_os_string();
        c.push(".continue");
        std::fs::write(c, b"go").unwrap();
        self.child.wait_with_output().unwrap()
    }
}

/// Installs fault rules on a sandbox's S3 server (ours only).
pub fn set_faults(info: &SandboxInfo, rules: serde_json::Value) {
    let path = info.faults_file();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&rules).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// An S3 repository section (`[repository]`, or `[repositories.NAME]` with `name`) in a
/// bucket of the test S3 server: the external one when set, else `info`'s own server.
pub fn s3_repository(info: &SandboxInfo, name: Option<&str>, bucket: &str) -> String {
    let (endpoint, region, ak, sk) = match speechvault_sandbox::harness::external_s3_from_env() {
        Some(ext) => (ext.endpoint, ext.region, ext.access_key, ext.secret_key.expose().to_string()),
        None => (
            info.s3.endpoint.clone(),
            info.s3.region.clone(),
            std::fs::read_to_string(&info.s3.access_key_file).unwrap().trim().to_string(),
            std::fs::read_to_string(&info.s3.secret_key_file).unwrap().trim().to_string(),
        ),
    };
    // A bucket of its own per test run, so runs never meet.
    let bucket = format!("{bucket}-{:08x}", rand::random::<u32>());
    let header = match name {
        Some(n) => format!("[repositories.{n}]"),
        None => "[repository]".to_string(),
    };
    format!(
        "{header}\nurl = \"s3:{endpoint}/{bucket}/speech\"\npassword = {REPO_PASSWORD:?}\ns3.region = {region:?}\ns3.access_key = {ak:?}\ns3.secret_key = {sk:?}\n\n"
    )
}

/// A repository under test: a local directory or a bucket prefix, with raw access to its files
/// (to damage them, count them) and restic pointed at it.
pub struct RepoFiles {
    pub local: Option<PathBuf>,
    pub s3: Option<(speechvault::objstore::ObjectStore, String, String)>,
    pub section: Option<String>,
}

impl RepoFiles {
    pub fn local(ws: &Workspace) -> Self {
        Self { local: Some(ws.repo()), s3: None, section: None }
    }

    /// For a `[repository]` section written by [`s3_repository`].
    pub fn s3(section: &str) -> Self {
        let get = |k: &str| {
            section
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap()
        };
        let url = get("url");
        let (endpoint, bucket, prefix) = speechvault::repository::location::parse_s3_url(&url).unwrap();
        let mut cfg = speechvault::objstore::S3Config::new(
            endpoint,
            get("s3.access_key"),
            speechvault::support::secret::Secret::new(get("s3.secret_key")),
        );
        cfg.region = get("s3.region");
        let store = speechvault::objstore::ObjectStore::new(cfg).unwrap();
        Self { local: None, s3: Some((store, bucket, prefix)), section: Some(section.to_string()) }
    }

    /// `(name, size)` of the files in `dir` (`data` includes its subdirectories).
    pub async fn files(&self, dir: &str) -> Vec<(String, u64)> {
        if let Some(root) = &self.local {
            fn walk(p: &Path, out: &mut Vec<(String, u64)>) {
                for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out);
                    } else {
                        out.push((e.path().display().to_string(), e.metadata().unwrap().len()));
                    }
                }
            }
            let mut out = Vec::new();
            walk(&root.join(dir), &mut out);
            return out;
        }
        let (store, bucket, prefix) = self.s3.as_ref().unwrap();
        store
            .list_all(bucket, &format!("{prefix}/{dir}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect()
    }

    pub async fn read(&self, name: &str) -> Vec<u8> {
        match &self.s3 {
            None => std::fs::read(name).unwrap(),
            Some((store, bucket, _)) => store.get_bytes(bucket, name).await.unwrap().1.to_vec(),
        }
    }

    pub async fn write(&self, name: &str, data: &[u8]) {
        match &self.s3 {
            None => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(name, std::fs::Permissions::from_mode(0o600));
                std::fs::write(name, data).unwrap()
            }
            Some((store, bucket, _)) => {
                store.put_object(bucket, name, bytes::Bytes::copy_from_slice(data), &Default::default()).await.unwrap();
            }
        }
    }

    pub async fn delete(&self, name: &str) {
        match &self.s3 {
            None => std::fs::remove_file(name).unwrap(),
            Some((store, bucket, _)) => store.delete_object(bucket, name).await.unwrap(),
        }
    }

    /// restic on this repository.
    pub fn restic(&self, ws: &Workspace, args: &[&str]) -> Output {
        let mut c = Command::new(which("restic").unwrap());
        c.args(args).env("RESTIC_PASSWORD", REPO_PASSWORD).env("RESTIC_CACHE_DIR", ws.dir.path().join("restic-cache"));
        match &self.section {
            None => {
                c.env("RESTIC_REPOSITORY", ws.repo());
            }
            Some(section) => {
                for (k, v) in restic_s3_env(section) {
                    c.env(k, v);
                }
            }
        }
        c.output().unwrap()
    }
}

/// A workspace on a local repository, or (`s3`) on an S3 one in a bucket of the test server.
pub fn workspace_on(s3: bool, installations: &[&SandboxInfo]) -> (Workspace, RepoFiles) {
    if !s3 {
        let ws = Workspace::new(installations);
        let files = RepoFiles::local(&ws);
        return (ws, files);
    }
    let section = s3_repository(installations[0], None, "sv-repo");
    let ws = Workspace::with_repositories(installations, Some(&section), "");
    (ws, RepoFiles::s3(&section))
}

/// Environment for the restic CLI on a repository section written by [`s3_repository`].
pub fn restic_s3_env(section: &str) -> Vec<(String, String)> {
    let get = |k: &str| {
        section
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap()
    };
    vec![
        ("RESTIC_REPOSITORY".into(), get("url")),
        ("AWS_ACCESS_KEY_ID".into(), get("s3.access_key")),
        ("AWS_SECRET_ACCESS_KEY".into(), get("s3.secret_key")),
        ("AWS_DEFAULT_REGION".into(), get("s3.region")),
    ]
}

/// Whether the tests run against an external S3 server (Garage, moto) instead of ours.
pub fn external() -> bool {
    speechvault_sandbox::harness::external_s3_from_env().is_some()
}

/// Whether the external server checks credentials (moto accepts any).
pub fn server_checks_credentials() -> bool {
    std::env::var_os("SPEECHVAULT_TEST_S3_NO_AUTH").is_none()
}

/// Rows of every table of `db` in a comparable form.
pub async fn all_rows(info: &SandboxInfo, db: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let c = info.pg_config().unwrap().connect(db).await.unwrap();
    let tables: Vec<String> = c
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for t in tables {
        out.insert(t.clone(), rows_without(&c, &t, None).await);
    }
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub async fn empty_target(name: &str) -> TestInstallation {
    TestInstallation::start_with(exe(), name, Scale::Tiny, 0, |o: &mut UpOptions| o.seed_data = false).await.unwrap()
}

/// Every row of a table as text without the given column, sorted.
pub async fn rows_without(client: &tokio_postgres::Client, table: &str, column: Option<&str>) -> Vec<String> {
    let expr = match column {
        Some(c) => format!("(to_jsonb(t) - '{c}')::text"),
        None => "to_jsonb(t)::text".to_string(),
    };
    let rows = client.query(&format!("SELECT {expr} FROM {table} t ORDER BY 1"), &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

pub async fn owner_counts(
    client: &tokio_postgres::Client,
    table: &str,
    column: &str,
) -> std::collections::BTreeMap<String, i64> {
    // Every spelling of an instance id (upper case, no hyphens, numeric) counts as that id.
    let rows = client.query(&format!("SELECT {column}::text, count(*) FROM {table} GROUP BY 1"), &[]).await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        let raw: String = r.get(0);
        let id = InstanceId::parse(&raw).map(|i| i.to_string()).unwrap_or(raw);
        *out.entry(id).or_insert(0) += r.get::<_, i64>(1);
    }
    out
}

pub fn schema_dump(info: &SandboxInfo, db: &str) -> String {
    let out = Command::new(speechvault::pg::tool("pg_dump").unwrap())
        .args(["--schema-only", "--no-password"])
        .env("PGHOST", &info.postgres.host)
        .env("PGPORT", info.postgres.port.to_string())
        .env("PGUSER", &info.postgres.user)
        .env("PGPASSFILE", &info.postgres.passfile)
        .env("PGDATABASE", db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // pg_dump 15.14+ writes a random \restrict key per run; everything else must match.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
