//! A provider's house keys: one pool over the keys of `api_key_env`/`api_key_envs`. A call
//! takes the serving key with the fewest calls in flight (ties go round the pool), and holds
//! it as a [`KeyLease`] until its answer is relayed. A key answering 429 rests for the
//! upstream's `Retry-After` (bounded) while the others serve; a key answering 401/403 is taken
//! out and rechecked by one call every [`RECHECK_REFUSED`]. Time is passed in, so that the
//! states are tested without sleeping.

use secrecy::SecretString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
// The pipeline's clock (tokio's, which tests may pause).
use tokio::time::Instant;

/// How long a key rests after a 429 that named no `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(1);
/// The longest rest a `Retry-After` can ask: a key is not parked for an hour by one answer.
pub const MAX_REST: Duration = Duration::from_secs(60);
/// How often a refused key is tried again (by one call): keys are fixed upstream, then work.
pub const RECHECK_REFUSED: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum Health {
    Serving,
    /// Answered 429: no call until `until`.
    Resting {
        until: Instant,
    },
    /// Answered 401/403: out until `recheck_at`, when one call may try it (and moves
    /// `recheck_at` on, so the others keep away until that call reports).
    Refused {
        recheck_at: Instant,
    },
}

/// One house key and what the pool knows of it.
pub struct HouseKey {
    /// The environment variable it was read from: what alerts and logs name, never the key.
    pub var: Arc<str>,
    secret: SecretString,
    in_flight: AtomicUsize,
    /// Held only to read or switch the health, never across a call.
    health: Mutex<Health>,
}

impl std::fmt::Debug for HouseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HouseKey").field("var", &self.var).finish_non_exhaustive()
    }
}

impl HouseKey {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A key taken for one call: counted in flight until dropped.
pub struct KeyLease {
    key: Arc<HouseKey>,
}

impl KeyLease {
    pub fn secret(&self) -> &SecretString {
        &self.key.secret
    }

    pub fn var(&self) -> &Arc<str> {
        &self.key.var
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KeyLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLease").field("var", &self.key.var).finish()
    }
}

/// What one call's answer says of the key it went with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// The upstream took the key (any answer but those below).
    Accepted,
    /// 429: rest for `retry_after` (or [`DEFAULT_REST`]), at most [`MAX_REST`].
    RateLimited { retry_after: Option<Duration> },
    /// 401 or 403: the key is not (or no longer) good.
    Refused,
}

/// A key taken out or put back, for the Hawk's `upstream_key_invalid` alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    pub var: Arc<str>,
    /// Taken out (true) or accepted again (false).
    pub refused: bool,
    /// Keys of the pool still out after this change.
    pub refused_left: usize,
}

/// A pool's keys at one moment: all of them, and those out of the pool for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolHealth {
    pub keys: usize,
    /// Resting after a 429.
    pub resting: usize,
    /// Taken out after a 401/403, until a recheck is answered.
    pub refused: usize,
}

#[derive(Debug, Default)]
pub struct KeyPool {
    keys: Vec<Arc<HouseKey>>,
    /// Where the next search starts, so that ties go round the pool.
    next: AtomicUsize,
}

