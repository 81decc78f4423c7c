//! The sandbox's S3 server: the `s3s` crate speaks the protocol (routing, XML, SigV4),
//! [`store::DigestStore`] keeps the data, and [`faults`] breaks it on purpose for tests.
//!
//! Real servers differ, and speechvault must work with all of them, so the server can behave
//! like them ([`Behaviour`]): MinIO and AWS encode listings HTML-form style (a space as `+`);
//! AWS and moto give an object stored without a content type `binary/octet-stream`, MinIO a
//! type guessed from the extension; some servers ignore `If-Match` or `Range`.

pub mod faults;
pub mod settings;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use store::DigestStore;

/// How the listing encodes keys with `encoding-type=url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListingEncoding {
    /// `%20` for a space (Garage, moto).
    #[default]
    Percent,
    /// `+` for a space, `%2B` for a plus (MinIO, AWS).
    Plus,
    /// `%20` for a space and `%2F` for a slash, in keys only: prefixes come back as they are
    /// (Ceph RGW).
    PercentSlash,
}

/// What an object stored without a content type is served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultContentType {
    /// No type at all (Garage).
    #[default]
    None,
    /// A guess from the key's extension (MinIO).
    ByExtension,
    /// This fixed type (`binary/octet-stream` on AWS and moto).
    Fixed(String),
}

impl std::str::FromStr for DefaultContentType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Self::None,
            "by-extension" => Self::ByExtension,
            t if t.contains('/') => Self::Fixed(t.to_string()),
            other => {
                return Err(format!(
                    "default content type {other:?}: use none, by-extension or a type like binary/octet-stream"
                ));
            }
        })
    }
}

impl std::fmt::Display for DefaultContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::ByExtension => f.write_str("by-extension"),
            Self::Fixed(t) => f.write_str(t),
        }
    }
}

/// How the server behaves where real servers differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Behaviour {
    #[serde(default)]
    pub listing_encoding: ListingEncoding,
    #[serde(default)]
    pub default_content_type: DefaultContentType,
    /// Serve GET and HEAD whatever `If-Match` says.
    #[serde(default)]
    pub ignore_if_match: bool,
    /// Answer a ranged GET with the whole object (200).
    #[serde(default)]
    pub ignore_range: bool,
    /// Accept tags and keep none (Garage does so).
    #[serde(default)]
    pub drop_tags: bool,
    /// Answer CompleteMultipartUpload without the object's ETag (Ceph RGW does).
    #[serde(default)]
    pub no_complete_etag: bool,
}

impl Behaviour {
    /// MinIO: `+` in listings, types guessed from extensions.
    pub fn minio() -> Self {
        Self {
            listing_encoding: ListingEncoding::Plus,
            default_content_type: DefaultContentType::ByExtension,
            ..Self::default()
        }
    }
    /// AWS: `+` in listings, `binary/octet-stream` by default.
    pub fn aws() -> Self {
        Self {
            listing_encoding: ListingEncoding::Plus,
            default_content_type: DefaultContentType::Fixed("binary/octet-stream".into()),
            ..Self::default()
        }
    }
    /// Ceph RGW: `%2F` for a slash in listed keys, no ETag from CompleteMultipartUpload,
    /// `binary/octet-stream` by default.
    pub fn rgw() -> Self {
        Self {
            listing_encoding: ListingEncoding::PercentSlash,
            default_content_type: DefaultContentType::Fixed("binary/octet-stream".into()),
            no_complete_etag: true,
            ..Self::default()
        }
    }
    /// A named preset: `garage` (the default), `minio`, `aws`, `rgw`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "" | "default" | "garage" => Some(Self::default()),
            "minio" => Some(Self::minio()),
            "aws" => Some(Self::aws()),
            "rgw" => Some(Self::rgw()),
            _ => None,
        }
    }
    /// Command-line arguments for `sandbox serve-s3` that reproduce this behaviour.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--listing-encoding".to_string(),
            match self.listing_encoding {
                ListingEncoding::Percent => "percent".into(),
                ListingEncoding::Plus => "plus".into(),
                ListingEncoding::PercentSlash => "percent-slash".into(),
            },
            "--default-content-type".to_string(),
            self.default_content_type.to_string(),
        ];
        if self.ignore_if_match {
            a.push("--ignore-if-match".into());
        }
        if self.drop_tags {
            a.push("--drop-tags".into());
        }
        if self.no_complete_etag {
            a.push("--no-complete-etag".into());
        }
        if self.ignore_range {
            a.push("--ignore-range".into());
        }
        a
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: `(certificate PEM, key PEM)`. The
/// certificate is what clients pass as their CA file.
pub fn self_signed_cert() -> std::io::Result<(String, String)> {
    self_signed_cert_for(&["127.0.0.1".to_string(), "localhost".to_string()])
}

