//! Customer authentication: `Authorization: Bearer omi_…` (or `x-api-key: omi_…` where an
//! endpoint takes it), checked for shape and checksum
//! before the (cached) lookup, so malformed keys never cost a cache miss or a query.
//! Then the key's status and expiry (checked against the clock on every request), and the
//! key's own request limit (per key or plan), which needs to know the key.

use super::meter::Meter;
use crate::app::AppState;
use crate::domain::key::{ApiKey, KeyStatus};
use crate::firewall::Origin;
use crate::keys::{Verification, VerifiedKey};
use crate::web::error::ApiError;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Where Anthropic's SDKs send the key.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Authenticates, books the key on the meter, and spends one of the key's requests.
/// `x_api_key`: the key may also come as `x-api-key` (a bearer wins when both are sent).
pub async fn admit(
    app: &AppState,
    headers: &HeaderMap,
    origin: &Origin,
    meter: &mut Meter,
    x_api_key: bool,
) -> Result<Arc<VerifiedKey>, ApiError> {
    let key = authenticate(app, headers, x_api_key).await?;
    meter.set_key(&key);
    app.firewall.admit_request(&key, origin).await?;
    Ok(key)
}

async fn authenticate(app: &AppState, headers: &HeaderMap, x_api_key: bool) -> Result<Arc<VerifiedKey>, ApiError> {
    let (_, key) = identify(app, headers, x_api_key).await?;
    usable(&key, Utc::now())?;
    Ok(key)
}

/// Refuses a key that may not make requests now: revoked, suspended, or past its expiry.
pub fn usable(key: &VerifiedKey, now: DateTime<Utc>) -> Result<(), ApiError> {
    match key.status {
        KeyStatus::Active if key.expired(now) => Err(ApiError::key_expired()),
        KeyStatus::Active => Ok(()),
        KeyStatus::Suspended => Err(ApiError::key_suspended()),
        KeyStatus::Revoked => Err(ApiError::key_revoked()),
    }
}

/// The presented key and what is known of it, whatever its status (the caller decides); an
/// absent, malformed or unknown key is refused here.
pub async fn identify(
    app: &AppState,
    headers: &HeaderMap,
    x_api_key: bool,
) -> Result<(ApiKey, Arc<VerifiedKey>), ApiError> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let api_key = || headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()).filter(|_| x_api_key);
    let presented = bearer
        .or_else(api_key)
        .map(str::trim)
        .ok_or_else(|| ApiError::invalid_api_key("Missing API key: send `Authorization: Bearer omi_…`."))?;
    let key = ApiKey::parse(presented).map_err(|e| ApiError::invalid_api_key(format!("Malformed API key: {e}.")))?;
    let verification = app.verifier.verify(&key).await.map_err(|e| {
        tracing::error!(error = %e, "key lookup failed");
        ApiError::unavailable("The key store is unavailable; retry shortly.")
    })?;
    match verification {
        Verification::Unknown => Err(ApiError::invalid_api_key("Incorrect API key provided.")),
        Verification::Known(known) => Ok((key, known)),
    }
}
