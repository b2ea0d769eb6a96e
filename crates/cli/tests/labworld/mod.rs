//! The firewall-lab world shared by the lab tests and the time-to-join benchmark: a lab with
//! the media service and the relay running in it, and `cloudproxy join` run in the client's
//! namespace.

#![allow(dead_code)] // the test and the benchmark each use a part

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cloudproxy_lab::{Lab, Profile, Role, MEDIA_ADDR, RELAY_ADDR, RELAY_POOL_ADDR};
use cloudproxy_proto::token::Token;
use cloudproxy_testkit::process::TempDir;
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cloudproxy");
const APP: &str = "labapp";
const KEY: &str = "k1";
const SECRET: &str = "lab-app-secret";
const MEDIA_PORT: u16 = 7000;

pub(crate) fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

pub(crate) fn published_udp() -> SocketAddr {
    sa(RELAY_ADDR, 3478)
}

pub(crate) fn published_tls() -> SocketAddr {
    sa(RELAY_ADDR, 443)
}

pub(crate) fn pool_tls() -> SocketAddr {
    sa(RELAY_POOL_ADDR, 443)
}

pub(crate) fn media() -> SocketAddr {
    sa(MEDIA_ADDR, MEDIA_PORT)
}

/// A lab with the media service and the relays running in it.
pub(crate) struct World {
    pub lab: Lab,
    _media: cloudproxy_lab::LabChild,
    /// Each relay's address (TURN on UDP and TCP 3478, TLS on 443) and its process.
    pub relays: Vec<(Ipv4Addr, cloudproxy_lab::LabChild)>,
}

/// The media service and one relay on [`RELAY_ADDR`], which also serves TLS on the pool
/// address (the Auto proxy).
pub(crate) fn world(profile: Profile) -> Option<World> {
    world_with_relays(profile, &[(RELAY_ADDR, &[pool_tls()])])
}

/// The media service and one relay per entry: its address, and further TLS listeners.
pub(crate) fn world_with_relays(
    profile: Profile,
    relays: &[(Ipv4Addr, &[SocketAddr])],
) -> Option<World> {
    world_with_relay_flags(profile, relays, &[])
}

/// [`world_with_relays`], each relay given `flags` too (e.g. `--metrics ADDR`).
pub(crate) fn world_with_relay_flags(
    profile: Profile,
    relays: &[(Ipv4Addr, &[SocketAddr])],
    flags: &[&str],
) -> Option<World> {
    let lab = Lab::start_or_skip(profile)?;
    let media = lab
        .spawn(
            Role::Media,
            BIN,
            ["media", "--listen", &media().to_string(), "--app", &app()],
        )
        .expect("media starts");
    media
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("media "))
        .expect("media ready");
    let relays = relays
        .iter()
        .map(|&(ip, extra_tls)| (ip, relay(&lab, ip, extra_tls, flags)))
        .collect();
    Some(World {
        lab,
        _media: media,
        relays,
    })
}

fn app() -> String {
    format!("{APP}:{KEY}:{SECRET}")
}