/// A self-signed certificate for the given names.
pub fn self_signed_cert_for(names: &[String]) -> std::io::Result<(String, String)> {
    let cert = rcgen::generate_simple_self_signed(names.to_vec()).map_err(std::io::Error::other)?;
    Ok((cert.cert.pem(), cert.key_pair.serialize_pem()))
}

/// A CA and a client certificate it signed for common name `cn`:
/// `(CA PEM, client certificate PEM, client key PEM)`.
pub fn client_cert(cn: &str) -> std::io::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let e = std::io::Error::other;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "speechvault sandbox client CA");
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// A TLS server configuration from PEM certificate and key.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])?
        .ok_or_else(|| std::io::Error::other("no private key in PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    Ok(Arc::new(config))
}

/// The S3 service behind the fault layer.
#[derive(Clone)]
struct Service {
    inner: s3s::service::S3Service,
    faults: Option<Arc<faults::Faults>>,
    /// The store's directory (bucket settings live beside the buckets).
    root: Arc<std::path::PathBuf>,
    access_key: Arc<str>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Service {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let (path, query) = (req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
        if let Some((bucket, setting)) = settings::setting_of(&path, &query) {
            let (root, bucket, method) = (self.root.clone(), bucket.to_string(), req.method().clone());
            let signed = settings::signed_by(req.headers(), &self.access_key);
            return Box::pin(async move {
                if !signed {
                    return http::Response::builder()
                        .status(403)
                        .body(s3s::Body::from(bytes::Bytes::from_static(
                            b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>not signed with this server's key</Message></Error>",
                        )))
                        .map_err(|e| s3s::HttpError::new(Box::new(e)));
                }
                use http_body_util::BodyExt;
                let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                Ok(settings::handle(&root, &method, &bucket, setting, body).await)
            });
        }
        // Creating and deleting a bucket starts and ends its settings.
        let bucket_call = (query.is_empty() && path.trim_matches('/').split('/').count() == 1)
            .then(|| (req.method().clone(), path.trim_matches('/').to_string()))
            .filter(|(m, b)| !b.is_empty() && (m == http::Method::PUT || m == http::Method::DELETE));
        let object_lock = req
            .headers()
            .get("x-amz-bucket-object-lock-enabled")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let root = self.root.clone();
        let fut = self.call_s3(req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some((method, bucket)) = bucket_call
                && resp.status().is_success()
            {
                if method == http::Method::PUT {
                    settings::created(&root, &bucket, object_lock).await;
                } else {
                    settings::deleted(&root, &bucket).await;
                }
            }
            Ok(resp)
        })
    }
}

impl Service {
    /// An S3 request for `s3s`, through the fault layer.
    fn call_s3(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<s3s::HttpResponse, s3s::HttpError>> + Send>> {
        let fault =
            self.faults.as_ref().and_then(|f| f.pick(req.method(), req.uri().path(), req.uri().query().unwrap_or("")));
        let inner = self.inner.clone();
        let reset = || s3s::HttpError::new("injected fault: connection reset".into());
        Box::pin(async move {
            use faults::Fault;
            match fault {
                None => inner.call(req.map(s3s::Body::from)).await,
                Some(Fault::Status { status, code, retry_after }) => {
                    let xml = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>"
                    );
                    let mut resp = http::Response::builder().status(status).header("content-type", "application/xml");
                    if let Some(s) = retry_after {
                        resp = resp.header("retry-after", s.to_string());
                    }
                    resp.body(s3s::Body::from(bytes::Bytes::from(xml))).map_err(|e| s3s::HttpError::new(Box::new(e)))
                }
                Some(Fault::Reset) => Err(reset()),
                Some(Fault::ResetAfter) => {
                    let _ = inner.call(req.map(s3s::Body::from)).await;
                    Err(reset())
                }
                Some(Fault::Stall { secs }) => {
                    tokio::time::sleep(std::time::Duration::from_secs(secs).min(faults::MAX_STALL)).await;
                    Err(reset())
                }
                Some(Fault::Truncate { after_bytes }) => {
                    let resp = inner.call(req.map(s3s::Body::from)).await?;
                    Ok(resp.map(|b| s3s::Body::http_body(faults::Truncated { inner: b, left: after_bytes })))
                }
                Some(Fault::Latency { ms }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    inner.call(req.map(s3s::Body::from)).await
                }
                Some(Fault::SlowBody { bytes_per_sec }) => {
                    let req = req.map(|b| s3s::Body::http_body(faults::Throttled::new(b, bytes_per_sec)));
                    let resp = inner.call(req).await?;
                    Ok(resp.map(|b| s3s::Body::http_body(faults::Throttled::new(b, bytes_per_sec))))
                }
                Some(Fault::Header { name, value }) => {
                    let mut resp = inner.call(req.map(s3s::Body::from)).await?;
                    if let (Ok(n), Ok(v)) =
                        (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value))
                    {
                        resp.headers_mut().insert(n, v);
                    }
                    Ok(resp)
                }
            }
        })
    }
}

