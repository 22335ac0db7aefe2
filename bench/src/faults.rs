//! The fault harness: seeded fault schedules run against an emulated
//! world while clients write and read, and the history checker's verdict
//! on what the clients saw (docs/FAILOVER.md, "Fault harness").
//!
//! A **schedule** ([`Schedule::from_seed`]) is drawn from a [`SmallRng`]
//! seeded with the run's seed, so a seed names the same schedule on every
//! machine: optionally a wrong clock on one iad node (its wall clock off,
//! `anykv node --clock-offset-ms`, given at start: the machine's clock is
//! shared, the offset is per process; its lease clock drifting within the
//! lease margin, `--clock-rate`), then 2–3 faults, each after a pause, drawn
//! from: kill -9 of the database's primary, of its standby, or of the
//! region controller's leader (each started again afterwards with
//! [`World::launch`]); SIGSTOP of the primary for longer than the lease,
//! then SIGCONT; the primary cut off from its standby, from the
//! controller's leader, or from every node (then healed). Roles are
//! resolved when a fault is applied, from the nodes' `/cluster` views.
//!
//! A **run** ([`run`]): three iad nodes and one cdg node (the WAN
//! emulated), a `region` database (and an `async` one), settled (every
//! node alive, the record's standby in sync, writes acknowledged); client
//! tasks write and read registers (`SET`, unique values: client × 10⁶ +
//! n), increment counters (`INCR`) and add unique members to sets
//! (`SADD`) on whichever iad node takes writes, recording every
//! invocation and response on one monotonic clock; the faults are
//! applied, each followed by settling again; everything is healed; the
//! final state is read; then the history is checked:
//!
//! - registers are linearizable ([`history::linearizable`]), the final
//!   reads included (so an acknowledged register write that was lost
//!   shows as a stale final read);
//! - every acknowledged `SADD` member is in the final set
//!   ([`history::acknowledged_present`]); no two acknowledged `INCR`s
//!   answered the same value, and the final counter is at least every
//!   acknowledged answer and the number of acknowledgements;
//! - no two primaries acknowledged writes in overlapping epochs
//!   ([`history::one_primary_per_epoch`]), per database;
//! - while the primary is cut off from every node, `region` writes sent
//!   to it directly are never acknowledged (probes, below);
//! - no node panicked (their logs), and the database settled again after
//!   every fault (a failover that never happens is a failure too).
//!
//! How the clients talk, and why:
//!
//! - **Writes go through the store envelope** (a router's QUIC store
//!   stream, [`StoreStream`]), not plain RESP: a write's reply carries the
//!   token `epoch:replid:offset` taken by the node that ran it, right when
//!   it ran, so each acknowledgement is placed in its epoch by the node
//!   itself. Polling `/cluster` around an acknowledgement would only say
//!   which epoch the node's view showed shortly before or after, and a
//!   promotion in between (exactly when it matters) would make the answer
//!   a guess. The node is the one the stream goes to.
//! - **Reads are fenced**: a `GET` is sent pipelined with an `INCR` of a
//!   counter on the same stream, and counts as a read on the primary only
//!   when that `INCR` was acknowledged. The acknowledgement proves the node
//!   was the primary of its epoch, holding its lease, right after the read,
//!   and that the standby had everything the read could have seen. A read
//!   served by a replica (a client does not know whom it reaches until a
//!   write is refused) is left out; leaving reads out never hides a lost
//!   or split write: those show in the other checks and in the final
//!   reads. The `region` database is `consistency: strong`, so its
//!   primary serves reads only under its lease, as the check expects.
//! - **One client's writes are relayed**: its envelopes are not marked
//!   relayed, as a router's are not, and it starts on the standby, so a
//!   replica sends its writes on to the primary (`dispatch::relay`); the
//!   acknowledgement carries the primary's token, not its node, so its
//!   acknowledgements count for the epochs' order but not for which node
//!   owns an epoch ([`Ack::relayed`]). It does not read.
//! - **Unanswered requests** (a timeout, a closed stream, or an error
//!   that says the request "may or may not have run": the node it went
//!   to passed it on and lost the answer) may or may not have taken
//!   effect: the checker treats them so. Refusals (`READONLY`,
//!   `TRYAGAIN`, `NOREPLICAS`) ran nothing and are left out; the client
//!   moves to the next node (it stays on `NOREPLICAS`: that is the primary
//!   waiting for a standby).
//! - **Probes of a cut-off primary use RESP over TCP**: the emulated
//!   network shapes what a node sends (QUIC and gossip), so a store stream
//!   to an isolated node hears nothing back, while a client's TCP
//!   connection still reaches it, as a customer's app in the same place
//!   would. A probe thread keeps sending `SET`s to the old primary from the
//!   moment it is cut off until the cut heals, and waits for each answer
//!   (up to 20 s after the heal): none may be `+OK`.
//!
//! [`SmallRng`]: rand::rngs::SmallRng

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_gossip::sync::StoreClient;
use anykv_server::envelope::{Envelope, Token};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::client::{self, Conn, Database, Reply, StoreStream};
use crate::history::{self, Ack, Kind, Op};
use crate::world::{World, WorldSpec};

/// The nodes' lease period (`--lease-ms`, default): a stop must outlast it.
pub const LEASE_MS: u64 = 2000;
/// The region every database's primary is in, and its nodes.
const REGION: &str = "iad";
const IAD: [&str; 3] = ["n1", "n2", "n3"];
/// Registers, counters and sets per database.
const REGISTERS: usize = 3;
const COUNTERS: usize = 2;
const SETS: usize = 2;
/// The id of the client whose writes replicas relay.
const RELAYING: u32 = 50;
/// How long a client waits for an answer before counting it unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a database gets to settle after a fault, and a failover to be
/// seen.
const SETTLE: Duration = Duration::from_secs(60);
const FAILOVER: Duration = Duration::from_secs(30);

/// The node a fault is aimed at, resolved when it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Primary,
    Standby,
    /// The region controller's leader.
    Leader,
}

/// One fault of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, then the node is started again `restart_ms` after (after
    /// the failover or the new leader is seen, for the primary and the
    /// leader).
    Kill { target: Target, restart_ms: u64 },
    /// SIGSTOP of the primary for `ms` (longer than the lease), then
    /// SIGCONT.
    Stop { ms: u64 },
    /// The primary and its standby cannot reach each other for `ms`.
    CutFromStandby { ms: u64 },
    /// The primary and the controller's leader cannot reach each other
    /// for `ms` (when the primary leads: the primary and the other
    /// voters).
    CutFromLeader { ms: u64 },
    /// The primary cut off from every node until a new primary is seen,
    /// then `ms` more; `region` writes sent to it meanwhile must never be
    /// acknowledged.
    Isolate { ms: u64 },
    /// SIGTERM of the primary (a deploy): it hands its databases to their
    /// standbys and exits; started again `restart_ms` after.
    Term { restart_ms: u64 },
    /// The planned failover of the `region` database (`POST
    /// /admin/tenants/{id}/failover`), sent to the cdg node, which passes
    /// it on to the primary's.
    Handoff,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { target, restart_ms } => {
                let who = match target {
                    Target::Primary => "the primary",
                    Target::Standby => "the standby",
                    Target::Leader => "the controller's leader",
                };
                write!(f, "kill -9 {who}, restart after {restart_ms} ms")
            }
            Fault::Stop { ms } => write!(f, "SIGSTOP the primary for {ms} ms"),
            Fault::CutFromStandby { ms } => {
                write!(f, "cut the primary off from its standby for {ms} ms")
            }
            Fault::CutFromLeader { ms } => {
                write!(
                    f,
                    "cut the primary off from the controller's leader for {ms} ms"
                )
            }
            Fault::Isolate { ms } => write!(
                f,
                "cut the primary off from every node until a new one is seen, then {ms} ms"
            ),
            Fault::Term { restart_ms } => {
                write!(f, "SIGTERM the primary, restart after {restart_ms} ms")
            }
            Fault::Handoff => write!(f, "planned failover of the region database"),
        }
    }
}

impl Fault {
    /// A short name, for tables.
    pub fn short(&self) -> &'static str {
        match self {
            Fault::Kill {
                target: Target::Primary,
                ..
            } => "kill-primary",
            Fault::Kill {
                target: Target::Standby,
                ..
            } => "kill-standby",
            Fault::Kill {
                target: Target::Leader,
                ..
            } => "kill-leader",
            Fault::Stop { .. } => "stop-primary",
            Fault::CutFromStandby { .. } => "cut-standby",
            Fault::CutFromLeader { .. } => "cut-leader",
            Fault::Isolate { .. } => "isolate-primary",
            Fault::Term { .. } => "term-primary",
            Fault::Handoff => "handoff",
        }
    }
}

/// A node whose clocks are wrong for the whole run: its wall clock is off
/// by `ms` (`--clock-offset-ms`) and its lease clock runs at
/// `rate_permille` / 1000 of real time (`--clock-rate`; see
/// `anykv_gossip::controller::clock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skew {
    pub node: String,
    pub ms: i64,
    pub rate_permille: u32,
}

impl Skew {
    /// The node's extra `anykv node` flags.
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.ms != 0 {
            a.extend(["--clock-offset-ms".to_string(), self.ms.to_string()]);
        }
        if self.rate_permille != 1000 {
            a.extend([
                "--clock-rate".to_string(),
                format!("{:.3}", self.rate_permille as f64 / 1000.0),
            ]);
        }
        a
    }
}

