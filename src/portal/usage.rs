//! The customer's usage: a month by day (the daily rollup the dashboard reads, drawn by the
//! dashboard's chart code) and by model, what remains of the plan's budget or quota (the same
//! month-to-date counter the gateway enforces), previous months, and a CSV of the days.

use super::session::CustomerSession;
use super::{Chrome, PortalError, Template, render};
use crate::admin::dashboard::charts::{self, LineChart};
use crate::admin::dashboard::format;
use crate::agents::accountant::{budgets, report};
use crate::app::AppState;
use crate::store::{DailyUsage, KeySearch, ModelUsage};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Months, NaiveDate, Utc};
use serde::Deserialize;
use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

/// How many months back the month picker offers.
const MONTHS_SHOWN: u32 = 12;

#[derive(Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

impl MonthQuery {
    /// The asked month (`YYYY-MM`, this one by default) and its days.
    fn resolve(&self) -> Result<(String, Range<NaiveDate>), PortalError> {
        let month = self.month.clone().unwrap_or_else(report::current_month);
        let days = report::month_range(&month).map_err(|e| PortalError::BadRequest(e.to_string()))?;
        Ok((month, days))
    }
}

pub struct MonthLink {
    pub label: String,
    pub href: String,
    pub current: bool,
}

pub struct ModelRow {
    pub model: String,
    pub requests: String,
    pub tokens: String,
    pub spend: String,
}

impl From<&ModelUsage> for ModelRow {
    fn from(m: &ModelUsage) -> ModelRow {
        let unpriced = if m.unpriced_requests > 0 {
            format!(" ({} unpriced)", format::count(m.unpriced_requests))
        } else {
            String::new()
        };
        ModelRow {
            model: if m.model.is_empty() { "(none)".into() } else { m.model.clone() },
            requests: format::count(m.requests),
            tokens: format!("{} / {}", format::count(m.prompt_tokens), format::count(m.completion_tokens)),
            spend: format!("{}{unpriced}", format::usd(m.cost_nano as f64 / 1e9)),
        }
    }
}

#[derive(Template)]
#[template(path = "portal_usage.html")]
struct UsagePage {
    chrome: Chrome,
    month: String,
    months: Vec<MonthLink>,
    summary: Vec<(&'static str, String)>,
    charts: Vec<LineChart>,
    models: Vec<ModelRow>,
    csv_href: String,
}

/// This month and the eleven before it, newest first.
fn month_links(shown: &str) -> Vec<MonthLink> {
    let this = Utc::now().date_naive().with_day(1).unwrap_or_else(|| Utc::now().date_naive());
    (0..MONTHS_SHOWN)
        .filter_map(|back| this.checked_sub_months(Months::new(back)))
        .map(|d| {
            let label = format!("{:04}-{:02}", d.year(), d.month());
            MonthLink { href: format!("/portal?month={label}"), current: label == shown, label }
        })
        .collect()
}

/// What remains of the plan's monthly budget and token quota this month, from the counter
/// the gateway checks, and when they reset. The plan is that of the customer's newest key
/// that is not revoked.
async fn limits(
    app: &AppState,
    session: &CustomerSession,
    next_month: NaiveDate,
) -> Result<Vec<(&'static str, String)>, PortalError> {
    let search = KeySearch { customer: Some(session.customer_id), ..KeySearch::default() };
    let keys = app.store.search_keys(&search, 100, 0).await?;
    let Some(plan) = keys.iter().find(|k| k.status != "revoked").and_then(|k| app.config.plan(&k.plan)) else {
        return Ok(Vec::new());
    };
    let (spent_nano, tokens) = app.store.month_to_date(session.customer_id, &budgets::month_key(Utc::now())).await?;
    let mut out = vec![("Plan", plan.name.clone())];
    if let Some(budget) = plan.monthly_budget_usd {
        out.push(("Budget left", format::usd((budget - spent_nano as f64 / 1e9).max(0.0))));
    }
    if let Some(quota) = plan.monthly_token_quota {
        let left = quota.saturating_sub(u64::try_from(tokens).unwrap_or(0));
        out.push(("Tokens left", format::count(i64::try_from(left).unwrap_or(i64::MAX))));
    }
    if plan.monthly_budget_usd.is_some() || plan.monthly_token_quota.is_some() {
        out.push(("Resets", format!("{next_month} 00:00 UTC")));
    }
    Ok(out)
}

fn sum(daily: &[DailyUsage], f: fn(&DailyUsage) -> i64) -> i64 {
    daily.iter().map(f).fold(0, i64::saturating_add)
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    Query(q): Query<MonthQuery>,
) -> Result<Response, PortalError> {
    let (month, days) = q.resolve()?;
    let (from, to) = (report::midnight(days.start), report::midnight(days.end));
    let (daily, models) = tokio::join!(
        app.store.daily_usage(session.customer_id, days.clone()),
        app.store.usage_by_model(session.customer_id, from, to),
    );
    let (daily, models) = (daily?, models?);
    let mut summary = vec![
        ("Requests", format::count(sum(&daily, |u| u.requests))),
        ("Tokens", format::count(sum(&daily, |u| u.prompt_tokens.saturating_add(u.completion_tokens)))),
        ("Spend", format::usd(sum(&daily, |u| u.cost_nano) as f64 / 1e9)),
    ];
    if month == report::current_month() {
        summary.extend(limits(&app, &session, days.end).await?);
    }
    render(&UsagePage {
        chrome: Chrome::new(&app, &session, "Usage", "/portal").await?,
        months: month_links(&month),
        charts: charts::daily_usage(&month, &days, &daily, "Spend"),
        models: models.iter().map(ModelRow::from).collect(),
        csv_href: format!("/portal/usage.csv?month={month}"),
        month,
        summary,
    })
}

/// The month by day as CSV, for the customer's own books.
pub async fn csv(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    Query(q): Query<MonthQuery>,
) -> Result<Response, PortalError> {
    let (month, days) = q.resolve()?;
    let daily = app.store.daily_usage(session.customer_id, days).await?;
    let mut out = String::from("day,requests,errors,prompt_tokens,completion_tokens,spend_usd,unpriced_requests\n");
    for d in &daily {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.6},{}",
            d.day,
            d.requests,
            d.errors,
            d.prompt_tokens,
            d.completion_tokens,
            d.cost_nano as f64 / 1e9,
            d.unpriced_requests
        );
    }
    let disposition = format!("attachment; filename=\"omi-usage-{month}.csv\"");
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        out,
    )
        .into_response())
}
