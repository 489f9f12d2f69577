//! Prepaid credit: the ledger (`credit_ledger`, each movement once per source), the balance kept
//! equal to its sum (`credit_balances`, written in the same transaction as each ledger row), and
//! the holds of requests in flight (`credit_holds`). A request is admitted only while the
//! balance less the live holds is above zero, checked and held in one transaction under the
//! balance row's lock, so instances sharing the database cannot both spend the last dollar
//! unseen: the overdraw is bounded (`billing/README.md`).

use super::{BeginWrite, Store, StoreError, StoreResult, with_pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How low a balance is, against the low-balance threshold; ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CreditLevel {
    /// At or below the threshold (a share of the last pack), above zero.
    Low,
    /// At or below zero: requests are refused.
    Exhausted,
}

impl CreditLevel {
    /// The level of `balance` against `low` (the threshold); `None` above it.
    pub fn of(balance: i64, low: i64) -> Option<CreditLevel> {
        if balance <= 0 {
            Some(CreditLevel::Exhausted)
        } else if balance <= low {
            Some(CreditLevel::Low)
        } else {
            None
        }
    }

    /// Its name in `credit_balances.notified` and `email_outbox.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            CreditLevel::Low => "credit_low",
            CreditLevel::Exhausted => "credit_exhausted",
        }
    }

    pub fn parse(name: &str) -> Option<CreditLevel> {
        [CreditLevel::Low, CreditLevel::Exhausted].into_iter().find(|level| level.as_str() == name)
    }
}

/// A low-balance or exhausted notice, queued as an email in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditNotice {
    pub customer_id: Uuid,
    pub email: String,
    pub level: CreditLevel,
    pub balance_nano: i64,
}

/// One customer's prepaid credit over a period, in nano-dollars.
#[derive(Debug, Default, Clone, Copy, sqlx::FromRow)]
pub struct CreditTotals {
    pub customer_id: Uuid,
    /// Credit added in the period: packs and grants, less what refunds took back.
    pub added_nano: i64,
    /// Credit drawn by requests in the period.
    pub used_nano: i64,
    /// The balance at the end of the period: credit sold or granted and not used yet.
    pub unused_nano: i64,
}

/// What a prepaid request's admission found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditHold {
    /// Nothing left: the balance less the live holds is at or below zero.
    Refused,
    /// Admitted; the hold to settle when it finishes (none when it holds nothing: BYOK).
    Admitted(Option<Uuid>),
}

/// A prepaid customer told their credit is low or used up (and not topped up since).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LowCredit {
    pub customer_id: Uuid,
    pub email: String,
    pub balance_nano: i64,
    /// The notice they were sent: `credit_low` or `credit_exhausted`.
    pub notified: String,
}

impl Store {
    /// Customers whose last credit notice still stands (a new pack clears it), the lowest
    /// balance first: the dashboard marks them.
    pub async fn low_credit_customers(&self, limit: i64) -> StoreResult<Vec<LowCredit>> {
        let sql = "SELECT b.customer_id, c.email, b.balance_nano, b.notified
                   FROM credit_balances b JOIN customers c ON c.id = b.customer_id
                   WHERE b.notified IS NOT NULL ORDER BY b.balance_nano, c.email LIMIT $1";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(limit).fetch_all(pool).await)?)
    }

    /// The customer's balance in nano-dollars (the ledger's sum); 0 without any credit.
    pub async fn credit_balance(&self, customer_id: Uuid) -> StoreResult<i64> {
        let sql = "SELECT balance_nano FROM credit_balances WHERE customer_id = $1";
        let row: Option<(i64,)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(customer_id).fetch_optional(pool).await)?;
        Ok(row.map_or(0, |(balance,)| balance))
    }

    /// Credit added, used, and left unused per customer over `[from, to)` (customers with a
    /// ledger only). Summed in SQL over the customer's ledger up to `to`.
    pub async fn credit_totals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<CreditTotals>> {
        let sql = "SELECT customer_id,
                       CAST(COALESCE(SUM(CASE WHEN kind <> 'draw' AND created_at >= $1 THEN amount_nano ELSE 0 END), 0) AS BIGINT) AS added_nano,
                       CAST(COALESCE(SUM(CASE WHEN kind = 'draw' AND created_at >= $1 THEN -amount_nano ELSE 0 END), 0) AS BIGINT) AS used_nano,
                       CAST(COALESCE(SUM(amount_nano), 0) AS BIGINT) AS unused_nano
                   FROM credit_ledger WHERE created_at < $2 GROUP BY customer_id";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?)
    }

    /// An operator's grant (negative: a correction taking credit back), with its note; returns
    /// the customer's id and new balance.
    pub async fn grant_credit(&self, email: &str, amount_nano: i64, note: Option<&str>) -> StoreResult<(Uuid, i64)> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let customer: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM customers WHERE email = $1")
                .bind(email)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((customer_id,)) = customer else {
                return Err(StoreError::NotFound(format!("no customer with email {email}; create a key for them first")));
            };
            let source = format!("grant:{}", Uuid::now_v7());
            add_credit!(tx, customer_id, "grant", amount_nano, source, note, now);
            let balance = locked_balance!(tx, customer_id);
            tx.commit().await?;
            Ok((customer_id, balance))
        })
    }

    /// Admits a prepaid request when the balance less the live holds is above zero, and holds
    /// `amount_nano` (its estimated price) until [`Store::settle_credit_hold`] or `expires_at`.
    /// One transaction under the balance row's lock: across instances, each admission sees
    /// every hold made before it.
    pub async fn hold_credit(
        &self,
        customer_id: Uuid,
        amount_nano: i64,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<CreditHold> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let balance = locked_balance!(tx, customer_id);
            sqlx::query("DELETE FROM credit_holds WHERE customer_id = $1 AND expires_at <= $2")
                .bind(customer_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let holds: Vec<(i64,)> = sqlx::query_as("SELECT amount_nano FROM credit_holds WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_all(&mut *tx)
                .await?;
            let held = holds.iter().fold(0_i64, |sum, (amount,)| sum.saturating_add(*amount));
            if balance.saturating_sub(held) <= 0 {
                return Ok(CreditHold::Refused);
            }
            if amount_nano <= 0 {
                return Ok(CreditHold::Admitted(None));
            }
            let id = Uuid::now_v7();
            sqlx::query("INSERT INTO credit_holds (id, customer_id, amount_nano, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(customer_id)
                .bind(amount_nano)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(CreditHold::Admitted(Some(id)))
        })
    }

    /// A finished request: its hold is released and its selling price drawn, once (a second
    /// settlement of the same hold draws nothing). Returns the notice the draw queued, if it
    /// crossed the low-balance threshold or zero.
    pub async fn settle_credit_hold(
        &self,
        hold_id: Uuid,
        customer_id: Uuid,
        spend_nano: i64,
        request_id: &str,
    ) -> StoreResult<Option<CreditNotice>> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM credit_holds WHERE id = $1").bind(hold_id).execute(&mut *tx).await?;
            let mut notice = None;
            if spend_nano > 0 {
                let note = format!("request {request_id}");
                notice = add_credit!(tx, customer_id, "draw", -spend_nano, format!("draw:{hold_id}"), Some(note), now);
            }
            tx.commit().await?;
            Ok(notice)
        })
    }
}
