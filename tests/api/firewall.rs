//! The firewall: first the rate limiter itself against the real Redis at 127.0.0.1:6379
//! (each test under its own random namespace) and private `redis-server` processes for
//! outage and recovery; then the whole server over real sockets, with raw requests where
//! a test must choose every header or every byte's timing.

use crate::support::{Backend, TestApp, chat_body, random_suffix, service_missing, start_server, test_config};
use futures_util::StreamExt;
use omi::config::Config;
use omi::events::{Event, FirewallEvent, FirewallKind, Subscription};
use omi::firewall::{
    FallbackPolicy, KeyLimit, LimitKey, LimiterHealth, Quota, RateLimiter, RedisLimiter, RedisLimiterConfig, limit_key,
};
use redis::AsyncCommands;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

// ---------------------------------------------------------------------------------------
// Redis fixtures

/// Overridable so CI can point elsewhere; tests only use their own namespace.
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

async fn connect(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    let mut conn =
        tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await.ok()?.ok()?;
    let pong: Option<String> = redis::cmd("PING").query_async(&mut conn).await.ok();
    pong.map(|_| conn)
}

/// `None` (after a loud skip notice, or a panic in CI) when the shared Redis is not running.
pub(crate) async fn shared_redis() -> Option<redis::aio::MultiplexedConnection> {
    let url = redis_url();
    let conn = connect(&url).await;
    if conn.is_none() {
        service_missing("Redis", &format!("not reachable at {url}"));
    }
    conn
}

fn random_namespace() -> String {
    format!("omi:rl:test:{}", random_suffix())
}

fn config(url: &str, namespace: &str, scope: &str) -> RedisLimiterConfig {
    let mut c = RedisLimiterConfig::new(url, scope);
    c.namespace = namespace.to_owned();
    c
}

/// An hour-long period so no unit refills while a test runs, however slow the
/// machine: 100/h refills one unit per 36 s.
fn per_hour(n: u32) -> Quota {
    Quota::with_period(NonZeroU32::new(n).expect("non-zero"), Duration::from_secs(3600)).expect("valid period")
}

fn redis_key(namespace: &str, scope: &str, key: LimitKey) -> String {
    format!("{namespace}:{scope}:{:x}", key.raw())
}

async fn cleanup(conn: &mut redis::aio::MultiplexedConnection, namespace: &str) {
    let keys: Vec<String> = conn.keys(format!("{namespace}:*")).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = conn.del(keys).await;
    }
}

/// A private Redis we may kill, pause and restart by its own pid.
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    /// `None` (after a loud skip notice, or a panic in CI) when `redis-server` is not installed.
    async fn start(port: Option<u16>) -> Option<PrivateRedis> {
        let port = port.unwrap_or_else(free_port);
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(child) = spawned else {
            service_missing("redis-server", "not on PATH");
            return None;
        };
        let server = PrivateRedis { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(&server.url()).await.is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("kill our redis-server");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill(1)");
        assert!(status.success());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn wait_for(health: &mut tokio::sync::watch::Receiver<LimiterHealth>, want: LimiterHealth) {
    tokio::time::timeout(Duration::from_secs(10), health.wait_for(|h| *h == want))
        .await
        .unwrap_or_else(|_| panic!("health never became {want:?}"))
        .expect("limiter alive");
}

// ---------------------------------------------------------------------------------------
// The limiter on Redis

#[tokio::test]
async fn limiter_one_instance_allows_exactly_100_of_160() {
    let Some(mut conn) = shared_redis().await else {
        return;
    };
    let ns = random_namespace();
    let limiter = RedisLimiter::new(per_hour(100), config(&redis_url(), &ns, "ip")).await.expect("limiter");
    assert_eq!(*limiter.health().borrow(), LimiterHealth::Healthy);

    let key = limit_key("203.0.113.7".parse().expect("ip"));
    let mut allowed = 0;
    let mut last_refusal = None;
    for i in 0..160u32 {
        let d = limiter.check(key).await;
        if d.allowed {
            allowed += 1;
            assert_eq!(d.remaining, 99 - i, "remaining after request {i}");
        } else {
            last_refusal = Some(d);
        }
    }
    assert_eq!(allowed, 100);
    assert_eq!(*limiter.health().borrow(), LimiterHealth::Healthy);

    let refusal = last_refusal.expect("60 refusals");
    assert_eq!((refusal.limit, refusal.remaining), (100, 0));
    let retry = refusal.retry_after.expect("retry time");
    assert!(retry > Duration::from_secs(30) && retry <= Duration::from_secs(36), "{retry:?}");
    assert!(refusal.reset_after > Duration::from_secs(3500));
    let mut headers = http::HeaderMap::new();
    refusal.write_headers(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "100");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers.contains_key("retry-after"));

    // The bucket is namespaced and expires when it would be full again.
    let redis_key = redis_key(&ns, "ip", key);
    let ttl: i64 = conn.pttl(&redis_key).await.expect("pttl");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "ttl {ttl}");
    cleanup(&mut conn, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_two_instances_share_one_budget_exactly() {
    let Some(mut conn) = shared_redis().await else {
        return;
    };
    let ns = random_namespace();
    // Two limiters, two clients, two connections: as two gateway instances.
    let a = RedisLimiter::new(per_hour(100), config(&redis_url(), &ns, "ip")).await.expect("limiter a");
    let b = RedisLimiter::new(per_hour(100), config(&redis_url(), &ns, "ip")).await.expect("limiter b");
    let key = limit_key("2001:db8:1:2::1".parse().expect("ip"));
    let other_in_same_64 = limit_key("2001:db8:1:2::ffff".parse().expect("ip"));

    let mut tasks = Vec::new();
    for t in 0..16 {
        let limiter = if t % 2 == 0 { a.clone() } else { b.clone() };
        let key = if t % 4 == 0 { key } else { other_in_same_64 };
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0u32;
            for _ in 0..10 {
                allowed += u32::from(limiter.check(key).await.allowed);
            }
            allowed
        }));
    }
    let mut per_instance = [0u32; 2];
    for (t, task) in tasks.into_iter().enumerate() {
        per_instance[t % 2] += task.await.expect("task");
    }
    assert_eq!(per_instance[0] + per_instance[1], 100, "{per_instance:?}");
    assert!(per_instance[0] > 0 && per_instance[1] > 0, "{per_instance:?}");
    assert_eq!(*a.health().borrow(), LimiterHealth::Healthy);
    assert_eq!(*b.health().borrow(), LimiterHealth::Healthy);
    cleanup(&mut conn, &ns).await;
}

