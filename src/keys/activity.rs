//! `last_used_at` without a write on the request path: request events are folded into a
//! map and flushed to the store every few seconds (and once more at shutdown).

use crate::events::{Event, EventBus};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

const FLUSH_EVERY: Duration = Duration::from_secs(5);

pub fn spawn(events: &EventBus, store: Store) -> JoinHandle<()> {
    let mut rx = events.subscribe("key_activity", 16_384);
    crate::tasks::owned(async move {
        let mut seen: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        if let Event::Request(request) = &*event
                            && let Some(key) = request.key_id
                        {
                            let at = seen.entry(key).or_insert(request.at);
                            *at = (*at).max(request.at);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => flush(&store, &mut seen).await,
            }
        }
        flush(&store, &mut seen).await;
    })
}

async fn flush(store: &Store, seen: &mut HashMap<Uuid, DateTime<Utc>>) {
    if seen.is_empty() {
        return;
    }
    let batch: Vec<_> = seen.drain().collect();
    if let Err(e) = store.touch_keys(&batch).await {
        // Losing a last-used timestamp is harmless; it is refreshed by the next request.
        tracing::warn!(error = %e, keys = batch.len(), "could not record key activity");
    }
}
