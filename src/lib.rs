//! OMI: the gateway customers call, the key vending machine, and the agents that keep the
//! books, watch the service and guard it — one process. See ARCHITECTURE.md.

pub mod admin;
pub mod agents;
pub mod app;
pub mod billing;
pub mod cli;
pub mod config;
pub mod customers;
pub mod doctor;
pub mod domain;
pub mod events;
pub mod firewall;
pub mod gateway;
pub mod json_bytes;
pub mod json_walk;
pub mod keys;
pub mod lane;
pub mod lookalike;
pub mod mock_upstream;
pub mod portal;
pub mod providers;
pub mod server;
pub mod shield;
pub mod store;
pub mod swar;
pub mod tasks;
pub mod telemetry;
#[cfg(test)]
pub mod test_rng;
pub mod ticker;
pub mod web;

/// The plan a key gets when none is named (INTERFACE.md: `pro` at $29/month).
pub const DEFAULT_PLAN: &str = "pro";

/// rustls needs a process-wide crypto provider before any TLS client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
