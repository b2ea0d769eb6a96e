//! The few Linux calls the data path needs, wrapped once: `epoll`, `recvmmsg`/`sendmmsg` over
//! a fixed arena of packet slots, and socket buffers forced past `rmem_max`.
//!
//! A [`Batch`] owns its buffers, `iovec`s, `mmsghdr`s and address slots in boxed slices that
//! are allocated once and never resized, so the raw pointers between them, set up in
//! [`Batch::new`], stay valid for the batch's life wherever the `Batch` value itself moves.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Packets per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;

/// An epoll instance; tokens are the caller's `u64`s.
pub struct Epoll {
    fd: OwnedFd,
    events: Box<[libc::epoll_event]>,
    pwait2: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before it is wrapped.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256].into_boxed_slice(),
            pwait2: true,
        })
    }

    /// Watches `fd` for input (level-triggered).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: plain syscall; a null event is allowed for EPOLL_CTL_DEL.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (with nanosecond resolution: `epoll_pwait2`, falling back to
    /// whole milliseconds on kernels before 5.11) and calls `f(token)` for each ready
    /// descriptor.
    pub fn wait(&mut self, timeout: Duration, mut f: impl FnMut(u64)) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let (events, len) = (self.events.as_mut_ptr(), self.events.len() as i32);
        let n = if self.pwait2 {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: the events buffer is valid for `len` entries; `ts` outlives the call.
            let n = unsafe { libc::epoll_pwait2(fd, events, len, &ts, std::ptr::null()) };
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.pwait2 = false;
            }
            n
        } else {
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            // SAFETY: as above.
            unsafe { libc::epoll_wait(fd, events, len, ms) }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ if e.raw_os_error() == Some(libc::ENOSYS) => Ok(()),
                _ => Err(e),
            };
        }
        for ev in &self.events[..n as usize] {
            let token = ev.u64;
            f(token);
        }
        Ok(())
    }
}

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time, so latency
/// does not depend on when the worker gets round to reading it.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, the clock of the kernel's receive
/// timestamps). A vDSO call, no system call.
pub fn now_ns() -> u64 {
    // SAFETY: clock_gettime fills a local struct.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Lets this thread's timed waits end within ~10 µs of their deadline instead of the default
/// 50 µs slack, so pacing at 100k+ packets/s does not turn into bursts.
pub fn tighten_timer_slack() {
    // SAFETY: prctl with an integer argument; failure only leaves the default slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 10_000 as libc::c_ulong);
    }
}

/// Raises the soft limit on open files to the hard limit: every allocation is a socket.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// [`BATCH`] packet slots of `slot` bytes with their message headers.
pub struct Batch {
    buf: Box<[u8]>,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    addr: Box<[libc::sockaddr_storage]>,
    /// Control-message space per slot, for the kernel's receive timestamp.
    ctrl: Box<[u64]>,
    slot: usize,
    /// Headers for [`Batch::send_slots`], which sends slots in any order.
    out_hdr: Box<[libc::mmsghdr]>,
    out_iov: Box<[libc::iovec]>,
}

// SAFETY: the raw pointers only point into the batch's own boxed slices.
unsafe impl Send for Batch {}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_storage>() as _;
/// `u64`s of control space per slot: one `SCM_TIMESTAMPNS` message (32 bytes) with room.
const CTRL_WORDS: usize = 8;
/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on the asm-generic ABIs (x86_64, aarch64): a
/// `struct timespec` of the receive time, CLOCK_REALTIME. Not exported by every libc build.
const SO_TIMESTAMPNS: libc::c_int = 35;

