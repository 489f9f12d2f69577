//! Configuration: built-in defaults, then `omi.toml` (from `--config` or `OMI_CONFIG`, if
//! present), then environment variables, which win. Secrets are `SecretString`s from the
//! moment they are read, so no `Debug` or log line can print them.
//!
//! An empty (or blank) value is the same as an unset one, from either source ([`BlankIsUnset`]):
//! `OMI_ADMIN_KEY=` must not configure an empty admin key. A secret omi verifies others by
//! (`OMI_ADMIN_KEY`, `LEMONSQUEEZY_SIGNING_SECRET`, `N8N_WEBHOOK_SECRET`) is read by
//! [`verifying_secret`], which refuses one shorter than [`MIN_SECRET_CHARS`].

use crate::domain::allowed_models::AllowedModels;
use crate::firewall::{
    BodyLimits, CountryPolicy, FallbackPolicy, FirewallError, FirewallSettings, LimiterSettings, RateLimits,
    TrustedProxies,
};
use crate::telemetry::LogFormat;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
}

/// OpenAI's own API: it checks every key, so a customer's key may go there without a house key.
pub const OPENAI_PUBLIC_BASE_URL: &str = "https://api.openai.com/v1";
/// The house key of the built-in `openai` provider, when it names no variable of its own.
pub const OPENAI_API_KEY_VAR: &str = "OPENAI_API_KEY";

