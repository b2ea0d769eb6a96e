//! The application form for Force-mode enablement, without I/O: its fields, validation that
//! names every bad field, the bandwidth estimate, and the lifecycle after approval:
//!
//! ```text
//! submitted → approved | rejected(reason) → active → suspended | revoked
//! ```
//!
//! Approved, active and suspended requests hold a reservation of their region's static-pool
//! capacity ([`crate::capacity`]); the store makes approval atomic (`store::requests`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::capacity;
use crate::error::FieldError;
use crate::model::{Mode, QualityTier, Region, RequestState, Sdk};

/// Upper bounds that keep estimates meaningful (and far from overflow).
pub const MAX_CHANNELS: u32 = 1_000_000;
pub const MAX_USERS_PER_CHANNEL: u32 = 100_000;
const MAX_USE_CASE_CHARS: usize = 200;

/// The application form.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnablementInput {
    pub region: Region,
    pub sdk: Sdk,
    /// e.g. "1:1 video call", "1:N live broadcast".
    #[schema(example = "1:1 video call")]
    pub use_case: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_concurrent_channels: u32,
    /// Proxy and non-proxy users together.
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_users_per_channel: u32,
    /// At most `max_users_per_channel`.
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_proxy_users_per_channel: u32,
    pub quality: QualityTier,
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
        } else if let Some(c) = crate::model::forbidden_char(use_case) {
            bad("use_case", crate::model::forbidden_message(c));
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

    /// The bandwidth this form needs, in kbit/s.
    pub fn estimate_kbps(&self) -> u64 {
        capacity::estimate_kbps(
            self.max_proxy_users_per_channel.into(),
            self.max_concurrent_channels.into(),
            self.quality,
        )
        .unwrap_or(u64::MAX)
    }
}

/// A stored enablement request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnablementRequest {
    pub id: String,
    pub app_id: String,
    pub region: Region,
    pub sdk: Sdk,
    pub use_case: String,
    pub max_concurrent_channels: u32,
    pub max_users_per_channel: u32,
    pub max_proxy_users_per_channel: u32,
    pub quality: QualityTier,
    pub mode: Mode,
    pub state: RequestState,
    /// Why it was rejected (or revoked), when it was.
    pub reason: Option<String>,
    /// proxy users × channels × the tier's bitrate, in kbit/s.
    pub estimated_kbps: u64,
    /// What it holds of the region's static-pool capacity (0 unless approved, active or
    /// suspended).
    pub reserved_kbps: u64,
    pub created_at: i64,
    pub updated_at: i64,
    /// When an approved request becomes active on its own (Unix seconds), if approval gave a
    /// later effective date; null otherwise (approval without a date activates at once).
    pub activates_at: Option<i64>,
}

/// An active enablement as relays need it for admission.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncEnablement {
    pub region: Region,
    pub mode: Mode,
    pub max_concurrent_channels: u32,
    pub max_proxy_users_per_channel: u32,
    /// The tier usage minutes are metered in.
    pub quality: QualityTier,
}

/// A lifecycle step after approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Activate,
    Suspend,
    Resume,
    Revoke,
}

impl Step {
    /// The state this step leads to from `from`, if it is allowed.
    pub fn next(self, from: RequestState) -> Option<RequestState> {
        use RequestState::*;
        match (self, from) {
            // Approval activates on its own; an explicit activate of an active request is a
            // no-op, so scripts written for the older two-step flow keep working.
            (Step::Activate, Approved | Active) => Some(Active),
            (Step::Suspend, Active) => Some(Suspended),
            (Step::Resume, Suspended) => Some(Active),
            (Step::Revoke, Approved | Active | Suspended) => Some(Revoked),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Activate => "activate",
            Step::Suspend => "suspend",
            Step::Resume => "resume",
            Step::Revoke => "revoke",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> EnablementInput {
        EnablementInput {
            region: Region::Japan,
            sdk: Sdk::Web,
            use_case: "1:1 video call".into(),
            max_concurrent_channels: 10,
            max_users_per_channel: 4,
            max_proxy_users_per_channel: 2,
            quality: QualityTier::P720,
            mode: Mode::ForceTcp,
        }
    }

    #[test]
    fn a_good_form_validates_and_estimates() {
        assert!(form().validate().is_empty());
        assert_eq!(form().estimate_kbps(), 2 * 10 * 3_000);
    }

    #[test]
    fn proxy_users_may_not_exceed_users() {
        let mut f = form();
        f.max_proxy_users_per_channel = 5;
        let errors = f.validate();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "max_proxy_users_per_channel");
        assert!(errors[0].message.contains("max_users_per_channel (4)"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut f = form();
        f.use_case = "  ".into();
        f.max_concurrent_channels = 0;
        f.max_users_per_channel = MAX_USERS_PER_CHANNEL + 1;
        f.max_proxy_users_per_channel = 0;
        let fields: Vec<String> = f.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "use_case",
                "max_concurrent_channels",
                "max_users_per_channel",
                "max_proxy_users_per_channel"
            ]
        );
    }

    #[test]
    fn lifecycle_steps() {
        use RequestState::*;
        assert_eq!(Step::Activate.next(Approved), Some(Active));
        assert_eq!(Step::Activate.next(Submitted), None);
        assert_eq!(Step::Suspend.next(Active), Some(Suspended));
        assert_eq!(Step::Resume.next(Suspended), Some(Active));
        assert_eq!(Step::Revoke.next(Suspended), Some(Revoked));
        assert_eq!(Step::Revoke.next(Rejected), None);
        assert_eq!(Step::Revoke.next(Revoked), None);
    }
}
