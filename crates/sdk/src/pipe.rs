//! A datagram pipe to the media service: straight over UDP, or through a TURN relay over UDP,
//! TCP or TLS with a channel bound to the media service (RFC 8656 §12).
//!
//! Setting up a TURN pipe is: connect, Allocate (answer the 401 challenge), ChannelBind to the
//! media service. Afterwards every media datagram travels as ChannelData, and the pipe refreshes
//! the allocation and the channel binding before they expire.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Method, Response, TransactionId, ALLOCATE, CHANNEL_BIND, REFRESH,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::PathFailure;
use crate::event::PathKind;

/// The channel number the SDK binds to the media service.
const CHANNEL: u16 = 0x4000;
/// Refresh the channel binding (600 s) and its permission (300 s) this often.
const REFRESH_EVERY: Duration = Duration::from_secs(120);

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Link {
    Udp(UdpSocket),
    Stream {
        io: Box<dyn Stream>,
        buf: Vec<u8>,
        filled: usize,
    },
}

/// TURN state kept for refreshes.
struct Turn {
    auth: ClientAuth,
    media: SocketAddr,
    next_refresh: Instant,
}

/// An open path to the media service.
pub(crate) struct Pipe {
    link: Link,
    turn: Option<Turn>,
    tid: u128,
    scratch: Vec<u8>,
}

impl Pipe {
    /// UDP straight to the media service.
    pub(crate) async fn direct(media: SocketAddr) -> Result<Self, PathFailure> {
        let sock = udp_to(media).await?;
        Ok(Self::new(Link::Udp(sock)))
    }

    fn new(link: Link) -> Self {
        Self {
            link,
            turn: None,
            tid: u128::from(rand::random::<u64>()) << 32,
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Through the TURN relay at `proxy`: Allocate, then bind a channel to `media`.
    pub(crate) async fn turn(
        kind: PathKind,
        proxy: SocketAddr,
        media: SocketAddr,
        username: &str,
        password: &str,
        tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
    ) -> Result<Self, PathFailure> {
        let link = match kind {
            PathKind::TurnUdp => Link::Udp(udp_to(proxy).await?),
            PathKind::TurnTcp | PathKind::TurnTls => {
                let tcp = TcpStream::connect(proxy)
                    .await
                    .map_err(|e| PathFailure::from_io(&e))?;
                let _ = tcp.set_nodelay(true);
                let io: Box<dyn Stream> = match (kind, tls) {
                    (PathKind::TurnTls, Some((config, name))) => {
                        let name = rustls_pki_types::ServerName::try_from(name.to_owned())
                            .map_err(|e| PathFailure::Tls {
                                detail: format!("server name {name:?}: {e}"),
                            })?;
                        let connector = tokio_rustls::TlsConnector::from(config.clone());
                        let s = connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| match e.kind() {
                                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
                                    PathFailure::Tls {
                                        detail: format!("connection closed during handshake: {e}"),
                                    }
                                }
                                _ => PathFailure::Tls {
                                    detail: e.to_string(),
                                },
                            })?;
                        Box::new(s)
                    }
                    _ => Box::new(tcp),
                };
                Link::Stream {
                    io,
                    buf: vec![0; 70_000],
                    filled: 0,
                }
            }
            PathKind::Direct => unreachable!("not a TURN path"),
        };
        let mut pipe = Self::new(link);
        // RFC 8656 §7.1: the first Allocate is answered with 401 and the realm and nonce.
        let first = pipe
            .transact(ALLOCATE, &[Attr::RequestedTransportUdp], None)
            .await?;
        let mut auth = match (first.error, first.realm, first.nonce) {
            (Some((401, _)), Some(realm), Some(nonce)) => {
                ClientAuth::new(username, password, &realm, &nonce)
            }
            (Some((code, reason)), _, _) => return Err(PathFailure::from_turn(code, reason)),
            _ => {
                return Err(PathFailure::Turn {
                    code: 0,
                    reason: "Allocate without credentials was not challenged".into(),
                })
            }
        };
        let r = pipe
            .authed(ALLOCATE, &[Attr::RequestedTransportUdp], &mut auth)
            .await?;
        if r.relayed.is_empty() {
            return Err(PathFailure::Turn {
                code: 0,
                reason: "Allocate success without XOR-RELAYED-ADDRESS".into(),
            });
        }
        pipe.authed(
            CHANNEL_BIND,
            &[Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(media)],
            &mut auth,
        )
        .await?;
        pipe.turn = Some(Turn {
            auth,
            media,
            next_refresh: Instant::now() + REFRESH_EVERY,
        });
        Ok(pipe)
    }

