//! `omi doctor`: checks the configuration and every service it names, one line each, before a
//! customer finds the mistake. Checks that call out run concurrently, each within a timeout, so
//! a dead host costs one timeout, not a hang. A check only reads or asks (`GET /models`,
//! Postmark's `GET /server`, an SMTP login, `PING`), except what the operator asks for by flag:
//! a test email (`--send-test-email`), a test message to Slack and n8n (`--notify-test`).
//! No line ever shows a secret: messages name settings, never their values.

use crate::agents::delivery::{Outcome, Webhook};
use crate::agents::hawk::probe::RedisProbe;
use crate::agents::n8n::{N8nEvent, N8nSender};
use crate::billing::mailer::{EmailAddress, Mailer, OutgoingEmail, VerifyError};
use crate::billing::prices::PriceTable;
use crate::config::Config;
use crate::providers::{Provider, Providers};
use crate::store::Store;
use crate::web::error_chain::error_chain;
use futures_util::future::BoxFuture;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Longest a check that calls out may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A verifying secret shorter than this is accepted (`MIN_SECRET_CHARS`) but worth replacing.
const RECOMMENDED_SECRET_CHARS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but probably not as the operator meant; does not fail `omi doctor`.
    Warn,
    Fail,
}

/// One line of the report: `{"check", "status", "message"}` in `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
}

impl Check {
    fn new(check: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
        Check { check: check.into(), status, message: message.into() }
    }

    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message)
    }

    pub fn warn(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, message)
    }

    pub fn fail(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, message)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        };
        write!(f, "{status:<4}  {}: {}", self.check, self.message)
    }
}

/// What the operator asked for beyond the checks.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send one real email here through the configured transport.
    pub send_test_email: Option<EmailAddress>,
    /// Post a test message to Slack and n8n.
    pub notify_test: bool,
    /// Per check that calls out.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options { send_test_email: None, notify_test: false, timeout: DEFAULT_TIMEOUT }
    }
}

