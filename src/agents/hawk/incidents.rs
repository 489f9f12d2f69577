//! One Slack message (and n8n event) per incident, however many instances see it. Each
//! instance's rule engine decides on its own traffic; before Slack or n8n hears a notification,
//! the instance claims it in the shared database (`alert_incidents`, the daily summary's claim
//! pattern): the first to fire an incident sends the firing and the others join it, the first
//! escalation and each due reminder go out once, and the last instance to resolve sends the
//! resolution. The message's count is then every instance's (their `alerts` rows). A claim
//! that cannot reach the database sends anyway: an outage of the database must not silence
//! the alert about it.

use super::rules::{Notice, Notification, Policy};
use crate::store::{IncidentClock, IncidentNotice, Store};
use chrono::{TimeDelta, Utc};

pub struct Incidents {
    store: Store,
    repeat: TimeDelta,
    /// A firing incident nobody touched for this long was abandoned by its instances.
    abandoned_after: TimeDelta,
}

impl Incidents {
    pub fn new(store: Store, policy: &Policy, margin: TimeDelta) -> Incidents {
        Incidents { store, repeat: policy.repeat, abandoned_after: policy.repeat + policy.longest_quiet() + margin }
    }

    /// Whether this instance sends `n`; when it does, `n` carries every instance's count.
    pub async fn claim(&self, n: &mut Notification) -> bool {
        let now = Utc::now();
        let clock =
            IncidentClock { now, remind_before: now - self.repeat, abandoned_before: now - self.abandoned_after };
        let notice = match n.notice {
            Notice::Fired => IncidentNotice::Fired,
            Notice::Escalated => IncidentNotice::Escalated,
            Notice::Reminder => IncidentNotice::Reminder,
            Notice::Resolved => IncidentNotice::Resolved,
        };
        let severity = n.alert.severity.as_str();
        match self.store.claim_alert_notice(&n.alert.key, notice, severity, &clock).await {
            Ok(false) => false,
            Ok(true) => {
                if let Ok(elsewhere) = self.store.incident_occurrences_elsewhere(&n.alert.key, n.alert.id).await {
                    n.alert.count = n.alert.count.saturating_add(u64::try_from(elsewhere).unwrap_or(0));
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, alert = %n.alert.key, "could not claim an alert notification; sending it");
                true
            }
        }
    }
}
