//! `cloudproxy bench`: the TURN load generator (crate `cloudproxy-bench`). Standard TURN only,
//! so it drives any TURN server, coturn included.
//!
//! ```text
//! cloudproxy bench --server 127.0.0.1:3478 --secret S --allocations 100 --preset audio
//! cloudproxy bench --server 127.0.0.1:3478 --secret S --rate max --size 200 --json
//! cloudproxy bench --server 127.0.0.1:3478 --secret S --allocations 10000 --setup-only --hold 30
//! cloudproxy bench --server 127.0.0.1:3478 --app APP:KEY:SECRET --allocations 1000 \
//!     --preset audio --duration 600 --churn 5          # the soak (crates/cli/benches/soak.rs)
//! ```
//!
//! Progress goes to stderr once a second; the report (text, or one JSON object with `--json`)
//! to stdout. With `--setup-only`, a line starting `ready:` on stderr says every allocation is
//! up, so a script can read the server's memory then. Exit status: 0 when the run happened
//! (loss is reported, not an error), 2 for bad flags, 1 when the server could not be used at
//! all (no allocation could be set up).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use cloudproxy_bench::{Config, Credentials, Event, Preset, Rate, Transport};

use crate::failure::Failure;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PresetArg {
    /// 50 packets/s × 160 bytes per allocation.
    Audio,
    /// 90 packets/s × 1000 bytes per allocation.
    Video,
}

/// `--rate`: packets per second per allocation, or `max`.
fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(pps) if pps > 0.0 && pps.is_finite() => Ok(Rate::PerAllocation(pps)),
        _ => Err("expected packets per second per allocation (a number above 0) or `max`".into()),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err("expected a number of seconds".into()),
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The TURN server: IP:PORT or HOST:PORT (port 3478, or 5349 for tls, if omitted).
    #[arg(long, value_name = "ADDR")]
    server: String,
    /// TURN REST shared secret (coturn --static-auth-secret; its clients' -W).
    #[arg(
        long,
        value_name = "SECRET",
        env = crate::SECRET_ENV,
        hide_env_values = true
    )]
    secret: Option<String>,
    /// An app key, APP_ID:KEY_ID:SECRET: every allocation uses a user token of the app
    /// (channel <user>-<i>, uid i), as the app's users do at a relay with a control plane.
    #[arg(
        long,
        value_name = "APP_ID:KEY_ID:SECRET",
        env = "CLOUDPROXY_BENCH_APP",
        hide_env_values = true,
        conflicts_with_all = ["secret", "password"]
    )]
    app: Option<String>,
    /// With --secret: the id in the REST usernames (`<expiry>:<user>-<i>`). With --app: the
    /// channel prefix. Otherwise: the static username, with --password.
    #[arg(long)]
    user: Option<String>,
    /// Static password (with --user).
    #[arg(long)]
    password: Option<String>,
    /// REALM to use if the server's 401 has none (the 401's REALM is used otherwise).
    #[arg(long)]
    realm: Option<String>,
    /// How to reach the server; ChannelData is padded to 4 bytes on tcp and tls, and tls
    /// offers ALPN stun.turn and accepts any certificate. The relay-to-peer leg is UDP.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// Number of allocations, each with one channel to the echo peer.
    #[arg(long, value_name = "N", default_value_t = 10)]
    allocations: usize,
    /// Payload size and per-allocation rate (--rate and --size override either).
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Packets per second per allocation, or `max`: find the highest total rate with loss
    /// under --max-loss (default: the audio preset's 50).
    #[arg(long, value_name = "PPS|max", value_parser = parse_rate)]
    rate: Option<Rate>,
    /// ChannelData payload bytes (default: the audio preset's 160).
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// Sending time of a fixed-rate run.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "10")]
    duration: Duration,
    /// Join/leave churn while a fixed rate is sent: this percentage of the allocations per
    /// minute is deleted and replaced by new ones (each with a new credential).
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    churn: f64,
    /// Sending/receiving threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Echo peer threads.
    #[arg(long, value_name = "N", default_value_t = 1)]
    echo_threads: usize,
    /// Allocations set up at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    concurrency: usize,
    /// How long a set-up request may go unanswered.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "4")]
    setup_timeout: Duration,
    /// Only set up the allocations (measures the set-up rate), then keep them idle for --hold.
    #[arg(long)]
    setup_only: bool,
    /// With --setup-only: how long to keep the allocations after `ready:` is printed.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0")]
    hold: Duration,
    /// With --rate max: length of each step.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "2")]
    step: Duration,
    /// With --rate max: a step passes below this loss, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.1)]
    max_loss: f64,
    /// With --rate max: total packets per second of the first step.
    #[arg(long, value_name = "PPS", default_value_t = 1000.0)]
    start_rate: f64,
    /// Address the echo peer binds (default: loopback of the server's address family).
    #[arg(long, value_name = "IP")]
    peer_ip: Option<IpAddr>,
    /// Port the echo peer binds (default: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    peer_port: u16,
    /// An echo peer already running elsewhere (`cloudproxy bench-echo` in another namespace or
    /// on another host): channels point at it and none is started here.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["peer_ip", "peer_port"])]
    remote_peer: Option<SocketAddr>,
    /// No TURN: --server is a `cloudproxy bench-forward` ceiling forwarder pointed at
    /// --peer-port (or --remote-peer), or the echo peer itself; each allocation is a plain UDP
    /// flow (UDP only, no set-up).
    #[arg(long)]
    raw: bool,
    /// Send and receive buffer of every socket.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::Usage(anyhow!("{msg}"))
}

