//! A datagram pipe to the media service: straight over UDP, or through a TURN relay over UDP,
//! TCP or TLS with a channel bound to the media service (RFC 8656 §12).
//!
//! Setting up a TURN pipe is: connect, Allocate (answer the 401 challenge), ChannelBind to the
//! media service. Afterwards every media datagram travels as ChannelData, and the pipe refreshes
//! the allocation and the channel binding before they expire.
//!
//! A pipe gives back what it holds when it ends: [`Pipe::close`] deletes the allocation and
//! waits (bounded) for the answer; dropping a pipe does the same in the background
//! (`release.rs` has the scheme and its limits).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Method, Response, TransactionId, ALLOCATE, CHANNEL_BIND, REFRESH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::PathFailure;
use crate::event::PathKind;
use crate::http_proxy::HttpProxy;
use crate::release::{Held, Release, Released};
use crate::transport::{Link, Stream};

/// The channel number the SDK binds to the media service.
const CHANNEL: u16 = 0x4000;
/// Refresh the channel binding (600 s) and its permission (300 s) this often.
const REFRESH_EVERY: Duration = Duration::from_secs(120);

/// TURN state kept for refreshes and for the release.
struct Turn {
    auth: ClientAuth,
    media: SocketAddr,
    next_refresh: Instant,
    /// The relay answered the Allocate with success: there is an allocation to delete.
    allocated: bool,
}

/// Whom a [`Pipe::exchange`] talks to.
#[derive(Clone, Copy)]
pub(crate) enum Layer {
    /// The TURN server (or, on a direct pipe, whatever the link reaches): bytes as they are.
    Turn,
    /// The media service: datagrams as [`Pipe::send`] and [`Pipe::recv`] carry them.
    Media,
}

/// What a [`Pipe::exchange`] makes of one message that came back.
pub(crate) enum Answer<T> {
    /// The exchange is over, with this.
    Done(T),
    /// Send this request instead, now, and from then on.
    Resend(Vec<u8>),
    /// Not the answer: wait on.
    Ignore,
}

