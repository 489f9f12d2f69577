use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{FirewallError, LimiterHealth, RedisLimiter, RedisLimiterConfig};
use crate::web::rate_limit::Decision;

/// What a limit is counted against: an IP bucket, or any numeric id (API key,
/// plan) via [`LimitKey::from_raw`]. Different kinds of keys belong in
/// different limiters (or Redis scopes), so their values never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitKey(u128);

impl LimitKey {
    pub const fn from_raw(raw: u128) -> Self {
        LimitKey(raw)
    }

    pub const fn raw(self) -> u128 {
        self.0
    }
}

/// IPv4 clients are limited per address, IPv6 clients per /64: one subscriber
/// usually owns a whole /64, so per-address limits would be trivially evaded.
pub fn limit_key(ip: IpAddr) -> LimitKey {
    match ip.to_canonical() {
        // Kept in IPv4-mapped form: its low 64 bits are never zero, while a
        // masked /64 key's always are, so the two families cannot collide.
        IpAddr::V4(v4) => LimitKey(u128::from(v4.to_ipv6_mapped())),
        IpAddr::V6(v6) => LimitKey(u128::from(v6) & !u128::from(u64::MAX)),
    }
}

/// `limit` units per `period`, all of which may be spent at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: NonZeroU32,
    period: Duration,
}

impl Quota {
    pub const fn per_minute(limit: NonZeroU32) -> Self {
        Quota { limit, period: Duration::from_secs(60) }
    }

    pub fn with_period(limit: NonZeroU32, period: Duration) -> Result<Self, FirewallError> {
        if period < Duration::from_millis(1) {
            return Err(FirewallError::InvalidPeriod(period));
        }
        Ok(Quota { limit, period })
    }
}

/// Pure GCRA (generic cell rate algorithm) over integer time in some unit
/// (ns locally, µs in Redis). State is one number per key, the theoretical
/// arrival time (TAT): when the bucket would be full again. Unlike fixed
/// windows there is no edge where two bursts fit back to back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gcra {
    limit: u32,
    /// Time one unit takes to refill.
    interval: u64,
    /// How far the TAT may run ahead of now: the whole burst.
    tolerance: u64,
    unit_ns: u64,
}

/// Result of one GCRA step; `rel` is the stored TAT minus now afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) allowed: bool,
    pub(crate) new_tat: u64,
    pub(crate) rel: u64,
}

