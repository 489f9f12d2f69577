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

/// What an instance's Hawk is about to say of an alert, as the shared incident sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentNotice {
    Fired,
    Escalated,
    Reminder,
    Resolved,
}

/// The instants a claim is judged by.
#[derive(Clone, Copy, Debug)]
pub struct IncidentClock {
    pub now: DateTime<Utc>,
    /// A reminder is due when the incident's last notification is older than this.
    pub remind_before: DateTime<Utc>,
    /// A firing incident untouched since this was abandoned (every instance that watched it
    /// stopped): a new firing takes it over.
    pub abandoned_before: DateTime<Utc>,
}

/// The incident an alert key is part of, shared by every instance (`alert_incidents`): each
/// notification is claimed here, and only the claim that changes the incident sends it.
impl Store {
    /// True when this instance is the one to send `notice`: the firing of an incident not
    /// already firing, its first escalation, a reminder once the last notification is old
    /// enough, and the resolution by the last instance that still saw it firing. An instance
    /// whose firing finds the incident already firing joins it instead (and sends nothing).
    /// A resolution for an incident not firing here (its firing was never recorded) is sent.
    pub async fn claim_alert_notice(
        &self,
        key: &str,
        notice: IncidentNotice,
        severity: &str,
        clock: &IncidentClock,
    ) -> StoreResult<bool> {
        let now = clock.now;
        // Each statement changes the incident's one row, or finds it already changed.
        let changed = |sql: &'static str| async move {
            with_pool!(self, pool => {
                sqlx::query(sql).bind(key).bind(now).execute(pool).await.map(|done| done.rows_affected() == 1)
            })
        };
        Ok(match notice {
            IncidentNotice::Fired => {
                let claim = "INSERT INTO alert_incidents (alert_key, state, severity, watchers, fired_at, notified_at, updated_at)
                             VALUES ($1, 'firing', $4, 1, $2, $2, $2)
                             ON CONFLICT (alert_key) DO UPDATE SET state = 'firing', severity = excluded.severity,
                                 watchers = 1, fired_at = excluded.fired_at, notified_at = excluded.notified_at,
                                 updated_at = excluded.updated_at
                             WHERE alert_incidents.state = 'resolved' OR alert_incidents.updated_at < $3";
                let claimed = with_pool!(self, pool => {
                    sqlx::query(claim)
                        .bind(key)
                        .bind(now)
                        .bind(clock.abandoned_before)
                        .bind(severity)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected() == 1)
                })?;
                if !claimed {
                    changed(
                        "UPDATE alert_incidents SET watchers = watchers + 1, updated_at = $2
                         WHERE alert_key = $1 AND state = 'firing'",
                    )
                    .await?;
                }
                claimed
            }
            IncidentNotice::Escalated => {
                changed(
                    "UPDATE alert_incidents SET severity = 'critical', notified_at = $2, updated_at = $2
                     WHERE alert_key = $1 AND state = 'firing' AND severity <> 'critical'",
                )
                .await?
            }
            IncidentNotice::Reminder => {
                let remind = "UPDATE alert_incidents SET notified_at = $2, updated_at = $2
                              WHERE alert_key = $1 AND state = 'firing' AND notified_at < $3";
                with_pool!(self, pool => {
                    sqlx::query(remind)
                        .bind(key)
                        .bind(now)
                        .bind(clock.remind_before)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected() == 1)
                })?
            }
            IncidentNotice::Resolved => {
                let left = changed(
                    "UPDATE alert_incidents SET watchers = watchers - 1, updated_at = $2
                     WHERE alert_key = $1 AND state = 'firing'",
                )
                .await?;
                !left
                    || changed(
                        "UPDATE alert_incidents SET state = 'resolved', notified_at = $2, updated_at = $2
                         WHERE alert_key = $1 AND state = 'firing' AND watchers <= 0",
                    )
                    .await?
            }
        })
    }

    /// Occurrences the other instances recorded of the incident (their `alerts` rows of it:
    /// still firing, or resolved since it fired; `own` is the asking instance's row); 0 when
    /// there is no incident.
    pub async fn incident_occurrences_elsewhere(&self, key: &str, own: Uuid) -> StoreResult<i64> {
        let sql = "SELECT CAST(COALESCE(SUM(a.occurrences), 0) AS BIGINT) FROM alerts a
                   JOIN alert_incidents i ON i.alert_key = a.alert_key
                   WHERE a.alert_key = $1 AND a.id <> $2 AND (a.resolved_at IS NULL OR a.resolved_at >= i.fired_at)";
        Ok(with_pool!(self, pool => sqlx::query_scalar(sql).bind(key).bind(own).fetch_one(pool).await)?)
    }
}
