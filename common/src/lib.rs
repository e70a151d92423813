//! Shared pieces of the edge platform: canonical object keys, tracing setup and the small HTTP server
//! for `/metrics`, `/healthz` and `/readyz` that every process runs.

pub mod keys;
pub mod ops;
pub mod telemetry;

pub use keys::{Keyed, store_key, store_prefix};
