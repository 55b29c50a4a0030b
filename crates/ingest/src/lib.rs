//! Listing Guard ingest edge.
//!
//! - [`fetch`]: fetches merchant-controlled image URLs safely (scheme, address, size, time and
//!   redirect limits, retries with backoff).
//! - [`offsets`]: tracks in-flight records per partition so that an offset is stored only once
//!   it and every record before it are done (at-least-once, in offset order).
//! - [`consumer`]: builds the Kafka consumer with the settings those guarantees need.

pub mod consumer;
pub mod fetch;
pub mod offsets;
