//! Benchmarks of the platform. Each prints its results next to a raw baseline measured in the same run (a plain gRPC echo on the same machine), as ratios; see `src/main.rs`.
