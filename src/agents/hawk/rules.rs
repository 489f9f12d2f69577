//! The Hawk's rule engine: pure logic with no I/O and no clock of its own (every call takes
//! the time), so bursts, flapping, reminders and resolution are tested without sleeping.
//!
//! An alert is keyed by rule and subject (a model, a provider, a customer…). Triggers are
//! summed over a sliding window; when the sum reaches the rule's threshold the alert fires
//! (one notification), escalates once if it reaches the critical threshold, reminds at most
//! every `repeat` while triggers keep coming, and resolves (one notification) after
//! `resolve_after` without a trigger. An alert that fires twice within `repeat` is
//! flapping: it then resolves only after the longer `flap_resolve_after`, so an unstable
//! upstream pages a handful of times, not on every swing (Alertmanager's `for:` and
//! `resolve_timeout`, and LiteLLM's outage thresholds, in one small state machine).

use crate::config::HawkConfig;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use uuid::Uuid;

/// Request ids kept per alert as examples (the latest ones).
const SAMPLES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Upstream or gateway 5xx answers, per model.
    ServerErrors,
    /// Requests slower than the latency threshold (streams: to their first byte), per model.
    Latency,
    /// The upstream could not be reached or timed out, per provider.
    UpstreamUnreachable,
    /// Lemon Squeezy webhook calls refused (bad signature, webhook disabled), per reason.
    WebhookRejected,
    EmailFailing,
    UsageDropped,
    DatabaseUnreachable,
    RedisUnreachable,
    /// High-severity Sentinel findings, per customer.
    Finding,
    /// Slack or n8n refusing or not taking our deliveries, per channel.
    DeliveryFailing,
    /// An upstream reported more tokens than any model's context holds, per provider.
    SuspiciousUsage,
    /// A provider's circuit is open (its calls are skipped), per provider: resolved when it closes.
    ProviderDown,
    /// Upstream refused a house key (401/403), per provider: resolved when none is out.
    UpstreamKeyInvalid,
}

impl Rule {
    pub const ALL: [Rule; 13] = [
        Rule::ServerErrors,
        Rule::Latency,
        Rule::UpstreamUnreachable,
        Rule::WebhookRejected,
        Rule::EmailFailing,
        Rule::UsageDropped,
        Rule::DatabaseUnreachable,
        Rule::RedisUnreachable,
        Rule::Finding,
        Rule::DeliveryFailing,
        Rule::SuspiciousUsage,
        Rule::ProviderDown,
        Rule::UpstreamKeyInvalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::ServerErrors => "server_errors",
            Rule::Latency => "latency",
            Rule::UpstreamUnreachable => "upstream_unreachable",
            Rule::WebhookRejected => "webhook_rejected",
            Rule::EmailFailing => "email_failing",
            Rule::UsageDropped => "usage_dropped",
            Rule::DatabaseUnreachable => "database_unreachable",
            Rule::RedisUnreachable => "redis_unreachable",
            Rule::Finding => "finding",
            Rule::DeliveryFailing => "delivery_failing",
            Rule::SuspiciousUsage => "suspicious_usage",
            Rule::ProviderDown => "provider_down",
            Rule::UpstreamKeyInvalid => "upstream_key_invalid",
        }
    }

    /// What a human reads first.
    pub fn title(self) -> &'static str {
        match self {
            Rule::ServerErrors => "5xx errors",
            Rule::Latency => "Slow requests",
            Rule::UpstreamUnreachable => "Upstream unreachable",
            Rule::WebhookRejected => "Webhook calls refused",
            Rule::EmailFailing => "Key emails failing",
            Rule::UsageDropped => "Usage records dropped",
            Rule::DatabaseUnreachable => "Database unreachable",
            Rule::RedisUnreachable => "Redis unreachable",
            Rule::Finding => "High-severity finding",
            Rule::DeliveryFailing => "Notifications not delivered",
            Rule::SuspiciousUsage => "Impossible token usage reported",
            Rule::ProviderDown => "Provider down (circuit open)",
            Rule::UpstreamKeyInvalid => "House key refused by the provider",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    Warning,
    Critical,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }
}

/// A rule fires when its triggers within the window sum to `fire_at`, and is critical from
/// `critical_at` on (never, when `None`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub fire_at: u64,
    pub critical_at: Option<u64>,
}

impl Threshold {
    const ONCE: Threshold = Threshold { fire_at: 1, critical_at: None };

