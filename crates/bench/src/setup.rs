//! Setting up one allocation with blocking sockets, as any TURN client does:
//!
//! 1. Allocate without credentials → 401 with REALM and NONCE (RFC 8656 §7.2, RFC 8489 §9.2);
//! 2. Allocate with MESSAGE-INTEGRITY → XOR-RELAYED-ADDRESS (438 Stale Nonce: retry once with
//!    the new nonce);
//! 3. ChannelBind to the echo peer (RFC 8656 §12.1), which installs the permission too.
//!
//! Over UDP a request is retransmitted after 250 ms, doubling (RFC 8489 §6.2.1), until
//! `timeout`; on TCP and TLS every read is bounded by `timeout`. Several of these run at once
//! on a small thread pool ([`crate::driver`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Method, Response, TransactionId, ALLOCATE, CHANNEL_BIND, REFRESH,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Credentials, Transport};
use crate::data_conn::{DataConn, StreamBufs};
use crate::error::{SetupError, Stage};
use crate::sys;

/// The channel every allocation binds (each allocation is its own 5-tuple, so they may share).
pub const CHANNEL: u16 = 0x4000;
const FIRST_RTO: Duration = Duration::from_millis(250);

/// What every set-up shares.
#[derive(Clone)]
pub struct Params {
    /// The TURN server's listener.
    pub server: SocketAddr,
    /// How to reach it: UDP, TCP or TLS.
    pub transport: Transport,
    /// How each allocation authenticates ([`Credentials::for_allocation`]).
    pub credentials: Credentials,
    /// REALM to use if the server's 401 carries none.
    pub realm: Option<String>,
    /// The echo peer every allocation binds its channel to.
    pub peer: SocketAddr,
    /// How long one request may go unanswered (UDP retransmits within it).
    pub timeout: Duration,
    /// Requested send and receive buffer of every socket, in bytes.
    pub buffer: usize,
    /// The TLS client configuration, for [`Transport::Tls`] only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// An allocation bound to a channel toward the peer, ready for ChannelData.
pub struct Allocation {
    /// Its number in the run, from 0: written in every probe, and the `-<i>` of its
    /// credential.
    pub index: u32,
    /// Its connection to the server, which the data phase uses from then on.
    pub conn: DataConn,
    /// `None` if the server allocated without asking for credentials.
    pub auth: Option<ClientAuth>,
    /// The relayed transport address the server allocated (XOR-RELAYED-ADDRESS).
    pub relayed: SocketAddr,
    /// From the first request to the ChannelBind success.
    pub took: Duration,
}

/// A fresh transaction id: a per-process random high part and a counter.
pub fn transaction_id() -> TransactionId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ std::process::id().rotate_left(16)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    TransactionId::from(((seed as u128) << 64) | n as u128)
}

/// Runs the whole set-up of allocation `index`.
pub fn set_up(index: u32, p: &Params) -> Result<Allocation, SetupError> {
    let start = Instant::now();
    let mut conn = Conn::connect(p)?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (username, password) = p.credentials.for_allocation(index, now_unix);
    // REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.1) when the peer is IPv6.
    let mut attrs = vec![Attr::RequestedTransportUdp];
    if p.peer.is_ipv6() {
        attrs.push(Attr::Raw(0x0017, &[0x02, 0, 0, 0]));
    }
    let first = conn.transact(ALLOCATE, &attrs, None, Stage::Allocate, p.timeout)?;
    let (allocated, mut auth) = if first.success {
        (first, None)
    } else {
        match &first.error {
            Some((401, _)) => {}
            _ => return Err(rejected(Stage::Allocate, first)),
        }
        let realm = first
            .realm
            .or_else(|| p.realm.clone())
            .ok_or(SetupError::Protocol {
                stage: Stage::Allocate,
                what: "401 without REALM (give --realm)",
            })?;
        let nonce = first.nonce.ok_or(SetupError::Protocol {
            stage: Stage::Allocate,
            what: "401 without NONCE",
        })?;
        let mut auth = ClientAuth::new(&username, &password, &realm, &nonce);
        let r = conn.transact_authed(ALLOCATE, &attrs, Some(&mut auth), Stage::Allocate, p)?;
        (r, Some(auth))
    };
    let relayed = allocated
        .relayed
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == p.peer.is_ipv4())
        .ok_or(SetupError::Protocol {
            stage: Stage::Allocate,
            what: "no relayed address of the peer's address family",
        })?;
    let bind = [Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(p.peer)];
    if let Err(e) = conn.transact_authed(CHANNEL_BIND, &bind, auth.as_mut(), Stage::ChannelBind, p)
    {
        // Free the allocation rather than leave it to time out on the server.
        let release = client::request(
            REFRESH,
            transaction_id(),
            &[Attr::Lifetime(0)],
            auth.as_ref(),
        );
        let _ = conn.send(&release);
        return Err(e);
    }
    Ok(Allocation {
        index,
        conn: conn.into_data_conn(),
        auth,
        relayed,
        took: start.elapsed(),
    })
}

fn rejected(stage: Stage, r: Response) -> SetupError {
    match r.error {
        Some((code, reason)) => SetupError::Rejected {
            stage,
            code,
            reason,
        },
        None => SetupError::Protocol {
            stage,
            what: "error response without ERROR-CODE",
        },
    }
}

/// A blocking connection used during set-up.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        Vec<u8>,
    ),
}

