//! `cloudproxy join`: join a channel through the client SDK in a cloud-proxy mode, exchange
//! packets, and print the SDK's events and a summary as JSON lines. It is how a user checks a
//! network, and how the tests drive the SDK from inside a firewall lab.
//!
//! It always leaves before it exits — also on SIGINT or SIGTERM, which end the sending early —
//! so the relay's allocation is deleted (or its connection closed) and the media service is
//! told, instead of both waiting for timeouts. A signal during the join cancels it; the
//! candidates already started release what they made (see the SDK's `release.rs`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloudproxy_sdk::{
    Client, ClientConfig, CloudProxyType, ConnectionState, Event, HttpProxy, SdkError, TlsTrust,
};
use serde_json::json;

use crate::failure::Failure;

/// Who joins which channel, with the token that admits them: the flags `join` and `diagnose`
/// share.
#[derive(Debug, clap::Args)]
pub(crate) struct MemberArgs {
    /// Channel to join.
    #[arg(long)]
    pub(crate) channel: String,
    /// This user's uid.
    #[arg(long)]
    pub(crate) uid: u32,
    /// Token from `cloudproxy token` (`<username>#<password>`).
    #[arg(long, env = "CLOUDPROXY_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {
    /// The media service, as this client would reach it directly (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    media: SocketAddr,
    /// The app id the token was minted for (checked against the token).
    #[arg(long)]
    app_id: String,
    #[command(flatten)]
    member: MemberArgs,
    /// auto (0), udp (1 or web 3) or tcp (2 or web 5).
    #[arg(long, default_value = "auto")]
    mode: CloudProxyType,
    /// A published Force UDP proxy, IP:PORT (repeatable; used in `--mode udp`).
    #[arg(long = "udp-proxy", value_name = "ADDR")]
    udp_proxies: Vec<SocketAddr>,
    /// A published Force TCP proxy: TURN over TLS, usually port 443 (repeatable; used in
    /// `--mode tcp`).
    #[arg(long = "tls-proxy", value_name = "ADDR")]
    tls_proxies: Vec<SocketAddr>,
    /// A dynamic-pool proxy, TURN over TLS, for Auto's fallback (repeatable; used in
    /// `--mode auto`).
    #[arg(long = "auto-proxy", value_name = "ADDR")]
    auto_proxies: Vec<SocketAddr>,
    /// Earlier spelling: a proxy for whichever mode is chosen.
    #[arg(long = "proxy", value_name = "ADDR", hide = true)]
    proxies: Vec<SocketAddr>,
    /// Packets to send after joining (each echoed back by the media service).
    #[arg(long, default_value_t = 10)]
    send: u32,
    /// Time between packets.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "20ms")]
    interval: Duration,
    /// Earlier spelling of --interval, in milliseconds.
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "interval")]
    interval_ms: Option<u64>,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 160)]
    size: usize,
    /// Do not ask the media service to echo our packets (count only other members' packets).
    #[arg(long)]
    no_echo: bool,
    /// CA or self-signed certificate (PEM) to verify TLS proxies with. Without it any
    /// certificate is accepted, with a warning.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// TLS server name to verify (default: the proxy's IP address).
    #[arg(long)]
    tls_name: Option<String>,
    /// Give up joining after this long (`10s`, `1500ms`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
    join_timeout: Duration,
    /// Earlier spelling of --join-timeout, in milliseconds.
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "join_timeout")]
    join_timeout_ms: Option<u64>,
    /// Give up one path after this long.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "4s")]
    attempt_timeout: Duration,
    /// Earlier spelling of --attempt-timeout, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        hide = true,
        conflicts_with = "attempt_timeout"
    )]
    attempt_timeout_ms: Option<u64>,
    /// Happy Eyeballs delay before starting the next path (RFC 8305). Setting it to the
    /// attempt timeout gives the sequential strategy: wait for a path to fail, then try the next.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "250ms")]
    stagger: Duration,
    /// Earlier spelling of --stagger, in milliseconds.
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "stagger")]
    stagger_ms: Option<u64>,
    /// Before joining, refresh the Force mode's proxies from this region's published
    /// allow-list, fetched through the given proxies (in-band over UDP for udp, HTTPS on the
    /// TLS listener for tcp).
    #[arg(long, value_name = "REGION")]
    refresh_proxies: Option<String>,
    /// HTTP proxy to tunnel the TLS paths through with CONNECT (Force TCP, Auto's TLS
    /// fallback, the allow-list fetch): http://[user:password@]host[:port], user and password
    /// percent-encoded. Default: `https_proxy`/`HTTPS_PROXY`; `no_proxy`/`NO_PROXY` applies to
    /// either.
    #[arg(long, value_name = "URL")]
    http_proxy: Option<String>,
    /// Accepted and ignored: `join` always prints JSON lines (kept for scripts that pass it).
    #[arg(long, hide = true)]
    json: bool,
}