impl KeyPool {
    /// The keys as `(variable, value)`, in configuration order.
    pub fn new(keys: impl IntoIterator<Item = (String, SecretString)>) -> KeyPool {
        let keys = keys
            .into_iter()
            .map(|(var, secret)| {
                Arc::new(HouseKey {
                    var: var.into(),
                    secret,
                    in_flight: AtomicUsize::new(0),
                    health: Mutex::new(Health::Serving),
                })
            })
            .collect();
        KeyPool { keys, next: AtomicUsize::new(0) }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// A key taken for a call: a refused key due its recheck (one call every
    /// [`RECHECK_REFUSED`]; if it fails, the request goes on with another key), else the
    /// serving key with the fewest calls in flight. `None`: every key rests or is out.
    pub fn take(&self, now: Instant) -> Option<KeyLease> {
        let count = self.keys.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<&Arc<HouseKey>> = None;
        for offset in 0..count {
            let key = &self.keys[(start + offset) % count];
            let mut health = key.health();
            if due_recheck(&mut health, now) {
                best = Some(key);
                break;
            }
            if !serves(&mut health, now) {
                continue;
            }
            let load = key.in_flight.load(Ordering::Relaxed);
            if best.is_none_or(|b| load < b.in_flight.load(Ordering::Relaxed)) {
                best = Some(key);
            }
        }
        let key = best?;
        key.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(KeyLease { key: key.clone() })
    }

    /// Whether [`KeyPool::take`] would find a key now (without taking a recheck's turn).
    pub fn available(&self, now: Instant) -> bool {
        self.keys.iter().any(|key| match *key.health() {
            Health::Serving => true,
            Health::Resting { until } => now >= until,
            Health::Refused { recheck_at } => now >= recheck_at,
        })
    }

    /// When no key serves and some rest: when the first rest ends. `None` while a key
    /// serves, or when every key is out (refused, not busy).
    pub fn resting_until(&self, now: Instant) -> Option<Instant> {
        if self.available(now) {
            return None;
        }
        self.keys
            .iter()
            .filter_map(|key| match *key.health() {
                Health::Resting { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Books what a call's answer says of its key; returns the change when the key was taken
    /// out or came back.
    pub fn report(&self, lease: &KeyLease, verdict: KeyVerdict, now: Instant) -> Option<KeyChange> {
        let was_refused = {
            let mut health = lease.key.health();
            let was_refused = matches!(*health, Health::Refused { .. });
            match verdict {
                // A call begun before a 429 may end after it: the newer rest stands.
                KeyVerdict::Accepted if matches!(*health, Health::Resting { .. }) => {}
                KeyVerdict::Accepted => *health = Health::Serving,
                KeyVerdict::RateLimited { retry_after } => {
                    let rest = retry_after.unwrap_or(DEFAULT_REST).min(MAX_REST);
                    *health = Health::Resting { until: now + rest };
                }
                KeyVerdict::Refused => *health = Health::Refused { recheck_at: now + RECHECK_REFUSED },
            }
            was_refused
        };
        let refused = verdict == KeyVerdict::Refused;
        (refused != was_refused).then(|| KeyChange {
            var: lease.key.var.clone(),
            refused,
            refused_left: self.keys.iter().filter(|key| matches!(*key.health(), Health::Refused { .. })).count(),
        })
    }

    /// How many keys serve, rest after a 429 and are out after a 401/403, now (the dashboard).
    pub fn health(&self, now: Instant) -> PoolHealth {
        let mut health = PoolHealth { keys: self.keys.len(), resting: 0, refused: 0 };
        for key in &self.keys {
            match *key.health() {
                Health::Resting { until } if now < until => health.resting += 1,
                Health::Refused { .. } => health.refused += 1,
                Health::Serving | Health::Resting { .. } => {}
            }
        }
        health
    }

    /// Every key with the variable it came from, in configuration order (`omi doctor` checks each).
    pub fn keys(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.keys.iter().map(|key| (&*key.var, &key.secret))
    }

    /// Every key's value, for the output shield (it removes them wherever they appear).
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.keys.iter().map(|key| &key.secret)
    }
}

/// Whether a key serves now; a rest that is over ends here.
fn serves(health: &mut Health, now: Instant) -> bool {
    match *health {
        Health::Serving => true,
        Health::Resting { until } if now >= until => {
            *health = Health::Serving;
            true
        }
        Health::Resting { .. } | Health::Refused { .. } => false,
    }
}

/// Whether a refused key is due its recheck; if so the caller makes it, and the next one is
/// a recheck period away.
fn due_recheck(health: &mut Health, now: Instant) -> bool {
    match *health {
        Health::Refused { recheck_at } if now >= recheck_at => {
            *health = Health::Refused { recheck_at: now + RECHECK_REFUSED };
            true
        }
        _ => false,
    }
}

/// The `Retry-After` of a 429, in seconds (OpenAI and Anthropic send whole or decimal
/// seconds); an HTTP date or nonsense is `None` (the default rest applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(MAX_REST.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new((0..n).map(|i| (format!("KEY_{i}"), SecretString::from(format!("sk-{i}")))))
    }

    fn var(lease: &KeyLease) -> &str {
        lease.var()
    }

    #[test]
    fn calls_go_to_the_key_with_fewest_in_flight_and_ties_go_round() {
        let pool = pool(3);
        let now = Instant::now();
        let a = pool.take(now).expect("a key");
        let b = pool.take(now).expect("a key");
        let c = pool.take(now).expect("a key");
        let mut taken = vec![var(&a).to_owned(), var(&b).to_owned(), var(&c).to_owned()];
        taken.sort();
        assert_eq!(taken, ["KEY_0", "KEY_1", "KEY_2"], "each key takes one before any takes two");
        let held = var(&b).to_owned();
        drop(a);
        drop(c);
        for _ in 0..4 {
            let lease = pool.take(now).expect("a key");
            assert_ne!(var(&lease), held, "the key with a call in flight is not the least loaded");
        }
        drop(b);
        let round: Vec<String> = (0..6).map(|_| var(&pool.take(now).expect("a key")).to_owned()).collect();
        for key in ["KEY_0", "KEY_1", "KEY_2"] {
            assert_eq!(round.iter().filter(|k| *k == key).count(), 2, "sequential calls go round: {round:?}");
        }
        assert_eq!(pool.take(now).map(|l| l.secret().expose_secret().len()), Some(4));
    }

    #[test]
    fn a_rate_limited_key_rests_for_its_retry_after_then_serves() {
        let pool = pool(2);
        let now = Instant::now();
        let lease = pool.take(now).expect("a key");
        let limited = var(&lease).to_owned();
        let change = pool.report(&lease, KeyVerdict::RateLimited { retry_after: Some(Duration::from_secs(2)) }, now);
        assert_eq!(change, None, "resting is no alert");
        drop(lease);
        let health = |at| pool.health(at);
        assert_eq!(health(now), PoolHealth { keys: 2, resting: 1, refused: 0 });
        assert_eq!(health(now + Duration::from_secs(2)).resting, 0, "its rest is over");
        for _ in 0..5 {
            assert_ne!(var(&pool.take(now + Duration::from_millis(1999)).expect("the other")), limited);
        }
        let later = now + Duration::from_secs(2);
        let back: Vec<String> = (0..4).map(|_| var(&pool.take(later).expect("a key")).to_owned()).collect();
        assert!(back.contains(&limited), "serves again after its rest: {back:?}");
        // Both resting: nothing to take.
        let (a, b) = (pool.take(later).expect("a"), pool.take(later).expect("b"));
        pool.report(&a, KeyVerdict::RateLimited { retry_after: None }, later);
        pool.report(&b, KeyVerdict::RateLimited { retry_after: None }, later);
        assert!(pool.take(later).is_none() && !pool.available(later));
        assert_eq!(pool.resting_until(later), Some(later + DEFAULT_REST), "the first rest to end");
        assert!(pool.available(later + DEFAULT_REST), "the default rest");
        // An hour's Retry-After is capped.
        let single = self::pool(1);
        let lease = single.take(now).expect("the key");
        single.report(&lease, KeyVerdict::RateLimited { retry_after: Some(Duration::from_secs(3600)) }, now);
        assert!(!single.available(now + MAX_REST - Duration::from_millis(1)));
        assert!(single.available(now + MAX_REST));
    }

    #[test]
    fn a_refused_key_is_taken_out_rechecked_by_one_call_and_comes_back_when_accepted() {
        let pool = pool(2);
        let now = Instant::now();
        let lease = pool.take(now).expect("a key");
        let refused = var(&lease).to_owned();
        let change = pool.report(&lease, KeyVerdict::Refused, now).expect("taken out");
        assert_eq!((&*change.var, change.refused, change.refused_left), (refused.as_str(), true, 1));
        assert_eq!(pool.report(&lease, KeyVerdict::Refused, now), None, "one alert per taking out");
        drop(lease);
        assert_eq!(
            pool.health(now + RECHECK_REFUSED),
            PoolHealth { keys: 2, resting: 0, refused: 1 },
            "out until answered"
        );
        let before_due = now + RECHECK_REFUSED - Duration::from_millis(1);
        for _ in 0..5 {
            assert_ne!(var(&pool.take(before_due).expect("the other serves")), refused);
        }
        // Its recheck is due: one call tries it, the others keep to the serving key.
        let due = now + RECHECK_REFUSED;
        let recheck = pool.take(due).expect("the recheck");
        assert_eq!(var(&recheck), refused);
        for _ in 0..5 {
            assert_ne!(var(&pool.take(due).expect("the other serves")), refused, "one recheck at a time");
        }
        // Refused again: out for another period, silently.
        assert_eq!(pool.report(&recheck, KeyVerdict::Refused, due), None);
        drop(recheck);
        let due = due + RECHECK_REFUSED;
        let recheck = pool.take(due).expect("the next recheck");
        assert_eq!(var(&recheck), refused);
        let change = pool.report(&recheck, KeyVerdict::Accepted, due).expect("back");
        assert_eq!((change.refused, change.refused_left), (false, 0));
        assert!(pool.take(due).is_some());
    }

    #[test]
    fn retry_after_reads_seconds_and_ignores_dates() {
        let headers = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().expect("header"));
            headers
        };
        assert_eq!(retry_after(&headers("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(" 0.5 ")), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers("99999")), Some(MAX_REST));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }
}
