//! OpenAI's `POST /v1/embeddings`: `input` is a string, a token array, or an array of either;
//! each gets a small deterministic unit vector (8 dimensions unless `dimensions` says otherwise)
//! derived from its text, as floats or, with `encoding_format: "base64"`, little-endian f32 bytes.

use super::{Call, Dialect};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

const DEFAULT_DIMENSIONS: u64 = 8;
/// text-embedding-3-large's size, the largest OpenAI serves.
const MAX_DIMENSIONS: u64 = 3072;

pub(super) fn embeddings(call: Call) -> Response {
    let refuse = |message: &str| Dialect::OpenAi.error(StatusCode::BAD_REQUEST, message);
    let Some(inputs) = inputs_of(&call.body["input"]) else {
        return refuse("'$.input' is invalid: a non-empty string, token array, or array of them is required");
    };
    let dimensions = match &call.body["dimensions"] {
        Value::Null => DEFAULT_DIMENSIONS,
        given => match given.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)) {
            Some(dimensions) => dimensions,
            None => return refuse("dimensions must be an integer between 1 and 3072"),
        },
    };
    let base64 = match call.body["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return refuse("encoding_format must be 'float' or 'base64'"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = vector_of(input, dimensions as usize);
            let embedding = if base64 { json!(encode_base64(&vector)) } else { json!(vector) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens = call.usage(&["input"]).prompt;
    call.json(json!({"object": "list", "data": data, "model": call.model("text-embedding-3-small"),
                     "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}))
}

/// The inputs to embed, or `None` when `input` is missing, empty or of another type.
fn inputs_of(input: &Value) -> Option<Vec<&Value>> {
    let single = |item: &Value| match item {
        Value::String(text) => !text.is_empty(),
        Value::Array(tokens) => !tokens.is_empty() && tokens.iter().all(Value::is_u64),
        _ => false,
    };
    match input {
        Value::Array(items) if items.iter().all(Value::is_u64) => single(input).then(|| vec![input]),
        Value::Array(items) => (!items.is_empty() && items.iter().all(single)).then(|| items.iter().collect()),
        _ => single(input).then(|| vec![input]),
    }
}

/// A unit vector derived from the input's text: the same input always embeds the same way.
fn vector_of(input: &Value, dimensions: usize) -> Vec<f32> {
    let text = match input {
        Value::String(text) => text.clone(),
        tokens => tokens.to_string(),
    };
    // FNV-1a seeds a splitmix64 sequence: cheap, stable across platforms and releases.
    let mut state =
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 { raw } else { raw.iter().map(|x| x / norm).collect() }
}

fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::spawn;
    use base64::Engine;
    use serde_json::{Value, json};

    async fn embed(body: Value) -> (u16, Value) {
        let (_mock, base, http) = spawn().await;
        let answer = http.post(format!("{base}/embeddings")).bearer_auth("k").json(&body).send().await.expect("send");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    #[tokio::test]
    async fn embeddings_give_one_deterministic_unit_vector_per_input() {
        let (status, answer) =
            embed(json!({"model": "text-embedding-3-small", "input": ["abcd", "abcdefgh", "abcd"]})).await;
        assert_eq!(status, 200);
        assert_eq!(answer["object"], "list");
        assert_eq!(answer["model"], "text-embedding-3-small");
        assert_eq!(answer["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}), "16 characters");
        let data = answer["data"].as_array().expect("data");
        assert_eq!(data.len(), 3);
        let vector = |i: usize| -> Vec<f64> {
            assert_eq!((data[i]["object"].as_str(), data[i]["index"].as_u64()), (Some("embedding"), Some(i as u64)));
            data[i]["embedding"].as_array().expect("floats").iter().filter_map(Value::as_f64).collect()
        };
        assert_eq!(vector(0).len(), 8);
        assert_eq!(vector(0), vector(2), "same text, same vector");
        assert_ne!(vector(0), vector(1));
        let norm: f64 = vector(1).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    }

    #[tokio::test]
    async fn embeddings_honour_dimensions_base64_and_token_arrays() {
        let (_, floats) = embed(json!({"input": [[1, 2, 3]], "dimensions": 4})).await;
        let (_, encoded) = embed(json!({"input": [1, 2, 3], "dimensions": 4, "encoding_format": "base64"})).await;
        assert_eq!(floats["usage"]["prompt_tokens"], 3, "one token per id");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded["data"][0]["embedding"].as_str().expect("base64"))
            .expect("decodes");
        let decoded: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let floats: Vec<f32> = floats["data"][0]["embedding"]
            .as_array()
            .expect("floats")
            .iter()
            .filter_map(Value::as_f64)
            .map(|x| x as f32)
            .collect();
        assert_eq!(decoded, floats, "a nested and a flat token array embed alike, as floats or base64");
    }

    #[tokio::test]
    async fn embeddings_refuse_bad_input_and_dimensions() {
        for body in [
            json!({}),
            json!({"input": ""}),
            json!({"input": []}),
            json!({"input": [{"a": 1}]}),
            json!({"input": "x", "dimensions": 0}),
            json!({"input": "x", "encoding_format": "hex"}),
        ] {
            let (status, answer) = embed(body.clone()).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["error"]["type"], "invalid_request_error");
        }
    }
}
