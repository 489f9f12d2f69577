//! The Accountant: books every request that reached the gateway with a valid key, prices it
//! (house requests only; BYOK costs the house nothing; an unpriced model is "unknown", never
//! $0), writes the records in batches off the request path, keeps month-to-date counters for
//! budgets, produces the margins report and the daily summary, and keeps the raw records'
//! partitions and retention (`upkeep`).

pub mod budgets;
pub mod credits;
pub mod report;
pub mod upkeep;

use crate::billing::prices::{PriceTable, total_tokens};
use crate::events::{Event, EventBus, RequestEvent, Subscription};
use crate::store::{IdleLane, LaneError, Store, StoreResult, UsageRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How the writer batches and how much it may hold while the database is away.
#[derive(Clone, Copy, Debug)]
pub struct WriterSettings {
    pub flush_every: Duration,
    pub batch: usize,
    /// Records held in memory while the database is down; beyond, new ones are dropped and counted.
    pub max_buffered: usize,
    /// How long the final flush at shutdown keeps retrying a failing database.
    pub shutdown_retry: Duration,
    /// On SQLite, batches are written on the store's idle lane (a connection whose thread only
    /// runs when requests leave a core free), within this budget; past it the batch is
    /// rolled back and written on the normal pool. `None`: always the normal pool.
    pub idle_lane_budget: Option<Duration>,
}

/// After the idle lane ran out of time (the machine is saturated), how long batches go
/// straight to the normal pool before the lane is tried again.
const IDLE_LANE_REST: Duration = Duration::from_secs(10);

impl Default for WriterSettings {
    fn default() -> WriterSettings {
        WriterSettings {
            flush_every: Duration::from_millis(500),
            batch: 2000,
            max_buffered: 200_000,
            shutdown_retry: Duration::from_secs(10),
            // Three times what a full batch takes on a free core (2,000 records, ~30 ms), and
            // short next to the 5 s other writers wait for SQLite's lock. On a saturated machine
            // the lane runs out of it, and what queues meanwhile shows in the RSS's peaks: 250 ms
            // gave peaks of 47.9-56.4 MiB, 100 ms 45.6-47.7 (bench/README.md, "Serving lanes").
            idle_lane_budget: Some(Duration::from_millis(100)),
        }
    }
}

/// The usage record of a request, or `None` when it never got past authentication.
pub fn record_of(event: &RequestEvent, prices: &PriceTable) -> Option<UsageRecord> {
    let (key_id, customer_id) = (event.key_id?, event.customer_id?);
    let usage = event.usage.unwrap_or_default();
    let cost_nano = if event.byok || total_tokens(&usage) == 0 {
        Some(0)
    } else {
        event
            .model
            .as_deref()
            .and_then(|model| prices.get(model))
            .map(|price| i64::try_from(price.cost(&usage)).unwrap_or(i64::MAX))
    };
    let plan = event.plan.clone().unwrap_or_else(|| Arc::from(crate::DEFAULT_PLAN));
    // Booked with the record: a later markup change never rewrites what was sold. BYOK costs
    // the house nothing and is sold for nothing.
    let spend_nano = cost_nano.map(|cost| prices.markup(&plan).selling_price(cost));
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Some(UsageRecord {
        id: Uuid::now_v7(),
        request_id: Arc::clone(&event.request_id),
        at: event.at,
        key_id,
        customer_id,
        plan,
        route: Some(Arc::from(event.route)),
        model: event.model.as_deref().map(Arc::from),
        provider: event.provider.clone(),
        prompt_tokens: count(usage.prompt_tokens),
        cached_tokens: count(usage.cached_tokens),
        cache_write_tokens: count(usage.cache_write_tokens),
        completion_tokens: count(usage.completion_tokens),
        cost_nano,
        spend_nano,
        status: i32::from(event.status),
        latency_us: micros(event.total),
        upstream_us: event.upstream.map(micros),
        streamed: event.streamed,
        byok: event.byok,
        usage_estimated: event.usage_estimated,
        aborted: event.aborted,
        attempts: i32::try_from(event.attempts).unwrap_or(i32::MAX),
    })
}

/// Once a day (across all instances: the first to claim the day posts), publishes
/// yesterday's books for the Hawk.
pub fn spawn_daily_summary(
    store: Store,
    config: std::sync::Arc<crate::config::Config>,
    events: EventBus,
    shutdown: tokio_util::sync::CancellationToken,
) -> JoinHandle<()> {
    crate::tasks::owned(async move {
        let mut ticker = crate::ticker::Ticker::new(Duration::from_secs(600), shutdown);
        while ticker.tick().await {
            let today = chrono::Utc::now().date_naive();
            let Some(yesterday) = today.pred_opt() else { continue };
            let day = yesterday.to_string();
            match store.claim_daily_summary(&day).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "daily summary claim failed");
                    continue;
                }
            }
            match report::build(&store, &config, &day, yesterday..today).await {
                Ok(books) => events.publish(Event::DailySummary(Box::new(summary_of(yesterday, &books)))),
                Err(e) => tracing::warn!(error = %e, "daily summary failed"),
            }
        }
    })
}

