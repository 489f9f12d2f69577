//! Prepaid credit on the request path: a request on a prepaid plan holds an estimate of its
//! selling price before it goes upstream (refused with 402 when nothing is left), and its
//! finished event settles the hold: released, and the booked selling price drawn from the
//! ledger. The bound this gives on overdraw across instances is in `billing/README.md`.

use crate::billing::prices::{PriceTable, nano_to_usd};
use crate::events::{Event, EventBus};
use crate::store::{CreditHold, Store};
use crate::web::error::ApiError;
use chrono::Utc;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long a hold counts when its settlement never comes (the event lost, the process
/// killed): longer than any request lives, so a slow stream is never freed early.
pub const HOLD_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Settlement attempts before the draw is given up (logged and counted; its hold expires).
const SETTLE_ATTEMPTS: u32 = 4;

/// Admits a prepaid request and holds `estimate_nano` for it (nothing for a BYOK request, which
/// is sold for nothing but still needs credit left): the hold to settle, or 402 when the balance
/// less what requests in flight hold is at or below zero.
pub async fn hold(store: &Store, customer_id: Uuid, estimate_nano: i64) -> Result<Option<Uuid>, ApiError> {
    match store.hold_credit(customer_id, estimate_nano, Utc::now() + HOLD_TTL).await {
        Ok(CreditHold::Admitted(hold)) => Ok(hold),
        Ok(CreditHold::Refused) => Err(ApiError::insufficient_credits()),
        Err(e) => {
            tracing::error!(error = %e, "credit hold failed");
            Err(ApiError::unavailable("Your credit cannot be checked right now; retry shortly."))
        }
    }
}

/// Settles every finished request that held credit: releases the hold and draws the selling
/// price booked for it (0 when it was never answered), once; a draw that crossed the
/// low-balance threshold or zero is published for n8n (its email is already in the outbox).
pub fn spawn_settler(events: &EventBus, store: Store, prices: PriceTable) -> JoinHandle<()> {
    let mut rx = events.subscribe("credits", 65_536);
    let bus = events.clone();
    let failed = metrics::counter!("omi_credit_settlements_failed_total");
    crate::tasks::owned(async move {
        while let Some(event) = rx.recv().await {
            let Event::Request(request) = &*event else { continue };
            let (Some(hold), Some(customer_id)) = (request.credit_hold, request.customer_id) else { continue };
            let spend = super::record_of(request, &prices).and_then(|r| r.spend_nano).unwrap_or(0);
            let mut pause = Duration::from_millis(100);
            for attempt in 1..=SETTLE_ATTEMPTS {
                match store.settle_credit_hold(hold, customer_id, spend, &request.request_id).await {
                    Ok(notice) => {
                        if let Some(notice) = notice {
                            bus.publish(Event::CreditNotice {
                                customer_id: notice.customer_id,
                                email: notice.email,
                                level: notice.level.as_str(),
                                balance_usd: nano_to_usd(i128::from(notice.balance_nano)),
                            });
                        }
                        break;
                    }
                    Err(e) if attempt == SETTLE_ATTEMPTS => {
                        failed.increment(1);
                        tracing::error!(error = %e, request_id = %request.request_id, spend,
                            "credit draw lost; its hold expires on its own");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "credit settlement failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                }
            }
        }
    })
}
