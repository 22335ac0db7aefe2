//! The fault harness outside CI (bench/src/faults.rs): runs many seeds,
//! one world after another, and prints a Markdown table of seeds, faults
//! and violations (`scripts/soak.sh` builds and runs it in release mode).
//!
//!     cargo run --release -p anykv-bench --example faults -- \
//!         --anykv target/release/anykv --seeds 1-200 [--net 48 --port 22100] \
//!         [--clients 3] [--no-async] [--out soak.md] [--list]
//!
//! `--list` prints the seeds' schedules and runs nothing.
//!
//! Exits 1 when any seed found a violation; their logs are kept (the
//! report says where). A seed reproduces its schedule anywhere:
//! `FAULT_SEEDS=<seed> cargo test -p anykv --test faults -- --nocapture`.

use anykv_bench::faults::{parse_seeds, run, table, RunSpec, Schedule};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut bin = "target/release/anykv".to_string();
    let mut seeds = "1-20".to_string();
    let (mut net, mut port, mut clients, mut async_db) = (48u8, 22100u16, 3usize, true);
    let mut out: Option<String> = None;
    let mut list = false;
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let bad = |what: &str| -> ! {
            eprintln!("{what}: {v:?}; see the example's doc comment");
            std::process::exit(2)
        };
        match argv[i].as_str() {
            "--anykv" => bin = v,
            "--seeds" => seeds = v,
            "--net" => net = v.parse().unwrap_or_else(|_| bad("--net")),
            "--port" => port = v.parse().unwrap_or_else(|_| bad("--port")),
            "--clients" => clients = v.parse().unwrap_or_else(|_| bad("--clients")),
            "--out" => out = Some(v),
            "--no-async" | "--list" => {
                async_db &= argv[i] != "--no-async";
                list |= argv[i] == "--list";
                i += 1;
                continue;
            }
            other => bad(&format!("unknown argument {other}")),
        }
        i += 2;
    }
    let seeds = parse_seeds(&seeds).unwrap_or_else(|e| {
        eprintln!("--seeds: {e}");
        std::process::exit(2)
    });
    if list {
        for s in &seeds {
            println!("{}", Schedule::from_seed(*s));
        }
        return;
    }
    let bin = std::fs::canonicalize(&bin).unwrap_or_else(|e| {
        eprintln!("{bin}: {e}");
        std::process::exit(2)
    });
    let mut reports = Vec::new();
    for (n, seed) in seeds.iter().enumerate() {
        println!("{}", Schedule::from_seed(*seed));
        let spec = RunSpec {
            bin: bin.clone(),
            dir: std::env::temp_dir().join(format!("anykv-soak-{}-seed{seed}", std::process::id())),
            net,
            port: port + 10 * (n % 8) as u16,
            seed: *seed,
            clients,
            async_db,
        };
        let r = run(&spec);
        println!("{r}");
        reports.push(r);
        if let Some(path) = &out {
            // Written after every seed: a long soak can be watched.
            let _ = std::fs::write(path, table(&reports));
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let lost: u64 = reports.iter().map(|r| r.stats.async_lost).sum();
    let acked: u64 = reports.iter().map(|r| r.stats.acked).sum();
    println!("\n{}", table(&reports));
    println!(
        "{} seeds, {failed} with violations; region: {acked} writes acknowledged; async: {lost} acknowledged INCRs lost",
        reports.len()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
