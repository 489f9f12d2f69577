//! The delivery worker of the transactional outbox: claims a due key email under a lease
//! (so any number of instances share the queue, and a crashed one's claim expires), sends it,
//! then erases the plaintext key on success. Failures retry with exponential backoff from
//! about a second up to five minutes; permanent failures are recorded and reported.

use super::mailer::{
    EmailAddress, KeyEmailLinks, Mailer, OutgoingEmail, credit_email, key_email, portal_link_email,
    replacement_key_email, retry_delay,
};
use crate::events::{Event, EventBus};
use crate::store::{CreditLevel, OutboxEmail, PORTAL_LINK_EMAIL, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a claimed email is ours before another worker may take it over.
const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// Idle polling, for emails queued by other instances or coming due after a backoff.
const POLL: Duration = Duration::from_millis(500);

/// Wakes this instance's worker the moment a key email is queued.
#[derive(Default)]
pub struct OutboxSignal(Notify);

impl OutboxSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Worker {
    pub store: Store,
    pub mailer: Arc<Mailer>,
    pub events: EventBus,
    pub signal: Arc<OutboxSignal>,
    /// `https://api.example.com/v1`, written into the email.
    pub api_base: String,
    /// `https://api.example.com`, where the portal's sign-in links lead.
    pub public_base: String,
    /// `https://api.example.com/portal`, linked from key emails; `None` without a configured
    /// `public_url` (the listen address is no link to email).
    pub portal_url: Option<String>,
}

impl Worker {
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        crate::tasks::owned(async move {
            if matches!(*self.mailer, Mailer::Disabled) {
                tracing::warn!(
                    "no email transport configured (POSTMARK_SERVER_TOKEN or SMTP_URL): key emails wait in the outbox"
                );
                return;
            }
            loop {
                match self.store.claim_due_email(LEASE).await {
                    Ok(Some(email)) => {
                        self.deliver(email).await;
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox claim failed; retrying"),
                }
                if let Ok(depth) = self.store.outbox_depth().await {
                    metrics::gauge!("omi_email_outbox_depth").set(depth as f64);
                }
                tokio::select! {
                    _ = self.signal.0.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }

    async fn deliver(&self, email: OutboxEmail) {
        let attempts = email.attempts + 1;
        let Some(message) = self.message_of(&email) else {
            self.fail(&email, attempts, "the key or address is no longer available").await;
            return;
        };
        match self.mailer.send(&message).await {
            Ok(()) => {
                metrics::counter!("omi_emails_total", "outcome" => "sent").increment(1);
                if let Err(e) = self.store.email_sent(email.id).await {
                    // The lease expires and the email goes again: at-least-once beats lost.
                    tracing::error!(error = %e, "email sent but not marked; it may be sent twice");
                }
            }
            Err(e) if e.is_retryable() => {
                metrics::counter!("omi_emails_total", "outcome" => "retry").increment(1);
                let delay = retry_delay(u32::try_from(email.attempts).unwrap_or(0));
                let next =
                    chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1));
                if attempts >= 3 {
                    self.events.publish(Event::EmailFailed { permanent: false, attempts });
                }
                if let Err(store_error) = self.store.email_retry_later(email.id, attempts, next, &e.to_string()).await {
                    tracing::error!(error = %store_error, "could not schedule the email retry");
                }
            }
            Err(e) => self.fail(&email, attempts, &e.to_string()).await,
        }
    }

    /// The email an outbox row stands for: a key (new, or replacing one), a portal sign-in
    /// link, or a credit notice.
    fn message_of(&self, email: &OutboxEmail) -> Option<OutgoingEmail> {
        let to = EmailAddress::parse(&email.to_email).ok()?;
        if let Some(level) = CreditLevel::parse(&email.kind) {
            return Some(credit_email(to, level, email.credit_nano.unwrap_or(0), &self.api_base));
        }
        let secret = email.key_plaintext.as_deref()?;
        let links = KeyEmailLinks { api_base: &self.api_base, portal: self.portal_url.as_deref() };
        Some(match (email.kind.as_str(), &email.replaces_prefix) {
            (PORTAL_LINK_EMAIL, _) => portal_link_email(to, &format!("{}/portal/login/{secret}", self.public_base)),
            (_, Some(replaced)) => replacement_key_email(to, secret, links, &email.plan, replaced),
            (_, None) => key_email(to, secret, links, &email.plan),
        })
    }

    async fn fail(&self, email: &OutboxEmail, attempts: i32, reason: &str) {
        metrics::counter!("omi_emails_total", "outcome" => "failed").increment(1);
        self.events.publish(Event::EmailFailed { permanent: true, attempts });
        tracing::error!(reason, "key email failed permanently; resend it to rotate the key");
        if let Err(e) = self.store.email_failed(email.id, attempts, reason).await {
            tracing::error!(error = %e, "could not record the failed email");
        }
    }
}
