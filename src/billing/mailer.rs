//! Outgoing email: the customer's key email, sent through Postmark's HTTP API or an SMTP relay
//! (Gmail with an App Password, or any submission server).
//!
//! [`Mailer`] is chosen once from configuration. Each send either succeeds or returns a
//! [`SendError`] that says whether retrying can help; the outbox worker that owns retries uses
//! [`SendError::is_retryable`] and [`retry_delay`]. This module never retries by itself, so one
//! call is at most one delivery attempt and the worker stays the only place that decides.
//!
//! Secrets (the Postmark server token, the SMTP password) are held as [`SecretString`] and never
//! appear in `Debug` output, logs or error messages.

mod postmark;
mod smtp;

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};

pub use crate::customers::EmailAddress;

pub use postmark::PostmarkClient;
pub use smtp::SmtpMailer;
pub(crate) use smtp::percent_decode;

/// One message to one recipient. The sender is part of the [`Mailer`]'s configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: EmailAddress,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
    /// Postmark's `Tag` (groups messages in its statistics); SMTP has no equivalent and ignores it.
    pub tag: Option<String>,
}

// Bodies carry API keys, so `{:?}` of an email (say, in a failed-job log line) shows only sizes.
impl fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text_body_len", &self.text_body.len())
            .field("html_body_len", &self.html_body.as_ref().map(String::len))
            .field("tag", &self.tag)
            .finish()
    }
}

/// A failed delivery attempt. Messages never contain the Postmark token or the SMTP password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Network trouble, rate limiting, provider outage or an SMTP 4xx: the same email may go
    /// through later.
    #[error("transient email failure: {0}")]
    Transient(String),
    /// The provider refused this email or our credentials (Postmark 401/422, SMTP 5xx): sending
    /// it again unchanged will fail again.
    #[error("permanent email failure: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
}

/// Why a transport's credentials could not be confirmed (`omi doctor`). Messages never contain
/// the token or the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The service answered and refused the credentials.
    #[error("{0}")]
    Refused(String),
    /// Nothing answered, or not in a way that says whether the credentials work.
    #[error("{0}")]
    Unreachable(String),
}

/// Email settings that cannot work. Messages never contain the token, the password, or the
/// SMTP URL (which embeds the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailerConfigError {
    #[error("invalid Postmark API URL: {0}")]
    PostmarkUrl(String),
    #[error("the Postmark server token contains characters not allowed in an HTTP header")]
    PostmarkToken,
    #[error("invalid SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("invalid sender address: {0}")]
    Sender(String),
    /// lettre's SMTP connection pool spawns its idle-connection reaper on the current Tokio
    /// runtime; reporting this beats the panic `tokio::spawn` would raise.
    #[error("the SMTP mailer must be created inside a Tokio runtime")]
    NoTokioRuntime,
}

/// How email leaves the building, chosen once at startup.
#[derive(Debug)]
pub enum Mailer {
    Postmark(PostmarkClient),
    Smtp(SmtpMailer),
    /// Neither Postmark nor SMTP is configured; every send fails permanently (see [`Mailer::send`]).
    Disabled,
}

impl Mailer {
    /// Picks the transport: Postmark when a token is set (even if an SMTP URL is too), else
    /// SMTP when a URL is set, else [`Mailer::Disabled`]. Blank values count as unset, because an
    /// env file line like `POSTMARK_SERVER_TOKEN=` means "not configured", not "empty token".
    ///
    /// SMTP must be configured inside a Tokio runtime (see [`MailerConfigError::NoTokioRuntime`]).
    /// `http` should be the process-wide client; its TLS provider must already be installed.
    pub fn from_settings(
        postmark_token: Option<SecretString>,
        postmark_url: Option<&str>,
        smtp_url: Option<SecretString>,
        from: EmailAddress,
        http: reqwest::Client,
    ) -> Result<Mailer, MailerConfigError> {
        let is_set = |s: &SecretString| !s.expose_secret().trim().is_empty();
        let postmark_token = postmark_token.filter(is_set);
        let smtp_url = smtp_url.filter(is_set);

        match (postmark_token, smtp_url) {
            (Some(token), smtp_url) => {
                if smtp_url.is_some() {
                    tracing::warn!("both a Postmark token and an SMTP URL are set; using Postmark");
                }
                Ok(Mailer::Postmark(PostmarkClient::new(http, postmark_url, token, from)?))
            }
            (None, Some(url)) => Ok(Mailer::Smtp(SmtpMailer::from_url(&url, from)?)),
            (None, None) => Ok(Mailer::Disabled),
        }
    }

