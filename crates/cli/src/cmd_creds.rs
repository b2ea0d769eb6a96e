//! `cloudproxy creds`: mints TURN REST credentials (see `cloudproxy_proto::auth`) and a
//! WebRTC `iceServers` entry with RFC 7065 URIs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv6Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use cloudproxy_proto::auth::{rest_password, rest_username};
use serde_json::json;

use crate::failure::Failure;

/// Flags of `cloudproxy creds`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CredsArgs {
    /// Shared secret: the relay's --static-secret, or an application key's secret.
    #[arg(
        long,
        value_name = "SECRET",
        env = crate::SECRET_ENV,
        hide_env_values = true
    )]
    pub secret: String,
    /// Who the credential is for: the part after `<expiry>:` in the username. With an
    /// application key: `<app-id>:<key-id>:<user>`.
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Lifetime of the credential (`3600`, `1h`, `1d`; a bare number is seconds). One day is
    /// what the TURN REST draft recommends.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "1d")]
    pub ttl: std::time::Duration,
    /// Relay host name or IP for the URIs.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub server: String,
    /// Port of the turn: URIs (UDP, and TCP unless --tcp-port).
    #[arg(long, value_name = "PORT", default_value_t = 3478)]
    pub udp_port: u16,
    /// Port of the turn:?transport=tcp URI (default: --udp-port).
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<u16>,
    /// Port of the turns: URI.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    pub tls_port: u16,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A minted credential.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Creds {
    pub username: String,
    pub password: String,
    pub expires_at: u64,
    pub ttl: u64,
    pub urls: Vec<String>,
}

/// Mints a credential valid until `now_unix + ttl`. Errors are usage errors.
pub(crate) fn mint(args: &CredsArgs, now_unix: u64) -> anyhow::Result<Creds> {
    if args.secret.is_empty() {
        bail!("--secret: must not be empty");
    }
    if args.id.is_empty() {
        bail!("--id: must not be empty");
    }
    let ttl = args.ttl.as_secs();
    if ttl == 0 {
        bail!("--ttl: must be at least 1 second");
    }
    let expires_at = now_unix.checked_add(ttl).context("--ttl: too large")?;
    let host = uri_host(&args.server)?;
    let tcp_port = args.tcp_port.unwrap_or(args.udp_port);
    for (flag, port) in [
        ("--udp-port", args.udp_port),
        ("--tcp-port", tcp_port),
        ("--tls-port", args.tls_port),
    ] {
        if port == 0 {
            bail!("{flag}: must not be 0");
        }
    }
    let username = rest_username(expires_at, &args.id);
    let password = rest_password(args.secret.as_bytes(), &username);
    // RFC 7065 §3.1.
    let urls = vec![
        format!("turn:{host}:{}?transport=udp", args.udp_port),
        format!("turn:{host}:{tcp_port}?transport=tcp"),
        format!("turns:{host}:{}?transport=tcp", args.tls_port),
    ];
    Ok(Creds {
        username,
        password,
        expires_at,
        ttl,
        urls,
    })
}

/// The host part of a TURN URI: a DNS name or IPv4 literal as is, an IPv6 literal in brackets.
fn uri_host(server: &str) -> anyhow::Result<String> {
    if server.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("[{server}]"));
    }
    if let Some(inner) = server.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return Ok(server.to_owned());
        }
    }
    let ok = !server.is_empty()
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        bail!("--server {server:?}: expected a host name or IP address (no port, no scheme)");
    }
    Ok(server.to_owned())
}

impl Creds {
    /// A WebRTC `RTCIceServer` list with one entry for all three URIs.
    pub(crate) fn ice_servers(&self) -> serde_json::Value {
        json!([{
            "urls": self.urls,
            "username": self.username,
            "credential": self.password,
        }])
    }

