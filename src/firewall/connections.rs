//! Open connections per client IP (IPv6: per /64, as the rate limits), so that one client
//! cannot hold every connection slot. Counted at accept time from the TCP peer: a trusted
//! proxy carries many clients on its connections and is exempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::{LimitKey, TrustedProxies, limit_key};

pub struct ConnectionsPerIp {
    /// At most this many open connections per key; 0 means no cap.
    cap: usize,
    exempt: TrustedProxies,
    open: Mutex<HashMap<LimitKey, usize>>,
}

/// One admitted connection; dropping it gives the slot back.
pub struct ConnectionPermit {
    held: Option<(Arc<ConnectionsPerIp>, LimitKey)>,
}

impl ConnectionsPerIp {
    pub fn new(cap: usize, exempt: TrustedProxies) -> Arc<ConnectionsPerIp> {
        Arc::new(ConnectionsPerIp { cap, exempt, open: Mutex::new(HashMap::new()) })
    }

    /// A permit for one more connection from `peer`, or `None` when it already holds the cap
    /// (counted in `omi_firewall_rejections_total{reason="connections_per_ip"}`).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionPermit> {
        if self.cap == 0 || self.exempt.contains(peer) {
            return Some(ConnectionPermit { held: None });
        }
        let key = limit_key(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            drop(open);
            metrics::counter!("omi_firewall_rejections_total", "reason" => "connections_per_ip").increment(1);
            tracing::debug!(%peer, cap = self.cap, "connection refused: too many from one client");
            return None;
        }
        *count += 1;
        Some(ConnectionPermit { held: Some((self.clone(), key)) })
    }

    #[cfg(test)]
    fn open_for(&self, peer: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(&limit_key(peer)).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let Some((counter, key)) = self.held.take() else {
            return;
        };
        let mut open = counter.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_client_holds_at_most_the_cap_and_gets_slots_back() {
        let counter = ConnectionsPerIp::new(2, "10.0.0.0/8".parse().expect("proxies"));
        let first = counter.admit(ip("203.0.113.7"));
        let second = counter.admit(ip("203.0.113.7"));
        assert!(first.is_some() && second.is_some());
        assert!(counter.admit(ip("203.0.113.7")).is_none(), "the third is refused");
        assert!(counter.admit(ip("203.0.113.8")).is_some(), "another client is not");
        assert!(counter.admit(ip("::ffff:203.0.113.7")).is_none(), "an IPv4-mapped peer is the same client");
        drop(first);
        assert!(counter.admit(ip("203.0.113.7")).is_some(), "a closed connection frees its slot");
        drop(second);
        assert_eq!(counter.open_for(ip("203.0.113.7")), 0, "nothing left behind");
    }

    #[test]
    fn ipv6_is_counted_per_64_and_trusted_proxies_are_exempt() {
        let counter = ConnectionsPerIp::new(1, "10.0.0.0/8".parse().expect("proxies"));
        let _held = counter.admit(ip("2001:db8:1:2::1"));
        assert!(counter.admit(ip("2001:db8:1:2::ffff")).is_none());
        assert!(counter.admit(ip("2001:db8:1:3::1")).is_some());
        let proxied: Vec<_> = (0..5).map(|_| counter.admit(ip("10.1.2.3"))).collect();
        assert!(proxied.iter().all(Option::is_some));
        let unlimited = ConnectionsPerIp::new(0, TrustedProxies::default());
        let many: Vec<_> = (0..100).map(|_| unlimited.admit(ip("203.0.113.7"))).collect();
        assert!(many.iter().all(Option::is_some), "0 turns the cap off");
    }
}
