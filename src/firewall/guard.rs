//! The middleware in front of every route, and the state it runs on. Per request, in this
//! order, cheapest first: resolve the client, apply the country rules, refuse a declared
//! body over the route's limit, spend one request of the client's per-IP budget. Nothing
//! here authenticates or touches the database, so a flood of junk costs almost nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http_body::Body as _;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::body::{GuardedBody, LINGER_BYTES, discard_rest};
use super::key_limits::{self, KeyLimits, Unit};
use super::{
    ClientInfo, CountryPolicy, FallbackPolicy, FirewallError, LimiterHealth, LocalLimiterConfig, RateLimiter,
    RateLimits, RedisLimiterConfig, TrustedProxies, limit_key, resolve_client,
};
use crate::events::{Event, EventBus, FirewallEvent, FirewallKind};
use crate::keys::VerifiedKey;
use crate::web::error::ApiError;
use crate::web::rate_limit::Decision;
use crate::web::rate_limit::X_RATELIMIT_LIMIT;
use crate::web::request_id::RequestId;

/// A limiter and the name its refusals, health events and Redis keys carry.
pub(super) struct Named {
    pub(super) name: Arc<str>,
    pub(super) limiter: RateLimiter,
}

/// What the firewall is built from; `Config::firewall` gathers it from the settings.
pub struct FirewallSettings {
    pub trusted_proxies: TrustedProxies,
    pub countries: CountryPolicy,
    /// Requests per minute from one client IP; 0 is no limit.
    pub per_ip_per_minute: u32,
    pub rate_limits: RateLimits,
    pub limiters: LimiterSettings,
    pub bodies: BodyLimits,
}

/// Where every limiter keeps its buckets: in Redis when a URL is set (under `redis_prefix`,
/// with `fallback` while Redis is away), else in process.
pub struct LimiterSettings {
    pub redis_url: Option<SecretString>,
    pub redis_prefix: String,
    pub fallback: FallbackPolicy,
}

/// Builds every limiter the same way: shared through Redis when `REDIS_URL` is set, else
/// in-process.
pub(super) struct LimiterFactory<'a> {
    settings: &'a LimiterSettings,
}

impl<'a> LimiterFactory<'a> {
    pub(super) fn new(settings: &'a LimiterSettings) -> Self {
        LimiterFactory { settings }
    }

    /// `per_minute == 0` is a limiter that is off.
    pub(super) async fn make(&self, scope: &str, per_minute: u32) -> Result<Named, FirewallError> {
        let limiter = match &self.settings.redis_url {
            Some(url) => {
                let mut redis = RedisLimiterConfig::new(url.clone(), scope);
                redis.namespace.clone_from(&self.settings.redis_prefix);
                redis.fallback = self.settings.fallback;
                RateLimiter::redis(per_minute, redis).await?
            }
            None => RateLimiter::local(per_minute, LocalLimiterConfig::default()),
        };
        Ok(Named { name: scope.into(), limiter })
    }
}

pub struct Firewall {
    trusted: TrustedProxies,
    countries: CountryPolicy,
    per_ip: Named,
    keys: Arc<KeyLimits>,
    bodies: BodyLimits,
    events: EventBus,
}

/// The most a body may hold, by route class, and how long it may take to arrive.
pub struct BodyLimits {
    pub api: usize,
    pub admin: usize,
    pub webhook: usize,
    pub read_timeout: Duration,
}

/// The kinds of route that get different treatment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteClass {
    /// `/healthz`, `/readyz`: the platform's probes come from inside, unproxied; they pass untouched.
    Health,
    /// `/admin`, `/portal` and below (the dashboard and the customer portal): small bodies,
    /// security headers.
    Admin,
    /// `/webhooks/…`: small bodies; no country rules, since the sender is a payment
    /// provider's server, authenticated by its signature.
    Webhook,
    Api,
}

impl RouteClass {
    fn of(path: &str) -> RouteClass {
        match path {
            "/healthz" | "/readyz" => RouteClass::Health,
            "/admin" => RouteClass::Admin,
            _ if path.starts_with("/admin/") => RouteClass::Admin,
            "/portal" => RouteClass::Admin,
            _ if path.starts_with("/portal/") => RouteClass::Admin,
            _ if path.starts_with("/webhooks/") => RouteClass::Webhook,
            _ => RouteClass::Api,
        }
    }
}

impl Firewall {
    /// Fails only on a malformed Redis URL: an unreachable Redis starts the limiters degraded.
    pub async fn new(settings: FirewallSettings, events: EventBus) -> Result<Firewall, FirewallError> {
        let factory = LimiterFactory::new(&settings.limiters);
        let (per_ip, keys) = tokio::try_join!(
            factory.make("ip", settings.per_ip_per_minute),
            KeyLimits::build(&settings.rate_limits, &factory)
        )?;
        Ok(Firewall {
            trusted: settings.trusted_proxies,
            countries: settings.countries,
            per_ip,
            keys: Arc::new(keys),
            bodies: settings.bodies,
            events,
        })
    }

