//! TLS client settings shared by the S3 client and PostgreSQL connections (rustls with ring).

use std::path::PathBuf;
use std::sync::Arc;

/// Which server certificates to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates chaining to the CAs in `ca_file`, plus the system's when `system`.
    Roots { ca_file: Option<PathBuf>, system: bool },
    /// Any certificate (handshake signatures are still checked). Only on explicit request.
    Anything,
}

/// Builds a rustls client configuration; the error says what is wrong with the CA file.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (ca_file, system) = match trust {
        Trust::Anything => {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider)))
                .with_no_client_auth());
        }
        Trust::Roots { ca_file, system } => (ca_file, *system),
    };
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
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

mod insecure {
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    /// Accepts every certificate (`s3.insecure = true`, `sslmode = require`) but still checks handshake signatures.
    #[derive(Debug)]
    pub struct AcceptAny(pub Arc<CryptoProvider>);

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
}
