//! `POST /v1/responses`: OpenAI's Responses API on `openai`-kind providers, streamed or not.
//! The operator's system prompt goes first in `instructions`; `store` is sent as false unless
//! the operator passes it through (the API stores by default, and bills the stored state), so
//! conversations chained by `previous_response_id` need `passthrough_store = true`; without it
//! customers resend the conversation (or its encrypted reasoning) in `input`, as Codex does.

use super::pipeline::{Endpoint, require};
use crate::providers::Api;
use crate::shield::StreamFormat;
use crate::web::error::ApiError;
use serde_json::{Map, Value};

pub struct Responses;

impl Endpoint for Responses {
    const API: Api = Api::Responses;
    const STREAM_FORMAT: StreamFormat = StreamFormat::Responses;
    const CUSTOMER_TEXT: &'static [&'static str] = &["input", "instructions", "tools", "text"];

    fn validate(request: &Map<String, Value>) -> Result<(), ApiError> {
        require(request, "input", |i| i.is_string() || i.is_array(), "a string or an array of input items")?;
        match request.get("instructions") {
            None | Some(Value::Null | Value::String(_)) => Ok(()),
            Some(_) => Err(ApiError::invalid_request("`instructions` must be a string.")),
        }
    }
}
