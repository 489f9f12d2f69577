//! The in-process event stream. The gateway publishes one [`RequestEvent`] per finished
//! request and one [`FirewallEvent`] per firewall refusal or rate-limiter health change;
//! agents (Accountant, Hawk, Sentinel) subscribe with their own bounded queue and ignore
//! the kinds they do not need.
//! Publishing never blocks and never waits on a subscriber: a full queue drops the event
//! for that subscriber only, and the drop is counted (`omi_events_dropped_total`).

use crate::domain::country::Country;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// [`RequestEvent::error_code`] of a request whose upstream could not be reached at all
/// (connection refused, DNS, TLS). The client saw `upstream_error`; the Hawk tells an
/// outage from an upstream's own 5xx by this.
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Request(Box<RequestEvent>),
    /// A purchase became a key (never the key itself).
    KeyVended {
        customer_id: Uuid,
        email: String,
        plan: String,
        key_prefix: String,
        order_id: Option<i64>,
    },
    /// A webhook call was refused before anything was stored (someone probing, or a wrong secret).
    WebhookRejected {
        reason: &'static str,
    },
    /// A key email could not be sent (`permanent`: it will not be retried).
    EmailFailed {
        permanent: bool,
        attempts: i32,
    },
    /// The Sentinel judged a prompt, or the output shield removed something from an answer.
    Finding(Box<FindingEvent>),
    /// The Accountant's usage writer had to drop records (database down too long).
    UsageDropped {
        dropped: u64,
    },
    /// Yesterday's books, once a day, for the Hawk to post.
    DailySummary(Box<DailySummary>),
    Firewall(FirewallEvent),
    /// A prepaid balance fell to the low-balance threshold (`credit_low`) or to zero
    /// (`credit_exhausted`); the customer is emailed through the outbox too.
    CreditNotice {
        customer_id: Uuid,
        email: String,
        level: &'static str,
        balance_usd: f64,
    },
    /// A provider's circuit opened (or a failed probe kept it open), or closed again.
    Circuit {
        provider: Arc<str>,
        open: bool,
        at: DateTime<Utc>,
    },
    /// A provider's house key was refused upstream (401/403) and taken out of its pool, or
    /// was accepted again. `variable` names the key's environment variable, never the key.
    HouseKey {
        provider: Arc<str>,
        variable: Arc<str>,
        refused: bool,
        /// Keys of the provider still out after this change.
        refused_left: usize,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A prompt that looks like an injection or jailbreak.
    Injection,
    /// The output shield removed a leak of the system prompt.
    SystemPromptLeak,
    /// The output shield removed an internal address, host name or secret.
    SecretLeak,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

#[derive(Clone, Debug, Serialize)]
pub struct FindingEvent {
    pub request_id: Arc<str>,
    pub at: DateTime<Utc>,
    pub customer_id: Option<Uuid>,
    pub kind: FindingKind,
    pub severity: Severity,
    /// 0..1: the rules' or judge's score; 1 for shield removals.
    pub score: f32,
    pub rules: Vec<String>,
    /// A short, already-redacted excerpt or description; never a full prompt.
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DailySummary {
    pub day: chrono::NaiveDate,
    pub revenue_usd: f64,
    pub cost_usd: f64,
    pub margin_usd: f64,
    /// (customer email, upstream cost in USD), highest first.
    pub top_customers_by_cost: Vec<(String, f64)>,
    /// Customers whose cost exceeded their revenue.
    pub unprofitable_customers: Vec<String>,
    /// Requests whose model has no price (cost unknown, not zero).
    pub unpriced_requests: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallKind {
    RateLimited,
    CountryBlocked,
    TooLarge,
    /// The request body did not arrive before the body deadline.
    TooSlow,
    /// A Redis-backed limiter lost Redis and applies its fallback policy.
    LimiterDegraded,
    LimiterRecovered,
}

impl FirewallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallKind::RateLimited => "rate_limited",
            FirewallKind::CountryBlocked => "country_blocked",
            FirewallKind::TooLarge => "too_large",
            FirewallKind::TooSlow => "too_slow",
            FirewallKind::LimiterDegraded => "limiter_degraded",
            FirewallKind::LimiterRecovered => "limiter_recovered",
        }
    }
}

