//! The Hawk end to end: real traffic through the gateway, a fake Slack incoming webhook and
//! a fake n8n Webhook node over HTTP (both built from contracts.md §3 and §5), the alerts in
//! the admin API on both backends, and `/metrics` parsed as Prometheus text.

use crate::billing::{ORDER, billing_config, order_created, outcome, postmark, wait_for_emails};
use crate::on_both_backends;
use crate::support::{Backend, TestApp, chat_body, eventually};
use chrono::{TimeDelta, Utc};
use omi::agents::hawk::rules::{AlertSeverity, AlertState, AlertView, Rule};
use omi::config::Config;
use omi::domain::lemonsqueezy::signature_is_valid;
use omi::events::{DailySummary, Event, FindingEvent, FindingKind, Severity};
use omi::store::AlertRecord;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const N8N_SECRET: &str = "n8n-test-signing-secret";

/// A Slack incoming webhook or n8n Webhook node that answers with `respond` and remembers
/// when each call came.
#[derive(Clone)]
struct Fake {
    hits: Arc<Mutex<Vec<(Instant, Value)>>>,
    respond: fn(usize) -> ResponseTemplate,
}

/// The day of the daily summaries these tests publish themselves.
const SUMMARY_DAY: &str = "2020-02-29";

/// The Accountant posts yesterday's books when a server starts: taken, not counted.
fn accountants_own_summary(body: &Value) -> bool {
    let slack = body["text"].as_str().is_some_and(|t| t.starts_with(":bar_chart: Daily summary"));
    let n8n = body["type"] == "daily_summary";
    (slack || n8n) && !body.to_string().contains(SUMMARY_DAY)
}

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        if accountants_own_summary(&body) {
            return ResponseTemplate::new(200).set_body_string("ok");
        }
        let Ok(mut hits) = self.hits.lock() else { return ResponseTemplate::new(500) };
        hits.push((Instant::now(), body));
        (self.respond)(hits.len())
    }
}

impl Fake {
    async fn start(respond: fn(usize) -> ResponseTemplate) -> (Fake, MockServer) {
        let fake = Fake { hits: Arc::default(), respond };
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(fake.clone()).mount(&server).await;
        (fake, server)
    }

    fn bodies(&self) -> Vec<Value> {
        self.hits.lock().map(|h| h.iter().map(|(_, b)| b.clone()).collect()).unwrap_or_default()
    }

    fn times(&self) -> Vec<Instant> {
        self.hits.lock().map(|h| h.iter().map(|(t, _)| *t).collect()).unwrap_or_default()
    }

    fn texts(&self) -> Vec<String> {
        self.bodies().iter().filter_map(|b| b["text"].as_str().map(str::to_owned)).collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, check: impl Fn(&[Value]) -> bool) {
        let found = eventually(within, || async { check(&self.bodies()) }).await;
        assert!(found.is_some(), "{what}: got {:#?}", self.bodies());
    }
}

fn slack_ok(_: usize) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string("ok")
}

fn slack_url(server: &MockServer) -> SecretString {
    SecretString::from(format!("{}/services/T0000/B0000/XXXXsecretXXXX", server.uri()))
}

/// Fast timings for tests; the defaults are minutes and hours.
fn watch(config: &mut Config, slack: &MockServer) {
    config.slack_webhook_url = Some(slack_url(slack));
    config.public_url = Some("https://omi.example".into());
    config.hawk.group_wait_ms = 200;
    config.hawk.probe_interval_secs = 1;
    // The mock fails the requests that ask it to: circuits would skip it after a few.
    config.circuit_failures = 0;
}

fn failing(mut body: Value, status: u16) -> Value {
    body["mock"] = json!({"status": status});
    body
}

