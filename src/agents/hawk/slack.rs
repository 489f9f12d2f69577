//! Slack incoming webhook (`SLACK_WEBHOOK_URL`): alert notifications and the daily summary,
//! each a plain `text` (what phones show) plus `blocks` (what, since when, how many, sample
//! request ids, a link to the dashboard). One task behind a bounded queue: it waits
//! `group_wait` after the first message, takes everything queued meanwhile and posts it as
//! one message (Slack allows about one a second; a burst across models is one message),
//! folding a firing and its escalation into one.

use super::Alarms;
use super::rules::{AlertSeverity, AlertView, Notice, Notification, Rule, Trigger};
use crate::agents::Queue;
use crate::agents::delivery::{Outcome, Webhook};
use crate::events::{DailySummary, Event, FindingEvent};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Alerts shown in full in one message; Slack allows 50 blocks, each alert takes three.
const ALERTS_PER_MESSAGE: usize = 10;
/// Messages taken from the queue at once.
const BATCH: usize = 100;

pub enum SlackMessage {
    Alert(Box<Notification>),
    Summary(Box<DailySummary>),
}

pub fn spawn(
    webhook: Webhook,
    dashboard: String,
    group_wait: Duration,
    alarms: Alarms,
) -> (Queue<SlackMessage>, JoinHandle<()>) {
    let (queue, mut rx) = Queue::new("slack", 256);
    let task = crate::tasks::owned(async move {
        while let Some(first) = rx.recv().await {
            tokio::time::sleep(group_wait).await;
            let mut batch = vec![first];
            while batch.len() < BATCH
                && let Ok(message) = rx.try_recv()
            {
                batch.push(message);
            }
            for payload in payloads(batch, &dashboard) {
                let body = payload.to_string().into_bytes();
                if let Outcome::Refused(why) | Outcome::GaveUp(why) = webhook.post(body.into(), &[]).await {
                    tracing::error!(reason = %why, "Slack did not take a message");
                    alarms
                        .push(Trigger::new(Rule::DeliveryFailing, "slack", Utc::now()).detail(format!("Slack: {why}")));
                }
            }
        }
    });
    (queue, task)
}

/// One message for all the alerts of a batch (each key once, at its latest state), one per summary.
fn payloads(batch: Vec<SlackMessage>, dashboard: &str) -> Vec<Value> {
    let mut alerts: Vec<Notification> = Vec::new();
    let mut out = Vec::new();
    for message in batch {
        match message {
            SlackMessage::Summary(summary) => out.push(summary_payload(&summary, dashboard)),
            SlackMessage::Alert(n) => match alerts.iter_mut().find(|a| a.alert.id == n.alert.id) {
                Some(earlier) => {
                    // Nobody has seen the earlier one yet: a firing stays a firing, at the latest state.
                    if !(earlier.notice == Notice::Fired && n.notice != Notice::Resolved) {
                        earlier.notice = n.notice;
                    }
                    earlier.new_since_last += n.new_since_last;
                    earlier.alert = n.alert;
                }
                None => alerts.push(*n),
            },
        }
    }
    if !alerts.is_empty() {
        out.insert(0, alerts_payload(&alerts, dashboard));
    }
    out
}

fn alerts_payload(alerts: &[Notification], dashboard: &str) -> Value {
    let headlines: Vec<String> = alerts.iter().map(headline).collect();
    let text = match headlines.as_slice() {
        [one] => one.clone(),
        many => format!("{} alert updates: {}", many.len(), many.join("; ")),
    };
    let mut blocks = Vec::new();
    for n in alerts.iter().take(ALERTS_PER_MESSAGE) {
        blocks.extend(alert_blocks(n, dashboard));
    }
    if alerts.len() > ALERTS_PER_MESSAGE {
        let more = alerts.len() - ALERTS_PER_MESSAGE;
        blocks.push(context(&format!("…and {more} more: <{dashboard}|see the dashboard>")));
    }
    json!({"text": escape(&truncate(&text, 2900)), "blocks": blocks})
}

