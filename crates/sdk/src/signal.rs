//! Signaling through the published proxy addresses, for Force-mode clients that may reach
//! nothing else: read-only control-plane requests (the region's allow-list, so the client
//! learns announced address changes) carried by the relay itself.
//!
//! - **Force TCP**: HTTPS on the relay's TLS listener with ALPN `http/1.1`; the relay hands
//!   HTTP clients to the control plane ([`fetch_tls`]).
//! - **Force UDP**: in-band on the relay's UDP port, as a CLOUDPROXY-SIGNAL STUN request
//!   authenticated with the user's token ([`fetch_udp`]); the relay fetches the path from the
//!   control plane and answers with the body (up to 1100 bytes).
//!
//! [`published_proxies`] turns an allow-list answer into proxy addresses, [`auto_proxies`] the
//! Auto-mode list (`GET /v1/proxies?region=`, fetched over HTTPS from an Auto proxy).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cloudproxy_api::{AllowList, ProxyList, Service, Transport};
use cloudproxy_proto::client::{self, Attr, ClientAuth};
use cloudproxy_proto::server::{ATTR_SIGNAL_PATH, SIGNAL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// What a signaling request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The HTTP status (200 for an in-band success, else the STUN error code, which carries it).
    pub status: u16,
    /// The response body (JSON on success; the reason phrase for an in-band error).
    pub body: Vec<u8>,
}

/// Why a signaling request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// A socket or TLS error talking to the relay.
    #[error("{proxy}: {source}")]
    Io {
        /// The relay asked.
        proxy: SocketAddr,
        /// The error the socket or TLS stream returned.
        #[source]
        source: std::io::Error,
    },
    /// The relay did not answer in time (UDP: after retransmissions).
    #[error("{proxy}: no answer within {timeout:?}")]
    Timeout {
        /// The relay asked.
        proxy: SocketAddr,
        /// The whole request's bound, as passed in.
        timeout: Duration,
    },
    /// The answer is not a usable HTTP/1.1 response, or the TLS server name is invalid.
    #[error("{proxy}: malformed answer: {detail}")]
    Malformed {
        /// The relay asked.
        proxy: SocketAddr,
        /// What is wrong.
        detail: String,
    },
    /// The relay refused the TURN credential of an in-band request (401).
    #[error("{proxy}: credentials refused: {reason}")]
    Unauthorized {
        /// The relay asked.
        proxy: SocketAddr,
        /// The relay's reason phrase.
        reason: String,
    },
    /// The HTTP proxy did not open the tunnel to `proxy` (the failure names the HTTP proxy).
    #[error("{proxy}: {failure}")]
    Tunnel {
        /// The relay the tunnel was meant to reach.
        proxy: SocketAddr,
        /// The HTTP proxy's failure ([`crate::PathFailure::HttpProxy`]).
        failure: crate::PathFailure,
    },
    /// The allow-list or proxy-list JSON does not parse, or holds an address that does not;
    /// the string is the parser's message.
    #[error("the allow-list does not parse: {0}")]
    AllowList(String),
}

/// Fetches `path` in-band over the relay's UDP port with the user's TURN credential.
/// Retransmits (RFC 8489 §6.2.1, from 250 ms, doubling) until `timeout`.
pub async fn fetch_udp(
    proxy: SocketAddr,
    username: &str,
    password: &str,
    path: &str,
    timeout: Duration,
) -> Result<Fetched, SignalError> {
    let io = |source| SignalError::Io { proxy, source };
    let bind: SocketAddr = if proxy.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(proxy).await.map_err(io)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut auth: Option<ClientAuth> = None;
    // A transaction id is 96 bits.
    let mut tid: u128 = rand::random::<u128>() >> 32;
    let mut buf = vec![0u8; 2048];
    loop {
        tid = (tid + 1) & ((1u128 << 96) - 1);
        let req = client::request(
            SIGNAL,
            tid.into(),
            &[Attr::Raw(ATTR_SIGNAL_PATH, path.as_bytes())],
            auth.as_ref(),
        );
        let mut rto = Duration::from_millis(250);
        let answer = loop {
            socket.send(&req).await.map_err(io)?;
            let wait = rto.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if wait.is_zero() {
                return Err(SignalError::Timeout { proxy, timeout });
            }
            match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => match client::parse(&buf[..n], auth.as_ref().map(|a| &a.key)) {
                    Ok(r) if r.transaction == tid => break r,
                    _ => continue, // not ours (a late answer to an earlier transmission)
                },
                Ok(Err(e)) => return Err(io(e)),
                Err(_) => rto *= 2,
            }
        };
        match &answer.error {
            None => {
                return Ok(Fetched {
                    status: 200,
                    body: answer.data.unwrap_or_default(),
                })
            }
            // The first 401 carries realm and nonce, a 438 a fresh nonce; a 401 to a signed
            // request is a refusal (next arm).
            Some((code @ (401 | 438), reason)) if *code == 438 || auth.is_none() => {
                let (Some(realm), Some(nonce)) = (&answer.realm, &answer.nonce) else {
                    return Err(SignalError::Unauthorized {
                        proxy,
                        reason: reason.clone(),
                    });
                };
                auth = Some(ClientAuth::new(username, password, realm, nonce));
            }
            Some((401, reason)) => {
                return Err(SignalError::Unauthorized {
                    proxy,
                    reason: reason.clone(),
                })
            }
            Some((code, reason)) => {
                return Ok(Fetched {
                    status: *code,
                    body: reason.clone().into_bytes(),
                })
            }
        }
    }
}

