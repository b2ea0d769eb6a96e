//! The relay's link to the control plane: registration, sync, admission leases, usage
//! reports and heartbeats, on a thread of its own so no shard ever waits for HTTP.
//!
//! - **Registration**: at start the relay registers itself as an edge (region, pool, public
//!   addresses per transport, capacity), retrying until the control plane answers.
//! - **Sync** (every `sync_interval`, default 5 s): the app keys, app status and enabled modes
//!   of this relay's region. Each shard gets the new [`Directory`] through a `watch` and
//!   applies it between packets: new keys authenticate, and allocations of apps that were
//!   deleted, suspended or lost their mode here end at once. A deleted app's credentials
//!   therefore stop working within one sync interval of the deletion. When the control plane
//!   is unreachable, the relay keeps the last good copy (also written to `cache`, so a
//!   restart during an outage has it too) and `cloudproxy_control_sync_age_seconds` grows.
//! - **Admission**: a shard's [`cloudproxy_proto::Command::Admit`] comes here. Force-mode
//!   allocations take a lease (`POST /v1/leases`): 403 and 409 from the control plane become
//!   TURN 403 and 486. If the control plane does not answer within `request_timeout`, the
//!   allocation is admitted anyway — calls must not fail because the control plane is down —
//!   and counted in `cloudproxy_control_unchecked_admissions_total`; its lease is created by
//!   the next renewal. Auto-mode allocations (dynamic pool) are admitted at once, no lease.
//! - **Leases** are renewed every `lease_renew_interval` and released when allocations end.
//! - **Usage** (every `usage_interval`): allocation-seconds, bytes and peak concurrency per
//!   app, mode, tier and day, as one report with a unique id. Reports queue until the control
//!   plane acknowledges them (up to [`MAX_PENDING_REPORTS`]), in order, so an outage delays
//!   usage but loses none; the control plane applies each id once.
//! - **Heartbeats** (every `heartbeat_interval`) carry allocations and relayed kbit/s.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudproxy_proto::admission::{Access, AdmitRequest, AppAccess, Mode, Pool, Verdict};
use cloudproxy_proto::server::{AllocationHandle, SignalHandle};
use cloudproxy_proto::AppKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::RelayError;

/// Reports kept while the control plane is unreachable: at the default 30 s interval, more
/// than three days. Beyond it the oldest is dropped, with an error logged.
pub const MAX_PENDING_REPORTS: usize = 10_000;

/// How the relay reaches and reports to the control plane.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The control plane's base URL, `http://host:port`.
    pub url: String,
    /// The relay key (or the operator's).
    pub key: String,
    /// This relay's edge id: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    pub edge_id: String,
    /// The region's wire spelling: `japan`, `europe`, `north_america`, …
    pub region: String,
    pub pool: Pool,
    /// Relayed bandwidth this relay can carry, kbit/s.
    pub capacity_kbps: u64,
    /// Public addresses per transport (`udp`, `tcp`, `tls`) as clients reach them. Empty: the
    /// bound listener addresses.
    pub public: Vec<(String, SocketAddr)>,
    pub sync_interval: Duration,
    pub heartbeat_interval: Duration,
    pub lease_renew_interval: Duration,
    pub usage_interval: Duration,
    /// Every HTTP call's timeout; also how long an Allocate waits for its lease at most.
    pub request_timeout: Duration,
    /// Where the last good sync is kept across restarts. `None`: memory only.
    pub cache: Option<PathBuf>,
    /// Serve the control plane's API on the relay's TLS listeners to HTTP clients, so a
    /// Force-mode client that may reach only the published addresses can still call it.
    /// Connections are routed by ALPN (`http/1.1`) or by SNI ([`LinkConfig::api_server_name`]);
    /// TURN clients (ALPN `stun.turn`, or none) are unaffected. Default true.
    pub serve_api: bool,
    /// A TLS server name that means "the API" even without ALPN (e.g. `api.example.com`).
    pub api_server_name: Option<String>,
}

