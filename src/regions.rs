//! `anykv regions list|add|remove`: scaling the data nodes' regions on
//! Fly, or of a world on this machine (docs/DEPLOY.md, `anykv regions`).
//! The plan and its execution are `anykv_ops::regions` (the local
//! machines `anykv_bench::world::local`); this is the command line: where
//! the APIs are,
//! and showing the run as it goes (a spinner on a terminal, plain lines
//! otherwise).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use std::path::PathBuf;

use anykv_bench::world::local::LocalInfra;
use anykv_bench::world::WorldFile;
use anykv_ops::machines::{Machines, API};
use anykv_ops::regions::cluster::ClusterApi;
use anykv_ops::regions::fly::FlyInfra;
use anykv_ops::regions::run::{Change, Cluster, Event, Infra, Runner};
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
    /// `fly`: the app's machines over the Machines API; `local`: the
    /// `anykv node` processes of a world on this machine (`anykv demo`'s).
    #[arg(long, value_enum, default_value_t = Backend::Fly)]
    backend: Backend,
    /// The Fly app the data nodes run as (fly).
    #[arg(long, env = "FLY_APP_NAME")]
    app: Option<String>,
    /// A Fly API token, `fly tokens create deploy` (fly).
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    fly_token: Option<String>,
    /// The Machines API (a fake's, in tests) (fly).
    #[arg(long, default_value = API)]
    machines_api: String,
    /// The world's directory, with its world.json (local).
    #[arg(long)]
    world: Option<PathBuf>,
    /// A data node's metrics/admin address; repeat it for others to ask
    /// when one does not answer (a node the run stops). fly: over 6PN
    /// (`<machine id>.vm.<app>.internal:9091`) or through `fly proxy 9091`;
    /// default 127.0.0.1:9091. local: default every running node of the
    /// world.
    #[arg(long)]
    node: Vec<SocketAddr>,
    /// The admin API's token (local: default the world's).
    #[arg(long, env = "ANYKV_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Size of a new volume when the app has none to copy it from (GB).
    #[arg(long, default_value_t = 10)]
    volume_gb: u64,
    /// How long a node being stopped gets to hand its primaries over
    /// (fly.toml's kill_timeout, 10 s).
    #[arg(long, default_value = "10", value_parser = secs)]
    stop_timeout: Duration,
    /// How long a wait (nodes joining, copies draining) may take before
    /// the command stops; run it again to go on.
    #[arg(long, default_value = "600", value_parser = secs)]
    wait_timeout: Duration,
    /// Fault testing: how long to wait after naming each step before
    /// carrying it out, so that a test can kill the command as a step
    /// begins (local steps take microseconds, less than a kill takes to
    /// land).
    #[arg(long, hide = true, default_value = "0", value_parser = millis)]
    step_pause_ms: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Fly,
    Local,
}

fn secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is not a number of seconds"))
}

fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))
}

fn required(v: &Option<String>, what: &str) -> anyhow::Result<String> {
    v.clone().ok_or_else(|| anyhow::anyhow!("{what}"))
}

fn fly_runner(t: &Target) -> anyhow::Result<Runner<FlyInfra, ClusterApi>> {
    let app = required(
        &t.app,
        "--app (or FLY_APP_NAME): the Fly app of the data nodes",
    )?;
    let token = required(
        &t.fly_token,
        "--fly-token (or FLY_API_TOKEN): create one with `fly tokens create deploy`",
    )?;
    let admin = required(&t.admin_token, "--admin-token (or ANYKV_ADMIN_TOKEN)")?;
    let infra = FlyInfra {
        api: Machines::new(&t.machines_api, &app, &token),
        volume_gb: t.volume_gb,
        stop_timeout: t.stop_timeout,
    };
    let nodes: Vec<String> = if t.node.is_empty() {
        vec!["127.0.0.1:9091".into()]
    } else {
        t.node.iter().map(|a| a.to_string()).collect()
    };
    let mut r = Runner::new(infra, ClusterApi::with_nodes(nodes, &admin));
    r.wait_limit = t.wait_timeout;
    Ok(r)
}