    /// One delivery attempt; retrying is the caller's job (see [`retry_delay`]).
    ///
    /// [`Mailer::Disabled`] returns a permanent error rather than pretending success: an outbox
    /// that believed a key email went out would never resend it once email is configured.
    pub async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let result = match self {
            Mailer::Postmark(client) => client.send(email).await,
            Mailer::Smtp(mailer) => mailer.send(email).await,
            Mailer::Disabled => {
                Err(SendError::Permanent("email is disabled: configure a Postmark server token or SMTP_URL".to_owned()))
            }
        };
        match &result {
            Ok(()) => tracing::info!(mailer = self.kind(), tag = ?email.tag, "email sent"),
            Err(err) => tracing::warn!(
                mailer = self.kind(),
                tag = ?email.tag,
                retryable = err.is_retryable(),
                error = %err,
                "email not sent"
            ),
        }
        result
    }

    /// Checks the credentials without sending anything: Postmark's `GET /server` with the
    /// token, or an SMTP connection with its login. [`Mailer::Disabled`] has none to check.
    pub async fn verify(&self) -> Result<(), VerifyError> {
        match self {
            Mailer::Postmark(client) => client.verify().await,
            Mailer::Smtp(mailer) => mailer.verify().await,
            Mailer::Disabled => Err(VerifyError::Refused("email is disabled".to_owned())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Mailer::Postmark(_) => "postmark",
            Mailer::Smtp(_) => "smtp",
            Mailer::Disabled => "disabled",
        }
    }
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(5 * 60);
const JITTER: f64 = 0.2;

/// Backoff schedule for the outbox worker: attempt n (0-based) -> delay; starts near 1 s,
/// doubles, capped at 5 min, with +-20% jitter.
///
/// The cap is a hard ceiling: no delay exceeds 5 min. Near and at the cap, a jittered value
/// above it is reflected back below it (300 s + x becomes 300 s - x), which keeps the spread
/// uniform instead of stacking every capped retry on exactly 5 min.
pub fn retry_delay(attempt: u32) -> Duration {
    // 2^9 s already exceeds the cap; clamping the exponent avoids overflow for huge attempts.
    let nominal = (FIRST_RETRY * (1u32 << attempt.min(9))).min(MAX_RETRY);
    let factor = 1.0 + JITTER * (2.0 * unit_random() - 1.0);
    let jittered = nominal.mul_f64(factor);
    if jittered > MAX_RETRY { MAX_RETRY.saturating_sub(jittered - MAX_RETRY) } else { jittered }
}

/// A uniform value in [0, 1). Jitter only has to de-synchronise retries, not resist prediction,
/// so std's randomly keyed SipHash (fresh keys per `RandomState`) is enough and saves a
/// dependency on `rand`.
fn unit_random() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    // The top 53 bits fill an f64 mantissa exactly.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The model named in the quickstart snippets: small, cheap, and routed by the gateway.
const QUICKSTART_MODEL: &str = "gpt-4o-mini";

/// Copy-paste snippets that call the gateway with `key` (the key itself in an email, its
/// prefix on the portal): the key email and the portal's quickstart page share them.
pub struct Quickstart {
    pub curl: String,
    pub python: String,
    pub node: String,
}

impl Quickstart {
    pub fn new(base_url: &str, key: &str) -> Quickstart {
        let base_url = base_url.trim_end_matches('/');
        let curl = format!(
            "curl {base_url}/chat/completions \\\n  \
             -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" \\\n  \
             -d '{{\"model\": \"{QUICKSTART_MODEL}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'"
        );
        let python = format!(
            "from openai import OpenAI\n\
             client = OpenAI(base_url=\"{base_url}\", api_key=\"{key}\")\n\
             print(client.chat.completions.create(model=\"{QUICKSTART_MODEL}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]).choices[0].message.content)"
        );
        let node = format!(
            "import OpenAI from \"openai\";\n\
             const client = new OpenAI({{ baseURL: \"{base_url}\", apiKey: \"{key}\" }});\n\
             const answer = await client.chat.completions.create({{ model: \"{QUICKSTART_MODEL}\", messages: [{{ role: \"user\", content: \"Hello!\" }}] }});\n\
             console.log(answer.choices[0].message.content);"
        );
        Quickstart { curl, python, node }
    }
}

/// Where a key email sends the customer: the API's base URL, and the portal's (`{public_url}/portal`)
/// when the operator configured a public URL (a listen address is no link to email).
#[derive(Clone, Copy)]
pub struct KeyEmailLinks<'a> {
    pub api_base: &'a str,
    pub portal: Option<&'a str>,
}

