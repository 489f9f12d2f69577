//! Money: the key vending machine (Lemon Squeezy webhook → key → email through the outbox),
//! the subscription lifecycle, the revenue ledger, and model prices.

pub mod mailer;
pub mod outbox;
pub mod prices;

use crate::app::AppState;
use crate::config::{Config, TestModePolicy, credit_nano};
use crate::domain::key::ApiKey;
use crate::domain::lemonsqueezy;
use crate::events::Event;
use crate::store::{Applied, PurchaseOf};
use crate::ticker::Ticker;
use crate::web::error::ApiError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Webhook bodies are a few KiB; anything near this is not Lemon Squeezy.
const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webhooks/lemonsqueezy", post(lemonsqueezy_webhook))
        .layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
}

fn refuse(app: &AppState, status: StatusCode, reason: &'static str) -> Response {
    metrics::counter!("omi_webhook_deliveries_total", "outcome" => reason).increment(1);
    app.events.publish(Event::WebhookRejected { reason });
    (status, Json(json!({"error": {"message": reason, "type": "invalid_request_error", "code": reason}})))
        .into_response()
}

/// `POST /webhooks/lemonsqueezy`: signature first (nothing is parsed or stored before it
/// verifies), then one transaction, then 200. The email goes out afterwards from the outbox.
async fn lemonsqueezy_webhook(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &app.config.lemonsqueezy_signing_secret else {
        return refuse(&app, StatusCode::UNAUTHORIZED, "webhook_disabled");
    };
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !lemonsqueezy::signature_is_valid(secret.expose_secret().as_bytes(), &body, signature) {
        return refuse(&app, StatusCode::UNAUTHORIZED, "bad_signature");
    }
    let raw = String::from_utf8_lossy(&body);
    let accept_test_mode = app.config.lemonsqueezy_test_mode == TestModePolicy::Accept;
    let delivery = match lemonsqueezy::parse(&body) {
        Ok(d) => d.under_test_mode_policy(accept_test_mode),
        Err(e) => {
            let name = headers.get("x-event-name").and_then(|v| v.to_str().ok()).unwrap_or("unknown");
            if let Err(store_error) = app.store.record_malformed_webhook(name, &raw, &e.to_string()).await {
                tracing::error!(error = %store_error, "could not record a malformed webhook");
            }
            metrics::counter!("omi_webhook_deliveries_total", "outcome" => "malformed").increment(1);
            return ApiError::invalid_request(format!("Malformed webhook: {e}.")).into_response();
        }
    };
    let purchase = match &delivery.change {
        lemonsqueezy::Change::Purchase { variant_id, .. } => purchase_of(&app.config, *variant_id),
        _ => None,
    };
    let trial = purchase.as_ref().and_then(|purchase| app.config.trial_for(purchase.plan));
    let new_key = match ApiKey::generate() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot generate a key");
            return ApiError::unavailable("Try again shortly.").into_response();
        }
    };
    // Any configured grace, however long, is a valid duration (beyond chrono's range: forever).
    let grace = i64::try_from(app.config.payment_grace_hours)
        .ok()
        .and_then(chrono::Duration::try_hours)
        .unwrap_or(chrono::Duration::MAX);
    match app.store.apply_webhook(&delivery, &raw, purchase, grace, &new_key, trial).await {
        Ok(Applied::Duplicate) => {
            metrics::counter!("omi_webhook_deliveries_total", "outcome" => "duplicate").increment(1);
            (StatusCode::OK, Json(json!({"ok": true, "outcome": "duplicate"}))).into_response()
        }
        Ok(Applied::Recorded { outcome, vended, key_status_changed }) => {
            metrics::counter!("omi_webhook_deliveries_total", "outcome" => outcome).increment(1);
            tracing::info!(event = %delivery.event_name, outcome, "lemon squeezy webhook applied");
            if let Some(v) = vended {
                app.outbox.wake();
                app.events.publish(Event::KeyVended {
                    customer_id: v.customer_id,
                    email: v.email,
                    plan: v.plan,
                    key_prefix: v.prefix,
                    order_id: v.order_id,
                });
            }
            if key_status_changed {
                // This instance obeys at once; the others within a second via the change log.
                if let Err(e) = app.verifier.sync_changes().await {
                    tracing::warn!(error = %e, "key change not applied locally yet");
                }
            }
            (StatusCode::OK, Json(json!({"ok": true, "outcome": outcome}))).into_response()
        }
        Err(e) => {
            // Not 200: Lemon Squeezy retries, and the transaction left nothing behind.
            tracing::error!(error = %e, event = %delivery.event_name, "webhook could not be applied");
            metrics::counter!("omi_webhook_deliveries_total", "outcome" => "error").increment(1);
            ApiError::unavailable("Temporarily unable to record the event; retry.").into_response()
        }
    }
}

/// What a variant buys: a credit pack (its credit, on its prepaid plan), else a plan.
fn purchase_of(config: &Config, variant_id: Option<i64>) -> Option<PurchaseOf<'_>> {
    match config.credit_pack_for_variant(variant_id) {
        Some(pack) => {
            let credit = credit_nano(pack.credit_usd);
            let low_balance_nano =
                credit.map_or(0, |credit| (credit as f64 * config.credit_low_balance_percent / 100.0).round() as i64);
            Some(PurchaseOf { plan: &pack.plan, credit_nano: credit, low_balance_nano })
        }
        None => {
            config.plan_for_variant(variant_id).map(|plan| PurchaseOf { plan, credit_nano: None, low_balance_nano: 0 })
        }
    }
}

/// Suspends keys whose payment grace ran out and revokes cancelled ones past their term; erases
/// customer rotations' idempotency records (and the sealed keys in them) after their 24 hours.
pub fn spawn_lifecycle(app: Arc<AppState>, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    crate::tasks::owned(async move {
        let mut ticker = Ticker::new(every, shutdown);
        while ticker.tick().await {
            if let Err(e) = app.store.forget_rotations(chrono::Utc::now() - crate::keys::ROTATION_REPLAY_WINDOW).await {
                tracing::warn!(error = %e, "could not erase old rotation records");
            }
            match app.store.expire_due_purchases().await {
                Ok(0) => {}
                Ok(changed) => {
                    tracing::info!(changed, "subscription terms ended; keys updated");
                    if let Err(e) = app.verifier.sync_changes().await {
                        tracing::warn!(error = %e, "key change not applied locally yet");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lifecycle sweep failed"),
            }
        }
    })
}
