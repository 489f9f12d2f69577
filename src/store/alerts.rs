//! The Hawk's alerts: one row per firing episode, written when it fires, while it holds
//! (latest counts) and when it resolves; listed for the admin API, firing first.

use super::{Store, StoreResult, with_pool};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use uuid::Uuid;

/// An alert as operators see it (`GET /admin/api/alerts`), and as the Hawk writes it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AlertRecord {
    pub id: Uuid,
    #[sqlx(rename = "alert_key")]
    pub key: String,
    pub rule: String,
    pub subject: String,
    pub severity: String,
    pub state: String,
    pub detail: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "occurrences")]
    pub count: i64,
    #[sqlx(json)]
    pub sample_request_ids: Vec<String>,
    pub notifications_sent: i32,
}

impl Store {
    pub async fn upsert_alert(&self, alert: &AlertRecord) -> StoreResult<()> {
        let sql = "INSERT INTO alerts (id, alert_key, rule, subject, severity, state, detail, first_seen, last_seen,
                       resolved_at, occurrences, sample_request_ids, notifications_sent, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                   ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state,
                       detail = excluded.detail, last_seen = excluded.last_seen, resolved_at = excluded.resolved_at,
                       occurrences = excluded.occurrences, sample_request_ids = excluded.sample_request_ids,
                       notifications_sent = excluded.notifications_sent, updated_at = excluded.updated_at";
        with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(alert.id)
                .bind(&alert.key)
                .bind(&alert.rule)
                .bind(&alert.subject)
                .bind(&alert.severity)
                .bind(&alert.state)
                .bind(&alert.detail)
                .bind(alert.first_seen)
                .bind(alert.last_seen)
                .bind(alert.resolved_at)
                .bind(alert.count)
                .bind(Json(&alert.sample_request_ids))
                .bind(alert.notifications_sent)
                .bind(Utc::now())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Firing alerts first, then by last seen, newest first; `limit + 1` rows are read to
    /// tell whether there is a next page.
    pub async fn list_alerts(
        &self,
        state: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRecord>, bool)> {
        let sql = "SELECT id, alert_key, rule, subject, severity, state, detail, first_seen, last_seen, resolved_at,
                          occurrences, sample_request_ids, notifications_sent
                   FROM alerts WHERE ($3 IS NULL OR state = $3)
                   ORDER BY CASE WHEN state = 'firing' THEN 0 ELSE 1 END, last_seen DESC, id DESC
                   LIMIT $1 OFFSET $2";
        let mut rows: Vec<AlertRecord> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(limit + 1).bind(offset).bind(state).fetch_all(pool).await
        })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// Resolves alerts still firing but not seen since `before`: the instance that watched
    /// them stopped (a crash or a redeploy) and will never resolve them itself.
    pub async fn resolve_abandoned_alerts(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = "UPDATE alerts SET state = 'resolved', resolved_at = $2, updated_at = $2
                   WHERE state = 'firing' AND last_seen < $1";
        let resolved = with_pool!(self, pool => {
            sqlx::query(sql).bind(before).bind(now).execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(resolved)
    }
}
