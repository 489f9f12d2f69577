//! The admin dashboard at `/admin`: server-rendered HTML (askama templates, escaping on)
//! with SVG charts drawn on the server, one stylesheet and one small optional script served
//! from the binary. No CDN, no inline script or style: it works offline and under the
//! strict CSP that `admin::security_headers` sets.
//!
//! A page is a handler that reads the store, a struct that derives `Template` with a
//! [`Chrome`] (navigation, CSRF token, notices) and a template that extends `base.html`.
//! A listing adds a [`Pager`] and includes `pager.html`.

mod alerts;
pub mod charts;
mod findings;
pub mod format;
mod keys;
mod money;
mod overview;
pub mod session;

use crate::app::AppState;
use crate::domain::lemonsqueezy::{Ignored, WAITING_FOR_PURCHASE};
use crate::store::{StoreError, WebhookEventRow};
use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session::Session;
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(overview::page))
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route("/admin/login", get(session::login_page).post(session::login))
        .route("/admin/logout", post(session::logout))
        .route("/admin/money", get(money::page))
        .route("/admin/money.csv", get(money::csv))
        .route("/admin/keys", get(keys::page).post(keys::create))
        .route("/admin/keys/{id}/{action}", post(keys::act))
        .route("/admin/customers/{id}", get(keys::customer))
        .route("/admin/webhooks", get(webhooks))
        .route("/admin/alerts", get(alerts::page))
        .route("/admin/findings", get(findings::sentinel))
        .route("/admin/shield", get(findings::shield))
        .route("/admin/static/{file}", get(static_file))
        .route("/admin/{*rest}", axum::routing::any(not_found))
}

/// The navigation, in order. A page joins it with one line here.
const NAV: &[(&str, &str)] = &[
    ("Overview", "/admin"),
    ("Money", "/admin/money"),
    ("Keys & customers", "/admin/keys"),
    ("Webhooks", "/admin/webhooks"),
    ("Alerts", "/admin/alerts"),
    ("Sentinel findings", "/admin/findings"),
    ("Shield removals", "/admin/shield"),
];

pub struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    pub current: bool,
}

/// A message at the top of a page; also the shape firing alerts take on the overview.
pub struct Notice {
    /// `info`, `success`, `warning` or `error`: a CSS class, and said in words too.
    pub level: &'static str,
    pub text: String,
}

/// What every signed-in page shares: the navigation, the session's CSRF token for its forms.
pub struct Chrome {
    pub title: String,
    pub nav: Vec<NavItem>,
    pub csrf: String,
    pub notices: Vec<Notice>,
}

impl Chrome {
    pub fn new(session: &Session, title: impl Into<String>, section: &str) -> Chrome {
        Chrome {
            title: title.into(),
            nav: NAV.iter().map(|&(label, href)| NavItem { label, href, current: href == section }).collect(),
            csrf: session.csrf().to_string(),
            notices: Vec::new(),
        }
    }
}

/// Links to the neighbouring pages of a listing.
#[derive(Default)]
pub struct Pager {
    pub prev: Option<String>,
    /// What `prev` leads to: the page before, or (keyset paging, which only walks forward)
    /// the newest page.
    pub prev_label: &'static str,
    pub next: Option<String>,
}

pub const PER_PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub page: u32,
}

impl PageQuery {
    pub fn offset(&self, per_page: i64) -> i64 {
        i64::from(self.page) * per_page
    }
}

impl Pager {
    /// The links around page `page` (from 0); `more` says whether a next page exists.
    /// `link(n)` is the URL of page `n`.
    pub fn around(page: u32, more: bool, link: impl Fn(u32) -> String) -> Pager {
        Pager { prev: page.checked_sub(1).map(&link), prev_label: "← Previous", next: more.then(|| link(page + 1)) }
    }
}

/// Offset paging: the store is asked for `per_page + 1` rows, and the extra one only says
/// there is a next page. `link(n)` is the URL of page `n`.
pub fn paged<T>(mut rows: Vec<T>, page: u32, per_page: i64, link: impl Fn(u32) -> String) -> (Vec<T>, Pager) {
    let more = rows.len() as i64 > per_page;
    rows.truncate(usize::try_from(per_page).unwrap_or(usize::MAX));
    (rows, Pager::around(page, more, link))
}

/// Keyset paging, newest first: the store was asked for `per_page + 1` rows older than a
/// cursor (`later` when the page has one), and the extra one only says there is more.
/// `after(row)` is the URL of the page that follows `row`. Pages go forward; "previous"
/// goes back to the newest, `first`.
pub fn keyset<T>(
    mut rows: Vec<T>,
    per_page: i64,
    later: bool,
    first: String,
    after: impl Fn(&T) -> String,
) -> (Vec<T>, Pager) {
    let more = rows.len() as i64 > per_page;
    rows.truncate(usize::try_from(per_page).unwrap_or(usize::MAX));
    let next = if more { rows.last().map(after) } else { None };
    (rows, Pager { prev: later.then_some(first), prev_label: "← Newest", next })
}

