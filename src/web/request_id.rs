//! `X-Request-Id` on every response: the client's own id when it is sane, else a new one.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// A `HeaderName` constant: a `&str` name is parsed and checked on every use.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn assign(mut request: Request, next: Next) -> Response {
    let id: Arc<str> = match request.headers().get(&HEADER).and_then(|v| v.to_str().ok()) {
        Some(given) if is_sane(given) => given.into(),
        _ => format!("req_{}", uuid::Uuid::now_v7().simple()).into(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sane_ids_are_echoed() {
        assert!(super::is_sane("req_abc-123.x:y"));
        assert!(!super::is_sane(""));
        assert!(!super::is_sane("has space"));
        assert!(!super::is_sane("<script>"));
        assert!(!super::is_sane(&"a".repeat(129)));
    }
}
