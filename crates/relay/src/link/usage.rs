//! Usage accounting: allocation-seconds, bytes and peaks per app, mode, tier and day, and
//! the reports that carry them, queued until acknowledged.

use super::*;

/// One admitted allocation, as metered.
#[derive(Debug)]
pub(super) struct Account {
    pub(super) app: String,
    pub(super) mode: Mode,
    pub(super) quality: Option<QualityTier>,
    pub(super) channel: String,
    pub(super) user: String,
    pub(super) lease: Option<String>,
    /// Seconds are counted up to here.
    pub(super) since: Instant,
}

/// Usage per (app, mode, tier, day) since the last report.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) millis: u64,
    pub(super) bytes: u64,
    pub(super) peak: u64,
}

pub(super) type UsageKey = (String, Mode, Option<QualityTier>, String);

pub(super) fn add_bytes(s: &mut State, account: u64, bytes: u64) {
    let Some(a) = s.accounts.get(&account) else {
        return;
    };
    let key = (a.app.clone(), a.mode, a.quality, day(unix_now()));
    s.period.entry(key).or_default().bytes += bytes;
}

/// Counts an account's seconds up to now.
pub(super) fn accrue(s: &mut State, account: u64, now: Instant) {
    let Some(a) = s.accounts.get_mut(&account) else {
        return;
    };
    let millis = now.saturating_duration_since(a.since).as_millis() as u64;
    a.since = now;
    let key = (a.app.clone(), a.mode, a.quality, day(unix_now()));
    s.period.entry(key).or_default().millis += millis;
}

pub(super) fn end_account(state: &LinkState, account: u64, bytes: u64) {
    let mut s = state.borrow_mut();
    add_bytes(&mut s, account, bytes);
    accrue(&mut s, account, Instant::now());
    if let Some(a) = s.accounts.remove(&account) {
        if let Some(lease) = a.lease {
            s.releases.push(lease);
        }
    }
    drop(s);
    let state = state.clone();
    tokio::task::spawn_local(async move { release(&state).await });
}

/// Records the peak of (app, mode) after an admission.
pub(super) fn note_peak(s: &mut State, app: &str, mode: Mode, quality: Option<QualityTier>) {
    let live = s
        .accounts
        .values()
        .filter(|a| a.app == app && a.mode == mode)
        .count() as u64;
    let key = (app.to_owned(), mode, quality, day(unix_now()));
    let t = s.period.entry(key).or_default();
    t.peak = t.peak.max(live);
}

/// Turns the period's usage into a report queued for sending.
pub(super) fn close_period(state: &LinkState) {
    let mut s = state.borrow_mut();
    let now = Instant::now();
    let ids: Vec<u64> = s.accounts.keys().copied().collect();
    for id in ids {
        accrue(&mut s, id, now);
    }
    // The peak of the period also counts allocations that were simply held throughout.
    let mut live: HashMap<(String, Mode, Option<QualityTier>), u64> = HashMap::new();
    for a in s.accounts.values() {
        *live.entry((a.app.clone(), a.mode, a.quality)).or_default() += 1;
    }
    let today = day(unix_now());
    for ((app, mode, quality), n) in live {
        let t = s
            .period
            .entry((app, mode, quality, today.clone()))
            .or_default();
        t.peak = t.peak.max(n);
    }
    let mut records = Vec::new();
    let mut keep = HashMap::new();
    for ((app, mode, quality, day), t) in s.period.drain() {
        let seconds = t.millis / 1000;
        if seconds > 0 || t.bytes > 0 || t.peak > 0 {
            records.push(UsageRecord {
                app_id: app.clone(),
                day: day.clone(),
                mode,
                quality,
                seconds,
                bytes: t.bytes,
                peak_concurrency: t.peak,
            });
        }
        // Sub-second remainders carry over to the next report.
        if t.millis % 1000 > 0 {
            keep.insert(
                (app, mode, quality, day),
                Totals {
                    millis: t.millis % 1000,
                    ..Totals::default()
                },
            );
        }
    }
    s.period = keep;
    if records.is_empty() {
        return;
    }
    s.report_seq += 1;
    let report = UsageReport {
        report_id: format!("{}-{}-{}", s.cfg.edge_id, s.boot, s.report_seq),
        relay_id: s.cfg.edge_id.clone(),
        records,
    };
    s.reports.push_back(report);
    if s.reports.len() > MAX_PENDING_REPORTS {
        s.reports.pop_front();
        tracing::error!("usage reports pending beyond {MAX_PENDING_REPORTS}: dropped the oldest");
    }
    s.metrics.usage_reports_pending.set(s.reports.len() as i64);
}

/// Sends queued reports in order until one fails (it is retried at the next interval).
pub(super) async fn send_reports(state: &LinkState) {
    loop {
        let req = {
            let s = state.borrow();
            let Some(report) = s.reports.front() else {
                return;
            };
            s.http
                .post(url(&s, "/v1/usage"))
                .bearer_auth(&s.cfg.key)
                .json(report)
        };
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let mut s = state.borrow_mut();
                s.reports.pop_front();
                s.metrics.usage_reports_pending.set(s.reports.len() as i64);
            }
            Ok(r) if r.status().is_client_error() => {
                // The control plane will never take it (a bug, not an outage): do not block
                // the queue behind it.
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::error!("control plane refused a usage report ({status}): {text}");
                let mut s = state.borrow_mut();
                s.reports.pop_front();
                s.metrics.usage_reports_pending.set(s.reports.len() as i64);
            }
            Ok(r) => {
                tracing::warn!("usage report not accepted ({}), retried later", r.status());
                return;
            }
            Err(e) => {
                tracing::warn!("usage report not sent ({e}), retried later");
                return;
            }
        }
    }
}