impl LinkConfig {
    /// `host:port` of the control plane, from [`LinkConfig::url`].
    pub fn upstream(&self) -> Option<String> {
        let rest = self.url.strip_prefix("http://")?;
        let authority = rest.split('/').next()?;
        (!authority.is_empty()).then(|| authority.to_owned())
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            url: "http://127.0.0.1:8480".into(),
            key: String::new(),
            edge_id: "relay-1".into(),
            region: "japan".into(),
            pool: Pool::Static,
            capacity_kbps: 1_000_000,
            public: Vec::new(),
            sync_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            lease_renew_interval: Duration::from_secs(10),
            usage_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            cache: None,
            serve_api: true,
            api_server_name: None,
        }
    }
}

/// What shards need from a sync: keys and, per active app, the modes enabled here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directory {
    pub keys: Vec<AppKey>,
    pub access: Access,
    /// The tier usage of (app, mode) is metered in.
    pub quality: HashMap<(String, Mode), String>,
}

/// From shards to the link.
#[derive(Debug)]
pub(crate) enum ToLink {
    Admit {
        shard: usize,
        allocation: AllocationHandle,
        request: AdmitRequest,
    },
    /// A granted account whose allocation was gone when the verdict arrived.
    Unused {
        account: u64,
    },
    Usage {
        account: u64,
        bytes: u64,
    },
    Closed {
        account: u64,
        bytes: u64,
    },
    /// A client's in-band request for a read-only API path.
    Signal {
        shard: usize,
        request: SignalHandle,
        path: String,
    },
}

/// From the link to a shard.
#[derive(Debug)]
pub(crate) enum FromLink {
    Verdict(AllocationHandle, Verdict),
    Signal(SignalHandle, u16, Vec<u8>),
}

/// The paths a client may fetch in-band: the public, read-only ones.
pub fn signal_path_allowed(path: &str) -> bool {
    let public = path.starts_with("/v1/allowlist") || path.starts_with("/v1/proxies?");
    public
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'\\')
        && !path.contains("..")
}

/// A shard's end of the link.
pub(crate) struct ShardLink {
    pub tx: mpsc::UnboundedSender<ToLink>,
    pub verdicts: mpsc::UnboundedReceiver<FromLink>,
    pub directory: watch::Receiver<Arc<Directory>>,
}