/// One line saying what happened, for Slack's `text`, the first line of its blocks, and n8n.
pub fn headline(n: &Notification) -> String {
    let a = &n.alert;
    let what = format!("{} · {}", a.rule.title(), a.subject);
    let since = when(a.first_seen);
    match n.notice {
        Notice::Fired => {
            let flapping = if a.flapping { " (flapping: it fired again within the hour)" } else { "" };
            format!("{} FIRING ({}): {what}: {} since {since}{flapping}", icon(a), a.severity.as_str(), a.count)
        }
        Notice::Escalated => format!(":rotating_light: now CRITICAL: {what}: {} since {since}", a.count),
        Notice::Reminder => format!(
            ":hourglass_flowing_sand: STILL FIRING ({}): {what}: {} more since the last message, {} since {since}",
            a.severity.as_str(),
            n.new_since_last,
            a.count
        ),
        Notice::Resolved => {
            format!(":white_check_mark: RESOLVED: {what}: {} in all, from {since} to {}", a.count, when(a.last_seen))
        }
    }
}

fn icon(alert: &AlertView) -> &'static str {
    match alert.severity {
        AlertSeverity::Critical => ":rotating_light:",
        AlertSeverity::Warning => ":warning:",
    }
}

fn alert_blocks(n: &Notification, dashboard: &str) -> [Value; 3] {
    let a = &n.alert;
    let mut summary = format!("*{}*", escape(&headline(n)));
    if let Some(detail) = &a.detail {
        summary.push_str(&format!("\nLatest: {}", escape(detail)));
    }
    let samples = if a.sample_request_ids.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = a.sample_request_ids.iter().map(|id| format!("`{}`", escape(id))).collect();
        format!(" · sample requests {}", ids.join(", "))
    };
    [
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&summary, 2900)}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Since*\n{}", when(a.first_seen))},
            {"type": "mrkdwn", "text": format!("*Last seen*\n{}", when(a.last_seen))},
            {"type": "mrkdwn", "text": format!("*Count*\n{}", a.count)},
            {"type": "mrkdwn", "text": format!("*Severity*\n{}", a.severity.as_str())},
        ]}),
        context(&format!("Alert `{}`{samples} · <{dashboard}|Open the dashboard>", escape(&a.key))),
    ]
}

fn summary_payload(s: &DailySummary, dashboard: &str) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("Daily summary · {}", s.day.format("%a %-d %b %Y"))}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Revenue*\n{}", usd(s.revenue_usd))},
            {"type": "mrkdwn", "text": format!("*Upstream cost*\n{}", usd(s.cost_usd))},
            {"type": "mrkdwn", "text": format!("*Margin*\n{}{}", usd(s.margin_usd), margin_pct(s))},
            {"type": "mrkdwn", "text": format!("*Unpriced requests*\n{}", s.unpriced_requests)},
        ]}),
    ];
    let top: Vec<String> = s
        .top_customers_by_cost
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, (email, cost))| format!("{}. {} · {}", i + 1, escape(email), usd(*cost)))
        .collect();
    if !top.is_empty() {
        blocks.push(section(&format!("*Top customers by upstream cost*\n{}", top.join("\n"))));
    }
    if !s.unprofitable_customers.is_empty() {
        let shown: Vec<String> = s.unprofitable_customers.iter().take(10).map(|e| escape(e)).collect();
        let more = s.unprofitable_customers.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        blocks.push(section(&format!(":warning: *Cost above revenue:* {}{more}", shown.join(", "))));
    }
    if s.unpriced_requests > 0 {
        blocks.push(context(&format!(
            "{} requests used a model without a price: their cost is unknown, not zero. Add it under `[prices]`.",
            s.unpriced_requests
        )));
    }
    blocks.push(context(&format!("<{dashboard}|Open the dashboard>")));
    json!({"text": summary_line(s), "blocks": blocks})
}

pub fn summary_line(s: &DailySummary) -> String {
    format!(
        ":bar_chart: Daily summary for {}: revenue {}, upstream cost {}, margin {}{}",
        s.day,
        usd(s.revenue_usd),
        usd(s.cost_usd),
        usd(s.margin_usd),
        margin_pct(s)
    )
}

/// A one-line description of an agent event forwarded to n8n (for a workflow's Slack node).
pub fn describe(event: &Event) -> Option<String> {
    match event {
        Event::KeyVended { email, plan, key_prefix, .. } => {
            Some(format!(":key: Key {key_prefix}… vended to {email} (plan {plan})"))
        }
        Event::Finding(f) => Some(format!(":shield: {}", finding_line(f))),
        Event::DailySummary(s) => Some(summary_line(s)),
        _ => None,
    }
}

