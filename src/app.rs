//! The composition root: the application state that handlers and agents share, and what builds
//! it from the configuration (the store, the providers, the outbound client, the guards, the
//! agents on the event stream). `server` serves it; nothing else constructs the parts.

use crate::agents::sentinel::{self, Sentinel};
use crate::billing::mailer::{EmailAddress, Mailer};
use crate::billing::outbox::{OutboxSignal, Worker};
use crate::billing::prices::PriceTable;
use crate::config::{Config, ConfigError};
use crate::events::EventBus;
use crate::firewall::{Firewall, FirewallError};
use crate::gateway::MeterMetrics;
use crate::keys::KeyVerifier;
use crate::providers::Providers;
use crate::providers::client::UpstreamClient;
use crate::shield::guard::{Guard, GuardError};
use crate::store::Store;
use crate::telemetry;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub verifier: Arc<KeyVerifier>,
    pub providers: Providers,
    pub prices: PriceTable,
    /// Outbound calls off the request path (the judge, Slack, n8n, Postmark).
    pub http: reqwest::Client,
    /// Calls to providers (a provider with its own connect timeout has its own).
    pub upstream: UpstreamClient,
    pub events: EventBus,
    pub outbox: Arc<OutboxSignal>,
    pub guard: Arc<Guard>,
    pub sentinel: Arc<Sentinel>,
    pub firewall: Arc<Firewall>,
    pub meters: MeterMetrics,
    /// Streams whose client left, still read for their usage; shutdown waits for them.
    pub stream_drains: TaskTracker,
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
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// The tasks [`AppState::start`] started, which a shutdown waits for in this order.
pub(crate) struct Tasks {
    /// Stopped before the event bus closes: it publishes its findings there.
    pub sentinel_worker: Option<JoinHandle<()>>,
    pub background: Vec<JoinHandle<()>>,
}

impl AppState {
    /// Connects and migrates the store, builds every part, and starts the background tasks
    /// (agents, outbox, key sync, lifecycle sweeper, firewall and metrics upkeep) until `shutdown`.
    pub(crate) async fn start(
        config: Config,
        shutdown: &CancellationToken,
    ) -> Result<(Arc<AppState>, Tasks), ServeError> {
        let config = Arc::new(config);
        // Installed before the first request so no early measurement is lost.
        telemetry::metrics_handle();
        let store = Store::connect(secrecy::ExposeSecret::expose_secret(&config.database_url)).await?;
        store.migrate().await?;
        let verifier = Arc::new(KeyVerifier::new(store.clone()).await?);
        let prices = PriceTable::new(&config.prices).with_markups(&config.plans);
        let providers =
            Providers::from_config(&config, &PriceTable::openai_built_in_models(), |var| std::env::var(var).ok())?;
        let http = outbound_client(&config)?;
        let upstream = UpstreamClient::new(Duration::from_millis(config.upstream_connect_timeout_ms))
            .map_err(|e| ServeError::Http(e.to_string()))?;
        let mailer = Arc::new(build_mailer(&config, http.clone())?);
        let guard = Arc::new(Guard::from_config(&config)?);
        let events = EventBus::default();
        let firewall = Arc::new(Firewall::new(config.firewall()?, events.clone()).await?);
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
            upstream,
            events,
            outbox: outbox.clone(),
            guard,
            sentinel,
            firewall,
            meters: MeterMetrics::default(),
            stream_drains: TaskTracker::new(),
        });

        let mut background = vec![state.verifier.spawn_sync(Duration::from_secs(1), shutdown.clone())];
        background.push(telemetry::spawn_metrics_upkeep(
            telemetry::metrics_handle().clone(),
            telemetry::METRICS_UPKEEP_EVERY,
            shutdown.clone(),
        ));
        background.push(sentinel_tasks.recorder);
        background.push(crate::keys::activity::spawn(&state.events, state.store.clone()));
        background.push(crate::billing::spawn_lifecycle(state.clone(), Duration::from_secs(30), shutdown.clone()));
        let worker = Worker {
            store: state.store.clone(),
            mailer,
            events: state.events.clone(),
            signal: outbox,
            api_base: config.public_api_base(),
            public_base: config.public_base(),
            portal_url: config.public_url.as_ref().map(|_| format!("{}/portal", config.public_base())),
        };
        background.push(worker.spawn(shutdown.clone()));
        background.extend(crate::agents::spawn_all(&state, shutdown));
        background.extend(state.firewall.spawn_background(shutdown));
        Ok((state, Tasks { sentinel_worker: sentinel_tasks.worker, background }))
    }

    /// A model as a metric label or alert subject: its name (without a `provider/` prefix)
    /// when this gateway lists or prices it, else `other`, so callers cannot grow the set.
    pub fn model_label<'a>(&'a self, model: &'a str) -> &'a str {
        let name = self.providers.route(model).map_or(model, |route| route.upstream_model);
        if self.providers.lists(name) || self.prices.get(name).is_some() { name } else { "other" }
    }
}

/// One client for every outbound call (upstreams, the judge, Slack, n8n, Postmark; `omi doctor`
/// checks them with it). It follows no redirect: a redirect would re-post the body (the
/// operator's system prompt, a key, a signed event) to wherever the 3xx points; a 3xx is an
/// answer like any other.
pub(crate) fn outbound_client(config: &Config) -> Result<reqwest::Client, ServeError> {
    crate::providers::upstream_client(Duration::from_millis(config.upstream_connect_timeout_ms))
        .map_err(|e| ServeError::Http(e.without_url().to_string()))
}

/// The mailer `OMI_EMAIL_FROM`, Postmark and SMTP settings describe (also `omi doctor`'s).
pub(crate) fn build_mailer(config: &Config, http: reqwest::Client) -> Result<Mailer, ServeError> {
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
