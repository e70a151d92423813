//! Benchmarks that print ratios against raw baselines measured in the same run.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
