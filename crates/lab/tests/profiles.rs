//! Each firewall profile does what it says: what passes, what is dropped, and what the
//! `outside` counter (packets to addresses outside the published set) records.
//!
//! Echo servers run in the relay and media namespaces; probes run in the client's. Relay ↔ media
//! traffic must pass in every profile.

mod common;

use std::net::IpAddr;

use cloudproxy_lab::{Counters, Profile, Role, CLIENT_GATEWAY, RELAY_ADDR, UNROUTED_ADDR};
use common::*;
use std::net::SocketAddrV4;

/// Relay → media UDP is never filtered.
fn assert_relay_reaches_media(lab: &cloudproxy_lab::Lab) {
    let u = udp(lab, Role::Relay, MEDIA_UDP, 10);
    assert_eq!(
        u.received,
        10,
        "relay → media in {}: {u:?}",
        lab.profile().name()
    );
}

fn counters(lab: &cloudproxy_lab::Lab) -> Counters {
    lab.counters().expect("read counters")
}

#[test]
fn open_lets_the_client_reach_everything_and_counts_nothing() {
    let Some(lab) = lab(Profile::Open) else {
        return;
    };
    let _servers = start_servers(&lab);
    for target in [RELAY_UDP, RELAY_UDP_OTHER, POOL_UDP, MEDIA_UDP] {
        let u = udp(&lab, Role::Client, target, 10);
        assert_eq!(u.received, 10, "udp to {target}: {u:?}");
    }
    for target in [RELAY_TLS, RELAY_TCP_OTHER, POOL_TLS, MEDIA_TCP] {
        assert!(tcp(&lab, Role::Client, target, OPEN), "tcp to {target}");
    }
    // An address the router does not route: accepted, then swallowed by the sink.
    let u = udp(
        &lab,
        Role::Client,
        SocketAddrV4::new(UNROUTED_ADDR, 5000),
        3,
    );
    assert_eq!(u.received, 0);
    assert_eq!(counters(&lab), Counters::default());

    // Nothing reaches the client unless it started the conversation.
    let _client_server = serve(&lab, Role::Client, &["udp:0.0.0.0:6000"]);
    let inbound = SocketAddrV4::new(cloudproxy_lab::CLIENT_ADDR, 6000);
    assert_eq!(udp(&lab, Role::Media, inbound, 3).received, 0);
    assert_relay_reaches_media(&lab);
}

#[test]
fn udp_blocked_passes_tcp_and_drops_udp_as_outside() {
    let Some(lab) = lab(Profile::UdpBlocked) else {
        return;
    };
    let _servers = start_servers(&lab);
    for target in [RELAY_TLS, RELAY_TCP_OTHER, POOL_TLS, MEDIA_TCP] {
        assert!(tcp(&lab, Role::Client, target, OPEN), "tcp to {target}");
    }
    assert_eq!(counters(&lab), Counters::default());

    let u = udp(&lab, Role::Client, RELAY_UDP, 5);
    assert_eq!((u.sent, u.received), (5, 0));
    // Nothing is published, so every refused packet is outside the published set.
    let c = counters(&lab);
    assert_eq!((c.outside, c.dropped), (5, 5), "{c:?}");
    assert_relay_reaches_media(&lab);
}

#[test]
fn published_udp_only_admits_only_the_published_address_and_port() {
    let profile = Profile::PublishedUdpOnly {
        proxies: vec![sa(RELAY_UDP)],
    };
    let Some(lab) = lab(profile) else { return };
    let _servers = start_servers(&lab);
    let u = udp(&lab, Role::Client, RELAY_UDP, 20);
    assert_eq!(u.received, 20, "published udp: {u:?}");
    assert_eq!(counters(&lab), Counters::default());

    // The published address on other ports or over TCP: refused, but not outside.
    assert_eq!(udp(&lab, Role::Client, RELAY_UDP_OTHER, 5).received, 0);
    assert!(!tcp(&lab, Role::Client, RELAY_TLS, BLOCKED));
    let c = counters(&lab);
    assert_eq!(c.outside, 0, "{c:?}");
    assert!(c.dropped >= 6, "{c:?}");

    // Anything else is outside: media, the unpublished pool, an unrouted address.
    lab.reset_counters().expect("reset");
    assert_eq!(udp(&lab, Role::Client, MEDIA_UDP, 5).received, 0);
    assert_eq!(counters(&lab).outside, 5);
    assert_eq!(udp(&lab, Role::Client, POOL_UDP, 5).received, 0);
    let unrouted = SocketAddrV4::new(UNROUTED_ADDR, 5000);
    assert_eq!(udp(&lab, Role::Client, unrouted, 5).received, 0);
    let c = counters(&lab);
    assert_eq!((c.outside, c.dropped), (15, 15), "{c:?}");
    assert_relay_reaches_media(&lab);
}

