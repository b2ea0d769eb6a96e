//! Registration, sync and heartbeats.

use super::*;

pub(super) async fn fetch_directory(
    http: &reqwest::Client,
    cfg: &LinkConfig,
) -> Result<(Directory, String), String> {
    let mut req = http.get(format!("{}/v1/sync/apps", cfg.url.trim_end_matches('/')));
    if !cfg.edge_id.is_empty() {
        // Who is syncing, for the console's "sync age" of this relay.
        req = req.query(&[("edge", &cfg.edge_id)]);
    }
    let resp = req
        .bearer_auth(&cfg.key)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", cfg.url))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    let sync: SyncResponse =
        serde_json::from_str(&text).map_err(|e| format!("sync answer: {e}"))?;
    Ok((directory_of(&sync, cfg.region), text))
}

/// Every key of every active app, from the control plane's sync endpoint (`GET
/// /v1/sync/apps`, the relay key or the operator's): what a media service needs to admit the
/// tokens the relays admit. The same request and the same reading of it as a relay's sync.
pub async fn fetch_app_keys(
    http: &reqwest::Client,
    url: &str,
    key: &str,
) -> Result<Vec<AppKey>, crate::RelayError> {
    let cfg = LinkConfig {
        url: url.to_owned(),
        key: key.to_owned(),
        // Not a relay: no edge id to report.
        edge_id: String::new(),
        ..LinkConfig::default()
    };
    let (directory, _) = fetch_directory(http, &cfg)
        .await
        .map_err(crate::RelayError::ControlPlane)?;
    Ok(directory.keys)
}

pub(super) async fn sync(state: &LinkState) {
    let (http, cfg) = {
        let s = state.borrow();
        (s.http.clone(), s.cfg.clone())
    };
    match fetch_directory(&http, &cfg).await {
        Ok((d, raw)) => {
            let mut s = state.borrow_mut();
            s.last_sync = Some(Instant::now());
            s.metrics.control_sync_age.set(0);
            s.metrics.directory_loaded();
            if **s.publish.borrow() != d {
                tracing::info!(
                    apps = d.access.len(),
                    keys = d.keys.len(),
                    "control plane sync: new directory"
                );
                write_cache(&cfg, &raw);
                s.publish.send_replace(Arc::new(d));
            }
        }
        Err(e) => {
            let s = state.borrow();
            s.metrics.control_sync_failures.inc();
            tracing::warn!("control plane sync failed (working from the last good copy): {e}");
        }
    }
}

pub(super) async fn register(state: &LinkState) {
    let (req, id) = {
        let s = state.borrow();
        let body = EdgeInput {
            region: s.cfg.region,
            pool: s.cfg.pool,
            capacity_kbps: s.cfg.capacity_kbps,
            listeners: s
                .listeners
                .iter()
                .map(|&(transport, a)| Listener {
                    transport,
                    ip: a.ip(),
                    port: a.port(),
                })
                .collect(),
            effective_at: None,
        };
        let req = s
            .http
            .put(url(&s, &format!("/v1/edges/{}", s.cfg.edge_id)))
            .bearer_auth(&s.cfg.key)
            .json(&body);
        (req, s.cfg.edge_id.clone())
    };
    match req.send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(edge = %id, "registered with the control plane");
            state.borrow_mut().registered = true;
            heartbeat(state.clone()).await;
        }
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            tracing::error!(edge = %id, "control plane refused the registration: {status} {text}");
        }
        Err(e) => tracing::warn!(edge = %id, "cannot register with the control plane: {e}"),
    }
}

/// One heartbeat: allocations and the relayed kbit/s since the previous one.
pub(super) async fn heartbeat(state: LinkState) {
    let req = {
        let mut s = state.borrow_mut();
        if !s.registered {
            return;
        }
        let bytes = s.metrics.total_bytes();
        let now = Instant::now();
        let kbps = s.last_beat.replace((now, bytes)).map_or(0, |(at, b)| {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            (bytes.saturating_sub(b) as f64 * 8.0 / 1000.0 / secs) as u64
        });
        let body = Heartbeat {
            load_kbps: kbps,
            allocations: s.metrics.allocations.get().max(0) as u64,
        };
        s.http
            .post(url(&s, &format!("/v1/edges/{}/heartbeat", s.cfg.edge_id)))
            .bearer_auth(&s.cfg.key)
            .json(&body)
    };
    match req.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
            // The control plane forgot us (its database was reset): register again.
            state.borrow_mut().registered = false;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("heartbeat failed: {e}"),
    }
}
