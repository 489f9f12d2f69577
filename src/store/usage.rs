//! The Accountant's books: usage records (written in batches), month-to-date counters for
//! budgets (updated atomically per request, so every instance sees the same spend), and the
//! per-customer aggregates behind `omi report margins`.

use super::{BeginWrite, Store, StoreResult, with_pool};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct UsageRecord {
    pub id: Uuid,
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub key_id: Uuid,
    pub customer_id: Uuid,
    pub plan: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    /// Nano-dollars of house cost; `None` = the model has no price; `Some(0)` for BYOK.
    pub cost_nano: Option<i64>,
    pub status: i32,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    pub streamed: bool,
    pub byok: bool,
    pub usage_estimated: bool,
    pub aborted: bool,
}

/// Usage of one customer over a period (SQL aggregates; PostgreSQL sums BIGINTs into
/// NUMERIC, hence the casts back in the queries).
#[derive(Debug, Default, Clone, sqlx::FromRow)]
pub struct UsageTotals {
    pub customer_id: Uuid,
    pub requests: i64,
    pub byok_requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nano: i64,
    pub unpriced_requests: i64,
}

/// Ledger movements of one customer over a period, in cents.
#[derive(Debug, Default, Clone, sqlx::FromRow)]
pub struct RevenueTotals {
    pub customer_id: Uuid,
    pub payments_cents: i64,
    pub payment_count: i64,
    pub refunds_cents: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerInfo {
    pub id: Uuid,
    pub email: String,
    pub plan: Option<String>,
}

const INSERT_USAGE: &str = "INSERT INTO usage_records (id, request_id, at, key_id, customer_id, plan, model, provider,
    prompt_tokens, cached_tokens, completion_tokens, cost_nano, status, latency_us, upstream_us, streamed, byok,
    usage_estimated, aborted) ";

/// Rows per INSERT: 19 parameters each stays under both backends' bind limits.
const ROWS_PER_STATEMENT: usize = 1000;

impl Store {
    /// Writes a batch in one transaction (multi-row INSERTs): all or nothing, so a retry
    /// after a failure never duplicates records.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for chunk in records.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::new(INSERT_USAGE);
                query.push_values(chunk, |mut row, r| {
                    row.push_bind(r.id)
                        .push_bind(&r.request_id)
                        .push_bind(r.at)
                        .push_bind(r.key_id)
                        .push_bind(r.customer_id)
                        .push_bind(&r.plan)
                        .push_bind(&r.model)
                        .push_bind(&r.provider)
                        .push_bind(r.prompt_tokens)
                        .push_bind(r.cached_tokens)
                        .push_bind(r.completion_tokens)
                        .push_bind(r.cost_nano)
                        .push_bind(r.status)
                        .push_bind(r.latency_us)
                        .push_bind(r.upstream_us)
                        .push_bind(r.streamed)
                        .push_bind(r.byok)
                        .push_bind(r.usage_estimated)
                        .push_bind(r.aborted);
                });
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds to a customer's month-to-date spend atomically; returns the new (cost, tokens).
    pub async fn add_to_month(
        &self,
        customer_id: Uuid,
        month: &str,
        cost_nano: i64,
        tokens: i64,
    ) -> StoreResult<(i64, i64)> {
        let sql = "INSERT INTO usage_counters (customer_id, month, cost_nano, tokens) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (customer_id, month) DO UPDATE SET cost_nano = usage_counters.cost_nano + excluded.cost_nano,
                       tokens = usage_counters.tokens + excluded.tokens
                   RETURNING cost_nano, tokens";
        Ok(
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(month).bind(cost_nano).bind(tokens).fetch_one(pool).await)?,
        )
    }

    pub async fn month_to_date(&self, customer_id: Uuid, month: &str) -> StoreResult<(i64, i64)> {
        let sql = "SELECT cost_nano, tokens FROM usage_counters WHERE customer_id = $1 AND month = $2";
        let row: Option<(i64, i64)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(month).fetch_optional(pool).await)?;
        Ok(row.unwrap_or((0, 0)))
    }

    pub async fn usage_totals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<UsageTotals>> {
        let sql = "SELECT customer_id, COUNT(*) AS requests,
                       SUM(CASE WHEN byok THEN 1 ELSE 0 END) AS byok_requests,
                       CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens,
                       CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens,
                       CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) AS cost_nano,
                       SUM(CASE WHEN cost_nano IS NULL THEN 1 ELSE 0 END) AS unpriced_requests
                   FROM usage_records WHERE at >= $1 AND at < $2 GROUP BY customer_id";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?)
    }

    pub async fn revenue_totals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RevenueTotals>> {
        let sql = "SELECT customer_id,
                       CAST(COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_cents ELSE 0 END), 0) AS BIGINT) AS payments_cents,
                       SUM(CASE WHEN kind = 'payment' THEN 1 ELSE 0 END) AS payment_count,
                       CAST(COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END), 0) AS BIGINT) AS refunds_cents
                   FROM revenue_ledger WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY customer_id";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?)
    }

    /// Customers with their most recent key's plan.
    pub async fn customers(&self) -> StoreResult<Vec<CustomerInfo>> {
        let sql = "SELECT c.id, c.email,
                       (SELECT k.plan FROM api_keys k WHERE k.customer_id = c.id ORDER BY k.created_at DESC LIMIT 1) AS plan
                   FROM customers c";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    /// Raw records, newest first, `limit` at a time before `before`.
    pub async fn usage_page(
        &self,
        customer: Option<Uuid>,
        before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<UsageRecord>> {
        let sql =
            "SELECT * FROM usage_records WHERE ($1 IS NULL OR customer_id = $1) AND at < $2 ORDER BY at DESC LIMIT $3";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(customer).bind(before).bind(limit).fetch_all(pool).await)?)
    }

    /// True for exactly one caller per day, across instances: the one that posts the summary.
    pub async fn claim_daily_summary(&self, day: &str) -> StoreResult<bool> {
        let sql = "INSERT INTO daily_summaries (day, created_at) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING";
        let inserted = with_pool!(self, pool => sqlx::query(sql).bind(day).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(inserted == 1)
    }
}
