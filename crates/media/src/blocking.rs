//! A small blocking client over a real UDP socket, for tests, diagnostics and examples. It
//! allocates per reply (owned [`Reply`]s); the SDK is the client for real use.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::wire::{self, ErrorCode, Packet};

/// A datagram from the service, owned: what [`Reply::from_packet`] makes of a [`Packet`]
/// of the service's kinds (JOINED, ERROR, FORWARDED, PONG, LEFT, CHALLENGE).
pub type Reply = wire::Datagram<String, Vec<u8>>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply arrived within the (carried) wait.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The service answered with ERROR.
    #[error("refused with {code:?}: {message} (app '{app_id}')")]
    Refused {
        /// The ERROR's code.
        code: ErrorCode,
        /// The token's app id, as the service echoed it.
        app_id: String,
        /// The service's explanation.
        message: String,
    },
    /// The service answered with a datagram the call did not expect.
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<Reply>),
}

/// One client socket talking to one service address.
#[derive(Debug)]
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
    seq: u32,
}

impl Client {
    /// Binds an ephemeral port on loopback (or the unspecified address for a remote server)
    /// of the server's family.
    pub fn connect(server: SocketAddr) -> io::Result<Client> {
        let bind: SocketAddr = match (server.is_ipv4(), server.ip().is_loopback()) {
            (true, true) => ([127, 0, 0, 1], 0).into(),
            (true, false) => ([0, 0, 0, 0], 0).into(),
            (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        Ok(Client {
            socket: UdpSocket::bind(bind)?,
            server,
            buf: vec![0; 65_536],
            seq: 0,
        })
    }

    /// The client socket's local address (what the service sees, without NAT).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends raw bytes to the service.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send_to(bytes, self.server).map(drop)
    }

    fn send(&mut self, packet: Packet<'_>) -> io::Result<()> {
        let n = packet
            .encode(&mut self.buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.socket.send_to(&self.buf[..n], self.server).map(drop)
    }

    /// Joins and waits for JOINED: `(uid, members, the address the service sees)`. JOIN, then
    /// the same JOIN with the cookie of the CHALLENGE that answers it (see [`crate::wire`]).
    pub fn join(
        &mut self,
        token: &str,
        echo: bool,
        timeout: Duration,
    ) -> Result<(u32, u16, SocketAddr), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut cookie = None;
        // A cookie can go stale between the two JOINs (the slot turned twice): go round again,
        // a bounded number of times.
        for _ in 0..3 {
            self.send_join(token, echo, cookie)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_skipping_media(left)? {
                Reply::Joined { uid, members, addr } => return Ok((uid, members, addr)),
                Reply::Challenge(c) => cookie = Some(c),
                other => return Err(refusal(other)),
            }
        }
        Err(ClientError::Timeout(timeout))
    }

    /// Sends one JOIN, with or without a cookie (tests of the handshake itself).
    pub fn send_join(
        &mut self,
        token: &str,
        echo: bool,
        cookie: Option<wire::Cookie>,
    ) -> io::Result<()> {
        self.send(Packet::Join {
            echo,
            token,
            cookie,
        })
    }

    /// Sends DATA with the next sequence number and the current time; returns the number.
    pub fn send_data(&mut self, payload: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let sent_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let seq = self.seq;
        self.send(Packet::Data {
            seq,
            sent_micros,
            payload,
        })?;
        Ok(seq)
    }

    /// PING, then waits for the PONG: the round-trip time.
    pub fn ping(&mut self, timeout: Duration) -> Result<Duration, ClientError> {
        let start = Instant::now();
        let t = start.elapsed().as_nanos() as u64 ^ 0x5eed;
        self.send(Packet::Ping(t))?;
        match self.recv_skipping_media(timeout)? {
            Reply::Pong(got) if got == t => Ok(start.elapsed()),
            other => Err(refusal(other)),
        }
    }

    /// LEAVE, then waits for LEFT.
    pub fn leave(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.send(Packet::Leave)?;
        match self.recv_skipping_media(timeout)? {
            Reply::Left => Ok(()),
            other => Err(refusal(other)),
        }
    }

    /// The next reply that is not FORWARDED media.
    fn recv_skipping_media(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Reply::Forwarded { .. } => continue,
                other => return Ok(other),
            }
        }
    }

    /// The next datagram from the service (others are ignored), waiting at most `timeout`.
    /// Datagrams that do not decode are skipped.
    pub fn recv(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(timeout));
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Timeout(timeout))
                }
                Err(e) => return Err(e.into()),
            };
            if from != self.server {
                continue;
            }
            if let Ok(Some(reply)) = wire::decode(&self.buf[..n]).map(Reply::from_packet) {
                return Ok(reply);
            }
        }
    }
}

impl Reply {
    /// A decoded datagram from the service as an owned reply; `None` for the kinds a client
    /// sends (JOIN, DATA, PING, LEAVE).
    pub fn from_packet(p: Packet<'_>) -> Option<Reply> {
        Some(match p {
            Packet::Joined { uid, members, addr } => Reply::Joined { uid, members, addr },
            Packet::Error {
                code,
                retryable,
                app_id,
                message,
            } => Reply::Error {
                code,
                retryable,
                app_id: app_id.to_owned(),
                message: message.to_owned(),
            },
            Packet::Forwarded {
                from_uid,
                seq,
                sent_micros,
                payload,
            } => Reply::Forwarded {
                from_uid,
                seq,
                sent_micros,
                payload: payload.to_vec(),
            },
            Packet::Pong(t) => Reply::Pong(t),
            Packet::Left => Reply::Left,
            Packet::Challenge(c) => Reply::Challenge(c),
            Packet::Join { .. } | Packet::Data { .. } | Packet::Ping(_) | Packet::Leave => {
                return None
            }
        })
    }
}

fn refusal(reply: Reply) -> ClientError {
    match reply {
        Reply::Error {
            code,
            app_id,
            message,
            ..
        } => ClientError::Refused {
            code,
            app_id,
            message,
        },
        other => ClientError::Unexpected(Box::new(other)),
    }
}