pub fn summary_of(day: chrono::NaiveDate, books: &report::MarginReport) -> crate::events::DailySummary {
    let mut by_cost: Vec<_> = books.customers.iter().filter(|l| l.cost_usd > 0.0).collect();
    by_cost.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd));
    let name = |l: &report::Line| l.email.clone().unwrap_or_else(|| "(unknown)".into());
    crate::events::DailySummary {
        day,
        revenue_usd: books.total.revenue_usd,
        cost_usd: books.total.cost_usd,
        margin_usd: books.total.margin_usd,
        top_customers_by_cost: by_cost.iter().take(5).map(|l| (name(l), l.cost_usd)).collect(),
        unprofitable_customers: books.customers.iter().filter(|l| l.margin_usd < 0.0).map(name).collect(),
        unpriced_requests: u64::try_from(books.total.unpriced_requests).unwrap_or(0),
    }
}

pub fn spawn_writer(events: &EventBus, store: Store, prices: PriceTable, settings: WriterSettings) -> JoinHandle<()> {
    let rx = events.subscribe("accountant", 65_536);
    let buffered = metrics::gauge!("omi_usage_buffered");
    let idle_lane = settings.idle_lane_budget.and_then(|_| store.idle_lane());
    let writer = Writer {
        store,
        idle_lane,
        idle_lane_rests_until: None,
        prices,
        settings,
        events: events.clone(),
        buffer: Vec::new(),
        buffered,
        dropped: 0,
    };
    crate::tasks::owned(writer.run(rx))
}

struct Writer {
    store: Store,
    idle_lane: Option<IdleLane>,
    idle_lane_rests_until: Option<tokio::time::Instant>,
    prices: PriceTable,
    settings: WriterSettings,
    events: EventBus,
    buffer: Vec<UsageRecord>,
    /// `omi_usage_buffered`, kept: it is set on every event.
    buffered: metrics::Gauge,
    dropped: u64,
}

