//! Where a repository lives: a local directory, or a bucket (and prefix) on an S3 server,
//! named the way restic names them (`s3:https://host:9000/bucket/prefix`).

use std::path::PathBuf;

use crate::objstore::S3Config;

/// A repository's place.
#[derive(Debug, Clone)]
pub enum Location {
    Local(PathBuf),
    S3(Box<S3Location>),
}

/// A repository in a bucket: `s3:<endpoint>/<bucket>[/<prefix>]`.
#[derive(Debug, Clone)]
pub struct S3Location {
    /// Endpoint, region, credentials and TLS of the repository's own server.
    pub s3: S3Config,
    pub bucket: String,
    /// Path inside the bucket, without leading or trailing `/` (empty for the bucket's root).
    pub prefix: String,
    /// Object lock on the repository's files, when configured.
    pub immutable: Option<Immutability>,
}

/// How the files of an immutable repository are kept from deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Immutability {
    pub mode: crate::objstore::LockMode,
    /// Every file a kept backup needs stays undeletable at least this long.
    pub retain: std::time::Duration,
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

impl Location {
    /// The repository's address, restic style, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::S3(s) => {
                let mut u = format!("s3:{}/{}", s.s3.endpoint.trim_end_matches('/'), s.bucket);
                if !s.prefix.is_empty() {
                    u.push('/');
                    u.push_str(&s.prefix);
                }
                u
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The parts of an `s3:` URL: endpoint (`scheme://host[:port]`), bucket, prefix.
pub fn parse_s3_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix("s3:").ok_or_else(|| format!("{url:?} is not an s3: URL"))?;
    let (scheme, rest) = match rest.split_once("://") {
        Some((s @ ("http" | "https"), r)) => (s, r),
        Some((other, _)) => return Err(format!("{url:?}: the scheme must be http or https, not {other}")),
        // restic's short form `s3:host/bucket` means https.
        None => ("https", rest),
    };
    let mut parts = rest.splitn(3, '/');
    let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(|| format!("{url:?} names no host"))?;
    let bucket = parts
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{url:?} names no bucket: use s3:https://host[:port]/bucket[/prefix]"))?;
    crate::objstore::validate_bucket_name(bucket).map_err(|e| format!("{url:?}: {e}"))?;
    let prefix = parts.next().unwrap_or("").trim_matches('/').to_string();
    if prefix.split('/').any(|seg| seg == "." || seg == "..") || prefix.contains("//") {
        return Err(format!("{url:?}: the prefix may not hold '.', '..' or empty segments"));
    }
    Ok((format!("{scheme}://{host}"), bucket.to_string(), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_style_urls_parse() {
        assert_eq!(
            parse_s3_url("s3:http://127.0.0.1:9000/backups/speech/prod").unwrap(),
            ("http://127.0.0.1:9000".into(), "backups".into(), "speech/prod".into())
        );
        assert_eq!(parse_s3_url("s3:https://minio:9000/backups").unwrap().2, "");
        assert_eq!(parse_s3_url("s3:s3.example.com/backups/").unwrap().0, "https://s3.example.com");
        for bad in [
            "s3:http://host",
            "s3:http://host/",
            "s3:ftp://h/b",
            "http://h/b",
            "s3:http://h/Bad_Bucket",
            "s3:http://h/b/../x",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }
}
