//! Request firewall for the gateway: who is the client (behind trusted proxies),
//! where is it from, and may it send another request right now.
//!
//! Sub-modules only refer to each other through `super::`.

mod client_ip;
mod country;
mod limiter;
mod redis_limiter;

pub use client_ip::{ClientInfo, TrustedProxies, resolve_client};
pub use country::{Country, CountryPolicy};
pub use limiter::{Decision, LimitKey, LocalLimiter, LocalLimiterConfig, Quota, RateLimiter, limit_key};
pub use redis_limiter::{FallbackPolicy, LimiterHealth, RedisLimiter, RedisLimiterConfig};

/// Configuration errors; the request path itself never fails (Redis trouble
/// degrades to the fallback policy instead).
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("invalid trusted proxy entry {entry:?}: expected a CIDR (10.0.0.0/8), an IP address or `cloudflare`")]
    InvalidTrustedProxy {
        entry: String,
        #[source]
        source: ipnet::AddrParseError,
    },
    #[error("invalid country code {0:?}: expected two characters like `RU`, `T1` (Tor) or `XX` (unknown)")]
    InvalidCountry(String),
    #[error("a country allow-list must name at least one country")]
    EmptyAllowList,
    #[error("rate limit period must be at least 1 ms, got {0:?}")]
    InvalidPeriod(std::time::Duration),
    #[error("cannot set up the rate limiter's Redis client (check the URL)")]
    Redis(#[source] redis::RedisError),
}
