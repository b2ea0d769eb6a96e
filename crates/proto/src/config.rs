//! Plain configuration structs for the relay core, with documented defaults. Only the binary
//! reads files, flags or the environment; it fills these in.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::policy::PeerPolicy;

/// Everything the sans-IO [`crate::Server`] needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// REALM sent in 401 responses and used in the long-term key. Default `cloudproxy`.
    pub realm: String,
    /// Credential sources.
    pub auth: AuthConfig,
    /// Which peers the relay may forward to. Default: deny everything.
    pub peer_policy: PeerPolicy,
    /// Address relayed transport addresses are bound on (IPv4). `None` disables IPv4 relaying.
    pub relay_ipv4: Option<Ipv4Addr>,
    /// Address relayed transport addresses are bound on (IPv6). `None` disables IPv6 relaying.
    pub relay_ipv6: Option<Ipv6Addr>,
    /// The ports this server may hand out as relayed transport addresses.
    /// Default 49152..=65535 (the dynamic range RFC 8656 §6.2 suggests).
    pub relay_ports: RangeInclusive<u16>,
    /// Allocations this server holds at most (486 beyond). Default 100 000.
    pub max_allocations: usize,
    /// Allocations one credential (the id part of the username) may hold at once (486 beyond).
    /// Default 32: a WebRTC client makes one allocation per ICE server URL and component, and
    /// a user may have several tabs or devices on one credential.
    pub max_allocations_per_user: usize,
    /// Lifetimes of allocations, permissions, channels and nonces.
    pub lifetimes: Lifetimes,
    /// SOFTWARE attribute in responses. Default `cloudproxy/<version>`.
    pub software: Option<String>,
    /// `Some(pool)`: a control plane governs admission on this relay, which serves `pool`
    /// (see [`crate::admission`]); allocations with an app's credential need the app in the
    /// access table and a [`crate::Command::Admit`] round trip. `None` (the default): every
    /// valid credential may allocate.
    pub admission: Option<crate::admission::Pool>,
    /// Report each channel binding's life in [`crate::Event::ChannelUsable`] and
    /// [`crate::Event::ChannelEnded`], for a driver that forwards ChannelData outside the
    /// server (a kernel fast path). Default `false`: no such events.
    pub channel_events: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            realm: "cloudproxy".into(),
            auth: AuthConfig::default(),
            peer_policy: PeerPolicy::default(),
            relay_ipv4: Some(Ipv4Addr::LOCALHOST),
            relay_ipv6: None,
            relay_ports: 49152..=65535,
            max_allocations: 100_000,
            max_allocations_per_user: 32,
            lifetimes: Lifetimes::default(),
            software: Some(concat!("cloudproxy/", env!("CARGO_PKG_VERSION")).into()),
            admission: None,
            channel_events: false,
        }
    }
}

/// Lifetimes as RFC 8656 sets them.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Default allocation lifetime, 600 s (RFC 8656 §3.2). Shorter requests get this.
    pub allocation_default: Duration,
    /// Maximum allocation lifetime, 3600 s (RFC 8656 §3.2).
    pub allocation_max: Duration,
    /// Permission lifetime, 300 s (RFC 8656 §9).
    pub permission: Duration,
    /// Channel binding lifetime, 600 s (RFC 8656 §12).
    pub channel: Duration,
    /// How long a nonce stays fresh before 438 Stale Nonce. Default 600 s.
    pub nonce: Duration,
    /// How long a channel number or peer address stays reserved after its binding expired,
    /// 300 s (RFC 8656 §12).
    pub channel_cooldown: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            allocation_default: Duration::from_secs(600),
            allocation_max: Duration::from_secs(3600),
            permission: Duration::from_secs(300),
            channel: Duration::from_secs(600),
            nonce: Duration::from_secs(600),
            channel_cooldown: Duration::from_secs(300),
        }
    }
}

/// Where TURN REST credentials are checked against. See [`crate::auth`] for the format.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// One shared secret, as coturn's `--use-auth-secret --static-auth-secret`.
    pub static_secret: Option<Vec<u8>>,
    /// Per-application keys, selected by the app id in the username.
    pub app_keys: Vec<AppKey>,
}

/// One application's secret under one key id. Several keys per app make rotation possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKey {
    /// The application the key belongs to, as named in token usernames.
    pub app_id: String,
    /// The key's id, as named in token usernames (several per app during a rotation).
    pub key_id: String,
    /// The secret tokens are signed with (the ASCII text of the 64 hex digits).
    pub secret: Vec<u8>,
    /// Unix time after which this key no longer authenticates (end of a rotation grace period).
    pub not_after: Option<u64>,
}

/// A malformed `APP_ID:KEY_ID:SECRET` key spec. The messages never repeat the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppKeySpecError {
    #[error("expected APP_ID:KEY_ID:SECRET")]
    Shape,
    #[error("app id {0:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    AppId(String),
    #[error("key id {0:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    KeyId(String),
    #[error("the secret of app '{app_id}' key id '{key_id}' is empty")]
    EmptySecret { app_id: String, key_id: String },
}

/// Longest app id, key id or channel name.
pub const MAX_NAME_LEN: usize = 64;

/// `true` if `s` is 1..=64 characters of `[A-Za-z0-9_.-]`.
pub fn is_valid_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl std::str::FromStr for AppKey {
    type Err = AppKeySpecError;

    /// `APP_ID:KEY_ID:SECRET` (the secret may itself contain ':'), as the `--app` flags of the
    /// relay and the media service take it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let (Some(app_id), Some(key_id), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AppKeySpecError::Shape);
        };
        if !is_valid_name(app_id) {
            return Err(AppKeySpecError::AppId(app_id.into()));
        }
        if !is_valid_name(key_id) {
            return Err(AppKeySpecError::KeyId(key_id.into()));
        }
        if secret.is_empty() {
            return Err(AppKeySpecError::EmptySecret {
                app_id: app_id.into(),
                key_id: key_id.into(),
            });
        }
        Ok(AppKey {
            app_id: app_id.into(),
            key_id: key_id.into(),
            secret: secret.as_bytes().to_vec(),
            not_after: None,
        })
    }
}
