//! Errors that say what failed, whose fault it was, and whether trying elsewhere can help.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::event::PathKind;

/// Why one path (one transport to one address) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PathFailure {
    /// No answer in time (a firewall that drops, or a dead host).
    Timeout,
    /// Actively refused: TCP reset or ICMP port unreachable.
    Refused,
    /// The TLS handshake failed.
    Tls {
        /// rustls's description (certificate not trusted, name mismatch, alert received…).
        detail: String,
    },
    /// The relay refused the credential (401).
    Unauthorized {
        /// The relay's reason phrase from the ERROR-CODE attribute.
        reason: String,
    },
    /// The relay refused the peer or the app's mode (403).
    Forbidden {
        /// The relay's reason phrase from the ERROR-CODE attribute.
        reason: String,
    },
    /// The relay's quota or capacity is exhausted (486, 508).
    Capacity {
        /// The TURN error code: 486 (allocation quota reached) or 508 (insufficient capacity).
        code: u16,
        /// The relay's reason phrase from the ERROR-CODE attribute.
        reason: String,
    },
    /// Another TURN error.
    Turn {
        /// The TURN/STUN error code (300–699); 5xx is the server's fault and worth retrying
        /// elsewhere.
        code: u16,
        /// The relay's reason phrase from the ERROR-CODE attribute.
        reason: String,
    },
    /// The media service refused the join.
    Media {
        /// The media service's ERROR code (HTTP-like: 4xx the join's fault, 5xx the service's).
        code: u16,
        /// The app the token names, as the media service read it.
        app_id: String,
        /// The media service's explanation.
        message: String,
    },
    /// A local socket error.
    Io {
        /// The operating system's error message.
        detail: String,
    },
    /// The HTTP proxy (named by its URL, password masked) did not open the tunnel.
    HttpProxy {
        /// The HTTP proxy's URL, password masked.
        proxy: String,
        /// What the proxy answered to CONNECT, or how talking to it failed.
        failure: crate::http_proxy::failure::ProxyFailure,
    },
    /// Not tried: the join had already succeeded or given up.
    Cancelled,
}

impl PathFailure {
    /// Whether another proxy or path may succeed where this one failed. A refused credential
    /// or a forbidden app will be refused everywhere; a timeout or a full relay may not.
    pub fn retry_elsewhere(&self) -> bool {
        match self {
            PathFailure::Timeout
            | PathFailure::Refused
            | PathFailure::Tls { .. }
            | PathFailure::Capacity { .. }
            | PathFailure::Io { .. }
            | PathFailure::Cancelled => true,
            PathFailure::Turn { code, .. } => *code >= 500,
            PathFailure::Media { code, .. } => *code >= 500,
            PathFailure::Unauthorized { .. } | PathFailure::Forbidden { .. } => false,
            PathFailure::HttpProxy { failure, .. } => failure.retry_elsewhere(),
        }
    }

    pub(crate) fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused | ConnectionReset => PathFailure::Refused,
            TimedOut | WouldBlock => PathFailure::Timeout,
            _ => PathFailure::Io {
                detail: e.to_string(),
            },
        }
    }

    pub(crate) fn from_turn(code: u16, reason: String) -> Self {
        match code {
            401 => PathFailure::Unauthorized { reason },
            403 => PathFailure::Forbidden { reason },
            486 | 508 => PathFailure::Capacity { code, reason },
            _ => PathFailure::Turn { code, reason },
        }
    }
}

impl fmt::Display for PathFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathFailure::Timeout => f.write_str("timed out"),
            PathFailure::Refused => f.write_str("connection refused"),
            PathFailure::Tls { detail } => write!(f, "TLS failure: {detail}"),
            PathFailure::Unauthorized { reason } => write!(f, "401 {reason}"),
            PathFailure::Forbidden { reason } => write!(f, "403 {reason}"),
            PathFailure::Capacity { code, reason } | PathFailure::Turn { code, reason } => {
                write!(f, "{code} {reason}")
            }
            PathFailure::Media {
                code,
                app_id,
                message,
            } => write!(
                f,
                "media service refused (app '{app_id}'): {code} {message}"
            ),
            PathFailure::Io { detail } => write!(f, "I/O error: {detail}"),
            PathFailure::HttpProxy { proxy, failure } => write!(f, "HTTP proxy {proxy}: {failure}"),
            PathFailure::Cancelled => f.write_str("not needed"),
        }
    }
}

/// One path that was tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathAttempt {
    /// The transport tried: direct UDP, TURN/UDP or TURN/TLS.
    pub path: PathKind,
    /// The address tried: a proxy, or the media service for a direct path.
    pub target: SocketAddr,
    /// Why it did not lead to a join.
    pub failure: PathFailure,
}

impl fmt::Display for PathAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}: {}", self.path, self.target, self.failure)
    }
}