impl JoinArgs {
    /// Folds the earlier millisecond spellings into the durations they stand for, and the
    /// mode-less `--proxy` into the chosen mode's list.
    fn normalize(&mut self) {
        let ms = |v: Option<u64>, d: &mut Duration| {
            if let Some(v) = v {
                *d = Duration::from_millis(v);
            }
        };
        ms(self.interval_ms, &mut self.interval);
        ms(self.join_timeout_ms, &mut self.join_timeout);
        ms(self.attempt_timeout_ms, &mut self.attempt_timeout);
        ms(self.stagger_ms, &mut self.stagger);
        let list = match self.mode {
            CloudProxyType::None => &mut self.auto_proxies,
            CloudProxyType::UdpProxy => &mut self.udp_proxies,
            CloudProxyType::TcpProxy => &mut self.tls_proxies,
        };
        list.append(&mut self.proxies);
    }
}

/// The HTTP proxy: `flag` (a `--http-proxy` value), else the environment's; with where it
/// came from. `NO_PROXY` from the environment applies to both.
pub(crate) fn http_proxy(flag: Option<&str>) -> anyhow::Result<Option<(HttpProxy, String)>> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(url) = flag else {
        let from = ["https_proxy", "HTTPS_PROXY"]
            .into_iter()
            .find(|n| env(n).is_some_and(|v| !v.trim().is_empty()))
            .unwrap_or("HTTPS_PROXY");
        return Ok(HttpProxy::from_vars(env)?.map(|p| (p, from.to_owned())));
    };
    let proxy = HttpProxy::parse_from(url, "--http-proxy")?.with_no_proxy_vars(env)?;
    Ok(Some((proxy, "--http-proxy".to_owned())))
}

fn print(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn trust(args: &JoinArgs) -> anyhow::Result<TlsTrust> {
    let Some(path) = &args.ca else {
        if args.mode != CloudProxyType::UdpProxy {
            eprintln!("warning: no --ca given: TLS proxy certificates are not verified");
        }
        return Ok(TlsTrust::InsecureAnyCertificate);
    };
    use rustls_pki_types::pem::PemObject as _;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--ca {}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--ca {}: no certificate in it",
        path.display()
    );
    Ok(TlsTrust::Certificates(certs))
}

pub(crate) fn run(mut args: JoinArgs) -> Result<(), Failure> {
    args.normalize();
    let claims = cloudproxy_proto::token::split(&args.member.token)
        .and_then(|(username, _)| cloudproxy_proto::token::claims(username))
        .map_err(|e| Failure::Usage(anyhow::anyhow!("--token: {e}")))?;
    let token_app = claims.app_id;
    if token_app != args.app_id {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--token was minted for app {token_app:?}, not --app-id {:?}",
            args.app_id
        )));
    }
    let mut config = ClientConfig::new(args.media);
    config.tls_trust = trust(&args).map_err(Failure::Usage)?;
    config.tls_server_name = args.tls_name.clone();
    config.join_timeout = args.join_timeout;
    config.attempt_timeout = args.attempt_timeout.max(Duration::from_millis(1));
    config.stagger = args.stagger;
    config.echo = !args.no_echo;
    let proxy = http_proxy(args.http_proxy.as_deref()).map_err(Failure::Usage)?;
    if let Some((proxy, from)) = &proxy {
        print(json!({"event": "http_proxy", "proxy": proxy.to_string(), "from": from}));
    }
    config.http_proxy = proxy.map(|(p, _)| p);
    config.proxies.auto = args.auto_proxies.clone();
    config.proxies.udp = args.udp_proxies.clone();
    config.proxies.tls = args.tls_proxies.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .map_err(Failure::Runtime)?;
    rt.block_on(session(args, config))
}

/// Silences in the media this client received: the longest between two packets, and for each
/// reconnect the one it caused, from the last packet before `reconnecting` to the first after.
#[derive(Default)]
struct MediaGaps {
    last_packet: Option<Instant>,
    longest: Duration,
    /// Set at `reconnecting`: the last packet before it (`None` if none had come yet).
    open: Option<Option<Instant>>,
    reconnects: Vec<Duration>,
}

