//! The HTTP client of the calls to providers, the hot path: hyper-util's pooled client over
//! rustls (the platform's roots, as reqwest's), HTTP/2 where the upstream offers it by ALPN.
//! Not reqwest, whose layers cost as much as the rest of a bare proxy: it re-parses the URL
//! for its redirect policy, clones the request for its retry policy and matches proxies on
//! every call (94k instructions per request through a bare axum proxy with reqwest, 53k with
//! this client, `bench/README.md`). The other outbound calls (the judge, Slack, n8n, Postmark,
//! `omi doctor`) keep reqwest: they are few, and read nothing on the request path.
//!
//! Like reqwest, it goes through the proxy that `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` names
//! for an upstream (`NO_PROXY` honoured), by a CONNECT tunnel for `http://` upstreams too, with
//! the proxy URL's credentials as `Proxy-Authorization`; the proxy itself is reached over plain
//! TCP. It decompresses nothing (reqwest had no decompression feature enabled either) and
//! follows no redirect (neither did omi's reqwest client: a 3xx is an answer like any other).

use crate::web::error_chain::{causes, error_chain};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls_platform_verifier::Verifier;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream's answer: status and headers, the body still to be read.
pub type UpstreamResponse = http::Response<hyper::body::Incoming>;

/// A request to an upstream: its body is sent whole (it was encoded before the call).
pub type UpstreamRequest = http::Request<Full<Bytes>>;

/// How long an idle pooled connection is kept, as reqwest's default.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host: enough for a c=1,000 burst to reuse them.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("the TLS configuration of the upstream client: {0}")]
pub struct ClientBuildError(#[from] rustls::Error);

type Pool = Client<HttpsConnector<Route>, Full<Bytes>>;

/// A pooled client; clones share the pools. Each serving lane has a pool of its own (made on
/// its first call): a pooled connection is read by a task on the runtime that opened it, and
/// a lane that used another lane's connection would wake that lane's thread for every chunk
/// of the answer. Calls from outside the lanes share one pool.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: HttpsConnector<Route>,
    shared: Pool,
    lanes: Arc<[OnceLock<Pool>]>,
}

/// Opens the TCP stream to an upstream: directly, or through the tunnel of the proxy the
/// environment names for it. Called per new connection, not per request (they are pooled).
#[derive(Clone)]
struct Route {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Service<http::Uri> for Route {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, upstream: http::Uri) -> Self::Future {
        let Some(proxy) = self.proxies.intercept(&upstream) else {
            let connecting = self.tcp.call(upstream);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.tcp.clone());
        if let Some(credentials) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(credentials.clone());
        }
        // The tunnel asks for port 443 when the URI names none.
        let upstream = with_default_port(upstream);
        Box::pin(async move { tunnel.call(upstream).await.map_err(Into::into) })
    }
}

/// `upstream` with its port written out when it has none (80 for `http://`, 443 otherwise).
fn with_default_port(upstream: http::Uri) -> http::Uri {
    let (Some(host), None) = (upstream.host(), upstream.port_u16()) else { return upstream };
    let port = if upstream.scheme() == Some(&http::uri::Scheme::HTTP) { 80 } else { 443 };
    let authority = format!("{host}:{port}");
    let mut parts = upstream.clone().into_parts();
    match authority.parse() {
        Ok(authority) => {
            parts.authority = Some(authority);
            http::Uri::from_parts(parts).unwrap_or(upstream)
        }
        Err(_) => upstream,
    }
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient")
    }
}

/// Why a call brought no answer: the connection, not the upstream. Shown with its causes
/// ("client error (Connect): tcp connect error: Connection refused"): hyper-util's own
/// message says only which stage failed.
#[derive(Debug)]
pub struct CallError(hyper_util::client::legacy::Error);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_chain(&self.0))
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// The connection was not made within the connect timeout (or another I/O timeout).
    pub fn is_timeout(&self) -> bool {
        timed_out(&self.0)
    }
}

/// Whether an I/O timeout is among the causes of `error`.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut))
}

impl UpstreamClient {
    /// No redirect is followed, connections get `TCP_NODELAY` (a streamed answer's chunks
    /// would otherwise wait on Nagle and the delayed ACK), and a connection not made within
    /// `connect_timeout` fails the call.
    pub fn new(connect_timeout: Duration) -> Result<UpstreamClient, ClientBuildError> {
        UpstreamClient::build(connect_timeout, [], Matcher::from_env())
    }

