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
    let (verdict, quality, lease) = if let Some(mode) = request.mode.force() {
        let req = {
            let s = state.borrow();
            let body = LeaseInput {
                lease_id: lease_id.clone(),
                relay_id: s.cfg.edge_id.clone(),
                app_id: request.app_id.clone(),
                region: s.cfg.region,
                mode,
                channel: request.channel.clone(),
                user: request.user.clone(),
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
            .copied();
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                let q = r.json::<Lease>().await.ok().map(|g| g.quality);
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
    } else {
        // Auto: admitted at once, no lease.
        (Ok(()), None, None)
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
                    quality,
                    channel: request.channel,
                    user: request.user,
                    lease,
                    since: Instant::now(),
                },
            );
            note_peak(&mut s, &request.app_id, request.mode, quality);
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
        let leases: Vec<LeaseInput> = s
            .accounts
            .values()
            .filter_map(|a| {
                Some(LeaseInput {
                    lease_id: a.lease.clone()?,
                    relay_id: s.cfg.edge_id.clone(),
                    app_id: a.app.clone(),
                    region: s.cfg.region,
                    mode: a.mode.force()?,
                    channel: a.channel.clone(),
                    user: a.user.clone(),
                })
            })
            .collect();
        if leases.is_empty() {
            return;
        }
        s.http
            .post(url(&s, "/v1/leases/renew"))
            .bearer_auth(&s.cfg.key)
            .json(&Renewal { leases })
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
            .json(&Release {
                relay_id: s.cfg.edge_id.clone(),
                lease_ids: ids.clone(),
            });
        (req, ids)
    };
    if let Err(e) = req.send().await.and_then(|r| r.error_for_status()) {
        tracing::debug!("lease release failed, retried later (they expire anyway): {e}");
        state.borrow_mut().releases.extend(ids);
    }
}
