//! The HTTP surface: the OpenAI-compatible API, health, metrics, and the admin API mounted
//! from `admin`. [`Server`] runs it with graceful shutdown; `omi serve` and the tests both
//! start the gateway through it.

pub mod anthropic;
mod auth;
mod chat;
pub mod error;
pub mod guard;
mod meter;
pub mod providers;
pub mod request_id;
mod serve;
pub mod shield;
mod sse;
pub(crate) mod stream;
mod upstream_body;
pub(crate) mod usage;
mod write_deadline;

use crate::agents::sentinel::{self, Sentinel};
use crate::billing::mailer::{EmailAddress, Mailer};
use crate::billing::outbox::{OutboxSignal, Worker};
use crate::billing::prices::PriceTable;
use crate::config::{Config, ConfigError};
use crate::events::EventBus;
use crate::firewall::{Firewall, FirewallError, Origin};
use crate::keys::KeyVerifier;
use crate::store::Store;
use crate::telemetry;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use guard::Guard;
use providers::Providers;
use request_id::RequestId;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub verifier: Arc<KeyVerifier>,
    pub providers: Providers,
    pub prices: PriceTable,
    pub http: reqwest::Client,
    pub events: EventBus,
    pub outbox: Arc<OutboxSignal>,
    pub guard: Arc<Guard>,
    pub sentinel: Arc<Sentinel>,
    pub firewall: Arc<Firewall>,
    pub meters: meter::MeterMetrics,
    /// Streams whose client left, still read for their usage; shutdown waits for them.
    pub stream_drains: TaskTracker,
}

