//! The customer API. `pipeline.rs` is the one request path (admit, validate, screen, route,
//! forward, meter, shield); each endpoint is a file declaring what differs (`chat.rs`,
//! `embeddings.rs`, `completions.rs`, `responses.rs`, `messages.rs`); `stream.rs` relays and
//! meters streamed answers; `meter.rs` books each request; `auth.rs` admits a customer key;
//! `key.rs` serves the customer's own key (`/v1/key`, `/v1/key/rotate`); `/v1/models` (the
//! models the key's plan allows) is here. The providers' wire formats live in `providers`, the
//! output shield in `shield`, the server and router in `server`.

mod auth;
mod chat;
mod completions;
mod embeddings;
mod key;
mod messages;
mod meter;
mod pipeline;
mod responses;
pub(crate) mod stream;

pub(crate) use auth::X_API_KEY;
pub(crate) use chat::Chat;
pub(crate) use completions::Completions;
pub(crate) use embeddings::Embeddings;
pub(crate) use key::{describe_key, rotate_key, rotate_with_grace};
pub(crate) use messages::Messages;
pub use meter::MeterMetrics;
pub(crate) use pipeline::{BYOK_HEADER, handle};
pub(crate) use responses::Responses;
pub(crate) use stream::StreamLimits;

use crate::app::AppState;
use crate::firewall::Origin;
use crate::web::request_id::RequestId;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::sync::Arc;

pub(crate) async fn list_models(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
) -> Response {
    let mut meter = meter::Meter::start(app.events.clone(), &app.meters, request_id, "models", origin.client.ip);
    match auth::admit(&app, &headers, &origin, &mut meter, false).await {
        Err(error) => {
            meter.finish(error.status.as_u16(), Some(error.code));
            error.into_response()
        }
        Ok(key) => {
            meter.finish(200, None);
            // Only what the key's plan allows, judged as a request for the model would be.
            let plan = app.config.plan(&key.plan);
            let data: Vec<_> = app
                .providers
                .listed_models()
                .filter(|(id, _)| {
                    plan.is_none_or(|plan| {
                        app.providers
                            .route(id)
                            .is_some_and(|route| plan.allows_model(id, &route.provider.name, route.upstream_model))
                    })
                })
                .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
    }
}
