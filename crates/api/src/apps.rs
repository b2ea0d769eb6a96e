//! Owners, applications, their keys and secrets, and what relays fetch of them (the sync).
//!
//! Secrets appear in two answers only: once when made ([`NewSecret`]), and in the relays'
//! sync ([`SyncKey`]).

use serde::{Deserialize, Serialize};

use crate::requests::SyncEnablement;
use crate::vocab::AppStatus;

/// An app owner: a customer who manages its own applications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Owner {
    /// The owner's id (32 hex digits).
    pub id: String,
    /// The owner's display name, 1 to 100 characters.
    pub name: String,
    /// When the owner was created (Unix seconds).
    pub created_at: i64,
}

/// `POST /v1/owners`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    /// 1 to 100 characters.
    pub name: String,
}

/// A new owner with its API key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedOwner {
    /// The owner created.
    pub owner: Owner,
    /// The owner's first API key, shown only in this answer.
    pub api_key: String,
}

/// Another API key of an owner, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnerKey {
    /// The owner the key belongs to.
    pub owner_id: String,
    /// The new API key, shown only in this answer.
    pub api_key: String,
}

/// `POST /v1/apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppInput {
    /// 1 to 100 characters.
    pub name: String,
    /// Operator only: the owner the app belongs to (absent: the operator's own app).
    /// Owners' apps are always their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

/// `POST /v1/apps/{id}/rotate` (the body is optional).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// How long the current keys keep working, in seconds: 0 to 2592000 (30 days), default
    /// 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
}

/// A rotation's new secret (shown once) and the keys now retiring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rotated {
    /// The new current key and its secret.
    pub credentials: NewSecret,
    /// The previous keys, each working until its `not_after`.
    pub retiring: Vec<RetiringKey>,
}

/// What relays fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResponse {
    /// When the control plane built this snapshot (Unix seconds); relays keep the newest.
    pub generated_at: i64,
    /// Every application, with its keys and active enablements.
    pub apps: Vec<SyncApp>,
}

/// An application key's public part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AppKeyInfo {
    /// The key's id, the `<key>` field of user tokens.
    pub key_id: String,
    /// When the key was made (Unix seconds).
    pub created_at: i64,
    /// Unix time after which the key no longer authenticates; `null` for the current key.
    pub not_after: Option<i64>,
}

/// An application.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct App {
    /// The App ID, 32 hex digits; the `app_id` of user tokens.
    pub id: String,
    /// The application's display name, 1 to 100 characters.
    pub name: String,
    /// `null` for apps the operator keeps for itself.
    pub owner_id: Option<String>,
    /// Whether the application's credentials are accepted.
    pub status: AppStatus,
    /// When the application was created (Unix seconds).
    pub created_at: i64,
    /// When the application last changed (Unix seconds).
    pub updated_at: i64,
    /// Current and retiring keys, newest first (no secrets).
    pub keys: Vec<AppKeyInfo>,
}

/// A new app secret. Shown once: only the relays' sync ever sees it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSecret {
    /// The application the secret signs tokens for.
    pub app_id: String,
    /// The key's id, the `<key>` field of user tokens signed with this secret.
    pub key_id: String,
    /// 64 hex digits. Sign user tokens with its bytes as written (the ASCII text).
    pub secret: String,
}

/// What creating an app returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApp {
    /// The application created.
    pub app: App,
    /// Its first key and secret, shown only in this answer.
    pub credentials: NewSecret,
}

/// A key that a rotation put on notice.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetiringKey {
    /// The retiring key's id.
    pub key_id: String,
    /// When it stops authenticating (Unix seconds).
    pub not_after: i64,
}

/// One app as relays need it: keys with secrets and the enablements that are active.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncApp {
    /// The App ID (32 hex digits).
    pub app_id: String,
    /// Whether relays accept the application's tokens at all.
    pub status: AppStatus,
    /// Every key still authenticating: the current one and those retiring.
    pub keys: Vec<SyncKey>,
    /// The enablements in the active state; Force-mode admission checks against them.
    pub enablements: Vec<SyncEnablement>,
}

/// An app key with its secret, for relays.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct SyncKey {
    /// The key's id, the `<key>` field of user tokens.
    pub key_id: String,
    /// The secret (64 hex digits) relays verify token signatures with.
    pub secret: String,
    /// When the key stops authenticating (Unix seconds); `null` for the current key.
    pub not_after: Option<i64>,
}
