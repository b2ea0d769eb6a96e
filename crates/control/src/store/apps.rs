//! Applications and their keys.
//!
//! `owner` arguments scope a call to one app owner: `Some(id)` sees only that owner's apps
//! (another owner's app is simply not found), `None` is the operator and sees everything.

use super::{
    found, parse_wire, random_hex, touched, with_pool, with_tx, App, AppKeyInfo, CreatedApp,
    NewSecret, RetiringKey, Store, SyncApp, SyncKey,
};
use crate::error::StoreError;
use crate::model::AppStatus;

/// Stores a new key of an app (`$tx` a transaction of either backend).
macro_rules! insert_app_key {
    ($tx:expr, $app_id:expr, $key_id:expr, $secret:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO app_keys (app_id, key_id, secret, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind($app_id)
        .bind($key_id)
        .bind($secret)
        .bind($now)
        .execute(&mut *$tx)
        .await?
    };
}

/// (app id, key id, created at, not after) of `app_keys`.
type KeyRow = (String, String, i64, Option<i64>);

#[derive(sqlx::FromRow)]
struct AppRow {
    id: String,
    name: String,
    owner_id: Option<String>,
    status: String,
    created_at: i64,
    updated_at: i64,
}

impl AppRow {
    fn into_app(self, keys: Vec<AppKeyInfo>) -> Result<App, StoreError> {
        Ok(App {
            status: parse_wire("app status", &self.status)?,
            id: self.id,
            name: self.name,
            owner_id: self.owner_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            keys,
        })
    }
}

impl Store {
    /// Creates an app for `owner_id` (`None`: the operator's own) with its first key.
    pub async fn create_app(
        &self,
        owner_id: Option<&str>,
        name: &str,
        now: i64,
    ) -> Result<CreatedApp, StoreError> {
        let id = random_hex(16);
        let secret = random_hex(32);
        with_tx!(self, |tx, pg| {
            if let Some(owner) = owner_id {
                let found: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM owners WHERE id = $1")
                        .bind(owner)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::invalid(
                        "owner_id",
                        format!("no owner '{owner}'"),
                    ));
                }
            }
            sqlx::query(
                "INSERT INTO apps (id, name, owner_id, status, next_key_seq, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'active', 2, $4, $4)",
            )
            .bind(&id)
            .bind(name)
            .bind(owner_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_app_key!(tx, &id, "k1", &secret, now);
        });
        let key = AppKeyInfo {
            key_id: "k1".into(),
            created_at: now,
            not_after: None,
        };
        Ok(CreatedApp {
            app: App {
                id: id.clone(),
                name: name.into(),
                owner_id: owner_id.map(str::to_owned),
                status: AppStatus::Active,
                created_at: now,
                updated_at: now,
                keys: vec![key],
            },
            credentials: NewSecret {
                app_id: id,
                key_id: "k1".into(),
                secret,
            },
        })
    }

    /// One app, if `owner` may see it.
    pub async fn get_app(&self, id: &str, owner: Option<&str>) -> Result<App, StoreError> {
        let q_app = "SELECT id, name, owner_id, status, created_at, updated_at FROM apps \
                     WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)";
        let q_keys = "SELECT key_id, created_at, not_after FROM app_keys WHERE app_id = $1 \
                      ORDER BY created_at DESC, key_id DESC";
        let (row, keys): (Option<AppRow>, Vec<AppKeyInfo>) = with_pool!(self, |pool| {
            let row = sqlx::query_as(q_app)
                .bind(id)
                .bind(owner)
                .fetch_optional(pool)
                .await?;
            let keys = sqlx::query_as(q_keys).bind(id).fetch_all(pool).await?;
            (row, keys)
        });
        found(row, "app", id)?.into_app(keys)
    }

    /// The apps `owner` may see, oldest first.
    pub async fn list_apps(&self, owner: Option<&str>) -> Result<Vec<App>, StoreError> {
        let q_apps = "SELECT id, name, owner_id, status, created_at, updated_at FROM apps \
                      WHERE ($1 IS NULL OR owner_id = $1) ORDER BY created_at, id";
        let q_keys = "SELECT k.app_id, k.key_id, k.created_at, k.not_after FROM app_keys k \
                      JOIN apps a ON a.id = k.app_id WHERE ($1 IS NULL OR a.owner_id = $1) \
                      ORDER BY k.created_at DESC, k.key_id DESC";
        let (rows, keys): (Vec<AppRow>, Vec<KeyRow>) = with_pool!(self, |pool| {
            let rows = sqlx::query_as(q_apps).bind(owner).fetch_all(pool).await?;
            let keys = sqlx::query_as(q_keys).bind(owner).fetch_all(pool).await?;
            (rows, keys)
        });
        rows.into_iter()
            .map(|row| {
                let mine = keys
                    .iter()
                    .filter(|k| k.0 == row.id)
                    .map(|k| AppKeyInfo {
                        key_id: k.1.clone(),
                        created_at: k.2,
                        not_after: k.3,
                    })
                    .collect();
                row.into_app(mine)
            })
            .collect()
    }

    /// Suspends or reactivates an app.
    pub async fn set_app_status(
        &self,
        id: &str,
        status: AppStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        let changed = with_tx!(self, |tx, pg| {
            sqlx::query("UPDATE apps SET status = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(status.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        touched(changed, "app", id)
    }

    /// Deletes an app with its keys and enablement requests (their reservations go with them).
    pub async fn delete_app(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let deleted = with_tx!(self, |tx, pg| {
            sqlx::query("DELETE FROM apps WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)")
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        touched(deleted, "app", id)
    }

    /// Issues a new key and puts every current key on notice: it keeps authenticating for
    /// `grace_secs`, then retires. Keys already past their `not_after` are removed.
    pub async fn rotate_secret(
        &self,
        id: &str,
        owner: Option<&str>,
        grace_secs: i64,
        now: i64,
    ) -> Result<(NewSecret, Vec<RetiringKey>), StoreError> {
        let secret = random_hex(32);
        let not_after = now.saturating_add(grace_secs);
        let q_lock_pg = "SELECT next_key_seq FROM apps WHERE id = $1 \
                         AND ($2 IS NULL OR owner_id = $2) FOR UPDATE";
        let q_lock =
            "SELECT next_key_seq FROM apps WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)";
        let (key_id, retiring) = with_tx!(self, |tx, pg| {
            let seq: Option<(i64,)> = sqlx::query_as(if pg { q_lock_pg } else { q_lock })
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            let (seq,) = found(seq, "app", id)?;
            let key_id = format!("k{seq}");
            sqlx::query("DELETE FROM app_keys WHERE app_id = $1 AND not_after <= $2")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let retiring: Vec<(String,)> = sqlx::query_as(
                "UPDATE app_keys SET not_after = $2 WHERE app_id = $1 AND \
                 (not_after IS NULL OR not_after > $2) RETURNING key_id",
            )
            .bind(id)
            .bind(not_after)
            .fetch_all(&mut *tx)
            .await?;
            insert_app_key!(tx, id, &key_id, &secret, now);
            sqlx::query("UPDATE apps SET next_key_seq = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(seq + 1)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            (key_id, retiring)
        });
        let mut retiring: Vec<RetiringKey> = retiring
            .into_iter()
            .map(|(key_id,)| RetiringKey { key_id, not_after })
            .collect();
        retiring.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok((
            NewSecret {
                app_id: id.into(),
                key_id,
                secret,
            },
            retiring,
        ))
    }

    /// Every key that authenticates at `now`, of every active app, in the relay's form.
    pub async fn app_keys(&self, now: i64) -> Result<Vec<cloudproxy_proto::AppKey>, StoreError> {
        let q = "SELECT k.app_id, k.key_id, k.secret, k.not_after FROM app_keys k \
                 JOIN apps a ON a.id = k.app_id \
                 WHERE a.status = 'active' AND (k.not_after IS NULL OR k.not_after > $1) \
                 ORDER BY k.app_id, k.key_id";
        let rows: Vec<(String, String, String, Option<i64>)> =
            with_pool!(self, |pool| sqlx::query_as(q)
                .bind(now)
                .fetch_all(pool)
                .await?);
        Ok(rows
            .into_iter()
            .map(
                |(app_id, key_id, secret, not_after)| cloudproxy_proto::AppKey {
                    app_id,
                    key_id,
                    secret: secret.into_bytes(),
                    not_after: not_after.map(|t| t.max(0) as u64),
                },
            )
            .collect())
    }

    /// The keys of one active app that authenticate at `now` (none for an unknown or
    /// suspended app), to check a user token without loading every app's keys.
    pub async fn app_keys_of(
        &self,
        app_id: &str,
        now: i64,
    ) -> Result<Vec<cloudproxy_proto::AppKey>, StoreError> {
        let q = "SELECT k.key_id, k.secret, k.not_after FROM app_keys k \
                 JOIN apps a ON a.id = k.app_id \
                 WHERE k.app_id = $1 AND a.status = 'active' \
                 AND (k.not_after IS NULL OR k.not_after > $2) ORDER BY k.key_id";
        let rows: Vec<(String, String, Option<i64>)> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(app_id)
            .bind(now)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(key_id, secret, not_after)| cloudproxy_proto::AppKey {
                app_id: app_id.to_owned(),
                key_id,
                secret: secret.into_bytes(),
                not_after: not_after.map(|t| t.max(0) as u64),
            })
            .collect())
    }

    /// What relays need of every app: keys valid at `now` and active enablements. Suspended
    /// apps are listed without keys, so a relay drops them.
    pub async fn sync_apps(&self, now: i64) -> Result<Vec<SyncApp>, StoreError> {
        let q_apps = "SELECT id, status FROM apps ORDER BY id";
        let apps: Vec<(String, String)> =
            with_pool!(self, |pool| sqlx::query_as(q_apps).fetch_all(pool).await?);
        let keys = self.app_keys(now).await?;
        let enablements = self.active_enablements().await?;
        apps.into_iter()
            .map(|(app_id, status)| {
                let keys = keys
                    .iter()
                    .filter(|k| k.app_id == app_id)
                    .map(|k| SyncKey {
                        key_id: k.key_id.clone(),
                        secret: String::from_utf8_lossy(&k.secret).into_owned(),
                        not_after: k.not_after.map(|t| t as i64),
                    })
                    .collect();
                let enablements = enablements
                    .iter()
                    .filter(|(a, _)| *a == app_id)
                    .map(|(_, e)| e.clone())
                    .collect();
                Ok(SyncApp {
                    status: parse_wire("app status", &status)?,
                    app_id,
                    keys,
                    enablements,
                })
            })
            .collect()
    }
}
