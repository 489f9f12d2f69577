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

pub const COOKIE: &str = "omi_admin";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const TOKEN_BYTES: usize = 32;

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
        use subtle::ConstantTimeEq;
        if bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes())) { Ok(()) } else { Err(PageError::Csrf) }
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

/// The session token from the `Cookie` headers, if it is well-formed.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| value.len() == TOKEN_BYTES * 2 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Loads the session the request carries; `Ok(None)` when it has none that is live.
async fn load(app: &AppState, headers: &HeaderMap) -> Result<Option<Session>, PageError> {
    let admin_key = app.config.admin_key.as_ref().ok_or(PageError::Disabled)?;
    let Some(token) = cookie_token(headers) else { return Ok(None) };
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
    // Secure whenever the operator serves the gateway over https (its public URL says so).
    let secure = app.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).map_err(|_| PageError::Internal("cookie"))
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
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| PageError::Internal("randomness"))?;
    let token = hex::encode(bytes);
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(SESSION_LIFETIME).map_err(|_| PageError::Internal("session lifetime"))?;
    app.store.create_admin_session(&token_hash(admin_key, &token), expires).await?;
    tracing::info!(client_ip = %ip, "admin signed in");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&app, &token, SESSION_LIFETIME.as_secs())?);
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_must_be_well_formed() {
        let mut headers = HeaderMap::new();
        let token = "ab".repeat(TOKEN_BYTES);
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("x=1; {COOKIE}={token}")).expect("value"));
        assert_eq!(cookie_token(&headers), Some(token.as_str()));
        headers.insert(header::COOKIE, HeaderValue::from_static("omi_admin=zz"));
        assert_eq!(cookie_token(&headers), None);
    }
}