/// Environment variables of INTERFACE.md and the setting each one fills.
const ENV_SETTINGS: &[(&str, &str)] = &[
    ("OMI_LISTEN", "listen"),
    ("PORT", "port"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("OMI_ADMIN_KEY", "admin_key"),
    (OPENAI_API_KEY_VAR, "openai_api_key"),
    ("OPENAI_BASE_URL", "openai_base_url"),
    ("OMI_PUBLIC_URL", "public_url"),
    ("OMI_MAX_BODY_BYTES", "max_body_bytes"),
    ("OMI_UPSTREAM_CONNECT_TIMEOUT_MS", "upstream_connect_timeout_ms"),
    ("OMI_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "upstream_first_byte_timeout_ms"),
    ("OMI_UPSTREAM_IDLE_TIMEOUT_MS", "upstream_idle_timeout_ms"),
    ("OMI_UPSTREAM_MAX_ATTEMPTS", "upstream_max_attempts"),
    ("OMI_CIRCUIT_FAILURES", "circuit_failures"),
    ("OMI_CIRCUIT_COOLDOWN_SECS", "circuit_cooldown_secs"),
    ("OMI_SHUTDOWN_GRACE_MS", "shutdown_grace_ms"),
    ("OMI_LOG_FORMAT", "log_format"),
    ("LEMONSQUEEZY_SIGNING_SECRET", "lemonsqueezy_signing_secret"),
    ("LEMONSQUEEZY_TEST_MODE", "lemonsqueezy_test_mode"),
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
    ("SENTINEL_MODEL", "sentinel_model"),
    ("SENTINEL_BASE_URL", "sentinel_base_url"),
    ("SENTINEL_API_KEY", "sentinel_api_key"),
    ("SENTINEL_MODE", "sentinel_mode"),
    ("SENTINEL_BLOCK", "sentinel_block"),
    ("OMI_SYSTEM_PROMPT", "system_prompt"),
    ("OMI_SYSTEM_PROMPT_FILE", "system_prompt_file"),
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
    #[serde(deserialize_with = "verifying_secret")]
    pub admin_key: Option<SecretString>,
    pub openai_api_key: Option<SecretString>,
    pub openai_base_url: String,
    /// Public base URL of this gateway, used in key emails (`https://api.example.com`).
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_first_byte_timeout_ms: u64,
    pub upstream_idle_timeout_ms: u64,
    /// Upstream calls one request may make, all candidates together (the first included); the
    /// first-byte timeout bounds them all.
    pub upstream_max_attempts: u32,
    /// Consecutive failed calls (unreachable, timeout, 429, 5xx) that open a provider key's
    /// circuit: its calls are then skipped; 0 turns circuits off.
    pub circuit_failures: u32,
    /// How long an open circuit is skipped before one request probes it.
    pub circuit_cooldown_secs: u64,
    pub shutdown_grace_ms: u64,
    /// `text` (default) or `json`; another value stops the configuration.
    pub log_format: LogFormat,
    /// Upstream providers; empty means one `openai` provider from `OPENAI_BASE_URL`.
    pub providers: Vec<ProviderConfig>,
    /// `[fallbacks]`: a model → the models tried after it, in order, when it fails before any
    /// byte reached the client (each routed like any model, across provider kinds).
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Price overrides and additions, USD per million tokens, by model name.
    pub prices: BTreeMap<String, ModelPrice>,
    /// A model without a price on a plan with a budget or token quota: `refuse` (403
    /// `model_not_allowed`, the default: its cost could not count against the budget) or `allow`.
    pub unpriced_models: UnpricedModels,
    /// Forward a request's `service_tier` (`priority` costs more than the price table says);
    /// off by default: the field is removed before the request goes upstream.
    pub passthrough_service_tier: bool,
    /// Forward `store: true` (the provider keeps the conversation, and bills its use in evals
    /// and distillation); off by default: removed before the request goes upstream.
    pub passthrough_store: bool,
    /// Lemon Squeezy webhook signing secret; the webhook refuses every call without it.
    #[serde(deserialize_with = "verifying_secret")]
    pub lemonsqueezy_signing_secret: Option<SecretString>,
    /// What a test-mode Lemon Squeezy event does: `ignore` (recorded, changes nothing) or `accept`.
    pub lemonsqueezy_test_mode: TestModePolicy,
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
    /// One-time Lemon Squeezy variants that add prepaid credit (`[[credit_packs]]`).
    pub credit_packs: Vec<CreditPackConfig>,
    /// Completion tokens a prepaid request without `max_tokens` (or `max_completion_tokens`,
    /// `max_output_tokens`) holds credit for while it runs; what it uses beyond is the part of
    /// the overdraw bound the customer controls (`billing/README.md`).
    pub credit_hold_completion_tokens: u64,
    /// A customer is emailed (and n8n told) once when their balance falls to this share of the
    /// last pack they bought, and once at zero.
    pub credit_low_balance_percent: f64,
    /// Payment processor fee taken from each payment in margin reports (Lemon Squeezy: 5% + 50¢).
    pub payment_fee_percent: f64,
    pub payment_fee_fixed_cents: i64,
    /// The Accountant's usage records (on by default; off only to measure its cost).
    pub metering: bool,
    /// Raw usage records older than this many days are deleted, a whole UTC month at a time once
    /// the month has entirely passed the cutoff (PostgreSQL drops the month's partition); the
    /// daily totals (`usage_daily`) stay, so reports over those months are unchanged. Unset: kept forever.
    pub usage_retention_days: Option<u32>,
    /// Slack incoming webhook for the Hawk's alerts (the URL is the credential).
    pub slack_webhook_url: Option<SecretString>,
    /// Every agent event is also POSTed here as signed JSON.
    pub n8n_webhook_url: Option<SecretString>,
    /// Key of the `X-Omi-Signature` HMAC on n8n deliveries.
    #[serde(deserialize_with = "verifying_secret")]
    pub n8n_webhook_secret: Option<SecretString>,
    /// The Hawk's rules (`[hawk]` in omi.toml).
    pub hawk: HawkConfig,
    /// The proprietary system prompt placed first in every upstream request; never logged.
    pub system_prompt: Option<SecretString>,
    /// A file holding the system prompt instead, read once at start-up.
    pub system_prompt_file: Option<PathBuf>,
    /// The canary token appended to the system prompt; a random one per process when unset.
    pub shield_canary: Option<SecretString>,
    /// Internal host names the output shield removes, with their sub-domains (`db.corp.local`).
    pub shield_internal_hosts: Vec<String>,
    /// Shortest run of system-prompt words that counts as a leak; 0 means the shield's default (8).
    pub shield_min_leak_words: usize,
    /// Scan answers for leaks. Off only to measure the shield's cost: upstream error messages
    /// are sanitized either way.
    pub shield_answers: bool,
    /// `off`, `rules` or `llm`; unset means `llm` when a judge key is configured, else `rules`.
    pub sentinel_mode: Option<SentinelMode>,
    /// The LLM judge: model, OpenAI-compatible base URL (default `openai_base_url`) and key
    /// (default `openai_api_key`).
    pub sentinel_model: String,
    pub sentinel_base_url: Option<String>,
    pub sentinel_api_key: Option<SecretString>,
    /// Prompts whose local score is at least this are refused inline (400 `prompt_rejected`).
    pub sentinel_block: Option<f32>,
    /// The judge sees prompts the rules scored in `[judge_min, judge_max)`: neither cleared
    /// nor condemned by the rules. `sentinel_judge_all` sends every prompt instead.
    pub sentinel_judge_min: f32,
    pub sentinel_judge_max: f32,
    pub sentinel_judge_all: bool,
    /// Who pays the judge for a BYOK request: `skip` (default: the rules alone screen it, the
    /// house pays nothing for a customer who pays their own upstream) or `house`.
    pub sentinel_judge_byok: JudgeByok,
    pub sentinel_judge_timeout_ms: u64,
    /// Judge calls in flight at once; more wait, and the queue fills (then scans are dropped).
    pub sentinel_judge_concurrency: usize,
    /// Prompts waiting for a scan; when full, new prompts are not scanned (and counted).
    pub sentinel_queue_capacity: usize,
    /// Keep the whole prompt with each finding (default: a short redacted excerpt only).
    pub sentinel_store_prompts: bool,
    /// Suspend a customer's keys after this many high-severity findings in one UTC day.
    pub sentinel_auto_suspend_after: Option<u32>,

    // The firewall (src/firewall/README.md).
    /// Requests a minute per client IP (IPv6: per /64); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Peers believed about the client: CIDRs, addresses, `cloudflare` and `cloudflare=CIDR`
    /// (only these are believed about `CF-*` headers), comma-separated.
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
    /// Open connections at most from one client IP (IPv6: per /64; trusted proxies exempt);
    /// further ones are closed at once. 0 turns the cap off.
    pub max_connections_per_ip: usize,
    /// A client that accepts no response bytes for this long is disconnected (its stream's
    /// upstream is then drained for usage, bounded, and ended).
    pub client_write_timeout_ms: u64,
    /// Largest non-streamed upstream answer read; a larger one is a 502.
    pub max_upstream_body_bytes: usize,
    /// Origins allowed to call `/v1/*` from a browser (`*` for any); empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` to anyone. Otherwise it takes the admin bearer, or, with no admin key,
    /// is served to this host (loopback) only.
    pub metrics_public: bool,
}

/// Thresholds and timings of the Hawk's alert rules. Windows slide; an alert fires once,
/// reminds at most every `repeat_interval_secs`, and resolves after `resolve_after_secs`
/// without a new trigger (`flap_resolve_after_secs` once it has fired twice within
/// `repeat_interval_secs`, so a flapping alert cannot page on every swing).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HawkConfig {
    /// A request slower than this (total time; a stream's time to its first byte) triggers
    /// the latency alert.
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

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SentinelMode {
    /// No scanning and no blocking.
    Off,
    /// Local rules only.
    Rules,
    /// Local rules, then the LLM judge for the prompts they neither clear nor condemn.
    Llm,
}

/// See [`Config::unpriced_models`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnpricedModels {
    #[default]
    Refuse,
    Allow,
}

/// See [`Config::sentinel_judge_byok`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JudgeByok {
    #[default]
    Skip,
    House,
}

/// `LEMONSQUEEZY_TEST_MODE`: test checkouts must not vend working keys on a live gateway.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TestModePolicy {
    /// Test-mode events are recorded and acknowledged, and vend, suspend or revoke nothing.
    #[default]
    Ignore,
    /// Test-mode events act like live ones (while setting up a store).
    Accept,
}

