//! Tunnelling the TCP paths through an HTTP forward proxy with CONNECT (RFC 9110 §9.3.6).
//!
//! Where a network lets nothing out but a web proxy, the paths over TCP — Force TCP, Auto's
//! TLS fallback, and the allow-list fetch on the relay's TLS port — open their connection as a
//! CONNECT tunnel: connect to the proxy, send `CONNECT <relay ip>:<port>`, read the proxy's
//! answer, and on a 2xx start TLS to the relay inside the tunnel. TLS stays end to end: the
//! proxy sees the CONNECT line (and the Basic credentials, when the URL has some), then opaque
//! bytes. The relay is named by its IP address, as everywhere else in the SDK.
//!
//! UDP cannot pass through CONNECT. The UDP paths (direct, Force UDP) are still tried when a
//! proxy is configured — the network may allow UDP too — and when they all go unanswered the
//! join's error says that UDP cannot pass a proxy-only network ([`crate::JoinError`]).
//!
//! The proxy comes from [`crate::ClientConfig::http_proxy`]; [`HttpProxy::from_env`] reads it the
//! way curl does from `https_proxy`/`HTTPS_PROXY`, and `no_proxy`/`NO_PROXY` lists the
//! destinations reached without it. The SDK never reads the environment by itself.
//!
//! The answer's head is read one byte at a time: nothing past it may be consumed, since what
//! follows belongs to the relay's TLS. It is small (a few hundred bytes) and bounded by
//! [`MAX_REPLY_HEAD`]; a proxy sending more is treated as broken.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::PathFailure;

pub(crate) mod failure;

pub use failure::ProxyFailure;

/// The longest CONNECT answer head accepted, in bytes (status line and headers).
pub const MAX_REPLY_HEAD: usize = 8192;

/// An HTTP forward proxy to tunnel the TCP paths through, and the destinations that bypass it.
///
/// Shown (`Display`, `Debug`) without its password: `http://alice:***@proxy.corp:3128`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpProxy {
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
    /// Basic authentication: user and password, percent-decoded from the URL's userinfo.
    credentials: Option<(String, String)>,
    no_proxy: NoProxy,
}

/// A proxy URL or `NO_PROXY` list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyConfigError {
    /// The proxy URL does not parse. `url` is shown with its password masked.
    #[error("{origin}: {url:?} is not an HTTP proxy URL: {why} (expected http://[user:password@]host[:port])")]
    BadUrl {
        /// Where it came from: `HTTPS_PROXY`, `--http-proxy`, ….
        origin: String,
        /// The URL as given, password masked.
        url: String,
        /// What is wrong: the scheme, a path, the host or port, a percent-encoding….
        why: String,
    },
    /// A `NO_PROXY` entry does not parse.
    #[error("{origin}: entry {entry:?}: {why}")]
    BadNoProxy {
        /// Where the list came from: `NO_PROXY`, `--no-proxy`, ….
        origin: String,
        /// The entry that does not parse, as given.
        entry: String,
        /// Why it does not parse (bad address block, bad prefix length, not a host name).
        why: String,
    },
}

impl HttpProxy {
    /// Parses `http://[user[:password]@]host[:port][/]`. The scheme may be left out (`http`
    /// is meant); the port defaults to 80. User and password are percent-decoded. `https://`
    /// (TLS to the proxy itself) and other schemes are refused.
    pub fn parse(url: &str) -> Result<Self, ProxyConfigError> {
        Self::parse_from(url, "proxy URL")
    }

