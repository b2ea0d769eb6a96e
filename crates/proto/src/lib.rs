//! # cloudproxy-proto: the sans-IO core of the cloudproxy TURN relay
//!
//! This crate holds everything the relay decides, and nothing that touches the outside world:
//! no sockets, no clock, no tokio. Time comes in as `now: Instant`, wall-clock time is derived
//! from an anchor given at construction (so a virtual clock moves credential expiry too), and
//! randomness comes from a seeded RNG passed in by the driver.
//!
//! ## Driving contract
//!
//! A driver owns one [`Server`] per event loop (per core) and feeds it:
//!
//! ```text
//! loop {
//!     match next_event {
//!         datagram/frame from a client  => server.handle_client_input(bytes, client, now)
//!                                          -> Forward(Forward { relay, peer, range }): send bytes[range] to peer from relay
//!                                          -> Handled: apply the queued output (below); Dropped: nothing
//!         datagram from a peer on relay => server.handle_peer_input(relay, peer, buf, payload, now)
//!                                          -> Some((client, range)): send buf[range] to client
//!         timer fired                   => server.handle_timeout(now)
//!     }
//!     while let Some(cmd) = server.poll_command()   { bind / close relay sockets, then
//!                                                     report binds with handle_relay_bound }
//!     while let Some(t)   = server.poll_transmit()  { send STUN responses }
//!     while let Some(e)   = server.poll_event()     { count metrics, log }
//!     sleep until server.poll_timeout()
//! }
//! ```
//!
//! The data path (ChannelData and peer datagrams) never allocates: the client's ChannelData
//! payload is forwarded as a sub-range of the buffer the driver already holds, and peer
//! datagrams are received [`HEADROOM`] bytes into the buffer so that the ChannelData header (or a
//! Data indication header) is written in front of the payload without a copy.

pub mod admission;
pub mod auth;
pub mod channel;
pub mod client;
pub mod integrity;
pub mod policy;
pub mod server;
pub mod token;

mod addr;
mod config;
pub mod grants;
pub mod ports;
mod timer;

pub use addr::{ClientAddr, PeerAddr, RelayAddr, Transport};
pub use config::{AppKey, AuthConfig, Lifetimes, ServerConfig};
pub use server::{
    AllocationLedger, BoundChannel, ClientInput, Command, Event, Forward, LocalLedger, Server,
    Shared, Transmit, HEADROOM, TAILROOM,
};