impl Writer {
    async fn run(mut self, mut rx: Subscription) {
        let mut tick = tokio::time::interval(self.settings.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::ZERO;
        let mut retry_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        self.take(&event);
                        if self.buffer.len() >= self.settings.batch && tokio::time::Instant::now() >= retry_at {
                            backoff = self.flush(backoff).await;
                            retry_at = tokio::time::Instant::now() + backoff;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if tokio::time::Instant::now() >= retry_at {
                        backoff = self.flush(backoff).await;
                        retry_at = tokio::time::Instant::now() + backoff;
                    }
                }
            }
        }
        // Shutdown: everything queued is written before the process exits, at normal priority.
        self.idle_lane = None;
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_retry;
        while !self.buffer.is_empty() {
            backoff = self.flush(backoff).await;
            if self.buffer.is_empty() || tokio::time::Instant::now() + backoff > deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
        }
        if !self.buffer.is_empty() {
            tracing::error!(records = self.buffer.len(), "database unreachable at shutdown: usage records lost");
            self.count_dropped(self.buffer.len() as u64);
        }
    }

    fn take(&mut self, event: &Event) {
        let Event::Request(request) = event else { return };
        let Some(record) = record_of(request, &self.prices) else { return };
        if self.buffer.len() >= self.settings.max_buffered {
            self.count_dropped(1);
            return;
        }
        self.buffer.push(record);
        self.buffered.set(self.buffer.len() as f64);
    }

    /// Writes the buffer; returns the delay before the next attempt (zero after success).
    async fn flush(&mut self, backoff: Duration) -> Duration {
        if self.buffer.is_empty() {
            return Duration::ZERO;
        }
        match self.write_buffer().await {
            Ok(()) => {
                metrics::counter!("omi_usage_records_written_total").increment(self.buffer.len() as u64);
                self.buffer.clear();
                self.buffered.set(0.0);
                Duration::ZERO
            }
            Err(e) => {
                let next = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                tracing::warn!(error = %e, held = self.buffer.len(), retry_in = ?next, "usage write failed; holding records");
                next
            }
        }
    }

    /// On the idle lane while it keeps within its budget, else on the normal pool.
    async fn write_buffer(&mut self) -> StoreResult<()> {
        let now = tokio::time::Instant::now();
        if let (Some(lane), Some(budget)) = (&mut self.idle_lane, self.settings.idle_lane_budget)
            && self.idle_lane_rests_until.is_none_or(|until| now >= until)
        {
            match lane.insert_usage(&self.buffer, budget).await {
                Ok(()) => return Ok(()),
                Err(LaneError::OutOfTime(_)) => {
                    metrics::counter!("omi_usage_idle_lane_timeouts_total").increment(1);
                    self.idle_lane_rests_until = Some(tokio::time::Instant::now() + IDLE_LANE_REST);
                }
                Err(LaneError::Store(e)) => return Err(e),
            }
        }
        self.store.insert_usage(&self.buffer).await
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
        metrics::counter!("omi_usage_dropped_total").increment(n);
        self.events.publish(Event::UsageDropped { dropped: self.dropped });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PlanConfig;
    use crate::events::TokenUsage;

    fn event(model: &str, usage: Option<TokenUsage>, byok: bool) -> RequestEvent {
        RequestEvent {
            key_id: Some(Uuid::now_v7()),
            customer_id: Some(Uuid::now_v7()),
            plan: Some(Arc::from("pro")),
            model: Some(model.into()),
            provider: Some(Arc::from("openai")),
            status: 200,
            total: Duration::from_millis(12),
            upstream: Some(Duration::from_millis(10)),
            usage,
            byok,
            request_bytes: 10,
            response_bytes: 10,
            ..RequestEvent::new("r".into(), "chat", [127, 0, 0, 1].into())
        }
    }

    #[test]
    fn cost_is_priced_for_house_zero_for_byok_and_unknown_when_unpriced() {
        let prices = PriceTable::new(&Default::default());
        let usage =
            Some(TokenUsage { prompt_tokens: 1000, cached_tokens: 0, cache_write_tokens: 0, completion_tokens: 500 });
        // 1000·150 + 500·600 nano-dollars.
        assert_eq!(record_of(&event("gpt-4o-mini", usage, false), &prices).and_then(|r| r.cost_nano), Some(450_000));
        assert_eq!(record_of(&event("gpt-4o-mini", usage, true), &prices).and_then(|r| r.cost_nano), Some(0));
        assert_eq!(record_of(&event("no-such-model", usage, false), &prices).map(|r| r.cost_nano), Some(None));
        assert_eq!(record_of(&event("no-such-model", None, false), &prices).and_then(|r| r.cost_nano), Some(0));
        let marked_up = PriceTable::new(&Default::default()).with_markups(&[PlanConfig {
            name: "pro".into(),
            markup_percent: 30.0,
            ..PlanConfig::default()
        }]);
        let sold =
            |byok| record_of(&event("gpt-4o-mini", usage, byok), &marked_up).map(|r| (r.cost_nano, r.spend_nano));
        assert_eq!(sold(false), Some((Some(450_000), Some(585_000))), "the selling price is booked beside the cost");
        assert_eq!(sold(true), Some((Some(0), Some(0))), "BYOK is sold for nothing");
        let unpriced = record_of(&event("no-such-model", usage, false), &marked_up).map(|r| r.spend_nano);
        assert_eq!(unpriced, Some(None), "no cost, no selling price");
        let mut anonymous = event("gpt-4o-mini", usage, false);
        anonymous.key_id = None;
        assert!(record_of(&anonymous, &prices).is_none(), "requests without a valid key are not on the books");
    }

    #[test]
    fn cache_writes_are_booked_and_priced_at_the_cache_write_rate() {
        let prices = PriceTable::new(&Default::default());
        let usage =
            TokenUsage { prompt_tokens: 2000, cached_tokens: 500, cache_write_tokens: 1000, completion_tokens: 100 };
        let record = record_of(&event("claude-haiku-4-5", Some(usage), false), &prices).expect("booked");
        assert_eq!((record.prompt_tokens, record.cached_tokens, record.cache_write_tokens), (2000, 500, 1000));
        // 500·1,000 + 500·100 + 1,000·1,250 + 100·5,000 nano-dollars ($1 / $0.10 / $1.25 / $5 per million).
        assert_eq!(record.cost_nano, Some(2_300_000));
    }
}
