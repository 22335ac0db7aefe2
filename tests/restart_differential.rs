//! Restart differential: anykv against the reference Redis 7.0 across
//! restarts with the append-only log on.
//!
//! The same command stream runs on `redis-server` and on `anykv`, both
//! started with `--appendonly yes --appendfsync always --save ''` and a
//! fresh `--dir` of their own. Every reply is compared while the stream
//! runs (after the normalizer below). Then both servers are stopped (kill -9,
//! or `SHUTDOWN NOSAVE`), left down long enough for the short TTLs the stream
//! set to pass, restarted on the same directories, and their keyspaces are
//! compared: for every db 0..15, the sorted `KEYS *`, and for every key its
//! `TYPE`, its value (`GET`, `LRANGE 0 -1`, `HGETALL` as sorted pairs,
//! sorted `SMEMBERS`, `ZRANGE 0 -1 WITHSCORES`, `XINFO STREAM FULL`) and
//! whether a TTL is set
//! (`PTTL` -1 versus > 0; the exact number is never compared).
//!
//! With `appendfsync always`, everything acknowledged before the kill must
//! be back, and what comes back must be what Redis has: the log is replayed
//! after the TTLs it recorded have passed, so a log that records relative
//! times, or a replay that drops keys whose original TTL passed before a
//! later command removed it (PERSIST) or rewrote it (INCR), or that forgets
//! which database a command ran in, shows up as a keyspace difference.
//!
//! The random test ([`random_workloads_survive_restarts_like_redis`]) runs
//! [`ROUNDS`] rounds on the same two directories; each round is:
//!
//! * phase A: a seeded random stream over strings (SET with every option,
//!   INCR/INCRBYFLOAT/APPEND/SETRANGE/GETEX...), lists, hashes, sets,
//!   sorted sets, bitmaps, HyperLogLogs, geo sets and streams with consumer
//!   groups (read back as `XINFO STREAM FULL`, times and node packing
//!   masked), generic key commands (EXPIRE/PEXPIRE/EXPIREAT with
//!   NX/XX/GT/LT, PERSIST, RENAME, COPY ... DB, MOVE, SWAPDB, FLUSHDB, now
//!   and then FLUSHALL), on two connections that SELECT among several dbs,
//!   with MULTI/EXEC (and DISCARD) blocks, some containing SELECT, and two
//!   BGREWRITEAOF and a BGSAVE in the middle (waited for or not; a new job
//!   only starts once no job runs on either server). Each rewrite comes
//!   between two writes of one connection in a db other than 0, the shape
//!   that finds a log forgetting its database when it moves to a new
//!   segment. TTLs set here are long (>= 1000 s), each on a 1000-second slot
//!   of its own drawn at random (far more than the whole test lasts), so
//!   `GT`/`LT` never compare two nearly equal expiry times, or in the past
//!   (the key goes at once);
//! * phase C: keys given tiny TTLs ([`TINY_TTL_MS`], set in milliseconds),
//!   a wait until they all passed, then the same keys changed (INCR on a key
//!   whose TTL passed starts from 0, SADD makes a new set...): the log must
//!   say they were gone (Redis logs a DEL when it expires a key), or the
//!   replay, which expires nothing, revives them;
//! * phase B: keys given short TTLs (1-2 s: `SET EX/PX/EXAT/PXAT`,
//!   `SETEX`, `PSETEX`, `EXPIRE`, `PEXPIRE`, `PEXPIREAT`, `GETEX`), then
//!   changed (INCR, APPEND, SADD, RPUSH, HSET, ZADD...), renamed, moved,
//!   copied or made persistent again (PERSIST, `SET` without KEEPTTL,
//!   `GETEX PERSIST`), in rounds 1 and 2 with a BGREWRITEAOF in between, so
//!   that the TTL is in the rewritten base and the change in the log after
//!   it. These TTLs pass while the servers are down;
//! * stop (kill -9 in rounds 0 and 2, `SHUTDOWN NOSAVE` in round 1; the
//!   last round is killed just after a BGREWRITEAOF started), a [`PAUSE`]
//!   longer than the longest short TTL, restart, keyspace compare.
//!
//! Timing never changes a reply: in phases B and C, no command that sets a
//! TTL (or precedes one) is sent once the first TTL of the phase could have
//! passed; on a machine too slow for that, the rest of those steps is
//! skipped on both servers alike (and a line says so).
//!
//! Reply normalizer: `TTL`/`PTTL`/`EXPIRETIME`/`PEXPIRETIME` are compared as
//! "no key" / "no TTL" / "a TTL"; `HGETALL` as sorted pairs; `SMEMBERS`,
//! `HKEYS`, `HVALS`, `SINTER`, `SUNION`, `SDIFF` as sorted lists; the
//! texts of `BGREWRITEAOF`/`BGSAVE` only as "not an error". Everything else,
//! errors included, must be byte for byte the same. Commands with random
//! replies (SPOP, SRANDMEMBER, RANDOMKEY...) and `DBSIZE` (Redis counts keys
//! whose TTL passed until they are reclaimed) are not generated.
//!
//! A failure prints the seed, the round, the db, the key, both servers'
//! answers and the latest commands that named the key. Knobs:
//! `ANYKV_RESTART_SEED=<u64>` (decimal or 0x-hex) replays a run; without it
//! the seed is random (and printed). `ANYKV_RESTART_TRACE=<file>` writes
//! every command of the random test and both servers' replies there.
//!
//! Two deterministic tests pin the two known bugs this test was written
//! for: [`writes_after_a_rewrite_stay_in_their_db`] and
//! [`replay_after_ttls_passed_keeps_what_redis_keeps`].
//!
//! redis-server (Debian's 7.0.x, `apt-get install redis-server`) is
//! required: without it the tests fail, they never skip.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{anykv_bin, escape, fmt_cmd, redis_server_path, spawn_server, Conn, RespConn};
use common::{ServerProcess, Value};

/// Environment variable that replays a seed.
const SEED_ENV: &str = "ANYKV_RESTART_SEED";
/// Environment variable naming a file that gets every command and both
/// replies of the random test.
const TRACE_ENV: &str = "ANYKV_RESTART_TRACE";
/// Rounds of the random test (each: stream, stop, pause, restart, compare).
const ROUNDS: usize = 3;
/// Steps of phase A per round.
const PHASE_A_STEPS: usize = 500;
/// Key groups given a short TTL in phase B per round.
const PHASE_B_GROUPS: usize = 14;
/// Short TTLs are drawn from this range (milliseconds).
const SHORT_TTL_MS: (i64, i64) = (1000, 2000);
/// Phase B sends nothing once this long has passed since it started, so no
/// short TTL (>= `SHORT_TTL_MS.0`) can pass while commands still run.
const PHASE_B_BUDGET: Duration = Duration::from_millis(700);
/// Key groups given a tiny TTL in phase C per round.
const PHASE_C_GROUPS: usize = 10;
/// Tiny TTLs (phase C: they pass while the servers run).
const TINY_TTL_MS: (i64, i64) = (500, 700);
/// Phase C sends no TTL-setting step once this long has passed since it
/// started (so no tiny TTL passes in the middle of them).
const PHASE_C_BUDGET: Duration = Duration::from_millis(300);
/// After its last TTL-setting step, phase C waits the longest tiny TTL plus
/// this much before it touches the keys again.
const EXPIRY_MARGIN: Duration = Duration::from_millis(200);
/// How long both servers stay down: longer than the longest short TTL.
const PAUSE: Duration = Duration::from_millis(2500);
/// Background saves and rewrites get this long to finish.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// A server asked to `SHUTDOWN` gets this long to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The databases the stream uses (the compare reads all 16); db 0 first.
const DBS: &[u8] = &[0, 1, 2, 3, 7, 15];
/// Client connections per server (plus one more for administration).
const CLIENTS: usize = 2;
const ADMIN: usize = CLIENTS;
/// Both servers run with these persistence settings.
const PERSISTENCE_ARGS: &[&str] = &[
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
];

// ---------------------------------------------------------------------------
// Data directories and the two servers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Redis,
    Anykv,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Anykv => "anykv",
        }
    }
}

/// A server's `--dir`, kept across its restarts; removed on drop unless the
/// test failed (then its path is printed and it is kept for inspection).
struct DataDir {
    path: PathBuf,
}