/// The running link; dropping it stops its thread.
#[derive(Debug)]
pub(crate) struct Link {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- the control plane's JSON -----------------------------------------------------------

#[derive(Debug, Deserialize)]
struct SyncResponse {
    apps: Vec<SyncApp>,
}

#[derive(Debug, Deserialize)]
struct SyncApp {
    app_id: String,
    status: String,
    keys: Vec<SyncKey>,
    enablements: Vec<SyncEnablement>,
}

#[derive(Debug, Deserialize)]
struct SyncKey {
    key_id: String,
    secret: String,
    not_after: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct SyncEnablement {
    region: String,
    mode: String,
    quality: String,
}

#[derive(Debug, Clone, Serialize)]
struct LeaseBody<'a> {
    lease_id: &'a str,
    relay_id: &'a str,
    app_id: &'a str,
    region: &'a str,
    mode: &'static str,
    channel: &'a str,
    user: &'a str,
}

#[derive(Debug, Deserialize)]
struct LeaseGranted {
    quality: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: String,
}

/// The directory a sync answer gives a relay of `region`.
fn directory_of(sync: &SyncResponse, region: &str) -> Directory {
    let mut d = Directory::default();
    for app in sync.apps.iter().filter(|a| a.status == "active") {
        for k in &app.keys {
            d.keys.push(AppKey {
                app_id: app.app_id.clone(),
                key_id: k.key_id.clone(),
                secret: k.secret.clone().into_bytes(),
                not_after: k.not_after.map(|t| t.max(0) as u64),
            });
        }
        let mut access = AppAccess::default();
        for e in app.enablements.iter().filter(|e| e.region == region) {
            let mode = match e.mode.as_str() {
                "force_udp" => Mode::ForceUdp,
                "force_tcp" => Mode::ForceTcp,
                _ => continue,
            };
            match mode {
                Mode::ForceUdp => access.force_udp = true,
                _ => access.force_tcp = true,
            }
            d.quality
                .insert((app.app_id.clone(), mode), e.quality.clone());
        }
        d.access.insert(app.app_id.clone(), access);
    }
    d
}

// ---- the link thread --------------------------------------------------------------------

/// One admitted allocation, as metered.
#[derive(Debug)]
struct Account {
    app: String,
    mode: Mode,
    quality: Option<String>,
    channel: String,
    user: String,
    lease: Option<String>,
    /// Seconds are counted up to here.
    since: Instant,
}

/// Usage per (app, mode, tier, day) since the last report.
#[derive(Debug, Default)]
struct Totals {
    millis: u64,
    bytes: u64,
    peak: u64,
}

type UsageKey = (String, Mode, Option<String>, String);

struct State {
    cfg: LinkConfig,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    publish: watch::Sender<Arc<Directory>>,
    verdicts: Vec<mpsc::UnboundedSender<FromLink>>,
    last_sync: Option<Instant>,
    registered: bool,
    accounts: HashMap<u64, Account>,
    next_account: u64,
    releases: Vec<String>,
    /// A lease renewal is in flight: releases wait for it (see [`renew`]).
    renewing: bool,
    period: HashMap<UsageKey, Totals>,
    reports: VecDeque<serde_json::Value>,
    boot: String,
    report_seq: u64,
    listeners: Vec<(String, SocketAddr)>,
    /// When the last heartbeat was sent and the relayed byte count then (for the load).
    last_beat: Option<(Instant, u64)>,
}

type Shared = Rc<RefCell<State>>;

/// Starts the link; blocks until the first sync answered (or failed, then the cache is used)
/// so the shards start with the current keys.
pub(crate) fn start(
    cfg: LinkConfig,
    shards: usize,
    listeners: Vec<(String, SocketAddr)>,
    metrics: Arc<Metrics>,
) -> Result<(Link, Vec<ShardLink>), RelayError> {
    // When another crate of the build turns on reqwest's rustls feature, reqwest needs a
    // process-wide crypto provider: ours (aws-lc-rs), unless one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.request_timeout)
        .build()
        .map_err(|e| RelayError::Control(format!("HTTP client: {e}")))?;
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        return Err(RelayError::Control(format!(
            "control plane URL '{}' must start with http://",
            cfg.url
        )));
    }
    let (publish, directory) = watch::channel(Arc::new(Directory::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut verdict_txs = Vec::new();
    let mut shard_links = Vec::new();
    for _ in 0..shards {
        let (vtx, vrx) = mpsc::unbounded_channel();
        verdict_txs.push(vtx);
        shard_links.push(ShardLink {
            tx: tx.clone(),
            verdicts: vrx,
            directory: directory.clone(),
        });
    }
    let listeners = if cfg.public.is_empty() {
        listeners
    } else {
        cfg.public.clone()
    };
    let init = State {
        boot: {
            use rand::RngCore;
            let mut b = [0u8; 4];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        },
        cfg,
        http,
        metrics,
        publish,
        verdicts: verdict_txs,
        last_sync: None,
        registered: false,
        accounts: HashMap::new(),
        next_account: 1,
        releases: Vec::new(),
        renewing: false,
        period: HashMap::new(),
        reports: VecDeque::new(),
        report_seq: 0,
        listeners,
        last_beat: None,
    };
    let (stop, stopped) = oneshot::channel();
    // The thread makes the first sync (or reads the cache) before anything else, and `start`
    // waits for that, so shards start with the current keys. All async work happens on the
    // new thread: `start` may be called from inside another runtime.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), RelayError>>(1);
    let thread = std::thread::Builder::new()
        .name("relay-control-link".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(RelayError::Runtime(e)));
                    return;
                }
            };
            let mut init = init;
            tighten_cache(&init.cfg);
            match rt.block_on(fetch_directory(&init.http, &init.cfg)) {
                Ok((d, raw)) => {
                    init.metrics.control_sync_age.set(0);
                    init.metrics.directory_loaded();
                    init.last_sync = Some(Instant::now());
                    write_cache(&init.cfg, &raw);
                    init.publish.send_replace(Arc::new(d));
                }
                Err(e) => {
                    init.metrics.control_sync_failures.inc();
                    tracing::warn!("control plane sync failed at start: {e}");
                    if let Some(d) = read_cache(&init.cfg) {
                        init.metrics.directory_loaded();
                        init.publish.send_replace(Arc::new(d));
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(Rc::new(RefCell::new(init)), rx, stopped));
        })
        .map_err(RelayError::Runtime)?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(RelayError::Control(
                "the control link thread ended during start".into(),
            ))
        }
    }
    Ok((
        Link {
            stop: Some(stop),
            thread: Some(thread),
        },
        shard_links,
    ))
}