    /// Background work, stopped by `shutdown` or the bus closing: publishing each limiter's
    /// health changes, and spending booked requests' tokens.
    pub fn spawn_background(&self, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        let limiters = std::iter::once(&self.per_ip).chain(self.keys.limiters());
        let mut tasks: Vec<_> = limiters
            .filter_map(|named| {
                let health = named.limiter.health()?;
                Some(crate::tasks::owned(watch_health(
                    named.name.clone(),
                    health,
                    self.events.clone(),
                    shutdown.clone(),
                )))
            })
            .collect();
        tasks.extend(key_limits::spawn_token_debits(self.keys.clone(), &self.events));
        tasks
    }

    /// The key's own request limit (by key or plan), after authentication.
    pub async fn admit_request(&self, key: &VerifiedKey, origin: &Origin) -> Result<(), ApiError> {
        self.keys.admit(key.key_id, &key.plan, Unit::Requests, 1, origin).await
    }

    /// Spends the prompt's estimated tokens from the key's token limit, if it has one.
    pub async fn admit_tokens(&self, key: &VerifiedKey, tokens: u64, origin: &Origin) -> Result<(), ApiError> {
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        self.keys.admit(key.key_id, &key.plan, Unit::Tokens, tokens, origin).await
    }

    fn body_limit(&self, class: RouteClass) -> usize {
        match class {
            RouteClass::Admin => self.bodies.admin,
            RouteClass::Webhook => self.bodies.webhook,
            RouteClass::Health | RouteClass::Api => self.bodies.api,
        }
    }

    /// Admits the request (its body now guarded) with the per-IP verdict, or refuses it.
    async fn screen(&self, request: &mut Request, class: RouteClass, origin: &Origin) -> Result<Decision, ApiError> {
        if class != RouteClass::Webhook && !self.countries.allows(origin.client.country) {
            origin.report(FirewallKind::CountryBlocked, None);
            return Err(ApiError::country_blocked());
        }
        let limit = self.body_limit(class);
        if declared_length(request.headers()).is_some_and(|length| length > limit as u64) {
            origin.report(FirewallKind::TooLarge, None);
            return Err(ApiError::too_large(limit));
        }
        let decision = self.per_ip.limiter.check(limit_key(origin.client.ip)).await;
        if !decision.allowed {
            origin.report(FirewallKind::RateLimited, Some(self.per_ip.name.clone()));
            return Err(ApiError::rate_limited(decision, "requests a minute per client"));
        }
        // A chunked body declares no length: the guard cuts it at the limit while it is read.
        if !request.body().is_end_stream() {
            let discard_if_unread = !expects_continue(request.headers());
            let body = std::mem::take(request.body_mut());
            let guarded = GuardedBody::new(body, limit, self.bodies.read_timeout, origin.clone(), discard_if_unread);
            *request.body_mut() = Body::new(guarded);
        }
        Ok(decision)
    }

