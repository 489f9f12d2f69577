//! The floor of omi's stack, for `bench/gateway.sh`: an axum server that forwards every
//! request to one upstream with omi's own pooled upstream client (`providers::client`,
//! hyper-util over rustls) and streams the answer back, with no auth, routing, events, metrics
//! or guards. What omi adds over the mock minus what this adds is what omi's own work costs;
//! what this adds is the stack's (axum, hyper, hyper-util, tokio).
//! `BARE_CLIENT=reqwest` forwards with reqwest instead, the client omi's hot path used before
//! (bench/README.md compares the two).
//!   cargo run --release --example bare_proxy -- 127.0.0.1:18003 http://127.0.0.1:18001

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use http_body_util::Full;
use omi::providers::client::UpstreamClient;
use std::sync::Arc;
use std::time::Duration;

enum Client {
    Omi(Box<UpstreamClient>),
    Reqwest(reqwest::Client),
}

#[derive(Clone)]
struct Upstream {
    client: Arc<Client>,
    base: String,
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let url = format!("{}{}", up.base, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut headers = parts.headers;
    headers.remove(axum::http::header::HOST);
    let answer = match &*up.client {
        Client::Omi(client) => {
            let mut request = http::Request::new(Full::new(body));
            *request.method_mut() = parts.method;
            *request.headers_mut() = headers;
            match url.parse() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}")).into_response(),
            }
            client.call(request).await.map(|answer| answer.map(Body::new)).map_err(|e| e.to_string())
        }
        Client::Reqwest(client) => {
            let sent = client.request(parts.method, url).headers(headers).body(body).send().await;
            sent.map(|answer| http::Response::from(answer).map(Body::new)).map_err(|e| e.to_string())
        }
    };
    match answer {
        Ok(answer) => answer.into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(base)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_proxy LISTEN_ADDR UPSTREAM_BASE_URL");
    };
    omi::install_crypto_provider();
    let client = match std::env::var("BARE_CLIENT").as_deref() {
        // The same pool settings as omi's upstream client.
        Ok("reqwest") => {
            Client::Reqwest(reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?)
        }
        _ => Client::Omi(Box::new(UpstreamClient::new(Duration::from_secs(10))?)),
    };
    let app = axum::Router::new().fallback(forward).with_state(Upstream { client: Arc::new(client), base });
    // TCP_NODELAY on accepted connections, as omi sets it: without it a streamed answer's
    // chunks wait on Nagle and the client's delayed ACK (about 40 ms each).
    let listener = tokio::net::TcpListener::bind(&listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