    /// [`HttpProxy::parse`], naming `origin` (e.g. `--http-proxy`) in the error.
    pub fn parse_from(url: &str, origin: &str) -> Result<Self, ProxyConfigError> {
        let bad = |why: &str| ProxyConfigError::BadUrl {
            origin: origin.into(),
            url: redact(url),
            why: why.into(),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(bad("empty"));
        }
        let rest = match url.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => rest,
                "https" => {
                    return Err(bad(
                        "TLS to the proxy itself (https://) is not supported; use http:// \
                         (the tunnel to the relay is TLS either way)",
                    ))
                }
                _ => return Err(bad("only http:// proxies are supported")),
            },
            None => url,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).map_err(|w| bad(&format!("user: {w}")))?;
                let password =
                    percent_decode(password).map_err(|w| bad(&format!("password: {w}")))?;
                if user.is_empty() {
                    return Err(bad("empty user name before '@'"));
                }
                Some((user, password))
            }
        };
        let (host, port) = split_host_port(hostport).map_err(|w| bad(&w))?;
        Ok(Self {
            host,
            port: port.unwrap_or(80),
            credentials,
            no_proxy: NoProxy::default(),
        })
    }

    /// The proxy from the environment, as curl reads it: `https_proxy`, else `HTTPS_PROXY`
    /// (an empty value counts as unset), with `no_proxy`, else `NO_PROXY`. `None` when no
    /// proxy is set.
    pub fn from_env() -> Result<Option<Self>, ProxyConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`HttpProxy::from_env`] with `var` in place of the environment.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ProxyConfigError> {
        let set = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name.to_owned(), v))
        };
        let Some((origin, url)) = set("https_proxy").or_else(|| set("HTTPS_PROXY")) else {
            return Ok(None);
        };
        let proxy = Self::parse_from(&url, &origin)?;
        Ok(Some(proxy.with_no_proxy_vars(var)?))
    }

    /// This proxy with `no_proxy`/`NO_PROXY` from `var` (see [`HttpProxy::from_vars`]), for
    /// a proxy given otherwise (a `--http-proxy` flag): the bypass list still applies.
    pub fn with_no_proxy_vars(
        self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProxyConfigError> {
        let set = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name.to_owned(), v))
        };
        match set("no_proxy").or_else(|| set("NO_PROXY")) {
            Some((origin, list)) => self.with_no_proxy(&list, &origin),
            None => Ok(self),
        }
    }

    /// This proxy with a bypass list (`NO_PROXY` syntax): comma- or space-separated host
    /// names (matching the name and its subdomains; a leading `.` or `*.` is ignored), IP
    /// addresses, CIDR blocks, or `*` for everything.
    pub fn with_no_proxy(mut self, list: &str, origin: &str) -> Result<Self, ProxyConfigError> {
        self.no_proxy = NoProxy::parse(list, origin)?;
        Ok(self)
    }

    /// Whether a TCP path to `target` goes through this proxy: not when `target`'s address,
    /// or `server_name` (the relay's TLS name, if configured), is on the bypass list, and never
    /// to a loopback address (as Go's and Python's clients do: a proxy cannot reach this
    /// machine's loopback).
    pub fn tunnels(&self, target: SocketAddr, server_name: Option<&str>) -> bool {
        !target.ip().is_loopback() && !self.no_proxy.matches(target.ip(), server_name)
    }

    /// The proxy's host (name or address) and port.
    pub fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Whether the URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The CONNECT request for `target`.
    fn connect_request(&self, target: SocketAddr) -> String {
        let mut req = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: cloudproxy-sdk/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some((user, password)) = &self.credentials {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            req.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    /// A TCP connection to `target` through the proxy, the tunnel open, within `patience`.
    /// Every failure names the proxy.
    pub(crate) async fn connect(
        &self,
        target: SocketAddr,
        patience: Duration,
    ) -> Result<TcpStream, PathFailure> {
        let fail = |failure| PathFailure::HttpProxy {
            proxy: self.to_string(),
            failure,
        };
        let io = |e: std::io::Error| fail(ProxyFailure::from_io(&e));
        let work = async {
            let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(io)?;
            let _ = tcp.set_nodelay(true);
            tcp.write_all(self.connect_request(target).as_bytes())
                .await
                .map_err(io)?;
            let mut head = ReplyHead::default();
            let mut byte = [0u8; 1];
            let reply = loop {
                if tcp.read(&mut byte).await.map_err(io)? == 0 {
                    return Err(fail(ProxyFailure::Closed));
                }
                if let Some(reply) = head.push(byte[0]).map_err(fail)? {
                    break reply;
                }
            };
            reply
                .into_result(self.credentials.is_some())
                .map_err(fail)?;
            Ok(tcp)
        };
        tokio::time::timeout(patience, work)
            .await
            .unwrap_or_else(|_| Err(fail(ProxyFailure::Timeout)))
    }
}

impl fmt::Display for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy")
            .field("url", &self.to_string())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `url` with the password (between `user:` and `@`) masked, for error messages.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// RFC 3986 percent-decoding to UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent escapes that are not UTF-8".to_owned())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address without its closing ']'")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        let p = match after {
            "" => None,
            a => Some(port(a.strip_prefix(':').ok_or("junk after ']'")?)?),
        };
        return Ok((v6.to_owned(), p));
    }
    let (host, p) = match s.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (s, None),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("{host:?} is not a host name or IPv4 address"));
    }
    Ok((host.to_ascii_lowercase(), p))
}

