//! `POST /v1/chat/completions`: served by every provider kind (Anthropic's by translation).

use super::pipeline::{Endpoint, require};
use crate::agents::sentinel::CHAT_INPUT_FIELDS;
use crate::providers::Api;
use crate::web::error::ApiError;
use serde_json::{Map, Value};

pub struct Chat;

impl Endpoint for Chat {
    const API: Api = Api::Chat;
    const CUSTOMER_TEXT: &'static [&'static str] = CHAT_INPUT_FIELDS;

    fn validate(request: &Map<String, Value>) -> Result<(), ApiError> {
        require(request, "messages", |m| m.as_array().is_some_and(|m| !m.is_empty()), "a non-empty array")
    }
}
