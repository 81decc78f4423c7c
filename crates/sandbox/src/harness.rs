//! Test support: every integration test gets installations of its own.
//!
//! [`TestInstallation::start`] brings up a sandbox in a private temporary registry and
//! directory (own ports, own data), and dropping it runs `down`, also when the test panics.
//! Tests may run in parallel. With `SPEECHVAULT_TEST_S3_ENDPOINT` (plus `..._ACCESS_KEY`,
//! `..._SECRET_KEY` and optionally `..._REGION`) set, the buckets go to that external S3
//! server instead of our own, with a unique bucket suffix per installation, so the same tests
//! run against Garage, MinIO or any other server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::{ExternalS3, SandboxInfo, Scale, SeedReport, UpOptions};

/// The external S3 server named in the environment, if any.
pub fn external_s3_from_env() -> Option<ExternalS3> {
    let endpoint = std::env::var("SPEECHVAULT_TEST_S3_ENDPOINT").ok().filter(|s| !s.is_empty())?;
    let access_key = std::env::var("SPEECHVAULT_TEST_S3_ACCESS_KEY").ok()?;
    let secret_key = std::env::var("SPEECHVAULT_TEST_S3_SECRET_KEY").ok()?;
    let region = std::env::var("SPEECHVAULT_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
    Some(ExternalS3 { endpoint, region, access_key, secret_key: speechvault::support::secret::Secret::new(secret_key) })
}

/// The behaviour our S3 server should have in every test (`SPEECHVAULT_TEST_S3_BEHAVE`:
/// `minio`, `aws`, or `garage`/unset for the default).
pub fn behaviour_from_env() -> Option<crate::s3server::Behaviour> {
    let name = std::env::var("SPEECHVAULT_TEST_S3_BEHAVE").ok()?;
    match crate::s3server::Behaviour::preset(name.trim()) {
        Some(b) => Some(b),
        None => panic!("SPEECHVAULT_TEST_S3_BEHAVE={name}: use minio, aws or garage"),
    }
}

/// A running installation owned by one test.
pub struct TestInstallation {
    pub info: SandboxInfo,
    pub report: SeedReport,
    home: PathBuf,
    _root: tempfile::TempDir,
}

/// A private temporary directory that the `postgres` user can traverse when we are root.
pub fn test_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(std::env::temp_dir())?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711))?;
    Ok(d)
}

impl TestInstallation {
    /// Starts an installation named `name` with all components; `exe` is the speechvault
    /// binary (`env!("CARGO_BIN_EXE_speechvault")` in the CLI crate's tests).
    pub async fn start(exe: &Path, name: &str, scale: Scale, seed: u64) -> crate::Result<Self> {
        Self::start_with(exe, name, scale, seed, |_| {}).await
    }

    /// Like [`TestInstallation::start`], with a hook to adjust the options.
    pub async fn start_with(
        exe: &Path,
        name: &str,
        scale: Scale,
        seed: u64,
        adjust: impl FnOnce(&mut UpOptions),
    ) -> crate::Result<Self> {
        let root = test_dir("speechvault-test-")?;
        let home = root.path().join("home");
        let mut opts = UpOptions::new(name, exe.to_path_buf());
        opts.home = home.clone();
        opts.dir = Some(root.path().join(name));
        opts.scale = scale;
        opts.seed = seed;
        opts.parallel = 8;
        if let Some(b) = behaviour_from_env() {
            opts.s3_behaviour = b;
        }
        if let Some(ext) = external_s3_from_env() {
            opts.external_s3 = Some(ext);
            let tag: u32 = rand::thread_rng().r#gen();
            opts.bucket_suffix = Some(format!("t{tag:08x}"));
        }
        adjust(&mut opts);
        let (info, report) = crate::up(&opts).await?;
        Ok(Self { info, report, home, _root: root })
    }

    /// The registry directory of this installation (for CLI calls under test).
    pub fn home(&self) -> &Path {
        &self.home
    }
}

impl Drop for TestInstallation {
    fn drop(&mut self) {
        let home = self.home.clone();
        let name = self.info.name.clone();
        // Drop may run inside a runtime (or during a panic): tear down on a fresh thread.
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(crate::down_in(&home, &name)).map_err(std::io::Error::other)
        })
        .join();
        if let Ok(Err(e)) = res {
            eprintln!("warning: tearing down test installation {}: {e}", self.info.name);
        }
    }
}
