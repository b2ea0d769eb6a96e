//! TLS server configuration (rustls, aws-lc-rs provider) for `turns:` listeners.
//!
//! The server offers ALPN `stun.turn` (RFC 7443). ALPN is optional for the client: browsers
//! often send none for `turns:` URIs, and rustls then completes the handshake without it. No
//! client certificates are requested; TURN authenticates with MESSAGE-INTEGRITY instead.
//!
//! The certificate either comes from PEM files or is generated self-signed at start (the
//! default, fine for tests and for clients that pin or do not verify the certificate). It sits
//! in a [`CertStore`] that a reload replaces without touching established sessions.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN protocol id for STUN/TURN over TLS (RFC 7443 §4).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsIdentity {
    /// Generate a self-signed certificate for these names at start. Names that parse as IP
    /// addresses become IP subject alternative names, the others DNS names.
    SelfSigned {
        /// DNS names and IP addresses the certificate is valid for.
        names: Vec<String>,
    },
    /// PEM files: certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1).
    /// They may be the same file.
    Pem {
        /// The certificate chain's PEM file.
        cert: PathBuf,
        /// The private key's PEM file.
        key: PathBuf,
    },
}

impl Default for TlsIdentity {
    fn default() -> Self {
        TlsIdentity::SelfSigned {
            names: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

/// Why a TLS server configuration could not be built. Every message names the file (or the
/// names of a self-signed certificate) and what is wrong with it, and includes the underlying
/// cause, so printing the `Display` alone is enough.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read (missing, no permission).
    #[error("TLS certificate file {}: cannot read: {reason}", path.display())]
    CertUnreadable {
        /// The certificate file.
        path: PathBuf,
        /// The operating system's reason.
        reason: io::Error,
    },
    /// The certificate file is not valid PEM.
    #[error("TLS certificate file {}: {reason}", path.display())]
    CertPem {
        /// The certificate file.
        path: PathBuf,
        /// The PEM parser's reason.
        reason: pem::Error,
    },
    /// The certificate file has no CERTIFICATE section.
    #[error(
        "TLS certificate file {}: no certificate in file \
         (expected a -----BEGIN CERTIFICATE----- section)",
        path.display()
    )]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file could not be read (missing, no permission).
    #[error("TLS key file {}: cannot read: {reason}", path.display())]
    KeyUnreadable {
        /// The key file.
        path: PathBuf,
        /// The operating system's reason.
        reason: io::Error,
    },
    /// The key file is not valid PEM.
    #[error("TLS key file {}: {reason}", path.display())]
    KeyPem {
        /// The key file.
        path: PathBuf,
        /// The PEM parser's reason.
        reason: pem::Error,
    },
    /// The key file has no private key section.
    #[error(
        "TLS key file {}: no private key in file \
         (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        path.display()
    )]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key does not belong to the certificate's public key.
    #[error(
        "TLS key file {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file whose key is not the certificate's.
        key: PathBuf,
    },
    /// rustls refused the certificate chain or key.
    #[error(
        "TLS certificate {} / key {}: rejected: {reason}",
        cert.display(),
        key.display()
    )]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (e.g. an unsupported key type).
        reason: rustls::Error,
    },
    /// A self-signed certificate was asked for with an empty list of names.
    #[error("self-signed TLS certificate: no names given")]
    NoNames,
    /// The self-signed certificate could not be generated (e.g. a name is not a valid DNS name).
    #[error("self-signed TLS certificate for {names:?}: {reason}")]
    SelfSigned {
        /// The names asked for.
        names: Vec<String>,
        /// rcgen's reason.
        reason: rcgen::Error,
    },
    /// rustls refused the server configuration itself (protocol versions, provider).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// The certificate the TLS listeners present, replaceable while they run: a reload (SIGHUP)
