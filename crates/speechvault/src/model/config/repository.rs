//! Repository settings: `[repository]` and the named `[repositories.NAME]`.
//!
//! A repository is a local directory (`path`) or a bucket on an S3 server (`url =
//! "s3:https://host:9000/bucket/prefix"`, with its own `s3.*` credentials). The repository's S3
//! credentials never come from `AWS_*`: those belong to the installations, and mixing them up
//! would write backups with the production keys. `SPEECHVAULT_REPOSITORY` (a path or a URL)
//! and `SPEECHVAULT_PASSWORD`(`_FILE`) fill in for the default repository only.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, env, secret_from};
use crate::objstore::S3Config;
use crate::repository::{Location, S3Location};
use crate::support::secret::{Secret, read_secret_file};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryFile {
    /// A local directory.
    pub path: Option<PathBuf>,
    /// `s3:https://host[:port]/bucket[/prefix]` (or a local path).
    pub url: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// The repository server's own settings (for `url = "s3:..."`).
    #[serde(default)]
    pub s3: RepoS3File,
    /// Object lock on the repository's files (S3 repositories only).
    pub immutable: Option<ImmutableFile>,
}

/// `[repository.immutable]`: every file a backup needs is kept from deletion for `retain`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableFile {
    /// `compliance` (nobody can shorten or remove a retention) or `governance` (a key with
    /// `s3:BypassGovernanceRetention` can).
    pub mode: crate::objstore::LockMode,
    /// `30d`, `36h`, `2w`: how long nothing a kept backup needs can be deleted.
    pub retain: String,
}

/// Parses a retention in hours, days or weeks (a month has no fixed length).
pub fn parse_retain(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let bad = || format!("retain = {s:?} is not a retention: use hours, days or weeks, e.g. 36h, 30d or 2w");
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let hours = match unit {
        "h" => n,
        "d" => n.checked_mul(24).ok_or_else(bad)?,
        "w" => n.checked_mul(24 * 7).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if hours == 0 {
        return Err(format!("retain = {s:?}: a retention must be at least an hour"));
    }
    if hours > 24 * 365 * 100 {
        return Err(format!("retain = {s:?}: more than a hundred years"));
    }
    Ok(std::time::Duration::from_secs(hours * 3600))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoS3File {
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub access_key_file: Option<PathBuf>,
    pub secret_key: Option<Secret>,
    pub secret_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    pub read_timeout_secs: Option<u64>,
    /// Keys for maintenance (forget, prune, unlock): the backup's own keys may then be
    /// write-only (read, list, put, no delete).
    pub maintenance_access_key: Option<String>,
    pub maintenance_access_key_file: Option<PathBuf>,
    pub maintenance_secret_key: Option<Secret>,
    pub maintenance_secret_key_file: Option<PathBuf>,
}

/// Where backups go, resolved.
#[derive(Debug, Clone)]
pub struct RepositorySettings {
    /// `None` for the default `[repository]`.
    pub name: Option<String>,
    pub location: Location,
    pub password: Secret,
    /// The same repository through the maintenance keys (`s3.maintenance_*`), when set.
    pub maintenance: Option<Location>,
}

/// An access key given inline or as a file (`None`: neither).
fn access_key_from(what: &str, inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(a), _) => Ok(Some(a.clone())),
        (None, Some(p)) => read_secret_file(p)
            .map(|k| Some(k.expose().to_string()))
            .map_err(|source| ConfigError::SecretFile { what: what.to_string(), path: p.clone(), source }),
        (None, None) => Ok(None),
    }
}

