//! The customer's own key: `GET /v1/key` (what it is, its limits and this month's use) and
//! `POST /v1/key/rotate` (a new key for it). Neither is a model request: they are not metered,
//! and the key's own rate limits do not apply (a customer held at their limit can still see why
//! and rotate); the firewall's per-IP limit still does.

use super::auth::{identify, usable};
use crate::agents::accountant::budgets::month_key;
use crate::agents::accountant::report::{midnight, month_range, usd_of_nano};
use crate::app::AppState;
use crate::domain::key::KeyStatus;
use crate::keys::{self, MAX_GRACE_SECS, Replay, RotateError, Rotation, VerifiedKey};
use crate::store::{OldKey, StoreError};
use crate::web::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Where a client names its retries of one rotation.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// An `Idempotency-Key` is a client's token (a UUID, usually), not a document.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// `{"grace_secs": N}` and nothing more.
const MAX_ROTATE_BODY_BYTES: usize = 4 * 1024;

/// `GET /v1/key`: one cached key lookup and one indexed read of the month's daily rollup (the
/// rows the margins report sums). A suspended or expired key may still read it (its `status`
/// says why it is refused elsewhere); a revoked one may not.
pub(crate) async fn describe_key(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match describe(&app, &headers).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn describe(app: &AppState, headers: &HeaderMap) -> Result<Value, ApiError> {
    let (_, key) = identify(app, headers, false).await?;
    if key.status == KeyStatus::Revoked {
        return Err(ApiError::key_revoked());
    }
    let now = Utc::now();
    let month = month_key(now);
    let days = month_range(&month).map_err(|e| {
        tracing::error!(error = %e, "the current month has no range");
        ApiError::unavailable("Usage cannot be read right now; retry shortly.")
    })?;
    let (start, resets_at) = (midnight(days.start), midnight(days.end));
    let daily = app.store.daily_usage(key.customer_id, days).await.map_err(|e| {
        tracing::error!(error = %e, "usage lookup failed");
        ApiError::unavailable("Usage cannot be read right now; retry shortly.")
    })?;
    let sum = |field: fn(&crate::store::DailyUsage) -> i64| daily.iter().map(field).fold(0_i64, i64::saturating_add);
    let (requests, prompt_tokens, completion_tokens, cost_nano, spend_nano) = (
        sum(|d| d.requests),
        sum(|d| d.prompt_tokens),
        sum(|d| d.completion_tokens),
        sum(|d| d.cost_nano),
        sum(|d| d.spend_nano),
    );
    let plan = app.config.plans.iter().find(|p| p.name == *key.plan);
    let budget_usd = plan.and_then(|p| p.monthly_budget_usd);
    let token_quota = plan.and_then(|p| p.monthly_token_quota);
    let remaining_usd = budget_usd.map(|budget| usd_of_nano(((budget * 1e9) as i64).saturating_sub(cost_nano).max(0)));
    let used_tokens = u64::try_from(prompt_tokens.saturating_add(completion_tokens)).unwrap_or(0);
    let limits = app.config.rate_limits.for_key(key.key_id, &key.plan);
    // A prepaid plan's balance (the ledger's sum): a second indexed read, for those plans only.
    let credits = if app.config.is_prepaid(&key.plan) {
        let balance = app.store.credit_balance(key.customer_id).await.map_err(|e| {
            tracing::error!(error = %e, "credit balance lookup failed");
            ApiError::unavailable("Usage cannot be read right now; retry shortly.")
        })?;
        json!({"balance_usd": usd_of_nano(balance)})
    } else {
        Value::Null
    };
    Ok(json!({
        "id": key.key_id,
        "prefix": key.prefix,
        "name": key.name,
        "plan": &*key.plan,
        "status": status_of(&key, now),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "limits": {"requests_per_minute": limits.requests_per_minute, "tokens_per_minute": limits.tokens_per_minute},
        "month": {
            "start": start,
            "resets_at": resets_at,
            "requests": requests,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            // The selling price (the plan's markup on the cost); the budget caps the cost.
            "spend_usd": usd_of_nano(spend_nano),
            "budget_usd": budget_usd,
            "remaining_usd": remaining_usd,
            "token_quota": token_quota,
            "remaining_tokens": token_quota.map(|quota| quota.saturating_sub(used_tokens)),
        },
        "credits": credits,
        // The plan's `models` patterns; null: every routed model.
        "models": plan.and_then(|p| p.models.as_ref()),
    }))
}

/// The key's status as its holder sees it: an active key past its expiry is `expired`.
fn status_of(key: &VerifiedKey, now: DateTime<Utc>) -> &'static str {
    match key.status {
        KeyStatus::Active if key.expired(now) => "expired",
        status => status.as_str(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_secs: i64,
}

/// `POST /v1/key/rotate`: a new key for the caller's customer, plan, name, limits and expiry,
/// shown once; the calling key stops working after `grace_secs` (0: now, on every instance
/// within 2 s). The customer is emailed. With `Idempotency-Key`, a retry within 24 h from the
/// same key returns the same new key, even once the old key is refused.
pub(crate) async fn rotate_key(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match rotate(&app, &headers, body).await {
        Ok(rotation) => (StatusCode::CREATED, Json(rotation.shown_once())).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn rotate(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Rotation, ApiError> {
    let (presented, key) = identify(app, headers, false).await?;
    let idempotency_key = idempotency_key(headers)?;
    let raw = axum::body::to_bytes(body, MAX_ROTATE_BODY_BYTES)
        .await
        .map_err(|_| ApiError::invalid_request("The body must be a small JSON object: {\"grace_secs\": N}."))?;
    let request: RotateBody = if raw.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::invalid_request(format!("Invalid body: {e}.")))?
    };
    if !(0..=i64::from(MAX_GRACE_SECS)).contains(&request.grace_secs) {
        return Err(ApiError::invalid_request(format!("`grace_secs` must be between 0 and {MAX_GRACE_SECS}.")));
    }
    let replay = idempotency_key.map(|idempotency_key| Replay { presented: &presented, idempotency_key });
    if let Some(replay) = &replay
        && let Some(earlier) = keys::replayed(&app.store, key.key_id, replay).await.map_err(rotate_error)?
    {
        return Ok(earlier);
    }
    usable(&key, Utc::now())?;
    let grace = chrono::Duration::seconds(request.grace_secs);
    rotate_with_grace(app, key.key_id, grace, replay.as_ref()).await.map_err(rotate_error)
}

/// A customer's rotation, from the API or the portal: `keys::rotate` with the old key refused
/// after `grace`; when it minted a key, the outbox worker is woken for its email and this
/// instance drops the old key's cached record now (the others within a second).
pub(crate) async fn rotate_with_grace(
    app: &AppState,
    key_id: Uuid,
    grace: chrono::Duration,
    replay: Option<&Replay<'_>>,
) -> Result<Rotation, RotateError> {
    let old_key = OldKey::ExpiresAt(Utc::now() + grace);
    let rotation = keys::rotate(&app.store, key_id, old_key, replay).await?;
    if rotation.minted {
        tracing::info!(%key_id, new_key_id = %rotation.key_id, grace_secs = grace.num_seconds(), "customer rotated a key");
        app.outbox.wake();
        if let Err(e) = app.verifier.sync_changes().await {
            tracing::warn!(error = %e, "could not apply the rotation locally yet");
        }
    }
    Ok(rotation)
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .filter(|v| (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_request(format!(
                "`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters."
            ))
        })
}

fn rotate_error(e: RotateError) -> ApiError {
    match e {
        // Revoked while this call ran (a revoked key is refused before it).
        RotateError::Store(StoreError::Conflict(_)) => ApiError::key_revoked(),
        other => {
            tracing::error!(error = %other, "rotation failed");
            ApiError::unavailable("The key could not be rotated; retry shortly with the same Idempotency-Key.")
        }
    }
}