async fn run(
    state: Shared,
    mut rx: mpsc::UnboundedReceiver<ToLink>,
    mut stopped: oneshot::Receiver<()>,
) {
    let cfg = state.borrow().cfg.clone();
    tokio::task::spawn_local(every(cfg.sync_interval, state.clone(), |s| async move {
        sync(&s).await;
        if !s.borrow().registered {
            register(&s).await;
        }
    }));
    tokio::task::spawn_local(every(cfg.heartbeat_interval, state.clone(), heartbeat));
    tokio::task::spawn_local(every(
        cfg.lease_renew_interval,
        state.clone(),
        |s| async move {
            renew(&s).await;
        },
    ));
    tokio::task::spawn_local(every(cfg.usage_interval, state.clone(), |s| async move {
        close_period(&s);
        send_reports(&s).await;
    }));
    tokio::task::spawn_local(every(
        Duration::from_secs(1),
        state.clone(),
        |s| async move {
            let st = s.borrow();
            if let Some(at) = st.last_sync {
                st.metrics
                    .control_sync_age
                    .set(at.elapsed().as_secs() as i64);
            }
        },
    ));
    register(&state).await;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            msg = rx.recv() => match msg {
                Some(m) => handle(&state, m),
                None => break,
            },
        }
    }
    // Last words: the usage so far, and the leases of allocations that end with the relay.
    {
        let mut s = state.borrow_mut();
        let leases: Vec<String> = s
            .accounts
            .values()
            .filter_map(|a| a.lease.clone())
            .collect();
        s.releases.extend(leases);
        // A renewal cut short with the runtime answers nothing any more.
        s.renewing = false;
    }
    close_period(&state);
    let last = async {
        send_reports(&state).await;
        release(&state).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), last).await;
}

/// Runs `f` now and every `period`.
async fn every<F, Fut>(period: Duration, state: Shared, f: F)
where
    F: Fn(Shared) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        f(state.clone()).await;
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD` (UTC) of Unix seconds.
fn day(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn url(state: &State, path: &str) -> String {
    format!("{}{path}", state.cfg.url.trim_end_matches('/'))
}

async fn fetch_directory(
    http: &reqwest::Client,
    cfg: &LinkConfig,
) -> Result<(Directory, String), String> {
    let mut req = http.get(format!("{}/v1/sync/apps", cfg.url.trim_end_matches('/')));
    if !cfg.edge_id.is_empty() {
        // Who is syncing, for the console's "sync age" of this relay.
        req = req.query(&[("edge", &cfg.edge_id)]);
    }
    let resp = req
        .bearer_auth(&cfg.key)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", cfg.url))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    let sync: SyncResponse =
        serde_json::from_str(&text).map_err(|e| format!("sync answer: {e}"))?;
    Ok((directory_of(&sync, &cfg.region), text))
}

/// Every key of every active app, from the control plane's sync endpoint (`GET
/// /v1/sync/apps`, the relay key or the operator's): what a media service needs to admit the
/// tokens the relays admit. The same request and the same reading of it as a relay's sync.
pub async fn fetch_app_keys(
    http: &reqwest::Client,
    url: &str,
    key: &str,
) -> Result<Vec<AppKey>, crate::RelayError> {
    let cfg = LinkConfig {
        url: url.to_owned(),
        key: key.to_owned(),
        // Not a relay: no edge id to report.
        edge_id: String::new(),
        ..LinkConfig::default()
    };
    let (directory, _) = fetch_directory(http, &cfg)
        .await
        .map_err(crate::RelayError::Control)?;
    Ok(directory.keys)
}

/// Replaces the sync cache, which holds every app's secret: written to a temporary file
/// created 0600 (a stale one from a crash is removed first, so its mode cannot carry over)
/// and renamed over the cache, so the cache is never readable by others, not even briefly.
fn write_cache(cfg: &LinkConfig, raw: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(path) = &cfg.cache else { return };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let done = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(raw.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        tracing::warn!("cannot write the sync cache {}: {e}", path.display());
    }
}

