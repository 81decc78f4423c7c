//! Settings, resolved once per command: the command line over the config over the
//! environment.
//!
//! The config itself (`speechvault::model::config`) already resolves the config file over
//! the environment (`AWS_*`, `PG*`, `SPEECHVAULT_*`). What a command's flags change on top of
//! it is decided here and only here, so every precedence rule can be read and tested in one
//! place: the source's limits for a backup, the retention rules for forget, the hooks of a
//! scheduled run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use speechvault::Error;
use speechvault::model::config::{Config, Installation, Retention};
use speechvault::model::instance::InstanceId;
use speechvault::observe::hooks::{self, HookCommand, HookSettings};

/// Parses `90s`, `30m`, `2h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let bad = || format!("invalid duration {s:?}: use e.g. 90s, 30m or 2h");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

/// A service instance id from the command line (UUID or numeric Cloud Pak for Data id).
pub fn instance(s: &str) -> Result<InstanceId, Error> {
    Ok(InstanceId::parse(s)?)
}

/// The config file: `-c`, else `$SPEECHVAULT_CONFIG`, else `./speechvault.toml` when present,
/// else none (the environment only).
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(PathBuf::from).or_else(|| std::env::var_os("SPEECHVAULT_CONFIG").map(PathBuf::from)).or_else(|| {
        let p = PathBuf::from("speechvault.toml");
        p.is_file().then_some(p)
    })
}

/// Loads the config found by [`config_path`].
pub fn load_config(flag: Option<&Path>) -> Result<Config, Error> {
    match config_path(flag) {
        Some(p) => Ok(Config::load(&p)?),
        None => Ok(Config::default()),
    }
}

/// `sandbox:NAME` names a local sandbox; anything else an installation of the config.
pub fn installation(cfg: &Config, spec: &str) -> Result<Installation, Error> {
    if let Some(name) = spec.strip_prefix("sandbox:") {
        #[cfg(feature = "sandbox")]
        {
            let info = speechvault_sandbox::load(name)?;
            return Ok(info.installation()?);
        }
        #[cfg(not(feature = "sandbox"))]
        return Err(Error::bad_input(format!(
            "sandbox:{name}: this build has no sandbox (it is a development feature); name an installation of the config"
        )));
    }
    Ok(cfg.installation(spec)?)
}

/// The limits a backup puts on its source, from its flags over the installation's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceLimits {
    pub read_rate: Option<u64>,
    pub max_requests: Option<usize>,
    pub pg_connections: Option<usize>,
}

/// Applies a backup's `--limit-rate`, `--max-requests` and `--pg-connections` over what the
/// installation's config says (`s3.limit_rate`, `s3.max_requests`,
/// `postgres.max_connections`). Returns the PostgreSQL connections to use, if set anywhere.
pub fn apply_source_limits(inst: &mut Installation, flags: &SourceLimits) -> Option<usize> {
    if let Some(rate) = flags.read_rate {
        inst.s3.limits.read_rate = Some(rate);
    }
    if let Some(n) = flags.max_requests {
        inst.s3.limits.max_requests = Some(n.max(1));
    }
    flags.pg_connections.or(inst.pg_connections).map(|n| n.max(2))
}

/// Retention rules given on the command line (`forget --keep-*`, `--incomplete-grace`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionFlags {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    pub incomplete_grace: Option<String>,
}

impl RetentionFlags {
    fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }
}

/// The config's standing retention of each installation, for an immutable repository's
/// extension: a backup it no longer keeps is not kept retained (an installation whose
/// retention does not parse keeps everything).
pub fn keep_policy(cfg: &Config) -> speechvault::ops::immutability::KeepPolicy {
    let cfg = cfg.clone();
    speechvault::ops::immutability::KeepPolicy::new(move |name| cfg.retention(name).ok())
}

/// The retention for `installation`: its config (`[installations.NAME.retention]` over
/// `[retention]`), with the command line's keep rules replacing the configured ones as a
/// whole when any is given (so `--keep-last 3` does not mix with a configured `keep_daily`),
/// and `--incomplete-grace` over the configured grace.
pub fn retention(cfg: &Config, installation: &str, flags: &RetentionFlags) -> Result<Retention, Error> {
    let mut r = cfg.retention(installation)?;
    if flags.has_rules() {
        r.keep_last = flags.keep_last;
        r.keep_hourly = flags.keep_hourly;
        r.keep_daily = flags.keep_daily;
        r.keep_weekly = flags.keep_weekly;
        r.keep_monthly = flags.keep_monthly;
        r.keep_yearly = flags.keep_yearly;
        r.keep_within = flags.keep_within.clone();
    }
    if let Some(g) = &flags.incomplete_grace {
        r.incomplete_grace = g.clone();
    }
    Ok(r)
}

