//! Binding the relay's sockets: listeners shared by the shards with `SO_REUSEPORT` (after a
//! probe, so a port someone else holds fails), relayed transport addresses that are ours
//! alone, the buffer sizes, and registration with a shard's reactor.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use cloudproxy_mmsg::size_buffers;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

/// A UDP socket registered with a shard's tokio reactor. Reads and writes go straight to the
/// kernel through its descriptor; tokio only reports readiness.
pub(crate) type Udp = AsyncFd<UdpSocket>;

/// Registers `socket` (non-blocking) with the current shard's reactor, for read readiness only:
/// sends never wait on tokio (see `batch.rs`).
pub(crate) fn register(socket: UdpSocket) -> io::Result<Udp> {
    // SAFETY: `socket` owns its descriptor, and the `AsyncFd` owns `socket` from here on, so the
    // descriptor stays open and the same for the `AsyncFd`'s whole life.
    unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// SO_REUSEPORT would let us silently share a port with another process that also set it, so
/// a fixed port is first probed with a plain bind, which fails if anyone holds it.
pub(crate) fn probe(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // Lets the probe pass old TIME_WAIT connections; a listener still makes it fail.
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())
}

pub(crate) fn bind_udp(addr: SocketAddr, buffer: Option<usize>) -> io::Result<UdpSocket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    if let Some(b) = buffer {
        let got = size_buffers(&s, b)?;
        if got < b {
            tracing::warn!(
                "UDP listener {addr}: the kernel capped its receive buffer at {got} bytes \
                 ({b} asked), about {} small datagrams: a shard held off the CPU longer than \
                 that drops client packets. Raise net.core.rmem_max and net.core.wmem_max \
                 to at least {b} (sysctl), or run with CAP_NET_ADMIN",
                got / SMALL_DATAGRAM_TRUESIZE
            );
        }
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// What the kernel charges a buffer for one small datagram (a 164-byte ChannelData message on
/// loopback: a 16 MiB buffer held 20,164 of them).
const SMALL_DATAGRAM_TRUESIZE: usize = 832;

/// A relayed transport address socket: no SO_REUSEPORT, so a port held by anyone else fails.
pub(crate) fn bind_relay(addr: SocketAddr, buffer: Option<usize>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    if let Some(b) = buffer {
        size_buffers(&s, b)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LISTENER_BUFFER;

    /// The listener buffer is what was asked, past `net.core.rmem_max` when privileged
    /// (CAP_NET_ADMIN, as root in CI); without privilege, whatever the kernel allows.
    #[test]
    fn listener_buffer_is_forced_when_privileged() {
        let asked = LISTENER_BUFFER;
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), Some(asked)).unwrap();
        let got = socket2::SockRef::from(&s).recv_buffer_size().unwrap() / 2;
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(got, asked, "root may exceed rmem_max ({max})");
        } else {
            assert_eq!(
                got,
                asked.min(max),
                "unprivileged: capped at rmem_max {max}"
            );
        }
    }
}
