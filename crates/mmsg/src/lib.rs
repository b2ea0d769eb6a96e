//! # cloudproxy-mmsg: batched UDP I/O, written once
//!
//! The relay's shards and the benchmark's generator, echo peer and forwarder all move UDP
//! datagrams in batches with `recvmmsg`/`sendmmsg`. This crate holds what they share: the
//! message headers and their raw pointers ([`Headers`]), socket addresses in their C form
//! ([`to_sockaddr`], [`from_sockaddr`]), socket buffers sized past `rmem_max` when privileged
//! ([`size_buffers`]), and the short wait for a full socket ([`wait_writable`]). The callers
//! keep their own policies: which memory the datagrams live in (the relay's slots keep
//! headroom for the ChannelData header; the generator's carry receive timestamps), and what a
//! refusal means.
//!
//! ## The scheme
//!
//! [`Headers`] owns `n` `mmsghdr`s, their `iovec`s, address slots and (optionally) control
//! space, in boxed slices allocated once and never resized: a header's pointers to its own
//! iovec, address and control slot stay valid wherever the `Headers` value moves. The caller
//! points header `j` at its datagram memory with [`Headers::set_recv`] or
//! [`Headers::set_send`] (storing a pointer is safe), then makes the call with
//! [`Headers::recv`] or [`Headers::send`], which are `unsafe`: the caller promises that memory
//! is live for the call. Nothing here allocates after [`Headers::new`].

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

/// Bytes of a C socket address slot.
const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_storage>() as _;

/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on the asm-generic ABIs (x86_64, aarch64): a `struct
/// timespec` of the receive time, CLOCK_REALTIME. Not exported by every libc build.
pub const SO_TIMESTAMPNS: libc::c_int = 35;

/// `n` message headers with their iovecs, address slots and control space.
pub struct Headers {
    hdr: Box<[libc::mmsghdr]>,
    iov: Box<[libc::iovec]>,
    addr: Box<[libc::sockaddr_storage]>,
    /// `ctrl_words` u64s of control space per header (none when 0).
    ctrl: Box<[u64]>,
    ctrl_words: usize,
}

// SAFETY: the raw pointers in the headers point into this value's own boxed slices, or at
// caller memory that the unsafe calls' contracts cover; nothing is shared between threads.
unsafe impl Send for Headers {}

