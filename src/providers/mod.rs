//! Upstream providers and routing of a model name to one. A model is routed by exact name,
//! by `provider/model`, or to the catch-all provider.
//!
//! The provider seam: each provider *kind* is one module implementing [`Wire`] — the URL path
//! of each API it serves, its auth headers, how a request is encoded for it, and how its
//! answers and streams are read (usage, answer length) or translated back to the API the
//! customer spoke. `openai.rs` speaks every OpenAI-compatible API natively; `anthropic.rs`
//! speaks the Messages API natively and carries chat completions by translation.

pub mod anthropic;
mod chunk_layout;
pub mod circuit;
pub mod client;
pub mod keys;
mod message_facts;
pub mod openai;
pub mod skim;
pub mod sse;

use crate::billing::prices::PriceTable;
use crate::config::{Config, ConfigError, OPENAI_API_KEY_VAR, OPENAI_PUBLIC_BASE_URL, ProviderConfig, ProviderKind};
use crate::events::TokenUsage;
use bytes::Bytes;
use circuit::Circuit;
use client::UpstreamClient;
use http::{HeaderMap, Uri};
use keys::KeyPool;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sse::SseEvent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The API a customer's request speaks: the endpoint it came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Chat,
    Embeddings,
    Completions,
    Responses,
    Messages,
}

impl Api {
    pub const ALL: [Api; 5] = [Api::Chat, Api::Embeddings, Api::Completions, Api::Responses, Api::Messages];

    /// The route label its requests are booked and counted under.
    pub fn route(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Embeddings => "embeddings",
            Api::Completions => "completions",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }

    /// Its path under `/v1`, as customers and upstreams both call it.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Embeddings => "/embeddings",
            Api::Completions => "/completions",
            Api::Responses => "/responses",
            Api::Messages => "/messages",
        }
    }
}

/// The operator's system prompt (its canary line included), as each API places it.
#[derive(Clone, Copy)]
pub struct SystemPrompt<'a> {
    pub text: &'a str,
    /// `{"role": "system", "content": text}`, encoded once at start-up.
    pub chat_message: &'a [u8],
}

/// A request the customer sent, validated, with the model name the upstream knows.
pub struct Outgoing<'a> {
    pub api: Api,
    pub request: Map<String, Value>,
    pub upstream_model: &'a str,
    pub streamed: bool,
    /// The body's size as it came: sizes the encoding buffer.
    pub request_len: usize,
    pub system: Option<SystemPrompt<'a>>,
}

/// A whole (non-streamed) answer as the customer gets it, and what billing needs of it.
pub struct Answer {
    pub body: Bytes,
    /// `None` when the upstream reported none: the request is then estimated.
    pub usage: Option<TokenUsage>,
    /// Characters of answer text, for that estimate.
    pub answer_chars: u64,
}

/// What a stream's events said so far that billing needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// The usage, once the upstream reported it whole.
    pub usage: Option<TokenUsage>,
    /// Characters of answer text read, and the events that carried some: each is at least a
    /// token when usage never comes.
    pub answer_chars: u64,
    pub answer_events: u64,
    /// The stream's own end marker was read (`[DONE]`, `message_stop`, `response.completed`):
    /// a stream that closes without it was cut short.
    pub ended: bool,
}

impl StreamTally {
    /// One event's answer text, in characters.
    pub fn add_answer(&mut self, chars: u64) {
        if chars > 0 {
            self.answer_chars += chars;
            self.answer_events += 1;
        }
    }
}

