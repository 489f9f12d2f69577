//! Keys and customers: search, create (the key shown once), suspend, restore, revoke and
//! resend, through the same functions as the JSON API; a customer's keys, usage and findings.

use super::charts::{self, LineChart};
use super::findings::{Columns, FindingRow};
use super::session::Session;
use super::{
    Chrome, Notice, PER_PAGE, PageError, Pager, Template, format, keyset, page_link, paged, query_string, render,
    render_with,
};
use crate::admin::{change_key_status, new_key_expiry, rotate_and_email};
use crate::agents::accountant::report;
use crate::app::AppState;
use crate::customers::EmailAddress;
use crate::domain::key::KeyStatus;
use crate::keys;
use crate::store::{FindingQuery, KeyListing, KeySearch, UsageRecord};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

const STATUSES: [&str; 3] = ["active", "suspended", "revoked"];

pub struct StatusOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct KeyRow {
    pub id: String,
    pub customer_href: String,
    pub prefix: String,
    pub email: String,
    pub name: String,
    pub plan: String,
    pub status: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    /// `expired`, `expiring` (within [`EXPIRING_SOON`]) or empty: the mark beside the expiry.
    pub expiry: &'static str,
}

/// Keys expiring sooner than this are marked on the keys pages.
const EXPIRING_SOON: chrono::Duration = chrono::Duration::days(7);

/// The mark of a key's expiry at `now`.
fn expiry_mark(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &'static str {
    match expires_at {
        Some(at) if at <= now => "expired",
        Some(at) if at <= now + EXPIRING_SOON => "expiring",
        _ => "",
    }
}

impl KeyRow {
    pub fn is(&self, status: &str) -> bool {
        self.status == status
    }
}