/// The drift a schedule gives a skewed node's lease clock, at most this
/// far from exact (per mille): inside the lease margin (a fifth), so
/// nothing may go wrong. [`drift`] shows what a drift past it does.
pub const DRIFT_PERMILLE: u32 = 150;

/// A fault after a pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub pause_ms: u64,
    pub fault: Fault,
    /// The world is healed and must settle before the next step. When
    /// false the next fault lands while this one's cuts still hold and its
    /// failover may still be under way (overlapping faults): the next
    /// fault may then find nothing to act on, or no failover may follow
    /// it (no in-sync standby left), which is logged, not failed; safety
    /// is checked as always, and the world must settle after the step
    /// that does heal.
    pub settle: bool,
}

/// What a seed runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub skew: Option<Skew>,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// The schedule of `seed` (the same on every machine).
    pub fn from_seed(seed: u64) -> Schedule {
        let mut rng = SmallRng::seed_from_u64(seed);
        let skew = rng.random_bool(0.4).then(|| {
            let node = format!("n{}", rng.random_range(1..=3));
            let ms = rng.random_range(500..=30_000i64);
            // The drift comes from a generator of its own, so that adding
            // it left every seed's other draws (and faults) as they were.
            let mut drift = SmallRng::seed_from_u64(seed ^ 0xc10c_d21f);
            let off = drift.random_range(30..=DRIFT_PERMILLE);
            Skew {
                node,
                ms: if rng.random_bool(0.5) { ms } else { -ms },
                rate_permille: if drift.random_bool(0.5) {
                    1000 + off
                } else {
                    1000 - off
                },
            }
        });
        let mut steps: Vec<Step> = (0..rng.random_range(2..=3))
            .map(|_| Step {
                pause_ms: rng.random_range(500..=2500),
                fault: match rng.random_range(0..9) {
                    0 => Fault::Kill {
                        target: Target::Primary,
                        restart_ms: rng.random_range(0..=2000),
                    },
                    1 => Fault::Kill {
                        target: Target::Standby,
                        restart_ms: rng.random_range(500..=3000),
                    },
                    2 => Fault::Kill {
                        target: Target::Leader,
                        restart_ms: rng.random_range(0..=2000),
                    },
                    3 => Fault::Stop {
                        ms: LEASE_MS + rng.random_range(300..=3000),
                    },
                    4 => Fault::CutFromStandby {
                        ms: rng.random_range(1000..=5000),
                    },
                    5 => Fault::CutFromLeader {
                        ms: rng.random_range(1500..=6000),
                    },
                    6 => Fault::Isolate {
                        ms: rng.random_range(300..=2000),
                    },
                    7 => Fault::Term {
                        restart_ms: rng.random_range(0..=2000),
                    },
                    _ => Fault::Handoff,
                },
                settle: rng.random_bool(0.7),
            })
            .collect();
        if let Some(last) = steps.last_mut() {
            last.settle = true;
        }
        Schedule { seed, skew, steps }
    }

    /// The faults' short names, the clock offset first (for tables).
    pub fn short(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(s) = &self.skew {
            parts.push(format!(
                "clock{:+}s×{:.2}@{}",
                s.ms / 1000,
                s.rate_permille as f64 / 1000.0,
                s.node
            ));
        }
        // `+`: the next fault overlaps this one.
        parts.extend(
            self.steps
                .iter()
                .map(|s| format!("{}{}", s.fault.short(), if s.settle { "" } else { "+" })),
        );
        parts.join(" ")
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}:", self.seed)?;
        if let Some(s) = &self.skew {
            write!(
                f,
                " {}'s clock off by {:+} ms, its lease clock at {:.3} × real time;",
                s.node,
                s.ms,
                s.rate_permille as f64 / 1000.0
            )?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            let overlap = if s.settle {
                ""
            } else {
                " (the next fault overlaps it)"
            };
            write!(
                f,
                " {}. after {} ms, {}{overlap};",
                i + 1,
                s.pause_ms,
                s.fault
            )?;
        }
        Ok(())
    }
}

/// Seeds from `1-8`, `17`, `1,5,9-12`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("not a seed: {x:?}"))
        };
        match part.split_once(['-', '.']) {
            Some((a, b)) => {
                let (a, b) = (
                    num(a)?,
                    num(b.trim_start_matches('.').trim_start_matches('='))?,
                );
                if a > b {
                    return Err(format!("an empty range: {part}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err(format!("no seeds in {s:?}"));
    }
    Ok(out)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The `anykv` binary.
    pub bin: PathBuf,
    /// The run's directory (removed when the run passes, kept otherwise).
    pub dir: PathBuf,
    /// Nodes on `127.0.<net>.1`–`.4`, ports from `port` (6 of them).
    pub net: u8,
    pub port: u16,
    pub seed: u64,
    /// Clients of the `region` database.
    pub clients: usize,
    /// Also an `async` database with one counter client (its lost
    /// acknowledged writes are counted, not failed: `async` may lose what
    /// the standby had not received).
    pub async_db: bool,
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Writes acknowledged (SET, INCR, SADD) of the `region` database.
    pub acked: u64,
    /// Requests without an answer (timeouts, closed streams).
    pub unknown: u64,
    /// Reads on the primary checked (fenced reads).
    pub reads: u64,
    /// Refusals by their first word (READONLY, TRYAGAIN, NOREPLICAS...).
    pub refused: BTreeMap<String, u64>,
    /// Writes sent to a cut-off old primary, and how they were answered.
    pub probes: u64,
    pub probe_answers: BTreeMap<String, u64>,
    /// The `async` database: INCRs acknowledged, and at least how many
    /// of them its counter lost.
    pub async_acked: u64,
    pub async_lost: u64,
    /// Failovers seen (kill -9 or cut-off of the primary → a new primary
    /// in the record), in ms.
    pub failovers_ms: Vec<u64>,
    /// Writes of the `region` database replicas relayed to their primary,
    /// as the nodes running at the end count them
    /// (`anykv_relayed_writes_total`; a restart forgets its node's).
    pub relayed: u64,
}

/// A run's result.
#[derive(Clone, Debug)]
pub struct Report {
    pub schedule: Schedule,
    /// Empty when every check passed.
    pub violations: Vec<String>,
    pub stats: Stats,
    pub elapsed: Duration,
    /// The run's directory (node logs, `world.json`); kept on failure.
    pub dir: PathBuf,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "{}", self.schedule)?;
        writeln!(
            f,
            "  {:.1} s; {} writes acknowledged, {} unanswered, {} reads on the primary checked; refused: {:?}; failovers (ms): {:?}; {} writes relayed",
            self.elapsed.as_secs_f64(),
            s.acked,
            s.unknown,
            s.reads,
            s.refused,
            s.failovers_ms,
            s.relayed
        )?;
        if s.probes > 0 {
            writeln!(
                f,
                "  {} writes sent to the cut-off old primary: {:?}",
                s.probes, s.probe_answers
            )?;
        }
        if s.async_acked > 0 {
            writeln!(
                f,
                "  async: {} INCRs acknowledged, at least {} lost",
                s.async_acked, s.async_lost
            )?;
        }
        if self.violations.is_empty() {
            write!(f, "  passed")
        } else {
            for v in &self.violations {
                writeln!(f, "  VIOLATION: {v}")?;
            }
            write!(f, "  logs kept in {}", self.dir.display())
        }
    }
}

/// A Markdown table of reports (the soak's summary).
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| seed | faults | s | acked | unanswered | reads | probes | relayed | async lost | violations |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in reports {
        let v = if r.violations.is_empty() {
            "0".to_string()
        } else {
            format!(
                "{}: {}",
                r.violations.len(),
                r.violations[0].replace('|', "/")
            )
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.schedule.seed,
            r.schedule.short(),
            r.elapsed.as_secs_f64(),
            r.stats.acked,
            r.stats.unknown,
            r.stats.reads,
            r.stats.probes,
            r.stats.relayed,
            r.stats.async_lost,
            v
        ));
    }
    out
}

/// The `region` database the clients check, and the `async` one.
fn databases() -> (Database, Database) {
    let db = |id: u64, name: &str, durability: &str, consistency: &str| Database {
        id,
        name: name.into(),
        token: format!("fault-harness-{name}-token-0123456789"),
        primary_region: REGION.into(),
        read_regions: vec!["cdg".into()],
        durability: durability.into(),
        consistency: consistency.into(),
    };
    (
        db(5, "regs", "region", "strong"),
        db(6, "loose", "async", "nearest"),
    )
}

/// Runs one seed (see the module docs). Never panics on what the world
/// does: everything that goes wrong is a violation in the report.
pub fn run(spec: &RunSpec) -> Report {
    let schedule = Schedule::from_seed(spec.seed);
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&spec.dir);
    let mut r = Runner::new(spec.clone(), started);
    r.log(&format!("{schedule}"));
    r.go(&schedule);
    let passed = r.violations.is_empty();
    drop(r.w.take());
    if passed {
        let _ = std::fs::remove_dir_all(&spec.dir);
    }
    Report {
        schedule,
        violations: r.violations,
        stats: r.stats,
        elapsed: started.elapsed(),
        dir: spec.dir.clone(),
    }
}

