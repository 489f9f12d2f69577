//! Admin: the JSON API (`/admin/api/…`, bearer `OMI_ADMIN_KEY` compared in constant time) and
//! the dashboard (`/admin`, a session cookie; see `dashboard/`). Both act on keys through the
//! same functions below. Admin is disabled — every call refused — when no admin key is configured.
//! Every check of the admin key (sign-in, bearer, `/metrics`) goes through one [`Lockout`].

pub mod dashboard;
pub mod lockout;

use crate::app::AppState;
use crate::customers::EmailAddress;
use crate::domain::key::{ApiKey, KeyStatus};
use crate::firewall::Origin;
use crate::keys::{self, IssueError};
use crate::store::{FindingQuery, KeyListing, StoreError, VendedKey};
use crate::web::error::ApiError;
use axum::extract::{ConnectInfo, Extension, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use lockout::{Lockout, Refusal, retry_after_secs};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Findings per page: the default, and the most one page may ask for.
const FINDINGS_PAGE: i64 = 50;
const FINDINGS_PAGE_MAX: i64 = 500;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/api/keys", get(list_keys).post(create_key))
        .route("/admin/api/keys/{id}", delete(revoke_key))
        .route("/admin/api/keys/{id}/resend", post(resend_key))
        .route("/admin/api/margins", get(margins))
        .route("/admin/api/usage", get(usage))
        .route("/admin/api/alerts", get(list_alerts))
        .route("/admin/api/findings", get(list_findings))
        .route("/metrics", get(metrics))
        // Security headers for every /admin response come from the firewall (`secure_headers`).
        .merge(dashboard::router())
        .layer(Extension(Arc::new(Lockout::default())))
}

/// Moves a key to `status` and applies it on this instance at once; the others follow
/// within a second through the change log.
pub async fn change_key_status(app: &AppState, id: uuid::Uuid, status: KeyStatus) -> Result<KeyListing, StoreError> {
    let listing = app.store.set_key_status(id, status).await?;
    if let Err(e) = app.verifier.sync_changes().await {
        tracing::warn!(error = %e, "could not apply the key change locally yet");
    }
    Ok(listing)
}

/// Rotates the key and emails the new one: the customer lost the email, or the key leaked.
pub async fn rotate_and_email(app: &AppState, id: uuid::Uuid) -> Result<VendedKey, IssueError> {
    let new_key = ApiKey::generate()?;
    let vended = app.store.rotate_key(id, &new_key).await?;
    app.outbox.wake();
    if let Err(e) = app.verifier.sync_changes().await {
        tracing::warn!(error = %e, "could not apply the rotation locally yet");
    }
    Ok(vended)
}

/// A caller of the admin API: it presented `Authorization: Bearer <OMI_ADMIN_KEY>`. Without a
/// configured admin key the API is disabled (404), never open.
pub struct AdminBearer;

impl FromRequestParts<Arc<AppState>> for AdminBearer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<AdminBearer, Response> {
        let Some(admin_key) = &app.config.admin_key else {
            return Err(ApiError::unavailable("Admin is disabled: set OMI_ADMIN_KEY.")
                .into_response_with(StatusCode::NOT_FOUND));
        };
        check_bearer(admin_key, parts).map(|()| AdminBearer).map_err(IntoResponse::into_response)
    }
}

/// The bearer check of the admin API and `/metrics`, behind the sign-in's [`Lockout`] for the
/// client the firewall resolved. A request with no `Authorization` at all is refused without
/// counting (a scraper not yet configured is not a guess); any presented key counts.
fn check_bearer(admin_key: &SecretString, parts: &Parts) -> Result<(), BearerRefusal> {
    let Some(authorization) = parts.headers.get(header::AUTHORIZATION) else { return Err(BearerRefusal::Required) };
    let (Some(lockout), Some(origin)) = (parts.extensions.get::<Arc<Lockout>>(), parts.extensions.get::<Origin>())
    else {
        tracing::error!("admin route without the lockout or the firewall's origin");
        return Err(BearerRefusal::Unwired);
    };
    let presented = authorization.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    match lockout.attempt(origin.client.ip, presented, admin_key, Instant::now()) {
        Ok(()) => Ok(()),
        Err(Refusal::WrongKey) => Err(BearerRefusal::Required),
        Err(Refusal::LockedOut(wait)) => Err(BearerRefusal::LockedOut(wait)),
    }
}

enum BearerRefusal {
    /// No key, or the wrong one: 401.
    Required,
    /// 429 with `Retry-After`, in OpenAI's shape like the firewall's own refusals.
    LockedOut(std::time::Duration),
    /// The router lacks the lockout or the firewall (a wiring mistake): refused, never open.
    Unwired,
}