#[tokio::test]
async fn limiter_costs_and_scopes() {
    let Some(mut conn) = shared_redis().await else {
        return;
    };
    let ns = random_namespace();
    let tokens = RedisLimiter::new(per_hour(1000), config(&redis_url(), &ns, "tokens")).await.expect("limiter");
    let key = LimitKey::from_raw(42);

    for want in [700, 400, 100] {
        let d = tokens.check_n(key, 300).await;
        assert!(d.allowed);
        assert_eq!(d.remaining, want);
    }
    let d = tokens.check_n(key, 101).await;
    assert!(!d.allowed);
    assert_eq!(d.remaining, 100, "refusal spends nothing");
    assert!(d.retry_after.is_some());
    assert!(tokens.check_n(key, 100).await.allowed);
    let peek = tokens.check_n(key, 0).await;
    assert!(peek.allowed);
    assert_eq!(peek.remaining, 0);
    let never = tokens.check_n(LimitKey::from_raw(43), 1001).await;
    assert!(!never.allowed);
    assert_eq!(never.retry_after, None, "can never fit");
    assert_eq!(never.remaining, 1000);

    // Same key, other scope: an independent budget.
    let requests = RedisLimiter::new(per_hour(1000), config(&redis_url(), &ns, "requests")).await.expect("limiter");
    assert_eq!(requests.check(key).await.remaining, 999);

    let exists: bool = conn.exists(redis_key(&ns, "tokens", key)).await.expect("exists");
    assert!(exists);
    cleanup(&mut conn, &ns).await;
}

#[tokio::test]
async fn limiter_unreachable_redis_falls_back_to_local_and_reports_degraded() {
    let url = "redis://127.0.0.1:1/";
    let started = Instant::now();
    let limiter = RateLimiter::redis(5, config(url, &random_namespace(), "ip"))
        .await
        .expect("a dead Redis is not a configuration error");
    assert!(started.elapsed() < Duration::from_secs(2));
    let health = limiter.health().expect("redis limiter reports health");
    assert_eq!(*health.borrow(), LimiterHealth::Degraded);

    let key = limit_key("198.51.100.1".parse().expect("ip"));
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..8 {
        allowed += u32::from(limiter.check(key).await.allowed);
    }
    assert_eq!(allowed, 5, "the local fallback enforces the same quota");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "degraded checks must not touch the network: {:?}",
        started.elapsed()
    );

    assert!(matches!(RateLimiter::redis(0, config(url, "x", "ip")).await, Ok(RateLimiter::Off)));
    assert!(RateLimiter::redis(5, config("not a url", "x", "ip")).await.is_err());
}

