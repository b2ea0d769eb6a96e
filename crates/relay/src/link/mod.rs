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

use cloudproxy_api::{
    AppStatus, EdgeInput, ErrorBody, Heartbeat, Lease, LeaseInput, Listener, Mode as ForceMode,
    QualityTier, Region, Release, Renewal, SyncResponse, Transport, UsageRecord, UsageReport,
};
use cloudproxy_proto::admission::{Access, AdmitRequest, AppAccess, Mode, Pool, Verdict};
use cloudproxy_proto::server::{AllocationHandle, SignalHandle};
use cloudproxy_proto::AppKey;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::RelayError;

mod cache;
mod leases;
mod signal;
mod sync;
mod usage;
mod wire;

use cache::*;
use leases::*;
use signal::*;
pub use sync::fetch_app_keys;
use sync::*;
use usage::*;
use wire::*;

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
    /// The region this relay serves.
    pub region: Region,
    /// The pool it registers in: static (published, Force modes) or dynamic (Auto).
    pub pool: Pool,
    /// Relayed bandwidth this relay can carry, kbit/s.
    pub capacity_kbps: u64,
    /// Public addresses per transport as clients reach them. Empty: the bound listener
    /// addresses.
    pub public: Vec<(Transport, SocketAddr)>,
    /// With `public` empty: publish the bound listeners with this address instead of theirs
    /// (a relay behind 1:1 NAT, which knows its public address but not which ports it bound,
    /// as when TLS fell back from 443 to 5349). `None`: the listeners as bound.
    pub public_ip: Option<std::net::IpAddr>,
    /// How often app keys, statuses and enablements are fetched (default 5 s).
    pub sync_interval: Duration,
    /// How often load and allocation counts are reported (default 10 s).
    pub heartbeat_interval: Duration,
    /// How often held leases are renewed (default 10 s).
    pub lease_renew_interval: Duration,
    /// How often usage records are reported (default 30 s).
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
            region: Region::Japan,
            pool: Pool::Static,
            capacity_kbps: 1_000_000,
            public: Vec::new(),
            public_ip: None,
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
    /// Every app key that authenticates now, current and retiring.
    pub keys: Vec<AppKey>,
    /// Per active app, which Force modes this relay's region has enabled.
    pub access: Access,
    /// The tier usage of (app, mode) is metered in.
    pub quality: HashMap<(String, Mode), QualityTier>,
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

// ---- the link thread --------------------------------------------------------------------

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
    reports: VecDeque<UsageReport>,
    boot: String,
    report_seq: u64,
    listeners: Vec<(Transport, SocketAddr)>,
    /// When the last heartbeat was sent and the relayed byte count then (for the load).
    last_beat: Option<(Instant, u64)>,
}

type LinkState = Rc<RefCell<State>>;

/// Starts the link; blocks until the first sync answered (or failed, then the cache is used)
/// so the shards start with the current keys.
pub(crate) fn start(
    cfg: LinkConfig,
    shards: usize,
    listeners: Vec<(Transport, SocketAddr)>,
    metrics: Arc<Metrics>,
) -> Result<(Link, Vec<ShardLink>), RelayError> {
    // When another crate of the build turns on reqwest's rustls feature, reqwest needs a
    // process-wide crypto provider: ours (aws-lc-rs), unless one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.request_timeout)
        .build()
        .map_err(|e| RelayError::ControlPlane(format!("HTTP client: {e}")))?;
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        return Err(RelayError::ControlPlane(format!(
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
    let listeners = match (cfg.public.is_empty(), cfg.public_ip) {
        (false, _) => cfg.public.clone(),
        (true, Some(ip)) => listeners
            .into_iter()
            .map(|(transport, a)| (transport, SocketAddr::new(ip, a.port())))
            .collect(),
        (true, None) => listeners,
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
            return Err(RelayError::ControlPlane(
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
    state: LinkState,
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
async fn every<F, Fut>(period: Duration, state: LinkState, f: F)
where
    F: Fn(LinkState) -> Fut,
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

fn handle(state: &LinkState, msg: ToLink) {
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
        let sync: SyncResponse =
            serde_json::from_value(serde_json::json!({"generated_at": 1, "apps": [
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
        let d = directory_of(&sync, Region::Japan);
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
            d.quality.get(&("a".into(), Mode::ForceTcp)),
            Some(&QualityTier::P720)
        );
        assert_eq!(d.quality.len(), 1);
    }
}