impl IntoResponse for BearerRefusal {
    fn into_response(self) -> Response {
        match self {
            BearerRefusal::Required => ApiError::invalid_api_key("Admin authentication required.").into_response(),
            BearerRefusal::LockedOut(wait) => {
                let secs = retry_after_secs(wait);
                let message = format!("Too many failed attempts from your address. Try again in {secs} seconds.");
                let error =
                    ApiError { status: StatusCode::TOO_MANY_REQUESTS, code: "rate_limited", message, rate_limit: None };
                let mut response = error.into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
            BearerRefusal::Unwired => ApiError::unavailable("Try again shortly.").into_response(),
        }
    }
}

/// A reader of `/metrics`: anyone with `metrics_public = true`; else the admin bearer when an
/// admin key is configured; else only this host (peer and client both loopback), since the
/// metrics tell traffic, models and spend.
pub struct MetricsReader;

impl FromRequestParts<Arc<AppState>> for MetricsReader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<MetricsReader, Response> {
        if app.config.metrics_public {
            return Ok(MetricsReader);
        }
        if let Some(admin_key) = &app.config.admin_key {
            return check_bearer(admin_key, parts).map(|()| MetricsReader).map_err(IntoResponse::into_response);
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
        let client = parts.extensions.get::<Origin>().map(|origin| origin.client.ip);
        let local = |ip: Option<std::net::IpAddr>| ip.is_some_and(|ip| ip.to_canonical().is_loopback());
        if local(peer) && local(client) {
            return Ok(MetricsReader);
        }
        let message = "Metrics are served to this host only.";
        let error =
            ApiError { status: StatusCode::FORBIDDEN, code: "forbidden", message: message.into(), rate_limit: None };
        Err(error.into_response())
    }
}

async fn metrics(_reader: MetricsReader) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics_handle().render()).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => ApiError::invalid_request(m).into_response_with(StatusCode::NOT_FOUND),
        StoreError::Conflict(m) => ApiError::invalid_request(m).into_response_with(StatusCode::CONFLICT),
        max_keys @ StoreError::MaxKeys { .. } => ApiError::max_keys_reached(max_keys.to_string()).into_response(),
        other => {
            tracing::error!(error = %other, "admin store error");
            ApiError::unavailable("The database is unavailable.").into_response()
        }
    }
}

fn issue_error(e: IssueError) -> Response {
    match e {
        IssueError::Store(e) => store_error(e),
        IssueError::Key(e) => {
            tracing::error!(error = %e, "key generation failed");
            ApiError::unavailable("Could not generate a key.").into_response()
        }
    }
}

