//! The request pipeline, written once for every endpoint and provider kind:
//! admit (the firewall, before this) → authenticate → plan checks (budget, quota) → read and
//! validate the body → route to a provider → plan checks that need the model (in the plan's
//! `models`, priced, token limits) → the Sentinel → encode for the provider's kind → upstream →
//! meter → shield.
//! An [`Endpoint`] declares only what differs: its API, its required fields, which fields are
//! customer text, whether it streams and whether its answers carry text to shield. The
//! provider's kind ([`Wire`]) owns the wire format: paths, auth, encoding, and reading or
//! translating answers. The upstream call is one step (`call_upstream`): the requested model,
//! then its `[fallbacks]`, retried until one answers before any byte reached the client.

use super::auth::admit;
use super::meter::Meter;
use super::stream::{Coalesced, MeteredSse, ShieldedSse, StreamLimits};
use crate::agents::accountant::{budgets, credits};
use crate::agents::sentinel::{CustomerText, Prompt, Screening};
use crate::app::AppState;
use crate::billing::prices::NanoPrice;
use crate::config::Config;
use crate::events::{Event, TokenUsage, UPSTREAM_UNREACHABLE};
use crate::firewall::{BodyFailure, Origin};
use crate::json_bytes::from_bytes;
use crate::providers::circuit::{CallEnd, CircuitChange};
use crate::providers::client::UpstreamResponse;
use crate::providers::keys::{self, KeyLease, KeyVerdict};
use crate::providers::{Api, AttemptOutcome, KeyRefusal, Outgoing, Provider, Route, SystemPrompt, Wire, openai};
use crate::shield::guard::{Guard, RemovalReport};
use crate::shield::{RemovalKind, StreamFormat};
use crate::web::error::ApiError;
use crate::web::request_id::RequestId;
use crate::web::response_body::{ResponseBodyError, read_body_bounded};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyDataStream, Full};
use secrecy::SecretString;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// A `HeaderName` constant, not a `&str`: a `&str` name is parsed and checked on every use.
pub const BYOK_HEADER: HeaderName = HeaderName::from_static("x-provider-key");
/// Upstream error messages reach the customer; longer ones are cut.
const MAX_UPSTREAM_MESSAGE_CHARS: usize = 500;
/// An upstream error body is read this far for its message.
const MAX_UPSTREAM_ERROR_BODY_BYTES: usize = 64 * 1024;

/// What one endpoint adds to the pipeline. Each is one file in `gateway/`.
pub trait Endpoint: Send + Sync + 'static {
    /// The API its requests speak: the route they are booked under, the upstream path, and
    /// which provider kinds can carry them.
    const API: Api;
    /// The top-level fields whose strings the model reads: the Sentinel screens them all.
    const CUSTOMER_TEXT: &'static [&'static str];
    /// `"stream": true` is accepted.
    const STREAMS: bool = true;
    /// Its answers carry text the shield cleans (embeddings carry vectors, which it must not
    /// touch).
    const SHIELDED: bool = true;
    /// Where its streamed events carry text, for the shield.
    const STREAM_FORMAT: StreamFormat = StreamFormat::Chat;
    /// The customer key may come as `x-api-key` (Anthropic's SDKs send it so).
    const X_API_KEY: bool = false;
    /// Request headers passed upstream as the client sent them (never credentials).
    const FORWARDED_HEADERS: &'static [&'static str] = &[];

    /// Checks the fields this API requires beyond `model` and `stream`.
    fn validate(request: &Map<String, Value>) -> Result<(), ApiError>;
}

/// The axum handler of an endpoint: `post(pipeline::handle::<Chat>)`.
pub async fn handle<E: Endpoint>(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let route = E::API.route();
    let mut meter = Meter::start(app.events.clone(), &app.meters, request_id.clone(), route, origin.client.ip);
    match prepare::<E>(&app, &mut meter, request_id, &origin, &headers, body).await {
        Ok(prepared) => forward(&app, meter, prepared).await,
        Err(error) => fail(meter, error),
    }
}

/// A required field: present, and of the expected shape.
pub fn require(request: &Map<String, Value>, field: &str, ok: fn(&Value) -> bool, what: &str) -> Result<(), ApiError> {
    match request.get(field) {
        Some(value) if ok(value) => Ok(()),
        _ => Err(ApiError::invalid_request(format!("`{field}` is required and must be {what}."))),
    }
}

struct Prepared {
    request_id: Arc<str>,
    customer_id: Uuid,
    api: Api,
    /// `None`: answers are not shielded.
    shield_format: Option<StreamFormat>,
    /// The endpoint's `FORWARDED_HEADERS` the client sent.
    forwarded: Vec<(&'static str, HeaderValue)>,
    /// The customer's own key (`X-Provider-Key`): every candidate goes with it. `None`: with
    /// a house key of each candidate's provider, taken at each call.
    customer_key: Option<SecretString>,
    streamed: bool,
    client_asked_usage: bool,
    /// The body's size as it came, booked for whichever candidate answers.
    request_len: usize,
    /// The requested model's upstream.
    primary: Candidate,
    /// Its `[fallbacks]` that can take this request, in order (empty for most requests).
    fallbacks: Vec<Candidate>,
}

impl Prepared {
    fn candidates(&self) -> usize {
        1 + self.fallbacks.len()
    }