/// What the Sentinel found, in one line (the detail is already redacted by the Sentinel).
pub fn finding_line(f: &FindingEvent) -> String {
    let customer = f.customer_id.map_or_else(|| "an unknown customer".to_string(), |c| format!("customer {c}"));
    let rules = if f.rules.is_empty() { String::new() } else { format!(", rules {}", f.rules.join(", ")) };
    format!(
        "{:?} ({:?}, score {:.2}{rules}) from {customer} in request {}: {}",
        f.kind, f.severity, f.score, f.request_id, f.detail
    )
}

fn margin_pct(s: &DailySummary) -> String {
    if s.revenue_usd > 0.0 { format!(" ({:.0}%)", s.margin_usd / s.revenue_usd * 100.0) } else { String::new() }
}

fn usd(amount: f64) -> String {
    if amount < 0.0 { format!("-${:.2}", -amount) } else { format!("${amount:.2}") }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 2900)}})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, 2900)}]})
}

/// Slack's mrkdwn control characters (contracts.md §3); also n8n's `data.text`, which a
/// workflow posts to Slack.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::hawk::rules::{AlertState, Rule};
    use uuid::Uuid;

    fn notification(notice: Notice, id: Uuid, count: u64) -> Box<Notification> {
        let at = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").expect("time").with_timezone(&Utc);
        Box::new(Notification {
            notice,
            new_since_last: count,
            alert: AlertView {
                id,
                key: "server_errors:gpt-4o".into(),
                rule: Rule::ServerErrors,
                subject: "gpt-4o".into(),
                severity: if count >= 10 { AlertSeverity::Critical } else { AlertSeverity::Warning },
                state: AlertState::Firing,
                first_seen: at,
                last_seen: at,
                resolved_at: None,
                count,
                sample_request_ids: vec!["req-<1>".into()],
                notifications_sent: 1,
                flapping: false,
                detail: Some("HTTP 502 upstream_error from openai".into()),
            },
        })
    }

    #[test]
    fn a_firing_and_its_escalation_in_one_batch_are_one_critical_firing() {
        let id = Uuid::now_v7();
        let batch = vec![
            SlackMessage::Alert(notification(Notice::Fired, id, 5)),
            SlackMessage::Alert(notification(Notice::Escalated, id, 10)),
        ];
        let out = payloads(batch, "https://omi.example/admin");
        assert_eq!(out.len(), 1);
        let text = out[0]["text"].as_str().expect("text");
        assert!(text.starts_with(":rotating_light: FIRING (critical): 5xx errors · gpt-4o: 10 since"), "{text}");
        let blocks = out[0]["blocks"].to_string();
        assert!(blocks.contains("req-&lt;1&gt;"), "request ids are escaped: {blocks}");
        assert!(blocks.contains("<https://omi.example/admin|Open the dashboard>"), "{blocks}");
        assert!(blocks.contains("HTTP 502 upstream_error"), "{blocks}");
    }

    #[test]
    fn many_alerts_make_one_message_within_slack_limits() {
        let batch: Vec<_> =
            (0..25).map(|_| SlackMessage::Alert(notification(Notice::Fired, Uuid::now_v7(), 5))).collect();
        let out = payloads(batch, "https://omi.example/admin");
        assert_eq!(out.len(), 1);
        let blocks = out[0]["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50);
        assert!(out[0]["text"].as_str().is_some_and(|t| t.starts_with("25 alert updates")));
    }

    #[test]
    fn the_daily_summary_reads_well() {
        let summary = DailySummary {
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).expect("date"),
            revenue_usd: 290.0,
            cost_usd: 41.5,
            margin_usd: 248.5,
            top_customers_by_cost: vec![("ada@example.com".into(), 30.25), ("bob@example.com".into(), 11.25)],
            unprofitable_customers: vec!["bob@example.com".into()],
            unpriced_requests: 3,
        };
        let out = payloads(vec![SlackMessage::Summary(Box::new(summary))], "https://omi.example/admin");
        assert_eq!(
            out[0]["text"],
            ":bar_chart: Daily summary for 2026-11-25: revenue $290.00, upstream cost $41.50, margin $248.50 (86%)"
        );
        let blocks = out[0]["blocks"].to_string();
        for expected in ["Wed 25 Nov 2026", "1. ada@example.com · $30.25", "Cost above revenue", "3 requests"] {
            assert!(blocks.contains(expected), "{expected} in {blocks}");
        }
        assert_eq!(usd(-1.5), "-$1.50");
    }
}
