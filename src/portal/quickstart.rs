//! First steps: the base URL and copy-paste snippets (the key email's, shared through
//! `billing::mailer::Quickstart`) with the prefix of the customer's newest active key; the
//! whole key is never shown again, so the customer pastes it in.

use super::session::CustomerSession;
use super::{Chrome, PortalError, Template, render};
use crate::app::AppState;
use crate::billing::mailer::Quickstart;
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
        base_url,
        key_hint,
    })
}
