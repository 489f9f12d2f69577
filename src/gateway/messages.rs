//! `POST /v1/messages`: Anthropic's Messages API on `anthropic`-kind providers, streamed or not.
//! The customer key also comes as `x-api-key`, as Anthropic's SDKs send it. The operator's
//! system prompt is the first `system` block.

use super::pipeline::{Endpoint, require};
use crate::providers::Api;
use crate::shield::StreamFormat;
use crate::web::error::ApiError;
use serde_json::{Map, Value};

pub struct Messages;

impl Endpoint for Messages {
    const API: Api = Api::Messages;
    const STREAM_FORMAT: StreamFormat = StreamFormat::Messages;
    const CUSTOMER_TEXT: &'static [&'static str] = &["system", "messages", "tools"];
    const X_API_KEY: bool = true;
    /// The betas a client opts into (Claude Code sends several); the version is the kind's own.
    const FORWARDED_HEADERS: &'static [&'static str] = &["anthropic-beta"];

    fn validate(request: &Map<String, Value>) -> Result<(), ApiError> {
        require(request, "messages", |m| m.as_array().is_some_and(|m| !m.is_empty()), "a non-empty array")?;
        require(request, "max_tokens", |n| n.as_u64().is_some_and(|n| n > 0), "a positive integer")?;
        match request.get("system") {
            None | Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(_) => Err(ApiError::invalid_request("`system` must be a string or an array of text blocks.")),
        }
    }
}
