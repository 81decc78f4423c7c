//! TLS client settings shared by the S3 client and PostgreSQL connections (rustls with ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct};

/// Which server certificates to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates chaining to the CAs in `ca_file`, plus the system's when `system`; the
    /// host name must match the certificate (libpq's `verify-full`, every https client).
    Roots { ca_file: Option<PathBuf>, system: bool },
    /// Certificates chaining to the CAs, whatever host name they name (libpq's `verify-ca`).
    ChainOnly { ca_file: Option<PathBuf>, system: bool },
    /// Any certificate (handshake signatures are still checked). Only on explicit request.
    Anything,
}

/// A client certificate and its private key (PEM files), for servers that ask for one.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn roots(ca_file: Option<&Path>, system: bool) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("read CA file {}: {e}", ca.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("CA file {} holds no PEM certificate", ca.display()));
        }
    } else if system {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    Ok(roots)
}

fn client_auth(
    cert: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>), String> {
    let pem = std::fs::read(&cert.cert_file)
        .map_err(|e| format!("read client certificate {}: {e}", cert.cert_file.display()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client certificate {}: {e}", cert.cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("client certificate {} holds no PEM certificate", cert.cert_file.display()));
    }
    let pem = std::fs::read(&cert.key_file).map_err(|e| format!("read client key {}: {e}", cert.key_file.display()))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("client key {}: {e}", cert.key_file.display()))?
        .ok_or_else(|| format!("client key {} holds no PEM private key", cert.key_file.display()))?;
    Ok((chain, key))
}

/// Builds a rustls client configuration; the error says what is wrong with which file.
pub fn client_config(trust: &Trust, cert: Option<&ClientCert>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match trust {
        Trust::Anything => builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        Trust::Roots { ca_file, system } => builder.with_root_certificates(roots(ca_file.as_deref(), *system)?),
        Trust::ChainOnly { ca_file, system } => {
            let roots = Arc::new(roots(ca_file.as_deref(), *system)?);
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        }
    };
    match cert {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let (chain, key) = client_auth(c)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", c.cert_file.display()))
        }
    }
}

/// Accepts every certificate (`s3.insecure = true`, `sslmode = require`) but still checks
/// handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain (and validity dates) like a full verifier, but accepts a certificate
/// issued for another host name: libpq's `verify-ca`.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
