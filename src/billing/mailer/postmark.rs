//! Postmark's "send a single email" API: `POST {base}/email` with the server token header.

use crate::web::response_body::read_bounded;
use std::fmt;
use std::time::Duration;

/// Postmark's replies are a few hundred bytes; a larger one is not read whole.
const MAX_REPLY_BYTES: usize = 64 * 1024;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{EmailAddress, MailerConfigError, OutgoingEmail, SendError, VerifyError, redact};
use crate::web::error_chain::error_chain;

const DEFAULT_BASE_URL: &str = "https://api.postmarkapp.com";
const TOKEN_HEADER: &str = "X-Postmark-Server-Token";
/// Transactional mail; Postmark keeps broadcasts on a separate stream with its own rules.
const MESSAGE_STREAM: &str = "outbound";
/// Per request, because the shared `reqwest::Client` may have no timeout of its own and a hung
/// request would stall the outbox worker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Postmark's `ErrorCode` for "API offline for maintenance", sent with HTTP 422.
const ERROR_CODE_MAINTENANCE: i64 = 100;
/// Enough of an error body to diagnose, without copying a large page into every log line.
const MAX_ERROR_DETAIL: usize = 300;

pub struct PostmarkClient {
    http: reqwest::Client,
    endpoint: Url,
    token: SecretString,
    from: EmailAddress,
}

impl fmt::Debug for PostmarkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostmarkClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("from", &self.from)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendRequest<'a> {
    from: &'a str,
    to: &'a str,
    subject: &'a str,
    text_body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    html_body: Option<&'a str>,
    message_stream: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
}

/// Both the success and the error body. Every field is optional and unknown fields are ignored,
/// so a changed or non-JSON reply degrades the error message, never the classification.
#[derive(Deserialize, Default)]
struct Reply {
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
}

impl PostmarkClient {
    pub(super) fn new(
        http: reqwest::Client,
        base_url: Option<&str>,
        token: SecretString,
        from: EmailAddress,
    ) -> Result<Self, MailerConfigError> {
        // Checked now so a bad token fails at startup, not on the first customer's email.
        if HeaderValue::from_str(token.expose_secret()).is_err() {
            return Err(MailerConfigError::PostmarkToken);
        }
        Ok(PostmarkClient { http, endpoint: endpoint(base_url.unwrap_or(DEFAULT_BASE_URL))?, token, from })
    }

    /// The token as a header value, kept out of hyper/reqwest debug output and HTTP/2 header
    /// compression tables. `new` checked that it is one.
    fn token_header(&self) -> Option<HeaderValue> {
        let mut token = HeaderValue::from_str(self.token.expose_secret()).ok()?;
        token.set_sensitive(true);
        Some(token)
    }

    /// `GET {base}/server` ("get the server"): 200 with a valid server token, 401 without one.
    pub(super) async fn verify(&self) -> Result<(), VerifyError> {
        let refused = |why: String| VerifyError::Refused(why);
        let token =
            self.token_header().ok_or_else(|| refused("the Postmark server token is not a valid header".into()))?;
        let url = self.endpoint.join("server").map_err(|e| VerifyError::Unreachable(e.to_string()))?;
        let response = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .header(TOKEN_HEADER, token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|err| {
                VerifyError::Unreachable(redact(&format!("postmark unreachable: {}", error_chain(&err)), &self.token))
            })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(refused(format!("Postmark refused the server token (HTTP {})", status.as_u16())))
            }
            status => Err(VerifyError::Unreachable(format!("postmark answered HTTP {}", status.as_u16()))),
        }
    }

    pub(super) async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let token = self
            .token_header()
            .ok_or_else(|| SendError::Permanent("the Postmark server token is not a valid header".to_owned()))?;

        let body = SendRequest {
            from: self.from.as_str(),
            to: email.to.as_str(),
            subject: &email.subject,
            text_body: &email.text_body,
            html_body: email.html_body.as_deref(),
            message_stream: MESSAGE_STREAM,
            tag: email.tag.as_deref(),
        };

        let response = self
            .http
            .post(self.endpoint.clone())
            .header(ACCEPT, "application/json")
            .header(TOKEN_HEADER, token)
            .timeout(REQUEST_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|err| {
                // Connection refused, DNS, TLS, timeout: nothing was accepted, so try again later.
                SendError::Transient(redact(&format!("postmark request failed: {}", error_chain(&err)), &self.token))
            })?;

        let status = response.status();
        // A body that fails to arrive after the status line still leaves the status to go by.
        let raw = read_bounded(response, MAX_REPLY_BYTES).await.unwrap_or_default();
        let reply: Reply = serde_json::from_slice(&raw).unwrap_or_default();
        match classify(status, &reply, &String::from_utf8_lossy(&raw)) {
            Ok(()) => {
                tracing::debug!(message_id = ?reply.message_id, "postmark accepted the email");
                Ok(())
            }
            Err(SendError::Transient(m)) => Err(SendError::Transient(redact(&m, &self.token))),
            Err(SendError::Permanent(m)) => Err(SendError::Permanent(redact(&m, &self.token))),
        }
    }
}

