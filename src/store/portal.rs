//! The customer portal's state: one-time sign-in links, customer sessions and the sign-in
//! attempt counters. Tokens and cookies are known here only by their SHA-256, so a leaked
//! database signs nobody in. Everything lives in the database, so every instance serves
//! every customer's session.

use super::{BeginWrite, Store, StoreResult, with_pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The `email_outbox.kind` of a sign-in link (a key email's is `api_key`, the default).
pub const PORTAL_LINK_EMAIL: &str = "portal_link";

/// A sign-in link to queue: its token's hash for the table, the token itself for the email
/// (erased from the outbox once sent).
pub struct PortalLink<'a> {
    pub customer_id: Uuid,
    pub to_email: &'a str,
    pub token_hash: &'a [u8],
    pub token: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// One model's share of a customer's usage over a period.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelUsage {
    /// Empty when the request never reached a model (refused before routing).
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Priced requests only; `unpriced_requests` says how many had no price.
    pub cost_nano: i64,
    pub unpriced_requests: i64,
}

/// A purchase as its customer sees it on the portal.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerPurchase {
    pub order_id: i64,
    pub plan: String,
    pub subscription_status: Option<String>,
    pub ends_at: Option<DateTime<Utc>>,
    pub refunded: bool,
    pub ended: bool,
    pub test_mode: bool,
    pub created_at: DateTime<Utc>,
    /// Lemon Squeezy's customer portal and payment-method links, from the newest subscription event.
    pub customer_portal_url: Option<String>,
    pub update_payment_url: Option<String>,
}

/// A payment or refund on the customer's record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerLedgerEntry {
    /// `payment` or `refund`.
    pub kind: String,
    pub amount_cents: i64,
    pub currency: String,
    pub test_mode: bool,
    pub occurred_at: DateTime<Utc>,
}

/// What redeeming a sign-in link did.
#[derive(Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// A session for this customer now exists.
    SignedIn(Uuid),
    /// No such token: never issued, or used already.
    Unknown,
    /// The token was issued but its time is up; it is gone now too.
    Expired,
}

impl Store {
    /// Counts one sign-in request in `bucket`'s window starting at `window_start` and returns
    /// the window's count so far. Windows that started before `forget_before` are swept.
    pub async fn count_sign_in_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM portal_sign_in_attempts WHERE window_start < $1")
                .bind(forget_before)
                .execute(pool)
                .await?;
            sqlx::query_scalar(
                "INSERT INTO portal_sign_in_attempts (bucket, window_start, attempts) VALUES ($1, $2, 1)
                 ON CONFLICT (bucket, window_start) DO UPDATE SET attempts = portal_sign_in_attempts.attempts + 1
                 RETURNING attempts",
            )
            .bind(bucket)
            .bind(window_start)
            .fetch_one(pool)
            .await
        })?)
    }

    /// Stores the link's token hash and queues its email, in one transaction; expired links
    /// are swept here, the only place that adds any.
    pub async fn queue_portal_link(&self, link: &PortalLink<'_>) -> StoreResult<()> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM portal_login_tokens WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO portal_login_tokens (token_hash, customer_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(link.token_hash)
            .bind(link.customer_id)
            .bind(now)
            .bind(link.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO email_outbox (id, customer_id, kind, to_email, plan, key_plaintext, status, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, '', $5, 'pending', $6, $6)",
            )
            .bind(Uuid::now_v7())
            .bind(link.customer_id)
            .bind(PORTAL_LINK_EMAIL)
            .bind(link.to_email)
            .bind(link.token)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Uses up the link known by `token_hash` (whatever the outcome, it never works again)
    /// and, if it was still valid, starts the session known by `session_hash` and records the
    /// customer's sign-in time. One transaction: two clicks cannot both sign in.
    pub async fn redeem_portal_link(
        &self,
        token_hash: &[u8],
        session_hash: &[u8],
        session_expires_at: DateTime<Utc>,
    ) -> StoreResult<Redeemed> {
        let now = Utc::now();
        Ok(with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let used: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
                "DELETE FROM portal_login_tokens WHERE token_hash = $1 RETURNING customer_id, expires_at",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match used {
                None => Redeemed::Unknown,
                Some((_, expires_at)) if expires_at <= now => Redeemed::Expired,
                Some((customer_id, _)) => {
                    sqlx::query("DELETE FROM portal_sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO portal_sessions (token_hash, customer_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(session_hash)
                    .bind(customer_id)
                    .bind(now)
                    .bind(session_expires_at)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE customers SET portal_signed_in_at = $2 WHERE id = $1")
                        .bind(customer_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    Redeemed::SignedIn(customer_id)
                }
            };
            tx.commit().await?;
            outcome
        }))
    }

    /// One customer's usage per model in `[from, to)`, most expensive first; reads the
    /// customer's records of that window through `usage_records_customer_at_idx`.
    pub async fn usage_by_model(
        &self,
        customer_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ModelUsage>> {
        let sql = "SELECT COALESCE(model, '') AS model, COUNT(*) AS requests,
                          CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens,
                          CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens,
                          CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) AS cost_nano,
                          CAST(SUM(CASE WHEN cost_nano IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS unpriced_requests
                   FROM usage_records WHERE customer_id = $1 AND at >= $2 AND at < $3
                   GROUP BY COALESCE(model, '') ORDER BY cost_nano DESC, requests DESC, model";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(from).bind(to).fetch_all(pool).await)?)
    }

    /// The customer's purchases, newest first (at most `limit`).
    pub async fn customer_purchases(&self, customer_id: Uuid, limit: i64) -> StoreResult<Vec<CustomerPurchase>> {
        let sql = "SELECT order_id, plan, subscription_status, ends_at, refunded, ended, test_mode, created_at,
                          customer_portal_url, update_payment_url
                   FROM purchases WHERE customer_id = $1 ORDER BY created_at DESC, order_id DESC LIMIT $2";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(limit).fetch_all(pool).await)?)
    }

    /// The customer's payments and refunds, newest first (at most `limit`).
    pub async fn customer_ledger(&self, customer_id: Uuid, limit: i64) -> StoreResult<Vec<CustomerLedgerEntry>> {
        let sql = "SELECT kind, amount_cents, currency, test_mode, occurred_at FROM revenue_ledger
                   WHERE customer_id = $1 ORDER BY occurred_at DESC, id DESC LIMIT $2";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(limit).fetch_all(pool).await)?)
    }

    /// The customer whose live session is known by `token_hash`.
    pub async fn portal_session(&self, token_hash: &[u8]) -> StoreResult<Option<Uuid>> {
        let sql = "SELECT customer_id FROM portal_sessions WHERE token_hash = $1 AND expires_at > $2";
        Ok(
            with_pool!(self, pool => sqlx::query_scalar(sql).bind(token_hash).bind(Utc::now()).fetch_optional(pool).await)?,
        )
    }

    pub async fn end_portal_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        let sql = "DELETE FROM portal_sessions WHERE token_hash = $1";
        with_pool!(self, pool => sqlx::query(sql).bind(token_hash).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
