//! One [`Meter`] follows a request from arrival to its last byte and publishes exactly one
//! [`RequestEvent`] when it finishes — or when it is dropped, because a client that goes
//! away mid-stream drops the response body, and that request must be on the books too.

use crate::billing::prices::{NanoPrice, suspicious_usage};
use crate::events::{Event, EventBus, RequestEvent, TokenUsage};
use crate::keys::VerifiedKey;
use crate::providers::keys::KeyLease;
use dashmap::DashMap;
use metrics::{Counter, Histogram};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request metrics' handles, registered once per route and model label (a bounded set:
/// see `AppState::model_label`), so that booking a request costs a few atomic adds rather
/// than a registry lookup, with label allocations, per metric.
#[derive(Default)]
pub struct MeterMetrics {
    routes: DashMap<&'static str, Arc<RouteMetrics>>,
}

struct RouteMetrics {
    route: &'static str,
    duration: Histogram,
    upstream: Histogram,
    overhead: Histogram,
    by_label: DashMap<Box<str>, Arc<LabelMetrics>>,
    /// Before a model is known.
    none: Arc<LabelMetrics>,
}

struct LabelMetrics {
    /// By status class (2xx, 4xx, 5xx, other), then key kind (house, byok).
    requests: [[Counter; 2]; 4],
    /// prompt, completion, cached, cache_write.
    tokens: [Counter; 4],
    house_cost: Counter,
    /// Requests whose reported usage exceeds any model's context window.
    suspicious: Counter,
}

const STATUS_CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "other"];
const KEY_KINDS: [&str; 2] = ["house", "byok"];
const TOKEN_KINDS: [&str; 4] = ["prompt", "completion", "cached", "cache_write"];

impl MeterMetrics {
    fn route(&self, route: &'static str) -> Arc<RouteMetrics> {
        if let Some(known) = self.routes.get(route) {
            return known.clone();
        }
        self.routes
            .entry(route)
            .or_insert_with(|| {
                Arc::new(RouteMetrics {
                    route,
                    duration: metrics::histogram!("omi_request_duration_seconds", "route" => route),
                    upstream: metrics::histogram!("omi_upstream_duration_seconds", "route" => route),
                    overhead: metrics::histogram!("omi_gateway_overhead_seconds", "route" => route),
                    by_label: DashMap::new(),
                    none: Arc::new(LabelMetrics::new(route, "none")),
                })
            })
            .clone()
    }
}

impl RouteMetrics {
    fn label(&self, label: &str) -> Arc<LabelMetrics> {
        if let Some(known) = self.by_label.get(label) {
            return known.clone();
        }
        self.by_label.entry(label.into()).or_insert_with(|| Arc::new(LabelMetrics::new(self.route, label))).clone()
    }
}

impl LabelMetrics {
    fn new(route: &'static str, model: &str) -> LabelMetrics {
        let model = model.to_owned();
        LabelMetrics {
            requests: STATUS_CLASSES.map(|status| {
                KEY_KINDS.map(|kind| {
                    metrics::counter!("omi_requests_total", "route" => route, "model" => model.clone(), "status" => status, "key_kind" => kind)
                })
            }),
            tokens: TOKEN_KINDS
                .map(|kind| metrics::counter!("omi_tokens_total", "kind" => kind, "model" => model.clone())),
            house_cost: metrics::counter!("omi_house_cost_nanodollars_total", "model" => model.clone()),
            suspicious: metrics::counter!("omi_usage_suspicious_total", "model" => model),
        }
    }
}

pub struct Meter {
    bus: EventBus,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    event: Option<RequestEvent>,
    route_metrics: Arc<RouteMetrics>,
    /// The handles of the request's `model` label: `none` until a model is known.
    label_metrics: Arc<LabelMetrics>,
    price: Option<NanoPrice>,
    /// The house key the answer came with: counted in flight by its pool until the request
    /// is done (a stream's last byte, or its drain).
    upstream_key: Option<KeyLease>,
}

impl Meter {
    pub fn start(
        bus: EventBus,
        metrics: &MeterMetrics,
        request_id: Arc<str>,
        route: &'static str,
        client_ip: IpAddr,
    ) -> Meter {
        let route_metrics = metrics.route(route);
        Meter {
            bus,
            started: Instant::now(),
            upstream_started: None,
            upstream_elapsed: None,
            label_metrics: route_metrics.none.clone(),
            route_metrics,
            price: None,
            upstream_key: None,
            event: Some(RequestEvent::new(request_id, route, client_ip)),
        }
    }

    fn event(&mut self) -> Option<&mut RequestEvent> {
        self.event.as_mut()
    }

    pub fn set_key(&mut self, key: &VerifiedKey) {
        if let Some(e) = self.event() {
            e.key_id = Some(key.key_id);
            e.customer_id = Some(key.customer_id);
            e.plan = Some(key.plan.clone());
        }
    }

