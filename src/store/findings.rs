//! The Sentinel's findings: written off the request path by its worker, listed by the admin
//! API newest first (ids are UUIDv7, so id order is time order and pages by `before` id).
//! A strike is a high-severity finding; strikes of the current UTC day drive auto-suspension.

use super::{Store, StoreResult, with_pool};
use crate::events::{FindingKind, Severity};
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;

pub struct NewFinding<'a> {
    pub at: DateTime<Utc>,
    pub request_id: &'a str,
    pub customer_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub kind: FindingKind,
    pub severity: Severity,
    pub score: f32,
    /// `injection`, `cleared` (the judge overruled the rules), `blocked` or `removed`.
    pub verdict: &'a str,
    pub rules: &'a [String],
    /// `injection`, `clean` or `unknown`; none when the judge was not asked.
    pub judge_verdict: Option<&'a str>,
    pub judge_reason: Option<&'a str>,
    pub judge_cost_nano_usd: Option<u64>,
    /// Short and already redacted.
    pub excerpt: &'a str,
    /// The whole prompt, only with `sentinel_store_prompts`.
    pub prompt: Option<&'a str>,
}

/// A finding as the admin API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FindingRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub customer_id: Option<Uuid>,
    pub email: Option<String>,
    pub key_id: Option<Uuid>,
    pub kind: String,
    pub severity: String,
    pub score: f64,
    pub verdict: String,
    #[serde(serialize_with = "rule_list")]
    pub rules: String,
    pub judge_verdict: Option<String>,
    pub judge_reason: Option<String>,
    pub judge_cost_nano_usd: Option<i64>,
    pub excerpt: String,
    pub prompt: Option<String>,
}

/// Rule names are stored comma-separated (one TEXT column on both backends) and shown as a list.
fn rule_list<S: Serializer>(rules: &str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(rules.split(',').filter(|r| !r.is_empty()))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FindingQuery {
    pub limit: i64,
    /// Only findings older than this one (the previous page's last id).
    pub before: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// Only the Sentinel's, or only the shield's; both when `None`.
    pub source: Option<FindingSource>,
}

/// Who made a finding: the Sentinel judging a prompt (kind `injection`), or the output
/// shield removing a leak from an answer (`system_prompt_leak`, `secret_leak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingSource {
    Sentinel,
    Shield,
}

/// High-severity findings of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Strikes {
    pub today: i64,
    pub total: i64,
}

pub fn kind_name(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Injection => "injection",
        FindingKind::SystemPromptLeak => "system_prompt_leak",
        FindingKind::SecretLeak => "secret_leak",
    }
}

pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

impl Store {
    pub async fn insert_finding(&self, f: &NewFinding<'_>) -> StoreResult<Uuid> {
        let id = Uuid::now_v7();
        let sql =
            "INSERT INTO findings (id, at, request_id, customer_id, key_id, kind, severity, score, verdict, rules,
                       judge_verdict, judge_reason, judge_cost_nano_usd, excerpt, prompt)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
        // Nano-dollars of one judge call are far below i64::MAX; saturate rather than wrap.
        let cost = f.judge_cost_nano_usd.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        with_pool!(self, pool => sqlx::query(sql)
            .bind(id)
            .bind(f.at)
            .bind(f.request_id)
            .bind(f.customer_id)
            .bind(f.key_id)
            .bind(kind_name(f.kind))
            .bind(severity_name(f.severity))
            .bind(f64::from(f.score))
            .bind(f.verdict)
            .bind(f.rules.join(","))
            .bind(f.judge_verdict)
            .bind(f.judge_reason)
            .bind(cost)
            .bind(f.excerpt)
            .bind(f.prompt)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(id)
    }

    /// Newest first, at most `limit`, walking the primary key backwards (ids are UUIDv7).
    pub async fn list_findings(&self, q: &FindingQuery) -> StoreResult<Vec<FindingRecord>> {
        let sql = "SELECT f.id, f.at, f.request_id, f.customer_id, c.email, f.key_id, f.kind, f.severity, f.score,
                          f.verdict, f.rules, f.judge_verdict, f.judge_reason, f.judge_cost_nano_usd, f.excerpt, f.prompt
                   FROM findings f LEFT JOIN customers c ON c.id = f.customer_id
                   WHERE ($1 IS NULL OR f.id < $1) AND ($2 IS NULL OR f.customer_id = $2)
                     AND ($4 IS NULL OR (f.kind = 'injection') = $4)
                   ORDER BY f.id DESC LIMIT $3";
        let injections = q.source.map(|s| s == FindingSource::Sentinel);
        Ok(with_pool!(self, pool => sqlx::query_as(sql)
            .bind(q.before)
            .bind(q.customer_id)
            .bind(q.limit)
            .bind(injections)
            .fetch_all(pool)
            .await)?)
    }

    /// High-severity findings of a customer: in the UTC day of `now`, and ever.
    pub async fn strikes(&self, customer_id: Uuid, now: DateTime<Utc>) -> StoreResult<Strikes> {
        let day_start = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
        let sql = "SELECT COALESCE(SUM(CASE WHEN at >= $2 THEN 1 ELSE 0 END), 0), COUNT(*)
                   FROM findings WHERE customer_id = $1 AND severity = 'high'";
        let (today, total): (i64, i64) =
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).bind(day_start).fetch_one(pool).await)?;
        Ok(Strikes { today, total })
    }

    pub async fn customer_id_by_email(&self, email: &str) -> StoreResult<Option<Uuid>> {
        let sql = "SELECT id FROM customers WHERE email = $1";
        let row: Option<(Uuid,)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(email).fetch_optional(pool).await)?;
        Ok(row.map(|(id,)| id))
    }

    pub async fn active_key_ids(&self, customer_id: Uuid) -> StoreResult<Vec<Uuid>> {
        let sql = "SELECT id FROM api_keys WHERE customer_id = $1 AND status = 'active' ORDER BY id";
        let rows: Vec<(Uuid,)> = with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
