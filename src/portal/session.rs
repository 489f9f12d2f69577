//! Customer sign-in: a one-time link by email, then a session cookie of the portal's own
//! (`omi_portal`, never the admin's). Link tokens and session cookies are random 32-byte
//! values known to the database only by their SHA-256, so every instance serves every
//! session and a leaked database signs nobody in. A session's CSRF token is another hash of
//! its cookie, checked on every form that changes anything.

use super::{PortalError, Template, render, render_with};
use crate::app::AppState;
use crate::customers::EmailAddress;
use crate::firewall::{Origin, limit_key};
use crate::store::{PortalLink, Redeemed};
use crate::web::session_cookie::{CsrfForm, SessionCookie, csrf_matches, new_token, well_formed};
use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

pub const COOKIE: SessionCookie = SessionCookie { name: "omi_portal", path: "/portal" };
const SESSION_LIFETIME: chrono::Duration = chrono::Duration::days(7);
const LINK_LIFETIME: chrono::Duration = chrono::Duration::minutes(15);

/// Sign-in requests counted per client and per address in fixed windows of this length, in
/// the database so that every instance counts against the same budget.
const ATTEMPT_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
/// Requests one client may make in a window: enough for typos, too few to probe addresses.
pub const ATTEMPTS_PER_CLIENT: i64 = 10;
/// Links one address may be sent in a window: nobody's inbox is flooded through us.
pub const ATTEMPTS_PER_ADDRESS: i64 = 3;

/// A request with a live customer session. Every portal query is scoped by its `customer_id`.
pub struct CustomerSession {
    pub customer_id: Uuid,
    csrf: String,
    token_hash: Vec<u8>,
}

impl CustomerSession {
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Refuses a state-changing form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), PortalError> {
        if csrf_matches(&self.csrf, presented) { Ok(()) } else { Err(PortalError::Csrf) }
    }
}

/// What the database knows a token by.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Derived from the cookie under another label, so the page's CSRF token never tells the cookie.
fn csrf_token(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"omi-portal-csrf:");
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

fn random_token() -> Result<String, PortalError> {
    new_token().ok_or(PortalError::Internal("randomness"))
}

async fn load(app: &AppState, headers: &HeaderMap) -> Result<Option<CustomerSession>, PortalError> {
    let Some(token) = COOKIE.token(headers) else { return Ok(None) };
    let token_hash = token_hash(token);
    Ok(app.store.portal_session(&token_hash).await?.map(|customer_id| CustomerSession {
        customer_id,
        csrf: csrf_token(token),
        token_hash,
    }))
}

impl FromRequestParts<Arc<AppState>> for CustomerSession {
    type Rejection = Response;

    /// Without a live session: to the sign-in page, whatever was asked.
    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<CustomerSession, Response> {
        match load(app, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to("/portal/login").into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

fn cookie(app: &AppState, value: &str, max_age: i64) -> Result<HeaderValue, PortalError> {
    let max_age = u64::try_from(max_age).unwrap_or(0);
    COOKIE.set(value, max_age, app.config.serves_https()).ok_or(PortalError::Internal("cookie"))
}

#[derive(Template)]
#[template(path = "portal_login.html")]
struct LoginPage {
    message: Option<&'static str>,
}

/// The sign-in form; a customer who is signed in already goes to the portal.
pub async fn login_page(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, PortalError> {
    if load(&app, &headers).await?.is_some() {
        return Ok(Redirect::to("/portal").into_response());
    }
    render(&LoginPage { message: None })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
}

#[derive(Template)]
#[template(path = "portal_sent.html")]
struct SentPage;

/// Counts one sign-in request against `bucket`; `false` once its window is spent.
async fn within_budget(app: &AppState, bucket: &str, limit: i64, now: DateTime<Utc>) -> Result<bool, PortalError> {
    let window = ATTEMPT_WINDOW.num_seconds();
    let start = now.timestamp() - now.timestamp().rem_euclid(window);
    let window_start = DateTime::from_timestamp(start, 0).ok_or(PortalError::Internal("clock"))?;
    let attempts = app.store.count_sign_in_attempt(bucket, window_start, window_start - ATTEMPT_WINDOW).await?;
    Ok(attempts <= limit)
}

/// Sends a sign-in link if the address has an account. The answer is the same page either
/// way (and the same refusal once a budget is spent), so it never tells who is a customer.
pub async fn request_link(
    State(app): State<Arc<AppState>>,
    Extension(origin): Extension<Origin>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PortalError> {
    let Ok(email) = EmailAddress::parse(&form.email) else {
        return render_with(StatusCode::BAD_REQUEST, &LoginPage { message: Some("That is not an email address.") });
    };
    let now = Utc::now();
    // The firewall's client (behind Cloudflare every TCP peer is a proxy), by its limit key:
    // an IPv6 client is one /64. The address is counted by its hash: no plaintext of strangers.
    let client = format!("ip:{:032x}", limit_key(origin.client.ip).raw());
    let address = format!("email:{}", hex::encode(token_hash(email.as_str())));
    let client_ok = within_budget(&app, &client, ATTEMPTS_PER_CLIENT, now).await?;
    if !client_ok || !within_budget(&app, &address, ATTEMPTS_PER_ADDRESS, now).await? {
        let message = Some("Too many sign-in requests. Wait 15 minutes and try again.");
        return render_with(StatusCode::TOO_MANY_REQUESTS, &LoginPage { message });
    }
    if let Some(customer_id) = app.store.customer_id_by_email(email.as_str()).await? {
        let token = random_token()?;
        let link = PortalLink {
            customer_id,
            to_email: email.as_str(),
            token_hash: &token_hash(&token),
            token: &token,
            expires_at: now + LINK_LIFETIME,
        };
        app.store.queue_portal_link(&link).await?;
        app.outbox.wake();
    }
    render(&SentPage)
}

/// The emailed link: uses it up and, if it was still valid, starts a session.
pub async fn redeem_link(State(app): State<Arc<AppState>>, Path(token): Path<String>) -> Result<Response, PortalError> {
    if !well_formed(&token) {
        return Err(PortalError::LinkRefused);
    }
    let session = random_token()?;
    let expires = Utc::now() + SESSION_LIFETIME;
    match app.store.redeem_portal_link(&token_hash(&token), &token_hash(&session), expires).await? {
        Redeemed::SignedIn(customer_id) => {
            tracing::info!(%customer_id, "customer signed in to the portal");
            let mut response = Redirect::to("/portal").into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie(&app, &session, SESSION_LIFETIME.num_seconds())?);
            Ok(response)
        }
        Redeemed::Unknown | Redeemed::Expired => Err(PortalError::LinkRefused),
    }
}

pub async fn logout(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PortalError> {
    session.check_csrf(&form.csrf)?;
    app.store.end_portal_session(&session.token_hash).await?;
    let mut response = Redirect::to("/portal/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&app, "", 0)?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_does_not_tell_the_cookie_or_its_hash() {
        let token = "cd".repeat(crate::web::session_cookie::TOKEN_BYTES);
        assert_ne!(csrf_token(&token), token);
        assert_ne!(csrf_token(&token), hex::encode(token_hash(&token)));
    }
}
