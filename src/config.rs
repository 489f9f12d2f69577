//! Configuration: built-in defaults, then `omi.toml` (from `--config` or `OMI_CONFIG`, if
//! present), then environment variables, which win. Secrets are `SecretString`s from the
//! moment they are read, so no `Debug` or log line can print them.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
}

/// Environment variables of INTERFACE.md and the setting each one fills.
const ENV_SETTINGS: &[(&str, &str)] = &[
    ("OMI_LISTEN", "listen"),
    ("PORT", "port"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("OMI_ADMIN_KEY", "admin_key"),
    ("OPENAI_API_KEY", "openai_api_key"),
    ("OPENAI_BASE_URL", "openai_base_url"),
    ("OMI_PUBLIC_URL", "public_url"),
    ("OMI_MAX_BODY_BYTES", "max_body_bytes"),
    ("OMI_UPSTREAM_CONNECT_TIMEOUT_MS", "upstream_connect_timeout_ms"),
    ("OMI_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "upstream_first_byte_timeout_ms"),
    ("OMI_UPSTREAM_IDLE_TIMEOUT_MS", "upstream_idle_timeout_ms"),
    ("OMI_SHUTDOWN_GRACE_MS", "shutdown_grace_ms"),
    ("OMI_LOG_FORMAT", "log_format"),
    ("LEMONSQUEEZY_SIGNING_SECRET", "lemonsqueezy_signing_secret"),
    ("POSTMARK_SERVER_TOKEN", "postmark_server_token"),
    ("POSTMARK_API_URL", "postmark_api_url"),
    ("SMTP_URL", "smtp_url"),
    ("OMI_EMAIL_FROM", "email_from"),
    ("OMI_PAYMENT_GRACE_HOURS", "payment_grace_hours"),
    ("OMI_METERING", "metering"),
    ("SLACK_WEBHOOK_URL", "slack_webhook_url"),
    ("N8N_WEBHOOK_URL", "n8n_webhook_url"),
    ("N8N_WEBHOOK_SECRET", "n8n_webhook_secret"),
    ("OMI_LATENCY_ALERT_MS", "hawk.latency_alert_ms"),
];

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Full listen address; `PORT` alone binds 0.0.0.0:PORT (Render/Railway).
    pub listen: Option<String>,
    pub port: Option<u16>,
    pub database_url: SecretString,
    pub redis_url: Option<SecretString>,
    pub admin_key: Option<SecretString>,
    pub openai_api_key: Option<SecretString>,
    pub openai_base_url: String,
    /// Public base URL of this gateway, used in key emails (`https://api.example.com`).
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_first_byte_timeout_ms: u64,
    pub upstream_idle_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// `text` (default) or `json`.
    pub log_format: String,
    /// Upstream providers; empty means one `openai` provider from `OPENAI_BASE_URL`.
    pub providers: Vec<ProviderConfig>,
    /// Price overrides and additions, USD per million tokens, by model name.
    pub prices: BTreeMap<String, ModelPrice>,
    /// Lemon Squeezy webhook signing secret; the webhook refuses every call without it.
    pub lemonsqueezy_signing_secret: Option<SecretString>,
    pub postmark_server_token: Option<SecretString>,
    pub postmark_api_url: Option<String>,
    /// `smtps://user:pass@host:465`, `smtp://user:pass@host:587` (STARTTLS), or `smtp://host:25?tls=none`.
    pub smtp_url: Option<SecretString>,
    /// Sender of key emails.
    pub email_from: Option<String>,
    /// After `subscription_payment_failed`, the key keeps working this long before suspension.
    pub payment_grace_hours: u64,
    /// Plans sold through Lemon Squeezy; empty means every paid order vends `pro` at $29/month.
    pub plans: Vec<PlanConfig>,
    /// Payment processor fee taken from each payment in margin reports (Lemon Squeezy: 5% + 50¢).
    pub payment_fee_percent: f64,
    pub payment_fee_fixed_cents: i64,
    /// The Accountant's usage records (on by default; off only to measure its cost).
    pub metering: bool,
    /// Slack incoming webhook for the Hawk's alerts (the URL is the credential).
    pub slack_webhook_url: Option<SecretString>,
    /// Every agent event is also POSTed here as signed JSON.
    pub n8n_webhook_url: Option<SecretString>,
    /// Key of the `X-Omi-Signature` HMAC on n8n deliveries.
    pub n8n_webhook_secret: Option<SecretString>,
    /// The Hawk's rules (`[hawk]` in omi.toml).
    pub hawk: HawkConfig,
}

/// Thresholds and timings of the Hawk's alert rules. Windows slide; an alert fires once,
/// reminds at most every `repeat_interval_secs`, and resolves after `resolve_after_secs`
/// without a new trigger (`flap_resolve_after_secs` once it has fired twice within
/// `repeat_interval_secs`, so a flapping alert cannot page on every swing).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HawkConfig {
    /// A request slower than this (non-streamed, total time) triggers the latency alert.
    pub latency_alert_ms: u64,
    /// The sliding window the thresholds below count in.
    pub window_secs: u64,
    /// Upstream or gateway 5xx answers per window, per model, that fire an alert...
    pub server_errors_fire: u64,
    /// ...and that make it critical.
    pub server_errors_critical: u64,
    /// Requests per window, per provider, that could not reach it (connection failure or 504).
    pub unreachable_fire: u64,
    /// Failed database or Redis probes per window that fire an alert.
    pub probe_failures_fire: u64,
    pub probe_interval_secs: u64,
    pub repeat_interval_secs: u64,
    pub resolve_after_secs: u64,
    pub flap_resolve_after_secs: u64,
    /// Slack: how long to gather notifications into one message (Slack allows about one a second).
    pub group_wait_ms: u64,
    /// When set, n8n deliveries also carry `N8N_WEBHOOK_SECRET` in this header, for n8n's
    /// Header Auth (the HMAC signature is sent either way).
    pub n8n_auth_header: Option<String>,
}