fn location_of(
    what: &str,
    spec: &str,
    s3: &RepoS3File,
    immutable: Option<&ImmutableFile>,
) -> Result<Location, ConfigError> {
    let bad = |reason: String| ConfigError::Repository(format!("{what}: {reason}"));
    let immutable = match immutable {
        Some(i) => Some(crate::repository::Immutability {
            mode: i.mode,
            retain: parse_retain(&i.retain).map_err(|e| bad(format!("immutable: {e}")))?,
        }),
        None => None,
    };
    if !spec.starts_with("s3:") {
        if immutable.is_some() {
            return Err(bad(format!(
                "immutable needs an s3: repository: {spec:?} is a directory, and object lock is a feature of S3 servers"
            )));
        }
        let path = spec.strip_prefix("local:").unwrap_or(spec);
        return Ok(Location::Local(PathBuf::from(path)));
    }
    let (endpoint, bucket, prefix) = crate::repository::location::parse_s3_url(spec).map_err(bad)?;
    let access_key = access_key_from(&format!("{what} S3 access key"), &s3.access_key, &s3.access_key_file)?
        .ok_or_else(|| bad("an s3: repository needs s3.access_key_file (or s3.access_key)".into()))?;
    let secret_key = secret_from(&format!("{what} S3 secret key"), &s3.secret_key, &s3.secret_key_file)?
        .ok_or_else(|| bad("an s3: repository needs s3.secret_key_file (or s3.secret_key)".into()))?;
    let mut cfg = S3Config::new(endpoint, access_key, secret_key);
    cfg.region = s3.region.clone().unwrap_or_else(|| "us-east-1".into());
    cfg.ca_file = s3.ca_file.clone();
    cfg.insecure = s3.insecure;
    if let Some(secs) = s3.read_timeout_secs {
        cfg.read_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    Ok(Location::S3(Box::new(S3Location { s3: cfg, bucket, prefix, immutable })))
}

impl RepositoryFile {
    /// `location` with the maintenance keys instead of the backup's, when they are set.
    fn maintenance_location(&self, what: &str, location: &Location) -> Result<Option<Location>, ConfigError> {
        let s3 = &self.s3;
        let any = s3.maintenance_access_key.is_some()
            || s3.maintenance_access_key_file.is_some()
            || s3.maintenance_secret_key.is_some()
            || s3.maintenance_secret_key_file.is_some();
        if !any {
            return Ok(None);
        }
        let bad = |reason: &str| ConfigError::Repository(format!("{what}: {reason}"));
        let Location::S3(loc) = location else {
            return Err(bad("s3.maintenance_* keys are for an s3: repository"));
        };
        let access_key = access_key_from(
            &format!("{what} S3 maintenance access key"),
            &s3.maintenance_access_key,
            &s3.maintenance_access_key_file,
        )?
        .ok_or_else(|| bad("set s3.maintenance_access_key_file with s3.maintenance_secret_key_file"))?;
        let secret_key = secret_from(
            &format!("{what} S3 maintenance secret key"),
            &s3.maintenance_secret_key,
            &s3.maintenance_secret_key_file,
        )?
        .ok_or_else(|| bad("set s3.maintenance_secret_key_file with s3.maintenance_access_key_file"))?;
        let mut m = (**loc).clone();
        m.s3.access_key = access_key;
        m.s3.secret_key = secret_key;
        Ok(Some(Location::S3(Box::new(m))))
    }

    fn resolve(&self, what: &str, name: Option<String>, env_fallback: bool) -> Result<RepositorySettings, ConfigError> {
        let spec = match (&self.path, &self.url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Repository(format!("{what}: set either path or url, not both")));
            }
            (Some(p), None) => Some(p.display().to_string()),
            (None, Some(u)) => Some(u.clone()),
            (None, None) => None,
        };
        let spec = match spec {
            Some(s) => s,
            None if env_fallback => env("SPEECHVAULT_REPOSITORY").ok_or_else(|| {
                ConfigError::Repository("no repository: set [repository] path or url, or SPEECHVAULT_REPOSITORY".into())
            })?,
            None => return Err(ConfigError::Repository(format!("{what}: set path or url"))),
        };
        let location = location_of(what, &spec, &self.s3, self.immutable.as_ref())?;
        let maintenance = self.maintenance_location(what, &location)?;
        let password = super::one_secret(&format!("{what} password"), &self.password, &self.password_file)?;
        let password = match password {
            Some(p) => p,
            None if env_fallback => match (env("SPEECHVAULT_PASSWORD"), env("SPEECHVAULT_PASSWORD_FILE")) {
                (Some(p), _) => Secret::new(p),
                (None, Some(f)) => read_secret_file(Path::new(&f)).map_err(|source| ConfigError::SecretFile {
                    what: "repository password".into(),
                    path: f.into(),
                    source,
                })?,
                (None, None) => {
                    return Err(ConfigError::Repository(
                        "no repository password: set [repository] password_file or SPEECHVAULT_PASSWORD(_FILE)".into(),
                    ));
                }
            },
            None => return Err(ConfigError::Repository(format!("{what}: set password_file (or password)"))),
        };
        if password.is_empty() {
            return Err(ConfigError::Repository(format!("{what}: the password is empty")));
        }
        Ok(RepositorySettings { name, location, password, maintenance })
    }
}

