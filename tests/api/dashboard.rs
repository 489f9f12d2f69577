//! The admin dashboard: nothing without a session, sessions that are strict cookies and
//! survive restarts, CSRF and lockout refusals, escaping of customer strings, security
//! headers on every `/admin` response, and a real browser through the whole of it.

use crate::billing::{SECRET, deliver, order_created};
use crate::hawk::view;
use crate::on_both_backends;
use crate::support::{ADMIN_KEY, Backend, TestApp, service_missing, start_server, test_config};
use chrono::{Datelike, TimeDelta};
use omi::admin::dashboard::PER_PAGE;
use omi::agents::hawk::rules::{AlertSeverity, AlertState, Rule};
use omi::customers::EmailAddress;
use omi::events::{FindingKind, Severity};
use omi::store::{AlertRecord, KeyListing, NewFinding, Store, UsageRecord};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use secrecy::SecretString;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An HTML form's submission.
fn post_form(http: &reqwest::Client, url: String, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    http.post(url).header("content-type", "application/x-www-form-urlencoded").body(body)
}

/// `POST /admin/login` with `key`, as the sign-in form does.
async fn try_sign_in(base: &str, key: &str) -> reqwest::Response {
    post_form(&client(), format!("{base}/admin/login"), &[("key", key)]).send().await.expect("sign in")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// A signed-in browser, in effect: the session cookie and the CSRF token of its pages.
pub(crate) struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Admin {
    pub(crate) async fn sign_in(base: &str) -> Admin {
        let http = client();
        let response = try_sign_in(base, ADMIN_KEY).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/admin");
        let cookie = session_cookie(response.headers()).expect("a session cookie");
        Admin { http, base: base.to_string(), cookie }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.expect("get")
    }

    pub(crate) async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.text().await.expect("text")
    }

    pub(crate) async fn csrf(&self) -> String {
        let html = self.page("/admin/keys").await;
        let (_, rest) = html.split_once("name=\"csrf\" value=\"").expect("a CSRF field");
        rest.split('"').next().expect("value").to_string()
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        post_form(&self.http, format!("{}{path}", self.base), form)
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("post")
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    let set = headers.get(SET_COOKIE)?.to_str().ok()?;
    set.split(';').next().filter(|pair| pair.starts_with("omi_admin=") && pair.len() > 20).map(str::to_string)
}

async fn issue(store: &Store, email: &str, name: Option<&str>) -> (String, KeyListing) {
    let email = EmailAddress::parse(email).expect("email");
    let (key, listing) = omi::keys::issue(store, &email, "pro", name, Default::default()).await.expect("issue");
    (key.expose().to_string(), listing)
}

/// `n` requests spread over the last 50 minutes, but never before this month's start (the money
/// page counts this month: early on the 1st the spread shrinks): 2 ms to 2 s, one in ten failing
/// upstream, the last one on a model without a price.
pub(crate) async fn seed_usage(store: &Store, key: &KeyListing, n: usize) {
    let now = chrono::Utc::now();
    let spread_ms = (now - month_start(now)).num_milliseconds().min(3_000_000);
    let records: Vec<UsageRecord> = (0..n)
        .map(|i| {
            let mut record =
                usage_record(key, i, now - chrono::Duration::milliseconds(i as i64 * spread_ms / n as i64));
            if i + 1 == n {
                (record.model, record.cost_nano) = (Some("mystery-model".into()), None);
            }
            record
        })
        .collect();
    store.insert_usage(&records).await.expect("seed usage");
}

fn month_start(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    first.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The `i`-th of a series of priced requests: 2 ms to 2 s, one in ten failing upstream.
pub(crate) fn usage_record(key: &KeyListing, i: usize, at: chrono::DateTime<chrono::Utc>) -> UsageRecord {
    let latency_us = 2_000 + (i as i64 * 7_919) % 2_000_000;
    UsageRecord {
        id: uuid::Uuid::now_v7(),
        request_id: format!("seed-{i}").into(),
        at,
        key_id: key.id,
        customer_id: key.customer_id,
        plan: "pro".into(),
        route: Some("chat".into()),
        model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        prompt_tokens: 1_000,
        cached_tokens: 0,
        cache_write_tokens: 0,
        completion_tokens: 500,
        cost_nano: Some(450_000_000),
        spend_nano: Some(450_000_000),
        status: if i.is_multiple_of(10) { 502 } else { 200 },
        latency_us,
        upstream_us: Some(latency_us - 300 - (i as i64 % 50) * 10),
        streamed: i.is_multiple_of(2),
        byok: false,
        usage_estimated: false,
        aborted: false,
        attempts: 1,
    }
}

const PAGES: &[&str] = &[
    "/admin",
    "/admin?range=day",
    "/admin/money",
    "/admin/money.csv",
    "/admin/keys",
    "/admin/webhooks",
    "/admin/alerts",
    "/admin/findings",
    "/admin/shield",
];

on_both_backends!(
    nothing_is_shown_without_a_session,
    sessions_are_strict_cookies_that_survive_restarts,
    forms_without_the_csrf_token_are_refused,
    customer_strings_are_escaped,
    alerts_are_listed_and_firing_ones_top_the_overview,
    findings_and_shield_removals_are_listed_apart
);

async fn nothing_is_shown_without_a_session(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let (_, key) = issue(&app.state().store, "ada@example.com", None).await;
    let http = client();
    let customer = format!("/admin/customers/{}", key.customer_id);
    let no_cookie = None;
    let forged = Some(format!("omi_admin={}", "ab".repeat(32)));
    for cookie in [no_cookie, forged] {
        for path in PAGES.iter().copied().chain([customer.as_str(), "/admin/nope"]) {
            let mut request = http.get(format!("{}{path}", app.base));
            if let Some(cookie) = &cookie {
                request = request.header("cookie", cookie);
            }
            let response = request.send().await.expect("get");
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path} with {cookie:?}");
            assert_eq!(response.headers()[LOCATION], "/admin/login", "{path}");
            assert!(response.text().await.expect("body").is_empty(), "{path} shows nothing");
        }
    }
    for path in [format!("/admin/keys/{}/revoke", key.id), "/admin/keys".into(), "/admin/logout".into()] {
        let response = post_form(&http, format!("{}{path}", app.base), &[("csrf", "x")]).send().await.expect("post");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
    }
    assert_eq!(app.state().store.key_by_id(key.id).await.expect("key").status, "active");
    // The JSON API wants the bearer key; a session cookie is not enough.
    let response = http.get(format!("{}/admin/api/keys", app.base)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The sign-in page and its assets are open.
    for path in ["/admin/login", "/admin/static/dashboard.css", "/admin/static/dashboard.js"] {
        assert_eq!(http.get(format!("{}{path}", app.base)).send().await.expect("get").status(), StatusCode::OK);
    }
}

async fn sessions_are_strict_cookies_that_survive_restarts(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else { return };
    let (_, key) = issue(&app.state().store, "ada@example.com", None).await;
    seed_usage(&app.state().store, &key, 200).await;

    let wrong = try_sign_in(&app.base, "nope").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(wrong.headers()).is_none());

    let response = try_sign_in(&app.base, ADMIN_KEY).await;
    let set = response.headers()[SET_COOKIE].to_str().expect("ascii").to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure flag ({set})");

    let admin = Admin::sign_in(&app.base).await;
    let overview = admin.page("/admin").await;
    assert!(overview.contains("<svg") && overview.contains("Requests per minute"), "{overview}");
    assert!(overview.contains("<td class=\"num\">200</td>"), "200 requests in the last hour: {overview}");
    let money = admin.page("/admin/money").await;
    assert!(money.contains("ada@example.com") && money.contains("1 unpriced"), "unpriced usage is flagged");
    // 199 priced requests at $0.45 each.
    assert!(money.contains("$89.55"), "{money}");
    let csv = admin.get("/admin/money.csv").await;
    assert!(csv.headers()["content-disposition"].to_str().expect("ascii").starts_with("attachment"));
    assert!(csv.text().await.expect("csv").contains("\"ada@example.com\",\"pro\",200,"));
    let customer = admin.page(&format!("/admin/customers/{}", key.customer_id)).await;
    assert!(customer.contains("Recent requests") && customer.contains("gpt-4o-mini"));
    admin.page("/admin/webhooks").await;
    admin.page("/admin?range=day").await;

    // Another instance (or this one restarted) knows the session: it lives in the database.
    let config = test_config(&app.db, &app.mock);
    app.stop().await;
    let server = start_server(config).await;
    let again = Admin { http: client(), base: format!("http://{}", server.addr), cookie: admin.cookie.clone() };
    again.page("/admin/keys").await;
    let csrf = again.csrf().await;
    let out = again.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().expect("ascii").contains("Max-Age=0"));
    assert_eq!(again.get("/admin").await.status(), StatusCode::SEE_OTHER, "signed out means signed out");
    server.shutdown().await;

    // Served over https, the cookie is Secure.
    let Some(secure) = TestApp::spawn_with(backend, |c| c.public_url = Some("https://api.example.com".into())).await
    else {
        return;
    };
    let response = try_sign_in(&secure.base, ADMIN_KEY).await;
    assert!(response.headers()[SET_COOKIE].to_str().expect("ascii").contains("; Secure"));
}

