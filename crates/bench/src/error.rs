//! Why an allocation could not be set up, and why a run could not happen. Each error says
//! which request failed and how, so failures can be grouped and counted by their [`key`].
//!
//! [`key`]: SetupError::key

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The step of an allocation's set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The TCP connect (TCP and TLS transports only).
    Connect,
    /// The TLS handshake with ALPN `stun.turn`.
    TlsHandshake,
    /// Allocate (RFC 8656 §7), with or without credentials.
    Allocate,
    /// ChannelBind (RFC 8656 §12.1), which also installs the permission.
    ChannelBind,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::TlsHandshake => "TLS handshake",
            Stage::Allocate => "Allocate",
            Stage::ChannelBind => "ChannelBind",
        })
    }
}

/// Why one allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The server answered with an error response.
    #[error("{stage}: {code} {reason}")]
    Rejected {
        /// The request that was refused.
        stage: Stage,
        /// The ERROR-CODE (e.g. 401 bad credentials, 403 peer forbidden, 486 quota).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// No answer in time (UDP retransmissions included).
    #[error("{stage}: no response within {}s", timeout.as_secs_f64())]
    Timeout {
        /// The request that went unanswered.
        stage: Stage,
        /// The set-up timeout it was given ([`crate::Setup::timeout`]).
        timeout: Duration,
    },
    /// A socket error: refused, reset, closed by the server….
    #[error("{stage}: {}", io_text(source))]
    Io {
        /// The step the socket failed in.
        stage: Stage,
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (certificate, protocol or ALPN).
    #[error("{stage}: {0}", stage = Stage::TlsHandshake)]
    Tls(#[source] rustls::Error),
    /// The server's answer made no sense for the request.
    #[error("{stage}: {what}")]
    Protocol {
        /// The request whose answer was wrong.
        stage: Stage,
        /// What was wrong with it, e.g. "401 without NONCE".
        what: &'static str,
    },
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "server closed the connection".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

impl SetupError {
    /// The text failures are grouped by: the same for the same cause, whichever allocation.
    pub fn key(&self) -> String {
        match self {
            SetupError::Timeout { stage, .. } => format!("{stage}: no response (timeout)"),
            other => other.to_string(),
        }
    }

    /// The STUN error code, if the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SetupError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why a run did not happen or produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The echo peer's socket could not be bound.
    #[error("cannot start the echo peer on {ip}: {source}")]
    EchoPeer {
        /// The address it was to bind ([`crate::Config::peer_ip`]).
        ip: std::net::IpAddr,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The operating system refused a thread.
    #[error("cannot start a {what} thread: {source}")]
    Thread {
        /// Which thread: "worker", "churn" or "set-up".
        what: &'static str,
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// A worker's epoll instance could not be created.
    #[error("cannot watch the sockets (epoll): {0}")]
    Poll(#[source] io::Error),
    /// Not a single allocation could be set up.
    #[error("0/{requested} allocations: {summary}{hint}")]
    NoAllocations {
        /// Allocations the run asked for.
        requested: usize,
        /// Failures grouped by cause, e.g. `Allocate: 401 Unauthorized ×100`.
        summary: String,
        /// A likely cause and what to do for the most common failures (led by " — "), or
        /// empty.
        hint: String,
    },
}

/// A hint for the most common cause of a complete failure, led by " — ".
pub fn hint(first: &SetupError, server: SocketAddr, transport: &str, peer: SocketAddr) -> String {
    match first {
        SetupError::Rejected { code: 401, .. } => {
            " — wrong secret (or user/password), or the server uses another auth scheme?".into()
        }
        SetupError::Rejected { code: 403, .. } => format!(
            " — the server forbids relaying to the echo peer {peer}: allow loopback peers \
             (coturn --allow-loopback-peers, cloudproxy --allow-peer 127.0.0.1/32) or set --peer-ip"
        ),
        SetupError::Rejected { code: 486, .. } => " — allocation quota reached".into(),
        SetupError::Rejected { code: 508, .. } => " — the server ran out of relay ports".into(),
        SetupError::Timeout { .. } => {
            format!(" — is a TURN server listening on {transport} {server}?")
        }
        SetupError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused => {
            format!(" — nothing listening on {transport} {server}?")
        }
        _ => String::new(),
    }
}