impl Gcra {
    pub(crate) fn new(quota: Quota, unit: Duration) -> Self {
        let unit_ns = u64::try_from(unit.as_nanos()).unwrap_or(u64::MAX).max(1);
        let period = u64::try_from(quota.period.as_nanos() / u128::from(unit_ns)).unwrap_or(u64::MAX);
        let limit = quota.limit.get();
        // Rounding the interval down keeps tolerance == limit * interval exact, so
        // a fresh key gets exactly `limit`; refill is at most one unit-tick fast.
        let interval = (period / u64::from(limit)).max(1);
        Gcra { limit, interval, tolerance: interval.saturating_mul(u64::from(limit)), unit_ns }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    pub(crate) fn tolerance(&self) -> u64 {
        self.tolerance
    }

    /// Cost in time units. Anything above the limit is refused regardless, so
    /// clamping to `limit + 1` changes no outcome and rules out overflow.
    pub(crate) fn cost(&self, n: u32) -> u64 {
        self.interval * u64::from(n.min(self.limit.saturating_add(1)))
    }

    /// One GCRA step at `now` for `n` units; `tat == 0` is a fresh key.
    pub(crate) fn step(&self, tat: u64, now: u64, n: u32) -> Step {
        let base = tat.max(now);
        let new_tat = base + self.cost(n);
        if new_tat - now <= self.tolerance {
            Step { allowed: true, new_tat, rel: new_tat - now }
        } else {
            Step { allowed: false, new_tat: tat, rel: base - now }
        }
    }

    /// Shared by both backends so their headers cannot disagree: Redis only
    /// reports `allowed` and `rel`.
    pub(crate) fn decision(&self, allowed: bool, rel: u64, n: u32) -> Decision {
        // A TAT written by an instance with a larger limit may exceed our tolerance.
        let rel = rel.min(self.tolerance);
        let remaining = (self.tolerance - rel) / self.interval;
        let retry_after = if allowed || n > self.limit {
            None
        } else {
            let wait = (rel + self.cost(n)).saturating_sub(self.tolerance).max(1);
            Some(self.duration(wait))
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_after: self.duration(rel),
            retry_after,
        }
    }

    fn duration(&self, units: u64) -> Duration {
        Duration::from_nanos(units.saturating_mul(self.unit_ns))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalLimiterConfig {
    /// Upper bound on tracked keys (32 bytes each plus hash table slack). Past it, idle keys are
    /// dropped first, then the fullest buckets, so an address flood cannot
    /// exhaust memory.
    pub max_keys: usize,
    /// How often idle keys are swept even below `max_keys`.
    pub sweep_interval: Duration,
}

impl Default for LocalLimiterConfig {
    fn default() -> Self {
        LocalLimiterConfig { max_keys: 1 << 18, sweep_interval: Duration::from_secs(30) }
    }
}

/// In-process GCRA: one atomic TAT per key in a sharded map. The hot path for a
/// known key is a shard read lock plus a CAS.
pub struct LocalLimiter {
    gcra: Gcra,
    epoch: Instant,
    tats: DashMap<LimitKey, AtomicU64>,
    max_keys: usize,
    sweep_interval: u64,
    next_sweep: AtomicU64,
    /// Only one thread sweeps; the others carry on instead of queueing.
    sweeping: Mutex<()>,
}

impl LocalLimiter {
    pub fn new(quota: Quota, config: LocalLimiterConfig) -> Self {
        let sweep_interval = u64::try_from(config.sweep_interval.as_nanos()).unwrap_or(u64::MAX);
        LocalLimiter {
            gcra: Gcra::new(quota, Duration::from_nanos(1)),
            epoch: Instant::now(),
            tats: DashMap::new(),
            max_keys: config.max_keys.max(1),
            sweep_interval,
            next_sweep: AtomicU64::new(sweep_interval),
            sweeping: Mutex::new(()),
        }
    }

    pub fn check(&self, key: LimitKey) -> Decision {
        self.check_n(key, 1)
    }

    /// Spend `n` units (e.g. tokens); `n == 0` only reports the state.
    pub fn check_n(&self, key: LimitKey, n: u32) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(key, n, now)
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// `now` is nanoseconds since `epoch`; explicit so tests need no clock.
    pub(crate) fn check_at(&self, key: LimitKey, n: u32, now: u64) -> Decision {
        let (step, inserted) = match self.tats.get(&key) {
            Some(tat) => (self.update(&tat, now, n), false),
            None => {
                // The entry API holds the shard's write lock, so two first
                // requests for one key cannot both start from a fresh bucket.
                let tat = self.tats.entry(key).or_insert_with(|| AtomicU64::new(0));
                (self.update(&tat, now, n), true)
            }
        };
        // Shard guards are released above; sweeping while holding one would deadlock.
        self.maybe_sweep(now, inserted);
        self.gcra.decision(step.allowed, step.rel, n)
    }

    fn update(&self, tat: &AtomicU64, now: u64, n: u32) -> Step {
        // Relaxed suffices: the TAT is the only data and CAS orders updates to it.
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let step = self.gcra.step(current, now, n);
            if !step.allowed || step.new_tat == current {
                return step;
            }
            match tat.compare_exchange_weak(current, step.new_tat, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return step,
                Err(actual) => current = actual,
            }
        }
    }

    fn maybe_sweep(&self, now: u64, inserted: bool) {
        let due = now >= self.next_sweep.load(Ordering::Relaxed);
        let over = inserted && self.tats.len() > self.max_keys;
        if !due && !over {
            return;
        }
        let Ok(_guard) = self.sweeping.try_lock() else {
            return;
        };
        self.next_sweep.store(now.saturating_add(self.sweep_interval), Ordering::Relaxed);
        self.sweep(now);
    }

    fn sweep(&self, now: u64) {
        let over = self.tats.len() > self.max_keys;
        // A TAT in the past is indistinguishable from a fresh key: dropping it loses nothing.
        self.tats.retain(|_, tat| *tat.get_mut() > now);
        if !over {
            return;
        }
        // Still too many live keys: drop the fullest buckets first, in quarters
        // of the burst, down to 3/4 of the cap so the next sweep is far away.
        // Evicted clients get a fresh burst, which is the price of bounded memory.
        let target = self.max_keys - self.max_keys / 4;
        let before = self.tats.len();
        for quarter in 1..=4 {
            if self.tats.len() <= target {
                break;
            }
            let horizon = now.saturating_add(self.gcra.tolerance() / 4 * quarter);
            self.tats.retain(|_, tat| *tat.get_mut() > horizon);
        }
        tracing::warn!(
            max_keys = self.max_keys,
            evicted = before.saturating_sub(self.tats.len()),
            "rate limiter key cap reached; evicted active keys"
        );
    }
}

/// The gateway-facing limiter: off, in-process, or shared through Redis.
pub enum RateLimiter {
    Off,
    Local(LocalLimiter),
    Redis(RedisLimiter),
}

impl RateLimiter {
    /// `per_minute == 0` turns limiting off.
    pub fn local(per_minute: u32, config: LocalLimiterConfig) -> Self {
        match NonZeroU32::new(per_minute) {
            Some(limit) => RateLimiter::Local(LocalLimiter::new(Quota::per_minute(limit), config)),
            None => RateLimiter::Off,
        }
    }

    /// `per_minute == 0` turns limiting off. Fails only on a malformed URL: an
    /// unreachable Redis starts the limiter degraded instead.
    pub async fn redis(per_minute: u32, config: RedisLimiterConfig) -> Result<Self, FirewallError> {
        match NonZeroU32::new(per_minute) {
            Some(limit) => Ok(RateLimiter::Redis(RedisLimiter::new(Quota::per_minute(limit), config).await?)),
            None => Ok(RateLimiter::Off),
        }
    }

    pub async fn check(&self, key: LimitKey) -> Decision {
        self.check_n(key, 1).await
    }

    pub async fn check_n(&self, key: LimitKey, n: u32) -> Decision {
        match self {
            RateLimiter::Off => Decision::UNLIMITED,
            RateLimiter::Local(local) => local.check_n(key, n),
            // Boxed: the Redis call's future (~700 bytes) would otherwise enlarge every
            // request's futures, copied on every request, with the in-process limiter too.
            RateLimiter::Redis(redis) => Box::pin(redis.check_n(key, n)).await,
        }
    }

    /// Redis health transitions to publish as events; `None` for backends that
    /// cannot degrade.
    pub fn health(&self) -> Option<tokio::sync::watch::Receiver<LimiterHealth>> {
        match self {
            RateLimiter::Redis(redis) => Some(redis.health()),
            RateLimiter::Off | RateLimiter::Local(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    const SEC: u64 = 1_000_000_000;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn per_minute(n: u32) -> LocalLimiter {
        LocalLimiter::new(Quota::per_minute(nz(n)), LocalLimiterConfig::default())
    }

    fn key(n: u128) -> LimitKey {
        LimitKey::from_raw(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn ipv4_per_address_ipv6_per_64() {
        assert_ne!(limit_key(ip("1.2.3.4")), limit_key(ip("1.2.3.5")));
        assert_eq!(limit_key(ip("1.2.3.4")), limit_key(ip("::ffff:1.2.3.4")));
        assert_eq!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        // IPv4 keys never land in an IPv6 bucket, not even ::/64's.
        assert_ne!(limit_key(ip("0.0.0.0")), limit_key(ip("::")));
        assert_ne!(limit_key(ip("1.2.3.4")), limit_key(ip("::1.2.3.4")));
    }

    #[test]
    fn gcra_burst_then_steady_rate() {
        let g = Gcra::new(Quota::per_minute(nz(60)), Duration::from_nanos(1));
        let mut tat = 0;
        let now = 1000 * SEC;
        for i in 0..60 {
            let s = g.step(tat, now, 1);
            assert!(s.allowed, "request {i} of the burst");
            assert_eq!(g.decision(true, s.rel, 1).remaining, 59 - i);
            tat = s.new_tat;
        }
        let s = g.step(tat, now, 1);
        assert!(!s.allowed);
        assert_eq!(s.new_tat, tat, "refusals do not consume");
        let d = g.decision(false, s.rel, 1);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(d.reset_after, Duration::from_secs(60));
        assert_eq!(d.remaining, 0);

        // One second later exactly one more fits: no second burst at an edge.
        assert!(!g.step(tat, now + SEC - 1, 1).allowed);
        let s = g.step(tat, now + SEC, 1);
        assert!(s.allowed);
        assert!(!g.step(s.new_tat, now + SEC, 1).allowed);

        // After a full period the burst is back.
        let later = s.new_tat;
        let d = g.decision(true, g.step(later, now + 61 * SEC, 0).rel, 0);
        assert_eq!(d.remaining, 60);
    }

    #[test]
    fn gcra_costs() {
        let g = Gcra::new(Quota::per_minute(nz(1000)), Duration::from_nanos(1));
        let now = 5 * SEC;
        let a = g.step(0, now, 700);
        assert!(a.allowed);
        assert_eq!(g.decision(true, a.rel, 700).remaining, 300);
        let b = g.step(a.new_tat, now, 301);
        assert!(!b.allowed);
        let d = g.decision(false, b.rel, 301);
        assert_eq!(d.remaining, 300, "a smaller request would still fit");
        assert_eq!(d.retry_after, Some(Duration::from_millis(60)));
        let c = g.step(a.new_tat, now, 300);
        assert!(c.allowed);

        // More than the whole burst can never pass, so there is no retry time.
        let huge = g.step(0, now, u32::MAX);
        assert!(!huge.allowed);
        assert_eq!(g.decision(false, huge.rel, u32::MAX).retry_after, None);
        assert_eq!(g.decision(false, huge.rel, u32::MAX).remaining, 1000);
    }

    #[test]
    fn gcra_uneven_interval_still_gives_exact_burst() {
        // 60 s / 7 is not a whole number of ns.
        let g = Gcra::new(Quota::per_minute(nz(7)), Duration::from_nanos(1));
        let (mut tat, now) = (0, 3 * SEC);
        for _ in 0..7 {
            let s = g.step(tat, now, 1);
            assert!(s.allowed);
            tat = s.new_tat;
        }
        assert!(!g.step(tat, now, 1).allowed);
    }

    #[test]
    fn local_exactly_n_of_a_burst_then_refill() {
        let l = per_minute(100);
        let k = key(1);
        let t0 = 10 * SEC;
        let allowed = (0..160).filter(|_| l.check_at(k, 1, t0).allowed).count();
        assert_eq!(allowed, 100);
        // Other keys are independent.
        assert!(l.check_at(key(2), 1, t0).allowed);

        // 600 ms refills one request.
        assert!(!l.check_at(k, 1, t0 + 599_000_000).allowed);
        assert!(l.check_at(k, 1, t0 + 600_000_000).allowed);
        assert!(!l.check_at(k, 1, t0 + 600_000_000).allowed);

        // A full minute after the last spend, the full burst is back.
        let later = t0 + 600_000_000 + 60 * SEC;
        let d = l.check_at(k, 0, later);
        assert_eq!((d.allowed, d.remaining), (true, 100));
        assert_eq!((0..150).filter(|_| l.check_at(k, 1, later).allowed).count(), 100);
    }

    #[test]
    fn local_limits_hold_under_threads() {
        let l = per_minute(1000);
        let allowed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if l.check_at(key(7), 1, SEC).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn headers_allowed_and_refused() {
        let l = per_minute(2);
        let t = 100 * SEC;
        let mut h = HeaderMap::new();
        l.check_at(key(1), 1, t).write_headers(&mut h);
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], "1");
        assert_eq!(h["x-ratelimit-reset"], "30");
        assert!(h.get("retry-after").is_none());

        l.check_at(key(1), 1, t + 1);
        let mut h = HeaderMap::new();
        let refused = l.check_at(key(1), 1, t + 2);
        assert!(!refused.allowed);
        refused.write_headers(&mut h);
        assert_eq!(h["x-ratelimit-remaining"], "0");
        // 60 s - 2 ns until full: rounded up.
        assert_eq!(h["x-ratelimit-reset"], "60");
        assert_eq!(h["retry-after"], "30");
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let d = Decision {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after: Duration::from_millis(1),
            retry_after: Some(Duration::from_nanos(1)),
        };
        let mut h = HeaderMap::new();
        d.write_headers(&mut h);
        assert_eq!(h["retry-after"], "1");
        assert_eq!(h["x-ratelimit-reset"], "1");

        let mut h = HeaderMap::new();
        Decision::UNLIMITED.write_headers(&mut h);
        assert!(h.is_empty(), "no limit, no headers");
    }

    #[test]
    fn idle_keys_are_swept_without_losing_state() {
        let l = LocalLimiter::new(
            Quota::per_minute(nz(10)),
            LocalLimiterConfig { max_keys: 1000, sweep_interval: Duration::from_secs(5) },
        );
        for k in 0..100 {
            l.check_at(key(k), 1, SEC);
        }
        // Key 0 goes on being limited; the rest fall idle.
        for _ in 0..9 {
            l.check_at(key(0), 1, SEC);
        }
        assert_eq!(l.len(), 100);
        // 30 s later the single-request keys (full after 6 s) are idle and a
        // sweep is due; key 0 (full only at 61 s) must survive with its state.
        let d = l.check_at(key(0), 1, 31 * SEC);
        assert_eq!(l.len(), 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4, "refilled 5 of 10, spent 1");
    }

    #[test]
    fn key_flood_is_capped() {
        let l = LocalLimiter::new(
            Quota::per_minute(nz(10)),
            LocalLimiterConfig { max_keys: 1000, sweep_interval: Duration::from_secs(3600) },
        );
        // All keys active (full bucket only at +6 s) and no idle ones to drop.
        for k in 0..10_000 {
            assert!(l.check_at(key(k), 1, SEC).allowed);
            assert!(l.len() <= 1001, "len {} at key {k}", l.len());
        }
        // Eviction frees the fullest first: a heavy user keeps its state.
        for _ in 0..10 {
            l.check_at(key(u128::MAX), 1, SEC);
        }
        for k in 20_000..21_000 {
            l.check_at(key(k), 1, SEC);
        }
        assert!(!l.check_at(key(u128::MAX), 1, SEC).allowed);
    }

    #[test]
    fn quota_validation_and_off() {
        assert!(matches!(Quota::with_period(nz(1), Duration::from_micros(10)), Err(FirewallError::InvalidPeriod(_))));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let off = RateLimiter::local(0, LocalLimiterConfig::default());
        assert!(matches!(off, RateLimiter::Off));
        let d = rt.block_on(off.check_n(key(1), 1_000_000));
        assert_eq!(d, Decision::UNLIMITED);
        assert!(off.health().is_none());

        let on = RateLimiter::local(1, LocalLimiterConfig::default());
        assert!(rt.block_on(on.check(key(1))).allowed);
        assert!(!rt.block_on(on.check(key(1))).allowed);
    }
}
