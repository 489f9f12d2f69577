//! The customer portal at `/portal`: a customer signs in with a one-time link by email
//! (`session.rs`) and sees their own usage. Server-rendered like the admin dashboard (askama
//! templates with escaping on, the dashboard's stylesheet served from the binary, no script,
//! no CDN) under the same strict CSP, which the firewall sets for `/portal` as for `/admin`.
//!
//! Isolation: every page takes a [`CustomerSession`] and every query it makes is scoped by
//! the session's `customer_id`; nothing here takes a customer id from the request.

pub mod session;

use crate::admin::dashboard::format;
use crate::agents::accountant::report;
use crate::app::AppState;
use crate::store::StoreError;
use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use session::CustomerSession;
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/portal", get(home))
        .route("/portal/", get(|| async { Redirect::permanent("/portal") }))
        .route("/portal/login", get(session::login_page).post(session::request_link))
        .route("/portal/login/{token}", get(session::confirm_page).post(session::redeem_link))
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
    #[error("The service is unavailable; try again shortly.")]
    Store(#[from] StoreError),
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
            PortalError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            PortalError::Template(_) | PortalError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            PortalError::Store(e) => tracing::error!(error = %e, "portal store error"),
            PortalError::Template(e) => tracing::error!(error = %e, "portal template error"),
            PortalError::Internal(what) => tracing::error!(what, "portal internal error"),
            _ => {}
        }
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or(""),
            message: self.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
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

/// What every signed-in page shares: its title, the customer's address, the CSRF token.
pub struct Chrome {
    pub title: String,
    pub email: String,
    pub csrf: String,
}

impl Chrome {
    async fn new(app: &AppState, session: &CustomerSession, title: &str) -> Result<Chrome, PortalError> {
        let customer = app.store.customer_detail(session.customer_id).await?;
        Ok(Chrome { title: title.to_string(), email: customer.email, csrf: session.csrf().to_string() })
    }
}

#[derive(Template)]
#[template(path = "portal_home.html")]
struct HomePage {
    chrome: Chrome,
    month: String,
    summary: Vec<(&'static str, String)>,
}

/// This month's usage of the signed-in customer, from the daily rollup.
async fn home(State(app): State<Arc<AppState>>, session: CustomerSession) -> Result<Response, PortalError> {
    let month = report::current_month();
    let days = report::month_range(&month).map_err(|_| PortalError::Internal("month"))?;
    let daily = app.store.daily_usage(session.customer_id, days).await?;
    let sum = |f: fn(&crate::store::DailyUsage) -> i64| daily.iter().map(f).fold(0, i64::saturating_add);
    let summary = vec![
        ("Requests", format::count(sum(|u| u.requests))),
        ("Tokens", format::count(sum(|u| u.prompt_tokens.saturating_add(u.completion_tokens)))),
        ("Spend", format::usd(sum(|u| u.cost_nano) as f64 / 1e9)),
    ];
    render(&HomePage { chrome: Chrome::new(&app, &session, "Your usage").await?, month, summary })
}