#[tokio::test]
async fn limiter_refuse_policy_denies_while_degraded() {
    let mut c = config("redis://127.0.0.1:1/", &random_namespace(), "ip");
    c.fallback = FallbackPolicy::Refuse;
    let limiter = RedisLimiter::new(per_hour(100), c).await.expect("limiter");
    let d = limiter.check(LimitKey::from_raw(1)).await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(*limiter.health().borrow(), LimiterHealth::Degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_recovers_after_redis_restarts_and_reports_each_transition_once() {
    let Some(server) = PrivateRedis::start(None).await else {
        return;
    };
    let port = server.port;
    let ns = random_namespace();
    let mut c = config(&server.url(), &ns, "ip");
    c.retry_interval = Duration::from_millis(200);
    let limiter = RedisLimiter::new(per_hour(100), c).await.expect("limiter");
    let mut health = limiter.health();
    assert_eq!(*health.borrow_and_update(), LimiterHealth::Healthy);
    let key = LimitKey::from_raw(7);
    assert_eq!(limiter.check(key).await.remaining, 99);

    server.kill().await;
    // The first check after the outage fails over; poll a little in case the
    // dead socket is noticed one call late.
    let mut fell_back = false;
    for _ in 0..20 {
        let d = limiter.check(key).await;
        assert!(d.allowed, "local fallback admits");
        if *health.borrow() == LimiterHealth::Degraded {
            fell_back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fell_back, "a dead Redis must be reported");
    assert_eq!(*health.borrow_and_update(), LimiterHealth::Degraded);
    // The fallback is a fresh local bucket: it never saw the Redis-side spend.
    for _ in 0..20 {
        limiter.check(key).await;
    }
    assert!(!health.has_changed().expect("alive"), "reported only once");

    let restarted = PrivateRedis::start(Some(port)).await.expect("redis-server was there a moment ago");
    wait_for(&mut health, LimiterHealth::Healthy).await;

    // Back on Redis: the new (empty) server now holds the bucket.
    assert_eq!(limiter.check(key).await.remaining, 99);
    let mut conn = connect(&restarted.url()).await.expect("restarted redis");
    let exists: bool = conn.exists(redis_key(&ns, "ip", key)).await.expect("exists");
    assert!(exists);
    restarted.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_hung_redis_fails_fast_then_recovers() {
    let Some(server) = PrivateRedis::start(None).await else {
        return;
    };
    let mut c = config(&server.url(), &random_namespace(), "ip");
    c.call_timeout = Duration::from_millis(100);
    c.retry_interval = Duration::from_millis(200);
    let limiter = Arc::new(RedisLimiter::new(per_hour(10), c).await.expect("limiter"));
    let mut health = limiter.health();
    let key = LimitKey::from_raw(9);
    assert!(limiter.check(key).await.allowed);

    server.signal("-STOP");
    let started = Instant::now();
    let d = limiter.check(key).await;
    let took = started.elapsed();
    assert!(d.allowed, "local fallback admits");
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_secs(1),
        "a hung Redis costs one call timeout: {took:?}"
    );
    assert_eq!(*health.borrow_and_update(), LimiterHealth::Degraded);
    let started = Instant::now();
    limiter.check(key).await;
    assert!(started.elapsed() < Duration::from_millis(50), "degraded is instant");

    server.signal("-CONT");
    wait_for(&mut health, LimiterHealth::Healthy).await;
    // Redis kept the first spend, and ran the timed-out call once it woke
    // (it was already on the wire): an outage can over-count, never under-count.
    assert_eq!(limiter.check(key).await.remaining, 7);
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_dropped_idle_connection_is_retried_without_degrading() {
    let Some(server) = PrivateRedis::start(None).await else {
        return;
    };
    let mut c = config(&server.url(), &random_namespace(), "ip");
    // What is tested is the retry on a dropped connection, not the call timeout: under a loaded
    // test run the reconnect alone can take longer than the production 100 ms.
    c.call_timeout = Duration::from_secs(5);
    let limiter = RedisLimiter::new(per_hour(10), c).await.expect("limiter");
    let mut health = limiter.health();
    health.borrow_and_update();
    let key = LimitKey::from_raw(11);
    assert_eq!(limiter.check(key).await.remaining, 9);

    // As a server-side idle timeout would: close every client but ours.
    let mut admin = connect(&server.url()).await.expect("admin connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin)
        .await
        .expect("client kill");
    assert_eq!(killed, 1, "the limiter's connection");

    let d = limiter.check(key).await;
    assert_eq!(d.remaining, 8, "served by Redis, not a fresh local bucket");
    assert!(!health.has_changed().expect("alive"), "no degradation reported");
    server.kill().await;
}

// ---------------------------------------------------------------------------------------
// The firewall in the server

/// Status and lower-cased head (status line and headers) of one raw HTTP/1.1 request.
async fn raw_request(addr: SocketAddr, method_path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method_path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let head = response.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    (status, head)
}

async fn next_firewall_event(rx: &mut Subscription) -> FirewallEvent {
    loop {
        let event =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event in time").expect("open");
        if let Event::Firewall(firewall) = &*event {
            return firewall.clone();
        }
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// What `/metrics` would show, read in-process: the endpoint itself is rate-limited too.
fn metrics() -> String {
    omi::telemetry::metrics_handle().render()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    // The test client is the "proxy" here: Cloudflare (a Tunnel's cloudflared on loopback).
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare=127.0.0.1/32".parse().expect("trusted");
        c.blocked_countries = "RU,T1".into();
        c.rate_limit_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let bearer = format!("Bearer {}", app.create_key("ada@example.com").await);
    let models = async |headers: &[(&str, &str)]| {
        let mut all = vec![("Authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        raw_request(app.addr, "GET /v1/models", &all).await
    };
    let alice = [("CF-Connecting-IP", "198.51.100.1"), ("CF-IPCountry", "DE")];
    for remaining in ["2", "1", "0"] {
        let (status, head) = models(&alice).await;
        assert_eq!(status, 200);
        assert!(head.contains(&format!("x-ratelimit-remaining: {remaining}\r\n")), "{head}");
        assert!(head.contains("x-ratelimit-limit: 3\r\n"), "{head}");
    }
    let (status, head) = models(&alice).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: 20\r\n"), "{head}");

    let bob = [("X-Forwarded-For", "203.0.113.50, 198.51.100.2")];
    assert_eq!(models(&bob).await.0, 200);
    // Right-most untrusted entry: the forged left one is not Bob's identity.
    for status in [200, 200, 429] {
        assert_eq!(models(&[("X-Forwarded-For", "198.51.100.2")]).await.0, status, "Bob's second to fourth");
    }
    assert_eq!(models(&[("CF-IPCountry", "RU")]).await.0, 403);
    assert_eq!(models(&[("CF-IPCountry", "T1")]).await.0, 403);

    // Health probes are never limited.
    assert_eq!(raw_request(app.addr, "GET /healthz", &alice).await.0, 200);
}

#[tokio::test]
async fn spoofed_headers_from_an_untrusted_peer_change_nothing() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare,10.0.0.0/8".parse().expect("trusted");
        c.blocked_countries = "RU".into();
        c.rate_limit_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let mut events = app.state().events.subscribe("test", 64);
    for n in 0..3 {
        let spoof = format!("198.51.100.{n}");
        let headers =
            [("CF-Connecting-IP", spoof.as_str()), ("X-Forwarded-For", spoof.as_str()), ("CF-IPCountry", "DE")];
        // No key: refused by authentication, which only runs after the firewall admitted it.
        assert_eq!(raw_request(app.addr, "GET /v1/models", &headers).await.0, 401);
    }
    // All three landed in 127.0.0.1's bucket.
    assert_eq!(raw_request(app.addr, "GET /v1/models", &[("CF-Connecting-IP", "203.0.113.9")]).await.0, 429);
    // A spoofed blocked country is not believed either (refused for rate, not 403).
    assert_eq!(raw_request(app.addr, "GET /v1/models", &[("CF-IPCountry", "RU")]).await.0, 429);
    let event = next_firewall_event(&mut events).await;
    assert_eq!(event.client_ip, Some("127.0.0.1".parse().expect("ip")));
    assert_eq!(event.country, None, "nobody trusted said where the client is");
}

/// Behind nginx (a trusted proxy that is not Cloudflare), a client's own `CF-*` headers reach
/// omi untouched: they must not pick its budget or its country.
#[tokio::test]
async fn spoofed_cloudflare_headers_through_another_proxy_escape_no_limit() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "127.0.0.1/32".parse().expect("trusted");
        c.rate_limit_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let mut events = app.state().events.subscribe("test", 64);
    // nginx appends the address it saw to X-Forwarded-For: that is the client.
    for n in 0..3 {
        let spoof = format!("198.51.100.{n}");
        let headers = [("CF-Connecting-IP", spoof.as_str()), ("X-Forwarded-For", "203.0.113.7")];
        assert_eq!(raw_request(app.addr, "GET /v1/models", &headers).await.0, 401, "admitted, then no key");
    }
    let fourth = [("CF-Connecting-IP", "198.51.100.99"), ("X-Forwarded-For", "203.0.113.7")];
    assert_eq!(raw_request(app.addr, "GET /v1/models", &fourth).await.0, 429, "one client, one budget");
    let event = next_firewall_event(&mut events).await;
    assert_eq!(event.client_ip, Some("203.0.113.7".parse().expect("ip")));
    // Another client behind the same nginx has a budget of its own.
    assert_eq!(raw_request(app.addr, "GET /v1/models", &[("X-Forwarded-For", "203.0.113.8")]).await.0, 401);
}

#[tokio::test]
async fn spoofed_cloudflare_country_through_another_proxy_is_not_believed() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "127.0.0.1/32".parse().expect("trusted");
        c.allowed_countries = Some("DE".into());
    })
    .await
    else {
        return;
    };
    let spoofed = [("CF-IPCountry", "DE"), ("X-Forwarded-For", "203.0.113.7")];
    let (status, head) = raw_request(app.addr, "GET /v1/models", &spoofed).await;
    assert_eq!(status, 403, "the country is unknown (XX), which the allow-list refuses: {head}");

    // From Cloudflare (here: a Tunnel's cloudflared on loopback) the same header is believed.
    let Some(behind_cloudflare) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare=127.0.0.1/32".parse().expect("trusted");
        c.allowed_countries = Some("DE".into());
    })
    .await
    else {
        return;
    };
    assert_eq!(raw_request(behind_cloudflare.addr, "GET /v1/models", &spoofed).await.0, 401, "admitted, then no key");
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_64() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "127.0.0.1".parse().expect("trusted");
        c.rate_limit_per_minute = 2;
    })
    .await
    else {
        return;
    };
    let from = async |ip: &str| raw_request(app.addr, "GET /v1/models", &[("X-Forwarded-For", ip)]).await;
    assert_eq!(from("2001:db8:1:2::1").await.0, 401);
    assert_eq!(from("2001:db8:1:2:ffff:ffff:ffff:ffff").await.0, 401);
    assert_eq!(from("2001:db8:1:2::42").await.0, 429, "same /64, same budget");
    assert_eq!(from("2001:db8:1:3::1").await.0, 401, "the next /64 is someone else");
    assert_eq!(from("198.51.100.7").await.0, 401);
    assert_eq!(from("198.51.100.7").await.0, 401);
    assert_eq!(from("198.51.100.8").await.0, 401, "IPv4 clients are limited per address");
}