impl Config {
    /// The default repository (`[repository]`, `SPEECHVAULT_REPOSITORY`, `SPEECHVAULT_PASSWORD`).
    pub fn repository(&self) -> Result<RepositorySettings, ConfigError> {
        match &self.file.repository {
            Some(r) => r.resolve("repository", None, true),
            None => RepositoryFile::default().resolve("repository", None, true),
        }
    }

    /// A repository by name: `[repositories.NAME]`; no name means the default one.
    pub fn named_repository(&self, name: Option<&str>) -> Result<RepositorySettings, ConfigError> {
        let Some(name) = name else { return self.repository() };
        let r = self.file.repositories.get(name).ok_or_else(|| {
            ConfigError::Repository(format!(
                "no repository named {name:?} in the config (known: {})",
                if self.file.repositories.is_empty() {
                    "none".to_string()
                } else {
                    self.file.repositories.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })?;
        r.resolve(&format!("repositories.{name}"), Some(name.to_string()), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_repositories_take_their_own_credentials_never_aws_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "REPOKEY\n").unwrap();
        std::fs::write(dir.path().join("sk"), "reposecret\n").unwrap();
        let text = format!(
            r#"
[repository]
url = "s3:http://127.0.0.1:9000/backups/speech"
password = "pw"
s3.region = "garage"
s3.access_key_file = "{0}/ak"
s3.secret_key_file = "{0}/sk"

[repositories.offsite]
path = "/mnt/offsite"
password = "other"

[repositories.nokeys]
url = "s3:http://127.0.0.1:9000/other"
password = "x"
"#,
            dir.path().display()
        );
        let cfg = Config::parse(&text, Path::new("c.toml")).unwrap();
        let r = cfg.repository().unwrap();
        match &r.location {
            Location::S3(s) => {
                assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("backups", "speech"));
                assert_eq!(s.s3.access_key, "REPOKEY");
                assert_eq!(s.s3.region, "garage");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.location.describe(), "s3:http://127.0.0.1:9000/backups/speech");
        let o = cfg.named_repository(Some("offsite")).unwrap();
        assert_eq!(o.location, Location::Local(PathBuf::from("/mnt/offsite")));
        assert_eq!(o.password.expose(), "other");
        let e = cfg.named_repository(Some("nokeys")).unwrap_err().to_string();
        assert!(e.contains("needs s3.access_key_file"), "{e}");
        assert!(cfg.named_repository(Some("nope")).unwrap_err().to_string().contains("known: nokeys, offsite"));
    }

    #[test]
    fn immutable_sections_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_retain("30d").unwrap().as_secs(), 30 * 86400);
        assert_eq!(parse_retain("36h").unwrap().as_secs(), 36 * 3600);
        assert_eq!(parse_retain("2w").unwrap().as_secs(), 14 * 86400);
        for bad in ["", "30", "d", "1m", "0d", "1y", "-1d", "1.5d", "99999999999999999999d"] {
            assert!(parse_retain(bad).is_err(), "{bad}");
        }
        let base = "[repository]\nurl = \"s3:http://127.0.0.1:9000/bkp\"\npassword = \"p\"\ns3.access_key = \"k\"\ns3.secret_key = \"s\"\n";
        let cfg = Config::parse(
            &format!("{base}[repository.immutable]\nmode = \"compliance\"\nretain = \"7d\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        match cfg.repository().unwrap().location {
            Location::S3(s) => assert_eq!(
                s.immutable,
                Some(crate::repository::Immutability {
                    mode: crate::objstore::LockMode::Compliance,
                    retain: std::time::Duration::from_secs(7 * 86400)
                })
            ),
            other => panic!("{other:?}"),
        }
        let e = Config::parse(
            &format!("{base}[repository.immutable]\nmode = \"compliance\"\nretain = \"1m\"\n"),
            Path::new("c.toml"),
        )
        .unwrap()
        .repository()
        .unwrap_err()
        .to_string();
        assert!(e.contains("hours, days or weeks"), "{e}");
        assert!(
            Config::parse(
                &format!("{base}[repository.immutable]\nmode = \"forever\"\nretain = \"1d\"\n"),
                Path::new("c.toml")
            )
            .is_err()
        );
        let local = "[repository]\npath = \"/tmp/r\"\npassword = \"p\"\n[repository.immutable]\nmode = \"governance\"\nretain = \"1d\"\n";
        let e = Config::parse(local, Path::new("c.toml")).unwrap().repository().unwrap_err().to_string();
        assert!(e.contains("needs an s3: repository"), "{e}");
    }
}
