//! Configuration: built-in defaults, then `omi.toml` (from `--config` or `OMI_CONFIG`, if
//! present), then environment variables, which win. Secrets are `SecretString`s from the
//! moment they are read, so no `Debug` or log line can print them.

use crate::firewall::{CountryPolicy, FallbackPolicy, FirewallError, RateLimits, TrustedProxies};
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
    ("OMI_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute"),
    ("OMI_TRUSTED_PROXIES", "trusted_proxies"),
    ("OMI_BLOCKED_COUNTRIES", "blocked_countries"),
    ("OMI_ALLOWED_COUNTRIES", "allowed_countries"),
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

    // The firewall (src/firewall/README.md).
    /// Requests a minute per client IP (IPv6: per /64); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Peers believed about the client: CIDRs, addresses and `cloudflare`, comma-separated.
    pub trusted_proxies: TrustedProxies,
    /// Countries refused with 403 (ISO codes, `T1` Tor, `XX` unknown), comma-separated.
    pub blocked_countries: String,
    /// When set, only these countries are served; excludes `blocked_countries`.
    pub allowed_countries: Option<String>,
    /// While Redis is unreachable: `local` (limits per instance) or `refuse` (every request).
    pub rate_limit_fallback: FallbackPolicy,
    /// Prefix of the limiters' Redis keys; instances that share limits share it.
    pub rate_limit_redis_prefix: String,
    /// Limits per key, by plan or for one key.
    pub rate_limits: RateLimits,
    /// Body limits of `/admin…` and `/webhooks/…` (`max_body_bytes` covers the rest).
    pub admin_max_body_bytes: usize,
    pub webhook_max_body_bytes: usize,
    /// A request's body must arrive completely within this.
    pub body_read_timeout_ms: u64,
    /// A request's headers must arrive within this; also how long an idle connection stays open.
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Origins allowed to call `/v1/*` from a browser (`*` for any); empty turns CORS off.
    pub cors_origins: Vec<String>,
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
            rate_limit_per_minute: 100,
            trusted_proxies: TrustedProxies::default(),
            blocked_countries: String::new(),
            allowed_countries: None,
            rate_limit_fallback: FallbackPolicy::Local,
            rate_limit_redis_prefix: "omi:rl".into(),
            rate_limits: RateLimits::default(),
            admin_max_body_bytes: 64 * 1024,
            webhook_max_body_bytes: 64 * 1024,
            body_read_timeout_ms: 30_000,
            header_read_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_connections: 4096,
            cors_origins: Vec::new(),
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
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(name_variables(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("admin_max_body_bytes", self.admin_max_body_bytes),
            ("webhook_max_body_bytes", self.webhook_max_body_bytes),
        ] {
            if value < 1024 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1024")));
            }
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid("max_header_bytes must be at least 1024".into()));
        }
        if self.max_connections == 0 || self.header_read_timeout_ms == 0 || self.body_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "max_connections, header_read_timeout_ms and body_read_timeout_ms must be above 0".into(),
            ));
        }
        self.country_policy()
            .map_err(|e| ConfigError::Invalid(format!("OMI_BLOCKED_COUNTRIES / OMI_ALLOWED_COUNTRIES: {e}")))?;
        for origin in &self.cors_origins {
            let valid = origin == "*"
                || (origin.starts_with("http://") || origin.starts_with("https://"))
                    && axum::http::HeaderValue::from_str(origin).is_ok();
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "cors_origins: `{origin}` is not `*` or an origin like https://app.example.com"
                )));
            }
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

    /// The block list, or the allow list when one is set; never both.
    pub fn country_policy(&self) -> Result<CountryPolicy, FirewallError> {
        match &self.allowed_countries {
            None => CountryPolicy::block_list(&self.blocked_countries),
            Some(_) if !self.blocked_countries.trim().is_empty() => Err(FirewallError::BlockAndAllowList),
            Some(allowed) => CountryPolicy::allow_list(allowed),
        }
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

/// Figment names a bad environment value by its setting (`TRUSTED_PROXIES`); the operator
/// set `OMI_TRUSTED_PROXIES`, so say that instead.
fn name_variables(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name.starts_with("environment"));
            let variable = e.path.last().and_then(|setting| ENV_SETTINGS.iter().find(|(_, s)| s == setting));
            match variable {
                Some((variable, _)) if from_env => format!("{variable}: {}", e.kind),
                _ => e.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own (large) error
mod tests {
    use super::*;
    use crate::firewall::Country;
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

    fn from_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            for (var, value) in vars {
                jail.set_env(var, value);
            }
            result = Some(Config::from_figment(Config::figment(None).expect("figment")));
            Ok(())
        });
        result.expect("the jail ran")
    }

    #[test]
    fn firewall_variables_are_read() {
        let config = from_env(&[
            ("OMI_RATE_LIMIT_PER_MINUTE", "0"),
            ("OMI_TRUSTED_PROXIES", "cloudflare, 10.0.0.0/8"),
            ("OMI_BLOCKED_COUNTRIES", "ru,T1"),
        ])
        .expect("config");
        assert_eq!(config.rate_limit_per_minute, 0);
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().expect("ip")));
        assert!(config.trusted_proxies.contains("172.64.0.1".parse().expect("ip")), "cloudflare's ranges");
        let policy = config.country_policy().expect("policy");
        assert!(!policy.allows(Country::from_code("RU")) && policy.allows(Country::from_code("DE")));

        let allowing = from_env(&[("OMI_ALLOWED_COUNTRIES", "DE")]).expect("config");
        assert!(!allowing.country_policy().expect("policy").allows(Country::from_code("RU")));
        assert_eq!(Config::default().rate_limit_per_minute, 100);
    }

    #[test]
    fn bad_firewall_variables_are_named_in_the_error() {
        for (vars, says) in [
            (&[("OMI_TRUSTED_PROXIES", "10.0.0.0/33")][..], "invalid trusted proxy entry \"10.0.0.0/33\""),
            (&[("OMI_RATE_LIMIT_PER_MINUTE", "lots")], "OMI_RATE_LIMIT_PER_MINUTE"),
            (&[("OMI_BLOCKED_COUNTRIES", "RU,Russia")], "invalid country code \"Russia\""),
            (&[("OMI_ALLOWED_COUNTRIES", "")], "at least one country"),
            (&[("OMI_ALLOWED_COUNTRIES", "DE"), ("OMI_BLOCKED_COUNTRIES", "RU")], "not both"),
        ] {
            let err = from_env(vars).expect_err("invalid").to_string();
            assert!(err.contains(says), "{vars:?}: {err}");
            let named = vars.iter().any(|(var, _)| err.contains(var));
            assert!(named, "{vars:?}: the error names the variable: {err}");
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", include_str!("../omi.toml.example"))?;
            let config = Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment"))
                .expect("omi.toml.example parses");
            assert_eq!(config.providers.len(), 3);
            assert_eq!(config.prices["gpt-4o-mini"].cached_input, Some(0.075));
            assert_eq!(config.rate_limits.plans["pro"].requests_per_minute, Some(600));
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = Config { admin_key: Some(SecretString::from("very-secret-admin")), ..Config::default() };
        assert!(!format!("{config:?}").contains("very-secret-admin"));
    }
}
