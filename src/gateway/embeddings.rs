//! `POST /v1/embeddings`: metered by input tokens; never streamed, and its answers (vectors,
//! or base64 vectors) are not shielded: they carry no text, and a rewrite would corrupt them.

use super::pipeline::{Endpoint, require};
use crate::providers::Api;
use crate::web::error::ApiError;
use serde_json::{Map, Value};

pub struct Embeddings;

impl Endpoint for Embeddings {
    const API: Api = Api::Embeddings;
    const CUSTOMER_TEXT: &'static [&'static str] = &["input"];
    const STREAMS: bool = false;
    const SHIELDED: bool = false;

    fn validate(request: &Map<String, Value>) -> Result<(), ApiError> {
        require(request, "input", non_empty_input, "a string or a non-empty array")
    }
}

/// A string, or an array of strings or token arrays (OpenAI's shapes).
pub(super) fn non_empty_input(input: &Value) -> bool {
    match input {
        Value::String(_) => true,
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}
