//! Margins per customer for a month: revenue from the ledger (payments − refunds − payment
//! fees, in cents) against upstream cost from usage records (nano-dollars), with the
//! selling-price spend (the cost with each request's markup, as booked), and prepaid credit
//! sold, used and left unused. Credit is earned when it is used, not when it is sold: the
//! margin counts the month's revenue less the credit it added and not used (a liability), so
//! a month that sells packs is not inflated by credit still to be served. Sums stay in
//! integers; dollars appear only in the output.

use crate::config::Config;
use crate::store::{CreditTotals, Store, StoreResult, UsageTotals};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;
use std::ops::Range;

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a month: use YYYY-MM")]
pub struct BadMonth(pub String);

/// `[first day of the month, first day of the next)`.
pub fn month_range(month: &str) -> Result<Range<NaiveDate>, BadMonth> {
    let bad = || BadMonth(month.chars().take(20).collect());
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (year, mon): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let start = NaiveDate::from_ymd_opt(year, mon, 1).ok_or_else(bad)?;
    let next =
        if mon == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1) } else { NaiveDate::from_ymd_opt(year, mon + 1, 1) }
            .ok_or_else(bad)?;
    Ok(start..next)
}

/// The first instant of a UTC day.
pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

pub fn current_month() -> String {
    let now = Utc::now();
    format!("{:04}-{:02}", now.year(), now.month())
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Line {
    /// The customer's id (links on the dashboard); `None` on the total line.
    #[serde(skip)]
    pub customer: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub requests: i64,
    pub byok_requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub revenue_usd: f64,
    /// What the customer was charged at selling prices (the cost with the plan's markup).
    pub spend_usd: f64,
    pub cost_usd: f64,
    pub margin_usd: f64,
    /// Margin as a share of revenue; `null` without revenue.
    pub margin_pct: Option<f64>,
    /// Requests whose model has no price: their cost is unknown, not zero.
    pub unpriced_requests: i64,
    /// Prepaid credit added in the month (packs and grants, less refunds' take-backs).
    pub credit_sold_usd: f64,
    /// Prepaid credit drawn by requests in the month.
    pub credit_used_usd: f64,
    /// Prepaid credit left at the month's end: owed to customers (a liability).
    pub credit_unused_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MarginReport {
    pub month: String,
    pub customers: Vec<Line>,
    pub total: Line,
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Nano-dollars as the dollars every report shows (to the micro-dollar).
pub fn usd_of_nano(nano: i64) -> f64 {
    round6(nano as f64 / 1e9)
}

/// Adds another customer's credit, saturating (the total line).
fn add_credit(total: &mut CreditTotals, other: &CreditTotals) {
    total.added_nano = total.added_nano.saturating_add(other.added_nano);
    total.used_nano = total.used_nano.saturating_add(other.used_nano);
    total.unused_nano = total.unused_nano.saturating_add(other.unused_nano);
}

/// One report line from usage, net revenue (cents, after refunds and fees) and credit.
fn finish(usage: &UsageTotals, revenue_cents: i64, credit: &CreditTotals) -> Line {
    // Margin in nano-dollars: cents × 10^7 − cost − credit added and not used this month
    // (earned later, when used), exact in i128.
    let deferred_nano = i128::from(credit.added_nano) - i128::from(credit.used_nano);
    let margin_nano = i128::from(revenue_cents) * 10_000_000 - i128::from(usage.cost_nano) - deferred_nano;
    Line {
        customer: None,
        email: None,
        plan: None,
        requests: usage.requests,
        byok_requests: usage.byok_requests,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        revenue_usd: revenue_cents as f64 / 100.0,
        spend_usd: usd_of_nano(usage.spend_nano),
        cost_usd: usd_of_nano(usage.cost_nano),
        margin_usd: round6(margin_nano as f64 / 1e9),
        margin_pct: (revenue_cents > 0)
            .then(|| ((margin_nano as f64 / (revenue_cents as f64 * 1e7)) * 10_000.0).round() / 100.0),
        unpriced_requests: usage.unpriced_requests,
        credit_sold_usd: usd_of_nano(credit.added_nano),
        credit_used_usd: usd_of_nano(credit.used_nano),
        credit_unused_usd: usd_of_nano(credit.unused_nano),
    }
}

pub async fn margins(store: &Store, config: &Config, month: &str) -> Result<MarginReport, anyhow::Error> {
    Ok(build(store, config, month, month_range(month)?).await?)
}

/// The report over whole UTC days (a month, or one day for the daily summary).
pub async fn build(store: &Store, config: &Config, month: &str, days: Range<NaiveDate>) -> StoreResult<MarginReport> {
    let revenue = store.revenue_totals(midnight(days.start), midnight(days.end)).await?;
    let credit = store.credit_totals(midnight(days.start), midnight(days.end)).await?;
    let usage = store.usage_totals(days).await?;
    let customers = store.customers().await?;
    // Saturating throughout: absurd totals stay at the extreme, never wrap to a negative.
    let fee = |payments: i64, count: i64| -> i64 {
        ((payments as f64 * config.payment_fee_percent / 100.0).round() as i64)
            .saturating_add(count.saturating_mul(config.payment_fee_fixed_cents))
    };
    let mut lines: HashMap<uuid::Uuid, (UsageTotals, i64, CreditTotals)> = HashMap::new();
    for u in usage {
        let customer = u.customer_id;
        lines.entry(customer).or_default().0 = u;
    }
    for r in revenue {
        lines.entry(r.customer_id).or_default().1 =
            r.payments_cents.saturating_sub(r.refunds_cents).saturating_sub(fee(r.payments_cents, r.payment_count));
    }
    // Customers whose credit did not move this month hold it still: listed only when some is left.
    for c in credit.into_iter().filter(|c| c.added_nano != 0 || c.used_nano != 0 || c.unused_nano != 0) {
        lines.entry(c.customer_id).or_default().2 = c;
    }
    let info: HashMap<_, _> = customers.into_iter().map(|c| (c.id, c)).collect();
    let (mut total_usage, mut total_revenue, mut total_credit) =
        (UsageTotals::default(), 0_i64, CreditTotals::default());
    let mut rows: Vec<Line> = lines
        .into_iter()
        .map(|(id, (usage, revenue_cents, credit))| {
            total_usage.add(&usage);
            total_revenue = total_revenue.saturating_add(revenue_cents);
            add_credit(&mut total_credit, &credit);
            let mut line = finish(&usage, revenue_cents, &credit);
            line.customer = Some(id);
            if let Some(c) = info.get(&id) {
                line.email = Some(c.email.clone());
                line.plan = c.plan.clone();
            }
            line
        })
        .collect();
    rows.sort_by(|a, b| a.margin_usd.total_cmp(&b.margin_usd).then_with(|| a.email.cmp(&b.email)));
    Ok(MarginReport {
        month: month.to_string(),
        customers: rows,
        total: finish(&total_usage, total_revenue, &total_credit),
    })
}

impl MarginReport {
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "email,plan,requests,byok_requests,prompt_tokens,completion_tokens,revenue_usd,spend_usd,cost_usd,margin_usd,margin_pct,unpriced_requests,credit_sold_usd,credit_used_usd,credit_unused_usd\n",
        );
        let mut row = |label: &str, plan: &str, l: &Line| {
            let pct = l.margin_pct.map(|p| format!("{p:.2}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{:.2},{:.6},{:.6},{:.6},{},{},{:.6},{:.6},{:.6}",
                csv_field(label),
                csv_field(plan),
                l.requests,
                l.byok_requests,
                l.prompt_tokens,
                l.completion_tokens,
                l.revenue_usd,
                l.spend_usd,
                l.cost_usd,
                l.margin_usd,
                pct,
                l.unpriced_requests,
                l.credit_sold_usd,
                l.credit_used_usd,
                l.credit_unused_usd
            );
        };
        for l in &self.customers {
            row(l.email.as_deref().unwrap_or(""), l.plan.as_deref().unwrap_or(""), l);
        }
        row("TOTAL", "", &self.total);
        out
    }

    pub fn to_table(&self) -> String {
        let mut out = format!("Margins for {} (USD)\n", self.month);
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:>9} {:>6} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12} {:>8}",
            "CUSTOMER",
            "PLAN",
            "REQUESTS",
            "BYOK",
            "PROMPT TOK",
            "COMPL TOK",
            "REVENUE",
            "SPEND",
            "COST",
            "MARGIN",
            "MARGIN%"
        );
        let mut row = |label: &str, plan: &str, l: &Line| {
            let pct = l.margin_pct.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<32} {:<8} {:>9} {:>6} {:>12} {:>12} {:>10.2} {:>12.6} {:>12.6} {:>12.6} {:>8}",
                label,
                plan,
                l.requests,
                l.byok_requests,
                l.prompt_tokens,
                l.completion_tokens,
                l.revenue_usd,
                l.spend_usd,
                l.cost_usd,
                l.margin_usd,
                pct
            );
        };
        for l in &self.customers {
            row(l.email.as_deref().unwrap_or("(unknown)"), l.plan.as_deref().unwrap_or(""), l);
        }
        row("TOTAL", "", &self.total);
        let credit = &self.total;
        if credit.credit_sold_usd != 0.0 || credit.credit_used_usd != 0.0 || credit.credit_unused_usd != 0.0 {
            let _ = writeln!(
                out,
                "prepaid credit: sold {:.6}, used {:.6}, unused {:.6} (owed to customers; earned when used, \
                 so the margin counts only what was used)",
                credit.credit_sold_usd, credit.credit_used_usd, credit.credit_unused_usd
            );
        }
        if self.total.unpriced_requests > 0 {
            let _ = writeln!(
                out,
                "note: {} requests used models with no price; their cost is unknown, not counted",
                self.total.unpriced_requests
            );
        }
        out
    }
}