impl DataDir {
    fn new(test: &str, kind: Kind) -> DataDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let base = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "restartdiff-{test}-{}-{}-{}",
            kind.label(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        DataDir { path }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("data directory kept at {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// How a round ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// SIGKILL: with `appendfsync always`, every acknowledged write survives.
    Kill9,
    /// `SHUTDOWN NOSAVE`: no snapshot, the log as it is.
    ShutdownNosave,
}

/// One server (reference or anykv) with its data directory and connections:
/// `conns[0..CLIENTS]` run the stream, `conns[ADMIN]` waits for jobs and
/// reads the keyspace.
struct Side {
    kind: Kind,
    dir: DataDir,
    proc: Option<ServerProcess>,
    conns: Vec<RespConn>,
}

impl Side {
    fn new(test: &str, kind: Kind) -> Side {
        Side {
            kind,
            dir: DataDir::new(test, kind),
            proc: None,
            conns: Vec::new(),
        }
    }

    /// Starts the server on its directory (loading what is there) and opens
    /// fresh connections (all in db 0).
    fn start(&mut self, note: &str) {
        assert!(self.proc.is_none(), "{} already running", self.kind.label());
        let dir = self.dir.path.clone();
        // spawn_server panics when the server does not come up (e.g. it
        // refuses to load its log): say which seed and round that was.
        let spawn = std::panic::AssertUnwindSafe(|| match self.kind {
            Kind::Redis => {
                let path = redis_server_path();
                spawn_server("redis-server (reference)", &|port| {
                    let mut c = Command::new(&path);
                    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .arg("--dir")
                        .arg(&dir)
                        .args(PERSISTENCE_ARGS);
                    c
                })
            }
            Kind::Anykv => {
                let bin = anykv_bin();
                assert!(bin.exists(), "anykv binary not found at {}", bin.display());
                spawn_server("anykv", &|port| {
                    let mut c = Command::new(&bin);
                    c.args(["server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .arg("--dir")
                        .arg(&dir)
                        .args(PERSISTENCE_ARGS)
                        // A refusal to start ends the log with its error,
                        // not with the error's backtrace (panics keep theirs).
                        .env("RUST_LIB_BACKTRACE", "0");
                    c
                })
            }
        });
        let proc = std::panic::catch_unwind(spawn).unwrap_or_else(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{note}: {msg}")
        });
        self.conns = (0..=CLIENTS).map(|_| proc.connect()).collect();
        self.proc = Some(proc);
    }

    fn describe(&mut self) -> String {
        match self.proc.as_mut() {
            Some(p) => p.describe(),
            None => format!("{} is not running", self.kind.label()),
        }
    }

    /// One command on connection `conn`; a connection error (a crashed or
    /// hung server) fails the test with the server's log.
    #[track_caller]
    fn call(&mut self, conn: usize, args: &[Vec<u8>], note: &str) -> Value {
        match self.conns[conn].call(args) {
            Ok(v) => v,
            Err(e) => {
                let d = self.describe();
                panic!(
                    "{note}: {} connection {conn}: `{}` failed: {e}\n{d}",
                    self.kind.label(),
                    show_cmd(args)
                )
            }
        }
    }

    #[track_caller]
    fn call_str(&mut self, conn: usize, args: &[&str], note: &str) -> Value {
        let a: Vec<Vec<u8>> = args.iter().map(|s| s.as_bytes().to_vec()).collect();
        self.call(conn, &a, note)
    }

    /// `INFO persistence` says no rewrite or save runs or is scheduled.
    fn idle(&mut self, note: &str) -> bool {
        let v = self.call_str(ADMIN, &["INFO", "persistence"], note);
        let Value::Bulk(text) = v else {
            panic!(
                "{note}: {} INFO persistence replied {v:?}",
                self.kind.label()
            );
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        let field = |name: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| {
                    panic!(
                        "{note}: {} INFO persistence has no {name}:\n{text}",
                        self.kind.label()
                    )
                })
                .trim()
                .to_string()
        };
        for f in [
            "aof_rewrite_in_progress",
            "aof_rewrite_scheduled",
            "rdb_bgsave_in_progress",
        ] {
            if field(f) != "0" {
                return false;
            }
        }
        for f in ["aof_last_bgrewrite_status", "rdb_last_bgsave_status"] {
            let s = field(f);
            assert_eq!(
                s,
                "ok",
                "{note}: {} INFO persistence {f}",
                self.kind.label()
            );
        }
        true
    }

    fn stop(&mut self, how: Stop, note: &str) {
        let mut proc = self
            .proc
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.kind.label()));
        self.conns.clear();
        match how {
            // Dropping a ServerProcess kills it with SIGKILL and reaps it.
            Stop::Kill9 => drop(proc),
            Stop::ShutdownNosave => {
                let mut c = proc.connect();
                match c.cmd(&["SHUTDOWN", "NOSAVE"]) {
                    Err(_) => {}
                    Ok(v) => panic!(
                        "{note}: {} SHUTDOWN NOSAVE replied {v:?}\n{}",
                        self.kind.label(),
                        proc.describe()
                    ),
                }
                let deadline = Instant::now() + EXIT_TIMEOUT;
                let status = loop {
                    if let Some(st) = proc.exited() {
                        break st;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{note}: {} still running {EXIT_TIMEOUT:?} after SHUTDOWN NOSAVE\n{}",
                        self.kind.label(),
                        proc.describe()
                    );
                    thread::sleep(Duration::from_millis(10));
                };
                assert!(
                    status.success(),
                    "{note}: {} exited with {status} after SHUTDOWN NOSAVE\n{}",
                    self.kind.label(),
                    proc.describe()
                );
            }
        }
    }
}

/// The reference (`sides[0]`) and anykv (`sides[1]`), driven in lockstep.
struct Pair {
    sides: [Side; 2],
    /// Prefix of every failure message (test name, seed).
    note: String,
    /// Keys the last keyspace compare read, and how many had a TTL on the
    /// reference.
    compared: (usize, usize),
}

impl Pair {
    fn start(test: &str, note: String) -> Pair {
        let mut p = Pair {
            sides: [Side::new(test, Kind::Redis), Side::new(test, Kind::Anykv)],
            note,
            compared: (0, 0),
        };
        for s in &mut p.sides {
            s.start(&p.note);
        }
        p
    }

    /// The same command on both servers' connection `conn`:
    /// [reference reply, anykv reply].
    fn both(&mut self, conn: usize, args: &[Vec<u8>]) -> [Value; 2] {
        let note = self.note.clone();
        let r = self.sides[0].call(conn, args, &note);
        let a = self.sides[1].call(conn, args, &note);
        [r, a]
    }

    /// Sends `args` to both and fails unless both replies are equal.
    #[track_caller]
    fn same(&mut self, conn: usize, args: &[&str]) -> Value {
        let a: Vec<Vec<u8>> = args.iter().map(|s| s.as_bytes().to_vec()).collect();
        let [r, k] = self.both(conn, &a);
        assert_eq!(
            show(&k),
            show(&r),
            "{}: `{}`: anykv (left) replied differently from redis-server (right)",
            self.note,
            fmt_cmd(&a)
        );
        r
    }

    /// Waits until neither server runs or has scheduled a rewrite or save.
    fn wait_idle(&mut self) {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let note = self.note.clone();
        for s in &mut self.sides {
            while !s.idle(&note) {
                if Instant::now() > deadline {
                    let d = s.describe();
                    panic!(
                        "{note}: {} still rewriting/saving after {JOB_TIMEOUT:?}\n{d}",
                        s.kind.label()
                    );
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn stop(&mut self, how: Stop) {
        let note = self.note.clone();
        for s in &mut self.sides {
            s.stop(how, &note);
        }
    }

    fn start_again(&mut self) {
        let note = format!("{}: restart", self.note);
        for s in &mut self.sides {
            s.start(&note);
        }
    }

    /// Compares the two keyspaces (every db 0..15): the sorted `KEYS *`,
    /// then for each key either server lists, type, value and whether a TTL
    /// is set. Returns one entry per difference.
    fn keyspace_diff(&mut self, what: &str) -> Vec<Diff> {
        let note = self.note.clone();
        let mut out = Vec::new();
        self.compared = (0, 0);
        for db in 0..16u8 {
            let sel = vec![b"SELECT".to_vec(), db.to_string().into_bytes()];
            for s in &mut self.sides {
                let v = s.call(ADMIN, &sel, &note);
                assert_eq!(v, ok(), "{note}: {} SELECT {db}", s.kind.label());
            }
            let keys: Vec<BTreeSet<Vec<u8>>> = self
                .sides
                .iter_mut()
                .map(|s| {
                    let v = s.call(ADMIN, &[b"KEYS".to_vec(), b"*".to_vec()], &note);
                    match v {
                        Value::Array(items) => items
                            .into_iter()
                            .map(|i| match i {
                                Value::Bulk(b) => b,
                                other => panic!("{note}: KEYS * item {other:?}"),
                            })
                            .collect(),
                        other => panic!("{note}: {} KEYS * replied {other:?}", s.kind.label()),
                    }
                })
                .collect();
            if keys[0] != keys[1] {
                let only = |a: &BTreeSet<Vec<u8>>, b: &BTreeSet<Vec<u8>>| -> String {
                    let v: Vec<String> = a.difference(b).map(|k| escape(k)).collect();
                    format!("[{}]", v.join(", "))
                };
                out.push(Diff {
                    key: None,
                    text: format!(
                        "{what}: db {db}: KEYS * differs: only on redis-server {}, only on anykv {}",
                        only(&keys[0], &keys[1]),
                        only(&keys[1], &keys[0])
                    ),
                });
            }
            let union: BTreeSet<Vec<u8>> = keys[0].union(&keys[1]).cloned().collect();
            for key in union {
                let r = read_key(&mut self.sides[0], &key, &note);
                let a = read_key(&mut self.sides[1], &key, &note);
                self.compared.0 += 1;
                self.compared.1 += usize::from(r.ttl == "TTL set");
                if r != a {
                    out.push(Diff {
                        text: format!(
                            "{what}: db {db} key {}:\n      redis-server: {r}\n      anykv:        {a}",
                            escape(&key)
                        ),
                        key: Some(key),
                    });
                }
            }
        }
        out
    }
}

/// One keyspace difference: the message, and the key it is about.
struct Diff {
    key: Option<Vec<u8>>,
    text: String,
}

fn texts(diffs: &[Diff]) -> Vec<String> {
    diffs.iter().map(|d| d.text.clone()).collect()
}

/// What the keyspace compare reads of one key.
#[derive(PartialEq, Eq)]
struct KeyView {
    ty: String,
    value: Value,
    ttl: String,
}

impl std::fmt::Display for KeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ty == "none" {
            return write!(f, "(absent)");
        }
        write!(f, "{} {} ({})", self.ty, show(&self.value), self.ttl)
    }
}

/// Type, value and TTL class of `key` in the admin connection's db.
fn read_key(s: &mut Side, key: &[u8], note: &str) -> KeyView {
    let k = key.to_vec();
    let ty = match s.call(ADMIN, &[b"TYPE".to_vec(), k.clone()], note) {
        Value::Simple(t) => String::from_utf8_lossy(&t).into_owned(),
        other => format!("TYPE replied {other:?}"),
    };
    let read: Vec<&[u8]> = match ty.as_str() {
        "none" => {
            return KeyView {
                ty,
                value: Value::Nil,
                ttl: String::new(),
            }
        }
        "string" => vec![b"GET"],
        "list" => vec![b"LRANGE", b"0", b"-1"],
        "hash" => vec![b"HGETALL"],
        "set" => vec![b"SMEMBERS"],
        "zset" => vec![b"ZRANGE", b"0", b"-1", b"WITHSCORES"],
        // Entries, ids, groups, their pending entries and consumers; not
        // the times (idle, delivery) nor how the entries are packed.
        "stream" => vec![b"XINFO", b"STREAM", b"FULL"],
        _ => vec![],
    };
    let value = if read.is_empty() {
        Value::Nil
    } else {
        let args: Vec<Vec<u8>> = if ty == "stream" {
            vec![
                read[0].to_vec(),
                read[1].to_vec(),
                k.clone(),
                read[2].to_vec(),
            ]
        } else {
            let mut a = vec![read[0].to_vec(), k.clone()];
            a.extend(read[1..].iter().map(|a| a.to_vec()));
            a
        };
        let v = s.call(ADMIN, &args, note);
        match ty.as_str() {
            "hash" => normalize(v, Norm::SortedPairs),
            "set" => normalize(v, Norm::Sorted),
            "stream" => common::mask_fields(
                &common::mask_stream_times(&v),
                &["radix-tree-keys", "radix-tree-nodes"],
                &Value::Int(0),
            ),
            _ => v,
        }
    };
    let ttl = match s.call(ADMIN, &[b"PTTL".to_vec(), k], note) {
        Value::Int(-1) => "no TTL".to_string(),
        Value::Int(n) if n > 0 => "TTL set".to_string(),
        other => format!("PTTL {other:?}"),
    };
    KeyView { ty, value, ttl }
}

fn ok() -> Value {
    Value::Simple(b"OK".to_vec())
}

/// A reply for humans, cut after 300 characters.
fn show(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}... ({} characters)", s.chars().count())
    } else {
        s
    }
}