/// Sends `total` unauthenticated requests, 16 at a time, spread over `apps`; returns how
/// many the firewall admitted (401 from authentication, not 429) and how long it took.
async fn admitted(apps: &[&TestApp], total: usize) -> (usize, Duration) {
    let urls: Vec<String> = apps.iter().map(|app| format!("{}/v1/models", app.base)).collect();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let statuses = futures_util::stream::iter((0..total).map(|i| http.get(&urls[i % urls.len()]).send()))
        .buffer_unordered(16)
        .map(|response| response.expect("send").status().as_u16())
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    (statuses.iter().filter(|s| **s == 401).count(), elapsed)
}

/// A minute's budget of 100 refills one request every 600 ms: exactly 100 pass if the
/// burst took less than that, and one more for each 600 ms it took on a slow machine.
fn assert_exactly_100(admitted: usize, elapsed: Duration) {
    let refills = (elapsed.as_millis() / 600) as usize;
    assert!((100..=100 + refills).contains(&admitted), "{admitted} admitted in {elapsed:?}");
    eprintln!("{admitted} of 160 admitted in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_two_instances_on_redis_admit_exactly_100_of_160() {
    let Some(mut conn) = shared_redis().await else {
        return;
    };
    let prefix = random_namespace();
    let on_redis = |c: &mut Config| {
        c.redis_url = Some(redis_url().into());
        c.rate_limit_redis_prefix.clone_from(&prefix);
    };
    let Some(a) = TestApp::spawn_with(Backend::Sqlite, on_redis).await else { return };
    let (count, elapsed) = admitted(&[&a], 160).await;
    assert_exactly_100(count, elapsed);
    let spent_at = std::time::Instant::now();

    // A second instance on the same Redis shares the (now spent) budget: it admits only what
    // refilled since (one request per 600 ms; starting it takes a while on a loaded machine).
    let Some(b) = TestApp::spawn_with(Backend::Sqlite, on_redis).await else { return };
    let (count, _) = admitted(&[&b], 10).await;
    let refilled = (spent_at.elapsed().as_millis() / 600) as usize + 1;
    assert!(
        count <= refilled.min(10) && count < 10,
        "instance b sees a's spend: {count} admitted, {refilled} refilled"
    );

    // ... and two fresh instances split one budget of 100 exactly.
    let prefix = random_namespace();
    let on_redis = |c: &mut Config| {
        c.redis_url = Some(redis_url().into());
        c.rate_limit_redis_prefix.clone_from(&prefix);
    };
    let Some(c) = TestApp::spawn_with(Backend::Sqlite, on_redis).await else { return };
    let Some(d) = TestApp::spawn_with(Backend::Sqlite, on_redis).await else { return };
    // (Had either fallen back to its own in-process limit, up to 200 would pass.)
    let (count, elapsed) = admitted(&[&c, &d], 160).await;
    assert_exactly_100(count, elapsed);
    let keys: Vec<String> = conn.keys(format!("{prefix}:ip:*")).await.expect("keys");
    assert_eq!(keys.len(), 1, "one bucket, for 127.0.0.1: {keys:?}");
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_down_and_coming_back_is_published_and_served_throughout() {
    let Some(redis) = PrivateRedis::start(None).await else {
        return;
    };
    let port = redis.port;
    let url = redis.url();
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.redis_url = Some(url.clone().into())).await else {
        return;
    };
    let mut events = app.state().events.subscribe("test", 1024);
    let models = format!("{}/v1/models", app.base);
    let status = || async { app.http.get(&models).send().await.expect("send").status().as_u16() };
    assert_eq!(status().await, 401);

    redis.kill().await;
    // The first request after the outage notices it; each is still answered (local fallback).
    let mut degraded = None;
    for _ in 0..50 {
        assert_eq!(status().await, 401, "requests are served while Redis is down");
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), events.recv()).await
            && let Event::Firewall(event) = &*event
        {
            degraded = Some(event.clone());
            break;
        }
    }
    let degraded = degraded.expect("the outage is published");
    assert_eq!((degraded.kind, degraded.limiter.as_deref()), (FirewallKind::LimiterDegraded, Some("ip")));

    let restarted = PrivateRedis::start(Some(port)).await.expect("redis-server was there a moment ago");
    let recovered = next_firewall_event(&mut events).await;
    assert_eq!((recovered.kind, recovered.limiter.as_deref()), (FirewallKind::LimiterRecovered, Some("ip")));
    assert_eq!(status().await, 401);
    let mut conn = connect(&restarted.url()).await.expect("restarted redis");
    let keys: Vec<String> = conn.keys("omi:rl:ip:*").await.expect("keys");
    assert_eq!(keys.len(), 1, "limits are back on Redis: {keys:?}");
    restarted.kill().await;
}

