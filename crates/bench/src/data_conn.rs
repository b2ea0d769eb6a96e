//! One allocation's connection to the server during the data phase, non-blocking.
//!
//! UDP datagrams go through the worker's `recvmmsg`/`sendmmsg` batches directly. On TCP and
//! TLS, outgoing frames are appended to a per-connection buffer and written with one `write`
//! (or one TLS record run) per round, and incoming bytes are cut into frames with
//! [`stream_frame_len`] (RFC 8656 §12.5 padding included). A connection whose outgoing buffer
//! is not yet drained is *backlogged*: the worker sends it nothing new, and counts the packets
//! it could not send, rather than let a buffer grow without bound.

use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use cloudproxy_proto::channel::stream_frame_len;

/// Bytes of received stream data held while a frame is incomplete.
const RX_CAPACITY: usize = 32 * 1024;

/// The transport of one allocation.
pub enum DataConn {
    /// A connected UDP socket: one 5-tuple per allocation.
    Udp(UdpSocket),
    /// A TCP connection and its frame buffers.
    Tcp(TcpStream, StreamBufs),
    /// A TLS session over TCP (boxed: rustls's state is large) and its frame buffers.
    Tls(Box<(rustls::ClientConnection, TcpStream)>, StreamBufs),
}

/// Buffers of a stream connection. The receive buffer is allocated on first use, so idle
/// connections (`--setup-only`) cost little.
#[derive(Default)]
pub struct StreamBufs {
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    tx_start: usize,
}

impl StreamBufs {
    /// With `leftover` bytes already read during set-up.
    pub fn new(leftover: &[u8]) -> Self {
        let mut bufs = Self::default();
        if !leftover.is_empty() {
            bufs.rx = vec![0; RX_CAPACITY.max(leftover.len())].into_boxed_slice();
            bufs.rx[..leftover.len()].copy_from_slice(leftover);
            bufs.rx_end = leftover.len();
        }
        bufs
    }

    /// Calls `f` for every complete frame and keeps the incomplete rest.
    fn cut_frames(&mut self, f: &mut impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            let data = &self.rx[self.rx_start..self.rx_end];
            match stream_frame_len(data) {
                Ok(Some(n)) => {
                    f(&data[..n]);
                    self.rx_start += n;
                }
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        if self.rx_start == self.rx_end {
            (self.rx_start, self.rx_end) = (0, 0);
        }
        Ok(())
    }

    /// Appends what `read` returns; `Ok(0)` at end of stream.
    fn fill(&mut self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        if self.rx.is_empty() {
            self.rx = vec![0; RX_CAPACITY].into_boxed_slice();
        }
        if self.rx_end == self.rx.len() {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
            if self.rx_end == self.rx.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame larger than the receive buffer",
                ));
            }
        }
        let n = read(&mut self.rx[self.rx_end..])?;
        self.rx_end += n;
        Ok(n)
    }

    fn unsent(&self) -> &[u8] {
        &self.tx[self.tx_start..]
    }

    fn consumed(&mut self, n: usize) {
        self.tx_start += n;
        if self.tx_start == self.tx.len() {
            self.tx.clear();
            self.tx_start = 0;
        }
    }
}

impl DataConn {
    /// The socket's descriptor, for the worker's epoll registration.
    pub fn fd(&self) -> RawFd {
        match self {
            DataConn::Udp(s) => s.as_raw_fd(),
            DataConn::Tcp(s, _) => s.as_raw_fd(),
            DataConn::Tls(b, _) => b.1.as_raw_fd(),
        }
    }

    /// Switches the socket to non-blocking mode for the data phase (set-up is blocking).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            DataConn::Udp(s) => s.set_nonblocking(true),
            DataConn::Tcp(s, _) => s.set_nonblocking(true),
            DataConn::Tls(b, _) => b.1.set_nonblocking(true),
        }
    }

    /// The outgoing buffer of a stream connection, to append frames to; `None` for UDP.
    pub fn tx(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            DataConn::Udp(_) => None,
            DataConn::Tcp(_, b) | DataConn::Tls(_, b) => Some(&mut b.tx),
        }
    }

    /// Whether earlier output is still waiting for the socket.
    pub fn backlogged(&self) -> bool {
        match self {
            DataConn::Udp(_) => false,
            DataConn::Tcp(_, b) => !b.unsent().is_empty(),
            DataConn::Tls(t, b) => !b.unsent().is_empty() || t.0.wants_write(),
        }
    }

    /// Writes as much queued output as the socket takes without blocking.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            DataConn::Udp(_) => Ok(()),
            DataConn::Tcp(sock, b) => {
                while !b.unsent().is_empty() {
                    match sock.write(b.unsent()) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => b.consumed(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            DataConn::Tls(t, b) => {
                let (conn, sock) = &mut **t;
                loop {
                    if !b.unsent().is_empty() {
                        let n = conn.writer().write(b.unsent())?;
                        b.consumed(n);
                    }
                    if !conn.wants_write() {
                        break;
                    }
                    match conn.write_tls(sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends one control message (a STUN request) now, or queues it on a stream.
    pub fn send_control(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            DataConn::Udp(s) => s.send(msg).map(drop),
            DataConn::Tcp(_, b) | DataConn::Tls(_, b) => {
                b.tx.extend_from_slice(msg);
                self.flush()
            }
        }
    }

    /// Reads every complete frame available on a stream connection without blocking and calls `f`
    /// for each. `Ok(false)` when the server closed the connection.
    pub fn read_frames(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<bool> {
        match self {
            DataConn::Udp(_) => Ok(true),
            DataConn::Tcp(sock, b) => loop {
                match b.fill(|buf| sock.read(buf)) {
                    Ok(0) => return Ok(false),
                    Ok(_) => b.cut_frames(&mut f)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            DataConn::Tls(t, b) => {
                let (conn, sock) = &mut **t;
                loop {
                    let eof = match conn.read_tls(sock) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    conn.process_new_packets().map_err(io::Error::other)?;
                    loop {
                        match b.fill(|buf| conn.reader().read(buf)) {
                            Ok(0) => return Ok(false),
                            Ok(_) => b.cut_frames(&mut f)?,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    if eof {
                        return Ok(false);
                    }
                }
            }
        }
    }
}