/// Reads a streamed answer event by event.
pub trait StreamReader: Send {
    /// Reads one event: true when its bytes go to the client as they came. A translating
    /// reader returns false and writes the client's events to `out` instead.
    fn event(&mut self, event: SseEvent<'_>, out: &mut Vec<u8>) -> bool;
    fn tally(&self) -> StreamTally;
}

/// A request a provider kind cannot carry; the message says what, for the customer (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unencodable(pub String);

/// Why an answer cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableAnswer(pub &'static str);

/// A provider kind's wire format: one module each (`openai.rs`, `anthropic.rs`).
pub trait Wire: Send + Sync {
    /// Whether requests of `api` can be carried by this kind (natively or translated).
    fn serves(&self, api: Api) -> bool;
    /// The path under the provider's base URL that `api`'s requests go to.
    fn upstream_path(&self, api: Api) -> &'static str;
    /// Adds this kind's credentials (marked sensitive) and required headers to a request's.
    fn authorize(&self, headers: &mut HeaderMap, key: &SecretString);
    /// The body sent upstream. Fails on what this kind cannot express (a clear 400).
    fn encode(&self, outgoing: Outgoing<'_>) -> Result<Vec<u8>, Unencodable>;
    /// Reads (and translates, when the customer spoke another API) a whole answer.
    fn answer(&self, api: Api, body: Bytes) -> Result<Answer, UnreadableAnswer>;
    /// A reader for a streamed answer; `client_asked_usage`: the client asked for the usage
    /// chunk (`stream_options.include_usage`) and sees it.
    fn stream(&self, api: Api, client_asked_usage: bool) -> Box<dyn StreamReader>;
}

impl ProviderKind {
    pub fn wire(self) -> &'static dyn Wire {
        match self {
            ProviderKind::OpenAi => &openai::OpenAiWire,
            ProviderKind::Anthropic => &anthropic::AnthropicWire,
        }
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// Base URL without a trailing slash; each API's path is appended.
    pub base_url: String,
    /// The upstream URL of each API this kind serves (by `Api` order), parsed once: a
    /// request clones one rather than parsing a string again.
    urls: [Option<Uri>; Api::ALL.len()],
    /// Its house keys (`api_key_env`, `api_key_envs`): spread over, rested and taken out.
    pub house_keys: KeyPool,
    /// Serves requests with the customer's own key when it has no house key.
    pub byok: bool,
    pub models: Vec<String>,
    /// `omi_upstream_attempts_total{provider,outcome}`, registered once: a request then counts
    /// its calls with an atomic add, not a registry lookup with label allocations.
    attempts: AttemptCounters,
    /// What it sets apart from the global upstream settings (`[[providers]]` timeouts).
    pub overrides: Overrides,
    /// The breaker of its house keys' calls (customer keys go around it: their failures say
    /// nothing of it). It counts what says the provider is down; what says one key is
    /// refused or busy (401/403, 429) is the pool's.
    pub circuit: Circuit,
}

/// A provider's own timeouts, each `None` where the global one applies.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// A client of its own when its connect timeout differs (set per client).
    pub client: Option<UpstreamClient>,
    /// Each call's wait for the answer to begin (within the request's global deadline).
    pub first_byte: Option<Duration>,
    /// A stream's longest silence.
    pub idle: Option<Duration>,
}

impl Overrides {
    fn from_spec(spec: &ProviderConfig, config: &Config) -> Result<Overrides, ConfigError> {
        let client = match spec.connect_timeout_ms {
            Some(ms) if ms != config.upstream_connect_timeout_ms => Some(
                UpstreamClient::new(Duration::from_millis(ms))
                    .map_err(|e| ConfigError::Invalid(format!("provider `{}`: {e}", spec.name)))?,
            ),
            _ => None,
        };
        Ok(Overrides {
            client,
            first_byte: spec.first_byte_timeout_ms.map(Duration::from_millis),
            idle: spec.idle_timeout_ms.map(Duration::from_millis),
        })
    }
}

/// The client of the outbound calls off the request path (the judge, Slack, n8n, Postmark,
/// `omi doctor`; upstream calls go through [`UpstreamClient`]). It follows no redirect: a redirect would re-post the body (the operator's system prompt, a
/// key, a signed event) to wherever the 3xx points; a 3xx is an answer like any other.
pub fn upstream_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
}

/// How one upstream call ended, as `omi_upstream_attempts_total{outcome}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Ok,
    /// Failed, and another call follows.
    Retried,
    /// Failed, and it was the last.
    Failed,
}

struct AttemptCounters([metrics::Counter; 3]);

impl AttemptCounters {
    fn register(provider: &str) -> AttemptCounters {
        AttemptCounters(["ok", "retried", "failed"].map(|outcome| {
            metrics::counter!("omi_upstream_attempts_total", "provider" => provider.to_owned(), "outcome" => outcome)
        }))
    }
}

impl std::fmt::Debug for AttemptCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptCounters")
    }
}