/// Fetches `path` with HTTPS on the relay's TLS listener (ALPN `http/1.1`), through the CONNECT
/// tunnel of the HTTP proxy `via`, if given. `tls` is the client's TLS configuration; its ALPN
/// is replaced.
pub async fn fetch_tls(
    proxy: SocketAddr,
    via: Option<&crate::HttpProxy>,
    tls: &rustls::ClientConfig,
    server_name: &str,
    path: &str,
    timeout: Duration,
) -> Result<Fetched, SignalError> {
    let io = |source| SignalError::Io { proxy, source };
    let work = async {
        let mut config = tls.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
            SignalError::Malformed {
                proxy,
                detail: format!("server name {server_name:?}: {e}"),
            }
        })?;
        let tcp = match via {
            Some(http_proxy) => http_proxy
                .connect(proxy, crate::connect::tunnel_patience(timeout))
                .await
                .map_err(|failure| SignalError::Tunnel { proxy, failure })?,
            None => TcpStream::connect(proxy).await.map_err(io)?,
        };
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(io)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        // A server may end TLS without close_notify after `Connection: close`.
        match s.read_to_end(&mut raw).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(io(e)),
        }
        parse_http(&raw).ok_or_else(|| SignalError::Malformed {
            proxy,
            detail: "not an HTTP/1.1 response".into(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SignalError::Timeout { proxy, timeout })?
}

/// Status and body of a whole HTTP/1.1 response (`Content-Length` or read to the end).
fn parse_http(raw: &[u8]) -> Option<Fetched> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(n) = length {
        if body.len() < n {
            return None;
        }
        body.truncate(n);
    }
    Some(Fetched { status, body })
}

/// Proxy addresses from an allow-list (`GET /v1/allowlist/{region}`, JSON): Force UDP rows
/// give UDP proxies, Force TCP rows TLS proxies. A CIDR row lists its addresses when it
/// holds at most 16; a wider one is skipped (firewalls need it, clients cannot dial it).
pub fn published_proxies(allowlist_json: &[u8]) -> Result<crate::Proxies, SignalError> {
    let list: AllowList = serde_json::from_slice(allowlist_json)
        .map_err(|e| SignalError::AllowList(e.to_string()))?;
    let mut out = crate::Proxies::default();
    for row in list.rows {
        let target = match row.service {
            Service::ForceUdp => &mut out.udp,
            Service::ForceTcp => &mut out.tls,
        };
        for ip in &row.ips {
            for addr in hosts(ip).map_err(SignalError::AllowList)? {
                for &port in &row.ports {
                    target.push(SocketAddr::new(addr, port));
                }
            }
        }
    }
    Ok(out)
}

/// Auto-mode proxies from `GET /v1/proxies?region=` (JSON): each relay's TLS listeners, in
/// the control plane's order (least loaded first), in [`crate::Proxies::auto`].
pub fn auto_proxies(json: &[u8]) -> Result<crate::Proxies, SignalError> {
    let list: ProxyList =
        serde_json::from_slice(json).map_err(|e| SignalError::AllowList(e.to_string()))?;
    let mut out = crate::Proxies::default();
    for p in list.proxies {
        for l in p
            .listeners
            .into_iter()
            .filter(|l| l.transport == Transport::Tls)
        {
            out.auto.push(SocketAddr::new(l.ip, l.port));
        }
    }
    Ok(out)
}

/// The addresses of `ip` or `ip/len` (none when there are more than 16).
fn hosts(s: &str) -> Result<Vec<IpAddr>, String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("'{s}' is not an address"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or(format!("'{s}': bad prefix"))?,
        None => bits,
    };
    if bits - len > 4 {
        return Ok(Vec::new());
    }
    let n = 1u32 << (bits - len);
    Ok((0..n)
        .map(|i| match ip {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + i).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + u128::from(i)).into()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_rows_become_proxies() {
        let json = br#"{"region":"japan","version":2,"created_at":1,"effective_at":1,
            "effective_date":"1970-01-01T00:00:01Z","changes":[],"rows":[
            {"service":"force_udp","ips":["203.0.113.10","203.0.113.12/31"],"protocol":"udp","ports":[3478]},
            {"service":"force_tcp","ips":["2001:db8::1"],"protocol":"tcp","ports":[443,5349]},
            {"service":"force_tcp","ips":["198.51.100.0/24"],"protocol":"tcp","ports":[443]}]}"#;
        let p = published_proxies(json).unwrap();
        let s = |v: &[SocketAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            s(&p.udp),
            [
                "203.0.113.10:3478",
                "203.0.113.12:3478",
                "203.0.113.13:3478"
            ]
        );
        assert_eq!(s(&p.tls), ["[2001:db8::1]:443", "[2001:db8::1]:5349"]);
        assert!(published_proxies(b"{}").is_err());
    }

    #[test]
    fn auto_lists_give_tls_listeners_in_order() {
        let json = br#"{"region":"japan","proxies":[
            {"id":"b","load":0.1,"listeners":[{"transport":"udp","ip":"198.51.100.2","port":3478},
                                               {"transport":"tls","ip":"198.51.100.2","port":443}]},
            {"id":"a","load":0.9,"listeners":[{"transport":"tls","ip":"198.51.100.1","port":443}]}]}"#;
        let p = auto_proxies(json).unwrap();
        let s: Vec<String> = p.auto.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["198.51.100.2:443", "198.51.100.1:443"]);
        assert!(p.udp.is_empty() && p.tls.is_empty());
    }

    #[test]
    fn http_responses_parse() {
        let r = parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        assert!(parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_none());
        assert!(parse_http(b"garbage").is_none());
    }
}