    /// The `index`-th candidate, round the list again when attempts outnumber candidates.
    fn candidate(&self, index: usize) -> &Candidate {
        match index % self.candidates() {
            0 => &self.primary,
            fallback => &self.fallbacks[fallback - 1],
        }
    }

    fn byok(&self) -> bool {
        self.customer_key.is_some()
    }

    /// The key for a call to `candidate` now, or `None` to skip it: its provider's circuit is
    /// open, or every house key rests or is out. The customer's own key goes around both
    /// (its failures say nothing of the house keys).
    fn call_key(&self, candidate: &Candidate, now: Instant) -> Option<CallKey<'_>> {
        if let Some(own) = &self.customer_key {
            return Some(CallKey::Customer(own));
        }
        let provider = &candidate.provider;
        if provider.circuit.skips(now) {
            return None;
        }
        let lease = provider.house_keys.take(now)?;
        // Last: admitting may take the probe's turn, which is then made.
        provider.circuit.admit(now).then_some(CallKey::House(lease))
    }

    /// When every candidate is skipped and some only because their house keys rest (429):
    /// when the first rest ends.
    fn resting_until(&self, now: Instant) -> Option<Instant> {
        if self.byok() {
            return None;
        }
        (0..self.candidates())
            .map(|index| &self.candidate(index).provider)
            .filter(|provider| !provider.circuit.skips(now))
            .filter_map(|provider| provider.house_keys.resting_until(now))
            .min()
    }

    /// Whether some candidate would be called now (its circuit closed or due a probe, and a
    /// house key serving).
    fn any_callable(&self, now: Instant) -> bool {
        self.byok()
            || (0..self.candidates()).any(|index| {
                let provider = &self.candidate(index).provider;
                !provider.circuit.skips(now) && provider.house_keys.available(now)
            })
    }
}

/// The key one upstream call goes with.
enum CallKey<'a> {
    Customer(&'a SecretString),
    /// A house key, counted in flight until the answer is relayed.
    House(KeyLease),
}

impl CallKey<'_> {
    fn secret(&self) -> &SecretString {
        match self {
            CallKey::Customer(own) => own,
            CallKey::House(lease) => lease.secret(),
        }
    }
}

/// One upstream a request may go to, its body encoded for that provider's kind.
struct Candidate {
    /// As the customer or `[fallbacks]` named it: its metrics label comes from it.
    model: String,
    /// As the upstream knows it: booked and priced so.
    upstream_model: String,
    provider: Arc<Provider>,
    url: http::Uri,
    price: Option<NanoPrice>,
    body: Bytes,
    /// Only used when usage never comes: the body sent, the operator's system prompt included.
    prompt_estimate: u64,
}

impl Candidate {
    fn wire(&self) -> &'static dyn Wire {
        self.provider.wire()
    }

    /// `X-Omi-Upstream`: `provider/model`, never a URL or key.
    fn header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}/{}", self.provider.name, self.upstream_model)).ok()
    }
}

/// A fallback's route and price, before its body is encoded.
struct Admitted<'a> {
    model: &'a str,
    route: Route<'a>,
    url: http::Uri,
    price: Option<NanoPrice>,
}

fn fail(meter: Meter, error: ApiError) -> Response {
    meter.finish(error.status.as_u16(), Some(error.code));
    error.into_response()
}