/// Errors of the SDK's API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    /// [`crate::Client::set_cloud_proxy`] or a proxy refresh was called while in a channel.
    #[error("the cloud proxy mode can only be set outside a channel: leave first")]
    InChannel,
    /// A switch from one Force mode straight to the other, which the vendor API refuses too.
    #[error("the cloud proxy mode is already {current}: set None (Auto) first, then the new mode")]
    SetNoneFirst {
        /// The Force mode the client is in.
        current: crate::CloudProxyType,
    },
    /// [`crate::Client::join`] while already in a channel.
    #[error("already in a channel: leave first")]
    AlreadyJoined,
    /// Sending or receiving outside a channel.
    #[error("not in a channel")]
    NotJoined,
    /// The mode needs proxy addresses and its list in [`crate::Proxies`] is empty; the
    /// string names the list ("UDP", "TLS" or "Auto").
    #[error("no {0} proxy address is configured for this mode")]
    NoProxies(&'static str),
    /// The join token does not parse (or the TLS trust configuration is unusable); the string
    /// says what is wrong with it.
    #[error("bad token: {0}")]
    BadToken(String),
    /// Every path of the join failed; the error lists each one.
    #[error("{0}")]
    Join(JoinError),
    /// The session task has ended: its path dropped and every reconnect attempt failed.
    #[error("the connection to the channel was lost and could not be restored")]
    Disconnected,
    /// No proxy answered the allow-list or proxy-list request usefully; the string gives
    /// each proxy's answer or error.
    #[error("could not refresh the published proxies: {0}")]
    Refresh(String),
}

/// Every path failed: each one tried, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinError {
    /// Every path, in the order each one ended: failures as they came, then at the join
    /// deadline those still running (`Timeout`) and those never started (`Cancelled`).
    pub attempts: Vec<PathAttempt>,
    /// Milliseconds from the start of the join until it gave up.
    pub elapsed_ms: u64,
    /// The HTTP proxy configured for the TCP paths (password masked), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
}

impl JoinError {
    /// Whether trying again elsewhere (another network, later) may help: false when every
    /// path was refused for a reason that holds everywhere (credentials, permission).
    pub fn retry_elsewhere(&self) -> bool {
        self.attempts.iter().any(|a| a.failure.retry_elsewhere())
    }

    /// Whether this is UDP meeting a proxy-only network: an HTTP proxy is configured, only
    /// UDP paths were tried (Force UDP; Auto would have tried TLS through the proxy), and
    /// none got an answer. The proxy's presence is what we know; that the network lets only
    /// it through is the likely reading of the silence, and the message says so.
    pub fn udp_cannot_pass_proxy(&self) -> bool {
        self.http_proxy.is_some()
            && !self.attempts.is_empty()
            && self.attempts.iter().all(|a| {
                matches!(a.path, PathKind::TurnUdp | PathKind::Direct)
                    && matches!(
                        a.failure,
                        PathFailure::Timeout | PathFailure::Refused | PathFailure::Cancelled
                    )
            })
    }

    pub(crate) fn new(
        attempts: Vec<PathAttempt>,
        elapsed: Duration,
        http_proxy: Option<String>,
    ) -> Self {
        Self {
            attempts,
            elapsed_ms: elapsed.as_millis() as u64,
            http_proxy,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not join after {} ms; tried {} path(s): ",
            self.elapsed_ms,
            self.attempts.len()
        )?;
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        if !self.retry_elsewhere() {
            f.write_str(" (retrying elsewhere will not help)")?;
        }
        if let (true, Some(proxy)) = (self.udp_cannot_pass_proxy(), &self.http_proxy) {
            write!(
                f,
                ". UDP cannot pass a proxy-only network: nothing answered over UDP, and this \
                 network's HTTP proxy ({proxy}) carries only TCP tunnels (CONNECT); use Force \
                 TCP, or Auto, which tunnels TLS through the proxy"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_proxy::failure::ProxyFailure;

    fn attempt(path: PathKind, failure: PathFailure) -> PathAttempt {
        PathAttempt {
            path,
            target: "10.201.2.2:3478".parse().unwrap(),
            failure,
        }
    }

    #[test]
    fn unanswered_udp_with_a_proxy_says_udp_cannot_pass_it() {
        let proxy = Some("http://10.201.1.1:3128".to_owned());
        let silent = vec![
            attempt(PathKind::TurnUdp, PathFailure::Timeout),
            attempt(PathKind::TurnUdp, PathFailure::Cancelled),
        ];
        let e = JoinError::new(silent.clone(), Duration::from_millis(4001), proxy.clone());
        assert!(e.udp_cannot_pass_proxy());
        let msg = e.to_string();
        assert!(
            msg.contains("UDP cannot pass a proxy-only network"),
            "{msg}"
        );
        assert!(msg.contains("http://10.201.1.1:3128"), "{msg}");
        // No proxy configured: nothing to say about one.
        let e = JoinError::new(silent, Duration::from_millis(4001), None);
        assert!(!e.udp_cannot_pass_proxy());
        assert!(!e.to_string().contains("proxy-only"));
        // UDP that was answered (refused by the relay) is not a network that blocks UDP.
        let answered = vec![attempt(
            PathKind::TurnUdp,
            PathFailure::Unauthorized {
                reason: "Unauthorized".into(),
            },
        )];
        assert!(!JoinError::new(answered, Duration::ZERO, proxy.clone()).udp_cannot_pass_proxy());
        // A TLS path was tried (Auto): its own failure tells the story.
        let tls = vec![
            attempt(PathKind::Direct, PathFailure::Timeout),
            attempt(
                PathKind::TurnTls,
                PathFailure::HttpProxy {
                    proxy: proxy.clone().unwrap(),
                    failure: ProxyFailure::Refused,
                },
            ),
        ];
        let e = JoinError::new(tls, Duration::ZERO, proxy);
        assert!(!e.udp_cannot_pass_proxy());
        assert!(e
            .to_string()
            .contains("HTTP proxy http://10.201.1.1:3128: connection refused"));
    }
}
