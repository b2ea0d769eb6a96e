//! The tokio UDP driver: binds the listeners, runs one [`MediaServer`] on its own thread with a
//! current-thread runtime, one receive buffer, and direct non-blocking sends. With
//! [`MediaConfig::http`] set, the same loop also runs the WebRTC side ([`crate::webrtc`]) on its
//! own UDP socket, and the runtime serves its HTTP endpoint ([`crate::http`]).

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use cloudproxy_proto::{AppKey, AuthConfig};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};

use crate::http::Command;
use crate::server::{Endpoint, Limits, MediaServer, SessionId, Transmit};
use crate::webrtc::{Sessions, WebStats};
use crate::wire::HEADROOM;

/// Everything [`MediaService::start`] needs. Only the binary reads flags or the environment.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// UDP addresses to listen on. Default `127.0.0.1:7000`.
    pub listen: Vec<SocketAddr>,
    /// Application keys that sign user tokens. `static_secret` is ignored: a static-secret
    /// credential names no app, and the service admits tokens from app keys only.
    pub auth: AuthConfig,
    /// How much the service holds at most, and how long a silent member stays. Default
    /// [`Limits::default`].
    pub limits: Limits,
    /// Browsers: the WHIP-style HTTP endpoint and its WebRTC socket. Default none: no WebRTC.
    pub web: Option<WebConfig>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 7000))],
            auth: AuthConfig::default(),
            limits: Limits::default(),
            web: None,
        }
    }
}

/// The browser side of the service: the WHIP-style HTTP endpoint and the WebRTC socket its
/// sessions share.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The WHIP-style HTTP endpoint (`POST /v1/whip`).
    pub http: SocketAddr,
    /// The WebRTC UDP socket. Default: the first listener's IP, its port + 1 (a separate port:
    /// the UDP protocol's type bytes 0x01-0x03 are also STUN's first bytes).
    pub webrtc: Option<SocketAddr>,
    /// The address put in answers as the host candidate. Default: the WebRTC socket's own
    /// address (loopback, with a warning, when that is unspecified).
    pub webrtc_public: Option<SocketAddr>,
    /// Browser sessions at once (503 beyond). Default 1 000.
    pub max_sessions: usize,
}