impl AppState {
    /// A model as a metric label or alert subject: its name (without a `provider/` prefix)
    /// when this gateway lists or prices it, else `other`, so callers cannot grow the set.
    pub fn model_label<'a>(&'a self, model: &'a str) -> &'a str {
        let name = self.providers.route(model).map_or(model, |route| route.upstream_model);
        if self.providers.lists(name) || self.prices.get(name).is_some() { name } else { "other" }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("email configuration: {0}")]
    Email(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no randomness for the shield's canary: {0}")]
    Random(String),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// Every route behind the firewall (routes added below its `layer` call would bypass it),
/// and everything behind `request_id::assign` (outermost).
pub fn router(app: Arc<AppState>) -> Router {
    let firewall = axum::middleware::from_fn_with_state(app.firewall.clone(), crate::firewall::guard);
    let mut api = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(list_models))
        .layer(firewall.clone());
    // Outside the firewall, so that a browser can read its refusals too.
    if let Some(cors) = cors(&app.config.cors_origins) {
        api = api.layer(cors);
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(crate::admin::router())
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
    let allowed =
        [header::AUTHORIZATION.as_str(), header::CONTENT_TYPE.as_str(), chat::BYOK_HEADER, request_id::HEADER];
    let exposed =
        [request_id::HEADER, "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"];
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(allowed.map(header::HeaderName::from_static))
            .expose_headers(exposed.map(header::HeaderName::from_static))
            .max_age(Duration::from_secs(3600)),
    )
}

async fn list_models(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
) -> Response {
    let mut meter = meter::Meter::start(app.events.clone(), &app.meters, request_id, "models", origin.client.ip);
    match auth::admit(&app, &headers, &origin, &mut meter).await {
        Err(error) => {
            meter.finish(error.status.as_u16(), Some(error.code));
            error.into_response()
        }
        Ok(_) => {
            meter.finish(200, None);
            let data: Vec<_> = app
                .providers
                .listed_models()
                .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
    }
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
    error::ApiError::invalid_request("Unknown endpoint.").into_response_with(StatusCode::NOT_FOUND)
}

fn build_mailer(config: &Config, http: reqwest::Client) -> Result<Mailer, ServeError> {
    let configured = config.postmark_server_token.is_some() || config.smtp_url.is_some();
    let from = match (&config.email_from, configured) {
        (Some(from), _) => EmailAddress::parse(from).map_err(|e| ServeError::Email(format!("OMI_EMAIL_FROM: {e}")))?,
        (None, true) => return Err(ServeError::Email("OMI_EMAIL_FROM is required to send key emails".into())),
        (None, false) => return Ok(Mailer::Disabled),
    };
    Mailer::from_settings(
        config.postmark_server_token.clone(),
        config.postmark_api_url.as_deref(),
        config.smtp_url.clone(),
        from,
        http,
    )
    .map_err(|e| ServeError::Email(e.to_string()))
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
    /// Stopped before the event bus closes: it publishes its findings there.
    sentinel_worker: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// Migrates, wires the agents to the event stream, and starts serving on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, ServeError> {
        let config = Arc::new(config);
        // Installed before the first request so no early measurement is lost.
        telemetry::metrics_handle();
        let store = Store::connect(secrecy::ExposeSecret::expose_secret(&config.database_url)).await?;
        store.migrate().await?;
        let shutdown = CancellationToken::new();
        let verifier = Arc::new(KeyVerifier::new(store.clone()).await?);
        let prices = PriceTable::new(&config.prices);
        let providers = Providers::from_config(&config, &PriceTable::built_in_models(), |var| std::env::var(var).ok())?;
        // One client for every outbound call (upstreams, the judge, Slack, n8n, Postmark). It
        // follows no redirect: a redirect would re-post the body (the operator's system prompt,
        // a key, a signed event) to wherever the 3xx points; a 3xx is an answer like any other.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.upstream_connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ServeError::Http(e.without_url().to_string()))?;
        let mailer = Arc::new(build_mailer(&config, http.clone())?);
        let guard = Arc::new(Guard::from_config(&config)?);
        let events = EventBus::default();
        let firewall = Arc::new(Firewall::from_config(&config, events.clone()).await?);
        let outbox = Arc::new(OutboxSignal::default());
        let (sentinel, sentinel_tasks) = Sentinel::start(
            &config,
            sentinel::Deps {
                store: store.clone(),
                events: events.clone(),
                verifier: verifier.clone(),
                guard: guard.clone(),
                http: http.clone(),
                prices: prices.clone(),
            },
        );
        let state = Arc::new(AppState {
            config: config.clone(),
            store,
            verifier,
            providers,
            prices,
            http,
            events,
            outbox: outbox.clone(),
            guard,
            sentinel,
            firewall,
            meters: meter::MeterMetrics::default(),
            stream_drains: TaskTracker::new(),
        });

        let mut background = vec![state.verifier.spawn_sync(Duration::from_secs(1), shutdown.clone())];
        background.push(sentinel_tasks.recorder);
        background.push(crate::keys::activity::spawn(&state.events, state.store.clone()));
        background.push(crate::billing::spawn_lifecycle(state.clone(), Duration::from_secs(30), shutdown.clone()));
        let worker = Worker {
            store: state.store.clone(),
            mailer,
            events: state.events.clone(),
            signal: outbox,
            api_base: config.public_api_base(),
        };
        background.push(worker.spawn(shutdown.clone()));
        background.extend(crate::agents::spawn_all(&state, &shutdown));
        background.extend(state.firewall.spawn_background(&shutdown));

        let addr = listener.local_addr()?;
        let limits = serve::ConnectionLimits {
            max_connections: config.max_connections,
            per_ip: crate::firewall::ConnectionsPerIp::new(
                config.max_connections_per_ip,
                config.trusted_proxies.clone(),
            ),
            write_timeout: Duration::from_millis(config.client_write_timeout_ms),
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_header_bytes: config.max_header_bytes,
        };
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let task = tokio::spawn(serve::serve(listener, router(state.clone()), limits, shutdown.clone(), grace));
        tracing::info!(%addr, database = state.store.backend(), "omi is serving");
        Ok(Server { addr, state, shutdown, task, sentinel_worker: sentinel_tasks.worker, background })
    }

    /// Stops accepting, lets in-flight requests finish (bounded), then drains the agents'
    /// queues so every booked event is written before returning.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        // Streams cut by the shutdown are read for their usage (bounded) before the books close.
        self.state.stream_drains.close();
        let drain_bound = stream::StreamLimits::DEFAULT_DRAIN_TIME + Duration::from_secs(1);
        if tokio::time::timeout(drain_bound, self.state.stream_drains.wait()).await.is_err() {
            tracing::warn!("stream drains did not finish in time");
        }
        // The Sentinel scans what is queued and publishes its findings before the bus closes.
        self.state.sentinel.close();
        if let Some(worker) = self.sentinel_worker {
            wait_for(worker).await;
        }
        self.state.events.close();
        for task in self.background {
            wait_for(task).await;
        }
        self.state.store.close().await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
