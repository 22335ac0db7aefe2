//! Propagation-log replay: a long random workload over every write command
//! runs against an in-process tenant on a virtual clock; the tenant's
//! captured propagation log is then parsed and dispatched on a fresh tenant,
//! which must end up with exactly the same keyspace (keys, values, TTLs in
//! every database), including keys that are logically expired but were not
//! deleted yet.
//!
//! The replay runs at a time no later than the original run's start, so the
//! absolute times in the log (`PEXPIREAT`, `SET ... PXAT`) expire nothing
//! during the replay that the original had not deleted with a logged `DEL`.

mod common;

use common::{parse_log, Node, START_MS};
use std::collections::BTreeMap;
use std::ops::Range;

use anykv_server::config::Config;
use anykv_server::expire::active_expire_cycle;
use anykv_server::repl::apply::Applier;
use anykv_server::resp::{ParseLimits, Request, RequestParser};
use anykv_server::shared::{Settings, Shared};
use anykv_server::tenant::Tenant;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Databases the workload touches (SELECT/COPY DB/MOVE/SWAPDB).
const DBS: i64 = 4;

fn env() -> (Shared, Settings) {
    let shared = Shared::new(Config::default(), 1);
    let mut set = shared.settings();
    set.debug_command = "yes".into();
    (shared, set)
}

