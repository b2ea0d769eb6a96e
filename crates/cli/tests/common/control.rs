//! `cloudproxy control` as a child process, and its JSON API over plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_proto::token::Token;
use serde_json::{json, Value};

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use cloudproxy_testkit::apps::unix_now;

use super::{cloudproxy_bin, http, reserve_ports, wait_for_listeners, ChildGuard};

/// How long the control plane gets to come up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running control plane and its operator key.
pub(crate) struct ControlProc {
    /// `IP:PORT` of the API.
    pub addr: String,
    pub operator_key: String,
    pub guard: ChildGuard,
}

/// Starts `cloudproxy control` on `addr` with `database`, the two keys and `extra` flags, and
/// waits (bounded) for its `control http://…` line.
pub(crate) fn start_control_on(
    addr: String,
    database: &str,
    operator_key: &str,
    relay_key: &str,
    extra: &[&str],
) -> ControlProc {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["control", "--listen", &addr, "--database", database])
        .args(["--operator-key", operator_key, "--relay-key", relay_key])
        .args(extra);
    let (guard, lines) = ChildGuard::spawn("cloudproxy control", cmd).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("control did not start:\n{}", guard.output.text()));
        if line.starts_with("control http://") {
            break;
        }
    }
    ControlProc {
        addr,
        operator_key: operator_key.to_owned(),
        guard,
    }
}

impl ControlProc {
    /// One API call with `key`: (status, JSON body or `Null`).
    pub(crate) fn api(&self, method: &str, path: &str, key: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (code, text) = http(&self.addr, method, path, Some(key), &body);
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (code, json)
    }

    /// An operator call that must succeed (2xx); its JSON body.
    #[track_caller]
    pub(crate) fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (code, json) = self.api(method, path, &self.operator_key.clone(), body);
        assert!((200..300).contains(&code), "{method} {path}: {code} {json}");
        json
    }

    /// `POST /v1/apps` with `name`: the new app's credential.
    #[track_caller]
    pub(crate) fn create_app(&self, name: &str) -> Credential {
        let app = self.ok("POST", "/v1/apps", json!({ "name": name }));
        Credential::from_json(&app["credentials"])
    }

    /// Files `form` as an enablement request of `app`, approves it and, when approval left it
    /// `approved` (a Force mode's request needs no activation when approval grants it), activates
    /// it; the request as it ends.
    #[track_caller]
    pub(crate) fn enable(&self, app: &str, form: Value) -> Value {
        let req = self.ok("POST", &format!("/v1/apps/{app}/requests"), form);
        let id = req["id"].as_str().unwrap().to_owned();
        let approved = self.ok("POST", &format!("/v1/requests/{id}/approve"), json!({}));
        if approved["state"] == "approved" {
            return self.ok("POST", &format!("/v1/requests/{id}/activate"), json!({}));
        }
        approved
    }

    /// `app`'s metered usage in `mode` (`force_udp`, `force_tcp`...) summed over every day.
    #[track_caller]
    pub(crate) fn usage(&self, app: &str, mode: &str) -> Usage {
        let u = self.ok("GET", &format!("/v1/apps/{app}/usage"), Value::Null);
        let days = u["days"].as_array().cloned().unwrap_or_default();
        let field = |d: &Value, f: &str| d[f].as_u64().unwrap_or(0);
        days.iter()
            .filter(|d| d["mode"] == mode)
            .fold(Usage::default(), |t, d| Usage {
                bytes: t.bytes + field(d, "bytes"),
                seconds: t.seconds + field(d, "seconds"),
                peak: t.peak.max(field(d, "peak_concurrency")),
            })
    }
}

/// An app's metered totals in one mode ([`ControlProc::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Relayed payload bytes.
    pub bytes: u64,
    /// Allocation-seconds.
    pub seconds: u64,
    /// The highest concurrency of any day.
    pub peak: u64,
}

/// What differs between the relays the tests start under a control plane.
pub(crate) struct RelaySpec<'a> {
    /// The edge id; also names its config file.
    pub edge: &'a str,
    /// `static` (published) or `dynamic` (the Auto pool).
    pub pool: &'a str,
    /// The address allocations are relayed from.
    pub relay_ip: &'a str,
    /// The TLS listener (`IP:PORT`, port 0 for any); a free loopback port when `None`.
    pub tls: Option<&'a str>,
    /// More lines for the `[control]` section.
    pub control_lines: &'a str,
    /// More command-line flags.
    pub flags: &'a [&'a str],
}

impl Default for RelaySpec<'_> {
    fn default() -> Self {
        Self {
            edge: "jp-1",
            pool: "static",
            relay_ip: "127.0.0.1",
            tls: None,
            control_lines: "",
            flags: &[],
        }
    }
}

