//! The control plane and relays together, as real processes: an app is created, enabled for
//! Force TCP in Japan and approved; a relay syncs it; a client allocates through the relay's
//! TLS listener with the app's credential; usage appears; after suspension the next
//! allocation is refused; with the control plane gone the relay keeps working and reports
//! the staleness. A second test holds the proxy-users-per-channel quota across two relays and
//! lets a crashed relay's lease expire. A third runs two `cloudproxy control` processes on
//! one PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{self, Attr, Response, ALLOCATE, CHANNEL_BIND, REFRESH};
use cloudproxy_sdk::{signal, Client, ClientConfig, CloudProxyType};
use cloudproxy_testkit::echo::EchoPeer;
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::control::{unix_now, ControlProc, Credential, GovernedRelay, RelaySpec};
use common::{http, in_ci, reserve_ports, TempDir};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-key-e2e-0123456789";
const RELAY_KEY: &str = "relay-key-e2e-0123456789";
const PATIENCE: Duration = Duration::from_secs(30);

fn start_control(database: &str, extra: &[&str]) -> ControlProc {
    start_control_on(
        format!("127.0.0.1:{}", reserve_ports(1, true)[0]),
        database,
        extra,
    )
}

fn start_control_on(addr: String, database: &str, extra: &[&str]) -> ControlProc {
    common::control::start_control_on(addr, database, OPERATOR, RELAY_KEY, extra)
}

/// A static-pool relay in Japan with 1-second sync, heartbeat, renewal and usage intervals.
fn start_relay(control: &ControlProc, edge: &str, tls: &str, dir: &TempDir) -> GovernedRelay {
    start_relay_with(control, edge, tls, dir, &[])
}

/// [`start_relay`] with more command-line flags.
fn start_relay_with(
    control: &ControlProc,
    edge: &str,
    tls: &str,
    dir: &TempDir,
    extra: &[&str],
) -> GovernedRelay {
    let spec = RelaySpec {
        edge,
        tls: Some(tls),
        control_lines: "api_server_name = \"api.cloudproxy.test\"\n",
        flags: extra,
        ..RelaySpec::default()
    };
    control.start_relay(&dir.0, RELAY_KEY, &spec)
}

/// A new app's credential.
fn create_app(c: &ControlProc) -> Credential {
    c.create_app("e2e")
}

/// Submits, approves and activates Force TCP in Japan.
fn enable_force_tcp(c: &ControlProc, app: &str, channels: u32, proxy_users: u32) {
    enable(c, app, "force_tcp", channels, proxy_users);
}

/// Submits, approves and activates `mode` in Japan.
fn enable(c: &ControlProc, app: &str, mode: &str, channels: u32, proxy_users: u32) {
    let form = json!({"region": "japan", "sdk": "web", "use_case": "1:1 video call",
        "max_concurrent_channels": channels, "max_users_per_channel": proxy_users + 1,
        "max_proxy_users_per_channel": proxy_users, "quality": "720p", "mode": mode});
    let request = c.enable(app, form);
    // Approval alone activates: no separate `activate`.
    assert_eq!(request["state"], "active", "{request}");
}

/// A TURN client over TLS with a user token of the app.
fn client(relay: SocketAddr, app: &Credential, channel: &str, uid: u32) -> TurnClient {
    let token = app.mint(channel, uid, unix_now() + 3600);
    TurnClient {
        conn: Conn::tls(relay, None),
        auth: None,
        tid: 0x5000,
        username: token.username.clone(),
        password: token.password.clone(),
    }
}

fn allocate(c: &mut TurnClient) -> Response {
    c.transact(ALLOCATE, &[Attr::RequestedTransportUdp])
}

/// Retries a fresh allocation until `want(error code or 0)` holds.
#[track_caller]
fn allocate_until(
    mut make: impl FnMut() -> TurnClient,
    want: impl Fn(u16) -> bool,
    what: &str,
) -> (TurnClient, Response) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = make();
        let r = allocate(&mut c);
        let code = r.error.as_ref().map_or(0, |e| e.0);
        if want(code) {
            return (c, r);
        }
        assert!(Instant::now() < deadline, "{what}: still {:?}", r.error);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Binds a channel to the echo peer and checks `n` packets come back.
