//! The key vending machine's state. A webhook delivery is applied in ONE transaction:
//! recorded in `webhook_events` (its dedupe key is UNIQUE, so a retried or resent delivery
//! is a no-op), the purchase upserted (order id is the PRIMARY KEY, so `order_created` and
//! `subscription_created` of one purchase meet on the same row in either order), the key
//! vended only by the update that claims `purchases.key_id` while it is NULL, and the key
//! email queued in `email_outbox` with it. Constraints, not memory, make it exactly-once
//! across any number of instances. A refund or invoice whose purchase is not known yet waits
//! in `waiting_webhook_events` and is applied in the transaction that records the purchase, so
//! the outcome does not depend on the order deliveries arrive in.

use super::{BeginWrite, Store, StoreError, StoreResult, with_pool};
use crate::domain::key::{ApiKey, KeyHash, KeyStatus};
use crate::domain::lemonsqueezy::{
    self, Change, Delivery, LedgerEntry, LedgerKind, LedgerSource, PaymentSignal, WAITING_FOR_PURCHASE, key_expiry_for,
    key_status_for,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

/// What a purchase's variant buys: a plan, and for a credit pack the credit it adds.
#[derive(Debug, Clone, Copy)]
pub struct PurchaseOf<'a> {
    pub plan: &'a str,
    /// Nano-dollars of prepaid credit (a `[[credit_packs]]` variant); none for a plan.
    pub credit_nano: Option<i64>,
    /// The low-balance notice threshold a pack sets (`credit_low_balance_percent` of it).
    pub low_balance_nano: i64,
}

/// A key made by a purchase (never the secret: that sits in the outbox until sent).
#[derive(Debug, Clone)]
pub struct VendedKey {
    pub key_id: Uuid,
    pub customer_id: Uuid,
    pub email: String,
    pub plan: String,
    pub prefix: String,
    /// The purchase it belongs to (none for an operator's rotation of a hand-made key).
    pub order_id: Option<i64>,
}

#[derive(Debug)]
pub enum Applied {
    /// This delivery was seen before; nothing changed.
    Duplicate,
    Recorded {
        outcome: &'static str,
        vended: Option<VendedKey>,
        key_status_changed: bool,
    },
}

/// An email due for delivery, claimed under a lease: a key email (`kind` `key`, the key in
/// `key_plaintext`), a portal sign-in link (`portal_link`, the link's token there) or a credit
/// notice.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxEmail {
    pub id: Uuid,
    pub to_email: String,
    pub plan: String,
    pub key_plaintext: Option<String>,
    /// Set on a rotation's email: the display prefix of the key the new one replaces.
    pub replaces_prefix: Option<String>,
    pub attempts: i32,
    /// `key`, `portal_link`, or a credit notice (`credit_low`, `credit_exhausted`).
    pub kind: String,
    /// The balance a credit notice tells.
    pub credit_nano: Option<i64>,
}

/// What becomes of the key a rotation replaces.
#[derive(Debug, Clone, Copy)]
pub enum OldKey {
    /// Revoked at once (the operator's resend: the old key leaked or was lost).
    Revoke,
    /// Refused from this instant (the customer's grace period); an earlier expiry is kept.
    ExpiresAt(DateTime<Utc>),
}

/// A customer rotation's idempotency record: the new key sealed under the old key's plaintext
/// (`keys::rotation`), found again by the old key and the client's `Idempotency-Key`.
pub struct RotationRecord<'a> {
    pub idempotency_key: &'a str,
    pub sealed_key: &'a [u8],
}

/// A rotation found by its idempotency record.
#[derive(Debug, sqlx::FromRow)]
pub struct SealedRotation {
    pub new_key_id: Uuid,
    pub sealed_key: Vec<u8>,
    pub new_key_hash: Vec<u8>,
    pub old_key_expires_at: Option<DateTime<Utc>>,
}

/// A key replaced by a new one.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub vended: VendedKey,
    /// When the replaced key stops working (`None`: revoked).
    pub old_key_expires_at: Option<DateTime<Utc>>,
}

fn ledger_names(entry: &LedgerEntry) -> (&'static str, &'static str) {
    let kind = match entry.kind {
        LedgerKind::Payment => "payment",
        LedgerKind::Refund => "refund",
    };
    let source = match entry.source {
        LedgerSource::Order => "order",
        LedgerSource::Invoice => "invoice",
    };
    (kind, source)
}