async fn prepare<E: Endpoint>(
    app: &AppState,
    meter: &mut Meter,
    request_id: Arc<str>,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Prepared, ApiError> {
    let key = admit(app, headers, origin, meter, E::X_API_KEY).await?;
    budgets::check(&app.config, &app.store, &key).await?;

    let limit = app.config.max_body_bytes;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| match BodyFailure::of(&e) {
        BodyFailure::TooLarge => ApiError::too_large(limit),
        BodyFailure::TooSlow => ApiError::request_timeout(),
        BodyFailure::Broken => ApiError::invalid_request("The request body could not be read."),
    })?;
    meter.set_request_bytes(raw.len());
    let mut request: Map<String, Value> = match from_bytes(&raw) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(ApiError::invalid_request("The request body must be a JSON object."));
        }
        Err(e) => {
            return Err(ApiError::invalid_request(format!("The request body is not valid JSON: {e}.")));
        }
    };
    let model = match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(ApiError::invalid_request("`model` is required and must be a non-empty string."));
        }
    };
    let streamed = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_request("`stream` must be a boolean.")),
    };
    if streamed && !E::STREAMS {
        return Err(ApiError::invalid_request(format!("`stream` is not supported on /v1{}.", E::API.path())));
    }
    E::validate(&request)?;

    let route = app
        .providers
        .route(&model)
        .ok_or_else(|| ApiError::invalid_request(format!("The model `{model}` is not available on this gateway.")))?;
    let byok = byok_key(headers)?;
    let is_byok = byok.is_some();
    // Priced by what goes upstream: `openai/gpt-4o-mini` is gpt-4o-mini.
    let price = app.prices.get(route.upstream_model);
    // Before anything else is decided about it: a fallback the plan allows does not make up
    // for a requested model it does not.
    plan_admits(app, &key.plan, &model, &route, price, is_byok)?;
    let upstream_url = route.provider.url(E::API).cloned().ok_or_else(|| {
        ApiError::invalid_request(format!("The model `{model}` is not served on /v1{}.", E::API.path()))
    })?;
    // The fallbacks the request may go to, checked by the same rules; the others are skipped.
    // OpenRouter's `models` names this request's own fallbacks, in place of `[fallbacks]`.
    let requested = requested_fallbacks(&mut request, &model)?;
    let fallback_models = match &requested {
        Some(models) => models.as_slice(),
        None => app.config.fallbacks.get(&model).map_or(&[][..], Vec::as_slice),
    };
    let admitted: Vec<Admitted<'_>> = fallback_models
        .iter()
        .filter_map(|fallback| admit_fallback(app, &key.plan, E::API, fallback, byok.as_ref()))
        .collect();
    route.provider.key_for(byok.clone()).map_err(|refusal| match refusal {
        KeyRefusal::CustomerKeyNeeded => {
            ApiError::upstream("No provider key is configured for this model; send X-Provider-Key.")
        }
        KeyRefusal::NoKeyAccepted => ApiError::model_not_allowed(format!(
            "The model `{model}` is not served here: its provider has no key and does not take X-Provider-Key."
        )),
    })?;
    // ~4 bytes a token: the prompt's cost, spent before the upstream reports the real one.
    let prompt_estimate = (raw.len() as u64).div_ceil(4);
    app.firewall.admit_tokens(&key, prompt_estimate, origin).await?;
    meter.set_request(route.upstream_model, &route.provider.name, is_byok, streamed, raw.len());
    meter.set_catalog(app.model_label(&model), price);
    if route.upstream_model != model {
        request.insert("model".into(), Value::String(route.upstream_model.to_string()));
    }
    remove_costly_options(&mut request, E::API, &app.config);
    if app.sentinel.is_on() {
        // Every string the model will read that the customer wrote, not only the user turns.
        let text = CustomerText::of_request(&request, E::CUSTOMER_TEXT);
        let prompt = Prompt {
            request_id: request_id.clone(),
            customer_id: key.customer_id,
            key_id: key.key_id,
            text,
            byok: is_byok,
        };
        if let Screening::Blocked { score } = app.sentinel.screen(prompt) {
            tracing::info!(score, %request_id, "the sentinel refused a prompt");
            return Err(ApiError::prompt_rejected());
        }
    }
    let client_asked_usage = streamed && openai::client_asked_stream_usage(&request);
    let completion_allowance = match E::API {
        Api::Embeddings => 0,
        _ => max_output_tokens(&request).unwrap_or(app.config.credit_hold_completion_tokens),
    };
    // After the screening: the operator's prompt is not the customer's text.
    let system = app.guard.system_prompt().map(|(text, chat_message)| SystemPrompt { text, chat_message });
    let outgoing = |request: Map<String, Value>, upstream_model| Outgoing {
        api: E::API,
        request,
        upstream_model,
        streamed,
        request_len: raw.len(),
        system,
    };
    // Each fallback gets its own copy of the request (only requests that have fallbacks pay
    // for it); one its kind cannot carry is skipped: the customer did not ask for it.
    let fallbacks: Vec<Candidate> = admitted
        .into_iter()
        .filter_map(|fallback| {
            let mut request = request.clone();
            request.insert("model".into(), Value::String(fallback.route.upstream_model.to_string()));
            let body = fallback.route.provider.wire().encode(outgoing(request, fallback.route.upstream_model));
            let body = body.inspect_err(|e| tracing::debug!(fallback = fallback.model, %e, "fallback skipped")).ok()?;
            Some(Candidate::new(fallback.model, &fallback.route, fallback.url, fallback.price, body))
        })
        .collect();
    // What the kind cannot express is the customer's to change: a 400 that says what.
    let body = route
        .provider
        .wire()
        .encode(outgoing(request, route.upstream_model))
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let primary = Candidate::new(&model, &route, upstream_url, price, body);
    if app.config.is_prepaid(&key.plan) {
        // Last, right before upstream: every refusal above holds nothing.
        let estimate =
            if is_byok { 0 } else { hold_estimate(app, &key.plan, &primary, &fallbacks, completion_allowance) };
        // Boxed: a prepaid plan's hold is a transaction whose future (~4 KB) would otherwise
        // enlarge every request's future, which is moved (copied) on every request.
        meter.set_credit_hold(Box::pin(credits::hold(&app.store, key.customer_id, estimate)).await?);
    }
    Ok(Prepared {
        request_id,
        customer_id: key.customer_id,
        api: E::API,
        shield_format: E::SHIELDED.then_some(E::STREAM_FORMAT),
        forwarded: E::FORWARDED_HEADERS.iter().filter_map(|&name| Some((name, headers.get(name)?.clone()))).collect(),
        customer_key: byok,
        streamed,
        client_asked_usage,
        request_len: raw.len(),
        primary,
        fallbacks,
    })
}

/// The most the customer asked the answer to cost: `max_tokens` (chat, completions, messages),
/// `max_completion_tokens` (chat) or `max_output_tokens` (responses).
fn max_output_tokens(request: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|field| request.get(*field).and_then(Value::as_u64))
}

