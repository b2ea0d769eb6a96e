//! TLS to the relay (`turns:`), with rustls and the aws-lc-rs provider.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Which relay certificates the SDK trusts.
#[derive(Clone, Debug, Default)]
pub enum TlsTrust {
    /// These CA or self-signed certificates (PEM-decoded DER).
    Certificates(Vec<CertificateDer<'static>>),
    /// Any certificate. **For tests and lab networks only**: it gives up the relay's identity.
    #[default]
    InsecureAnyCertificate,
}

/// ALPN for STUN/TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration offering ALPN `stun.turn`.
pub fn client_config(trust: &TlsTrust) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let certs = match trust {
        TlsTrust::Certificates(certs) => certs,
        TlsTrust::InsecureAnyCertificate => {
            return Ok(insecure_client_config(Some(ALPN_STUN_TURN)))
        }
    };
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    Ok(Arc::new(config))
}

/// **For tests, lab networks and the load generator only.** A client configuration that
/// accepts any server certificate (handshake signatures are still checked against it), offering
/// `alpn` if given. It gives up the relay's identity.
pub fn insecure_client_config(alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
    Arc::new(config)
}

/// Accepts any certificate chain, but still checks the handshake signatures against it.
struct AnyCertificate(Arc<CryptoProvider>);

impl fmt::Debug for AnyCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnyCertificate")
    }
}

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
