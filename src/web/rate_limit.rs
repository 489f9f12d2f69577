//! A rate limiter's verdict on one request and the headers it puts on the response
//! (`X-RateLimit-*`, `Retry-After`). The firewall's limiters decide; errors and admitted
//! responses render it.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// The outcome of one check. `limit == 0` means no limit is configured; such a
/// decision always allows and [`Decision::write_headers`] writes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Units that could still be spent right now (after this request, if allowed).
    pub remaining: u32,
    /// Until the bucket is full again (`remaining == limit`).
    pub reset_after: Duration,
    /// Set on refusal: when the same request would pass. `None` on a refusal
    /// means it never can, because its cost exceeds the limit.
    pub retry_after: Option<Duration>,
}

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl Decision {
    pub(crate) const UNLIMITED: Decision =
        Decision { allowed: true, limit: 0, remaining: 0, reset_after: Duration::ZERO, retry_after: None };

    /// Writes `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
    /// (seconds, rounded up) and, on refusal, `Retry-After` (seconds, rounded
    /// up, at least 1, so clients never retry in a tight loop).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if self.limit == 0 {
            return;
        }
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(ceil_secs(self.reset_after)));
        if let Some(retry) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry));
        }
    }

    /// What `Retry-After` says on a refusal: seconds, rounded up, at least 1.
    /// `None` when the request was allowed or can never pass.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.filter(|_| !self.allowed).map(|retry| ceil_secs(retry).max(1))
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