#[tokio::test]
async fn the_refuse_policy_refuses_while_redis_is_unreachable() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some("redis://127.0.0.1:1/".into());
        c.rate_limit_fallback = FallbackPolicy::Refuse;
    })
    .await
    else {
        return;
    };
    let response = app.http.get(format!("{}/v1/models", app.base)).send().await.expect("send");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_code(&response.json().await.expect("json")), "rate_limited");
}

#[tokio::test]
async fn countries_by_block_list_and_by_allow_list() {
    let Some(blocking) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare=127.0.0.1/32".parse().expect("trusted");
        c.blocked_countries = "RU,KP,T1,XX".into();
    })
    .await
    else {
        return;
    };
    let get = |app: &TestApp, country: Option<&str>| {
        let request = app.http.get(format!("{}/v1/models", app.base));
        match country {
            Some(country) => request.header("CF-IPCountry", country),
            None => request,
        }
        .send()
    };
    for (country, status) in [(Some("DE"), 401), (Some("RU"), 403), (Some("T1"), 403), (Some("XX"), 403), (None, 403)] {
        let response = get(&blocking, country).await.expect("send");
        assert_eq!(response.status(), status, "{country:?}");
        if status == 403 {
            let body: Value = response.json().await.expect("json");
            assert_eq!(error_code(&body), "country_blocked");
            assert_eq!(body["error"]["type"], "permission_error");
        }
    }

    let Some(allowing) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies = "cloudflare=127.0.0.1/32".parse().expect("trusted");
        c.allowed_countries = Some("DE, fr".into());
    })
    .await
    else {
        return;
    };
    for (country, status) in
        [(Some("DE"), 401), (Some("FR"), 401), (Some("US"), 403), (Some("garbage"), 403), (None, 403)]
    {
        assert_eq!(get(&allowing, country).await.expect("send").status(), status, "{country:?}");
    }
    // Webhooks come from the payment provider's servers, wherever they are.
    let webhook = allowing.http.post(format!("{}/webhooks/lemonsqueezy", allowing.base)).body("{}").send().await;
    assert_eq!(webhook.expect("send").status(), 401, "past the firewall: the webhook itself refuses an unsigned call");
}