#[test]
fn published_tls443_only_admits_only_tcp_443_to_the_published_address() {
    let profile = Profile::PublishedTls443Only {
        proxies: vec![IpAddr::V4(RELAY_ADDR)],
    };
    let Some(lab) = lab(profile) else { return };
    let _servers = start_servers(&lab);
    assert!(tcp(&lab, Role::Client, RELAY_TLS, OPEN));
    assert_eq!(counters(&lab), Counters::default());

    assert!(!tcp(&lab, Role::Client, RELAY_TCP_OTHER, BLOCKED));
    assert_eq!(udp(&lab, Role::Client, RELAY_UDP, 5).received, 0);
    let c = counters(&lab);
    assert_eq!(
        c.outside, 0,
        "published address, other port/protocol: {c:?}"
    );
    assert!(c.dropped >= 6, "{c:?}");

    lab.reset_counters().expect("reset");
    assert!(!tcp(&lab, Role::Client, POOL_TLS, BLOCKED));
    assert!(!tcp(&lab, Role::Client, MEDIA_TCP, BLOCKED));
    let c = counters(&lab);
    assert!(c.outside >= 2 && c.outside == c.dropped, "{c:?}");
    assert_relay_reaches_media(&lab);
}

#[test]
fn nothing_refuses_every_client_packet_and_counts_it() {
    let Some(lab) = lab(Profile::Nothing { published: vec![] }) else {
        return;
    };
    let _servers = start_servers(&lab);
    for target in [RELAY_UDP, MEDIA_UDP] {
        assert_eq!(udp(&lab, Role::Client, target, 5).received, 0, "{target}");
    }
    // The router's own address is no way out either (input chain).
    let router = SocketAddrV4::new(CLIENT_GATEWAY, 9);
    assert_eq!(udp(&lab, Role::Client, router, 5).received, 0);
    assert_eq!(counters(&lab).outside, 15);
    for target in [RELAY_TLS, MEDIA_TCP] {
        assert!(!tcp(&lab, Role::Client, target, BLOCKED), "{target}");
    }
    let c = counters(&lab);
    assert!(c.outside >= 17 && c.outside == c.dropped, "{c:?}");
    assert_relay_reaches_media(&lab);
}

#[test]
fn loss_drops_a_few_percent_in_each_direction_and_tcp_survives() {
    let Some(lab) = lab(Profile::Loss { percent: 5 }) else {
        return;
    };
    let _servers = start_servers(&lab);
    let u = udp(&lab, Role::Client, MEDIA_UDP, 1000);
    let lost = f64::from(u.sent - u.received) / f64::from(u.sent) * 100.0;
    let c = counters(&lab);
    eprintln!(
        "loss 5% each way: {lost:.1}% of {} round trips lost; {c:?}",
        u.sent
    );
    // About 1 - 0.95² ≈ 9.75% of round trips; random, so only a loose band.
    assert_eq!(u.sent, 1000);
    assert!((1.0..=20.0).contains(&lost), "round-trip loss {lost:.1}%");
    assert!(c.lost > 0, "{c:?}");
    assert_eq!((c.outside, c.dropped), (0, 0), "{c:?}");
    // TCP retransmits through the loss (the first SYN may be lost: give it time).
    assert!(tcp(&lab, Role::Client, MEDIA_TCP, OPEN));
}
