//! One run from start to report: echo peer, allocation set-up on a bounded thread pool, the
//! workers (and the churn thread, [`crate::churn`]), the phases ([`crate::phase`]), then
//! release and tally.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::churn::{self, Churn};
use crate::config::{Config, Rate};
use crate::control::{Control, Live};
use crate::echo::EchoPeer;
use crate::error::{hint, BenchError, SetupError};
use crate::histogram::Histogram;
use crate::phase::Phases;
use crate::report::{
    ChurnReport, DataCounters, Event, Latency, Report, SetupReport, Verdict, Workload,
};
use crate::setup::{self, Allocation, Params};
use crate::sys;
use crate::worker::Worker;

/// Runs the load described by `config`, reporting progress to `observe`.
pub fn run(config: &Config, observe: &mut dyn FnMut(Event)) -> Result<Report, BenchError> {
    sys::raise_fd_limit();
    let slot = (4 + config.size + 3).max(2048);
    // An echo peer here, unless the channels point at one already running elsewhere.
    let (echo, peer) = match config.peer.remote {
        Some(remote) => (None, remote),
        None => {
            let ip = config.peer_ip();
            let at = std::net::SocketAddr::new(ip, config.peer.port);
            let echo = EchoPeer::start_on(at, config.peer.threads, config.socket_buffer, slot)
                .map_err(|source| BenchError::EchoPeer { ip, source })?;
            let addr = echo.addr();
            (Some(echo), addr)
        }
    };
    let params = Params {
        server: config.server,
        transport: config.transport,
        credentials: config.credentials.clone(),
        realm: config.realm.clone(),
        peer,
        timeout: config.setup.timeout,
        buffer: config.socket_buffer,
        tls: (config.transport == crate::Transport::Tls).then(crate::tls::insecure_client_config),
    };
    let (allocations, setup, first_failure) = if config.raw {
        raw_flows(config)?
    } else {
        set_up_all(config, &params, observe)?
    };
    if allocations.is_empty() {
        let summary = setup
            .failures
            .iter()
            .map(|(why, n)| format!("{why} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let skipped = match setup.not_attempted {
            0 => String::new(),
            n => format!(" ({n} not attempted)"),
        };
        let transport = config.transport.to_string();
        return Err(BenchError::NoAllocations {
            requested: config.allocations,
            summary: summary + &skipped,
            hint: first_failure
                .map(|e| hint(&e, config.server, &transport, peer))
                .unwrap_or_default(),
        });
    }

    let control = Arc::new(Control::default());
    let threads = config.threads.clamp(1, allocations.len());
    let mut shares: Vec<Vec<Allocation>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, a) in allocations.into_iter().enumerate() {
        shares[i % threads].push(a);
    }
    let lives: Vec<Arc<Live>> = (0..threads).map(|_| Arc::default()).collect();
    // Churn only where allocations are set up (not --raw) and while a fixed rate is sent.
    let churn_every = match config.rate {
        Rate::PerAllocation(_) if !config.raw && !config.setup.only => churn::interval(
            shares.iter().map(Vec::len).sum(),
            config.churn_percent_per_minute,
        ),
        _ => None,
    };
    let (mut senders, mut receivers) = (Vec::new(), Vec::new());
    for _ in 0..threads {
        let (tx, rx) = match churn_every {
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        senders.extend(tx);
        receivers.push(rx);
    }
    let slots: Vec<usize> = shares.iter().map(Vec::len).collect();
    let mut handles = Vec::new();
    for ((i, share), arrivals) in shares.into_iter().enumerate().zip(receivers) {
        let worker = Worker::new(
            share,
            config.size,
            peer,
            config.transport.is_stream(),
            config.raw,
            control.clone(),
            lives[i].clone(),
            arrivals,
        )
        .map_err(BenchError::Poll)?;
        let handle = std::thread::Builder::new()
            .name(format!("bench-worker-{i}"))
            .spawn(move || worker.run());
        match handle {
            Ok(h) => handles.push(h),
            Err(source) => {
                control.stop();
                return Err(BenchError::Thread {
                    what: "worker",
                    source,
                });
            }
        }
    }

    let churn = match churn_every {
        Some(every) => {
            let first = u32::try_from(config.allocations).unwrap_or(u32::MAX);
            match Churn::spawn(params.clone(), senders, slots, first, every) {
                Ok(c) => Some(c),
                Err(source) => {
                    control.stop();
                    return Err(BenchError::Thread {
                        what: "churn",
                        source,
                    });
                }
            }
        }
        None => None,
    };
    let switch = churn.as_ref().map(|c| c.switch.clone());
    let mut phases = Phases::new(
        &control,
        &lives,
        observe,
        setup.up,
        config,
        switch.as_deref(),
    );
    let (mode, mut steps) = if config.setup.only {
        phases.hold(config.setup.hold, setup.requested);
        ("setup-only", Vec::new())
    } else {
        match config.rate {
            Rate::PerAllocation(pps) => ("fixed", vec![phases.fixed(pps)]),
            Rate::Max => ("max", phases.search(&config.search)),
        }
    };
    // The churn thread first: whatever it set up reaches a worker before the workers stop,
    // and is deleted with the rest.
    let churn = churn.map(|c| {
        let tally = c.finish();
        ChurnReport {
            percent_per_minute: config.churn_percent_per_minute,
            joined: tally.joined,
            join_failed: tally.failures.values().sum(),
            failures: tally.failures,
        }
    });
    control.stop();
    let mut latency: Vec<Histogram> = Vec::new();
    let mut counters = DataCounters::default();
    for h in handles {
        // A panicking worker loses its latency samples; its counters are in `Live` anyway.
        if let Ok(outcome) = h.join() {
            counters.add(&outcome.counters);
            for (s, hist) in outcome.latency.iter().enumerate() {
                if latency.len() <= s {
                    latency.resize_with(s + 1, Histogram::default);
                }
                latency[s].merge(hist);
            }
        }
    }
    for step in &mut steps {
        step.latency = latency.get(step.step as usize).and_then(Latency::of);
    }
    let result = match config.rate {
        _ if config.setup.only => None,
        Rate::PerAllocation(_) => steps.first().cloned(),
        // The highest rate that kept loss under the threshold, even if the generator fell
        // short of that step's target.
        Rate::Max => steps
            .iter()
            .filter(|s| s.verdict != Verdict::Loss && s.sent > 0)
            .max_by(|a, b| a.received_pps.total_cmp(&b.received_pps))
            .cloned(),
    };
    Ok(Report {
        workload: Workload {
            server: config.server.to_string(),
            transport: config.transport,
            mode,
            payload_bytes: config.size,
            allocations: config.allocations,
            per_allocation_pps: match config.rate {
                Rate::PerAllocation(p) if !config.setup.only => Some(p),
                _ => None,
            },
            threads,
            echo_threads: config.peer.threads,
        },
        setup,
        result,
        steps,
        churn,
        peer_received: echo.as_ref().map_or(0, EchoPeer::received),
        counters,
    })
}

/// With [`Config::raw`]: one connected UDP socket per "allocation", nothing to set up.
fn raw_flows(
    config: &Config,
) -> Result<(Vec<Allocation>, SetupReport, Option<SetupError>), BenchError> {
    let start = Instant::now();
    let mut allocations = Vec::new();
    let mut failures = BTreeMap::new();
    let mut first = None;
    for i in 0..config.allocations {
        let sock = std::net::UdpSocket::bind(std::net::SocketAddr::new(
            match config.server {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            0,
        ))
        .and_then(|s| {
            sys::set_buffers(&socket2::SockRef::from(&s), config.socket_buffer);
            s.connect(config.server)?;
            Ok(s)
        });
        match sock {
            Ok(s) => allocations.push(Allocation {
                index: i as u32,
                conn: crate::data_conn::DataConn::Udp(s),
                auth: None,
                relayed: config.server,
                took: Duration::ZERO,
            }),
            Err(source) => {
                let e = SetupError::Io {
                    stage: crate::error::Stage::Connect,
                    source,
                };
                *failures.entry(e.key()).or_insert(0u64) += 1;
                first.get_or_insert(e);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let up = allocations.len();
    let failed = failures.values().sum::<u64>() as usize;
    let report = SetupReport {
        requested: config.allocations,
        up,
        failed,
        not_attempted: 0,
        seconds,
        rate_per_s: 0.0,
        time: None,
        failures,
    };
    Ok((allocations, report, first))
}

/// Sets up every allocation, at most [`crate::Setup::concurrency`] at once. Gives up early when
/// the first round of attempts all failed (a wrong secret fails 10,000 times the same way).
fn set_up_all(
    config: &Config,
    params: &Params,
    observe: &mut dyn FnMut(Event),
) -> Result<(Vec<Allocation>, SetupReport, Option<SetupError>), BenchError> {
    let n = config.allocations;
    let pool = config.setup.concurrency.clamp(1, n.max(1));
    let (next, ok, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let abort = AtomicBool::new(false);
    let start = Instant::now();
    let outcomes = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for i in 0..pool {
            let h = std::thread::Builder::new()
                .name(format!("bench-setup-{i}"))
                .spawn_scoped(scope, || {
                    let (mut good, mut bad) = (Vec::new(), Vec::new());
                    while !abort.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        match setup::set_up(i as u32, params) {
                            Ok(a) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                good.push(a);
                            }
                            Err(e) => {
                                bad.push(e);
                                let f = failed.fetch_add(1, Ordering::Relaxed) + 1;
                                if f >= pool && ok.load(Ordering::Relaxed) == 0 {
                                    abort.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    (good, bad)
                });
            match h {
                Ok(h) => handles.push(h),
                Err(source) => {
                    abort.store(true, Ordering::Relaxed);
                    return Err(BenchError::Thread {
                        what: "set-up",
                        source,
                    });
                }
            }
        }
        let mut tick = start + Duration::from_secs(1);
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
            if Instant::now() >= tick {
                tick += Duration::from_secs(1);
                observe(Event::Progress(format!(
                    "[{:6.1}s] set-up: {}/{n} up, {} failed",
                    start.elapsed().as_secs_f64(),
                    ok.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                )));
            }
        }
        Ok(handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let mut allocations = Vec::new();
    let mut failures = BTreeMap::new();
    let mut first = None;
    let mut took = Histogram::default();
    for (good, bad) in outcomes {
        for a in good {
            took.record(a.took.as_nanos() as u64);
            allocations.push(a);
        }
        for e in bad {
            *failures.entry(e.key()).or_insert(0u64) += 1;
            first.get_or_insert(e);
        }
    }
    allocations.sort_by_key(|a| a.index);
    let failed = failures.values().sum::<u64>() as usize;
    let up = allocations.len();
    let report = SetupReport {
        requested: n,
        up,
        failed,
        not_attempted: n - up - failed,
        seconds,
        rate_per_s: if seconds > 0.0 {
            up as f64 / seconds
        } else {
            0.0
        },
        time: Latency::of(&took),
        failures,
    };
    Ok((allocations, report, first))
}