#[tokio::test]
async fn body_and_header_limits_refuse_before_authentication() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.max_body_bytes = 4096).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let big = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let url = format!("{}/v1/chat/completions", app.base);

    // No key at all, yet 413 rather than 401: the declared length is refused first.
    let response = app.http.post(&url).json(&big).send().await.expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(&response.json().await.expect("json")), "request_too_large");
    let event = next_firewall_event(&mut events).await;
    assert_eq!((event.kind, event.route.as_deref()), (FirewallKind::TooLarge, Some("/v1/chat/completions")));

    // A chunked body declares nothing: it is cut while it is read.
    let key = app.create_key("ada@example.com").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(serde_json::to_vec(&big).expect("json"))];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app.http.post(&url).bearer_auth(&key).body(body).send().await.expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(next_firewall_event(&mut events).await.kind, FirewallKind::TooLarge);

    // Admin and webhooks have smaller limits of their own (64 KiB by default).
    let admin = app.http.post(format!("{}/admin/api/keys", app.base)).body(vec![b'x'; 70_000]).send().await;
    assert_eq!(admin.expect("send").status(), 413, "before the admin key is even looked at");
    let hook = app.http.post(format!("{}/webhooks/lemonsqueezy", app.base)).body(vec![b'x'; 70_000]).send().await;
    assert_eq!(hook.expect("send").status(), 413);

    // A request head larger than max_header_bytes (32 KiB) is refused by the HTTP layer.
    let huge = "y".repeat(40_000);
    let response = app.http.get(format!("{}/v1/models", app.base)).header("x-junk", huge).send().await;
    assert_eq!(response.expect("send").status(), 431);
}

