//! The failed-attempt lockout in front of every check of the admin key: the dashboard's
//! sign-in, the admin API's bearer and `/metrics`. One table for all three, so guessing the key
//! through another door buys no extra attempts. Failures are counted in memory per client, as
//! the firewall knows it (the real client behind a trusted proxy, never the proxy; IPv6 per
//! /64, as its rate limits count); from the fifth, the client is locked out for an
//! exponentially growing time, during which the key is not even compared.

use crate::firewall::{LimitKey, limit_key};
use crate::keys::secrets_match;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed admin-key attempts per client (memory only: an instance restart forgives everyone).
/// A client is an IPv4 address or an IPv6 /64, like the firewall's per-IP budgets ([`limit_key`]).
#[derive(Default)]
pub struct Lockout {
    failures: Mutex<HashMap<LimitKey, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Why a presented admin key was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong; more attempts are allowed before a lockout.
    WrongKey,
    /// Locked out for this long (now, or by this very failure): the key was not accepted, right or not.
    LockedOut(Duration),
}

/// Failures allowed before the first lockout.
const FREE_FAILURES: u32 = 4;
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// A day without failures forgets an IP's history.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Bounds the table against a flood from many addresses.
const MAX_TRACKED: usize = 10_000;

impl Lockout {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, Failures>> {
        // The table stays consistent even if a holder panicked: every update is one insert.
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks `presented` against `admin_key` for the client `ip`, counting a failure and
    /// forgiving past ones on success. While `ip` is locked out the key is not compared.
    pub fn attempt(&self, ip: IpAddr, presented: &str, admin_key: &SecretString, now: Instant) -> Result<(), Refusal> {
        if let Some(wait) = self.locked_for(ip, now) {
            return Err(Refusal::LockedOut(wait));
        }
        if secrets_match(presented, admin_key) {
            self.succeeded(ip);
            return Ok(());
        }
        tracing::warn!(client_ip = %ip, "wrong admin key");
        Err(self.failed(ip, now).map_or(Refusal::WrongKey, Refusal::LockedOut))
    }

    /// How long `ip` must still wait, if it is locked out.
    fn locked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.table().get(&limit_key(ip))?.locked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Counts a failure; returns the lockout it starts, if any.
    fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let client = limit_key(ip);
        let mut table = self.table();
        if table.len() >= MAX_TRACKED && !table.contains_key(&client) {
            table.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER && f.locked_until.is_some_and(|u| u > now));
            if table.len() >= MAX_TRACKED {
                // Still full of live lockouts: evict the stalest entry rather than grow.
                if let Some(oldest) = table.iter().min_by_key(|(_, f)| f.last).map(|(client, _)| *client) {
                    table.remove(&oldest);
                }
            }
        }
        let entry = table.entry(client).or_insert(Failures { count: 0, last: now, locked_until: None });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            *entry = Failures { count: 0, last: now, locked_until: None };
        }
        entry.count += 1;
        entry.last = now;
        let over = entry.count.checked_sub(FREE_FAILURES + 1)?;
        let lockout = FIRST_LOCKOUT.saturating_mul(2u32.saturating_pow(over.min(16))).min(MAX_LOCKOUT);
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    fn succeeded(&self, ip: IpAddr) {
        self.table().remove(&limit_key(ip));
    }
}

/// Whole seconds to tell a locked-out client (`Retry-After`), at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "the-admin-key-0123456789";

    fn attempt(lockout: &Lockout, ip: IpAddr, key: &str, now: Instant) -> Result<(), Refusal> {
        lockout.attempt(ip, key, &SecretString::from(KEY), now)
    }

    #[test]
    fn lockout_starts_at_the_fifth_failure_and_doubles() {
        let lockout = Lockout::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(attempt(&lockout, ip, "wrong", t0), Err(Refusal::WrongKey));
        }
        assert_eq!(attempt(&lockout, ip, "wrong", t0), Err(Refusal::LockedOut(FIRST_LOCKOUT)));
        let later = t0 + Duration::from_secs(29);
        assert!(matches!(attempt(&lockout, ip, KEY, later), Err(Refusal::LockedOut(_))), "the right key waits too");
        assert!(lockout.locked_for(ip, t0 + FIRST_LOCKOUT).is_none());
        let again = t0 + FIRST_LOCKOUT;
        assert_eq!(attempt(&lockout, ip, "wrong", again), Err(Refusal::LockedOut(FIRST_LOCKOUT * 2)));
        assert_eq!(attempt(&lockout, [10, 0, 0, 2].into(), KEY, t0), Ok(()), "other addresses are unaffected");
        lockout.succeeded(ip);
        assert_eq!(attempt(&lockout, ip, KEY, again), Ok(()));
        assert_eq!(attempt(&lockout, ip, "wrong", again), Err(Refusal::WrongKey), "success forgives");
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        for n in 0..=FREE_FAILURES {
            let _ = attempt(&lockout, ip(&format!("2001:db8:1:2::{}", n + 1)), "wrong", t0);
        }
        assert!(lockout.locked_for(ip("2001:db8:1:2:ffff::1"), t0).is_some(), "new addresses in the /64 do not help");
        assert!(lockout.locked_for(ip("2001:db8:1:3::1"), t0).is_none(), "the next /64 is someone else");
    }
}
