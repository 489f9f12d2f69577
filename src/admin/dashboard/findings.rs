//! The `findings` table on two pages, newest first: the Sentinel's (prompts it judged as
//! injections, and those the judge cleared) at `/admin/findings`, and the output shield's
//! removals from answers at `/admin/shield`; either for one customer with `?customer=`.
//! A customer's own findings and strikes also show on the customer page. Excerpts, rules,
//! judge reasons and emails are customer-influenced text: they reach the page only through
//! template variables.

use super::session::Session;
use super::{Chrome, PER_PAGE, PageError, Pager, Template, format, keyset, query_string, render};
use crate::app::AppState;
use crate::store::{FindingQuery, FindingRecord, FindingSource};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

pub struct FindingRow {
    pub at: String,
    pub email: String,
    pub customer_href: String,
    pub kind: &'static str,
    pub severity: String,
    pub score: String,
    pub verdict: String,
    pub rules: String,
    pub judge: String,
    pub excerpt: String,
    pub request_id: String,
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "injection" => "prompt injection",
        "system_prompt_leak" => "system prompt",
        "secret_leak" => "secret",
        _ => "other",
    }
}

impl From<FindingRecord> for FindingRow {
    fn from(f: FindingRecord) -> FindingRow {
        let judge = match (f.judge_verdict, f.judge_reason) {
            (Some(verdict), Some(reason)) if !reason.is_empty() => format!("{verdict}: {reason}"),
            (verdict, _) => verdict.unwrap_or_default(),
        };
        FindingRow {
            at: format::time(f.at),
            email: f.email.unwrap_or_default(),
            customer_href: f.customer_id.map(|id| format!("/admin/customers/{id}")).unwrap_or_default(),
            kind: kind_label(&f.kind),
            severity: f.severity,
            score: format!("{:.2}", f.score),
            verdict: f.verdict,
            rules: f.rules.split(',').filter(|r| !r.is_empty()).collect::<Vec<_>>().join(", "),
            judge,
            excerpt: f.excerpt,
            request_id: f.request_id,
        }
    }
}

/// The columns a findings table shows (`findings_table.html`).
pub struct Columns {
    pub customer: bool,
    pub kind: bool,
    /// Score and the judge's word: only the Sentinel scores and asks a judge.
    pub judged: bool,
}

#[derive(Deserialize)]
pub struct FindingsQuery {
    /// The previous page's last finding.
    before: Option<Uuid>,
    customer: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "findings.html")]
struct FindingsPage {
    chrome: Chrome,
    hint: &'static str,
    /// Set when the page shows one customer's findings: their email and the unfiltered page.
    only: Option<(String, &'static str)>,
    rows: Vec<FindingRow>,
    columns: Columns,
    pager: Pager,
}

/// `/admin/findings`: the Sentinel's.
pub async fn sentinel(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<FindingsQuery>,
) -> Result<Response, PageError> {
    page(&app, &session, q, FindingSource::Sentinel).await
}

/// `/admin/shield`: the output shield's removals.
pub async fn shield(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<FindingsQuery>,
) -> Result<Response, PageError> {
    page(&app, &session, q, FindingSource::Shield).await
}

async fn page(
    app: &AppState,
    session: &Session,
    q: FindingsQuery,
    source: FindingSource,
) -> Result<Response, PageError> {
    let (path, title, hint, columns) = match source {
        FindingSource::Sentinel => (
            "/admin/findings",
            "Sentinel findings",
            "Prompts the Sentinel judged as injections (verdict injection or blocked), and those its judge \
             cleared after the rules flagged them. High severity counts as a strike. Newest first; times are UTC.",
            Columns { customer: q.customer.is_none(), kind: false, judged: true },
        ),
        FindingSource::Shield => (
            "/admin/shield",
            "Shield removals",
            "What the output shield removed from answers before they reached the customer: the system prompt \
             (or its canary) and secrets such as credentials and internal addresses. Newest first; times are UTC.",
            Columns { customer: q.customer.is_none(), kind: true, judged: false },
        ),
    };
    let only = match q.customer {
        Some(id) => Some((app.store.customer_detail(id).await?.email, path)),
        None => None,
    };
    let query = FindingQuery { limit: PER_PAGE + 1, before: q.before, customer_id: q.customer, source: Some(source) };
    let rows = app.store.list_findings(&query).await?;
    let customer = q.customer.map(|id| id.to_string()).unwrap_or_default();
    let first = format!("{path}{}", query_string(&[("customer", &customer)]));
    let (rows, pager) = keyset(rows, PER_PAGE, q.before.is_some(), first, |f| {
        format!("{path}{}", query_string(&[("customer", &customer), ("before", &f.id.to_string())]))
    });
    render(&FindingsPage {
        chrome: Chrome::new(session, title, path),
        hint,
        only,
        rows: rows.into_iter().map(FindingRow::from).collect(),
        columns,
        pager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn rows_read_as_words() {
        let row = FindingRow::from(FindingRecord {
            id: Uuid::now_v7(),
            at: Utc::now(),
            request_id: "req-1".into(),
            customer_id: None,
            email: None,
            key_id: None,
            kind: "secret_leak".into(),
            severity: "medium".into(),
            score: 1.0,
            verdict: "removed".into(),
            rules: "aws_key,private_ip".into(),
            judge_verdict: Some("clean".into()),
            judge_reason: Some("a question about keys".into()),
            judge_cost_nano_usd: None,
            excerpt: "the shield removed from the answer: aws_key x1".into(),
            prompt: None,
        });
        assert_eq!((row.kind, row.score.as_str(), row.rules.as_str()), ("secret", "1.00", "aws_key, private_ip"));
        assert_eq!(row.judge, "clean: a question about keys");
        assert!(row.customer_href.is_empty() && row.email.is_empty(), "no customer, no link");
    }
}