/// A relay governed by a control plane.
pub(crate) struct GovernedRelay {
    pub edge: String,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
    pub metrics: SocketAddr,
    pub guard: ChildGuard,
}

impl ControlProc {
    /// Lets `spec.edge` publish loopback addresses, then starts `cloudproxy relay` in Japan
    /// under this control plane with `relay_key`: 1-second sync, heartbeat, lease renewal and
    /// usage intervals, 20 relay ports, 2 shards, peers in 127.0.0.0/8.
    pub(crate) fn start_relay(
        &self,
        dir: &Path,
        relay_key: &str,
        spec: &RelaySpec,
    ) -> GovernedRelay {
        let edge = spec.edge;
        // The relay key may publish only addresses inside the edge's CIDRs.
        let cidrs = json!({"cidrs": ["127.0.0.0/8"]});
        self.ok("PUT", &format!("/v1/edges/{edge}/cidrs"), cidrs);
        let config = dir.join(format!("{edge}.toml"));
        std::fs::write(
            &config,
            format!(
                "[control]\nurl = \"http://{}\"\nkey = \"{relay_key}\"\nedge_id = \"{edge}\"\n\
                 region = \"japan\"\npool = \"{}\"\ncapacity_kbps = 1000000\n\
                 sync_interval_secs = 1\nheartbeat_interval_secs = 1\n\
                 lease_renew_interval_secs = 1\nusage_interval_secs = 1\n{}",
                self.addr, spec.pool, spec.control_lines
            ),
        )
        .unwrap();
        let ports = reserve_ports(4, true);
        let relay_ports = reserve_ports(20, false);
        let local = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.arg("relay")
            .args(["--config", config.to_str().unwrap()])
            .args(["--udp", &local(0), "--metrics", &local(1)])
            .args(["--tls", spec.tls.unwrap_or(&local(2)), "--tcp", &local(3)])
            .args(["--relay-ip", spec.relay_ip, "--allow-peer", "127.0.0.0/8"])
            .args([
                "--relay-ports",
                &format!("{}-{}", relay_ports[0], relay_ports[19]),
            ])
            .args(["--shards", "2"])
            .args(spec.flags)
            .env("RUST_LOG", "info");
        let (mut guard, lines) = ChildGuard::spawn(&format!("relay {edge}"), cmd).unwrap();
        let found = wait_for_listeners(&mut guard, &lines, &["udp", "tls", "metrics"])
            .unwrap_or_else(|e| panic!("relay {edge} did not start: {e}\n{}", guard.output.text()));
        let get = |k: &str| found.iter().find(|(n, _)| n == k).unwrap().1;
        GovernedRelay {
            edge: edge.to_owned(),
            udp: get("udp"),
            tls: get("tls"),
            metrics: get("metrics"),
            guard,
        }
    }
}

/// An app's credential, spelled as the control API's `credentials` object and `cloudproxy up`'s
/// `demo-app.json` spell it.
pub(crate) struct Credential {
    pub app_id: String,
    pub key_id: String,
    pub secret: String,
}

impl Credential {
    /// From a JSON object with `app_id`, `key_id` and `secret`.
    pub(crate) fn from_json(v: &Value) -> Self {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("no {k} in {v}"))
                .to_owned()
        };
        Self {
            app_id: s("app_id"),
            key_id: s("key_id"),
            secret: s("secret"),
        }
    }

    /// The demo app `cloudproxy up` wrote into its data directory.
    pub(crate) fn demo(data_dir: &Path) -> Self {
        let text = std::fs::read_to_string(data_dir.join("demo-app.json")).unwrap();
        Self::from_json(&serde_json::from_str(&text).unwrap())
    }

    /// A user token for `uid` in `channel`, valid for an hour.
    pub(crate) fn token(&self, channel: &str, uid: u32) -> String {
        self.token_until(channel, uid, unix_now() + 3600)
    }

    /// A user token for `uid` in `channel` that expires at `expiry` (Unix seconds).
    pub(crate) fn token_until(&self, channel: &str, uid: u32, expiry: u64) -> String {
        self.mint(channel, uid, expiry).encode()
    }

    /// The token itself (its TURN username and password), expiring at `expiry` (Unix seconds).
    pub(crate) fn mint(&self, channel: &str, uid: u32, expiry: u64) -> Token {
        let (app, key) = (&self.app_id, &self.key_id);
        Token::mint(app, key, self.secret.as_bytes(), channel, uid, expiry).unwrap()
    }

    /// `APP_ID:KEY_ID:SECRET`, as `--app-key` flags take it.
    pub(crate) fn joined(&self) -> String {
        format!("{}:{}:{}", self.app_id, self.key_id, self.secret)
    }
}
