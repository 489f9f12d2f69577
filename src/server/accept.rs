//! The accept loop and the lanes that serve what it accepts, with the firewall's limits on
//! connections: at most `max_connections` open at once (the rest wait in the listen backlog),
//! at most `max_connections_per_ip` from one client (more are closed at once), request heads
//! bounded in size and in time, and responses written within `client_write_timeout_ms` of the
//! client's last read. HTTP/1.1 only: the proxies in front (Cloudflare, Render, Railway) speak
//! it to the origin, and with HTTP/1.1 the header timeout runs from a connection's first byte —
//! also while it idles between requests — so a slowloris client cannot hold a slot for long.
//!
//! A connection is served whole on one lane: a thread with a single-threaded runtime of its
//! own, one per core. A request then never waits for another thread to be woken (a
//! work-stealing runtime's second worker is woken to look for work that the first then does:
//! bench/README.md, "The two runtime workers wait for each other"), and the agents' background
//! work runs on the main
//! runtime, not between a lane's requests. Each new connection goes to the lane with the fewest
//! open, so that long-lived keep-alive connections spread evenly.

use super::write_deadline::WriteDeadline;
use crate::firewall::{ConnectionPermit, ConnectionsPerIp};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
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

/// How the lanes serve, and what they finish before their threads end.
pub struct LaneSettings {
    pub count: usize,
    /// In-flight requests get this long to finish once accepting stops; then they are cut.
    pub grace: Duration,
    /// A lane's runtime runs until this is cancelled, after its connections are closed: what
    /// lives on it serves the rest of the shutdown (a stream cut by it, read on for its usage;
    /// a database connection the lane opened, which the final writes may use).
    pub release: CancellationToken,
}

/// Serves until `stop`; then stops accepting, gives in-flight requests `grace` to finish,
/// and cuts whatever is left. Returns once every lane's connections are closed.
pub async fn serve(listener: TcpListener, lanes: Lanes, limits: ConnectionLimits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        // Closed at once (freeing the slot): one client may not hold every connection.
        let Some(permit) = limits.per_ip.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match stream.into_std() {
            Ok(stream) => lanes.hand_over(stream, peer, (slot, permit)),
            Err(e) => tracing::warn!(error = %e, %peer, "cannot hand an accepted connection to a lane"),
        }
    }
    drop(listener);
    lanes.finish().await;
}

/// An accepted connection on its way to a lane, with what it holds while open: the limits'
/// slots, and its place in its lane's count.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    held: (OwnedSemaphorePermit, ConnectionPermit, Counted),
}

/// One of a lane's open connections, counted until dropped.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The threads that serve connections.
pub struct Lanes(Vec<Lane>);

struct Lane {
    /// Unbounded, but no fuller than the accept loop's connection slots.
    incoming: mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
    /// Sent when the lane's connections are all closed.
    closed: oneshot::Receiver<()>,
}

impl Lanes {
    /// Starts `settings.count` lanes (at least one), each serving `router`.
    pub fn start(router: Router, limits: &ConnectionLimits, settings: LaneSettings) -> std::io::Result<Lanes> {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes);
        let settings = Arc::new(settings);
        let lanes = (0..settings.count.max(1)).map(|index| {
            let (incoming, connections) = mpsc::unbounded_channel();
            let (closed_tx, closed) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let lane = LaneLoop {
                router: router.clone(),
                http: http.clone(),
                write_timeout: limits.write_timeout,
                settings: settings.clone(),
            };
            std::thread::Builder::new().name(format!("omi-lane-{index}")).spawn(move || {
                crate::lane::enter(index);
                runtime.block_on(lane.run(connections, closed_tx));
            })?;
            Ok(Lane { incoming, open: Arc::default(), closed })
        });
        let lanes = lanes.collect::<std::io::Result<_>>();
        if lanes.is_err() {
            // Let the lanes already started end: their channels close as `lanes` is dropped.
            settings.release.cancel();
        }
        Ok(Lanes(lanes?))
    }

    /// To the lane with the fewest open connections.
    fn hand_over(
        &self,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        (slot, permit): (OwnedSemaphorePermit, ConnectionPermit),
    ) {
        let Some(lane) = self.0.iter().min_by_key(|lane| lane.open.load(Ordering::Relaxed)) else {
            return;
        };
        let held = (slot, permit, Counted::new(&lane.open));
        if lane.incoming.send(Accepted { stream, peer, held }).is_err() {
            tracing::error!(%peer, "a serving lane has stopped; connection closed");
        }
    }

    /// Stops handing over connections, and waits until every lane's are closed.
    async fn finish(self) {
        for Lane { incoming, closed, .. } in self.0 {
            drop(incoming);
            // An error: the lane's thread is gone, and its connections with it.
            let _ = closed.await;
        }
    }
}