impl WebConfig {
    /// The HTTP endpoint on `http`, everything else by default.
    pub fn on(http: SocketAddr) -> Self {
        Self {
            http,
            webrtc: None,
            webrtc_public: None,
            max_sessions: 1_000,
        }
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The configuration lists no UDP listen address.
    #[error("no listen address configured")]
    NoListeners,
    /// A UDP listen address could not be bound (in use, not local, no permission).
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The service's thread or runtime could not be created.
    #[error("cannot start the media service runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The WebRTC endpoint's HTTP address could not be bound.
    #[error("cannot bind HTTP {addr}: {source}")]
    BindHttp {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// A running media service. Stops when dropped.
#[derive(Debug)]
pub struct MediaService {
    local_addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    webrtc_addr: Option<SocketAddr>,
    commands: Option<tokio::sync::mpsc::Sender<Command>>,
    keys: AppKeys,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Room for the largest UDP datagram behind the headroom.
const RECV_BUFFER: usize = HEADROOM + 65_536;
/// Kernel receive buffer asked for (best effort): media arrives in bursts.
const SOCKET_BUFFER: usize = 4 << 20;

impl MediaService {
    /// Binds every listener (an error names the address), then serves on a new thread.
    pub fn start(config: MediaConfig) -> Result<MediaService, MediaError> {
        if config.listen.is_empty() {
            return Err(MediaError::NoListeners);
        }
        let mut std_sockets = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let s = StdUdpSocket::bind(addr).map_err(|source| MediaError::Bind { addr, source })?;
            s.set_nonblocking(true)
                .map_err(|source| MediaError::Bind { addr, source })?;
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(SOCKET_BUFFER);
            std_sockets.push(s);
        }
        let local_addrs = std_sockets
            .iter()
            .zip(&config.listen)
            .map(|(s, &addr)| {
                s.local_addr()
                    .map_err(|source| MediaError::Bind { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MediaError::Runtime)?;
        let sockets = {
            let _guard = runtime.enter();
            std_sockets
                .into_iter()
                .zip(&local_addrs)
                .map(|(s, &addr)| {
                    UdpSocket::from_std(s).map_err(|source| MediaError::Bind { addr, source })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let web = match &config.web {
            None => None,
            Some(web) => {
                let http = web.http;
                let udp = web.webrtc.unwrap_or_else(|| {
                    // As asked: a listener on port 0 gets a WebRTC socket on port 0 too.
                    let first = config.listen[0];
                    let port = match first.port() {
                        0 => 0,
                        p => p.wrapping_add(1),
                    };
                    SocketAddr::new(first.ip(), port)
                });
                let s = StdUdpSocket::bind(udp)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|source| MediaError::Bind { addr: udp, source })?;
                let _ = socket2::SockRef::from(&s).set_recv_buffer_size(SOCKET_BUFFER);
                let udp_local = s
                    .local_addr()
                    .map_err(|source| MediaError::Bind { addr: udp, source })?;
                let mut advertised = web.webrtc_public.unwrap_or(udp_local);
                if advertised.ip().is_unspecified() {
                    // An unspecified address is no candidate; loopback at least serves this
                    // machine's browsers.
                    let loopback = match advertised {
                        SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    };
                    tracing::warn!(
                        socket = %udp_local,
                        "the WebRTC socket is bound to an unspecified address and no public \
                         address is set: advertising {loopback} (only this machine's browsers \
                         reach it)"
                    );
                    advertised.set_ip(loopback);
                }
                let tcp = std::net::TcpListener::bind(http)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| MediaError::BindHttp { addr: http, source })?;
                let http_local = tcp
                    .local_addr()
                    .map_err(|source| MediaError::BindHttp { addr: http, source })?;
                Some((s, udp_local, advertised, tcp, http_local, web.max_sessions))
            }
        };
        let server = MediaServer::new(
            &config.auth,
            config.limits,
            Instant::now(),
            unix_now(),
            &mut rand::rng(),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let (keys_tx, keys_rx) = watch::channel(Arc::new(config.auth.app_keys.clone()));
        let listeners: Vec<_> = sockets.into_iter().zip(local_addrs.clone()).collect();
        let (mut http_addr, mut webrtc_addr, mut commands) = (None, None, None);
        let web = match web {
            None => None,
            Some((udp, udp_local, advertised, tcp, http_local, max_sessions)) => {
                let _guard = runtime.enter();
                let udp = UdpSocket::from_std(udp).map_err(|source| MediaError::Bind {
                    addr: udp_local,
                    source,
                })?;
                let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| {
                    MediaError::BindHttp {
                        addr: http_local,
                        source,
                    }
                })?;
                let sessions = Sessions::new(udp, advertised, max_sessions);
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                (http_addr, webrtc_addr) = (Some(http_local), Some(udp_local));
                commands = Some(tx.clone());
                Some((sessions, rx, tcp, tx))
            }
        };
        let thread = std::thread::Builder::new()
            .name("cloudproxy-media".into())
            .spawn(move || runtime.block_on(serve(server, listeners, web, keys_rx, stop_rx)))
            .map_err(MediaError::Runtime)?;
        Ok(MediaService {
            local_addrs,
            http_addr,
            webrtc_addr,
            commands,
            keys: AppKeys(Arc::new(keys_tx)),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound addresses, in the order of [`MediaConfig::listen`] (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The bound HTTP endpoint (with [`MediaConfig::http`]).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound WebRTC UDP socket (with [`MediaConfig::http`]).
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.webrtc_addr
    }

    /// The WebRTC side's counts and the core's, read on the event loop (blocking: call it off
    /// any runtime). `None` without the WebRTC side or once stopped.
    pub fn web_stats(&self) -> Option<(WebStats, crate::server::Stats)> {
        let commands = self.commands.as_ref()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands.blocking_send(Command::Stats { reply }).ok()?;
        answer.blocking_recv().ok()
    }

    /// A handle that replaces the app keys the running service admits (for a service that
    /// follows a control plane's apps).
    pub fn app_keys(&self) -> AppKeys {
        self.keys.clone()
    }

    /// Stops serving and waits for the thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.commands = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MediaService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Replaces a running [`MediaService`]'s app keys. The event loop applies the newest set
/// between datagrams; members already in a channel stay (their token was checked when they
/// joined), new JOINs are checked against the new keys.
#[derive(Debug, Clone)]
pub struct AppKeys(Arc<watch::Sender<Arc<Vec<AppKey>>>>);

impl AppKeys {
    /// Sets the keys; returns whether they differ from the ones in use.
    pub fn set(&self, keys: Vec<AppKey>) -> bool {
        self.0.send_if_modified(|current| {
            if **current == keys {
                return false;
            }
            *current = Arc::new(keys);
            true
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Web = (
    Sessions,
    tokio::sync::mpsc::Receiver<Command>,
    tokio::net::TcpListener,
    tokio::sync::mpsc::Sender<Command>,
);

/// What woke the event loop.
enum Wake {
    Udp(io::Result<(usize, usize, SocketAddr)>),
    Web(io::Result<(usize, SocketAddr)>),
    Command(Command),
}

/// The event loop: one task, one buffer, every listener polled in turn; with the WebRTC side,
/// its socket and the HTTP endpoint's commands too.
async fn serve(
    mut server: MediaServer,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    web: Option<Web>,
    mut keys: watch::Receiver<Arc<Vec<AppKey>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let (mut sessions, mut commands) = match web {
        Some((sessions, rx, tcp, tx)) => {
            let (http_stop, http_stopped) = oneshot::channel::<()>();
            tokio::spawn(crate::http::serve(
                tcp,
                crate::http::router(tx),
                async move {
                    let _ = http_stopped.await;
                },
            ));
            (Some((sessions, http_stop)), Some(rx))
        }
        None => (None, None),
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut web_buf = vec![0u8; RECV_BUFFER];
    let far_future = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let mut sleep = pin!(tokio::time::sleep_until(far_future()));
    let mut armed: Option<Instant> = None;
    let mut first = 0usize;
    loop {
        let web_deadline = sessions.as_ref().and_then(|(s, _)| s.next_deadline());
        let deadline = match (server.poll_timeout(), web_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline != armed {
            armed = deadline;
            sleep
                .as_mut()
                .reset(deadline.map_or_else(far_future, tokio::time::Instant::from_std));
        }
        let received = tokio::select! {
            _ = &mut stop => break,
            Ok(()) = keys.changed() => {
                let current = keys.borrow_and_update().clone();
                server.set_app_keys(&current);
                continue;
            }
            () = sleep.as_mut() => {
                let now = Instant::now();
                server.handle_timeout(now);
                if let Some((s, _)) = sessions.as_mut() {
                    s.end_removed(&mut server);
                    s.handle_timeout(now);
                    s.run(&mut server, &listeners, &mut buf, now);
                }
                // A fired sleep stays ready: always re-arm it.
                armed = None;
                sleep.as_mut().reset(far_future());
                continue;
            }
            Some(c) = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => Wake::Command(c),
            r = poll_fn(|cx| match sessions.as_ref() {
                Some((s, _)) => {
                    let mut rb = ReadBuf::new(&mut web_buf);
                    s.socket()
                        .poll_recv_from(cx, &mut rb)
                        .map(|r| r.map(|from| (rb.filled().len(), from)))
                }
                None => Poll::Pending,
            }) => Wake::Web(r),
            r = poll_fn(|cx| {
                // Start at a different listener each time so a busy one cannot starve others.
                let n = listeners.len();
                for k in 0..n {
                    let i = (first + k) % n;
                    let mut rb = ReadBuf::new(&mut buf[HEADROOM..]);
                    if let Poll::Ready(r) = listeners[i].0.poll_recv_from(cx, &mut rb) {
                        first = (i + 1) % n;
                        return Poll::Ready(r.map(|from| (i, rb.filled().len(), from)));
                    }
                }
                Poll::Pending
            }) => Wake::Udp(r),
        };
        let now = Instant::now();
        let (i, len, from) = match received {
            Wake::Udp(Ok(r)) => r,
            Wake::Udp(Err(e)) | Wake::Web(Err(e)) => {
                // E.g. ICMP port unreachable reported on the next receive: not fatal.
                tracing::debug!("receive error: {e}");
                continue;
            }
            Wake::Web(Ok((len, from))) => {
                if let Some((s, _)) = sessions.as_mut() {
                    s.receive(&mut server, from, &web_buf[..len], now);
                    s.run(&mut server, &listeners, &mut buf, now);
                }
                continue;
            }
            Wake::Command(c) => {
                if let Some((s, _)) = sessions.as_mut() {
                    command(s, &mut server, &listeners, &mut buf, c, now);
                }
                continue;
            }
        };
        let local = listeners[i].1;
        let mut web = sessions.as_mut().map(|(s, _)| s);
        server.handle(
            &mut buf[..HEADROOM + len],
            local,
            from,
            now,
            &mut |t: Transmit<'_>| match t.to {
                Endpoint::Udp { remote, local: l } => {
                    let socket = if l == local {
                        Some(&listeners[i].0)
                    } else {
                        listeners.iter().find(|(_, a)| *a == l).map(|(s, _)| s)
                    };
                    if let Some(s) = socket {
                        send_now(s, t.bytes, remote);
                    }
                }
                Endpoint::Web(id) => {
                    if let Some(s) = web.as_mut() {
                        s.write_web(id, t.bytes);
                    }
                }
            },
        );
        if let Some(s) = web {
            // Browsers written to above send now.
            s.run(&mut server, &listeners, &mut web_buf, now);
            s.end_removed(&mut server);
        }
    }
    if let Some((mut s, http_stop)) = sessions.take() {
        let _ = http_stop.send(());
        s.sweep_all(&mut server);
    }
}

fn command(
    sessions: &mut Sessions,
    server: &mut MediaServer,
    listeners: &[(UdpSocket, SocketAddr)],
    buf: &mut [u8],
    c: Command,
    now: Instant,
) {
    match c {
        Command::Offer {
            token,
            echo,
            sdp,
            reply,
        } => {
            let id = SessionId(rand::random());
            let r = sessions.offer(server, id, &token, echo, &sdp, now);
            let _ = reply.send(r.map(|answer| (id, answer)));
        }
        Command::Candidates { id, frag, reply } => {
            let _ = reply.send(sessions.candidates(id, &frag));
        }
        Command::Delete { id, reply } => {
            let _ = reply.send(sessions.delete(server, id));
        }
        Command::Stats { reply } => {
            let _ = reply.send((sessions.stats(), server.stats()));
        }
    }
    sessions.run(server, listeners, buf, now);
}

/// One non-blocking `sendto`. tokio's `try_send_to` reports WouldBlock until the reactor has
/// seen the socket writable once, which drops the first packets of a fresh socket; the kernel
/// call does not. A full send buffer drops the datagram, as UDP media expects.
fn send_now(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(socket)
        .send_to(data, &to.into())
        .is_ok()
}
