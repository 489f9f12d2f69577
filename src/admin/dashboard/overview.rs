//! The overview: is the service healthy? Firing alerts first; then requests per minute,
//! error rate, latency and the gateway's own overhead (total − upstream time) over the last
//! hour (by minute) and day (by hour), read from the traffic rollup (requests per time bucket
//! and latency bin, `store/traffic.rs`); percentiles come from those histograms here, since
//! SQLite and PostgreSQL share no percentile function. Each provider's circuit and house keys
//! are read from this instance's memory (each instance keeps its own).

use super::charts::{self, LineChart, SeriesData};
use super::session::Session;
use super::{Chrome, Notice, PageError, Template, alerts, format, render};
use crate::app::AppState;
use crate::providers::Providers;
use crate::providers::keys::PoolHealth;
use crate::store::{Bucket, Store, StoreResult, bin_bounds};
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The time covered by one set of charts: `buckets` steps ending with the current one.
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: Duration,
    buckets: usize,
    bucket: Bucket,
}

impl Window {
    fn last_hour(now: DateTime<Utc>) -> Window {
        Window::ending(now, 60, Bucket::Minute)
    }

    fn last_day(now: DateTime<Utc>) -> Window {
        Window::ending(now, 24, Bucket::Hour)
    }

    fn ending(now: DateTime<Utc>, buckets: usize, bucket: Bucket) -> Window {
        let step = Duration::seconds(bucket.seconds());
        let current = now.duration_trunc(step).unwrap_or(now);
        let start = current - step * i32::try_from(buckets - 1).unwrap_or(0);
        Window { start, end: now, step, buckets, bucket }
    }

    /// Where a bucket ([`Bucket::key`]) falls in the window.
    fn index_of(&self, bucket: i64) -> Option<usize> {
        usize::try_from(bucket - self.bucket.key(self.start)).ok().filter(|i| *i < self.buckets)
    }

    /// Minutes of bucket `i` that have passed (the current bucket is still filling).
    fn minutes_in(&self, i: usize) -> f64 {
        let from = self.start + self.step * i32::try_from(i).unwrap_or(0);
        let covered = (self.end - from).min(self.step);
        (covered.num_seconds() as f64 / 60.0).max(1.0 / 60.0)
    }
}

/// Requests of one bucket (or a whole window) and their latency histograms.
#[derive(Default, Clone)]
struct Stats {
    requests: i64,
    errors: i64,
    latency: BTreeMap<i64, i64>,
    overhead: BTreeMap<i64, i64>,
}

impl Stats {
    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 * 100.0 / self.requests as f64)
    }
}

/// The `p`-th percentile (0..1), interpolated within its bin.
fn percentile(histogram: &BTreeMap<i64, i64>, p: f64) -> Option<f64> {
    let total: i64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    let rank = (p * total as f64).max(1.0);
    let mut below = 0.0;
    for (&bin, &count) in histogram {
        let count = count as f64;
        if below + count >= rank {
            let (low, high) = bin_bounds(bin);
            return Some(low + (high - low) * ((rank - below) / count));
        }
        below += count;
    }
    histogram.keys().next_back().map(|&bin| bin_bounds(bin).1)
}

async fn traffic(store: &Store, window: &Window) -> StoreResult<(Vec<Stats>, Stats)> {
    let rows = store.traffic(window.start, window.end, window.bucket).await?;
    let mut buckets = vec![Stats::default(); window.buckets];
    let mut total = Stats::default();
    for row in rows {
        let Some(i) = window.index_of(row.bucket) else { continue };
        for stats in [&mut buckets[i], &mut total] {
            if row.series == 0 {
                stats.requests += row.requests;
                stats.errors += row.errors;
                *stats.latency.entry(row.bin).or_default() += row.requests;
            } else {
                *stats.overhead.entry(row.bin).or_default() += row.requests;
            }
        }
    }
    Ok((buckets, total))
}

pub struct SummaryRow {
    pub label: &'static str,
    pub hour: String,
    pub day: String,
}

