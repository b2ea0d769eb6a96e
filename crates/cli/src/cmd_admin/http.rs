//! The control plane's HTTP API as `cloudproxy admin` calls it: one request per command,
//! bearer key, and the API's one error shape turned into a message that says what to fix.
//!
//! Exit codes follow `failure.rs`: a missing key, a 400 (a bad field) or a 401 (a wrong key)
//! is the caller's input (exit 2); an unreachable server, 403, 404, 409 and 5xx exit 1.

use std::time::Duration;

use anyhow::anyhow;
use cloudproxy_api::ErrorBody;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::failure::Failure;

/// The `body` of a call that sends none.
pub(super) const NO_BODY: Option<&()> = None;

/// Whether a path needs the bearer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    Key,
    /// The allow-list endpoints: firewall teams read them without a key.
    Public,
}

pub(super) struct Api {
    /// `http://host:port`, without a trailing slash.
    base: String,
    key: Option<String>,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    pub(super) fn new(control: &str, key: Option<String>, insecure: bool) -> Result<Api, Failure> {
        let base = base_url(control).map_err(Failure::Usage)?;
        // reqwest is built without a crypto provider of its own: use the one the relay and
        // the SDK use (aws-lc-rs). Installing twice in one process is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let https = base.starts_with("https://");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .tls_built_in_native_certs(https && !insecure)
            .danger_accept_invalid_certs(insecure)
            .user_agent(concat!("cloudproxy-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Runtime(anyhow!("cannot set up the HTTP client: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Runtime(anyhow!("cannot start the runtime: {e}")))?;
        Ok(Api {
            base,
            key: key.filter(|k| !k.trim().is_empty()),
            client,
            rt,
        })
    }

    /// Sends one request (with `body` as JSON, or [`NO_BODY`]) and returns the body of a 2xx answer (empty for 204).
    pub(super) fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        auth: Auth,
    ) -> Result<String, Failure> {
        // An id of "", "." or ".." would make the URL name another resource.
        if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
            return Err(Failure::Usage(anyhow!(
                "{path}: an id is empty, '.' or '..'"
            )));
        }
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url).query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        match (&self.key, auth) {
            (Some(key), Auth::Key) => req = req.bearer_auth(key),
            (None, Auth::Key) => {
                return Err(Failure::Usage(anyhow!(
                    "no API key: pass --key KEY or set CLOUDPROXY_KEY (the operator key \
                     `cloudproxy control` prints, or an app owner's key)"
                )))
            }
            (_, Auth::Public) => {}
        }
        let (status, text) = self
            .rt
            .block_on(async {
                let resp = req.send().await?;
                let status = resp.status();
                Ok::<_, reqwest::Error>((status, resp.text().await?))
            })
            .map_err(|e| Failure::Runtime(self.transport_error(&e)))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(&method, path, status, &text))
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(e);
        let hint = if cause.contains("certificate") || cause.contains("Certificate") {
            " (for the control plane's self-signed certificate, pass --insecure)"
        } else if e.is_connect() {
            " (is `cloudproxy control` running there? set --control or CLOUDPROXY_CONTROL)"
        } else {
            ""
        };
        anyhow!(
            "cannot reach the control plane at {}: {cause}{hint}",
            self.base
        )
    }
}

/// Accepts `http://host:port`, `https://…` or a bare `host:port` (HTTP).
fn base_url(control: &str) -> anyhow::Result<String> {
    let control = control.trim();
    let url = if control.contains("://") {
        control.to_owned()
    } else {
        format!("http://{control}")
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| anyhow!("--control {control}: not a URL ({e}); e.g. http://127.0.0.1:8480"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(anyhow!(
            "--control {control}: expected http://HOST:PORT or https://HOST:PORT"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The innermost error's text: "Connection refused (os error 111)" rather than reqwest's
/// "error sending request for url (…)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The API's error body as a message: status, message, then one line per bad field.
fn api_error(method: &Method, path: &str, status: StatusCode, text: &str) -> Failure {
    let mut msg = format!("{method} {path}: {status}");
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => {
            msg.push_str(": ");
            msg.push_str(&body.error.message);
            // The router's fallback: the path itself is unknown, not an id in it.
            if body.error.message == "no such path" {
                msg.push_str(
                    " (this control plane does not serve that API; is it older than this command?)",
                );
            }
            for f in &body.error.fields {
                msg.push_str(&format!("\n  {}: {}", f.field, f.message));
            }
        }
        // Not the API's shape: a proxy or another server answered. Show the start of it.
        Err(_) if !text.trim().is_empty() => {
            let snippet: String = text.trim().chars().take(200).collect();
            msg.push_str(&format!(": {snippet}"));
        }
        Err(_) => {}
    }
    if status == StatusCode::UNAUTHORIZED {
        msg.push_str("\n  check --key / CLOUDPROXY_KEY");
    }
    // The server's words (a message may quote a name) reach a terminal too.
    let e = anyhow!(super::table::terminal_safe(&msg, true).into_owned());
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => Failure::Usage(e),
        _ => Failure::Runtime(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:8480/").unwrap(),
            "http://127.0.0.1:8480"
        );
        assert_eq!(base_url("10.0.0.1:8480").unwrap(), "http://10.0.0.1:8480");
        assert_eq!(
            base_url("https://cp.example.com").unwrap(),
            "https://cp.example.com"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn api_errors_name_fields() {
        let body = r#"{"error":{"code":"invalid_request","message":"invalid request: 2 fields are invalid",
            "fields":[{"field":"region","message":"unknown variant `mars`"},
                      {"field":"listeners[1].ip","message":"must be a unicast address"}]}}"#;
        let Failure::Usage(e) = api_error(&Method::POST, "/v1/x", StatusCode::BAD_REQUEST, body)
        else {
            panic!("a 400 is a usage error");
        };
        assert_eq!(
            e.to_string(),
            "POST /v1/x: 400 Bad Request: invalid request: 2 fields are invalid\n  \
             region: unknown variant `mars`\n  listeners[1].ip: must be a unicast address"
        );
        let Failure::Runtime(e) = api_error(&Method::GET, "/v1/y", StatusCode::BAD_GATEWAY, "")
        else {
            panic!("a 502 is a runtime error");
        };
        assert_eq!(e.to_string(), "GET /v1/y: 502 Bad Gateway");
    }
}
