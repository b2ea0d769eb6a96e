//! What the media service's tests share: one app key and a service started with it.

#![allow(dead_code)] // each test binary uses a different subset

use cloudproxy_media::{MediaConfig, MediaService};
use cloudproxy_proto::token::Token;
use cloudproxy_proto::{AppKey, AuthConfig};

/// The app every test token belongs to.
pub(crate) const APP: &str = "app1";
/// Its key's secret.
pub(crate) const SECRET: &[u8] = b"secret1";

/// A media service on a free loopback port with the app's key, the rest from `config`.
pub(crate) fn service(config: MediaConfig) -> MediaService {
    MediaService::start(MediaConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        auth: AuthConfig {
            static_secret: None,
            app_keys: vec![AppKey {
                app_id: APP.into(),
                key_id: "k1".into(),
                secret: SECRET.to_vec(),
                not_after: None,
            }],
        },
        ..config
    })
    .expect("start the media service")
}

/// The app's token for `uid` in `channel`, expiring at `expiry` (Unix seconds).
pub(crate) fn token_until(channel: &str, uid: u32, expiry: u64) -> String {
    Token::mint(APP, "k1", SECRET, channel, uid, expiry)
        .unwrap()
        .encode()
}
