//! The request body as the firewall hands it on: capped at the route's size limit and
//! bounded by a deadline, so a client can neither send too much nor trickle bytes to hold
//! a connection. The first violation is reported once, whichever handler reads the body.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{LengthLimitError, Limited};
use tokio::time::Sleep;

use super::guard::Origin;
use crate::events::FirewallKind;
use crate::web::error_chain::causes;

/// The body did not arrive completely before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// Why reading a request body failed, for the handler's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge,
    TooSlow,
    /// The client went away or sent a malformed body.
    Broken,
}

impl BodyFailure {
    /// Classifies an error from reading a guarded body (through any number of wrappers).
    pub fn of(error: &(dyn StdError + 'static)) -> BodyFailure {
        for e in causes(error) {
            if e.is::<LengthLimitError>() {
                return BodyFailure::TooLarge;
            }
            if e.is::<BodyTimeout>() {
                return BodyFailure::TooSlow;
            }
        }
        BodyFailure::Broken
    }
}

pub(super) struct GuardedBody {
    // `Limited`'s own error type is what axum's extractors turn into 413.
    inner: Limited<Body>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Taken on the first violation, so it is reported once.
    origin: Option<Origin>,
}

impl GuardedBody {
    pub(super) fn new(body: Body, limit: usize, timeout: Duration, origin: Origin) -> GuardedBody {
        GuardedBody {
            inner: Limited::new(body, limit),
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            origin: Some(origin),
        }
    }

    fn report(&mut self, kind: FirewallKind) {
        if let Some(origin) = self.origin.take() {
            origin.report(kind, None);
        }
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                if e.is::<LengthLimitError>() {
                    this.report(FirewallKind::TooLarge);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                this.report(FirewallKind::TooSlow);
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
