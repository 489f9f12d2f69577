//! The request body as the firewall hands it on: capped at the route's size limit and
//! bounded by a deadline, so a client can neither send too much nor trickle bytes to hold
//! a connection. The first violation is reported once, whichever handler reads the body.
//!
//! A body refused before it was read (a 413 on its declared length, a 401 on a bad key) is
//! still arriving when the answer leaves. Closing the connection then resets it, and a
//! client still writing (hyper's, among others) reports the reset, not the answer. So the
//! rest is read and thrown away, as far as `LINGER_BYTES` and the body deadline allow.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::{Instant, Sleep};

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

/// The most of a refused body read after the refusal. Past it the connection is closed (and
/// its client may see a reset): reading more would let a client make the server take in
/// unbounded uploads it refused.
pub(super) const LINGER_BYTES: u64 = 4 * 1024 * 1024;

/// Reads and throws away what is left of `body`, in the background, until it ends, fails,
/// exceeds `LINGER_BYTES` or `until` passes; then the connection is kept or closed as HTTP
/// allows. Outside a runtime (nothing left to serve the connection) the body is just dropped.
pub(super) fn discard_rest<B>(body: B, until: Instant)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let discard = async {
            let mut body = std::pin::pin!(body);
            let mut read = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |data| data.remaining() as u64);
                if read > LINGER_BYTES {
                    return;
                }
            }
        };
        // The deadline passing is a client too slow to wait for: dropping the body closes it.
        let _ = tokio::time::timeout_at(until, discard).await;
    });
}

pub(super) struct GuardedBody {
    // `Limited`'s own error type is what axum's extractors turn into 413.
    inner: Limited<Body>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Taken on the first violation, so it is reported once.
    origin: Option<Origin>,
    /// Read to its end or failed: nothing left for `Drop` to discard.
    done: bool,
    /// False when the client waits for `100 Continue` before sending: reading would ask for the
    /// body the handler refused.
    discard_if_unread: bool,
}

impl GuardedBody {
    pub(super) fn new(
        body: Body,
        limit: usize,
        timeout: Duration,
        origin: Origin,
        discard_if_unread: bool,
    ) -> GuardedBody {
        GuardedBody {
            inner: Limited::new(body, limit),
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            origin: Some(origin),
            done: false,
            discard_if_unread,
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
                this.done = true;
                if e.is::<LengthLimitError>() {
                    this.report(FirewallKind::TooLarge);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                this.done = true;
                this.report(FirewallKind::TooSlow);
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
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

/// A handler that answered without reading the body (a refused key, say) leaves the rest to
/// be discarded, within the limit and deadline it had.
impl Drop for GuardedBody {
    fn drop(&mut self) {
        if self.discard_if_unread && !self.done && !self.inner.is_end_stream() {
            let rest = std::mem::replace(&mut self.inner, Limited::new(Body::empty(), 0));
            discard_rest(rest, self.deadline.deadline());
        }
    }
}
