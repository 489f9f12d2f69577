//! The customer portal at `/portal`: a customer signs in with a one-time link by email
//! (`session.rs`) and sees their own usage (`usage.rs`) and keys (`keys.rs`),
//! their billing on record (`billing.rs`), with first steps (`quickstart.rs`). Server-rendered like the admin dashboard (askama
//! templates with escaping on, the dashboard's stylesheet served from the binary, no script,
//! no CDN) under the same strict CSP, which the firewall sets for `/portal` as for `/admin`.
//!
//! Isolation: every page takes a [`CustomerSession`] and every query it makes is scoped by
//! the session's `customer_id`; nothing here takes a customer id from the request.

mod billing;
mod keys;
mod quickstart;
pub mod session;
mod usage;

use crate::admin::dashboard::error_response;
use crate::app::AppState;
use crate::store::StoreError;
use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use session::CustomerSession;
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/portal", get(usage::page))
        .route("/portal/usage.csv", get(usage::csv))
        .route("/portal/", get(|| async { Redirect::permanent("/portal") }))
        .route("/portal/keys", get(keys::page).post(keys::create))
        .route("/portal/keys/{id}/revoke", post(keys::revoke))
        .route("/portal/keys/{id}/rotate", post(keys::rotate))
        .route("/portal/quickstart", get(quickstart::page))
        .route("/portal/billing", get(billing::page))
        .route("/portal/login", get(session::login_page).post(session::request_link))
        .route("/portal/login/{token}", get(session::redeem_link))
        .route("/portal/logout", post(session::logout))
        .route("/portal/static/{file}", get(crate::admin::dashboard::static_file))
        .route("/portal/{*rest}", axum::routing::any(not_found))
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("The form has expired or did not come from this portal. Reload the page and try again.")]
    Csrf,
    #[error("This sign-in link has been used or has expired. Ask for a new one.")]
    LinkRefused,
    #[error("There is no such page.")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The service is unavailable; try again shortly.")]
    Store(StoreError),
    #[error("The page could not be rendered.")]
    Template(#[from] askama::Error),
    #[error("Internal error ({0}).")]
    Internal(&'static str),
}

#[derive(Template)]
#[template(path = "portal_error.html")]
struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let status = match &self {
            PortalError::Csrf => StatusCode::FORBIDDEN,
            PortalError::LinkRefused => StatusCode::GONE,
            PortalError::NotFound => StatusCode::NOT_FOUND,
            PortalError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PortalError::Conflict(_) => StatusCode::CONFLICT,
            PortalError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            PortalError::Template(_) | PortalError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            PortalError::Store(e) => tracing::error!(error = %e, "portal store error"),
            PortalError::Template(e) => tracing::error!(error = %e, "portal template error"),
            PortalError::Internal(what) => tracing::error!(what, "portal internal error"),
            _ => {}
        }
        error_response(status, self.to_string(), |status, reason, message| ErrorPage { status, reason, message })
    }
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> PortalError {
        match e {
            // Never the store's words (they may name another customer's key): just "no such".
            StoreError::NotFound(_) => PortalError::NotFound,
            max_keys @ StoreError::MaxKeys { .. } => PortalError::Conflict(max_keys.to_string()),
            StoreError::Conflict(m) => PortalError::Conflict(m),
            other => PortalError::Store(other),
        }
    }
}

impl From<crate::keys::IssueError> for PortalError {
    fn from(e: crate::keys::IssueError) -> PortalError {
        match e {
            crate::keys::IssueError::Store(e) => PortalError::from(e),
            crate::keys::IssueError::Key(_) => PortalError::Internal("key generation"),
        }
    }
}

impl From<crate::keys::RotateError> for PortalError {
    fn from(e: crate::keys::RotateError) -> PortalError {
        match e {
            // A conflict here: the key was revoked while this request ran.
            crate::keys::RotateError::Store(e) => PortalError::from(e),
            crate::keys::RotateError::Key(_) | crate::keys::RotateError::Unsealable => {
                PortalError::Internal("key rotation")
            }
        }
    }
}

pub fn render(page: &impl Template) -> Result<Response, PortalError> {
    render_with(StatusCode::OK, page)
}

pub fn render_with(status: StatusCode, page: &impl Template) -> Result<Response, PortalError> {
    Ok((status, Html(page.render()?)).into_response())
}

/// Unknown `/portal/…` paths: without a session they look like every other page (a redirect
/// to sign in), so they reveal nothing about what exists.
async fn not_found(_session: CustomerSession) -> PortalError {
    PortalError::NotFound
}

/// The navigation, in order. A page joins it with one line here.
const NAV: &[(&str, &str)] = &[
    ("Usage", "/portal"),
    ("Keys", "/portal/keys"),
    ("Billing", "/portal/billing"),
    ("Quickstart", "/portal/quickstart"),
];

pub struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    pub current: bool,
}

/// What every signed-in page shares: its title, the navigation, the customer's address, the
/// session's CSRF token for its forms.
pub struct Chrome {
    pub title: String,
    pub nav: Vec<NavItem>,
    pub email: String,
    pub csrf: String,
}

impl Chrome {
    async fn new(app: &AppState, session: &CustomerSession, title: &str, section: &str) -> Result<Chrome, PortalError> {
        let customer = app.store.customer_detail(session.customer_id).await?;
        Ok(Chrome {
            title: title.to_string(),
            nav: NAV.iter().map(|&(label, href)| NavItem { label, href, current: href == section }).collect(),
            email: customer.email,
            csrf: session.csrf().to_string(),
        })
    }
}