/// Whose key a request goes upstream with.
#[derive(Clone)]
pub enum UpstreamKey {
    /// The customer's own (`X-Provider-Key`): never logged, never pooled.
    Customer(SecretString),
    /// One of the provider's house keys, taken from its pool at each call.
    House,
}

/// Why a provider will not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// BYOK only: the request brought no `X-Provider-Key`.
    CustomerKeyNeeded,
    /// No house key and BYOK not enabled: the provider serves nothing.
    NoKeyAccepted,
}

impl Provider {
    /// The provider of a `[[providers]]` entry, with its house keys read and whether it takes
    /// customers' keys decided.
    pub fn new(
        spec: &ProviderConfig,
        house_keys: KeyPool,
        byok: bool,
        config: &Config,
    ) -> Result<Provider, ConfigError> {
        let (name, kind) = (spec.name.as_str(), spec.kind);
        let base_url = spec.base_url.trim_end_matches('/').to_string();
        let wire = kind.wire();
        let mut urls = [const { None }; Api::ALL.len()];
        for (slot, api) in urls.iter_mut().zip(Api::ALL) {
            if wire.serves(api) {
                let invalid =
                    |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("provider `{name}`: base_url: {e}"));
                // Checked as a URL (scheme, host), sent as the normalized URI.
                let url =
                    reqwest::Url::parse(&format!("{base_url}{}", wire.upstream_path(api))).map_err(|e| invalid(&e))?;
                *slot = Some(Uri::try_from(url.as_str()).map_err(|e| invalid(&e))?);
            }
        }
        let attempts = AttemptCounters::register(name);
        let name: Arc<str> = name.into();
        let circuit = Circuit::new(name.clone(), circuit::Policy::from_config(config));
        let overrides = Overrides::from_spec(spec, config)?;
        let models = spec.models.clone();
        Ok(Provider { name, kind, base_url, urls, house_keys, byok, models, attempts, overrides, circuit })
    }

    /// Where `api`'s requests go; `None` when this provider's kind does not serve it.
    pub fn url(&self, api: Api) -> Option<&Uri> {
        self.urls[api as usize].as_ref()
    }

    pub fn wire(&self) -> &'static dyn Wire {
        self.kind.wire()
    }

    pub fn count_attempt(&self, outcome: AttemptOutcome) {
        let [ok, retried, failed] = &self.attempts.0;
        match outcome {
            AttemptOutcome::Ok => ok,
            AttemptOutcome::Retried => retried,
            AttemptOutcome::Failed => failed,
        }
        .increment(1);
    }

    /// The key a request goes upstream with: the customer's own when sent (a provider with a
    /// house key checks keys; one without must be marked `byok`), else one of the house keys
    /// (taken from the pool at each call).
    pub fn key_for(&self, customer_key: Option<SecretString>) -> Result<UpstreamKey, KeyRefusal> {
        let has_house_key = !self.house_keys.is_empty();
        match customer_key {
            Some(own) if has_house_key || self.byok => Ok(UpstreamKey::Customer(own)),
            None if has_house_key => Ok(UpstreamKey::House),
            None if self.byok => Err(KeyRefusal::CustomerKeyNeeded),
            _ => Err(KeyRefusal::NoKeyAccepted),
        }
    }
}

#[derive(Debug)]
pub struct Providers {
    all: Vec<Arc<Provider>>,
    by_model: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    catch_all: Option<usize>,
}

pub struct Route<'a> {
    pub provider: &'a Arc<Provider>,
    /// The model name to send upstream (a `provider/` prefix removed).
    pub upstream_model: &'a str,
}