/// Every check, in a fixed order (configuration first, then each service).
pub async fn run(config: &Config, options: &Options) -> Vec<Check> {
    let mut checks = Vec::new();
    let http = match crate::app::outbound_client(config) {
        Ok(http) => http,
        Err(e) => return vec![Check::fail("http client", e.to_string())],
    };
    let providers =
        match Providers::from_config(config, &PriceTable::openai_built_in_models(), |var| std::env::var(var).ok()) {
            Ok(providers) => providers,
            Err(e) => return vec![Check::fail("providers", e.to_string())],
        };

    // Calls out: concurrently, each bounded.
    let mut probes: Vec<(String, BoxFuture<'_, Check>)> = vec![("database".into(), Box::pin(database(config)))];
    if let Some(url) = &config.redis_url {
        probes.push(("redis".into(), Box::pin(redis(url))));
    }
    for provider in providers.iter() {
        probes.push((provider_check_name(provider), Box::pin(provider_check(provider, &http))));
    }
    match crate::app::build_mailer(config, http.clone()) {
        Err(e) => checks.push(Check::fail("email", format!("{e}"))),
        Ok(Mailer::Disabled) => {
            checks.push(Check::warn(
                "email",
                "no transport: key emails are not sent; set POSTMARK_SERVER_TOKEN or SMTP_URL",
            ));
            if options.send_test_email.is_some() {
                checks.push(Check::fail("test email", "not sent: no email transport is configured"));
            }
        }
        Ok(mailer) => {
            let mailer = std::sync::Arc::new(mailer);
            probes.push(("email".into(), Box::pin(email(mailer.clone()))));
            if let Some(to) = &options.send_test_email {
                probes.push(("test email".into(), Box::pin(test_email(mailer, to.clone()))));
            }
        }
    }
    match &config.slack_webhook_url {
        None => checks.push(Check::warn("slack", "SLACK_WEBHOOK_URL is unset: alerts show only on the dashboard")),
        Some(url) if options.notify_test => probes.push(("slack".into(), Box::pin(slack_test(url, &http)))),
        Some(_) => checks.push(Check::ok("slack", "configured (post a test message with --notify-test)")),
    }
    match N8nSender::from_config(config, http.clone()) {
        None => checks.push(Check::ok("n8n", "not configured")),
        Some(sender) if options.notify_test => probes.push(("n8n".into(), Box::pin(n8n_test(sender)))),
        Some(sender) if !sender.signs() => {
            checks.push(Check::warn("n8n", "configured without N8N_WEBHOOK_SECRET: deliveries go unsigned"))
        }
        Some(_) => checks.push(Check::ok("n8n", "configured (post a test event with --notify-test)")),
    }

    // Read from the configuration alone.
    checks.push(lemonsqueezy(config));
    checks.push(prices(&providers, &PriceTable::new(&config.prices)));
    checks.push(secrets(config));
    checks.push(trusted_proxies(config.trusted_proxies.networks()));

    let timeout = options.timeout;
    let answered = futures_util::future::join_all(probes.into_iter().map(|(name, probe)| async move {
        tokio::time::timeout(timeout, probe).await.unwrap_or_else(|_| {
            Check::fail(
                name,
                format!("no answer within {} s: is the host up and reachable from here?", timeout.as_secs_f32()),
            )
        })
    }))
    .await;
    answered.into_iter().chain(checks).collect()
}

/// Whether the report fails `omi doctor` (exit 1): any check failed; warnings do not.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

async fn database(config: &Config) -> Check {
    const NAME: &str = "database";
    let url = config.database_url.expose_secret();
    // Connecting would create the file: say instead that there is none yet.
    if let Some(path) = crate::store::sqlite_path(url)
        && !path.starts_with(":memory:")
        && !std::path::Path::new(path).exists()
    {
        return Check::warn(
            NAME,
            format!("sqlite: no database at {path} yet: `omi migrate` or `omi serve` creates it"),
        );
    }
    let store = match Store::connect(url).await {
        Ok(store) => store,
        Err(e) => return Check::fail(NAME, format!("unreachable: {e}; check DATABASE_URL")),
    };
    let status = store.migration_status().await;
    let backend = store.backend();
    store.close().await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return Check::fail(NAME, format!("{backend}: cannot read the applied migrations: {e}")),
    };
    let list = |versions: &[i64]| versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    if !status.unknown.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "{backend}: applied migrations this omi does not know ({}): a newer omi migrated it; run that version",
                list(&status.unknown)
            ),
        );
    }
    if !status.modified.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "{backend}: migrations changed since they were applied ({}): restore their original text",
                list(&status.modified)
            ),
        );
    }
    if !status.pending.is_empty() {
        return Check::warn(
            NAME,
            format!(
                "{backend}: {} of {} migrations not applied ({}): run `omi migrate` (omi serve applies them at start)",
                status.pending.len(),
                status.known,
                list(&status.pending)
            ),
        );
    }
    Check::ok(NAME, format!("{backend}: reachable, all {} migrations applied", status.known))
}

async fn redis(url: &SecretString) -> Check {
    let result = match RedisProbe::new(url) {
        Ok(mut probe) => probe.ping().await,
        Err(why) => Err(why),
    };
    match result {
        Ok(()) => Check::ok("redis", "PING answered"),
        Err(why) => Check::fail("redis", format!("unreachable: {why}; check REDIS_URL")),
    }
}

fn provider_check_name(provider: &Provider) -> String {
    format!("provider {}", provider.name)
}

