//! The tokio UDP driver: binds the listeners, runs one [`MediaServer`] on its own thread with a
//! current-thread runtime, one receive buffer, and direct non-blocking sends.

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

use crate::server::{JoinRate, Limits, MediaServer, Transmit};
use crate::wire::HEADROOM;

/// Everything [`MediaService::start`] needs. Only the binary reads flags or the environment.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// UDP addresses to listen on. Default `127.0.0.1:7000`.
    pub listen: Vec<SocketAddr>,
    /// Application keys that sign user tokens. `static_secret` is ignored: a static-secret
    /// credential names no app, and the service admits tokens from app keys only.
    pub auth: AuthConfig,
    /// A member silent (no DATA, no PING) for this long is removed. Default 15 s.
    pub member_timeout: Duration,
    /// Channels at once. Default 10 000.
    pub max_channels: usize,
    /// Members of one channel. Default 100.
    pub max_members_per_channel: usize,
    /// Members in all channels. Default 100 000.
    pub max_members: usize,
    /// JOIN rate of one source address (see [`Limits::joins_per_source`]).
    pub joins_per_source: JoinRate,
    /// JOIN rate of one token identity (see [`Limits::joins_per_token`]).
    pub joins_per_token: JoinRate,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 7000))],
            auth: AuthConfig::default(),
            member_timeout: limits.member_timeout,
            max_channels: limits.max_channels,
            max_members_per_channel: limits.max_members_per_channel,
            max_members: limits.max_members,
            joins_per_source: limits.joins_per_source,
            joins_per_token: limits.joins_per_token,
        }
    }
}

impl MediaConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            member_timeout: self.member_timeout,
            max_channels: self.max_channels,
            max_members_per_channel: self.max_members_per_channel,
            max_members: self.max_members,
            joins_per_source: self.joins_per_source,
            joins_per_token: self.joins_per_token,
        }
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no listen address configured")]
    NoListeners,
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the media service runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// A running media service. Stops when dropped.
#[derive(Debug)]
pub struct MediaService {
    local_addrs: Vec<SocketAddr>,
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
        let server = MediaServer::new(
            &config.auth,
            config.limits(),
            Instant::now(),
            unix_now(),
            &mut rand::rng(),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let (keys_tx, keys_rx) = watch::channel(Arc::new(config.auth.app_keys.clone()));
        let listeners: Vec<_> = sockets.into_iter().zip(local_addrs.clone()).collect();
        let thread = std::thread::Builder::new()
            .name("cloudproxy-media".into())
            .spawn(move || runtime.block_on(serve(server, listeners, keys_rx, stop_rx)))
            .map_err(MediaError::Runtime)?;
        Ok(MediaService {
            local_addrs,
            keys: AppKeys(Arc::new(keys_tx)),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound addresses, in the order of [`MediaConfig::listen`] (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
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

/// The event loop: one task, one buffer, every listener polled in turn.
async fn serve(
    mut server: MediaServer,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    mut keys: watch::Receiver<Arc<Vec<AppKey>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let far_future = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let mut sleep = pin!(tokio::time::sleep_until(far_future()));
    let mut armed: Option<Instant> = None;
    let mut first = 0usize;
    loop {
        let deadline = server.poll_timeout();
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
                server.handle_timeout(Instant::now());
                // A fired sleep stays ready: always re-arm it.
                armed = server.poll_timeout();
                sleep
                    .as_mut()
                    .reset(armed.map_or_else(far_future, tokio::time::Instant::from_std));
                continue;
            }
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
            }) => r,
        };
        let (i, len, from) = match received {
            Ok(r) => r,
            Err(e) => {
                // E.g. ICMP port unreachable reported on the next receive: not fatal.
                tracing::debug!("receive error: {e}");
                continue;
            }
        };
        let local = listeners[i].1;
        server.handle(
            &mut buf[..HEADROOM + len],
            local,
            from,
            Instant::now(),
            &mut |t: Transmit<'_>| {
                let socket = if t.local == local {
                    Some(&listeners[i].0)
                } else {
                    listeners
                        .iter()
                        .find(|(_, a)| *a == t.local)
                        .map(|(s, _)| s)
                };
                if let Some(s) = socket {
                    send_now(s, t.bytes, t.to);
                }
            },
        );
    }
}

/// One non-blocking `sendto`. tokio's `try_send_to` reports WouldBlock until the reactor has
/// seen the socket writable once, which drops the first packets of a fresh socket; the kernel
/// call does not. A full send buffer drops the datagram, as UDP media expects.
fn send_now(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(socket)
        .send_to(data, &to.into())
        .is_ok()
}
