//! A small blocking TURN client over real sockets, and a TURN client's usual moves against a
//! relay under test (allocate, bind the test channel, echo, delete). It speaks only standard
//! TURN (via [`cloudproxy_proto::client`]), so it works against any TURN server. Every read is
//! bounded by [`TIMEOUT`]; failures panic with a message, which is what a test wants.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use cloudproxy_proto::auth::{rest_password, rest_username};
use cloudproxy_proto::channel::stream_frame_len;
use cloudproxy_proto::client::{
    self, Attr, ClientAuth, Response, TransactionId, ALLOCATE, CHANNEL_BIND, REFRESH,
};

/// How long any read waits.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a TURN server over one transport.
pub enum Conn {
    /// A UDP socket on loopback and the server's address.
    Udp(UdpSocket, SocketAddr),
    /// A TCP stream and the bytes read past the last whole frame.
    Tcp(TcpStream, Vec<u8>),
    /// A TLS stream (any server certificate accepted) and the bytes read past the last frame.
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        Vec<u8>,
    ),
}

impl Conn {
    /// A UDP socket on 127.0.0.1 talking to `server`.
    pub fn udp(server: SocketAddr) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn::Udp(s, server)
    }

    /// A TCP connection to `server`; panics if it is not accepted within [`TIMEOUT`].
    pub fn tcp(server: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn::Tcp(s, Vec::new())
    }

    /// A TLS connection to `server` for the name `localhost`, offering `alpn` if given. The
    /// certificate is not verified (tests use self-signed ones).
    pub fn tls(server: SocketAddr, alpn: Option<&[u8]>) -> Self {
        let s = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let config = cloudproxy_sdk::tls::insecure_client_config(alpn);
        let name = "localhost".try_into().expect("valid name");
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        Conn::Tls(Box::new(rustls::StreamOwned::new(conn, s)), Vec::new())
    }

    /// Whether frames are stream-framed (TCP or TLS: ChannelData padded to 4 bytes).
    pub fn is_stream(&self) -> bool {
        !matches!(self, Conn::Udp(..))
    }

    /// Sends one STUN message or ChannelData frame; panics on a socket error.
    pub fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).unwrap();
            }
            Conn::Tcp(s, _) => s.write_all(bytes).unwrap(),
            Conn::Tls(s, _) => {
                s.write_all(bytes).unwrap();
                s.flush().unwrap();
            }
        }
    }

    /// The next datagram or whole frame; panics if none comes within [`TIMEOUT`] or the
    /// server closes the connection.
    pub fn recv(&mut self) -> Vec<u8> {
        fn frame<R: Read>(r: &mut R, pending: &mut Vec<u8>) -> Vec<u8> {
            loop {
                if let Ok(Some(n)) = stream_frame_len(pending) {
                    return pending.drain(..n).collect();
                }
                let mut buf = [0u8; 4096];
                let n = r.read(&mut buf).expect("read within the timeout");
                assert!(n > 0, "server closed the connection");
                pending.extend_from_slice(&buf[..n]);
            }
        }
        match self {
            Conn::Udp(s, _) => {
                let mut buf = [0u8; 2048];
                let (n, _) = s.recv_from(&mut buf).expect("datagram within the timeout");
                buf[..n].to_vec()
            }
            Conn::Tcp(s, p) => frame(s, p),
            Conn::Tls(s, p) => frame(s.as_mut(), p),
        }
    }
}

/// A blocking TURN client that answers 401/438 challenges by itself.
pub struct TurnClient {
    /// The connection to the server.
    pub conn: Conn,
    /// The realm, nonce and key once the server has challenged; `None` before.
    pub auth: Option<ClientAuth>,
    /// The last transaction id used; each request takes the next one.
    pub tid: u128,
    /// The TURN username sent.
    pub username: String,
    /// The password the key is derived from.
    pub password: String,
}

impl TurnClient {
    /// A client with TURN REST credentials for `id`, valid for an hour, minted with `secret`.
    pub fn with_secret(conn: Conn, secret: &str) -> Self {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let username = rest_username(expiry, "it-user");
        let password = rest_password(secret.as_bytes(), &username);
        Self {
            conn,
            auth: None,
            tid: 0x1000,
            username,
            password,
        }
    }

    /// Sends a request (signed once a challenge gave realm and nonce) and returns the answer.
    pub fn transact(&mut self, method: client::Method, attrs: &[Attr]) -> Response {
        for _ in 0..2 {
            self.tid += 1;
            let req = client::request(
                method,
                TransactionId::from(self.tid),
                attrs,
                self.auth.as_ref(),
            );
            self.conn.send(&req);
            let r = client::parse(&self.conn.recv(), self.auth.as_ref().map(|a| &a.key)).unwrap();
            assert_eq!(r.transaction, self.tid);
            match r.error.as_ref().map(|e| e.0) {
                Some(401) | Some(438)
                    if self.auth.is_none() || r.error.as_ref().unwrap().0 == 438 =>
                {
                    let realm = r.realm.clone().unwrap();
                    let nonce = r.nonce.clone().unwrap();
                    self.auth = Some(ClientAuth::new(
                        &self.username,
                        &self.password,
                        &realm,
                        &nonce,
                    ));
                }
                _ => return r,
            }
        }
        panic!("no answer after the challenge");
    }
}

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
    echo_on(c, CHANNEL, payload);
}

/// [`echo`] on channel `number` (bound by the caller).
pub fn echo_on(c: &mut TurnClient, number: u16, payload: &[u8]) {
    let msg = client::channel_data(number, payload, c.conn.is_stream());
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