fn csv_field(value: &str) -> String {
    // Quote always-safe; neutralise spreadsheet formulas in customer-controlled text.
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    format!("\"{}\"", value.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_to_utc_ranges() {
        let days = month_range("2026-12").expect("month");
        assert_eq!(midnight(days.start).to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(midnight(days.end).to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            assert!(month_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn margin_arithmetic_is_exact() {
        let usage = UsageTotals { cost_nano: 435_000, spend_nano: 565_500, ..UsageTotals::default() };
        let line = finish(&usage, 2900, &CreditTotals::default());
        assert_eq!(line.revenue_usd, 29.0);
        assert_eq!(line.spend_usd, 0.000566, "to the micro-dollar, like the cost");
        assert_eq!(line.cost_usd, 0.000435);
        assert_eq!(line.margin_usd, 28.999565);
        assert_eq!(line.margin_pct, Some(100.0));
        assert_eq!(csv_field("=cmd|x"), "\"'=cmd|x\"");
        // A $10 pack sold ($9.00 after fees), $2 of it used at a cost of $1.54: the $8 left is a
        // liability, earned when it is used, not this month.
        let credit = CreditTotals {
            added_nano: 10_000_000_000,
            used_nano: 2_000_000_000,
            unused_nano: 8_000_000_000,
            ..Default::default()
        };
        let line = finish(&UsageTotals { cost_nano: 1_540_000_000, ..UsageTotals::default() }, 900, &credit);
        assert_eq!((line.credit_sold_usd, line.credit_used_usd, line.credit_unused_usd), (10.0, 2.0, 8.0));
        assert_eq!(line.margin_usd, -0.54, "revenue 9.00 − cost 1.54 − 8.00 deferred");
        let next_month = CreditTotals { used_nano: 3_000_000_000, unused_nano: 5_000_000_000, ..Default::default() };
        let line = finish(&UsageTotals { cost_nano: 2_310_000_000, ..UsageTotals::default() }, 0, &next_month);
        assert_eq!(line.margin_usd, 0.69, "credit used next month is earned then");
    }
}
