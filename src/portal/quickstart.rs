//! First steps: the base URL and copy-paste snippets (the key email's, shared through
//! `billing::mailer::Quickstart`) with the prefix of the customer's newest active key; the
//! whole key is never shown again, so the customer pastes it in. With a provider of kind
//! `anthropic`, the Anthropic SDK too: the gateway serves its Messages API at `/v1/messages`.

use super::session::CustomerSession;
use super::{Chrome, PortalError, Template, render};
use crate::app::AppState;
use crate::billing::mailer::Quickstart;
use crate::config::{Config, ProviderKind};
use crate::domain::key::KeyStatus;
use crate::store::KeySearch;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

#[derive(Template)]
#[template(path = "portal_quickstart.html")]
struct QuickstartPage {
    chrome: Chrome,
    base_url: String,
    key_hint: String,
    snippets: Quickstart,
    /// Python `anthropic`, when a provider speaks Anthropic's API.
    anthropic: Option<String>,
}

/// The model the Anthropic snippet names when its provider lists none: reachable as
/// `provider/model` whatever the provider's list.
const ANTHROPIC_MODEL: &str = "claude-3-5-haiku-latest";

/// The Python `anthropic` snippet for the first provider of kind `anthropic`, with its first
/// listed model (or `provider/claude-…`). The SDK adds `/v1/messages` to `base_url`, so its
/// base is the gateway's root, not `…/v1`.
fn anthropic_snippet(config: &Config, key_hint: &str) -> Option<String> {
    let provider = config.providers.iter().find(|p| p.kind == ProviderKind::Anthropic)?;
    let model = provider.models.first().cloned().unwrap_or_else(|| format!("{}/{ANTHROPIC_MODEL}", provider.name));
    let base = config.public_base();
    Some(format!(
        "import anthropic\n\
         client = anthropic.Anthropic(base_url=\"{base}\", api_key=\"{key_hint}\")\n\
         message = client.messages.create(model=\"{model}\", max_tokens=256, messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}])\n\
         print(message.content[0].text)"
    ))
}

pub async fn page(State(app): State<Arc<AppState>>, session: CustomerSession) -> Result<Response, PortalError> {
    let search = KeySearch {
        customer: Some(session.customer_id),
        status: Some(KeyStatus::Active.as_str()),
        ..KeySearch::default()
    };
    let newest = app.store.search_keys(&search, 1, 0).await?;
    let key_hint = newest.first().map_or_else(|| "omi_…".to_string(), |k| format!("{}…", k.prefix));
    let base_url = app.config.public_api_base();
    render(&QuickstartPage {
        chrome: Chrome::new(&app, &session, "Quickstart", "/portal/quickstart").await?,
        snippets: Quickstart::new(&base_url, &key_hint),
        anthropic: anthropic_snippet(&app.config, &key_hint),
        base_url,
        key_hint,
    })
}