/// What a prepaid request holds while it runs: the selling price of its dearest candidate with
/// every byte of the body sent as a prompt token (a token is at least a byte, so this is never
/// below the prompt) and `completion_tokens` of answer, saturating.
fn hold_estimate(
    app: &AppState,
    plan: &str,
    primary: &Candidate,
    fallbacks: &[Candidate],
    completion_tokens: u64,
) -> i64 {
    let worst = std::iter::once(primary)
        .chain(fallbacks)
        .filter_map(|candidate| {
            let usage =
                TokenUsage { prompt_tokens: candidate.body.len() as u64, completion_tokens, ..TokenUsage::default() };
            candidate.price.map(|price| price.cost(&usage))
        })
        .max()
        .unwrap_or(0);
    app.prices.markup(plan).selling_price(i64::try_from(worst).unwrap_or(i64::MAX))
}

impl Candidate {
    fn new(model: &str, route: &Route<'_>, url: http::Uri, price: Option<NanoPrice>, body: Vec<u8>) -> Candidate {
        Candidate {
            model: model.to_owned(),
            upstream_model: route.upstream_model.to_owned(),
            provider: route.provider.clone(),
            url,
            price,
            prompt_estimate: openai::estimated_tokens(body.len() as u64),
            body: Bytes::from(body),
        }
    }
}

/// A fallback model the request may go to: routed, served on `api`, with a key the BYOK rules
/// allow and allowed by the plan. `None` skips it: it is never called.
fn admit_fallback<'a>(
    app: &'a AppState,
    plan: &str,
    api: Api,
    model: &'a str,
    byok: Option<&SecretString>,
) -> Option<Admitted<'a>> {
    let route = app.providers.route(model)?;
    let url = route.provider.url(api)?.clone();
    route.provider.key_for(byok.cloned()).ok()?;
    let price = app.prices.get(route.upstream_model);
    plan_admits(app, plan, model, &route, price, byok.is_some()).ok()?;
    Some(Admitted { model, route, url, price })
}

/// The one rule by which a plan refuses a candidate, the requested model or a fallback (403
/// `model_not_allowed`): its `models` include neither the name it was asked by nor
/// `provider/model` where it is routed, or it is a capped plan and the model has no price to
/// count (unless the customer's own key pays).
fn plan_admits(
    app: &AppState,
    plan: &str,
    model: &str,
    route: &Route<'_>,
    price: Option<NanoPrice>,
    byok: bool,
) -> Result<(), ApiError> {
    let excluded =
        app.config.plan(plan).is_some_and(|plan| !plan.allows_model(model, &route.provider.name, route.upstream_model));
    if excluded {
        return Err(ApiError::model_not_allowed(format!(
            "Your plan does not include the model `{model}`; GET /v1/models lists the models it does."
        )));
    }
    budgets::admit_model(&app.config, plan, route.upstream_model, price.is_some(), byok)
}

/// Removes the parameters that make upstream bill more than the price table says
/// (`service_tier: "priority"`) or keep the conversation (`store: true`), unless the
/// operator lets them through. The Responses API stores by default: there `store` is set
/// to false rather than removed.
fn remove_costly_options(request: &mut Map<String, Value>, api: Api, config: &Config) {
    if !config.passthrough_service_tier {
        request.remove("service_tier");
    }
    if config.passthrough_store {
        return;
    }
    if api == Api::Responses {
        request.insert("store".into(), Value::Bool(false));
    } else if request.get("store").is_some_and(|store| *store != Value::Bool(false)) {
        request.remove("store");
    }
}

/// The most models a request's `models` list may name.
const MAX_REQUESTED_FALLBACKS: usize = 8;

/// OpenRouter's `"models": [...]`, taken out of the request (no upstream is to see it): the
/// models to try, in order, when the requested one fails; the requested model is not tried
/// twice. Each is admitted like a configured fallback (routed, keyed, allowed by the plan).
fn requested_fallbacks(request: &mut Map<String, Value>, model: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(models) = request.remove("models") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid_request(format!("`models` must be a list of at most {MAX_REQUESTED_FALLBACKS} model names."))
    };
    let Value::Array(models) = models else {
        return Err(invalid());
    };
    if models.len() > MAX_REQUESTED_FALLBACKS {
        return Err(invalid());
    }
    let mut fallbacks: Vec<String> = Vec::with_capacity(models.len());
    for name in models {
        match name {
            Value::String(name) if !name.is_empty() => {
                if name != model && !fallbacks.contains(&name) {
                    fallbacks.push(name);
                }
            }
            _ => return Err(invalid()),
        }
    }
    Ok(Some(fallbacks))
}

fn byok_key(headers: &HeaderMap) -> Result<Option<SecretString>, ApiError> {
    let Some(value) = headers.get(&BYOK_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| (8..=512).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(SecretString::from(k.to_owned())))
        .ok_or_else(|| ApiError::invalid_request("X-Provider-Key is malformed."))
}

/// Why one upstream call brought no answer to relay.
enum Failure {
    /// No answer began before the deadline (or the connection timed out).
    Timeout,
    /// The connection failed: refused, reset, TLS.
    Unreachable,
    /// The upstream answered with an error status.
    Status(UpstreamResponse),
    /// No call was made: every house key that could serve rests after a 429, until then.
    KeysResting(Instant),
}

