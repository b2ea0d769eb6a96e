//! Interoperability with a TURN client nobody here wrote: coturn's `turnutils_uclient`
//! (Debian's coturn 4.6.1), relaying to coturn's `turnutils_peer` echo server through
//! `cloudproxy relay`.
//!
//! Each run is 10 clients × 200 messages of 170 bytes (uclient `-m 10 -n 200 -l 170`), the
//! messages go client → relay → peer → relay → client, and uclient's closing statistics must
//! show every message back and none lost. `-s` switches from ChannelData to Send/Data
//! indications. Without `-c` each uclient client also makes an RTCP allocation (EVEN-PORT with
//! the R bit, then RESERVATION-TOKEN); that mode has a test of its own, and the per-transport
//! tests pass `-c` so that a failure points at one feature.
//!
//! Facts about uclient 4.6.1 these tests lean on: it picks ChannelBind numbers at random from
//! RFC 5766's 0x4000–0x7FFF (not RFC 8656's 0x4000–0x4FFF); with `-c` it still sends EVEN-PORT
//! (R=0) on about half of its Allocates; on an error response it prints the code and exits 255,
//! except after some Allocate errors (e.g. 508) where it waits forever, hence the deadlines.
//!
//! Skipped with a loud notice when coturn is not installed, unless `CI` is set: then it fails.
//! `.ci/run` installs coturn. Every process is killed at a deadline and on drop.
//!
//! Run just these: `cargo test -p cloudproxy --test interop_coturn -- --nocapture`.

mod common;

use std::time::Duration;

use common::{
    require_coturn, serial, start_cloudproxy, start_coturn, start_peer, ClientTransport, Peer,
    Relay, RelayOptions, TempDir, Uclient, UclientReport,
};

/// Asserts a clean relay run: uclient finished by itself with status 0, sent everything it was
/// asked to, and got every message back.
fn assert_all_relayed(
    what: &str,
    client: &Uclient,
    report: &UclientReport,
    relay: &mut Relay,
    peer: &mut Peer,
) {
    peer.assert_alive();
    let expected = u64::from(client.clients) * u64::from(client.messages);
    let ok = report.exit_status().is_some_and(|s| s.success())
        && report.completed()
        && report.sent == Some(expected)
        && report.received == report.sent
        && report.lost == Some(0);
    assert!(
        ok,
        "{what}: uclient did not relay all {expected} messages cleanly:\n{}",
        report.describe()
    );
    relay.assert_alive();
}

/// Asserts that nothing was relayed and uclient did not hang past its deadline unnoticed.
fn assert_nothing_relayed(what: &str, report: &UclientReport, relay: &mut Relay, peer: &mut Peer) {
    peer.assert_alive();
    let received = report.received.unwrap_or(0);
    assert_eq!(
        received,
        0,
        "{what}: expected no message relayed:\n{}",
        report.describe()
    );
    assert!(
        !report.exit_status().is_some_and(|s| s.success()) || report.completed(),
        "{what}: uclient exited 0 without statistics:\n{}",
        report.describe()
    );
    relay.assert_alive();
}

fn run_clean(what: &str, transport: ClientTransport, configure: impl FnOnce(&mut Uclient)) {
    if !require_coturn(what) {
        return;
    }
    let _serial = serial();
    let opts = RelayOptions::default();
    let mut relay = start_cloudproxy(&opts);
    let mut peer = start_peer();
    let mut client = Uclient::new(transport, &relay.secret);
    configure(&mut client);
    let report = client.run(&relay, peer.addr);
    eprintln!("{what}: {}", report.describe().lines().nth(1).unwrap_or(""));
    assert_all_relayed(what, &client, &report, &mut relay, &mut peer);
}