/// A request the firewall refused (client, route and request id set), or a limiter's
/// health change (only `limiter` set).
#[derive(Clone, Debug, Serialize)]
pub struct FirewallEvent {
    pub kind: FirewallKind,
    pub at: DateTime<Utc>,
    pub client_ip: Option<IpAddr>,
    /// From `CF-IPCountry` of a trusted proxy; `None` when nobody trusted said.
    pub country: Option<Country>,
    /// The request path (truncated), since refused requests may match no route.
    pub route: Option<Arc<str>>,
    pub request_id: Option<Arc<str>>,
    /// Which limiter refused or changed health: `ip`, `plan:pro:requests`, `key:<id>:tokens`.
    pub limiter: Option<Arc<str>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    /// Every prompt token, however it was billed (cache reads and writes included).
    pub prompt_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (part of `prompt_tokens`; Anthropic
    /// bills them above the input price).
    pub cache_write_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RequestEvent {
    pub request_id: Arc<str>,
    pub at: DateTime<Utc>,
    pub route: &'static str,
    pub key_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub plan: Option<Arc<str>>,
    pub model: Option<String>,
    pub provider: Option<Arc<str>>,
    pub status: u16,
    /// The error `code` the client saw, or [`UPSTREAM_UNREACHABLE`].
    pub error_code: Option<&'static str>,
    #[serde(with = "micros")]
    pub total: Duration,
    #[serde(with = "opt_micros")]
    pub upstream: Option<Duration>,
    /// Streams: when the answer's first byte reached the gateway, from the request's start
    /// (what the latency alert judges, since a stream's total is as long as its answer).
    #[serde(with = "opt_micros")]
    pub first_byte: Option<Duration>,
    pub usage: Option<TokenUsage>,
    /// Usage was estimated from relayed bytes because the upstream never reported it.
    pub usage_estimated: bool,
    pub byok: bool,
    pub streamed: bool,
    /// The client went away (or the upstream cut the stream) before the answer was complete.
    pub aborted: bool,
    pub client_ip: IpAddr,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Upstream calls made (retries and fallbacks included); `provider` and `model` name the
    /// last one: the one that answered.
    pub attempts: u32,
    /// The prepaid credit this request holds until it is settled (prepaid plans, house key).
    pub credit_hold: Option<Uuid>,
}

impl RequestEvent {
    /// A request as it starts: received now, nothing known yet but who sent it where. Every
    /// event is built here; what the request learns is filled in as it goes.
    pub fn new(request_id: Arc<str>, route: &'static str, client_ip: IpAddr) -> RequestEvent {
        RequestEvent {
            request_id,
            at: Utc::now(),
            route,
            key_id: None,
            customer_id: None,
            plan: None,
            model: None,
            provider: None,
            status: 0,
            error_code: None,
            total: Duration::ZERO,
            upstream: None,
            first_byte: None,
            usage: None,
            usage_estimated: false,
            byok: false,
            streamed: false,
            aborted: false,
            client_ip,
            request_bytes: 0,
            response_bytes: 0,
            attempts: 1,
            credit_hold: None,
        }
    }

    /// Time spent in the gateway itself: total minus the upstream's share.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.upstream.unwrap_or_default())
    }
}

struct Subscriber {
    name: &'static str,
    /// The events it reads; the others are not queued for it (every queued event wakes it).
    wants: fn(&Event) -> bool,
    tx: mpsc::Sender<Arc<Event>>,
    dropped: AtomicU64,
}

/// Cheap to clone; register subscribers before the server starts.
#[derive(Clone, Default)]
pub struct EventBus {
    subscribers: Arc<std::sync::RwLock<Vec<Arc<Subscriber>>>>,
}

impl EventBus {
    pub fn subscribe(&self, name: &'static str, capacity: usize) -> Subscription {
        self.subscribe_to(name, capacity, |_| true)
    }

    /// A subscription to the events `wants` accepts only.
    pub fn subscribe_to(&self, name: &'static str, capacity: usize, wants: fn(&Event) -> bool) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity);
        let subscriber = Arc::new(Subscriber { name, wants, tx, dropped: AtomicU64::new(0) });
        if let Ok(mut subs) = self.subscribers.write() {
            subs.push(subscriber);
        }
        Coalescing::new(rx)
    }

    pub fn publish(&self, event: Event) {
        let Ok(subs) = self.subscribers.read() else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for sub in subs.iter().filter(|sub| (sub.wants)(&event)) {
            if sub.tx.try_send(Arc::clone(&event)).is_err() {
                sub.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("omi_events_dropped_total", "subscriber" => sub.name).increment(1);
            }
        }
    }

    /// Events dropped so far for one subscriber (full queue or closed receiver).
    pub fn dropped(&self, name: &str) -> u64 {
        self.subscribers
            .read()
            .map(|subs| subs.iter().filter(|s| s.name == name).map(|s| s.dropped.load(Ordering::Relaxed)).sum())
            .unwrap_or(0)
    }

    /// Events waiting in each subscriber's queue.
    pub fn queue_depths(&self) -> Vec<(&'static str, usize)> {
        self.subscribers
            .read()
            .map(|subs| subs.iter().map(|s| (s.name, s.tx.max_capacity() - s.tx.capacity())).collect())
            .unwrap_or_default()
    }