/// An existing sync cache readable by group or others (as earlier versions wrote it) is set
/// to 0600 with a warning, before anything reads it: the relay owns the file and can fix it,
/// where refusing to start would only stop an upgraded relay.
fn tighten_cache(cfg: &LinkConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = &cfg.cache else { return };
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            "the sync cache {} holds app secrets but was mode {mode:04o}; now 0600. Anyone \
             who could read it may have the secrets: consider rotating them",
            path.display()
        ),
        Err(e) => tracing::error!(
            "the sync cache {} holds app secrets and is mode {mode:04o}; cannot make it 0600: \
             {e}",
            path.display()
        ),
    }
}

fn read_cache(cfg: &LinkConfig) -> Option<Directory> {
    let path = cfg.cache.as_ref()?;
    let raw = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<SyncResponse>(&raw) {
        Ok(sync) => {
            tracing::warn!(
                "working from the last good sync in {} until the control plane answers",
                path.display()
            );
            Some(directory_of(&sync, &cfg.region))
        }
        Err(e) => {
            tracing::warn!("ignoring the sync cache {}: {e}", path.display());
            None
        }
    }
}

async fn sync(state: &Shared) {
    let (http, cfg) = {
        let s = state.borrow();
        (s.http.clone(), s.cfg.clone())
    };
    match fetch_directory(&http, &cfg).await {
        Ok((d, raw)) => {
            let mut s = state.borrow_mut();
            s.last_sync = Some(Instant::now());
            s.metrics.control_sync_age.set(0);
            s.metrics.directory_loaded();
            if **s.publish.borrow() != d {
                tracing::info!(
                    apps = d.access.len(),
                    keys = d.keys.len(),
                    "control plane sync: new directory"
                );
                write_cache(&cfg, &raw);
                s.publish.send_replace(Arc::new(d));
            }
        }
        Err(e) => {
            let s = state.borrow();
            s.metrics.control_sync_failures.inc();
            tracing::warn!("control plane sync failed (working from the last good copy): {e}");
        }
    }
}

async fn register(state: &Shared) {
    let (req, id) = {
        let s = state.borrow();
        let listeners: Vec<_> = s
            .listeners
            .iter()
            .map(|(t, a)| json!({"transport": t, "ip": a.ip(), "port": a.port()}))
            .collect();
        let pool = match s.cfg.pool {
            Pool::Static => "static",
            Pool::Dynamic => "dynamic",
        };
        let body = json!({
            "region": s.cfg.region, "pool": pool, "capacity_kbps": s.cfg.capacity_kbps,
            "listeners": listeners,
        });
        let req = s
            .http
            .put(url(&s, &format!("/v1/edges/{}", s.cfg.edge_id)))
            .bearer_auth(&s.cfg.key)
            .json(&body);
        (req, s.cfg.edge_id.clone())
    };
    match req.send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(edge = %id, "registered with the control plane");
            state.borrow_mut().registered = true;
            heartbeat(state.clone()).await;
        }
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            tracing::error!(edge = %id, "control plane refused the registration: {status} {text}");
        }
        Err(e) => tracing::warn!(edge = %id, "cannot register with the control plane: {e}"),
    }
}

/// One heartbeat: allocations and the relayed kbit/s since the previous one.
async fn heartbeat(state: Shared) {
    let req = {
        let mut s = state.borrow_mut();
        if !s.registered {
            return;
        }
        let bytes = s.metrics.total_bytes();
        let now = Instant::now();
        let kbps = s.last_beat.replace((now, bytes)).map_or(0, |(at, b)| {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            (bytes.saturating_sub(b) as f64 * 8.0 / 1000.0 / secs) as u64
        });
        let body = json!({"load_kbps": kbps, "allocations": s.metrics.allocations.get().max(0)});
        s.http
            .post(url(&s, &format!("/v1/edges/{}/heartbeat", s.cfg.edge_id)))
            .bearer_auth(&s.cfg.key)
            .json(&body)
    };
    match req.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
            // The control plane forgot us (its database was reset): register again.
            state.borrow_mut().registered = false;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("heartbeat failed: {e}"),
    }
}

fn handle(state: &Shared, msg: ToLink) {
    match msg {
        ToLink::Admit {
            shard,
            allocation,
            request,
        } => {
            tokio::task::spawn_local(admit(state.clone(), shard, allocation, request));
        }
        ToLink::Unused { account } => end_account(state, account, 0),
        ToLink::Usage { account, bytes } => add_bytes(&mut state.borrow_mut(), account, bytes),
        ToLink::Closed { account, bytes } => end_account(state, account, bytes),
        ToLink::Signal {
            shard,
            request,
            path,
        } => {
            tokio::task::spawn_local(signal(state.clone(), shard, request, path));
        }
    }
}

