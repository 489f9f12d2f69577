//! Money: the Accountant's margins report for a month (the same builder as
//! `omi report margins` and `/admin/api/margins`), as a chart, a sortable table that needs
//! no script (`?sort=` links), totals, losses highlighted and unpriced usage flagged.

use super::charts::{self, BarChart, BarData};
use super::session::Session;
use super::{Chrome, Notice, PageError, Pager, Template, format, page_link, paged, query_string, render};
use crate::agents::accountant::report::{self, Line, MarginReport, usd_of_nano};
use crate::app::AppState;
use crate::config::UnpricedModels;
use crate::store::CreditLevel;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Months;
use serde::Deserialize;
use std::sync::Arc;

const PER_PAGE: i64 = 100;
/// Customers in the chart: the ones that cost the most.
const CHART_CUSTOMERS: usize = 12;

/// Sortable columns: query name, heading, numeric.
const COLUMNS: &[(&str, &str, bool)] = &[
    ("email", "Customer", false),
    ("plan", "Plan", false),
    ("requests", "Requests", true),
    ("revenue", "Revenue", true),
    ("spend", "Spend (selling price)", true),
    ("cost", "Upstream cost", true),
    ("margin", "Margin", true),
    ("margin_pct", "Margin %", true),
];

#[derive(Deserialize)]
pub struct MoneyQuery {
    month: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: u32,
}

pub struct SortHeader {
    pub label: &'static str,
    pub href: String,
    /// `aria-sort`: `ascending`, `descending` or `none`.
    pub aria_sort: &'static str,
    pub numeric: bool,
}

pub struct MoneyRow {
    pub email: String,
    pub href: Option<String>,
    pub plan: String,
    pub requests: String,
    pub byok_requests: String,
    pub revenue: String,
    pub spend: String,
    pub cost: String,
    pub margin: String,
    pub margin_pct: String,
    pub loss: bool,
    pub unpriced: i64,
    pub credit_sold: String,
    pub credit_used: String,
    pub credit_unused: String,
}

impl MoneyRow {
    fn of(line: &Line) -> MoneyRow {
        MoneyRow {
            email: line.email.clone().unwrap_or_else(|| "(unknown customer)".into()),
            href: line.customer.map(|id| format!("/admin/customers/{id}")),
            plan: line.plan.clone().unwrap_or_default(),
            requests: format::count(line.requests),
            byok_requests: format::count(line.byok_requests),
            revenue: format::usd(line.revenue_usd),
            spend: format::usd(line.spend_usd),
            cost: format::usd(line.cost_usd),
            margin: format::usd(line.margin_usd),
            margin_pct: line.margin_pct.map(format::percent).unwrap_or_else(|| "–".into()),
            loss: line.margin_usd < 0.0,
            unpriced: line.unpriced_requests,
            credit_sold: format::usd(line.credit_sold_usd),
            credit_used: format::usd(line.credit_used_usd),
            credit_unused: format::usd(line.credit_unused_usd),
        }
    }
}

#[derive(Template)]
#[template(path = "money.html")]
struct MoneyPage {
    chrome: Chrome,
    month: String,
    prev_href: String,
    next_href: Option<String>,
    csv_href: String,
    q: String,
    sort: String,
    dir: String,
    headers: Vec<SortHeader>,
    rows: Vec<MoneyRow>,
    pager: Pager,
    total: MoneyRow,
    customers: usize,
    losses: usize,
    chart: BarChart,
    /// Routed models without a price: (model, provider).
    unpriced_models: Vec<(String, String)>,
    /// Where unlisted models go (they may be unpriced too).
    catch_all: Option<String>,
    /// Capped plans refuse unpriced models (`unpriced_models = "refuse"`).
    refused_on_capped_plans: bool,
    /// Prepaid customers told their credit is low or used up, lowest balance first.
    low_credit: Vec<LowCreditRow>,
}