/// A markup beyond this (100× the cost) is a typo, not a price.
pub const MAX_MARKUP_PERCENT: f64 = 10_000.0;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PlanConfig {
    pub name: String,
    /// Monthly price in USD (display and reports; revenue itself comes from the ledger); none
    /// on a prepaid plan.
    #[serde(default)]
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
    /// The models its keys may call (globs, see `domain::allowed_models`); absent: every routed
    /// model. Others are refused with 403 `model_not_allowed` and skipped as fallbacks.
    #[serde(default)]
    pub models: Option<AllowedModels>,
    /// Keys one customer may hold on this plan, revoked ones not counted; absent: no limit.
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// Keys made for this plan expire this many days after they are made (401 `key_expired`),
    /// unless a paid Lemon Squeezy subscription keeps them going; absent: they never expire.
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// The selling price is the upstream cost × (1 + markup/100): what `spend_usd` and prepaid
    /// credit count. 0 (the default) sells at cost.
    #[serde(default)]
    pub markup_percent: f64,
    /// Requests draw down the customer's prepaid credit at the selling price; at or below zero
    /// they are refused (402 `insufficient_credits`).
    #[serde(default)]
    pub prepaid: bool,
}

/// A one-time Lemon Squeezy variant that adds `credit_usd` to the buyer's balance, on a key of
/// `plan` (vended if the customer has none).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CreditPackConfig {
    pub variant_ids: Vec<i64>,
    pub credit_usd: f64,
    pub plan: String,
}

/// The largest credit one pack or one `omi credits grant` may add or take (USD): beyond is a
/// typo, and sums of such amounts stay far inside a BIGINT of nano-dollars.
pub const MAX_CREDIT_USD: f64 = 1_000_000.0;

/// USD as nano-dollars, when within ±[`MAX_CREDIT_USD`].
pub fn credit_nano(usd: f64) -> Option<i64> {
    (usd.is_finite() && usd.abs() <= MAX_CREDIT_USD).then(|| (usd * 1e9).round() as i64)
}

