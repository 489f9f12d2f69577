//! What the store persists and the parts above it decide with: types and pure rules, no I/O.
//! They live below the store so that the store can name them without depending on the parts
//! that act on them (ARCHITECTURE.md, "Layers").

pub mod allowed_models;
pub mod country;
pub mod key;
pub mod lemonsqueezy;
