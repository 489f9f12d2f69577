//! What every HTTP-facing part shares without depending on another: errors in OpenAI's shape
//! (`error.rs`), request ids (`request_id.rs`) and the rate-limit verdict with its headers
//! (`rate_limit.rs`). The firewall, the gateway, billing and admin all build on it.

pub mod error;
pub mod rate_limit;
pub mod request_id;
