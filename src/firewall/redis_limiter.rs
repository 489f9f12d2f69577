use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::limiter::Gcra;
use super::{FirewallError, LimitKey, LocalLimiter, LocalLimiterConfig, Quota};
use crate::web::rate_limit::Decision;

/// GCRA in one atomic step, timed by Redis' own clock so instances need no
/// clock sync. Times are µs: doubles hold integers exactly up to 2^53, i.e.
/// ~285 years of epoch µs. Returns {allowed, TAT - now}; the remaining count and
/// reset/retry times are derived from those in Rust, by the same code as the
/// local limiter.
///
/// KEYS[1] bucket; ARGV[1] cost in µs; ARGV[2] burst tolerance in µs.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local cost = tonumber(ARGV[1])
local new_tat = tat + cost
if new_tat - now > tonumber(ARGV[2]) then
  return {0, tat - now}
end
if cost > 0 then
  -- '%.0f' because Lua's default number format keeps only 14 digits.
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
             'PX', math.ceil((new_tat - now) / 1000))
end
return {1, new_tat - now}
";

/// What to do while Redis cannot be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackPolicy {
    /// Limit in-process with the same quota; across N instances that admits up
    /// to N times the limit, which beats refusing everyone.
    #[default]
    Local,
    /// Refuse every request until Redis is back.
    Refuse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimiterHealth {
    Healthy,
    /// Redis failed; the fallback policy is in force until it answers again.
    Degraded,
}

#[derive(Clone, Debug)]
pub struct RedisLimiterConfig {
    /// May hold a password: a secret, so `Debug` cannot print it.
    pub url: SecretString,
    /// Keys are `<namespace>:<scope>:<key as hex>`.
    pub namespace: String,
    /// Separates limits sharing one Redis: `ip`, `key`, `plan:pro`, ...
    pub scope: String,
    /// Budget for one check's round trip; past it the check falls back. Kept
    /// short because a slow limiter is worse than a briefly local one.
    pub call_timeout: Duration,
    /// Budget for a (re)connection attempt, which never runs on the request path.
    pub connect_timeout: Duration,
    /// Gap between reconnection attempts while degraded.
    pub retry_interval: Duration,
    pub fallback: FallbackPolicy,
    /// For the in-process fallback.
    pub local: LocalLimiterConfig,
}

impl RedisLimiterConfig {
    pub fn new(url: impl Into<SecretString>, scope: impl Into<String>) -> Self {
        RedisLimiterConfig {
            url: url.into(),
            namespace: "omi:rl".to_owned(),
            scope: scope.into(),
            call_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(500),
            retry_interval: Duration::from_secs(1),
            fallback: FallbackPolicy::Local,
            local: LocalLimiterConfig::default(),
        }
    }
}

/// GCRA shared by all gateway instances through one Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: Script,
    key_prefix: String,
    gcra: Gcra,
    call_timeout: Duration,
    connect_timeout: Duration,
    retry_interval: Duration,
    policy: FallbackPolicy,
    fallback: LocalLimiter,
    /// Mirrors `health` for a lock-free fast path; written only under the
    /// watch's lock so the two never disagree.
    degraded: AtomicBool,
    health: watch::Sender<LimiterHealth>,
}

impl RedisLimiter {
    /// Never waits longer than `connect_timeout`. If Redis is unreachable the
    /// limiter starts degraded and keeps retrying in the background.
    pub async fn new(quota: Quota, config: RedisLimiterConfig) -> Result<Self, FirewallError> {
        let client = Client::open(config.url.expose_secret()).map_err(FirewallError::Redis)?;
        // One connection attempt per use: our own loop paces retries, so the
        // manager's backoff would only keep callers waiting.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.call_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(FirewallError::Redis)?;
        let (health, _) = watch::channel(LimiterHealth::Healthy);
        let inner = Arc::new(Inner {
            conn,
            script: Script::new(GCRA_SCRIPT),
            key_prefix: format!("{}:{}:", config.namespace, config.scope),
            gcra: Gcra::new(quota, Duration::from_micros(1)),
            call_timeout: config.call_timeout,
            connect_timeout: config.connect_timeout,
            retry_interval: config.retry_interval,
            policy: config.fallback,
            fallback: LocalLimiter::new(quota, config.local),
            degraded: AtomicBool::new(false),
            health,
        });
        if !inner.ping().await {
            inner.mark_degraded("initial connection failed");
        }
        Ok(RedisLimiter { inner })
    }

