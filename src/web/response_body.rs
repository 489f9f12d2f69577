//! A response body read within a size bound: an upstream, a judge, a webhook or a mail API
//! (or something posing as one) cannot make omi buffer without limit.

use bytes::{Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("the response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the response body could not be read")]
    Broken(#[source] reqwest::Error),
}

/// The whole body, or `TooLarge` as soon as it is known to exceed `limit` bytes.
pub async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Bytes, ResponseBodyError> {
    if response.content_length().is_some_and(|declared| declared > limit as u64) {
        return Err(ResponseBodyError::TooLarge(limit));
    }
    // Most bodies come in one chunk: kept as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(ResponseBodyError::Broken)? {
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(ResponseBodyError::TooLarge(limit));
        }
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(earlier)) => {
                let mut buffer = BytesMut::from(earlier);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}