impl MediaGaps {
    fn packet(&mut self, now: Instant) {
        if let Some(last) = self.last_packet {
            self.longest = self.longest.max(now - last);
        }
        if let Some(Some(before)) = self.open.take() {
            self.reconnects.push(now - before);
        }
        self.last_packet = Some(now);
    }

    fn reconnecting(&mut self) {
        // A second `reconnecting` before media resumed extends the same gap.
        if self.open.is_none() {
            self.open = Some(self.last_packet);
        }
    }
}

fn print_event(e: &Event) {
    print(serde_json::to_value(e).unwrap_or_default());
}

async fn session(args: JoinArgs, config: ClientConfig) -> Result<(), Failure> {
    let started = Instant::now();
    let (mut client, mut events) =
        Client::new(config).map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    client
        .set_cloud_proxy(args.mode)
        .map_err(|e| Failure::Usage(e.into()))?;
    // Events are printed from this task, as they come, so that a reconnect can be placed
    // between the packets received (see `MediaGaps`).
    let print_pending = |events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>| {
        while let Ok(e) = events.try_recv() {
            print_event(&e);
        }
    };
    if let Some(region) = &args.refresh_proxies {
        let refreshed = client.refresh_proxies(region, &args.member.token).await;
        print_pending(&mut events);
        match refreshed {
            // What was fetched: the region's published proxies (both Force modes), or the
            // Auto list; this mode's list now replaces the configured one.
            Ok(p) => print(json!({"event": "proxies_refreshed", "region": region,
                "udp": p.udp, "tls": p.tls, "auto": p.auto})),
            Err(e) => {
                print(json!({"event": "error", "message": e.to_string()}));
                return Err(Failure::Runtime(e.into()));
            }
        }
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")
        .map_err(Failure::Runtime)?;
    let mut int = signal(SignalKind::interrupt())
        .context("installing the SIGINT handler")
        .map_err(Failure::Runtime)?;
    let joining = {
        let join = client.join(&args.member.channel, args.member.uid, &args.member.token);
        tokio::pin!(join);
        loop {
            tokio::select! {
                r = &mut join => break Some(r),
                Some(e) = events.recv() => print_event(&e),
                _ = term.recv() => break None,
                _ = int.recv() => break None,
            }
        }
    };
    print_pending(&mut events);
    let Some(joining) = joining else {
        return Err(interrupted(client).await);
    };
    let info = match joining {
        Ok(info) => info,
        Err(SdkError::Join(e)) => {
            print(json!({
                "event": "error",
                "message": e.to_string(),
                "attempts": e.attempts,
                "retry_elsewhere": e.retry_elsewhere(),
                "udp_cannot_pass_proxy": e.udp_cannot_pass_proxy(),
                "http_proxy": e.http_proxy,
                "elapsed_ms": e.elapsed_ms,
            }));
            return Err(Failure::Runtime(anyhow::anyhow!("{e}")));
        }
        Err(e @ SdkError::BadToken(_)) => return Err(Failure::Usage(e.into())),
        Err(e) => return Err(Failure::Runtime(e.into())),
    };
    let payload = vec![0x5Au8; args.size];
    let mut own_echoes = 0u64;
    let mut from_others = 0u64;
    let mut gaps = MediaGaps::default();
    let mut ticker = tokio::time::interval(args.interval.max(Duration::from_millis(1)));
    let mut sent = 0u32;
    // Send at the interval while counting what comes back; then wait up to a second for the
    // last echoes.
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut signalled = false;
    // One buffer for every received payload (the SDK recycles the one it replaces).
    let mut received = Vec::new();
    loop {
        tokio::select! {
            // Packets before events: the session queues every packet of a dropped path before
            // it reports `reconnecting`, so none of them is counted after the gap opened.
            biased;
            _ = term.recv() => { signalled = true; break }
            _ = int.recv() => { signalled = true; break }
            _ = ticker.tick(), if sent < args.send => {
                if client.send(&payload).await.is_err() { break; }
                sent += 1;
                if sent == args.send {
                    drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            r = client.recv_into(&mut received) => match r {
                Ok(from) => {
                    gaps.packet(Instant::now());
                    if from.from_uid == info.uid { own_echoes += 1 } else { from_others += 1 }
                }
                Err(_) => break,
            },
            Some(e) = events.recv() => {
                if matches!(e, Event::ConnectionStateChanged { state: ConnectionState::Reconnecting, .. }) {
                    gaps.reconnecting();
                }
                print_event(&e);
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))), if drain_until.is_some() || args.send == 0 => break,
        }
        if !args.no_echo && sent == args.send && own_echoes >= u64::from(args.send) {
            break;
        }
    }
    let stats = client.stats();
    let _ = client.leave().await;
    drop(client);
    print_pending(&mut events);
    let lost = if args.no_echo {
        stats.lost
    } else {
        u64::from(sent).saturating_sub(own_echoes)
    };
    let ms = |d: Duration| d.as_millis() as u64;
    print(json!({
        "event": "summary",
        "app_id": args.app_id,
        "channel": info.channel,
        "uid": info.uid,
        "mode": info.mode,
        "path": info.path,
        "server": info.server,
        "seen_as": info.seen_as,
        "join_ms": info.elapsed_ms,
        "sent": sent,
        "received": own_echoes + from_others,
        "echoed": own_echoes,
        "from_others": from_others,
        "lost": lost,
        "rtt_ms": stats.rtt_micros.map(|us| us as f64 / 1000.0),
        "reconnects": stats.reconnects,
        "max_gap_ms": ms(gaps.longest),
        "reconnect_gaps_ms": gaps.reconnects.iter().map(|&d| ms(d)).collect::<Vec<_>>(),
        "signalled": signalled,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    }));
    Ok(())
}

/// A signal came during the join: the candidates were dropped with the join and release what
/// they made in the background; give those releases a moment before the runtime goes.
async fn interrupted(client: Client) -> Failure {
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    print(json!({"event": "error", "message": "interrupted while joining"}));
    Failure::Runtime(anyhow::anyhow!("interrupted while joining"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_flags;

    fn parse(extra: &[&str]) -> Result<JoinArgs, clap::Error> {
        let base = [
            "join",
            "--media",
            "127.0.0.1:7000",
            "--app-id",
            "a",
            "--channel",
            "c",
            "--uid",
            "1",
            "--token",
            "t",
        ];
        let mut args = parse_flags::<JoinArgs>(base.iter().chain(extra))?;
        args.normalize();
        Ok(args)
    }

    /// Join timeout, attempt timeout, stagger and interval, parsed from the `flags` (separated
    /// by spaces).
    fn timings(flags: &str) -> [Duration; 4] {
        let a = parse(&flags.split_whitespace().collect::<Vec<_>>()).unwrap();
        [a.join_timeout, a.attempt_timeout, a.stagger, a.interval]
    }

    #[test]
    fn durations_take_units_and_the_ms_spellings_still_work() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        assert_eq!(timings(""), [secs(10), secs(4), ms(250), ms(20)]);
        assert_eq!(
            timings("--join-timeout 1500ms --stagger 1s --interval 5ms"),
            [ms(1500), secs(4), secs(1), ms(5)]
        );
        assert_eq!(
            timings(
                "--join-timeout-ms 1500 --attempt-timeout-ms 700 --stagger-ms 0 --interval-ms 30"
            ),
            [ms(1500), ms(700), Duration::ZERO, ms(30)]
        );
        // One value, one spelling.
        assert!(parse(&["--join-timeout", "2s", "--join-timeout-ms", "5"]).is_err());
        assert!(parse(&["--stagger", "soon"]).is_err());
    }

    #[test]
    fn proxies_by_mode_as_diagnose_names_them() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        let a = parse(&[
            "--mode",
            "tcp",
            "--tls-proxy",
            "127.0.0.1:443",
            "--udp-proxy",
            "127.0.0.1:3478",
        ])
        .unwrap();
        assert_eq!(a.tls_proxies, [p("127.0.0.1:443")]);
        assert_eq!(a.udp_proxies, [p("127.0.0.1:3478")]);
        // The earlier `--proxy` goes to the chosen mode's list.
        let a = parse(&["--mode", "udp", "--proxy", "127.0.0.1:3478"]).unwrap();
        assert_eq!(a.udp_proxies, [p("127.0.0.1:3478")]);
        assert!(a.tls_proxies.is_empty() && a.auto_proxies.is_empty());
        let a = parse(&["--proxy", "127.0.0.1:443"]).unwrap();
        assert_eq!(a.auto_proxies, [p("127.0.0.1:443")]);
        // Hidden, but still accepted.
        assert!(parse(&["--json"]).is_ok());
    }
}