/// The status and body of the next response on a kept-alive connection (its body read by
/// its Content-Length), or None when the server closed the connection instead.
async fn next_response(stream: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let read = async {
        let mut received = Vec::new();
        loop {
            if let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) {
                let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if received.len() >= head_end + length {
                    return Some((status, received[head_end..head_end + length].to_vec()));
                }
            }
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer or a close in time")
}

#[tokio::test]
async fn a_body_refused_before_it_was_read_is_taken_in_so_its_client_reads_the_refusal() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    // Each refusal is read before the client sends the body at all: a server that closed after
    // answering would fail the writes or the next request, every time.
    let refusals = [
        // Over the webhook limit (64 KiB) by its declared length: refused by the firewall.
        ("POST /webhooks/lemonsqueezy", "", 70_000, 413),
        // Within the limit, but the key is unknown: refused by the handler, which never reads it.
        ("POST /v1/chat/completions", "Authorization: Bearer omi_not_a_key_at_all\r\n", 100_000, 401),
    ];
    for (method_path, header, length, status) in refusals {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!("{method_path} HTTP/1.1\r\nHost: test\r\n{header}Content-Length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        let refusal = next_response(&mut stream).await.expect("the refusal");
        assert_eq!(refusal.0, status, "{method_path}: {}", String::from_utf8_lossy(&refusal.1));
        stream.write_all(&vec![b'x'; length]).await.expect("the rest of the body is taken in");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("write the next request");
        let next = next_response(&mut stream).await.map(|(status, _)| status);
        assert_eq!(next, Some(200), "{method_path}: the connection outlived the refusal");
    }

    // Declared past what is ever read after a refusal (4 MiB), or not sent until the server
    // asks for it: refused without a `100 Continue`, and closed at once.
    for extra in ["Content-Length: 5000000\r\n", "Content-Length: 70000\r\nExpect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!("POST /webhooks/lemonsqueezy HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        assert_eq!(next_response(&mut stream).await.map(|(status, _)| status), Some(413), "{extra}");
        assert_eq!(next_response(&mut stream).await, None, "{extra}: the connection is closed after the refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.header_read_timeout_ms = 1000;
        c.body_read_timeout_ms = 1000;
    })
    .await
    else {
        return;
    };
    // Headers one byte a second: the connection is closed after the header timeout.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    let head = b"GET /v1/models HTTP/1.1\r\nHost: test\r\nX-Slow: 1\r\n\r\n";
    let mut closed_after = None;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("answered a request it never got whole: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the slow client was cut off");
    assert!(closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4), "{closed_after:?}");

    // A body trickling in is refused with 408 once the body deadline passes.
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
    );
    writer.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut response))
        .await
        .expect("answered before the body was complete")
        .expect("read");
    trickle.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(4), "after {:?}", started.elapsed());
    assert_eq!(next_firewall_event(&mut events).await.kind, FirewallKind::TooSlow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.max_connections = 2).await else { return };
    let idle: Vec<TcpStream> =
        vec![TcpStream::connect(app.addr).await.expect("first"), TcpStream::connect(app.addr).await.expect("second")];
    // Both slots are taken by clients that say nothing: the third waits in the backlog.
    let third = tokio::spawn(raw_request(app.addr, "GET /healthz", &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served although every slot was taken");
    drop(idle);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), third).await.expect("served").expect("join");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_refusal_is_openai_shaped_carries_the_headers_and_is_published() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.rate_limit_per_minute = 2).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let url = format!("{}/v1/models", app.base);

    let ok = app.http.get(&url).bearer_auth(&key).send().await.expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-ratelimit-limit"], "2", "successful responses carry the headers too");
    assert_eq!(ok.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(ok.headers()["x-ratelimit-reset"], "30");
    assert!(!ok.headers().contains_key("retry-after"));
    app.http.get(&url).bearer_auth(&key).send().await.expect("send");

    let refused = app.http.get(&url).bearer_auth(&key).header("x-request-id", "flood-1").send().await.expect("send");
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    assert_eq!(headers["x-request-id"], "flood-1");
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"], "60");
    assert_eq!(headers["retry-after"], "30");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(error_code(&body), "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("Retry after 30 s")), "{body}");

    let event = next_firewall_event(&mut events).await;
    assert_eq!(event.kind, FirewallKind::RateLimited);
    assert_eq!(event.client_ip, Some("127.0.0.1".parse().expect("ip")));
    assert_eq!(event.route.as_deref(), Some("/v1/models"));
    assert_eq!(event.request_id.as_deref(), Some("flood-1"));
    assert_eq!(event.limiter.as_deref(), Some("ip"));
    let serialized = serde_json::to_value(Event::Firewall(event)).expect("serializes");
    assert_eq!((serialized["type"].as_str(), serialized["kind"].as_str()), (Some("firewall"), Some("rate_limited")));
    let metrics = metrics();
    assert!(metrics.contains("omi_firewall_rejections_total{reason=\"rate_limited\"}"), "{metrics}");
}

fn plan_limits(c: &mut Config) {
    c.rate_limits.plans.insert("pro".into(), KeyLimit { requests_per_minute: Some(2), tokens_per_minute: None });
    c.rate_limits.plans.insert("team".into(), KeyLimit { requests_per_minute: None, tokens_per_minute: Some(40) });
}

#[tokio::test]
async fn limits_per_plan_and_per_key_follow_authentication() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, plan_limits).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let pro = app.create_key("pro@example.com").await;
    for _ in 0..2 {
        assert_eq!(app.chat(&pro, chat_body(false)).send().await.expect("send").status(), 200);
    }
    let refused = app.chat(&pro, chat_body(false)).send().await.expect("send");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-limit"], "2", "the key's limit, not the per-IP one");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(error_code(&body), "rate_limited");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("for this key")), "{body}");
    let event = next_firewall_event(&mut events).await;
    assert_eq!((event.kind, event.limiter.as_deref()), (FirewallKind::RateLimited, Some("plan:pro:requests")));

    // Another key on the plan has a budget of its own.
    let other = app.create_key("other@example.com").await;
    assert_eq!(app.chat(&other, chat_body(false)).send().await.expect("send").status(), 200);

    // Tokens: the prompt's estimate (about 25 tokens for this body) is spent up front.
    let email = omi::customers::EmailAddress::parse("team@example.com").expect("email");
    let (team, _) =
        omi::keys::issue(&app.state().store, &email, "team", None, Default::default()).await.expect("issue");
    let team = team.expose().to_string();
    assert_eq!(app.chat(&team, chat_body(false)).send().await.expect("send").status(), 200);
    let refused = app.chat(&team, chat_body(false)).send().await.expect("send");
    assert_eq!(refused.status(), 429);
    assert_eq!(next_firewall_event(&mut events).await.limiter.as_deref(), Some("plan:team:tokens"));

    // A key listed with 0 is exempt from its plan's limit (a second instance on the same
    // database, configured with the id the key got).
    let id = app.state().store.resolve_key(&other[..12]).await.expect("resolve").id;
    let mut config = test_config(&app.db, &app.mock);
    plan_limits(&mut config);
    config.rate_limits.keys.insert(id, KeyLimit { requests_per_minute: Some(0), tokens_per_minute: None });
    let b = start_server(config).await;
    let on_b = |key: &str| app.http.get(format!("http://{}/v1/models", b.addr)).bearer_auth(key).send();
    for _ in 0..4 {
        assert_eq!(on_b(&other).await.expect("send").status(), 200, "exempt");
    }
    let fresh = app.create_key("fresh@example.com").await;
    let statuses = [on_b(&fresh).await, on_b(&fresh).await, on_b(&fresh).await].map(|r| r.expect("send").status());
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 200, 429], "the plan's limit still holds for others");
    b.shutdown().await;
}

