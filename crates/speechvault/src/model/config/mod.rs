//! Configuration: the repository and the installations, from TOML plus the environment.
//!
//! Precedence for every setting: the config file's value, then its `*_file` form (a
//! Kubernetes-secret-style file), then the standard environment variable (`AWS_*`, `PG*`).
//! Secrets are read into [`Secret`]s and never printed.

use crate::support::text::{one_line, toml_position};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::profile::Profile;
use crate::objstore::S3Config;
use crate::pg::PgConfig;
use crate::support::secret::{Secret, read_secret_file};

pub(crate) mod anomalies;
pub(crate) mod repository;
pub(crate) mod retention;

pub use repository::{RepositoryFile, RepositorySettings};
pub use retention::{Retention, RetentionFile};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}{at}: {message}")]
    Parse { path: PathBuf, at: String, message: String },
    #[error("cannot read secret file {path} ({what}): {source}")]
    SecretFile { what: String, path: PathBuf, source: std::io::Error },
    #[error("installation {name:?}: {reason}")]
    Installation { name: String, reason: String },
    #[error("no installation named {name:?} in the config (known: {known})")]
    UnknownInstallation { name: String, known: String },
    #[error("repository: {0}")]
    Repository(String),
    #[error("{what} is set twice, inline and as a file ({path}): keep one of them")]
    TwoSecrets { what: String, path: PathBuf },
    #[error(transparent)]
    Profile(#[from] crate::model::profile::ProfileError),
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub repository: Option<RepositoryFile>,
    /// Further repositories (copies: off-site, another cloud), by name.
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryFile>,
    /// Default retention for every installation.
    #[serde(default)]
    pub retention: Option<RetentionFile>,
    /// A profile file replacing the built-in one.
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// Commands run before and after backup, restore, verify, forget and check.
    #[serde(default)]
    pub hooks: crate::observe::hooks::HookSettings,
    /// When a backup is marked as looking like ransomware happened, for every installation.
    #[serde(default)]
    pub anomalies: Option<anomalies::AnomaliesFile>,
    #[serde(default)]
    pub installations: BTreeMap<String, InstallationFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationFile {
    /// Helm release name; with `namespace`, derives the in-cluster service names.
    pub release: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub s3: S3File,
    #[serde(default)]
    pub postgres: PgFile,
    /// Appended to every profile bucket name (`stt-async-icp-<suffix>`).
    pub bucket_suffix: Option<String>,
    /// Explicit bucket names by profile name; wins over `bucket_suffix`.
    #[serde(default)]
    pub buckets: BTreeMap<String, String>,
    /// Retention for this installation's backups, over the defaults.
    #[serde(default)]
    pub retention: Option<RetentionFile>,
    /// Anomaly thresholds for this installation, over `[anomalies]`.
    #[serde(default)]
    pub anomalies: Option<anomalies::AnomaliesFile>,
    /// Recovery objectives a drill is held to (`rto = "2h"`, `rpo = "26h"`).
    #[serde(default)]
    pub objectives: Option<ObjectivesFile>,
}

/// `[installations.NAME.objectives]`: durations as `30s`, `10m`, `2h`, `7d`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesFile {
    pub rto: Option<String>,
    pub rpo: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3File {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub access_key_file: Option<PathBuf>,
    pub secret_key: Option<Secret>,
    pub secret_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    /// Seconds without progress before a request is given up (default 60).
    pub read_timeout_secs: Option<u64>,
    /// Attempts per request for transient failures (default 5).
    pub max_attempts: Option<u32>,
    /// Requests in flight at most, whatever --parallel says (a production server's share).
    pub max_requests: Option<usize>,
    /// Read rate at most when backing up from this installation (`50MiB/s`).
    pub limit_rate: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgFile {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// libpq's sslmode: disable, prefer (default), require, verify-ca, verify-full.
    pub sslmode: Option<String>,
    /// CA certificates for verify-ca / verify-full.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Connections open at once at most, speechvault's and its tools' (default 4).
    pub max_connections: Option<usize>,
}

/// One Speech installation, resolved: how to reach its two datastores.
#[derive(Debug, Clone)]
pub struct Installation {
    pub name: String,
    pub s3: S3Config,
    pub postgres: PgConfig,
    /// Profile bucket name -> bucket name on this installation's server.
    pub buckets: BTreeMap<String, String>,
    pub bucket_suffix: Option<String>,
    /// PostgreSQL connections open at once at most (`None`: the command's default).
    pub pg_connections: Option<usize>,
}

impl Installation {
    /// The bucket name on this installation for a profile bucket.
    pub fn bucket(&self, profile_name: &str) -> String {
        if let Some(b) = self.buckets.get(profile_name) {
            return b.clone();
        }
        match &self.bucket_suffix {
            Some(s) => format!("{profile_name}-{s}"),
            None => profile_name.to_string(),
        }
    }
}

/// A loaded config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub file: ConfigFile,
    pub origin: Option<PathBuf>,
}

/// [`secret_from`] for a secret only the config sets (the repository password): set both
/// inline and as a file, it is refused rather than one silently chosen. (An installation's
/// inline value can come from the environment, which rightly overrides a file.)
pub(crate) fn one_secret(
    what: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if let (Some(_), Some(path)) = (inline, file) {
        return Err(ConfigError::TwoSecrets { what: what.into(), path: path.clone() });
    }
    secret_from(what, inline, file)
}

pub(crate) fn secret_from(
    what: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    if let Some(p) = file {
        return read_secret_file(p).map(Some).map_err(|source| ConfigError::SecretFile {
            what: what.into(),
            path: p.clone(),
            source,
        });
    }
    Ok(None)
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Looks a password up in a `.pgpass` file (`host:port:db:user:password`, `*` wildcards).
/// Like libpq, a file that others can read is ignored, with a warning.
pub fn pgpass_lookup(path: &Path, host: &str, port: u16, user: &str) -> Option<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access and is ignored (as libpq does); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&fields[0], host) && m(&fields[1], &port.to_string()) && m(&fields[3], user) {
            return Some(Secret::new(fields[4].clone()));
        }
    }
    None
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let cfg = Self::parse(&text, path)?;
        warn_if_readable_secrets(path, &cfg.file);
        Ok(cfg)
    }

    /// Parses a config's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            at: toml_position(text, &e),
            message: one_line(e.message()),
        })?;
        for (name, inst) in &file.installations {
            validate_installation_names(name, inst)?;
        }
        Ok(Self { file, origin: Some(path.into()) })
    }

    /// The profile in force: the config's, or the built-in one.
    pub fn profile(&self) -> Result<Profile, ConfigError> {
        match &self.file.profile {
            Some(p) => Ok(Profile::load(p)?),
            None => Ok(Profile::builtin()),
        }
    }

    /// Resolves an installation from the config file, filling gaps from the environment.
    pub fn installation(&self, name: &str) -> Result<Installation, ConfigError> {
        let f = self.file.installations.get(name).ok_or_else(|| ConfigError::UnknownInstallation {
            name: name.into(),
            known: if self.file.installations.is_empty() {
                "none".into()
            } else {
                self.file.installations.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
        resolve(name, f)
    }
}

/// Builds an [`Installation`] from its file section and the environment.
pub fn resolve(name: &str, f: &InstallationFile) -> Result<Installation, ConfigError> {
    resolve_with(name, f, &env)
}

/// [`resolve`] with the environment given as a lookup (tests pass their own).
pub fn resolve_with(
    name: &str,
    f: &InstallationFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Installation, ConfigError> {
    let bad = |reason: &str| ConfigError::Installation { name: name.into(), reason: reason.into() };
    let derived_s3 = f.release.as_ref().map(|r| match &f.namespace {
        Some(ns) => format!("https://{r}-ibm-minio-svc.{ns}:9000"),
        None => format!("https://{r}-ibm-minio-svc:9000"),
    });
    let derived_pg = f.release.as_ref().map(|r| match &f.namespace {
        Some(ns) => format!("{r}-ibm-postgresql-proxy-svc.{ns}"),
        None => format!("{r}-ibm-postgresql-proxy-svc"),
    });
    let endpoint =
        f.s3.endpoint
            .clone()
            .or(derived_s3)
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .ok_or_else(|| bad("no S3 endpoint: set s3.endpoint, release, or AWS_ENDPOINT_URL"))?;
    let keys_from_env = f.s3.access_key.is_none() && f.s3.access_key_file.is_none();
    let access_key = match (&f.s3.access_key, &f.s3.access_key_file) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(p)) => Some(
            read_secret_file(p)
                .map_err(|source| ConfigError::SecretFile { what: "S3 access key".into(), path: p.clone(), source })?
                .expose()
                .to_string(),
        ),
        (None, None) => env("AWS_ACCESS_KEY_ID"),
    }
    .ok_or_else(|| bad("no S3 access key: set s3.access_key_file or AWS_ACCESS_KEY_ID"))?;
    let secret_key = secret_from("S3 secret key", &f.s3.secret_key, &f.s3.secret_key_file)?
        .or_else(|| env("AWS_SECRET_ACCESS_KEY").map(Secret::new))
        .ok_or_else(|| bad("no S3 secret key: set s3.secret_key_file or AWS_SECRET_ACCESS_KEY"))?;
    let mut s3 = S3Config::new(endpoint, access_key, secret_key);
    s3.region =
        f.s3.region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
    // A session token belongs to the keys it was issued with: only with keys from the environment.
    if keys_from_env {
        s3.session_token = env("AWS_SESSION_TOKEN").map(Secret::new);
    }
    if let Some(secs) = f.s3.read_timeout_secs {
        s3.read_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    if let Some(n) = f.s3.max_attempts {
        s3.max_attempts = n.max(1);
    }
    s3.limits.max_requests = f.s3.max_requests.map(|n| n.max(1));
    if let Some(rate) = &f.s3.limit_rate {
        s3.limits.read_rate =
            Some(crate::support::units::parse_rate(rate).map_err(|e| bad(&format!("s3.limit_rate: {e}")))?);
    }
    // AWS_CA_BUNDLE is the standard way to name extra CAs; it only matters for https.
    s3.ca_file = f.s3.ca_file.clone().or_else(|| env("AWS_CA_BUNDLE").map(PathBuf::from));
    s3.insecure = f.s3.insecure;

    let host = f
        .postgres
        .host
        .clone()
        .or(derived_pg)
        .or_else(|| env("PGHOST"))
        .ok_or_else(|| bad("no PostgreSQL host: set postgres.host, release, or PGHOST"))?;
    let port = match f.postgres.port {
        Some(p) => p,
        None => match env("PGPORT") {
            Some(p) => p.parse().map_err(|_| bad(&format!("PGPORT={p} is not a port number")))?,
            None => 5432,
        },
    };
    let user = f
        .postgres
        .user
        .clone()
        .or_else(|| env("PGUSER"))
        .ok_or_else(|| bad("no PostgreSQL user: set postgres.user or PGUSER"))?;
    let password = secret_from("PostgreSQL password", &f.postgres.password, &f.postgres.password_file)?
        .or_else(|| env("PGPASSWORD").map(Secret::new))
        .or_else(|| {
            let passfile = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
            pgpass_lookup(&passfile, &host, port, &user)
        });
    let mut postgres = PgConfig::new(host, port, user, password);
    if let Some(mode) = f.postgres.sslmode.clone().or_else(|| env("PGSSLMODE")) {
        postgres.sslmode = crate::pg::SslMode::parse(&mode).ok_or_else(|| {
            bad(&format!("sslmode {mode:?} is not one of disable, prefer, require, verify-ca, verify-full"))
        })?;
    }
    postgres.ca_file = f.postgres.ca_file.clone().or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
    let cert = f.postgres.cert_file.clone().or_else(|| env("PGSSLCERT").map(PathBuf::from));
    let key = f.postgres.key_file.clone().or_else(|| env("PGSSLKEY").map(PathBuf::from));
    postgres.client_cert = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(crate::tls::ClientCert { cert_file, key_file }),
        (None, None) => None,
        _ => return Err(bad("postgres.cert_file and postgres.key_file go together")),
    };
    Ok(Installation {
        name: name.into(),
        s3,
        postgres,
        buckets: f.buckets.clone(),
        bucket_suffix: f.bucket_suffix.clone(),
        pg_connections: f.postgres.max_connections.map(|n| n.max(2)),
    })
}

/// Bucket names and suffixes must be valid S3 bucket names before they touch a request or a path.
fn validate_installation_names(name: &str, f: &InstallationFile) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::Installation { name: name.into(), reason };
    if let Some(s) = &f.bucket_suffix
        && (s.is_empty() || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
    {
        return Err(bad(format!("bucket_suffix {s:?} may hold only lower-case letters, digits, '-' and '.'")));
    }
    for (profile_name, actual) in &f.buckets {
        crate::objstore::validate_bucket_name(actual).map_err(|e| bad(format!("buckets.{profile_name}: {e}")))?;
    }
    Ok(())
}

/// Warns once when a config file holding inline secrets can be read by others.
fn warn_if_readable_secrets(path: &Path, f: &ConfigFile) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Once = std::sync::Once::new();
    let inline = f.repository.as_ref().is_some_and(|r| r.password.is_some())
        || f.installations.values().any(|i| i.s3.secret_key.is_some() || i.postgres.password.is_some());
    let Ok(meta) = std::fs::metadata(path) else { return };
    if inline && meta.permissions().mode() & 0o077 != 0 {
        WARNED.call_once(|| {
            tracing::warn!(
                "config {} holds secrets inline and others can read it: run `chmod 600 {}`, or move the secrets to *_file settings",
                path.display(),
                path.display()
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_set_inline_and_as_a_file_is_refused() {
        let file = Some(PathBuf::from("/run/secrets/pw"));
        let inline = Some(Secret::new("x".to_string()));
        let err = one_secret("repository password", &inline, &file).unwrap_err();
        assert!(matches!(err, ConfigError::TwoSecrets { .. }), "{err}");
        assert!(err.to_string().contains("keep one"), "{err}");
        assert!(one_secret("p", &inline, &None).unwrap().is_some());
    }

    #[test]
    fn reads_secrets_from_files_and_derives_service_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "AKIA\n").unwrap();
        std::fs::write(dir.path().join("sk"), "s3cr3t\n").unwrap();
        std::fs::write(dir.path().join("pw"), "pgpw\n").unwrap();
        let text = format!(
            r#"
[repository]
path = "/tmp/repo"
password = "x"
[installations.prod]
release = "speech"
namespace = "zen"
s3.access_key_file = "{0}/ak"
s3.secret_key_file = "{0}/sk"
postgres.user = "stolon"
postgres.password_file = "{0}/pw"
bucket_suffix = "ibm-speech-zen"
"#,
            dir.path().display()
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path).unwrap();
        let inst = cfg.installation("prod").unwrap();
        assert_eq!(inst.s3.endpoint, "https://speech-ibm-minio-svc.zen:9000");
        assert_eq!(inst.s3.access_key, "AKIA");
        assert_eq!(inst.s3.secret_key.expose(), "s3cr3t");
        assert_eq!(inst.postgres.host, "speech-ibm-postgresql-proxy-svc.zen");
        assert_eq!(inst.postgres.password.as_ref().unwrap().expose(), "pgpw");
        assert_eq!(inst.bucket("stt-async-icp"), "stt-async-icp-ibm-speech-zen");
        assert!(!format!("{inst:?}").contains("s3cr3t"));
        assert!(matches!(cfg.installation("nope"), Err(ConfigError::UnknownInstallation { .. })));
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(&p, "# c\nother:5432:*:u:no\n127.0.0.1:*:*:u:pa\\:ss\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            pgpass_lookup(&p, "127.0.0.1", 6000, "u").is_none(),
            "a file others can read is ignored, as libpq does"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(pgpass_lookup(&p, "127.0.0.1", 6000, "u").unwrap().expose(), "pa:ss");
        assert!(pgpass_lookup(&p, "127.0.0.1", 6000, "v").is_none());
    }

    #[test]
    fn bad_bucket_names_and_half_client_certs_are_refused() {
        let p = Path::new("t.toml");
        let cfg = "[installations.a]\nbuckets = { \"stt-async-icp\" = \"../escape\" }\n";
        assert!(matches!(Config::parse(cfg, p), Err(ConfigError::Installation { .. })));
        let cfg = "[installations.a]\nbucket_suffix = \"a/b\"\n";
        assert!(matches!(Config::parse(cfg, p), Err(ConfigError::Installation { .. })));
        let cfg = "[installations.a]\ns3.endpoint = \"http://x\"\ns3.access_key = \"k\"\ns3.secret_key = \"s\"\n\
                   postgres.host = \"h\"\npostgres.user = \"u\"\npostgres.cert_file = \"/c\"\n";
        let c = Config::parse(cfg, p).unwrap();
        let e = c.installation("a").unwrap_err().to_string();
        assert!(e.contains("cert_file and postgres.key_file go together"), "{e}");
    }

    proptest::proptest! {
        /// Any text gives a config or a parse error naming the file, never a panic.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "(?s).{0,400}") {
            if let Err(e) = Config::parse(&text, Path::new("x.toml")) {
                let named = e.to_string().contains("x.toml") || matches!(e, ConfigError::Installation { .. });
                proptest::prop_assert!(named, "{}", e);
            }
        }

        /// Installation sections with arbitrary names and settings resolve or fail with a
        /// message naming the installation.
        #[test]
        fn installations_resolve_or_name_themselves(
            name in "[a-z][a-z0-9-]{0,12}",
            port in proptest::option::of(0u32..70000),
            suffix in proptest::option::of("[a-z0-9.-]{1,10}"),
        ) {
            let mut text = format!("[installations.{name}]\ns3.endpoint = \"http://127.0.0.1:9\"\ns3.access_key = \"k\"\ns3.secret_key = \"s\"\npostgres.host = \"h\"\npostgres.user = \"u\"\n");
            if let Some(p) = port { text.push_str(&format!("postgres.port = {p}\n")); }
            if let Some(s) = &suffix { text.push_str(&format!("bucket_suffix = {s:?}\n")); }
            match Config::parse(&text, Path::new("x.toml")) {
                Ok(cfg) => match cfg.installation(&name) {
                    Ok(inst) => proptest::prop_assert_eq!(inst.name, name),
                    Err(e) => proptest::prop_assert!(e.to_string().contains(&name)),
                },
                Err(e) => proptest::prop_assert!(port.is_some_and(|p| p > 65535) || e.to_string().contains(&name), "{}", e),
            }
        }
    }

    #[test]
    fn a_session_token_goes_only_with_keys_from_the_environment() {
        let env = |n: &str| {
            match n {
                "AWS_ACCESS_KEY_ID" => Some("ENVKEY"),
                "AWS_SECRET_ACCESS_KEY" => Some("envsecret"),
                "AWS_SESSION_TOKEN" => Some("token"),
                "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9"),
                "PGHOST" => Some("h"),
                "PGUSER" => Some("u"),
                _ => None,
            }
            .map(String::from)
        };
        let from_env = InstallationFile::default();
        let inst = resolve_with("a", &from_env, &env).unwrap();
        assert_eq!(inst.s3.access_key, "ENVKEY");
        assert!(inst.s3.session_token.is_some(), "keys from the environment keep their token");
        let mut from_file = InstallationFile::default();
        from_file.s3.access_key = Some("FILEKEY".into());
        from_file.s3.secret_key = Some(Secret::new("filesecret"));
        let inst = resolve_with("a", &from_file, &env).unwrap();
        assert!(inst.s3.session_token.is_none(), "a token never goes with keys from the config");
    }
}
