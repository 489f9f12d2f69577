//! A response body read within a size bound: an upstream, a judge, a webhook or a mail API
//! (or something posing as one) cannot make omi buffer without limit.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("the response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the response body could not be read")]
    Broken(#[source] BoxError),
}

/// A reqwest answer's whole body (the judge, Slack, n8n, Postmark), as [`read_body_bounded`];
/// its errors lose their URL (a webhook's URL is a secret).
pub async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<Bytes, ResponseBodyError> {
    let body = http::Response::from(response).into_body();
    read_body_bounded(body.map_err(reqwest::Error::without_url), limit).await
}

/// The whole body, or `TooLarge` as soon as it is known to exceed `limit` bytes (by its
/// declared length, or as it comes).
pub async fn read_body_bounded<B>(body: B, limit: usize) -> Result<Bytes, ResponseBodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(ResponseBodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    // Most bodies come in one chunk: kept as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(|e| ResponseBodyError::Broken(e.into()))?.into_data() else {
            continue; // trailers
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn chunked(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(stream::iter(chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c))))))
    }

    #[tokio::test]
    async fn chunks_are_joined_up_to_the_limit_and_one_byte_more_is_refused() {
        let body = read_body_bounded(chunked(&[b"abc", b"de", b"f"]), 6).await.expect("within");
        assert_eq!(&body[..], b"abcdef");
        let over = read_body_bounded(chunked(&[b"abc", b"de", b"fg"]), 6).await;
        assert!(matches!(over, Err(ResponseBodyError::TooLarge(6))), "{over:?}");
        let declared = read_body_bounded(http_body_util::Full::new(Bytes::from_static(b"1234567")), 6).await;
        assert!(matches!(declared, Err(ResponseBodyError::TooLarge(6))), "known by its length: {declared:?}");
    }

    #[tokio::test]
    async fn a_body_that_breaks_is_broken() {
        let broken = StreamBody::new(stream::iter([
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ]));
        let read = read_body_bounded(broken, 100).await;
        assert!(matches!(read, Err(ResponseBodyError::Broken(_))), "{read:?}");
    }
}