fn add_bytes(s: &mut State, account: u64, bytes: u64) {
    let Some(a) = s.accounts.get(&account) else {
        return;
    };
    let key = (a.app.clone(), a.mode, a.quality.clone(), day(unix_now()));
    s.period.entry(key).or_default().bytes += bytes;
}

/// Counts an account's seconds up to now.
fn accrue(s: &mut State, account: u64, now: Instant) {
    let Some(a) = s.accounts.get_mut(&account) else {
        return;
    };
    let millis = now.saturating_duration_since(a.since).as_millis() as u64;
    a.since = now;
    let key = (a.app.clone(), a.mode, a.quality.clone(), day(unix_now()));
    s.period.entry(key).or_default().millis += millis;
}

fn end_account(state: &Shared, account: u64, bytes: u64) {
    let mut s = state.borrow_mut();
    add_bytes(&mut s, account, bytes);
    accrue(&mut s, account, Instant::now());
    if let Some(a) = s.accounts.remove(&account) {
        if let Some(lease) = a.lease {
            s.releases.push(lease);
        }
    }
    drop(s);
    let state = state.clone();
    tokio::task::spawn_local(async move { release(&state).await });
}

/// Records the peak of (app, mode) after an admission.
fn note_peak(s: &mut State, app: &str, mode: Mode, quality: &Option<String>) {
    let live = s
        .accounts
        .values()
        .filter(|a| a.app == app && a.mode == mode)
        .count() as u64;
    let key = (app.to_owned(), mode, quality.clone(), day(unix_now()));
    let t = s.period.entry(key).or_default();
    t.peak = t.peak.max(live);
}

async fn admit(state: Shared, shard: usize, allocation: AllocationHandle, request: AdmitRequest) {
    let lease_id = {
        use rand::RngCore;
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        hex::encode(b)
    };
    let (verdict, quality, lease) = if request.mode == Mode::Auto {
        (Ok(()), None, None)
    } else {
        let req = {
            let s = state.borrow();
            let body = LeaseBody {
                lease_id: &lease_id,
                relay_id: &s.cfg.edge_id,
                app_id: &request.app_id,
                region: &s.cfg.region,
                mode: request.mode.as_str(),
                channel: &request.channel,
                user: &request.user,
            };
            s.http
                .post(url(&s, "/v1/leases"))
                .bearer_auth(&s.cfg.key)
                .json(&body)
        };
        let fallback_quality = state
            .borrow()
            .publish
            .borrow()
            .quality
            .get(&(request.app_id.clone(), request.mode))
            .cloned();
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                let q = r.json::<LeaseGranted>().await.ok().map(|g| g.quality);
                (Ok(()), q.or(fallback_quality), Some(lease_id))
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let message = r
                    .json::<ErrorBody>()
                    .await
                    .map_or_else(|_| status.to_string(), |e| e.error.message);
                let refusal = match status.as_u16() {
                    409 => (486, format!("Allocation Quota Reached: {message}")),
                    _ => (403, format!("Forbidden: {message}")),
                };
                (Err(refusal), None, None)
            }
            other => {
                let why = match other {
                    Ok(r) => r.status().to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    app = %request.app_id,
                    "admitting without the central quota check: the control plane did not answer ({why})"
                );
                state.borrow().metrics.control_unchecked_admissions.inc();
                // The lease is created by the next renewal, without a quota check.
                (Ok(()), fallback_quality, Some(lease_id))
            }
        }
    };
    let verdict = match verdict {
        Ok(()) => {
            let mut s = state.borrow_mut();
            let account = s.next_account;
            s.next_account += 1;
            s.accounts.insert(
                account,
                Account {
                    app: request.app_id.clone(),
                    mode: request.mode,
                    quality: quality.clone(),
                    channel: request.channel,
                    user: request.user,
                    lease,
                    since: Instant::now(),
                },
            );
            note_peak(&mut s, &request.app_id, request.mode, &quality);
            Verdict::Granted { account }
        }
        Err((code, reason)) => Verdict::Refused { code, reason },
    };
    let s = state.borrow();
    if let Some(tx) = s.verdicts.get(shard) {
        let _ = tx.send(FromLink::Verdict(allocation, verdict));
    }
}