#[tokio::test]
async fn admin_responses_carry_security_headers_and_cors_is_off_by_default() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    for path in ["/admin/api/keys", "/admin/nothing-here"] {
        let response = app.admin(reqwest::Method::GET, path).send().await.expect("send");
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h["content-security-policy"]
                .to_str()
                .is_ok_and(|c| c.starts_with("default-src 'self'") && c.contains("frame-ancestors 'none'"))
        );
        assert_eq!(h["cache-control"], "no-store");
    }
    let api = app.http.get(format!("{}/v1/models", app.base)).send().await.expect("send");
    assert!(!api.headers().contains_key("content-security-policy"));

    let preflight = |app: &TestApp, origin: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let response = preflight(&app, "https://app.example.com").await.expect("send");
    assert!(!response.headers().contains_key("access-control-allow-origin"), "CORS is off by default");

    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.cors_origins = vec!["https://app.example.com".into()];
        c.rate_limit_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let response = preflight(&app, "https://app.example.com").await.expect("send");
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
    let methods = response.headers()["access-control-allow-methods"].to_str().expect("ascii").to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let response = preflight(&app, "https://evil.example.com").await.expect("send");
    assert!(!response.headers().contains_key("access-control-allow-origin"));
    let admin = app
        .admin(reqwest::Method::GET, "/admin/api/keys")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("send");
    assert!(!admin.headers().contains_key("access-control-allow-origin"), "CORS covers /v1/* only");
    // Preflights are answered before the firewall; the admin call was the first of three.
    let models = || app.http.get(format!("{}/v1/models", app.base)).header("origin", "https://app.example.com").send();
    for status in [401, 401, 429] {
        let response = models().await.expect("send");
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com", "a browser reads it");
    }
}
