//! Who is calling: the roles a bearer key grants (see the crate doc's table).
//!
//! The keys are told apart in [`crate::state::AppState`] and turned into these roles by the
//! request extractors in [`crate::extract`].

use crate::error::ApiError;

/// Who is calling, from `Authorization: Bearer <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Manages everything.
    Operator,
    /// Manages only its own apps.
    Owner(String),
}

impl Caller {
    /// The owner a query is restricted to: `None` for the operator.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Owner(id) => Some(id),
        }
    }

    /// 403 unless the caller is the operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Owner(_) => Err(ApiError::forbidden(
                "this needs the operator's key; app owner keys manage their own apps only",
            )),
        }
    }
}

/// The operator's key: what operator-only endpoints take (an app owner's key is a 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator;

/// A relay, or the operator acting as one: what the relay endpoints require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCaller {
    /// The operator's key: may register any address.
    Operator,
    /// The relay key: may publish only addresses inside the CIDRs the operator gave the edge.
    Relay,
}