async fn forms_without_the_csrf_token_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let (plaintext, key) = issue(&app.state().store, "ada@example.com", None).await;
    let admin = Admin::sign_in(&app.base).await;
    let revoke = format!("/admin/keys/{}/revoke", key.id);
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = admin.post(&revoke, &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let create = admin.post("/admin/keys", &[&form[..], &[("email", "eve@example.com")]].concat()).await;
        assert_eq!(create.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(app.state().store.key_by_id(key.id).await.expect("key").status, "active");
    assert!(
        app.state()
            .store
            .search_keys(&omi::store::KeySearch { text: "eve@", ..Default::default() }, 10, 0)
            .await
            .expect("search")
            .is_empty()
    );

    // With the token: suspended, restored, revoked; the gateway obeys at once.
    let csrf = admin.csrf().await;
    let models = || app.http.get(format!("{}/v1/models", app.base)).bearer_auth(&plaintext).send();
    for (action, status, gateway) in
        [("suspend", "suspended", 403), ("restore", "active", 200), ("revoke", "revoked", 403)]
    {
        let response = admin
            .post(
                &format!("/admin/keys/{}/{action}", key.id),
                &[("csrf", &csrf), ("return_to", "https://evil.example/")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{action}");
        let location = response.headers()[LOCATION].to_str().expect("ascii").to_string();
        assert!(location.starts_with("/admin/keys?done="), "never redirected off-site: {location}");
        assert!(admin.page(&location).await.contains(&key.prefix));
        assert_eq!(app.state().store.key_by_id(key.id).await.expect("key").status, status);
        assert_eq!(models().await.expect("models").status().as_u16(), gateway, "{action}");
    }

    // A created key is shown once, on the response page itself.
    let response = admin.post("/admin/keys", &[("csrf", &csrf), ("email", "bob@example.com"), ("name", "ci")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("html");
    let (_, rest) = html.split_once("<code id=\"new-key\">").expect("the key");
    let new_key = rest.split('<').next().expect("key");
    assert!(new_key.starts_with("omi_"));
    assert_eq!(
        app.http.get(format!("{}/v1/models", app.base)).bearer_auth(new_key).send().await.expect("models").status(),
        200
    );
    assert!(!admin.page("/admin/keys").await.contains(new_key), "never listed again");
    let bad = admin.post("/admin/keys", &[("csrf", &csrf), ("email", "not-an-email")]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

async fn customer_strings_are_escaped(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with(backend, |c| c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET))).await
    else {
        return;
    };
    let script = "<script>alert(1)</script>";
    // A purchase whose buyer name and checkout data are attacker-chosen.
    let mut order = order_created(9001, 1);
    let now = chrono::Utc::now().to_rfc3339();
    order["data"]["attributes"]["user_name"] = json!(script);
    order["data"]["attributes"]["created_at"] = json!(now);
    order["meta"]["custom_data"] = json!({"note": "<img src=x onerror=alert(2)>"});
    let response = deliver(&app, &order).await;
    assert_eq!(response.status(), 200);
    let (_, key) = issue(&app.state().store, "mallory@example.com", Some(script)).await;
    seed_usage(&app.state().store, &key, 5).await;
    let vended = app.state().store.list_keys().await.expect("keys");
    let buyer = vended.iter().find(|k| k.email == "ada@example.com").expect("the buyer's key");

    let admin = Admin::sign_in(&app.base).await;
    for path in [
        "/admin/keys".to_string(),
        "/admin/money".into(),
        "/admin/webhooks".into(),
        format!("/admin/customers/{}", buyer.customer_id),
        format!("/admin/customers/{}", key.customer_id),
        format!("/admin/keys?q={}", "%3Cscript%3E"),
    ] {
        let html = admin.page(&path).await;
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{path} is escaped");
    }
    let buyer_page = admin.page(&format!("/admin/customers/{}", buyer.customer_id)).await;
    assert!(buyer_page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the name is shown, as text");
    assert!(buyer_page.contains("&#60;img src=x onerror=alert(2)&#62;"), "custom data is shown, as text");
}

async fn alerts_are_listed_and_firing_ones_top_the_overview(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    let admin = Admin::sign_in(&app.base).await;
    assert!(!admin.page("/admin").await.contains("Firing alerts"), "nothing firing, nothing on top");
    assert!(admin.page("/admin/alerts").await.contains("No alerts."));

    // A subject is whatever the Hawk was told (a model name, a customer): escaped like all else.
    let mut firing = view(Rule::ServerErrors, "<script>alert(3)</script>", AlertState::Firing, TimeDelta::minutes(1));
    firing.severity = AlertSeverity::Critical;
    let resolved = view(Rule::Latency, "gpt-4o", AlertState::Resolved, TimeDelta::seconds(10));
    for alert in [&firing, &resolved] {
        store.upsert_alert(&AlertRecord::from(alert)).await.expect("alert");
    }

    let overview = admin.page("/admin").await;
    let on_top = overview.find("Firing alerts").expect("firing alerts on the overview");
    assert!(on_top < overview.find("Health").expect("health"), "above everything else");
    assert!(
        overview.contains("Critical: 5xx errors (&#60;script&#62;alert(3)&#60;/script&#62;) — HTTP 502. Firing since"),
        "{overview}"
    );
    assert!(!overview.contains("<script>alert") && !overview.contains("Slow requests"), "only firing ones, escaped");

    let all = admin.page("/admin/alerts").await;
    assert!(!all.contains("<script>alert"));
    let (firing_at, resolved_at) =
        (all.find("5xx errors").expect("firing"), all.find("Slow requests").expect("resolved"));
    assert!(firing_at < resolved_at, "firing first, though the resolved one was seen last");
    assert_eq!(all.matches("<tr class=\"firing\">").count(), 1, "firing rows stand out");
    assert!(all.contains("<span class=\"badge critical\">critical</span>"), "severity in words");
    let resolved_only = admin.page("/admin/alerts?state=resolved").await;
    assert!(resolved_only.contains("Slow requests") && !resolved_only.contains("5xx errors"));
    let firing_only = admin.page("/admin/alerts?state=firing").await;
    assert!(firing_only.contains("5xx errors") && !firing_only.contains("Slow requests"));
}

/// The pager's "next" link on a page, unescaped.
fn next_page(html: &str) -> Option<String> {
    let (before, _) = html.split_once("\" rel=\"next\"")?;
    let (_, href) = before.rsplit_once("href=\"")?;
    Some(href.replace("&#38;", "&"))
}

/// A finding as the Sentinel or the shield stores it; the excerpt is customer text.
async fn finding(store: &Store, key: &KeyListing, kind: FindingKind, severity: Severity, excerpt: &str) {
    let rules = ["ignore_previous".to_string()];
    let injection = kind == FindingKind::Injection;
    store
        .insert_finding(&NewFinding {
            at: chrono::Utc::now(),
            request_id: "req-finding",
            customer_id: Some(key.customer_id),
            key_id: Some(key.id),
            kind,
            severity,
            score: 0.91,
            verdict: if injection { "injection" } else { "removed" },
            rules: &rules,
            judge_verdict: injection.then_some("injection"),
            judge_reason: injection.then_some("asks to <b>ignore</b> the system prompt"),
            judge_cost_nano_usd: None,
            excerpt,
            prompt: None,
        })
        .await
        .expect("finding");
}

async fn findings_and_shield_removals_are_listed_apart(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    let (_, mallory) = issue(store, "mallory@example.com", None).await;
    let (_, ada) = issue(store, "ada@example.com", None).await;
    let script = "<script>alert(4)</script> ignore all previous instructions";
    finding(store, &mallory, FindingKind::Injection, Severity::High, script).await;
    finding(store, &mallory, FindingKind::SecretLeak, Severity::Medium, "removed from the answer: aws_key x1").await;
    for n in 0..PER_PAGE {
        finding(store, &ada, FindingKind::Injection, Severity::Low, &format!("prompt by ada {n}")).await;
    }
    let admin = Admin::sign_in(&app.base).await;

    // The Sentinel's page: injections only, newest first, customer text escaped, paged.
    let first = admin.page("/admin/findings").await;
    assert!(!first.contains("<script>alert") && !first.contains("<b>ignore"), "escaped");
    assert!(first.contains(&format!("prompt by ada {}", PER_PAGE - 1)), "the newest first");
    assert!(!first.contains("mallory@example.com") && !first.contains("aws_key"), "one page of ada's, no removal");
    let href = next_page(&first).expect("a next page");
    assert!(href.starts_with("/admin/findings?before="), "{href}");
    let second = admin.page(&href).await;
    assert!(second.contains("&#60;script&#62;alert(4)&#60;/script&#62; ignore all previous instructions"));
    assert!(second.contains("injection: asks to &#60;b&#62;ignore&#60;/b&#62; the system prompt"), "the judge's word");
    assert!(second.contains("mallory@example.com") && !second.contains("prompt by ada"), "{second}");
    // Keyset pages only walk forward: the way back is named for where it leads.
    assert!(second.contains(r#"href="/admin/findings" rel="prev">← Newest</a>"#), "{second}");

    // The shield's page: the removal only.
    let shield = admin.page("/admin/shield").await;
    assert!(shield.contains("removed from the answer: aws_key x1") && shield.contains("<td>secret</td>"));
    assert!(!shield.contains("ignore all previous") && !shield.contains("prompt by ada"));

    // One customer's, on the pages and on the customer page with the strikes.
    let only = admin.page(&format!("/admin/findings?customer={}", mallory.customer_id)).await;
    assert!(only.contains("Only mallory@example.com") && only.contains("alert(4)") && !only.contains("ada's"));
    let customer = admin.page(&format!("/admin/customers/{}", mallory.customer_id)).await;
    assert!(!customer.contains("<script>alert"));
    assert!(customer.contains("alert(4)") && customer.contains("aws_key x1"), "both kinds on the customer page");
    assert!(customer.contains("<dt>Strikes today</dt><dd>1</dd>"), "{customer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_address_out() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let attempt = |key: &'static str| try_sign_in(&app.base, key);
    for _ in 0..4 {
        assert_eq!(attempt("wrong").await.status(), StatusCode::UNAUTHORIZED);
    }
    let fifth = attempt("wrong").await;
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(fifth.headers()["retry-after"].to_str().expect("ascii").parse::<u64>().expect("seconds") >= 1);
    let right = attempt(ADMIN_KEY).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS, "locked out: even the right key waits");
    assert!(session_cookie(right.headers()).is_none());
    // No proxy is trusted: a forwarding header is the peer's claim, and changes nothing.
    let spoofed = post_form(&client(), format!("{}/admin/login", app.base), &[("key", ADMIN_KEY)])
        .header("CF-Connecting-IP", "203.0.113.9")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("sign in");
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_is_locked_out_on_its_own() {
    // The test client is the proxy (Cloudflare's Tunnel): every sign-in comes from 127.0.0.1.
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare=127.0.0.1/32".parse().expect("trusted")
    })
    .await
    else {
        return;
    };
    let from = |client_ip: &'static str, key: &'static str| {
        post_form(&client(), format!("{}/admin/login", app.base), &[("key", key)])
            .header("CF-Connecting-IP", client_ip)
            .send()
    };
    let mallory = "198.51.100.1";
    for _ in 0..4 {
        assert_eq!(from(mallory, "wrong").await.expect("sign in").status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(from(mallory, "wrong").await.expect("sign in").status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy has failures of its own, and signs in.
    let ada = "198.51.100.2";
    assert_eq!(from(ada, "typo").await.expect("sign in").status(), StatusCode::UNAUTHORIZED);
    let signed_in = from(ada, ADMIN_KEY).await.expect("sign in");
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER, "not locked out by mallory");
    assert!(session_cookie(signed_in.headers()).is_some());
    assert_eq!(from(mallory, ADMIN_KEY).await.expect("sign in").status(), StatusCode::TOO_MANY_REQUESTS);
    // Without the header the proxy itself is the client: a third, separate count.
    let direct = try_sign_in(&app.base, ADMIN_KEY).await;
    assert_eq!(direct.status(), StatusCode::SEE_OTHER);
}

/// Behind nginx (trusted, not Cloudflare) a client's own `CF-Connecting-IP` reaches omi
/// untouched: a fresh one per guess must not buy fresh attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_cloudflare_headers_through_another_proxy_do_not_escape_the_lockout() {
    let Some(app) =
        TestApp::spawn_with(Backend::Sqlite, |c| c.trusted_proxies = "127.0.0.1/32".parse().expect("trusted")).await
    else {
        return;
    };
    let guess = |n: usize, key: &'static str| {
        post_form(&client(), format!("{}/admin/login", app.base), &[("key", key)])
            .header("CF-Connecting-IP", format!("198.51.100.{n}"))
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
    };
    for n in 0..4 {
        assert_eq!(guess(n, "wrong").await.expect("sign in").status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(guess(4, "wrong").await.expect("sign in").status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(guess(5, ADMIN_KEY).await.expect("sign in").status(), StatusCode::TOO_MANY_REQUESTS, "locked out");
}

/// A GET from the client `client_ip` (behind the trusted proxy 127.0.0.1), with `bearer` if any.
async fn get_as(app: &TestApp, path: &str, client_ip: &str, bearer: Option<&str>) -> reqwest::Response {
    let request = client().get(format!("{}{path}", app.base)).header("X-Forwarded-For", client_ip);
    match bearer {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
    .send()
    .await
    .expect("get")
}

async fn behind_a_proxy(tweak: impl FnOnce(&mut omi::config::Config)) -> Option<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "127.0.0.1/32".parse().expect("trusted");
        tweak(c);
    })
    .await
}

/// The admin API and `/metrics` check the same key as the sign-in form, so they share its
/// lockout: per client, from the fifth failure, through any of the three doors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bearers_lock_the_client_out_of_every_admin_door() {
    let Some(app) = behind_a_proxy(|_| {}).await else { return };
    let mallory = "198.51.100.1";
    for (n, path) in ["/admin/api/keys", "/metrics", "/admin/api/usage", "/metrics"].into_iter().enumerate() {
        let response = get_as(&app, path, mallory, Some("wrong-guess")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "guess {n} at {path}");
    }
    let fifth = get_as(&app, "/admin/api/keys", mallory, Some("wrong-guess")).await;
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fifth.headers()["retry-after"], "30");
    let body: serde_json::Value = fifth.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    for path in ["/admin/api/keys", "/metrics"] {
        let right = get_as(&app, path, mallory, Some(ADMIN_KEY)).await;
        assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS, "locked out: even the right key waits ({path})");
    }
    let sign_in = post_form(&client(), format!("{}/admin/login", app.base), &[("key", ADMIN_KEY)])
        .header("X-Forwarded-For", mallory)
        .send()
        .await
        .expect("sign in");
    assert_eq!(sign_in.status(), StatusCode::TOO_MANY_REQUESTS, "the dashboard shares the lockout");

    // Another client is not affected; asking without any key is not a guess.
    let ada = "198.51.100.2";
    for _ in 0..6 {
        assert_eq!(get_as(&app, "/admin/api/keys", ada, None).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(get_as(&app, "/admin/api/keys", ada, Some(ADMIN_KEY)).await.status(), StatusCode::OK);
    assert_eq!(get_as(&app, "/metrics", ada, Some(ADMIN_KEY)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_an_admin_key_are_served_to_this_host_only() {
    let Some(app) = behind_a_proxy(|c| c.admin_key = None).await else { return };
    let direct = client().get(format!("{}/metrics", app.base)).send().await.expect("get");
    assert_eq!(direct.status(), StatusCode::OK, "a scraper on this host");
    assert!(direct.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let remote = get_as(&app, "/metrics", "203.0.113.7", None).await;
    assert_eq!(remote.status(), StatusCode::FORBIDDEN, "a client behind the proxy is not this host");

    let Some(public) = behind_a_proxy(|c| {
        c.admin_key = None;
        c.metrics_public = true;
    })
    .await
    else {
        return;
    };
    assert_eq!(get_as(&public, "/metrics", "203.0.113.7", None).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_response_carries_the_security_headers() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let admin = Admin::sign_in(&app.base).await;
    let mut responses = vec![
        admin.get("/admin").await,
        admin.get("/admin/keys").await,
        admin.get("/admin/nope").await,
        admin.get("/admin/static/dashboard.css").await,
        admin.get("/admin/money.csv").await,
    ];
    for path in ["/admin", "/admin/login", "/admin/money"] {
        responses.push(client().get(format!("{}{path}", app.base)).send().await.expect("get"));
    }
    responses.push(app.admin(reqwest::Method::GET, "/admin/api/keys").send().await.expect("api"));
    for response in responses {
        let headers = response.headers();
        let url = response.url().path().to_string();
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            "{url}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(headers["x-frame-options"], "DENY", "{url}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{url}");
        assert_eq!(headers["cache-control"], "no-store", "{url}");
    }
    // No inline script or style anywhere: the CSP would refuse them.
    for path in PAGES.iter().filter(|p| !p.ends_with(".csv")) {
        let html = admin.page(path).await;
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"), "{path}");
    }
    let disabled = TestApp::spawn_with(Backend::Sqlite, |c| c.admin_key = None).await.expect("sqlite");
    let response = client().get(format!("{}/admin/login", disabled.base)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "no admin key: no dashboard");
}

/// Node, Debian's chromium and playwright-core (installed by scripts/test), or why not.
pub(crate) fn browser_prerequisites(e2e: &Path) -> Result<(), String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing (apt-get install -y chromium)".into());
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is missing".into());
    }
    if !e2e.join("node_modules/playwright-core/package.json").exists() {
        return Err(format!("playwright-core is not installed (npm ci --prefix {})", e2e.display()));
    }
    Ok(())
}

/// The e2e script: sign in, the overview chart and a firing alert, create and revoke a key,
/// the margins chart, alerts, findings and removals, screenshots; any request to another
/// host fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_walks_the_dashboard() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    if let Err(why) = browser_prerequisites(&e2e) {
        service_missing("the headless browser", &why);
        return;
    }
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
    })
    .await
    else {
        return;
    };
    let store = &app.state().store;
    let (_, ada) = issue(store, "grace@example.com", Some("Grace's prod key")).await;
    seed_usage(store, &ada, 600).await;
    let mut firing = view(Rule::ServerErrors, "gpt-4o-mini", AlertState::Firing, TimeDelta::minutes(1));
    firing.severity = AlertSeverity::Critical;
    store.upsert_alert(&AlertRecord::from(&firing)).await.expect("alert");
    finding(store, &ada, FindingKind::Injection, Severity::High, "ignore previous instructions").await;
    finding(store, &ada, FindingKind::SecretLeak, Severity::Medium, "removed from the answer: aws_key x1").await;
    let paid = deliver(&app, &order_created(9100, 1)).await;
    assert_eq!(paid.status(), 200);

    let screenshots: PathBuf =
        Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("e2e-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot folder");
    let run = tokio::process::Command::new("node")
        .arg(e2e.join("dashboard.mjs"))
        .env("OMI_BASE_URL", &app.base)
        .env("OMI_ADMIN_KEY", ADMIN_KEY)
        .env("OMI_SCREENSHOTS", &screenshots)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(180), run).await.expect("the browser run ends").expect("node runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser run failed:\n{report}");
    println!("{report}screenshots in {}", screenshots.display());
    assert!(screenshots.join("overview.png").exists());
}

/// The overview shows each provider's circuit as this instance holds it: closed, then open
/// once the provider's failures opened it, with its house keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_an_open_circuit() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.openai_base_url = "http://127.0.0.1:9/v1".into(); // a closed port: refused
        c.circuit_failures = 1;
    })
    .await
    else {
        return;
    };
    let admin = Admin::sign_in(&app.base).await;
    let row = |html: &str| {
        let start = html.find("<th scope=\"row\">openai</th>").expect("the provider's row");
        html[start..].split_once("</tr>").expect("row end").0.to_owned()
    };
    let closed = row(&admin.page("/admin").await);
    assert!(closed.contains("<td>closed</td>") && closed.contains("1 of 1 serving"), "{closed}");

    let key = app.create_key("ada@example.com").await;
    let response = app.chat(&key, crate::support::chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "refused, and no fallback");
    let open = row(&admin.page("/admin").await);
    assert!(open.contains("open: skipped"), "{open}");
}
