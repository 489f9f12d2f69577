//! One [`Meter`] follows a request from arrival to its last byte and publishes exactly one
//! [`RequestEvent`] when it finishes — or when it is dropped, because a client that goes
//! away mid-stream drops the response body, and that request must be on the books too.

use crate::billing::prices::NanoPrice;
use crate::events::{Event, EventBus, RequestEvent, TokenUsage};
use crate::keys::VerifiedKey;
use chrono::Utc;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Meter {
    bus: EventBus,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    event: Option<RequestEvent>,
    /// The `model` metric label: `none` until a model is known.
    model_label: String,
    price: Option<NanoPrice>,
}

impl Meter {
    pub fn start(bus: EventBus, request_id: Arc<str>, route: &'static str, client_ip: IpAddr) -> Meter {
        Meter {
            bus,
            started: Instant::now(),
            upstream_started: None,
            upstream_elapsed: None,
            model_label: "none".into(),
            price: None,
            event: Some(RequestEvent {
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
                usage: None,
                usage_estimated: false,
                byok: false,
                streamed: false,
                aborted: false,
                client_ip,
                request_bytes: 0,
                response_bytes: 0,
            }),
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
        label.clone_into(&mut self.model_label);
        self.price = price;
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
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        let kind = if event.byok { "byok" } else { "house" };
        let model = self.model_label.clone();
        metrics::counter!("omi_requests_total", "route" => event.route, "model" => model.clone(), "status" => class, "key_kind" => kind)
            .increment(1);
        metrics::histogram!("omi_request_duration_seconds", "route" => event.route).record(event.total.as_secs_f64());
        if let Some(upstream) = event.upstream {
            metrics::histogram!("omi_upstream_duration_seconds", "route" => event.route).record(upstream.as_secs_f64());
            metrics::histogram!("omi_gateway_overhead_seconds", "route" => event.route)
                .record(event.overhead().as_secs_f64());
        }
        let Some(usage) = event.usage else { return };
        for (token_kind, count) in
            [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens), ("cached", usage.cached_tokens)]
        {
            metrics::counter!("omi_tokens_total", "kind" => token_kind, "model" => model.clone()).increment(count);
        }
        // BYOK requests cost the house nothing upstream.
        if let (false, Some(price)) = (event.byok, self.price) {
            metrics::counter!("omi_house_cost_nanodollars_total", "model" => model).increment(price.cost(&usage));
        }
    }
}