/// Destinations reached without the proxy (`NO_PROXY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: nothing goes through the proxy.
    all: bool,
    entries: Vec<Bypass>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    /// An address block (a single address is a full-length prefix).
    Net(IpAddr, u8),
    /// A host name and its subdomains, lower case.
    Domain(String),
}

impl NoProxy {
    /// Parses a `NO_PROXY` list (see [`HttpProxy::with_no_proxy`]).
    pub fn parse(list: &str, origin: &str) -> Result<Self, ProxyConfigError> {
        let mut out = NoProxy::default();
        for entry in list.split([',', ' ', '\t']).filter(|e| !e.is_empty()) {
            let bad = |why: &str| ProxyConfigError::BadNoProxy {
                origin: origin.into(),
                entry: entry.into(),
                why: why.into(),
            };
            if entry == "*" {
                out.all = true;
                continue;
            }
            if let Some((ip, len)) = entry.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| bad("not an address block"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad("bad prefix length"))?;
                out.entries.push(Bypass::Net(ip, len));
                continue;
            }
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                out.entries.push(Bypass::Net(ip, len));
                continue;
            }
            // `host:port` entries: curl ignores the port for matching; so do we.
            let name = entry.split(':').next().unwrap_or(entry);
            let name = name.trim_start_matches("*.").trim_start_matches('.');
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(bad("not a host name, address, address block or '*'"));
            }
            out.entries.push(Bypass::Domain(name.to_ascii_lowercase()));
        }
        Ok(out)
    }

    /// Whether `ip` (or `name`, if given) is on the list.
    pub fn matches(&self, ip: IpAddr, name: Option<&str>) -> bool {
        if self.all {
            return true;
        }
        let name = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        self.entries.iter().any(|e| match e {
            Bypass::Net(net, len) => in_block(ip, *net, *len),
            Bypass::Domain(d) => name.as_deref().is_some_and(|n| {
                n == d || n.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.'))
            }),
        })
    }
}

fn in_block(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The head of the proxy's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub reason: String,
    pub realm: Option<String>,
}

impl Reply {
    /// Open (2xx, RFC 9110 §15.3), or why not.
    pub(crate) fn into_result(self, sent_credentials: bool) -> Result<(), ProxyFailure> {
        match self.status {
            200..=299 => Ok(()),
            // 401 is what a proxy should not send, but tinyproxy answers wrong credentials
            // with it (and missing ones with 407): both mean the credentials.
            401 | 407 => Err(ProxyFailure::AuthenticationRequired {
                status: self.status,
                reason: self.reason,
                sent_credentials,
                realm: self.realm,
            }),
            403 => Err(ProxyFailure::Forbidden {
                reason: self.reason,
            }),
            code => Err(ProxyFailure::Status {
                code,
                reason: self.reason,
            }),
        }
    }
}

/// Collects the answer's head byte by byte (sans I/O) up to the empty line.
#[derive(Debug, Default)]
pub(crate) struct ReplyHead {
    buf: Vec<u8>,
}

impl ReplyHead {
    /// Takes the next byte: `Some` once the head is complete, an error when it cannot be an
    /// HTTP answer or grows past [`MAX_REPLY_HEAD`].
    pub(crate) fn push(&mut self, byte: u8) -> Result<Option<Reply>, ProxyFailure> {
        if self.buf.len() >= MAX_REPLY_HEAD {
            return Err(ProxyFailure::Malformed {
                detail: format!("the answer's head is longer than {MAX_REPLY_HEAD} bytes"),
            });
        }
        self.buf.push(byte);
        if self.buf.len() == 5 && !self.buf.starts_with(b"HTTP/") {
            return Err(ProxyFailure::Malformed {
                detail: format!("it starts with {:?}", String::from_utf8_lossy(&self.buf)),
            });
        }
        if !(self.buf.ends_with(b"\r\n\r\n") || self.buf.ends_with(b"\n\n")) {
            return Ok(None);
        }
        parse_head(&self.buf).map(Some)
    }
}

fn parse_head(head: &[u8]) -> Result<Reply, ProxyFailure> {
    let bad = |detail: &str| ProxyFailure::Malformed {
        detail: detail.into(),
    };
    let text = std::str::from_utf8(head).map_err(|_| bad("the head is not text"))?;
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad(&format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().trim().to_owned();
    let realm = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("proxy-authenticate") {
            return None;
        }
        let at = v.find("realm=")?;
        Some(v[at + 6..].trim().trim_matches('"').to_owned())
    });
    Ok(Reply {
        status,
        reason,
        realm,
    })
}

#[cfg(test)]
mod tests;
