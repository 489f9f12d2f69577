//! The loop of a periodic background task: a tick every `every` until shutdown.

use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub struct Ticker {
    interval: Interval,
    shutdown: CancellationToken,
}

impl Ticker {
    /// The first tick is immediate. A run slower than `every` delays the next one rather
    /// than letting missed ticks fire back to back.
    pub fn new(every: Duration, shutdown: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker { interval, shutdown }
    }

    /// Waits for the next tick; `false` once shutdown is requested.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.shutdown.cancelled() => false,
        }
    }
}