/// An open path to the media service.
pub(crate) struct Pipe {
    link: Link,
    /// Set from the authenticated Allocate on (the credentials are known from then).
    turn: Option<Turn>,
    /// The transaction sent and not answered yet. While `turn` is set and not `allocated`,
    /// that is the Allocate: dropped now, the relay may still make the allocation.
    awaiting: Option<u128>,
    /// The media service answered our JOIN: a LEAVE is owed when the pipe goes.
    media_joined: bool,
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
            awaiting: None,
            media_joined: false,
            tid: u128::from(rand::random::<u64>()) << 32,
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Through the TURN relay at `proxy`: Allocate, then bind a channel to `media`. A TCP or
    /// TLS path connects `via` an HTTP proxy's CONNECT tunnel if one is given (with how long
    /// opening the tunnel may take).
    pub(crate) async fn turn(
        kind: PathKind,
        proxy: SocketAddr,
        media: SocketAddr,
        username: &str,
        password: &str,
        tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
        via: Option<(&HttpProxy, Duration)>,
    ) -> Result<Self, PathFailure> {
        let link = match kind {
            PathKind::TurnUdp => Link::Udp(udp_to(proxy).await?),
            PathKind::TurnTcp | PathKind::TurnTls => {
                let tcp = match via {
                    // A CONNECT tunnel: from here on the stream is the relay's, end to end.
                    Some((http_proxy, patience)) => http_proxy.connect(proxy, patience).await?,
                    None => TcpStream::connect(proxy)
                        .await
                        .map_err(|e| PathFailure::from_io(&e))?,
                };
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
        let auth = match (first.error, first.realm, first.nonce) {
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
        pipe.turn = Some(Turn {
            auth,
            media,
            next_refresh: Instant::now() + REFRESH_EVERY,
            allocated: false,
        });
        let r = pipe
            .authed(ALLOCATE, &[Attr::RequestedTransportUdp])
            .await?;
        if let Some(t) = pipe.turn.as_mut() {
            // From here on, however this set-up ends, the pipe deletes the allocation.
            t.allocated = true;
        }
        if r.relayed.is_empty() {
            return Err(PathFailure::Turn {
                code: 0,
                reason: "Allocate success without XOR-RELAYED-ADDRESS".into(),
            });
        }
        pipe.authed(
            CHANNEL_BIND,
            &[Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(media)],
        )
        .await?;
        Ok(pipe)
    }

    /// A request signed with the pipe's credentials, retried once with a fresh nonce on 438.
    async fn authed(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
    ) -> Result<Response, PathFailure> {
        for _ in 0..2 {
            let Some(auth) = self.turn.as_ref().map(|t| t.auth.clone()) else {
                return Err(PathFailure::Turn {
                    code: 0,
                    reason: "no credentials before the challenge".into(),
                });
            };
            let r = self.transact(method, attrs, Some(&auth)).await?;
            match r.error {
                None => return Ok(r),
                Some((438, _)) => {
                    if let Some(t) = self.turn.as_mut() {
                        t.auth.nonce = r.nonce.unwrap_or_default();
                    }
                }
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
        self.awaiting = Some(tid);
        // A stream delivers the request or fails: only UDP retransmits.
        let udp = matches!(self.link, Link::Udp(_));
        let mut rto = Duration::from_millis(500);
        let next_rto = || {
            let wait = rto;
            rto *= 2;
            udp.then_some(wait)
        };
        let response = self
            .exchange(Layer::Turn, req, next_rto, |reply| {
                Ok(match client::parse(reply, None) {
                    Ok(r) if r.transaction == tid => Answer::Done(r),
                    _ => Answer::Ignore,
                })
            })
            .await?;
        self.awaiting = None;
        Ok(response)
    }

    /// Sends `request` on `layer` until `answer` makes something of what comes back. Before
    /// each sending `patience` says how long to wait for an answer before sending again
    /// (`None`: wait on). `answer` may also replace the request, which then goes at once.
    pub(crate) async fn exchange<T>(
        &mut self,
        layer: Layer,
        mut request: Vec<u8>,
        mut patience: impl FnMut() -> Option<Duration>,
        mut answer: impl FnMut(&[u8]) -> Result<Answer<T>, PathFailure>,
    ) -> Result<T, PathFailure> {
        let mut buf = Vec::with_capacity(2048);
        loop {
            match layer {
                Layer::Turn => self.write_raw(&request).await,
                Layer::Media => self.send(&request).await,
            }
            .map_err(|e| PathFailure::from_io(&e))?;
            let patience = patience();
            let wait = tokio::time::sleep(patience.unwrap_or_default());
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait, if patience.is_some() => break,
                    received = self.receive(layer, &mut buf) => {
                        let n = received.map_err(|e| PathFailure::from_io(&e))?;
                        match answer(&buf[..n])? {
                            Answer::Done(t) => return Ok(t),
                            Answer::Resend(next) => {
                                request = next;
                                break;
                            }
                            Answer::Ignore => {}
                        }
                    }
                }
            }
        }
    }

    /// The next message on `layer`, into `out`; returns its length.
    async fn receive(&mut self, layer: Layer, out: &mut Vec<u8>) -> io::Result<usize> {
        match layer {
            Layer::Turn => self.read_raw(out).await,
            Layer::Media => self.recv(out).await.map(|()| out.len()),
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.link {
            Link::Udp(s) => s.send(bytes).await.map(|_| ()),
            Link::Stream { io, .. } => io.write_all(bytes).await,
            Link::Released => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The next datagram or frame, into `out`; returns its length.
    async fn read_raw(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        match &mut self.link {
            Link::Udp(s) => {
                // Into spare capacity: kept across calls, never zero-filled per datagram.
                out.clear();
                out.reserve(65_536);
                s.recv_buf(out).await
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
            Link::Released => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Sends one datagram to the media service.
    pub(crate) async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        if self.turn.is_none() {
            return self.write_raw(datagram).await;
        }
        let mut framed = std::mem::take(&mut self.scratch);
        self.frame(datagram, &mut framed);
        let r = self.write_raw(&framed).await;
        self.scratch = framed;
        r
    }

    /// `datagram` as this pipe carries it: as is, or as ChannelData (padded on a stream).
    fn frame(&self, datagram: &[u8], out: &mut Vec<u8>) {
        out.clear();
        if self.turn.is_none() {
            out.extend_from_slice(datagram);
            return;
        }
        let pad = if matches!(self.link, Link::Stream { .. }) {
            cloudproxy_proto::channel::stream_padding(datagram.len())
        } else {
            0
        };
        out.resize(4 + datagram.len() + pad, 0);
        cloudproxy_proto::channel::write_header(out, CHANNEL, datagram.len() as u16);
        out[4..4 + datagram.len()].copy_from_slice(datagram);
    }

    /// Records that the media service answered our JOIN over this pipe.
    pub(crate) fn joined_media(&mut self) {
        self.media_joined = true;
    }

    /// Ends the path and waits (bounded) until the relay confirms: deletes the allocation
    /// over UDP, closes the connection over TCP/TLS. The caller has said LEAVE already.
    pub(crate) async fn close(mut self) -> Released {
        self.media_joined = false;
        self.take_release().run().await
    }

    /// Moves what the pipe holds into a [`Release`]; the pipe is unusable afterwards.
    fn take_release(&mut self) -> Release {
        let farewell = self.media_joined.then(|| {
            let mut out = Vec::new();
            self.frame(&crate::media::leave(), &mut out);
            out
        });
        self.media_joined = false;
        let link = std::mem::replace(&mut self.link, Link::Released);
        let held = match self.turn.take() {
            Some(t) if t.allocated => Some(Held {
                auth: t.auth,
                allocate_in_flight: None,
            }),
            Some(t) => self.awaiting.map(|tid| Held {
                auth: t.auth,
                allocate_in_flight: Some(tid),
            }),
            None => None,
        };
        Release::new(link, held, farewell, self.tid)
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

impl Drop for Pipe {
    /// A pipe dropped without [`Pipe::close`] (a losing race candidate, a path replaced by a
    /// reconnect, a session that was cancelled) releases in the background.
    fn drop(&mut self) {
        if matches!(self.link, Link::Released) {
            return;
        }
        self.take_release().in_background();
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
