//! What the sans-IO server's tests share: a server on a virtual clock with a seeded random
//! source, REST credentials for it, clients' 5-tuples and transaction ids.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Instant;

use cloudproxy_proto::auth::{rest_password, rest_username};
use cloudproxy_proto::client::TransactionId;
use cloudproxy_proto::{AuthConfig, ClientAddr, Server, ServerConfig, Shared, Transport};
use rand::SeedableRng;

/// A server for `cfg` whose virtual clock starts now (returned), at Unix time `t0_unix`. The
/// random source (relay ports, nonce keys) is seeded with `seed`, so runs repeat.
pub(crate) fn server(cfg: ServerConfig, t0_unix: u64, seed: u64) -> (Server, Instant) {
    let now = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shared = Shared::from_config(&cfg, &mut rng);
    (Server::new(cfg, shared, now, t0_unix, &mut rng), now)
}

/// Credentials from the shared secret `secret` only (no app keys).
pub(crate) fn static_secret(secret: &[u8]) -> AuthConfig {
    AuthConfig {
        static_secret: Some(secret.to_vec()),
        app_keys: vec![],
    }
}

/// REST credentials (username, password) of `user`, signed with `secret`, expiring at
/// `expiry` (Unix seconds).
pub(crate) fn rest_credentials(secret: &[u8], expiry: u64, user: &str) -> (String, String) {
    let username = rest_username(expiry, user);
    let password = rest_password(secret, &username);
    (username, password)
}

/// The 5-tuple of a client at 192.0.2.10:`port` talking to the server's 127.0.0.1:3478.
pub(crate) fn client_addr(transport: Transport, port: u16) -> ClientAddr {
    ClientAddr {
        transport,
        remote: SocketAddr::from(([192, 0, 2, 10], port)),
        local: SocketAddr::from(([127, 0, 0, 1], 3478)),
    }
}

/// Transaction ids, each one more than the last.
pub(crate) struct Tids {
    /// The last id handed out.
    pub(crate) last: u128,
}

impl Tids {
    /// Ids starting after `last`.
    pub(crate) fn after(last: u128) -> Self {
        Self { last }
    }

    /// The next id.
    pub(crate) fn next_id(&mut self) -> TransactionId {
        self.last += 1;
        TransactionId::from(self.last)
    }
}