/// swaps it, new handshakes get the new one, and sessions already established keep theirs.
/// Read once per handshake, never per packet, so a lock is fine here.
#[derive(Debug)]
pub struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    /// The certificate of `identity` (PEM files are read now; a self-signed one is made now).
    pub fn load(identity: &TlsIdentity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self(RwLock::new(certified_key(identity)?))))
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// The certificate presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads (or generates) the certificate and key of `identity` and checks that they belong
/// together, so a reload can refuse a bad pair before anything changes.
pub fn certified_key(identity: &TlsIdentity) -> Result<Arc<CertifiedKey>, TlsError> {
    let (certs, key) = match identity {
        TlsIdentity::SelfSigned { names } => {
            let (cert, key) = self_signed(names)?;
            (vec![cert], key)
        }
        TlsIdentity::Pem { cert, key } => (read_certs(cert)?, read_key(key)?),
    };
    let ck = CertifiedKey::from_der(certs, key, &provider()).map_err(|reason| match identity {
        TlsIdentity::Pem { cert, key } => match reason {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.clone(),
                    key: key.clone(),
                }
            }
            reason => TlsError::Rejected {
                cert: cert.clone(),
                key: key.clone(),
                reason,
            },
        },
        TlsIdentity::SelfSigned { .. } => TlsError::Config(reason),
    })?;
    Ok(Arc::new(ck))
}

/// Builds the server configuration for TURN over TLS listeners: TLS 1.2 and 1.3, no client
/// authentication, ALPN `stun.turn` (optional for the client), the certificate of `identity`.
pub fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with(CertStore::load(identity)?)
}

/// As [`server_config`], presenting whatever `store` holds at each handshake.
pub fn server_config_with(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    Ok(Arc::new(config))
}

/// ALPN of HTTP/1.1: with [`with_http`], such clients reach the control plane's API.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Whether a TLS connection is an HTTP client for the control plane's API rather than a TURN
/// client: it negotiated ALPN `http/1.1`, or its SNI is `api_server_name`. Public for the
/// fuzz targets, which feed it what rustls read from arbitrary ClientHellos.
pub fn wants_api(alpn: Option<&[u8]>, sni: Option<&str>, api_server_name: Option<&str>) -> bool {
    alpn == Some(ALPN_HTTP1) || (sni.is_some() && sni == api_server_name)
}

/// The same server configuration, also offering `http/1.1` (after `stun.turn`, so a client
/// offering both gets TURN).
pub fn with_http(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut c = config.clone();
    c.alpn_protocols.push(ALPN_HTTP1.to_vec());
    Arc::new(c)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| CERT_FILE.error(path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CERT_FILE.error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The errors of one kind of PEM file (certificate or key), by what went wrong reading it.
struct PemFileErrors {
    unreadable: fn(PathBuf, io::Error) -> TlsError,
    empty: fn(PathBuf) -> TlsError,
    invalid: fn(PathBuf, pem::Error) -> TlsError,
}

impl PemFileErrors {
    fn error(&self, path: &Path, e: pem::Error) -> TlsError {
        let path = path.to_path_buf();
        match e {
            pem::Error::Io(reason) => (self.unreadable)(path, reason),
            pem::Error::NoItemsFound => (self.empty)(path),
            reason => (self.invalid)(path, reason),
        }
    }
}

const CERT_FILE: PemFileErrors = PemFileErrors {
    unreadable: |path, reason| TlsError::CertUnreadable { path, reason },
    empty: |path| TlsError::NoCertificate { path },
    invalid: |path, reason| TlsError::CertPem { path, reason },
};

const KEY_FILE: PemFileErrors = PemFileErrors {
    unreadable: |path, reason| TlsError::KeyUnreadable { path, reason },
    empty: |path| TlsError::NoKey { path },
    invalid: |path, reason| TlsError::KeyPem { path, reason },
};

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| KEY_FILE.error(path, e))
}

fn self_signed_key(names: &[String]) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, TlsError> {
    if names.is_empty() {
        return Err(TlsError::NoNames);
    }
    rcgen::generate_simple_self_signed(names.to_vec()).map_err(|reason| TlsError::SelfSigned {
        names: names.to_vec(),
        reason,
    })
}

fn self_signed(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let ck = self_signed_key(names)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((ck.cert.der().clone(), key))
}

