//! What every handler of the API and the console shares: the store, the hashed keys, the
//! relay protocol's timing, the metrics, the console's sessions and the relays' last syncs.
//!
//! The API (`api`) and the console (`console`) both read it; neither owns it, so neither has
//! to import the other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::caller::{Caller, RelayCaller};
use crate::console::session::Sessions;
use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::store::{hash_key, Store};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// SHA-256 (hex) of the operator's bearer key; the key itself is not kept.
    operator_key_hash: String,
    /// SHA-256 (hex) of the relays' key, if one is configured.
    relay_key_hash: Option<String>,
    settings: Settings,
    metrics: ApiMetrics,
    /// The console's signed-in browsers.
    sessions: Sessions,
    /// When each relay (by edge id) last synced with this process, for the console.
    // A std mutex: one map operation per use, never held across an `.await`.
    edge_syncs: std::sync::Mutex<HashMap<String, i64>>,
}

/// Timing of the relay protocol.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a lease lives without renewal (seconds).
    pub lease_ttl: i64,
    /// A relay whose last heartbeat is older than this (seconds) drops out of selection.
    pub heartbeat_timeout: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_ttl: 30,
            heartbeat_timeout: 30,
        }
    }
}

/// Whose bearer key a request carries, before the endpoint decides what that role may do.
enum KeyHolder {
    /// The operator's key.
    Operator,
    /// The relays' key.
    Relay,
    /// An app owner's key (the owner's id).
    Owner(String),
}

impl AppState {
    /// State over an open store, with the operator's bearer key.
    pub fn new(store: Store, operator_key: &str) -> AppState {
        AppState::with_relays(store, operator_key, None, Settings::default())
    }

    /// State with a key for relays (sync, leases, usage, heartbeats, registration) and the
    /// relay protocol's timing.
    pub fn with_relays(
        store: Store,
        operator_key: &str,
        relay_key: Option<&str>,
        settings: Settings,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                operator_key_hash: hash_key(operator_key),
                relay_key_hash: relay_key.map(hash_key),
                settings,
                metrics: ApiMetrics::new(),
                sessions: Sessions::default(),
                edge_syncs: Default::default(),
            }),
        }
    }

    /// The relay protocol's timing (lease TTL, heartbeat timeout).
    pub fn settings(&self) -> Settings {
        self.inner.settings
    }

    /// The database every handler reads and changes.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The console's signed-in browsers.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The request counters and gauges `GET /metrics` serves.
    pub(crate) fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }

    /// Records a relay's sync (`GET /v1/sync/apps?edge=ID`).
    pub(crate) fn edge_synced(&self, edge: &str, now: i64) {
        let mut syncs = self
            .inner
            .edge_syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Bounded by the edge ids relays use; a relay key could invent ids, so cap it.
        if syncs.len() < 10_000 || syncs.contains_key(edge) {
            syncs.insert(edge.to_owned(), now);
        }
    }

    /// When relay `edge` last synced with this process, if it did.
    pub(crate) fn edge_synced_at(&self, edge: &str) -> Option<i64> {
        let syncs = self
            .inner
            .edge_syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        syncs.get(edge).copied()
    }

    /// Who a bearer key belongs to: the operator or an owner (the relay key is refused).
    pub async fn caller_for_key(&self, key: &str) -> Result<Caller, ApiError> {
        match self.key_holder(key).await? {
            KeyHolder::Operator => Ok(Caller::Operator),
            KeyHolder::Relay => Err(ApiError::forbidden(
                "the relay key may only call the relay endpoints (sync, leases, usage, \
                 heartbeats, edge registration)",
            )),
            KeyHolder::Owner(owner) => Ok(Caller::Owner(owner)),
        }
    }

    /// Who a bearer key belongs to, for the relay endpoints: the relay or the operator (an
    /// owner's key is refused).
    pub async fn relay_caller_for_key(&self, key: &str) -> Result<RelayCaller, ApiError> {
        match self.key_holder(key).await? {
            KeyHolder::Operator => Ok(RelayCaller::Operator),
            KeyHolder::Relay => Ok(RelayCaller::Relay),
            KeyHolder::Owner(_) => Err(ApiError::forbidden(
                "this needs the relay key or the operator's key",
            )),
        }
    }

    /// The holder of `key`: 401 when it is nobody's.
    async fn key_holder(&self, key: &str) -> Result<KeyHolder, ApiError> {
        // Hashes compare in time independent of where the keys differ.
        let hash = hash_key(key);
        if constant_time_eq(hash.as_bytes(), self.inner.operator_key_hash.as_bytes()) {
            return Ok(KeyHolder::Operator);
        }
        let relay = self.inner.relay_key_hash.as_ref();
        if relay.is_some_and(|h| constant_time_eq(hash.as_bytes(), h.as_bytes())) {
            return Ok(KeyHolder::Relay);
        }
        match self.store().owner_for_key(key).await? {
            Some(owner) => Ok(KeyHolder::Owner(owner)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

/// Whether two byte strings are equal, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