impl Conn {
    fn connect(p: &Params) -> Result<Self, SetupError> {
        let io = |source| SetupError::Io {
            stage: Stage::Connect,
            source,
        };
        let kind = if p.transport.is_stream() {
            Type::STREAM
        } else {
            Type::DGRAM
        };
        let proto = if p.transport.is_stream() {
            Protocol::TCP
        } else {
            Protocol::UDP
        };
        let sock = Socket::new(Domain::for_address(p.server), kind, Some(proto)).map_err(io)?;
        sys::set_buffers(&sock, p.buffer);
        if !p.transport.is_stream() {
            sock.connect(&p.server.into()).map_err(io)?;
            return Ok(Conn::Udp(sock.into()));
        }
        sock.set_tcp_nodelay(true).map_err(io)?;
        sock.connect_timeout(&p.server.into(), p.timeout)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    SetupError::Timeout {
                        stage: Stage::Connect,
                        timeout: p.timeout,
                    }
                }
                _ => io(source),
            })?;
        let tcp: TcpStream = sock.into();
        tcp.set_read_timeout(Some(p.timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(p.timeout)).map_err(io)?;
        let Some(tls) = &p.tls else {
            return Ok(Conn::Tcp(tcp, Vec::new()));
        };
        let mut conn =
            rustls::ClientConnection::new(tls.clone(), crate::tls::server_name(p.server))
                .map_err(SetupError::Tls)?;
        let mut tcp = tcp;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|source| SetupError::Io {
                    stage: Stage::TlsHandshake,
                    source,
                })?;
        }
        Ok(Conn::Tls(
            Box::new(rustls::StreamOwned::new(conn, tcp)),
            Vec::new(),
        ))
    }

    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(msg).map(drop),
            Conn::Tcp(s, _) => s.write_all(msg),
            Conn::Tls(s, _) => s.write_all(msg).and_then(|()| s.flush()),
        }
    }

    /// Sends a request (answering a 438 Stale Nonce once) and returns its success response.
    fn transact_authed(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        mut auth: Option<&mut ClientAuth>,
        stage: Stage,
        p: &Params,
    ) -> Result<Response, SetupError> {
        for attempt in 0..2 {
            let r = self.transact(method, attrs, auth.as_deref(), stage, p.timeout)?;
            if r.success {
                return Ok(r);
            }
            if let (Some((438, _)), Some(nonce), Some(auth), 0) =
                (&r.error, &r.nonce, auth.as_deref_mut(), attempt)
            {
                auth.nonce = nonce.clone();
                continue;
            }
            return Err(rejected(stage, r));
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// One request and its response (success or error).
    fn transact(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Option<&ClientAuth>,
        stage: Stage,
        timeout: Duration,
    ) -> Result<Response, SetupError> {
        let tid = transaction_id();
        let req = client::request(method, tid, attrs, auth);
        let io = |source| SetupError::Io { stage, source };
        let want: u128 = tid.into();
        let start = Instant::now();
        let timed_out = SetupError::Timeout { stage, timeout };
        match self {
            Conn::Udp(s) => {
                let mut buf = [0u8; 1500];
                let mut rto = FIRST_RTO;
                let mut next_send = start;
                loop {
                    let now = Instant::now();
                    if now >= start + timeout {
                        return Err(timed_out);
                    }
                    if now >= next_send {
                        s.send(&req).map_err(io)?;
                        next_send = now + rto;
                        rto *= 2;
                    }
                    let wait = next_send.min(start + timeout) - now;
                    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                        .map_err(io)?;
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            if let Ok(r) = client::parse(&buf[..n], None) {
                                if r.transaction == want && !r.is_indication {
                                    return Ok(r);
                                }
                            }
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => return Err(io(e)),
                    }
                }
            }
            Conn::Tcp(s, pending) => {
                s.write_all(&req).map_err(io)?;
                read_response(s, pending, want, stage, timeout, start)
            }
            Conn::Tls(s, pending) => {
                s.write_all(&req).and_then(|()| s.flush()).map_err(io)?;
                read_response(&mut **s, pending, want, stage, timeout, start)
            }
        }
    }

    fn into_data_conn(self) -> DataConn {
        match self {
            Conn::Udp(s) => DataConn::Udp(s),
            Conn::Tcp(s, pending) => DataConn::Tcp(s, StreamBufs::new(&pending)),
            Conn::Tls(s, pending) => {
                let rustls::StreamOwned { conn, sock } = *s;
                DataConn::Tls(Box::new((conn, sock)), StreamBufs::new(&pending))
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads stream frames until the STUN response `want`; other frames are dropped.
fn read_response(
    s: &mut impl Read,
    pending: &mut Vec<u8>,
    want: u128,
    stage: Stage,
    timeout: Duration,
    start: Instant,
) -> Result<Response, SetupError> {
    let mut buf = [0u8; 4096];
    loop {
        while let Ok(Some(n)) = stream_frame_len(pending) {
            let frame: Vec<u8> = pending.drain(..n).collect();
            if let Ok(r) = client::parse(&frame, None) {
                if r.transaction == want && !r.is_indication {
                    return Ok(r);
                }
            }
        }
        if stream_frame_len(pending).is_err() {
            return Err(SetupError::Protocol {
                stage,
                what: "bytes that are neither STUN nor ChannelData",
            });
        }
        if start.elapsed() >= timeout {
            return Err(SetupError::Timeout { stage, timeout });
        }
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(SetupError::Io {
                    stage,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => return Err(SetupError::Timeout { stage, timeout }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SetupError::Io { stage, source: e }),
        }
    }
}
