//! The Hawk watches the service around the clock. Request outcomes and agent events from
//! the bus, and the probes' findings (database, Redis, the notification channels), go
//! through the rule engine ([`rules`]); what it decides to say goes to Slack, to n8n and to
//! the `alerts` table, each through its own bounded queue and task. Nothing here can slow a
//! request: the bus never waits for the Hawk, and the Hawk never waits for Slack, n8n or
//! the database.

mod incidents;
use incidents::Incidents;
pub mod probe;
pub mod rules;
pub mod slack;

use super::n8n::N8nEvent;
use super::{Queue, Webhook};
use crate::app::AppState;
use crate::billing::prices::suspicious_usage;
use crate::events::{Event, FirewallKind, RequestEvent, Severity, Subscription, UPSTREAM_UNREACHABLE};
use crate::providers::keys::RECHECK_REFUSED;
use crate::store::{AlertRecord, Store};
use chrono::{TimeDelta, Utc};
use rules::{AlertView, Engine, Notice, Notification, Policy, Rule, Trigger};
use slack::SlackMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where trouble that is not on the event bus is reported: probes, Slack and n8n failures.
pub type Alarms = Queue<Trigger>;

/// How often time advances for the rules (reminders, resolution) and firing alerts are saved.
const TICK: Duration = Duration::from_secs(1);
/// Alerts whose instance stopped watching are resolved in the table this long after they
/// could have resolved themselves.
const ABANDONED_MARGIN: TimeDelta = TimeDelta::minutes(2);
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub fn spawn(
    app: &Arc<AppState>,
    alarms: Alarms,
    alarm_rx: mpsc::Receiver<Trigger>,
    n8n: Option<Queue<N8nEvent>>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let config = &app.config;
    let events = app.events.subscribe("hawk", 16_384);
    let policy = Policy::from_config(&config.hawk);
    let mut tasks = Vec::new();
    let slack = match config.slack_webhook_url.clone() {
        Some(url) => {
            let webhook = Webhook::new("slack", url, app.http.clone());
            let group_wait = Duration::from_millis(config.hawk.group_wait_ms);
            let dashboard = format!("{}/admin", config.public_base());
            let (queue, task) = slack::spawn(webhook, dashboard, group_wait, alarms.clone());
            tasks.push(task);
            Some(queue)
        }
        None => {
            tracing::info!("SLACK_WEBHOOK_URL is not set: alerts are only stored (GET /admin/api/alerts)");
            None
        }
    };
    // Notifications go out only once claimed (one per incident across instances).
    let announcer = (slack.is_some() || n8n.is_some()).then(|| {
        let (queue, notices) = Queue::new("alert_announcer", 1024);
        let incidents = Incidents::new(app.store.clone(), &policy, ABANDONED_MARGIN);
        tasks.push(crate::tasks::owned(announce(incidents, notices, slack.clone(), n8n.clone())));
        queue
    });
    let (recorder, views) = Queue::new("alert_recorder", 1024);
    tasks.push(crate::tasks::owned(record(app.store.clone(), views, policy.longest_quiet() + ABANDONED_MARGIN)));
    let every = Duration::from_secs(config.hawk.probe_interval_secs);
    tasks.push(probe::spawn(app.clone(), alarms, every, shutdown.clone()));
    let hawk = Hawk {
        engine: Engine::new(policy),
        app: app.clone(),
        latency: Duration::from_millis(config.hawk.latency_alert_ms),
        slack,
        n8n,
        announcer,
        recorder,
        usage_dropped: 0,
    };
    tasks.push(crate::tasks::owned(hawk.watch(events, alarm_rx)));
    tasks
}

struct Hawk {
    engine: Engine,
    app: Arc<AppState>,
    latency: Duration,
    slack: Option<Queue<SlackMessage>>,
    n8n: Option<Queue<N8nEvent>>,
    /// Takes each notification to its claim, then to Slack and n8n; `None` without either.
    announcer: Option<Queue<Notification>>,
    recorder: Queue<AlertView>,
    /// The usage writer's running total of dropped records, as last reported.
    usage_dropped: u64,
}

