//! Events the SDK reports to the app, mirroring the vendor API's callbacks.

use std::net::SocketAddr;

use serde::Serialize;

use crate::mode::CloudProxyType;

/// Connection state (vendor `onConnectionStateChanged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not in a channel: the state before the first join and after a leave.
    Disconnected,
    /// A join is racing its paths.
    Connecting,
    /// In the channel over a live path (after a join or a successful reconnect).
    Connected,
    /// The path dropped; the session is trying to restore it.
    Reconnecting,
    /// A join, or every reconnect attempt, failed: the app must join again.
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
    /// A path reached the channel: a join, or a reconnect, succeeded.
    JoinSuccess,
    /// The path stopped answering.
    Interrupted,
    /// Every path failed.
    JoinFailed,
    /// The app left the channel (or dropped the client).
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
    /// Whether the path goes through a TURN relay (everything but [`PathKind::Direct`]).
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
    /// Vendor `onConnectionStateChanged(state, reason)`.
    ConnectionStateChanged {
        /// The state the connection is in now.
        state: ConnectionState,
        /// What moved it there.
        reason: StateReason,
    },
    /// Vendor `onProxyConnected(channel, uid, proxyType, localProxyIp, elapsed)`.
    ProxyConnected {
        /// The channel joined.
        channel: String,
        /// This member's uid.
        uid: u32,
        /// The cloud-proxy mode the join ran in.
        mode: CloudProxyType,
        /// The relay the media goes through.
        proxy: SocketAddr,
        /// Milliseconds from the start of the join to JOINED through the proxy.
        elapsed_ms: u64,
    },
    /// Vendor web `is-using-cloud-proxy`, after every join.
    IsUsingCloudProxy {
        /// True when the join went through a proxy, false when it went direct.
        using: bool,
    },
    /// Vendor web `join-fallback-to-proxy`: Auto mode fell back to this proxy.
    JoinFallbackToProxy {
        /// The Auto proxy that won after direct UDP did not.
        proxy: SocketAddr,
    },
    /// The channel was joined: the path, and the source address the media service saw.
    Joined {
        /// The channel joined.
        channel: String,
        /// This member's uid, as the media service confirmed it.
        uid: u32,
        /// The path that won the race.
        path: PathKind,
        /// The proxy, or the media service for a direct path.
        server: SocketAddr,
        /// The source address the media service saw (the relayed address through a proxy).
        seen_as: SocketAddr,
        /// Milliseconds from the start of the join to JOINED.
        elapsed_ms: u64,
    },
}
