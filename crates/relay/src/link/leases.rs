//! Admission: leases taken, renewed and released at the control plane.

use super::*;

pub(super) async fn admit(
    state: LinkState,
    shard: usize,
    allocation: AllocationHandle,
    request: AdmitRequest,
) {
    let lease_id = {
        use rand::RngCore;
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        hex::encode(b)
    };
    let (verdict, quality, lease) = if request.mode == Mode::Auto {
        (Ok(()), None, None)
    } else {
        let req = {
            let s = state.borrow();
            let body = LeaseBody {
                lease_id: &lease_id,
                relay_id: &s.cfg.edge_id,
                app_id: &request.app_id,
                region: &s.cfg.region,
                mode: request.mode.as_str(),
                channel: &request.channel,
                user: &request.user,
            };
            s.http
                .post(url(&s, "/v1/leases"))
                .bearer_auth(&s.cfg.key)
                .json(&body)
        };
        let fallback_quality = state
            .borrow()
            .publish
            .borrow()
            .quality
            .get(&(request.app_id.clone(), request.mode))
            .cloned();
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                let q = r.json::<LeaseGranted>().await.ok().map(|g| g.quality);
                (Ok(()), q.or(fallback_quality), Some(lease_id))
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let message = r
                    .json::<ErrorBody>()
                    .await
                    .map_or_else(|_| status.to_string(), |e| e.error.message);
                let refusal = match status.as_u16() {
                    409 => (486, format!("Allocation Quota Reached: {message}")),
                    _ => (403, format!("Forbidden: {message}")),
                };
                (Err(refusal), None, None)
            }
            other => {
                let why = match other {
                    Ok(r) => r.status().to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    app = %request.app_id,
                    "admitting without the central quota check: the control plane did not answer ({why})"
                );
                state.borrow().metrics.control_unchecked_admissions.inc();
                // The lease is created by the next renewal, without a quota check.
                (Ok(()), fallback_quality, Some(lease_id))
            }
        }
    };
    let verdict = match verdict {
        Ok(()) => {
            let mut s = state.borrow_mut();
            let account = s.next_account;
            s.next_account += 1;
            s.accounts.insert(
                account,
                Account {
                    app: request.app_id.clone(),
                    mode: request.mode,
                    quality: quality.clone(),
                    channel: request.channel,
                    user: request.user,
                    lease,
                    since: Instant::now(),
                },
            );
            note_peak(&mut s, &request.app_id, request.mode, &quality);
            Verdict::Granted { account }
        }
        Err((code, reason)) => Verdict::Refused { code, reason },
    };
    let s = state.borrow();
    if let Some(tx) = s.verdicts.get(shard) {
        let _ = tx.send(FromLink::Verdict(allocation, verdict));
    }
}

/// Renewals re-create missing leases (one that expired while the control plane was out of
/// reach comes back). A renewal still on its way when an allocation ends could therefore
/// re-create that allocation's lease after its release, and the channel would count a user
/// who has gone until the TTL. So releases wait while a renewal is in flight and go out when
/// it has answered.
pub(super) async fn renew(state: &LinkState) {
    let req = {
        let s = state.borrow();
        let leases: Vec<LeaseBody<'_>> = s
            .accounts
            .values()
            .filter_map(|a| {
                Some(LeaseBody {
                    lease_id: a.lease.as_deref()?,
                    relay_id: &s.cfg.edge_id,
                    app_id: &a.app,
                    region: &s.cfg.region,
                    mode: a.mode.as_str(),
                    channel: &a.channel,
                    user: &a.user,
                })
            })
            .collect();
        if leases.is_empty() {
            return;
        }
        s.http
            .post(url(&s, "/v1/leases/renew"))
            .bearer_auth(&s.cfg.key)
            .json(&json!({ "leases": leases }))
    };
    state.borrow_mut().renewing = true;
    let answer = req.send().await.and_then(|r| r.error_for_status());
    state.borrow_mut().renewing = false;
    if let Err(e) = answer {
        tracing::warn!("lease renewal failed (leases expire unless renewed soon): {e}");
    }
    release(state).await;
}

pub(super) async fn release(state: &LinkState) {
    let (req, ids) = {
        let mut s = state.borrow_mut();
        if s.releases.is_empty() || s.renewing {
            return;
        }
        let ids = std::mem::take(&mut s.releases);
        let req = s
            .http
            .post(url(&s, "/v1/leases/release"))
            .bearer_auth(&s.cfg.key)
            .json(&json!({"relay_id": s.cfg.edge_id, "lease_ids": ids}));
        (req, ids)
    };
    if let Err(e) = req.send().await.and_then(|r| r.error_for_status()) {
        tracing::debug!("lease release failed, retried later (they expire anyway): {e}");
        state.borrow_mut().releases.extend(ids);
    }
}
