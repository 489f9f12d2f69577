//! Logs (tracing) and metrics (Prometheus text at `/metrics`).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How often the histograms' samples are folded into their buckets.
pub const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process-wide metrics recorder, installed on first use (several servers in one test
/// process share it).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                // Fine below a millisecond: the gateway's own overhead lives there.
                0.00001, 0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was already installed");
                }
                handle
            }
            // Bucket list is a constant; this arm only guards against a library change.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Folds every histogram's recorded samples into its buckets, every `every` until shutdown.
/// The exporter keeps each sample (16 bytes; a request records three) until this runs or
/// `/metrics` is scraped, so without it a gateway that nobody scrapes grows without bound
/// (bench/README.md: where the memory goes).
pub fn spawn_metrics_upkeep(handle: PrometheusHandle, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    crate::tasks::owned(async move {
        let mut ticker = crate::ticker::Ticker::new(every, shutdown);
        while ticker.tick().await {
            handle.run_upkeep();
        }
    })
}

/// `OMI_LOG_FORMAT`: how log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans), for log shippers.
    Json,
}

/// `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
