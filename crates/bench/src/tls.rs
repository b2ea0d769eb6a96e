//! The TLS client configuration for `--transport tls`: ALPN `stun.turn` (RFC 7443), aws-lc-rs,
//! and any server certificate accepted. This is a test tool pointed at servers its user runs;
//! it must work with self-signed certificates and says so rather than pretending to verify.

use std::sync::Arc;

use rustls_pki_types::ServerName;

/// ALPN protocol id for STUN/TURN over TLS (RFC 7443 §4).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// A client configuration that accepts every certificate and offers ALPN `stun.turn`.
pub fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    cloudproxy_sdk::tls::insecure_client_config(Some(ALPN_STUN_TURN))
}

/// The name sent in SNI: none for an IP address, as for any `turns:` URI with a literal IP.
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}
