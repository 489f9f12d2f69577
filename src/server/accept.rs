//! The accept loop, with the firewall's limits on connections: at most `max_connections`
//! open at once (the rest wait in the listen backlog), at most `max_connections_per_ip` from
//! one client (more are closed at once), request heads bounded in size and in time, and
//! responses written within `client_write_timeout_ms` of the client's last read. HTTP/1.1
//! only: the proxies in front (Cloudflare, Render, Railway) speak it to the origin, and with
//! HTTP/1.1 the header timeout runs from a connection's first byte —
//! also while it idles between requests — so a slowloris client cannot hold a slot for long.

use super::write_deadline::WriteDeadline;
use crate::firewall::ConnectionsPerIp;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub struct ConnectionLimits {
    pub max_connections: usize,
    pub per_ip: Arc<ConnectionsPerIp>,
    /// A client that accepts no response bytes for this long is disconnected.
    pub write_timeout: Duration,
    /// For a request's head to arrive, and for an idle keep-alive connection's next one.
    pub header_read_timeout: Duration,
    /// A request head (request line and headers) larger than this gets 431.
    pub max_header_bytes: usize,
}

/// Serves until `stop`; then stops accepting, gives in-flight requests `grace` to finish,
/// and cuts whatever is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        // A slot first, so a full server leaves new connections in the kernel's backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        // Closed at once (freeing the slot): one client may not hold every connection.
        let Some(permit) = limits.per_ip.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            // Header timeouts and clients that vanish end up here; neither is the server's fault.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
            drop((slot, permit));
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::TrustedProxies;
    use axum::routing::get;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Tells the test when the response body is dropped (the connection gave up on it).
    struct DroppedSignal(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for DroppedSignal {
        fn drop(&mut self) {
            if let Some(signal) = self.0.take() {
                let _ = signal.send(());
            }
        }
    }

    async fn start(limits: ConnectionLimits, router: Router) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(serve(listener, router, limits, stop.clone(), Duration::from_millis(100)));
        (addr, stop)
    }

    fn limits(per_ip: usize, write_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 16,
            per_ip: ConnectionsPerIp::new(per_ip, TrustedProxies::default()),
            write_timeout,
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 8192,
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_a_stream_is_dropped_after_the_write_deadline() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
        let signal = Arc::new(std::sync::Mutex::new(Some(DroppedSignal(Some(dropped_tx)))));
        let router = Router::new().route(
            "/endless",
            get(move || {
                let guard = signal.lock().ok().and_then(|mut s| s.take());
                async move {
                    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                    let endless = futures_util::stream::repeat(chunk).map(move |c| {
                        let _held = &guard;
                        Ok::<_, std::io::Error>(c)
                    });
                    Body::from_stream(endless)
                }
            }),
        );
        let (addr, stop) = start(limits(4, Duration::from_millis(300)), router).await;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut client = socket.connect(addr).await.expect("connect");
        client.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
        let mut head = [0u8; 1024];
        assert!(client.read(&mut head).await.expect("response starts") > 0);
        // The client now reads nothing more; the server's buffers fill and its writes wait.
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), dropped_rx).await.expect("dropped in time").expect("signal");
        assert!(started.elapsed() >= Duration::from_millis(300), "not before the deadline: {:?}", started.elapsed());
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_per_ip_cap_are_closed_at_once() {
        let router = Router::new().route("/ok", get(|| async { "ok" }));
        let (addr, stop) = start(limits(2, Duration::from_secs(5)), router).await;
        let held = [
            tokio::net::TcpStream::connect(addr).await.expect("one"),
            tokio::net::TcpStream::connect(addr).await.expect("two"),
        ];
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("the kernel accepts");
        let _ = third.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "the third connection is closed unanswered: {read:?}");
        drop(held);
        // The slots come back once the connections close.
        let served = get_ok(addr).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        stop.cancel();
    }

    async fn get_ok(addr: std::net::SocketAddr) -> String {
        for _ in 0..50 {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            client.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("request");
            let mut answer = String::new();
            if client.read_to_string(&mut answer).await.is_ok() && !answer.is_empty() {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        String::new()
    }
}
