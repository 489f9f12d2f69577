//! The Accountant's books: usage records (written in batches, each batch also added to the
//! daily rollup `usage_daily` and to the overview's traffic rollup in the same transaction),
//! month-to-date counters for budgets (updated atomically per request, so every instance sees
//! the same spend), and the per-customer aggregates behind `omi report margins`, read from
//! the daily rollup.

use super::traffic::{Bucket, TRAFFIC_KEPT, traffic_deltas};
use super::{BeginWrite, Store, StoreResult, with_pool};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock, OnceLock};
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct UsageRecord {
    pub id: Uuid,
    pub request_id: Arc<str>,
    pub at: DateTime<Utc>,
    pub key_id: Uuid,
    pub customer_id: Uuid,
    pub plan: Arc<str>,
    /// The API the request spoke (`chat`, `embeddings`, ...); none on records booked before
    /// migration 0011.
    pub route: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    /// Prompt tokens written to the provider's cache (part of `prompt_tokens`).
    pub cache_write_tokens: i64,
    pub completion_tokens: i64,
    /// Nano-dollars of house cost; `None` = the model has no price; `Some(0)` for BYOK.
    pub cost_nano: Option<i64>,
    /// Nano-dollars the customer is charged: the cost with the plan's markup as it was when the
    /// request was booked; `None` with the cost; `Some(0)` for BYOK.
    pub spend_nano: Option<i64>,
    pub status: i32,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    pub streamed: bool,
    pub byok: bool,
    pub usage_estimated: bool,
    pub aborted: bool,
    /// Upstream calls made (retries and fallbacks included); 1 on records booked before
    /// migration 0012.
    pub attempts: i32,
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
    /// Selling-price spend (the cost with each request's markup).
    pub spend_nano: i64,
    pub unpriced_requests: i64,
}

impl UsageTotals {
    /// Adds another period's or customer's counts, saturating: absurd totals stay at the extreme
    /// rather than wrap to a negative (SQL `SUM` would fail on overflow, so sums are made here).
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.byok_requests = self.byok_requests.saturating_add(other.byok_requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cost_nano = self.cost_nano.saturating_add(other.cost_nano);
        self.spend_nano = self.spend_nano.saturating_add(other.spend_nano);
        self.unpriced_requests = self.unpriced_requests.saturating_add(other.unpriced_requests);
    }
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

static INSERT_USAGE: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO usage_records (id, request_id, at, key_id, customer_id, plan, route, model, provider,
    prompt_tokens, cached_tokens, cache_write_tokens, completion_tokens, cost_nano, spend_nano, status, latency_us,
    upstream_us, streamed, byok, usage_estimated, aborted, attempts) VALUES ",
        23,
        "",
    )
});

static ADD_TO_DAILY: LazyLock<MultiRow> = LazyLock::new(|| {
    let columns = [
        "requests",
        "errors",
        "byok_requests",
        "prompt_tokens",
        "completion_tokens",
        "cost_nano",
        "spend_nano",
        "unpriced_requests",
    ];
    let sets: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = {}", saturating_add(&format!("usage_daily.{c}"), &format!("excluded.{c}"))))
        .collect();
    MultiRow::new(
        "INSERT INTO usage_daily (day, customer_id, requests, errors, byok_requests, prompt_tokens, completion_tokens,
    cost_nano, spend_nano, unpriced_requests) VALUES ",
        10,
        format!(" ON CONFLICT (day, customer_id) DO UPDATE SET {}", sets.join(", ")),
    )
});

/// `stored + added` for non-negative BIGINTs, stopping at the largest BIGINT: PostgreSQL
/// would fail the whole batch on overflow and SQLite would turn the column into a float.
fn saturating_add(stored: &str, added: &str) -> String {
    format!("CASE WHEN {stored} > 9223372036854775807 - {added} THEN 9223372036854775807 ELSE {stored} + {added} END")
}

/// How batches are cut into multi-row statements, largest first; 1,000 rows of 23 parameters
/// stay under both backends' bind limits. On SQLite (in process, no round trips) parsing a
/// fresh INSERT of hundreds of rows cost more than running it, so batches are cut into a few
/// fixed sizes whose statements stay in the statement cache. Up to 32 rows, not 128: a
/// statement's parameters are bound on the runtime's worker in one go (callgrind: ~4.7k
/// instructions a row, so a 128-row statement held a worker for ~0.6M), and each SQLite
/// connection keeps every size it prepared; with 128 the peak RSS under long saturation was
/// 4-6 MiB higher (bench/README.md, "Where the memory goes"). On PostgreSQL every statement is
/// a round trip, which costs more than parsing: as few statements as possible.
const SQLITE_STATEMENT_ROWS: &[usize] = &[32, 8, 2, 1];
const POSTGRES_STATEMENT_ROWS: &[usize] = &[1000];