/// `GET {base}/models` with each house key (no tokens spent), naming the variable of any key
/// refused; without a house key, only whether the host answers.
async fn provider_check(provider: &Provider, http: &reqwest::Client) -> Check {
    let name = provider_check_name(provider);
    let who = &provider.name;
    let url = format!("{}/models", provider.base_url);
    let unreachable = |e: reqwest::Error| format!("unreachable: {}; check its base_url", error_chain(&e.without_url()));
    if provider.house_keys.is_empty() {
        return match http.get(&url).send().await {
            Err(e) => Check::fail(name, unreachable(e)),
            Ok(_) if provider.byok => {
                Check::ok(name, "reachable; no house key: serves requests that bring their own (X-Provider-Key)")
            }
            Ok(_) => Check::warn(name, "reachable, but it serves nothing: no house key and byok is off"),
        };
    }
    let (mut refused, mut odd) = (Vec::new(), Vec::new());
    for (variable, key) in provider.house_keys.keys() {
        let mut headers = http::HeaderMap::new();
        provider.wire().authorize(&mut headers, key);
        let answer = match http.get(&url).headers(headers).send().await {
            Ok(response) => response.status().as_u16(),
            Err(e) => return Check::fail(name, unreachable(e)),
        };
        match answer {
            200..=299 => {}
            401 | 403 => refused.push(format!("{variable}: HTTP {answer}")),
            _ => odd.push(format!("{variable}: HTTP {answer}")),
        }
    }
    if !refused.is_empty() {
        return Check::fail(
            name,
            format!("house key for provider {who} refused ({}): replace the key in that variable", refused.join(", ")),
        );
    }
    if !odd.is_empty() {
        return Check::warn(name, format!("reachable, but GET /models answered {}", odd.join(", ")));
    }
    match provider.house_keys.len() {
        1 => Check::ok(name, "reachable, house key accepted"),
        keys => Check::ok(name, format!("reachable, all {keys} house keys accepted")),
    }
}

async fn email(mailer: std::sync::Arc<Mailer>) -> Check {
    let transport = mailer.kind();
    match mailer.verify().await {
        Ok(()) => Check::ok("email", format!("{transport}: credentials accepted")),
        Err(VerifyError::Refused(why)) => Check::fail("email", format!("{transport}: {why}")),
        Err(VerifyError::Unreachable(why)) => Check::fail("email", format!("{transport}: unreachable: {why}")),
    }
}

async fn test_email(mailer: std::sync::Arc<Mailer>, to: EmailAddress) -> Check {
    let email = OutgoingEmail {
        subject: "omi doctor: test email".into(),
        text_body: "This is a test email from `omi doctor`: key emails can reach your customers.\n".into(),
        html_body: None,
        tag: Some("doctor".into()),
        to: to.clone(),
    };
    match mailer.send(&email).await {
        Ok(()) => Check::ok("test email", format!("sent to {to}")),
        Err(e) => Check::fail("test email", format!("not sent to {to}: {e}")),
    }
}

fn delivery_check(name: &str, outcome: Outcome) -> Check {
    match outcome {
        Outcome::Delivered => Check::ok(name, "test message delivered"),
        Outcome::Refused(why) => Check::fail(name, format!("refused the test message: {why}")),
        Outcome::GaveUp(why) => Check::fail(name, format!("did not take the test message: {why}")),
    }
}

async fn slack_test(url: &SecretString, http: &reqwest::Client) -> Check {
    let webhook = Webhook::new("slack", url.clone(), http.clone());
    let body = serde_json::json!({"text": "omi doctor: test message. Alerts will arrive here."});
    delivery_check("slack", webhook.post(body.to_string().into_bytes().into(), &[]).await)
}

async fn n8n_test(sender: N8nSender) -> Check {
    let event = N8nEvent::new("doctor_test", serde_json::json!({})).with_text("omi doctor: test event");
    delivery_check("n8n", sender.send(&event).await)
}

fn lemonsqueezy(config: &Config) -> Check {
    match config.lemonsqueezy_signing_secret {
        Some(_) => Check::ok("lemonsqueezy", "signing secret set"),
        None => Check::warn(
            "lemonsqueezy",
            "LEMONSQUEEZY_SIGNING_SECRET is unset: the webhook refuses every call and sells no key",
        ),
    }
}

