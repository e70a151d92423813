//! Async Rust SDK for the Distributed Matching Engine. Not built yet: see the DME issue.
