//! A private PostgreSQL cluster built from the machine's server binaries.
//!
//! The cluster lives in `<sandbox>/pg`, listens on 127.0.0.1 only (no Unix socket), and
//! accepts only scram-sha-256 password logins. PostgreSQL refuses to run as root, so when we
//! are root every server command runs as the unprivileged `postgres` user via `runuser`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::SandboxError;

/// Where `initdb`, `pg_ctl` and `postgres` live.
pub fn find_bindir() -> Result<PathBuf, SandboxError> {
    speechvault::pg::find_bindir(&["initdb", "pg_ctl", "postgres"]).ok_or_else(|| {
        SandboxError::MissingPostgres(match std::env::var_os("SPEECHVAULT_PG_BINDIR") {
            Some(d) => format!(
                "SPEECHVAULT_PG_BINDIR={} does not hold initdb, pg_ctl and postgres",
                PathBuf::from(d).display()
            ),
            None => "initdb, pg_ctl and postgres were not found (PATH, pg_config --bindir, /usr/lib/postgresql/*/bin)"
                .into(),
        })
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> Result<(u32, u32), SandboxError> {
    let out = Command::new("id").args(["-u", "postgres"]).output();
    let gid = Command::new("id").args(["-g", "postgres"]).output();
    match (out, gid) {
        (Ok(u), Ok(g)) if u.status.success() && g.status.success() => {
            let parse = |o: &[u8]| String::from_utf8_lossy(o).trim().parse::<u32>().ok();
            match (parse(&u.stdout), parse(&g.stdout)) {
                (Some(u), Some(g)) => Ok((u, g)),
                _ => Err(SandboxError::MissingPostgres("cannot read the postgres user's ids".into())),
            }
        }
        _ => Err(SandboxError::MissingPostgres(
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

fn run(mut cmd: Command, what: &str) -> Result<String, SandboxError> {
    cmd.stdin(Stdio::null());
    let out = cmd.output().map_err(|e| SandboxError::Postgres(format!("{what}: cannot start: {e}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(SandboxError::Postgres(format!("{what} failed: {}", text.trim())));
    }
    Ok(text)
}

/// Checks that the `postgres` user can reach `dir` (every ancestor searchable), so initdb's
/// failure is explained before it happens.
fn check_reachable_by_postgres(dir: &Path) -> Result<(), SandboxError> {
    let mut p = Some(dir);
    while let Some(cur) = p {
        if let Ok(meta) = std::fs::metadata(cur)
            && meta.permissions().mode() & 0o001 == 0
        {
            return Err(SandboxError::BadInput(format!(
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
    pub fn init(&self, user: &str, password: &str) -> Result<(), SandboxError> {
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
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> Result<(), SandboxError> {
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
    pub fn start(&self) -> Result<(), SandboxError> {
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
                SandboxError::PortInUse { what: "PostgreSQL", port: self.port }
            } else {
                SandboxError::Postgres(format!("{e}\nserver log ({}):\n{}", self.log_file().display(), tail.join("\n")))
            }
        })
    }

    /// The postmaster's pid, if its pid file exists.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(crate::process_alive)
    }

    /// Stops the server: a fast shutdown, then SIGKILL if it does not go away.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        if !crate::process_alive(pid) {
            return;
        }
        let mut cmd = server_command(&self.bindir, "pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "-t", "20", "stop"]);
        if run(cmd, "pg_ctl stop").is_err() && crate::process_alive(pid) {
            // SAFETY: sending a signal to a pid we read from the cluster's own pid file.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        crate::wait_gone(pid, std::time::Duration::from_secs(10));
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
