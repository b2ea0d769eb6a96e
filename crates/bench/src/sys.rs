//! The few Linux calls the data path needs, wrapped once: `epoll`, `recvmmsg`/`sendmmsg` over
//! a fixed arena of packet slots, and socket buffers forced past `rmem_max`.
//!
//! A [`Batch`] owns its buffers, `iovec`s, `mmsghdr`s and address slots in boxed slices that
//! are allocated once and never resized, so the raw pointers between them, set up in
//! [`Batch::new`], stay valid for the batch's life wherever the `Batch` value itself moves.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use cloudproxy_mmsg::{would_block_is_zero, Headers, SO_TIMESTAMPNS};

/// Packets per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;

/// An epoll instance; tokens are the caller's `u64`s.
pub struct Epoll {
    fd: OwnedFd,
    events: Box<[libc::epoll_event]>,
    pwait2: bool,
}

impl Epoll {
    /// A new epoll instance (close-on-exec), with room for 256 events per wait.
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

/// [`BATCH`] packet slots of `slot` bytes with their message headers (the `recvmmsg`/
/// `sendmmsg` layer shared with the relay, [`cloudproxy_mmsg::Headers`]).
pub struct Batch {
    buf: Box<[u8]>,
    slot: usize,
    /// One header per slot, with control space for the receive timestamp.
    headers: Headers,
    /// Headers for [`Batch::send_slots`], which sends slots in any order.
    out: Headers,
}

/// Control space per slot: one `SCM_TIMESTAMPNS` message (32 bytes) with room.
const CTRL_BYTES: usize = 64;

impl Batch {
    /// [`BATCH`] packet slots of `slot` bytes each (the largest frame a socket may carry),
    /// allocated once.
    pub fn new(slot: usize) -> Self {
        Self {
            buf: vec![0u8; slot * BATCH].into_boxed_slice(),
            slot,
            headers: Headers::new(BATCH, CTRL_BYTES),
            out: Headers::new(BATCH, 0),
        }
    }

    fn slot_ptr(&mut self, i: usize) -> *mut u8 {
        self.buf[i * self.slot..].as_mut_ptr()
    }

    /// The sender of received slot `i`.
    pub fn addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        self.headers.received_from(i)
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
        let mut n = 0;
        for i in slots.take(BATCH) {
            let len = self.len(i);
            let at = self.slot_ptr(i);
            self.out.set_send(n, at, len, to.as_ref());
            n += 1;
        }
        // SAFETY: headers 0..n point into this batch's slots, which outlive the call.
        would_block_is_zero(unsafe { self.out.send(fd, 0..n, 0) })
    }

    /// Slot `i`, all `slot` bytes of it.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// The received length of slot `i`.
    pub fn len(&self, i: usize) -> usize {
        self.headers.received_len(i).min(self.slot)
    }

    /// The first `len` bytes of slot `i`, as received.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = self.len(i);
        &self.buf[i * self.slot..i * self.slot + len]
    }

    /// Receives up to [`BATCH`] datagrams without blocking (`flags` may add
    /// `MSG_WAITFORONE` on a blocking socket). Returns how many; 0 when none are waiting.
    pub fn recv(&mut self, fd: RawFd, flags: i32) -> io::Result<usize> {
        for i in 0..BATCH {
            let (at, len) = (self.slot_ptr(i), self.slot);
            self.headers.set_recv(i, at, len);
        }
        // SAFETY: every header points at a slot of this batch, live and unborrowed during the
        // call.
        would_block_is_zero(unsafe { self.headers.recv(fd, BATCH, flags) })
    }

    /// Sends slots `0..n`, slot `i` with `lens(i)` bytes, on the connected socket. Returns
    /// how many the kernel took; a datagram it refuses ends the call early.
    pub fn send(
        &mut self,
        fd: RawFd,
        n: usize,
        lens: impl Fn(usize) -> usize,
    ) -> io::Result<usize> {
        let n = n.min(BATCH);
        for i in 0..n {
            let (at, len) = (self.slot_ptr(i), lens(i).min(self.slot));
            self.headers.set_send(i, at, len, None);
        }
        // SAFETY: headers 0..n point at this batch's slots, live during the call.
        would_block_is_zero(unsafe { self.headers.send(fd, 0..n, 0) })
    }

    /// The kernel's receive time of slot `i` (ns since the Unix epoch), if the socket has
    /// [`enable_rx_timestamps`] on.
    pub fn rx_time_ns(&self, i: usize) -> Option<u64> {
        self.headers.received_at_ns(i)
    }

    /// Returns received slots `range` to their senders, each with its received length.
    /// Returns how many the kernel took.
    pub fn echo_back(&mut self, fd: RawFd, range: std::ops::Range<usize>) -> io::Result<usize> {
        for i in range.clone() {
            let len = self.len(i);
            self.headers.set_reply(i, len);
        }
        // SAFETY: the headers in `range` still point at this batch's slots and the senders'
        // addresses from the last `recv`.
        would_block_is_zero(unsafe { self.headers.send(fd, range, 0) })
    }
}

/// Sets the send and receive buffers to `bytes`, past `net.core.rmem_max` when the process
/// has CAP_NET_ADMIN ([`cloudproxy_mmsg::size_buffers`]); a refusal leaves the defaults.
pub fn set_buffers(sock: &socket2::Socket, bytes: usize) {
    let _ = cloudproxy_mmsg::size_buffers(sock, bytes.min(i32::MAX as usize / 2));
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