/// A command for humans: at most 12 arguments of at most 40 bytes shown.
fn show_cmd(args: &[Vec<u8>]) -> String {
    let shown: Vec<Vec<u8>> = args
        .iter()
        .take(12)
        .map(|a| {
            if a.len() > 40 {
                let mut s = a[..40].to_vec();
                s.extend_from_slice(format!("...({} bytes)", a.len()).as_bytes());
                s
            } else {
                a.clone()
            }
        })
        .collect();
    let mut out = fmt_cmd(&shown);
    if args.len() > 12 {
        out.push_str(&format!(" ... ({} arguments)", args.len()));
    }
    out
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------
// Commands and the reply normalizer
// ---------------------------------------------------------------------------

/// How a reply is compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Norm {
    /// Byte for byte.
    Exact,
    /// An array compared as a sorted list (SMEMBERS, HKEYS...).
    Sorted,
    /// A flat field/value array compared as sorted pairs (HGETALL).
    SortedPairs,
    /// TTL-like integers: -2, -1, or "set" for any other value.
    TtlClass,
    /// BGREWRITEAOF/BGSAVE: any non-error reply.
    Started,
}

fn normalize(v: Value, n: Norm) -> Value {
    match (n, v) {
        (Norm::Sorted, Value::Array(mut items)) => {
            items.sort();
            Value::Array(items)
        }
        (Norm::SortedPairs, Value::Array(items)) => {
            let mut pairs: Vec<Vec<Value>> = items.chunks(2).map(|c| c.to_vec()).collect();
            pairs.sort();
            Value::Array(pairs.into_iter().flatten().collect())
        }
        (Norm::TtlClass, Value::Int(i)) if i >= 0 => Value::Simple(b"<some TTL>".to_vec()),
        (Norm::Started, v) if !v.is_error() => Value::Simple(b"<started>".to_vec()),
        (_, v) => v,
    }
}

/// An argument; times relative to "now" are resolved when the command is
/// sent (once, the same for both servers).
#[derive(Clone, Debug)]
enum Arg {
    B(Vec<u8>),
    /// Unix time in seconds, now + offset.
    UnixS(i64),
    /// Unix time in milliseconds, now + offset.
    UnixMs(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::B(s.as_bytes().to_vec())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::B(s.into_bytes())
    }
}
impl From<Vec<u8>> for Arg {
    fn from(b: Vec<u8>) -> Arg {
        Arg::B(b)
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(b: &Vec<u8>) -> Arg {
        Arg::B(b.clone())
    }
}
impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::B(i.to_string().into_bytes())
    }
}
impl From<i32> for Arg {
    fn from(i: i32) -> Arg {
        Arg::B(i.to_string().into_bytes())
    }
}
impl From<u8> for Arg {
    fn from(i: u8) -> Arg {
        Arg::B(i.to_string().into_bytes())
    }
}
impl From<usize> for Arg {
    fn from(i: usize) -> Arg {
        Arg::B(i.to_string().into_bytes())
    }
}

#[derive(Clone, Debug)]
struct Cmd {
    args: Vec<Arg>,
    norm: Norm,
}

impl Cmd {
    fn new(args: Vec<Arg>) -> Cmd {
        let name = match &args[0] {
            Arg::B(b) => String::from_utf8_lossy(b).to_ascii_uppercase(),
            _ => String::new(),
        };
        let norm = match name.as_str() {
            "TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME" => Norm::TtlClass,
            "SMEMBERS" | "HKEYS" | "HVALS" | "SINTER" | "SUNION" | "SDIFF" | "KEYS" => Norm::Sorted,
            "HGETALL" => Norm::SortedPairs,
            "BGREWRITEAOF" | "BGSAVE" => Norm::Started,
            _ => Norm::Exact,
        };
        Cmd { args, norm }
    }

    fn resolve(&self, now_ms: i64) -> Vec<Vec<u8>> {
        self.args
            .iter()
            .map(|a| match a {
                Arg::B(b) => b.clone(),
                Arg::UnixS(off) => (now_ms / 1000 + off).to_string().into_bytes(),
                Arg::UnixMs(off) => (now_ms + off).to_string().into_bytes(),
            })
            .collect()
    }
}

/// `c!["SET", key, value, "EX", 100]`
macro_rules! c {
    ($($a:expr),+ $(,)?) => { Cmd::new(vec![$(Arg::from($a)),+]) };
}

/// One step of a stream.
#[derive(Clone, Debug)]
enum Step {
    One {
        client: usize,
        cmd: Cmd,
    },
    /// MULTI, the commands (each must be QUEUED), then EXEC (or DISCARD).
    Multi {
        client: usize,
        cmds: Vec<Cmd>,
        discard: bool,
    },
    /// Waits until no job runs on either server, starts a rewrite on both,
    /// and (when `wait`) waits for it to finish.
    BgRewrite {
        wait: bool,
    },
    /// Same with BGSAVE.
    BgSave {
        wait: bool,
    },
    /// Phase C: sleeps until the longest tiny TTL has passed since the
    /// last command sent (plus [`EXPIRY_MARGIN`]).
    SleepPastTtls,
}

// ---------------------------------------------------------------------------
// The random generator
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// lo..=hi
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Str,
    List,
    Hash,
    Set,
    Zset,
    Stream,
}

const STR_KEYS: &[&str] = &["s0", "s1", "s2", "s3", "s4", "s5"];
const LIST_KEYS: &[&str] = &["l0", "l1", "l2", "l3"];
const HASH_KEYS: &[&str] = &["h0", "h1", "h2", "h3"];
const SET_KEYS: &[&str] = &["t0", "t1", "t2", "t3"];
const ZSET_KEYS: &[&str] = &["z0", "z1", "z2", "z3"];
const STREAM_KEYS: &[&str] = &["x0", "x1", "x2"];
/// Keys any type may land on (WRONGTYPE errors, RENAME across types).
const MIXED_KEYS: &[&str] = &["k0", "k1", "k2"];
const ELEMS: &[&str] = &["a", "b", "c", "d", "1", "2", "10", ""];
const FIELDS: &[&str] = &["f0", "f1", "f2", "f3", "f4", "n"];
const SCORES: &[&str] = &["0", "1", "2.5", "-3", "10", "1e3", "0.1", "-inf", "+inf"];

