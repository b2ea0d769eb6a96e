//! The in-band signal proxy: a client's read-only API request, fetched for a shard.

use super::*;

/// Fetches a client's in-band request from the control plane.
pub(super) async fn signal(state: LinkState, shard: usize, request: SignalHandle, path: String) {
    let (status, body) = if signal_path_allowed(&path) {
        let req = {
            let s = state.borrow();
            s.http.get(url(&s, &path))
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                if (200..300).contains(&status) {
                    (status, body)
                } else {
                    let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(
                        |_| format!("control plane answered {status}"),
                        |e| e.error.message,
                    );
                    (status, message.into_bytes())
                }
            }
            Err(e) => {
                tracing::debug!("in-band request {path}: {e}");
                (
                    502,
                    b"Bad Gateway: the control plane is unreachable from this relay".to_vec(),
                )
            }
        }
    } else {
        (403, b"Forbidden: only the public read-only paths (/v1/allowlist, /v1/proxies) are served in-band".to_vec())
    };
    let s = state.borrow();
    if let Some(tx) = s.verdicts.get(shard) {
        let _ = tx.send(FromLink::Signal(request, status, body));
    }
}