impl Default for HawkConfig {
    fn default() -> HawkConfig {
        HawkConfig {
            latency_alert_ms: 5_000,
            window_secs: 60,
            server_errors_fire: 5,
            server_errors_critical: 10,
            unreachable_fire: 3,
            probe_failures_fire: 2,
            probe_interval_secs: 5,
            repeat_interval_secs: 3_600,
            resolve_after_secs: 300,
            flap_resolve_after_secs: 1_800,
            group_wait_ms: 1_000,
            n8n_auth_header: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PlanConfig {
    pub name: String,
    /// Monthly price in USD (display and reports; revenue itself comes from the ledger).
    pub monthly_price_usd: f64,
    /// Lemon Squeezy variant ids that buy this plan.
    #[serde(default)]
    pub variant_ids: Vec<i64>,
    /// Upstream cost a customer may run up per calendar month (UTC); over it: 429 `quota_exceeded`.
    #[serde(default)]
    pub monthly_budget_usd: Option<f64>,
    /// Prompt + completion tokens a customer may use per calendar month (UTC).
    #[serde(default)]
    pub monthly_token_quota: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    /// OpenAI-compatible base URL, ending in `/v1` for most providers.
    pub base_url: String,
    /// Environment variable holding this provider's house key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model names routed here; also reachable as `name/model`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Takes every model that no provider lists.
    #[serde(default)]
    pub catch_all: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct ModelPrice {
    pub input: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: None,
            port: None,
            database_url: SecretString::from("sqlite://omi.db"),
            redis_url: None,
            admin_key: None,
            openai_api_key: None,
            openai_base_url: "https://api.openai.com/v1".into(),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            upstream_connect_timeout_ms: 5_000,
            upstream_first_byte_timeout_ms: 120_000,
            upstream_idle_timeout_ms: 60_000,
            shutdown_grace_ms: 30_000,
            log_format: "text".into(),
            providers: Vec::new(),
            prices: BTreeMap::new(),
            lemonsqueezy_signing_secret: None,
            postmark_server_token: None,
            postmark_api_url: None,
            smtp_url: None,
            email_from: None,
            payment_grace_hours: 72,
            plans: Vec::new(),
            payment_fee_percent: 0.0,
            payment_fee_fixed_cents: 0,
            metering: true,
            slack_webhook_url: None,
            n8n_webhook_url: None,
            n8n_webhook_secret: None,
            hawk: HawkConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults < TOML file < process environment (after `.env`, if present).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Config::from_figment(Config::figment(file)?)
    }

    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        // Missing settings take `Config::default()` through `#[serde(default)]`.
        let mut figment = Figment::new();
        let file = file.map(Path::to_path_buf).or_else(|| std::env::var_os("OMI_CONFIG").map(Into::into));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::File { path: path.display().to_string(), message: "not found".into() });
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::raw().filter_map(|key| {
            ENV_SETTINGS
                .iter()
                .find(|(var, _)| key.as_str().eq_ignore_ascii_case(var))
                .map(|(_, setting)| (*setting).into())
        });
        Ok(figment.merge(env))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("max_body_bytes must be at least 1024".into()));
        }
        let hawk = &self.hawk;
        if hawk.window_secs == 0 || hawk.probe_interval_secs == 0 || hawk.server_errors_fire == 0 {
            return Err(ConfigError::Invalid(
                "hawk: window_secs, probe_interval_secs and server_errors_fire must be at least 1".into(),
            ));
        }
        if let Some(name) = &hawk.n8n_auth_header
            && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(ConfigError::Invalid(format!("hawk.n8n_auth_header `{name}` is not a header name")));
        }
        for provider in &self.providers {
            if !(provider.base_url.starts_with("http://") || provider.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}`: base_url must start with http:// or https://",
                    provider.name
                )));
            }
        }
        Ok(())
    }

    /// The plan a Lemon Squeezy variant buys: with no plans configured, every variant buys
    /// the default plan; otherwise only the listed variants buy anything.
    pub fn plan_for_variant(&self, variant_id: Option<i64>) -> Option<&str> {
        if self.plans.is_empty() {
            return Some(crate::DEFAULT_PLAN);
        }
        let variant = variant_id?;
        self.plans.iter().find(|p| p.variant_ids.contains(&variant)).map(|p| p.name.as_str())
    }

    /// Where this gateway is reached from outside, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen_addr().map(|a| a.to_string()).unwrap_or_default()),
        }
    }

    /// Where customers reach the API (`…/v1`), as written in key emails.
    pub fn public_api_base(&self) -> String {
        format!("{}/v1", self.public_base())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        match (&self.listen, self.port) {
            (Some(addr), _) => {
                addr.parse().map_err(|_| ConfigError::Invalid(format!("OMI_LISTEN `{addr}` is not host:port")))
            }
            (None, Some(port)) => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
            (None, None) => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own (large) error
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_then_file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "omi.toml",
                r#"
                database_url = "sqlite://from-file.db"
                openai_base_url = "http://file.example/v1"
                [[providers]]
                name = "groq"
                base_url = "https://api.groq.com/openai/v1"
                api_key_env = "GROQ_API_KEY"
                models = ["llama-3.1-8b-instant"]
                [prices.my-model]
                input = 1.0
                output = 2.0
                "#,
            )?;
            jail.set_env("DATABASE_URL", "postgres://env@localhost/db");
            jail.set_env("PORT", "9999");
            let config =
                Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment")).expect("config");
            assert_eq!(config.database_url.expose_secret(), "postgres://env@localhost/db");
            assert_eq!(config.openai_base_url, "http://file.example/v1");
            assert_eq!(config.providers[0].models, vec!["llama-3.1-8b-instant".to_string()]);
            assert_eq!(config.prices["my-model"].output, 2.0);
            assert_eq!(config.listen_addr().expect("addr"), "0.0.0.0:9999".parse().expect("addr"));
            Ok(())
        });
    }

    #[test]
    fn empty_configuration_is_the_embedded_default() {
        figment::Jail::expect_with(|_| {
            let config = Config::from_figment(Config::figment(None).expect("figment")).expect("config");
            assert_eq!(config.database_url.expose_secret(), "sqlite://omi.db");
            assert_eq!(config.listen_addr().expect("addr"), "127.0.0.1:8080".parse().expect("addr"));
            assert!(config.admin_key.is_none());
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_clear_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OMI_LISTEN", "not an address");
            let err = Config::from_figment(Config::figment(None).expect("figment")).unwrap_err();
            assert!(err.to_string().contains("OMI_LISTEN"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", include_str!("../omi.toml.example"))?;
            let config = Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment"))
                .expect("omi.toml.example parses");
            assert_eq!(config.providers.len(), 3);
            assert_eq!(config.prices["gpt-4o-mini"].cached_input, Some(0.075));
            assert_eq!(config.plans.len(), 2);
            assert_eq!(config.plans[0].monthly_budget_usd, Some(20.0));
            assert_eq!((config.payment_fee_percent, config.payment_fee_fixed_cents), (5.0, 50));
            assert_eq!(config.hawk, HawkConfig::default(), "the example documents the defaults");
            Ok(())
        });
    }

    #[test]
    fn hawk_table_and_latency_variable_merge() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", "[hawk]\nwindow_secs = 30\nlatency_alert_ms = 9000\n")?;
            jail.set_env("OMI_LATENCY_ALERT_MS", "2500");
            jail.set_env("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/secret-part");
            let config =
                Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment")).expect("config");
            assert_eq!((config.hawk.window_secs, config.hawk.latency_alert_ms), (30, 2500));
            assert_eq!(config.hawk.resolve_after_secs, 300);
            assert!(!format!("{config:?}").contains("secret-part"), "the Slack URL is a secret");
            Ok(())
        });
    }

    #[test]
    fn plans_map_variants_and_default_to_pro() {
        let mut config = Config::default();
        assert_eq!(config.plan_for_variant(Some(42)), Some("pro"));
        assert_eq!(config.plan_for_variant(None), Some("pro"));
        config.plans = vec![PlanConfig {
            name: "team".into(),
            monthly_price_usd: 99.0,
            variant_ids: vec![7, 8],
            monthly_budget_usd: None,
            monthly_token_quota: None,
        }];
        assert_eq!(config.plan_for_variant(Some(8)), Some("team"));
        assert_eq!(config.plan_for_variant(Some(42)), None);
        assert_eq!(config.plan_for_variant(None), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = Config { admin_key: Some(SecretString::from("very-secret-admin")), ..Config::default() };
        assert!(!format!("{config:?}").contains("very-secret-admin"));
    }
}