/// Serves S3 on `listener` until `shutdown` resolves, over TLS when `tls` is given. Requests
/// must be signed with `access_key`/`secret_key`. With `faults_file`, requests go through the
/// fault layer.
pub async fn serve(
    store: DigestStore,
    listener: tokio::net::TcpListener,
    access_key: &str,
    secret_key: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    faults_file: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    let root = store.root().to_path_buf();
    let inner = {
        let mut b = s3s::service::S3ServiceBuilder::new(store);
        b.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
        b.build()
    };
    let service = Service {
        inner,
        faults: faults_file.map(|p| Arc::new(faults::Faults::new(p.to_path_buf()))),
        root: Arc::new(root),
        access_key: Arc::from(access_key),
    };
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let _ = socket.set_nodelay(true);
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let (http, service) = (http.clone(), service.clone());
                tokio::spawn(async move {
                    match acceptor.accept(socket).await {
                        Ok(stream) => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Err(e) => tracing::debug!("TLS handshake failed: {e}"),
                    }
                });
            }
        }
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
    }
    Ok(())
}

/// Runs a store and server in the background of the current runtime; for tests that need an
/// S3 endpoint without a sandbox process. Returns the endpoint URL and a stop handle.
pub async fn spawn_in_process(
    root: &Path,
    access_key: &str,
    secret_key: &str,
    behaviour: Behaviour,
) -> std::io::Result<(String, Arc<tokio::sync::Notify>)> {
    let store = DigestStore::open(root, behaviour)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let (ak, sk) = (access_key.to_string(), secret_key.to_string());
    let faults = root.join("faults.json");
    tokio::spawn(async move {
        let _ = serve(store, listener, &ak, &sk, None, Some(&faults), async move { stop2.notified().await }).await;
    });
    Ok((format!("http://{addr}"), stop))
}
