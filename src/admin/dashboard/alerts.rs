//! The Hawk's alerts: every episode it recorded, firing ones first and then the most recently
//! seen (the store's order, the admin API's too), all or by state; and the firing ones as
//! notices at the top of the overview.

use super::session::Session;
use super::{Chrome, NavItem, Notice, PER_PAGE, PageError, Pager, Template, format, page_link, render};
use crate::agents::hawk::rules::Rule;
use crate::app::AppState;
use crate::store::{AlertRecord, Store, StoreResult};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// The state filters, with the page's tab for each (`""`: every alert).
const STATES: [(&str, &str, &str); 3] = [
    ("", "All", "/admin/alerts"),
    ("firing", "Firing", "/admin/alerts?state=firing"),
    ("resolved", "Resolved", "/admin/alerts?state=resolved"),
];

/// What a human reads for a stored rule name (the name itself for a rule this build does not know).
fn rule_title(name: &str) -> &str {
    Rule::ALL.iter().find(|r| r.name() == name).map_or(name, |r| r.title())
}

pub struct AlertRow {
    pub firing: bool,
    pub state: String,
    pub severity: String,
    pub title: String,
    pub subject: String,
    pub detail: String,
    pub first_seen: String,
    pub last_seen: String,
    pub resolved: String,
    pub count: String,
    pub notifications: i32,
    pub samples: String,
}

impl From<AlertRecord> for AlertRow {
    fn from(a: AlertRecord) -> AlertRow {
        AlertRow {
            firing: a.state == "firing",
            title: rule_title(&a.rule).to_string(),
            state: a.state,
            severity: a.severity,
            subject: a.subject,
            detail: a.detail.unwrap_or_default(),
            first_seen: format::time(a.first_seen),
            last_seen: format::time(a.last_seen),
            resolved: a.resolved_at.map(format::time).unwrap_or_default(),
            count: format::count(a.count),
            notifications: a.notifications_sent,
            samples: a.sample_request_ids.join(", "),
        }
    }
}

/// A firing alert as a notice: critical ones are errors, the rest warnings; the severity is
/// also the first word, so colour is not the only sign.
fn notice(a: &AlertRecord) -> Notice {
    let critical = a.severity == "critical";
    let mut text =
        format!("{}: {} ({})", if critical { "Critical" } else { "Warning" }, rule_title(&a.rule), a.subject);
    if let Some(detail) = a.detail.as_deref().filter(|d| !d.is_empty()) {
        text.push_str(&format!(" — {detail}"));
    }
    text.push_str(&format!(". Firing since {}, {} times.", format::time(a.first_seen), format::count(a.count)));
    Notice { level: if critical { "error" } else { "warning" }, text }
}

/// At most `limit` firing alerts as notices, and whether more are firing.
pub async fn firing_notices(store: &Store, limit: i64) -> StoreResult<(Vec<Notice>, bool)> {
    let (alerts, more) = store.list_alerts(Some("firing"), limit, 0).await?;
    Ok((alerts.iter().map(notice).collect(), more))
}

#[derive(Deserialize)]
pub struct AlertsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: u32,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    tabs: Vec<NavItem>,
    rows: Vec<AlertRow>,
    pager: Pager,
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, PageError> {
    let state = STATES.iter().map(|(state, ..)| *state).find(|s| !s.is_empty() && *s == q.state);
    let (alerts, more) = app.store.list_alerts(state, PER_PAGE, i64::from(q.page) * PER_PAGE).await?;
    let pager = Pager::around(q.page, more, |n| page_link("/admin/alerts", &[("state", state.unwrap_or(""))], n));
    let current = state.unwrap_or("");
    render(&AlertsPage {
        chrome: Chrome::new(&session, "Alerts", "/admin/alerts"),
        tabs: STATES.iter().map(|&(value, label, href)| NavItem { label, href, current: value == current }).collect(),
        rows: alerts.into_iter().map(AlertRow::from).collect(),
        pager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn alert(severity: &str, detail: Option<&str>) -> AlertRecord {
        AlertRecord {
            id: uuid::Uuid::now_v7(),
            key: "server_errors:openai".into(),
            rule: "server_errors".into(),
            subject: "openai".into(),
            severity: severity.into(),
            state: "firing".into(),
            detail: detail.map(str::to_string),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            resolved_at: None,
            count: 1234,
            sample_request_ids: vec![],
            notifications_sent: 1,
        }
    }

    #[test]
    fn firing_alerts_read_as_notices() {
        let critical = notice(&alert("critical", Some("12 of 40 requests failed")));
        assert_eq!(critical.level, "error");
        assert!(critical.text.starts_with("Critical: 5xx errors (openai) — 12 of 40 requests failed. Firing since "));
        assert!(critical.text.ends_with(", 1,234 times."), "{}", critical.text);
        let warning = notice(&alert("warning", None));
        assert_eq!(warning.level, "warning");
        assert!(warning.text.starts_with("Warning: 5xx errors (openai). Firing since "), "{}", warning.text);
        assert_eq!(rule_title("some_future_rule"), "some_future_rule");
    }
}
