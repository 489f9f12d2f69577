//! Upkeep of the raw usage records, on every instance at start-up and then hourly: the months
//! ahead get their PostgreSQL partitions (records that landed in the DEFAULT partition move into
//! their month's), and with `usage_retention_days` set, months past it are deleted whole. The
//! daily totals stay, so `omi report margins` over a deleted month is unchanged.

use crate::store::Store;
use crate::ticker::Ticker;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cheap when there is nothing to do (a catalog query and an empty DEFAULT partition read), so
/// a record in the DEFAULT partition waits at most this long for its month's partition.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

pub fn spawn(store: Store, retention_days: Option<u32>, shutdown: CancellationToken) -> JoinHandle<()> {
    crate::tasks::owned(async move {
        let mut ticker = Ticker::new(UPKEEP_EVERY, shutdown);
        while ticker.tick().await {
            run(&store, retention_days, Utc::now()).await;
        }
    })
}

/// One round of upkeep as of `now`; failures are logged and retried at the next round.
pub async fn run(store: &Store, retention_days: Option<u32>, now: DateTime<Utc>) {
    if let Err(e) = store.prepare_usage_partitions(now).await {
        tracing::warn!(error = %e, "usage partitions not prepared; retried at the next upkeep");
    }
    let Some(days) = retention_days else { return };
    match store.prune_usage_before(now - chrono::Duration::days(i64::from(days))).await {
        Ok(pruned) if pruned.rows > 0 || !pruned.partitions.is_empty() => {
            tracing::info!(partitions = ?pruned.partitions, rows = pruned.rows, "old usage records deleted (usage_retention_days)");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "usage retention failed; retried at the next upkeep"),
    }
}
