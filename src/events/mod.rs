//! The in-process event stream. The gateway publishes one [`RequestEvent`] per finished
//! request and one [`FirewallEvent`] per firewall refusal or rate-limiter health change;
//! agents (Accountant, Hawk, Sentinel) subscribe with their own bounded queue and ignore
//! the kinds they do not need.
//! Publishing never blocks and never waits on a subscriber: a full queue drops the event
//! for that subscriber only, and the drop is counted (`omi_events_dropped_total`).

use crate::firewall::Country;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Request(Box<RequestEvent>),
    Firewall(FirewallEvent),
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
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
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
    pub error_code: Option<&'static str>,
    #[serde(with = "micros")]
    pub total: Duration,
    #[serde(with = "opt_micros")]
    pub upstream: Option<Duration>,
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
}

impl RequestEvent {
    /// Time spent in the gateway itself: total minus the upstream's share.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.upstream.unwrap_or_default())
    }
}

struct Subscriber {
    name: &'static str,
    tx: mpsc::Sender<Arc<Event>>,
    dropped: AtomicU64,
}

/// Cheap to clone; register subscribers before the server starts.
#[derive(Clone, Default)]
pub struct EventBus {
    subscribers: Arc<std::sync::RwLock<Vec<Arc<Subscriber>>>>,
}

impl EventBus {
    pub fn subscribe(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity);
        let subscriber = Arc::new(Subscriber { name, tx, dropped: AtomicU64::new(0) });
        if let Ok(mut subs) = self.subscribers.write() {
            subs.push(subscriber);
        }
        rx
    }

    pub fn publish(&self, event: Event) {
        let Ok(subs) = self.subscribers.read() else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for sub in subs.iter() {
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

    /// Closes every queue so subscribers drain what they hold and stop (graceful shutdown).
    pub fn close(&self) {
        if let Ok(mut subs) = self.subscribers.write() {
            subs.clear();
        }
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
            request_id: "r1".into(),
            at: Utc::now(),
            route: "chat",
            key_id: None,
            customer_id: None,
            plan: None,
            model: Some("gpt-4o-mini".into()),
            provider: None,
            status: 200,
            error_code: None,
            total: Duration::from_millis(5),
            upstream: Some(Duration::from_millis(4)),
            usage: None,
            usage_estimated: false,
            byok: false,
            streamed: false,
            aborted: false,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_bytes: 10,
            response_bytes: 20,
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
        assert!(slow.recv().await.is_some());
        for _ in 0..3 {
            assert!(fast.recv().await.is_some());
        }
        bus.close();
        assert!(fast.recv().await.is_none(), "closing the bus ends every subscriber's stream");
        let Event::Request(req) = sample() else { unreachable!("sample() is a request event") };
        assert_eq!(req.overhead(), Duration::from_millis(1));
    }
}