/// The email that hands a customer their new API key: the key, the base URL, and a quickstart
/// with curl and with the Python `openai` package, then the portal. The HTML part escapes every
/// interpolated value, so a hostile plan name or URL cannot inject markup.
pub fn key_email(to: EmailAddress, key: &str, links: KeyEmailLinks<'_>, plan: &str) -> OutgoingEmail {
    compose_key_email(to, key, links, &format!("Welcome to OMI ({plan} plan)."), "Your OMI API key")
}

/// A rotation's email: which key was replaced (by its display prefix, never its secret), then
/// the new key as [`key_email`] hands it over.
pub fn replacement_key_email(
    to: EmailAddress,
    key: &str,
    links: KeyEmailLinks<'_>,
    plan: &str,
    replaced_prefix: &str,
) -> OutgoingEmail {
    let intro = format!(
        "Your OMI API key {replaced_prefix}… was replaced ({plan} plan). The old key stops working as announced \
         when it was rotated; use this one from now on."
    );
    compose_key_email(to, key, links, &intro, "Your OMI API key was replaced")
}

fn compose_key_email(
    to: EmailAddress,
    key: &str,
    links: KeyEmailLinks<'_>,
    intro: &str,
    subject: &str,
) -> OutgoingEmail {
    let base_url = links.api_base.trim_end_matches('/');
    let Quickstart { curl, python, .. } = Quickstart::new(base_url, key);
    let portal_text = links.portal.map_or_else(String::new, |portal| {
        format!("\nYour usage, your keys (create, rotate, revoke) and your billing: {portal}\n")
    });
    let portal_html = links.portal.map_or_else(String::new, |portal| {
        let portal = html_escape(portal);
        format!("<p>Your usage, your keys (create, rotate, revoke) and your billing: <a href=\"{portal}\">{portal}</a></p>\n")
    });

    let text_body = format!(
        "{intro}\n\
         \n\
         Your API key:\n\
         \n\
         {key}\n\
         \n\
         Keep it secret: anyone holding it can spend your quota. We store only a hash of it, \
         so we cannot show it again; if you lose it, ask us for a new one.\n\
         \n\
         Base URL: {base_url}\n\
         It speaks the OpenAI API, so any OpenAI client works.\n\
         \n\
         Quickstart with curl:\n\
         \n\
         {curl}\n\
         \n\
         Quickstart with Python (pip install openai):\n\
         \n\
         {python}\n\
         {portal_text}"
    );

    let html_body = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n\
         <p>{intro}</p>\n\
         <p>Your API key:</p>\n\
         <pre style=\"font-size: 1.1em\"><code>{key}</code></pre>\n\
         <p>Keep it secret: anyone holding it can spend your quota. We store only a hash of it, \
         so we cannot show it again; if you lose it, ask us for a new one.</p>\n\
         <p>Base URL: <code>{base_url}</code><br>It speaks the OpenAI API, so any OpenAI client works.</p>\n\
         <p>Quickstart with curl:</p>\n<pre><code>{curl}</code></pre>\n\
         <p>Quickstart with Python (<code>pip install openai</code>):</p>\n<pre><code>{python}</code></pre>\n\
         {portal_html}\
         </body></html>\n",
        intro = html_escape(intro),
        key = html_escape(key),
        base_url = html_escape(base_url),
        curl = html_escape(&curl),
        python = html_escape(&python),
    );

    OutgoingEmail {
        to,
        subject: subject.to_owned(),
        text_body,
        html_body: Some(html_body),
        tag: Some("api-key".to_owned()),
    }
}