/// The hooks of a scheduled run, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    pub pre: Option<HookCommand>,
    pub post: Option<HookCommand>,
    pub timeout: Duration,
}

/// `--pre-hook`, `--post-hook` and `--hook-timeout` over the config's `[hooks]`, over the
/// default timeout.
pub fn hooks(config: &HookSettings, pre: Option<&str>, post: Option<&str>, timeout: Option<Duration>) -> Hooks {
    Hooks {
        pre: pre.map(|c| HookCommand::Shell(c.to_string())).or_else(|| config.pre.clone()),
        post: post.map(|c| HookCommand::Shell(c.to_string())).or_else(|| config.post.clone()),
        timeout: timeout.or_else(|| config.timeout_secs.map(Duration::from_secs)).unwrap_or(hooks::DEFAULT_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    const PROD: &str = r#"
[retention]
keep_daily = 7
keep_weekly = 4
incomplete_grace = "12h"

[installations.prod]
s3.endpoint = "http://127.0.0.1:9000"
s3.access_key = "a"
s3.secret_key = "b"
s3.limit_rate = "10MiB/s"
s3.max_requests = 4
postgres.host = "127.0.0.1"
postgres.user = "u"
postgres.password = "p"
postgres.max_connections = 3

[installations.prod.retention]
keep_daily = 14

[installations.dr]
s3.endpoint = "http://127.0.0.1:9001"
s3.access_key = "a"
s3.secret_key = "b"
postgres.host = "127.0.0.1"
postgres.user = "u"
postgres.password = "p"
"#;

    #[test]
    fn retention_flags_replace_the_configured_rules_as_a_whole() {
        let cfg = config(PROD);
        let none = RetentionFlags::default();
        let r = retention(&cfg, "prod", &none).unwrap();
        assert_eq!((r.keep_daily, r.keep_weekly), (Some(14), Some(4)), "installation over defaults, field by field");
        assert_eq!(r.incomplete_grace, "12h");
        let r = retention(&cfg, "dr", &none).unwrap();
        assert_eq!((r.keep_daily, r.keep_weekly), (Some(7), Some(4)), "defaults where the installation has none");
        let flags = RetentionFlags { keep_last: Some(3), ..Default::default() };
        let r = retention(&cfg, "prod", &flags).unwrap();
        assert_eq!((r.keep_last, r.keep_daily, r.keep_weekly), (Some(3), None, None), "command line replaces rules");
        assert_eq!(r.incomplete_grace, "12h", "a rule flag leaves the grace alone");
        let grace = RetentionFlags { incomplete_grace: Some("2h".into()), ..Default::default() };
        let r = retention(&cfg, "prod", &grace).unwrap();
        assert_eq!((r.keep_daily, r.incomplete_grace.as_str()), (Some(14), "2h"), "grace alone keeps the rules");
    }

    #[test]
    fn backup_flags_win_over_the_installations_limits() {
        let cfg = config(PROD);
        let mut inst = cfg.installation("prod").unwrap();
        assert_eq!(apply_source_limits(&mut inst, &SourceLimits::default()), Some(3), "config");
        assert_eq!(inst.s3.limits.read_rate, Some(10 << 20));
        assert_eq!(inst.s3.limits.max_requests, Some(4));
        let flags = SourceLimits { read_rate: Some(1 << 20), max_requests: Some(0), pg_connections: Some(1) };
        assert_eq!(apply_source_limits(&mut inst, &flags), Some(2), "at least two connections");
        assert_eq!(inst.s3.limits.read_rate, Some(1 << 20));
        assert_eq!(inst.s3.limits.max_requests, Some(1), "at least one request");
        let mut dr = cfg.installation("dr").unwrap();
        assert_eq!(apply_source_limits(&mut dr, &SourceLimits::default()), None, "the command's default");
    }

    #[test]
    fn hook_flags_win_over_the_config() {
        let cfg = config("[hooks]\npre = \"echo pre\"\npost = [\"/bin/true\"]\ntimeout_secs = 30\n");
        let h = hooks(&cfg.file.hooks, None, None, None);
        assert_eq!(h.pre, Some(HookCommand::Shell("echo pre".into())));
        assert_eq!(h.post, Some(HookCommand::Args(vec!["/bin/true".into()])));
        assert_eq!(h.timeout, Duration::from_secs(30));
        let h = hooks(&cfg.file.hooks, Some("echo flag"), None, Some(Duration::from_secs(5)));
        assert_eq!(h.pre, Some(HookCommand::Shell("echo flag".into())));
        assert_eq!(h.post, Some(HookCommand::Args(vec!["/bin/true".into()])), "post stays from the config");
        assert_eq!(h.timeout, Duration::from_secs(5));
        let h = hooks(&Config::default().file.hooks, None, None, None);
        assert_eq!((h.pre, h.post, h.timeout), (None, None, hooks::DEFAULT_TIMEOUT));
    }
}