/// `{base}/email`, keeping any path prefix of the base (a proxy may mount Postmark under one).
fn endpoint(base: &str) -> Result<Url, MailerConfigError> {
    let invalid = |why: &str| MailerConfigError::PostmarkUrl(why.to_owned());
    let mut url = Url::parse(base.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid("expected an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("expected no query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("email").map_err(|e| invalid(&e.to_string()))
}

/// Maps Postmark's answer to a result, following its documented status codes: 2xx accepted;
/// 401 (bad token) and 422 (this email is invalid) will not change on retry; 429 and 5xx will.
fn classify(status: StatusCode, reply: &Reply, raw: &str) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let detail = match (reply.error_code, &reply.message) {
        (Some(code), Some(message)) => format!("ErrorCode {code}: {message}"),
        (None, Some(message)) => message.clone(),
        (Some(code), None) => format!("ErrorCode {code}"),
        (None, None) => raw.trim().to_owned(),
    };
    let detail: String = detail.chars().take(MAX_ERROR_DETAIL).collect();
    let message = format!("postmark returned HTTP {}: {detail}", status.as_u16());

    let retryable = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => true,
        // Maintenance is reported as a 422 but, unlike every other 422, goes away by itself.
        StatusCode::UNPROCESSABLE_ENTITY => reply.error_code == Some(ERROR_CODE_MAINTENANCE),
        s => s.is_server_error(),
    };
    if retryable { Err(SendError::Transient(message)) } else { Err(SendError::Permanent(message)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_email_to_base() {
        let cases = [
            ("https://api.postmarkapp.com", "https://api.postmarkapp.com/email"),
            ("https://api.postmarkapp.com/", "https://api.postmarkapp.com/email"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/email"),
            ("http://proxy.local/postmark", "http://proxy.local/postmark/email"),
            ("http://proxy.local/postmark/", "http://proxy.local/postmark/email"),
        ];
        for (base, want) in cases {
            assert_eq!(endpoint(base).unwrap().as_str(), want, "base {base}");
        }
        for bad in ["", "api.postmarkapp.com", "ftp://x.com", "https://x.com/?a=b"] {
            assert!(endpoint(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn classify_unexpected_statuses() {
        let reply = Reply::default();
        let permanent = [400, 403, 404, 413];
        for code in permanent {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(classify(status, &reply, ""), Err(SendError::Permanent(_))), "{code}");
        }
        for code in [408, 502, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(classify(status, &reply, ""), Err(SendError::Transient(_))), "{code}");
        }
        assert_eq!(classify(StatusCode::ACCEPTED, &reply, ""), Ok(()));
    }

    #[test]
    fn classify_keeps_error_detail_short() {
        let raw = "x".repeat(10_000);
        let Err(err) = classify(StatusCode::INTERNAL_SERVER_ERROR, &Reply::default(), &raw) else {
            panic!("500 must fail");
        };
        assert!(err.to_string().len() < MAX_ERROR_DETAIL + 100, "{err}");
    }
}