    /// The body of a request refused here is still arriving: it is discarded so the client
    /// reads the refusal (see `body`), unless it declares more than would be read anyway or
    /// its client waits for `100 Continue` before sending it.
    fn discard_unread(&self, request: Request) {
        let headers = request.headers();
        if request.body().is_end_stream()
            || expects_continue(headers)
            || declared_length(headers).is_some_and(|length| length > LINGER_BYTES)
        {
            return;
        }
        discard_rest(request.into_body(), tokio::time::Instant::now() + self.bodies.read_timeout);
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Where a request came from, as the firewall resolved it. Handlers take the client IP
/// from it (never the TCP peer, which may be a proxy) and report their own refusals
/// (per-key limits) through it.
#[derive(Clone)]
pub struct Origin {
    pub client: ClientInfo,
    route: Arc<str>,
    request_id: Option<Arc<str>>,
    events: EventBus,
}

/// Paths are client-chosen: events keep at most this many characters of one.
const MAX_ROUTE_CHARS: usize = 200;

impl Origin {
    fn new(client: ClientInfo, request: &Request, events: EventBus) -> Origin {
        let path = request.uri().path();
        let end = path.char_indices().nth(MAX_ROUTE_CHARS).map_or(path.len(), |(i, _)| i);
        Origin {
            client,
            route: path[..end].into(),
            request_id: request.extensions().get::<RequestId>().map(|id| id.0.clone()),
            events,
        }
    }

    /// Counts a refusal (`omi_firewall_rejections_total{reason}`) and publishes it.
    pub fn report(&self, kind: FirewallKind, limiter: Option<Arc<str>>) {
        metrics::counter!("omi_firewall_rejections_total", "reason" => kind.as_str()).increment(1);
        self.events.publish(Event::Firewall(FirewallEvent {
            kind,
            at: Utc::now(),
            client_ip: Some(self.client.ip),
            country: self.client.country,
            route: Some(self.route.clone()),
            request_id: self.request_id.clone(),
            limiter,
        }));
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`). Runs inside `request_id::assign`,
/// so refusals carry an `X-Request-Id` too.
pub async fn guard(
    State(firewall): State<Arc<Firewall>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let class = RouteClass::of(request.uri().path());
    if class == RouteClass::Health {
        return next.run(request).await;
    }
    let client = resolve_client(peer.ip(), request.headers(), &firewall.trusted);
    let origin = Origin::new(client, &request, firewall.events.clone());
    let mut response = match firewall.screen(&mut request, class, &origin).await {
        Err(refusal) => {
            firewall.discard_unread(request);
            refusal.into_response()
        }
        Ok(decision) => {
            request.extensions_mut().insert(origin);
            let mut response = next.run(request).await;
            // A handler's own refusal (a key's limit) carries its own, more specific headers.
            if !response.headers().contains_key(X_RATELIMIT_LIMIT) {
                decision.write_headers(response.headers_mut());
            }
            response
        }
    };
    if class == RouteClass::Admin {
        secure_headers(response.headers_mut());
    }
    response
}

/// For the admin API, dashboard and customer portal, pages, JSON and refusals alike: nothing loads from
/// elsewhere, nothing inline runs, nothing frames the dashboard, nothing is cached or sniffed.
fn secure_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Publishes each health change of one limiter (for the Hawk) and keeps
/// `omi_rate_limiter_degraded{limiter}` at 1 while it is degraded.
async fn watch_health(
    name: Arc<str>,
    mut health: watch::Receiver<LimiterHealth>,
    events: EventBus,
    shutdown: CancellationToken,
) {
    let mut reported = LimiterHealth::Healthy;
    loop {
        let now = *health.borrow_and_update();
        let degraded = now == LimiterHealth::Degraded;
        metrics::gauge!("omi_rate_limiter_degraded", "limiter" => name.to_string()).set(f64::from(u8::from(degraded)));
        if now != reported {
            reported = now;
            let kind = if degraded { FirewallKind::LimiterDegraded } else { FirewallKind::LimiterRecovered };
            events.publish(Event::Firewall(FirewallEvent {
                kind,
                at: Utc::now(),
                client_ip: None,
                country: None,
                route: None,
                request_id: None,
                limiter: Some(name.clone()),
            }));
        }
        tokio::select! {
            changed = health.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_path() {
        for (path, class) in [
            ("/healthz", RouteClass::Health),
            ("/readyz", RouteClass::Health),
            ("/admin", RouteClass::Admin),
            ("/admin/api/keys", RouteClass::Admin),
            ("/administrator", RouteClass::Api),
            ("/portal", RouteClass::Admin),
            ("/portal/login", RouteClass::Admin),
            ("/portals", RouteClass::Api),
            ("/webhooks/lemonsqueezy", RouteClass::Webhook),
            ("/webhooks", RouteClass::Api),
            ("/v1/chat/completions", RouteClass::Api),
            ("/healthz/x", RouteClass::Api),
        ] {
            assert_eq!(RouteClass::of(path), class, "{path}");
        }
    }

    #[tokio::test]
    async fn a_degraded_limiter_is_published_and_gauged() {
        let metrics = crate::telemetry::metrics_handle();
        let events = EventBus::default();
        let mut rx = events.subscribe("test", 8);
        // Nothing listens on port 1: the limiter starts degraded.
        let mut redis = RedisLimiterConfig::new("redis://127.0.0.1:1/", "ip");
        redis.retry_interval = Duration::from_secs(3600);
        let limiter = RateLimiter::redis(10, redis).await.expect("limiter");
        let health = limiter.health().expect("a Redis limiter reports its health");
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        let watcher = tokio::spawn(watch_health("unit-test".into(), health, events.clone(), shutdown.clone()));

        let event = rx.recv().await.expect("published");
        let Event::Firewall(event) = &*event else { panic!("a firewall event") };
        assert_eq!((event.kind, event.limiter.as_deref()), (FirewallKind::LimiterDegraded, Some("unit-test")));
        assert!(metrics.render().contains("omi_rate_limiter_degraded{limiter=\"unit-test\"} 1"));
        shutdown.cancel();
        watcher.await.expect("the watcher stops on shutdown");
    }
}
