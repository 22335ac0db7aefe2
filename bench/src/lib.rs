//! anykv bench: load generation, the emulated multi-region world behind
//! `anykv demo`, and benchmark reports. Today the benchmarks are driven by
//! `scripts/bench-*.sh` with redis-benchmark; this crate takes them over
//! with the demo issue.

pub mod gossip_sim;
