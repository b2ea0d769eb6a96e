//! What the SDK's loopback tests share: one app key, and a relay and a media service in
//! process that both admit its tokens.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use cloudproxy_media::driver::{MediaConfig, MediaService};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::ServerConfig;
use cloudproxy_relay::{Relay, RelayConfig};
use cloudproxy_sdk::ClientConfig;
use cloudproxy_testkit::apps::App;

/// The app every token here belongs to, and its key.
pub(crate) const APP: App = App {
    id: "app1",
    key_id: "k1",
    secret: b"app1-secret",
};

/// Any free loopback port.
pub(crate) fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A media service and a one-shard relay (UDP, TCP and TLS) on loopback, both with the app.
pub(crate) struct World {
    pub(crate) relay: Relay,
    pub(crate) media: MediaService,
}

impl World {
    /// Starts both; the relay relays from `relay_ports` (distinct per test binary).
    pub(crate) fn start(relay_ports: RangeInclusive<u16>) -> Self {
        let media = MediaService::start(MediaConfig {
            listen: vec![any()],
            auth: APP.auth(),
            ..MediaConfig::default()
        })
        .unwrap();
        let relay = Relay::start(RelayConfig {
            server: ServerConfig {
                auth: APP.auth(),
                peer_policy: PeerPolicy::new(["127.0.0.0/8".parse::<PeerRule>().unwrap()]),
                relay_ports,
                ..ServerConfig::default()
            },
            udp: vec![any()],
            tcp: vec![any()],
            tls: vec![any()],
            metrics: None,
            shards: 1,
            ..RelayConfig::default()
        })
        .unwrap();
        Self { relay, media }
    }

    /// The media service's address (the direct path).
    pub(crate) fn media_addr(&self) -> SocketAddr {
        self.media.local_addrs()[0]
    }

    /// A client configuration with this relay as every mode's proxy, echo on.
    pub(crate) fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.media_addr());
        let a = self.relay.local_addrs();
        c.proxies.udp = a.udp.clone();
        c.proxies.tls = a.tls.clone();
        c.proxies.auto = a.tls.clone();
        c.echo = true;
        c
    }
}
