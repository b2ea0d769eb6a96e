//! [`Control`]: the control plane running on its own thread and tokio runtime.

use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::api::router;
use crate::error::ControlError;
use crate::state::{AppState, Settings};
use crate::store::{random_hex, Store};

/// How long [`Control::stop`] lets open requests finish before closing them.
const DRAIN: Duration = Duration::from_secs(5);

/// Everything the control plane needs; only the binary reads flags and the environment.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the HTTP API listens. Port 0 picks a free port ([`Control::local_addr`]).
    /// Default `127.0.0.1:8480`.
    pub listen: SocketAddr,
    /// `sqlite:PATH` (created when missing), `sqlite::memory:` or `postgres://…`.
    /// Default `sqlite:cloudproxy-control.db` (in the working directory).
    pub database: String,
    /// The operator's bearer key, 16 to 256 printable ASCII characters. `None` (the default)
    /// generates one at start ([`Control::operator_key`]); it is valid until the process
    /// ends and is never stored.
    pub operator_key: Option<String>,
    /// The relays' bearer key (sync, leases, usage, heartbeats, edge registration), 16 to 256
    /// printable ASCII characters. `None`: relays use the operator's key.
    pub relay_key: Option<String>,
    /// How long an admission lease lives without renewal. Default 30 s: a crashed relay's
    /// allocations stop counting against quotas within this time.
    pub lease_ttl: Duration,
    /// A relay whose last heartbeat is older than this drops out of the Auto-mode proxy list.
    /// Default 30 s (relays beat every 10 s).
    pub heartbeat_timeout: Duration,
    /// Runtime worker threads. Default 2.
    pub workers: usize,
    /// The `/demo/web` page (`cloudproxy up` only). Default none.
    pub web_demo: Option<crate::web::WebDemo>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            database: "sqlite:cloudproxy-control.db".into(),
            operator_key: None,
            relay_key: None,
            lease_ttl: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(30),
            workers: 2,
            web_demo: None,
        }
    }
}

/// A running control plane. Dropping it stops it, as [`Control::stop`] does.
pub struct Control {
    addr: SocketAddr,
    operator_key: String,
    generated_key: bool,
    backend: &'static str,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    /// Binds the listener, opens (and migrates) the database, and serves on a new thread with
    /// its own runtime. Errors name what failed: the address, the database URL, a migration.
    ///
    /// It blocks until the database is open (a second or so), so it may be called from
    /// anywhere, async code included. When the operator key was generated, the caller (the
    /// binary) prints [`Control::operator_key`]: the library never logs secrets.
    pub fn start(config: ControlConfig) -> Result<Control, ControlError> {
        let key_ok = |key: &str| {
            (16..=256).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
        };
        if config.relay_key.as_deref().is_some_and(|k| !key_ok(k)) {
            return Err(ControlError::OperatorKey);
        }
        let (operator_key, generated_key) = match config.operator_key.clone() {
            Some(key) => {
                if !key_ok(&key) {
                    return Err(ControlError::OperatorKey);
                }
                (key, false)
            }
            None => (format!("cpo_{}", random_hex(32)), true),
        };
        let listener = bind(config.listen).map_err(|source| ControlError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ControlError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, stop_serving) = watch::channel(false);
        // Everything async happens on the new thread's runtime, so `start` works from inside
        // another runtime too; the thread reports whether the database opened.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let state_key = operator_key.clone();
        let thread = std::thread::Builder::new()
            .name("cloudproxy-control".into())
            .spawn(move || {
                serve_thread(config, listener, state_key, stop_serving, ready_tx);
            })
            .map_err(ControlError::Runtime)?;
        let backend = match ready_rx.recv() {
            Ok(Ok(backend)) => backend,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ControlError::Runtime(std::io::Error::other(
                    "the control plane thread ended during start",
                )));
            }
        };
        tracing::info!(%addr, backend, "control plane listening");
        Ok(Control {
            addr,
            operator_key,
            generated_key,
            backend,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator's bearer key (the configured one, or the generated one).
    pub fn operator_key(&self) -> &str {
        &self.operator_key
    }

    /// Whether [`Control::operator_key`] was generated at start (the binary prints it then).
    pub fn operator_key_generated(&self) -> bool {
        self.generated_key
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Stops accepting, lets open requests finish (up to 5 s), closes the database, and
    /// waits for the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server thread: runtime, database, router, then serving until `stop` turns true.
fn serve_thread(
    config: ControlConfig,
    listener: TcpListener,
    operator_key: String,
    mut stop_serving: watch::Receiver<bool>,
    ready: std::sync::mpsc::SyncSender<Result<&'static str, ControlError>>,
) {
    // Every way the start can fail is answered on `ready` once, here.
    let (runtime, store, listener, app) = match start(&config, listener, &operator_key) {
        Ok(started) => started,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut stop_draining = stop_serving.clone();
    runtime.block_on(async move {
        let _ = ready.send(Ok(store.backend()));
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_serving.wait_for(|stop| *stop).await;
        });
        let drain_deadline = async move {
            let _ = stop_draining.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            result = serve => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "control plane server failed");
                }
            }
            () = drain_deadline => {
                tracing::warn!("control plane: requests still open after the drain time");
            }
        }
        store.close().await;
    });
    runtime.shutdown_timeout(DRAIN);
}

/// The runtime, and what serving needs made on it: the opened store, the listener handed to
/// tokio, and the router over the store (with the web demo when configured).
fn start(
    config: &ControlConfig,
    listener: TcpListener,
    operator_key: &str,
) -> Result<(Runtime, Store, tokio::net::TcpListener, axum::Router), ControlError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .thread_name("cloudproxy-control")
        .enable_all()
        .build()
        .map_err(ControlError::Runtime)?;
    match runtime.block_on(prepare(config, listener, operator_key)) {
        Ok((store, listener, app)) => Ok((runtime, store, listener, app)),
        Err(e) => {
            runtime.shutdown_timeout(DRAIN);
            Err(e)
        }
    }
}

async fn prepare(
    config: &ControlConfig,
    listener: TcpListener,
    operator_key: &str,
) -> Result<(Store, tokio::net::TcpListener, axum::Router), ControlError> {
    let store = Store::open(&config.database).await?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| ControlError::Bind {
            addr: config.listen,
            source,
        })?;
    let settings = Settings {
        lease_ttl: config.lease_ttl.as_secs().max(1) as i64,
        heartbeat_timeout: config.heartbeat_timeout.as_secs().max(1) as i64,
    };
    let state = AppState::with_relays(
        store.clone(),
        operator_key,
        config.relay_key.as_deref(),
        settings,
    );
    let mut app = router(state).await;
    if let Some(demo) = config.web_demo.clone() {
        app = app.merge(crate::web::demo_routes(demo));
    }
    Ok((store, listener, app))
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The API listener, with SO_REUSEADDR: a restarted control plane binds again at once even
/// while connections of the previous process sit in TIME_WAIT (std's `bind` does not set it,
/// and a rolling restart would fail for up to 60 s). Without SO_REUSEPORT, so a port another
/// process listens on still fails.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}
