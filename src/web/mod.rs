//! What every HTTP-facing part shares without depending on another: errors in OpenAI's shape
//! (`error.rs`), an error with its causes on one line (`error_chain.rs`), request ids (`request_id.rs`) and the rate-limit verdict with its headers
//! (`rate_limit.rs`), reading a response body within a bound (`response_body.rs`), and the session
//! cookies of the dashboard and the portal (`session_cookie.rs`). The firewall, the gateway, billing and admin all build on it.

pub mod error;
pub mod error_chain;
pub mod rate_limit;
pub mod request_id;
pub mod response_body;
pub mod session_cookie;