    fn always_critical(fire_at: u64) -> Threshold {
        Threshold { fire_at, critical_at: Some(fire_at) }
    }

    /// The largest sum the window must be able to show; older entries beyond it are dropped.
    fn window_need(self) -> u64 {
        self.critical_at.unwrap_or(0).max(self.fire_at).max(1)
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub window: TimeDelta,
    pub repeat: TimeDelta,
    pub resolve_after: TimeDelta,
    pub flap_resolve_after: TimeDelta,
    pub server_errors: Threshold,
    pub unreachable: Threshold,
    pub probe_failures: Threshold,
}

impl Policy {
    pub fn from_config(config: &HawkConfig) -> Policy {
        // Capped at a year: longer means "never", and time arithmetic must not overflow.
        let secs = |s: u64| TimeDelta::seconds(s.min(366 * 24 * 3600) as i64);
        Policy {
            window: secs(config.window_secs),
            repeat: secs(config.repeat_interval_secs),
            resolve_after: secs(config.resolve_after_secs),
            flap_resolve_after: secs(config.flap_resolve_after_secs.max(config.resolve_after_secs)),
            server_errors: Threshold {
                fire_at: config.server_errors_fire,
                critical_at: Some(config.server_errors_critical.max(config.server_errors_fire)),
            },
            unreachable: Threshold::always_critical(config.unreachable_fire.max(1)),
            probe_failures: Threshold::always_critical(config.probe_failures_fire.max(1)),
        }
    }

    pub fn threshold(&self, rule: Rule) -> Threshold {
        match rule {
            Rule::ServerErrors => self.server_errors,
            Rule::UpstreamUnreachable => self.unreachable,
            Rule::DatabaseUnreachable | Rule::RedisUnreachable => self.probe_failures,
            // Every dropped record is lost money: the first one is critical.
            Rule::UsageDropped | Rule::ProviderDown | Rule::UpstreamKeyInvalid => Threshold::always_critical(1),
            Rule::Latency
            | Rule::WebhookRejected
            | Rule::EmailFailing
            | Rule::Finding
            | Rule::DeliveryFailing
            | Rule::SuspiciousUsage => Threshold::ONCE,
        }
    }

    /// How long an alert must be quiet before it may be resolved (the longest case).
    pub fn longest_quiet(&self) -> TimeDelta {
        self.resolve_after.max(self.flap_resolve_after)
    }
}

/// One observation for a rule: a failed request, a refused webhook, a failed probe…
#[derive(Clone, Debug)]
pub struct Trigger {
    pub rule: Rule,
    pub subject: String,
    pub at: DateTime<Utc>,
    /// How many occurrences it stands for (dropped usage records: the number dropped).
    pub weight: u64,
    pub request_id: Option<Arc<str>>,
    /// Critical whatever the counts (an email that will never be sent).
    pub critical: bool,
    /// The latest detail worth showing; never a secret.
    pub detail: Option<String>,
}

impl Trigger {
    pub fn new(rule: Rule, subject: impl Into<String>, at: DateTime<Utc>) -> Trigger {
        Trigger { rule, subject: subject.into(), at, weight: 1, request_id: None, critical: false, detail: None }
    }

    pub fn request(mut self, request_id: Arc<str>) -> Trigger {
        self.request_id = Some(request_id);
        self
    }

    pub fn weight(mut self, weight: u64) -> Trigger {
        self.weight = weight;
        self
    }