fn echo(c: &mut TurnClient, peer: SocketAddr, n: usize) -> u64 {
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer)],
    );
    assert!(r.success, "channel bind: {:?}", r.error);
    let mut bytes = 0;
    for i in 0..n {
        let payload = format!("media packet {i:04} ..............................");
        let frame = client::channel_data(0x4000, payload.as_bytes(), true);
        c.conn.send(&frame);
        assert_eq!(c.conn.recv(), frame, "echo {i}");
        bytes += 2 * payload.len() as u64;
    }
    bytes
}

/// A GET over TLS with this ALPN and server name; the whole response.
fn https_get(addr: SocketAddr, alpn: Option<&[u8]>, name: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let config = cloudproxy_sdk::tls::insecure_client_config(alpn);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(relay: &GovernedRelay, name: &str) -> i64 {
    common::metric_i64(relay.metrics, name)
}

#[test]
fn app_enabled_synced_used_metered_and_suspended() {
    let _lo = common::loopback_shared();
    let dir = TempDir::new("e2e-control");
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    let mut control = start_control(&db, &[]);
    // The relay's TLS on 443 (as root, as in CI), on an address of its own.
    let relay = start_relay(&control, "jp-static-1", "127.0.0.44:443", &dir);
    if relay.tls.port() != 443 {
        assert!(!in_ci(), "CI runs as root: TLS must be on 443");
        eprintln!("not root: TLS fell back to {}", relay.tls);
    }
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    // The relay registers itself: the allow-list of Japan lists its TLS port.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = http(
            &control.addr,
            "GET",
            "/v1/allowlist/japan?format=csv",
            None,
            "",
        );
        if list.contains("force_tcp,127.0.0.44")
            && list.contains(&format!(",tcp,{}", relay.tls.port()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay is not in the allow-list: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The same TLS port serves the control plane's API to HTTP clients: by ALPN, or by SNI.
    for (alpn, name) in [
        (Some(b"http/1.1".as_slice()), "localhost"),
        (None, "api.cloudproxy.test"),
    ] {
        let text = https_get(relay.tls, alpn, name, "/v1/allowlist/japan");
        assert!(text.starts_with("HTTP/1.1 200"), "{alpn:?} {name}: {text}");
        assert!(text.contains("\"region\":\"japan\""), "{text}");
    }

    let app = create_app(&control);
    // Synced, but not enabled for Force TCP in Japan: 403, not 401.
    let (_, r) = allocate_until(
        || client(relay.tls, &app, "room", 1),
        |c| c == 403,
        "403 before enablement",
    );
    let reason = r.error.unwrap().1;
    assert!(reason.contains("not enabled for Force TCP"), "{reason}");

    enable_force_tcp(&control, &app.app_id, 2, 2);
    let (mut c, _) = allocate_until(
        || client(relay.tls, &app, "room", 1),
        |c| c == 0,
        "allocation after enablement",
    );
    let relayed = echo(&mut c, peer.addr, 40);
    // TURN clients that offer ALPN stun.turn get TURN on the same port as well.
    let (mut with_alpn, _) = allocate_until(
        || TurnClient {
            conn: Conn::tls(relay.tls, Some(b"stun.turn")),
            ..client(relay.tls, &app, "room", 5)
        },
        |c| c == 0,
        "allocation with ALPN stun.turn",
    );
    assert!(with_alpn.transact(REFRESH, &[Attr::Lifetime(0)]).success);
    std::thread::sleep(Duration::from_millis(2200)); // let it be metered for two seconds
    assert!(c.transact(REFRESH, &[Attr::Lifetime(0)]).success);

    // Signaling through the published addresses only: the SDK refreshes its proxies from the
    // region's allow-list in-band over UDP (Force UDP) and over HTTPS on TLS (Force TCP).
    let token = app.token_until("room", 9, unix_now() + 600);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (mode, proxy) in [
        (CloudProxyType::UdpProxy, relay.udp),
        (CloudProxyType::TcpProxy, relay.tls),
    ] {
        let mut config = ClientConfig::new("127.0.0.1:9".parse().unwrap());
        config.proxies.udp = vec![relay.udp];
        config.proxies.tls = vec![relay.tls];
        let (mut sdk, _events) = Client::new(config).unwrap();
        sdk.set_cloud_proxy(mode).unwrap();
        let published = rt
            .block_on(sdk.refresh_proxies("japan", &token))
            .unwrap_or_else(|e| panic!("{mode:?} via {proxy}: {e}"));
        assert_eq!(published.udp, [relay.udp], "{mode:?}");
        assert_eq!(published.tls, [relay.tls], "{mode:?}");
    }
    // Auto: the dynamic list, chosen by load, over HTTPS from a relay's TLS listener.
    let listeners = json!([{"transport": "tls", "ip": "198.51.100.7", "port": 443}]);
    control.ok(
        "PUT",
        "/v1/edges/jp-dyn-1",
        json!({"region": "japan", "pool": "dynamic",
        "capacity_kbps": 1000, "listeners": listeners}),
    );
    control.ok(
        "POST",
        "/v1/edges/jp-dyn-1/heartbeat",
        json!({"load_kbps": 10, "allocations": 1}),
    );
    let mut config = ClientConfig::new("127.0.0.1:9".parse().unwrap());
    config.proxies.auto = vec![relay.tls];
    let (mut sdk, _events) = Client::new(config).unwrap();
    let fetched = rt.block_on(sdk.refresh_proxies("japan", &token)).unwrap();
    let dynamic: SocketAddr = "198.51.100.7:443".parse().unwrap();
    assert_eq!(fetched.auto, [dynamic]);
    assert_eq!(sdk.proxies().auto, [dynamic]);

    // In-band, only the public read-only paths are served, and only with a valid credential.
    let (user, pass) = cloudproxy_proto::token::split(&token).unwrap();
    let f = rt
        .block_on(signal::fetch_udp(
            relay.udp,
            user,
            pass,
            "/v1/sync/apps",
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(f.status, 403, "{}", String::from_utf8_lossy(&f.body));
    let e = rt.block_on(signal::fetch_udp(
        relay.udp,
        user,
        "wrong",
        "/v1/allowlist/japan",
        Duration::from_secs(5),
    ));
    assert!(
        matches!(e, Err(signal::SignalError::Unauthorized { .. })),
        "{e:?}"
    );

    // Usage appears: bytes, minutes (allocation-seconds), tier and peak.
    let deadline = Instant::now() + PATIENCE;
    let day = loop {
        let (_, u) = control.api(
            "GET",
            &format!("/v1/apps/{}/usage", app.app_id),
            OPERATOR,
            Value::Null,
        );
        let day = u["days"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["mode"] == "force_tcp").cloned());
        if let Some(d) =
            day.filter(|d| d["bytes"].as_u64() >= Some(relayed) && d["seconds"].as_u64() >= Some(2))
        {
            break d;
        }
        assert!(Instant::now() < deadline, "usage did not appear: {u}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(day["quality"], "720p", "{day}");
    assert!(day["peak_concurrency"].as_u64() >= Some(1), "{day}");
    let (code, csv) = http(
        &control.addr,
        "GET",
        &format!("/v1/apps/{}/usage?format=csv", app.app_id),
        Some(OPERATOR),
        "",
    );
    assert_eq!(code, 200);
    assert!(csv.contains(",force_tcp,720p,"), "{csv}");

    // Suspended: the next allocation is refused within the sync interval; a held one ends.
    let (mut held, _) = allocate_until(
        || client(relay.tls, &app, "room", 2),
        |c| c == 0,
        "second allocation",
    );
    control.ok(
        "POST",
        &format!("/v1/apps/{}/suspend", app.app_id),
        json!({}),
    );
    let (_, r) = allocate_until(
        || client(relay.tls, &app, "room", 1),
        |c| c == 401 || c == 403,
        "refusal after suspension",
    );
    eprintln!("after suspension: {:?}", r.error);
    // Within a sync interval the app's keys leave the relay (401 from then on) and its
    // allocations end: the relay closes the held allocation's connection.
    allocate_until(
        || client(relay.tls, &app, "room", 1),
        |c| c == 401,
        "keys gone after suspension",
    );
    let Conn::Tls(stream, _) = &mut held.conn else {
        unreachable!()
    };
    let mut buf = [0u8; 64];
    match std::io::Read::read(stream, &mut buf) {
        Ok(0) => {}
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the suspended app's allocation is still open: {other:?}"),
    }

    // Resumed, then the control plane goes away: the relay works from its last good copy
    // (admitting without the central check) and reports how stale it is.
    control.ok(
        "POST",
        &format!("/v1/apps/{}/resume", app.app_id),
        json!({}),
    );
    allocate_until(
        || client(relay.tls, &app, "room", 1),
        |c| c == 0,
        "allocation after resume",
    );
    let usage_bytes = |c: &ControlProc| c.usage(&app.app_id, "force_tcp").bytes;
    assert_eq!(
        usage_bytes(&control),
        relayed,
        "usage so far is the echo traffic, once"
    );
    control.guard.kill();
    std::thread::sleep(Duration::from_secs(3));
    let (mut c, _) = allocate_until(
        || client(relay.tls, &app, "room", 3),
        |c| c == 0,
        "allocation without the control plane",
    );
    let during_outage = echo(&mut c, peer.addr, 5);
    assert!(c.transact(REFRESH, &[Attr::Lifetime(0)]).success);
    assert!(metric(&relay, "cloudproxy_control_sync_age_seconds") >= 2);
    assert!(metric(&relay, "cloudproxy_control_sync_failures_total") >= 1);
    assert!(metric(&relay, "cloudproxy_control_unchecked_admissions_total") >= 1);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        metric(&relay, "cloudproxy_usage_reports_pending") >= 1,
        "usage waits for the control plane"
    );
    // The control plane comes back (same database and address): the queued usage arrives,
    // all of it and once.
    let control = start_control_on(control.addr.clone(), &db, &[]);
    let deadline = Instant::now() + PATIENCE;
    while usage_bytes(&control) < relayed + during_outage {
        assert!(
            Instant::now() < deadline,
            "usage from the outage did not arrive"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        usage_bytes(&control),
        relayed + during_outage,
        "no report counted twice"
    );
    assert_eq!(metric(&relay, "cloudproxy_usage_reports_pending"), 0);
    drop(relay);
}

#[test]
fn proxy_users_per_channel_hold_across_two_relays_and_a_crashed_relay_lets_go() {
    let _lo = common::loopback_shared();
    let dir = TempDir::new("e2e-quota");
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    let control = start_control(&db, &["--lease-ttl", "3"]);
    let mut r1 = start_relay(&control, "jp-a", "127.0.0.1:0", &dir);
    let r2 = start_relay(&control, "jp-b", "127.0.0.1:0", &dir);
    let app = create_app(&control);
    enable_force_tcp(&control, &app.app_id, 2, 1);
    // User 1 holds channel "c" on relay A.
    let (_held, _) = allocate_until(
        || client(r1.tls, &app, "c", 1),
        |c| c == 0,
        "user 1 on relay A",
    );
    // User 2 in the same channel on relay B: 486, naming the limit.
    let (_, r) = allocate_until(
        || client(r2.tls, &app, "c", 2),
        |c| c == 486,
        "user 2 refused on relay B",
    );
    let reason = r.error.unwrap().1;
    assert!(reason.contains("max_proxy_users_per_channel 1"), "{reason}");
    // Another channel is fine; a third channel is beyond max_concurrent_channels (2).
    let _in_d = allocate_until(
        || client(r2.tls, &app, "d", 2),
        |c| c == 0,
        "user 2 in channel d",
    );
    let (_, r) = allocate_until(
        || client(r2.tls, &app, "e", 3),
        |c| c == 486,
        "third channel",
    );
    assert!(r.error.unwrap().1.contains("max_concurrent_channels 2"));
    // Relay A crashes: its lease expires (TTL 3 s) and channel c has room again.
    r1.guard.kill();
    let started = Instant::now();
    allocate_until(
        || client(r2.tls, &app, "c", 4),
        |c| c == 0,
        "channel c after relay A crashed",
    );
    eprintln!(
        "channel c freed {:?} after relay A was killed",
        started.elapsed()
    );
}

/// Revocation reaches the kernel: with the XDP fast path on (loopback, generic mode), a
/// Force UDP client's channel is forwarded by map entries; when the operator suspends the app,
/// the sync that takes its keys away also ends its allocations, and both directions' entries
/// leave the maps. Needs root and a build with clang (CI has both).
#[test]
fn suspending_an_app_removes_its_kernel_entries() {
    let _lo = common::loopback_exclusive();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "CI runs as root");
        eprintln!("skipped: XDP needs root");
        return;
    }
    let dir = TempDir::new("e2e-xdp-revoke");
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    let control = start_control(&db, &[]);
    let relay = start_relay_with(
        &control,
        "jp-xdp-1",
        "127.0.0.1:0",
        &dir,
        &common::xdp_maps::GENERIC_ON_LO,
    );
    let log = relay.guard.output.text();
    if let Some(why) = log.lines().find(|l| l.contains("XDP fast path off")) {
        assert!(!in_ci(), "the fast path must run in CI: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let (c2p, p2c) = common::xdp_maps::relay_maps();
    let peer = EchoPeer::start("127.0.0.1:0").unwrap();
    let app = create_app(&control);
    enable(&control, &app.app_id, "force_udp", 2, 2);
    let udp_client = |uid| TurnClient {
        conn: Conn::udp(relay.udp),
        ..client(relay.tls, &app, "room", uid)
    };
    let (mut c, _) = allocate_until(|| udp_client(1), |c| c == 0, "Force UDP allocation");
    let (mut other, _) = allocate_until(|| udp_client(2), |c| c == 0, "a second user");
    // Unpadded frames, as UDP clients send them: padded ones are the socket path's. Datagrams
    // sent on `lo` carry only a partial UDP checksum, which generic XDP loses for small ones
    // (48-byte payloads arrived with a bad checksum, 160-byte ones intact): media-sized
    // payloads here; the lab's veth test, with full checksums, covers other sizes.
    for c in [&mut c, &mut other] {
        let r = c.transact(
            CHANNEL_BIND,
            &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(peer.addr)],
        );
        assert!(r.success, "channel bind: {:?}", r.error);
        for i in 0..20 {
            let payload = format!("kernel packet {i:04} {}", ".".repeat(141));
            assert_eq!(payload.len(), 160);
            let frame = client::channel_data(0x4000, payload.as_bytes(), false);
            c.conn.send(&frame);
            assert_eq!(c.conn.recv(), frame, "echo {i}");
        }
    }
    common::xdp_maps::expect_entries(c2p, 2, "two users' channels, client to peer");
    common::xdp_maps::expect_entries(p2c, 2, "two users' channels, peer to client");
    // The data went through the kernel (its counters are read every few seconds).
    let deadline = Instant::now() + PATIENCE;
    let kernel_c2p = || {
        common::series_value(
            &common::metrics_text(relay.metrics),
            "cloudproxy_fastpath_packets_total{direction=\"client_to_peer\"}",
        )
        .unwrap_or(0.0)
    };
    while kernel_c2p() < 40.0 {
        assert!(Instant::now() < deadline, "the kernel forwarded no data");
        std::thread::sleep(Duration::from_millis(200));
    }

    control.ok(
        "POST",
        &format!("/v1/apps/{}/suspend", app.app_id),
        json!({}),
    );
    let started = Instant::now();
    // The sync that removes the app's keys (401 from then on) ends its allocations.
    allocate_until(|| udp_client(3), |c| c == 401, "keys gone after suspension");
    common::xdp_maps::expect_entries(c2p, 0, "after the suspension, client to peer");
    common::xdp_maps::expect_entries(p2c, 0, "after the suspension, peer to client");
    eprintln!(
        "kernel entries gone {:?} after the suspension",
        started.elapsed()
    );
    assert_eq!(metric(&relay, "cloudproxy_allocations"), 0);
    // A ChannelData from the revoked client reaches nobody: no entry, no allocation.
    let Conn::Udp(socket, relay_udp) = &c.conn else {
        unreachable!()
    };
    let frame = client::channel_data(0x4000, b"after revocation", true);
    socket.send_to(&frame, relay_udp).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    let got = socket.recv_from(&mut buf);
    assert!(got.is_err(), "the revoked channel still forwards: {got:?}");
}

#[test]
fn two_control_processes_share_one_postgresql() {
    let _lo = common::loopback_shared();
    let Ok(base) = std::env::var("CLOUDPROXY_TEST_POSTGRES") else {
        assert!(
            !in_ci(),
            "CLOUDPROXY_TEST_POSTGRES must be set under CI (.ci/run starts PostgreSQL)"
        );
        eprintln!("SKIPPING: set CLOUDPROXY_TEST_POSTGRES to run the two-process PostgreSQL test");
        return;
    };
    // A database of our own, made with psql.
    let name = format!("cp_e2e_{}_{}", std::process::id(), unix_now() % 100_000);
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([base.as_str(), "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("CREATE DATABASE {name}"));
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => panic!("CLOUDPROXY_TEST_POSTGRES has no database part: {base}"),
    };
    let a = start_control(&url, &[]);
    let b = start_control(&url, &[]);
    // Consistent: what one writes, the other reads.
    let app = create_app(&a).app_id;
    let seen = b.ok("GET", &format!("/v1/apps/{app}"), Value::Null);
    assert_eq!(seen["id"], app.as_str(), "{seen}");
    // 10 000 kbit/s of static capacity; each request needs 3 000 (one 720p proxy user).
    a.ok(
        "PUT",
        "/v1/edges/jp-1",
        json!({"region": "japan", "pool": "static", "capacity_kbps": 10_000,
        "listeners": [{"transport": "tls", "ip": "203.0.113.1", "port": 443}]}),
    );
    let form = json!({"region": "japan", "sdk": "native", "use_case": "1:1", "max_concurrent_channels": 1,
        "max_users_per_channel": 2, "max_proxy_users_per_channel": 1, "quality": "720p", "mode": "force_udp"});
    let ids: Vec<String> = (0..12)
        .map(|i| {
            let via = if i % 2 == 0 { &a } else { &b };
            via.ok("POST", &format!("/v1/apps/{app}/requests"), form.clone())["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Approvals race across both processes.
    let approved: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let via = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    let (code, v) = via.api(
                        "POST",
                        &format!("/v1/requests/{id}/approve"),
                        OPERATOR,
                        json!({}),
                    );
                    assert_eq!(code, 200, "{v}");
                    v["state"] == "active"
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let n = approved.iter().filter(|x| **x).count();
    assert_eq!(
        n, 3,
        "exactly floor(10000 / 3000) approvals fit: {approved:?}"
    );
    for c in [&a, &b] {
        let regions = c.ok("GET", "/v1/regions", Value::Null);
        let jp = regions
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == "japan")
            .unwrap()
            .clone();
        assert_eq!(jp["reserved_kbps"], 9_000, "{jp}");
    }
    drop(a);
    drop(b);
    psql(&format!("DROP DATABASE {name}"));
}
