//! # cloudproxy-sdk: join a channel in Auto, Force UDP or Force TCP cloud-proxy mode
//!
//! The API mirrors the vendor's (`setCloudProxy`, `join`, `leave`, and the
//! connection-state, proxy-connected, is-using-cloud-proxy and join-fallback-to-proxy events):
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloudproxy_sdk::SdkError> {
//! use cloudproxy_sdk::{Client, ClientConfig, CloudProxyType};
//! let mut config = ClientConfig::new("203.0.113.10:7000".parse().unwrap());
//! config.proxies.tls = vec!["198.51.100.5:443".parse().unwrap()];
//! let (mut client, mut events) = Client::new(config)?;
//! client.set_cloud_proxy(CloudProxyType::TcpProxy)?; // Force TCP, before joining
//! let info = client.join("room-1", 42, "<token from cloudproxy token>").await?;
//! client.send(b"hello").await?;
//! let from_others = client.recv().await?;
//! // Or into a buffer of the caller's, which the session recycles: no allocation per packet.
//! let mut payload = Vec::new();
//! let from = client.recv_into(&mut payload).await?;
//! client.leave().await?;
//! client.set_cloud_proxy(CloudProxyType::None)?; // back to Auto, after leaving
//! # Ok(()) }
//! ```
//!
//! **Auto** races direct UDP to the media service against the Auto proxies over TLS on TCP 443,
//! 250 ms apart (RFC 8305); the first path to complete a join wins. **Force UDP** and **Force
//! TCP** use only the published proxies, over TURN/UDP and TURN/TLS, and send nothing to any
//! other address: the media service is reached through the relay. When every path fails, the
//! error lists each path tried and why, and says whether retrying elsewhere can help.
//!
//! Behind a web proxy, set [`ClientConfig::http_proxy`] (e.g. from [`HttpProxy::from_env`]):
//! the TLS paths then tunnel through it with CONNECT, TLS end to end to the relay.

mod client;
mod connect;
pub mod error;
pub mod event;
pub mod http_proxy;
mod media;
pub mod mode;
mod pipe;
mod probe;
mod release;
pub mod signal;
pub mod tls;
mod transport;

pub use client::{Client, ClientConfig, JoinInfo, Proxies, Received, ReceivedFrom, SessionStats};
pub use error::{JoinError, PathAttempt, PathFailure, SdkError};
pub use event::{ConnectionState, Event, PathKind, StateReason};
pub use http_proxy::{HttpProxy, NoProxy, ProxyConfigError, ProxyFailure};
pub use mode::{CloudProxyType, UnknownProxyCode};
pub use probe::{probe, Probe};
pub use tls::TlsTrust;