/// Fetches a client's in-band request from the control plane.
async fn signal(state: Shared, shard: usize, request: SignalHandle, path: String) {
    let (status, body) = if signal_path_allowed(&path) {
        let req = {
            let s = state.borrow();
            s.http.get(url(&s, &path))
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                if (200..300).contains(&status) {
                    (status, body)
                } else {
                    let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(
                        |_| format!("control plane answered {status}"),
                        |e| e.error.message,
                    );
                    (status, message.into_bytes())
                }
            }
            Err(e) => {
                tracing::debug!("in-band request {path}: {e}");
                (
                    502,
                    b"Bad Gateway: the control plane is unreachable from this relay".to_vec(),
                )
            }
        }
    } else {
        (403, b"Forbidden: only the public read-only paths (/v1/allowlist, /v1/proxies) are served in-band".to_vec())
    };
    let s = state.borrow();
    if let Some(tx) = s.verdicts.get(shard) {
        let _ = tx.send(FromLink::Signal(request, status, body));
    }
}

/// Renewals re-create missing leases (one that expired while the control plane was out of
/// reach comes back). A renewal still on its way when an allocation ends could therefore
/// re-create that allocation's lease after its release, and the channel would count a user
/// who has gone until the TTL. So releases wait while a renewal is in flight and go out when
/// it has answered.
async fn renew(state: &Shared) {
    let req = {
        let s = state.borrow();
        let leases: Vec<LeaseBody<'_>> = s
            .accounts
            .values()
            .filter_map(|a| {
                Some(LeaseBody {
                    lease_id: a.lease.as_deref()?,
                    relay_id: &s.cfg.edge_id,
                    app_id: &a.app,
                    region: &s.cfg.region,
                    mode: a.mode.as_str(),
                    channel: &a.channel,
                    user: &a.user,
                })
            })
            .collect();
        if leases.is_empty() {
            return;
        }
        s.http
            .post(url(&s, "/v1/leases/renew"))
            .bearer_auth(&s.cfg.key)
            .json(&json!({ "leases": leases }))
    };
    state.borrow_mut().renewing = true;
    let answer = req.send().await.and_then(|r| r.error_for_status());
    state.borrow_mut().renewing = false;
    if let Err(e) = answer {
        tracing::warn!("lease renewal failed (leases expire unless renewed soon): {e}");
    }
    release(state).await;
}

async fn release(state: &Shared) {
    let (req, ids) = {
        let mut s = state.borrow_mut();
        if s.releases.is_empty() || s.renewing {
            return;
        }
        let ids = std::mem::take(&mut s.releases);
        let req = s
            .http
            .post(url(&s, "/v1/leases/release"))
            .bearer_auth(&s.cfg.key)
            .json(&json!({"relay_id": s.cfg.edge_id, "lease_ids": ids}));
        (req, ids)
    };
    if let Err(e) = req.send().await.and_then(|r| r.error_for_status()) {
        tracing::debug!("lease release failed, retried later (they expire anyway): {e}");
        state.borrow_mut().releases.extend(ids);
    }
}