async fn list_keys(State(app): State<Arc<AppState>>, _admin: AdminBearer) -> Response {
    match app.store.list_keys().await {
        Ok(keys) => Json(json!({"data": keys})).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct AlertsQuery {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The Hawk's alerts, firing first, then most recently seen: `?state=firing|resolved`,
/// `limit` (1–200, default 50) and `offset`; `has_more` tells whether a next page exists.
async fn list_alerts(
    State(app): State<Arc<AppState>>,
    _admin: AdminBearer,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::invalid_request("`limit` and `offset` must be whole numbers.").into_response();
    };
    let state = query.state.as_deref().filter(|s| !s.is_empty());
    if state.is_some_and(|s| s != "firing" && s != "resolved") {
        return ApiError::invalid_request("`state` must be `firing` or `resolved`.").into_response();
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let offset = query.offset.unwrap_or(0).max(0);
    match app.store.list_alerts(state, limit, offset).await {
        Ok((alerts, has_more)) => Json(json!({"data": alerts, "has_more": has_more})).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct CreateKey {
    email: String,
    plan: Option<String>,
    name: Option<String>,
}

async fn create_key(State(app): State<Arc<AppState>>, _admin: AdminBearer, body: axum::body::Bytes) -> Response {
    let request: CreateKey = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::invalid_request(format!("Invalid body: {e}.")).into_response(),
    };
    let email = match EmailAddress::parse(&request.email) {
        Ok(e) => e,
        Err(e) => return ApiError::invalid_request(e.to_string()).into_response(),
    };
    let plan = request.plan.as_deref().unwrap_or(crate::DEFAULT_PLAN);
    let max_keys = app.config.plan(plan).and_then(|plan| plan.max_keys);
    match keys::issue(&app.store, &email, plan, request.name.as_deref(), max_keys).await {
        Ok((key, listing)) => (
            StatusCode::CREATED,
            Json(json!({"id": listing.id, "key": key.expose(), "prefix": listing.prefix, "email": listing.email, "plan": listing.plan})),
        )
            .into_response(),
        Err(e) => issue_error(e),
    }
}

async fn revoke_key(State(app): State<Arc<AppState>>, _admin: AdminBearer, Path(id): Path<String>) -> Response {
    let key = match app.store.resolve_key(&id).await {
        Ok(key) => key,
        Err(e) => return store_error(e),
    };
    match change_key_status(&app, key.id, KeyStatus::Revoked).await {
        Ok(listing) => Json(json!({"data": listing})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn resend_key(State(app): State<Arc<AppState>>, _admin: AdminBearer, Path(id): Path<String>) -> Response {
    let old = match app.store.resolve_key(&id).await {
        Ok(key) => key,
        Err(e) => return store_error(e),
    };
    match rotate_and_email(&app, old.id).await {
        Ok(vended) => Json(
            json!({"data": {"replaced": old.id, "id": vended.key_id, "prefix": vended.prefix, "email": vended.email}}),
        )
        .into_response(),
        Err(e) => issue_error(e),
    }
}

#[derive(Deserialize)]
struct MonthQuery {
    month: Option<String>,
}

async fn margins(State(app): State<Arc<AppState>>, _admin: AdminBearer, Query(q): Query<MonthQuery>) -> Response {
    use crate::agents::accountant::report;
    let month = q.month.unwrap_or_else(report::current_month);
    if let Err(e) = report::month_range(&month) {
        return ApiError::invalid_request(e.to_string()).into_response();
    }
    match report::margins(&app.store, &app.config, &month).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "margins report failed");
            ApiError::unavailable("The database is unavailable.").into_response()
        }
    }
}

#[derive(Deserialize)]
struct UsageQuery {
    customer: Option<uuid::Uuid>,
    /// RFC 3339; the page holds records strictly older than this.
    before: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<i64>,
}

/// Raw usage records, newest first; follow `next_before` for the next page.
async fn usage(State(app): State<Arc<AppState>>, _admin: AdminBearer, Query(q): Query<UsageQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let before = q.before.unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::seconds(1));
    match app.store.usage_page(q.customer, before, limit).await {
        Ok(records) => {
            let next = (records.len() as i64 == limit).then(|| records.last().map(|r| r.at)).flatten();
            Json(json!({"data": records, "next_before": next})).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct FindingsParams {
    limit: Option<i64>,
    /// The id of the previous page's last finding.
    before: Option<String>,
    /// A customer id or email.
    customer: Option<String>,
}

/// `GET /admin/api/findings?limit=&before=&customer=`: newest first. With `customer`, also
/// that customer's strikes (high-severity findings today and in total).
async fn list_findings(
    State(app): State<Arc<AppState>>,
    _admin: AdminBearer,
    Query(params): Query<FindingsParams>,
) -> Response {
    let limit = params.limit.unwrap_or(FINDINGS_PAGE);
    if !(1..=FINDINGS_PAGE_MAX).contains(&limit) {
        return ApiError::invalid_request(format!("`limit` must be between 1 and {FINDINGS_PAGE_MAX}."))
            .into_response();
    }
    let before = match params.before.as_deref().map(Uuid::parse_str).transpose() {
        Ok(before) => before,
        Err(_) => return ApiError::invalid_request("`before` must be a finding id.").into_response(),
    };
    let customer_id = match params.customer.as_deref() {
        None => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => match app.store.customer_id_by_email(&raw.trim().to_lowercase()).await {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    return ApiError::invalid_request(format!("No customer `{raw}`."))
                        .into_response_with(StatusCode::NOT_FOUND);
                }
                Err(e) => return store_error(e),
            },
        },
    };
    // One more than asked tells whether another page follows.
    let query = FindingQuery { limit: limit + 1, before, customer_id, source: None };
    let mut findings = match app.store.list_findings(&query).await {
        Ok(findings) => findings,
        Err(e) => return store_error(e),
    };
    let has_more = findings.len() as i64 > limit;
    findings.truncate(limit as usize);
    let next_before = if has_more { findings.last().map(|f| f.id) } else { None };
    let mut body = json!({"data": findings, "has_more": has_more, "next_before": next_before});
    if let Some(customer_id) = customer_id {
        match app.store.strikes(customer_id, chrono::Utc::now()).await {
            Ok(strikes) => body["strikes"] = json!(strikes),
            Err(e) => return store_error(e),
        }
    }
    Json(body).into_response()
}