struct Gen {
    rng: Rng,
    /// The 1000-second slots long TTLs took (see the module docs).
    slots: std::collections::HashSet<i64>,
    /// The db each client connection is in (the generator's own view, to
    /// emit SELECT before phase B groups).
    client_db: [u8; CLIENTS],
    /// Phase C: TTLs are tiny and set in milliseconds only.
    tiny: bool,
    /// The millisecond part of the last stream id made: ids are explicit
    /// (the same on both servers) and grow.
    stream_ms: i64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng(seed),
            slots: std::collections::HashSet::new(),
            client_db: [0; CLIENTS],
            tiny: false,
            stream_ms: 0,
        }
    }

    fn key(&mut self, ty: Ty) -> Vec<u8> {
        let pool = if self.rng.chance(12) {
            MIXED_KEYS
        } else {
            match ty {
                Ty::Str => STR_KEYS,
                Ty::List => LIST_KEYS,
                Ty::Hash => HASH_KEYS,
                Ty::Set => SET_KEYS,
                Ty::Zset => ZSET_KEYS,
                Ty::Stream => STREAM_KEYS,
            }
        };
        self.rng.pick(pool).as_bytes().to_vec()
    }

    fn any_key(&mut self) -> Vec<u8> {
        let ty = self
            .rng
            .pick(&[Ty::Str, Ty::List, Ty::Hash, Ty::Set, Ty::Zset, Ty::Stream]);
        self.key(ty)
    }

    fn val(&mut self) -> Vec<u8> {
        match self.rng.below(20) {
            0..=5 => self
                .rng
                .pick(&["a", "b", "hello", "", "x y z", "\u{fc}mlaut"])
                .as_bytes()
                .to_vec(),
            6..=10 => self.rng.int(-100, 1000).to_string().into_bytes(),
            11 => self
                .rng
                .pick(&["3.5", "-0.25", "1e3", "007"])
                .as_bytes()
                .to_vec(),
            12 => b"\x00\xff\r\n*1\r\n".to_vec(),
            13 => {
                let n = self.rng.int(200, 3000) as usize;
                let c = b'a' + self.rng.below(26) as u8;
                vec![c; n]
            }
            _ => {
                let n = self.rng.int(1, 12) as usize;
                (0..n).map(|_| b'a' + self.rng.below(26) as u8).collect()
            }
        }
    }

    fn elem(&mut self) -> Vec<u8> {
        if self.rng.chance(10) {
            self.val()
        } else {
            self.rng.pick(ELEMS).as_bytes().to_vec()
        }
    }

    fn field(&mut self) -> Vec<u8> {
        if self.rng.chance(8) {
            self.val()
        } else {
            self.rng.pick(FIELDS).as_bytes().to_vec()
        }
    }

    fn score(&mut self) -> &'static str {
        self.rng.pick(SCORES)
    }

    fn db(&mut self) -> u8 {
        self.rng.pick(DBS)
    }

    /// A long relative TTL in seconds, on a slot no other TTL took.
    fn long_s(&mut self) -> i64 {
        loop {
            let slot = self.rng.int(1, 20_000);
            if self.slots.insert(slot) {
                return 1000 * slot;
            }
        }
    }

    fn short_ms(&mut self) -> i64 {
        if self.tiny {
            self.rng.int(TINY_TTL_MS.0, TINY_TTL_MS.1)
        } else {
            self.rng.int(SHORT_TTL_MS.0, SHORT_TTL_MS.1)
        }
    }

    fn short_s(&mut self) -> i64 {
        self.rng.int(SHORT_TTL_MS.0 / 1000, SHORT_TTL_MS.1 / 1000)
    }

    /// SET's expiry option: none, a long one, or KEEPTTL.
    fn set_expiry_long(&mut self, args: &mut Vec<Arg>) {
        match self.rng.below(8) {
            0 => args.extend([Arg::from("EX"), Arg::from(self.long_s())]),
            1 => args.extend([Arg::from("PX"), Arg::from(self.long_s() * 1000)]),
            2 => args.extend([Arg::from("EXAT"), Arg::UnixS(self.long_s())]),
            3 => args.extend([Arg::from("PXAT"), Arg::UnixMs(self.long_s() * 1000)]),
            4 => args.push("KEEPTTL".into()),
            _ => {}
        }
    }

    // ---- phase A: one random command of each kind ----

    fn cmd(&mut self) -> Cmd {
        match self.rng.below(100) {
            0..=29 => self.g_string(),
            30..=44 => self.g_list(),
            45..=59 => self.g_hash(),
            60..=71 => self.g_set(),
            72..=84 => self.g_zset(),
            85..=91 => self.g_bits_hll_geo(),
            92..=95 => self.g_stream(),
            _ => self.g_generic(),
        }
    }

    /// Streams with consumer groups: entries added (explicit, growing
    /// ids), deleted and trimmed, groups made and reset, entries read by
    /// consumers, acknowledged and claimed, so the log replays reads as
    /// Redis logs them.
    fn g_stream(&mut self) -> Cmd {
        let k = self.key(Ty::Stream);
        let group = self.rng.pick(&["g1", "g2"]);
        let old_id = |g: &mut Self| format!("{}-0", g.rng.int(1, g.stream_ms.max(1)));
        match self.rng.below(20) {
            0..=3 => {
                self.stream_ms += 1;
                let id = format!("{}-{}", self.stream_ms, self.rng.int(0, 2));
                c!["XADD", k, id, "f", self.val()]
            }
            14 => {
                // A trim by id as it adds, approximate with LIMIT.
                self.stream_ms += 1;
                let id = format!("{}-0", self.stream_ms);
                let min = old_id(self);
                c![
                    "XADD",
                    k,
                    "MINID",
                    "~",
                    min,
                    "LIMIT",
                    self.rng.int(0, 20),
                    id,
                    "f",
                    "v"
                ]
            }
            15 => c!["XTRIM", k, "MINID", old_id(self)],
            16 => c![
                "XAUTOCLAIM",
                k,
                group,
                self.rng.pick(&["c1", "c3"]),
                "0",
                "0-0",
                "COUNT",
                self.rng.int(1, 4)
            ],
            17 => {
                // The last id moves ahead (and the counters with it);
                // later XADDs stay above it.
                self.stream_ms += 5;
                let id = format!("{}-0", self.stream_ms);
                c![
                    "XSETID",
                    k,
                    id,
                    "ENTRIESADDED",
                    self.rng.int(50, 60),
                    "MAXDELETEDID",
                    "1-0"
                ]
            }
            18 => c![
                "XGROUP",
                "CREATECONSUMER",
                k,
                group,
                self.rng.pick(&["c4", "c5"])
            ],
            19 => c![
                "XREADGROUP",
                "GROUP",
                group,
                "c2",
                "NOACK",
                "COUNT",
                2,
                "STREAMS",
                k,
                ">"
            ],
            4 => {
                self.stream_ms += 1;
                let id = format!("{}-0", self.stream_ms);
                c!["XADD", k, "MAXLEN", "=", self.rng.int(2, 8), id, "f", "v"]
            }
            5 => c!["XDEL", k, old_id(self)],
            6 => c!["XTRIM", k, "MAXLEN", self.rng.int(0, 10)],
            7 => c![
                "XGROUP",
                "CREATE",
                k,
                group,
                self.rng.pick(&["$", "0"]),
                "MKSTREAM"
            ],
            8 | 9 => {
                let consumer = self.rng.pick(&["c1", "c2"]);
                let n = self.rng.int(1, 3);
                c![
                    "XREADGROUP",
                    "GROUP",
                    group,
                    consumer,
                    "COUNT",
                    n,
                    "STREAMS",
                    k,
                    ">"
                ]
            }
            10 => c!["XACK", k, group, old_id(self)],
            11 => c!["XCLAIM", k, group, "c3", "0", old_id(self)],
            12 => c!["XGROUP", "SETID", k, group, self.rng.pick(&["0", "$"])],
            _ => c!["XGROUP", "DELCONSUMER", k, group, "c1"],
        }
    }

    /// Bitmaps and HyperLogLogs (strings) and geo sets (sorted sets).
    fn g_bits_hll_geo(&mut self) -> Cmd {
        match self.rng.below(13) {
            12 => {
                let (d, k) = (self.key(Ty::Zset), self.key(Ty::Zset));
                c![
                    "GEORADIUS",
                    k,
                    "10",
                    "10",
                    "3000",
                    "km",
                    "COUNT",
                    5,
                    "ASC",
                    "STORE",
                    d
                ]
            }
            0 | 1 => {
                let k = self.key(Ty::Str);
                c!["SETBIT", k, self.rng.int(0, 400), self.rng.int(0, 1)]
            }
            2 => {
                let k = self.key(Ty::Str);
                let ty = self.rng.pick(&["u8", "i16", "u4", "i64"]);
                c![
                    "BITFIELD",
                    k,
                    "OVERFLOW",
                    self.rng.pick(&["WRAP", "SAT", "FAIL"]),
                    "INCRBY",
                    ty,
                    format!("#{}", self.rng.int(0, 5)),
                    self.rng.int(-300, 300)
                ]
            }
            3 => {
                let (d, a, b) = (self.key(Ty::Str), self.key(Ty::Str), self.key(Ty::Str));
                c!["BITOP", self.rng.pick(&["AND", "OR", "XOR"]), d, a, b]
            }
            4..=6 => {
                let k = self.key(Ty::Str);
                let mut a: Vec<Arg> = vec!["PFADD".into(), k.into()];
                let n = if self.rng.chance(5) { 600 } else { 3 };
                let base = self.rng.int(0, 100_000);
                for i in base..base + n {
                    a.push(format!("e{i}").into());
                }
                Cmd::new(a)
            }
            7 => c!["PFCOUNT", self.key(Ty::Str)],
            8 => {
                let (d, a) = (self.key(Ty::Str), self.key(Ty::Str));
                c!["PFMERGE", d, a]
            }
            9 | 10 => {
                let k = self.key(Ty::Zset);
                c![
                    "GEOADD",
                    k,
                    format!("{:.5}", self.rng.int(-17_900_000, 17_900_000) as f64 / 1e5),
                    format!("{:.5}", self.rng.int(-8_400_000, 8_400_000) as f64 / 1e5),
                    format!("m{}", self.rng.int(0, 20))
                ]
            }
            _ => {
                let (d, k) = (self.key(Ty::Zset), self.key(Ty::Zset));
                c![
                    "GEOSEARCHSTORE",
                    d,
                    k,
                    "FROMLONLAT",
                    "0",
                    "0",
                    "BYRADIUS",
                    "20000",
                    "km",
                    "ASC",
                    "STOREDIST"
                ]
            }
        }
    }

    fn g_string(&mut self) -> Cmd {
        let k = self.key(Ty::Str);
        match self.rng.below(32) {
            0..=4 => {
                let v = if self.rng.chance(40) {
                    self.rng.int(-50, 500).to_string().into_bytes()
                } else {
                    self.val()
                };
                let mut a: Vec<Arg> = vec!["SET".into(), k.into(), v.into()];
                self.set_expiry_long(&mut a);
                match self.rng.below(6) {
                    0 => a.push("NX".into()),
                    1 => a.push("XX".into()),
                    _ => {}
                }
                if self.rng.chance(20) {
                    a.push("GET".into());
                }
                Cmd::new(a)
            }
            5 => c!["SETNX", k, self.val()],
            6 => c!["SETEX", k, self.long_s(), self.val()],
            7 => c!["PSETEX", k, self.long_s() * 1000, self.val()],
            8 => c!["GET", k],
            9 => c!["GETSET", k, self.val()],
            10 => c!["GETDEL", k],
            11 => match self.rng.below(6) {
                0 => c!["GETEX", k, "EX", self.long_s()],
                1 => c!["GETEX", k, "PX", self.long_s() * 1000],
                2 => c!["GETEX", k, "PERSIST"],
                3 => Cmd::new(vec![
                    "GETEX".into(),
                    k.into(),
                    "EXAT".into(),
                    Arg::UnixS(self.long_s()),
                ]),
                // An absolute time in the past deletes the key at once.
                4 => Cmd::new(vec![
                    "GETEX".into(),
                    k.into(),
                    "PXAT".into(),
                    Arg::UnixMs(-5000),
                ]),
                _ => c!["GETEX", k],
            },
            12 => {
                let k2 = self.key(Ty::Str);
                c!["MSET", k, self.val(), k2, self.val()]
            }
            13 => {
                let k2 = self.key(Ty::Str);
                c!["MSETNX", k, self.val(), k2, self.val()]
            }
            14 | 15 => c!["APPEND", k, self.val()],
            16 => c!["STRLEN", k],
            17 => c!["GETRANGE", k, self.rng.int(-5, 5), self.rng.int(-3, 20)],
            18 | 19 => c!["SETRANGE", k, self.rng.int(0, 24), self.val()],
            20..=22 => c!["INCR", k],
            23 => c!["DECR", k],
            24 => c!["INCRBY", k, self.rng.int(-1000, 1000)],
            25 => c!["DECRBY", k, self.rng.int(-10, 10)],
            26 => c![
                "INCRBYFLOAT",
                k,
                self.rng.pick(&["1.5", "-0.25", "3e2", "0.1", "10"])
            ],
            27 => {
                let (k2, k3) = (self.key(Ty::Str), self.key(Ty::Str));
                c!["MGET", k, k2, k3]
            }
            28 => c!["SET", k, self.rng.int(0, 100)],
            29 => c!["SET", k, self.val(), "KEEPTTL"],
            30 => c!["SET", k, "x", "EX", "0"],
            _ => c!["SUBSTR", k, 0, self.rng.int(0, 5)],
        }
    }

    fn g_list(&mut self) -> Cmd {
        let k = self.key(Ty::List);
        let dir = |g: &mut Gen| g.rng.pick(&["LEFT", "RIGHT"]);
        match self.rng.below(26) {
            0..=2 => {
                let mut a: Vec<Arg> = vec![self.rng.pick(&["LPUSH", "RPUSH"]).into(), k.into()];
                for _ in 0..self.rng.int(1, 3) {
                    a.push(self.elem().into());
                }
                Cmd::new(a)
            }
            3 => c!["LPUSHX", k, self.elem()],
            4 => c!["RPUSHX", k, self.elem()],
            5 => c!["LPOP", k],
            6 => c!["RPOP", k, self.rng.int(0, 3)],
            7 | 8 => c!["LRANGE", k, self.rng.int(-4, 2), self.rng.int(-2, 5)],
            9 => c!["LINDEX", k, self.rng.int(-3, 3)],
            10 => c!["LSET", k, self.rng.int(-2, 2), self.elem()],
            11 => c![
                "LINSERT",
                k,
                self.rng.pick(&["BEFORE", "AFTER"]),
                self.elem(),
                self.elem()
            ],
            12 => c!["LREM", k, self.rng.int(-2, 2), self.elem()],
            13 => c!["LTRIM", k, self.rng.int(0, 2), self.rng.int(-3, 6)],
            14 => {
                let k2 = self.key(Ty::List);
                let (d1, d2) = (dir(self), dir(self));
                c!["LMOVE", k, k2, d1, d2]
            }
            15 => {
                let k2 = self.key(Ty::List);
                c!["RPOPLPUSH", k, k2]
            }
            16 | 17 => c!["LLEN", k],
            18 => c![
                "LPOS",
                k,
                self.elem(),
                "RANK",
                self.rng.pick(&[1, -1, 2]),
                "COUNT",
                0
            ],
            19 => {
                let k2 = self.key(Ty::List);
                let d = dir(self);
                c!["LMPOP", 2, k, k2, d, "COUNT", self.rng.int(1, 3)]
            }
            20 => {
                // Past the listpack limits: encoding conversions.
                let mut a: Vec<Arg> = vec!["RPUSH".into(), k.into()];
                for i in 0..self.rng.int(60, 140) {
                    a.push(format!("e{i}").into());
                }
                Cmd::new(a)
            }
            21 => c!["RPUSH", k, self.val()],
            _ => c!["LRANGE", k, 0, -1],
        }
    }

    fn g_hash(&mut self) -> Cmd {
        let k = self.key(Ty::Hash);
        match self.rng.below(24) {
            0..=3 => {
                let mut a: Vec<Arg> = vec![self.rng.pick(&["HSET", "HMSET"]).into(), k.into()];
                for _ in 0..self.rng.int(1, 3) {
                    a.push(self.field().into());
                    a.push(self.val().into());
                }
                Cmd::new(a)
            }
            4 => c!["HSETNX", k, self.field(), self.val()],
            5 | 6 => c!["HDEL", k, self.field(), self.field()],
            7 => c!["HGET", k, self.field()],
            8 => c!["HMGET", k, self.field(), self.field()],
            9 | 10 => c![
                "HINCRBY",
                k,
                self.rng.pick(&["n", "f0"]),
                self.rng.int(-5, 50)
            ],
            11 => c![
                "HINCRBYFLOAT",
                k,
                self.rng.pick(&["n", "f1"]),
                self.rng.pick(&["0.5", "-1.25", "1e2"])
            ],
            12 | 13 => c!["HGETALL", k],
            14 => c!["HKEYS", k],
            15 => c!["HVALS", k],
            16 => c!["HLEN", k],
            17 => c!["HEXISTS", k, self.field()],
            18 => c!["HSTRLEN", k, self.field()],
            19 => {
                let mut a: Vec<Arg> = vec!["HSET".into(), k.into()];
                for i in 0..self.rng.int(60, 140) {
                    a.push(format!("field{i}").into());
                    a.push(i.to_string().into());
                }
                Cmd::new(a)
            }
            20 => c!["HSET", k, self.field(), self.val()],
            _ => c!["HGET", k, "n"],
        }
    }

    fn g_set(&mut self) -> Cmd {
        let k = self.key(Ty::Set);
        match self.rng.below(24) {
            0..=3 => {
                let mut a: Vec<Arg> = vec!["SADD".into(), k.into()];
                for _ in 0..self.rng.int(1, 4) {
                    a.push(self.elem().into());
                }
                Cmd::new(a)
            }
            4 | 5 => c!["SREM", k, self.elem(), self.elem()],
            6 | 7 => c!["SMEMBERS", k],
            8 => c!["SISMEMBER", k, self.elem()],
            9 => c!["SMISMEMBER", k, self.elem(), self.elem()],
            10 => c!["SCARD", k],
            11 => {
                let k2 = self.key(Ty::Set);
                c!["SMOVE", k, k2, self.elem()]
            }
            12 | 13 => {
                let (k2, k3) = (self.key(Ty::Set), self.key(Ty::Set));
                let op = self.rng.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]);
                c![op, k, k2, k3]
            }
            14 | 15 => {
                let k2 = self.key(Ty::Set);
                c![self.rng.pick(&["SINTER", "SUNION", "SDIFF"]), k, k2]
            }
            16 => {
                let k2 = self.key(Ty::Set);
                c!["SINTERCARD", 2, k, k2]
            }
            17 => {
                // Integers only (an intset), past its limit now and then.
                let mut a: Vec<Arg> = vec!["SADD".into(), k.into()];
                let n = self.rng.pick(&[20, 600]);
                for i in 0..n {
                    a.push((i * 3).to_string().into());
                }
                Cmd::new(a)
            }
            18 => {
                let mut a: Vec<Arg> = vec!["SADD".into(), k.into()];
                for i in 0..self.rng.int(60, 140) {
                    a.push(format!("m{i}").into());
                }
                Cmd::new(a)
            }
            _ => c!["SADD", k, self.val()],
        }
    }

    fn g_zset(&mut self) -> Cmd {
        let k = self.key(Ty::Zset);
        match self.rng.below(28) {
            0..=3 => {
                let mut a: Vec<Arg> = vec!["ZADD".into(), k.into()];
                match self.rng.below(8) {
                    0 => a.push("NX".into()),
                    1 => a.push("XX".into()),
                    2 => a.push("GT".into()),
                    3 => a.push("LT".into()),
                    _ => {}
                }
                if self.rng.chance(20) {
                    a.push("CH".into());
                }
                let incr = self.rng.chance(10);
                if incr {
                    a.push("INCR".into());
                }
                let pairs = if incr { 1 } else { self.rng.int(1, 3) };
                for _ in 0..pairs {
                    a.push(self.score().into());
                    a.push(self.elem().into());
                }
                Cmd::new(a)
            }
            4 => c!["ZINCRBY", k, self.score(), self.elem()],
            5 | 6 => c!["ZREM", k, self.elem(), self.elem()],
            7 => c!["ZCARD", k],
            8 => c!["ZSCORE", k, self.elem()],
            9 => c!["ZMSCORE", k, self.elem(), self.elem()],
            10 | 11 => c!["ZRANGE", k, 0, -1, "WITHSCORES"],
            12 => c!["ZREVRANGE", k, self.rng.int(0, 2), self.rng.int(-2, 4)],
            13 => c![
                "ZRANGEBYSCORE",
                k,
                "-inf",
                self.rng.pick(&["+inf", "(2.5", "1"]),
                "WITHSCORES"
            ],
            14 => c![self.rng.pick(&["ZRANK", "ZREVRANK"]), k, self.elem()],
            15 => c![
                self.rng.pick(&["ZPOPMIN", "ZPOPMAX"]),
                k,
                self.rng.int(1, 2)
            ],
            16 => c!["ZREMRANGEBYRANK", k, 0, self.rng.int(0, 2)],
            17 => c![
                "ZREMRANGEBYSCORE",
                k,
                self.rng.pick(&["-inf", "0", "(1"]),
                self.rng.pick(&["1", "2.5", "+inf"])
            ],
            18 => c!["ZCOUNT", k, "-inf", self.rng.pick(&["+inf", "2.5"])],
            19 | 20 => {
                let (k2, k3) = (self.key(Ty::Zset), self.key(Ty::Zset));
                let op = self.rng.pick(&["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"]);
                if op != "ZDIFFSTORE" && self.rng.chance(50) {
                    c![
                        op,
                        k,
                        2,
                        k2,
                        k3,
                        "WEIGHTS",
                        2,
                        1,
                        "AGGREGATE",
                        self.rng.pick(&["SUM", "MIN", "MAX"])
                    ]
                } else {
                    c![op, k, 2, k2, k3]
                }
            }
            21 => {
                let k2 = self.key(Ty::Zset);
                c!["ZRANGESTORE", k, k2, 0, self.rng.int(-1, 3)]
            }
            22 => c!["ZMPOP", 1, k, self.rng.pick(&["MIN", "MAX"]), "COUNT", 2],
            23 => {
                let mut a: Vec<Arg> = vec!["ZADD".into(), k.into()];
                for i in 0..self.rng.int(60, 140) {
                    a.push(i.to_string().into());
                    a.push(format!("m{i}").into());
                }
                Cmd::new(a)
            }
            _ => c!["ZADD", k, self.score(), self.val()],
        }
    }

    fn g_generic(&mut self) -> Cmd {
        let k = self.any_key();
        match self.rng.below(40) {
            0..=2 => c!["DEL", k, self.any_key()],
            3 => c!["UNLINK", k],
            4 | 5 => c!["EXISTS", k, self.any_key()],
            6 | 7 => c!["TYPE", k],
            8..=10 => {
                let mut a: Vec<Arg> = vec!["EXPIRE".into(), k.into(), self.long_s().into()];
                if self.rng.chance(40) {
                    a.push(self.rng.pick(&["NX", "XX", "GT", "LT"]).into());
                }
                Cmd::new(a)
            }
            11 | 12 => {
                let mut a: Vec<Arg> =
                    vec!["PEXPIRE".into(), k.into(), (self.long_s() * 1000).into()];
                if self.rng.chance(40) {
                    a.push(self.rng.pick(&["NX", "XX", "GT", "LT"]).into());
                }
                Cmd::new(a)
            }
            13 => Cmd::new(vec!["EXPIREAT".into(), k.into(), Arg::UnixS(self.long_s())]),
            14 => Cmd::new(vec![
                "PEXPIREAT".into(),
                k.into(),
                Arg::UnixMs(self.long_s() * 1000),
            ]),
            // In the past: the key goes at once.
            15 => c!["EXPIRE", k, self.rng.pick(&[-1, 0])],
            16 => Cmd::new(vec!["PEXPIREAT".into(), k.into(), Arg::UnixMs(-10_000)]),
            17..=20 => c!["PERSIST", k],
            21 | 22 => c!["PTTL", k],
            23 => c!["TTL", k],
            24 => c!["EXPIRETIME", k],
            25 | 26 => c!["RENAME", k, self.any_key()],
            27 => c!["RENAMENX", k, self.any_key()],
            28 | 29 => {
                let mut a: Vec<Arg> = vec!["COPY".into(), k.into(), self.any_key().into()];
                if self.rng.chance(50) {
                    a.push("DB".into());
                    a.push(self.db().into());
                }
                if self.rng.chance(50) {
                    a.push("REPLACE".into());
                }
                Cmd::new(a)
            }
            30 | 31 => c!["MOVE", k, self.db()],
            32 => c!["TOUCH", k],
            33 => c!["SWAPDB", self.db(), self.db()],
            34 => c![if self.rng.chance(90) {
                "FLUSHDB"
            } else {
                "FLUSHALL"
            }],
            35 => c!["SELECT", 16],
            36 => c!["KEYS", "*"],
            _ => c!["EXISTS", k],
        }
    }

    fn select(&mut self, client: usize, db: u8) -> Step {
        self.client_db[client] = db;
        Step::One {
            client,
            cmd: c!["SELECT", db],
        }
    }

    /// A MULTI block of 1-4 random commands, sometimes with a SELECT.
    fn multi(&mut self, client: usize) -> Step {
        let mut cmds = Vec::new();
        let discard = self.rng.chance(15);
        let mut db = self.client_db[client];
        for _ in 0..self.rng.int(1, 4) {
            if self.rng.chance(15) {
                db = self.db();
                cmds.push(c!["SELECT", db]);
            }
            cmds.push(self.cmd());
        }
        if !discard {
            self.client_db[client] = db;
        }
        Step::Multi {
            client,
            cmds,
            discard,
        }
    }

    /// Phase A of a round (the connections are fresh, in db 0).
    fn phase_a(&mut self, n: usize) -> Vec<Step> {
        self.client_db = [0; CLIENTS];
        let mut steps = Vec::new();
        for client in 0..CLIENTS {
            let db = self.db();
            steps.push(self.select(client, db));
        }
        let third = n as u64 / 3;
        let rewrite1 = third + self.rng.below(third) / 2;
        let rewrite2 = 2 * third + self.rng.below(third) / 2;
        let bgsave = self.rng.below(n as u64);
        for i in 0..n as u64 {
            if i == rewrite1 || i == rewrite2 {
                // A write, the rewrite, and a write on the same connection
                // (the shape that finds a log forgetting its database
                // across the switch to a new segment).
                let client = self.rng.below(CLIENTS as u64) as usize;
                if self.client_db[client] == 0 {
                    let db = self.rng.pick(&DBS[1..]);
                    steps.push(self.select(client, db));
                }
                let cmd = self.write_cmd();
                steps.push(Step::One { client, cmd });
                let wait = i == rewrite1 || self.rng.chance(50);
                steps.push(Step::BgRewrite { wait });
                let cmd = self.write_cmd();
                steps.push(Step::One { client, cmd });
            }
            if i == bgsave {
                steps.push(Step::BgSave {
                    wait: self.rng.chance(50),
                });
            }
            let client = if self.rng.chance(70) { 0 } else { 1 };
            if self.rng.chance(6) {
                let db = self.db();
                steps.push(self.select(client, db));
            }
            if self.rng.chance(6) {
                steps.push(self.multi(client));
            } else {
                let cmd = self.cmd();
                steps.push(Step::One { client, cmd });
            }
        }
        steps
    }

    /// A write that creates or changes a key whatever is there (except a
    /// WRONGTYPE on a mixed key).
    fn write_cmd(&mut self) -> Cmd {
        match self.rng.below(5) {
            0 => c!["SET", self.key(Ty::Str), self.val()],
            1 => c!["RPUSH", self.key(Ty::List), self.elem()],
            2 => c!["HSET", self.key(Ty::Hash), self.field(), self.val()],
            3 => c!["SADD", self.key(Ty::Set), self.elem()],
            _ => c!["ZADD", self.key(Ty::Zset), self.score(), self.elem()],
        }
    }

    // ---- phase B: short TTLs, then changes ----

    /// A command giving `k` (of any type) a short TTL.
    fn short_expire(&mut self, k: &[u8]) -> Cmd {
        let k = k.to_vec();
        // Tiny TTLs: the variants in milliseconds only.
        let pick = if self.tiny {
            self.rng.pick(&[1, 2, 4])
        } else {
            self.rng.below(6)
        };
        match pick {
            0 => c!["EXPIRE", k, self.short_s()],
            1 => c!["PEXPIRE", k, self.short_ms()],
            2 => Cmd::new(vec![
                "PEXPIREAT".into(),
                k.into(),
                Arg::UnixMs(self.short_ms()),
            ]),
            // Now + 2 s rounded down to the second: 1-2 s from now.
            3 => Cmd::new(vec!["EXPIREAT".into(), k.into(), Arg::UnixS(2)]),
            4 => c!["PEXPIRE", k, self.short_ms(), "NX"],
            _ => c!["EXPIRE", k, self.short_s(), "XX"],
        }
    }

    /// `SET k v` with a short TTL.
    fn short_set(&mut self, k: &[u8], v: Vec<u8>) -> Cmd {
        let k = k.to_vec();
        let pick = if self.tiny {
            self.rng.pick(&[1, 2, 5])
        } else {
            self.rng.below(6)
        };
        match pick {
            0 => c!["SET", k, v, "EX", self.short_s()],
            1 => c!["SET", k, v, "PX", self.short_ms()],
            2 => Cmd::new(vec![
                "SET".into(),
                k.into(),
                v.into(),
                "PXAT".into(),
                Arg::UnixMs(self.short_ms()),
            ]),
            3 => Cmd::new(vec![
                "SET".into(),
                k.into(),
                v.into(),
                "EXAT".into(),
                Arg::UnixS(2),
            ]),
            4 => c!["SETEX", k, self.short_s(), v],
            _ => c!["PSETEX", k, self.short_ms(), v],
        }
    }

    /// One key group: commands that set a short TTL, and commands that
    /// change the key afterwards.
    fn short_group(&mut self) -> (Vec<Step>, Vec<Step>) {
        let client = self.rng.below(CLIENTS as u64) as usize;
        let one = |cmd: Cmd| Step::One { client, cmd };
        let int = || -> Vec<u8> { b"5".to_vec() };
        let mut set = Vec::new();
        let mut later = Vec::new();
        match self.rng.below(20) {
            // The reported shapes: SET EX, PERSIST; SET EX, PERSIST, INCR;
            // SET EX, INCR; SADD, EXPIRE, SADD.
            0 => {
                let k = self.key(Ty::Str);
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                later.push(one(c!["PERSIST", k]));
            }
            1 => {
                let k = self.key(Ty::Str);
                set.push(one(self.short_set(&k, int())));
                set.push(one(c!["PERSIST", k.clone()]));
                later.push(one(c!["INCR", k]));
            }
            2 => {
                let k = self.key(Ty::Str);
                set.push(one(self.short_set(&k, int())));
                later.push(one(c![self.rng.pick(&["INCR", "DECR"]), k.clone()]));
                if self.rng.chance(30) {
                    later.push(one(c!["INCRBY", k, 7]));
                }
            }
            3 => {
                let k = self.key(Ty::Set);
                set.push(one(c!["SADD", k.clone(), "a", "b"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["SADD", k.clone(), "c"]));
                if self.rng.chance(30) {
                    later.push(one(c!["PERSIST", k]));
                }
            }
            4 => {
                let k = self.key(Ty::List);
                set.push(one(c!["RPUSH", k.clone(), "a", "b"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["RPUSH", k.clone(), "c"]));
                later.push(one(c![self.rng.pick(&["LPOP", "PERSIST", "LLEN"]), k]));
            }
            5 => {
                let k = self.key(Ty::Hash);
                set.push(one(c!["HSET", k.clone(), "f", "1"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(match self.rng.below(4) {
                    0 => c!["HSET", k, "g", "2"],
                    1 => c!["HINCRBY", k, "f", 3],
                    2 => c!["HINCRBYFLOAT", k, "f", "0.5"],
                    _ => c!["PERSIST", k],
                }));
            }
            6 => {
                let k = self.key(Ty::Zset);
                set.push(one(c!["ZADD", k.clone(), 1, "a", 2, "b"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(match self.rng.below(3) {
                    0 => c!["ZINCRBY", k, 2, "a"],
                    1 => c!["ZADD", k, 5, "c"],
                    _ => c!["PERSIST", k],
                }));
            }
            7 => {
                let k = self.key(Ty::Str);
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                later.push(one(match self.rng.below(3) {
                    0 => c!["APPEND", k, "xy"],
                    1 => c!["SETRANGE", k, 2, "zz"],
                    _ => c!["SET", k, "kept", "KEEPTTL"],
                }));
            }
            // A key from phase A (any type, maybe absent) gets a short TTL.
            8 => {
                let k = self.any_key();
                set.push(one(self.short_expire(&k)));
                if self.rng.chance(40) {
                    later.push(one(c!["PERSIST", k]));
                }
            }
            9 => {
                let k = self.key(Ty::Str);
                let arg = if self.tiny || self.rng.chance(50) {
                    c!["GETEX", k.clone(), "PX", self.short_ms()]
                } else {
                    c!["GETEX", k.clone(), "EX", self.short_s()]
                };
                set.push(one(arg));
                later.push(one(match self.rng.below(3) {
                    0 => c!["GETEX", k, "PERSIST"],
                    1 => c!["SET", k, "v", "KEEPTTL"],
                    _ => c!["GET", k],
                }));
            }
            // The TTL travels with the key.
            10 => {
                let k = self.key(Ty::Str);
                let k2 = self.any_key();
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                later.push(one(c!["RENAME", k, k2.clone()]));
                if self.rng.chance(40) {
                    later.push(one(c!["PERSIST", k2]));
                }
            }
            11 => {
                let k = self.key(Ty::Str);
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                if self.rng.chance(50) {
                    later.push(one(c!["MOVE", k, self.db()]));
                } else {
                    let k2 = self.any_key();
                    later.push(one(c!["COPY", k, k2, "DB", self.db(), "REPLACE"]));
                }
            }
            // Overwriting drops the TTL.
            12 => {
                let k = self.key(Ty::Str);
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                later.push(one(c!["SET", k, self.val()]));
            }
            13 => {
                let k = self.key(Ty::Str);
                set.push(one(self.short_set(&k, int())));
                later.push(Step::Multi {
                    client,
                    cmds: vec![c!["INCR", k.clone()], c!["PERSIST", k]],
                    discard: false,
                });
            }
            14 => {
                let k = self.key(Ty::Str);
                set.push(one(self.short_set(&k, int())));
                later.push(one(c!["INCRBYFLOAT", k, "1.5"]));
            }
            15 => {
                let k = self.key(Ty::List);
                let k2 = self.key(Ty::List);
                set.push(one(c!["LPUSH", k.clone(), "x", "y"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["LMOVE", k, k2, "LEFT", "RIGHT"]));
            }
            16 => {
                let k = self.key(Ty::Zset);
                let k2 = self.key(Ty::Zset);
                set.push(one(c!["ZADD", k.clone(), 3, "q"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["ZUNIONSTORE", k2, 1, k]));
            }
            17 => {
                let k = self.key(Ty::Str);
                let v = self.val();
                set.push(one(self.short_set(&k, v)));
                later.push(one(c!["GETDEL", k]));
            }
            18 => {
                let k = self.key(Ty::Set);
                let k2 = self.key(Ty::Set);
                set.push(one(c!["SADD", k.clone(), "1", "2", "3"]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["SMOVE", k.clone(), k2, "1"]));
                later.push(one(c!["SADD", k, "9"]));
            }
            _ => {
                let k = self.key(Ty::Str);
                set.push(one(self.short_set(&k, int())));
                set.push(one(c!["PERSIST", k.clone()]));
                set.push(one(self.short_expire(&k)));
                later.push(one(c!["INCR", k]));
            }
        }
        (set, later)
    }

    /// Phase B: every group's TTL-setting commands, maybe a rewrite (so the
    /// TTLs are in the new base), then every group's changes.
    fn phase_b(&mut self, groups: usize, rewrite: bool) -> Vec<Step> {
        let middle = if rewrite {
            vec![Step::BgRewrite { wait: true }]
        } else {
            Vec::new()
        };
        self.ttl_phase(groups, middle)
    }

    /// Phase C: every group's TTL-setting commands with tiny TTLs, a pause
    /// until they all passed, then every group's changes (on keys that are
    /// logically gone but may still be in memory).
    fn phase_c(&mut self, groups: usize) -> Vec<Step> {
        self.tiny = true;
        let steps = self.ttl_phase(groups, vec![Step::SleepPastTtls]);
        self.tiny = false;
        steps
    }

    fn ttl_phase(&mut self, groups: usize, middle: Vec<Step>) -> Vec<Step> {
        let mut sets: Vec<(u8, Vec<Step>)> = Vec::new();
        let mut laters: Vec<(u8, Vec<Step>)> = Vec::new();
        for _ in 0..groups {
            let db = self.db();
            let (s, l) = self.short_group();
            sets.push((db, s));
            laters.push((db, l));
        }
        let mut steps = Vec::new();
        let mut emit = |g: &mut Gen, db: u8, group: Vec<Step>| {
            for step in group {
                if let Step::One { client, .. } | Step::Multi { client, .. } = &step {
                    if g.client_db[*client] != db {
                        steps.push(g.select(*client, db));
                    }
                }
                steps.push(step);
            }
        };
        for (db, s) in sets {
            emit(self, db, s);
        }
        emit(self, 0, middle);
        for (db, l) in laters {
            emit(self, db, l);
        }
        steps
    }
}

// ---------------------------------------------------------------------------
// Running a stream on both servers
// ---------------------------------------------------------------------------

/// A command the random test sent, and where.
struct Sent {
    round: usize,
    step: usize,
    client: usize,
    db: u8,
    args: Vec<Vec<u8>>,
}

/// Drives a [`Pair`] through steps, recording reply differences (with the
/// seed, round, db, key and both replies) and a log of what was sent.
struct Runner {
    pair: Pair,
    seed: u64,
    round: usize,
    /// The db each client connection is in (from the replies to SELECT).
    cur_db: [u8; CLIENTS],
    mismatches: Vec<String>,
    /// Every command sent.
    history: Vec<Sent>,
    /// `ANYKV_RESTART_TRACE`: every command and both replies go there.
    trace: Option<fs::File>,
    /// When the last command was sent (to both servers).
    last_sent: Instant,
}

impl Runner {
    fn compare(
        &mut self,
        step: usize,
        client: usize,
        args: &[Vec<u8>],
        norm: Norm,
        got: [Value; 2],
    ) {
        let [r, a] = got.map(|v| normalize(v, norm));
        if let Some(t) = self.trace.as_mut() {
            let _ = writeln!(
                t,
                "round {} step {step} client {client} db {}: {}\n    redis-server: {}\n    anykv:        {}",
                self.round,
                self.cur_db[client],
                show_cmd(args),
                show(&r),
                show(&a)
            );
        }
        if r != a {
            let key = args.get(1).map(|k| escape(k)).unwrap_or_else(|| "-".into());
            self.mismatches.push(format!(
                "seed {} round {} step {step} client {client} db {} key {key}: `{}`\n      redis-server: {}\n      anykv:        {}",
                self.seed,
                self.round,
                self.cur_db[client],
                show_cmd(args),
                show(&r),
                show(&a)
            ));
        }
    }

    fn track_select(&mut self, client: usize, args: &[Vec<u8>], reply: &Value) {
        if args[0].eq_ignore_ascii_case(b"SELECT") && *reply == ok() {
            self.cur_db[client] = String::from_utf8_lossy(&args[1]).parse().unwrap();
        }
    }

    fn log(&mut self, step: usize, client: usize, args: &[Vec<u8>]) {
        let db = self.cur_db[client];
        self.history.push(Sent {
            round: self.round,
            step,
            client,
            db,
            args: args.to_vec(),
        });
    }

    fn bg(&mut self, step: usize, name: &str, wait: bool) {
        self.pair.wait_idle();
        let args = vec![name.as_bytes().to_vec()];
        self.log(step, 0, &args);
        let got = self.pair.both(ADMIN, &args);
        self.compare(step, 0, &args, Norm::Started, got);
        if wait {
            self.pair.wait_idle();
        }
    }

    /// Runs a TTL phase: the steps before a [`Step::SleepPastTtls`] (all of
    /// them when there is none) are sent only while less than `budget` has
    /// passed since the phase started; those left are skipped on both
    /// servers (so no TTL the phase set can pass between two of them).
    fn run_ttl_phase(
        &mut self,
        name: &str,
        first: usize,
        steps: &[Step],
        budget: Duration,
    ) -> usize {
        let start = Instant::now();
        let mut timed = true;
        let mut skipped = 0;
        for (i, step) in steps.iter().enumerate() {
            if matches!(step, Step::SleepPastTtls) {
                timed = false;
            } else if timed && start.elapsed() > budget {
                skipped += 1;
                continue;
            }
            self.run(first + i, step);
        }
        if skipped > 0 {
            eprintln!(
                "round {}: {name}: {skipped} of {} steps skipped on both servers (the machine \
                 was too slow to send them before the first TTL could pass)",
                self.round,
                steps.len()
            );
        }
        skipped
    }

    fn run(&mut self, index: usize, step: &Step) {
        match step {
            Step::One { client, cmd } => {
                let args = cmd.resolve(unix_ms());
                self.log(index, *client, &args);
                let got = self.pair.both(*client, &args);
                self.track_select(*client, &args, &got[0]);
                self.compare(index, *client, &args, cmd.norm, got);
                self.last_sent = Instant::now();
            }
            Step::Multi {
                client,
                cmds,
                discard,
            } => {
                let c = *client;
                let multi = vec![b"MULTI".to_vec()];
                self.log(index, c, &multi);
                let got = self.pair.both(c, &multi);
                self.compare(index, c, &multi, Norm::Exact, got);
                let now = unix_ms();
                let resolved: Vec<Vec<Vec<u8>>> = cmds.iter().map(|c| c.resolve(now)).collect();
                for args in &resolved {
                    self.log(index, c, args);
                    let got = self.pair.both(c, args);
                    self.compare(index, c, args, Norm::Exact, got);
                }
                let end = vec![if *discard {
                    b"DISCARD".to_vec()
                } else {
                    b"EXEC".to_vec()
                }];
                self.log(index, c, &end);
                let [r, a] = self.pair.both(c, &end);
                match (&r, &a) {
                    (Value::Array(rs), Value::Array(as_))
                        if rs.len() == as_.len() && rs.len() == cmds.len() =>
                    {
                        for (j, ((rv, av), cmd)) in rs.iter().zip(as_).zip(cmds).enumerate() {
                            self.track_select(c, &resolved[j], rv);
                            let args = &resolved[j];
                            self.compare(index, c, args, cmd.norm, [rv.clone(), av.clone()]);
                        }
                    }
                    _ => self.compare(index, c, &end, Norm::Exact, [r, a]),
                }
                self.last_sent = Instant::now();
            }
            Step::BgRewrite { wait } => self.bg(index, "BGREWRITEAOF", *wait),
            Step::BgSave { wait } => self.bg(index, "BGSAVE", *wait),
            Step::SleepPastTtls => {
                let until =
                    self.last_sent + Duration::from_millis(TINY_TTL_MS.1 as u64) + EXPIRY_MARGIN;
                thread::sleep(until.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// The logged commands that named `key` (as any argument), newest last.
    fn history_of(&self, key: &[u8], max: usize) -> String {
        let hits: Vec<String> = self
            .history
            .iter()
            .filter(|s| s.args.iter().skip(1).any(|a| a == key))
            .map(|s| {
                format!(
                    "        round {} step {} client {} db {}: {}",
                    s.round,
                    s.step,
                    s.client,
                    s.db,
                    show_cmd(&s.args)
                )
            })
            .collect();
        let start = hits.len().saturating_sub(max);
        hits[start..].join("\n")
    }
}

fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            };
            parsed.unwrap_or_else(|| {
                panic!("{SEED_ENV} must be a u64 (decimal or 0x-hex), got {s:?}")
            })
        }
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let mut r = Rng(t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32));
            r.next()
        }
    }
}

/// At most `max` lines of `items`, then how many were left out.
fn capped(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    if items.len() > max {
        s.push_str(&format!("\n  ... and {} more", items.len() - max));
    }
    s
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Seeded random workloads over every data type, with TTLs, several dbs,
/// MULTI/EXEC, BGREWRITEAOF and BGSAVE, run on redis-server and anykv with
/// `appendfsync always`; every reply compared; then stop (kill -9 or
/// SHUTDOWN NOSAVE), a pause that lets the short TTLs pass, restart, and
/// the keyspaces (every db, key, type, value, TTL or not) must be the same.
/// Proves that what anykv's log brings back after a crash or a shutdown is
/// what Redis's brings back, whichever database a write ran in and whether
/// or not the TTLs the log recorded have passed by the time it is replayed.
#[test]
fn random_workloads_survive_restarts_like_redis() {
    let seed = seed_from_env();
    eprintln!("restart differential: seed={seed} (replay with {SEED_ENV}={seed})");
    let note = format!("seed {seed} ({SEED_ENV}={seed})");
    let started = Instant::now();
    let mut gen = Gen::new(seed);
    let mut run = Runner {
        pair: Pair::start("random", note.clone()),
        seed,
        round: 0,
        cur_db: [0; CLIENTS],
        mismatches: Vec::new(),
        history: Vec::new(),
        trace: std::env::var_os(TRACE_ENV).map(|p| {
            fs::File::create(&p).unwrap_or_else(|e| panic!("{TRACE_ENV}: create {p:?}: {e}"))
        }),
        last_sent: Instant::now(),
    };
    // The TTL phases may skip steps on a machine too slow to send them in
    // time; the test must still have tested them: at least one round runs
    // both whole, and keys with a TTL are compared after restarts.
    let mut whole_ttl_rounds = 0;
    let mut ttl_keys_compared = 0;
    for round in 0..ROUNDS {
        run.round = round;
        run.cur_db = [0; CLIENTS];
        run.pair.note = format!("{note} round {round}");
        let how = if round % 2 == 0 {
            Stop::Kill9
        } else {
            Stop::ShutdownNosave
        };
        let t0 = Instant::now();

        // Phase A: long TTLs only, background jobs in the middle.
        let a = gen.phase_a(PHASE_A_STEPS);
        for (i, step) in a.iter().enumerate() {
            run.run(i, step);
        }
        run.pair.wait_idle();
        let a_time = t0.elapsed();

        // Phase C: tiny TTLs that pass while the servers run, then the
        // keys are touched again (logically gone, maybe still in memory).
        let c = gen.phase_c(PHASE_C_GROUPS);
        let c_start = Instant::now();
        let c_skipped = run.run_ttl_phase("phase C", a.len(), &c, PHASE_C_BUDGET);
        let c_time = c_start.elapsed();

        // Phase B: short TTLs that pass while the servers are down.
        let b = gen.phase_b(PHASE_B_GROUPS, round != 0);
        let b_start = Instant::now();
        let b_skipped = run.run_ttl_phase("phase B", a.len() + c.len(), &b, PHASE_B_BUDGET);
        whole_ttl_rounds += usize::from(c_skipped == 0 && b_skipped == 0);
        let b_time = b_start.elapsed();

        // The last round is killed just after a rewrite started: the log
        // files as they are then must still hold every acknowledged write.
        let last = a.len() + c.len() + b.len();
        if how == Stop::Kill9 && round == ROUNDS - 1 {
            run.run(last, &Step::BgRewrite { wait: false });
        }
        run.pair.stop(how);
        thread::sleep(PAUSE);
        run.pair.start_again();
        let diffs = run.pair.keyspace_diff(&format!(
            "seed {seed} round {round} after {how:?} and restart"
        ));
        eprintln!(
            "round {round}: {} + {} + {} steps (phase A {a_time:.1?}, C {c_time:.1?}, \
             B {b_time:.1?}), {} reply differences, stopped with {how:?}, {} keys ({} with a \
             TTL) compared after the restart, {} differences",
            a.len(),
            c.len(),
            b.len(),
            run.mismatches.len(),
            run.pair.compared.0,
            run.pair.compared.1,
            diffs.len()
        );
        ttl_keys_compared += run.pair.compared.1;
        if !run.mismatches.is_empty() || !diffs.is_empty() {
            let with_history: Vec<String> = diffs
                .iter()
                .map(|d| match &d.key {
                    Some(k) => format!(
                        "{}\n      the latest commands that named it:\n{}",
                        d.text,
                        run.history_of(k, 12)
                    ),
                    None => d.text.clone(),
                })
                .collect();
            panic!(
                "restart differential failed: seed {seed} (replay with {SEED_ENV}={seed}), round {round}, \
                 stopped with {how:?}\n\
                 reply differences while the stream ran ({}):\n{}\n\
                 keyspace differences after the restart ({}; any reply difference above may explain some):\n{}",
                run.mismatches.len(),
                capped(&run.mismatches, 25),
                with_history.len(),
                capped(&with_history, 40)
            );
        }
    }
    assert!(
        whole_ttl_rounds >= 1,
        "seed {seed}: no round ran its TTL phases whole (the machine was too slow): TTLs across restarts went untested"
    );
    assert!(
        ttl_keys_compared > 0,
        "seed {seed}: no key with a TTL was compared after a restart"
    );
    eprintln!(
        "restart differential: seed={seed}, {ROUNDS} rounds passed in {:.1?}",
        started.elapsed()
    );
}

/// Bug 1, exactly as reported: one connection does `SELECT 3`, `SET b1 1`,
/// `BGREWRITEAOF` (waited for), `SET b2 2`; after a kill -9 and a restart,
/// Redis has both keys in db 3 and nothing in db 0. Proves that the first
/// write after a rewrite is logged with the database it ran in (the log
/// written after the rewrite starts with no database selected).
#[test]
fn writes_after_a_rewrite_stay_in_their_db() {
    let mut p = Pair::start("bug1", "bug 1 (writes after BGREWRITEAOF)".into());
    p.same(0, &["SELECT", "3"]);
    p.same(0, &["SET", "b1", "1"]);
    p.wait_idle();
    let [r, a] = p.both(0, &[b"BGREWRITEAOF".to_vec()]);
    assert!(
        !r.is_error() && !a.is_error(),
        "BGREWRITEAOF: redis-server {r:?}, anykv {a:?}"
    );
    p.wait_idle();
    p.same(0, &["SET", "b2", "2"]);
    p.stop(Stop::Kill9);
    p.start_again();
    // What the reference has (the premise of the test).
    p.same(ADMIN, &["SELECT", "3"]);
    let r = read_key(&mut p.sides[0], b"b2", "bug 1");
    assert_eq!(
        r.to_string(),
        "string \"2\" (no TTL)",
        "redis-server: db 3 key b2"
    );
    let diffs =
        p.keyspace_diff("bug 1: SELECT 3, SET b1 1, BGREWRITEAOF, SET b2 2, kill -9, restart");
    assert!(
        diffs.is_empty(),
        "anykv restored a different keyspace than redis-server:\n{}",
        capped(&texts(&diffs), 20)
    );
}

/// Bug 2, exactly as reported: with `appendfsync always`, `SET k v EX 2`,
/// `PERSIST k`, `SET c 5 EX 2`, `PERSIST c`, `INCR c`, and the reverse,
/// `SET e 5 EX 2`, `INCR e` (the TTL stays) and `SADD s a b`, `EXPIRE s 2`,
/// `SADD s c`; kill -9, restart 3 s later. Redis has k=v and c=6 without a
/// TTL, and neither e nor s. Proves that replaying the log after the TTLs it
/// recorded have passed gives the keyspace the commands built (a key made
/// persistent survives, a key whose TTL stayed is gone), not one where the
/// replay dropped keys early or kept them alive.
#[test]
fn replay_after_ttls_passed_keeps_what_redis_keeps() {
    let mut p = Pair::start("bug2", "bug 2 (replay after TTLs passed)".into());
    let t0 = Instant::now();
    for cmd in [
        &["SET", "k", "v", "EX", "2"][..],
        &["PERSIST", "k"],
        &["SET", "c", "5", "EX", "2"],
        &["PERSIST", "c"],
        &["INCR", "c"],
        &["SET", "e", "5", "EX", "2"],
        &["INCR", "e"],
        &["SADD", "s", "a", "b"],
        &["EXPIRE", "s", "2"],
        &["SADD", "s", "c"],
    ] {
        p.same(0, cmd);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "the commands took {:?}: the TTLs may have passed meanwhile",
        t0.elapsed()
    );
    p.stop(Stop::Kill9);
    thread::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));
    p.start_again();
    // What the reference has (the premise of the test).
    let want = [
        ("k", "string \"v\" (no TTL)"),
        ("c", "string \"6\" (no TTL)"),
        ("e", "(absent)"),
        ("s", "(absent)"),
    ];
    for (key, view) in want {
        let r = read_key(&mut p.sides[0], key.as_bytes(), "bug 2");
        assert_eq!(r.to_string(), view, "redis-server: db 0 key {key}");
    }
    let diffs = p.keyspace_diff("bug 2: after kill -9 and a restart 3 s later");
    assert!(
        diffs.is_empty(),
        "anykv restored a different keyspace than redis-server:\n{}",
        capped(&texts(&diffs), 20)
    );
}
