//! App owners and their bearer API keys. Only the SHA-256 of a key is stored; the key itself
//! is returned once, when it is made.

use super::{found, hash_key, random_hex, with_pool, with_tx, Owner, Store};
use crate::error::StoreError;

impl Store {
    /// Creates an owner and its first API key (returned once).
    pub async fn create_owner(&self, name: &str, now: i64) -> Result<(Owner, String), StoreError> {
        let owner = Owner {
            id: format!("o{}", random_hex(8)),
            name: name.into(),
            created_at: now,
        };
        let key = format!("cpk_{}", random_hex(32));
        with_tx!(self, |tx, pg| {
            sqlx::query("INSERT INTO owners (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&owner.id)
                .bind(&owner.name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO api_keys (key_hash, owner_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(hash_key(&key))
            .bind(&owner.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok((owner, key))
    }

    /// Adds an API key to an owner (old keys stay valid).
    pub async fn add_owner_key(&self, owner_id: &str, now: i64) -> Result<String, StoreError> {
        let key = format!("cpk_{}", random_hex(32));
        with_tx!(self, |tx, pg| {
            let owner: Option<(String,)> = sqlx::query_as("SELECT id FROM owners WHERE id = $1")
                .bind(owner_id)
                .fetch_optional(&mut *tx)
                .await?;
            found(owner, "owner", owner_id)?;
            sqlx::query(
                "INSERT INTO api_keys (key_hash, owner_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(hash_key(&key))
            .bind(owner_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(key)
    }

    /// Every app owner, oldest first.
    pub async fn list_owners(&self) -> Result<Vec<Owner>, StoreError> {
        let q = "SELECT id, name, created_at FROM owners ORDER BY created_at, id";
        Ok(with_pool!(self, |pool| sqlx::query_as(q)
            .fetch_all(pool)
            .await?))
    }

    /// One app owner; `NotFound` for an unknown id.
    pub async fn get_owner(&self, id: &str) -> Result<Owner, StoreError> {
        let q = "SELECT id, name, created_at FROM owners WHERE id = $1";
        let owner: Option<Owner> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        found(owner, "owner", id)
    }

    /// The owner an API key belongs to, if it is one.
    pub async fn owner_for_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let q = "SELECT owner_id FROM api_keys WHERE key_hash = $1";
        let hash = hash_key(key);
        let row: Option<(String,)> = with_pool!(self, |pool| sqlx::query_as(q)
            .bind(&hash)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(id,)| id))
    }
}