// ---------------------------------------------------------------------------
// Workload generator.

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pct(&mut self, p: u32) -> bool {
        self.rng.random_range(0..100) < p
    }

    fn key(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..100) {
            0..=79 => format!("k{}", self.rng.random_range(0..40)).into_bytes(),
            80..=89 => format!("p:{}", self.rng.random_range(0..12)).into_bytes(),
            90..=96 => format!("key:{}", self.rng.random_range(0..12)).into_bytes(),
            // Binary keys that look like protocol: the log must stay framed.
            _ => [&b"\r\n*1\r\n$"[..], &[0, self.rng.random_range(0..3)]].concat(),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..100) {
            0..=29 => self
                .rng
                .random_range(-1000i64..1000)
                .to_string()
                .into_bytes(),
            30..=32 => [i64::MAX, i64::MIN, i64::MAX - 1][self.rng.random_range(0..3)]
                .to_string()
                .into_bytes(),
            33..=42 => ["3.5", "-0.125", "1e3", "0.1", "10.50", "-7"][self.rng.random_range(0..6)]
                .as_bytes()
                .to_vec(),
            43..=49 => Vec::new(),
            50..=89 => {
                let n = self.rng.random_range(1..20);
                (0..n)
                    .map(|_| b'a' + self.rng.random_range(0..26u8))
                    .collect()
            }
            _ => {
                let n = self.rng.random_range(0..30);
                (0..n)
                    .map(|_| {
                        [0u8, b'\r', b'\n', b'$', b'*', 0xff, b'x'][self.rng.random_range(0..7)]
                    })
                    .collect()
            }
        }
    }

    fn db(&mut self) -> Vec<u8> {
        if self.pct(2) {
            // Out of range or not a number: an error reply, nothing logged.
            return [&b"16"[..], b"-1", b"x"][self.rng.random_range(0..3)].to_vec();
        }
        self.rng.random_range(0..DBS).to_string().into_bytes()
    }

    /// Relative seconds: mostly short (expire during the run), some long
    /// (still live at the end), a few invalid or non-positive.
    fn rel_s(&mut self) -> i64 {
        match self.rng.random_range(0..100) {
            0..=59 => self.rng.random_range(1..15),
            60..=94 => self.rng.random_range(15..2000),
            95..=97 => self.rng.random_range(-5..=0),
            _ => i64::MAX / 100,
        }
    }

    fn rel_ms(&mut self) -> i64 {
        match self.rng.random_range(0..100) {
            0..=59 => self.rng.random_range(1..15_000),
            60..=94 => self.rng.random_range(15_000..2_000_000),
            95..=97 => self.rng.random_range(-5000..=0),
            _ => i64::MAX - 1,
        }
    }

    /// Absolute ms: around now, in the past (before the run's start, too)
    /// and in the future.
    fn abs_ms(&mut self, now: i64) -> i64 {
        match self.rng.random_range(0..100) {
            0..=14 => now - self.rng.random_range(0..100_000),
            15..=19 => START_MS - self.rng.random_range(1..1_000_000),
            20..=22 => self.rng.random_range(1..1000),
            _ => now + self.rng.random_range(1..2_000_000),
        }
    }

    fn abs_s(&mut self, now: i64) -> i64 {
        let ms = self.abs_ms(now);
        if ms < 1000 {
            ms
        } else {
            ms / 1000 + self.rng.random_range(0..2)
        }
    }

    /// SET/GETEX expiry options.
    fn expire_opt(&mut self, now: i64, a: &mut Vec<Vec<u8>>, set: bool) {
        let n = if set { 6 } else { 5 };
        match self.rng.random_range(0..n) {
            0 => {}
            1 => {
                a.push(b"EX".to_vec());
                a.push(self.rel_s().to_string().into_bytes());
            }
            2 => {
                a.push(b"PX".to_vec());
                a.push(self.rel_ms().to_string().into_bytes());
            }
            3 => {
                a.push(b"EXAT".to_vec());
                a.push(self.abs_s(now).to_string().into_bytes());
            }
            4 => {
                a.push(b"PXAT".to_vec());
                a.push(self.abs_ms(now).to_string().into_bytes());
            }
            _ => a.push(b"KEEPTTL".to_vec()),
        }
    }

    fn keys(&mut self, max: usize) -> Vec<Vec<u8>> {
        let n = self.rng.random_range(1..=max);
        (0..n).map(|_| self.key()).collect()
    }

    fn cmd(&mut self, now: i64) -> Vec<Vec<u8>> {
        let b = |s: &str| s.as_bytes().to_vec();
        let r = self.rng.random_range(0..1000);
        let mut a: Vec<Vec<u8>> = Vec::new();
        match r {
            0..=119 => {
                a.push(b("SET"));
                a.push(self.key());
                a.push(self.value());
                // Option groups (an expiry keeps its argument), in any order:
                // Redis accepts that.
                let mut opts: Vec<Vec<Vec<u8>>> = Vec::new();
                match self.rng.random_range(0..4) {
                    0 => opts.push(vec![b("NX")]),
                    1 => opts.push(vec![b("XX")]),
                    _ => {}
                }
                if self.pct(25) {
                    opts.push(vec![b("GET")]);
                }
                let mut exp = Vec::new();
                self.expire_opt(now, &mut exp, true);
                if !exp.is_empty() {
                    opts.push(exp);
                }
                for i in (1..opts.len()).rev() {
                    let j = self.rng.random_range(0..=i);
                    opts.swap(i, j);
                }
                if self.pct(1) {
                    // Conflicting options: a syntax error.
                    opts.push(vec![b("NX"), b("XX")]);
                }
                a.extend(opts.into_iter().flatten());
            }
            120..=149 => {
                a.push(b("SETNX"));
                a.push(self.key());
                a.push(self.value());
            }
            150..=179 => {
                a.push(b("SETEX"));
                a.push(self.key());
                a.push(self.rel_s().to_string().into_bytes());
                a.push(self.value());
            }
            180..=199 => {
                a.push(b("PSETEX"));
                a.push(self.key());
                a.push(self.rel_ms().to_string().into_bytes());
                a.push(self.value());
            }
            200..=239 => {
                a.push(b("GETEX"));
                a.push(self.key());
                if self.pct(20) {
                    a.push(b("PERSIST"));
                } else {
                    self.expire_opt(now, &mut a, false);
                }
            }
            240..=254 => {
                a.push(b("GETDEL"));
                a.push(self.key());
            }
            255..=274 => {
                a.push(b("GETSET"));
                a.push(self.key());
                a.push(self.value());
            }
            275..=299 => {
                a.push(b(if self.pct(70) { "MSET" } else { "MSETNX" }));
                for k in self.keys(4) {
                    a.push(k);
                    a.push(self.value());
                }
            }
            300..=324 => {
                a.push(b("APPEND"));
                a.push(self.key());
                a.push(self.value());
            }
            325..=344 => {
                a.push(b("SETRANGE"));
                a.push(self.key());
                let off = if self.pct(3) {
                    -1
                } else {
                    self.rng.random_range(0..40)
                };
                a.push(off.to_string().into_bytes());
                a.push(self.value());
            }
            345..=404 => {
                let c = ["INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT"]
                    [self.rng.random_range(0..5)];
                a.push(b(c));
                a.push(self.key());
                match c {
                    "INCRBY" | "DECRBY" => a.push(if self.pct(2) {
                        i64::MIN.to_string().into_bytes()
                    } else {
                        self.rng.random_range(-100i64..100).to_string().into_bytes()
                    }),
                    "INCRBYFLOAT" => a.push(
                        ["1.5", "-0.25", "3e2", "0", "inf", "x", "10", "-1.1"]
                            [self.rng.random_range(0..8)]
                        .as_bytes()
                        .to_vec(),
                    ),
                    _ => {}
                }
            }
            405..=444 => {
                a.push(b(if self.pct(50) { "DEL" } else { "UNLINK" }));
                a.extend(self.keys(3));
            }
            445..=524 => {
                let c = ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"][self.rng.random_range(0..4)];
                a.push(b(c));
                a.push(self.key());
                let t = match c {
                    "EXPIRE" => self.rel_s(),
                    "PEXPIRE" => self.rel_ms(),
                    "EXPIREAT" => self.abs_s(now),
                    _ => self.abs_ms(now),
                };
                a.push(t.to_string().into_bytes());
                for _ in 0..self.rng.random_range(0..3) {
                    if self.pct(50) {
                        a.push(b(["NX", "XX", "GT", "LT"][self.rng.random_range(0..4)]));
                    }
                }
            }
            525..=544 => {
                a.push(b("PERSIST"));
                a.push(self.key());
            }
            545..=569 => {
                a.push(b(if self.pct(60) { "RENAME" } else { "RENAMENX" }));
                a.push(self.key());
                a.push(self.key());
            }
            570..=594 => {
                a.push(b("COPY"));
                a.push(self.key());
                a.push(self.key());
                if self.pct(50) {
                    a.push(b("DB"));
                    a.push(self.db());
                }
                if self.pct(50) {
                    a.push(b("REPLACE"));
                }
            }
            595..=609 => {
                a.push(b("MOVE"));
                a.push(self.key());
                a.push(self.db());
            }
            610..=613 => {
                a.push(b("SWAPDB"));
                a.push(self.db());
                a.push(self.db());
            }
            614..=643 => {
                a.push(b("SELECT"));
                a.push(self.db());
            }
            644..=649 => {
                a.push(b("DEBUG"));
                a.push(b("POPULATE"));
                a.push(self.rng.random_range(0..15).to_string().into_bytes());
                if self.pct(70) {
                    a.push(b(if self.pct(70) { "p" } else { "key" }));
                    if self.pct(50) {
                        a.push(self.rng.random_range(0..30).to_string().into_bytes());
                    }
                }
            }
            650 => {
                // FLUSHDB is rare, FLUSHALL very rare (1 in ~15 of these).
                if self.pct(7) {
                    a.push(b("FLUSHALL"));
                } else {
                    a.push(b("FLUSHDB"));
                }
                if self.pct(30) {
                    a.push(b(if self.pct(50) { "SYNC" } else { "ASYNC" }));
                }
            }
            // Bitmap writes (strings grown and changed bit by bit).
            651..=689 => match self.rng.random_range(0..3) {
                0 => {
                    a.push(b("SETBIT"));
                    a.push(self.key());
                    a.push(self.rng.random_range(0..300).to_string().into_bytes());
                    a.push(b(if self.pct(50) { "1" } else { "0" }));
                }
                1 => {
                    a.push(b("BITFIELD"));
                    a.push(self.key());
                    a.push(b("OVERFLOW"));
                    a.push(b(["WRAP", "SAT", "FAIL"][self.rng.random_range(0..3)]));
                    a.push(b(if self.pct(50) { "INCRBY" } else { "SET" }));
                    a.push(b(["i8", "u5", "i16", "u1"][self.rng.random_range(0..4)]));
                    a.push(self.rng.random_range(0..100).to_string().into_bytes());
                    a.push(self.rng.random_range(-300i64..300).to_string().into_bytes());
                }
                _ => {
                    a.push(b("BITOP"));
                    a.push(b(["AND", "OR", "XOR", "NOT"][self.rng.random_range(0..4)]));
                    a.push(self.key());
                    a.push(self.key());
                }
            },
            // Reads that expire keys lazily.
            690..=749 => {
                a.push(b("GET"));
                a.push(self.key());
            }
            750..=789 => {
                a.push(b("EXISTS"));
                a.extend(self.keys(4));
            }
            790..=829 => {
                a.push(b("SCAN"));
                a.push(self.rng.random_range(0..40).to_string().into_bytes());
                a.push(b("COUNT"));
                a.push(self.rng.random_range(1..50).to_string().into_bytes());
            }
            830..=859 => a.push(b("RANDOMKEY")),
            860..=879 => {
                a.push(b(
                    ["TTL", "PTTL", "TYPE", "STRLEN"][self.rng.random_range(0..4)]
                ));
                a.push(self.key());
            }
            880..=899 => {
                a.push(b(if self.pct(50) { "MGET" } else { "TOUCH" }));
                a.extend(self.keys(4));
            }
            _ => {
                // Filler writes keep the keyspace populated.
                a.push(b("SET"));
                a.push(self.key());
                a.push(self.value());
            }
        }
        a
    }
}