impl Providers {
    /// Builds the routing table. With no `[[providers]]` configured, one `openai` provider
    /// from `OPENAI_BASE_URL`/`OPENAI_API_KEY` serves every model, listing the priced ones.
    pub fn from_config(
        config: &Config,
        priced_models: &[&str],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Providers, ConfigError> {
        let configured: Vec<ProviderConfig> = if config.providers.is_empty() {
            vec![ProviderConfig {
                kind: Default::default(),
                name: "openai".into(),
                base_url: config.openai_base_url.clone(),
                api_key_env: None,
                models: priced_models.iter().map(|m| m.to_string()).collect(),
                catch_all: true,
                byok: false,
                ..Default::default()
            }]
        } else {
            config.providers.clone()
        };
        let mut providers =
            Providers { all: Vec::new(), by_model: HashMap::new(), by_name: HashMap::new(), catch_all: None };
        for (index, spec) in configured.into_iter().enumerate() {
            let vars: Vec<&str> = spec.house_key_vars().collect();
            let house_keys = if vars.is_empty() && spec.name == "openai" {
                KeyPool::new(config.openai_api_key.clone().map(|key| (OPENAI_API_KEY_VAR.to_owned(), key)))
            } else {
                // An unset or empty variable is no key (and said so at start-up).
                KeyPool::new(vars.into_iter().filter_map(|var| {
                    let key = env(var).filter(|v| !v.is_empty());
                    if key.is_none() {
                        tracing::warn!(provider = %spec.name, variable = var, "house key variable is unset");
                    }
                    key.map(|key| (var.to_owned(), SecretString::from(key)))
                }))
            };
            let base_url = spec.base_url.trim_end_matches('/').to_string();
            // OpenAI's own API checks every key; elsewhere only the operator knows.
            let byok = spec.byok || base_url == OPENAI_PUBLIC_BASE_URL;
            if house_keys.is_empty() && !byok {
                tracing::warn!(provider = %spec.name, "provider has no house key and byok is off: it serves nothing");
            }
            for model in &spec.models {
                providers.by_model.entry(model.clone()).or_insert(index);
            }
            providers.by_name.insert(spec.name.clone(), index);
            if spec.catch_all && providers.catch_all.is_none() {
                providers.catch_all = Some(index);
            }
            providers.all.push(Arc::new(Provider::new(&spec, house_keys, byok, config)?));
        }
        Ok(providers)
    }

    pub fn route<'a>(&'a self, model: &'a str) -> Option<Route<'a>> {
        if let Some(&index) = self.by_model.get(model) {
            return Some(Route { provider: &self.all[index], upstream_model: model });
        }
        if let Some((name, rest)) = model.split_once('/')
            && let Some(&index) = self.by_name.get(name)
            && !rest.is_empty()
        {
            return Some(Route { provider: &self.all[index], upstream_model: rest });
        }
        self.catch_all.map(|index| Route { provider: &self.all[index], upstream_model: model })
    }

    /// Every configured provider, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.all.iter()
    }

    /// Whether a provider lists this model by name.
    pub fn lists(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// Listed models without a price, with their provider: their cost would be unknown, and
    /// capped plans refuse them. The dashboard's money page lists them (so should `omi doctor`).
    pub fn unpriced<'a>(&'a self, prices: &'a PriceTable) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.listed_models().filter(|(model, _)| prices.get(model).is_none())
    }

    /// The provider that takes every model no provider lists, if any.
    pub fn catch_all_name(&self) -> Option<&str> {
        self.catch_all.map(|index| &*self.all[index].name)
    }

