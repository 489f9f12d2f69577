//! The customer's own keys: the list, a new key (shown once, within the plan's `max_keys`),
//! rotating one and revoking one. Keys change through the same functions as the admin's and
//! the API's (`keys::issue`, `admin::change_key_status`, `gateway::rotate_with_grace`: every
//! instance refuses a revoked or rotated-away key within 2 s). A key id of another customer is
//! answered exactly like one that does not exist: 404.

use super::session::CustomerSession;
use super::{Chrome, PortalError, Template, render};
use crate::admin::change_key_status;
use crate::admin::dashboard::format;
use crate::app::AppState;
use crate::customers::EmailAddress;
use crate::domain::key::KeyStatus;
use crate::keys::{self, MAX_GRACE_SECS};
use crate::store::{KeyListing, KeySearch};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// More keys than any plan allows; the page lists them all.
const MOST_KEYS: i64 = 1000;

pub struct KeyRow {
    pub id: Uuid,
    pub prefix: String,
    pub name: String,
    pub plan: String,
    pub created: String,
    pub last_used: String,
    pub status: String,
    pub revocable: bool,
    /// Active and not expired: only a working key is rotated (its replacement takes its status).
    pub rotatable: bool,
}

impl From<KeyListing> for KeyRow {
    fn from(k: KeyListing) -> KeyRow {
        let now = chrono::Utc::now();
        // A rotated-away key past its grace is still `active` in the table, and refused.
        let expired = k.status == KeyStatus::Active.as_str() && k.expires_at.is_some_and(|at| at <= now);
        KeyRow {
            id: k.id,
            revocable: k.status != KeyStatus::Revoked.as_str(),
            rotatable: is_working(&k, now),
            prefix: k.prefix,
            name: k.name.unwrap_or_default(),
            plan: k.plan,
            created: format::time(k.created_at),
            last_used: k.last_used_at.map_or_else(|| "never".to_string(), format::time),
            status: if expired { "expired".to_string() } else { k.status },
        }
    }
}

#[derive(Template)]
#[template(path = "portal_keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    /// The plan a new key gets; `None` (no active key: the subscription ended or is on hold)
    /// means none can be made here.
    new_key_plan: Option<String>,
}

async fn own_keys(app: &AppState, session: &CustomerSession) -> Result<Vec<KeyListing>, PortalError> {
    let search = KeySearch { customer: Some(session.customer_id), ..KeySearch::default() };
    Ok(app.store.search_keys(&search, MOST_KEYS, 0).await?)
}

/// A new key gets the plan of the customer's newest active key: a customer whose keys are all
/// suspended or revoked (an ended subscription, a Sentinel hold) cannot mint a working one.
/// The key a new one is made beside: an active key, not held, not expired. The new key takes
/// its plan and its expiry (making keys never lengthens a trial).
fn new_key_source(keys: &[KeyListing]) -> Option<&KeyListing> {
    let now = chrono::Utc::now();
    keys.iter().find(|k| is_working(k, now))
}

/// Active, not held by the Sentinel, not expired: a key the gateway would serve.
fn is_working(key: &KeyListing, now: chrono::DateTime<chrono::Utc>) -> bool {
    key.status == KeyStatus::Active.as_str() && key.held_since.is_none() && key.expires_at.is_none_or(|at| at > now)
}