fn parse_num(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// Keyspace comparison.

type Cmd = Vec<Vec<u8>>;
type Dump = Vec<BTreeMap<Vec<u8>, (Vec<u8>, i64)>>;

fn dump(t: &Tenant) -> Dump {
    t.ks.dbs
        .iter()
        .map(|db| {
            db.iter()
                .map(|e| {
                    (
                        e.key.as_bytes().to_vec(),
                        (e.value.as_str().unwrap_or(b"").to_vec(), e.expire_at),
                    )
                })
                .collect()
        })
        .collect()
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Describes the first difference between two keyspaces.
fn first_difference(a: &Dump, b: &Dump) -> Option<(usize, Vec<u8>, String)> {
    for (dbi, (da, db)) in a.iter().zip(b.iter()).enumerate() {
        let keys: std::collections::BTreeSet<&Vec<u8>> = da.keys().chain(db.keys()).collect();
        for k in keys {
            let (x, y) = (da.get(k), db.get(k));
            if x != y {
                let f = |v: Option<&(Vec<u8>, i64)>| match v {
                    None => "(absent)".to_string(),
                    Some((v, e)) => format!("value={:?} expire_at={e}", show(v)),
                };
                return Some((
                    dbi,
                    k.clone(),
                    format!(
                        "db {dbi} key {:?}: original {} / replayed {}",
                        show(k),
                        f(x),
                        f(y)
                    ),
                ));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Original run and replay.

struct Run {
    original: Node,
    log: Vec<u8>,
    /// Virtual time at the end of the run.
    end_ms: i64,
    ops: usize,
    errors: usize,
    expired_active: u64,
}

fn run_workload(shared: &Shared, set: &Settings, seed: u64, ops: usize) -> Run {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut n = Node::new(1);
    let mut now = START_MS;
    let mut errors = 0;
    let mut expired_active = 0;
    for i in 0..ops {
        if g.pct(50) {
            now += g.rng.random_range(0..2000);
        }
        // No active expiry in the last 5% of the run, so that it ends with
        // logically expired keys still present.
        if g.rng.random_range(0..40) == 0 && i < ops - ops / 20 {
            expired_active += active_expire_cycle(&mut n.t, now, 1, 10).expired;
            continue;
        }
        let cmd = g.cmd(now);
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_slice()).collect();
        let reply = n.run(shared, set, &args, now);
        if reply.first() == Some(&b'-') {
            errors += 1;
        }
    }
    let log = n.t.log.take_capture().to_vec();
    Run {
        original: n,
        log,
        end_ms: now,
        ops,
        errors,
        expired_active,
    }
}

/// Feeds `log` through a request parser in chunks of random size, as reads
/// from a socket would deliver it, dispatching every command at `now_ms`.
/// Returns the replayed tenant and every error reply seen.
fn replay(
    shared: &Shared,
    set: &Settings,
    log: &[u8],
    now_ms: i64,
    chunk_seed: u64,
) -> (Node, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(chunk_seed);
    let mut n = Node::new(2);
    let mut p = RequestParser::new();
    let lim = ParseLimits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut errors = Vec::new();
    let mut fed = 0;
    while fed < log.len() {
        let take = rng.random_range(1..=4096).min(log.len() - fed);
        buf.extend_from_slice(&log[fed..fed + take]);
        fed += take;
        loop {
            let r = p.next(&buf, &lim).expect("log parses");
            let Some(r) = r else { break };
            assert_eq!(r, Request::Multibulk);
            let args: Vec<&[u8]> = p.ranges().iter().map(|r| &buf[r.clone()]).collect();
            let reply = n.run(shared, set, &args, now_ms);
            if reply.first() == Some(&b'-') {
                let cmd: Vec<String> = args.iter().map(|a| show(a)).collect();
                errors.push(format!("{cmd:?} -> {}", show(reply)));
            }
        }
        let c = p.consumed();
        buf.drain(..c);
        p.rebase(c);
    }
    assert!(buf.is_empty(), "log ends mid-command");
    (n, errors)
}

/// Log entries that mention `key` (with the database they ran in).
fn history(log: &[u8], key: &[u8]) -> Vec<String> {
    let mut db = 0;
    let mut out = Vec::new();
    for c in parse_log(log) {
        if c[0].eq_ignore_ascii_case(b"select") {
            db = parse_num(&c[1]).unwrap_or(-1);
        }
        if c.iter().skip(1).any(|a| a == key)
            || c[0].eq_ignore_ascii_case(b"swapdb")
            || c[0].eq_ignore_ascii_case(b"flushdb")
            || c[0].eq_ignore_ascii_case(b"flushall")
        {
            let v: Vec<String> = c.iter().map(|a| show(a)).collect();
            out.push(format!("[db {db}] {}", v.join(" ")));
        }
    }
    out
}

fn check_seed(seed: u64, ops: usize) {
    let (shared, set) = env();
    let run = run_workload(&shared, &set, seed, ops);
    let orig = &run.original;
    assert!(
        orig.t.ks.total_keys() > 0,
        "seed {seed}: workload left an empty keyspace"
    );
    // Replay at the original start, and an hour before it: both must agree.
    for (i, replay_now) in [START_MS, START_MS - 3_600_000].into_iter().enumerate() {
        let (rep, errors) = replay(&shared, &set, &run.log, replay_now, seed ^ i as u64);
        assert!(
            errors.is_empty(),
            "seed {seed}: replay produced {} error replies, first: {}",
            errors.len(),
            errors[0]
        );
        if orig.t.ks.digest() != rep.t.ks.digest() {
            let (a, b) = (dump(&orig.t), dump(&rep.t));
            match first_difference(&a, &b) {
                Some((_, key, what)) => {
                    let h = history(&run.log, &key);
                    let tail = &h[h.len().saturating_sub(30)..];
                    panic!(
                        "seed {seed}: replayed keyspace differs (replay now {replay_now}): {what}\n\
                         last log entries for the key:\n  {}",
                        tail.join("\n  ")
                    );
                }
                None => panic!("seed {seed}: digests differ but the dumps are equal"),
            }
        }
    }
    // The apply mode, as a replica would run its primary's stream a day
    // later, in pieces of any size: the same keyspace (expiry is off while
    // applying: the log's own DELs decide), and the same offset and bytes,
    // since the stream is appended as it came.
    {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xA991);
        let mut t = Tenant::new(anykv_server::tenant::TenantId::DEFAULT, "replica", 16);
        t.role = anykv_server::repl::Role::Replica;
        t.log.enable_capture();
        let mut a = Applier::new();
        let later = run.end_ms + 86_400_000;
        let mut fed = 0;
        while fed < run.log.len() {
            let take = rng.random_range(1..=4096).min(run.log.len() - fed);
            a.feed(&mut t, &shared, &set, &run.log[fed..fed + take], later)
                .unwrap_or_else(|e| panic!("seed {seed}: applying the log: {e}"));
            fed += take;
        }
        assert_eq!(a.pending(), 0, "seed {seed}: log ends mid-command");
        assert_eq!(t.log.offset(), orig.t.log.offset(), "seed {seed}: offsets");
        assert!(
            t.log.take_capture()[..] == run.log[..],
            "seed {seed}: the replica's log is not its primary's bytes"
        );
        assert!(
            t.ks.digest() == orig.t.ks.digest(),
            "seed {seed}: applied keyspace differs"
        );
    }
    // The workload must actually exercise expiry: keys expired and deleted
    // during the run, keys with a TTL left, and some of those logically
    // expired but still present (the replay must rebuild those too).
    let volatile: usize = orig.t.ks.dbs.iter().map(|d| d.volatile_len()).sum();
    let stale = orig
        .t
        .ks
        .dbs
        .iter()
        .flat_map(|d| d.iter())
        .filter(|e| e.has_expire() && e.expire_at <= run.end_ms)
        .count();
    assert!(volatile > 0, "seed {seed}: no key with a TTL at the end");
    if ops >= 20_000 {
        assert!(stale > 0, "seed {seed}: no logically expired key left");
    }
    assert!(
        orig.t.stats.expired_keys > 0 && run.expired_active > 0,
        "seed {seed}: nothing expired during the run"
    );
    eprintln!(
        "seed {seed}: {} ops, {} error replies, {} keys ({} volatile, {} logically expired), {} expired ({} by the active cycle), log {} bytes",
        run.ops,
        run.errors,
        orig.t.ks.total_keys(),
        volatile,
        stale,
        orig.t.stats.expired_keys,
        run.expired_active,
        run.log.len()
    );
}

#[test]
fn replay_rebuilds_keyspace_seed_1() {
    check_seed(1, 25_000);
}

#[test]
fn replay_rebuilds_keyspace_seed_2() {
    check_seed(0xA11CE, 25_000);
}

#[test]
fn replay_rebuilds_keyspace_seed_3() {
    check_seed(0xDEAD_BEEF, 25_000);
}

#[test]
fn replay_rebuilds_keyspace_seed_4() {
    check_seed(424242, 40_000);
}

/// More, shorter runs: different shapes (flushes, swaps) show up early.
#[test]
fn replay_rebuilds_keyspace_many_short_seeds() {
    for seed in 100..140 {
        check_seed(seed, 2_000);
    }
}

/// The workload reaches every write command's logging paths: each of
/// these shapes of log entry shows up across a few seeds.
#[test]
fn workload_covers_every_logged_effect() {
    let (shared, set) = env();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 1..=3 {
        let run = run_workload(&shared, &set, seed, 25_000);
        for c in parse_log(&run.log) {
            let mut name = String::from_utf8_lossy(&c[0]).to_uppercase();
            if name == "SET" && c.len() > 3 {
                name = format!("SET {}", String::from_utf8_lossy(&c[3]).to_uppercase());
            }
            if name == "COPY" && c.len() > 3 {
                name = "COPY+OPTS".into();
            }
            *seen.entry(name).or_default() += 1;
        }
    }
    eprintln!("log entries: {seen:?}");
    for want in [
        "SELECT",
        "SET",
        "SET PXAT",
        "SET KEEPTTL",
        "DEL",
        "UNLINK",
        "PEXPIREAT",
        "PERSIST",
        "MSET",
        "MSETNX",
        "APPEND",
        "SETRANGE",
        "SETBIT",
        "BITFIELD",
        "BITOP",
        "INCR",
        "DECR",
        "INCRBY",
        "DECRBY",
        "RENAME",
        "RENAMENX",
        "COPY",
        "COPY+OPTS",
        "MOVE",
        "SWAPDB",
        "FLUSHDB",
        "FLUSHALL",
    ] {
        assert!(
            seen.contains_key(want),
            "no {want} entry in the logs: {seen:?}"
        );
    }
}

/// The harness can fail: changing one byte of a logged SET value (one whose
/// key no later entry touches) must change the replayed keyspace.
#[test]
fn corrupted_log_is_detected() {
    let (shared, set) = env();
    let run = run_workload(&shared, &set, 7, 5_000);
    let orig_digest = run.original.t.ks.digest();

    let mut p = RequestParser::new();
    let lim = ParseLimits::default();
    // Each entry's arguments and their byte ranges in the log.
    let mut entries: Vec<(Cmd, Vec<Range<usize>>)> = Vec::new();
    while let Some(r) = p.next(&run.log, &lim).unwrap() {
        assert_eq!(r, Request::Multibulk);
        let ranges = p.ranges().to_vec();
        let args = ranges.iter().map(|r| run.log[r.clone()].to_vec()).collect();
        entries.push((args, ranges));
    }
    // The last SET with a non-empty value whose key no later entry names,
    // with no flush after it.
    let mut target = None;
    'find: for i in (0..entries.len()).rev() {
        let (args, ranges) = &entries[i];
        let name = args[0].to_ascii_uppercase();
        if name == b"FLUSHDB" || name == b"FLUSHALL" {
            break;
        }
        if name != b"SET" || args[2].is_empty() {
            continue;
        }
        for (later, _) in &entries[i + 1..] {
            if later.iter().skip(1).any(|a| a == &args[1]) {
                continue 'find;
            }
        }
        target = Some(ranges[2].start);
        break;
    }
    let at = target.expect("a SET to corrupt");
    let mut bad = run.log.clone();
    bad[at] ^= 0x01;

    let (good, errors) = replay(&shared, &set, &run.log, START_MS, 1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(good.t.ks.digest(), orig_digest);
    let (corrupt, _) = replay(&shared, &set, &bad, START_MS, 1);
    assert_ne!(
        corrupt.t.ks.digest(),
        orig_digest,
        "a corrupted SET value went unnoticed"
    );
    let (a, b) = (dump(&run.original.t), dump(&corrupt.t));
    assert!(first_difference(&a, &b).is_some());
}