    /// Closes every queue so subscribers drain what they hold and stop (graceful shutdown).
    pub fn close(&self) {
        if let Ok(mut subs) = self.subscribers.write() {
            subs.clear();
        }
    }
}

/// How long a per-request queue's consumer lets items gather after being woken before it
/// asks to be woken again. Every request publishes to every subscriber (and hands its prompt
/// to the Sentinel); woken per item, each consumer would cost the request path a task
/// wake-up (often a thread switch) per request. This way a busy consumer wakes about once
/// per window and takes a batch, while an idle one still sees the first item at once.
const COALESCE: Duration = Duration::from_millis(2);
/// Items taken from the queue at once.
const BATCH: usize = 256;

/// One subscriber's end of the bus.
pub type Subscription = Coalescing<Arc<Event>>;

/// The receiving end of a per-request queue, woken at most about once per [`COALESCE`].
pub struct Coalescing<T> {
    rx: mpsc::Receiver<T>,
    ready: VecDeque<T>,
    woken_at: Option<Instant>,
}

impl<T> Coalescing<T> {
    pub fn new(rx: mpsc::Receiver<T>) -> Coalescing<T> {
        Coalescing { rx, ready: VecDeque::new(), woken_at: None }
    }

    /// The next item; `None` once every sender is gone and every queued item was taken.
    /// Cancel-safe, so it can sit in a `select!`: an item leaves the queue only to be returned
    /// or kept in `ready`.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.take_batch() {
                continue;
            }
            if let Some(woken_at) = self.woken_at.take() {
                tokio::time::sleep_until((woken_at + COALESCE).into()).await;
                continue;
            }
            let event = self.rx.recv().await?;
            self.woken_at = Some(Instant::now());
            return Some(event);
        }
    }

    /// The next item if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.ready.pop_front().or_else(|| self.rx.try_recv().ok())
    }

    fn take_batch(&mut self) -> bool {
        while self.ready.len() < BATCH {
            match self.rx.try_recv() {
                Ok(event) => self.ready.push_back(event),
                Err(_) => break,
            }
        }
        !self.ready.is_empty()
    }
}

mod micros {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

mod opt_micros {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_micros() as u64),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::Request(Box::new(RequestEvent {
            model: Some("gpt-4o-mini".into()),
            status: 200,
            total: Duration::from_millis(5),
            upstream: Some(Duration::from_millis(4)),
            request_bytes: 10,
            response_bytes: 20,
            ..RequestEvent::new("r1".into(), "chat", IpAddr::from([127, 0, 0, 1]))
        }))
    }

    #[tokio::test]
    async fn full_queue_drops_for_that_subscriber_only() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe("slow", 1);
        let mut fast = bus.subscribe("fast", 8);
        for _ in 0..3 {
            bus.publish(sample());
        }
        assert_eq!(bus.dropped("slow"), 2);
        assert_eq!(bus.dropped("fast"), 0);
        assert_eq!(bus.queue_depths(), vec![("slow", 1), ("fast", 3)]);
        assert!(slow.recv().await.is_some());
        for _ in 0..3 {
            assert!(fast.recv().await.is_some());
        }
        bus.close();
        assert!(fast.recv().await.is_none(), "closing the bus ends every subscriber's stream");
        assert!(slow.recv().await.is_none());
        let Event::Request(req) = sample() else { panic!("a request event") };
        assert_eq!(req.overhead(), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_subscriber_is_queued_only_the_events_it_wants() {
        let bus = EventBus::default();
        let mut usage = bus.subscribe_to("usage", 1, |event| matches!(event, Event::UsageDropped { .. }));
        for _ in 0..3 {
            bus.publish(sample());
        }
        bus.publish(Event::UsageDropped { dropped: 7 });
        assert_eq!(bus.dropped("usage"), 0, "the requests never took its one slot");
        assert!(matches!(usage.recv().await.as_deref(), Some(Event::UsageDropped { dropped: 7 })));
        bus.close();
        assert!(usage.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_batch_is_delivered_whole_in_order_even_when_waits_are_cancelled() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe("batch", 1024);
        let publish = |n: u16| {
            let Event::Request(mut req) = sample() else { panic!("a request event") };
            req.status = n;
            bus.publish(Event::Request(req));
        };
        publish(0);
        let status = |e: Arc<Event>| match &*e {
            Event::Request(r) => r.status,
            _ => panic!("a request event"),
        };
        assert_eq!(sub.recv().await.map(status), Some(0), "an idle subscriber gets the first event at once");
        for n in 1..=600 {
            publish(n);
        }
        let mut seen = Vec::new();
        while seen.len() < 600 {
            // A wait cut short (as by another `select!` branch) must lose nothing.
            tokio::select! {
                event = sub.recv() => seen.push(event.map(status).expect("open")),
                () = tokio::time::sleep(Duration::from_micros(100)) => {}
            }
        }
        assert_eq!(seen, (1..=600).collect::<Vec<u16>>());
        bus.close();
        assert!(sub.recv().await.is_none());
    }
}