impl Failure {
    /// Worth another call: the upstream, not the request, failed. 400, 401, 403, 404, 413 and
    /// 422 are the customer's answer.
    fn retryable(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Unreachable => true,
            Failure::KeysResting(_) => false,
            Failure::Status(response) => matches!(response.status().as_u16(), 429 | 500 | 502 | 503 | 504 | 529),
        }
    }
}

/// Upstream calls the request made, booked and sent as `X-Omi-Attempts`.
const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-omi-attempts");
/// The provider and model that answered (or failed last): `X-Omi-Upstream`.
const UPSTREAM_HEADER: HeaderName = HeaderName::from_static("x-omi-upstream");
/// The pause before a retry after the first: jittered, and short (the deadline bounds them all).
const RETRY_BACKOFF_MS: std::ops::Range<u64> = 25..50;

async fn forward(app: &AppState, mut meter: Meter, prepared: Prepared) -> Response {
    meter.upstream_started();
    let (outcome, index, attempts) = call_upstream(app, &mut meter, &prepared).await;
    meter.set_attempts(attempts);
    let candidate = prepared.candidate(index);
    let mut response = match outcome {
        Ok(upstream) => relay(app, meter, &prepared, candidate, upstream).await,
        // Boxed for the same reason as the credit hold: the refusal path is rare and large.
        Err(failure) => Box::pin(refuse(app, meter, &prepared, failure)).await,
    };
    let headers = response.headers_mut();
    if let Some(upstream) = candidate.header() {
        headers.insert(UPSTREAM_HEADER, upstream);
    }
    headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    response
}

/// The one place upstream is called: the candidates in turn (the requested model, then its
/// fallbacks, round again) until one answers, the failure is not worth another call,
/// `upstream_max_attempts` calls were made, or the first-byte deadline, shared by all, nears.
/// A candidate whose circuit is open, or whose house keys all rest or are out, is skipped at
/// once and is no attempt; when every one is, the request fails as unreachable without a
/// call. A house key the upstream refused (401/403) or rate-limited (429) is the pool's to
/// set aside, and the same candidate is called again with another key when one serves. Returns the last outcome, its candidate's
/// index and the calls made. Nothing has reached the client yet: a stream whose answer began
/// is relayed, never retried.
async fn call_upstream(
    app: &AppState,
    meter: &mut Meter,
    prepared: &Prepared,
) -> (Result<UpstreamResponse, Failure>, usize, u32) {
    let deadline = Instant::now() + Duration::from_millis(app.config.upstream_first_byte_timeout_ms);
    let mut attempts = 0;
    // The candidate the meter books (the primary until another is called).
    let mut booked = 0;
    let mut next = 0;
    let mut skipped_in_a_row = 0;
    loop {
        let index = next % prepared.candidates();
        next += 1;
        let candidate = prepared.candidate(index);
        let Some(key) = prepared.call_key(candidate, Instant::now()) else {
            skipped_in_a_row += 1;
            if skipped_in_a_row < prepared.candidates() {
                continue;
            }
            // None callable (circuits open, keys resting or out): before the first call (a
            // failed call goes on only when one is, unless another request changed that).
            let failure = match prepared.resting_until(Instant::now()) {
                Some(until) => Failure::KeysResting(until),
                None => Failure::Unreachable,
            };
            return (Err(failure), booked, attempts);
        };
        skipped_in_a_row = 0;
        if index != booked {
            // Another candidate than the last: booked and priced as the model that answers.
            booked = index;
            meter.set_request(
                &candidate.upstream_model,
                &candidate.provider.name,
                prepared.byok(),
                prepared.streamed,
                prepared.request_len,
            );
            meter.set_catalog(app.model_label(&candidate.model), candidate.price);
        }
        attempts += 1;
        let outcome = send(app, prepared, candidate, key.secret(), deadline).await;
        let upstream_failed = outcome.as_ref().err().is_some_and(Failure::retryable);
        let key_failed = match &key {
            CallKey::House(lease) => report_key(app, &candidate.provider, lease, &outcome),
            CallKey::Customer(_) => false,
        };
        if let CallKey::House(_) = key {
            // A refused or rate-limited key is the pool's business; the circuit counts what
            // says the provider itself is down.
            let end = match &outcome {
                Ok(_) => CallEnd::Answered,
                Err(_) if upstream_failed && !key_failed => CallEnd::Failed,
                Err(_) => CallEnd::RefusedRequest,
            };
            if let Some(change) = candidate.provider.circuit.record(end, Instant::now()) {
                let (provider, open) = (candidate.provider.name.clone(), change == CircuitChange::Open);
                app.events.publish(Event::Circuit { provider, open, at: chrono::Utc::now() });
            }
        }
        let failed = upstream_failed || key_failed;
        let backoff = retry_backoff(attempts);
        let retry = failed
            && attempts < app.config.upstream_max_attempts
            && deadline.saturating_duration_since(Instant::now()) > backoff
            && prepared.any_callable(Instant::now());
        candidate.provider.count_attempt(match (&outcome, retry) {
            (Ok(_), _) => AttemptOutcome::Ok,
            (Err(_), true) => AttemptOutcome::Retried,
            (Err(_), false) => AttemptOutcome::Failed,
        });
        if !retry {
            if let (Ok(_), CallKey::House(lease)) = (&outcome, key) {
                meter.hold_upstream_key(lease);
            }
            return (outcome, index, attempts);
        }
        if key_failed && candidate.provider.house_keys.available(Instant::now()) {
            // Another key of the same provider serves the model the customer asked for.
            next = index;
        }
        // tokio's timer ticks in whole milliseconds: even a zero sleep waits for the next tick
        // (measured: 1.4 ms added to each fallback, bench/README.md), so none is slept.
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Books what an answer says of the house key it went with, and publishes a key taken out or
/// back. True when the key, not the upstream, failed (401/403, 429): another key may answer.
fn report_key(
    app: &AppState,
    provider: &Provider,
    lease: &KeyLease,
    outcome: &Result<UpstreamResponse, Failure>,
) -> bool {
    let verdict = match outcome {
        Err(Failure::Status(response)) => match response.status().as_u16() {
            429 => KeyVerdict::RateLimited { retry_after: keys::retry_after(response.headers()) },
            401 | 403 => KeyVerdict::Refused,
            _ => KeyVerdict::Accepted,
        },
        Ok(_) => KeyVerdict::Accepted,
        // Unreachable or slow: the provider's, for its circuit.
        Err(_) => return false,
    };
    if let Some(change) = provider.house_keys.report(lease, verdict, Instant::now()) {
        if change.refused {
            tracing::error!(provider = %provider.name, variable = %change.var, "upstream refused a house key: taken out");
        } else {
            tracing::info!(provider = %provider.name, variable = %change.var, "house key accepted again");
        }
        app.events.publish(Event::HouseKey {
            provider: provider.name.clone(),
            variable: change.var,
            refused: change.refused,
            refused_left: change.refused_left,
            at: chrono::Utc::now(),
        });
    }
    verdict != KeyVerdict::Accepted
}

/// None before the first retry (another candidate is likely up); then 25-50 ms, jittered so
/// that requests failing together do not return together.
fn retry_backoff(attempts_made: u32) -> Duration {
    if attempts_made <= 1 {
        return Duration::ZERO;
    }
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), attempts_made);
    Duration::from_millis(RETRY_BACKOFF_MS.start + random % (RETRY_BACKOFF_MS.end - RETRY_BACKOFF_MS.start))
}