/// Generates a self-signed certificate for `names` (IP literals become IP SANs) and returns
/// `(certificate PEM, private key PEM)`. Useful for tests and for writing a throwaway
/// certificate to disk.
pub fn self_signed_pem<I, S>(names: I) -> Result<(String, String), TlsError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let names: Vec<String> = names.into_iter().map(Into::into).collect();
    let ck = self_signed_key(&names)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use cloudproxy_testkit::process::TempDir;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Handshakes over an in-memory pipe, echoes one message, returns the negotiated ALPN as
    /// both sides saw it.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), io::Error> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let name =
            rustls::pki_types::ServerName::try_from(name.to_owned()).expect("valid server name");
        let server = async move {
            let mut tls = TlsAcceptor::from(server).accept(s).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.flush().await?;
            Ok::<_, io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };
        let client = async move {
            let mut tls = TlsConnector::from(client).connect(name, c).await?;
            tls.write_all(b"ping").await?;
            tls.flush().await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            Ok::<_, io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };
        let (s, c) = tokio::join!(server, client);
        Ok((s?, c?))
    }

    #[tokio::test]
    async fn self_signed_handshake_with_alpn_stun_turn() {
        let server = server_config(&TlsIdentity::default()).unwrap();
        let client = cloudproxy_sdk::tls::insecure_client_config(Some(ALPN_STUN_TURN));
        let (s, c) = handshake(server, client, "localhost").await.unwrap();
        assert_eq!(s.as_deref(), Some(ALPN_STUN_TURN));
        assert_eq!(c.as_deref(), Some(ALPN_STUN_TURN));
    }

    #[tokio::test]
    async fn client_without_alpn_still_connects() {
        let server = server_config(&TlsIdentity::default()).unwrap();
        let client = cloudproxy_sdk::tls::insecure_client_config(None);
        let (s, c) = handshake(server, client, "localhost").await.unwrap();
        assert_eq!(s, None);
        assert_eq!(c, None);
    }

    /// Writes `contents` to `name` in the scratch directory `dir`.
    fn write(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
        let p = dir.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[tokio::test]
    async fn pem_files_work_and_ip_names_become_ip_sans() {
        let dir = TempDir::new("tls-test");
        let (cert_pem, key_pem) = self_signed_pem(["relay.example", "127.0.0.1"]).unwrap();
        let cert = write(&dir, "cert.pem", &cert_pem);
        let key = write(&dir, "key.pem", &key_pem);
        let server = server_config(&TlsIdentity::Pem { cert, key }).unwrap();

        // A client that really verifies, trusting only this certificate: the IP SAN and the
        // DNS SAN must both be present.
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for name in ["127.0.0.1", "relay.example"] {
            handshake(server.clone(), client.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("verifying handshake to {name}: {e}"));
        }
        assert!(handshake(server, client, "other.example").await.is_err());
    }

    #[test]
    fn bad_pem_paths_give_errors_naming_the_path() {
        let dir = TempDir::new("tls-test");
        let (cert_pem, key_pem) = self_signed_pem(["localhost"]).unwrap();
        let (_, other_key_pem) = self_signed_pem(["localhost"]).unwrap();
        let cert = write(&dir, "cert.pem", &cert_pem);
        let key = write(&dir, "key.pem", &key_pem);
        let other_key = write(&dir, "other-key.pem", &other_key_pem);
        let empty = write(&dir, "empty.pem", "");
        let garbage = write(
            &dir,
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let missing = dir.0.join("missing.pem");

        let err = |cert: &Path, key: &Path| {
            server_config(&TlsIdentity::Pem {
                cert: cert.into(),
                key: key.into(),
            })
            .unwrap_err()
        };
        let check = |e: TlsError, path: &Path, what: &str| {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{msg:?} should name {path:?}"
            );
            assert!(msg.contains(what), "{msg:?} should say {what:?}");
        };

        check(err(&missing, &key), &missing, "cannot read");
        check(err(&cert, &missing), &missing, "cannot read");
        check(err(&empty, &key), &empty, "no certificate");
        check(err(&key, &key), &key, "no certificate");
        check(err(&cert, &cert), &cert, "no private key");
        check(err(&cert, &empty), &empty, "no private key");
        check(err(&garbage, &key), &garbage, "certificate file");
        let e = err(&cert, &other_key);
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        check(e, &other_key, "does not match");

        // Both in one file is fine.
        let both = write(&dir, "both.pem", &format!("{cert_pem}{key_pem}"));
        server_config(&TlsIdentity::Pem {
            cert: both.clone(),
            key: both,
        })
        .unwrap();
    }

    #[test]
    fn self_signed_needs_names() {
        let e = server_config(&TlsIdentity::SelfSigned { names: vec![] }).unwrap_err();
        assert!(matches!(e, TlsError::NoNames));
        let e = server_config(&TlsIdentity::SelfSigned {
            names: vec!["bücher.example".into()],
        })
        .unwrap_err();
        assert!(e.to_string().contains("bücher.example"), "{e}");
    }
}