/// The harness itself, against coturn's own server: if this fails, the environment or the
/// harness is at fault, not our relay.
#[test]
fn reference_coturn_turnserver_relays_udp() {
    let what = "reference_coturn_turnserver_relays_udp";
    if !require_coturn(what) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("turnserver");
    let opts = RelayOptions::default();
    let mut relay = start_coturn(&opts, &dir.0);
    let mut peer = start_peer();
    let mut client = Uclient::new(ClientTransport::Udp, &relay.secret);
    client.messages = 50;
    let report = client.run(&relay, peer.addr);
    assert_all_relayed(what, &client, &report, &mut relay, &mut peer);

    // And the negative check the other tests rely on: coturn refuses a wrong secret.
    let mut wrong = Uclient::new(ClientTransport::Udp, "not-the-secret");
    wrong.clients = 1;
    wrong.messages = 5;
    wrong.deadline = Duration::from_secs(15);
    let report = wrong.run(&relay, peer.addr);
    assert_nothing_relayed("coturn with a wrong secret", &report, &mut relay, &mut peer);
}

#[test]
fn udp_channel_data() {
    run_clean("udp_channel_data", ClientTransport::Udp, |c| {
        c.no_rtcp = true
    });
}

#[test]
fn udp_send_and_data_indications() {
    run_clean("udp_send_and_data_indications", ClientTransport::Udp, |c| {
        c.send_indications = true;
        c.no_rtcp = true;
    });
}

#[test]
fn tcp_channel_data() {
    run_clean("tcp_channel_data", ClientTransport::Tcp, |c| {
        c.no_rtcp = true
    });
}

#[test]
fn tcp_send_and_data_indications() {
    run_clean("tcp_send_and_data_indications", ClientTransport::Tcp, |c| {
        c.send_indications = true;
        c.no_rtcp = true;
    });
}

#[test]
fn tls_channel_data() {
    run_clean("tls_channel_data", ClientTransport::Tls, |c| {
        c.no_rtcp = true
    });
}

/// uclient's default mode, exactly as in the README: every client also makes an RTCP
/// allocation, asking for an even port with the next one reserved (EVEN-PORT R=1), then
/// allocating that one with the RESERVATION-TOKEN it got back.
#[test]
fn udp_rtp_rtcp_pairs_with_port_reservation() {
    run_clean(
        "udp_rtp_rtcp_pairs_with_port_reservation",
        ClientTransport::Udp,
        |c| c.deadline = Duration::from_secs(45),
    );
}

#[test]
fn wrong_secret_relays_nothing() {
    let what = "wrong_secret_relays_nothing";
    if !require_coturn(what) {
        return;
    }
    let _serial = serial();
    let mut relay = start_cloudproxy(&RelayOptions::default());
    let mut peer = start_peer();
    let mut client = Uclient::new(ClientTransport::Udp, "wrong");
    client.no_rtcp = true;
    client.deadline = Duration::from_secs(15);
    let report = client.run(&relay, peer.addr);
    eprintln!("{what}: {}", report.describe().lines().nth(1).unwrap_or(""));
    assert_nothing_relayed(what, &report, &mut relay, &mut peer);
}

/// Without `--allow-peer 127.0.0.0/8` loopback peers are denied: ChannelBind and
/// CreatePermission get 403, and not one message reaches the peer.
#[test]
fn unlisted_peer_is_refused() {
    let what = "unlisted_peer_is_refused";
    if !require_coturn(what) {
        return;
    }
    let _serial = serial();
    let opts = RelayOptions {
        allow_peers: Vec::new(),
        ..RelayOptions::default()
    };
    let mut relay = start_cloudproxy(&opts);
    let mut peer = start_peer();
    for (label, send_indications) in [("ChannelBind", false), ("CreatePermission", true)] {
        let mut client = Uclient::new(ClientTransport::Udp, &relay.secret);
        client.send_indications = send_indications;
        client.no_rtcp = true;
        client.deadline = Duration::from_secs(20);
        let report = client.run(&relay, peer.addr);
        let what = format!("{what} ({label})");
        eprintln!("{what}: {}", report.describe().lines().nth(1).unwrap_or(""));
        assert_nothing_relayed(&what, &report, &mut relay, &mut peer);
        assert!(
            report.errors.iter().any(|e| e.contains("403")),
            "{what}: expected uclient to report a 403 for the {label} request:\n{}",
            report.describe()
        );
    }
}
