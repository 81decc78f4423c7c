//! A private PostgreSQL cluster built from the machine's server binaries: the sandbox's
//! databases, and the scratch server `import` loads plain SQL dumps into.
//!
//! The cluster lives in `<dir>/pg`, listens on 127.0.0.1 only (no Unix socket), and accepts
//! only scram-sha-256 password logins. PostgreSQL refuses to run as root, so when we are root
//! every server command runs as the unprivileged `postgres` user via `runuser`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::PgError;

/// Why a local cluster could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries are missing: {0}. Install them with `apt-get install postgresql` (Debian package postgresql-15) or set SPEECHVAULT_PG_BINDIR"
    )]
    Missing(String),
    #[error("{0}")]
    BadDir(String),
    #[error("PostgreSQL port {0} on 127.0.0.1 is already in use")]
    PortInUse(u16),
    #[error("PostgreSQL: {0}")]
    Failed(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ClusterError> for PgError {
    fn from(e: ClusterError) -> Self {
        PgError::Tool(e.to_string())
    }
}

/// Where `initdb`, `pg_ctl` and `postgres` live.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    super::find_bindir(&["initdb", "pg_ctl", "postgres"]).ok_or_else(|| {
        ClusterError::Missing(match std::env::var_os("SPEECHVAULT_PG_BINDIR") {
            Some(d) => format!(
                "SPEECHVAULT_PG_BINDIR={} does not hold initdb, pg_ctl and postgres",
                PathBuf::from(d).display()
            ),
            None => "initdb, pg_ctl and postgres were not found (PATH, pg_config --bindir, /usr/lib/postgresql/*/bin)"
                .into(),
        })
    })
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let exists =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Waits until `pid` is gone, up to `limit`.
pub fn wait_gone(pid: i32, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while process_alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> Result<(u32, u32), ClusterError> {
    let out = Command::new("id").args(["-u", "postgres"]).output();
    let gid = Command::new("id").args(["-g", "postgres"]).output();
    match (out, gid) {
        (Ok(u), Ok(g)) if u.status.success() && g.status.success() => {
            let parse = |o: &[u8]| String::from_utf8_lossy(o).trim().parse::<u32>().ok();
            match (parse(&u.stdout), parse(&g.stdout)) {
                (Some(u), Some(g)) => Ok((u, g)),
                _ => Err(ClusterError::Missing("cannot read the postgres user's ids".into())),
            }
        }
        _ => Err(ClusterError::Missing(
            "running as root needs the unprivileged `postgres` user (created by the postgresql package)".into(),
        )),
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

/// A command for a server binary, run as `postgres` when we are root.
fn server_command(bindir: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(program));
        c
    } else {
        Command::new(bindir.join(program))
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String, ClusterError> {
    cmd.stdin(Stdio::null());
    let out = cmd.output().map_err(|e| ClusterError::Failed(format!("{what}: cannot start: {e}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(ClusterError::Failed(format!("{what} failed: {}", text.trim())));
    }
    Ok(text)
}

/// Checks that the `postgres` user can reach `dir` (every ancestor searchable), so initdb's
/// failure is explained before it happens.
fn check_reachable_by_postgres(dir: &Path) -> Result<(), ClusterError> {
    let mut p = Some(dir);
    while let Some(cur) = p {
        if let Ok(meta) = std::fs::metadata(cur)
            && meta.permissions().mode() & 0o001 == 0
        {
            return Err(ClusterError::BadDir(format!(
                "PostgreSQL runs as user postgres, which cannot enter {} (mode {:o}); choose a --dir whose parents are searchable by others, e.g. under /var/tmp",
                cur.display(),
                meta.permissions().mode() & 0o7777
            )));
        }
        p = cur.parent();
    }
    Ok(())
}

/// A cluster's location and settings.
#[derive(Debug, Clone)]
pub struct PgCluster {
    pub bindir: PathBuf,
    /// The sandbox directory; the data directory is `pg` inside it.
    pub dir: PathBuf,
    pub port: u16,
}

impl PgCluster {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("pg.log")
    }

    /// Creates the cluster with superuser `user` and `password`, configured for loopback only.
    pub fn init(&self, user: &str, password: &str) -> Result<(), ClusterError> {
        let data = self.data_dir();
        std::fs::create_dir_all(&data)?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        let pwfile = self.dir.join("pg-initial-password");
        {
            let mut f = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&pwfile)?;
            f.write_all(password.as_bytes())?;
        }
        let cleanup_pw = scopeguard(pwfile.clone());
        if is_root() {
            check_reachable_by_postgres(&self.dir)?;
            let (uid, gid) = postgres_user()?;
            chown(&data, uid, gid)?;
            chown(&pwfile, uid, gid)?;
            // The log file is written by the server.
            std::fs::File::create(self.log_file())?;
            chown(&self.log_file(), uid, gid)?;
        }
        let mut cmd = server_command(&self.bindir, "initdb");
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(cmd, "initdb")?;
        drop(cleanup_pw);
        let conf = format!(
            "\n# speechvault sandbox\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\n\
             max_connections = 60\nshared_buffers = 64MB\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_wal_size = 1GB\npassword_encryption = 'scram-sha-256'\n",
            self.port
        );
        std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?.write_all(conf.as_bytes())?;
        let hba =
            "# speechvault sandbox: password logins over loopback TCP only\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        Ok(())
    }

    /// Makes the (stopped) cluster accept TLS connections only, with this certificate and key;
    /// with `client_ca`, clients must also present a certificate signed by it (whose common
    /// name is their user name).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let mut files = vec![("server.crt", cert_pem), ("server.key", key_pem)];
        if let Some(ca) = client_ca {
            files.push(("client-ca.crt", ca));
        }
        for (name, content) in files {
            let path = data.join(name);
            let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&path)?;
            f.write_all(content.as_bytes())?;
            if is_root() {
                let (uid, gid) = postgres_user()?;
                chown(&path, uid, gid)?;
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?
            .write_all(b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")?;
        let hba = match client_ca {
            None => "# speechvault sandbox: TLS password logins over loopback only\nhostssl all all 127.0.0.1/32 scram-sha-256\n".to_string(),
            Some(_) => {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(data.join("postgresql.conf"))?
                    .write_all(b"ssl_ca_file = 'client-ca.crt'\n")?;
                "# speechvault sandbox: TLS password logins with client certificates over loopback only\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
                    .to_string()
            }
        };
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), ClusterError> {
        let mut cmd = server_command(&self.bindir, "pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).arg("-l").arg(self.log_file()).args(["-w", "-t", "60", "start"]);
        // pg_ctl's children must not stay in our process group (a Ctrl-C on `sandbox up`
        // would otherwise stop the sandbox it just started).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        run(cmd, "pg_ctl start").map(|_| ()).map_err(|e| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if log.contains("Address already in use") {
                ClusterError::PortInUse(self.port)
            } else {
                ClusterError::Failed(format!("{e}\nserver log ({}):\n{}", self.log_file().display(), tail.join("\n")))
            }
        })
    }

    /// The postmaster's pid, if its pid file exists.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process_alive)
    }

    /// Stops the server: a fast shutdown, then SIGKILL if it does not go away.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        if !process_alive(pid) {
            return;
        }
        let mut cmd = server_command(&self.bindir, "pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "-t", "20", "stop"]);
        if run(cmd, "pg_ctl stop").is_err() && process_alive(pid) {
            // SAFETY: sending a signal to a pid we read from the cluster's own pid file.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        wait_gone(pid, std::time::Duration::from_secs(10));
    }
}

/// Removes a file when dropped.
struct Guard(PathBuf);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn scopeguard(p: PathBuf) -> Guard {
    Guard(p)
}

/// A throwaway cluster: started in a private temporary directory, stopped and deleted when
/// dropped. `import` loads plain SQL dumps into one.
pub struct Scratch {
    cluster: PgCluster,
    dir: Option<tempfile::TempDir>,
    pub pg: super::PgConfig,
}

impl Scratch {
    pub fn start() -> Result<Self, ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let bindir = find_bindir()?;
        // The postgres user must be able to enter it when we are root.
        let dir = tempfile::Builder::new().prefix("speechvault-scratch-").tempdir_in("/var/tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(if is_root() { 0o711 } else { 0o700 }))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let password: String = (0..32)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random::<usize>() % 36]))
            .collect();
        let cluster = PgCluster { bindir, dir: dir.path().to_path_buf(), port };
        cluster.init("speechvault", &password)?;
        cluster.start()?;
        let mut pg =
            super::PgConfig::new("127.0.0.1", port, "speechvault", Some(crate::support::secret::Secret::new(password)));
        pg.sslmode = super::SslMode::Disable;
        Ok(Self { cluster, dir: Some(dir), pg })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.cluster.stop();
        drop(self.dir.take());
    }
}
