//! Retention: how many backups to keep, as `[retention]` (defaults) and
//! `[installations.NAME.retention]` (overrides, field by field).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Keep every backup younger than this (restic style: `2d`, `1y6m`, `36h`).
    pub keep_within: Option<String>,
    /// Incomplete backup sets (no manifest) older than this are removed (default `24h`).
    pub incomplete_grace: Option<String>,
    /// A successful `backup` applies the retention (forget and prune) in the same run.
    pub after_backup: Option<bool>,
    /// Unused space prune may leave (`5%`, `1GiB`, `unlimited`).
    pub max_unused: Option<String>,
}

/// The retention in force for one installation.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    pub incomplete_grace: String,
    pub after_backup: bool,
    pub max_unused: Option<String>,
}

impl Retention {
    /// Whether any keep rule is set (without one, nothing is forgotten).
    pub fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }
}

fn merge(base: &RetentionFile, over: &RetentionFile) -> RetentionFile {
    RetentionFile {
        keep_last: over.keep_last.or(base.keep_last),
        keep_hourly: over.keep_hourly.or(base.keep_hourly),
        keep_daily: over.keep_daily.or(base.keep_daily),
        keep_weekly: over.keep_weekly.or(base.keep_weekly),
        keep_monthly: over.keep_monthly.or(base.keep_monthly),
        keep_yearly: over.keep_yearly.or(base.keep_yearly),
        keep_within: over.keep_within.clone().or_else(|| base.keep_within.clone()),
        incomplete_grace: over.incomplete_grace.clone().or_else(|| base.incomplete_grace.clone()),
        after_backup: over.after_backup.or(base.after_backup),
        max_unused: over.max_unused.clone().or_else(|| base.max_unused.clone()),
    }
}

/// Parses restic-style durations: `2d`, `1y6m`, `36h`, `1w` (y years, m months, w weeks,
/// d days, h hours).
pub fn parse_span(s: &str) -> Result<jiff::Span, String> {
    let bad = || format!("{s:?} is not a duration: use e.g. 36h, 7d, 2w, 6m or 1y6m");
    let mut span = jiff::Span::new();
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        span = match c {
            'y' => span.try_years(n),
            'm' => span.try_months(n),
            'w' => span.try_weeks(n),
            'd' => span.try_days(n),
            'h' => span.try_hours(n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}

impl Config {
    /// The retention for `installation` (its own section over `[retention]`).
    pub fn retention(&self, installation: &str) -> Result<Retention, ConfigError> {
        let base = self.file.retention.clone().unwrap_or_default();
        let over = self.file.installations.get(installation).and_then(|i| i.retention.clone()).unwrap_or_default();
        let f = merge(&base, &over);
        let bad = |reason: String| ConfigError::Installation {
            name: installation.into(),
            reason: format!("retention: {reason}"),
        };
        if let Some(w) = &f.keep_within {
            parse_span(w).map_err(bad)?;
        }
        let grace = f.incomplete_grace.clone().unwrap_or_else(|| "24h".into());
        parse_span(&grace).map_err(bad)?;
        Ok(Retention {
            keep_last: f.keep_last,
            keep_hourly: f.keep_hourly,
            keep_daily: f.keep_daily,
            keep_weekly: f.keep_weekly,
            keep_monthly: f.keep_monthly,
            keep_yearly: f.keep_yearly,
            keep_within: f.keep_within,
            incomplete_grace: grace,
            after_backup: f.after_backup.unwrap_or(false),
            max_unused: f.max_unused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_retention_overrides_the_defaults_field_by_field() {
        let text = "[retention]\nkeep_daily = 7\nkeep_weekly = 4\nafter_backup = true\n\
                    [installations.prod]\nretention.keep_daily = 30\nretention.keep_within = \"2d\"\n";
        let cfg = Config::parse(text, std::path::Path::new("c.toml")).unwrap();
        let r = cfg.retention("prod").unwrap();
        assert_eq!((r.keep_daily, r.keep_weekly, r.after_backup), (Some(30), Some(4), true));
        assert_eq!(r.keep_within.as_deref(), Some("2d"));
        assert_eq!(r.incomplete_grace, "24h");
        let other = cfg.retention("dr").unwrap();
        assert_eq!(other.keep_daily, Some(7));
        assert!(other.has_rules());
        assert!(!Config::default().retention("x").unwrap().has_rules());
    }

    #[test]
    fn durations_parse_like_restic() {
        assert_eq!(parse_span("1y6m").unwrap().get_months(), 6);
        assert_eq!(parse_span("36h").unwrap().get_hours(), 36);
        for bad in ["", "5", "3x", "d"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