    /// What `cloudproxy creds` prints.
    pub(crate) fn render(&self, as_json: bool) -> String {
        if as_json {
            let v = json!({
                "username": self.username,
                "password": self.password,
                "ttl": self.ttl,
                "expires_at": self.expires_at,
                "iceServers": self.ice_servers(),
            });
            return format!("{v:#}\n");
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(out, "username: {}", self.username);
        let _ = writeln!(out, "password: {}", self.password);
        let _ = writeln!(out, "expires_at: {} (in {} s)", self.expires_at, self.ttl);
        let _ = writeln!(out, "iceServers: {}", self.ice_servers());
        out
    }
}

/// `cloudproxy creds`: prints the credential (text or `--json`).
pub(crate) fn run(args: &CredsArgs) -> Result<(), Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")
        .map_err(Failure::Runtime)?
        .as_secs();
    let creds = mint(args, now).map_err(Failure::Usage)?;
    std::io::stdout()
        .lock()
        .write_all(creds.render(args.json).as_bytes())
        .context("writing to stdout")
        .map_err(Failure::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::parse_flags;
    use serde_json::Value;

    fn args(extra: &[&str]) -> CredsArgs {
        let base = [
            "creds", "--secret", "secret", "--id", "alice", "--ttl", "100",
        ];
        parse_flags::<CredsArgs>(base.iter().chain(extra)).unwrap()
    }

    #[test]
    fn text_output_shape() {
        let c = mint(&args(&["--server", "turn.example.org"]), 1_699_999_900).unwrap();
        assert_eq!(c.username, "1700000000:alice");
        // Same vector as cloudproxy_proto::auth's test, computed with openssl.
        assert_eq!(c.password, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        let text = c.render(false);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("username: 1700000000:alice"));
        assert_eq!(lines.next(), Some("password: d8soP47RbdIKLDUOpnJPVQyq5Ts="));
        let ice = text
            .lines()
            .find_map(|l| l.strip_prefix("iceServers: "))
            .expect("an iceServers line");
        let ice: Value = serde_json::from_str(ice).unwrap();
        assert_eq!(
            ice,
            json!([{
                "urls": [
                    "turn:turn.example.org:3478?transport=udp",
                    "turn:turn.example.org:3478?transport=tcp",
                    "turns:turn.example.org:443?transport=tcp",
                ],
                "username": "1700000000:alice",
                "credential": "d8soP47RbdIKLDUOpnJPVQyq5Ts=",
            }])
        );
    }

    #[test]
    fn json_output_shape_and_ports() {
        let c = mint(
            &args(&[
                "--server",
                "2001:db8::1",
                "--udp-port",
                "3479",
                "--tls-port",
                "5349",
                "--json",
            ]),
            1000,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&c.render(true)).unwrap();
        assert_eq!(v["username"], "1100:alice");
        assert_eq!(v["ttl"], 100);
        assert_eq!(v["expires_at"], 1100);
        assert_eq!(v["password"], v["iceServers"][0]["credential"]);
        assert_eq!(v["username"], v["iceServers"][0]["username"]);
        assert_eq!(
            v["iceServers"][0]["urls"],
            json!([
                "turn:[2001:db8::1]:3479?transport=udp",
                "turn:[2001:db8::1]:3479?transport=tcp",
                "turns:[2001:db8::1]:5349?transport=tcp",
            ])
        );
    }

    #[test]
    fn ttl_takes_units_and_defaults_to_a_day() {
        let base = ["creds", "--secret", "s", "--id", "a"];
        let ttl = |extra: &[&str]| {
            parse_flags::<CredsArgs>(base.iter().chain(extra))
                .unwrap()
                .ttl
                .as_secs()
        };
        assert_eq!(ttl(&[]), 86_400);
        assert_eq!(ttl(&["--ttl", "90"]), 90);
        assert_eq!(ttl(&["--ttl", "2h"]), 7200);
        assert!(parse_flags::<CredsArgs>(base.iter().chain(&["--ttl", "2x"])).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(mint(&args(&["--server", "http://x"]), 0).is_err());
        assert!(mint(&args(&["--server", "x:3478"]), 0).is_err());
        assert!(mint(&args(&["--udp-port", "0"]), 0).is_err());
        assert!(mint(&args(&[]), u64::MAX).is_err());
        let mut a = args(&[]);
        a.ttl = std::time::Duration::from_millis(999);
        assert!(mint(&a, 0).is_err());
        a = args(&[]);
        a.id.clear();
        assert!(mint(&a, 0).is_err());
    }
}