/// A prepaid balance fell to its low-balance threshold, or to zero: how much is left and what
/// to do. Text only: nothing in it is the customer's.
pub fn credit_email(
    to: EmailAddress,
    level: crate::store::CreditLevel,
    balance_nano: i64,
    base_url: &str,
) -> OutgoingEmail {
    let left = format!("${:.2}", super::prices::nano_to_usd(i128::from(balance_nano)).max(0.0));
    let (subject, body) = match level {
        crate::store::CreditLevel::Low => (
            "Your OMI credit is running low",
            format!(
                "Your prepaid OMI credit is running low: {left} left. Buy a credit pack to keep your requests going."
            ),
        ),
        crate::store::CreditLevel::Exhausted => (
            "Your OMI credit is used up",
            "Your prepaid OMI credit is used up: requests are refused (HTTP 402, insufficient_credits) \
             until you buy a credit pack."
                .to_owned(),
        ),
    };
    OutgoingEmail {
        to,
        subject: subject.to_owned(),
        text_body: format!("{body}\n\nAPI: {}\n", base_url.trim_end_matches('/')),
        html_body: None,
        tag: Some(level.as_str().to_owned()),
    }
}

/// The email that signs a customer in to the portal: one link, single use, short-lived.
pub fn portal_link_email(to: EmailAddress, link: &str) -> OutgoingEmail {
    let text_body = format!(
        "Sign in to your OMI portal:\n\n{link}\n\n\
         The link works once, within 15 minutes. If you did not ask for it, ignore this email: \
         nobody can sign in without it.\n"
    );
    let html_body = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n\
         <p><a href=\"{link}\">Sign in to your OMI portal</a></p>\n\
         <p>The link works once, within 15 minutes. If you did not ask for it, ignore this email: \
         nobody can sign in without it.</p>\n</body></html>\n",
        link = html_escape(link),
    );
    OutgoingEmail {
        to,
        subject: "Your OMI sign-in link".to_owned(),
        text_body,
        html_body: Some(html_body),
        tag: Some("portal-link".to_owned()),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Removes a secret from text that came from outside (a server's reply, a library's error):
/// we cannot prove a remote peer never echoes what we sent, so every error message passes here.
fn redact(text: &str, secret: &SecretString) -> String {
    let secret = secret.expose_secret();
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, "[redacted]") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_one_second_within_jitter() {
        for attempt in 0..9 {
            let nominal = f64::from(1u32 << attempt).min(300.0);
            for _ in 0..50 {
                let d = retry_delay(attempt).as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9 && d <= (nominal * 1.2).min(300.0) + 1e-9,
                    "attempt {attempt}: {d} s outside ±20% of {nominal} s"
                );
            }
        }
    }

    #[test]
    fn retry_delay_is_capped_at_five_minutes() {
        for attempt in [9, 10, 20, 31, 32, 1000, u32::MAX] {
            for _ in 0..50 {
                let d = retry_delay(attempt);
                assert!(d <= Duration::from_secs(300), "attempt {attempt}: {d:?}");
                assert!(d >= Duration::from_secs(240), "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn retry_delay_is_jittered() {
        let samples: std::collections::HashSet<Duration> = (0..20).map(|_| retry_delay(5)).collect();
        assert!(samples.len() > 10, "jitter produced too few distinct delays");
    }

    fn sample_key_email(plan: &str, base_url: &str) -> OutgoingEmail {
        let links = KeyEmailLinks { api_base: base_url, portal: None };
        key_email(EmailAddress::parse("ada@example.com").unwrap(), "omi_live_Abc123", links, plan)
    }

    #[test]
    fn key_emails_link_to_the_portal_when_there_is_a_public_url() {
        let to = || EmailAddress::parse("ada@example.com").unwrap();
        let links =
            KeyEmailLinks { api_base: "https://api.example.com/v1", portal: Some("https://api.example.com/portal") };
        let replaced = replacement_key_email(to(), "omi_live_Abc123", links, "pro", "omi_OldPrefx");
        for email in [key_email(to(), "omi_live_Abc123", links, "pro"), replaced] {
            assert!(email.text_body.contains("your billing: https://api.example.com/portal\n"), "{}", email.text_body);
            let html = email.html_body.unwrap();
            assert!(html.contains("<a href=\"https://api.example.com/portal\">"), "{html}");
        }
        let without = sample_key_email("pro", "http://0.0.0.0:8080/v1");
        assert!(!without.text_body.contains("/portal") && !without.html_body.unwrap().contains("/portal"));
    }

    #[test]
    fn key_email_has_key_base_url_and_quickstart() {
        let email = sample_key_email("pro", "https://api.example.com/v1/");
        assert_eq!(email.to.as_str(), "ada@example.com");
        assert_eq!(email.subject, "Your OMI API key");
        let text = &email.text_body;
        assert!(text.contains("\nomi_live_Abc123\n"), "{text}");
        assert!(text.contains("Base URL: https://api.example.com/v1\n"), "{text}");
        assert!(text.contains("pro plan"), "{text}");
        assert!(text.contains("curl https://api.example.com/v1/chat/completions"), "{text}");
        assert!(text.contains("-H \"Authorization: Bearer omi_live_Abc123\""), "{text}");
        assert!(text.contains("from openai import OpenAI\n"), "{text}");
        assert!(
            text.contains("OpenAI(base_url=\"https://api.example.com/v1\", api_key=\"omi_live_Abc123\")"),
            "{text}"
        );

        let html = email.html_body.as_deref().unwrap();
        assert!(html.contains("<code>omi_live_Abc123</code>"), "{html}");
        assert!(html.contains("https://api.example.com/v1/chat/completions"));
        assert!(
            html.contains(
                "OpenAI(base_url=&quot;https://api.example.com/v1&quot;, api_key=&quot;omi_live_Abc123&quot;)"
            )
        );
    }

    #[test]
    fn credit_emails_say_what_is_left_and_what_to_do() {
        let to = || EmailAddress::parse("ada@example.com").unwrap();
        let low = credit_email(to(), crate::store::CreditLevel::Low, 1_750_000_000, "https://api.omi.example/v1/");
        assert_eq!(low.subject, "Your OMI credit is running low");
        assert!(low.text_body.contains("$1.75 left") && low.text_body.contains("https://api.omi.example/v1\n"));
        let out = credit_email(to(), crate::store::CreditLevel::Exhausted, -500_000_000, "https://api.omi.example/v1");
        assert!(out.text_body.contains("402") && !out.text_body.contains('-'), "{}", out.text_body);
        assert_eq!(out.tag.as_deref(), Some("credit_exhausted"));
    }

    #[test]
    fn portal_link_email_carries_the_link_escaped() {
        let to = EmailAddress::parse("ada@example.com").expect("valid");
        let email = portal_link_email(to, "https://api.example.com/portal/login/ab12?x=<b>");
        assert!(email.text_body.contains("https://api.example.com/portal/login/ab12?x=<b>"));
        let html = email.html_body.expect("html part");
        assert!(html.contains("href=\"https://api.example.com/portal/login/ab12?x=&lt;b&gt;\""), "{html}");
        assert!(!html.contains("<b>"));
        assert_eq!(email.tag.as_deref(), Some("portal-link"));
    }

    #[test]
    fn key_email_escapes_html() {
        let email = sample_key_email("<script>alert('x')</script>", "https://h/v1?a=1&b=2");
        let html = email.html_body.as_deref().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("https://h/v1?a=1&amp;b=2"));
        assert!(!html.contains("a=1&b=2"));
        // The plain-text part is not HTML and must stay copy-pasteable.
        assert!(email.text_body.contains("https://h/v1?a=1&b=2"));
    }

    #[test]
    fn a_replacement_email_names_the_old_key_by_prefix_and_hands_over_the_new_one() {
        let to = EmailAddress::parse("ada@example.com").unwrap();
        let links = KeyEmailLinks { api_base: "https://api.example.com/v1", portal: None };
        let email = replacement_key_email(to, "omi_live_Abc123", links, "pro", "omi_OldPrefx");
        assert_eq!(email.subject, "Your OMI API key was replaced");
        assert!(
            email.text_body.starts_with("Your OMI API key omi_OldPrefx… was replaced (pro plan)."),
            "{}",
            email.text_body
        );
        assert!(email.text_body.contains("\nomi_live_Abc123\n"));
        assert!(email.html_body.as_deref().unwrap().contains("omi_OldPrefx… was replaced"));
    }

    #[test]
    fn outgoing_email_debug_hides_bodies() {
        let email = sample_key_email("pro", "https://api.example.com/v1");
        let debug = format!("{email:?}");
        assert!(!debug.contains("omi_live_Abc123"), "{debug}");
        assert!(debug.contains("ada@example.com"), "{debug}");
    }

    #[test]
    fn send_error_retryability() {
        assert!(SendError::Transient("x".into()).is_retryable());
        assert!(!SendError::Permanent("x".into()).is_retryable());
    }

    #[test]
    fn redact_removes_every_occurrence() {
        let secret = SecretString::from("s3cr3t");
        assert_eq!(redact("a s3cr3t b s3cr3t", &secret), "a [redacted] b [redacted]");
        assert_eq!(redact("abc", &SecretString::from("")), "abc");
    }
}
