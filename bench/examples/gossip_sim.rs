//! Runs the gossip simulation and prints a markdown table for
//! `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p anykv-bench --example gossip_sim
//! cargo run --release -p anykv-bench --example gossip_sim -- --nodes 200 --loss 0.1 --seed 9
//! ```
//!
//! With no arguments it runs `default_scenarios()`; with any of `--nodes`,
//! `--loss`, `--seed`, `--profile` (lan, wan, test), `--failures`,
//! `--changes`, `--duration` (seconds), `--seeds` (a count, or `all` for
//! DNS-style discovery), `--announce-every` (seconds, or `off`) or
//! `--max-tx` / `--notify-down` (override foca's `max_transmissions` /
//! `notify_down_members`) or `--raw-foca true` (let foca's spurious
//! `TurnUndead`s through, as anykv's node does not: the before-the-filter
//! counts in docs/BENCHMARKS.md) it runs that one scenario.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anykv_bench::gossip_sim::{self, Seeds, SimParams};

fn parse_args() -> Result<Option<SimParams>, String> {
    let mut p = SimParams::default();
    let mut custom = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::from(
                "usage: gossip_sim [--nodes N] [--loss F] [--seed S] [--profile lan|wan|test] \
                 [--failures N] [--changes N] [--duration SECS] [--seeds K|all] \
                 [--announce-every SECS|off] [--max-tx N] [--notify-down true|false] \
                 [--raw-foca true|false]",
            ));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--nodes" => p.nodes = value.parse().map_err(|e| bad(&e))?,
            "--loss" => p.loss = value.parse().map_err(|e| bad(&e))?,
            "--seed" => p.seed = value.parse().map_err(|e| bad(&e))?,
            "--profile" => p.profile = value.parse().map_err(|e| bad(&e))?,
            "--failures" => p.failures = value.parse().map_err(|e| bad(&e))?,
            "--changes" => p.meta_changes = value.parse().map_err(|e| bad(&e))?,
            "--duration" => p.duration = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            "--notify-down" => p.notify_down_members = Some(value.parse().map_err(|e| bad(&e))?),
            "--max-tx" => p.max_transmissions = Some(value.parse().map_err(|e| bad(&e))?),
            "--raw-foca" => p.raw_foca = value.parse().map_err(|e| bad(&e))?,
            "--seeds" => {
                p.seeds = match value.as_str() {
                    "all" => Seeds::All,
                    k => Seeds::Few(k.parse().map_err(|e| bad(&e))?),
                }
            }
            "--announce-every" => {
                p.announce_every = match value.as_str() {
                    "off" => None,
                    secs => Some(Duration::from_secs(secs.parse().map_err(|e| bad(&e))?)),
                }
            }
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
        custom = true;
    }
    if !(0.0..=1.0).contains(&p.loss) {
        return Err(format!("--loss {} is not in 0..=1", p.loss));
    }
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok(custom.then_some(p))
}

fn main() -> ExitCode {
    let scenarios = match parse_args() {
        Ok(Some(p)) => vec![p],
        Ok(None) => gossip_sim::default_scenarios(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut reports = Vec::new();
    for p in &scenarios {
        let r = gossip_sim::run(p);
        eprintln!("{r}\n");
        reports.push(r);
    }
    println!("{}", gossip_sim::markdown_table(&reports));
    eprintln!("total wall time {:.1} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