async fn alerts(app: &TestApp, query: &str) -> Value {
    let response = app.admin(Method::GET, &format!("/admin/api/alerts{query}")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_upstream_500s_makes_one_or_two_messages_then_one_resolved() {
    let (slack, server) = Fake::start(slack_ok).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &server);
        c.hawk.resolve_after_secs = 2;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    // One 500 does not page.
    let one = app.chat(&key, failing(chat_body(false), 500)).send().await.expect("send");
    assert_eq!(one.status(), 502);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(slack.bodies().is_empty(), "a single 500 must not page");

    for n in 0..39 {
        let request = app.chat(&key, failing(chat_body(false), 500)).header("x-request-id", format!("burst-{n:02}"));
        assert_eq!(request.send().await.expect("send").status(), 502);
    }
    slack
        .wait_for("one resolution", Duration::from_secs(15), |bodies| {
            bodies.iter().any(|b| b["text"].as_str().is_some_and(|t| t.contains("RESOLVED")))
        })
        .await;
    let texts = slack.texts();
    let (resolved, firing): (Vec<_>, Vec<_>) = texts.iter().partition(|t| t.contains("RESOLVED"));
    eprintln!("a burst of 40 errors: {} firing message(s), {} resolved", firing.len(), resolved.len());
    assert!((1..=2).contains(&firing.len()), "40 failures, 1–2 messages: {texts:#?}");
    assert!(firing[0].contains("FIRING") && firing[0].contains("5xx errors · gpt-4o-mini"), "{texts:#?}");
    let critical = |t: &&String| t.contains("FIRING (critical)") || t.contains("now CRITICAL");
    assert!(firing.iter().any(critical), "10 in a minute is critical: {texts:#?}");
    assert_eq!(resolved.len(), 1, "{texts:#?}");
    assert!(resolved[0].contains("40 in all"), "{texts:#?}");
    let blocks = serde_json::to_string(&slack.bodies()).expect("json");
    assert!(blocks.contains("<https://omi.example/admin|Open the dashboard>"), "{blocks}");
    assert!(blocks.contains("burst-"), "sample request ids: {blocks}");
    assert!(blocks.contains("Since") && blocks.contains("Count"), "{blocks}");

    let stored =
        eventually(Duration::from_secs(5), || async { alerts(&app, "").await["data"][0]["state"] == "resolved" }).await;
    assert!(stored.is_some(), "{}", alerts(&app, "").await);
    let alert = &alerts(&app, "").await["data"][0];
    assert_eq!((alert["key"].as_str(), alert["count"].as_i64()), (Some("server_errors:gpt-4o-mini"), Some(40)));
    assert_eq!((alert["severity"].as_str(), alert["notifications_sent"].as_i64()), (Some("critical"), Some(3)));
    assert_eq!(alert["sample_request_ids"].as_array().map(Vec::len), Some(5));
}

on_both_backends!(alerts_are_listed_firing_first_and_paged);

pub(crate) fn view(rule: Rule, subject: &str, state: AlertState, seen_ago: TimeDelta) -> AlertView {
    let last_seen = Utc::now() - seen_ago;
    AlertView {
        id: Uuid::now_v7(),
        key: format!("{}:{subject}", rule.name()),
        rule,
        subject: subject.into(),
        severity: AlertSeverity::Warning,
        state,
        first_seen: last_seen - TimeDelta::minutes(1),
        last_seen,
        resolved_at: (state == AlertState::Resolved).then_some(last_seen),
        count: 7,
        sample_request_ids: vec!["req-1".into(), "req-2".into()],
        notifications_sent: 1,
        flapping: false,
        detail: Some("HTTP 502".into()),
    }
}

async fn alerts_are_listed_firing_first_and_paged(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    let minutes = TimeDelta::minutes;
    let old_resolved = view(Rule::WebhookRejected, "bad_signature", AlertState::Resolved, minutes(120));
    let new_resolved = view(Rule::Latency, "gpt-4o", AlertState::Resolved, minutes(5));
    let firing = view(Rule::ServerErrors, "gpt-4o", AlertState::Firing, minutes(1));
    // Older than the manual sweep below, younger than the Hawk's own (32 min by default).
    let mut stale = view(Rule::DatabaseUnreachable, "postgres", AlertState::Firing, minutes(25));
    for alert in [&old_resolved, &new_resolved, &firing, &stale] {
        store.upsert_alert(&AlertRecord::from(alert)).await.expect("insert");
    }
    // An update of the same episode: more occurrences, escalated.
    stale.count = 9;
    stale.severity = AlertSeverity::Critical;
    stale.notifications_sent = 2;
    store.upsert_alert(&AlertRecord::from(&stale)).await.expect("update");

    let keys = |page: &Value| -> Vec<String> {
        page["data"].as_array().into_iter().flatten().filter_map(|a| a["key"].as_str().map(str::to_owned)).collect()
    };
    let all = alerts(&app, "").await;
    assert_eq!(
        keys(&all),
        ["server_errors:gpt-4o", "database_unreachable:postgres", "latency:gpt-4o", "webhook_rejected:bad_signature"],
        "firing first, then most recently seen"
    );
    assert_eq!(all["has_more"], false);
    let first = &all["data"][1];
    assert_eq!((first["count"].as_i64(), first["severity"].as_str()), (Some(9), Some("critical")));
    assert_eq!((first["state"].as_str(), first["notifications_sent"].as_i64()), (Some("firing"), Some(2)));
    assert_eq!(first["sample_request_ids"], json!(["req-1", "req-2"]));
    assert_eq!(first["detail"], "HTTP 502");

    let page = alerts(&app, "?limit=2").await;
    assert_eq!((keys(&page).len(), &page["has_more"]), (2, &json!(true)));
    let next = alerts(&app, "?limit=2&offset=2").await;
    assert_eq!(keys(&next), ["latency:gpt-4o", "webhook_rejected:bad_signature"]);
    assert_eq!(next["has_more"], false);
    assert_eq!(keys(&alerts(&app, "?state=firing").await).len(), 2);

    for bad in ["?state=open", "?limit=many"] {
        let response = app.admin(Method::GET, &format!("/admin/api/alerts{bad}")).send().await.expect("send");
        assert_eq!(response.status(), 400, "{bad}");
    }
    let anonymous = app.http.get(format!("{}/admin/api/alerts", app.base)).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);
    let wrong = app.http.get(format!("{}/admin/api/alerts", app.base)).bearer_auth("nope").send().await;
    assert_eq!(wrong.expect("send").status(), 401);

    // A firing alert whose instance stopped watching is resolved by the sweep.
    let swept = store.resolve_abandoned_alerts(Utc::now() - minutes(20), Utc::now()).await.expect("sweep");
    assert_eq!(swept, 1);
    assert_eq!(keys(&alerts(&app, "?state=firing").await), ["server_errors:gpt-4o"]);

    // And what the Hawk itself fires is stored on this backend too.
    app.state().events.publish(Event::WebhookRejected { reason: "bad_signature" });
    let stored = eventually(Duration::from_secs(5), || async {
        keys(&alerts(&app, "?state=firing").await).contains(&"webhook_rejected:bad_signature".to_string())
    })
    .await;
    assert!(stored.is_some(), "{}", alerts(&app, "").await);

    // The usage writer reports a running total of dropped records: 3, then 5 in all.
    for dropped in [3, 5] {
        app.state().events.publish(Event::UsageDropped { dropped });
    }
    let counted = eventually(Duration::from_secs(5), || async {
        let page = alerts(&app, "?state=firing").await;
        let found = page["data"].as_array().into_iter().flatten().find(|a| a["key"] == "usage_dropped:usage_writer");
        found.is_some_and(|a| a["count"] == 5 && a["severity"] == "critical")
    })
    .await;
    assert!(counted.is_some(), "{}", alerts(&app, "").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_rate_limits_are_honoured() {
    fn limited_once(hit: usize) -> ResponseTemplate {
        if hit == 1 {
            ResponseTemplate::new(429).insert_header("retry-after", "2").set_body_string("rate_limited")
        } else {
            slack_ok(hit)
        }
    }
    let (slack, server) = Fake::start(limited_once).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| watch(c, &server)).await else { return };
    app.state().events.publish(Event::WebhookRejected { reason: "bad_signature" });
    slack.wait_for("a retry after the 429", Duration::from_secs(10), |bodies| bodies.len() >= 2).await;
    let times = slack.times();
    let waited = times[1] - times[0];
    // Our own first backoff is about one second: two means Retry-After was obeyed.
    assert!(waited >= Duration::from_millis(1950) && waited < Duration::from_secs(5), "waited {waited:?}");
    let bodies = slack.bodies();
    assert_eq!(bodies[0], bodies[1], "the same message, sent again");
    assert!(bodies[0]["text"].as_str().is_some_and(|t| t.contains("Webhook calls refused · bad_signature")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slack.bodies().len(), 2, "delivered: no more attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_slack_never_slows_requests_and_retries_are_bounded() {
    let (slack, server) = Fake::start(|_| ResponseTemplate::new(500).set_body_string("rollup_error")).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| watch(c, &server)).await else { return };
    let key = app.create_key("ada@example.com").await;
    for _ in 0..5 {
        app.chat(&key, failing(chat_body(false), 500)).send().await.expect("send");
    }
    slack.wait_for("the first attempt", Duration::from_secs(5), |bodies| !bodies.is_empty()).await;
    // While the Hawk retries, requests take what they always take.
    let mut took = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        assert_eq!(app.chat(&key, chat_body(false)).send().await.expect("send").status(), 200);
        took.push(start.elapsed());
    }
    took.sort();
    let (median, max) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("requests while Slack is down: median {median:?}, max {max:?}");
    assert!(max < Duration::from_millis(500), "median {median:?}, max {max:?}");

    // Four attempts for the alert, four for "Slack is failing" (also for Slack), then silence.
    slack.wait_for("both messages given up", Duration::from_secs(40), |bodies| bodies.len() >= 8).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(slack.bodies().len(), 8, "{:#?}", slack.texts());
    let texts = slack.texts();
    assert!(texts[7].contains("Notifications not delivered · slack"), "{texts:#?}");
    let firing = alerts(&app, "?state=firing").await;
    let delivery = firing["data"].as_array().into_iter().flatten().find(|a| a["key"] == "delivery_failing:slack");
    let detail = delivery.and_then(|a| a["detail"].as_str()).unwrap_or_default();
    assert!(detail.contains("HTTP 500 after 4 attempts") && !detail.contains("XXXXsecret"), "{firing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_events_reach_n8n_signed_and_slack_gets_the_daily_summary() {
    let (slack, slack_server) = Fake::start(slack_ok).await;
    let (n8n, n8n_server) =
        Fake::start(|_| ResponseTemplate::new(200).set_body_json(json!({"message": "Workflow was started"}))).await;
    let postmark = postmark().await;
    let postmark_uri = postmark.uri();
    let n8n_url = format!("{}/webhook/omi-events", n8n_server.uri());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        billing_config(c, &postmark_uri);
        watch(c, &slack_server);
        c.n8n_webhook_url = Some(SecretString::from(n8n_url));
        c.n8n_webhook_secret = Some(SecretString::from(N8N_SECRET));
        c.hawk.n8n_auth_header = Some("X-N8N-Auth".into());
    })
    .await
    else {
        return;
    };
    // A real purchase vends a real key; n8n hears of it, never of the key.
    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    let key = wait_for_emails(&postmark, 1).await.pop().expect("emailed key");
    let customer = Uuid::now_v7();
    app.state().events.publish(Event::Finding(Box::new(FindingEvent {
        request_id: "req-injection-1".into(),
        at: Utc::now(),
        customer_id: Some(customer),
        kind: FindingKind::Injection,
        severity: Severity::High,
        score: 0.97,
        rules: vec!["ignore_previous".into()],
        detail: "ignore all previous instructions and…".into(),
    })));
    app.state().events.publish(Event::DailySummary(Box::new(DailySummary {
        day: SUMMARY_DAY.parse().expect("date"),
        revenue_usd: 29.0,
        cost_usd: 3.5,
        margin_usd: 25.5,
        top_customers_by_cost: vec![("ada@example.com".into(), 3.5)],
        unprofitable_customers: vec![],
        unpriced_requests: 0,
    })));

    n8n.wait_for("four events", Duration::from_secs(10), |bodies| bodies.len() >= 4).await;
    let requests = n8n_server.received_requests().await.expect("recorded");
    let mut types = Vec::new();
    for request in &requests {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let signature = header("x-omi-signature").strip_prefix("sha256=").unwrap_or_default();
        assert!(signature_is_valid(N8N_SECRET.as_bytes(), &request.body, signature), "bad signature");
        assert_eq!(header("x-n8n-auth"), N8N_SECRET, "n8n Header Auth");
        assert_eq!(header("content-type"), "application/json");
        let body = String::from_utf8_lossy(&request.body);
        assert!(!body.contains(&key), "a key was forwarded: {body}");
        let event: Value = serde_json::from_slice(&request.body).expect("json");
        assert!(event["id"].is_string() && event["at"].is_string() && event["data"].is_object(), "{event}");
        if !accountants_own_summary(&event) {
            types.push(event["type"].as_str().unwrap_or_default().to_string());
        }
    }
    types.sort();
    assert_eq!(types, ["alert_fired", "daily_summary", "finding", "key_vended"]);
    let by_type = |kind: &str| n8n.bodies().into_iter().find(|b| b["type"] == kind).unwrap_or(Value::Null);
    let vended = by_type("key_vended");
    let prefix = vended["data"]["key_prefix"].as_str().unwrap_or_default();
    assert!(prefix.starts_with("omi_") && key.starts_with(prefix) && prefix.len() < key.len(), "{vended}");
    assert_eq!(
        (vended["data"]["plan"].as_str(), vended["data"]["email"].as_str()),
        (Some("pro"), Some("ada@example.com"))
    );
    let fired = by_type("alert_fired");
    assert_eq!(fired["data"]["key"], format!("finding:{customer}"));
    assert!(fired["data"]["text"].as_str().is_some_and(|t| t.contains("High-severity finding")), "{fired}");
    assert_eq!(by_type("finding")["data"]["request_id"], "req-injection-1");

    slack.wait_for("summary and finding", Duration::from_secs(10), |bodies| bodies.len() >= 2).await;
    let texts = slack.texts();
    assert!(
        texts.iter().any(|t| t.starts_with(&format!(":bar_chart: Daily summary for {SUMMARY_DAY}: revenue $29.00"))),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.contains(&format!("High-severity finding · {customer}"))), "{texts:#?}");
    // A second finding of the same customer is the same alert: no new message.
    app.state().events.publish(Event::Finding(Box::new(FindingEvent {
        request_id: "req-injection-2".into(),
        at: Utc::now(),
        customer_id: Some(customer),
        kind: FindingKind::Injection,
        severity: Severity::High,
        score: 0.91,
        rules: vec![],
        detail: "pretend you are…".into(),
    })));
    n8n.wait_for("the second finding", Duration::from_secs(5), |bodies| bodies.len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(slack.bodies().len(), 2, "{:#?}", slack.texts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirects_are_not_followed() {
    let (slack, slack_server) = Fake::start(slack_ok).await;
    let (elsewhere, elsewhere_server) = Fake::start(slack_ok).await;
    let location = format!("{}/webhook/stolen", elsewhere_server.uri());
    let n8n_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", location.as_str()))
        .mount(&n8n_server)
        .await;
    let n8n_url = format!("{}/webhook/omi-events", n8n_server.uri());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &slack_server);
        c.n8n_webhook_url = Some(SecretString::from(n8n_url));
        c.n8n_webhook_secret = Some(SecretString::from(N8N_SECRET));
        c.hawk.n8n_auth_header = Some("X-N8N-Auth".into());
    })
    .await
    else {
        return;
    };
    app.state().events.publish(Event::KeyVended {
        customer_id: Uuid::now_v7(),
        email: "ada@example.com".into(),
        plan: "pro".into(),
        key_prefix: "omi_AbCdEfGh".into(),
        order_id: Some(1),
    });
    slack
        .wait_for("the delivery alert", Duration::from_secs(10), |bodies| {
            bodies.iter().any(|b| {
                b.to_string().contains("Notifications not delivered · n8n") && b.to_string().contains("HTTP 307")
            })
        })
        .await;
    assert!(elsewhere.bodies().is_empty(), "the signed event and its auth header went nowhere else");
    assert!(!slack.bodies().iter().any(|b| b.to_string().contains("stolen")), "where it pointed is not said");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_text_reaches_n8n_escaped_for_slack() {
    let (slack, slack_server) = Fake::start(slack_ok).await;
    let (n8n, n8n_server) = Fake::start(slack_ok).await;
    let n8n_url = format!("{}/webhook/omi-events", n8n_server.uri());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &slack_server);
        c.n8n_webhook_url = Some(SecretString::from(n8n_url));
        c.n8n_webhook_secret = Some(SecretString::from(N8N_SECRET));
    })
    .await
    else {
        return;
    };
    let hostile = "<!channel> urgent: <http://evil.example|click here> & log in";
    let customer = Uuid::now_v7();
    app.state().events.publish(Event::Finding(Box::new(FindingEvent {
        request_id: "req-<!here>".into(),
        at: Utc::now(),
        customer_id: Some(customer),
        kind: FindingKind::Injection,
        severity: Severity::High,
        score: 0.95,
        rules: vec![],
        detail: format!("injection (score 0.95): messages[0].content (role=user): {hostile}"),
    })));
    app.state().events.publish(Event::KeyVended {
        customer_id: customer,
        email: "<!channel>@example.com".into(),
        plan: "pro".into(),
        key_prefix: "omi_AbCdEfGh".into(),
        order_id: Some(1),
    });
    n8n.wait_for("the finding, its alert and the key", Duration::from_secs(10), |bodies| {
        ["finding", "alert_fired", "key_vended"].iter().all(|t| bodies.iter().any(|b| b["type"] == *t))
    })
    .await;
    for body in n8n.bodies().iter().filter(|b| b["type"] != "daily_summary") {
        let text = body["data"]["text"].as_str().expect("a line for Slack");
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        if body["type"] == "finding" {
            assert!(
                text.contains("&lt;!channel&gt; urgent: &lt;http://evil.example|click here&gt; &amp; log in"),
                "{text}"
            );
            assert!(text.contains("req-&lt;!here&gt;"), "{text}");
        }
    }
    let vended = n8n.bodies().into_iter().find(|b| b["type"] == "key_vended").unwrap_or(Value::Null);
    assert!(vended["data"]["text"].as_str().is_some_and(|t| t.contains("&lt;!channel&gt;@example.com")), "{vended}");
    assert_eq!(vended["data"]["email"], "<!channel>@example.com", "the data stays as it is");
    // The direct Slack path escapes the same way.
    slack.wait_for("the finding's alert", Duration::from_secs(10), |bodies| !bodies.is_empty()).await;
    assert!(slack.bodies().iter().all(|b| !b.to_string().contains("<!channel>")), "{:#?}", slack.bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_n8n_refusal_is_not_retried_and_raises_an_alert() {
    let (slack, slack_server) = Fake::start(slack_ok).await;
    let (n8n, n8n_server) =
        Fake::start(|_| ResponseTemplate::new(403).set_body_string("Authorization data is wrong!")).await;
    let n8n_url = format!("{}/webhook/omi-events", n8n_server.uri());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &slack_server);
        c.n8n_webhook_url = Some(SecretString::from(n8n_url));
        c.n8n_webhook_secret = Some(SecretString::from(N8N_SECRET));
    })
    .await
    else {
        return;
    };
    app.state().events.publish(Event::KeyVended {
        customer_id: Uuid::now_v7(),
        email: "ada@example.com".into(),
        plan: "pro".into(),
        key_prefix: "omi_AbCdEfGh".into(),
        order_id: Some(1),
    });
    slack
        .wait_for("the delivery alert", Duration::from_secs(10), |bodies| {
            bodies.iter().any(|b| b["text"].as_str().is_some_and(|t| t.contains("Notifications not delivered · n8n")))
        })
        .await;
    // Longer than the first backoff: a retry would have come by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let types: Vec<_> = n8n.bodies().iter().map(|b| b["type"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(types, ["key_vended", "alert_fired"], "one attempt each, no retries");
    assert!(slack.bodies().iter().any(|b| b.to_string().contains("HTTP 403")), "{:#?}", slack.bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_unreachable_upstreams_and_lost_redis_and_database_are_alerted() {
    let (slack, server) = Fake::start(slack_ok).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &server);
        c.hawk.latency_alert_ms = 300;
        c.redis_url = Some(SecretString::from("redis://127.0.0.1:9/"));
        c.providers = vec![
            omi::config::ProviderConfig {
                kind: Default::default(),
                name: "openai".into(),
                base_url: c.openai_base_url.clone(),
                api_key_env: None,
                models: vec!["gpt-4o-mini".into()],
                catch_all: true,
                byok: false,
                ..Default::default()
            },
            omi::config::ProviderConfig {
                kind: Default::default(),
                name: "down".into(),
                // A closed port on loopback: connection refused.
                base_url: "http://127.0.0.1:9/v1".into(),
                api_key_env: None,
                models: vec!["gpt-4o".into()],
                catch_all: false,
                byok: true,
                ..Default::default()
            },
        ];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let slow = |ms: u64| {
        let mut body = chat_body(false);
        body["mock"] = json!({"latency_ms": ms});
        body
    };
    for _ in 0..3 {
        app.chat(&key, slow(400)).send().await.expect("send");
    }
    let mut down = chat_body(false);
    down["model"] = json!("gpt-4o");
    for _ in 0..3 {
        let request = app.chat(&key, down.clone()).header("x-provider-key", "sk-byok-0123456789");
        assert_eq!(request.send().await.expect("send").status(), 502);
    }
    app.state().store.close().await;
    slack
        .wait_for("four alerts", Duration::from_secs(10), |bodies| {
            let all = serde_json::to_string(bodies).unwrap_or_default();
            [
                "Slow requests · gpt-4o-mini",
                "Upstream unreachable · down",
                "Redis unreachable · redis",
                "Database unreachable · sqlite",
            ]
            .iter()
            .all(|what| all.contains(what))
        })
        .await;
    let all = serde_json::to_string(&slack.bodies()).expect("json");
    assert_eq!(all.matches("Slow requests · gpt-4o-mini").count(), 2, "grouped: text and blocks, once: {all}");
    assert!(all.contains("FIRING (critical): Upstream unreachable · down"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_slow_when_its_first_byte_is_not_when_its_answer_is_long() {
    let (slack, server) = Fake::start(slack_ok).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &server);
        c.hawk.latency_alert_ms = 300;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let stream = |model: &str, mock: Value| {
        let mut body = chat_body(true);
        body["model"] = json!(model);
        body["mock"] = mock;
        body
    };
    // Long answers (4 chunks 150 ms apart) whose first byte comes at once: not slow.
    for _ in 0..3 {
        let answer = app.chat(&key, stream("gpt-4o-mini", json!({"chunks": 4, "chunk_delay_ms": 150}))).send().await;
        let answer = answer.expect("send").text().await.expect("whole stream");
        assert!(answer.contains("[DONE]"), "{answer}");
    }
    // A first byte after 400 ms: slow, whatever the length.
    for _ in 0..3 {
        let answer = app.chat(&key, stream("gpt-4o", json!({"latency_ms": 400}))).send().await;
        assert!(answer.expect("send").text().await.expect("whole stream").contains("[DONE]"));
    }
    slack
        .wait_for("the slow stream's alert", Duration::from_secs(10), |bodies| {
            serde_json::to_string(bodies).unwrap_or_default().contains("Slow requests · gpt-4o")
        })
        .await;
    let all = serde_json::to_string(&slack.bodies()).expect("json");
    assert!(all.contains("first byte after 4"), "the detail names the wait: {all}");
    assert!(!all.contains("Slow requests · gpt-4o-mini"), "long answers are not slow: {all}");
}

/// One sample of the Prometheus text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format strictly: every line is a comment, blank, or `name{labels} value`;
/// `# TYPE` lines give each family's type.
fn parse_exposition(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let parts: Vec<&str> = comment.split_whitespace().collect();
            if let ["TYPE", name, kind] = parts.as_slice() {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name.to_string(), parse_labels(inner).unwrap_or_else(|| panic!("bad labels: {line}")))
            }
        };
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.push(Sample { name, labels, value });
    }
    (types, samples)
}