/// The most low-credit customers the page lists.
const LOW_CREDIT_SHOWN: i64 = 50;

pub struct LowCreditRow {
    pub email: String,
    pub href: String,
    pub balance: String,
    pub exhausted: bool,
}

fn sort_lines(lines: &mut [Line], column: &str, descending: bool) {
    lines.sort_by(|a, b| {
        let order = match column {
            "email" => a.email.cmp(&b.email),
            "plan" => a.plan.cmp(&b.plan),
            "requests" => a.requests.cmp(&b.requests),
            "revenue" => a.revenue_usd.total_cmp(&b.revenue_usd),
            "spend" => a.spend_usd.total_cmp(&b.spend_usd),
            "cost" => a.cost_usd.total_cmp(&b.cost_usd),
            "margin_pct" => {
                a.margin_pct.unwrap_or(f64::NEG_INFINITY).total_cmp(&b.margin_pct.unwrap_or(f64::NEG_INFINITY))
            }
            _ => a.margin_usd.total_cmp(&b.margin_usd),
        };
        let order = order.then_with(|| a.email.cmp(&b.email));
        if descending { order.reverse() } else { order }
    });
}

fn chart(report: &MarginReport) -> BarChart {
    let mut by_cost: Vec<&Line> = report.customers.iter().collect();
    by_cost.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd).then_with(|| a.email.cmp(&b.email)));
    by_cost.truncate(CHART_CUSTOMERS);
    let losses = report.customers.iter().filter(|l| l.margin_usd < 0.0).count();
    let description = format!(
        "Revenue and upstream cost of the {} customers that cost the most in {}; {} of {} customers are unprofitable this month.",
        by_cost.len(),
        report.month,
        losses,
        report.customers.len()
    );
    charts::bar_chart(
        "margins",
        "Revenue and upstream cost, top customers by cost",
        description,
        format::usd,
        by_cost
            .into_iter()
            .map(|l| BarData {
                label: l.email.clone().unwrap_or_else(|| "(unknown customer)".into()),
                note: format!("margin {}", format::usd(l.margin_usd)),
                loss: l.margin_usd < 0.0,
                first: l.revenue_usd,
                second: l.cost_usd,
            })
            .collect(),
    )
}