/// `leaving`: the region a removal empties (its nodes are asked last).
fn local_runner(
    t: &Target,
    leaving: Option<&str>,
) -> anyhow::Result<Runner<LocalInfra, ClusterApi>> {
    let Some(dir) = t.world.clone() else {
        anyhow::bail!("--world DIR: the world's directory (anykv demo --dir DIR --keep)");
    };
    let world = WorldFile::load(&dir.join("world.json"))
        .map_err(|e| anyhow::anyhow!("{e}; is a world running there (anykv demo --dir)?"))?;
    let nodes = anykv_bench::world::local::running_nodes(&world, leaving);
    let addrs: Vec<String> = if !t.node.is_empty() {
        t.node.iter().map(|a| a.to_string()).collect()
    } else if nodes.is_empty() {
        anyhow::bail!(
            "no node of the world in {} runs; start it again (anykv demo --dir)",
            dir.display()
        )
    } else {
        nodes.iter().map(|n| n.http.to_string()).collect()
    };
    let admin = match (&t.admin_token, nodes.first()) {
        (Some(a), _) => a.clone(),
        (None, Some(n)) => n.env.get("ANYKV_ADMIN_TOKEN").cloned().unwrap_or_default(),
        (None, None) => String::new(),
    };
    let infra = LocalInfra {
        dir,
        stop_timeout: t.stop_timeout,
    };
    let mut r = Runner::new(infra, ClusterApi::with_nodes(addrs, &admin));
    r.wait_limit = t.wait_timeout;
    Ok(r)
}

pub fn run(cmd: RegionsCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (change, dry_run, target) = match cmd {
        RegionsCmd::List { target } => (None, false, target),
        RegionsCmd::Add {
            region,
            count,
            dry_run,
            target,
        } => (Some(Change::Add { region, count }), dry_run, target),
        RegionsCmd::Remove {
            region,
            move_primaries_to,
            dry_run,
            target,
        } => (
            Some(Change::Remove {
                region,
                move_primaries_to,
            }),
            dry_run,
            target,
        ),
    };
    if target.backend == Backend::Fly {
        if let Some(change) = &change {
            check_fly_regions(change)?;
        }
    }
    let pause = target.step_pause_ms;
    rt.block_on(async move {
        match target.backend {
            Backend::Fly => execute(&fly_runner(&target)?, change.as_ref(), dry_run, pause).await,
            Backend::Local => {
                let leaving = match &change {
                    Some(Change::Remove { region, .. }) => Some(region.as_str()),
                    _ => None,
                };
                let runner = local_runner(&target, leaving)?;
                execute(&runner, change.as_ref(), dry_run, pause).await
            }
        }
    })
}

/// Fly's region codes are three lowercase letters (`iad`, `cdg`): a
/// city name or an upper-case code is refused before anything is asked
/// of Fly. (Whether Fly has the region, Fly says when the first volume is
/// made: nothing is created in a region it refuses.)
fn check_fly_regions(change: &Change) -> anyhow::Result<()> {
    let regions = match change {
        Change::Add { region, .. } => vec![region],
        Change::Remove {
            region,
            move_primaries_to,
        } => std::iter::once(region)
            .chain(move_primaries_to.as_ref())
            .collect(),
    };
    for r in regions {
        if r.len() != 3 || !r.bytes().all(|b| b.is_ascii_lowercase()) {
            anyhow::bail!(
                "{r:?} is not a Fly region code (three lowercase letters, such as iad or cdg); `fly platform regions` lists them"
            );
        }
    }
    Ok(())
}

/// Lists (no change), prints the plan (a dry run) or carries it out.
async fn execute<I: Infra + Sync, C: Cluster + Sync>(
    r: &Runner<I, C>,
    change: Option<&Change>,
    dry_run: bool,
    step_pause: Duration,
) -> anyhow::Result<()> {
    let Some(change) = change else {
        print!("{}", list_table(&r.inventory().await?));
        return Ok(());
    };
    if dry_run {
        print!("{}", render(&r.plan(change).await?));
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut show = Progress::new();
    let result = r
        .run(change, &mut |e| {
            let step = matches!(e, Event::Step { .. });
            show.event(e);
            if step && !step_pause.is_zero() {
                // (Blocks the run's one thread: nothing else is under way
                // between two steps.)
                std::thread::sleep(step_pause);
            }
        })
        .await;
    show.finish();
    result?;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    // What the region holds now (a node that stops answering just after
    // is not a failed run: the work is done).
    match r.outcome(change).await {
        Ok(outcome) => print!("{outcome}"),
        Err(e) => eprintln!("(no report: {e})"),
    }
    Ok(())
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
