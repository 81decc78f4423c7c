//! Starting, finding, listing and stopping sandboxes: the registry in the sandbox home, the
//! processes, and the clean-up that leaves nothing behind on failure.

use super::*;

/// The directory that holds the registry (and, by default, the sandboxes).
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("SPEECHVAULT_SANDBOX_HOME") {
        return PathBuf::from(h);
    }
    if pgcluster::is_root() {
        // PostgreSQL runs as `postgres` and must be able to reach the data; /root is closed.
        return PathBuf::from("/var/tmp/speechvault-sandboxes");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("speechvault/sandboxes")
}

fn registry_file(home: &Path, name: &str) -> PathBuf {
    home.join(format!("{name}.sandbox"))
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(SandboxError::BadInput(format!(
            "invalid sandbox name {name:?}: use 1 to 40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

pub use speechvault::pg::cluster::{process_alive, wait_gone};

/// Creates `dir` and its missing parents. As root, the ones created here are searchable by
/// others (mode 0711, whatever the umask): the `postgres` user must reach the data directory.
fn create_dirs_reachable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => {
                if pgcluster::is_root() {
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn check_port(what: &'static str, port: u16) -> Result<u16> {
    TcpListener::bind(("127.0.0.1", port)).map_err(|_| SandboxError::PortInUse { what, port })?;
    Ok(port)
}

fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(content)?;
    Ok(())
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::StdRng::from_entropy();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// Reads the registry entry and the sandbox's own description.
pub fn load(name: &str) -> Result<SandboxInfo> {
    load_in(&home(), name)
}

/// [`load`] from the registry in `home`.
pub fn load_in(home: &Path, name: &str) -> Result<SandboxInfo> {
    validate_name(name)?;
    let reg = registry_file(home, name);
    let dir = std::fs::read_to_string(&reg).map_err(|_| SandboxError::NotFound(name.into()))?;
    let info_path = PathBuf::from(dir.trim()).join("sandbox.json");
    let raw = std::fs::read(&info_path).map_err(|_| {
        SandboxError::BadInput(format!(
            "sandbox {name:?} is incomplete ({} is missing); `speechvault sandbox down {name}` removes what is left",
            info_path.display()
        ))
    })?;
    serde_json::from_slice(&raw).map_err(|e| SandboxError::BadInput(format!("{}: {e}", info_path.display())))
}

/// Starts a sandbox as described, seeds it, and returns how to reach it with what was seeded.
/// On failure everything it started is stopped and removed again.
pub async fn up(opts: &UpOptions) -> Result<(SandboxInfo, SeedReport)> {
    validate_name(&opts.name)?;
    let profile = Profile::builtin();
    let components = if opts.components.is_empty() { profile.component_names() } else { opts.components.clone() };
    profile.select(&components)?;
    if let Some(s) = &opts.bucket_suffix
        && (s.is_empty()
            || s.len() > 30
            || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return Err(SandboxError::BadInput(format!(
            "invalid bucket suffix {s:?}: use up to 30 lower-case letters, digits or '-'"
        )));
    }
    let bindir = pgcluster::find_bindir()?;
    let pg_port = match opts.pg_port {
        Some(p) => check_port("PostgreSQL", p)?,
        None => free_port()?,
    };
    let s3_port = match (opts.s3_port, &opts.external_s3) {
        (_, Some(_)) => None,
        (Some(p), None) => Some(check_port("S3", p)?),
        (None, None) => Some(free_port()?),
    };

    let home = &opts.home;
    create_dirs_reachable(home)?;
    let reg = registry_file(home, &opts.name);
    let dir = match &opts.dir {
        Some(d) => std::path::absolute(d)?,
        None => home.join(&opts.name),
    };
    // The registry entry doubles as a lock: creating it fails if the name is taken.
    match std::fs::OpenOptions::new().create_new(true).write(true).open(&reg) {
        Ok(mut f) => f.write_all(dir.display().to_string().as_bytes())?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::read_to_string(&reg).unwrap_or_default();
            return Err(SandboxError::Exists { name: opts.name.clone(), dir: existing.trim().to_string() });
        }
        Err(e) => return Err(e.into()),
    }
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        let _ = std::fs::remove_file(&reg);
        return Err(SandboxError::BadInput(format!(
            "{} exists and is not empty; give an empty or new --dir",
            dir.display()
        )));
    }
    let mut started = Started { dir: dir.clone(), reg, pg: None, s3_pid: None, external: None, keep: false };
    let result = build(opts, &profile, &components, bindir, pg_port, s3_port, &mut started).await;
    if result.is_ok() {
        started.keep = true;
    } else {
        started.teardown().await;
    }
    result
}

/// What `up` has started so far; torn down unless `keep`.
struct Started {
    dir: PathBuf,
    reg: PathBuf,
    pg: Option<pgcluster::PgCluster>,
    s3_pid: Option<u32>,
    external: Option<(ObjectStore, Vec<String>)>,
    keep: bool,
}

impl Started {
    async fn teardown(&mut self) {
        if let Some(pid) = self.s3_pid.take() {
            stop_s3_server(pid);
        }
        if let Some(pg) = self.pg.take() {
            pg.stop();
        }
        if let Some((store, buckets)) = self.external.take() {
            delete_buckets(&store, &buckets).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.reg);
    }
}

#[allow(clippy::too_many_arguments)]
async fn build(
    opts: &UpOptions,
    profile: &Profile,
    components: &[String],
    bindir: PathBuf,
    pg_port: u16,
    s3_port: Option<u16>,
    started: &mut Started,
) -> Result<(SandboxInfo, SeedReport)> {
    let dir = started.dir.clone();
    create_dirs_reachable(&dir)?;
    // Searchable but not listable by others: the postgres user must reach dir/pg.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(if pgcluster::is_root() { 0o711 } else { 0o700 }))?;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;

    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let pg_password = random_string(32, ALNUM);
    let pw_file = secrets.join("pg-password");
    write_private(&pw_file, pg_password.as_bytes())?;
    let service_password = random_string(32, ALNUM);
    write_private(&secrets.join("pg-service-password"), service_password.as_bytes())?;
    let passfile = secrets.join("pgpass");
    write_private(
        &passfile,
        format!(
            "127.0.0.1:{pg_port}:*:{}:{pg_password}\n127.0.0.1:{pg_port}:*:{}:{service_password}\n",
            opts.pg_user,
            seed::SERVICE_ROLE
        )
        .as_bytes(),
    )?;
    let (access_key, secret_key, endpoint, region) = match &opts.external_s3 {
        Some(ext) => {
            (ext.access_key.clone(), ext.secret_key.expose().to_string(), ext.endpoint.clone(), ext.region.clone())
        }
        None => (
            format!("SV{}", random_string(18, UPPER)),
            random_string(40, ALNUM),
            format!("{}://127.0.0.1:{}", if opts.tls { "https" } else { "http" }, s3_port.unwrap_or_default()),
            "us-east-1".to_string(),
        ),
    };
    let ak_file = secrets.join("s3-access-key");
    let sk_file = secrets.join("s3-secret-key");
    write_private(&ak_file, access_key.as_bytes())?;
    write_private(&sk_file, secret_key.as_bytes())?;

    let pg = pgcluster::PgCluster { bindir: bindir.clone(), dir: dir.clone(), port: pg_port };
    pg.init(&opts.pg_user, &pg_password)?;
    let mut pg_client = None;
    let pg_ca = if opts.pg_tls || opts.pg_client_certs {
        let (cert, key) = s3server::self_signed_cert_for(&opts.pg_tls_names)?;
        let client_ca = if opts.pg_client_certs {
            let (ca, client_cert, client_key) = s3server::client_cert(&opts.pg_user)?;
            let (cp, kp) = (secrets.join("pg-client.crt"), secrets.join("pg-client.key"));
            write_private(&cp, client_cert.as_bytes())?;
            write_private(&kp, client_key.as_bytes())?;
            pg_client = Some((cp, kp));
            Some(ca)
        } else {
            None
        };
        pg.enable_tls(&cert, &key, client_ca.as_deref())?;
        let path = secrets.join("pg-tls.pem");
        write_private(&path, cert.as_bytes())?;
        Some(path)
    } else {
        None
    };
    started.pg = Some(pg.clone());
    pg.start()?;

    let mut s3_pid = None;
    let mut ca_file = None;
    if let Some(port) = s3_port {
        if opts.tls {
            let (cert, key) = s3server::self_signed_cert()?;
            let path = secrets.join("s3-tls.pem");
            write_private(&path, cert.as_bytes())?;
            write_private(&secrets.join("s3-tls.key"), key.as_bytes())?;
            ca_file = Some(path);
        }
        let pid = start_s3_server(&opts.server_exe, &dir, port, &opts.s3_behaviour)?;
        started.s3_pid = Some(pid);
        s3_pid = Some(pid);
    }

    let bucket_names: Vec<(String, String)> = profile
        .select(components)?
        .iter()
        .flat_map(|(_, c)| c.buckets.clone())
        .map(|b| {
            let actual = match &opts.bucket_suffix {
                Some(s) => format!("{b}-{s}"),
                None => b.clone(),
            };
            (b, actual)
        })
        .collect();
    let info = SandboxInfo {
        name: opts.name.clone(),
        dir: dir.clone(),
        scale: opts.scale,
        seed: opts.seed,
        components: components.to_vec(),
        created: jiff::Timestamp::now().to_string(),
        postgres: PgInfo {
            host: "127.0.0.1".into(),
            port: pg_port,
            user: opts.pg_user.clone(),
            password_file: pw_file,
            passfile,
            bindir,
            ca_file: pg_ca,
            client_cert: pg_client,
        },
        s3: S3Info {
            endpoint,
            region,
            access_key_file: ak_file,
            secret_key_file: sk_file,
            pid: s3_pid,
            bucket_suffix: opts.bucket_suffix.clone(),
            buckets: bucket_names.clone(),
            ca_file,
            behaviour: opts.s3_behaviour.clone(),
        },
    };
    write_private(&dir.join("sandbox.json"), &serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?)?;

    let store = info.object_store()?;
    let actual: Vec<String> = bucket_names.iter().map(|(_, a)| a.clone()).collect();
    if opts.external_s3.is_some() {
        for b in &actual {
            if store.bucket_exists(b).await? {
                return Err(SandboxError::BadInput(format!(
                    "bucket {b} already exists on {}; choose another --bucket-suffix",
                    store.endpoint()
                )));
            }
        }
        started.external = Some((store.clone(), actual.clone()));
    }
    let pgc = info.pg_config()?;
    seed::create_service_roles(&pgc, &service_password).await?;
    let report = if opts.seed_data {
        seed::seed_databases(&pgc, opts.seed, opts.scale, components).await?;
        seed::seed_buckets(&store, opts.seed, opts.scale, components, &bucket_names, opts.parallel).await?;
        seed::report(&pgc, &store, opts.seed, opts.scale, &info.databases(), &actual).await?
    } else {
        SeedReport { seed: opts.seed, scale: "empty".into(), ..Default::default() }
    };
    write_private(&dir.join("seed-report.json"), &serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?)?;
    Ok((info, report))
}

/// Spawns `<exe> sandbox serve-s3 --dir <dir> --port <port> ...` in its own process group and
/// waits until it accepts connections.
fn start_s3_server(exe: &Path, dir: &Path, port: u16, behaviour: &s3server::Behaviour) -> Result<u32> {
    let log = std::fs::File::create(dir.join("s3.log"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["sandbox", "serve-s3", "--dir"])
        .arg(dir)
        .args(["--port", &port.to_string()])
        .args(behaviour.args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| SandboxError::S3Server(format!("cannot start {}: {e}", exe.display())))?;
    let pid = child.id();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("s3.log")).unwrap_or_default();
            if log.contains("Address already in use") {
                return Err(SandboxError::PortInUse { what: "S3", port });
            }
            return Err(SandboxError::S3Server(format!("exited with {status}: {}", log.trim())));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // The child outlives us; dropping `child` does not kill it.
            return Ok(pid);
        }
        if start.elapsed() > Duration::from_secs(15) {
            stop_s3_server(pid);
            return Err(SandboxError::S3Server(format!("did not listen on port {port} within 15s")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is our S3 server (and not a process that reused its pid).
fn is_our_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("serve-s3"))
        .unwrap_or(false)
}

fn stop_s3_server(pid: u32) {
    let p = pid as i32;
    if !process_alive(p) || !is_our_server(pid) {
        return;
    }
    // SAFETY: plain signals to a pid verified to be our server.
    unsafe {
        libc::kill(p, libc::SIGTERM);
    }
    if !wait_gone(p, Duration::from_secs(5)) {
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
        wait_gone(p, Duration::from_secs(5));
    }
}

async fn delete_buckets(store: &ObjectStore, buckets: &[String]) {
    for b in buckets {
        if let Err(e) = store.delete_all(b, "", 32).await {
            tracing::warn!("cannot empty bucket {b}: {e}");
        }
        let _ = store.delete_bucket(b).await;
    }
}

/// Stops a sandbox's processes and deletes everything it owns: its directory, its registry
/// entry and, on an external S3 server, its buckets. Works on a crashed or half-built one.
pub async fn down(name: &str) -> Result<()> {
    down_in(&home(), name).await
}

/// [`down`] for a sandbox registered in `home`.
pub async fn down_in(home: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let reg = registry_file(home, name);
    let dir = match std::fs::read_to_string(&reg) {
        Ok(d) => PathBuf::from(d.trim()),
        Err(_) => return Err(SandboxError::NotFound(name.into())),
    };
    if let Ok(info) = load_in(home, name) {
        if let Some(pid) = info.s3.pid {
            stop_s3_server(pid);
        }
        if info.s3.pid.is_none()
            && let Ok(store) = info.object_store()
        {
            let names: Vec<String> = info.s3.buckets.iter().map(|(_, a)| a.clone()).collect();
            delete_buckets(&store, &names).await;
        }
    } else if let Ok(pid) = std::fs::read_to_string(dir.join("s3.pid"))
        && let Ok(pid) = pid.trim().parse()
    {
        stop_s3_server(pid);
    }
    // The cluster is found through its own pid file, even without sandbox.json.
    let bindir = pgcluster::find_bindir().unwrap_or_default();
    let pg = pgcluster::PgCluster { bindir, dir: dir.clone(), port: 0 };
    pg.stop();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::remove_file(&reg)?;
    Ok(())
}

/// One line of `sandbox list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub name: String,
    pub dir: PathBuf,
    /// `running`, `degraded` (a process is missing) or `broken` (no description).
    pub state: String,
    pub postgres_port: Option<u16>,
    pub s3_endpoint: Option<String>,
    pub scale: Option<Scale>,
}

/// All registered sandboxes.
pub fn list() -> Result<Vec<ListEntry>> {
    list_in(&home())
}

/// [`list`] for the registry in `home`.
pub fn list_in(home: &Path) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(home) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "sandbox") {
            continue;
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = PathBuf::from(std::fs::read_to_string(&path).unwrap_or_default().trim());
        match load_in(home, &name) {
            Ok(info) => {
                let pg = pgcluster::PgCluster { bindir: PathBuf::new(), dir: dir.clone(), port: info.postgres.port };
                let s3_ok = info.s3.pid.is_none_or(|p| process_alive(p as i32) && is_our_server(p));
                let state = if pg.is_running() && s3_ok { "running" } else { "degraded" };
                out.push(ListEntry {
                    name,
                    dir,
                    state: state.into(),
                    postgres_port: Some(info.postgres.port),
                    s3_endpoint: Some(info.s3.endpoint),
                    scale: Some(info.scale),
                });
            }
            Err(_) => out.push(ListEntry {
                name,
                dir,
                state: "broken".into(),
                postgres_port: None,
                s3_endpoint: None,
                scale: None,
            }),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