impl Batch {
    pub fn new(slot: usize) -> Self {
        let mut buf = vec![0u8; slot * BATCH].into_boxed_slice();
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        // SAFETY: as above: all-zero is a valid mmsghdr.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: as above: all-zero is a valid sockaddr_storage.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = vec![zero_iov; BATCH].into_boxed_slice();
        let mut hdr = vec![zero_hdr; BATCH].into_boxed_slice();
        let mut addr = vec![zero_addr; BATCH].into_boxed_slice();
        let ctrl = vec![0u64; BATCH * CTRL_WORDS].into_boxed_slice();
        for i in 0..BATCH {
            iov[i].iov_base = buf[i * slot..].as_mut_ptr().cast();
            iov[i].iov_len = slot;
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&mut addr[i] as *mut libc::sockaddr_storage).cast();
            hdr[i].msg_hdr.msg_namelen = ADDR_LEN;
        }
        Self {
            buf,
            iov,
            hdr,
            addr,
            ctrl,
            slot,
            out_hdr: vec![zero_hdr; BATCH].into_boxed_slice(),
            out_iov: vec![zero_iov; BATCH].into_boxed_slice(),
        }
    }

    /// The sender of received slot `i`.
    pub fn addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: sockaddr_storage is one of this platform's sockaddr types; the kernel wrote
        // a valid address of `msg_namelen` bytes into slot `i`'s address.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.addr[i];
            socket2::SockAddr::new(storage, self.hdr[i].msg_hdr.msg_namelen)
        }
        .as_socket()
    }

    /// Sends received slots `slots` (at most [`BATCH`], each with its received length) with
    /// one `sendmmsg`: to `to`, or on the connected socket if `None`. Returns how many the
    /// kernel took; 0 when the socket is full.
    pub fn send_slots(
        &mut self,
        fd: RawFd,
        slots: impl Iterator<Item = usize>,
        to: Option<std::net::SocketAddr>,
    ) -> io::Result<usize> {
        let to = to.map(socket2::SockAddr::from);
        let mut n = 0;
        for i in slots.take(BATCH) {
            let len = (self.hdr[i].msg_len as usize).min(self.slot);
            self.out_iov[n] = libc::iovec {
                iov_base: self.buf[i * self.slot..].as_mut_ptr().cast(),
                iov_len: len,
            };
            let h = &mut self.out_hdr[n].msg_hdr;
            h.msg_iov = &mut self.out_iov[n];
            h.msg_iovlen = 1;
            match &to {
                Some(a) => {
                    h.msg_name = a.as_ptr() as *mut libc::c_void;
                    h.msg_namelen = a.len();
                }
                None => {
                    h.msg_name = std::ptr::null_mut();
                    h.msg_namelen = 0;
                }
            }
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            n += 1;
        }
        // SAFETY: headers 0..n point at this batch's iovecs and slots, and at `to`, all of
        // which outlive the call.
        let sent = unsafe { libc::sendmmsg(fd, self.out_hdr.as_mut_ptr(), n as u32, 0) };
        would_block_is_zero(sent)
    }

    /// Slot `i`, all `slot` bytes of it.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// The received length of slot `i`.
    pub fn len(&self, i: usize) -> usize {
        (self.hdr[i].msg_len as usize).min(self.slot)
    }

    /// The first `len` bytes of slot `i`, as received.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.hdr[i].msg_len as usize).min(self.slot);
        &self.buf[i * self.slot..i * self.slot + len]
    }

    /// Receives up to [`BATCH`] datagrams without blocking (`flags` may add
    /// `MSG_WAITFORONE` on a blocking socket). Returns how many; 0 when none are waiting.
    pub fn recv(&mut self, fd: RawFd, flags: i32) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iov[i].iov_len = self.slot;
            self.hdr[i].msg_hdr.msg_name =
                (&mut self.addr[i] as *mut libc::sockaddr_storage).cast();
            self.hdr[i].msg_hdr.msg_namelen = ADDR_LEN;
            self.hdr[i].msg_hdr.msg_control = self.ctrl[i * CTRL_WORDS..].as_mut_ptr().cast();
            self.hdr[i].msg_hdr.msg_controllen = CTRL_WORDS * 8;
        }
        // SAFETY: every header points at a live iovec, buffer, address and control slot of
        // this batch.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        would_block_is_zero(n)
    }

    /// Sends slots `0..n`, slot `i` with `lens(i)` bytes, to each slot's address if
    /// `addressed` (the echo peer replying to senders) or on the connected socket otherwise.
    /// Returns how many the kernel took; a datagram it refuses ends the call early.
    pub fn send(
        &mut self,
        fd: RawFd,
        n: usize,
        addressed: bool,
        lens: impl Fn(usize) -> usize,
    ) -> io::Result<usize> {
        for i in 0..n {
            self.iov[i].iov_len = lens(i).min(self.slot);
            if !addressed {
                self.hdr[i].msg_hdr.msg_name = std::ptr::null_mut();
                self.hdr[i].msg_hdr.msg_namelen = 0;
            }
            self.hdr[i].msg_hdr.msg_control = std::ptr::null_mut();
            self.hdr[i].msg_hdr.msg_controllen = 0;
        }
        // SAFETY: as in `recv`; the kernel reads `n <= BATCH` headers.
        let sent = unsafe { libc::sendmmsg(fd, self.hdr.as_mut_ptr(), n as u32, 0) };
        would_block_is_zero(sent)
    }

    /// The kernel's receive time of slot `i` (ns since the Unix epoch), if the socket has
    /// [`enable_rx_timestamps`] on.
    pub fn rx_time_ns(&self, i: usize) -> Option<u64> {
        let hdr = &self.hdr[i].msg_hdr;
        // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages into
        // this slot's control space; the CMSG macros stay within it.
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

    /// Returns received slots `range` to their senders, each with its received length.
    /// Returns how many the kernel took.
    pub fn echo_back(&mut self, fd: RawFd, range: std::ops::Range<usize>) -> io::Result<usize> {
        for i in range.clone() {
            self.iov[i].iov_len = (self.hdr[i].msg_len as usize).min(self.slot);
            self.hdr[i].msg_hdr.msg_control = std::ptr::null_mut();
            self.hdr[i].msg_hdr.msg_controllen = 0;
        }
        let n = range.len() as u32;
        // SAFETY: as in `recv`; `range` lies within the batch.
        let sent = unsafe { libc::sendmmsg(fd, self.hdr[range].as_mut_ptr(), n, 0) };
        would_block_is_zero(sent)
    }
}

fn would_block_is_zero(rc: libc::c_int) -> io::Result<usize> {
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

/// Sets the send and receive buffers to `bytes`: with `SO_*BUFFORCE` when the process has
/// `CAP_NET_ADMIN` (so `net.core.rmem_max` does not cap it), else the plain options, which the
/// kernel caps silently.
pub fn set_buffers(sock: &socket2::Socket, bytes: usize) {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt with a c_int value of the right size.
        let forced = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    plain,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// User plus system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills a local struct.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `UDP_SEGMENT` (linux/udp.h): the segment size for UDP generic segmentation offload.
const UDP_SEGMENT: libc::c_int = 103;

/// Sends `buf` as datagrams of `segment` bytes each (the last may be shorter) with one
/// `sendmsg` and `UDP_SEGMENT` (Linux 4.18+): the stack is traversed once for the whole run.
/// Returns the bytes the kernel took.
pub fn send_segmented(fd: RawFd, buf: &[u8], segment: u16) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut ctrl = [0u64; 4];
    debug_assert!(space <= std::mem::size_of_val(&ctrl));
    // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the call, and the
    // control message is written within `ctrl` (CMSG_SPACE(2) = 24 bytes of 32).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
        let n = libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT);
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }
}
