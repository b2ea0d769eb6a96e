//! Errors: the library's typed errors and the one JSON shape every HTTP error has.
//!
//! ```json
//! {"error": {"code": "invalid_request", "message": "…",
//!            "fields": [{"field": "max_proxy_users_per_channel", "message": "…"}]}}
//! ```
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_request` | bad JSON, a bad field or enum value; `fields` names each one |
//! | 401 | `unauthorized` | no `Authorization: Bearer …`, or an unknown key |
//! | 403 | `forbidden` | the key's role may not do this |
//! | 404 | `not_found` | unknown id, or an app of another owner (see the crate docs) |
//! | 405 | `method_not_allowed` | |
//! | 413 | `payload_too_large` | a body past 2 MiB |
//! | 403 | `forbidden` | also: a lease for an app not active for that mode in that region |
//! | 409 | `conflict` | a lifecycle step the current state does not allow |
//! | 409 | `quota_exceeded` | a lease beyond the app's proxy users per channel or concurrent channels |
//! | 503 | `unavailable` | `POST /v1/ice-servers` in a Force mode with no live published relay in the region |
//! | 500 | `internal` | the database failed; details are logged, not returned |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The API's listening socket could not be bound (address in use, no permission).
    #[error("cannot bind the API listener on {addr}: {source}")]
    Bind {
        /// The address `ControlConfig::listen` asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The database URL names neither SQLite nor PostgreSQL (the URL as given).
    #[error(
        "unsupported database URL '{0}': expected sqlite:PATH, sqlite::memory: or postgres://…"
    )]
    DatabaseUrl(String),
    /// The SQLite file (or its journal) could not be made readable by its owner only.
    #[error("cannot make {path} private to its owner (it holds app secrets): {source}")]
    Permissions {
        /// The database file.
        path: std::path::PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The schema migrations failed (a newer schema, or a database error mid-way).
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The control plane's own tokio runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The operator's or the relays' key is not 16 to 256 printable ASCII characters.
    #[error(
        "the operator and relay keys must be 16 to 256 printable ASCII characters without spaces"
    )]
    OperatorKey,
}

/// A storage operation that did not happen. Nothing is half-written: every change runs in one
/// transaction, rolled back on any error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record, or one outside the caller's scope (answered as 404 alike).
    #[error("{what} '{id}' not found")]
    NotFound {
        /// The kind of record (`app`, `request`, `edge`…).
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The record's state does not allow this step (a 409); the message says why.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not have this (an app not active for a mode and region).
    #[error("{0}")]
    Forbidden(String),
    /// An admission limit is reached.
    #[error("{0}")]
    Quota(String),
    /// An input the store itself refuses (a 400 naming the field).
    #[error("{field}: {message}")]
    Invalid {
        /// The field's name as the API spells it.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The database failed (a 500; the details are logged, not returned).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row that does not decode (JSON columns, enum spellings): a 500.
    #[error("a stored row does not parse: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub use cloudproxy_api::error::{ErrorBody, ErrorDetail, FieldError};

/// What a JSON endpoint answers: the value as JSON, or the error.
pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// An HTTP error in the shape above.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status the error is answered with.
    pub status: StatusCode,
    /// The JSON body: code, message and the fields at fault.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message: message.into(),
                    fields: Vec::new(),
                },
            },
        }
    }

    /// 400 naming the fields.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("invalid request: {}: {}", one.field, one.message),
            _ => format!("invalid request: {} fields are invalid", fields.len()),
        };
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message);
        e.body.error.fields = fields;
        e
    }

    /// 400 naming one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::fields(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 401 `unauthorized`: no key, or a key nobody holds.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: the caller's role may never do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`: no such record or path (or one outside the caller's scope).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take that method",
        )
    }

    /// 409 `conflict`: the record's state does not allow this step.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 409 `quota_exceeded`: an admission limit (relays answer the Allocate with 486).
    pub fn quota(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "quota_exceeded", message)
    }

    /// 413: the body is past the limit.
    pub fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the 2 MiB limit",
        )
    }

    /// 503 `unavailable`: nothing can serve this right now (no live relay); retrying later
    /// makes sense.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`: the database failed; the message points to the log, not the details.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the control plane's log has the details",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::fields(vec![e])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Forbidden(m) => ApiError::forbidden(m),
            StoreError::Quota(m) => ApiError::quota(m),
            StoreError::Invalid { field, message } => ApiError::field(field, message),
            StoreError::Db(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "storage failed");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
