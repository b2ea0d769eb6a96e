//! What relays send and receive: admission leases, usage reports, heartbeats (in
//! [`crate::edges`]); what clients read: the Auto-mode proxy list; and what owners read: usage
//! per day.

use serde::{Deserialize, Serialize};

use crate::calendar::is_day;
use crate::edges::Listener;
use crate::error::FieldError;
use crate::limits;
use crate::vocab::{Mode, QualityTier, Region, UsageMode};

/// One admitted allocation, as a relay describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseInput {
    /// Chosen by the relay (random), so a retried acquisition is recognised.
    pub lease_id: String,
    /// The relay holding the allocation.
    pub relay_id: String,
    /// The application whose token admitted it.
    pub app_id: String,
    /// The region the relay serves.
    pub region: Region,
    /// The Force mode the allocation uses.
    pub mode: Mode,
    /// The channel named in the user's token (may be empty).
    pub channel: String,
    /// The user id from the token.
    pub user: String,
}

impl LeaseInput {
    /// Field problems: ids must be 1 to 128 characters.
    pub fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("lease_id", &self.lease_id),
            ("relay_id", &self.relay_id),
            ("app_id", &self.app_id),
            ("user", &self.user),
        ] {
            if v.is_empty() || v.len() > 128 {
                errors.push(FieldError {
                    field: format!("{prefix}{name}"),
                    message: "must be 1 to 128 characters".into(),
                });
            }
        }
        if self.channel.len() > 128 {
            errors.push(FieldError {
                field: format!("{prefix}channel"),
                message: "must be at most 128 characters".into(),
            });
        }
        errors
    }
}

/// A granted lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The lease's id, as the relay chose it.
    pub lease_id: String,
    /// When the lease lapses unless renewed (Unix seconds).
    pub expires_at: i64,
    /// The enablement's tier, which the relay meters the allocation's minutes in.
    pub quality: QualityTier,
}

/// `POST /v1/leases/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Renewal {
    /// The leases the relay still holds; each gets a fresh expiry.
    pub leases: Vec<LeaseInput>,
}

/// How many leases a call changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Changed {
    /// How many leases were renewed or released.
    pub changed: u64,
    /// Seconds a renewed lease lives.
    pub ttl_seconds: i64,
}

/// `POST /v1/leases/release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The relay releasing them.
    pub relay_id: String,
    /// The ids of the leases whose allocations ended.
    pub lease_ids: Vec<String>,
}

/// One relay's usage of one app in one mode and tier on one day, since its last report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The application the usage belongs to.
    pub app_id: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// The mode the allocations ran in.
    pub mode: UsageMode,
    /// The enablement's tier; absent for Auto.
    pub quality: Option<QualityTier>,
    /// Allocation-seconds, 0 to 8.64 × 10¹¹ (10⁷ allocations for a day).
    pub seconds: u64,
    /// Relayed bytes, both directions, 0 to 1.08 × 10¹⁵ (100 Gbit/s for a day).
    pub bytes: u64,
    /// The most allocations of this app and mode the relay held at once in the period, 0 to
    /// 10⁷.
    pub peak_concurrency: u64,
}

/// `POST /v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Unique per report; a report with a known id is acknowledged and ignored.
    pub report_id: String,
    /// The reporting relay.
    pub relay_id: String,
    /// One record per (app, day, mode, tier) since the relay's last report.
    pub records: Vec<UsageRecord>,
}

impl UsageReport {
    /// Every field problem at once: ids' lengths, dates, and each counter's range.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut bad = |field: String, message: &str| {
            errors.push(FieldError {
                field,
                message: message.into(),
            })
        };
        if self.report_id.is_empty() || self.report_id.len() > 200 {
            bad("report_id".into(), "must be 1 to 200 characters");
        }
        if self.relay_id.is_empty() || self.relay_id.len() > 128 {
            bad("relay_id".into(), "must be 1 to 128 characters");
        }
        for (i, r) in self.records.iter().enumerate() {
            if !is_day(&r.day) {
                bad(format!("records[{i}].day"), "must be a date, YYYY-MM-DD");
            }
            if r.app_id.is_empty() || r.app_id.len() > 128 {
                bad(
                    format!("records[{i}].app_id"),
                    "must be 1 to 128 characters",
                );
            }
        }
        for (i, r) in self.records.iter().enumerate() {
            for (name, v, max) in [
                ("seconds", r.seconds, limits::MAX_RECORD_SECONDS),
                ("bytes", r.bytes, limits::MAX_RECORD_BYTES),
                (
                    "peak_concurrency",
                    r.peak_concurrency,
                    limits::MAX_ALLOCATIONS,
                ),
            ] {
                limits::check_into(&mut errors, format!("records[{i}].{name}"), v, 0, max);
            }
        }
        errors
    }
}

/// Whether a usage report was new.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageAck {
    /// The report's id, echoed.
    pub report_id: String,
    /// `false`: this id was applied before; nothing was added again.
    pub applied: bool,
}

/// One row of `GET /v1/apps/{id}/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageDay {
    /// The day (`YYYY-MM-DD`, UTC).
    pub day: String,
    /// The mode the allocations ran in.
    pub mode: UsageMode,
    /// The tier, absent for Auto.
    pub quality: Option<QualityTier>,
    /// Allocation-seconds, summed over every relay.
    pub seconds: u64,
    /// `seconds / 60`.
    pub minutes: f64,
    /// Relayed bytes, both directions, summed over every relay.
    pub bytes: u64,
    /// The day's highest concurrency: for Force modes the central lease count across every
    /// relay, for Auto the highest a single relay reported.
    pub peak_concurrency: u64,
}

/// `GET /v1/apps/{id}/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// The application.
    pub app_id: String,
    /// The first day of the range (`YYYY-MM-DD`, inclusive).
    pub from: String,
    /// The last day of the range (`YYYY-MM-DD`, inclusive).
    pub to: String,
    /// One row per (day, mode, tier) with usage, in day order.
    pub days: Vec<UsageDay>,
}

/// One relay an Auto-mode client may fall back to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Proxy {
    /// The relay's id.
    pub id: String,
    /// Its public addresses and ports.
    pub listeners: Vec<Listener>,
    /// Load over capacity at the last heartbeat, 0 to 1 (or more when overloaded).
    pub load: f64,
}

/// `GET /v1/proxies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyList {
    /// The region the list is for.
    pub region: Region,
    /// Up to three live dynamic relays of the region (heartbeat within the timeout), least loaded first.
    pub proxies: Vec<Proxy>,
}