pub async fn page(State(app): State<Arc<AppState>>, session: CustomerSession) -> Result<Response, PortalError> {
    let keys = own_keys(&app, &session).await?;
    render(&KeysPage {
        chrome: Chrome::new(&app, &session, "Keys", "/portal/keys").await?,
        new_key_plan: new_key_source(&keys).map(|k| k.plan.clone()),
        keys: keys.into_iter().map(KeyRow::from).collect(),
    })
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

#[derive(Template)]
#[template(path = "portal_key_created.html")]
struct KeyCreatedPage {
    chrome: Chrome,
    key: String,
    prefix: String,
    plan: String,
    /// After a rotation: the replaced key's prefix and when it stops working.
    replaced: Option<Replaced>,
}

struct Replaced {
    prefix: String,
    until: String,
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    axum::Form(form): axum::Form<CreateForm>,
) -> Result<Response, PortalError> {
    session.check_csrf(&form.csrf)?;
    let keys = own_keys(&app, &session).await?;
    let source = new_key_source(&keys).ok_or(PortalError::Conflict(
        "You have no active key, so no new one can be made here: renew your plan or contact us.".into(),
    ))?;
    let (plan, expires_at) = (source.plan.clone(), source.expires_at);
    let customer = app.store.customer_detail(session.customer_id).await?;
    let email = EmailAddress::parse(&customer.email).map_err(|_| PortalError::Internal("stored email"))?;
    let name = Some(form.name.trim()).filter(|n| !n.is_empty());
    let terms = keys::KeyTerms { max_keys: app.config.plan(&plan).and_then(|p| p.max_keys), expires_at };
    let (key, listing) = keys::issue(&app.store, &email, &plan, name, terms).await?;
    tracing::info!(key_id = %listing.id, prefix = %listing.prefix, "key created from the portal");
    render(&KeyCreatedPage {
        chrome: Chrome::new(&app, &session, "Key created", "/portal/keys").await?,
        key: key.expose().to_string(),
        prefix: listing.prefix,
        plan: listing.plan,
        replaced: None,
    })
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

/// The session's own key named in a URL; any other id (another customer's, unknown,
/// malformed) is the same 404.
async fn own_key(app: &AppState, session: &CustomerSession, id: &str) -> Result<KeyListing, PortalError> {
    let id = Uuid::parse_str(id).map_err(|_| PortalError::NotFound)?;
    let key = app.store.key_by_id(id).await?;
    if key.customer_id != session.customer_id {
        return Err(PortalError::NotFound);
    }
    Ok(key)
}

/// `POST /portal/keys/{id}/revoke`: only the session's own key; any other id is 404.
pub async fn revoke(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RevokeForm>,
) -> Result<Response, PortalError> {
    session.check_csrf(&form.csrf)?;
    let id = own_key(&app, &session, &id).await?.id;
    change_key_status(&app, id, KeyStatus::Revoked).await?;
    tracing::info!(key_id = %id, "key revoked from the portal");
    Ok(Redirect::to("/portal/keys").into_response())
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    /// Seconds the old key keeps working: 0 (now) up to `keys::MAX_GRACE_SECS`.
    #[serde(default)]
    grace_secs: String,
}

/// `POST /portal/keys/{id}/rotate`: the API's rotation (`gateway::rotate_with_grace`, which
/// emails the customer) for the session's own working key; any other id is 404. The new key
/// is shown once, on the "key created" page.
pub async fn rotate(
    State(app): State<Arc<AppState>>,
    session: CustomerSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RotateForm>,
) -> Result<Response, PortalError> {
    session.check_csrf(&form.csrf)?;
    let old = own_key(&app, &session, &id).await?;
    let grace_secs =
        form.grace_secs.trim().parse::<u32>().ok().filter(|secs| *secs <= MAX_GRACE_SECS).ok_or_else(|| {
            PortalError::BadRequest(format!("The grace period must be between 0 and {MAX_GRACE_SECS} seconds."))
        })?;
    if !is_working(&old, chrono::Utc::now()) {
        return Err(PortalError::Conflict("Only an active key can be rotated.".into()));
    }
    let grace = chrono::Duration::seconds(i64::from(grace_secs));
    let rotation = crate::gateway::rotate_with_grace(&app, old.id, grace, None).await?;
    tracing::info!(key_id = %old.id, new_key_id = %rotation.key_id, "key rotated from the portal");
    let until = rotation.old_key_expires_at.filter(|at| *at > chrono::Utc::now());
    render(&KeyCreatedPage {
        chrome: Chrome::new(&app, &session, "Key rotated", "/portal/keys").await?,
        key: rotation.key.expose().to_string(),
        prefix: rotation.key.display_prefix(),
        plan: old.plan,
        replaced: Some(Replaced {
            prefix: old.prefix,
            until: until.map_or_else(|| "now".to_string(), |at| format!("at {}", format::time(at))),
        }),
    })
}