    /// A request signed with `auth`, retried once with a fresh nonce on 438.
    async fn authed(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: &mut ClientAuth,
    ) -> Result<Response, PathFailure> {
        for _ in 0..2 {
            let r = self.transact(method, attrs, Some(auth)).await?;
            match r.error {
                None => return Ok(r),
                Some((438, _)) => auth.nonce = r.nonce.unwrap_or_default(),
                Some((code, reason)) => return Err(PathFailure::from_turn(code, reason)),
            }
        }
        Err(PathFailure::Turn {
            code: 438,
            reason: "Stale Nonce twice".into(),
        })
    }

    /// One STUN transaction; over UDP it retransmits (RFC 8489 §6.2.1: 500 ms, doubling).
    async fn transact(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Option<&ClientAuth>,
    ) -> Result<Response, PathFailure> {
        self.tid += 1;
        let tid = self.tid;
        let req = client::request(method, TransactionId::from(tid), attrs, auth);
        let mut rto = Duration::from_millis(500);
        let mut buf = vec![0u8; 2048];
        loop {
            self.write_raw(&req)
                .await
                .map_err(|e| PathFailure::from_io(&e))?;
            let wait = tokio::time::sleep(rto);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait, if matches!(self.link, Link::Udp(_)) => break,
                    frame = self.read_raw(&mut buf) => {
                        let n = frame.map_err(|e| PathFailure::from_io(&e))?;
                        if let Ok(r) = client::parse(&buf[..n], None) {
                            if r.transaction == tid {
                                return Ok(r);
                            }
                        }
                    }
                }
            }
            rto *= 2;
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.link {
            Link::Udp(s) => s.send(bytes).await.map(|_| ()),
            Link::Stream { io, .. } => io.write_all(bytes).await,
        }
    }

    /// The next datagram or frame, into `out`; returns its length.
    async fn read_raw(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        match &mut self.link {
            Link::Udp(s) => {
                out.resize(65_536, 0);
                s.recv(out).await
            }
            Link::Stream { io, buf, filled } => loop {
                match stream_frame_len(&buf[..*filled]) {
                    Ok(Some(len)) => {
                        out.clear();
                        out.extend_from_slice(&buf[..len]);
                        buf.copy_within(len..*filled, 0);
                        *filled -= len;
                        return Ok(len);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                let n = io.read(&mut buf[*filled..]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::ConnectionReset.into());
                }
                *filled += n;
            },
        }
    }

    /// Sends one datagram to the media service.
    pub(crate) async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        if self.turn.is_none() {
            return self.write_raw(datagram).await;
        }
        let stream = matches!(self.link, Link::Stream { .. });
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        let pad = if stream {
            cloudproxy_proto::channel::stream_padding(datagram.len())
        } else {
            0
        };
        framed.resize(4 + datagram.len() + pad, 0);
        cloudproxy_proto::channel::write_header(&mut framed, CHANNEL, datagram.len() as u16);
        framed[4..4 + datagram.len()].copy_from_slice(datagram);
        let r = self.write_raw(&framed).await;
        self.scratch = framed;
        r
    }

    /// Receives the next datagram from the media service into `out` (its payload only).
    pub(crate) async fn recv(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let n = self.read_raw(out).await?;
            if self.turn.is_none() {
                out.truncate(n);
                return Ok(());
            }
            match cloudproxy_proto::channel::parse_header(&out[..n]) {
                Some((CHANNEL, len)) if 4 + len <= n => {
                    out.copy_within(4..4 + len, 0);
                    out.truncate(len);
                    return Ok(());
                }
                _ => {
                    // A STUN answer to a refresh: a stale nonce is learnt for the next one.
                    if let Ok(r) = client::parse(&out[..n], None) {
                        if let (Some((438, _)), Some(nonce)) = (r.error, r.nonce) {
                            if let Some(t) = self.turn.as_mut() {
                                t.auth.nonce = nonce;
                                t.next_refresh = Instant::now();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Keeps the allocation, the permission and the channel binding alive; call it from time to
    /// time (every second is plenty). Answers are read by [`Pipe::recv`].
    pub(crate) async fn maintain(&mut self) -> io::Result<()> {
        let Some(turn) = self.turn.as_mut() else {
            return Ok(());
        };
        if Instant::now() < turn.next_refresh {
            return Ok(());
        }
        turn.next_refresh = Instant::now() + REFRESH_EVERY;
        let auth = turn.auth.clone();
        let media = turn.media;
        for (method, attrs) in [
            (REFRESH, vec![Attr::Lifetime(600)]),
            (
                CHANNEL_BIND,
                vec![Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(media)],
            ),
        ] {
            self.tid += 1;
            let req = client::request(method, TransactionId::from(self.tid), &attrs, Some(&auth));
            self.write_raw(&req).await?;
        }
        Ok(())
    }
}

async fn udp_to(target: SocketAddr) -> Result<UdpSocket, PathFailure> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| PathFailure::from_io(&e))?;
    sock.connect(target)
        .await
        .map_err(|e| PathFailure::from_io(&e))?;
    Ok(sock)
}
