//! Integration tests: the real server on a real socket, against SQLite and PostgreSQL.
//! One test binary (each extra binary relinks the whole dependency graph).
// Test code: an expectation that fails is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test tasks end with their test; shutdown ordering is the server's (omi::tasks) concern.
#![allow(clippy::disallowed_methods)]

mod accountant;
mod backup;
mod billing;
mod cli;
mod conformance;
mod credits;
mod dashboard;
mod doctor;
mod endpoints;
mod fallbacks;
mod firewall;
mod gateway;
mod hawk;
mod key_api;
mod mailer;
mod partitions;
mod plans;
mod portal;
mod pricing;
mod revocation;
mod schema;
mod sdk;
mod sentinel;
mod store;
mod streams;
mod support;
