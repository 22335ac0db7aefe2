//! `anykv regions list|add|remove`: scaling the data nodes' regions on
//! Fly (docs/DEPLOY.md, Scaling regions). The plan and its execution are
//! `anykv_ops::regions`; this is the command line: where the APIs are,
//! and showing the run as it goes (a spinner on a terminal, plain lines
//! otherwise).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anykv_ops::machines::{Machines, API};
use anykv_ops::regions::cluster::ClusterApi;
use anykv_ops::regions::fly::FlyInfra;
use anykv_ops::regions::run::{Change, Event, Runner};
use anykv_ops::regions::{render, Inventory};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum RegionsCmd {
    /// The regions of the data nodes: nodes, volumes and the databases
    /// that live or read there.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Give REGION data nodes (volumes in unique zones, machines from the
    /// current image and config), and wait until they are members and
    /// their copies have caught up.
    Add {
        region: String,
        /// Data nodes the region should have.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Print the plan and do nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Empty REGION (its read replicas moved away, nothing left on its
    /// nodes), then destroy its machines and, after them, its volumes.
    Remove {
        region: String,
        /// Hand the primaries of databases whose primary region this is to
        /// REGION first (refused without it, naming them).
        #[arg(long)]
        move_primaries_to: Option<String>,
        /// Print the plan and do nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the machines and the cluster are.
#[derive(Args)]
pub struct Target {
    /// The Fly app the data nodes run as.
    #[arg(long, env = "FLY_APP_NAME")]
    app: String,
    /// A Fly API token (`fly tokens create deploy`).
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    fly_token: String,
    /// The Machines API (a fake's, in tests).
    #[arg(long, default_value = API)]
    machines_api: String,
    /// A data node's metrics/admin address (over 6PN, e.g. through
    /// `fly proxy 9091`).
    #[arg(long, default_value = "127.0.0.1:9091")]
    node: SocketAddr,
    /// The admin API's token.
    #[arg(long, env = "ANYKV_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Size of a new volume when the app has none to copy it from (GB).
    #[arg(long, default_value_t = 10)]
    volume_gb: u64,
    /// How long a node being stopped gets to hand its primaries over
    /// (fly.toml's kill_timeout).
    #[arg(long, default_value = "300", value_parser = secs)]
    stop_timeout: Duration,
    /// How long a wait (nodes joining, copies draining) may take before
    /// the command stops; run it again to go on.
    #[arg(long, default_value = "600", value_parser = secs)]
    wait_timeout: Duration,
}

fn secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is not a number of seconds"))
}

fn runner(t: &Target) -> Runner<FlyInfra, ClusterApi> {
    let infra = FlyInfra {
        api: Machines::new(&t.machines_api, &t.app, &t.fly_token),
        volume_gb: t.volume_gb,
        stop_timeout: t.stop_timeout,
    };
    let mut r = Runner::new(infra, ClusterApi::new(&t.node.to_string(), &t.admin_token));
    r.wait_limit = t.wait_timeout;
    r
}

pub fn run(cmd: RegionsCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            RegionsCmd::List { target } => {
                let inv = runner(&target).inventory().await?;
                print!("{}", list_table(&inv));
                Ok(())
            }
            RegionsCmd::Add {
                region,
                count,
                dry_run,
                target,
            } => {
                let change = Change::Add { region, count };
                execute(&runner(&target), &change, dry_run).await
            }
            RegionsCmd::Remove {
                region,
                move_primaries_to,
                dry_run,
                target,
            } => {
                let change = Change::Remove {
                    region,
                    move_primaries_to,
                };
                execute(&runner(&target), &change, dry_run).await
            }
        }
    })
}

async fn execute(
    r: &Runner<FlyInfra, ClusterApi>,
    change: &Change,
    dry_run: bool,
) -> anyhow::Result<()> {
    if dry_run {
        print!("{}", render(&r.plan(change).await?));
        return Ok(());
    }
    let mut show = Progress::new();
    let result = r.run(change, &mut |e| show.event(e)).await;
    show.finish();
    match result {
        Ok(()) => {
            println!("done");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(e)),
    }
}

/// A run's progress: a spinner with the step and what it waits for on a
/// terminal, one line per event otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Planned(steps) => self.line(format!("plan:\n{}", render(&steps).trim_end())),
            Event::Step { index, of, step } => {
                let s = format!("[{}/{of}] {step}", index + 1);
                match &self.bar {
                    Some(b) => {
                        b.set_message(s.clone());
                        b.println(s);
                    }
                    None => eprintln!("{s}"),
                }
            }
            Event::Waiting(now) => match &self.bar {
                Some(b) => b.set_message(now),
                None => eprintln!("  waiting: {now}"),
            },
            Event::Made(id) => self.line(format!("  made {id}")),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// `regions list`: one row per region.
fn list_table(inv: &Inventory) -> String {
    let mut regions: Vec<&str> = inv
        .nodes
        .iter()
        .map(|n| n.region.as_str())
        .chain(inv.volumes.iter().map(|v| v.region.as_str()))
        .collect();
    regions.sort_unstable();
    regions.dedup();
    let mut out = format!(
        "{:<8} {:>5} {:>8} {:>8} {:>10}\n",
        "REGION", "NODES", "VOLUMES", "PRIMARY", "READ"
    );
    for r in regions {
        let nodes = inv.nodes.iter().filter(|n| n.region == r).count();
        let vols = inv.volumes.iter().filter(|v| v.region == r).count();
        let primary = inv.tenants.iter().filter(|t| t.primary_region == r).count();
        let read = inv
            .tenants
            .iter()
            .filter(|t| t.read_regions.iter().any(|x| x == r))
            .count();
        out.push_str(&format!(
            "{r:<8} {nodes:>5} {vols:>8} {primary:>8} {read:>10}\n"
        ));
    }
    out.push_str("(PRIMARY, READ: databases whose primary region / read regions it is)\n");
    out
}
