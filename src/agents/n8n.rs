//! Hands agent events to an n8n workflow (`N8N_WEBHOOK_URL`): one JSON POST per event,
//! `{"id", "type", "at", "data"}`, signed `X-Omi-Signature: sha256=<hex HMAC-SHA256 of the
//! body>` with `N8N_WEBHOOK_SECRET`, optionally with n8n's Header Auth as well
//! (`[hawk] n8n_auth_header`). 5xx and network errors are retried; a refusal (401, 403, 404:
//! a wrong secret or an inactive workflow) is not, and raises the Hawk's `delivery_failing`
//! alert. Only what an agent chose to publish is sent: never a key (a vended key travels as
//! its display prefix), never a BYOK key, never a request.

use super::delivery::{Outcome, Webhook};
use super::hawk::Alarms;
use super::hawk::rules::{Rule, Trigger};
use crate::config::Config;
use crate::events::Event;
use axum::http::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const SIGNATURE_HEADER: &str = "x-omi-signature";

#[derive(Clone, Debug, Serialize)]
pub struct N8nEvent {
    /// Stays the same across retries, so the workflow can drop duplicates.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: Value,
}

impl N8nEvent {
    pub fn new(kind: impl Into<String>, data: Value) -> N8nEvent {
        N8nEvent { id: Uuid::now_v7(), kind: kind.into(), at: Utc::now(), data }
    }

    /// Sets `data.text`, a line for a workflow's Slack node, escaped as the direct Slack path
    /// escapes its text: customer text in it (an email, a finding's excerpt) must not ping
    /// `<!channel>` or show a link of its own (`<http://evil|click>`).
    pub fn with_text(mut self, text: &str) -> N8nEvent {
        if let Some(data) = self.data.as_object_mut() {
            data.insert("text".into(), super::hawk::slack::escape(text).into());
        }
        self
    }

    /// A bus event as n8n sees it: its serde tag is the type, the rest is the data.
    pub fn from_event(event: &Event) -> Option<N8nEvent> {
        let Ok(Value::Object(mut data)) = serde_json::to_value(event) else { return None };
        let Some(Value::String(kind)) = data.remove("type") else { return None };
        Some(N8nEvent::new(kind, Value::Object(data)))
    }
}

/// Posts events to n8n: signed with `N8N_WEBHOOK_SECRET`, with the Header Auth when configured.
pub struct N8nSender {
    webhook: Webhook,
    secret: Option<SecretString>,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl N8nSender {
    /// `None` when `N8N_WEBHOOK_URL` is not set.
    pub fn from_config(config: &Config, http: reqwest::Client) -> Option<N8nSender> {
        let webhook = Webhook::new("n8n", config.n8n_webhook_url.clone()?, http);
        let secret = config.n8n_webhook_secret.clone();
        let auth = match (&config.hawk.n8n_auth_header, &secret) {
            (Some(name), Some(secret)) => header_auth(name, secret),
            _ => None,
        };
        Some(N8nSender { webhook, secret, auth })
    }

    /// Whether deliveries carry `X-Omi-Signature`.
    pub fn signs(&self) -> bool {
        self.secret.is_some()
    }

    pub async fn send(&self, event: &N8nEvent) -> Outcome {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(e) => return Outcome::Refused(format!("the event is not JSON: {e}")),
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> = self.auth.iter().cloned().collect();
        if let Some(secret) = &self.secret
            && let Ok(value) = HeaderValue::from_str(&format!("sha256={}", sign(secret, &body)))
        {
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), value));
        }
        self.webhook.post(body.into(), &headers).await
    }
}

/// `None` when `N8N_WEBHOOK_URL` is not set.
pub fn spawn(
    config: &Config,
    http: reqwest::Client,
    alarms: Alarms,
) -> Option<(super::Queue<N8nEvent>, JoinHandle<()>)> {
    let sender = N8nSender::from_config(config, http)?;
    if !sender.signs() {
        tracing::warn!("N8N_WEBHOOK_URL is set without N8N_WEBHOOK_SECRET: n8n deliveries go unsigned");
    }
    let (queue, mut rx) = super::Queue::<N8nEvent>::new("n8n", 1024);
    let task = crate::tasks::owned(async move {
        while let Some(event) = rx.recv().await {
            if let Outcome::Refused(why) | Outcome::GaveUp(why) = sender.send(&event).await {
                tracing::error!(reason = %why, kind = %event.kind, "n8n did not take an event");
                alarms.push(Trigger::new(Rule::DeliveryFailing, "n8n", Utc::now()).detail(format!("n8n: {why}")));
            }
        }
    });
    Some((queue, task))
}

fn header_auth(name: &str, secret: &SecretString) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(secret.expose_secret()).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Lowercase hex HMAC-SHA256 of the exact body bytes.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lemonsqueezy::signature_is_valid;

    #[test]
    fn signature_verifies_with_the_same_hmac_as_incoming_webhooks() {
        let secret = SecretString::from("n8n-shared-secret");
        let body = br#"{"type":"key_vended"}"#;
        let signature = sign(&secret, body);
        assert_eq!(signature.len(), 64);
        assert!(signature_is_valid(b"n8n-shared-secret", body, &signature));
        assert!(!signature_is_valid(b"another-secret", body, &signature));
    }

    #[test]
    fn bus_events_keep_their_tag_as_type_and_never_carry_a_key() {
        let event = Event::KeyVended {
            customer_id: Uuid::nil(),
            email: "ada@example.com".into(),
            plan: "pro".into(),
            key_prefix: "omi_AbCdEfGh".into(),
            order_id: Some(7),
        };
        let n8n = N8nEvent::from_event(&event).expect("forwarded");
        assert_eq!(n8n.kind, "key_vended");
        assert_eq!(n8n.data["key_prefix"], "omi_AbCdEfGh");
        assert!(n8n.data.get("type").is_none());
        let json = serde_json::to_value(&n8n).expect("json");
        assert_eq!(json["type"], "key_vended");
    }

    #[test]
    fn the_slack_line_is_escaped_like_slack_text() {
        let event = N8nEvent::new("finding", serde_json::json!({"detail": "<!channel>"}))
            .with_text("<!channel> see <http://evil.example|click> & more");
        assert_eq!(event.data["text"], "&lt;!channel&gt; see &lt;http://evil.example|click&gt; &amp; more");
        assert_eq!(event.data["detail"], "<!channel>", "the data itself stays as it was");
    }
}