fn summary(hour: &Stats, day: &Stats, hour_minutes: f64, day_minutes: f64) -> Vec<SummaryRow> {
    let or_dash = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
    let row = |label, f: &dyn Fn(&Stats, f64) -> String| SummaryRow {
        label,
        hour: f(hour, hour_minutes),
        day: f(day, day_minutes),
    };
    vec![
        row("Requests", &|s, _| format::count(s.requests)),
        row("Requests per minute", &|s, minutes| format!("{:.1}", s.requests as f64 / minutes)),
        row("Error rate (5xx)", &|s, _| or_dash(s.error_rate(), format::percent)),
        row("Latency p50", &|s, _| or_dash(percentile(&s.latency, 0.5), format::micros)),
        row("Latency p95", &|s, _| or_dash(percentile(&s.latency, 0.95), format::micros)),
        row("Gateway overhead p50", &|s, _| or_dash(percentile(&s.overhead, 0.5), format::micros)),
        row("Gateway overhead p95", &|s, _| or_dash(percentile(&s.overhead, 0.95), format::micros)),
    ]
}

fn peak_sentence(what: &str, labels: &[String], values: &[Option<f64>], format: fn(f64) -> String) -> String {
    let peak = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).max_by(|a, b| a.1.total_cmp(&b.1));
    match peak {
        Some((i, v)) => format!("{what}: highest {} at {} UTC.", format(v), labels[i]),
        None => format!("{what}: no requests in this period."),
    }
}

fn charts(window: &Window, buckets: &[Stats]) -> Vec<LineChart> {
    let labels: Vec<String> = (0..window.buckets)
        .map(|i| (window.start + window.step * i32::try_from(i).unwrap_or(0)).format("%H:%M").to_string())
        .collect();
    let label_every = if window.bucket == Bucket::Minute { 10 } else { 4 };
    let per_minute: Vec<Option<f64>> =
        buckets.iter().enumerate().map(|(i, s)| Some(s.requests as f64 / window.minutes_in(i))).collect();
    let errors: Vec<Option<f64>> = buckets.iter().map(Stats::error_rate).collect();
    let series = |f: fn(&Stats) -> &BTreeMap<i64, i64>, p: f64| -> Vec<Option<f64>> {
        buckets.iter().map(|s| percentile(f(s), p)).collect()
    };
    let (lat50, lat95) = (series(|s| &s.latency, 0.5), series(|s| &s.latency, 0.95));
    let (over50, over95) = (series(|s| &s.overhead, 0.5), series(|s| &s.overhead, 0.95));
    let rate = |x: f64| format!("{x:.1}");
    vec![
        charts::line_chart(
            "rpm",
            "Requests per minute",
            peak_sentence("Requests per minute", &labels, &per_minute, rate),
            &labels,
            label_every,
            rate,
            vec![SeriesData { name: "requests / min", class: "s1", values: per_minute.clone() }],
        ),
        charts::line_chart(
            "errors",
            "Error rate (5xx)",
            peak_sentence("Error rate", &labels, &errors, format::percent),
            &labels,
            label_every,
            format::percent,
            vec![SeriesData { name: "5xx share", class: "s3", values: errors.clone() }],
        ),
        charts::line_chart(
            "latency",
            "Latency",
            peak_sentence("Latency p95", &labels, &lat95, format::micros),
            &labels,
            label_every,
            format::micros,
            vec![
                SeriesData { name: "p50", class: "s1", values: lat50 },
                SeriesData { name: "p95", class: "s2", values: lat95 },
            ],
        ),
        charts::line_chart(
            "overhead",
            "Gateway overhead (total − upstream time)",
            peak_sentence("Overhead p95", &labels, &over95, format::micros),
            &labels,
            label_every,
            format::micros,
            vec![
                SeriesData { name: "p50", class: "s1", values: over50 },
                SeriesData { name: "p95", class: "s2", values: over95 },
            ],
        ),
    ]
}

/// One provider's state in this instance: its circuit and its house keys out of the pool.
pub struct ProviderRow {
    pub name: String,
    pub circuit_open: bool,
    pub keys: String,
}

