//! anykv bench: measuring anykv.
//!
//! - [`gossip_sim`]: a deterministic, virtual-time simulation of the gossip
//!   layer (real `foca` instances, simulated network) that measures failure
//!   detection, dissemination, false positives and bandwidth; run it with
//!   `cargo run --release -p anykv-bench --example gossip_sim`.
//! - [`world`]: the emulated world's launcher (`anykv node` processes on
//!   loopback addresses, the WAN emulated between their regions,
//!   `world.json` to restart a killed node as it was, `POST /shaper` to
//!   partition or isolate nodes at runtime).
//! - [`history`]: the checker of what clients saw during a fault run
//!   (linearizable registers, no acknowledged write lost, one primary per
//!   epoch), for the failover harness.
//! - [`client`]: a RESP client, the admin API's databases and their role
//!   records, and a router's store streams (envelopes, write tokens).
//! - [`faults`]: the fault harness: seeded fault schedules (kill -9,
//!   SIGSTOP, partitions, a clock offset) run on a world while clients
//!   write and read, checked with [`history`] (`tests/faults.rs` in CI,
//!   `scripts/soak.sh` for many more seeds).
//! - [`load`]: `anykv bench load`, a load generator for any
//!   Redis-compatible endpoint (closed or open loop, uniform or zipfian
//!   keys), reporting throughput and HDR latencies.
//! - [`global`]: `anykv bench global`, what multi-region buys, measured
//!   per region on a world (or a real deployment) against two baselines,
//!   then the primary killed mid-run; a Markdown report and SVG plots.
//! - [`scale`]: `anykv bench regions`, what scaling regions costs: adding
//!   a region that holds a database (against a bulk copy of its bytes),
//!   removing its primary region under writes.
//! - [`demo`]: `anykv demo`, the whole service on one machine (a DNS zone,
//!   nodes on a [`world`], the sidecar and a fake Fly, a provisioned
//!   database).
//!
//! `anykv bench` is docs/BENCH.md. The store benchmarks are Python
//! scripts that drive `redis-benchmark` against `anykv server` and
//! `redis-server` side by side: `bench/scripts/compare.py` (throughput,
//! latency, memory), `bench/scripts/cpu.py` (CPU per request),
//! `bench/scripts/persistence.py` (AOF throughput, restart time, memory
//! during a background save) and `bench/scripts/replication.py`
//! (replication lag, what a replica costs a primary, full sync); results
//! are in `docs/BENCHMARKS.md`. The worlds use the RTT table in
//! `bench/data/region-rtt.csv`.

pub mod client;
pub mod demo;
pub mod faults;
pub mod global;
pub mod gossip_sim;
pub mod history;
pub mod load;
pub mod scale;
pub mod world;

/// The region RTT table shipped with the project (WonderProxy city
/// pings between Fly's regions): `--emulate-wan builtin`, the demo's.
pub const REGION_RTT: &str = include_str!("../data/region-rtt.csv");

/// The RTT table `--emulate-wan` names: `builtin` ([`REGION_RTT`]) or the
/// path of a CSV file.
pub fn rtt_table(src: &str) -> Result<anykv_gossip::link::RttTable, String> {
    use anykv_gossip::link::RttTable;
    if src == "builtin" {
        RttTable::parse(REGION_RTT).map_err(|e| format!("the built-in RTT table: {e}"))
    } else {
        RttTable::load(std::path::Path::new(src)).map_err(|e| format!("loading {src}: {e}"))
    }
}

/// Ends a benchmark tool's run with `msg`: a panic, so that what `main`
/// owns (a world and its nodes) is dropped and stopped on the way out;
/// [`quiet_panics`] prints just the message.
pub fn fail(msg: &str) -> ! {
    std::panic::panic_any(msg.to_string())
}

/// Makes a panic print `<tool>: <message>` only (no backtrace note): the
/// benchmark tools end with [`fail`].
pub fn quiet_panics(tool: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| info.to_string());
        eprintln!("{tool}: {msg}");
    }));
}