/// Turns the period's usage into a report queued for sending.
fn close_period(state: &Shared) {
    let mut s = state.borrow_mut();
    let now = Instant::now();
    let ids: Vec<u64> = s.accounts.keys().copied().collect();
    for id in ids {
        accrue(&mut s, id, now);
    }
    // The peak of the period also counts allocations that were simply held throughout.
    let mut live: HashMap<(String, Mode, Option<String>), u64> = HashMap::new();
    for a in s.accounts.values() {
        *live
            .entry((a.app.clone(), a.mode, a.quality.clone()))
            .or_default() += 1;
    }
    let today = day(unix_now());
    for ((app, mode, quality), n) in live {
        let t = s
            .period
            .entry((app, mode, quality, today.clone()))
            .or_default();
        t.peak = t.peak.max(n);
    }
    let mut records = Vec::new();
    let mut keep = HashMap::new();
    for ((app, mode, quality, day), t) in s.period.drain() {
        let seconds = t.millis / 1000;
        if seconds > 0 || t.bytes > 0 || t.peak > 0 {
            records.push(json!({
                "app_id": app, "day": day, "mode": mode.as_str(), "quality": quality,
                "seconds": seconds, "bytes": t.bytes, "peak_concurrency": t.peak,
            }));
        }
        // Sub-second remainders carry over to the next report.
        if t.millis % 1000 > 0 {
            keep.insert(
                (app, mode, quality, day),
                Totals {
                    millis: t.millis % 1000,
                    ..Totals::default()
                },
            );
        }
    }
    s.period = keep;
    if records.is_empty() {
        return;
    }
    s.report_seq += 1;
    let report = json!({
        "report_id": format!("{}-{}-{}", s.cfg.edge_id, s.boot, s.report_seq),
        "relay_id": s.cfg.edge_id,
        "records": records,
    });
    s.reports.push_back(report);
    if s.reports.len() > MAX_PENDING_REPORTS {
        s.reports.pop_front();
        tracing::error!("usage reports pending beyond {MAX_PENDING_REPORTS}: dropped the oldest");
    }
    s.metrics.usage_reports_pending.set(s.reports.len() as i64);
}

/// Sends queued reports in order until one fails (it is retried at the next interval).
async fn send_reports(state: &Shared) {
    loop {
        let req = {
            let s = state.borrow();
            let Some(report) = s.reports.front() else {
                return;
            };
            s.http
                .post(url(&s, "/v1/usage"))
                .bearer_auth(&s.cfg.key)
                .json(report)
        };
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let mut s = state.borrow_mut();
                s.reports.pop_front();
                s.metrics.usage_reports_pending.set(s.reports.len() as i64);
            }
            Ok(r) if r.status().is_client_error() => {
                // The control plane will never take it (a bug, not an outage): do not block
                // the queue behind it.
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::error!("control plane refused a usage report ({status}): {text}");
                let mut s = state.borrow_mut();
                s.reports.pop_front();
                s.metrics.usage_reports_pending.set(s.reports.len() as i64);
            }
            Ok(r) => {
                tracing::warn!("usage report not accepted ({}), retried later", r.status());
                return;
            }
            Err(e) => {
                tracing::warn!("usage report not sent ({e}), retried later");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_paths_are_signaled() {
        assert!(signal_path_allowed("/v1/allowlist/japan?format=csv"));
        assert!(signal_path_allowed("/v1/proxies?region=japan"));
        assert!(!signal_path_allowed("/v1/sync/apps"));
        assert!(!signal_path_allowed("/v1/apps"));
        assert!(!signal_path_allowed("/v1/allowlist/../sync/apps"));
        assert!(!signal_path_allowed("/v1/allowlist/japan HTTP/1.1\r\nX: y"));
    }

    #[test]
    fn days() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_700_000_000), "2023-11-14");
        assert_eq!(day(951_782_400), "2000-02-29");
    }

    #[test]
    fn directory_keeps_active_apps_and_this_regions_modes() {
        let sync: SyncResponse = serde_json::from_value(json!({"generated_at": 1, "apps": [
            {"app_id": "a", "status": "active",
             "keys": [{"key_id": "k1", "secret": "s", "not_after": null}],
             "enablements": [
                {"region": "japan", "mode": "force_tcp", "max_concurrent_channels": 1,
                 "max_proxy_users_per_channel": 1, "quality": "720p"},
                {"region": "europe", "mode": "force_udp", "max_concurrent_channels": 1,
                 "max_proxy_users_per_channel": 1, "quality": "360p"}]},
            {"app_id": "b", "status": "suspended", "keys": [], "enablements": []},
            {"app_id": "c", "status": "active", "keys": [], "enablements": []},
        ]}))
        .unwrap();
        let d = directory_of(&sync, "japan");
        assert_eq!(d.keys.len(), 1);
        assert_eq!(
            d.access.get("a"),
            Some(&AppAccess {
                force_udp: false,
                force_tcp: true
            })
        );
        assert!(!d.access.contains_key("b"));
        assert_eq!(d.access.get("c"), Some(&AppAccess::default()));
        assert_eq!(
            d.quality.get(&("a".into(), Mode::ForceTcp)).unwrap(),
            "720p"
        );
        assert_eq!(d.quality.len(), 1);
    }
}
