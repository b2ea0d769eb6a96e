//! `cloudproxy control` as a child process, and its JSON API over plain HTTP.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{cloudproxy_bin, http, ChildGuard};

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
}
