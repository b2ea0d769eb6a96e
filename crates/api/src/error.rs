//! The one error shape every API error answers with.

use serde::{Deserialize, Serialize};

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field's path in the request: `max_users_per_channel`, `listeners[1].ip`, `body`,
    /// or a query parameter's name.
    pub field: String,
    /// What is wrong with it, for people.
    pub message: String,
}

/// The error object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `payload_too_large`, `conflict`, `quota_exceeded`, `unavailable` or `internal`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Field-level messages; empty unless `code` is `invalid_request`.
    #[serde(default)]
    pub fields: Vec<FieldError>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}
