//! The firewall in front of the router: who is the client (behind trusted proxies), where
//! is it from, is its body within the route's limit, and may it send another request right
//! now — all decided before authentication and without the database. See `README.md` here.
//!
//! Sub-modules only refer to each other through `super::`.

mod body;
mod client_ip;
mod connections;
mod country;
mod guard;
mod key_limits;
mod limiter;
mod redis_limiter;

pub use body::BodyFailure;
pub use client_ip::{ClientInfo, TrustedProxies, resolve_client};
pub use connections::{ConnectionPermit, ConnectionsPerIp};
pub use country::CountryPolicy;
pub use guard::{BodyLimits, Firewall, FirewallSettings, LimiterSettings, Origin, guard};
pub use key_limits::{KeyLimit, RateLimits};
pub use limiter::{LimitKey, LocalLimiter, LocalLimiterConfig, Quota, RateLimiter, limit_key};
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
    #[error(transparent)]
    InvalidCountry(#[from] crate::domain::country::InvalidCountry),
    #[error("a country allow-list must name at least one country")]
    EmptyAllowList,
    #[error("set blocked countries or allowed countries, not both")]
    BlockAndAllowList,
    #[error("rate limit period must be at least 1 ms, got {0:?}")]
    InvalidPeriod(std::time::Duration),
    #[error("cannot set up the rate limiter's Redis client (check the URL)")]
    Redis(#[source] redis::RedisError),
}
