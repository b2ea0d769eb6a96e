//! The application form for Force-mode enablement, without I/O: its fields, validation that
//! names every bad field, the bandwidth estimate, and the lifecycle after approval:
//!
//! ```text
//! submitted → approved | rejected(reason) → active → suspended | revoked
//! ```
//!
//! Approved, active and suspended requests hold a reservation of their region's static-pool
//! capacity ([`crate::capacity`]); the store makes approval atomic (`store::requests`).

use crate::capacity;
use crate::model::{RequestState, Wire};

pub use cloudproxy_api::requests::{
    EnablementInput, EnablementRequest, SyncEnablement, MAX_CHANNELS, MAX_USERS_PER_CHANNEL,
};

/// The bandwidth a form needs, in kbit/s.
pub fn estimate_kbps(form: &EnablementInput) -> u64 {
    capacity::estimate_kbps(
        form.max_proxy_users_per_channel.into(),
        form.max_concurrent_channels.into(),
        form.quality,
    )
    .unwrap_or(u64::MAX)
}

/// A lifecycle step after approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Approved → active before the effective date (an active request stays active).
    Activate,
    /// Active → suspended; the reserved bandwidth is kept.
    Suspend,
    /// Suspended → active again.
    Resume,
    /// Approved, active or suspended → revoked; the reservation is released.
    Revoke,
}

impl Wire for Step {
    /// Every step, in lifecycle order.
    const ALL: &'static [Step] = &[Step::Activate, Step::Suspend, Step::Resume, Step::Revoke];

    /// The step as the API's paths spell it (`/v1/requests/{id}/activate`).
    fn as_str(self) -> &'static str {
        match self {
            Step::Activate => "activate",
            Step::Suspend => "suspend",
            Step::Resume => "resume",
            Step::Revoke => "revoke",
        }
    }
}

impl Step {
    /// Whether only the operator may take this step: owners take `activate` on their own
    /// requests; suspending, resuming and revoking are the operator's.
    pub fn needs_operator(self) -> bool {
        self != Step::Activate
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, QualityTier, Region, Sdk};

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
        assert_eq!(estimate_kbps(&form()), 2 * 10 * 3_000);
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
    fn steps_are_spelled_as_their_paths() {
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Step::parse("suspend"), Some(Step::Suspend));
        assert_eq!(Step::parse("approve"), None);
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
