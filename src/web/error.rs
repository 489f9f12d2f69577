//! Errors as customers see them: OpenAI's shape `{"error": {"message", "type", "code"}}`
//! with the status codes of INTERFACE.md. Messages are written here, never copied from an
//! internal error, so no upstream key, host name or stack trace can reach a body.

use crate::web::rate_limit::Decision;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The limiter's verdict on a rate-limited request: `Retry-After` and `X-RateLimit-*`.
    pub rate_limit: Option<Decision>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), rate_limit: None }
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn prompt_rejected() -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "prompt_rejected",
            "The prompt was refused: it looks like a prompt injection.",
        )
    }
    pub fn invalid_api_key(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }
    pub fn key_revoked() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "key_revoked", "This API key has been revoked.")
    }
    pub fn key_suspended() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "key_suspended",
            "This API key is suspended; check your subscription's payment status.",
        )
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }
    pub fn request_timeout() -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "The request body did not arrive in time.")
    }
    pub fn country_blocked() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "country_blocked", "This service is not available in your country.")
    }
    /// `what` names the unit and whose budget it is, e.g. "requests a minute per client".
    pub fn rate_limited(decision: Decision, what: &str) -> ApiError {
        let limit = decision.limit;
        let message = match decision.retry_after_secs() {
            Some(retry) => format!("Rate limit reached: {limit} {what}. Retry after {retry} s."),
            None => format!("This request alone exceeds the limit of {limit} {what}."),
        };
        ApiError { rate_limit: Some(decision), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message) }
    }
    pub fn upstream(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }
    pub fn upstream_timeout() -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "The upstream provider did not answer in time.")
    }
    pub fn upstream_rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "The upstream provider is rate limiting requests; retry shortly.",
        )
    }
    /// The key's plan or the model's provider does not allow this model (or this way of using it).
    pub fn model_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "model_not_allowed", message)
    }
    /// Admin API: the customer already holds its plan's `max_keys`.
    pub fn max_keys_reached(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "max_keys_reached", message)
    }
    pub fn quota_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }
    /// Passes an upstream client error (bad parameter, unknown model) through with its status,
    /// keeping only a scrubbed message.
    pub fn upstream_client_error(status: StatusCode, message: String) -> ApiError {
        ApiError::new(status, "invalid_request", message)
    }

    fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl ApiError {
    pub fn into_response_with(mut self, status: StatusCode) -> Response {
        self.status = status;
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"message": self.message, "type": self.error_type(), "code": self.code, "param": null}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(decision) = self.rate_limit {
            decision.write_headers(response.headers_mut());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
