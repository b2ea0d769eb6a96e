//! Events the SDK reports to the app, mirroring the vendor API's callbacks.

use std::net::SocketAddr;

use serde::Serialize;

use crate::mode::CloudProxyType;

/// Connection state (vendor `onConnectionStateChanged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
    Failed,
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateReason {
    /// Joining a channel directly.
    Joining,
    /// Joining through the cloud proxy (vendor: "setting proxy server").
    SettingProxyServer,
    JoinSuccess,
    /// The path stopped answering.
    Interrupted,
    /// Every path failed.
    JoinFailed,
    Leave,
}

/// Which way the media goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// UDP straight to the media service.
    Direct,
    /// TURN over UDP through a proxy.
    TurnUdp,
    /// TURN over TCP through a proxy.
    TurnTcp,
    /// TURN over TLS (TCP 443) through a proxy.
    TurnTls,
}

impl PathKind {
    pub fn is_proxy(self) -> bool {
        self != PathKind::Direct
    }

    /// The name used everywhere a path is printed: JSON, `join`, `diagnose`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::TurnUdp => "turn_udp",
            PathKind::TurnTcp => "turn_tcp",
            PathKind::TurnTls => "turn_tls",
        }
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the app may want to know. Serialized as JSON lines by `cloudproxy join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ConnectionStateChanged {
        state: ConnectionState,
        reason: StateReason,
    },
    /// Vendor `onProxyConnected(channel, uid, proxyType, localProxyIp, elapsed)`.
    ProxyConnected {
        channel: String,
        uid: u32,
        mode: CloudProxyType,
        proxy: SocketAddr,
        elapsed_ms: u64,
    },
    /// Vendor web `is-using-cloud-proxy`, after every join.
    IsUsingCloudProxy { using: bool },
    /// Vendor web `join-fallback-to-proxy`: Auto mode fell back to this proxy.
    JoinFallbackToProxy { proxy: SocketAddr },
    /// The channel was joined: the path, and the source address the media service saw.
    Joined {
        channel: String,
        uid: u32,
        path: PathKind,
        server: SocketAddr,
        seen_as: SocketAddr,
        elapsed_ms: u64,
    },
}