fn provider_rows(providers: &Providers, now: tokio::time::Instant) -> Vec<ProviderRow> {
    providers
        .iter()
        .map(|provider| ProviderRow {
            name: provider.name.to_string(),
            circuit_open: provider.circuit.is_open(),
            keys: keys_sentence(provider.house_keys.health(now)),
        })
        .collect()
}

fn keys_sentence(health: PoolHealth) -> String {
    if health.keys == 0 {
        return "none (customers' own keys only)".into();
    }
    let mut sentence = format!("{} of {} serving", health.keys - health.resting - health.refused, health.keys);
    if health.resting > 0 {
        sentence.push_str(&format!(", {} resting after a 429", health.resting));
    }
    if health.refused > 0 {
        sentence.push_str(&format!(", {} refused (401/403), out of the pool", health.refused));
    }
    sentence
}

/// Firing alerts shown on the overview; the alerts page lists them all.
const OVERVIEW_ALERTS: i64 = 10;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    /// Firing alerts, shown first.
    alerts: Vec<Notice>,
    /// More alerts are firing than shown.
    more_alerts: bool,
    day_view: bool,
    summary: Vec<SummaryRow>,
    /// Each provider's circuit and keys, as this instance sees them.
    providers: Vec<ProviderRow>,
    charts: Vec<LineChart>,
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    range: Option<String>,
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<OverviewQuery>,
) -> Result<Response, PageError> {
    let now = Utc::now();
    let (hour, day) = (Window::last_hour(now), Window::last_day(now));
    let (hour_traffic, day_traffic, firing) = tokio::join!(
        traffic(&app.store, &hour),
        traffic(&app.store, &day),
        alerts::firing_notices(&app.store, OVERVIEW_ALERTS)
    );
    let ((hour_buckets, hour_total), (day_buckets, day_total)) = (hour_traffic?, day_traffic?);
    let (alerts, more_alerts) = firing?;
    let minutes = |w: &Window| ((w.end - w.start).num_seconds() as f64 / 60.0).max(1.0);
    let day_view = q.range.as_deref() == Some("day");
    let charts = if day_view { charts(&day, &day_buckets) } else { charts(&hour, &hour_buckets) };
    render(&OverviewPage {
        chrome: Chrome::new(&session, "Overview", "/admin"),
        alerts,
        more_alerts,
        day_view,
        summary: summary(&hour_total, &day_total, minutes(&hour), minutes(&day)),
        providers: provider_rows(&app.providers, tokio::time::Instant::now()),
        charts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    #[test]
    fn percentiles_interpolate_within_bins() {
        // 100 requests in [1000, 1100) µs (bin 410) and 100 in [2000, 2100) µs (bin 420).
        let histogram = BTreeMap::from([(410, 100), (420, 100)]);
        assert_eq!(percentile(&histogram, 0.5), Some(1100.0));
        assert_eq!(percentile(&histogram, 0.95), Some(2090.0));
        assert_eq!(percentile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn buckets_land_in_place() {
        let now = NaiveDateTime::parse_from_str("2026-03-01 12:34:56", "%Y-%m-%d %H:%M:%S").expect("time").and_utc();
        let at = |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").expect("time").and_utc();
        let hour = Window::last_hour(now);
        assert_eq!(hour.index_of(Bucket::Minute.key(now)), Some(59));
        assert_eq!(hour.index_of(Bucket::Minute.key(at("2026-03-01 11:35:00"))), Some(0));
        assert_eq!(hour.index_of(Bucket::Minute.key(at("2026-03-01 11:34:59"))), None);
        assert_eq!(hour.index_of(Bucket::Minute.key(now) + 1), None, "a clock ahead of this one");
        let day = Window::last_day(now);
        assert_eq!(day.index_of(Bucket::Hour.key(now)), Some(23));
        assert_eq!(day.index_of(Bucket::Hour.key(at("2026-02-28 13:59:59"))), Some(0));
        assert!((day.minutes_in(23) - 34.9333).abs() < 0.01, "the current hour is partial");
    }
}
