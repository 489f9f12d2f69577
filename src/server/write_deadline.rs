//! A connection that fails its writes once the client has accepted no bytes for a deadline:
//! a client that stops reading a response (a stream, say) is dropped instead of holding its
//! connection slot and the upstream call forever. The error ends the connection, which drops
//! the response body (a stream's upstream is then drained for its usage, bounded).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Armed while writes wait on the client; made at the first stall only.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline { inner, timeout, timer: None, stalled: false }
    }

    /// Passes `result` on, arming the deadline while the write waits and failing it when due.
    fn watch<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = false;
            return result;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            metrics::counter!("omi_client_write_timeouts_total").increment(1);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_reader_that_stops_reading_fails_the_writes_after_the_deadline() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = WriteDeadline::new(server, Duration::from_millis(100));
        // A client that reads keeps the connection alive however long the whole write takes.
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if client.read(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
            client
        });
        let started = std::time::Instant::now();
        for _ in 0..40 {
            server.write_all(&[7u8; 16]).await.expect("a reading client is written to");
        }
        assert!(started.elapsed() > Duration::from_millis(100), "the whole write outlasted one deadline");
        let _client = reader.await.expect("join");
        // The same client, no longer reading: the writes fail once the buffer is full.
        let started = std::time::Instant::now();
        let error = loop {
            if let Err(error) = server.write_all(&[7u8; 16]).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2), "{waited:?}");
    }
}