impl Headers {
    /// `n` headers, each with `control_bytes` of control space (rounded up to 8) for receive
    /// ancillary data such as [`SO_TIMESTAMPNS`]; 0 for none.
    pub fn new(n: usize, control_bytes: usize) -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let (zero_hdr, zero_iov, zero_addr) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::sockaddr_storage>(),
            )
        };
        let ctrl_words = control_bytes.div_ceil(8);
        Self {
            hdr: vec![zero_hdr; n].into_boxed_slice(),
            iov: vec![zero_iov; n].into_boxed_slice(),
            addr: vec![zero_addr; n].into_boxed_slice(),
            ctrl: vec![0u64; n * ctrl_words].into_boxed_slice(),
            ctrl_words,
        }
    }

    /// Points header `j` at `len` bytes at `buf` to receive into, with room for the sender's
    /// address and the control space.
    pub fn set_recv(&mut self, j: usize, buf: *mut u8, len: usize) {
        self.iov[j] = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        let (control, controllen) = match self.ctrl_words {
            0 => (std::ptr::null_mut(), 0),
            w => (self.ctrl[j * w..].as_mut_ptr().cast(), w * 8),
        };
        let h = &mut self.hdr[j].msg_hdr;
        h.msg_name = (&mut self.addr[j] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = ADDR_LEN;
        h.msg_iov = &mut self.iov[j];
        h.msg_iovlen = 1;
        h.msg_control = control;
        h.msg_controllen = controllen;
        h.msg_flags = 0;
    }

    /// Points header `j` at `len` bytes at `buf` to send: to `to`, or on the connected socket
    /// when `None`.
    pub fn set_send(&mut self, j: usize, buf: *const u8, len: usize, to: Option<&SocketAddr>) {
        self.iov[j] = libc::iovec {
            iov_base: buf as *mut libc::c_void,
            iov_len: len,
        };
        let (name, namelen) = match to {
            Some(a) => (
                (&mut self.addr[j] as *mut libc::sockaddr_storage).cast(),
                to_sockaddr(a, &mut self.addr[j]),
            ),
            None => (std::ptr::null_mut(), 0),
        };
        let h = &mut self.hdr[j].msg_hdr;
        h.msg_name = name;
        h.msg_namelen = namelen;
        h.msg_iov = &mut self.iov[j];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// Turns received header `j` around: its own first `len` bytes go back to the address
    /// it came from.
    pub fn set_reply(&mut self, j: usize, len: usize) {
        self.iov[j].iov_len = len;
        let h = &mut self.hdr[j].msg_hdr;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
    }

    /// `recvmmsg` into headers `0..n`. Returns how many datagrams arrived; errors as the
    /// kernel gave them (`WouldBlock` included).
    ///
    /// # Safety
    ///
    /// Each of headers `0..n` was last set with [`Headers::set_recv`] to memory that is live,
    /// writable and not otherwise borrowed for the duration of the call.
    pub unsafe fn recv(&mut self, fd: RawFd, n: usize, flags: libc::c_int) -> io::Result<usize> {
        let n = n.min(self.hdr.len());
        // SAFETY: headers 0..n point at this value's iovecs, addresses and control space, and
        // (by the caller's contract) at live, writable datagram memory.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// `sendmmsg` of headers `range`. Returns how many the kernel took; errors as it gave
    /// them (`WouldBlock` included).
    ///
    /// # Safety
    ///
    /// Each header in `range` was last set with [`Headers::set_send`] or
    /// [`Headers::set_reply`] to memory that is live for the duration of the call.
    pub unsafe fn send(
        &mut self,
        fd: RawFd,
        range: Range<usize>,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let n = range.len();
        // SAFETY: headers `range` (within the slice: indexing checks it) point at this
        // value's iovecs and addresses and, by the caller's contract, at live memory.
        let rc =
            unsafe { libc::sendmmsg(fd, self.hdr[range].as_mut_ptr(), n as libc::c_uint, flags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// The length of the datagram header `j` received.
    pub fn received_len(&self, j: usize) -> usize {
        self.hdr[j].msg_len as usize
    }

    /// The sender of the datagram header `j` received.
    pub fn received_from(&self, j: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addr[j])
    }

    /// The kernel's receive time of header `j`'s datagram (ns since the Unix epoch), when the
    /// socket has [`SO_TIMESTAMPNS`] on and the headers have control space.
    pub fn received_at_ns(&self, j: usize) -> Option<u64> {
        if self.ctrl_words == 0 {
            return None;
        }
        let hdr = &self.hdr[j].msg_hdr;
        // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages into
        // this header's control space; the CMSG macros stay within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }
}

/// `Ok(0)` for a call that would block or was interrupted; other results unchanged.
pub fn would_block_is_zero(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        other => other,
    }
}

/// Waits up to `ms` for `fd` to accept more data.
pub fn wait_writable(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd that outlives the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Sets SO_RCVBUF and SO_SNDBUF to `bytes`: with CAP_NET_ADMIN (SO_RCVBUFFORCE /
/// SO_SNDBUFFORCE) past the `net.core.rmem_max`/`wmem_max` caps, else up to them (the kernel
/// caps the plain options silently). Returns the receive buffer in force, in the units asked
/// (the kernel reports twice what it was given: it counts its bookkeeping).
pub fn size_buffers(s: &socket2::Socket, bytes: usize) -> io::Result<usize> {
    let forced = |opt: libc::c_int| {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `s` is an open socket; the option value is a c_int that outlives the call,
        // and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(s),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    };
    if !forced(libc::SO_RCVBUFFORCE) {
        s.set_recv_buffer_size(bytes)?;
    }
    if !forced(libc::SO_SNDBUFFORCE) {
        s.set_send_buffer_size(bytes)?;
    }
    Ok(s.recv_buffer_size()? / 2)
}

/// Writes `addr` as a C socket address; returns its length.
fn to_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            *sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            *sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address the kernel wrote.
fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_round_trip() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut st = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        for a in ["192.0.2.7:3478", "[2001:db8::1%3]:49152"] {
            let a: SocketAddr = a.parse().unwrap();
            to_sockaddr(&a, &mut st);
            assert_eq!(from_sockaddr(&st), Some(a));
        }
        st.ss_family = libc::AF_UNIX as libc::sa_family_t;
        assert_eq!(from_sockaddr(&st), None);
    }

    /// A batch in, sent back to its senders from the same memory: lengths, addresses and
    /// order kept; an empty socket reports `WouldBlock`, which [`would_block_is_zero`] maps
    /// to 0.
    #[test]
    fn receive_and_reply_in_place() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let src = UdpSocket::bind("127.0.0.1:0").unwrap();
        src.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for i in 1..=8u8 {
            src.send_to(&vec![i; i as usize * 10], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut buf = vec![0u8; 8 * 256];
        let mut h = Headers::new(8, 0);
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < 8 {
            for j in 0..8 {
                h.set_recv(j, buf[j * 256..].as_mut_ptr(), 256);
            }
            // SAFETY: every header points into `buf`, live and unborrowed during the call.
            let n = would_block_is_zero(unsafe { h.recv(rx.as_raw_fd(), 8 - got, 0) }).unwrap();
            for j in 0..n {
                assert_eq!(h.received_from(j), Some(src.local_addr().unwrap()));
                let len = h.received_len(j);
                assert_eq!(buf[j * 256], (got + j + 1) as u8);
                assert_eq!(len, (got + j + 1) * 10);
                h.set_reply(j, len);
            }
            // SAFETY: headers 0..n point into `buf`, live during the call.
            let sent = unsafe { h.send(rx.as_raw_fd(), 0..n, 0) }.unwrap();
            assert_eq!(sent, n);
            got += n;
            assert!(
                std::time::Instant::now() < deadline,
                "only {got} of 8 arrived"
            );
        }
        let mut back = [0u8; 256];
        for i in 1..=8usize {
            let (n, from) = src.recv_from(&mut back).unwrap();
            assert_eq!(
                (n, from, back[0]),
                (i * 10, rx.local_addr().unwrap(), i as u8)
            );
        }
        for j in 0..8 {
            h.set_recv(j, buf[j * 256..].as_mut_ptr(), 256);
        }
        // SAFETY: as above.
        let empty = unsafe { h.recv(rx.as_raw_fd(), 8, libc::MSG_DONTWAIT) };
        assert_eq!(
            empty.as_ref().map_err(io::Error::kind),
            Err(io::ErrorKind::WouldBlock)
        );
        assert_eq!(would_block_is_zero(empty).unwrap(), 0);
    }
}