    /// Trusts `extra_roots` besides the platform's (the tests' own certificate authority) and
    /// goes through the `proxies` (the tests' own, not the environment's).
    fn build(
        connect_timeout: Duration,
        extra_roots: impl IntoIterator<Item = CertificateDer<'static>>,
        proxies: Matcher,
    ) -> Result<UpstreamClient, ClientBuildError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Route { tcp, proxies: Arc::new(proxies) });
        let shared = pool(connector.clone());
        let lanes = (0..crate::lane::MAX_LANES).map(|_| OnceLock::new()).collect();
        Ok(UpstreamClient { connector, shared, lanes })
    }

    /// Sends `request`; answered when the status and headers arrived.
    pub async fn call(&self, request: UpstreamRequest) -> Result<UpstreamResponse, CallError> {
        self.pool().request(request).await.map_err(CallError)
    }

    /// The calling lane's pool, or the shared one.
    fn pool(&self) -> &Pool {
        match crate::lane::current().and_then(|lane| self.lanes.get(lane)) {
            Some(own) => own.get_or_init(|| pool(self.connector.clone())),
            None => &self.shared,
        }
    }
}

fn pool(connector: HttpsConnector<Route>) -> Pool {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn calls_a_plain_http_upstream_and_reads_its_answer() {
        let (_mock, base, _) = crate::mock_upstream::test_support::spawn().await;
        let client = UpstreamClient::build(Duration::from_secs(2), [], no_proxy()).expect("client");
        let answer = client.call(chat_request(&base)).await.expect("answer");
        assert_eq!(answer.status(), http::StatusCode::OK);
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(answer["object"], "chat.completion");
    }

    /// A TLS upstream on localhost offering `alpn`, answering each request with the HTTP version
    /// it came in; returns its port and the certificate to trust.
    async fn tls_upstream(alpn: &[&[u8]]) -> (u16, CertificateDer<'static>) {
        use hyper_util::rt::TokioIo;
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else { continue };
                let answer = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", request.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(version))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), answer)
                    .await;
            }
        });
        (port, cert.der().clone())
    }

    fn get(port: u16) -> UpstreamRequest {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = format!("https://localhost:{port}/").parse().expect("uri");
        request
    }

    #[tokio::test]
    async fn speaks_tls_with_http2_where_the_upstream_offers_it_and_http1_where_not() {
        for (alpn, version) in [(&[&b"h2"[..], b"http/1.1"][..], "HTTP/2.0"), (&[&b"http/1.1"[..]][..], "HTTP/1.1")] {
            let (port, ca) = tls_upstream(alpn).await;
            let client = UpstreamClient::build(Duration::from_secs(2), [ca], no_proxy()).expect("client");
            let answer = client.call(get(port)).await.expect("answer");
            let body = answer.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], version.as_bytes(), "offered {alpn:?}");
        }
    }

    #[tokio::test]
    async fn an_upstream_certificate_outside_the_trusted_roots_is_refused() {
        let (port, _) = tls_upstream(&[b"http/1.1"]).await;
        let client = UpstreamClient::build(Duration::from_secs(2), [], no_proxy()).expect("client");
        let error = client.call(get(port)).await.expect_err("untrusted");
        let causes = error.to_string();
        assert!(causes.contains("invalid peer certificate"), "refused for its certificate: {causes}");
    }

    /// A plain HTTP upstream that answers each request with the port its connection came from.
    async fn port_echo() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let answer = hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        peer.port().to_string(),
                    ))))
                });
                #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), answer));
            }
        });
        format!("http://{addr}/")
    }

    /// A caller on a thread of its own (a lane's, when `lane` is set) that makes two calls in a
    /// row and returns their client ports, its runtime kept running (its pooled connection
    /// alive, for others to reuse if they shared its pool) until `running` changes or closes.
    async fn caller(
        client: &UpstreamClient,
        url: &str,
        lane: Option<usize>,
        mut running: tokio::sync::watch::Receiver<()>,
    ) -> [String; 2] {
        let (client, url) = (client.clone(), url.to_owned());
        let (ports_tx, ports_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            if let Some(lane) = lane {
                crate::lane::enter(lane);
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let mut ports = Vec::new();
                for _ in 0..2 {
                    let mut request = http::Request::new(Full::new(Bytes::new()));
                    *request.uri_mut() = url.parse().expect("uri");
                    let answer = client.call(request).await.expect("answer");
                    let body = answer.into_body().collect().await.expect("body").to_bytes();
                    ports.push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = ports_tx.send([ports[0].clone(), ports[1].clone()]);
                let _ = running.changed().await;
            });
        });
        ports_rx.await.expect("the caller's ports")
    }

    #[tokio::test]
    async fn each_lane_reuses_connections_of_its_own() {
        let url = port_echo().await;
        let client = UpstreamClient::build(Duration::from_secs(2), [], no_proxy()).expect("client");
        let (done, running) = tokio::sync::watch::channel(());
        // One after the other, the earlier callers still running: had they one pool, a later
        // caller would take an earlier one's idle connection.
        let [lane0, again0] = caller(&client, &url, Some(0), running.clone()).await;
        let [lane1, again1] = caller(&client, &url, Some(1), running.clone()).await;
        let [outside, again_outside] = caller(&client, &url, None, running).await;
        drop(done);
        assert_eq!((&lane0, &lane1, &outside), (&again0, &again1, &again_outside), "each reuses its connection");
        assert!(lane0 != lane1 && lane0 != outside && lane1 != outside, "three pools: {lane0} {lane1} {outside}");
    }

    fn no_proxy() -> Matcher {
        Matcher::builder().build()
    }

    /// A CONNECT proxy on localhost that tunnels to whatever it is asked and keeps each
    /// request's head; returns its port and the heads.
    async fn connect_proxy() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = heads.clone();
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut client = BufReader::new(client);
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    if client.read_line(&mut head).await.unwrap_or(0) == 0 {
                        break;
                    }
                }
                seen.lock().expect("heads").push(head.clone());
                let Some(target) = head.strip_prefix("CONNECT ").and_then(|rest| rest.split(' ').next()) else {
                    continue;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else { continue };
                let mut client = client.into_inner();
                if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            }
        });
        (port, heads)
    }

    fn chat_request(base: &str) -> UpstreamRequest {
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let mut request = http::Request::new(Full::new(Bytes::from_static(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("{base}/chat/completions").parse().expect("uri");
        request.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        request.headers_mut().insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer sk-test"));
        request
    }

    #[tokio::test]
    async fn goes_through_the_proxy_named_for_the_upstream_by_a_tunnel_with_its_credentials() {
        let (_mock, base, _) = crate::mock_upstream::test_support::spawn().await;
        let (proxy, heads) = connect_proxy().await;
        let proxies = Matcher::builder().all(format!("http://omi:s3cret@127.0.0.1:{proxy}")).build();
        let client = UpstreamClient::build(Duration::from_secs(2), [], proxies).expect("client");
        let answer = client.call(chat_request(&base)).await.expect("answer through the proxy");
        assert_eq!(answer.status(), http::StatusCode::OK);
        let heads = heads.lock().expect("heads").clone();
        let upstream = base.trim_start_matches("http://").trim_end_matches("/v1");
        assert!(heads.len() == 1 && heads[0].starts_with(&format!("CONNECT {upstream} HTTP/1.1")), "{heads:?}");
        // base64("omi:s3cret")
        assert!(heads[0].contains("Proxy-Authorization: Basic b21pOnMzY3JldA=="), "{heads:?}");
    }

    #[tokio::test]
    async fn an_upstream_in_no_proxy_is_called_directly() {
        let (_mock, base, _) = crate::mock_upstream::test_support::spawn().await;
        let (proxy, heads) = connect_proxy().await;
        let proxies = Matcher::builder().all(format!("http://127.0.0.1:{proxy}")).no("127.0.0.1").build();
        let client = UpstreamClient::build(Duration::from_secs(2), [], proxies).expect("client");
        let answer = client.call(chat_request(&base)).await.expect("answer");
        assert_eq!(answer.status(), http::StatusCode::OK);
        assert!(heads.lock().expect("heads").is_empty(), "the proxy was not asked");
    }

    #[test]
    fn a_tunnel_is_asked_for_the_schemes_default_port() {
        let port = |uri: &str| with_default_port(uri.parse().expect("uri")).port_u16();
        assert_eq!(port("http://vllm.internal/v1/chat/completions"), Some(80));
        assert_eq!(port("https://api.openai.com/v1/chat/completions"), Some(443));
        assert_eq!(port("http://127.0.0.1:8000/v1"), Some(8000));
    }

    #[tokio::test]
    async fn a_refused_connection_is_no_timeout_and_a_timed_out_cause_is_one() {
        let client = UpstreamClient::build(Duration::from_secs(2), [], no_proxy()).expect("client");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = listener.local_addr().expect("addr");
        drop(listener);
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = format!("http://{closed}/").parse().expect("uri");
        let error = client.call(request).await.expect_err("refused");
        assert!(!error.is_timeout(), "{error:?}");
        assert!(error.to_string().contains("Connection refused"), "the cause is said: {error}");

        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Connect(#[source] std::io::Error);
        let timeout = Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"));
        assert!(timed_out(&timeout));
        assert!(!timed_out(&Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))));
    }
}