/// `items` in chunks of the first size in `sizes` that fits; a remainder smaller than every
/// size is one chunk.
fn statement_chunks<'a, T>(mut items: &'a [T], sizes: &'static [usize]) -> impl Iterator<Item = &'a [T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let size = sizes.iter().copied().find(|&rows| rows <= items.len()).unwrap_or(items.len());
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// A multi-row statement: `head`, then `rows` tuples of `columns` placeholders, then `tail`.
/// SQLite gets anonymous `?` placeholders: it treats `$N` as names, and binding named
/// parameters costs a list scan per parameter. The text for SQLite's fixed sizes is written
/// once and kept: those batches are frequent, and the text is also the key of the prepared-
/// statement cache. PostgreSQL (`$1`, `$2`…) gets a fresh text per statement.
pub(super) struct MultiRow {
    head: String,
    columns: usize,
    tail: String,
    sqlite: [OnceLock<String>; SQLITE_STATEMENT_ROWS.len()],
}

impl MultiRow {
    pub(super) fn new(head: impl Into<String>, columns: usize, tail: impl Into<String>) -> MultiRow {
        let sqlite = [const { OnceLock::new() }; SQLITE_STATEMENT_ROWS.len()];
        MultiRow { head: head.into(), columns, tail: tail.into(), sqlite }
    }

    pub(super) fn sql(&'static self, store: &Store, rows: usize) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        let text = match (store, SQLITE_STATEMENT_ROWS.iter().position(|&fixed| fixed == rows)) {
            (Store::Sqlite(_), Some(slot)) => {
                Cow::Borrowed(self.sqlite[slot].get_or_init(|| self.write(rows, false)).as_str())
            }
            (Store::Sqlite(_), None) => Cow::Owned(self.write(rows, false)),
            (Store::Postgres(_), _) => Cow::Owned(self.write(rows, true)),
        };
        sqlx::AssertSqlSafe(text)
    }

    fn write(&self, rows: usize, numbered: bool) -> String {
        use std::fmt::Write;
        let mut sql = String::with_capacity(self.head.len() + self.tail.len() + rows * self.columns * 7);
        sql.push_str(&self.head);
        let mut n = 0;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..self.columns {
                n += 1;
                sql.push_str(if column == 0 { "" } else { ", " });
                if numbered {
                    let _ = write!(sql, "${n}"); // writing into a String cannot fail
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        sql.push_str(&self.tail);
        sql
    }
}

/// A batch's contribution to one `usage_daily` row.
#[derive(Default)]
struct DailyDelta {
    requests: i64,
    errors: i64,
    byok_requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_nano: i64,
    spend_nano: i64,
    unpriced_requests: i64,
}

/// The batch summed per (UTC day, customer). Sorted keys make every writer lock rollup rows
/// in the same order, so two instances flushing at once cannot deadlock.
fn daily_deltas(records: &[UsageRecord]) -> BTreeMap<(NaiveDate, Uuid), DailyDelta> {
    // Keyed by the date, not its text: formatting it took more than the rest of a record's
    // share, on the runtime's worker, for every record of every batch.
    let mut deltas: BTreeMap<(NaiveDate, Uuid), DailyDelta> = BTreeMap::new();
    for r in records {
        let d = deltas.entry((r.at.date_naive(), r.customer_id)).or_default();
        d.requests = d.requests.saturating_add(1);
        d.errors = d.errors.saturating_add(i64::from(r.status >= 500));
        d.byok_requests = d.byok_requests.saturating_add(i64::from(r.byok));
        d.prompt_tokens = d.prompt_tokens.saturating_add(r.prompt_tokens);
        d.completion_tokens = d.completion_tokens.saturating_add(r.completion_tokens);
        d.cost_nano = d.cost_nano.saturating_add(r.cost_nano.unwrap_or(0));
        d.spend_nano = d.spend_nano.saturating_add(r.spend_nano.unwrap_or(0));
        d.unpriced_requests = d.unpriced_requests.saturating_add(i64::from(r.cost_nano.is_none()));
    }
    deltas
}

/// `usage_daily.day`: text, so one comparison works on both backends.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

impl Store {
    /// Writes a batch in one transaction (multi-row INSERTs): all or nothing, so a retry
    /// after a failure never duplicates records. The same transaction adds the batch to the
    /// daily rollup and to the traffic rollup, and drops traffic buckets past `TRAFFIC_KEPT`.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let kept_since = Utc::now() - TRAFFIC_KEPT;
        let sizes = match self {
            Store::Sqlite(_) => SQLITE_STATEMENT_ROWS,
            Store::Postgres(_) => POSTGRES_STATEMENT_ROWS,
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for chunk in statement_chunks(records, sizes) {
                let mut query = sqlx::query(INSERT_USAGE.sql(self, chunk.len()));
                // Text is bound as `Arc<str>` by value: SQLite's arguments then share it, where a
                // `&String` is copied into a new string, per column of every record.
                for r in chunk {
                    query = query
                        .bind(r.id)
                        .bind(Arc::clone(&r.request_id))
                        .bind(r.at)
                        .bind(r.key_id)
                        .bind(r.customer_id)
                        .bind(Arc::clone(&r.plan))
                        .bind(r.route.clone())
                        .bind(r.model.clone())
                        .bind(r.provider.clone())
                        .bind(r.prompt_tokens)
                        .bind(r.cached_tokens)
                        .bind(r.cache_write_tokens)
                        .bind(r.completion_tokens)
                        .bind(r.cost_nano)
                        .bind(r.spend_nano)
                        .bind(r.status)
                        .bind(r.latency_us)
                        .bind(r.upstream_us)
                        .bind(r.streamed)
                        .bind(r.byok)
                        .bind(r.usage_estimated)
                        .bind(r.aborted)
                        .bind(r.attempts);
                }
                query.execute(&mut *tx).await?;
            }
            let deltas: Vec<_> = daily_deltas(records).into_iter().collect();
            for chunk in statement_chunks(&deltas, sizes) {
                let mut query = sqlx::query(ADD_TO_DAILY.sql(self, chunk.len()));
                for ((day, customer_id), d) in chunk {
                    query = query
                        .bind(day_key(*day))
                        .bind(customer_id)
                        .bind(d.requests)
                        .bind(d.errors)
                        .bind(d.byok_requests)
                        .bind(d.prompt_tokens)
                        .bind(d.completion_tokens)
                        .bind(d.cost_nano)
                        .bind(d.spend_nano)
                        .bind(d.unpriced_requests);
                }
                query.execute(&mut *tx).await?;
            }
            for bucket in Bucket::ALL {
                let sql = bucket.sql();
                let deltas: Vec<_> = traffic_deltas(records, bucket, kept_since).into_iter().collect();
                for chunk in statement_chunks(&deltas, sizes) {
                    let mut query = sqlx::query(sql.upsert.sql(self, chunk.len()));
                    for ((key, series, bin), d) in chunk {
                        query = query.bind(key).bind(*series).bind(*bin).bind(d.requests).bind(d.errors);
                    }
                    query.execute(&mut *tx).await?;
                }
                sqlx::query(sqlx::AssertSqlSafe(sql.prune.as_str()))
                    .bind(bucket.key(kept_since))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds to a customer's month-to-date spend atomically (saturating); returns the new
    /// (cost, tokens).
    pub async fn add_to_month(
        &self,
        customer_id: Uuid,
        month: &str,
        cost_nano: i64,
        tokens: i64,
    ) -> StoreResult<(i64, i64)> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO usage_counters (customer_id, month, cost_nano, tokens) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (customer_id, month) DO UPDATE SET cost_nano = {}, tokens = {}
                 RETURNING cost_nano, tokens",
                saturating_add("usage_counters.cost_nano", "excluded.cost_nano"),
                saturating_add("usage_counters.tokens", "excluded.tokens")
            )
        });
        let sql = sqlx::AssertSqlSafe(SQL.as_str());
        Ok(
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(month).bind(cost_nano.max(0)).bind(tokens.max(0)).fetch_one(pool).await)?,
        )
    }

    pub async fn month_to_date(&self, customer_id: Uuid, month: &str) -> StoreResult<(i64, i64)> {
        let sql = "SELECT cost_nano, tokens FROM usage_counters WHERE customer_id = $1 AND month = $2";
        let row: Option<(i64, i64)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(month).fetch_optional(pool).await)?;
        Ok(row.unwrap_or((0, 0)))
    }

    /// Usage per customer over whole UTC days `[start, end)`, from the daily rollup: a month
    /// is ~31 rows a customer however many requests it holds. Summed here, saturating: SQL's
    /// SUM fails on overflow (SQLite: "integer overflow"; PostgreSQL: the cast back to BIGINT).
    pub async fn usage_totals(&self, days: Range<NaiveDate>) -> StoreResult<Vec<UsageTotals>> {
        let sql = "SELECT customer_id, requests, byok_requests, prompt_tokens, completion_tokens, cost_nano,
                       spend_nano, unpriced_requests
                   FROM usage_daily WHERE day >= $1 AND day < $2";
        let (from, to) = (day_key(days.start), day_key(days.end));
        let rows: Vec<UsageTotals> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(&from).bind(&to).fetch_all(pool).await)?;
        let mut totals: BTreeMap<Uuid, UsageTotals> = BTreeMap::new();
        for row in rows {
            let total = totals
                .entry(row.customer_id)
                .or_insert_with(|| UsageTotals { customer_id: row.customer_id, ..UsageTotals::default() });
            total.add(&row);
        }
        Ok(totals.into_values().collect())
    }

    /// Real money only: test-mode purchases (booked when `LEMONSQUEEZY_TEST_MODE=accept`) are not revenue.
    pub async fn revenue_totals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RevenueTotals>> {
        let sql = "SELECT customer_id,
                       CAST(COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_cents ELSE 0 END), 0) AS BIGINT) AS payments_cents,
                       SUM(CASE WHEN kind = 'payment' THEN 1 ELSE 0 END) AS payment_count,
                       CAST(COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END), 0) AS BIGINT) AS refunds_cents
                   FROM revenue_ledger WHERE occurred_at >= $1 AND occurred_at < $2 AND test_mode = FALSE
                   GROUP BY customer_id";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?)
    }

    /// Customers with their most recent key's plan. One join rather than a subquery per
    /// customer: with 10,000 customers PostgreSQL costed the subquery plan past `jit_above_cost`
    /// and spent 0.35 s compiling it, most of the margins report's time (bench/README.md).
    pub async fn customers(&self) -> StoreResult<Vec<CustomerInfo>> {
        let sql = "SELECT id, email, plan FROM (
                       SELECT c.id, c.email, k.plan,
                           ROW_NUMBER() OVER (PARTITION BY c.id ORDER BY k.created_at DESC) AS newest
                       FROM customers c LEFT JOIN api_keys k ON k.customer_id = c.id
                   ) AS latest WHERE newest = 1";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multi_row_statements_number_placeholders_on_postgres_and_keep_sqlite_fixed_sizes() {
        static SHAPE: LazyLock<MultiRow> =
            LazyLock::new(|| MultiRow::new("INSERT INTO t (a, b) VALUES ", 2, " ON CONFLICT DO NOTHING"));
        assert_eq!(
            SHAPE.write(3, true),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING"
        );
        assert_eq!(SHAPE.write(2, false), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING");
        let sqlite = Store::Sqlite(sqlx::SqlitePool::connect_lazy("sqlite::memory:").expect("lazy pool"));
        let (first, again) = (SHAPE.sql(&sqlite, 2).0, SHAPE.sql(&sqlite, 2).0);
        assert!(matches!((&first, &again), (Cow::Borrowed(a), Cow::Borrowed(b)) if std::ptr::eq(*a, *b)), "kept");
        assert!(matches!(SHAPE.sql(&sqlite, 3).0, Cow::Owned(_)), "only the fixed sizes are kept");
    }

    #[test]
    fn batches_are_cut_into_the_backend_sizes_covering_every_row_in_order() {
        for sizes in [SQLITE_STATEMENT_ROWS, POSTGRES_STATEMENT_ROWS] {
            for n in [0, 1, 2, 3, 511, 512, 513, 1000, 1001, 5000] {
                let items: Vec<usize> = (0..n).collect();
                let chunks: Vec<&[usize]> = statement_chunks(&items, sizes).collect();
                assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= sizes[0]), "n={n}");
                assert_eq!(chunks.concat(), items, "n={n}");
            }
        }
        let sqlite: Vec<usize> = statement_chunks(&[(); 1000], SQLITE_STATEMENT_ROWS).map(<[()]>::len).collect();
        assert_eq!(sqlite, [vec![32; 31], vec![8; 1]].concat(), "only cached sizes on SQLite");
        let postgres: Vec<usize> = statement_chunks(&[(); 2500], POSTGRES_STATEMENT_ROWS).map(<[()]>::len).collect();
        assert_eq!(postgres, vec![1000, 1000, 500], "few round trips on PostgreSQL");
    }
}