    /// Every model listed by a provider, as `/v1/models` shows them.
    pub fn listed_models(&self) -> impl Iterator<Item = (&str, &str)> {
        self.all.iter().flat_map(|p| p.models.iter().map(move |m| (m.as_str(), &*p.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn config_with(providers: Vec<ProviderConfig>) -> Config {
        Config { providers, openai_api_key: Some(SecretString::from("sk-house")), ..Config::default() }
    }

    #[test]
    fn default_provider_takes_every_model_with_the_house_key() {
        let providers = Providers::from_config(&config_with(vec![]), &["gpt-4o-mini"], |_| None).expect("providers");
        let route = providers.route("some-new-model").expect("catch-all");
        assert_eq!(&*route.provider.name, "openai");
        assert_eq!(
            route.provider.url(Api::Chat).map(Uri::to_string).as_deref(),
            Some("https://api.openai.com/v1/chat/completions")
        );
        let house: Vec<&str> = route.provider.house_keys.secrets().map(|k| k.expose_secret()).collect();
        assert_eq!(house, ["sk-house"]);
        assert_eq!(providers.listed_models().collect::<Vec<_>>(), vec![("gpt-4o-mini", "openai")]);
    }

    #[test]
    fn routes_by_exact_name_then_prefix_and_refuses_the_rest() {
        let groq = ProviderConfig {
            kind: Default::default(),
            name: "groq".into(),
            base_url: "https://api.groq.com/openai/v1/".into(),
            api_key_env: Some("GROQ_API_KEY".into()),
            models: vec!["llama-3.1-8b-instant".into()],
            catch_all: false,
            byok: false,
            ..Default::default()
        };
        let local = ProviderConfig {
            kind: Default::default(),
            name: "local".into(),
            base_url: "http://127.0.0.1:11434/v1".into(),
            api_key_env: None,
            models: vec![],
            catch_all: false,
            byok: false,
            ..Default::default()
        };
        let providers = Providers::from_config(&config_with(vec![groq, local]), &[], |var| {
            (var == "GROQ_API_KEY").then(|| "gsk-1".to_string())
        })
        .expect("providers");
        let route = providers.route("llama-3.1-8b-instant").expect("exact");
        assert_eq!(&*route.provider.name, "groq");
        assert_eq!(
            route.provider.url(Api::Embeddings).map(Uri::to_string).as_deref(),
            Some("https://api.groq.com/openai/v1/embeddings")
        );
        let route = providers.route("local/qwen2.5").expect("prefixed");
        assert_eq!((&*route.provider.name, route.upstream_model), ("local", "qwen2.5"));
        assert!(route.provider.house_keys.is_empty());
        assert!(providers.route("gpt-4o").is_none());
        assert!(providers.route("local/").is_none());
        let prices = PriceTable::new(&Default::default());
        assert_eq!(providers.unpriced(&prices).collect::<Vec<_>>(), vec![("llama-3.1-8b-instant", "groq")]);
        assert_eq!(providers.catch_all_name(), None);
    }

    #[test]
    fn a_customer_key_reaches_a_keyless_provider_only_when_it_takes_byok() {
        let provider = |house: Option<&str>, byok: bool| {
            let house = keys::KeyPool::new(house.map(|key| ("LOCAL_KEY".to_owned(), SecretString::from(key))));
            let spec = ProviderConfig {
                name: "local".into(),
                base_url: "http://127.0.0.1:11434/v1".into(),
                ..Default::default()
            };
            Provider::new(&spec, house, byok, &Config::default()).expect("provider")
        };
        let own = || Some(SecretString::from("sk-customer"));
        let key = |p: &Provider, k| {
            p.key_for(k).map(|k| match k {
                UpstreamKey::Customer(own) => own.expose_secret().to_owned(),
                UpstreamKey::House => "house".to_owned(),
            })
        };
        assert_eq!(key(&provider(None, false), own()), Err(KeyRefusal::NoKeyAccepted), "any string would pass");
        assert_eq!(key(&provider(None, false), None), Err(KeyRefusal::NoKeyAccepted));
        assert_eq!(key(&provider(None, true), own()), Ok("sk-customer".into()));
        assert_eq!(key(&provider(None, true), None), Err(KeyRefusal::CustomerKeyNeeded));
        assert_eq!(key(&provider(Some("sk-house"), false), own()), Ok("sk-customer".into()));
        assert_eq!(key(&provider(Some("sk-house"), false), None), Ok("house".into()));
    }

    #[test]
    fn keyless_providers_take_customer_keys_only_for_openai_itself_or_when_marked() {
        let keyless = |base: &str| Config { openai_base_url: base.into(), ..Config::default() };
        let byok = |config: &Config| {
            let providers = Providers::from_config(config, &[], |_| None).expect("providers");
            providers.route("gpt-4o-mini").expect("catch-all").provider.byok
        };
        assert!(byok(&keyless("https://api.openai.com/v1/")));
        assert!(!byok(&keyless("http://10.0.0.5:8000/v1")), "an internal upstream may check no key");
        let provider = |base_url: &str, byok: bool| ProviderConfig {
            kind: Default::default(),
            name: "p".into(),
            base_url: base_url.into(),
            api_key_env: None,
            models: vec![],
            catch_all: true,
            byok,
            ..Default::default()
        };
        assert!(byok(&config_with(vec![provider("https://api.openai.com/v1", false)])));
        assert!(!byok(&config_with(vec![provider("http://127.0.0.1:11434/v1", false)])));
        assert!(byok(&config_with(vec![provider("http://127.0.0.1:11434/v1", true)])));
    }
}
