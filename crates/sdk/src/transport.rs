//! What a path runs on: a connected UDP socket, or a byte stream (TCP, TLS, a CONNECT tunnel)
//! with its receive buffer. A [`crate::pipe::Pipe`] uses it, and hands it to a
//! [`crate::release::Release`] when the path ends.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;

/// A byte stream a path can run on.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A path's socket or stream.
pub(crate) enum Link {
    Udp(UdpSocket),
    Stream {
        io: Box<dyn Stream>,
        buf: Vec<u8>,
        filled: usize,
    },
    /// Handed over to a [`crate::release::Release`].
    Released,
}