/// `path` with `pairs` and `page=n` (left out for the first page) as its query string.
pub fn page_link(path: &str, pairs: &[(&str, &str)], n: u32) -> String {
    let page = if n == 0 { String::new() } else { n.to_string() };
    let mut all = pairs.to_vec();
    all.push(("page", &page));
    format!("{path}{}", query_string(&all))
}

/// A query string from pairs, empty values left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(name, value);
    }
    let query = out.finish();
    if query.is_empty() { query } else { format!("?{query}") }
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("Admin is disabled: set OMI_ADMIN_KEY.")]
    Disabled,
    #[error("The form has expired or did not come from this dashboard. Reload the page and try again.")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The database is unavailable.")]
    Store(StoreError),
    #[error("The page could not be rendered.")]
    Template(#[from] askama::Error),
    #[error("Internal error ({0}).")]
    Internal(&'static str),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        match e {
            StoreError::NotFound(m) => PageError::NotFound(m),
            StoreError::Conflict(m) => PageError::Conflict(m),
            max_keys @ StoreError::MaxKeys { .. } => PageError::Conflict(max_keys.to_string()),
            other => PageError::Store(other),
        }
    }
}

impl From<crate::keys::IssueError> for PageError {
    fn from(e: crate::keys::IssueError) -> PageError {
        match e {
            crate::keys::IssueError::Store(e) => PageError::from(e),
            crate::keys::IssueError::Key(_) => PageError::Internal("key generation"),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            PageError::Disabled | PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Template(_) | PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            PageError::Store(e) => tracing::error!(error = %e, "dashboard store error"),
            PageError::Template(e) => tracing::error!(error = %e, "dashboard template error"),
            PageError::Internal(what) => tracing::error!(what, "dashboard internal error"),
            _ => {}
        }
        error_response(status, self.to_string(), |status, reason, message| ErrorPage { status, reason, message })
    }
}

/// An error as a page in `status` (the dashboard's or the portal's template, built by `page`
/// from the status line and the message), or as plain text if the page cannot render.
pub fn error_response<P: Template>(
    status: StatusCode,
    message: String,
    page: impl FnOnce(u16, &'static str, String) -> P,
) -> Response {
    let reason = status.canonical_reason().unwrap_or("");
    match page(status.as_u16(), reason, message.clone()).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message).into_response(),
    }
}

pub fn render(page: &impl Template) -> Result<Response, PageError> {
    Ok(Html(page.render()?).into_response())
}

pub fn render_with(
    status: StatusCode,
    header: Option<(HeaderName, HeaderValue)>,
    page: &impl Template,
) -> Result<Response, PageError> {
    let mut response = (status, Html(page.render()?)).into_response();
    if let Some((name, value)) = header {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// The stylesheet and script, served from the binary (the portal serves the same ones).
pub async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "dashboard.css" => (include_str!("static/dashboard.css"), "text/css; charset=utf-8"),
        "dashboard.js" => (include_str!("static/dashboard.js"), "text/javascript; charset=utf-8"),
        _ => return PageError::NotFound("No such file.".into()).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Unknown `/admin/…` paths: without a session they look like every other page (a redirect
/// to sign in), so they reveal nothing about what exists.
async fn not_found(_session: Session) -> PageError {
    PageError::NotFound("There is no such page.".into())
}

pub struct WebhookRow {
    pub received: String,
    pub event_name: String,
    pub resource: String,
    pub test_mode: bool,
    pub outcome: String,
    pub detail: String,
}

impl From<WebhookEventRow> for WebhookRow {
    fn from(e: WebhookEventRow) -> WebhookRow {
        let resource = match (e.resource_type, e.resource_id) {
            (Some(kind), Some(id)) => format!("{kind} {id}"),
            (kind, id) => kind.or(id).unwrap_or_default(),
        };
        WebhookRow {
            received: format::time(e.received_at),
            event_name: e.event_name,
            resource,
            test_mode: e.test_mode,
            outcome: outcome_label(e.outcome),
            detail: e.detail.unwrap_or_default(),
        }
    }
}

/// A delivery's recorded outcome as the operator reads it.
fn outcome_label(outcome: String) -> String {
    match outcome.as_str() {
        o if o == Ignored::TestMode.outcome() => "test mode, ignored".into(),
        o if o == WAITING_FOR_PURCHASE => "waiting for its purchase".into(),
        _ => outcome,
    }
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    rows: Vec<WebhookRow>,
    pager: Pager,
}

/// Lemon Squeezy deliveries as received, newest first: when, what, and what it did.
async fn webhooks(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let rows = app.store.webhook_events(PER_PAGE + 1, q.offset(PER_PAGE)).await?;
    let (rows, pager) = paged(rows, q.page, PER_PAGE, |n| page_link("/admin/webhooks", &[], n));
    render(&WebhooksPage {
        chrome: Chrome::new(&session, "Webhook deliveries", "/admin/webhooks"),
        rows: rows.into_iter().map(WebhookRow::from).collect(),
        pager,
    })
}