/// What [`drift`] saw.
#[derive(Debug)]
pub struct DriftReport {
    /// The node whose lease clock drifted: the `async` database's primary.
    pub node: String,
    pub rate: f64,
    /// The epochs before and after the failover.
    pub epochs: (u64, u64),
    /// Writes the old primary acknowledged after it was cut off, and
    /// writes the new primary acknowledged.
    pub old_acks_after_cut: u64,
    pub new_acks: u64,
    /// The history checker's verdict on every acknowledgement.
    pub verdict: Result<(), history::SplitBrain>,
}

/// The clock fault at its edge: the `async` database's primary gets a
/// lease clock running at `rate` × real time (`--clock-rate`), and is cut
/// off from every node while one client keeps writing to it (RESP over
/// TCP, which the cut does not stop) and another writes to its standby
/// (a store stream that stays there). The old primary acknowledges until
/// its own clock says its lease ended; the standby once the controller
/// judged that lease lapsed and promoted it. Within the lease margin the
/// first always comes before the second; a clock slow enough to outrun
/// the margin makes both primaries acknowledge at once, which
/// [`history::one_primary_per_epoch`] reports. An `async` database shows
/// it (a `region` one refuses the old primary's writes anyway: its
/// standby fences them).
pub fn drift(spec: &RunSpec, rate: f64) -> Result<DriftReport, String> {
    let (regs, loose) = databases();
    // The primary a new database gets: its best-ranked iad node.
    let slow = anykv_gossip::catalog::ranked(loose.id, &IAD)
        .first()
        .map(|s| s.to_string())
        .ok_or("no iad node")?;
    let schedule = Schedule {
        seed: spec.seed,
        skew: Some(Skew {
            node: slow.clone(),
            ms: 0,
            rate_permille: (rate * 1000.0).round() as u32,
        }),
        steps: Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&spec.dir);
    let base = Instant::now();
    let spec = RunSpec {
        async_db: true,
        ..spec.clone()
    };
    let mut r = Runner::new(spec.clone(), base);
    let out = r.drift(&schedule, &regs, &loose, &slow, rate);
    drop(r.w.take());
    if out.is_ok() {
        let _ = std::fs::remove_dir_all(&spec.dir);
    }
    out
}

