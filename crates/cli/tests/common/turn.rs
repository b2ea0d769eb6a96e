//! A TURN client's usual moves against a relay under test, over any transport, with the
//! blocking client of the SDK: allocate, bind the test channel, echo, delete.

use std::net::SocketAddr;

use cloudproxy_proto::client::{self, Attr, ALLOCATE, CHANNEL_BIND, REFRESH};
use cloudproxy_sdk::blocking::{Conn, TurnClient};

/// The channel number these helpers bind.
pub const CHANNEL: u16 = 0x4000;

/// A client (credentials minted with `secret`) with an allocation and [`CHANNEL`] bound to
/// `peer`.
pub fn client_with_channel(conn: Conn, secret: &str, peer: SocketAddr) -> TurnClient {
    let mut c = TurnClient::with_secret(conn, secret);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(r.success, "allocate: {:?}", r.error);
    let r = c.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(CHANNEL), Attr::PeerAddress(peer)],
    );
    assert!(r.success, "channel bind: {:?}", r.error);
    c
}

/// Sends one ChannelData packet on [`CHANNEL`] and expects it echoed back through the relay.
pub fn echo(c: &mut TurnClient, payload: &[u8]) {
    let msg = client::channel_data(CHANNEL, payload, c.conn.is_stream());
    c.conn.send(&msg);
    let back = c.conn.recv();
    assert_eq!(back, msg, "echo of {:?}", String::from_utf8_lossy(payload));
}

/// A fresh client's Allocate: `Ok(())` on success (the allocation is deleted again), or the
/// error code.
pub fn try_allocate(conn: Conn, secret: &str) -> Result<(), u16> {
    let mut c = TurnClient::with_secret(conn, secret);
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    if r.success {
        let _ = c.transact(REFRESH, &[Attr::Lifetime(0)]);
        return Ok(());
    }
    Err(r.error.map_or(0, |e| e.0))
}
