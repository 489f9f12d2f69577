//! Dashboard sign-in. The admin key buys a session: a random token in an HttpOnly,
//! SameSite=Strict cookie, known to the database only by an HMAC under the admin key (so
//! sessions survive restarts, work on every instance, and all end when the key changes).
//! Each session has a CSRF token derived from its own token, checked on every form that
//! changes anything. Failed sign-ins count towards the admin key's lockout
//! ([`crate::admin::lockout`]), which the admin API and `/metrics` share.

use super::{PageError, Template, render, render_with};
use crate::admin::lockout::{Lockout, Refusal, retry_after_secs};
use crate::app::AppState;
use crate::firewall::Origin;
use crate::web::session_cookie::{CsrfForm, SessionCookie, csrf_matches, new_token};
use axum::extract::{Extension, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COOKIE: SessionCookie = SessionCookie { name: "omi_admin", path: "/admin" };
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A request with a live session. Holds the session's CSRF token for the page's forms.
pub struct Session {
    csrf: String,
    token_hash: Vec<u8>,
}

impl Session {
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Refuses a state-changing form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if csrf_matches(&self.csrf, presented) { Ok(()) } else { Err(PageError::Csrf) }
    }
}

/// Keyed so that neither a leaked database nor a leaked cookie alone tells the other.
fn mac(admin_key: &SecretString, purpose: &[u8], token: &str) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(admin_key.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(purpose);
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn token_hash(admin_key: &SecretString, token: &str) -> Vec<u8> {
    mac(admin_key, b"omi-admin-session:", token)
}

fn csrf_token(admin_key: &SecretString, token: &str) -> String {
    hex::encode(mac(admin_key, b"omi-admin-csrf:", token))
}

/// Loads the session the request carries; `Ok(None)` when it has none that is live.
async fn load(app: &AppState, headers: &HeaderMap) -> Result<Option<Session>, PageError> {
    let admin_key = app.config.admin_key.as_ref().ok_or(PageError::Disabled)?;
    let Some(token) = COOKIE.token(headers) else { return Ok(None) };
    let token_hash = token_hash(admin_key, token);
    if app.store.admin_session_active(&token_hash).await? {
        Ok(Some(Session { csrf: csrf_token(admin_key, token), token_hash }))
    } else {
        Ok(None)
    }
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    /// Without a live session: to the sign-in page, whatever was asked.
    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Session, Response> {
        match load(app, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to("/admin/login").into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

fn cookie(app: &AppState, value: &str, max_age: u64) -> Result<HeaderValue, PageError> {
    COOKIE.set(value, max_age, app.config.serves_https()).ok_or(PageError::Internal("cookie"))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    message: Option<String>,
}

/// The sign-in form; a visitor who is signed in already goes to the overview.
pub async fn login_page(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, PageError> {
    if load(&app, &headers).await?.is_some() {
        return Ok(Redirect::to("/admin").into_response());
    }
    render(&LoginPage { message: None })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
}

fn wait_message(wait: Duration) -> (StatusCode, String, Option<(header::HeaderName, HeaderValue)>) {
    let secs = retry_after_secs(wait);
    (
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many failed attempts from your address. Try again in {secs} seconds."),
        HeaderValue::from_str(&secs.to_string()).ok().map(|v| (header::RETRY_AFTER, v)),
    )
}

pub async fn login(
    State(app): State<Arc<AppState>>,
    Extension(lockout): Extension<Arc<Lockout>>,
    Extension(origin): Extension<Origin>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PageError> {
    let admin_key = app.config.admin_key.as_ref().ok_or(PageError::Disabled)?;
    // The firewall's client, not the TCP peer: behind Cloudflare every peer is a proxy.
    let ip = origin.client.ip;
    if let Err(refusal) = lockout.attempt(ip, &form.key, admin_key, Instant::now()) {
        let (status, message, retry) = match refusal {
            Refusal::LockedOut(wait) => wait_message(wait),
            Refusal::WrongKey => (StatusCode::UNAUTHORIZED, "That is not the admin key.".to_string(), None),
        };
        return render_with(status, retry, &LoginPage { message: Some(message) });
    }
    let token = new_token().ok_or(PageError::Internal("randomness"))?;
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(SESSION_LIFETIME).map_err(|_| PageError::Internal("session lifetime"))?;
    app.store.create_admin_session(&token_hash(admin_key, &token), expires).await?;
    tracing::info!(client_ip = %ip, "admin signed in");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&app, &token, SESSION_LIFETIME.as_secs())?);
    Ok(response)
}

pub async fn logout(
    State(app): State<Arc<AppState>>,
    session: Session,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    app.store.end_admin_session(&session.token_hash).await?;
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&app, "", 0)?);
    Ok(response)
}
