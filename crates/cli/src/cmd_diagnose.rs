//! `cloudproxy diagnose`: from the current network, check each path a client could use —
//! direct UDP to the media service, and the relay over UDP, TCP and TLS 443 — then recommend a
//! mode. Progress goes to stderr as it runs; the report goes to stdout (text, or `--json`).
//! With an HTTP proxy (`--http-proxy`, or `HTTPS_PROXY`), the report names it and the TCP and
//! TLS paths are checked through it (`via_http_proxy`).
//! Exit status: 0 when a mode is recommended, 1 when no cloud-proxy mode works from here, 2
//! for usage errors.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cloudproxy_sdk::{probe, ClientConfig, CloudProxyType, PathFailure, PathKind, Probe};
use serde_json::json;

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct DiagnoseArgs {
    /// The media service, as this client would reach it directly.
    #[arg(long, value_name = "ADDR")]
    media: SocketAddr,
    /// Relay TURN/UDP address (a published Force UDP proxy), IP:PORT.
    #[arg(long, value_name = "ADDR")]
    udp_proxy: Option<SocketAddr>,
    /// Relay TURN/TCP address, IP:PORT.
    #[arg(long, value_name = "ADDR")]
    tcp_proxy: Option<SocketAddr>,
    /// Relay TURN/TLS address (TCP 443), IP:PORT.
    #[arg(long, value_name = "ADDR")]
    tls_proxy: Option<SocketAddr>,
    #[command(flatten)]
    member: crate::cmd_join::MemberArgs,
    /// Time allowed per path (as `join --attempt-timeout`; `--timeout` is its earlier name).
    #[arg(long, alias = "timeout", value_name = "DURATION", value_parser = crate::duration::parse, default_value = "4s")]
    attempt_timeout: Duration,
    /// HTTP proxy to check the TCP paths through (CONNECT), as for `join`. Default:
    /// `https_proxy`/`HTTPS_PROXY`, with `no_proxy`/`NO_PROXY`.
    #[arg(long, value_name = "URL")]
    http_proxy: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// One path's result, and whether it went through the HTTP proxy.
type Checked = (Result<Probe, PathFailure>, bool);

/// What to use, given which paths work. Direct UDP: Auto (it will go direct). Otherwise the
/// proxy over UDP gives better quality than TLS (no head-of-line blocking), so Force UDP; then
/// TLS 443: Auto falls back to it on its own, Force TCP pins it to the published addresses.
fn recommend(results: &[(PathKind, Option<Checked>)]) -> (Option<CloudProxyType>, &'static str) {
    let ok = |k: PathKind| {
        results
            .iter()
            .any(|(p, r)| *p == k && matches!(r, Some((Ok(_), _))))
    };
    if ok(PathKind::Direct) {
        (
            Some(CloudProxyType::None),
            "direct UDP works: use Auto (the default)",
        )
    } else if ok(PathKind::TurnUdp) {
        (
            Some(CloudProxyType::UdpProxy),
            "UDP to the media service is blocked but UDP to the proxy works: use Force UDP",
        )
    } else if ok(PathKind::TurnTls) {
        (
            Some(CloudProxyType::TcpProxy),
            "only TLS on TCP 443 to the proxy works: use Force TCP (Auto would also fall back to it)",
        )
    } else if ok(PathKind::TurnTcp) {
        (None, "only plain TCP to the proxy works; no cloud-proxy mode uses it: ask for TCP 443 or UDP to the published addresses")
    } else {
        (None, "no path works: ask the network's administrators to allow the published proxy addresses (see the allow-list table)")
    }
}

pub(crate) fn run(args: DiagnoseArgs) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .map_err(Failure::Runtime)?;
    rt.block_on(diagnose(args))
}