    pub fn critical(mut self, critical: bool) -> Trigger {
        self.critical = critical;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Trigger {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert episode as it stands: what is stored, posted and forwarded.
#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub id: Uuid,
    pub key: String,
    pub rule: Rule,
    pub subject: String,
    pub severity: AlertSeverity,
    pub state: AlertState,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Occurrences since the episode began (including those that made it fire).
    pub count: u64,
    pub sample_request_ids: Vec<String>,
    pub notifications_sent: u32,
    pub flapping: bool,
    pub detail: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Fired,
    /// A firing warning reached the critical threshold.
    Escalated,
    Reminder,
    Resolved,
}

impl Notice {
    /// The `state` label of `omi_alert_notifications_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Fired => "firing",
            Notice::Escalated => "escalated",
            Notice::Reminder => "reminder",
            Notice::Resolved => "resolved",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Notification {
    pub notice: Notice,
    pub alert: AlertView,
    /// Occurrences since the previous notification of this episode.
    pub new_since_last: u64,
}

struct Episode {
    id: Uuid,
    severity: AlertSeverity,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    count: u64,
    notifications_sent: u32,
    last_notified: DateTime<Utc>,
    count_at_last_notice: u64,
    flapping: bool,
}

struct Tracked {
    rule: Rule,
    subject: String,
    /// (time, weight) of recent triggers, oldest first, summing to `window_sum`.
    window: VecDeque<(DateTime<Utc>, u64)>,
    window_sum: u64,
    samples: VecDeque<Arc<str>>,
    detail: Option<String>,
    /// When this key fired within the last `repeat`: two or more means flapping.
    fired: VecDeque<DateTime<Utc>>,
    episode: Option<Episode>,
    /// Changed since last persisted.
    dirty: bool,
}

impl Tracked {
    fn new(rule: Rule, subject: String) -> Tracked {
        Tracked {
            rule,
            subject,
            window: VecDeque::new(),
            window_sum: 0,
            samples: VecDeque::new(),
            detail: None,
            fired: VecDeque::new(),
            episode: None,
            dirty: false,
        }
    }

    /// Forgets triggers older than `cutoff`, and those not needed to reach `need`.
    fn slide(&mut self, cutoff: DateTime<Utc>, need: u64) {
        while let Some(&(at, weight)) = self.window.front() {
            let surplus = self.window_sum - weight >= need;
            if at >= cutoff && !surplus {
                break;
            }
            self.window_sum -= weight;
            self.window.pop_front();
        }
    }

    fn view(&self, key: &str, state: AlertState, resolved_at: Option<DateTime<Utc>>) -> Option<AlertView> {
        let episode = self.episode.as_ref()?;
        Some(AlertView {
            id: episode.id,
            key: key.to_string(),
            rule: self.rule,
            subject: self.subject.clone(),
            severity: episode.severity,
            state,
            first_seen: episode.first_seen,
            last_seen: episode.last_seen,
            resolved_at,
            count: episode.count,
            sample_request_ids: self.samples.iter().map(|s| s.to_string()).collect(),
            notifications_sent: episode.notifications_sent,
            flapping: episode.flapping,
            detail: self.detail.clone(),
        })
    }

    /// The incident is over: a new one needs its own threshold's worth of triggers.
    fn end(&mut self) {
        self.episode = None;
        self.window.clear();
        self.window_sum = 0;
        self.samples.clear();
        self.detail = None;
    }

    fn notify(&mut self, key: &str, notice: Notice, now: DateTime<Utc>) -> Option<Notification> {
        let episode = self.episode.as_mut()?;
        episode.notifications_sent += 1;
        let new_since_last = episode.count - episode.count_at_last_notice;
        episode.count_at_last_notice = episode.count;
        episode.last_notified = now;
        self.dirty = false;
        let (state, resolved_at) =
            if notice == Notice::Resolved { (AlertState::Resolved, Some(now)) } else { (AlertState::Firing, None) };
        let alert = self.view(key, state, resolved_at)?;
        Some(Notification { notice, alert, new_since_last })
    }
}

/// Every alert the Hawk tracks, keyed `rule:subject`.
pub struct Engine {
    policy: Policy,
    alerts: HashMap<String, Tracked>,
}

impl Engine {
    pub fn new(policy: Policy) -> Engine {
        Engine { policy, alerts: HashMap::new() }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Counts one trigger; returns the notification it causes, if any (firing or escalation).
    pub fn observe(&mut self, trigger: Trigger) -> Option<Notification> {
        let threshold = self.policy.threshold(trigger.rule);
        let key = format!("{}:{}", trigger.rule.name(), trigger.subject);
        let tracked = self.alerts.entry(key.clone()).or_insert_with(|| Tracked::new(trigger.rule, trigger.subject));
        let at = trigger.at;
        tracked.window.push_back((at, trigger.weight));
        tracked.window_sum += trigger.weight;
        tracked.slide(at - self.policy.window, threshold.window_need());
        if let Some(id) = trigger.request_id {
            if tracked.samples.len() == SAMPLES {
                tracked.samples.pop_front();
            }
            tracked.samples.push_back(id);
        }
        if trigger.detail.is_some() {
            tracked.detail = trigger.detail;
        }
        tracked.dirty = true;
        let critical = trigger.critical || threshold.critical_at.is_some_and(|c| tracked.window_sum >= c);
        let severity = if critical { AlertSeverity::Critical } else { AlertSeverity::Warning };

        if let Some(episode) = tracked.episode.as_mut() {
            episode.last_seen = episode.last_seen.max(at);
            episode.count += trigger.weight;
            if severity > episode.severity {
                episode.severity = severity;
                return tracked.notify(&key, Notice::Escalated, at);
            }
            return None;
        }
        if tracked.window_sum < threshold.fire_at {
            return None;
        }
        while tracked.fired.front().is_some_and(|&t| at - t >= self.policy.repeat) {
            tracked.fired.pop_front();
        }
        tracked.fired.push_back(at);
        tracked.episode = Some(Episode {
            id: Uuid::now_v7(),
            severity,
            first_seen: tracked.window.front().map_or(at, |&(t, _)| t),
            last_seen: at,
            count: tracked.window_sum,
            notifications_sent: 0,
            last_notified: at,
            count_at_last_notice: 0,
            flapping: tracked.fired.len() >= 2,
        });
        tracked.notify(&key, Notice::Fired, at)
    }

    /// Resolves the firing alert of `rule` and `subject` now, when what it watches says the
    /// trouble is over (a circuit closed), rather than after a quiet period.
    pub fn resolve(&mut self, rule: Rule, subject: &str, now: DateTime<Utc>) -> Option<Notification> {
        let key = format!("{}:{subject}", rule.name());
        let tracked = self.alerts.get_mut(&key)?;
        let notification = tracked.notify(&key, Notice::Resolved, now);
        tracked.end();
        notification
    }

    /// Advances time: resolves quiet alerts, reminds about lasting ones, forgets the rest.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Notification> {
        let policy = &self.policy;
        let mut out = Vec::new();
        self.alerts.retain(|key, tracked| {
            let need = policy.threshold(tracked.rule).window_need();
            tracked.slide(now - policy.window, need);
            while tracked.fired.front().is_some_and(|&t| now - t >= policy.repeat) {
                tracked.fired.pop_front();
            }
            if let Some(episode) = &tracked.episode {
                let quiet = if episode.flapping { policy.flap_resolve_after } else { policy.resolve_after };
                let notice = if now - episode.last_seen >= quiet {
                    Some(Notice::Resolved)
                } else if now - episode.last_notified >= policy.repeat && episode.count > episode.count_at_last_notice {
                    Some(Notice::Reminder)
                } else {
                    None
                };
                if let Some(notice) = notice {
                    out.extend(tracked.notify(key, notice, now));
                }
                if notice == Some(Notice::Resolved) {
                    tracked.end();
                }
            }
            tracked.episode.is_some() || !tracked.window.is_empty() || !tracked.fired.is_empty()
        });
        out
    }

    /// Firing alerts that changed since their last notification or the previous call, to persist.
    pub fn take_changed(&mut self) -> Vec<AlertView> {
        self.alerts
            .iter_mut()
            .filter(|(_, t)| t.dirty)
            .filter_map(|(key, t)| {
                t.dirty = false;
                t.view(key, AlertState::Firing, None)
            })
            .collect()
    }

    /// How many alerts of `rule` are firing.
    pub fn firing(&self, rule: Rule) -> usize {
        self.alerts.values().filter(|t| t.rule == rule && t.episode.is_some()).count()
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.alerts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").expect("time").with_timezone(&Utc)
    }

    fn secs(s: i64) -> TimeDelta {
        TimeDelta::seconds(s)
    }

    fn engine() -> Engine {
        Engine::new(Policy::from_config(&HawkConfig::default()))
    }

    fn error(at: DateTime<Utc>, model: &str, n: usize) -> Trigger {
        Trigger::new(Rule::ServerErrors, model, at).request(format!("req-{n}").into())
    }

    fn notices(out: &[Notification]) -> Vec<Notice> {
        out.iter().map(|n| n.notice).collect()
    }

    #[test]
    fn a_single_500_does_not_page_and_four_a_minute_do_not_either() {
        let mut hawk = engine();
        for n in 0..4 {
            assert!(hawk.observe(error(t0() + secs(n * 10), "gpt-4o", n as usize)).is_none());
        }
        // Spread out, errors never sum to five within a minute.
        for n in 0..20 {
            assert!(hawk.observe(error(t0() + secs(60 + n * 20), "gpt-4o-mini", n as usize)).is_none());
        }
        assert!(hawk.tick(t0() + secs(3600)).is_empty());
        assert_eq!(hawk.tracked(), 0, "nothing is kept once the window is empty");
    }

    #[test]
    fn a_burst_of_forty_makes_one_firing_and_one_escalation() {
        let mut hawk = engine();
        let out: Vec<_> =
            (0..40).filter_map(|n| hawk.observe(error(t0() + TimeDelta::milliseconds(n * 100), "gpt-4o", 0))).collect();
        assert_eq!(notices(&out), vec![Notice::Fired, Notice::Escalated]);
        assert_eq!((out[0].alert.severity, out[0].alert.count), (AlertSeverity::Warning, 5));
        assert_eq!(out[0].alert.first_seen, t0());
        assert_eq!(out[0].alert.key, "server_errors:gpt-4o");
        assert_eq!((out[1].alert.severity, out[1].alert.count), (AlertSeverity::Critical, 10));
        let changed = hawk.take_changed();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].count, 40);
        assert_eq!(changed[0].sample_request_ids.len(), SAMPLES);
        assert!(hawk.take_changed().is_empty(), "persisted once until it changes again");
    }

    #[test]
    fn alerts_are_per_key() {
        let mut hawk = engine();
        let mut fired = 0;
        for n in 0..5 {
            for model in ["gpt-4o", "gpt-4o-mini"] {
                fired += usize::from(hawk.observe(error(t0() + secs(n), model, 0)).is_some());
            }
        }
        assert_eq!(fired, 2);
        assert_eq!(hawk.firing(Rule::ServerErrors), 2);
    }

    #[test]
    fn resolves_once_after_a_quiet_period() {
        let mut hawk = engine();
        for n in 0..5 {
            hawk.observe(error(t0() + secs(n), "gpt-4o", n as usize));
        }
        let last = t0() + secs(4);
        assert!(hawk.tick(last + secs(299)).is_empty(), "not quiet long enough");
        let out = hawk.tick(last + secs(300));
        assert_eq!(notices(&out), vec![Notice::Resolved]);
        let resolved = &out[0].alert;
        assert_eq!((resolved.state, resolved.count, resolved.notifications_sent), (AlertState::Resolved, 5, 2));
        assert_eq!(resolved.resolved_at, Some(last + secs(300)));
        assert!(hawk.tick(last + secs(900)).is_empty(), "resolved exactly once");
        assert_eq!(hawk.firing(Rule::ServerErrors), 0);
    }

    #[test]
    fn a_provider_down_fires_on_its_first_trigger_and_resolves_when_told() {
        let mut hawk = engine();
        let down = |at| Trigger::new(Rule::ProviderDown, "openai", at).critical(true);
        let out: Vec<_> = (0..3).filter_map(|n| hawk.observe(down(t0() + secs(n * 30)))).collect();
        assert_eq!(notices(&out), vec![Notice::Fired], "a failed probe keeps it firing, unannounced");
        assert_eq!(
            (out[0].alert.key.as_str(), out[0].alert.severity),
            ("provider_down:openai", AlertSeverity::Critical)
        );
        assert!(hawk.resolve(Rule::ProviderDown, "anthropic", t0() + secs(70)).is_none(), "not firing");
        let resolved = hawk.resolve(Rule::ProviderDown, "openai", t0() + secs(70)).expect("resolved");
        assert_eq!((resolved.notice, resolved.alert.state), (Notice::Resolved, AlertState::Resolved));
        assert!(hawk.resolve(Rule::ProviderDown, "openai", t0() + secs(71)).is_none(), "resolved once");
        assert_eq!(hawk.firing(Rule::ProviderDown), 0);
        assert!(hawk.tick(t0() + secs(1000)).is_empty());
        assert_eq!(
            notices(&hawk.observe(down(t0() + secs(1001))).into_iter().collect::<Vec<_>>()),
            vec![Notice::Fired]
        );
    }

    #[test]
    fn reminds_at_most_every_repeat_interval_while_it_holds() {
        let mut hawk = engine();
        let mut out = Vec::new();
        // Errors every 30 s for three hours: one continuous incident.
        for step in 0..(3 * 120) {
            let at = t0() + secs(step * 30);
            out.extend(hawk.observe(error(at, "gpt-4o", 0)));
            out.extend(hawk.tick(at));
        }
        // Five in a minute are never reached at this pace, so use a steady storm instead.
        assert!(out.is_empty());
        for step in 0..(3 * 3600) {
            let at = t0() + secs(20_000 + step);
            out.extend(hawk.observe(error(at, "gpt-4o", 0)));
            out.extend(hawk.tick(at));
        }
        assert_eq!(
            notices(&out),
            vec![Notice::Fired, Notice::Escalated, Notice::Reminder, Notice::Reminder],
            "reminders one and two hours after the escalation; the storm ends before a third"
        );
        assert_eq!(out[2].new_since_last, 3600, "a reminder says how many came since the last message");
    }

    #[test]
    fn flapping_pages_a_handful_of_times_not_on_every_swing() {
        let mut hawk = engine();
        let mut out = Vec::new();
        // Two hours of: five errors, then six quiet minutes, again and again.
        for cycle in 0..20 {
            let start = t0() + secs(cycle * 6 * 60);
            for n in 0..5 {
                out.extend(hawk.observe(error(start + secs(n), "gpt-4o", 0)));
            }
            for s in (0..360).step_by(10) {
                out.extend(hawk.tick(start + secs(s)));
            }
        }
        assert_eq!(
            notices(&out),
            vec![Notice::Fired, Notice::Resolved, Notice::Fired, Notice::Reminder],
            "fire, resolve, fire again marked flapping, then one reminder an hour"
        );
        assert!(!out[0].alert.flapping && out[2].alert.flapping);
        // Then it calms down: the hourly reminder is due once more, then one resolution after
        // the longer flapping quiet period, and silence.
        let calm = t0() + secs(20 * 6 * 60);
        let last = calm - secs(360 - 4);
        let rest: Vec<_> = (0..=180).flat_map(|m| hawk.tick(calm + secs(m * 60))).collect();
        assert_eq!(notices(&rest), vec![Notice::Reminder, Notice::Resolved]);
        assert!(rest[1].alert.resolved_at.is_some_and(|at| at - last >= secs(1_800) && at - last < secs(1_900)));
    }

    #[test]
    fn weights_and_critical_triggers() {
        let mut hawk = engine();
        let dropped = hawk.observe(Trigger::new(Rule::UsageDropped, "usage_writer", t0()).weight(250));
        let dropped = dropped.expect("the first drop fires");
        assert_eq!((dropped.alert.severity, dropped.alert.count), (AlertSeverity::Critical, 250));

        let email = hawk.observe(Trigger::new(Rule::EmailFailing, "outbox", t0()).detail("retrying"));
        assert_eq!(email.map(|n| n.alert.severity), Some(AlertSeverity::Warning));
        let email = hawk.observe(Trigger::new(Rule::EmailFailing, "outbox", t0() + secs(1)).critical(true));
        let email = email.expect("a permanent failure escalates");
        assert_eq!((email.notice, email.alert.severity), (Notice::Escalated, AlertSeverity::Critical));
        assert_eq!(email.alert.detail.as_deref(), Some("retrying"), "the latest detail is kept");
    }

    #[test]
    fn findings_are_deduplicated_per_customer() {
        let mut hawk = engine();
        let out: Vec<_> = (0..30)
            .filter_map(|n| {
                let customer = if n % 3 == 0 { "customer-a" } else { "customer-b" };
                hawk.observe(Trigger::new(Rule::Finding, customer, t0() + secs(n)))
            })
            .collect();
        assert_eq!(out.len(), 2, "one per customer");
    }

    #[test]
    fn absurd_settings_neither_panic_nor_page_wrongly() {
        let forever = u64::MAX;
        let config = HawkConfig {
            window_secs: forever,
            repeat_interval_secs: forever,
            resolve_after_secs: forever,
            flap_resolve_after_secs: forever,
            server_errors_critical: 0,
            ..HawkConfig::default()
        };
        let mut hawk = Engine::new(Policy::from_config(&config));
        let fired: Vec<_> = (0..10).filter_map(|n| hawk.observe(error(t0() + secs(n * 600), "gpt-4o", 0))).collect();
        assert_eq!(notices(&fired), vec![Notice::Fired], "critical below firing means critical when it fires");
        assert_eq!(fired[0].alert.severity, AlertSeverity::Critical);
        assert!(hawk.tick(t0() + secs(100 * 24 * 3600)).is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut hawk = engine();
        for n in 0..100_000 {
            hawk.observe(error(t0() + TimeDelta::milliseconds(n), "gpt-4o", 0));
        }
        let tracked = hawk.alerts.values().next().expect("tracked");
        assert!(tracked.window.len() <= 10, "only what the thresholds need: {}", tracked.window.len());
        assert_eq!(tracked.samples.len(), SAMPLES);
        hawk.tick(t0() + secs(100 + 300));
        assert_eq!(hawk.tracked(), 1, "the resolved alert is remembered for flap detection");
        hawk.tick(t0() + secs(100 + 3600));
        assert_eq!(hawk.tracked(), 0);
    }
}
