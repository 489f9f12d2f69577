//! The HTTP server: the router (every route behind the firewall), the accept loop with its
//! connection limits (`accept.rs`, `write_deadline.rs`), and [`Server`], which starts the
//! application (`app`) and stops it gracefully. `omi serve` and the tests both start omi here.

mod accept;
mod write_deadline;

use crate::app::{AppState, ServeError, Tasks};
use crate::config::Config;
use crate::gateway::{self, StreamLimits};
use crate::web::error::ApiError;
use crate::web::{rate_limit, request_id};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Every route behind the firewall (routes added below its `layer` call would bypass it),
/// and everything behind `request_id::assign` (outermost).
pub fn router(app: Arc<AppState>) -> Router {
    let firewall = axum::middleware::from_fn_with_state(app.firewall.clone(), crate::firewall::guard);
    let mut api = Router::new()
        .route("/v1/chat/completions", post(gateway::handle::<gateway::Chat>))
        .route("/v1/embeddings", post(gateway::handle::<gateway::Embeddings>))
        .route("/v1/completions", post(gateway::handle::<gateway::Completions>))
        .route("/v1/responses", post(gateway::handle::<gateway::Responses>))
        .route("/v1/messages", post(gateway::handle::<gateway::Messages>))
        .route("/v1/models", get(gateway::list_models))
        .route("/v1/key", get(gateway::describe_key))
        .route("/v1/key/rotate", post(gateway::rotate_key))
        .layer(firewall.clone());
    // Outside the firewall, so that a browser can read its refusals too.
    if let Some(cors) = cors(&app.config.cors_origins) {
        api = api.layer(cors);
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(crate::admin::router())
        .merge(crate::portal::router())
        .merge(crate::billing::router())
        .fallback(not_found)
        .layer(firewall)
        .merge(api)
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(app)
}

/// Browsers may call `/v1/*` from the configured origins only; `None` (no CORS headers at
/// all, the default) when there are none. Origins were validated with the configuration.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    // `x-api-key`, `anthropic-version` and `anthropic-beta`: what Anthropic's SDKs send to `/v1/messages`.
    let allowed = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        gateway::BYOK_HEADER,
        request_id::HEADER,
        gateway::X_API_KEY,
        HeaderName::from_static("anthropic-version"),
        HeaderName::from_static("anthropic-beta"),
    ];
    let exposed = [
        request_id::HEADER,
        rate_limit::X_RATELIMIT_LIMIT,
        rate_limit::X_RATELIMIT_REMAINING,
        rate_limit::X_RATELIMIT_RESET,
        header::RETRY_AFTER,
    ];
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(allowed)
            .expose_headers(exposed)
            .max_age(Duration::from_secs(3600)),
    )
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn not_found() -> Response {
    ApiError::invalid_request("Unknown endpoint.").into_response_with(StatusCode::NOT_FOUND)
}

/// One serving lane per core, or `TOKIO_WORKER_THREADS` of them (the variable that also sizes
/// the main runtime's workers).
fn lane_count() -> usize {
    let cores = || std::thread::available_parallelism().map_or(1, usize::from);
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(cores)
}

async fn wait_for(task: JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(30), task).await.is_err() {
        tracing::warn!("a background task did not stop in time");
    }
}

/// A running gateway: its address, and the handle that stops it.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    tasks: Tasks,
    /// Ends the serving lanes' threads when the server goes: last, after `shutdown` closed the
    /// store, since what the lanes opened may serve it until then.
    _lanes: DropGuard,
}

impl Server {
    /// Migrates, wires the agents to the event stream, and starts serving on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, ServeError> {
        let shutdown = CancellationToken::new();
        let (state, tasks) = AppState::start(config, &shutdown).await?;
        let config = &state.config;
        let addr = listener.local_addr()?;
        let limits = accept::ConnectionLimits {
            max_connections: config.max_connections,
            per_ip: crate::firewall::ConnectionsPerIp::new(
                config.max_connections_per_ip,
                config.trusted_proxies.clone(),
            ),
            write_timeout: Duration::from_millis(config.client_write_timeout_ms),
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_header_bytes: config.max_header_bytes,
        };
        let lanes_released = CancellationToken::new();
        let lanes = accept::LaneSettings {
            count: lane_count(),
            grace: Duration::from_millis(config.shutdown_grace_ms),
            release: lanes_released.clone(),
        };
        let lanes = accept::Lanes::start(router(state.clone()), &limits, lanes)?;
        let task = crate::tasks::owned(accept::serve(listener, lanes, limits, shutdown.clone()));
        tracing::info!(%addr, database = state.store.backend(), "omi is serving");
        Ok(Server { addr, state, shutdown, task, tasks, _lanes: lanes_released.drop_guard() })
    }

    /// Stops accepting, lets in-flight requests finish (bounded), then drains the agents'
    /// queues so every booked event is written before returning.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        // Streams cut by the shutdown are read for their usage (bounded) before the books close.
        self.state.stream_drains.close();
        let drain_bound = StreamLimits::DEFAULT_DRAIN_TIME + Duration::from_secs(1);
        if tokio::time::timeout(drain_bound, self.state.stream_drains.wait()).await.is_err() {
            tracing::warn!("stream drains did not finish in time");
        }
        // The Sentinel scans what is queued and publishes its findings before the bus closes.
        self.state.sentinel.close();
        if let Some(worker) = self.tasks.sentinel_worker {
            wait_for(worker).await;
        }
        self.state.events.close();
        for task in self.tasks.background {
            wait_for(task).await;
        }
        self.state.store.close().await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