async fn diagnose(args: DiagnoseArgs) -> Result<(), Failure> {
    let mut config = ClientConfig::new(args.media);
    config.attempt_timeout = args.attempt_timeout.max(Duration::from_millis(1));
    let proxy = crate::cmd_join::http_proxy(args.http_proxy.as_deref()).map_err(Failure::Usage)?;
    match &proxy {
        Some((p, from)) => {
            eprintln!("HTTP proxy {p} (from {from}): TCP and TLS paths go through it")
        }
        None => eprintln!("no HTTP proxy (none given, HTTPS_PROXY unset): every path goes direct"),
    }
    config.http_proxy = proxy.as_ref().map(|(p, _)| p.clone());
    // Which paths went through the proxy, by kind.
    let via = |kind: PathKind, target: SocketAddr| config.tunnel_for(kind, target).is_some();
    let paths = [
        (PathKind::Direct, Some(args.media)),
        (PathKind::TurnUdp, args.udp_proxy),
        (PathKind::TurnTcp, args.tcp_proxy),
        (PathKind::TurnTls, args.tls_proxy),
    ];
    let mut results = Vec::new();
    let total = paths.iter().filter(|(_, t)| t.is_some()).count();
    let mut n = 0;
    for (kind, target) in paths {
        let Some(target) = target else {
            results.push((kind, None));
            continue;
        };
        n += 1;
        let through = if via(kind, target) {
            " through the HTTP proxy"
        } else {
            ""
        };
        eprint!("[{n}/{total}] {kind} to {target}{through} ... ");
        let _ = std::io::stderr().flush();
        let r = probe(
            &config,
            kind,
            target,
            &args.member.channel,
            args.member.uid,
            &args.member.token,
            5,
        )
        .await
        .map_err(|e| Failure::Usage(e.into()))?;
        match &r {
            Ok(p) => eprintln!(
                "ok: joined in {} ms, rtt {}",
                p.join_ms,
                p.rtt_ms.map_or("n/a".into(), |r| format!("{r:.1} ms"))
            ),
            Err(f) => eprintln!("failed: {f}"),
        }
        results.push((kind, Some((r, via(kind, target)))));
    }
    let (mode, why) = recommend(&results);
    let mut out = std::io::stdout().lock();
    if args.json {
        let paths: Vec<_> = results
            .iter()
            .map(|(kind, r)| match r {
                None => json!({"path": kind, "checked": false}),
                Some((Ok(p), via)) => json!({"path": kind, "checked": true, "ok": true, "via_http_proxy": via, "target": p.target, "join_ms": p.join_ms, "rtt_ms": p.rtt_ms, "seen_as": p.seen_as}),
                Some((Err(f), via)) => json!({"path": kind, "checked": true, "ok": false, "via_http_proxy": via, "error": f.to_string(), "failure": f}),
            })
            .collect();
        let http_proxy = proxy
            .as_ref()
            .map(|(p, from)| json!({"proxy": p.to_string(), "from": from}));
        let _ = writeln!(
            out,
            "{}",
            json!({"http_proxy": http_proxy, "paths": paths, "recommended_mode": mode, "why": why})
        );
    } else {
        match &proxy {
            Some((p, from)) => {
                let _ = writeln!(out, "http proxy {p} (from {from})");
            }
            None => {
                let _ = writeln!(out, "http proxy none");
            }
        }
        for (kind, r) in &results {
            let through = |via: &bool| {
                if *via {
                    " (through the HTTP proxy)"
                } else {
                    ""
                }
            };
            let line = match r {
                None => "not checked (no address given)".to_owned(),
                Some((Ok(p), via)) => format!(
                    "ok    join {} ms, rtt {}{}",
                    p.join_ms,
                    p.rtt_ms.map_or("n/a".into(), |r| format!("{r:.1} ms")),
                    through(via)
                ),
                Some((Err(f), via)) => format!("FAIL  {f}{}", through(via)),
            };
            let _ = writeln!(out, "{:<9} {line}", kind.as_str());
        }
        let _ = writeln!(
            out,
            "recommended: {} — {why}",
            mode.map_or("none".to_owned(), |m| m.to_string())
        );
    }
    drop(out);
    // A script must be able to tell: no mode works from here.
    match mode {
        Some(_) => Ok(()),
        None => Err(Failure::Runtime(anyhow::anyhow!(
            "no cloud-proxy mode works from this network: {why}"
        ))),
    }
}
