//! Run metrics for Prometheus, in the text exposition format: written to a file for
//! node-exporter's textfile collector, or pushed to a Pushgateway.
//!
//! Every value describes the last run, so every metric is a gauge. Each series carries the
//! labels `installation` and `operation`; one file per operation (or the operation in the file
//! name) and a Pushgateway group per installation and operation keep backup, restore, verify,
//! forget and check from overwriting each other.
//!
//! `speechvault_last_success_timestamp_seconds` must survive a failed run (it is what the
//! "backup too old" alert watches): the caller passes it in when it knows it (for a backup,
//! the time of the repository's latest complete backup); when it does not, the value of the
//! previous metrics file is kept, and the Pushgateway is sent a POST, which leaves the metrics
//! it does not name as they were.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write the metrics file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot push metrics to the Pushgateway at {url}: {reason}")]
    Push { url: String, reason: String },
    #[error("invalid Pushgateway URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// One series: a metric name, its help text, its own labels (beyond installation and
/// operation) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Self {
        Self { name, help, labels: Vec::new(), value }
    }

    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((name, value.into()));
        self
    }
}

/// What one run of an operation reports.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub installation: String,
    /// backup, restore, verify, forget, check.
    pub operation: String,
    /// When the run started (Unix seconds).
    pub started: f64,
    pub duration_seconds: f64,
    pub success: bool,
    pub exit_code: u8,
    /// The time of the last success, when known (see the module documentation).
    pub last_success: Option<f64>,
    /// The operation's own figures (bytes, objects, rows, differences).
    pub samples: Vec<Sample>,
}

pub const LAST_SUCCESS: &str = "speechvault_last_success_timestamp_seconds";

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl RunMetrics {
    /// Every series of this run, the fixed ones first.
    fn all_samples(&self) -> Vec<Sample> {
        let mut all = vec![
            Sample::new(
                "speechvault_last_attempt_timestamp_seconds",
                "When the last run of the operation started (Unix time).",
                self.started,
            ),
            Sample::new(
                "speechvault_last_run_success",
                "1 when the last run of the operation succeeded, 0 when it failed.",
                if self.success { 1.0 } else { 0.0 },
            ),
            Sample::new(
                "speechvault_last_run_exit_code",
                "Exit status of the last run (0 success, 1 failed, 2 bad input, 3 differences, 130 interrupted).",
                f64::from(self.exit_code),
            ),
            Sample::new(
                "speechvault_last_run_duration_seconds",
                "How long the last run of the operation took.",
                self.duration_seconds,
            ),
        ];
        if let Some(t) = self.last_success {
            all.push(Sample::new(
                LAST_SUCCESS,
                "When the operation last succeeded (Unix time); for backups, the time of the repository's latest complete backup.",
                t,
            ));
        }
        all.extend(self.samples.iter().cloned());
        all
    }

    /// The text exposition format. With `group_labels` every series carries `installation`
    /// and `operation`; without, they come from the Pushgateway's grouping key.
    pub fn render(&self, group_labels: bool) -> String {
        let mut out = String::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut samples = self.all_samples();
        // All series of one metric must be together, each with one HELP and TYPE.
        let order: Vec<&'static str> = {
            let mut o = Vec::new();
            for s in &samples {
                if !o.contains(&s.name) {
                    o.push(s.name);
                }
            }
            o
        };
        samples.sort_by_key(|s| order.iter().position(|n| *n == s.name));
        for s in &samples {
            if seen.insert(s.name) {
                let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
                let _ = writeln!(out, "# TYPE {} gauge", s.name);
            }
            let mut labels: Vec<(&str, &str)> = Vec::new();
            if group_labels {
                labels.push(("installation", &self.installation));
                labels.push(("operation", &self.operation));
            }
            labels.extend(s.labels.iter().map(|(k, v)| (*k, v.as_str())));
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            let _ = writeln!(out, "{}{labels} {}", s.name, format_value(s.value));
        }
        out
    }

    /// Writes the metrics to `path` atomically (a temporary file in the same directory, then
    /// a rename), so the textfile collector never reads half a file. Without a known last
    /// success, the one in the file being replaced is kept.
    pub fn write_file(&self, path: &Path) -> Result<(), MetricsError> {
        let err = |reason: String| MetricsError::File { path: path.to_path_buf(), reason };
        let mut run = self.clone();
        if run.last_success.is_none() {
            run.last_success = previous_success(path, &self.installation, &self.operation);
        }
        let dir = directory_of(path);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".speechvault-metrics-")
            .tempfile_in(&dir)
            .map_err(|e| err(format!("cannot create a temporary file in {}: {e}", dir.display())))?;
        use std::io::Write;
        tmp.write_all(run.render(true).as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| err(e.to_string()))?;
        // node-exporter runs as another user: the file is readable by all (it holds no secret).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(|e| err(e.to_string()))?;
        tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
        Ok(())
    }

    /// Pushes the metrics to the Pushgateway at `url` (e.g. `http://pushgateway:9091`), in the
    /// group `job="speechvault"`, `installation`, `operation`: PUT (the group is replaced)
    /// when the last success is known, POST (other metrics of the group stay) when not.
    pub async fn push(&self, url: &str) -> Result<(), MetricsError> {
        check_url(url)?;
        let target = format!(
            "{}/metrics/job/speechvault/installation@base64/{}/operation@base64/{}",
            url.trim_end_matches('/'),
            base64url(self.installation.as_bytes()),
            base64url(self.operation.as_bytes()),
        );
        let failed = |reason: String| MetricsError::Push { url: url.to_string(), reason };
        let method = if self.last_success.is_some() { http::Method::PUT } else { http::Method::POST };
        let tls = crate::tls::client_config(&crate::tls::Trust::Roots { ca_file: None, system: true }, None)
            .map_err(failed)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let request = http::Request::builder()
            .method(method)
            .uri(&target)
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(self.render(false))))
            .map_err(|e| failed(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
            .await
            .map_err(|_| failed("no answer within 30 s".into()))?
            .map_err(|e| failed(crate::support::text::one_line(&format!("{e}: {}", source_chain(&e)))))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(failed(format!("HTTP {status}: {}", text.trim())));
        }
        Ok(())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Integers print without a fraction (byte counts stay exact), others in full precision.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// The Pushgateway's `@base64` path encoding (URL-safe alphabet), which carries any label
/// value, `/` included.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if data.is_empty() {
        // The Pushgateway reads a lone "=" as the empty value.
        return "=".into();
    }
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The directory a metrics file goes in (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks a Pushgateway URL before the run (a typo should not cost a backup's worth of time).
pub fn check_url(url: &str) -> Result<(), MetricsError> {
    let bad = |reason: &str| MetricsError::BadUrl { url: url.to_string(), reason: reason.into() };
    let base: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match base.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("scheme must be http or https")),
    }
    if base.authority().is_none() {
        return Err(bad("missing host"));
    }
    Ok(())
}