impl Hawk {
    async fn watch(mut self, mut events: Subscription, mut alarms: mpsc::Receiver<Trigger>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(&event),
                    None => break,
                },
                Some(trigger) = alarms.recv() => self.observe(trigger),
                _ = tick.tick() => self.on_tick(),
            }
        }
        // The bus closed (shutdown): save the latest counts of what is still firing.
        for view in self.engine.take_changed() {
            self.recorder.push(view);
        }
    }

    fn on_event(&mut self, event: &Event) {
        let now = Utc::now();
        match event {
            Event::Request(request) => self.on_request(request),
            Event::WebhookRejected { reason } => {
                self.observe(Trigger::new(Rule::WebhookRejected, *reason, now).detail(format!("refused: {reason}")));
            }
            Event::EmailFailed { permanent, attempts } => {
                let detail = if *permanent {
                    format!("a key email failed for good after {attempts} attempts; resend the key")
                } else {
                    format!("a key email is still failing after {attempts} attempts; retrying")
                };
                self.observe(Trigger::new(Rule::EmailFailing, "outbox", now).critical(*permanent).detail(detail));
            }
            Event::UsageDropped { dropped } => {
                // The writer reports its running total; the rule counts what is new.
                let new = dropped.saturating_sub(self.usage_dropped);
                self.usage_dropped = self.usage_dropped.max(*dropped);
                if new > 0 {
                    let detail = format!("{dropped} usage records dropped so far: those requests are not on the books");
                    self.observe(Trigger::new(Rule::UsageDropped, "usage_writer", now).weight(new).detail(detail));
                }
            }
            Event::Finding(finding) => {
                if finding.severity == Severity::High {
                    let customer = finding.customer_id.map_or_else(|| "unknown".to_string(), |c| c.to_string());
                    let trigger = Trigger::new(Rule::Finding, customer, finding.at)
                        .request(finding.request_id.clone())
                        .detail(slack::finding_line(finding));
                    self.observe(trigger);
                }
                self.forward(event);
            }
            Event::KeyVended { .. } | Event::CreditNotice { .. } => self.forward(event),
            // A rate limiter that lost Redis limits per instance (or refuses): page like a
            // failed Redis probe. Refusals themselves are metrics, not alerts.
            Event::Firewall(firewall) if firewall.kind == FirewallKind::LimiterDegraded => {
                let limiter = firewall.limiter.as_deref().unwrap_or("rate limiter").to_string();
                let detail = format!("{limiter}: Redis unreachable, limits fall back");
                self.observe(Trigger::new(Rule::RedisUnreachable, limiter, firewall.at).critical(true).detail(detail));
            }
            Event::Firewall(_) => {}
            Event::Circuit { provider, open: true, at } => {
                let detail = "circuit open: requests skip it for their fallbacks until a probe answers";
                self.observe(Trigger::new(Rule::ProviderDown, provider.as_ref(), *at).critical(true).detail(detail));
            }
            Event::Circuit { provider, open: false, at } => {
                if let Some(notification) = self.engine.resolve(Rule::ProviderDown, provider, *at) {
                    self.dispatch(notification);
                }
            }
            Event::HouseKey { provider, variable, refused: true, at, .. } => {
                let detail = format!(
                    "the house key in `{variable}` was refused (401/403): taken out of the pool, tried again every {} minutes",
                    RECHECK_REFUSED.as_secs() / 60
                );
                self.observe(
                    Trigger::new(Rule::UpstreamKeyInvalid, provider.as_ref(), *at).critical(true).detail(detail),
                );
            }
            Event::HouseKey { provider, refused: false, refused_left: 0, at, .. } => {
                if let Some(notification) = self.engine.resolve(Rule::UpstreamKeyInvalid, provider, *at) {
                    self.dispatch(notification);
                }
            }
            Event::HouseKey { .. } => {}
            Event::DailySummary(summary) => {
                if let Some(slack) = &self.slack {
                    slack.push(SlackMessage::Summary(summary.clone()));
                }
                self.forward(event);
            }
        }
    }

    fn on_request(&mut self, request: &RequestEvent) {
        if let Some(usage) = request.usage.filter(suspicious_usage) {
            let provider = request.provider.as_deref().unwrap_or("no provider");
            let detail = format!(
                "{} prompt + {} completion tokens in one request: more than any model's context",
                usage.prompt_tokens, usage.completion_tokens
            );
            let trigger = Trigger::new(Rule::SuspiciousUsage, provider, request.at).request(request.request_id.clone());
            self.observe(trigger.detail(detail));
        }
        let unreachable = request.error_code == Some(UPSTREAM_UNREACHABLE) || request.status == 504;
        let failed = request.status >= 500 && !unreachable;
        // A stream's total time is its whole answer, long by nature: a stream is slow when
        // its first byte is (one that never came is an error or a cut stream, seen apart).
        let waited = if request.streamed { request.first_byte } else { Some(request.total) };
        let slow = !unreachable && waited.is_some_and(|w| w >= self.latency);
        if !(unreachable || failed || slow) {
            return;
        }
        let at = request.at + TimeDelta::from_std(request.total).unwrap_or_default();
        let model = request.model.as_deref().map_or("no model", |m| self.app.model_label(m)).to_string();
        let provider = request.provider.as_deref().unwrap_or("no provider");
        let code = request.error_code.unwrap_or("-");
        let id = &request.request_id;
        if unreachable {
            let detail = format!("HTTP {} {code} for {model}", request.status);
            self.observe(Trigger::new(Rule::UpstreamUnreachable, provider, at).request(id.clone()).detail(detail));
        }
        if failed {
            let detail = format!("HTTP {} {code} from {provider}", request.status);
            self.observe(Trigger::new(Rule::ServerErrors, model.clone(), at).request(id.clone()).detail(detail));
        }
        if slow {
            let what = if request.streamed { "first byte after " } else { "" };
            let waited = waited.unwrap_or_default().as_millis();
            let detail = format!("{what}{waited} ms (threshold {} ms)", self.latency.as_millis());
            self.observe(Trigger::new(Rule::Latency, model, at).request(id.clone()).detail(detail));
        }
    }

    fn observe(&mut self, trigger: Trigger) {
        if let Some(notification) = self.engine.observe(trigger) {
            self.dispatch(notification);
        }
    }

    fn on_tick(&mut self) {
        for notification in self.engine.tick(Utc::now()) {
            self.dispatch(notification);
        }
        for view in self.engine.take_changed() {
            self.recorder.push(view);
        }
        for rule in Rule::ALL {
            metrics::gauge!("omi_alerts_firing", "rule" => rule.name()).set(self.engine.firing(rule) as f64);
        }
    }

    fn dispatch(&self, n: Notification) {
        let alert = &n.alert;
        metrics::counter!("omi_alert_notifications_total", "rule" => alert.rule.name(), "state" => n.notice.as_str())
            .increment(1);
        tracing::warn!(alert = %alert.key, notice = n.notice.as_str(), severity = alert.severity.as_str(), count = alert.count, "alert");
        self.recorder.push(alert.clone());
        if let Some(announcer) = &self.announcer {
            announcer.push(n);
        }
    }

    /// Agent events go to n8n as they are, with a line of text for a workflow's Slack node.
    fn forward(&self, event: &Event) {
        let Some(n8n) = &self.n8n else { return };
        if let Some(forwarded) = N8nEvent::from_event(event) {
            n8n.push(match slack::describe(event) {
                Some(text) => forwarded.with_text(&text),
                None => forwarded,
            });
        }
    }
}

