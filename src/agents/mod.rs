//! Agents: background workers fed by the gateway and the event bus. The Sentinel guards
//! prompts and records what the output shield removes; the Accountant and the Hawk join here.

pub mod sentinel;
