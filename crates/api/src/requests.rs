//! Force-mode enablement: the application form with validation that names every bad field,
//! the stored request and its lifecycle inputs, and the enablement relays admit by:
//!
//! ```text
//! submitted → approved | rejected(reason) → active → suspended | revoked
//! ```

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::limits;
use crate::vocab::{Mode, QualityTier, Region, RequestState, Sdk};

/// Upper bounds that keep estimates meaningful (and far from overflow): channels per app.
pub const MAX_CHANNELS: u32 = 1_000_000;
/// Users per channel.
pub const MAX_USERS_PER_CHANNEL: u32 = 100_000;
const MAX_USE_CASE_CHARS: usize = 200;

/// The application form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnablementInput {
    /// The region whose static relays the application will use.
    pub region: Region,
    /// The SDK the application integrates.
    pub sdk: Sdk,
    /// e.g. "1:1 video call", "1:N live broadcast".
    #[cfg_attr(feature = "openapi", schema(example = "1:1 video call"))]
    pub use_case: String,
    /// Channels (calls or rooms) open at the same time, 1 to 1 000 000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub max_concurrent_channels: u32,
    /// Proxy and non-proxy users together.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub max_users_per_channel: u32,
    /// At most `max_users_per_channel`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub max_proxy_users_per_channel: u32,
    /// The video tier; it sets the bitrate budgeted per proxy user.
    pub quality: QualityTier,
    /// The Force mode asked for.
    pub mode: Mode,
}

impl EnablementInput {
    /// Every field problem at once (empty when the form is valid).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.into(),
                message,
            })
        };
        let use_case = self.use_case.trim();
        if use_case.is_empty() {
            bad("use_case", "must not be empty".into());
        } else if use_case.chars().count() > MAX_USE_CASE_CHARS {
            bad(
                "use_case",
                format!("must be at most {MAX_USE_CASE_CHARS} characters"),
            );
        } else if let Some(c) = limits::forbidden_char(use_case) {
            bad("use_case", limits::forbidden_message(c));
        }
        if !(1..=MAX_CHANNELS).contains(&self.max_concurrent_channels) {
            bad(
                "max_concurrent_channels",
                format!("must be between 1 and {MAX_CHANNELS}"),
            );
        }
        if !(1..=MAX_USERS_PER_CHANNEL).contains(&self.max_users_per_channel) {
            bad(
                "max_users_per_channel",
                format!("must be between 1 and {MAX_USERS_PER_CHANNEL}"),
            );
        }
        if self.max_proxy_users_per_channel == 0 {
            bad("max_proxy_users_per_channel", "must be at least 1".into());
        } else if self.max_proxy_users_per_channel > self.max_users_per_channel {
            bad(
                "max_proxy_users_per_channel",
                format!(
                    "must not exceed max_users_per_channel ({})",
                    self.max_users_per_channel
                ),
            );
        }
        errors
    }
}

/// A stored enablement request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnablementRequest {
    /// The request's id (32 hex digits), used in `/v1/requests/{id}` URLs.
    pub id: String,
    /// The application the request is for.
    pub app_id: String,
    /// The region asked for.
    pub region: Region,
    /// The SDK the application integrates.
    pub sdk: Sdk,
    /// The applicant's words for the use case, as submitted.
    pub use_case: String,
    /// Channels open at the same time.
    pub max_concurrent_channels: u32,
    /// Users per channel, proxy and non-proxy together.
    pub max_users_per_channel: u32,
    /// Users per channel that go through a relay.
    pub max_proxy_users_per_channel: u32,
    /// The video tier the estimate is computed with.
    pub quality: QualityTier,
    /// The Force mode asked for.
    pub mode: Mode,
    /// Where the request is in its lifecycle.
    pub state: RequestState,
    /// Why it was rejected (or revoked), when it was.
    pub reason: Option<String>,
    /// proxy users × channels × the tier's bitrate, in kbit/s.
    pub estimated_kbps: u64,
    /// What it holds of the region's static-pool capacity (0 unless approved, active or
    /// suspended).
    pub reserved_kbps: u64,
    /// When it was filed (Unix seconds).
    pub created_at: i64,
    /// When its state last changed (Unix seconds).
    pub updated_at: i64,
    /// When an approved request becomes active on its own (Unix seconds), if approval gave a
    /// later effective date; null otherwise (approval without a date activates at once).
    pub activates_at: Option<i64>,
}

/// An active enablement as relays need it for admission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncEnablement {
    /// The region the enablement covers.
    pub region: Region,
    /// The Force mode it allows.
    pub mode: Mode,
    /// Channels a relay admits at once for this application in this region and mode.
    pub max_concurrent_channels: u32,
    /// Proxy users a relay admits per channel.
    pub max_proxy_users_per_channel: u32,
    /// The tier usage minutes are metered in.
    pub quality: QualityTier,
}

/// `POST /v1/requests/{id}/reject`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RejectInput {
    /// Why, for the applicant: 1 to 500 characters.
    pub reason: String,
}

/// `POST /v1/requests/{id}/approve` (the body is optional).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveInput {
    /// When the enablement takes effect (Unix seconds, up to 253402300799). Absent or not in
    /// the future: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<i64>,
}

impl ApproveInput {
    /// Every field problem at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(t) = self.effective_at {
            limits::check_into(&mut errors, "effective_at", t, 0, limits::MAX_UNIX_SECONDS);
        }
        errors
    }
}
