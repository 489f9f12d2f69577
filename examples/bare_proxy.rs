//! The floor of omi's stack, for `bench/gateway.sh`: an axum server that forwards every
//! request to one upstream with a pooled reqwest client and streams the answer back, with no
//! auth, routing, events, metrics or guards. What omi adds over the mock minus what this adds
//! is what omi's own work costs; what this adds is the stack's (axum, hyper, reqwest, tokio).
//!   cargo run --release --example bare_proxy -- 127.0.0.1:18003 http://127.0.0.1:18001

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
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
    match up.client.request(parts.method, url).headers(headers).body(body).send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            if let Some(h) = response.headers_mut() {
                h.extend(answer.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(base)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_proxy LISTEN_ADDR UPSTREAM_BASE_URL");
    };
    omi::install_crypto_provider();
    // The same pool settings as omi's upstream client.
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?;
    let app = axum::Router::new().fallback(forward).with_state(Upstream { client, base });
    // TCP_NODELAY on accepted connections, as omi sets it: without it a streamed answer's
    // chunks wait on Nagle and the client's delayed ACK (about 40 ms each).
    let listener = tokio::net::TcpListener::bind(&listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
