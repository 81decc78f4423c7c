//! `[anomalies]` and `[installations.NAME.anomalies]`: when a backup is marked as looking like
//! ransomware happened (see [`crate::model::anomalies`]). The installation's section wins
//! field by field over the defaults section, which wins over the built-in thresholds.

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::model::anomalies::Thresholds;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesFile {
    pub rewritten_share: Option<f64>,
    pub deleted_share: Option<f64>,
    pub drop_share: Option<f64>,
    pub rows_changed_share: Option<f64>,
    pub compression_increase: Option<f64>,
    pub min_count: Option<u64>,
    pub min_rows: Option<u64>,
    pub min_compression_bytes: Option<u64>,
}

impl AnomaliesFile {
    fn over(&self, t: Thresholds) -> Thresholds {
        Thresholds {
            rewritten_share: self.rewritten_share.unwrap_or(t.rewritten_share),
            deleted_share: self.deleted_share.unwrap_or(t.deleted_share),
            drop_share: self.drop_share.unwrap_or(t.drop_share),
            rows_changed_share: self.rows_changed_share.unwrap_or(t.rows_changed_share),
            compression_increase: self.compression_increase.unwrap_or(t.compression_increase),
            min_count: self.min_count.unwrap_or(t.min_count),
            min_rows: self.min_rows.unwrap_or(t.min_rows),
            min_compression_bytes: self.min_compression_bytes.unwrap_or(t.min_compression_bytes),
        }
    }
}

impl Config {
    /// The anomaly thresholds for `installation`.
    pub fn anomalies(&self, installation: &str) -> Result<Thresholds, ConfigError> {
        let mut t = Thresholds::default();
        if let Some(base) = &self.file.anomalies {
            t = base.over(t);
        }
        if let Some(own) = self.file.installations.get(installation).and_then(|i| i.anomalies.as_ref()) {
            t = own.over(t);
        }
        t.validate().map_err(|reason| ConfigError::Installation { name: installation.into(), reason })?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn installation_thresholds_win_field_by_field_and_nonsense_is_refused() {
        let cfg = Config::parse(
            "[anomalies]\nrewritten_share = 0.3\ndrop_share = 0.4\n\n[installations.prod]\nanomalies.rewritten_share = 0.2\n\n[installations.dr]\nanomalies.deleted_share = 1.5\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let t = cfg.anomalies("prod").unwrap();
        assert_eq!((t.rewritten_share, t.drop_share, t.deleted_share), (0.2, 0.4, 0.5));
        assert_eq!(cfg.anomalies("other").unwrap().rewritten_share, 0.3);
        let e = cfg.anomalies("dr").unwrap_err().to_string();
        assert!(e.contains("deleted_share = 1.5"), "{e}");
        assert!(Config::parse("[anomalies]\nrewriten_share = 0.3\n", Path::new("c.toml")).is_err());
    }
}