/// One upstream call, answered when its status and headers arrived before `deadline`.
async fn send(
    app: &AppState,
    prepared: &Prepared,
    candidate: &Candidate,
    key: &SecretString,
    deadline: Instant,
) -> Result<UpstreamResponse, Failure> {
    let overrides = &candidate.provider.overrides;
    let client = overrides.client.as_ref().unwrap_or(&app.upstream);
    // A provider's own first-byte timeout bounds its call, leaving the rest of the request's
    // deadline to the next candidate.
    let deadline = overrides.first_byte.map_or(deadline, |first_byte| deadline.min(Instant::now() + first_byte));
    // Bytes: a reference count, not a copy.
    let mut request = http::Request::new(Full::new(candidate.body.clone()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = candidate.url.clone();
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &prepared.forwarded {
        headers.insert(*name, value.clone());
    }
    candidate.wire().authorize(headers, key);
    match tokio::time::timeout_at(deadline, client.call(request)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(e)) => {
            let failure = if e.is_timeout() { Failure::Timeout } else { Failure::Unreachable };
            tracing::warn!(provider = %candidate.provider.name, error = %e, "upstream request failed");
            Err(failure)
        }
        Ok(Ok(response)) if response.status().is_success() => Ok(response),
        Ok(Ok(response)) => Err(Failure::Status(response)),
    }
}

/// What the client gets when the last call failed.
async fn refuse(app: &AppState, mut meter: Meter, prepared: &Prepared, failure: Failure) -> Response {
    match failure {
        Failure::Timeout => fail(meter, ApiError::upstream_timeout()),
        Failure::Unreachable => {
            // Booked apart from an upstream's own 5xx, so that the Hawk can tell an outage.
            let error = ApiError::upstream("The upstream provider could not be reached.");
            meter.finish(error.status.as_u16(), Some(UPSTREAM_UNREACHABLE));
            error.into_response()
        }
        Failure::KeysResting(until) => {
            let rest = until.saturating_duration_since(Instant::now());
            rate_limited(fail(meter, ApiError::upstream_rate_limited()), Some(rest))
        }
        Failure::Status(response) => {
            let status = response.status();
            let retry_after = keys::retry_after(response.headers());
            let first_byte = Duration::from_millis(app.config.upstream_first_byte_timeout_ms);
            let body = tokio::time::timeout(
                first_byte,
                read_body_bounded(response.into_body(), MAX_UPSTREAM_ERROR_BODY_BYTES),
            )
            .await
            .ok()
            .and_then(Result::ok);
            meter.upstream_finished();
            let (error, removed) = upstream_failure(status, body.as_deref(), prepared.byok(), &app.guard);
            removal_report(app, prepared, "upstream error message").add(&removed);
            let refused = fail(meter, error);
            if status == StatusCode::TOO_MANY_REQUESTS { rate_limited(refused, retry_after) } else { refused }
        }
    }
}

/// An upstream 429 as the client gets it: with `Retry-After` (whole seconds, at least 1) when
/// the wait is known, so that SDKs back off as long as the upstream asked.
fn rate_limited(mut response: Response, wait: Option<Duration>) -> Response {
    if let Some(wait) = wait {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A streamed answer's body, primed: the head and the first events leave in one write when
/// they came together. Boxed by the caller, so that the request's future holds a pointer.
async fn primed_body<S>(mut stream: Box<Coalesced<S>>) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    stream.prime().await;
    Body::from_stream(stream)
}

/// Relays the answer of `candidate`, whose status was a success.
async fn relay(
    app: &AppState,
    mut meter: Meter,
    prepared: &Prepared,
    candidate: &Candidate,
    response: UpstreamResponse,
) -> Response {
    let status = response.status();
    if prepared.streamed {
        let idle =
            candidate.provider.overrides.idle.unwrap_or(Duration::from_millis(app.config.upstream_idle_timeout_ms));
        let sse = MeteredSse::new(
            prepared.api,
            Box::pin(BodyDataStream::new(response.into_body())),
            meter,
            candidate.wire().stream(prepared.api, prepared.client_asked_usage),
            candidate.prompt_estimate,
            StreamLimits::with_idle(idle),
            app.stream_drains.clone(),
        );
        let shield = prepared.shield_format.and_then(|format| app.guard.answer_stream(format));
        let body = match shield {
            Some(shield) => {
                let shielded = ShieldedSse::new(sse, shield, removal_report(app, prepared, "streamed answer"));
                primed_body(Box::new(Coalesced::new(shielded))).await
            }
            None => primed_body(Box::new(Coalesced::new(sse))).await,
        };
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body)
            .unwrap_or_else(|_| ApiError::upstream("The upstream stream could not be relayed.").into_response());
    }

    let global = Duration::from_millis(app.config.upstream_first_byte_timeout_ms);
    let first_byte = candidate.provider.overrides.first_byte.unwrap_or(global);
    let read = read_body_bounded(response.into_body(), app.config.max_upstream_body_bytes);
    let body = match tokio::time::timeout(first_byte, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(ResponseBodyError::TooLarge(limit))) => {
            tracing::warn!(limit, "upstream body over the limit");
            return fail(meter, ApiError::upstream("The upstream answer is larger than this gateway relays."));
        }
        Ok(Err(ResponseBodyError::Broken(e))) => {
            tracing::warn!(error = %e, "upstream body failed");
            return fail(meter, ApiError::upstream("The upstream provider closed the connection mid-answer."));
        }
        Err(_) => return fail(meter, ApiError::upstream_timeout()),
    };
    meter.upstream_finished();
    let answer = match candidate.wire().answer(prepared.api, body) {
        Ok(answer) => answer,
        Err(unreadable) => {
            tracing::warn!(%unreadable, "upstream answer unreadable");
            return fail(meter, ApiError::upstream("The upstream provider sent an answer this gateway cannot read."));
        }
    };
    match answer.usage {
        Some(usage) => meter.record_usage(usage, false),
        // An answer without usage is still paid for: estimated, and marked so.
        None => meter.record_usage(
            TokenUsage {
                prompt_tokens: candidate.prompt_estimate,
                completion_tokens: openai::estimated_tokens(answer.answer_chars),
                ..TokenUsage::default()
            },
            true,
        ),
    }
    let body = answer.body;
    let cleaned = if prepared.shield_format.is_some() { app.guard.sanitize_answer(&body) } else { None };
    let body = match cleaned {
        Some((clean, removed)) => {
            removal_report(app, prepared, "answer").add(&removed);
            Bytes::from(clean)
        }
        None => body,
    };
    meter.add_response_bytes(body.len());
    meter.finish(status.as_u16(), None);
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn removal_report(app: &AppState, prepared: &Prepared, place: &'static str) -> RemovalReport {
    RemovalReport::new(app.events.clone(), prepared.request_id.clone(), Some(prepared.customer_id), place)
}

/// Maps an upstream error to what the customer sees, with what the shield removed from it.
/// Client errors keep the upstream's message, shielded and cut short (they are the customer's
/// to fix); everything else becomes a generic 502.
fn upstream_failure(
    status: StatusCode,
    body: Option<&[u8]>,
    byok: bool,
    guard: &Guard,
) -> (ApiError, Vec<RemovalKind>) {
    let error = match status.as_u16() {
        401 | 403 if byok => {
            ApiError::invalid_api_key("The upstream provider rejected the key sent in X-Provider-Key.")
        }
        401 | 403 => {
            tracing::error!(%status, "upstream rejected the house key");
            ApiError::upstream("The upstream provider refused the request.")
        }
        429 => ApiError::upstream_rate_limited(),
        300..=399 => {
            // Not followed (the client follows no redirect), and where it pointed is not said.
            tracing::warn!(%status, "upstream answered with a redirect");
            ApiError::upstream("The upstream provider failed to answer.")
        }
        400 | 404 | 409 | 413 | 422 => {
            let message = body
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned));
            let Some(message) = message else {
                return (
                    ApiError::upstream_client_error(status, "The upstream provider rejected the request.".into()),
                    Vec::new(),
                );
            };
            let (clean, removed) = guard.sanitize_text(&message);
            let short: String = clean.chars().take(MAX_UPSTREAM_MESSAGE_CHARS).collect();
            return (ApiError::upstream_client_error(status, short), removed);
        }
        _ => {
            tracing::warn!(%status, "upstream server error");
            ApiError::upstream("The upstream provider failed to answer.")
        }
    };
    (error, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn costly_options_are_removed_unless_allowed() {
        let request = || -> Map<String, Value> {
            serde_json::from_str(r#"{"model":"m","service_tier":"priority","store":true,"n":1}"#).expect("json")
        };
        let mut plain = request();
        remove_costly_options(&mut plain, Api::Chat, &Config::default());
        assert_eq!(Value::Object(plain), json!({"model": "m", "n": 1}));
        let mut allowed = request();
        let config = Config { passthrough_service_tier: true, passthrough_store: true, ..Config::default() };
        remove_costly_options(&mut allowed, Api::Responses, &config);
        assert_eq!(Value::Object(allowed), Value::Object(request()));
        let mut not_stored: Map<String, Value> = serde_json::from_str(r#"{"store":false}"#).expect("json");
        remove_costly_options(&mut not_stored, Api::Completions, &Config::default());
        assert_eq!(Value::Object(not_stored), json!({"store": false}), "store: false is what upstream does anyway");
        let mut responses: Map<String, Value> = serde_json::from_str(r#"{"input":"hi"}"#).expect("json");
        remove_costly_options(&mut responses, Api::Responses, &Config::default());
        assert_eq!(
            Value::Object(responses),
            json!({"input": "hi", "store": false}),
            "the Responses API stores by default"
        );
    }

    #[test]
    fn the_first_retry_is_at_once_and_later_ones_wait_a_bounded_jittered_pause() {
        assert_eq!(retry_backoff(1), Duration::ZERO, "another candidate is likely up");
        let pauses: Vec<Duration> = (2..200).map(retry_backoff).collect();
        let bounds = Duration::from_millis(RETRY_BACKOFF_MS.start)..Duration::from_millis(RETRY_BACKOFF_MS.end);
        assert!(pauses.iter().all(|pause| bounds.contains(pause)), "{pauses:?}");
        assert!(pauses.iter().any(|pause| *pause != pauses[0]), "jittered: {pauses:?}");
    }

    #[test]
    fn upstream_errors_never_carry_keys_or_hosts() {
        let config = crate::config::Config { shield_internal_hosts: vec!["corp.local".into()], ..Default::default() };
        let guard = Guard::from_config(&config).expect("guard");
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-proj-Ab12Cd34Ef56Gh78Ij90. Host http://10.0.0.5:8000 (vllm.corp.local) refused","type":"invalid_request_error"}}"#;
        let (err, removed) = upstream_failure(StatusCode::BAD_REQUEST, Some(body), false, &guard);
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        for secret in ["sk-proj", "Ab12Cd34", "10.0.0.5", "vllm", "corp.local"] {
            assert!(!err.message.contains(secret), "{secret} in {}", err.message);
        }
        assert!(err.message.starts_with("Incorrect API key provided: [REDACTED]"), "{}", err.message);
        assert_eq!(removed, vec![RemovalKind::Secret, RemovalKind::InternalAddress, RemovalKind::InternalHost]);
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "word ".repeat(300));
        let (err, _) = upstream_failure(StatusCode::BAD_REQUEST, Some(long.as_bytes()), false, &guard);
        assert_eq!(err.message.chars().count(), MAX_UPSTREAM_MESSAGE_CHARS);
        let (err, _) = upstream_failure(StatusCode::UNAUTHORIZED, Some(body), false, &guard);
        assert_eq!((err.status, err.code), (StatusCode::BAD_GATEWAY, "upstream_error"));
        let (err, _) = upstream_failure(StatusCode::UNAUTHORIZED, Some(body), true, &guard);
        assert_eq!((err.status, err.code), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
        let (err, _) = upstream_failure(StatusCode::INTERNAL_SERVER_ERROR, Some(body), false, &guard);
        assert_eq!((err.status, err.code), (StatusCode::BAD_GATEWAY, "upstream_error"));
    }
}

#[cfg(test)]
mod future_size {
    fn size_of_future<A, B, C, D, E, Fut>(_: &impl FnOnce(A, B, C, D, E) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn size_of_method_future<A, B, C, Fut>(_: &impl FnOnce(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every request's futures are moved into their boxes (a copy of all of each, the largest
    /// memcpy per request in callgrind): rare or remote steps (a prepaid plan's credit hold, a
    /// refusal, the Redis limiter's call) are boxed so that they do not enlarge them. Test
    /// profile: the handler's future 6,288 bytes before, 4,544 after; a limiter check 752, 48.
    #[test]
    fn the_request_futures_stay_small() {
        let handler = size_of_future(&super::handle::<crate::gateway::chat::Chat>);
        assert!(handler <= 5_000, "handle::<Chat> future is {handler} bytes");
        let check = size_of_method_future(&crate::firewall::RateLimiter::check_n);
        assert!(check <= 256, "RateLimiter::check_n future is {check} bytes");
    }
}
