//! # cloudproxy-media: the reference media service
//!
//! A small but real stand-in for an RTC media network: a UDP channel forwarder. A client joins
//! a channel with a user token ([`cloudproxy_proto::token`]), the same credential it uses at
//! the relay; then every DATA datagram it sends reaches every other member of the channel. The
//! service tells each client the source address it sees, so a client (or a test) can verify
//! the path: direct, or through a TURN relay's relayed address. A JOIN becomes a member only
//! once it has echoed the service's CHALLENGE from the same address (return routability), and a
//! token holds at most one seat per channel ([`server`] has the rules).
//!
//! * [`wire`]: the datagram format (sans-IO, borrowing decode, no panics).
//! * [`server`]: [`MediaServer`], the sans-IO core (no sockets, no clock).
//! * [`driver`]: [`MediaService`], the tokio UDP driver on its own thread.
//! * [`webrtc`] and [`http`]: browsers as members — str0m sessions on the driver's thread and
//!   the WHIP-style HTTP endpoint that admits them (`docs/webrtc.md`).
//! * [`blocking`]: a small blocking client for tests and diagnostics.
//!
//! ## Driving contract
//!
//! ```text
//! let mut server = MediaServer::new(&auth, limits, Instant::now(), unix_now, &mut rand::rng());
//! loop {
//!     match next_event {
//!         datagram from `from` on listener `local`, received at buf[HEADROOM..HEADROOM + n]
//!             => server.handle(&mut buf[..HEADROOM + n], local, from, now, &mut |t| {
//!                    send t.bytes to t.to from the socket bound to t.local
//!                })
//!         timer fired => server.handle_timeout(now)
//!     }
//!     sleep until server.poll_timeout()
//! }
//! ```
//!
//! The data path does not allocate or copy: DATA is received [`wire::HEADROOM`] bytes into
//! the buffer, the FORWARDED header is written in front of the payload in place, and the same
//! bytes are sent to each recipient.

pub mod blocking;
mod channels;
pub mod driver;
pub mod endpoint;
pub mod http;
pub(crate) mod ratelimit;
pub mod server;
pub mod webrtc;
pub mod wire;

pub use driver::{MediaConfig, MediaError, MediaService, WebConfig};
pub use server::{
    BadSessionId, Endpoint, JoinRate, Limits, MediaServer, MemberKey, SessionId, Stats, Transmit,
    WebJoin, WebRefusal,
};
pub use webrtc::{ApiError, WebStats};