/// Books a payment or refund once (by its Lemon Squeezy id); a refund that grows (partial
/// refunds add up) keeps the larger cumulative amount.
macro_rules! book_ledger {
    ($tx:expr, $entry:expr, $customer_id:expr, $test_mode:expr) => {{
        let (kind, source) = ledger_names($entry);
        sqlx::query(
            "INSERT INTO revenue_ledger (id, kind, source, source_id, customer_id, amount_cents, currency, test_mode, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (kind, source, source_id) DO UPDATE SET amount_cents =
                 CASE WHEN excluded.amount_cents > revenue_ledger.amount_cents
                      THEN excluded.amount_cents ELSE revenue_ledger.amount_cents END",
        )
        .bind(Uuid::now_v7())
        .bind(kind)
        .bind(source)
        .bind($entry.source_id)
        .bind($customer_id)
        .bind($entry.amount_cents)
        .bind(&$entry.currency)
        .bind($test_mode)
        .bind($entry.occurred_at)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Queues a key email with its plaintext, in the same transaction that made the key;
/// `$replaces` is the display prefix of the key it replaces (a rotation), or `None`.
macro_rules! queue_key_email {
    ($tx:expr, $customer_id:expr, $key_id:expr, $email:expr, $plan:expr, $key:expr, $replaces:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO email_outbox (id, customer_id, key_id, to_email, plan, key_plaintext, replaces_prefix, status,
                 next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8)",
        )
        .bind(Uuid::now_v7())
        .bind($customer_id)
        .bind($key_id)
        .bind($email)
        .bind($plan)
        .bind($key.expose())
        .bind($replaces)
        .bind($now)
        .execute(&mut *$tx)
        .await?
    };
}

#[derive(sqlx::FromRow)]
struct PurchaseState {
    key_id: Option<Uuid>,
    subscription_status: Option<String>,
    ends_at: Option<DateTime<Utc>>,
    grace_until: Option<DateTime<Utc>>,
    refunded: bool,
    ended: bool,
}

/// The status everything known about the purchase gives its key now, with the key if one
/// was vended; `None` when there is no such purchase.
macro_rules! desired_key_status {
    ($tx:expr, $order_id:expr, $now:expr) => {{
        let state: Option<PurchaseState> = sqlx::query_as(
            "SELECT key_id, subscription_status, ends_at, grace_until, refunded, ended FROM purchases WHERE order_id = $1",
        )
        .bind($order_id)
        .fetch_optional(&mut *$tx)
        .await?;
        state.map(|s| {
            let status = key_status_for(s.subscription_status.as_deref(), s.ends_at, s.grace_until, s.refunded || s.ended, $now);
            (s.key_id, status)
        })
    }};
}

/// Brings the purchase's key to the status its subscription implies (revocation is final, and
/// a key the Sentinel holds is not reactivated). A key vended by a credit pack is the
/// customer's account, not the pack's: no pack's refund moves it. Evaluates to whether the key
/// changed.
macro_rules! sync_key_status {
    ($tx:expr, $order_id:expr, $now:expr) => {{
        let mut changed = false;
        if let Some((Some(key_id), desired)) = desired_key_status!($tx, $order_id, $now) {
            let row: Option<(Vec<u8>,)> = sqlx::query_as(
                "UPDATE api_keys SET status = $2, revoked_at = CASE WHEN $2 = 'revoked' THEN $3 ELSE revoked_at END
                 WHERE id = $1 AND status <> $2 AND status <> 'revoked' AND NOT ($2 = 'active' AND held_since IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM purchases WHERE key_id = $1 AND credit_nano IS NOT NULL)
                 RETURNING key_hash",
            )
            .bind(key_id)
            .bind(desired.as_str())
            .bind($now)
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some(hash) = row.and_then(|(h,)| KeyHash::from_slice(&h)) {
                log_change!($tx, hash, $now)?;
                changed = true;
            }
        }
        changed
    }};
}

/// Brings the expiry of the purchase's key to what its subscription implies (a trial ends at
/// `trial_ends_at`; a paid subscription does not expire), from the stored, newest state only,
/// so the outcome does not depend on delivery order. Evaluates to whether the key changed.
macro_rules! sync_key_expiry {
    ($tx:expr, $order_id:expr, $now:expr) => {{
        let state: Option<(Option<Uuid>, Option<String>, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT key_id, subscription_status, trial_ends_at FROM purchases WHERE order_id = $1")
                .bind($order_id)
                .fetch_optional(&mut *$tx)
                .await?;
        let mut changed = false;
        if let Some((Some(key_id), status, trial_ends_at)) = state
            && let Some(expires_at) = key_expiry_for(status.as_deref(), trial_ends_at)
        {
            let row: Option<(Vec<u8>,)> = sqlx::query_as(
                "UPDATE api_keys SET expires_at = $2
                 WHERE id = $1 AND status <> 'revoked' AND expires_at IS DISTINCT FROM $2 RETURNING key_hash",
            )
            .bind(key_id)
            .bind(expires_at)
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some(hash) = row.and_then(|(h,)| KeyHash::from_slice(&h)) {
                log_change!($tx, hash, $now)?;
                changed = true;
            }
        }
        changed
    }};
}

/// Takes back what is left of a refunded credit pack: its credit, or the balance if less (never
/// below zero); the rest had been used, and the ledger's note says how much. Once per order,
/// whatever the number of refund deliveries (a partial refund takes back the pack like a full one).
macro_rules! take_back_pack {
    ($tx:expr, $order_id:expr, $customer_id:expr, $credit:expr, $now:expr) => {{
        let balance = locked_balance!($tx, $customer_id);
        let left = balance.clamp(0, $credit.max(0));
        let note = format!(
            "refund of credit pack order {}: {} nano-dollars left taken back, {} used",
            $order_id,
            left,
            $credit.saturating_sub(left)
        );
        add_credit!($tx, $customer_id, "refund", -left, format!("refund:{}", $order_id), Some(note), $now);
    }};
}

/// `order_refunded` on its purchase: marks a full refund (final), takes back what is left of a
/// credit pack, and books it. Evaluates to the order id, or `None` while the purchase is not
/// known yet.
macro_rules! apply_refund {
    ($tx:expr, $order_id:expr, $ledger:expr, $full:expr, $test_mode:expr) => {{
        let found: Option<(Uuid, Option<i64>)> =
            sqlx::query_as("SELECT customer_id, credit_nano FROM purchases WHERE order_id = $1")
                .bind($order_id)
                .fetch_optional(&mut *$tx)
                .await?;
        match found {
            None => None,
            Some((customer_id, pack_credit)) => {
                if $full {
                    sqlx::query("UPDATE purchases SET refunded = TRUE WHERE order_id = $1")
                        .bind($order_id)
                        .execute(&mut *$tx)
                        .await?;
                }
                if let Some(credit) = pack_credit {
                    take_back_pack!($tx, $order_id, customer_id, credit, Utc::now());
                }
                book_ledger!($tx, $ledger, customer_id, $test_mode);
                Some($order_id)
            }
        }
    }};
}

/// A `subscription_payment_*` invoice on its purchase: the payment signal (newer news only;
/// a failure's grace runs from when it was received) and the ledger entry. Evaluates to the
/// order id, or `None` while no purchase has this subscription yet.
macro_rules! apply_invoice {
    ($tx:expr, $subscription_id:expr, $signal:expr, $updated_at:expr, $ledger:expr, $test_mode:expr, $received_at:expr, $grace:expr) => {{
        let found: Option<(i64, Uuid)> =
            sqlx::query_as("SELECT order_id, customer_id FROM purchases WHERE subscription_id = $1")
                .bind($subscription_id)
                .fetch_optional(&mut *$tx)
                .await?;
        match found {
            None => None,
            Some((order_id, customer_id)) => {
                if let Some(signal) = $signal {
                    let grace_until = match signal {
                        // A grace too long to add up has no end.
                        PaymentSignal::Failed => $received_at.checked_add_signed($grace),
                        PaymentSignal::Succeeded => None,
                    };
                    sqlx::query(
                        "UPDATE purchases SET grace_until = $2, payment_updated_at = $3
                         WHERE order_id = $1 AND (payment_updated_at IS NULL OR payment_updated_at < $3)",
                    )
                    .bind(order_id)
                    .bind(grace_until)
                    .bind($updated_at)
                    .execute(&mut *$tx)
                    .await?;
                }
                if let Some(entry) = $ledger {
                    book_ledger!($tx, entry, customer_id, $test_mode);
                }
                Some(order_id)
            }
        }
    }};
}

const WAITING_FOR_ORDER: &str = "SELECT w.event_id, e.body, e.received_at FROM waiting_webhook_events w
     JOIN webhook_events e ON e.id = w.event_id WHERE w.order_id = $1 ORDER BY e.received_at, e.id";
const WAITING_FOR_SUBSCRIPTION: &str = "SELECT w.event_id, e.body, e.received_at FROM waiting_webhook_events w
     JOIN webhook_events e ON e.id = w.event_id WHERE w.subscription_id = $1 ORDER BY e.received_at, e.id";

/// Applies the deliveries that arrived before this purchase (`$select` finds them by order
/// or subscription id), as they would have been applied on arrival, and takes them off the
/// waiting list in the same transaction: each is applied exactly once.
macro_rules! apply_waiting {
    ($tx:expr, $select:expr, $id:expr, $grace:expr, $now:expr) => {{
        let waiting: Vec<(Uuid, String, DateTime<Utc>)> =
            sqlx::query_as($select).bind($id).fetch_all(&mut *$tx).await?;
        for (event_id, body, received_at) in waiting {
            let (outcome, detail) = match lemonsqueezy::parse(body.as_bytes()) {
                Ok(Delivery { change: Change::Refund { order_id, ledger, full }, test_mode, .. }) => {
                    (apply_refund!($tx, order_id, &ledger, full, test_mode).map(|_| "refunded"), None)
                }
                Ok(Delivery {
                    change: Change::Invoice { subscription_id, signal, updated_at, ledger },
                    test_mode,
                    ..
                }) => {
                    let applied = apply_invoice!(
                        $tx,
                        subscription_id,
                        signal,
                        updated_at,
                        ledger.as_ref(),
                        test_mode,
                        received_at,
                        $grace
                    );
                    (applied.map(|_| "updated"), None)
                }
                Ok(other) => (Some("ignored"), Some(format!("{} does not wait for a purchase", other.event_name))),
                Err(e) => (Some("malformed"), Some(e.to_string())),
            };
            if let Some(outcome) = outcome {
                sqlx::query("DELETE FROM waiting_webhook_events WHERE event_id = $1")
                    .bind(event_id)
                    .execute(&mut *$tx)
                    .await?;
                let detail =
                    detail.unwrap_or_else(|| format!("applied when its purchase arrived, {}", $now.to_rfc3339()));
                sqlx::query("UPDATE webhook_events SET outcome = $2, detail = $3 WHERE id = $1")
                    .bind(event_id)
                    .bind(outcome)
                    .bind(detail)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    }};
}

/// Lock classes of `pg_advisory_xact_lock(class, id)`: the deliveries of one order, and of one
/// subscription, take turns, so a refund that finds no purchase and the order that creates it
/// cannot pass each other unseen (SQLite's `BEGIN IMMEDIATE` already serializes every writer).
const ORDER_LOCK: i32 = 0x4f4d_4901;
const SUBSCRIPTION_LOCK: i32 = 0x4f4d_4902;

/// The locks a change takes, order before subscription (one order, so no deadlock).
fn locks_for(change: &Change) -> [Option<(i32, i64)>; 2] {
    match change {
        Change::Purchase { order_id, subscription, .. } => {
            [Some((ORDER_LOCK, *order_id)), subscription.as_ref().map(|s| (SUBSCRIPTION_LOCK, s.subscription_id))]
        }
        Change::Refund { order_id, .. } => [Some((ORDER_LOCK, *order_id)), None],
        Change::Invoice { subscription_id, .. } => [Some((SUBSCRIPTION_LOCK, *subscription_id)), None],
        Change::Ignored(_) => [None, None],
    }
}

/// A Lemon Squeezy id as an advisory lock id; two ids that fold together only take turns.
fn lock_id(id: i64) -> i32 {
    i32::try_from(id.rem_euclid(i64::from(i32::MAX))).unwrap_or_default()
}

impl Store {
    /// Applies one verified, parsed delivery. `purchase` is what its variant buys (None:
    /// recorded, not vended); `new_key` is used only if this delivery vends, and expires after
    /// `trial` (the plan's `trial_days`) unless its subscription says otherwise. A lifecycle event
    /// whose purchase is not known yet waits (`waiting_webhook_events`) and is applied in the
    /// transaction that records the purchase, so the result does not depend on arrival order.
    pub async fn apply_webhook(
        &self,
        delivery: &Delivery,
        raw_body: &str,
        purchase: Option<PurchaseOf<'_>>,
        payment_grace: chrono::Duration,
        new_key: &ApiKey,
        trial: Option<chrono::Duration>,
    ) -> StoreResult<Applied> {
        let plan = purchase.map(|p| p.plan);
        let pack_credit = purchase.and_then(|p| p.credit_nano);
        let low_balance_nano = purchase.map_or(0, |p| p.low_balance_nano);
        let now = Utc::now();
        let event_id = Uuid::now_v7();
        let is_postgres = matches!(self, Store::Postgres(_));
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if is_postgres {
                for (class, id) in locks_for(&delivery.change).into_iter().flatten() {
                    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                        .bind(class)
                        .bind(lock_id(id))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let inserted = sqlx::query(
                "INSERT INTO webhook_events (id, dedupe_key, event_name, resource_type, resource_id, resource_updated_at,
                     test_mode, body, received_at, outcome)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'received') ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(event_id)
            .bind(delivery.dedupe_key())
            .bind(&delivery.event_name)
            .bind(&delivery.resource_type)
            .bind(&delivery.resource_id)
            .bind(&delivery.resource_updated_at)
            .bind(delivery.test_mode)
            .bind(raw_body)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(Applied::Duplicate);
            }

            let mut vended = None;
            let mut affected_order: Option<i64> = None;
            let outcome: &'static str = match &delivery.change {
                Change::Ignored(why) => why.outcome(),
                Change::Purchase { paid: false, .. } => "not_paid",
                Change::Purchase { .. } if plan.is_none() => "no_plan",
                Change::Purchase { order_id, variant_id, buyer, subscription, payment, vend, .. } => {
                    let plan = plan.unwrap_or(crate::DEFAULT_PLAN);
                    let custom_data = buyer.custom_data.clone().map(|m| Json(serde_json::Value::Object(m)));
                    let customer_id =
                        upsert_customer!(tx, buyer.email.as_str(), &buyer.name, buyer.ls_customer_id, custom_data, now);
                    sqlx::query(
                        "INSERT INTO purchases (order_id, customer_id, plan, variant_id, test_mode, created_at, credit_nano)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
                    )
                    .bind(order_id)
                    .bind(customer_id)
                    .bind(plan)
                    .bind(variant_id)
                    .bind(delivery.test_mode)
                    .bind(now)
                    .bind(pack_credit)
                    .execute(&mut *tx)
                    .await?;
                    // Credited before the refunds that waited for it are applied, as if they had
                    // arrived in order; once per order, whichever delivery of it comes first.
                    if let Some(credit) = pack_credit {
                        // The low-balance threshold follows the last pack bought.
                        sqlx::query(
                            "INSERT INTO credit_balances (customer_id, balance_nano, low_balance_nano) VALUES ($1, 0, $2)
                             ON CONFLICT (customer_id) DO UPDATE SET low_balance_nano = excluded.low_balance_nano",
                        )
                        .bind(customer_id)
                        .bind(low_balance_nano)
                        .execute(&mut *tx)
                        .await?;
                        let (source, note) = (format!("order:{order_id}"), format!("credit pack, order {order_id}"));
                        add_credit!(tx, customer_id, "pack", credit, source, Some(note), now);
                    }
                    if let Some(state) = subscription {
                        // Older news never overwrites newer: compare the resource's updated_at.
                        sqlx::query(
                            "UPDATE purchases SET subscription_id = $2, subscription_status = $3, ends_at = $4,
                                 status_updated_at = $5, trial_ends_at = $6, customer_portal_url = $7,
                                 update_payment_url = $8
                             WHERE order_id = $1 AND (status_updated_at IS NULL OR status_updated_at < $5)",
                        )
                        .bind(order_id)
                        .bind(state.subscription_id)
                        .bind(&state.status)
                        .bind(state.ends_at)
                        .bind(state.updated_at)
                        .bind(state.trial_ends_at)
                        .bind(&state.customer_portal_url)
                        .bind(&state.update_payment_url)
                        .execute(&mut *tx)
                        .await?;
                        // A term that is over stays over, however old the news that says so.
                        let over = key_status_for(Some(&state.status), state.ends_at, None, false, now) == KeyStatus::Revoked;
                        if over {
                            sqlx::query("UPDATE purchases SET ended = TRUE WHERE order_id = $1")
                                .bind(order_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    apply_waiting!(tx, WAITING_FOR_ORDER, order_id, payment_grace, now);
                    if let Some(state) = subscription {
                        apply_waiting!(tx, WAITING_FOR_SUBSCRIPTION, state.subscription_id, payment_grace, now);
                    }
                    if let Some(entry) = payment {
                        book_ledger!(tx, entry, customer_id, delivery.test_mode);
                    }
                    affected_order = Some(*order_id);
                    let has_key_on_plan = || sqlx::query_as::<_, (i64,)>(
                        "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1 AND plan = $2 AND status <> 'revoked'",
                    )
                    .bind(customer_id)
                    .bind(plan);
                    if !*vend {
                        "updated"
                    } else if pack_credit.is_some() && has_key_on_plan().fetch_one(&mut *tx).await?.0 > 0 {
                        // A pack adds credit to the key the customer has on its plan.
                        "credited"
                    } else if pack_credit.is_none()
                        && matches!(desired_key_status!(tx, order_id, now), Some((None, KeyStatus::Revoked)))
                    {
                        // Refunded or ended before its key was made: none is made, none emailed.
                        "purchase_over"
                    } else {
                        let key_id = Uuid::now_v7();
                        let (hash, prefix) = (new_key.hash(), new_key.display_prefix());
                        let expires_at = trial.and_then(|trial| now.checked_add_signed(trial));
                        insert_key_row!(tx, key_id, customer_id, hash, &prefix, None::<&str>, plan, "active", expires_at, now);
                        let claimed = sqlx::query("UPDATE purchases SET key_id = $2 WHERE order_id = $1 AND key_id IS NULL")
                            .bind(order_id)
                            .bind(key_id)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if claimed == 1 {
                            queue_key_email!(tx, customer_id, key_id, buyer.email.as_str(), plan, new_key, None::<&str>, now);
                            vended = Some(VendedKey {
                                key_id,
                                customer_id,
                                email: buyer.email.as_str().to_owned(),
                                plan: plan.to_owned(),
                                prefix,
                                order_id: Some(*order_id),
                            });
                            "vended"
                        } else {
                            // The other delivery of this purchase vended first: drop ours unseen.
                            sqlx::query("DELETE FROM key_changes WHERE key_hash = $1").bind(&hash.0[..]).execute(&mut *tx).await?;
                            sqlx::query("DELETE FROM api_keys WHERE id = $1").bind(key_id).execute(&mut *tx).await?;
                            "already_vended"
                        }
                    }
                }
                Change::Invoice { subscription_id, signal, updated_at, ledger } => {
                    match apply_invoice!(tx, subscription_id, signal, updated_at, ledger.as_ref(), delivery.test_mode, now, payment_grace) {
                        Some(order_id) => {
                            affected_order = Some(order_id);
                            "updated"
                        }
                        None => {
                            sqlx::query("INSERT INTO waiting_webhook_events (event_id, subscription_id) VALUES ($1, $2)")
                                .bind(event_id)
                                .bind(subscription_id)
                                .execute(&mut *tx)
                                .await?;
                            WAITING_FOR_PURCHASE
                        }
                    }
                }
                Change::Refund { order_id, ledger, full } => {
                    match apply_refund!(tx, order_id, ledger, *full, delivery.test_mode) {
                        Some(order_id) => {
                            affected_order = Some(*order_id);
                            "refunded"
                        }
                        None => {
                            sqlx::query("INSERT INTO waiting_webhook_events (event_id, order_id) VALUES ($1, $2)")
                                .bind(event_id)
                                .bind(order_id)
                                .execute(&mut *tx)
                                .await?;
                            WAITING_FOR_PURCHASE
                        }
                    }
                }
            };
            let key_status_changed = match affected_order {
                Some(order_id) => sync_key_status!(tx, order_id, now) | sync_key_expiry!(tx, order_id, now),
                None => false,
            };
            sqlx::query("UPDATE webhook_events SET outcome = $2 WHERE id = $1")
                .bind(event_id)
                .bind(outcome)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Applied::Recorded { outcome, vended, key_status_changed })
        })
    }

    /// Records a signed delivery that could not be parsed (kept for audit and replay).
    pub async fn record_malformed_webhook(&self, event_name: &str, raw_body: &str, detail: &str) -> StoreResult<()> {
        let now = Utc::now();
        let id = Uuid::now_v7();
        let sql =
            "INSERT INTO webhook_events (id, dedupe_key, event_name, test_mode, body, received_at, outcome, detail)
                   VALUES ($1, $2, $3, FALSE, $4, $5, 'malformed', $6)";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(id)
            .bind(format!("malformed|{id}"))
            .bind(event_name)
            .bind(raw_body)
            .bind(now)
            .bind(detail)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Re-evaluates keys whose grace period or paid-up term has run out; returns how many changed.
    pub async fn expire_due_purchases(&self) -> StoreResult<usize> {
        let now = Utc::now();
        let due_sql = "SELECT p.order_id FROM purchases p JOIN api_keys k ON k.id = p.key_id
                       WHERE k.status <> 'revoked'
                         AND ((p.grace_until IS NOT NULL AND p.grace_until <= $1)
                              OR (p.subscription_status = 'cancelled' AND p.ends_at <= $1))";
        let due: Vec<(i64,)> = with_pool!(self, pool => sqlx::query_as(due_sql).bind(now).fetch_all(pool).await)?;
        let mut changed = 0;
        for (order_id,) in due {
            let did = with_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                let did = sync_key_status!(tx, order_id, now);
                tx.commit().await?;
                Ok::<bool, StoreError>(did)
            })?;
            changed += usize::from(did);
        }
        Ok(changed)
    }

    /// Claims the next due email for `lease` (another instance takes it over if we die).
    pub async fn claim_due_email(&self, lease: chrono::Duration) -> StoreResult<Option<OutboxEmail>> {
        let now = Utc::now();
        const PICK: &str = "SELECT id FROM email_outbox WHERE status = 'pending' AND next_attempt_at <= $1
                            AND (locked_until IS NULL OR locked_until <= $1) ORDER BY next_attempt_at LIMIT 1";
        const CLAIM: &str = "UPDATE email_outbox SET locked_until = $2 WHERE id = ({pick})
                             RETURNING id, to_email, plan, key_plaintext, replaces_prefix, attempts, kind, credit_nano";
        Ok(match self {
            // PostgreSQL: SKIP LOCKED lets every instance's worker take a different row.
            Store::Postgres(pool) => {
                let sql = CLAIM.replace("{pick}", &format!("{PICK} FOR UPDATE SKIP LOCKED"));
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(now + lease).fetch_optional(pool).await?
            }
            // SQLite serializes writers, so the single UPDATE is already exclusive.
            Store::Sqlite(pool) => {
                let sql = CLAIM.replace("{pick}", PICK);
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(now + lease).fetch_optional(pool).await?
            }
        })
    }

    /// A confirmed send: the plaintext key is erased; the database keeps only hashes.
    pub async fn email_sent(&self, id: Uuid) -> StoreResult<()> {
        let sql = "UPDATE email_outbox SET status = 'sent', key_plaintext = NULL, sent_at = $2, locked_until = NULL,
                   last_error = NULL WHERE id = $1";
        with_pool!(self, pool => sqlx::query(sql).bind(id).bind(Utc::now()).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn email_retry_later(
        &self,
        id: Uuid,
        attempts: i32,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()> {
        let sql = "UPDATE email_outbox SET attempts = $2, next_attempt_at = $3, locked_until = NULL, last_error = $4
                   WHERE id = $1";
        with_pool!(self, pool => sqlx::query(sql).bind(id).bind(attempts).bind(next_at).bind(error).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Permanently undeliverable: the key is erased too; the operator resends (rotating it).
    pub async fn email_failed(&self, id: Uuid, attempts: i32, error: &str) -> StoreResult<()> {
        let sql = "UPDATE email_outbox SET status = 'failed', attempts = $2, key_plaintext = NULL, locked_until = NULL,
                   last_error = $3 WHERE id = $1";
        with_pool!(self, pool => sqlx::query(sql).bind(id).bind(attempts).bind(error).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Emails waiting to go out (a metric and a health signal).
    pub async fn outbox_depth(&self) -> StoreResult<i64> {
        let sql = "SELECT COUNT(*) FROM email_outbox WHERE status = 'pending'";
        let (n,): (i64,) = with_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await)?;
        Ok(n)
    }

    /// Replaces a key with `new_key` (same customer, name, plan, status, expiry and purchase)
    /// and queues its email, naming the key it replaces, in one transaction. The old key is
    /// revoked or expires (`old`); either way its change is logged, so every instance reloads it
    /// within 2 s. With `record` (a customer's `Idempotency-Key`) the rotation is recorded once:
    /// a second one under the same record is a `Conflict` and changes nothing.
    pub async fn rotate_key(
        &self,
        old_key_id: Uuid,
        new_key: &ApiKey,
        old_key: OldKey,
        record: Option<RotationRecord<'_>>,
    ) -> StoreResult<Rotated> {
        let now = Utc::now();
        let new_id = Uuid::now_v7();
        #[derive(sqlx::FromRow)]
        struct Old {
            customer_id: Uuid,
            plan: String,
            status: String,
            key_hash: Vec<u8>,
            prefix: String,
            email: String,
            name: Option<String>,
            expires_at: Option<DateTime<Utc>>,
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let old: Option<Old> = sqlx::query_as(
                "SELECT k.customer_id, k.plan, k.status, k.key_hash, k.prefix, c.email, k.name, k.expires_at
                 FROM api_keys k JOIN customers c ON c.id = k.customer_id WHERE k.id = $1",
            )
            .bind(old_key_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(old) = old else {
                return Err(StoreError::NotFound(format!("no key with id {old_key_id}")));
            };
            if old.status == KeyStatus::Revoked.as_str() {
                return Err(StoreError::Conflict(format!("key {old_key_id} is revoked; create a new key instead")));
            }
            let old_hash = KeyHash::from_slice(&old.key_hash)
                .ok_or_else(|| StoreError::Conflict(format!("key {old_key_id} has a corrupt hash")))?;
            let old_key_expires_at: Option<DateTime<Utc>> = match old_key {
                OldKey::Revoke => {
                    sqlx::query("UPDATE api_keys SET status = 'revoked', revoked_at = $2 WHERE id = $1")
                        .bind(old_key_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    None
                }
                OldKey::ExpiresAt(at) => {
                    // A grace never extends an expiry the key already had.
                    let (expires_at,): (Option<DateTime<Utc>>,) = sqlx::query_as(
                        "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < $2
                             THEN expires_at ELSE $2 END WHERE id = $1 RETURNING expires_at",
                    )
                    .bind(old_key_id)
                    .bind(at)
                    .fetch_one(&mut *tx)
                    .await?;
                    expires_at
                }
            };
            log_change!(tx, old_hash, now)?;
            let (hash, prefix) = (new_key.hash(), new_key.display_prefix());
            // The new key keeps the old one's term: a rotation never lengthens a trial.
            insert_key_row!(tx, new_id, old.customer_id, hash, &prefix, &old.name, &old.plan, &old.status, old.expires_at, now);
            if let Some(record) = &record {
                let recorded = sqlx::query(
                    "INSERT INTO key_rotations (old_key_id, idempotency_key, new_key_id, sealed_key, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (old_key_id, idempotency_key) DO NOTHING",
                )
                .bind(old_key_id)
                .bind(record.idempotency_key)
                .bind(new_id)
                .bind(record.sealed_key)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if recorded == 0 {
                    // Dropping the transaction rolls back everything above.
                    return Err(StoreError::Conflict(format!("key {old_key_id} was already rotated with this Idempotency-Key")));
                }
            }
            sqlx::query("UPDATE purchases SET key_id = $2 WHERE key_id = $1")
                .bind(old_key_id)
                .bind(new_id)
                .execute(&mut *tx)
                .await?;
            queue_key_email!(tx, old.customer_id, new_id, &old.email, &old.plan, new_key, Some(&old.prefix), now);
            let order_id: Option<(i64,)> = sqlx::query_as("SELECT order_id FROM purchases WHERE key_id = $1")
                .bind(new_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Rotated {
                vended: VendedKey {
                    key_id: new_id,
                    customer_id: old.customer_id,
                    email: old.email,
                    plan: old.plan,
                    prefix,
                    order_id: order_id.map(|(id,)| id),
                },
                old_key_expires_at,
            })
        })
    }

    /// The rotation of `old_key_id` recorded under `idempotency_key` since `since`, with the
    /// new key's hash (to check the unsealed key against) and when the old key stops working.
    pub async fn find_rotation(
        &self,
        old_key_id: Uuid,
        idempotency_key: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<SealedRotation>> {
        let sql = "SELECT r.new_key_id, r.sealed_key, n.key_hash AS new_key_hash, o.expires_at AS old_key_expires_at
                   FROM key_rotations r JOIN api_keys n ON n.id = r.new_key_id JOIN api_keys o ON o.id = r.old_key_id
                   WHERE r.old_key_id = $1 AND r.idempotency_key = $2 AND r.created_at > $3";
        Ok(
            with_pool!(self, pool => sqlx::query_as(sql).bind(old_key_id).bind(idempotency_key).bind(since).fetch_optional(pool).await)?,
        )
    }

    /// Deletes rotation records made before `before` (their sealed keys with them); returns how many.
    pub async fn forget_rotations(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let sql = "DELETE FROM key_rotations WHERE created_at <= $1";
        Ok(with_pool!(self, pool => sqlx::query(sql).bind(before).execute(pool).await.map(|r| r.rows_affected()))?)
    }
}