impl From<KeyListing> for KeyRow {
    fn from(k: KeyListing) -> KeyRow {
        KeyRow {
            id: k.id.to_string(),
            customer_href: format!("/admin/customers/{}", k.customer_id),
            prefix: k.prefix,
            email: k.email,
            name: k.name.unwrap_or_default(),
            plan: k.plan,
            status: k.status,
            created: format::time(k.created_at),
            last_used: k.last_used_at.map(format::time).unwrap_or_else(|| "never".into()),
            expires: k.expires_at.map(format::time).unwrap_or_else(|| "never".into()),
            expiry: expiry_mark(k.expires_at, Utc::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expiring_within_seven_days_are_marked() {
        let now = DateTime::parse_from_rfc3339("2030-03-01T12:00:00Z").expect("time").to_utc();
        assert_eq!(expiry_mark(None, now), "");
        assert_eq!(expiry_mark(Some(now - chrono::Duration::seconds(1)), now), "expired");
        assert_eq!(expiry_mark(Some(now + chrono::Duration::days(6)), now), "expiring");
        assert_eq!(expiry_mark(Some(now + chrono::Duration::days(8)), now), "");
    }
}

#[derive(Deserialize, Default)]
pub struct KeysQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: u32,
    /// Set by the redirect after an action: which one, on which key (by display prefix).
    done: Option<String>,
    key: Option<String>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    q: String,
    statuses: Vec<StatusOption>,
    rows: Vec<KeyRow>,
    pager: Pager,
    plans: Vec<String>,
    return_to: &'static str,
}

/// The message for a finished action. Only fixed texts and a well-formed key prefix are
/// shown: the query string is the visitor's to write.
fn done_notice(done: Option<&str>, key: Option<&str>) -> Option<Notice> {
    let key = key
        .filter(|k| k.len() == 12 && k.starts_with("omi_") && k[4..].bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("the key");
    let text = match done? {
        "revoke" => format!("Revoked {key}: every instance refuses it within 2 seconds."),
        "suspend" => format!("Suspended {key}: it is refused until restored."),
        "restore" => format!("Restored {key}."),
        "resend" => {
            format!("Replaced {key}; the new key is being emailed to the customer. The old one no longer works.")
        }
        _ => return None,
    };
    Some(Notice { level: "success", text })
}

fn plans(app: &AppState) -> Vec<String> {
    let mut plans: Vec<String> = app.config.plans.iter().map(|p| p.name.clone()).collect();
    if plans.is_empty() {
        plans.push(crate::DEFAULT_PLAN.to_string());
    }
    plans
}

async fn keys_page(
    app: &AppState,
    session: &Session,
    q: KeysQuery,
    notice: Option<Notice>,
) -> Result<KeysPage, PageError> {
    let status = STATUSES.iter().find(|s| **s == q.status).copied();
    let search = KeySearch { text: &q.q, customer: None, status };
    let rows = app.store.search_keys(&search, PER_PAGE + 1, i64::from(q.page) * PER_PAGE).await?;
    let (rows, pager) =
        paged(rows, q.page, PER_PAGE, |n| page_link("/admin/keys", &[("q", q.q.trim()), ("status", &q.status)], n));
    let mut chrome = Chrome::new(session, "Keys & customers", "/admin/keys");
    chrome.notices.extend(notice.or_else(|| done_notice(q.done.as_deref(), q.key.as_deref())));
    Ok(KeysPage {
        chrome,
        q: q.q.trim().to_string(),
        statuses: std::iter::once(("", "any"))
            .chain(STATUSES.iter().map(|s| (*s, *s)))
            .map(|(value, label)| StatusOption { value, label, selected: Some(value) == status.or(Some("")) })
            .collect(),
        rows: rows.into_iter().map(KeyRow::from).collect(),
        pager,
        plans: plans(app),
        return_to: "/admin/keys",
    })
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<KeysQuery>,
) -> Result<Response, PageError> {
    render(&keys_page(&app, &session, q, None).await?)
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    name: String,
    /// `90s`, `15m`, `12h`, `14d`; empty: the plan's `trial_days`, else never.
    #[serde(default)]
    expires_in: String,
}

#[derive(Template)]
#[template(path = "key_created.html")]
struct KeyCreatedPage {
    chrome: Chrome,
    key: String,
    prefix: String,
    email: String,
    plan: String,
    customer_href: String,
}

/// Creates a key and shows it, this once, in the response itself (never in a URL or a
/// redirect; `Cache-Control: no-store` keeps it out of the browser's cache).
pub async fn create(
    State(app): State<Arc<AppState>>,
    session: Session,
    axum::Form(form): axum::Form<CreateForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let email = match EmailAddress::parse(&form.email) {
        Ok(email) => email,
        Err(e) => {
            let notice = Notice { level: "error", text: format!("Not created: {e}") };
            let page = keys_page(&app, &session, KeysQuery::default(), Some(notice)).await?;
            return render_with(StatusCode::BAD_REQUEST, None, &page);
        }
    };
    let plan = Some(form.plan.trim()).filter(|p| !p.is_empty()).unwrap_or(crate::DEFAULT_PLAN);
    let name = Some(form.name.trim()).filter(|n| !n.is_empty());
    let expires_in = Some(form.expires_in.trim()).filter(|e| !e.is_empty());
    let expires_at = match new_key_expiry(&app.config, plan, None, expires_in, Utc::now()) {
        Ok(at) => at,
        Err(e) => {
            let notice = Notice { level: "error", text: format!("Not created: {e}") };
            let page = keys_page(&app, &session, KeysQuery::default(), Some(notice)).await?;
            return render_with(StatusCode::BAD_REQUEST, None, &page);
        }
    };
    let terms = keys::KeyTerms { max_keys: app.config.plan(plan).and_then(|plan| plan.max_keys), expires_at };
    let (key, listing) = keys::issue(&app.store, &email, plan, name, terms).await?;
    tracing::info!(key_id = %listing.id, prefix = %listing.prefix, "key created from the dashboard");
    render(&KeyCreatedPage {
        chrome: Chrome::new(&session, "Key created", "/admin/keys"),
        key: key.expose().to_string(),
        customer_href: format!("/admin/customers/{}", listing.customer_id),
        prefix: listing.prefix,
        email: listing.email,
        plan: listing.plan,
    })
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

/// A dashboard path to come back to: `/admin/…` in plain characters, never another site.
fn safe_return(path: &str) -> &str {
    let plain = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b));
    if plain && path.starts_with("/admin/") && !path.starts_with("//") { path } else { "/admin/keys" }
}

/// `POST /admin/keys/{id}/{revoke|suspend|restore|resend}`, then back where it was asked.
pub async fn act(
    State(app): State<Arc<AppState>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound("There is no such key.".into()))?;
    let prefix = match action.as_str() {
        "revoke" => change_key_status(&app, id, KeyStatus::Revoked).await?.prefix,
        "suspend" => change_key_status(&app, id, KeyStatus::Suspended).await?.prefix,
        "restore" => change_key_status(&app, id, KeyStatus::Active).await?.prefix,
        "resend" => {
            let old = app.store.key_by_id(id).await?;
            rotate_and_email(&app, id).await?;
            old.prefix
        }
        _ => return Err(PageError::NotFound("There is no such action.".into())),
    };
    tracing::info!(key_id = %id, action, "key changed from the dashboard");
    let target = format!("{}{}", safe_return(&form.return_to), query_string(&[("done", &action), ("key", &prefix)]));
    Ok(Redirect::to(&target).into_response())
}

pub struct CustomerView {
    pub email: String,
    pub name: String,
    pub ls_customer_id: String,
    pub created: String,
    /// When the customer last signed in to the portal, or "never".
    pub portal_signed_in: String,
    /// Checkout custom data as indented JSON (customer-controlled: escaped like all else).
    pub custom_data: Option<String>,
}

pub struct UsageRow {
    pub at: String,
    pub model: String,
    pub status: i32,
    pub tokens: String,
    pub cost: String,
    pub latency: String,
    pub flags: String,
}

impl From<&UsageRecord> for UsageRow {
    fn from(r: &UsageRecord) -> UsageRow {
        let flags: Vec<&str> = [
            (r.byok, "BYOK"),
            (r.streamed, "streamed"),
            (r.aborted, "aborted"),
            (r.usage_estimated, "estimated"),
            (r.cost_nano.is_none(), "unpriced"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        UsageRow {
            at: format::time(r.at),
            model: r.model.as_deref().unwrap_or_default().to_owned(),
            status: r.status,
            tokens: format!("{} / {}", format::count(r.prompt_tokens), format::count(r.completion_tokens)),
            cost: r.cost_nano.map(|n| format!("${:.6}", n as f64 / 1e9)).unwrap_or_else(|| "unknown".into()),
            latency: format::micros(r.latency_us as f64),
            flags: flags.join(", "),
        }
    }
}

#[derive(Template)]
#[template(path = "customer.html")]
struct CustomerPage {
    chrome: Chrome,
    customer: CustomerView,
    keys: Vec<KeyRow>,
    return_to: String,
    month: String,
    month_summary: Vec<(&'static str, String)>,
    charts: Vec<LineChart>,
    recent: Vec<UsageRow>,
    pager: Pager,
    findings: Vec<FindingRow>,
    finding_columns: Columns,
    strikes: [(&'static str, String); 2],
    /// This customer's Sentinel findings and shield removals, all of them.
    sentinel_href: String,
    shield_href: String,
}

#[derive(Deserialize)]
pub struct CustomerQuery {
    /// Recent requests strictly older than this (RFC 3339).
    before: Option<DateTime<Utc>>,
    done: Option<String>,
    key: Option<String>,
}

const RECENT: i64 = 50;
/// The newest findings on the customer page; the findings pages have the rest.
const CUSTOMER_FINDINGS: i64 = 10;

pub async fn customer(
    State(app): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<CustomerQuery>,
) -> Result<Response, PageError> {
    let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound("There is no such customer.".into()))?;
    let detail = app.store.customer_detail(id).await?;
    let month = report::current_month();
    let days = report::month_range(&month).map_err(|e| PageError::BadRequest(e.to_string()))?;
    let search = KeySearch { customer: Some(id), ..KeySearch::default() };
    let findings = FindingQuery { limit: CUSTOMER_FINDINGS, customer_id: Some(id), ..FindingQuery::default() };
    let (keys, daily, recent, findings, strikes) = tokio::join!(
        app.store.search_keys(&search, 1000, 0),
        app.store.daily_usage(id, days.clone()),
        app.store.usage_page(
            Some(id),
            q.before.unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(1)),
            RECENT + 1
        ),
        app.store.list_findings(&findings),
        app.store.strikes(id, Utc::now()),
    );
    let (keys, daily, recent, findings, strikes) = (keys?, daily?, recent?, findings?, strikes?);

    let charts = charts::daily_usage(&month, &days, &daily, "Upstream cost");
    let sum = |f: fn(&crate::store::DailyUsage) -> i64| daily.iter().map(f).fold(0, i64::saturating_add);
    let month_summary = vec![
        ("Requests", format::count(sum(|u| u.requests))),
        ("Errors (5xx)", format::count(sum(|u| u.errors))),
        ("Prompt tokens", format::count(sum(|u| u.prompt_tokens))),
        ("Completion tokens", format::count(sum(|u| u.completion_tokens))),
        ("Upstream cost", format::usd(sum(|u| u.cost_nano) as f64 / 1e9)),
        ("Unpriced requests", format::count(sum(|u| u.unpriced_requests))),
    ];

    let here = format!("/admin/customers/{id}");
    let (recent, pager) = keyset(recent, RECENT, q.before.is_some(), here.clone(), |r| {
        format!("{here}{}", query_string(&[("before", &r.at.to_rfc3339())]))
    });
    let mut chrome = Chrome::new(&session, detail.email.clone(), "/admin/keys");
    chrome.notices.extend(done_notice(q.done.as_deref(), q.key.as_deref()));
    render(&CustomerPage {
        chrome,
        customer: CustomerView {
            email: detail.email,
            name: detail.name.unwrap_or_default(),
            ls_customer_id: detail.ls_customer_id.map(|n| n.to_string()).unwrap_or_default(),
            created: format::time(detail.created_at),
            portal_signed_in: detail.portal_signed_in_at.map_or_else(|| "never".to_string(), format::time),
            custom_data: detail.custom_data.and_then(|d| serde_json::to_string_pretty(&d.0).ok()),
        },
        keys: keys.into_iter().map(KeyRow::from).collect(),
        return_to: here,
        month,
        month_summary,
        charts,
        recent: recent.iter().map(UsageRow::from).collect(),
        pager,
        findings: findings.into_iter().map(FindingRow::from).collect(),
        finding_columns: Columns { customer: false, kind: true, judged: true },
        strikes: [("Strikes today", format::count(strikes.today)), ("Strikes in all", format::count(strikes.total))],
        sentinel_href: format!("/admin/findings?customer={id}"),
        shield_href: format!("/admin/shield?customer={id}"),
    })
}