/// `cloudproxy relay` relaying from `ip`, with TURN on `ip`:3478 (UDP and TCP) and TLS on
/// `ip`:443 and `extra_tls`; returned once every TLS listener is up.
fn relay(
    lab: &Lab,
    ip: Ipv4Addr,
    extra_tls: &[SocketAddr],
    flags: &[&str],
) -> cloudproxy_lab::LabChild {
    let turn = sa(ip, 3478).to_string();
    let mut args: Vec<String> = ["relay", "--udp", &turn, "--tcp", &turn]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for tls in std::iter::once(sa(ip, 443)).chain(extra_tls.iter().copied()) {
        args.extend(["--tls".to_owned(), tls.to_string()]);
    }
    args.extend(
        [
            "--relay-ip",
            &ip.to_string(),
            "--allow-peer",
            &format!("{MEDIA_ADDR}/32"),
            "--app",
            &app(),
        ]
        .map(str::to_owned),
    );
    if !flags.contains(&"--metrics") {
        args.push("--no-metrics".into());
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let child = lab.spawn(Role::Relay, BIN, &args).expect("relay starts");
    let mut seen = 0;
    child
        .wait_for_line(Duration::from_secs(20), |l| {
            if l.starts_with("tls ") {
                seen += 1;
            }
            seen == 1 + extra_tls.len()
        })
        .expect("relay ready");
    child
}

pub(crate) fn token(uid: u32) -> String {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    Token::mint(APP, KEY, SECRET.as_bytes(), "lab", uid, expiry)
        .unwrap()
        .encode()
}

/// `cloudproxy diagnose --json` from the client namespace as `uid` in channel `lab` (2 s per
/// check), against the lab's media service and `proxies` (flag, address: `--udp-proxy`…), with
/// `env` set: how it ended, and its JSON report.
pub(crate) fn diagnose(
    w: &World,
    uid: u32,
    proxies: &[(&str, SocketAddr)],
    env: &[(&str, &str)],
) -> (cloudproxy_lab::ChildOutput, Value) {
    let mut cmd = w.lab.command(Role::Client, BIN);
    cmd.args(["diagnose", "--media", &media().to_string()]);
    for (flag, addr) in proxies {
        cmd.args([*flag, &addr.to_string()]);
    }
    cmd.args(["--channel", "lab", "--uid", &uid.to_string()])
        .args(["--token", &token(uid), "--timeout", "2", "--json"])
        .envs(env.iter().copied());
    let out = w
        .lab
        .spawn_command(Role::Client, cmd)
        .expect("diagnose starts")
        .finish(Duration::from_secs(40))
        .expect("diagnose ends");
    let report = out
        .stdout
        .iter()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report: {:?}", out.stderr));
    (out, report)
}

/// What `cloudproxy join` printed: its events and the final summary or error.
pub(crate) struct JoinRun {
    pub ok: bool,
    pub lines: Vec<Value>,
    pub stderr: String,
}

impl JoinRun {
    /// From the process's exit and output; lines that are not JSON are left out.
    pub(crate) fn parse(ok: bool, stdout: Vec<String>, stderr: Vec<String>) -> JoinRun {
        JoinRun {
            ok,
            lines: stdout
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            stderr: stderr.join("\n"),
        }
    }

    pub(crate) fn last(&self, event: &str) -> Option<&Value> {
        self.lines.iter().rev().find(|v| v["event"] == event)
    }

    pub(crate) fn summary(&self) -> &Value {
        self.last("summary").unwrap_or_else(|| {
            panic!(
                "no summary; output:\n{:#?}\nstderr:\n{}",
                self.lines, self.stderr
            )
        })
    }

    pub(crate) fn has(&self, event: &str) -> bool {
        self.last(event).is_some()
    }
}

pub(crate) fn join(w: &World, mode: &str, proxies: &[SocketAddr], uid: u32, send: u32) -> JoinRun {
    join_with(w, mode, proxies, uid, send, &[])
}

/// `join` with extra flags (e.g. `--stagger-ms`).
pub(crate) fn join_with(
    w: &World,
    mode: &str,
    proxies: &[SocketAddr],
    uid: u32,
    send: u32,
    extra: &[&str],
) -> JoinRun {
    let out = w
        .lab
        .spawn(
            Role::Client,
            BIN,
            join_args(mode, proxies, uid, send, extra),
        )
        .expect("join starts")
        .finish(Duration::from_secs(30))
        .expect("join ends within 30 s");
    JoinRun::parse(out.status.success(), out.stdout, out.stderr)
}

/// The arguments of `cloudproxy join` for the lab's media service and channel, a packet every
/// 10 ms.
pub(crate) fn join_args(
    mode: &str,
    proxies: &[SocketAddr],
    uid: u32,
    send: u32,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "join",
        "--media",
        &media().to_string(),
        "--app-id",
        APP,
        "--channel",
        "lab",
        "--uid",
        &uid.to_string(),
        "--token",
        &token(uid),
        "--mode",
        mode,
        "--send",
        &send.to_string(),
        "--interval-ms",
        "10",
        "--attempt-timeout-ms",
        "2000",
        "--join-timeout-ms",
        "4000",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in proxies {
        args.push("--proxy".into());
        args.push(p.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `cloudproxy relay` relaying from `ip` with plain TURN over TCP (no TLS) on `ip`:`port` only,
/// e.g. on 443 to show what an inspecting firewall does to it.
pub(crate) fn plain_tcp_relay(lab: &Lab, ip: Ipv4Addr, port: u16) -> cloudproxy_lab::LabChild {
    let listen = sa(ip, port).to_string();
    let child = lab
        .spawn(
            Role::Relay,
            BIN,
            [
                "relay",
                "--tcp",
                &listen,
                "--relay-ip",
                &ip.to_string(),
                "--allow-peer",
                &format!("{MEDIA_ADDR}/32"),
                "--app",
                &app(),
                "--no-metrics",
            ],
        )
        .expect("relay starts");
    child
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("tcp "))
        .expect("plain TCP relay ready");
    child
}

/// Starts `cloudproxy up` in the relay's namespace with its data in `dir`: relay on the
/// published addresses, media service on the relay's address port 7000, then `extra` flags.
pub(crate) fn spawn_up(
    lab: &Lab,
    dir: &std::path::Path,
    extra: &[&str],
) -> cloudproxy_lab::LabChild {
    let (udp, tls, media) = (
        published_udp().to_string(),
        published_tls().to_string(),
        sa(RELAY_ADDR, 7000).to_string(),
    );
    let args = [
        "up",
        "--data-dir",
        dir.to_str().unwrap(),
        "--udp",
        &udp,
        "--tls",
        &tls,
        "--media",
        &media,
    ];
    lab.spawn(Role::Relay, BIN, args.iter().chain(extra))
        .expect("cloudproxy up starts")
}

/// `cloudproxy up` (control plane, relay, media service on the relay's address, port 7000) in
/// the relay's namespace, publishing the lab's relay addresses; returns it, once ready, with
/// its app id and token.
pub(crate) fn up_in_relay(lab: &Lab, tag: &str) -> UpInRelay {
    let dir = TempDir::new(&format!("lab-up-{tag}"));
    let child = spawn_up(lab, &dir.0.join("data"), &[]);
    let wait = Duration::from_secs(60);
    let line = |prefix: &str| {
        let l = child
            .wait_for_line(wait, |l| l.starts_with(prefix))
            .unwrap_or_else(|e| panic!("no '{prefix}' line from cloudproxy up: {e}"));
        l[prefix.len()..].trim().to_owned()
    };
    let app = line("app ");
    let token = line("token ");
    child
        .wait_for_line(wait, |l| l == "ready")
        .expect("cloudproxy up is ready");
    UpInRelay {
        app,
        token,
        _child: child,
        _dir: dir,
    }
}

/// [`up_in_relay`]'s `cloudproxy up`, running until dropped.
pub(crate) struct UpInRelay {
    pub app: String,
    pub token: String,
    _child: cloudproxy_lab::LabChild,
    /// Its data directory; after `_child`, so it is removed once `up` is gone (fields drop in
    /// declaration order).
    _dir: TempDir,
}