/// The report for `month` (default: this month), with the month and its days.
async fn margins(
    app: &AppState,
    month: Option<String>,
) -> Result<(String, std::ops::Range<chrono::NaiveDate>, MarginReport), PageError> {
    let month = month.filter(|m| !m.is_empty()).unwrap_or_else(report::current_month);
    let days = report::month_range(&month).map_err(|e| PageError::BadRequest(e.to_string()))?;
    let report = report::build(&app.store, &app.config, &month, days.clone()).await?;
    Ok((month, days, report))
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<MoneyQuery>,
) -> Result<Response, PageError> {
    let (month, days, report) = margins(&app, q.month).await?;
    let column = COLUMNS.iter().find(|c| Some(c.0) == q.sort.as_deref()).map_or("margin", |c| c.0);
    let descending = q.dir.as_deref() == Some("desc");
    let dir = if descending { "desc" } else { "asc" };
    let needle = q.q.trim().to_lowercase();
    let mut lines: Vec<Line> = report
        .customers
        .iter()
        .filter(|l| needle.is_empty() || l.email.as_deref().is_some_and(|e| e.to_lowercase().contains(&needle)))
        .cloned()
        .collect();
    sort_lines(&mut lines, column, descending);
    let link = |sort: &str, dir: &str, page: u32| {
        page_link("/admin/money", &[("month", &month), ("q", q.q.trim()), ("sort", sort), ("dir", dir)], page)
    };
    let headers = COLUMNS
        .iter()
        .map(|&(name, label, numeric)| {
            let active = name == column;
            // A click on the active column flips it; a new column starts with the worst (or A) first.
            let next_dir = match (active, descending) {
                (true, false) => "desc",
                (true, true) => "asc",
                (false, _) if matches!(name, "revenue" | "requests" | "spend" | "cost") => "desc",
                (false, _) => "asc",
            };
            SortHeader {
                label,
                href: link(name, next_dir, 0),
                aria_sort: match (active, descending) {
                    (false, _) => "none",
                    (true, false) => "ascending",
                    (true, true) => "descending",
                },
                numeric,
            }
        })
        .collect();
    let page_lines: Vec<MoneyRow> = lines.iter().map(MoneyRow::of).collect();
    let (rows, pager) = paged(page_lines, q.page, PER_PAGE, |n| link(column, dir, n));
    let mut chrome = Chrome::new(&session, format!("Money · {month}"), "/admin/money");
    if report.total.unpriced_requests > 0 {
        chrome.notices.push(Notice {
            level: "warning",
            text: format!(
                "Requests to models with no price this month: {}. Their cost is unknown and not counted, so the margins of the flagged customers are overstated. Add the prices in omi.toml.",
                format::count(report.total.unpriced_requests)
            ),
        });
    }
    let low_credit = app
        .store
        .low_credit_customers(LOW_CREDIT_SHOWN)
        .await?
        .into_iter()
        .map(|low| LowCreditRow {
            href: format!("/admin/customers/{}", low.customer_id),
            balance: format::usd(usd_of_nano(low.balance_nano)),
            exhausted: low.notified == CreditLevel::Exhausted.as_str(),
            email: low.email,
        })
        .collect();
    let prev = days.start.checked_sub_months(Months::new(1)).map(|d| d.format("%Y-%m").to_string());
    let next = (days.end <= chrono::Utc::now().date_naive()).then(|| days.end.format("%Y-%m").to_string());
    render(&MoneyPage {
        chrome,
        prev_href: format!("/admin/money{}", query_string(&[("month", prev.as_deref().unwrap_or(""))])),
        next_href: next.map(|m| format!("/admin/money{}", query_string(&[("month", &m)]))),
        csv_href: format!("/admin/money.csv{}", query_string(&[("month", &month)])),
        q: q.q.trim().to_string(),
        sort: column.to_string(),
        dir: dir.to_string(),
        headers,
        rows,
        pager,
        total: MoneyRow { email: "Total".into(), ..MoneyRow::of(&report.total) },
        customers: report.customers.len(),
        losses: report.customers.iter().filter(|l| l.margin_usd < 0.0).count(),
        chart: chart(&report),
        month,
        unpriced_models: app.providers.unpriced(&app.prices).map(|(m, p)| (m.to_owned(), p.to_owned())).collect(),
        catch_all: app.providers.catch_all_name().map(str::to_owned),
        refused_on_capped_plans: app.config.unpriced_models == UnpricedModels::Refuse,
        low_credit,
    })
}

#[derive(Deserialize)]
pub struct CsvQuery {
    month: Option<String>,
}

/// The report's own CSV (formula-safe), as a download.
pub async fn csv(
    State(app): State<Arc<AppState>>,
    _session: Session,
    Query(q): Query<CsvQuery>,
) -> Result<Response, PageError> {
    let (month, _, report) = margins(&app, q.month).await?;
    // `month` passed month_range: digits and a dash only, safe in a header.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"omi-margins-{month}.csv\""))
        .map_err(|_| PageError::Internal("file name"))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        report.to_csv(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(email: &str, margin: f64) -> Line {
        Line { email: Some(email.into()), margin_usd: margin, ..Line::default() }
    }

    #[test]
    fn sorts_by_column_and_direction() {
        let mut lines = vec![line("b@x", 5.0), line("a@x", -1.0), line("c@x", 2.0)];
        sort_lines(&mut lines, "margin", false);
        assert_eq!(lines[0].email.as_deref(), Some("a@x"), "worst margin first");
        sort_lines(&mut lines, "email", true);
        assert_eq!(lines[0].email.as_deref(), Some("c@x"));
    }
}