impl PlanConfig {
    /// Whether its keys may call `asked`, routed to `upstream_model` at `provider`.
    pub fn allows_model(&self, asked: &str, provider: &str, upstream_model: &str) -> bool {
        self.models.as_ref().is_none_or(|allowed| allowed.admits(asked, provider, upstream_model))
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    /// The wire format it speaks: `openai` (the default: any OpenAI-compatible API) or
    /// `anthropic` (the native Messages API).
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL, ending in `/v1` for most providers.
    pub base_url: String,
    /// Environment variable holding this provider's house key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Variables of a pool of house keys, spread over by calls in flight (with `api_key_env`,
    /// that one first).
    #[serde(default)]
    pub api_key_envs: Vec<String>,
    /// Model names routed here; also reachable as `name/model`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Takes every model that no provider lists.
    #[serde(default)]
    pub catch_all: bool,
    /// Without a house key, serve requests that bring their own (`X-Provider-Key`); off, such
    /// a provider serves nothing, so that any string in the header cannot buy free use of an
    /// upstream that checks no key (a local Ollama). Providers with a house key, and OpenAI's
    /// own API (it checks every key), take BYOK anyway.
    #[serde(default)]
    pub byok: bool,
    /// Overrides `upstream_connect_timeout_ms` for this provider.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Overrides `upstream_first_byte_timeout_ms` for each call to this provider (all calls of
    /// a request together still end at the global one).
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// Overrides `upstream_idle_timeout_ms` for this provider's streams.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

impl ProviderConfig {
    /// The variables of its house keys, `api_key_env` first, each once.
    pub fn house_key_vars(&self) -> impl Iterator<Item = &str> {
        let mut seen = std::collections::HashSet::new();
        self.api_key_env.iter().chain(&self.api_key_envs).map(String::as_str).filter(move |var| seen.insert(*var))
    }
}

/// A provider's wire format; each kind is one module under `providers/`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    OpenAi,
    Anthropic,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct ModelPrice {
    pub input: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache; default: the input price (no surcharge).
    #[serde(default)]
    pub cache_write: Option<f64>,
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
            openai_base_url: OPENAI_PUBLIC_BASE_URL.into(),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            upstream_connect_timeout_ms: 5_000,
            upstream_first_byte_timeout_ms: 120_000,
            upstream_idle_timeout_ms: 60_000,
            upstream_max_attempts: 3,
            circuit_failures: 5,
            circuit_cooldown_secs: 30,
            shutdown_grace_ms: 30_000,
            log_format: LogFormat::Text,
            providers: Vec::new(),
            fallbacks: BTreeMap::new(),
            prices: BTreeMap::new(),
            unpriced_models: UnpricedModels::Refuse,
            passthrough_service_tier: false,
            passthrough_store: false,
            lemonsqueezy_signing_secret: None,
            lemonsqueezy_test_mode: TestModePolicy::Ignore,
            postmark_server_token: None,
            postmark_api_url: None,
            smtp_url: None,
            email_from: None,
            payment_grace_hours: 72,
            plans: Vec::new(),
            credit_packs: Vec::new(),
            credit_hold_completion_tokens: 4096,
            credit_low_balance_percent: 20.0,
            payment_fee_percent: 0.0,
            payment_fee_fixed_cents: 0,
            metering: true,
            usage_retention_days: None,
            slack_webhook_url: None,
            n8n_webhook_url: None,
            n8n_webhook_secret: None,
            hawk: HawkConfig::default(),
            system_prompt: None,
            system_prompt_file: None,
            shield_canary: None,
            shield_internal_hosts: Vec::new(),
            shield_min_leak_words: 0,
            shield_answers: true,
            sentinel_mode: None,
            sentinel_model: "gpt-4o-mini".into(),
            sentinel_base_url: None,
            sentinel_api_key: None,
            sentinel_block: None,
            sentinel_judge_min: 0.2,
            sentinel_judge_max: 0.8,
            sentinel_judge_all: false,
            sentinel_judge_byok: JudgeByok::Skip,
            sentinel_judge_timeout_ms: 10_000,
            sentinel_judge_concurrency: 4,
            sentinel_queue_capacity: 1024,
            sentinel_store_prompts: false,
            sentinel_auto_suspend_after: None,
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
            max_connections_per_ip: 64,
            client_write_timeout_ms: 30_000,
            max_upstream_body_bytes: 32 * 1024 * 1024,
            cors_origins: Vec::new(),
            metrics_public: false,
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
            figment = figment.merge(BlankIsUnset(Toml::file(path)));
        }
        let env = Env::raw().filter_map(|key| {
            ENV_SETTINGS
                .iter()
                .find(|(var, _)| key.as_str().eq_ignore_ascii_case(var))
                .map(|(_, setting)| (*setting).into())
        });
        Ok(figment.merge(BlankIsUnset(env)).merge(BlankIsUnset(EnvSecrets)))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(name_variables(e, &figment)))?;
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
        if self.client_write_timeout_ms == 0 || self.max_upstream_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "client_write_timeout_ms must be above 0 and max_upstream_body_bytes at least 1024".into(),
            ));
        }
        if self.upstream_max_attempts == 0 {
            return Err(ConfigError::Invalid("upstream_max_attempts must be at least 1".into()));
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
        if self.providers.is_empty() && !is_http_url(&self.openai_base_url) {
            return Err(ConfigError::Invalid("OPENAI_BASE_URL must be an http:// or https:// URL".into()));
        }
        for provider in &self.providers {
            if !is_http_url(&provider.base_url) {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}`: base_url must be an http:// or https:// URL",
                    provider.name
                )));
            }
        }
        for plan in &self.plans {
            if !(plan.markup_percent.is_finite() && (0.0..=MAX_MARKUP_PERCENT).contains(&plan.markup_percent)) {
                return Err(ConfigError::Invalid(format!(
                    "plan `{}`: markup_percent must be between 0 and {MAX_MARKUP_PERCENT}",
                    plan.name
                )));
            }
        }
        if !(0.0..=100.0).contains(&self.credit_low_balance_percent) {
            return Err(ConfigError::Invalid("credit_low_balance_percent must be between 0 and 100".into()));
        }
        for pack in &self.credit_packs {
            if credit_nano(pack.credit_usd).is_none_or(|nano| nano <= 0) {
                return Err(ConfigError::Invalid(format!(
                    "credit_packs: credit_usd must be above 0 and at most {MAX_CREDIT_USD}"
                )));
            }
            if !self.plans.iter().any(|plan| plan.name == pack.plan && plan.prepaid) {
                return Err(ConfigError::Invalid(format!(
                    "credit_packs: plan `{}` must be a [[plans]] entry with prepaid = true",
                    pack.plan
                )));
            }
        }
        if self.usage_retention_days == Some(0) {
            return Err(ConfigError::Invalid(
                "usage_retention_days must be at least 1 (leave it unset to keep usage records forever)".into(),
            ));
        }
        self.validate_sentinel()
    }

    fn validate_sentinel(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.system_prompt.is_some() && self.system_prompt_file.is_some() {
            return invalid("set OMI_SYSTEM_PROMPT or OMI_SYSTEM_PROMPT_FILE, not both");
        }
        if let Some(block) = self.sentinel_block {
            if !(block > 0.0 && block <= 1.0) {
                return invalid("SENTINEL_BLOCK must be a score in (0, 1]");
            }
            if self.sentinel_mode() == SentinelMode::Off {
                return invalid("SENTINEL_BLOCK needs the Sentinel on: SENTINEL_MODE is off");
            }
        }
        let (min, max) = (self.sentinel_judge_min, self.sentinel_judge_max);
        if !(0.0..=1.0).contains(&min) || !(0.0..=1.0).contains(&max) || min >= max {
            return invalid("sentinel_judge_min and sentinel_judge_max must satisfy 0 <= min < max <= 1");
        }
        if self.sentinel_queue_capacity == 0 || self.sentinel_judge_concurrency == 0 {
            return invalid("sentinel_queue_capacity and sentinel_judge_concurrency must be at least 1");
        }
        if self.sentinel_auto_suspend_after == Some(0) {
            return invalid("sentinel_auto_suspend_after must be at least 1 (leave it unset to turn it off)");
        }
        if !is_http_url(self.sentinel_base_url()) {
            return invalid("SENTINEL_BASE_URL must be an http:// or https:// URL");
        }
        if self.sentinel_mode == Some(SentinelMode::Llm) && self.sentinel_judge_key().is_none() {
            return invalid("SENTINEL_MODE=llm needs a judge key: SENTINEL_API_KEY or OPENAI_API_KEY");
        }
        Ok(())
    }

    /// The judge's key: `SENTINEL_API_KEY`, else the house key.
    pub fn sentinel_judge_key(&self) -> Option<&SecretString> {
        let set = |k: &&SecretString| !k.expose_secret().is_empty();
        self.sentinel_api_key.as_ref().filter(set).or(self.openai_api_key.as_ref().filter(set))
    }

    pub fn sentinel_base_url(&self) -> &str {
        self.sentinel_base_url.as_deref().filter(|u| !u.is_empty()).unwrap_or(&self.openai_base_url)
    }

    /// INTERFACE.md's default: `llm` when a judge key is configured, else `rules`.
    pub fn sentinel_mode(&self) -> SentinelMode {
        self.sentinel_mode.unwrap_or(if self.sentinel_judge_key().is_some() {
            SentinelMode::Llm
        } else {
            SentinelMode::Rules
        })
    }

    /// The system prompt, from `OMI_SYSTEM_PROMPT` or read from `OMI_SYSTEM_PROMPT_FILE`.
    pub fn load_system_prompt(&self) -> Result<Option<SecretString>, ConfigError> {
        let Some(path) = &self.system_prompt_file else {
            return Ok(self.system_prompt.clone().filter(|p| !p.expose_secret().trim().is_empty()));
        };
        let file_error = |message: String| ConfigError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(format!("OMI_SYSTEM_PROMPT_FILE: {e}")))?;
        if text.trim().is_empty() {
            return Err(file_error("OMI_SYSTEM_PROMPT_FILE is empty".into()));
        }
        Ok(Some(SecretString::from(text)))
    }

    /// Whether the gateway is served over https (its public URL says so): session cookies are
    /// then `Secure`.
    pub fn serves_https(&self) -> bool {
        self.public_url.as_deref().is_some_and(|url| url.starts_with("https://"))
    }

    /// The configured plan of this name; keys on a plan not configured have no plan limits.
    pub fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.iter().find(|plan| plan.name == name)
    }

    /// The credit pack a Lemon Squeezy variant is, if any.
    pub fn credit_pack_for_variant(&self, variant_id: Option<i64>) -> Option<&CreditPackConfig> {
        let variant = variant_id?;
        self.credit_packs.iter().find(|pack| pack.variant_ids.contains(&variant))
    }

    /// Whether `plan` is sold as prepaid credit.
    pub fn is_prepaid(&self, plan: &str) -> bool {
        self.plans.iter().any(|p| p.name == plan && p.prepaid)
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

    /// How long a new key of `plan` lasts: its `trial_days`, if any.
    pub fn trial_for(&self, plan: &str) -> Option<chrono::Duration> {
        let days = self.plans.iter().find(|p| p.name == plan)?.trial_days?;
        chrono::Duration::try_days(i64::from(days))
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

    /// The block list, or the allow list when one is set; never both.
    pub fn country_policy(&self) -> Result<CountryPolicy, FirewallError> {
        match &self.allowed_countries {
            None => CountryPolicy::block_list(&self.blocked_countries),
            Some(_) if !self.blocked_countries.trim().is_empty() => Err(FirewallError::BlockAndAllowList),
            Some(allowed) => CountryPolicy::allow_list(allowed),
        }
    }

    /// What the firewall is built from: trusted proxies, country rules, rate and body limits.
    pub fn firewall(&self) -> Result<FirewallSettings, FirewallError> {
        Ok(FirewallSettings {
            trusted_proxies: self.trusted_proxies.clone(),
            countries: self.country_policy()?,
            per_ip_per_minute: self.rate_limit_per_minute,
            rate_limits: self.rate_limits.clone(),
            limiters: LimiterSettings {
                redis_url: self.redis_url.clone(),
                redis_prefix: self.rate_limit_redis_prefix.clone(),
                fallback: self.rate_limit_fallback,
            },
            bodies: BodyLimits {
                api: self.max_body_bytes,
                admin: self.admin_max_body_bytes,
                webhook: self.webhook_max_body_bytes,
                read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            },
        })
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

/// Shortest secret accepted for what omi verifies callers by: a shorter one is guessable.
pub const MIN_SECRET_CHARS: usize = 16;

/// Reads a secret that callers are verified by (the admin key, webhook signing secrets).
/// A blank one never gets here ([`BlankIsUnset`]); a short one stops the configuration with
/// an error that names the setting (figment adds it) and never shows the value.
fn verifying_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    let secret = SecretString::deserialize(deserializer)?;
    if secret.expose_secret().trim().chars().count() < MIN_SECRET_CHARS {
        return Err(serde::de::Error::custom(format!(
            "is set but shorter than {MIN_SECRET_CHARS} characters; use a long random value (e.g. `openssl rand -hex 32`)"
        )));
    }
    Ok(Some(secret))
}

/// Settings that hold secrets (`SecretString`s) and are read from the environment.
const SECRET_SETTINGS: &[&str] = &[
    "database_url",
    "redis_url",
    "admin_key",
    "openai_api_key",
    "lemonsqueezy_signing_secret",
    "postmark_server_token",
    "smtp_url",
    "slack_webhook_url",
    "n8n_webhook_url",
    "n8n_webhook_secret",
    "sentinel_api_key",
    "system_prompt",
];

/// The secret settings' environment variables, verbatim. Merged over figment's `Env`, which
/// parses values: `OMI_ADMIN_KEY=1234…` would become a number, be refused as one, and the
/// error would print it.
struct EnvSecrets;

impl Provider for EnvSecrets {
    fn metadata(&self) -> Metadata {
        // `name_variables` knows the environment by this name (figment's `Env` uses it too).
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut secrets = Dict::new();
        for (var, value) in std::env::vars_os() {
            let (Some(var), Some(value)) = (var.to_str(), value.to_str()) else { continue };
            let setting = ENV_SETTINGS.iter().find(|(known, _)| var.eq_ignore_ascii_case(known)).map(|(_, s)| *s);
            if let Some(setting) = setting.filter(|s| SECRET_SETTINGS.contains(s)) {
                secrets.insert(setting.to_owned(), Value::from(value.to_owned()));
            }
        }
        Ok(Profile::Default.collect(secrets))
    }
}

/// INTERFACE.md: an empty value is the same as an unset one. Wraps a source (the file, the
/// environment) and drops every setting whose value is blank, so the default applies: no
/// empty secret, URL or list is ever configured, and each use needs no check of its own.
struct BlankIsUnset<P>(P);

impl<P: Provider> Provider for BlankIsUnset<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.0.data()?;
        data.values_mut().for_each(drop_blank);
        Ok(data)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}

/// Drops blank strings from `dict` and from the tables within it (`[hawk]`, `[[providers]]`).
fn drop_blank(dict: &mut Dict) {
    dict.retain(|_, value| match value {
        Value::String(_, text) => !text.trim().is_empty(),
        Value::Dict(_, inner) => {
            drop_blank(inner);
            true
        }
        Value::Array(_, items) => {
            for item in items {
                if let Value::Dict(_, inner) = item {
                    drop_blank(inner);
                }
            }
            true
        }
        _ => true,
    });
}

/// An http(s) URL that parses: the gateway parses provider URLs once at start-up.
fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// Figment names a bad environment value by its setting (`TRUSTED_PROXIES`); the operator
/// set `OMI_TRUSTED_PROXIES`, so say that instead.
fn name_variables(error: figment::Error, figment: &Figment) -> String {
    error
        .into_iter()
        .map(|e| {
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name.starts_with("environment"));
            let variable = e.path.last().and_then(|setting| ENV_SETTINGS.iter().find(|(_, s)| s == setting));
            match (variable, plan_setting(&e.path, figment)) {
                (Some((variable, _)), _) if from_env => format!("{variable}: {}", e.kind),
                // `plans.1.models` says little in a file of several plans: the plan's name does.
                (_, Some((plan, setting))) => format!("plan `{plan}`: {setting}: {}", e.kind),
                _ => e.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The plan's name and the setting, for an error at `plans.<index>.<setting>`.
fn plan_setting(path: &[String], figment: &Figment) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let [plans, index, setting, ..] = path else { return None };
    if plans != "plans" {
        return None;
    }
    let index: usize = index.parse().ok()?;
    let named: Vec<Named> = figment.extract_inner("plans").ok()?;
    Some((named.into_iter().nth(index)?.name, setting.clone()))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own (large) error
mod tests {
    use super::*;
    use crate::domain::country::Country;
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
    fn markups_and_credit_packs_are_checked() {
        let invalid = |toml: &str| {
            let mut message = String::new();
            figment::Jail::expect_with(|jail| {
                jail.create_file("omi.toml", toml)?;
                let figment = Config::figment(Some(Path::new("omi.toml"))).expect("figment");
                message = Config::from_figment(figment).expect_err("refused").to_string();
                Ok(())
            });
            message
        };
        let negative = invalid("[[plans]]\nname = \"pro\"\nmarkup_percent = -5\n");
        assert!(negative.contains("plan `pro`: markup_percent must be between 0 and 10000"), "{negative}");
        let pack = "[[credit_packs]]\nvariant_ids = [1]\ncredit_usd = 10.0\nplan = \"pro\"\n";
        let not_prepaid = invalid(&format!("[[plans]]\nname = \"pro\"\n{pack}"));
        assert!(not_prepaid.contains("plan `pro` must be a [[plans]] entry with prepaid = true"), "{not_prepaid}");
        let empty = invalid(
            "[[plans]]\nname = \"p\"\nprepaid = true\n[[credit_packs]]\nvariant_ids = [1]\ncredit_usd = 0.0\nplan = \"p\"\n",
        );
        assert!(empty.contains("credit_usd must be above 0"), "{empty}");
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
    fn lemonsqueezy_test_mode_is_ignored_unless_accepted() {
        let mode = |value: &str| from_env(&[("LEMONSQUEEZY_TEST_MODE", value)]).map(|c| c.lemonsqueezy_test_mode);
        assert_eq!(Config::default().lemonsqueezy_test_mode, TestModePolicy::Ignore);
        assert_eq!(mode("accept").expect("config"), TestModePolicy::Accept);
        assert_eq!(mode("").expect("config"), TestModePolicy::Ignore, "empty is unset");
        let err = mode("yes").expect_err("not a policy");
        assert!(err.to_string().contains("LEMONSQUEEZY_TEST_MODE"), "{err}");
    }

    #[test]
    fn log_format_is_text_or_json_and_anything_else_stops_the_configuration() {
        let format = |value: &str| from_env(&[("OMI_LOG_FORMAT", value)]).map(|c| c.log_format);
        assert_eq!(Config::default().log_format, LogFormat::Text);
        assert_eq!(format("json").expect("config"), LogFormat::Json);
        assert_eq!(format("").expect("config"), LogFormat::Text, "empty is unset");
        let err = format("xml").expect_err("not a format").to_string();
        assert!(err.contains("OMI_LOG_FORMAT") && err.contains("`text`") && err.contains("`json`"), "{err}");
    }

    #[test]
    fn bad_firewall_variables_are_named_in_the_error() {
        for (vars, says) in [
            (&[("OMI_TRUSTED_PROXIES", "10.0.0.0/33")][..], "invalid trusted proxy entry \"10.0.0.0/33\""),
            (&[("OMI_RATE_LIMIT_PER_MINUTE", "lots")], "OMI_RATE_LIMIT_PER_MINUTE"),
            (&[("OMI_BLOCKED_COUNTRIES", "RU,Russia")], "invalid country code \"Russia\""),
            (&[("OMI_ALLOWED_COUNTRIES", ",")], "at least one country"),
            (&[("OMI_ALLOWED_COUNTRIES", "DE"), ("OMI_BLOCKED_COUNTRIES", "RU")], "not both"),
        ] {
            let err = from_env(vars).expect_err("invalid").to_string();
            assert!(err.contains(says), "{vars:?}: {err}");
            let named = vars.iter().any(|(var, _)| err.contains(var));
            assert!(named, "{vars:?}: the error names the variable: {err}");
        }
    }

    #[test]
    fn a_plans_models_are_parsed_at_load_and_a_bad_pattern_names_the_plan() {
        figment::Jail::expect_with(|jail| {
            let plans = |starter_models: &str| {
                format!(
                    "[[plans]]\nname = \"pro\"\nmonthly_price_usd = 29.0\nmax_keys = 3\n\
                     [[plans]]\nname = \"starter\"\nmonthly_price_usd = 9.0\nmodels = {starter_models}\n"
                )
            };
            let load = || Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment"));
            jail.create_file("omi.toml", &plans(r#"["gpt-4o-mini", "anthropic/*"]"#))?;
            let config = load().expect("valid patterns");
            let pro = config.plan("pro").expect("pro");
            assert!(pro.models.is_none() && pro.allows_model("gpt-4o", "openai", "gpt-4o"), "absent: every model");
            assert_eq!(pro.max_keys, Some(3));
            let starter = config.plan("starter").expect("starter");
            assert!(starter.allows_model("claude-haiku-4-5", "anthropic", "claude-haiku-4-5"));
            assert!(!starter.allows_model("gpt-4o", "openai", "gpt-4o"));
            assert_eq!(starter.max_keys, None);
            for (models, says) in [
                (r#"["gpt-4o", "claude-?"]"#, "`claude-?`: `?` is not supported"),
                ("[]", "allows no model"),
                (r#"[""]"#, "a pattern is empty"),
            ] {
                jail.create_file("omi.toml", &plans(models))?;
                let err = load().expect_err("a bad pattern").to_string();
                assert!(err.contains("plan `starter`") && err.contains(says), "{models}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", include_str!("../omi.toml.example"))?;
            let config = Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment"))
                .expect("omi.toml.example parses");
            assert_eq!(config.providers.len(), 4);
            let kinds: Vec<ProviderKind> = config.providers.iter().map(|p| p.kind).collect();
            assert_eq!(
                kinds,
                [ProviderKind::OpenAi, ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::OpenAi]
            );
            assert_eq!(config.prices["gpt-4o-mini"].cached_input, Some(0.075));
            assert_eq!(
                (config.prices["gpt-4o-mini"].cache_write, config.prices["claude-sonnet-4-5"].cache_write),
                (None, Some(3.75))
            );
            assert_eq!(config.plans.len(), 4, "pro, team, trial, payg");
            assert_eq!(config.plans[0].monthly_budget_usd, Some(20.0));
            let pro = &config.plans[0];
            assert_eq!(pro.max_keys, Some(5));
            assert!(pro.allows_model("gpt-4o-mini", "openai", "gpt-4o-mini"));
            assert!(pro.allows_model("groq/llama-3.1-8b-instant", "groq", "llama-3.1-8b-instant"), "its fallback");
            assert!(!pro.allows_model("gpt-4o", "openai", "gpt-4o"));
            assert!(config.plans[1].models.is_none(), "team: every routed model");
            assert_eq!((config.trial_for("trial"), config.trial_for("pro")), (chrono::Duration::try_days(14), None));
            assert!(config.is_prepaid("payg") && !config.is_prepaid("pro"));
            assert_eq!(config.plan("payg").map(|p| p.markup_percent), Some(30.0));
            let pack = config.credit_pack_for_variant(Some(1115460)).expect("a credit pack");
            assert_eq!((pack.credit_usd, pack.plan.as_str()), (10.0, "payg"));
            assert_eq!(config.credit_hold_completion_tokens, 4096, "the example documents the default");
            assert_eq!((config.payment_fee_percent, config.payment_fee_fixed_cents), (5.0, 50));
            assert_eq!(config.hawk, HawkConfig::default(), "the example documents the defaults");
            assert_eq!(config.shield_internal_hosts.len(), 3);
            assert!(!config.sentinel_store_prompts);
            assert_eq!((config.unpriced_models, config.sentinel_judge_byok), (UnpricedModels::Refuse, JudgeByok::Skip));
            assert!(!config.passthrough_service_tier && !config.passthrough_store);
            assert!(!config.providers[3].byok, "the keyless local provider takes no customer keys");
            assert_eq!(config.rate_limits.plans["pro"].requests_per_minute, Some(600));
            Ok(())
        });
    }

    #[test]
    fn blank_values_are_unset_never_empty_secrets() {
        let blank = [
            ("OMI_ADMIN_KEY", ""),
            ("LEMONSQUEEZY_SIGNING_SECRET", "   "),
            ("N8N_WEBHOOK_SECRET", ""),
            ("OPENAI_API_KEY", " "),
            ("SENTINEL_API_KEY", ""),
            ("SLACK_WEBHOOK_URL", ""),
            ("DATABASE_URL", ""),
            ("PORT", ""),
            ("OMI_RATE_LIMIT_PER_MINUTE", ""),
            ("OMI_ALLOWED_COUNTRIES", ""),
            ("SENTINEL_MODE", ""),
            ("OMI_SYSTEM_PROMPT", ""),
        ];
        let config = from_env(&blank).expect("a blank value is unset, never invalid");
        assert!(config.admin_key.is_none(), "OMI_ADMIN_KEY= leaves admin disabled");
        assert!(config.lemonsqueezy_signing_secret.is_none(), "the webhook refuses every call");
        assert!(config.n8n_webhook_secret.is_none() && config.openai_api_key.is_none());
        assert!(config.sentinel_api_key.is_none() && config.slack_webhook_url.is_none());
        assert_eq!(config.database_url.expose_secret(), "sqlite://omi.db");
        assert_eq!((config.port, config.rate_limit_per_minute), (None, 100));
        assert!(config.allowed_countries.is_none() && config.system_prompt.is_none());
        assert_eq!(config.sentinel_mode(), SentinelMode::Rules);

        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "omi.toml",
                "admin_key = \"\"\nemail_from = \" \"\n[hawk]\nn8n_auth_header = \"\"\n\
                 [[providers]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:1/v1\"\napi_key_env = \"\"\n",
            )?;
            let config =
                Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment")).expect("config");
            assert!(config.admin_key.is_none() && config.email_from.is_none());
            assert!(config.hawk.n8n_auth_header.is_none() && config.providers[0].api_key_env.is_none());
            Ok(())
        });
    }

    #[test]
    fn a_short_verifying_secret_is_refused_by_name_never_shown() {
        const FIFTEEN: &str = "short-secret-15";
        for var in ["OMI_ADMIN_KEY", "LEMONSQUEEZY_SIGNING_SECRET", "N8N_WEBHOOK_SECRET"] {
            let err = from_env(&[(var, FIFTEEN)]).expect_err(var).to_string();
            assert!(err.contains(var) && err.contains("16 characters"), "{err}");
            assert!(!err.contains(FIFTEEN), "the value is never shown: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(from_env(&[(var, "  fifteen-chars  ")]).is_err(), "blanks around it do not count");
            assert!(from_env(&[(var, "sixteen-chars-ok")]).is_ok(), "{var}");
        }
        // Keys issued by providers are theirs to shape: a local server takes any.
        assert!(from_env(&[("OPENAI_API_KEY", "ollama"), ("SENTINEL_API_KEY", "x")]).is_ok());
        // Secrets are taken verbatim, never parsed: digits or `true` are a secret like any other.
        let digits = "12345678901234567890";
        let config =
            from_env(&[("OMI_ADMIN_KEY", digits), ("OPENAI_API_KEY", "true"), ("OMI_SYSTEM_PROMPT", "[1, 2]")])
                .expect("secrets are strings");
        assert_eq!(config.admin_key.as_ref().map(|k| k.expose_secret()), Some(digits));
        assert_eq!(config.openai_api_key.as_ref().map(|k| k.expose_secret()), Some("true"));
        assert_eq!(config.system_prompt.as_ref().map(|k| k.expose_secret()), Some("[1, 2]"));
        let err = from_env(&[("N8N_WEBHOOK_SECRET", "123456")]).expect_err("short").to_string();
        assert!(err.contains("N8N_WEBHOOK_SECRET") && !err.contains("123456"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", &format!("lemonsqueezy_signing_secret = \"{FIFTEEN}\"\n"))?;
            let err = Config::from_figment(Config::figment(Some(Path::new("omi.toml"))).expect("figment"))
                .expect_err("short")
                .to_string();
            assert!(err.contains("lemonsqueezy_signing_secret") && !err.contains(FIFTEEN), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_env_example_lists_every_variable_and_no_empty_value() {
        let example = include_str!("../.env.example");
        let assignments: Vec<(&str, &str)> = example
            .lines()
            .filter_map(|line| line.strip_prefix("# ")?.split_once('='))
            .filter(|(var, _)| {
                !var.is_empty() && var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .collect();
        for (var, _) in ENV_SETTINGS {
            assert!(assignments.iter().any(|(listed, _)| listed == var), "{var} is missing from .env.example");
        }
        for (var, rest) in assignments {
            // Uncommenting a line must never configure an empty value (a comment follows blanks).
            let value = rest.split(" #").next().unwrap_or_default().trim();
            assert!(!value.is_empty(), "{var}= in .env.example is empty: give an example value");
        }
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
    fn fallbacks_table_and_max_attempts_variable_merge() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "omi.toml",
                "upstream_max_attempts = 5\n[fallbacks]\n\"gpt-4o-mini\" = [\"backup/gpt-4o-mini\", \"anthropic/claude-haiku-4-5\"]\n",
            )?;
            let figment = || Config::figment(Some(Path::new("omi.toml"))).expect("figment");
            let config = Config::from_figment(figment()).expect("config");
            assert_eq!(config.upstream_max_attempts, 5);
            assert_eq!(config.fallbacks["gpt-4o-mini"], ["backup/gpt-4o-mini", "anthropic/claude-haiku-4-5"]);
            jail.set_env("OMI_UPSTREAM_MAX_ATTEMPTS", "2");
            assert_eq!(Config::from_figment(figment()).expect("config").upstream_max_attempts, 2);
            jail.set_env("OMI_UPSTREAM_MAX_ATTEMPTS", "0");
            let err = Config::from_figment(figment()).expect_err("no attempt at all");
            assert!(err.to_string().contains("upstream_max_attempts"), "{err}");
            Ok(())
        });
        assert_eq!((Config::default().upstream_max_attempts, Config::default().fallbacks.len()), (3, 0));
    }

    #[test]
    fn circuit_settings_come_from_the_file_or_the_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("omi.toml", "circuit_failures = 0\ncircuit_cooldown_secs = 10\n")?;
            let figment = || Config::figment(Some(Path::new("omi.toml"))).expect("figment");
            let config = Config::from_figment(figment()).expect("config");
            assert_eq!((config.circuit_failures, config.circuit_cooldown_secs), (0, 10));
            jail.set_env("OMI_CIRCUIT_FAILURES", "2");
            jail.set_env("OMI_CIRCUIT_COOLDOWN_SECS", "7");
            let config = Config::from_figment(figment()).expect("config");
            assert_eq!((config.circuit_failures, config.circuit_cooldown_secs), (2, 7));
            Ok(())
        });
        assert_eq!((Config::default().circuit_failures, Config::default().circuit_cooldown_secs), (5, 30));
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
            ..PlanConfig::default()
        }];
        assert_eq!(config.plan_for_variant(Some(8)), Some("team"));
        assert_eq!(config.plan_for_variant(Some(42)), None);
        assert_eq!(config.plan_for_variant(None), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = Config {
            admin_key: Some(SecretString::from("very-secret-admin")),
            sentinel_api_key: Some(SecretString::from("sk-judge-secret")),
            system_prompt: Some(SecretString::from("proprietary prompt text")),
            ..Config::default()
        };
        let debug = format!("{config:?}");
        for secret in ["very-secret-admin", "sk-judge-secret", "proprietary prompt text"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn sentinel_mode_defaults_to_the_judge_when_a_key_is_configured() {
        assert_eq!(Config::default().sentinel_mode(), SentinelMode::Rules);
        let house = Config { openai_api_key: Some(SecretString::from("sk-house")), ..Config::default() };
        assert_eq!(house.sentinel_mode(), SentinelMode::Llm);
        assert_eq!(house.sentinel_judge_key().map(|k| k.expose_secret()), Some("sk-house"));
        assert_eq!(house.sentinel_base_url(), "https://api.openai.com/v1");
        let own = Config { sentinel_api_key: Some(SecretString::from("sk-judge")), ..house };
        assert_eq!(own.sentinel_judge_key().map(|k| k.expose_secret()), Some("sk-judge"));
    }

    #[test]
    fn sentinel_and_system_prompt_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            let load = || Config::from_figment(Config::figment(None).expect("figment"));
            jail.create_file("prompt.txt", "You are the support bot of Acme.")?;
            jail.set_env("OMI_SYSTEM_PROMPT_FILE", "prompt.txt");
            jail.set_env("SENTINEL_MODE", "rules");
            jail.set_env("SENTINEL_BLOCK", "0.9");
            let config = load().expect("config");
            assert_eq!((config.sentinel_mode(), config.sentinel_block), (SentinelMode::Rules, Some(0.9)));
            let prompt = config.load_system_prompt().expect("read").expect("set");
            assert_eq!(prompt.expose_secret(), "You are the support bot of Acme.");

            jail.set_env("OMI_SYSTEM_PROMPT_FILE", "missing.txt");
            let err = load().expect("config").load_system_prompt().unwrap_err().to_string();
            assert!(err.contains("missing.txt") && err.contains("OMI_SYSTEM_PROMPT_FILE"), "{err}");
            jail.set_env("OMI_SYSTEM_PROMPT", "inline too");
            assert!(load().unwrap_err().to_string().contains("not both"));
            jail.clear_env();

            for (block, mode) in [("1.5", "rules"), ("0", "rules"), ("0.9", "off")] {
                jail.set_env("SENTINEL_BLOCK", block);
                jail.set_env("SENTINEL_MODE", mode);
                assert!(load().unwrap_err().to_string().contains("SENTINEL_BLOCK"), "{block} {mode}");
            }
            jail.set_env("SENTINEL_BLOCK", "0.9");
            jail.set_env("SENTINEL_MODE", "llm");
            assert!(load().unwrap_err().to_string().contains("judge key"));
            jail.set_env("SENTINEL_MODE", "sometimes");
            assert!(load().is_err());
            Ok(())
        });
    }
}