fn prices(providers: &Providers, prices: &PriceTable) -> Check {
    let unpriced: Vec<String> =
        providers.unpriced(prices).map(|(model, provider)| format!("{model} ({provider})")).collect();
    if unpriced.is_empty() {
        Check::ok("prices", "every listed model has a price")
    } else {
        Check::warn(
            "prices",
            format!(
                "no price for {}: their cost is unknown and capped plans refuse them; add them to [prices]",
                unpriced.join(", ")
            ),
        )
    }
}

fn secrets(config: &Config) -> Check {
    let short: Vec<&str> = [
        ("OMI_ADMIN_KEY", &config.admin_key),
        ("LEMONSQUEEZY_SIGNING_SECRET", &config.lemonsqueezy_signing_secret),
        ("N8N_WEBHOOK_SECRET", &config.n8n_webhook_secret),
    ]
    .into_iter()
    .filter(|(_, secret)| {
        secret.as_ref().is_some_and(|s| s.expose_secret().trim().chars().count() < RECOMMENDED_SECRET_CHARS)
    })
    .map(|(variable, _)| variable)
    .collect();
    if short.is_empty() {
        Check::ok("secrets", format!("every secret set is at least {RECOMMENDED_SECRET_CHARS} characters"))
    } else {
        Check::warn(
            "secrets",
            format!(
                "{} shorter than {RECOMMENDED_SECRET_CHARS} characters: use a long random value (`openssl rand -hex 32`)",
                short.join(", ")
            ),
        )
    }
}

/// A trusted network lets every address in it say who the client is: one wider than any
/// single operator's (an IPv4 range wider than /8, an IPv6 one wider than /20, outside the
/// private ranges) lets clients choose their own IP and country.
fn trusted_proxies<'a>(networks: impl Iterator<Item = &'a IpNet>) -> Check {
    let too_wide: Vec<String> = networks
        .filter(|net| match net {
            IpNet::V4(v4) => v4.prefix_len() < 8,
            IpNet::V6(v6) => {
                let private = ["fc00::/7", "fe80::/10"]
                    .iter()
                    .filter_map(|range| range.parse::<ipnet::Ipv6Net>().ok())
                    .any(|range| range.contains(v6));
                v6.prefix_len() < 20 && !private
            }
        })
        .map(IpNet::to_string)
        .collect();
    if too_wide.is_empty() {
        Check::ok("trusted proxies", "none trusts more than one network's addresses")
    } else {
        Check::warn(
            "trusted proxies",
            format!(
                "OMI_TRUSTED_PROXIES trusts {}: any client there sets its own IP and country; list only your proxies",
                too_wide.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(list: &str) -> Check {
        let proxies: crate::firewall::TrustedProxies = list.parse().expect("valid list");
        trusted_proxies(proxies.networks())
    }

    #[test]
    fn trusted_proxies_wider_than_one_network_are_warned_about() {
        for wide in ["0.0.0.0/0", "2.0.0.0/7", "::/0", "2000::/3"] {
            let check = judged(wide);
            assert_eq!(check.status, Status::Warn, "{wide}: {check}");
            assert!(check.message.contains(wide), "{check}");
        }
        for fine in ["", "10.0.0.0/8", "192.168.1.1", "cloudflare", "fc00::/7", "2001:db8::/32", "8.0.0.0/8"] {
            assert_eq!(judged(fine).status, Status::Ok, "{fine}");
        }
    }

    #[test]
    fn a_line_is_status_check_and_message() {
        assert_eq!(Check::warn("prices", "no price").to_string(), "warn  prices: no price");
        assert_eq!(Check::ok("redis", "PING").to_string(), "ok    redis: PING");
        assert!(failed(&[Check::ok("a", ""), Check::fail("b", "")]));
        assert!(!failed(&[Check::ok("a", ""), Check::warn("b", "")]));
    }
}
