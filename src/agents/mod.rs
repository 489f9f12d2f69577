//! The agents: event-bus subscribers that act on what the service does. The Accountant
//! keeps the books; the Hawk watches the service and alerts; the n8n forwarder hands agent
//! events to a workflow. Each agent runs in its own task behind bounded queues, so a slow
//! Slack, n8n or database never reaches a request. What must stay true, and the tests that
//! hold it: `README.md` in this folder.

pub mod accountant;
pub mod delivery;
pub mod hawk;
pub mod n8n;
pub mod sentinel;

use crate::app::AppState;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use delivery::Webhook;

/// Starts every agent; the server drains the returned tasks at shutdown (they end once the
/// event bus closes and `shutdown` is cancelled).
pub fn spawn_all(app: &Arc<AppState>, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let (events, store, config) = (&app.events, &app.store, &app.config);
    let mut tasks = vec![
        accountant::spawn_daily_summary(store.clone(), config.clone(), events.clone(), shutdown.clone()),
        accountant::upkeep::spawn(store.clone(), config.usage_retention_days, shutdown.clone()),
    ];
    tasks.extend(accountant::budgets::spawn_counter(events, store.clone(), config.clone(), app.prices.clone()));
    if config.plans.iter().any(|plan| plan.prepaid) {
        tasks.push(accountant::credits::spawn_settler(events, store.clone(), app.prices.clone()));
    }
    if config.metering {
        tasks.push(accountant::spawn_writer(
            events,
            store.clone(),
            app.prices.clone(),
            accountant::WriterSettings::default(),
        ));
    }
    let (alarms, alarm_rx) = Queue::new("hawk_alarms", 1024);
    let n8n = n8n::spawn(&app.config, app.http.clone(), alarms.clone()).map(|(queue, task)| {
        tasks.push(task);
        queue
    });
    tasks.extend(hawk::spawn(app, alarms, alarm_rx, n8n, shutdown));
    tasks
}

/// A bounded queue into an agent's task. `push` never waits: when the queue is full the
/// item is dropped and counted (`omi_agent_queue_dropped_total{queue}`), because whoever
/// pushes may be on a request's path.
pub struct Queue<T> {
    name: &'static str,
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Queue<T> {
        Queue { name: self.name, tx: self.tx.clone() }
    }
}

impl<T> Queue<T> {
    pub fn new(name: &'static str, capacity: usize) -> (Queue<T>, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Queue { name, tx }, rx)
    }

    pub fn push(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            metrics::counter!("omi_agent_queue_dropped_total", "queue" => self.name).increment(1);
        }
    }
}