struct LaneLoop {
    router: Router,
    http: http1::Builder,
    write_timeout: Duration,
    settings: Arc<LaneSettings>,
}

impl LaneLoop {
    async fn run(self, mut incoming: mpsc::UnboundedReceiver<Accepted>, closed: oneshot::Sender<()>) {
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        while let Some(Accepted { stream, peer, held }) = incoming.recv().await {
            while connections.try_join_next().is_some() {}
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, "a lane cannot take a connection");
                    continue;
                }
            };
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            });
            let io = TokioIo::new(WriteDeadline::new(stream, self.write_timeout));
            let connection = graceful.watch(self.http.serve_connection(io, service));
            connections.spawn(async move {
                // Header timeouts and clients that vanish end up here; neither is the server's fault.
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, %peer, "connection closed with an error");
                }
                drop(held);
            });
        }
        if tokio::time::timeout(self.settings.grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
        connections.shutdown().await;
        let _ = closed.send(());
        self.settings.release.cancelled().await;
    }
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
        let lanes = Lanes::start(router, &limits, settings(2)).expect("lanes");
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(serve(listener, lanes, limits, stop.clone()));
        (addr, stop)
    }

    fn settings(count: usize) -> LaneSettings {
        LaneSettings { count, grace: Duration::from_millis(100), release: CancellationToken::new() }
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

    /// Sends a request on a kept-alive connection and reads the answer's body (by its length).
    async fn ask(client: &mut tokio::net::TcpStream, path: &str) -> String {
        client.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.expect("request");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let read = client.read(&mut buf).await.expect("answer");
            assert!(read > 0, "closed before the answer: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..read]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .expect("a length");
            if body.len() >= length {
                return body.to_owned();
            }
        }
    }

    #[tokio::test]
    async fn a_connection_stays_on_one_lane_and_new_ones_go_to_the_least_busy() {
        let router = Router::new()
            .route("/lane", get(|| async { std::thread::current().name().unwrap_or("unnamed").to_owned() }));
        let (addr, stop) = start(limits(16, Duration::from_secs(5)), router).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // Answered before the next connects, so the lanes' counts are settled.
            let lane = ask(&mut client, "/lane").await;
            clients.push((client, lane));
        }
        for (client, lane) in &mut clients {
            for _ in 0..3 {
                assert_eq!(&ask(client, "/lane").await, lane, "every request of a connection on its lane");
            }
        }
        let mut lanes: Vec<&str> = clients.iter().map(|(_, lane)| lane.as_str()).collect();
        lanes.sort_unstable();
        assert_eq!(lanes, ["omi-lane-0", "omi-lane-0", "omi-lane-1", "omi-lane-1"], "two connections a lane");
        // A lane freed of its connections takes the next one.
        let closed = clients.iter().position(|(_, lane)| lane == "omi-lane-1").expect("one on lane 1");
        drop(clients.remove(closed));
        let mut next = None;
        for _ in 0..50 {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            if ask(&mut client, "/lane").await == "omi-lane-1" {
                next = Some(client);
                break;
            }
            // The closed connection may not have been noticed yet: this one went to lane 0.
            drop(client);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(next.is_some(), "the lane with fewer connections takes the next one");
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
