//! Customers and their keys. Every status change writes a `key_changes` row in the same
//! transaction: that log is how other instances (and other processes on the same SQLite
//! file) learn to drop a key from their verification cache.

use super::{BeginWrite, Store, StoreError, StoreResult, with_pool};
use crate::customers::EmailAddress;
use crate::domain::key::{KeyHash, KeyStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub struct NewKey<'a> {
    pub email: &'a EmailAddress,
    pub name: Option<&'a str>,
    pub plan: &'a str,
    pub hash: KeyHash,
    pub prefix: String,
    /// The plan's `max_keys`: the customer's keys on it that are not revoked stay at most this.
    pub max_keys: Option<u32>,
}

/// What the gateway needs to decide on a request: no secret, no hash.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRecord {
    pub key_id: Uuid,
    pub customer_id: Uuid,
    pub email: String,
    pub plan: String,
    pub status: String,
}

/// A key as operators see it (CLI, admin API): never the secret.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct KeyListing {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub prefix: String,
    pub email: String,
    pub name: Option<String>,
    pub plan: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Since when the Sentinel has held the key suspended; only an operator lifts a hold.
    pub held_since: Option<DateTime<Utc>>,
}

pub(super) const LISTING_COLUMNS: &str =
    "k.id, k.customer_id, k.prefix, c.email, k.name, k.plan, k.status, k.created_at, k.last_used_at, k.held_since";

impl Store {
    pub async fn insert_key(&self, key: &NewKey<'_>) -> StoreResult<KeyListing> {
        let now = Utc::now();
        let key_id = Uuid::now_v7();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let no_custom_data: Option<sqlx::types::Json<serde_json::Value>> = None;
            // The upsert holds the customer's row (PostgreSQL) or the write lock (SQLite) until
            // the commit: two creations for one customer are counted one after the other.
            let customer_id = upsert_customer!(tx, key.email.as_str(), key.name, None::<i64>, no_custom_data, now);
            if let Some(max) = key.max_keys {
                let (held,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1 AND plan = $2 AND status <> 'revoked'",
                )
                .bind(customer_id)
                .bind(key.plan)
                .fetch_one(&mut *tx)
                .await?;
                if held >= i64::from(max) {
                    let (email, plan) = (key.email.as_str().to_owned(), key.plan.to_owned());
                    return Err(StoreError::MaxKeys { email, plan, max });
                }
            }
            insert_key_row!(tx, key_id, customer_id, key.hash, &key.prefix, key.name, key.plan, "active", now);
            tx.commit().await?;
        });
        self.key_by_id(key_id).await
    }

    pub async fn find_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let sql = "SELECT k.id AS key_id, k.customer_id, c.email, k.plan, k.status
                   FROM api_keys k JOIN customers c ON c.id = k.customer_id WHERE k.key_hash = $1";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(&hash.0[..]).fetch_optional(pool).await)?)
    }

    pub async fn list_keys(&self) -> StoreResult<Vec<KeyListing>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {LISTING_COLUMNS} FROM api_keys k JOIN customers c ON c.id = k.customer_id ORDER BY k.created_at, k.id"
        ));
        Ok(with_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    pub async fn key_by_id(&self, id: Uuid) -> StoreResult<KeyListing> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {LISTING_COLUMNS} FROM api_keys k JOIN customers c ON c.id = k.customer_id WHERE k.id = $1"
        ));
        with_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?
            .ok_or_else(|| StoreError::NotFound(format!("no key with id {id}")))
    }

    /// Resolves an operator's selector: a key id, or a display prefix (`omi_XXXXXXXX`).
    pub async fn resolve_key(&self, id_or_prefix: &str) -> StoreResult<KeyListing> {
        if let Ok(id) = Uuid::parse_str(id_or_prefix) {
            return self.key_by_id(id).await;
        }
        let sql = "SELECT id FROM api_keys WHERE prefix = $1";
        let ids: Vec<(Uuid,)> = with_pool!(self, pool => sqlx::query_as(sql).bind(id_or_prefix).fetch_all(pool).await)?;
        match ids.as_slice() {
            [(id,)] => self.key_by_id(*id).await,
            [] => Err(StoreError::NotFound(format!("no key with id or prefix `{id_or_prefix}`"))),
            _ => {
                Err(StoreError::Conflict(format!("prefix `{id_or_prefix}` matches {} keys; use the key id", ids.len())))
            }
        }
    }

    /// Moves a key to `status`: an operator's decision, so restoring a key also lifts a
    /// Sentinel hold. Revocation is final: a revoked key is never reactivated.
    pub async fn set_key_status(&self, id: Uuid, status: KeyStatus) -> StoreResult<KeyListing> {
        self.change_key_status(id, status, None).await
    }

    /// The Sentinel's suspension: the key stays suspended, whatever billing reports, until an
    /// operator restores it (`set_key_status`).
    pub async fn hold_key(&self, id: Uuid) -> StoreResult<KeyListing> {
        self.change_key_status(id, KeyStatus::Suspended, Some(Utc::now())).await
    }

    async fn change_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        hold: Option<DateTime<Utc>>,
    ) -> StoreResult<KeyListing> {
        let now = Utc::now();
        let revoked_at = (status == KeyStatus::Revoked).then_some(now);
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<(Vec<u8>,)> = sqlx::query_as(
                "UPDATE api_keys SET status = $2, revoked_at = COALESCE(revoked_at, $3),
                     held_since = CASE WHEN $4 IS NOT NULL THEN $4 WHEN $2 = 'active' THEN NULL ELSE held_since END
                 WHERE id = $1 AND (status <> 'revoked' OR $2 = 'revoked') RETURNING key_hash",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(revoked_at)
            .bind(hold)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((hash,)) = row else {
                return match self.key_by_id(id).await {
                    Ok(_) => Err(StoreError::Conflict(format!("key {id} is revoked; revocation is final"))),
                    Err(e) => Err(e),
                };
            };
            let hash = KeyHash::from_slice(&hash)
                .ok_or_else(|| StoreError::Conflict(format!("key {id} has a corrupt hash")))?;
            log_change!(tx, hash, now)?;
            tx.commit().await?;
        });
        self.key_by_id(id).await
    }

    /// Key changes logged after `after_seq`, oldest first.
    pub async fn key_changes_since(&self, after_seq: i64) -> StoreResult<Vec<(i64, KeyHash)>> {
        let sql = "SELECT seq, key_hash FROM key_changes WHERE seq > $1 ORDER BY seq LIMIT 10000";
        let rows: Vec<(i64, Vec<u8>)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(after_seq).fetch_all(pool).await)?;
        Ok(rows.into_iter().filter_map(|(seq, h)| KeyHash::from_slice(&h).map(|h| (seq, h))).collect())
    }

    pub async fn latest_key_change(&self) -> StoreResult<i64> {
        let sql = "SELECT COALESCE(MAX(seq), 0) FROM key_changes";
        let (seq,): (i64,) = with_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await)?;
        Ok(seq)
    }

    /// Records when keys were last used, batched by the caller to stay off the request path.
    pub async fn touch_keys(&self, seen: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (id, at) in seen {
                sqlx::query(sql).bind(id).bind(at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
