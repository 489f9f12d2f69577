//! What the admin dashboard reads and its login sessions. Every page is a handful of
//! aggregates computed in SQL: the daily usage rollup, paged key and webhook listings (the
//! overview's traffic rollup is `traffic.rs`). Nothing here scans more than the window it shows.

use super::keys::LISTING_COLUMNS;
use super::usage::day_key;
use super::{KeyListing, Store, StoreError, StoreResult, with_pool};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use std::ops::Range;
use uuid::Uuid;

/// Which keys a listing shows. An empty `text` matches every key.
#[derive(Debug, Default)]
pub struct KeySearch<'a> {
    /// Part of the email, customer or key name, or key prefix; or a whole key id.
    pub text: &'a str,
    pub customer: Option<Uuid>,
    pub status: Option<&'a str>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerDetail {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub ls_customer_id: Option<i64>,
    /// Lemon Squeezy checkout custom data: customer-controlled.
    pub custom_data: Option<Json<serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    /// The customer's last sign-in to the portal, if ever.
    pub portal_signed_in_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DailyUsage {
    pub day: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nano: i64,
    /// What the customer was charged: the cost with the plan's markup at the time.
    pub spend_nano: i64,
    pub unpriced_requests: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookEventRow {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub event_name: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub test_mode: bool,
    pub outcome: String,
    pub detail: Option<String>,
}

/// `%` and `_` in an operator's search text are literal, not wildcards.
fn like_pattern(text: &str) -> String {
    let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    /// Keys matching `search`, newest first; `limit` from `offset`.
    pub async fn search_keys(&self, search: &KeySearch<'_>, limit: i64, offset: i64) -> StoreResult<Vec<KeyListing>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {LISTING_COLUMNS} FROM api_keys k JOIN customers c ON c.id = k.customer_id
             WHERE ($1 = '' OR LOWER(c.email) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(c.name, '')) LIKE $2 ESCAPE '\\'
                    OR LOWER(COALESCE(k.name, '')) LIKE $2 ESCAPE '\\' OR LOWER(k.prefix) LIKE $2 ESCAPE '\\'
                    OR k.id = $3)
               AND ($4 IS NULL OR k.customer_id = $4) AND ($5 IS NULL OR k.status = $5)
             ORDER BY k.created_at DESC, k.id DESC LIMIT $6 OFFSET $7"
        ));
        let text = search.text.trim();
        let (pattern, id) = (like_pattern(text), Uuid::parse_str(text).ok());
        Ok(with_pool!(self, pool => sqlx::query_as(sql)
            .bind(text)
            .bind(&pattern)
            .bind(id)
            .bind(search.customer)
            .bind(search.status)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await)?)
    }

    pub async fn customer_detail(&self, id: Uuid) -> StoreResult<CustomerDetail> {
        let sql = "SELECT id, email, name, ls_customer_id, custom_data, created_at, portal_signed_in_at FROM customers WHERE id = $1";
        with_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?
            .ok_or_else(|| StoreError::NotFound(format!("no customer with id {id}")))
    }

    /// One customer's usage per UTC day over `days`, from the rollup.
    pub async fn daily_usage(&self, customer: Uuid, days: Range<NaiveDate>) -> StoreResult<Vec<DailyUsage>> {
        let sql = "SELECT day, requests, errors, prompt_tokens, completion_tokens, cost_nano, spend_nano,
                          unpriced_requests
                   FROM usage_daily WHERE customer_id = $1 AND day >= $2 AND day < $3 ORDER BY day";
        let (from, to) = (day_key(days.start), day_key(days.end));
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(customer).bind(&from).bind(&to).fetch_all(pool).await)?)
    }

    /// Webhook deliveries, newest first (the raw body stays out: it is for audit and replay).
    pub async fn webhook_events(&self, limit: i64, offset: i64) -> StoreResult<Vec<WebhookEventRow>> {
        let sql = "SELECT id, received_at, event_name, resource_type, resource_id, test_mode, outcome, detail
                   FROM webhook_events ORDER BY received_at DESC, id DESC LIMIT $1 OFFSET $2";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(limit).bind(offset).fetch_all(pool).await)?)
    }

    /// Starts a session known by `token_hash`; sessions past their expiry are swept here,
    /// the only place that adds any.
    pub async fn create_admin_session(&self, token_hash: &[u8], expires_at: DateTime<Utc>) -> StoreResult<()> {
        let now = Utc::now();
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1").bind(now).execute(pool).await?;
            sqlx::query("INSERT INTO admin_sessions (token_hash, created_at, expires_at) VALUES ($1, $2, $3)")
                .bind(token_hash)
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn admin_session_active(&self, token_hash: &[u8]) -> StoreResult<bool> {
        let sql = "SELECT COUNT(*) FROM admin_sessions WHERE token_hash = $1 AND expires_at > $2";
        let (n,): (i64,) =
            with_pool!(self, pool => sqlx::query_as(sql).bind(token_hash).bind(Utc::now()).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    pub async fn end_admin_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        let sql = "DELETE FROM admin_sessions WHERE token_hash = $1";
        with_pool!(self, pool => sqlx::query(sql).bind(token_hash).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_literal() {
        assert_eq!(like_pattern("A_b%"), "%a\\_b\\%%");
    }
}