/// Checks before the run that the metrics file can be written where asked (its directory is
/// created when missing).
pub fn check_file(path: &Path) -> Result<(), MetricsError> {
    let err = |reason: String| MetricsError::File { path: path.to_path_buf(), reason };
    let dir = directory_of(path);
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    tempfile::Builder::new()
        .prefix(".speechvault-metrics-")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| err(format!("cannot write in {}: {e}", dir.display())))
}

/// The last success recorded in an earlier metrics file for this installation and operation.
pub fn previous_success(path: &Path, installation: &str, operation: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let want_inst = format!("installation=\"{}\"", escape(installation));
    let want_op = format!("operation=\"{}\"", escape(operation));
    text.lines()
        .filter(|l| l.starts_with(LAST_SUCCESS) && l.contains(&want_inst) && l.contains(&want_op))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Now, as Unix seconds.
pub fn now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunMetrics {
        RunMetrics {
            installation: "prod \"a\"".into(),
            operation: "backup".into(),
            started: 1_700_000_000.5,
            duration_seconds: 12.25,
            success: true,
            exit_code: 0,
            last_success: Some(1_700_000_012.0),
            samples: vec![
                Sample::new("speechvault_database_rows", "Rows.", 10.0).label("database", "a"),
                Sample::new("speechvault_read_bytes", "Bytes.", 123_456_789_012.0),
                Sample::new("speechvault_database_rows", "Rows.", 20.0).label("database", "b"),
            ],
        }
    }

    #[test]
    fn renders_each_metric_once_with_escaped_labels() {
        let text = run().render(true);
        assert_eq!(text.matches("# TYPE speechvault_database_rows gauge").count(), 1, "{text}");
        assert!(text.contains(
            "speechvault_database_rows{installation=\"prod \\\"a\\\"\",operation=\"backup\",database=\"b\"} 20\n"
        ));
        assert!(
            text.contains(
                "speechvault_read_bytes{installation=\"prod \\\"a\\\"\",operation=\"backup\"} 123456789012\n"
            )
        );
        assert!(text.contains("speechvault_last_attempt_timestamp_seconds{installation=\"prod \\\"a\\\"\",operation=\"backup\"} 1700000000.5\n"));
        // The two rows series are adjacent.
        let a = text.find("database=\"a\"").unwrap();
        let b = text.find("database=\"b\"").unwrap();
        assert!(!text[a..b].contains("# HELP"), "{text}");
        assert!(!run().render(false).contains("installation="));
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_of_the_file_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.prom");
        run().write_file(&path).unwrap();
        let mut failed = run();
        failed.success = false;
        failed.exit_code = 1;
        failed.last_success = None;
        failed.write_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("speechvault_last_run_success{installation=\"prod \\\"a\\\"\",operation=\"backup\"} 0\n")
        );
        assert_eq!(previous_success(&path, "prod \"a\"", "backup"), Some(1_700_000_012.0));
        assert_eq!(previous_success(&path, "prod \"a\"", "restore"), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn base64url_matches_the_standard() {
        assert_eq!(base64url(b"prod"), "cHJvZA==");
        assert_eq!(base64url(b"a/b?"), "YS9iPw==");
        assert_eq!(base64url(b"\xfb\xff"), "-_8=");
        assert_eq!(base64url(b"abc"), "YWJj");
        assert_eq!(base64url(b""), "=");
    }
}
