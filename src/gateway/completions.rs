//! `POST /v1/completions`: OpenAI's legacy completions, streamed or not. There is no system
//! slot: the operator's system prompt is not added to a bare prompt.

use super::embeddings::non_empty_input;
use super::pipeline::{Endpoint, require};
use crate::providers::Api;
use crate::web::error::ApiError;
use serde_json::{Map, Value};

pub struct Completions;

impl Endpoint for Completions {
    const API: Api = Api::Completions;
    const CUSTOMER_TEXT: &'static [&'static str] = &["prompt", "suffix"];

    fn validate(request: &Map<String, Value>) -> Result<(), ApiError> {
        require(request, "prompt", non_empty_input, "a string or a non-empty array")
    }
}
