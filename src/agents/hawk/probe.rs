//! Every few seconds: is the database there (`SELECT 1`), is Redis there (`PING`, when
//! `REDIS_URL` is set), and how full is each subscriber's event queue. A failed probe is a
//! trigger for the Hawk; one slow probe never delays the next event the Hawk handles.

use super::Alarms;
use super::rules::{Rule, Trigger};
use crate::app::AppState;
use crate::ticker::Ticker;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn spawn(app: Arc<AppState>, alarms: Alarms, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    crate::tasks::owned(async move {
        let mut redis = app.config.redis_url.as_ref().and_then(|url| match RedisProbe::new(url) {
            Ok(probe) => Some(probe),
            Err(why) => {
                tracing::error!("{why}; Redis is not probed");
                None
            }
        });
        let mut ticker = Ticker::new(every, shutdown);
        while ticker.tick().await {
            let database = match tokio::time::timeout(PROBE_TIMEOUT, app.store.ping()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            };
            if let Some(why) = database {
                let trigger = Trigger::new(Rule::DatabaseUnreachable, app.store.backend(), Utc::now());
                alarms.push(trigger.detail(truncate(&why)));
            }
            if let Some(redis) = redis.as_mut()
                && let Err(why) = redis.ping().await
            {
                alarms.push(Trigger::new(Rule::RedisUnreachable, "redis", Utc::now()).detail(why));
            }
            for (subscriber, depth) in app.events.queue_depths() {
                metrics::gauge!("omi_events_queue_depth", "subscriber" => subscriber).set(depth as f64);
            }
        }
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// One multiplexed connection, reopened after any failure (also `omi doctor`'s Redis check).
pub struct RedisProbe {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
}

impl RedisProbe {
    pub fn new(url: &SecretString) -> Result<RedisProbe, String> {
        redis::Client::open(url.expose_secret())
            .map(|client| RedisProbe { client, connection: None })
            // The URL may hold a password: name only the kind of error.
            .map_err(|e| format!("REDIS_URL is not usable ({:?})", e.kind()))
    }

    pub async fn ping(&mut self) -> Result<(), String> {
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
            if self.connection.is_none() {
                self.connection = Some(self.client.get_multiplexed_async_connection().await?);
            }
            match self.connection.as_mut() {
                Some(connection) => redis::cmd("PING").query_async::<String>(connection).await.map(|_| ()),
                None => Ok(()),
            }
        })
        .await;
        let failure = match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("PING failed ({:?})", e.kind()),
            Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        };
        self.connection = None;
        Err(failure)
    }
}