/// `a="x",b="y \"quoted\""` → {a: x, b: y "quoted"}.
fn parse_labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_exposition_parser_reads_escapes() {
    let (types, samples) = parse_exposition("# TYPE x counter\nx{a=\"q\\\"uote\",b=\"back\\\\slash\"} 3\ny 1.5e3\n");
    assert_eq!(types["x"], "counter");
    assert_eq!(samples[0].labels["a"], "q\"uote");
    assert_eq!(samples[0].labels["b"], "back\\slash");
    assert_eq!(value_of(&samples, "y", &[]), Some(1500.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_the_values_of_known_traffic() {
    // A model only this test uses, priced at $1 / $2 per million tokens (1000 / 2000
    // nano-dollars a token), so its series hold exactly this test's traffic.
    let model = format!("hawk-metrics-{}", crate::support::random_suffix());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.prices.insert(
            model.clone(),
            omi::config::ModelPrice { input: 1.0, cached_input: None, cache_write: None, output: 2.0 },
        );
        c.hawk.probe_interval_secs = 1;
        // Its 5 failing requests are not to open the mock's circuit.
        c.circuit_failures = 0;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let body = |status: Option<u16>| {
        let mut mock = json!({"prompt_tokens": 10, "completion_tokens": 4});
        if let Some(status) = status {
            mock["status"] = json!(status);
        }
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "mock": mock})
    };
    for _ in 0..3 {
        assert_eq!(app.chat(&key, body(None)).send().await.expect("send").status(), 200);
    }
    let byok = app.chat(&key, body(None)).header("x-provider-key", "sk-byok-0123456789");
    assert_eq!(byok.send().await.expect("send").status(), 200);
    for _ in 0..5 {
        assert_eq!(app.chat(&key, body(Some(500))).send().await.expect("send").status(), 502);
    }
    let mut unlisted = chat_body(false);
    unlisted["model"] = json!(format!("not-listed-{}", crate::support::random_suffix()));
    assert_eq!(app.chat(&key, unlisted).send().await.expect("send").status(), 200);
    // The probe samples queue depths each second; the Hawk counts notifications as it sends.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = app.admin(Method::GET, "/metrics").send().await.expect("send").text().await.expect("text");
    let (types, samples) = parse_exposition(&text);
    let requests = |status: &str, kind: &str| {
        let labels = [("route", "chat"), ("model", model.as_str()), ("status", status), ("key_kind", kind)];
        value_of(&samples, "omi_requests_total", &labels)
    };
    assert_eq!(requests("2xx", "house"), Some(3.0));
    assert_eq!(requests("2xx", "byok"), Some(1.0));
    assert_eq!(requests("5xx", "house"), Some(5.0));
    let tokens = |kind: &str| value_of(&samples, "omi_tokens_total", &[("kind", kind), ("model", model.as_str())]);
    assert_eq!((tokens("prompt"), tokens("completion"), tokens("cached")), (Some(40.0), Some(16.0), Some(0.0)));
    let cost = value_of(&samples, "omi_house_cost_nanodollars_total", &[("model", model.as_str())]);
    assert_eq!(cost, Some(3.0 * (10.0 * 1000.0 + 4.0 * 2000.0)), "house cost leaves BYOK out");
    let other = [("route", "chat"), ("model", "other"), ("status", "2xx"), ("key_kind", "house")];
    assert!(value_of(&samples, "omi_requests_total", &other).is_some_and(|v| v >= 1.0), "unlisted models are `other`");
    assert!(!text.contains("not-listed-"), "an unlisted model never becomes a label");

    for (name, kind) in [
        ("omi_requests_total", "counter"),
        ("omi_tokens_total", "counter"),
        ("omi_request_duration_seconds", "histogram"),
        ("omi_upstream_duration_seconds", "histogram"),
        ("omi_gateway_overhead_seconds", "histogram"),
        ("omi_alert_notifications_total", "counter"),
        ("omi_alerts_firing", "gauge"),
        ("omi_events_queue_depth", "gauge"),
        ("omi_usage_buffered", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let fired = value_of(&samples, "omi_alert_notifications_total", &[("rule", "server_errors"), ("state", "firing")]);
    assert!(fired.is_some_and(|v| v >= 1.0), "five 5xx fired an alert");
    for subscriber in ["hawk", "accountant"] {
        assert!(value_of(&samples, "omi_events_queue_depth", &[("subscriber", subscriber)]).is_some(), "{subscriber}");
    }
    let count = value_of(&samples, "omi_request_duration_seconds_count", &[("route", "chat")]);
    assert!(count.is_some_and(|v| v >= 10.0));
    // Bounded cardinality: nothing per key, customer or client.
    for sample in samples.iter().filter(|s| s.name.starts_with("omi_")) {
        for label in sample.labels.keys() {
            assert!(
                !["key", "key_id", "customer", "customer_id", "ip", "client_ip"].contains(&label.as_str()),
                "{sample:?}"
            );
        }
    }
    assert!(!text.contains(&key), "a key in the metrics");
}

#[test]
fn the_shipped_n8n_workflow_is_importable_and_checks_our_signature() {
    let workflow: Value =
        serde_json::from_str(include_str!("../../integrations/n8n/omi_events.json")).expect("valid JSON");
    let nodes = workflow["nodes"].as_array().expect("nodes");
    let name_of = |node: &Value| node["name"].as_str().unwrap_or_default().to_string();
    let names: Vec<String> = nodes.iter().map(name_of).collect();
    let types: Vec<&str> = nodes.iter().filter_map(|n| n["type"].as_str()).collect();
    for expected in ["webhook", "crypto", "if", "switch", "slack", "googleSheets"] {
        assert!(types.contains(&format!("n8n-nodes-base.{expected}").as_str()), "{expected} node");
    }
    for (source, outputs) in workflow["connections"].as_object().expect("connections") {
        assert!(names.contains(source), "{source}");
        for target in outputs["main"].as_array().into_iter().flatten().flat_map(|o| o.as_array().into_iter().flatten())
        {
            assert!(names.iter().any(|n| target["node"] == n.as_str()), "{target}");
        }
    }
    let text = workflow.to_string();
    assert!(text.contains(omi::agents::n8n::SIGNATURE_HEADER) && text.contains("=sha256="), "verifies X-Omi-Signature");
    for kind in ["alert_", "daily_summary", "key_vended", "finding"] {
        assert!(text.contains(&format!("\"rightValue\":\"{kind}\"")), "routes {kind}");
    }
    // Slack gets only `data.text`, which omi escapes; a raw field (an email, a finding's
    // excerpt) could ping `<!channel>` or post a disguised link.
    for node in nodes.iter().filter(|n| n["type"] == "n8n-nodes-base.slack") {
        let posts: Vec<&str> = node["parameters"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(Value::as_str)
            .filter(|v| v.contains("$json"))
            .collect();
        assert_eq!(posts, ["={{ $json.body.data.text }}"], "{node}");
    }
}

/// A provider whose calls fail opens its circuit after `circuit_failures`: Slack hears
/// `provider_down` once; when the probe after the cooldown answers, it hears the resolution once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_pages_provider_down_once_and_its_closing_resolves_it() {
    let (slack, server) = Fake::start(slack_ok).await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        watch(c, &server);
        c.circuit_failures = 2;
        c.circuit_cooldown_secs = 1;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    for _ in 0..4 {
        assert_eq!(app.chat(&key, failing(chat_body(false), 500)).send().await.expect("send").status(), 502);
    }
    let is_provider_down = |b: &Value| b["text"].as_str().is_some_and(|t| t.contains("Provider down"));
    slack.wait_for("provider_down", Duration::from_secs(10), |b| b.iter().any(is_provider_down)).await;
    // The requests after the cooldown probe the (now answering) mock; one closes the circuit.
    let closed = eventually(Duration::from_secs(10), || async {
        app.chat(&key, chat_body(false)).send().await.expect("send").status() == 200
    })
    .await;
    assert!(closed.is_some(), "the probe closed the circuit");
    let resolved = |t: &str| t.contains("Provider down") && t.contains("RESOLVED");
    let any_resolved = |b: &[Value]| b.iter().any(|b| b["text"].as_str().is_some_and(resolved));
    slack.wait_for("its resolution", Duration::from_secs(10), any_resolved).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = slack.texts().into_iter().filter(|t| t.contains("Provider down")).collect();
    assert_eq!(texts.len(), 2, "one firing, one resolution: {texts:#?}");
    assert!(texts[0].contains("FIRING") && texts[0].contains("openai"), "{texts:#?}");
    assert!(resolved(&texts[1]), "{texts:#?}");
}

/// Two instances on one PostgreSQL database, the upstream failing for both: each instance's
/// rules fire on its own traffic, and Slack hears the incident fire once and resolve once,
/// with both instances' count (`agents/hawk/incidents.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_page_one_incident_once_and_resolve_it_once() {
    let (slack, server) = Fake::start(slack_ok).await;
    let (n8n, n8n_server) = Fake::start(slack_ok).await;
    let tweak = |c: &mut Config| {
        watch(c, &server);
        c.hawk.resolve_after_secs = 2;
        c.n8n_webhook_url = Some(SecretString::from(format!("{}/webhook/omi-events", n8n_server.uri())));
        c.n8n_webhook_secret = Some(SecretString::from(N8N_SECRET));
    };
    let Some(first) = TestApp::spawn_with(Backend::Postgres, tweak).await else { return };
    let mut config = crate::support::test_config(&first.db, &first.mock);
    tweak(&mut config);
    let second = crate::support::start_server(config).await;
    let key = first.create_key("ada@example.com").await;
    let fail_six = |base: String| {
        let (http, key) = (reqwest::Client::new(), key.clone());
        async move {
            for _ in 0..6 {
                let request = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key);
                let status = request.json(&failing(chat_body(false), 500)).send().await.expect("send").status();
                assert_eq!(status, 502);
            }
        }
    };
    // Five 5xx in a minute fire `server_errors` on each instance; a second apart, so each
    // instance's firing and resolution come at their own time.
    fail_six(first.base.clone()).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    fail_six(format!("http://{}", second.addr)).await;

    let is_5xx = |t: &String| t.contains("5xx errors · gpt-4o-mini");
    let resolved = |bodies: &[Value]| bodies.iter().filter_map(|b| b["text"].as_str()).any(|t| t.contains("RESOLVED"));
    slack.wait_for("the resolution", Duration::from_secs(20), resolved).await;
    // The other instance resolves within a second of it: give a second message time to come.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let texts: Vec<String> = slack.texts().into_iter().filter(is_5xx).collect();
    let (resolutions, firings): (Vec<_>, Vec<_>) = texts.iter().partition(|t| t.contains("RESOLVED"));
    assert_eq!(firings.len(), 1, "one firing for both instances: {texts:#?}");
    assert!(firings[0].contains("FIRING"), "{texts:#?}");
    assert_eq!(resolutions.len(), 1, "one resolution for both instances: {texts:#?}");
    assert!(resolutions[0].contains("12 in all"), "both instances' count: {texts:#?}");
    // n8n hears the incident once too.
    let alert_events: Vec<String> = n8n
        .bodies()
        .iter()
        .filter(|b| b["data"]["key"] == "server_errors:gpt-4o-mini")
        .filter_map(|b| b["type"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(alert_events, ["alert_fired", "alert_resolved"], "{:#?}", n8n.bodies());
    second.shutdown().await;
}

/// One of two pooled house keys is refused upstream (401): no customer sees an error, the
/// refused key gets no second call, and Slack hears `upstream_key_invalid` once, naming the
/// variable and never the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_of_a_pool_costs_no_client_error_and_pages_once_naming_its_variable() {
    // Two variables cargo sets for every test process: their values are the two house keys.
    const REFUSED_ENV: &str = "CARGO_MANIFEST_DIR";
    const SERVING_ENV: &str = "CARGO_PKG_NAME";
    let refused = std::env::var(REFUSED_ENV).expect("cargo sets it");
    let failing = omi::mock_upstream::FailingKey { key: refused.clone(), status: 401, retry_after_secs: None };
    let mock = omi::mock_upstream::MockConfig { failing_keys: vec![failing], ..Default::default() };
    let (slack, server) = Fake::start(slack_ok).await;
    let Some(app) = TestApp::spawn_with_mock(Backend::Sqlite, mock, |c| {
        watch(c, &server);
        c.providers = vec![omi::config::ProviderConfig {
            name: "openai".into(),
            kind: Default::default(),
            base_url: c.openai_base_url.clone(),
            api_key_env: None,
            api_key_envs: vec![REFUSED_ENV.into(), SERVING_ENV.into()],
            models: vec!["gpt-4o-mini".into()],
            catch_all: true,
            byok: false,
            ..Default::default()
        }];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut attempts = 0;
    for i in 0..20 {
        let response = app.chat(&key, chat_body(i % 2 == 1)).send().await.expect("send");
        assert_eq!(response.status(), 200, "request {i}");
        let made = response.headers().get("x-omi-attempts").and_then(|v| v.to_str().ok()).map(str::to_owned);
        attempts += made.and_then(|m| m.parse::<u32>().ok()).expect("X-Omi-Attempts");
        response.bytes().await.expect("body");
    }
    let with_refused =
        app.mock.upstream.seen().iter().filter(|s| s.authorization == Some(format!("Bearer {refused}"))).count();
    assert_eq!(with_refused, 1, "the refused key is taken out after its first 401");
    assert_eq!(attempts, 21, "the refused call was retried at once on the other key");

    let is_key_alert = |t: &str| t.contains("House key refused");
    slack
        .wait_for("upstream_key_invalid", Duration::from_secs(10), |b| {
            b.iter().any(|b| b["text"].as_str().is_some_and(is_key_alert))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = slack.texts().into_iter().filter(|t| is_key_alert(t)).collect();
    assert_eq!(texts.len(), 1, "one alert: {texts:#?}");
    assert!(texts[0].contains("FIRING") && texts[0].contains("openai"), "{texts:#?}");
    let messages: Vec<String> = slack.bodies().iter().map(Value::to_string).collect();
    assert!(messages.iter().any(|m| m.contains(REFUSED_ENV)), "the variable is named: {messages:#?}");
    assert!(!messages.iter().any(|m| m.contains(&refused)), "never the key itself: {messages:#?}");
    let stored = eventually(Duration::from_secs(5), || async {
        let (alerts, _) = app.state().store.list_alerts(Some("firing"), 50, 0).await.expect("alerts");
        alerts.iter().any(|a| a.rule == "upstream_key_invalid" && a.subject == "openai")
    })
    .await;
    assert!(stored.is_some(), "the alert is on the dashboard's list");
}
