//! What the media service's tests share: the apps whose keys they configure, and a service
//! started with the first.

#![allow(dead_code)] // each test binary uses a different subset

use cloudproxy_media::{MediaConfig, MediaService};
use cloudproxy_testkit::apps::App;

/// The app most test tokens belong to.
pub(crate) const APP: App = App {
    id: "app1",
    key_id: "k1",
    secret: b"secret1",
};

/// A second app, for tests where two apps share a service.
pub(crate) const APP2: App = App {
    id: "app2",
    key_id: "k1",
    secret: b"secret2",
};

/// A media service on a free loopback port with [`APP`]'s key, the rest from `config`.
pub(crate) fn service(config: MediaConfig) -> MediaService {
    MediaService::start(MediaConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        auth: APP.auth(),
        ..config
    })
    .expect("start the media service")
}