    pub fn set_request(&mut self, model: &str, provider: &Arc<str>, byok: bool, streamed: bool, bytes: usize) {
        if let Some(e) = self.event() {
            e.model = Some(model.to_string());
            e.provider = Some(provider.clone());
            e.byok = byok;
            e.streamed = streamed;
            e.request_bytes = bytes as u64;
        }
    }

    /// How metrics see the model: `label` is bounded (see `AppState::model_label`), and
    /// `price` turns house-key tokens into the house-cost counter.
    pub fn set_catalog(&mut self, label: &str, price: Option<NanoPrice>) {
        self.label_metrics = self.route_metrics.label(label);
        self.price = price;
    }

    /// Upstream calls made so far (retries and fallbacks included).
    /// Keeps the house key the answer came with in flight until the request is done.
    pub fn hold_upstream_key(&mut self, lease: KeyLease) {
        self.upstream_key = Some(lease);
    }

    pub fn set_attempts(&mut self, attempts: u32) {
        if let Some(e) = self.event() {
            e.attempts = attempts;
        }
    }

    pub fn set_request_bytes(&mut self, bytes: usize) {
        if let Some(e) = self.event() {
            e.request_bytes = bytes as u64;
        }
    }

    pub fn upstream_started(&mut self) {
        self.upstream_started = Some(Instant::now());
    }

    pub fn upstream_finished(&mut self) {
        if let Some(start) = self.upstream_started {
            self.upstream_elapsed = Some(start.elapsed());
        }
    }

    /// A streamed answer's first byte arrived (only the first call counts).
    pub fn first_byte(&mut self) {
        if let Some(e) = self.event.as_mut()
            && e.first_byte.is_none()
        {
            e.first_byte = Some(self.started.elapsed());
        }
    }

    pub fn record_usage(&mut self, usage: TokenUsage, estimated: bool) {
        if let Some(e) = self.event() {
            e.usage = Some(usage);
            e.usage_estimated = estimated;
        }
    }

    pub fn add_response_bytes(&mut self, bytes: usize) {
        if let Some(e) = self.event() {
            e.response_bytes += bytes as u64;
        }
    }

    pub fn mark_aborted(&mut self) {
        if let Some(e) = self.event() {
            e.aborted = true;
        }
    }

    pub fn finish(mut self, status: u16, error_code: Option<&'static str>) {
        self.publish(status, error_code);
    }

    fn publish(&mut self, status: u16, error_code: Option<&'static str>) {
        let Some(mut event) = self.event.take() else {
            return;
        };
        event.status = status;
        event.error_code = error_code;
        event.total = self.started.elapsed();
        if self.upstream_elapsed.is_none() && self.upstream_started.is_some() {
            self.upstream_finished();
        }
        event.upstream = self.upstream_elapsed;
        self.record_metrics(&event);
        self.bus.publish(Event::Request(Box::new(event)));
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.event.is_some() {
            // Dropped without `finish`: the response body was abandoned mid-way.
            self.mark_aborted();
            let status = 200;
            self.publish(status, None);
        }
    }
}

impl Meter {
    fn record_metrics(&self, event: &RequestEvent) {
        let class = match event.status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        };
        let labelled = &self.label_metrics;
        labelled.requests[class][usize::from(event.byok)].increment(1);
        self.route_metrics.duration.record(event.total.as_secs_f64());
        if let Some(upstream) = event.upstream {
            self.route_metrics.upstream.record(upstream.as_secs_f64());
            self.route_metrics.overhead.record(event.overhead().as_secs_f64());
        }
        let Some(usage) = event.usage else { return };
        if suspicious_usage(&usage) {
            // Kept on the books (saturated), but out of the counters it would wrap; an
            // upstream reporting this is broken or lying, and the operator must look.
            labelled.suspicious.increment(1);
            tracing::error!(
                request_id = %event.request_id,
                model = event.model.as_deref().unwrap_or("-"),
                provider = event.provider.as_deref().unwrap_or("-"),
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                cached_tokens = usage.cached_tokens,
                "suspicious usage: the upstream reported more tokens than any model's context holds"
            );
            return;
        }
        let counts = [usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens];
        for (counter, count) in labelled.tokens.iter().zip(counts) {
            counter.increment(count);
        }
        // BYOK requests cost the house nothing upstream.
        if let (false, Some(price)) = (event.byok, self.price) {
            labelled.house_cost.increment(price.cost(&usage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn cache_writes_are_counted_as_their_own_token_kind() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = MeterMetrics::default();
            let mut meter = Meter::start(EventBus::default(), &metrics, "r".into(), "chat", [127, 0, 0, 1].into());
            meter.set_catalog("claude-haiku-4-5", None);
            let usage =
                TokenUsage { prompt_tokens: 900, cached_tokens: 200, cache_write_tokens: 300, completion_tokens: 5 };
            meter.record_usage(usage, false);
            meter.finish(200, None);
        });
        let rendered = handle.render();
        let cache_write = "omi_tokens_total{kind=\"cache_write\",model=\"claude-haiku-4-5\"} 300\n";
        assert!(rendered.contains(cache_write), "{rendered}");
    }
}