fn server_addr(s: &str, transport: Transport) -> Result<SocketAddr, Failure> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let default_port = if transport == Transport::Tls {
        5349
    } else {
        3478
    };
    let with_port = match s.parse::<IpAddr>() {
        Ok(ip) => return Ok(SocketAddr::new(ip, default_port)),
        Err(_) if !s.contains(':') => format!("{s}:{default_port}"),
        Err(_) => s.to_owned(),
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| usage(format!("--server {s}: {e}")))?
        .next()
        .ok_or_else(|| usage(format!("--server {s}: the name has no address")))
}

/// `--secret` (TURN REST) or `--user` with `--password` (static).
fn rest_or_static(
    secret: &Option<String>,
    user: &Option<String>,
    password: &Option<String>,
) -> Result<Credentials, Failure> {
    Ok(match (secret, user, password) {
        (Some(_), _, Some(_)) => {
            return Err(usage(
                "--password is for static credentials: drop it or --secret",
            ))
        }
        (Some(secret), user, None) => Credentials::Rest {
            secret: secret.clone(),
            user: user.clone().unwrap_or_else(|| "bench".into()),
        },
        (None, Some(u), Some(p)) => Credentials::Static {
            username: u.clone(),
            password: p.clone(),
        },
        (None, _, _) => {
            return Err(usage(
                "credentials: give --secret (TURN REST), --app, or both --user and --password",
            ))
        }
    })
}

fn config(args: &BenchArgs) -> Result<Config, Failure> {
    let transport = match args.transport {
        TransportArg::Udp => Transport::Udp,
        TransportArg::Tcp => Transport::Tcp,
        TransportArg::Tls => Transport::Tls,
    };
    let credentials = match (&args.app, &args.secret, &args.user, &args.password) {
        (Some(app), ..) => {
            let mut parts = app.splitn(3, ':');
            let (Some(app_id), Some(key_id), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(usage("--app: expected APP_ID:KEY_ID:SECRET"));
            };
            let c = Credentials::App {
                app_id: app_id.into(),
                key_id: key_id.into(),
                secret: secret.into(),
                channel: args.user.clone().unwrap_or_else(|| "bench".into()),
            };
            c.check()
                .map_err(|e| usage(format!("--app (and --user, the channel prefix): {e}")))?;
            c
        }
        (None, secret, user, password) => rest_or_static(secret, user, password)?,
    };
    let mut c = Config::new(server_addr(&args.server, transport)?, credentials);
    c.transport = transport;
    c.realm = args.realm.clone();
    let (preset_rate, preset_size) = match args.preset {
        Some(PresetArg::Video) => Preset::Video.rate_and_size(),
        Some(PresetArg::Audio) | None => Preset::Audio.rate_and_size(),
    };
    c.rate = args.rate.unwrap_or(Rate::PerAllocation(preset_rate));
    c.size = args.size.unwrap_or(preset_size);
    if !(cloudproxy_bench::MIN_SIZE..=cloudproxy_bench::MAX_SIZE).contains(&c.size) {
        return Err(usage(format!(
            "--size {}: must be {}..={} bytes (the payload carries a {}-byte probe header)",
            c.size,
            cloudproxy_bench::MIN_SIZE,
            cloudproxy_bench::MAX_SIZE,
            cloudproxy_bench::MIN_SIZE
        )));
    }
    let positive = |flag: &str, v: usize| {
        if v == 0 {
            Err(usage(format!("{flag}: must be at least 1")))
        } else {
            Ok(v)
        }
    };
    c.allocations = positive("--allocations", args.allocations)?;
    c.threads = positive("--threads", args.threads.unwrap_or(c.threads))?;
    c.peer.threads = positive("--echo-threads", args.echo_threads)?;
    c.setup.concurrency = positive("--concurrency", args.concurrency)?;
    c.socket_buffer = positive("--socket-buffer", args.socket_buffer)?;
    if args.duration.is_zero() && !args.setup_only && c.rate != Rate::Max {
        return Err(usage("--duration: must be above 0"));
    }
    if args.setup_timeout.is_zero() {
        return Err(usage("--setup-timeout: must be above 0"));
    }
    if args.step.is_zero() {
        return Err(usage("--step: must be above 0"));
    }
    if !(args.max_loss > 0.0 && args.max_loss < 100.0) {
        return Err(usage("--max-loss: must be a percentage between 0 and 100"));
    }
    if !(args.start_rate >= 1.0 && args.start_rate.is_finite()) {
        return Err(usage("--start-rate: must be at least 1 packet per second"));
    }
    if !args.hold.is_zero() && !args.setup_only {
        return Err(usage("--hold: only with --setup-only"));
    }
    if !(0.0..=6000.0).contains(&args.churn) {
        return Err(usage(
            "--churn: a percentage of the allocations per minute, 0 to 6000",
        ));
    }
    if args.churn > 0.0 && (args.setup_only || c.rate == Rate::Max || args.raw) {
        return Err(usage(
            "--churn: only with a fixed rate (not --rate max, --setup-only or --raw)",
        ));
    }
    c.churn_percent_per_minute = args.churn;
    c.duration = args.duration;
    c.setup.timeout = args.setup_timeout;
    c.setup.only = args.setup_only;
    c.setup.hold = args.hold;
    c.peer.ip = args.peer_ip;
    c.peer.port = args.peer_port;
    c.peer.remote = args.remote_peer;
    if args.raw
        && (transport != Transport::Udp || (args.peer_port == 0 && args.remote_peer.is_none()))
    {
        return Err(usage(
            "--raw: UDP only, and needs --peer-port or --remote-peer (where the forwarder sends)",
        ));
    }
    c.raw = args.raw;
    c.search.step = args.step;
    c.search.max_loss = args.max_loss / 100.0;
    c.search.start_pps = args.start_rate;
    Ok(c)
}

pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    let config = config(&args)?;
    let quiet = args.quiet;
    let hold = config.setup.hold;
    let mut observe = |event: Event| {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            Event::Progress(line) if !quiet => writeln!(err, "{line}"),
            Event::Step(step) if !quiet => writeln!(err, "step {:>2}: {step}", step.step),
            Event::Ready { up, requested } => writeln!(
                err,
                "ready: {up}/{requested} allocations up; holding {} s (pid {})",
                hold.as_secs_f64(),
                std::process::id()
            ),
            _ => Ok(()),
        };
        let _ = err.flush();
    };
    let report = cloudproxy_bench::run(&config, &mut observe)
        .with_context(|| format!("bench against {} over {}", config.server, config.transport))
        .map_err(Failure::Runtime)?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let json = serde_json::to_string(&report)
            .context("encoding the report")
            .map_err(Failure::Runtime)?;
        writeln!(out, "{json}")
    } else {
        write!(out, "{report}")
    };
    written
        .and_then(|()| out.flush())
        .context("writing the report to stdout")
        .map_err(Failure::Runtime)
}

/// `cloudproxy bench-echo`: the generator's echo peer on its own, for a peer in another
/// namespace or on another host (`cloudproxy bench --remote-peer`).
#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Where the peer listens.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Threads, each with an SO_REUSEPORT socket.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Send and receive buffer of every socket.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    socket_buffer: usize,
}

pub(crate) fn echo(args: EchoArgs) -> Result<(), Failure> {
    let (rt, mut term, mut int) = crate::signals::install().map_err(Failure::Runtime)?;
    let slot = (4 + cloudproxy_bench::MAX_SIZE + 3).max(2048);
    let peer = cloudproxy_bench::echo::EchoPeer::start_on(
        args.listen,
        args.threads,
        args.socket_buffer,
        slot,
    )
    .with_context(|| format!("cannot start the echo peer on {}", args.listen))
    .map_err(Failure::Runtime)?;
    println!("echo {}", peer.addr());
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    println!("received {}", peer.received());
    Ok(())
}

/// `cloudproxy bench-forward`: the throughput ceiling for `cloudproxy bench --raw`.
#[derive(Debug, clap::Args)]
pub(crate) struct ForwardArgs {
    /// Where clients send.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3478")]
    listen: SocketAddr,
    /// Where every flow goes (the generator's echo peer, --peer-port).
    #[arg(long, value_name = "ADDR")]
    peer: SocketAddr,
    /// Threads, each with an SO_REUSEPORT listener (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Send and receive buffer of every socket.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    socket_buffer: usize,
}

pub(crate) fn forward(args: ForwardArgs) -> Result<(), Failure> {
    let (rt, mut term, mut int) = crate::signals::install().map_err(Failure::Runtime)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let f = cloudproxy_bench::forward::Forwarder::start(
        args.listen,
        args.peer,
        threads,
        args.socket_buffer,
    )
    .with_context(|| format!("cannot start the forwarder on {}", args.listen))
    .map_err(Failure::Runtime)?;
    eprintln!(
        "forwarding {} <-> {} ({threads} threads)",
        f.addr(),
        args.peer
    );
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    f.stop();
    Ok(())
}
