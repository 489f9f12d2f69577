//! Posting JSON to an outside webhook (Slack, n8n) with bounded retries: any 2xx is
//! delivered; 429 waits for `Retry-After`; 5xx and network errors back off; any other status
//! is a configuration problem (revoked Slack hook, inactive n8n workflow, wrong secret) that
//! retrying will not fix, so the caller raises an alert instead. The URL is a credential:
//! it is never logged, and errors are reported without it.

use crate::billing::mailer::retry_delay;
use crate::web::response_body::read_bounded;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// Four attempts: about 1 + 2 + 4 s of backoff (jittered) before giving up.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);
/// A longer `Retry-After` is capped: the queue behind this delivery keeps growing meanwhile.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Not retried: the receiver refused it for good.
    Refused(String),
    /// Retried, never delivered.
    GaveUp(String),
}

pub struct Webhook {
    /// `slack` or `n8n`: the `channel` label of `omi_agent_deliveries_total`.
    pub channel: &'static str,
    url: SecretString,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(channel: &'static str, url: SecretString, http: reqwest::Client) -> Webhook {
        Webhook { channel, url, http }
    }

    pub async fn post(&self, body: Bytes, headers: &[(HeaderName, HeaderValue)]) -> Outcome {
        let mut last_failure = String::new();
        for attempt in 0..ATTEMPTS {
            let mut request = self
                .http
                .post(self.url.expose_secret())
                .timeout(TIMEOUT)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.count("delivered");
                    return Outcome::Delivered;
                }
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    last_failure = "rate limited (429)".into();
                    retry_after(response.headers()).unwrap_or_else(|| retry_delay(attempt))
                }
                Ok(response) if response.status().is_server_error() => {
                    last_failure = format!("HTTP {}", response.status().as_u16());
                    retry_delay(attempt)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    // A refusal is shown with its body; one past the bound is not read, and says its status only.
                    let body = read_bounded(response, MAX_REFUSAL_BYTES).await.unwrap_or_default();
                    let text = String::from_utf8_lossy(&body);
                    self.count("refused");
                    return Outcome::Refused(describe_refusal(status, &text));
                }
                Err(e) => {
                    last_failure = e.without_url().to_string();
                    retry_delay(attempt)
                }
            };
            if attempt + 1 < ATTEMPTS {
                self.count("retried");
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
            }
        }
        self.count("gave_up");
        Outcome::GaveUp(format!("{last_failure} after {ATTEMPTS} attempts"))
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!("omi_agent_deliveries_total", "channel" => self.channel, "outcome" => outcome).increment(1);
    }
}

/// `Retry-After` in seconds (Slack's form); an HTTP date falls back to our own backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Slack answers with a short error code (`no_service`, `channel_is_archived`): worth
/// showing. Anything else (n8n's 404 names the webhook's secret path) is left out.
fn describe_refusal(status: u16, body: &str) -> String {
    let body = body.trim();
    let is_code = !body.is_empty() && body.len() <= 64 && body.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if is_code { format!("HTTP {status} {body}") } else { format!("HTTP {status}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_slack_codes_and_drop_everything_else() {
        assert_eq!(describe_refusal(404, "no_service"), "HTTP 404 no_service");
        let n8n = r#"{"code":404,"message":"The requested webhook \"POST 8f3a-secret-path\" is not registered."}"#;
        assert_eq!(describe_refusal(404, n8n), "HTTP 404");
        assert_eq!(describe_refusal(403, "Authorization data is wrong!"), "HTTP 403");
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }
}
