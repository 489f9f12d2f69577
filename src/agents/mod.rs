//! The agents: subscribers of the event stream that run inside the process.

pub mod accountant;