impl Runner {
    fn new(spec: RunSpec, base: Instant) -> Runner {
        Runner {
            spec,
            base,
            w: None,
            stopped: HashSet::new(),
            isolated: None,
            shaped: false,
            probes: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn drift(
        &mut self,
        schedule: &Schedule,
        regs: &Database,
        loose: &Database,
        slow: &str,
        rate: f64,
    ) -> Result<DriftReport, String> {
        self.start(schedule, regs, loose)?;
        let before = self.roles(loose.id).ok_or("no role record")?;
        if before.primary != slow {
            return Err(format!(
                "{} was placed on {}, not on {slow}, the node whose clock drifts",
                loose.name, before.primary
            ));
        }
        let standby = before.standby.clone().ok_or("no standby")?;
        let old_addr = self.w().node(slow).map_err(|e| e.to_string())?.resp;
        let stop = Arc::new(AtomicBool::new(false));
        // The old primary's writer: SETs over TCP, each acknowledgement
        // placed in the epoch the old primary holds.
        let old_writer = {
            let (stop, db, base) = (stop.clone(), loose.clone(), self.base);
            let (node, epoch) = (slow.to_string(), before.epoch);
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                let mut conn: Option<Conn> = None;
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Conn::open(old_addr, Some((&db.name, &db.token))) {
                            Some(mut c) => {
                                c.set_timeout(Duration::from_millis(300));
                                conn.insert(c)
                            }
                            None => {
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    i += 1;
                    let sent = base.elapsed().as_nanos() as u64;
                    let k = format!("drift:{i}");
                    let answer = c.send(&["SET", &k, "1"]).map(|_| c.next_reply());
                    match answer {
                        Some(Ok(Reply::Simple(_))) => acks.push(Ack {
                            sent,
                            at: base.elapsed().as_nanos() as u64,
                            epoch,
                            node: node.clone(),
                            relayed: false,
                        }),
                        Some(Ok(_)) => {}
                        // No answer: it may come later; a new connection.
                        _ => conn = None,
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                acks
            })
        };
        // The standby's writer.
        let shared = Arc::new(Shared::default());
        let nodes = self.store_addrs();
        let on = nodes
            .iter()
            .position(|(n, _)| *n == standby)
            .ok_or("the standby is no iad node")?;
        let new_writer = {
            let (dir, base, seed, id) =
                (self.spec.dir.clone(), self.base, self.spec.seed, loose.id);
            let shared = shared.clone();
            std::thread::spawn(move || {
                with_quic(&dir, |quic| async move {
                    let mut w = Worker::new(91, id, &nodes, quic, base, seed);
                    w.on = on;
                    w.stay = true;
                    Ok(w.run(Mix::Counter, shared).await)
                })
            })
        };
        // Both write for a moment (the old primary acknowledges), then the
        // cut.
        std::thread::sleep(Duration::from_millis(1500));
        self.log(&format!(
            "cut {slow} off from every node (roles {before:?})"
        ));
        let cut = self.base.elapsed().as_nanos() as u64;
        self.shape(serde_json::json!({"isolate": [self.ip(slow)?]}))?;
        self.isolated = Some(slow.to_string());
        let after = self.failover(loose.id, &before, Instant::now());
        // Until the old primary's own clock has surely ended its lease:
        // the lease less its margin, as long as its clock makes it, and a
        // second more.
        let lease = Duration::from_millis(LEASE_MS);
        let held = (lease - anykv_gossip::controller::lease::margin(lease)).div_f64(rate.max(0.01));
        std::thread::sleep(held + Duration::from_secs(1));
        stop.store(true, Ordering::Release);
        shared.stop.store(true, Ordering::Release);
        let old_acks = old_writer
            .join()
            .map_err(|_| "the old primary's writer panicked")?;
        let new_log = new_writer
            .join()
            .map_err(|_| "the standby's writer panicked")??;
        self.heal();
        let after = after?;
        let old_acks_after_cut = old_acks.iter().filter(|a| a.sent > cut).count() as u64;
        let new_acks = new_log
            .acks
            .iter()
            .filter(|a| a.epoch >= after.epoch)
            .count() as u64;
        let mut acks = old_acks;
        acks.extend(new_log.acks);
        acks.sort_by_key(|a| a.at);
        let verdict = history::one_primary_per_epoch(&acks);
        self.log(&format!(
            "{old_acks_after_cut} writes acknowledged by {slow} after the cut, {new_acks} by {}: {verdict:?}",
            after.primary
        ));
        Ok(DriftReport {
            node: slow.to_string(),
            rate,
            epochs: (before.epoch, after.epoch),
            old_acks_after_cut,
            new_acks,
            verdict,
        })
    }
}

/// A database's role record, as the freshest view shows it.
#[derive(Clone, Debug)]
struct Roles {
    epoch: u64,
    primary: String,
    standby: Option<String>,
}

/// What the clients share with the run.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Acknowledged writes of the `region` database, and of the `async` one.
    acked: AtomicU64,
    async_acked: AtomicU64,
}

struct Runner {
    spec: RunSpec,
    base: Instant,
    w: Option<World>,
    /// Nodes under SIGSTOP (their HTTP would not answer).
    stopped: HashSet<String>,
    /// The node cut off from every other (its view is stale).
    isolated: Option<String>,
    /// Whether the links were shaped since the last heal.
    shaped: bool,
    /// Probes of cut-off primaries, checked at the end.
    probes: Vec<ProbeHandle>,
    violations: Vec<String>,
    stats: Stats,
}

impl Runner {
    fn log(&self, what: &str) {
        eprintln!(
            "[seed {} +{:.1}s] {what}",
            self.spec.seed,
            self.base.elapsed().as_secs_f64()
        );
    }

    fn fail(&mut self, what: String) {
        self.log(&format!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    fn w(&self) -> &World {
        self.w.as_ref().expect("the world runs")
    }

    fn go(&mut self, schedule: &Schedule) {
        let (regs, loose) = databases();
        if let Err(e) = self.start(schedule, &regs, &loose) {
            self.fail(e);
            self.check_logs();
            return;
        }
        let shared = Arc::new(Shared::default());
        let clients = self.start_clients(&regs, &loose, shared.clone());
        let mut ok = self.progress(&shared, "before the faults").is_ok();
        let mut overlapping = false;
        for (i, step) in schedule.steps.iter().enumerate() {
            if !ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(step.pause_ms));
            self.log(&format!("fault {}: {}", i + 1, step.fault));
            match self.apply(&step.fault, &regs) {
                Ok(()) => {}
                // Landing on an unsettled world, a fault may find no
                // standby or no leader, or leave no in-sync standby to
                // promote: availability, not safety.
                Err(e) if overlapping => self.log(&format!(
                    "fault {} did not play out on the unsettled world: {e}",
                    i + 1
                )),
                Err(e) => {
                    self.fail(format!("fault {} ({}): {e}", i + 1, step.fault));
                    ok = false;
                }
            }
            overlapping = !step.settle;
            if step.settle {
                self.heal();
                if ok {
                    ok = self.settle(&regs, &loose, &shared).is_ok();
                }
            }
        }
        if !ok {
            // Heal whatever is left and give the world one more chance to
            // settle, so the checks below see a final state.
            self.heal();
            let _ = self.settle(&regs, &loose, &shared);
        }
        shared.stop.store(true, Ordering::Release);
        let out = clients.join();
        self.stats.relayed = self.relayed_writes(&regs);
        for p in std::mem::take(&mut self.probes) {
            self.check_probe(p);
        }
        self.check_logs();
        match out {
            Ok(Ok(out)) => self.check(&out),
            Ok(Err(e)) => self.fail(format!("the clients: {e}")),
            Err(_) => self.fail("the clients' thread panicked".into()),
        }
    }

    /// Starts the world and the databases, and waits until they settle.
    fn start(
        &mut self,
        schedule: &Schedule,
        regs: &Database,
        loose: &Database,
    ) -> Result<(), String> {
        let spec = WorldSpec {
            bin: self.spec.bin.clone(),
            dir: self.spec.dir.clone(),
            net: self.spec.net,
            port: self.spec.port,
            regions: vec![(REGION.into(), 3), ("cdg".into(), 1)],
            rtt_table: Some("builtin".into()),
            loss: 0.0,
            gossip_profile: "test".into(),
            lan_profile: "test".into(),
            admin_token: "fault-harness-admin".into(),
            server_args: ["--save", "", "--appendonly", "yes"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            launch: Default::default(),
        };
        let mut extra = BTreeMap::new();
        if let Some(s) = &schedule.skew {
            extra.insert(s.node.clone(), s.args());
        }
        self.w =
            Some(World::start_with(&spec, &extra).map_err(|e| format!("starting the world: {e}"))?);
        self.w()
            .wait_members(4, SETTLE)
            .map_err(|e| format!("starting the world: {e}"))?;
        client::wait_controller(self.w(), "n4", REGION, SETTLE)?;
        client::create(self.w(), "n4", regs)?;
        if self.spec.async_db {
            client::create(self.w(), "n4", loose)?;
        }
        for db in self.dbs(regs, loose) {
            for n in IAD {
                client::settled(self.w(), n, db.id, 0, SETTLE)?;
            }
        }
        let roles = self.roles(regs.id);
        self.log(&format!("world up, {} settled: {roles:?}", regs.name));
        Ok(())
    }

    fn dbs<'a>(&self, regs: &'a Database, loose: &'a Database) -> Vec<&'a Database> {
        if self.spec.async_db {
            vec![regs, loose]
        } else {
            vec![regs]
        }
    }

    /// Nodes whose views are current: running, not stopped, not cut off.
    fn observers(&self) -> Vec<String> {
        let w = self.w();
        ["n1", "n2", "n3", "n4"]
            .iter()
            .map(|n| n.to_string())
            .filter(|n| w.is_running(n) && !self.stopped.contains(n))
            .filter(|n| self.isolated.as_ref() != Some(n))
            .collect()
    }

    /// Database `id`'s record of the highest epoch any observer shows.
    fn roles(&self, id: u64) -> Option<Roles> {
        self.observers()
            .iter()
            .filter_map(|n| client::record(self.w(), n, id))
            .filter_map(|r| {
                Some(Roles {
                    epoch: r["epoch"].as_u64()?,
                    primary: r["primary"].as_str()?.to_string(),
                    standby: r["standby"].as_str().map(String::from),
                })
            })
            .max_by_key(|r| r.epoch)
    }

    /// The controller's leader, as the observer that saw the highest term
    /// shows it.
    fn leader(&self) -> Option<String> {
        self.observers()
            .iter()
            .filter_map(|n| {
                let v = self.w().cluster_view(n)?;
                let c = v["controllers"]
                    .as_array()?
                    .iter()
                    .find(|c| c["region"] == REGION)?
                    .clone();
                Some((c["term"].as_u64()?, c["leader"].as_str()?.to_string()))
            })
            .max()
            .map(|(_, l)| l)
    }

    /// The controller's leader, waiting for one if the group is between
    /// two (a node that comes back from a cut may start an election:
    /// availability, not safety; how long it took is logged).
    fn current_leader(&self) -> Result<String, String> {
        let t = Instant::now();
        let l = self.wait_for("a controller leader", FAILOVER, |s| s.leader())?;
        if t.elapsed() > Duration::from_millis(200) {
            self.log(&format!(
                "no controller leader for {} ms, then {l}",
                t.elapsed().as_millis()
            ));
        }
        Ok(l)
    }

    fn ip(&self, node: &str) -> Result<std::net::IpAddr, String> {
        Ok(self.w().node(node).map_err(|e| e.to_string())?.ip)
    }

    fn signal(&mut self, node: &str, sig: &str) -> Result<(), String> {
        self.w
            .as_mut()
            .expect("the world runs")
            .signal(node, sig)
            .map_err(|e| e.to_string())?;
        match sig {
            "-STOP" => {
                self.stopped.insert(node.to_string());
            }
            "-CONT" => {
                self.stopped.remove(node);
            }
            _ => {}
        }
        Ok(())
    }

    fn launch(&mut self, node: &str) -> Result<(), String> {
        self.w
            .as_mut()
            .expect("the world runs")
            .launch(node)
            .map_err(|e| e.to_string())
    }

    fn shape(&mut self, change: serde_json::Value) -> Result<(), String> {
        self.shaped = true;
        self.w().shape(&change).map_err(|e| e.to_string())
    }

    /// Waits until `f` gives something, at most `limit`.
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T, String> {
        let end = Instant::now() + limit;
        loop {
            if let Some(x) = f(self) {
                return Ok(x);
            }
            if Instant::now() > end {
                return Err(format!("{what}: not within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a record past `before` whose primary is another node.
    fn failover(&mut self, id: u64, before: &Roles, since: Instant) -> Result<Roles, String> {
        let r = self.wait_for(
            &format!(
                "a new primary after {} (epoch {})",
                before.primary, before.epoch
            ),
            FAILOVER,
            |s| {
                s.roles(id)
                    .filter(|r| r.epoch > before.epoch && r.primary != before.primary)
            },
        )?;
        let ms = since.elapsed().as_millis() as u64;
        self.stats.failovers_ms.push(ms);
        self.log(&format!(
            "{} is the primary at epoch {}, {ms} ms after the fault",
            r.primary, r.epoch
        ));
        Ok(r)
    }

    /// Applies one fault and undoes it (restart, SIGCONT; cuts are healed
    /// by [`Runner::heal`] after it).
    fn apply(&mut self, fault: &Fault, regs: &Database) -> Result<(), String> {
        let before = self.roles(regs.id).ok_or("no role record")?;
        let p = before.primary.clone();
        match fault {
            Fault::Kill { target, restart_ms } => {
                let victim = match target {
                    Target::Primary => p.clone(),
                    Target::Standby => before.standby.clone().ok_or("no standby")?,
                    Target::Leader => self.current_leader()?,
                };
                self.log(&format!("kill -9 {victim} (roles {before:?})"));
                self.signal(&victim, "-9")?;
                let t = Instant::now();
                if victim == p {
                    self.failover(regs.id, &before, t)?;
                }
                if *target == Target::Leader {
                    let l = self.wait_for("a new leader", FAILOVER, |s| {
                        s.leader().filter(|l| *l != victim)
                    })?;
                    self.log(&format!(
                        "{l} leads, {} ms after the kill",
                        t.elapsed().as_millis()
                    ));
                }
                std::thread::sleep(Duration::from_millis(*restart_ms));
                self.log(&format!("restart {victim}"));
                self.launch(&victim)
            }
            Fault::Stop { ms } => {
                self.log(&format!("SIGSTOP {p} (roles {before:?})"));
                self.signal(&p, "-STOP")?;
                std::thread::sleep(Duration::from_millis(*ms));
                self.signal(&p, "-CONT")?;
                self.log(&format!("SIGCONT {p}; roles now {:?}", self.roles(regs.id)));
                Ok(())
            }
            Fault::CutFromStandby { ms } => {
                let s = before.standby.clone().ok_or("no standby")?;
                self.log(&format!("cut {p} from {s}"));
                self.shape(serde_json::json!({"partition": [[self.ip(&p)?], [self.ip(&s)?]]}))?;
                std::thread::sleep(Duration::from_millis(*ms));
                self.log(&format!("roles now {:?}", self.roles(regs.id)));
                Ok(())
            }
            Fault::CutFromLeader { ms } => {
                let l = self.current_leader()?;
                let others: Vec<String> = if l == p {
                    IAD.iter()
                        .filter(|n| **n != p)
                        .map(|n| n.to_string())
                        .collect()
                } else {
                    vec![l.clone()]
                };
                self.log(&format!("cut {p} from {others:?} (the leader is {l})"));
                let ips = others
                    .iter()
                    .map(|n| self.ip(n))
                    .collect::<Result<Vec<_>, _>>()?;
                self.shape(serde_json::json!({"partition": [[self.ip(&p)?], ips]}))?;
                std::thread::sleep(Duration::from_millis(*ms));
                self.log(&format!("roles now {:?}", self.roles(regs.id)));
                Ok(())
            }
            Fault::Isolate { ms } => {
                self.log(&format!("cut {p} off from every node (roles {before:?})"));
                let addr = self.w().node(&p).map_err(|e| e.to_string())?.resp;
                self.shape(serde_json::json!({"isolate": [self.ip(&p)?]}))?;
                self.isolated = Some(p.clone());
                let t = Instant::now();
                // Probes from the moment every node applied the cut until it
                // heals: none of them may be acknowledged.
                self.probes
                    .push(ProbeHandle::start(p.clone(), addr, regs.clone(), self.base));
                let r = self.failover(regs.id, &before, t);
                if r.is_ok() {
                    std::thread::sleep(Duration::from_millis(*ms));
                } else if let Some(p) = self.probes.last_mut() {
                    p.replaced = false;
                }
                r.map(|_| ())
            }
            Fault::Term { restart_ms } => {
                self.log(&format!("SIGTERM {p} (roles {before:?})"));
                let t = Instant::now();
                // (Returns once the node exited: after its handoffs.)
                self.signal(&p, "-TERM")?;
                self.log(&format!(
                    "{p} exited {} ms after SIGTERM",
                    t.elapsed().as_millis()
                ));
                self.failover(regs.id, &before, t)?;
                std::thread::sleep(Duration::from_millis(*restart_ms));
                self.log(&format!("restart {p}"));
                self.launch(&p)
            }
            Fault::Handoff => {
                self.log(&format!(
                    "planned failover of {} via n4 (roles {before:?})",
                    regs.name
                ));
                let t = Instant::now();
                let n4 = self.w().node("n4").map_err(|e| e.to_string())?.http;
                let path = format!("/admin/tenants/{}/failover", regs.id);
                match crate::world::http(n4, "POST", &path, self.w().admin_token(), "") {
                    Some((200, body)) => self.log(&format!("answered {}", body.trim())),
                    other => return Err(format!("POST {path} answered {other:?}")),
                }
                self.failover(regs.id, &before, t).map(|_| ())
            }
        }
    }

    /// Undoes every cut and stop, and starts every node that is down.
    fn heal(&mut self) {
        for n in self.stopped.clone() {
            let _ = self.signal(&n, "-CONT");
        }
        for n in ["n1", "n2", "n3", "n4"] {
            if !self.w().is_running(n) {
                let _ = self.launch(n);
            }
        }
        // Probes stop before the cut heals (what they send is sent to a
        // cut-off node); their answers are still awaited.
        for p in &self.probes {
            p.heal();
        }
        if self.shaped {
            // Every node must hear it (one just started may not answer yet).
            let healed = self.wait_for("every node healing its links", SETTLE, |s| {
                s.w().shape(&serde_json::json!({"heal": true})).ok()
            });
            if let Err(e) = healed {
                self.fail(e);
            }
            self.shaped = false;
        }
        self.isolated = None;
    }

    /// Waits until every node is alive, each database's record names an
    /// in-sync standby on every iad node, and writes are acknowledged again.
    fn settle(&mut self, regs: &Database, loose: &Database, shared: &Shared) -> Result<(), String> {
        let t = Instant::now();
        let r = (|| {
            self.w()
                .wait_members(4, SETTLE)
                .map_err(|e| e.to_string())?;
            let mut roles = Vec::new();
            for db in self.dbs(regs, loose) {
                let end = Instant::now() + SETTLE;
                // Every iad node shows the same in-sync record.
                loop {
                    let seen: Vec<Option<client::Role>> = IAD
                        .iter()
                        .map(|n| client::settled(self.w(), n, db.id, 0, Duration::ZERO).ok())
                        .collect();
                    if let Some(Some(first)) = seen.first() {
                        if seen.iter().all(|s| s.as_ref() == Some(first)) {
                            roles.push(first.clone());
                            break;
                        }
                    }
                    if Instant::now() > end {
                        return Err(format!(
                            "database {} did not settle within {SETTLE:?}: {seen:?}",
                            db.name
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Ok(roles)
        })();
        match r {
            Ok(roles) => {
                self.log(&format!(
                    "settled in {} ms: {roles:?}",
                    t.elapsed().as_millis()
                ));
                self.progress(shared, "after settling")
            }
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Waits until the clients get more writes acknowledged (both
    /// databases).
    fn progress(&mut self, shared: &Shared, when: &str) -> Result<(), String> {
        let (a, b) = (
            shared.acked.load(Ordering::Acquire),
            shared.async_acked.load(Ordering::Acquire),
        );
        let need_async = self.spec.async_db;
        let r = self.wait_for(&format!("writes acknowledged {when}"), FAILOVER, |_| {
            let more = shared.acked.load(Ordering::Acquire) >= a + 20;
            let more_async = !need_async || shared.async_acked.load(Ordering::Acquire) >= b + 5;
            (more && more_async).then_some(())
        });
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    /// The iad nodes and their store-stream addresses (a router's QUIC
    /// port: the gossip port + 1).
    fn store_addrs(&self) -> Vec<(String, SocketAddr)> {
        IAD.iter()
            .filter_map(|n| {
                let g = self.w().node(n).ok()?.gossip;
                Some((n.to_string(), SocketAddr::new(g.ip(), g.port() + 1)))
            })
            .collect()
    }

    fn start_clients(
        &self,
        regs: &Database,
        loose: &Database,
        shared: Arc<Shared>,
    ) -> std::thread::JoinHandle<Result<ClientsOut, String>> {
        let nodes = self.store_addrs();
        let (dir, base, seed) = (self.spec.dir.clone(), self.base, self.spec.seed);
        let (clients, async_db) = (self.spec.clients, self.spec.async_db);
        // The relaying client starts on the standby (a replica), so that
        // its writes are relayed from the first.
        let standby = self.roles(regs.id).and_then(|r| r.standby);
        let relay_on = nodes
            .iter()
            .position(|(n, _)| Some(n) == standby.as_ref())
            .unwrap_or(0);
        let (regs, loose) = (regs.id, loose.id);
        std::thread::spawn(move || {
            with_quic(&dir, |quic| async move {
                let mut tasks = Vec::new();
                for c in 0..clients {
                    let w = Worker::new(c as u32 + 1, regs, &nodes, quic.clone(), base, seed);
                    tasks.push(tokio::spawn(w.run(Mix::All, shared.clone())));
                }
                if clients > 0 {
                    // One more whose writes a replica relays to its primary
                    // (module docs).
                    let mut w = Worker::new(RELAYING, regs, &nodes, quic.clone(), base, seed);
                    w.env.relayed = false;
                    w.on = relay_on;
                    tasks.push(tokio::spawn(w.run(Mix::Writes, shared.clone())));
                }
                if async_db {
                    let w = Worker::new(90, loose, &nodes, quic.clone(), base, seed);
                    tasks.push(tokio::spawn(w.run(Mix::Counter, shared.clone())));
                }
                let mut logs = Vec::new();
                for t in tasks {
                    logs.push(t.await.map_err(|e| format!("a client task: {e}"))?);
                }
                // The final state, read on the primary once every client
                // stopped.
                let mut fin = Worker::new(99, regs, &nodes, quic.clone(), base, seed);
                let state = fin.final_state().await;
                let loose_counter = if async_db {
                    let mut f = Worker::new(98, loose, &nodes, quic.clone(), base, seed);
                    match f.fenced_read(&["GET", "ctr:0"]).await {
                        Ok((_, _, r)) => r.as_u64().map(|v| Some(v.unwrap_or(0) as i64)),
                        Err(e) => Err(e),
                    }
                } else {
                    Ok(None)
                };
                logs.push(fin.log);
                Ok(ClientsOut {
                    logs,
                    state,
                    loose_counter,
                })
            })
        })
    }

    /// The history checks (module docs).
    fn check(&mut self, out: &ClientsOut) {
        let (_, loose) = databases();
        let state = match &out.state {
            Ok(s) => Some(s),
            Err(e) => {
                self.fail(format!("reading the final state: {e}"));
                None
            }
        };
        let mut ops: Vec<Op> = Vec::new();
        let mut acks: BTreeMap<u64, Vec<Ack>> = BTreeMap::new();
        // Acknowledged INCR answers by key: (answer, client, its ack).
        let mut incrs: BTreeMap<String, Vec<(i64, u32, &Ack)>> = BTreeMap::new();
        let mut added: HashMap<String, Vec<u64>> = HashMap::new();
        let mut loose_incrs: Vec<i64> = Vec::new();
        for l in &out.logs {
            acks.entry(l.tenant)
                .or_default()
                .extend(l.acks.iter().cloned());
            for a in &l.anomalies {
                self.violations.push(format!("client {}: {a}", l.client));
            }
            self.stats.unknown += l.unknown;
            for (k, n) in &l.refused {
                *self.stats.refused.entry(k.clone()).or_default() += n;
            }
            if l.tenant == loose.id {
                loose_incrs.extend(l.incrs.iter().map(|(_, n, _)| *n));
                continue;
            }
            ops.extend(l.ops.iter().cloned());
            for (k, n, a) in &l.incrs {
                incrs.entry(k.clone()).or_default().push((*n, l.client, a));
            }
            for (k, v) in &l.added {
                added.entry(k.clone()).or_default().push(*v);
            }
            // The final reader's own writes are its fences, not the
            // workload's.
            if l.client != 99 {
                self.stats.acked += (l.acks.len()) as u64;
                self.stats.reads += l.reads;
            }
        }
        // Registers.
        let t = Instant::now();
        // Who acknowledged what (a read: its fence), by (client, sent).
        let by: HashMap<(u32, u64), (&str, u64)> = out
            .logs
            .iter()
            .flat_map(|l| {
                l.acks
                    .iter()
                    .map(move |a| ((l.client, a.sent), (a.node.as_str(), a.epoch)))
            })
            .collect();
        if let Err(v) = history::linearizable(&ops) {
            self.fail(format!(
                "register {} is not linearizable: no order places {}; the operations around it:\n{}",
                v.key,
                show(&v.op, &by),
                around(&ops, &v.op)
                    .iter()
                    .map(|o| format!("    {}", show(o, &by)))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        self.log(&format!(
            "{} register operations checked in {} ms",
            ops.len(),
            t.elapsed().as_millis()
        ));
        // Sets and counters, against the final state.
        if let Some(state) = state {
            self.check_final(state, &added, &incrs);
        }
        // One primary per epoch, per database.
        for (tenant, a) in &mut acks {
            a.sort_by_key(|a| a.at);
            if let Err(e) = history::one_primary_per_epoch(a) {
                self.fail(format!("database {tenant}: two primaries: {e:?}"));
            }
        }
        // The async database: counted, not failed.
        match &out.loose_counter {
            Ok(Some(fin)) => {
                let n = loose_incrs.len() as u64;
                let mut sorted = loose_incrs.clone();
                sorted.sort_unstable();
                let twice = sorted.windows(2).filter(|w| w[0] == w[1]).count() as u64;
                self.stats.async_acked = n;
                self.stats.async_lost = twice.max(n.saturating_sub((*fin).max(0) as u64));
            }
            Ok(None) => {}
            Err(e) => self.fail(format!("reading the async database's counter: {e}")),
        }
        self.save_history(out, &ops, &by);
    }

    /// Every acknowledged `SADD` member is in its final set; no `INCR`
    /// answer was acknowledged twice, and each final counter is at least
    /// every acknowledged answer (the final reader's fences are not
    /// checked counters).
    fn check_final(
        &mut self,
        state: &FinalState,
        added: &HashMap<String, Vec<u64>>,
        incrs: &BTreeMap<String, Vec<(i64, u32, &Ack)>>,
    ) {
        let lost = history::acknowledged_present(added, &state.sets);
        if !lost.is_empty() {
            self.fail(format!(
                "{} acknowledged SADDs missing from the final sets: {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        for (key, answers) in incrs.iter().filter(|(k, _)| k.starts_with("ctr:")) {
            let fin = state.counters.get(key).copied().unwrap_or(0);
            let mut sorted = answers.clone();
            sorted.sort_by_key(|(n, _, a)| (*n, a.at));
            let twice: Vec<String> = sorted
                .windows(2)
                .filter(|w| w[0].0 == w[1].0)
                .map(|w| {
                    let said = |(_, c, a): &(i64, u32, &Ack)| {
                        format!(
                            "client {c} by {} at epoch {} (sent +{:.3}s, answered +{:.3}s)",
                            a.node,
                            a.epoch,
                            a.sent as f64 / 1e9,
                            a.at as f64 / 1e9
                        )
                    };
                    format!("{}: to {} and to {}", w[0].0, said(&w[0]), said(&w[1]))
                })
                .collect();
            if !twice.is_empty() {
                self.fail(format!(
                    "counter {key}: {} INCR answers acknowledged twice (an acknowledged increment was lost): {}",
                    twice.len(),
                    twice[..twice.len().min(5)].join("; ")
                ));
            }
            let max = sorted.last().map_or(0, |x| x.0);
            if fin < max || (fin as u64) < sorted.len() as u64 {
                self.fail(format!(
                    "counter {key}: final value {fin}, but INCR acknowledged {max} ({} acknowledgements)",
                    sorted.len()
                ));
            }
        }
    }

    /// Writes every register operation and every acknowledgement to
    /// `history.txt` in the run's directory, when the run failed (the
    /// directory is kept then).
    fn save_history(&self, out: &ClientsOut, ops: &[Op], by: &HashMap<(u32, u64), (&str, u64)>) {
        if self.violations.is_empty() {
            return;
        }
        let mut text = String::from("# register operations, by invocation\n");
        let mut sorted: Vec<&Op> = ops.iter().collect();
        sorted.sort_by_key(|o| o.invoke);
        for o in sorted {
            text.push_str(&show(o, by));
            text.push('\n');
        }
        text.push_str("\n# acknowledgements (database, client, node, epoch, sent, answered)\n");
        let mut acks: Vec<(u64, u32, &Ack)> = out
            .logs
            .iter()
            .flat_map(|l| l.acks.iter().map(move |a| (l.tenant, l.client, a)))
            .collect();
        acks.sort_by_key(|(_, _, a)| a.at);
        for (t, c, a) in acks {
            text.push_str(&format!(
                "{t} client {c} {} epoch {} +{:.3}s +{:.3}s\n",
                a.node,
                a.epoch,
                a.sent as f64 / 1e9,
                a.at as f64 / 1e9
            ));
        }
        let path = self.spec.dir.join("history.txt");
        if std::fs::write(&path, text).is_ok() {
            self.log(&format!("history written to {}", path.display()));
        }
    }

    fn check_probe(&mut self, p: ProbeHandle) {
        let node = p.node.clone();
        let replaced = p.replaced;
        let out = match p.join() {
            Some(o) => o,
            None => {
                self.fail(format!("the probe of {node} panicked"));
                return;
            }
        };
        self.stats.probes += out.sent;
        for (k, n) in &out.answers {
            *self.stats.probe_answers.entry(k.clone()).or_default() += n;
        }
        self.log(&format!(
            "{} writes sent to cut-off {node}: {:?}",
            out.sent, out.answers
        ));
        if out.sent == 0 {
            self.fail(format!(
                "no write reached the cut-off primary {node}: the check shows nothing"
            ));
        }
        let (regs, _) = databases();
        for (key, what) in out.acked {
            // Whether the database still has it (an acknowledged write
            // the new primary never had is lost).
            let kept = self
                .roles(regs.id)
                .and_then(|r| Some(self.w().node(&r.primary).ok()?.resp))
                .and_then(|addr| Conn::open(addr, Some((&regs.name, &regs.token))))
                .and_then(|mut c| c.call(&["EXISTS", &key]));
            if !replaced {
                // Still the primary (nobody was promoted): acknowledging
                // once its standby had the write is right, if it is kept.
                match kept {
                    Some(Reply::Int(1)) => self.log(&format!(
                        "{node}, cut off but never replaced, acknowledged {what} once its standby had it; the primary has it"
                    )),
                    other => self.fail(format!(
                        "{node}, cut off but never replaced, acknowledged {what}; EXISTS on the primary answered {other:?}"
                    )),
                }
                continue;
            }
            let kept = match kept {
                Some(Reply::Int(1)) => "the primary has it".to_string(),
                Some(Reply::Int(0)) => "the primary does not have it: lost".to_string(),
                other => format!("EXISTS on the primary answered {other:?}"),
            };
            self.fail(format!(
                "the cut-off old primary {node} acknowledged a region write: {what}; {kept}"
            ));
        }
    }

    /// The writes of `db` the running nodes relayed to its primary.
    fn relayed_writes(&self, db: &Database) -> u64 {
        let line = format!("anykv_relayed_writes_total{{tenant=\"{}\"}} ", db.name);
        self.observers()
            .iter()
            .filter_map(|n| {
                let http = self.w().node(n).ok()?.http;
                let (_, body) = crate::world::http(http, "GET", "/metrics", "", "")?;
                let v = body.lines().find_map(|l| l.strip_prefix(&line))?;
                v.trim().parse::<f64>().ok()
            })
            .sum::<f64>() as u64
    }

    /// A panic in any node's log is a failure.
    fn check_logs(&mut self) {
        let Some(w) = &self.w else { return };
        let mut found = Vec::new();
        for n in &w.file.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
                found.push(format!("{} ({}): {line}", n.name, n.log.display()));
            }
        }
        for f in found {
            self.fail(format!("a node panicked: {f}"));
        }
    }
}

/// An operation as a person reads it: times in s since the run began,
/// and the node and epoch that acknowledged it (a read: its fence).
fn show(o: &Op, by: &HashMap<(u32, u64), (&str, u64)>) -> String {
    let what = match o.kind {
        Kind::Write(v) => format!("SET {v}"),
        Kind::Read(v) => format!("GET -> {v:?}"),
    };
    let end = o.complete.map_or("no answer".to_string(), |c| {
        format!("+{:.3}s", c as f64 / 1e9)
    });
    let who = by
        .get(&(o.client, o.invoke))
        .map_or(String::new(), |(n, e)| format!(" by {n} at epoch {e}"));
    format!(
        "client {} {} {what}: +{:.3}s .. {end}{who}",
        o.client,
        o.key,
        o.invoke as f64 / 1e9
    )
}

/// The operations on `op`'s key that overlap the second before it and
/// its own span, and the write of the value it read: what a person needs
/// to see why no order places it (at most 60, by invocation).
fn around<'a>(ops: &'a [Op], op: &Op) -> Vec<&'a Op> {
    let from = op.invoke.saturating_sub(1_000_000_000);
    let to = op.complete.unwrap_or(u64::MAX);
    let read = match op.kind {
        Kind::Read(Some(v)) => Some(v),
        _ => None,
    };
    let mut v: Vec<&Op> = ops
        .iter()
        .filter(|o| o.key == op.key)
        .filter(|o| {
            let overlaps = o.invoke <= to && o.complete.is_none_or(|c| c >= from);
            overlaps || (read.is_some() && o.kind == Kind::Write(read.unwrap_or(0)))
        })
        .collect();
    v.sort_by_key(|o| o.invoke);
    v.truncate(60);
    v
}

/// What every client recorded, and the final state.
struct ClientsOut {
    logs: Vec<WorkerLog>,
    /// Err: the final state could not be read (a violation: the database
    /// never served again).
    state: Result<FinalState, String>,
    loose_counter: Result<Option<i64>, String>,
}

#[derive(Default)]
struct FinalState {
    counters: HashMap<String, i64>,
    sets: HashMap<String, HashSet<u64>>,
}

/// An error reply that does not say the request ran nothing: a node that
/// forwarded or relayed it lost the answer (`forward.rs`: "the request
/// may or may not have run").
fn uncertain(r: &Reply) -> Option<&str> {
    match r {
        Reply::Err(e) if e.contains("may or may not have run") => Some(e),
        _ => None,
    }
}

/// Runs `f` with a router's QUIC client, on a runtime of its own (the
/// calling thread's).
fn with_quic<T, F: std::future::Future<Output = Result<T, String>>>(
    dir: &std::path::Path,
    f: impl FnOnce(Arc<StoreClient>) -> F,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    rt.block_on(async move { f(Arc::new(client::router_client(dir)?)).await })
}

/// A refusal as the run's stats count it: by its first word, but a
/// generic `ERR` whole (it says what went wrong).
fn refusal(e: &str) -> String {
    match e.split_whitespace().next().unwrap_or("") {
        "ERR" => e.chars().take(120).collect(),
        word => word.to_string(),
    }
}

/// What a client did.
#[derive(Default)]
struct WorkerLog {
    client: u32,
    tenant: u64,
    /// Register operations (writes with or without an answer, fenced reads).
    ops: Vec<Op>,
    reads: u64,
    /// Every acknowledged write, with its node and epoch.
    acks: Vec<Ack>,
    /// Acknowledged INCR answers and SADD members, by key.
    incrs: Vec<(String, i64, Ack)>,
    added: Vec<(String, u64)>,
    unknown: u64,
    refused: BTreeMap<String, u64>,
    /// Answers no correct node gives (a write acknowledged without its
    /// token, a read of something never written...).
    anomalies: Vec<String>,
}

#[derive(Clone, Copy)]
enum Mix {
    /// Registers, fenced reads, counters and sets.
    All,
    /// The same without the reads: the relaying client's (a fenced read
    /// on a replica would be served there, and prove nothing).
    Writes,
    /// INCR of one counter only.
    Counter,
}

/// How a request went.
enum Exchange {
    /// Every reply, with the time the last arrived.
    Answered(Vec<(Option<Token>, Reply)>, u64),
    /// No answer (timeout, closed stream): it may or may not have run.
    Unknown,
    /// Not sent (no stream could be opened).
    NotSent,
}

/// One client: a store stream to one iad node at a time.
struct Worker {
    tenant: u64,
    nodes: Vec<(String, SocketAddr)>,
    on: usize,
    stream: Option<StoreStream>,
    quic: Arc<StoreClient>,
    env: Envelope,
    base: Instant,
    rng: SmallRng,
    n: u64,
    log: WorkerLog,
    /// Stays on its node whatever it is answered (the drift experiment's
    /// writer to the standby, which must be there when it is promoted).
    stay: bool,
}

impl Worker {
    fn new(
        id: u32,
        tenant: u64,
        nodes: &[(String, SocketAddr)],
        quic: Arc<StoreClient>,
        base: Instant,
        seed: u64,
    ) -> Worker {
        Worker {
            tenant,
            nodes: nodes.to_vec(),
            on: id as usize % nodes.len().max(1),
            stream: None,
            quic,
            env: Envelope {
                tenant,
                db: 0,
                client_id: id as u64,
                resp: 2,
                addr: SocketAddr::from(([10, 0, 0, id as u8], 1000)),
                name: format!("fault-client-{id}").into_bytes(),
                min_token: None,
                user: String::new(),
                // Marked as relayed already, so that a node that is no
                // longer the primary refuses a write (-READONLY) rather
                // than send it on to the new one: each acknowledgement
                // must come from the node the stream goes to.
                relayed: true,
            },
            base,
            rng: SmallRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id as u64)),
            n: 0,
            stay: false,
            log: WorkerLog {
                client: id,
                tenant,
                ..Default::default()
            },
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn next_node(&mut self) {
        self.stream = None;
        if !self.stay {
            self.on = (self.on + 1) % self.nodes.len();
        }
    }

    /// Sends `reqs` pipelined on the current node's stream.
    async fn exchange(&mut self, reqs: &[&[&str]]) -> (u64, String, Exchange) {
        let node = self.nodes[self.on].0.clone();
        if self.stream.is_none() {
            let addr = self.nodes[self.on].1;
            let open = StoreStream::open(&self.quic, addr, self.tenant);
            match tokio::time::timeout(Duration::from_secs(2), open).await {
                Ok(Ok(s)) => self.stream = Some(s),
                _ => {
                    self.next_node();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return (self.now(), node, Exchange::NotSent);
                }
            }
        }
        let invoke = self.now();
        let (env, stream) = (&self.env, self.stream.as_mut().expect("a stream"));
        let pairs: Vec<(&Envelope, &[&str])> = reqs.iter().map(|r| (env, *r)).collect();
        let answered = tokio::time::timeout(OP_TIMEOUT, async {
            stream.send(&pairs).await?;
            let mut out = Vec::new();
            for _ in reqs {
                out.push(stream.reply().await?);
            }
            Ok::<_, String>(out)
        })
        .await;
        match answered {
            Ok(Ok(out)) => match out.iter().find_map(|(_, r)| uncertain(r)) {
                // A node that passed the request on and lost its answer
                // says so: it may or may not have run, as if unanswered
                // (counted with the refusals, by what it said).
                Some(e) => {
                    let said: String = e.chars().take(100).collect();
                    *self
                        .log
                        .refused
                        .entry(format!("(may have run) {said}"))
                        .or_default() += 1;
                    self.next_node();
                    (invoke, node, Exchange::Unknown)
                }
                None => (invoke, node, Exchange::Answered(out, self.now())),
            },
            _ => {
                self.next_node();
                (invoke, node, Exchange::Unknown)
            }
        }
    }

    /// Counts a refusal and moves on (stays on NOREPLICAS: the primary,
    /// waiting for a standby).
    async fn refused(&mut self, e: &str) {
        let word = e.split_whitespace().next().unwrap_or("").to_string();
        *self.log.refused.entry(refusal(e)).or_default() += 1;
        if word != "NOREPLICAS" {
            self.next_node();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    fn ack(&mut self, node: &str, invoke: u64, at: u64, token: Option<&Token>, what: &str) -> bool {
        match token {
            Some(t) => {
                self.log.acks.push(Ack {
                    sent: invoke,
                    at,
                    epoch: t.epoch,
                    node: node.to_string(),
                    relayed: !self.env.relayed,
                });
                true
            }
            None => {
                self.log
                    .anomalies
                    .push(format!("{what} acknowledged by {node} without a token"));
                false
            }
        }
    }

    /// Records a register operation.
    fn record(&mut self, key: String, kind: Kind, invoke: u64, complete: Option<u64>) {
        self.log.ops.push(Op {
            client: self.log.client,
            key,
            kind,
            invoke,
            complete,
        });
    }

    fn value(&mut self, id: u32) -> u64 {
        self.n += 1;
        id as u64 * 1_000_000 + self.n
    }

    async fn run(mut self, mix: Mix, shared: Arc<Shared>) -> WorkerLog {
        let id = self.log.client;
        let counter = match mix {
            Mix::All | Mix::Writes => &shared.acked,
            Mix::Counter => &shared.async_acked,
        };
        while !shared.stop.load(Ordering::Acquire) {
            let dice = match mix {
                Mix::All => self.rng.random_range(0..100),
                Mix::Writes => match self.rng.random_range(0..70) {
                    d if d < 40 => d,
                    d => d + 30,
                },
                Mix::Counter => 75,
            };
            let k = self.rng.random_range(0..REGISTERS);
            let c = match mix {
                Mix::All | Mix::Writes => format!("ctr:{}", self.rng.random_range(0..COUNTERS)),
                Mix::Counter => "ctr:0".to_string(),
            };
            let acked_before = self.log.acks.len();
            match dice {
                0..40 => {
                    let key = format!("reg:{k}");
                    let v = self.value(id);
                    let vs = v.to_string();
                    let (invoke, node, sent) = self.exchange(&[&["SET", &key, &vs]]).await;
                    match sent {
                        Exchange::Answered(mut r, at) => match r.remove(0) {
                            (t, Reply::Simple(_)) => {
                                if self.ack(&node, invoke, at, t.as_ref(), "SET") {
                                    self.record(key, Kind::Write(v), invoke, Some(at));
                                }
                            }
                            (_, Reply::Err(e)) => self.refused(&e).await,
                            (_, other) => {
                                self.log.anomalies.push(format!("SET answered {other:?}"))
                            }
                        },
                        Exchange::Unknown => {
                            self.log.unknown += 1;
                            self.record(key, Kind::Write(v), invoke, None);
                        }
                        Exchange::NotSent => {}
                    }
                }
                40..70 => {
                    let key = format!("reg:{k}");
                    if let Ok((invoke, at, r)) = self.fenced(&["GET", &key], &c).await {
                        match r.as_u64() {
                            Ok(v) => {
                                self.log.reads += 1;
                                self.record(key, Kind::Read(v), invoke, Some(at));
                            }
                            Err(e) => self.log.anomalies.push(format!("GET {key}: {e}")),
                        }
                    }
                }
                70..85 => {
                    let (invoke, node, sent) = self.exchange(&[&["INCR", &c]]).await;
                    self.incr_answer(&node, invoke, sent, &c).await;
                }
                _ => {
                    let key = format!("set:{}", k % SETS);
                    let v = self.value(id);
                    let vs = v.to_string();
                    let (invoke, node, sent) = self.exchange(&[&["SADD", &key, &vs]]).await;
                    match sent {
                        Exchange::Answered(mut r, at) => match r.remove(0) {
                            (t, Reply::Int(1)) => {
                                if self.ack(&node, invoke, at, t.as_ref(), "SADD") {
                                    self.log.added.push((key, v));
                                }
                            }
                            (_, Reply::Err(e)) => self.refused(&e).await,
                            (_, other) => self
                                .log
                                .anomalies
                                .push(format!("SADD of a new member answered {other:?}")),
                        },
                        Exchange::Unknown => self.log.unknown += 1,
                        Exchange::NotSent => {}
                    }
                }
            }
            let now_acked = self.log.acks.len();
            if now_acked > acked_before {
                counter.fetch_add((now_acked - acked_before) as u64, Ordering::AcqRel);
            }
            let pause = self.rng.random_range(2..=8);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.log
    }

    /// Records an INCR's answer; whether it was acknowledged.
    async fn incr_answer(&mut self, node: &str, invoke: u64, sent: Exchange, key: &str) -> bool {
        match sent {
            Exchange::Answered(mut r, at) => match r.remove(0) {
                (t, Reply::Int(n)) => {
                    if self.ack(node, invoke, at, t.as_ref(), "INCR") {
                        let a = self.log.acks.last().cloned().expect("just acknowledged");
                        self.log.incrs.push((key.to_string(), n, a));
                        return true;
                    }
                    false
                }
                (_, Reply::Err(e)) => {
                    self.refused(&e).await;
                    false
                }
                (_, other) => {
                    self.log.anomalies.push(format!("INCR answered {other:?}"));
                    false
                }
            },
            Exchange::Unknown => {
                self.log.unknown += 1;
                false
            }
            Exchange::NotSent => false,
        }
    }

    /// A read fenced by an INCR of counter `fence` on the same stream
    /// (module docs): (invoke, complete, the read's reply) when the INCR
    /// was acknowledged.
    async fn fenced(&mut self, read: &[&str], fence: &str) -> Result<(u64, u64, Reply), ()> {
        let (invoke, node, sent) = self.exchange(&[read, &["INCR", fence]]).await;
        let Exchange::Answered(mut r, at) = sent else {
            let _ = self.incr_answer(&node, invoke, sent, fence).await;
            return Err(());
        };
        let incr = r.pop().expect("two replies");
        let (_, got) = r.pop().expect("two replies");
        let fenced = self
            .incr_answer(&node, invoke, Exchange::Answered(vec![incr], at), fence)
            .await;
        match got {
            // Refused (a lease that lapsed between the two): no read.
            Reply::Err(e) => {
                *self.log.refused.entry(refusal(&e)).or_default() += 1;
                Err(())
            }
            got if fenced => Ok((invoke, at, got)),
            _ => Err(()),
        }
    }

    /// A fenced read retried until it is served (at most a minute): its
    /// times and reply.
    async fn fenced_read(&mut self, read: &[&str]) -> Result<(u64, u64, Reply), String> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(x) = self.fenced(read, "fence").await {
                return Ok(x);
            }
            if Instant::now() > end {
                return Err(format!(
                    "{read:?} was never served on a primary within 60 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads every register (recorded as reads), counter and set.
    async fn final_state(&mut self) -> Result<FinalState, String> {
        let mut st = FinalState::default();
        for k in 0..REGISTERS {
            let key = format!("reg:{k}");
            let (invoke, at, r) = self.fenced_read(&["GET", &key]).await?;
            let v = r
                .as_u64()
                .map_err(|e| format!("the final GET {key}: {e}"))?;
            self.record(key, Kind::Read(v), invoke, Some(at));
        }
        for c in 0..COUNTERS {
            let key = format!("ctr:{c}");
            let (_, _, r) = self.fenced_read(&["GET", &key]).await?;
            let v = r
                .as_u64()
                .map_err(|e| format!("the final GET {key}: {e}"))?;
            st.counters.insert(key, v.unwrap_or(0) as i64);
        }
        for s in 0..SETS {
            let key = format!("set:{s}");
            let (_, _, r) = self.fenced_read(&["SMEMBERS", &key]).await?;
            let Reply::Array(items) = r else {
                return Err(format!("the final SMEMBERS {key} answered {r:?}"));
            };
            let members = items
                .iter()
                .map(|i| i.as_u64().ok().flatten())
                .collect::<Option<HashSet<u64>>>()
                .ok_or_else(|| format!("the final SMEMBERS {key}: not numbers: {items:?}"))?;
            st.sets.insert(key, members);
        }
        Ok(st)
    }
}

/// Writes sent to a cut-off primary over RESP (TCP is not shaped).
struct ProbeHandle {
    node: String,
    /// Another node became the primary while this one was cut off (false
    /// when an overlapping fault left no standby to promote: the cut-off
    /// node stayed the primary, and may acknowledge once its standby is
    /// back).
    replaced: bool,
    healed: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ProbeOut>,
}

#[derive(Default)]
struct ProbeOut {
    sent: u64,
    /// Answers by their first word (`no answer`, `closed` too).
    answers: BTreeMap<String, u64>,
    /// The acknowledged ones (key, what happened): a violation each.
    acked: Vec<(String, String)>,
}

impl ProbeHandle {
    fn start(node: String, addr: SocketAddr, db: Database, base: Instant) -> ProbeHandle {
        let healed = Arc::new(AtomicBool::new(false));
        let thread = {
            let healed = healed.clone();
            std::thread::spawn(move || probe(addr, &db, &healed, base))
        };
        ProbeHandle {
            node,
            replaced: true,
            healed,
            thread,
        }
    }

    /// The cut healed: no more probes; answers are still awaited.
    fn heal(&self) {
        self.healed.store(true, Ordering::Release);
    }

    fn join(self) -> Option<ProbeOut> {
        self.heal();
        self.thread.join().ok()
    }
}

fn probe(addr: SocketAddr, db: &Database, healed: &AtomicBool, base: Instant) -> ProbeOut {
    let mut out = ProbeOut::default();
    let secs = || base.elapsed().as_secs_f64();
    let note = |out: &mut ProbeOut, what: String, reply: Result<Reply, String>, sent_at: f64| {
        let word = match &reply {
            Ok(Reply::Err(e)) => e.split_whitespace().next().unwrap_or("").to_string(),
            Ok(Reply::Simple(s)) => {
                out.acked.push((
                    what.trim_start_matches("SET ").to_string(),
                    format!(
                        "{what} sent at +{sent_at:.1}s answered +{s} at +{:.1}s",
                        secs()
                    ),
                ));
                format!("+{s}")
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => e.clone(),
        };
        *out.answers.entry(word).or_default() += 1;
    };
    let mut waiting: Vec<(Conn, String, f64)> = Vec::new();
    let mut i = 0u64;
    while !healed.load(Ordering::Acquire) {
        if let Some(mut c) = Conn::open(addr, Some((&db.name, &db.token))) {
            i += 1;
            let what = format!("SET probe:{i}");
            let sent_at = secs();
            if c.send(&["SET", &format!("probe:{i}"), &i.to_string()])
                .is_some()
            {
                out.sent += 1;
                c.set_timeout(Duration::from_millis(300));
                match c.next_reply() {
                    Err(e) if e == "timed out" => waiting.push((c, what, sent_at)),
                    r => note(&mut out, what, r, sent_at),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The cut healed: every write still waiting gets 20 s to be answered
    // (the old primary learns it was replaced; it must not acknowledge).
    let end = Instant::now() + Duration::from_secs(20);
    for (mut c, what, sent_at) in waiting {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        c.set_timeout(left);
        let r = c.next_reply();
        note(&mut out, what, r, sent_at);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule() {
        for seed in 0..200 {
            let a = Schedule::from_seed(seed);
            assert_eq!(a, Schedule::from_seed(seed));
            assert!((2..=3).contains(&a.steps.len()), "{a}");
            assert!(
                a.steps.last().is_some_and(|s| s.settle),
                "the last step must settle: {a}"
            );
            if let Some(k) = &a.skew {
                let off = k.rate_permille.abs_diff(1000);
                assert!((30..=DRIFT_PERMILLE).contains(&off), "{a}");
            }
            for s in &a.steps {
                if let Fault::Stop { ms } = s.fault {
                    assert!(ms > LEASE_MS, "{a}");
                }
            }
        }
        assert_ne!(Schedule::from_seed(1), Schedule::from_seed(2));
    }

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seeds("1-3,7"), Ok(vec![1, 2, 3, 7]));
        assert_eq!(parse_seeds("17"), Ok(vec![17]));
        assert_eq!(parse_seeds("2..4"), Ok(vec![2, 3, 4]));
        assert_eq!(parse_seeds("2..=4"), Ok(vec![2, 3, 4]));
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("").is_err());
    }
}