    pub async fn check(&self, key: LimitKey) -> Decision {
        self.check_n(key, 1).await
    }

    /// Spend `n` units (e.g. tokens); `n == 0` only reports the state.
    pub async fn check_n(&self, key: LimitKey, n: u32) -> Decision {
        let inner = &self.inner;
        if !inner.degraded.load(Ordering::Acquire) {
            match inner.eval(key, n).await {
                Ok((allowed, rel)) => return inner.gcra.decision(allowed, rel, n),
                Err(reason) => inner.mark_degraded(&reason),
            }
        }
        inner.fallback_decision(key, n)
    }

    /// Starts with the current state; each transition is sent once.
    pub fn health(&self) -> watch::Receiver<LimiterHealth> {
        self.inner.health.subscribe()
    }
}

impl Inner {
    async fn eval(&self, key: LimitKey, n: u32) -> Result<(bool, u64), String> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{}{:x}", self.key_prefix, key.raw())).arg(self.gcra.cost(n)).arg(self.gcra.tolerance());
        let attempt = async {
            match invocation.invoke_async::<(i64, i64)>(&mut conn).await {
                // A connection closed while idle (server `timeout`, a restart, a
                // proxy) is only noticed on use; the manager is reconnecting
                // already, so one retry hides it instead of degrading.
                Err(e) if e.is_connection_dropped() => invocation.invoke_async::<(i64, i64)>(&mut conn).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.call_timeout, attempt).await {
            Ok(Ok((allowed, rel))) => Ok((allowed == 1, u64::try_from(rel).unwrap_or(0))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.call_timeout)),
        }
    }

    fn fallback_decision(&self, key: LimitKey, n: u32) -> Decision {
        match self.policy {
            FallbackPolicy::Local => self.fallback.check_n(key, n),
            FallbackPolicy::Refuse => Decision {
                allowed: false,
                limit: self.gcra.limit(),
                remaining: 0,
                reset_after: self.retry_interval,
                retry_after: Some(self.retry_interval),
            },
        }
    }

    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        matches!(
            tokio::time::timeout(self.connect_timeout, redis::cmd("PING").query_async::<()>(&mut conn)).await,
            Ok(Ok(()))
        )
    }

    fn mark_degraded(self: &Arc<Self>, reason: &str) {
        self.health.send_if_modified(|health| {
            if *health == LimiterHealth::Degraded {
                return false;
            }
            *health = LimiterHealth::Degraded;
            self.degraded.store(true, Ordering::Release);
            tracing::warn!(
                reason,
                policy = ?self.policy,
                "rate limiter lost Redis; using fallback"
            );
            // Not awaited at shutdown: it writes nothing, and ends once the limiter is dropped
            // (it holds only a weak reference).
            #[allow(clippy::disallowed_methods, reason = "ends with the limiter; nothing to flush")]
            tokio::spawn(reconnect(Arc::downgrade(self)));
            true
        });
    }

    fn mark_healthy(&self) {
        self.health.send_if_modified(|health| {
            if *health == LimiterHealth::Healthy {
                return false;
            }
            *health = LimiterHealth::Healthy;
            self.degraded.store(false, Ordering::Release);
            tracing::info!("rate limiter reconnected to Redis");
            true
        });
    }
}

/// Runs only while degraded, so a dead Redis sees one attempt per interval
/// and requests never wait on it. Holds a weak reference so dropping the
/// limiter ends the loop.
async fn reconnect(weak: Weak<Inner>) {
    loop {
        let Some(interval) = weak.upgrade().map(|i| i.retry_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // The manager reports a dead connection's stored error once and only
        // then starts a fresh attempt, so the second ping sees the new attempt.
        if inner.ping().await || inner.ping().await {
            inner.mark_healthy();
            return;
        }
    }
}