/// Sends each notification this instance claims (another instance may already have said it)
/// to Slack and n8n.
async fn announce(
    incidents: Incidents,
    mut notices: mpsc::Receiver<Notification>,
    slack: Option<Queue<SlackMessage>>,
    n8n: Option<Queue<N8nEvent>>,
) {
    while let Some(mut n) = notices.recv().await {
        if !incidents.claim(&mut n).await {
            continue;
        }
        // Reminders are for people; a workflow already has the firing.
        if let Some(n8n) = &n8n
            && n.notice != Notice::Reminder
            && let Ok(serde_json::Value::Object(mut data)) = serde_json::to_value(&n.alert)
        {
            data.insert("notice".into(), n.notice.as_str().into());
            let kind = if n.notice == Notice::Resolved { "alert_resolved" } else { "alert_fired" };
            n8n.push(N8nEvent::new(kind, data.into()).with_text(&slack::headline(&n)));
        }
        if let Some(slack) = &slack {
            slack.push(SlackMessage::Alert(Box::new(n)));
        }
    }
}

/// An alert as the table holds it (the engine keeps counts unbounded; the table clamps them).
impl From<&AlertView> for AlertRecord {
    fn from(alert: &AlertView) -> AlertRecord {
        AlertRecord {
            id: alert.id,
            key: alert.key.clone(),
            rule: alert.rule.name().to_owned(),
            subject: alert.subject.clone(),
            severity: alert.severity.as_str().to_owned(),
            state: alert.state.as_str().to_owned(),
            detail: alert.detail.clone(),
            first_seen: alert.first_seen,
            last_seen: alert.last_seen,
            resolved_at: alert.resolved_at,
            count: i64::try_from(alert.count).unwrap_or(i64::MAX),
            sample_request_ids: alert.sample_request_ids.clone(),
            notifications_sent: i32::try_from(alert.notifications_sent).unwrap_or(i32::MAX),
        }
    }
}

/// Writes alerts to the table, and resolves those left firing by an instance that stopped.
async fn record(store: Store, mut views: mpsc::Receiver<AlertView>, abandoned_after: TimeDelta) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            view = views.recv() => match view {
                Some(view) => {
                    if let Err(e) = store.upsert_alert(&AlertRecord::from(&view)).await {
                        tracing::warn!(error = %e, alert = %view.key, "could not store an alert");
                    }
                }
                None => return,
            },
            _ = sweep.tick() => {
                let now = Utc::now();
                match store.resolve_abandoned_alerts(now - abandoned_after, now).await {
                    Ok(0) => {}
                    Ok(resolved) => tracing::info!(resolved, "resolved alerts nobody watches any more"),
                    Err(e) => tracing::debug!(error = %e, "could not sweep abandoned alerts"),
                }
            }
        }
    }
}
