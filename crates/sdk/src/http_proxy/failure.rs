//! Why an HTTP proxy did not open a tunnel, in words an operator can act on.

use std::fmt;

use serde::Serialize;

/// Why the proxy did not open the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProxyFailure {
    /// 407: the proxy wants credentials (none were sent) or refused the ones sent. Some
    /// proxies answer refused credentials with 401 instead (tinyproxy 1.11 does); that is
    /// this too, with its own status.
    AuthenticationRequired {
        /// The status the proxy answered: 407, or 401 from proxies that use it.
        status: u16,
        /// The proxy's reason phrase.
        reason: String,
        /// Whether the CONNECT carried `Proxy-Authorization` (then the proxy refused those
        /// credentials; otherwise it wants some).
        sent_credentials: bool,
        /// From `Proxy-Authenticate`, if the proxy named one.
        realm: Option<String>,
    },
    /// 403: the proxy does not allow a tunnel to this destination (address or port).
    Forbidden {
        /// The proxy's reason phrase.
        reason: String,
    },
    /// Another answer that is not 2xx.
    Status {
        /// The HTTP status the proxy answered the CONNECT with.
        code: u16,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The connection to the proxy was refused (nothing listens there).
    Refused,
    /// The proxy did not answer (connect or CONNECT) in time.
    Timeout,
    /// The proxy closed the connection before it answered the CONNECT.
    Closed,
    /// The answer is not HTTP, or its head is too long.
    Malformed {
        /// What is wrong with the answer.
        detail: String,
    },
    /// Another socket error (no route, name resolution, …).
    Io {
        /// The operating system's error message.
        detail: String,
    },
}

impl ProxyFailure {
    pub(super) fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => ProxyFailure::Refused,
            ConnectionReset | UnexpectedEof => ProxyFailure::Closed,
            TimedOut => ProxyFailure::Timeout,
            _ => ProxyFailure::Io {
                detail: e.to_string(),
            },
        }
    }

    /// Whether another relay through the same proxy may succeed: not after a 407 (the
    /// credentials are the same for every destination).
    pub fn retry_elsewhere(&self) -> bool {
        !matches!(self, ProxyFailure::AuthenticationRequired { .. })
    }
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFailure::AuthenticationRequired {
                status,
                reason,
                sent_credentials: false,
                ..
            } => write!(
                f,
                "{status} {reason}: the proxy needs credentials; \
                 give them in the proxy URL (http://user:password@host:port)"
            ),
            ProxyFailure::AuthenticationRequired {
                status,
                reason,
                sent_credentials: true,
                ..
            } => write!(
                f,
                "{status} {reason}: the proxy refused the credentials \
                 in the proxy URL (wrong user or password)"
            ),
            ProxyFailure::Forbidden { reason } => write!(
                f,
                "403 {reason}: the proxy does not allow a tunnel to this address and port"
            ),
            ProxyFailure::Status { code, reason } => write!(f, "{code} {reason}"),
            ProxyFailure::Refused => {
                f.write_str("connection refused (is the proxy running there?)")
            }
            ProxyFailure::Timeout => f.write_str("timed out: the proxy did not answer in time"),
            ProxyFailure::Closed => {
                f.write_str("the proxy closed the connection before answering the CONNECT")
            }
            ProxyFailure::Malformed { detail } => write!(f, "not an HTTP answer: {detail}"),
            ProxyFailure::Io { detail } => write!(f, "{detail}"),
        }
    }
}
