//! Persistence end to end: snapshots (SAVE, BGSAVE, save rules, DEBUG
//! RELOAD, SHUTDOWN modes), the append-only log under each fsync policy
//! with the server killed with SIGKILL, torn tails, corruption and
//! `--repair`, and BGREWRITEAOF.
//!
//! Every test runs the real `anykv` binary as a child process in its own
//! scratch directory under the system temp dir, on its own free port, with
//! stdout/stderr captured to a log file there (printed on failure, and the
//! directory kept). The same directory is reused across restarts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, port_owned_by, resp_str, Conn, Raw, RespConn, Value};

/// How long a start (including loading a few hundred thousand keys in a
/// debug build on a loaded machine) may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a server that must refuse to start gets to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Background saves and rewrites get this long to finish.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Scratch directories and server processes
// ---------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop unless the
/// test failed (then its path is printed and it is kept for inspection).
struct TestDir {
    path: PathBuf,
    starts: AtomicUsize,
}

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "anykv-persistence-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestDir {
            path,
            starts: AtomicUsize::new(0),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn aof_dir(&self) -> PathBuf {
        self.path.join("appendonlydir")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test directory kept at {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// One run of `anykv server` in a [`TestDir`]. Killed (SIGKILL) and reaped
/// on drop; when the test is failing, the end of its log is printed.
struct Anykv {
    child: Child,
    port: u16,
    log: PathBuf,
    cmdline: String,
}

impl Anykv {
    /// Spawns the server without waiting for it.
    fn spawn(dir: &TestDir, extra: &[&str]) -> Anykv {
        Anykv::spawn_env(dir, extra, &[])
    }

    /// [`Anykv::spawn`] with extra environment variables (the fsync shim's).
    fn spawn_env(dir: &TestDir, extra: &[&str], env: &[(&str, String)]) -> Anykv {
        let port = free_port();
        let n = dir.starts.fetch_add(1, Ordering::Relaxed);
        let log = dir.file(&format!("server-{n}.log"));
        let out = File::create(&log).expect("create server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anykv"));
        cmd.args(["server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir.path)
            .args(["--enable-debug-command", "yes"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(out));
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        Anykv {
            child,
            port,
            log,
            cmdline,
        }
    }

    /// Spawns the server and waits until it answers PING (retrying on
    /// another port if the one picked was taken meanwhile).
    fn start(dir: &TestDir, extra: &[&str]) -> Anykv {
        Anykv::start_env(dir, extra, &[])
    }

    /// [`Anykv::start`] with extra environment variables.
    fn start_env(dir: &TestDir, extra: &[&str], env: &[(&str, String)]) -> Anykv {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut s = Anykv::spawn_env(dir, extra, env);
            match s.wait_ready() {
                Ok(()) => return s,
                Err(e) => {
                    let log = s.log_text();
                    last = format!("{e}\n{}", s.describe());
                    let port_clash = log.contains("in use") || e.contains("another process");
                    if !port_clash {
                        break;
                    }
                }
            }
        }
        panic!("anykv did not start:\n{last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(st) = self.child.try_wait().ok().flatten() {
                return Err(format!("exited during startup with {st}"));
            }
            match RespConn::connect(self.port).and_then(|mut c| c.cmd(&["PING"])) {
                Ok(Value::Simple(s)) if s == b"PONG" => {
                    if port_owned_by(self.child.id(), self.port) == Some(false) {
                        return Err(format!(
                            "port {} answered PING from another process",
                            self.port
                        ));
                    }
                    return Ok(());
                }
                Ok(other) => last = format!("PING replied {other:?}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}: {last}"));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn conn(&self) -> RespConn {
        RespConn::connect(self.port)
            .unwrap_or_else(|e| panic!("connect to anykv on port {}: {e}", self.port))
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "`{}` (log {}), last lines:\n{tail}",
            self.cmdline,
            self.log.display()
        )
    }

    /// SIGKILL (`kill -9`) and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "anykv still running {timeout:?} after it should have exited\n{}",
                self.describe()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SHUTDOWN [mode]`: no reply, the connection closes, the process
    /// exits with status 0.
    fn shutdown(&mut self, mode: Option<&str>) {
        let mut c = self.conn();
        let mut args = vec!["SHUTDOWN"];
        args.extend(mode);
        match c.cmd(&args) {
            Err(_) => {}
            Ok(v) => panic!("{args:?} replied {v:?}\n{}", self.describe()),
        }
        let st = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            st.success(),
            "{args:?}: exit status {st}\n{}",
            self.describe()
        );
    }
}

impl Drop for Anykv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- anykv {}", self.describe());
        }
    }
}

/// Starts a server that must refuse to start: it exits non-zero (never
/// serving a PING), without a panic. Returns its log.
fn start_must_fail(dir: &TestDir, extra: &[&str]) -> String {
    let mut s = Anykv::spawn(dir, extra);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(st) = s.child.try_wait().expect("try_wait") {
            break st;
        }
        if let Ok(Value::Simple(p)) = RespConn::connect(s.port).and_then(|mut c| c.cmd(&["PING"])) {
            if p == b"PONG" && port_owned_by(s.child.id(), s.port) != Some(false) {
                panic!("anykv started although it must refuse to\n{}", s.describe());
            }
        }
        assert!(
            Instant::now() < deadline,
            "anykv neither started nor exited within {EXIT_TIMEOUT:?}\n{}",
            s.describe()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let log = s.log_text();
    assert!(
        !status.success(),
        "anykv exited with {status}, expected a failure\n{}",
        s.describe()
    );
    assert!(
        !log.contains("panicked"),
        "anykv panicked instead of refusing cleanly\n{}",
        s.describe()
    );
    // The error, without a backtrace RUST_BACKTRACE may have added.
    let before_trace = log.split("Stack backtrace:").next().unwrap_or_default();
    let last: Vec<&str> = before_trace
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    eprintln!(
        "refused to start ({status}) as expected: {}",
        last[last.len().saturating_sub(2)..].join(" | ")
    );
    log
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

#[track_caller]
fn call<S: AsRef<str>>(c: &mut RespConn, args: &[S]) -> Value {
    let a: Vec<Vec<u8>> = args
        .iter()
        .map(|s| s.as_ref().as_bytes().to_vec())
        .collect();
    c.call(&a).unwrap_or_else(|e| {
        let shown: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        panic!("{shown:?}: {e}")
    })
}

#[track_caller]
fn ok<S: AsRef<str>>(c: &mut RespConn, args: &[S]) {
    let v = call(c, args);
    if v != Value::Simple(b"OK".to_vec()) {
        let shown: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        panic!("{shown:?} replied {v:?}, expected +OK");
    }
}

#[track_caller]
fn int<S: AsRef<str>>(c: &mut RespConn, args: &[S]) -> i64 {
    let v = call(c, args);
    v.as_int().unwrap_or_else(|| {
        let shown: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        panic!("{shown:?} replied {v:?}, expected an integer")
    })
}

/// A simple-string or bulk reply as text.
#[track_caller]
fn text<S: AsRef<str>>(c: &mut RespConn, args: &[S]) -> String {
    match call(c, args) {
        Value::Simple(s) | Value::Bulk(s) => String::from_utf8_lossy(&s).into_owned(),
        v => {
            let shown: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
            panic!("{shown:?} replied {v:?}, expected a string")
        }
    }
}

#[track_caller]
fn digest(c: &mut RespConn) -> String {
    let d = text(c, &["DEBUG", "DIGEST"]);
    assert!(
        d.len() == 40 && d.bytes().all(|b| b.is_ascii_hexdigit()),
        "DEBUG DIGEST replied {d:?}"
    );
    d
}

const EMPTY_DIGEST: &str = "0000000000000000000000000000000000000000";

/// `INFO <section>` as field -> value.
#[track_caller]
fn info(c: &mut RespConn, section: &str) -> HashMap<String, String> {
    text(c, &["INFO", section])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[track_caller]
fn info_field(c: &mut RespConn, field: &str) -> String {
    info(c, "persistence")
        .remove(field)
        .unwrap_or_else(|| panic!("INFO persistence has no {field}"))
}

/// Polls INFO persistence until `done` accepts it.
#[track_caller]
fn wait_info(
    c: &mut RespConn,
    what: &str,
    mut done: impl FnMut(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let i = info(c, "persistence");
        if done(&i) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {JOB_TIMEOUT:?} waiting for {what}; INFO persistence: {i:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn field<'a>(i: &'a HashMap<String, String>, k: &str) -> &'a str {
    i.get(k).map(|s| s.as_str()).unwrap_or("<missing>")
}

/// Sends `cmds` in one write and reads one single-line reply per command
/// (`+...`, `-...` or `:...`), returned without the CRLF.
fn pipeline_lines(port: u16, cmds: &[Vec<String>]) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let mut out = Vec::new();
    for cmd in cmds {
        let args: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        out.extend_from_slice(&resp_str(&args));
    }
    raw.send(&out);
    (0..cmds.len())
        .map(|_| {
            let line = raw.read_until(b"\r\n");
            String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
        })
        .collect()
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// SplitMix64: a small deterministic generator (seeded per test).
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

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

// ---------------------------------------------------------------------------
// Append-only files
// ---------------------------------------------------------------------------

/// The manifest's lines as (name, seq, type).
fn manifest(dir: &TestDir) -> Vec<(String, u64, String)> {
    let path = dir.aof_dir().join("appendonly.aof.manifest");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(
                f.len() == 6 && f[0] == "file" && f[2] == "seq" && f[4] == "type",
                "bad manifest line {l:?} in {text:?}"
            );
            (
                f[1].to_string(),
                f[3].parse().expect("manifest seq"),
                f[5].to_string(),
            )
        })
        .collect()
}

/// The last log segment the manifest lists.
fn last_segment(dir: &TestDir) -> PathBuf {
    let m = manifest(dir);
    let (name, _, _) = m
        .iter()
        .rev()
        .find(|(_, _, t)| t == "i")
        .unwrap_or_else(|| panic!("no incr file in the manifest {m:?}"));
    dir.aof_dir().join(name)
}

/// The frames of a segment: (file offset of the frame header, payload).
fn frames(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    assert!(
        bytes.len() >= 8 && &bytes[..8] == b"AKAOF001",
        "segment does not start with AKAOF001"
    );
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        assert!(pos + 8 <= bytes.len(), "frame header cut at {pos}");
        let n = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(pos + 8 + n <= bytes.len(), "frame at {pos} cut short");
        out.push((pos, bytes[pos + 8..pos + 8 + n].to_vec()));
        pos += 8 + n;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len()
}

/// Names in the append-only directory (sorted).
fn aof_dir_listing(dir: &TestDir) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.aof_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// What fsync made durable: an LD_PRELOAD shim
// ---------------------------------------------------------------------------
//
// kill -9 cannot tell "fsynced" from "written": the kernel's page cache
// outlives the process, so a server that never fsyncs passes every kill -9
// test. `tests/fsync_shim/fsync_shim.c`, preloaded into the server, logs
// every fsync/fdatasync that succeeded with the file's path and the size it
// had when the call started (what is certainly durable once it returns);
// the tests compare that with what the server acknowledged.

/// Builds the fsync shim into `dir` with `cc` and returns the shared
/// object's path. A missing compiler fails the test: gcc is on every
/// machine CI uses, and skipping would hide exactly what these tests check.
fn build_fsync_shim(dir: &TestDir) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fsync_shim/fsync_shim.c");
    let so = dir.file("libfsync_shim.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `cc` to build the fsync shim {} ({e}); the durability tests need a \
                 C compiler (apt-get install gcc)",
                src.display()
            )
        });
    assert!(
        out.status.success(),
        "cc failed to build {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// The environment that runs a server under the shim `so`, logging to
/// `log`, plus the shim's own settings in `extra` (`ANYKV_FSYNC_SHIM_MODE`,
/// `ANYKV_FSYNC_SHIM_DELAY_MS`, `ANYKV_FSYNC_SHIM_DELAY_PATH`: see the
/// shim's source).
fn shim_env(so: &Path, log: &Path, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LD_PRELOAD", so.display().to_string()),
        ("ANYKV_FSYNC_SHIM_LOG", log.display().to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// One successful sync call the shim logged.
#[derive(Debug)]
struct SyncRecord {
    /// How long the call took (including any delay the shim added).
    took: Duration,
    /// When it started (ns since the Unix epoch).
    start: u64,
    /// `fsync`, `fdatasync` or `sync_file_range`.
    call: String,
    /// The file's size when the call started (for `sync_file_range`, the
    /// end of the range).
    size: u64,
    path: PathBuf,
}

/// The shim's log, in the order the calls returned (empty if none yet).
fn sync_records(log: &Path) -> Vec<SyncRecord> {
    let text = match fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", log.display()),
    };
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            let ns = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            let (Some(end), Some(start), true) = (ns(0), ns(1), f.len() == 5) else {
                panic!("bad shim log line {l:?}");
            };
            SyncRecord {
                took: Duration::from_nanos(end.saturating_sub(start)),
                start,
                call: f[2].to_string(),
                size: f[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad size in shim log line {l:?}")),
                path: PathBuf::from(f[4]),
            }
        })
        .collect()
}

/// The fsync and fdatasync calls on `file` (`sync_file_range` does not
/// count: it flushes neither metadata nor the device's cache).
fn syncs_of<'a>(records: &'a [SyncRecord], file: &Path) -> impl Iterator<Item = &'a SyncRecord> {
    let file = fs::canonicalize(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    records
        .iter()
        .filter(move |r| (r.call == "fsync" || r.call == "fdatasync") && r.path == file)
}

/// How long an fsync or fdatasync of `file` that began but had not
/// returned by `at` (ns since the epoch) had been running then (zero if
/// none: the disk was not stuck in one).
fn unfinished_sync(records: &[SyncRecord], file: &Path, at: u64) -> Duration {
    let file = fs::canonicalize(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let done: std::collections::HashSet<u64> = syncs_of(records, &file).map(|r| r.start).collect();
    records
        .iter()
        .filter(|r| r.path == file && r.call.starts_with("begin-") && !done.contains(&r.start))
        .map(|r| Duration::from_nanos(at.saturating_sub(r.start)))
        .max()
        .unwrap_or_default()
}

/// How many bytes of `file` an fsync or fdatasync made durable: the
/// largest size such a call on it started with.
fn durable_size(records: &[SyncRecord], file: &Path) -> u64 {
    syncs_of(records, file).map(|r| r.size).max().unwrap_or(0)
}

/// The check of [`aof_always_fsyncs_before_replying`], run right after the
/// reply to `SET <key> ...` arrived: the frame of segment `seg` holding
/// that SET must end within the bytes an fsync/fdatasync of `seg` had
/// covered by then, per the shim's `log`. Returns that frame's end, or what
/// is wrong.
fn check_write_durable(seg: &Path, log: &Path, key: &str) -> Result<u64, String> {
    // Read the log first: anything it says was durable before the reply is
    // in it now, and the segment only grows.
    let records = sync_records(log);
    let bytes = fs::read(seg).unwrap_or_else(|e| panic!("read {}: {e}", seg.display()));
    let needle = format!("${}\r\n{key}\r\n", key.len());
    // Whole frames only: another client's frame may be half written.
    let mut end = None;
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + n > bytes.len() {
            break;
        }
        if contains(&bytes[pos + 8..pos + 8 + n], needle.as_bytes()) {
            end = Some((pos + 8 + n) as u64);
        }
        pos += 8 + n;
    }
    let Some(end) = end else {
        return Err(format!(
            "SET {key} was acknowledged but is in no frame of {}",
            seg.display()
        ));
    };
    let durable = durable_size(&records, seg);
    if end > durable {
        let calls: Vec<String> = records
            .iter()
            .rev()
            .take(5)
            .map(|r| format!("{} {} {}", r.call, r.size, r.path.display()))
            .collect();
        return Err(format!(
            "SET {key} was acknowledged, but its frame ends at byte {end} of {} and only {durable} \
             bytes of it had been fsynced (last sync calls, newest first: {calls:?})",
            seg.display()
        ));
    }
    Ok(end)
}

// ---------------------------------------------------------------------------
// 1. Snapshots
// ---------------------------------------------------------------------------

#[test]
fn snapshot_survives_restart() {
    let dir = TestDir::new("snapshot");
    let args = ["--save", "", "--appendonly", "no"];
    let mut s = Anykv::start(&dir, &args);
    let mut c = s.conn();

    ok(&mut c, &["SET", "s:int", "12345"]);
    ok(&mut c, &["SET", "s:emb", "hello world"]);
    ok(&mut c, &["SET", "s:raw", &"r".repeat(100)]);
    ok(&mut c, &["SET", "s:neg", "-987654321"]);
    let many = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>()
    };
    int(&mut c, &["RPUSH", "l:small", "a", "b", "c"]);
    let mut a = vec!["RPUSH".to_string(), "l:big".into()];
    a.extend(many("item-", 200));
    int(&mut c, &a);
    int(&mut c, &["HSET", "h:small", "f1", "v1", "f2", "v2"]);
    // hash-max-listpack-entries is 512 in Redis 7.0.
    let mut a = vec!["HSET".to_string(), "h:big".into()];
    for i in 0..600 {
        a.push(format!("field-{i}"));
        a.push(format!("value-{i}"));
    }
    int(&mut c, &a);
    int(&mut c, &["SADD", "set:int", "1", "2", "3", "-7"]);
    int(&mut c, &["SADD", "set:str", "a", "b", "c"]);
    let mut a = vec!["SADD".to_string(), "set:big".into()];
    a.extend(many("member-", 200));
    int(&mut c, &a);
    let mut a = vec!["SADD".to_string(), "set:bigint".into()];
    a.extend(many("", 600));
    int(&mut c, &a);
    int(
        &mut c,
        &["ZADD", "z:small", "1", "a", "2.5", "b", "-3", "c"],
    );
    let mut a = vec!["ZADD".to_string(), "z:big".into()];
    for i in 0..200 {
        a.push(format!("{}", i as f64 / 4.0));
        a.push(format!("m-{i}"));
    }
    int(&mut c, &a);
    ok(&mut c, &["SET", "ttl:s", "v", "EX", "1000"]);
    int(&mut c, &["HSET", "ttl:h", "f", "v"]);
    int(&mut c, &["PEXPIRE", "ttl:h", "900000"]);
    int(&mut c, &["RPUSH", "ttl:l", "x", "y"]);
    let at = (unix_secs() + 2000).to_string();
    int(&mut c, &["EXPIREAT", "ttl:l", &at]);
    int(&mut c, &["ZADD", "ttl:z", "1", "one"]);
    int(&mut c, &["EXPIRE", "ttl:z", "5000"]);
    ok(&mut c, &["SELECT", "3"]);
    ok(&mut c, &["SET", "db3:s", "in db three"]);
    int(&mut c, &["ZADD", "db3:z", "1", "a", "2", "b"]);
    ok(&mut c, &["SET", "db3:ttl", "v", "EX", "1000"]);
    ok(&mut c, &["SELECT", "0"]);

    let keys0 = [
        "s:int",
        "s:emb",
        "s:raw",
        "s:neg",
        "l:small",
        "l:big",
        "h:small",
        "h:big",
        "set:int",
        "set:str",
        "set:big",
        "set:bigint",
        "z:small",
        "z:big",
        "ttl:s",
        "ttl:h",
        "ttl:l",
        "ttl:z",
    ];
    let keys3 = ["db3:s", "db3:z", "db3:ttl"];
    let ttl_keys: [(usize, &str); 5] = [
        (0, "ttl:s"),
        (0, "ttl:h"),
        (0, "ttl:l"),
        (0, "ttl:z"),
        (3, "db3:ttl"),
    ];
    let snapshot_of = |c: &mut RespConn| {
        let mut m = BTreeMap::new();
        for (db, keys) in [(0usize, &keys0[..]), (3, &keys3[..])] {
            ok(c, &["SELECT", &db.to_string()]);
            m.insert(format!("{db}/dbsize"), int(c, &["DBSIZE"]).to_string());
            for k in keys {
                m.insert(
                    format!("{db}/{k}/encoding"),
                    text(c, &["OBJECT", "ENCODING", k]),
                );
                m.insert(format!("{db}/{k}/type"), text(c, &["TYPE", k]));
            }
        }
        ok(c, &["SELECT", "0"]);
        m
    };
    let before = snapshot_of(&mut c);
    let digest_before = digest(&mut c);
    assert_ne!(digest_before, EMPTY_DIGEST);
    // The encodings change with size as in Redis 7.0 (sanity: the test
    // really covers both encodings of each type).
    for (k, want) in [
        ("0/s:int/encoding", "int"),
        ("0/s:emb/encoding", "embstr"),
        ("0/s:raw/encoding", "raw"),
        ("0/h:small/encoding", "listpack"),
        ("0/h:big/encoding", "hashtable"),
        ("0/set:int/encoding", "intset"),
        ("0/set:bigint/encoding", "hashtable"),
        ("0/z:small/encoding", "listpack"),
        ("0/z:big/encoding", "skiplist"),
    ] {
        assert_eq!(before[k], want, "{k} before the save: {before:?}");
    }

    let save_started = unix_secs();
    ok(&mut c, &["SAVE"]);
    let lastsave = int(&mut c, &["LASTSAVE"]);
    assert!(
        lastsave >= save_started - 1 && lastsave <= unix_secs() + 1,
        "LASTSAVE {lastsave} after a SAVE at {save_started}"
    );
    assert!(dir.file("dump.akv").exists(), "SAVE wrote no dump.akv");
    drop(c);
    s.shutdown(Some("NOSAVE"));

    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    assert_eq!(
        digest(&mut c),
        digest_before,
        "DEBUG DIGEST changed across SAVE + restart\n{}",
        s.describe()
    );
    let after = snapshot_of(&mut c);
    assert_eq!(after, before, "keys, types or encodings changed on reload");
    for (db, k) in ttl_keys {
        ok(&mut c, &["SELECT", &db.to_string()]);
        let pttl = int(&mut c, &["PTTL", k]);
        assert!(pttl > 0, "PTTL {k} (db {db}) is {pttl} after the restart");
    }
    ok(&mut c, &["SELECT", "0"]);
    // Values, spot-checked beyond the digest.
    assert_eq!(text(&mut c, &["GET", "s:raw"]), "r".repeat(100));
    assert_eq!(int(&mut c, &["ZCARD", "z:big"]), 200);
    assert_eq!(text(&mut c, &["ZSCORE", "z:small", "b"]), "2.5");
    let lastsave2 = int(&mut c, &["LASTSAVE"]);
    assert!(
        lastsave2 >= save_started - 1 && lastsave2 <= unix_secs() + 1,
        "LASTSAVE {lastsave2} after the restart (save at {save_started})"
    );
    let i = info(&mut c, "persistence");
    assert_eq!(field(&i, "rdb_bgsave_in_progress"), "0", "{i:?}");
    assert_eq!(field(&i, "aof_enabled"), "0", "{i:?}");
}

// ---------------------------------------------------------------------------
// 2. BGSAVE is a point-in-time image while writes continue
// ---------------------------------------------------------------------------

const POPULATED: u64 = 200_000;

/// Writes to the keyspace until `stop` (and at least `min` writes), with a
/// mix of commands chosen by `mix`. Returns the number of writes.
fn hammer(port: u16, mix: u64, t: u64, stop: &AtomicBool, acked: &AtomicU64) -> u64 {
    let mut c = RespConn::connect(port).expect("writer connect");
    let mut rng = Rng(0xB65A_4E00 ^ (mix << 32) ^ t);
    let mut n = 0u64;
    while n < 300 || !stop.load(Ordering::Relaxed) {
        let k = format!("key:{}", rng.below(POPULATED));
        let fresh = format!("w{mix}:{t}:{n}");
        let pick = rng.below(6);
        let args: Vec<String> = match (mix, pick) {
            (0, 0 | 1) => vec!["SET".into(), k, format!("overwritten:{n}")],
            (0, 2 | 3) => vec!["DEL".into(), k],
            (0, _) => vec!["SET".into(), fresh, "new".into()],
            (1, 0) => vec!["LPUSH".into(), fresh, "a".into(), "b".into()],
            (1, 1) => vec!["HSET".into(), fresh, "f".into(), "v".into()],
            (1, 2) => vec!["EXPIRE".into(), k, "1".into()],
            (1, 3) => vec!["PEXPIRE".into(), k, "300".into()],
            (1, 4) => vec!["SADD".into(), fresh, "m1".into(), "m2".into()],
            (1, _) => vec!["ZADD".into(), fresh, "1".into(), "m".into()],
            (_, 0) => vec!["APPEND".into(), k, "+tail".into()],
            (_, 1) => vec!["GETDEL".into(), k],
            (_, 2) => vec![
                "SET".into(),
                k,
                "short-lived".into(),
                "PX".into(),
                "200".into(),
            ],
            (_, 3) => vec!["SETRANGE".into(), k, "2".into(), "XY".into()],
            (_, 4) => vec!["LPUSH".into(), fresh, "x".into()],
            (_, _) => vec!["EXPIRE".into(), k, "2".into()],
        };
        let a: Vec<Vec<u8>> = args.iter().map(|s| s.as_bytes().to_vec()).collect();
        match c.call(&a) {
            Ok(v) if v.is_error() => panic!("{args:?} replied {v:?}"),
            Ok(_) => {}
            Err(e) => panic!("{args:?}: {e}"),
        }
        n += 1;
        acked.fetch_add(1, Ordering::Relaxed);
    }
    n
}

/// BGSAVE saves the keyspace of the instant it started, although anykv
/// does not fork: the save walks the tables in slices between clients'
/// commands, and writes to entries not walked yet first hand their old
/// value to the save (the write barrier).
///
/// Three rounds, each with a different mix of writes (overwrites, deletes,
/// new keys, expiries, appends), over 200k keys: the digest taken in the
/// same batch as BGSAVE must be the digest of the file after a restart.
/// The test asserts that writes really overlapped the save: it counts the
/// writes acknowledged before an `INFO persistence` that still reported
/// `rdb_bgsave_in_progress:1` (all of them were sent after BGSAVE had
/// started), and requires some in every round. Without that, a save that
/// finished before the first write (or a server that ran BGSAVE
/// synchronously) would pass without testing the barrier at all. If the
/// barrier missed a write, the file would hold the new value and the
/// restored digest would differ from the one at BGSAVE.
#[test]
fn bgsave_is_point_in_time_under_writes() {
    let dir = TestDir::new("bgsave");
    let args = ["--save", "", "--appendonly", "no"];
    let mut s = Anykv::start(&dir, &args);
    {
        let mut c = s.conn();
        ok(
            &mut c,
            &["DEBUG", "POPULATE", &POPULATED.to_string(), "key", "200"],
        );
        assert_eq!(int(&mut c, &["DBSIZE"]), POPULATED as i64);
    }
    let mut first_digest: Option<String> = None;
    for round in 0..3u64 {
        // DEBUG DIGEST and BGSAVE in one write: the same batch on the same
        // executor, nothing runs between them, and the save starts right
        // after the batch, before the reply is sent.
        let mut raw = Raw::connect(s.port);
        let mut both = resp_str(&["DEBUG", "DIGEST"]);
        both.extend_from_slice(&resp_str(&["BGSAVE"]));
        raw.send(&both);
        let line = raw.read_until(b"\r\n");
        let line = String::from_utf8_lossy(&line).into_owned();
        let at_save = line
            .strip_prefix('+')
            .map(|l| l.trim_end().to_string())
            .filter(|d| d.len() == 40)
            .unwrap_or_else(|| panic!("DEBUG DIGEST replied {line:?}"));
        raw.expect(b"+Background saving started\r\n");
        if let Some(d) = &first_digest {
            // Each round restarts from the previous round's save, taken
            // at the same logical state.
            assert_eq!(&at_save, d, "round {round}: keyspace differs at start");
        }
        first_digest.get_or_insert(at_save.clone());

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let (stop, acked, port) = (stop.clone(), acked.clone(), s.port);
                thread::spawn(move || hammer(port, round, t, &stop, &acked))
            })
            .collect();
        let mut c = s.conn();
        let started = Instant::now();
        let mut polls = 0;
        let mut polls_running = 0;
        // Writes acknowledged before a poll that still saw the save
        // running: every one of them was sent after BGSAVE started (the
        // writers start after its reply) and executed before that INFO
        // (their replies had arrived when the count was read, before INFO
        // was sent), so certainly while the save was running.
        let mut while_running = 0;
        let done = loop {
            let before = acked.load(Ordering::Relaxed);
            let i = info(&mut c, "persistence");
            polls += 1;
            match field(&i, "rdb_bgsave_in_progress") {
                "1" => {
                    polls_running += 1;
                    while_running = before;
                }
                "0" => break i,
                other => panic!("rdb_bgsave_in_progress:{other} in {i:?}"),
            }
            assert!(
                started.elapsed() < JOB_TIMEOUT,
                "round {round}: BGSAVE still running after {JOB_TIMEOUT:?}: {i:?}"
            );
            thread::sleep(Duration::from_millis(5));
        };
        let during = acked.load(Ordering::Relaxed);
        let save_time = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(
            field(&done, "rdb_last_bgsave_status"),
            "ok",
            "round {round}: {done:?}"
        );
        // A fresh process each round: this is its first save.
        assert_eq!(field(&done, "rdb_saves"), "1", "round {round}: {done:?}");
        eprintln!(
            "bgsave round {round}: save took ~{save_time:?} ({polls} polls, {polls_running} saw \
             it running), {while_running} writes acknowledged while it was seen running, \
             {during} before it was seen finished, {total} in all"
        );
        // The point of the test: writes overlapped the save. 4 clients
        // writing one command at a time get far more than this through
        // while a save of 200k keys runs (hundreds of ms in a debug build).
        assert!(
            polls_running > 0 && while_running >= 20,
            "round {round}: only {while_running} writes were acknowledged while the BGSAVE was \
             seen running ({polls_running} of {polls} polls saw it running): the save did not \
             overlap the writes, so this round proves nothing about point-in-time saves"
        );
        let live = digest(&mut c);
        assert_ne!(live, at_save, "round {round}: the writes changed nothing?");
        drop(c);
        drop(raw);
        s.shutdown(Some("NOSAVE"));
        s = Anykv::start(&dir, &args);
        let mut c = s.conn();
        let restored = digest(&mut c);
        assert_eq!(
            restored,
            at_save,
            "round {round} (write mix {round}): the BGSAVE file is not the keyspace of the \
             instant BGSAVE ran (DBSIZE now {})",
            int(&mut c, &["DBSIZE"])
        );
        assert_eq!(int(&mut c, &["DBSIZE"]), POPULATED as i64);
    }
}

// ---------------------------------------------------------------------------
// 3./4. The append-only log under kill -9
// ---------------------------------------------------------------------------

const CLIENTS: usize = 8;

/// One client: `SET k:<client>:<i> <i>` for i = start, start+1, ... one at a
/// time until the connection dies. Returns each acknowledgement's time.
fn sequential_writer(port: u16, client: usize, start: u64) -> Vec<Instant> {
    let mut acks = Vec::new();
    let Ok(mut c) = RespConn::connect(port) else {
        return acks;
    };
    let mut i = start;
    loop {
        let key = format!("k:{client}:{i}");
        let val = i.to_string();
        let a = vec![b"SET".to_vec(), key.into_bytes(), val.into_bytes()];
        match c.call(&a) {
            Ok(Value::Simple(s)) if s == b"OK" => acks.push(Instant::now()),
            Ok(v) => panic!("client {client}: SET k:{client}:{i} replied {v:?}"),
            Err(_) => return acks, // the server was killed
        }
        i += 1;
    }
}

/// What one client finds after a restart: the length of the prefix of its
/// keys present with the right values.
fn present_prefix(c: &mut RespConn, client: usize, upto: u64) -> u64 {
    let mut n = 0u64;
    let mut i = 0u64;
    while i < upto {
        let end = (i + 500).min(upto);
        let mut args = vec!["MGET".to_string()];
        args.extend((i..end).map(|j| format!("k:{client}:{j}")));
        let Value::Array(vals) = call(c, &args) else {
            panic!("MGET did not reply an array");
        };
        for (j, v) in (i..end).zip(vals) {
            match v {
                Value::Bulk(b) if b == j.to_string().as_bytes() => {
                    if n == j {
                        n += 1;
                    } else {
                        panic!(
                            "client {client}: k:{client}:{j} is present but k:{client}:{n} is \
                             missing: the log has a hole"
                        );
                    }
                }
                Value::Nil => {}
                other => panic!("client {client}: k:{client}:{j} = {other:?}, expected {j}"),
            }
        }
        i = end;
    }
    n
}

/// How a round of [`kill_restart_rounds`] ends the server.
enum Crash {
    /// SIGKILL: the process dies, the kernel's page cache (everything
    /// written) survives.
    Kill9,
    /// SIGKILL, then what a power cut would leave: the last log segment
    /// cut back to the size its last fsync/fdatasync covered, per the log
    /// of the fsync shim the server runs under (see [`build_fsync_shim`]).
    /// The shim's log is emptied at each restart (a torn tail the restart
    /// truncates must not count as durable from an older record); what the
    /// segment holds once the restart has loaded it is durable (it is what
    /// survived the cut).
    PowerCut { shim_log: PathBuf },
}

/// Runs `rounds` of: 8 sequential writers, `crash` after a random delay,
/// restart, check. `max_loss_age`: None means no acknowledged write may be
/// lost; Some(d) means only writes acknowledged within `d` of the kill may
/// be (plus, for a power cut, twice the longest fsync of the segment in
/// that round, which the shim's log times: a write that just missed an
/// fsync waits for the next one to start and to finish, and anykv starts
/// the next a second after the last one finished). With Some(d) each round
/// lasts 0.5 to 1.5 s longer than `d` (asserted), so that it has writes
/// older than `d`, which must survive (otherwise the bound would hold by
/// construction). Returns the number of acknowledged writes lost, per
/// round. `env` is added to the server's environment (the fsync shim's,
/// for a power cut).
fn kill_restart_rounds(
    dir: &TestDir,
    args: &[&str],
    env: &[(&str, String)],
    crash: &Crash,
    seed: u64,
    rounds: usize,
    max_loss_age: Option<Duration>,
) -> Vec<u64> {
    let mut rng = Rng(seed);
    let mut s = Anykv::start_env(dir, args, env);
    // Per client: ack times of keys 0.. (cumulative; the prefix known to be
    // durable plus this round's acknowledgements).
    let mut acks: Vec<Vec<Instant>> = vec![Vec::new(); CLIENTS];
    let mut lost_per_round = Vec::new();
    // PowerCut: the segment and its size as the last (re)start left it.
    let mut survived: Option<(PathBuf, u64)> = None;
    for round in 0..rounds {
        let writers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (port, start) = (s.port, acks[client].len() as u64);
                thread::spawn(move || sequential_writer(port, client, start))
            })
            .collect();
        let (lo, hi) = match max_loss_age {
            None => (300, 1500),
            Some(age) => {
                let age = age.as_millis() as u64;
                (age + 500, age + 1500)
            }
        };
        let delay = Duration::from_millis(rng.range(lo, hi));
        thread::sleep(delay);
        let kill_at = Instant::now();
        let kill_wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        s.kill9();
        let mut this_round = 0;
        let mut first_ack: Option<Instant> = None;
        for (client, w) in writers.into_iter().enumerate() {
            let new = w.join().expect("writer thread panicked");
            this_round += new.len();
            first_ack = first_ack.into_iter().chain(new.first().copied()).min();
            acks[client].extend(new);
        }
        if let Some(age) = max_loss_age {
            let span = first_ack.map(|t| kill_at.saturating_duration_since(t));
            assert!(
                span.is_some_and(|d| d > age),
                "round {round}: the first write was acknowledged {span:?} before the kill, not \
                 more than {age:?}: no write in this round had to survive"
            );
        }
        let mut cut = String::new();
        // How long the slowest fsync of the segment took this round, and
        // how long one that never returned had been running at the kill
        // (a stuck disk: what it held back was never durable).
        let mut slowest_fsync = Duration::ZERO;
        let mut stuck = Duration::ZERO;
        if let Crash::PowerCut { shim_log } = crash {
            let seg = last_segment(dir);
            let len = file_len(&seg);
            let records = sync_records(shim_log);
            slowest_fsync = syncs_of(&records, &seg)
                .map(|r| r.took)
                .max()
                .unwrap_or_default();
            stuck = unfinished_sync(&records, &seg, kill_wall);
            let mut durable = durable_size(&records, &seg);
            if let Some((path, size)) = &survived {
                if *path == seg {
                    durable = durable.max(*size);
                }
            }
            assert!(
                durable <= len,
                "round {round}: the shim says {durable} bytes of {} were fsynced, but the file \
                 has {len}",
                seg.display()
            );
            OpenOptions::new()
                .write(true)
                .open(&seg)
                .and_then(|f| f.set_len(durable))
                .unwrap_or_else(|e| panic!("truncate {}: {e}", seg.display()));
            fs::write(shim_log, b"").expect("empty the shim log");
            cut = format!(
                ", power cut: {durable} of {len} bytes of the segment durable (slowest fsync \
                 {slowest_fsync:?}, one unfinished for {stuck:?})"
            );
        }
        s = Anykv::start_env(dir, args, env);
        if let Crash::PowerCut { .. } = crash {
            let seg = last_segment(dir);
            survived = Some((seg.clone(), file_len(&seg)));
        }
        let mut c = s.conn();
        let mut expected_keys = 0i64;
        let mut lost = 0u64;
        let mut oldest_lost = Duration::ZERO;
        for (client, times) in acks.iter_mut().enumerate() {
            let acked = times.len() as u64;
            // Look one past the in-flight write: it must not be there.
            let present = present_prefix(&mut c, client, acked + 2);
            assert!(
                present <= acked + 1,
                "round {round} client {client}: {present} keys present but only {acked} \
                 acknowledged: more than the one write in flight appeared"
            );
            if present < acked {
                match max_loss_age {
                    None => panic!(
                        "round {round} client {client}: acknowledged k:{client}:{present} \
                         (of {acked}) is missing after {}{cut}\n{}",
                        match crash {
                            Crash::Kill9 => "kill -9",
                            Crash::PowerCut { .. } => "kill -9 and a simulated power cut",
                        },
                        s.describe()
                    ),
                    Some(age) => {
                        let oldest = times[present as usize];
                        let before_kill = kill_at.saturating_duration_since(oldest);
                        oldest_lost = oldest_lost.max(before_kill);
                        let bound = age + 2 * slowest_fsync + stuck;
                        assert!(
                            before_kill <= bound,
                            "round {round} client {client}: k:{client}:{present}, acknowledged \
                             {before_kill:?} before the kill, is lost (bound {bound:?}: \
                             {age:?} + twice the slowest fsync, {slowest_fsync:?}, + an \
                             unfinished one's time, {stuck:?}){cut}"
                        );
                    }
                }
                lost += acked - present;
            }
            // The next round continues from what survived (an in-flight
            // write that made it is rewritten with the same value).
            times.truncate(present.min(acked) as usize);
            expected_keys += present as i64;
        }
        let dbsize = int(&mut c, &["DBSIZE"]);
        assert_eq!(
            dbsize, expected_keys,
            "round {round}: DBSIZE after the restart (stray keys?)"
        );
        eprintln!(
            "kill -9 round {round}: killed after {delay:?}{cut}, {this_round} writes \
             acknowledged, {lost} of them lost (the oldest acknowledged {oldest_lost:?} before \
             the kill), {dbsize} keys after restart"
        );
        lost_per_round.push(lost);
    }
    lost_per_round
}

/// `appendfsync always`: no acknowledged write is lost to a crash, even
/// one that takes the page cache with it.
///
/// 8 clients write one acknowledged SET at a time; the server is killed
/// (SIGKILL) at a random moment, then what a power cut leaves is simulated:
/// the log segment is cut back to the size its last fsync/fdatasync covered
/// (per the fsync shim's log, [`Crash::PowerCut`]). After the restart every
/// acknowledged write must be back, in order, with at most the one write
/// in flight per client besides. A plain kill -9 would keep whatever was
/// written, fsynced or not, so without the cut this test would pass if
/// the server never fsynced; with it, a reply sent before its fsync loses
/// that write whenever the kill lands between the two. The per-reply check
/// that catches that at every reply is [`aof_always_fsyncs_before_replying`].
#[test]
fn aof_always_loses_no_acknowledged_write() {
    let dir = TestDir::new("aof-always");
    let so = build_fsync_shim(&dir);
    let log = dir.file("fsync-shim.log");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let crash = Crash::PowerCut {
        shim_log: log.clone(),
    };
    let env = shim_env(&so, &log, &[]);
    let lost = kill_restart_rounds(&dir, &args, &env, &crash, 0xA1_3A75, 3, None);
    assert!(lost.iter().all(|&l| l == 0), "{lost:?}");
}

/// `appendfsync always` means *fsynced* before the reply, not merely
/// written: checked at every reply, not only after a crash.
///
/// The server runs under the fsync shim (`tests/fsync_shim/fsync_shim.c`,
/// LD_PRELOAD), which logs every successful fsync/fdatasync with the file's
/// path and the size it had when the call started, before the call returns
/// to the server. 4 clients each send SETs one at a time; right after each
/// reply the client reads the shim's log and the segment
/// ([`check_write_durable`]): the frame holding that SET must end within
/// the bytes an fsync of the segment had covered. The shim also sleeps
/// 20 ms in every fsync (a slow disk), so a reply that does not wait for
/// its fsync arrives before the fsync's line and fails the check every
/// time, not only when a crash lands in the gap.
///
/// Why a logging shim rather than only a simulated power cut
/// ([`aof_always_loses_no_acknowledged_write`] does that too): the cut only
/// catches a missing fsync when the kill happens to land between a reply
/// and its fsync; the log checks every reply.
///
/// That the check can fail is part of the test: first a server whose
/// fsyncs the shim turns into no-ops (`ANYKV_FSYNC_SHIM_MODE=skip`: return
/// 0, sync nothing, log nothing) must fail it on its first write.
#[test]
fn aof_always_fsyncs_before_replying() {
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    // 1. A server that does not fsync fails the check.
    {
        let dir = TestDir::new("aof-fsync-skipped");
        let so = build_fsync_shim(&dir);
        let log = dir.file("fsync-shim.log");
        let env = shim_env(&so, &log, &[("ANYKV_FSYNC_SHIM_MODE", "skip")]);
        let s = Anykv::start_env(&dir, &args, &env);
        let mut c = s.conn();
        ok(&mut c, &["SET", "nofsync:0", "v"]);
        let seg = last_segment(&dir);
        match check_write_durable(&seg, &log, "nofsync:0") {
            Err(e) => eprintln!("without fsync the check fails as it must: {e}"),
            Ok(end) => panic!(
                "the check passed (frame end {end}) although the shim skipped every fsync: it \
                 cannot tell fsynced from written\n{}",
                s.describe()
            ),
        }
    }
    // 2. The real thing.
    let dir = TestDir::new("aof-fsync");
    let so = build_fsync_shim(&dir);
    let log = dir.file("fsync-shim.log");
    let env = shim_env(&so, &log, &[("ANYKV_FSYNC_SHIM_DELAY_MS", "20")]);
    let mut s = Anykv::start_env(&dir, &args, &env);
    let seg = last_segment(&dir);
    const WRITERS: usize = 4;
    const WRITES: usize = 15;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (port, seg, log) = (s.port, seg.clone(), log.clone());
            thread::spawn(move || {
                let mut c = RespConn::connect(port).expect("connect");
                let mut violations = Vec::new();
                let mut last_end = 0;
                for i in 0..WRITES {
                    let key = format!("fsynced:{w}:{i}");
                    ok(&mut c, &["SET", &key, &i.to_string()]);
                    match check_write_durable(&seg, &log, &key) {
                        Ok(end) => {
                            assert!(end > last_end, "{key}: frame end {end} <= {last_end}");
                            last_end = end;
                        }
                        Err(e) => violations.push(e),
                    }
                }
                violations
            })
        })
        .collect();
    let violations: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer panicked"))
        .collect();
    assert!(
        violations.is_empty(),
        "{} of {} acknowledged writes were not fsynced when their reply arrived; the first \
         ones:\n{}\n{}",
        violations.len(),
        WRITERS * WRITES,
        violations[..violations.len().min(3)].join("\n"),
        s.describe()
    );
    let records = sync_records(&log);
    let durable = durable_size(&records, &seg);
    let len = file_len(&seg);
    let seg_syncs = syncs_of(&records, &seg).count();
    eprintln!(
        "appendfsync always: {} writes, {seg_syncs} syncs of the segment, {durable} of {len} \
         bytes durable",
        WRITERS * WRITES
    );
    assert_eq!(durable, len, "bytes of the segment never fsynced");
    // And what the shim calls durable is enough: all of the segment is, so
    // a power cut now would leave it as it is; kill, restart without the
    // shim, everything is back.
    s.kill9();
    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    for w in 0..WRITERS {
        for i in 0..WRITES {
            assert_eq!(
                call(&mut c, &["GET", &format!("fsynced:{w}:{i}")]),
                Value::Bulk(i.to_string().into_bytes()),
                "fsynced:{w}:{i} after the restart\n{}",
                s.describe()
            );
        }
    }
}

/// `appendfsync everysec`: exactly the documented risk, no more.
///
/// - A process crash (kill -9) loses no acknowledged write: the reply waits
///   for the write to the file, and the page cache outlives the process.
///   2 rounds of 8 sequential writers killed at a random moment must lose
///   nothing.
/// - A power cut loses only what was written since the last fsync, and the
///   fsync thread runs once a second: only writes acknowledged within the
///   last second or so may be lost. The server runs under the fsync shim
///   and each of 3 rounds simulates the cut ([`Crash::PowerCut`]: the
///   segment is cut back to what its last fsync covered); every lost write
///   must have been acknowledged at most 1.5 s (the 1 s period plus
///   scheduling slack) plus twice the slowest fsync of the round (a write
///   that just missed an fsync waits for the next one to start, a second
///   after the previous one finished, and to finish) plus how long an
///   fsync that had not returned at the kill had been running (a disk
///   stuck behind a machine's other writes, as right after a build:
///   everything since it began was never durable) before the kill. Each
///   round runs 2 to 3 s, so it has writes older than that which must
///   survive: a server that never fsyncs loses them and fails. The rounds
///   must also lose something in total: a server that fsynced every write
///   (not `everysec`) or a cut that removed nothing would make the bound
///   vacuous.
#[test]
fn aof_everysec_loss_is_bounded() {
    let dir = TestDir::new("aof-everysec");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ];
    let lost = kill_restart_rounds(&dir, &args, &[], &Crash::Kill9, 0xE5EC, 2, None);
    assert!(lost.iter().all(|&l| l == 0), "{lost:?}");

    let dir = TestDir::new("aof-everysec-power");
    let so = build_fsync_shim(&dir);
    let log = dir.file("fsync-shim.log");
    let crash = Crash::PowerCut {
        shim_log: log.clone(),
    };
    let env = shim_env(&so, &log, &[]);
    // Plus twice the slowest fsync and an unfinished one's time (see
    // above): a clean-clone CI run, its page cache full of a fresh build,
    // had an fsync that did not return in 3 s.
    let bound = Duration::from_millis(1500);
    let lost = kill_restart_rounds(&dir, &args, &env, &crash, 0xE5EC, 3, Some(bound));
    eprintln!(
        "appendfsync everysec: acknowledged writes lost to a power cut per round: {lost:?} \
         (total {}), none acknowledged more than {bound:?} + 2 fsyncs before it",
        lost.iter().sum::<u64>()
    );
    assert!(
        lost.iter().sum::<u64>() > 0,
        "no acknowledged write was lost to 3 simulated power cuts under everysec: either every \
         write was fsynced before its reply (that is `always`) or the cut removed nothing"
    );
}

// ---------------------------------------------------------------------------
// 4b. kill -9 in the middle of a background save or rewrite
// ---------------------------------------------------------------------------

/// Keys in the dataset of the kill-during-a-job tests.
const JOB_KEYS: u64 = 50_000;
/// Writers in the kill-during-a-job tests.
const JOB_WRITERS: usize = 4;

/// A server with `args` (the log on, `always`) and `env` holding
/// [`JOB_KEYS`] keys of 300 bytes: populated with the log off and saved,
/// so that they become the log's first base (a restart loads a snapshot
/// instead of replaying 50k commands). Returns it with the values of a few
/// of those keys.
fn populated_for_job(
    dir: &TestDir,
    args: &[&str],
    env: &[(&str, String)],
) -> (Anykv, Vec<(String, Value)>) {
    let mut s = Anykv::start(dir, &["--save", "", "--appendonly", "no"]);
    let mut c = s.conn();
    ok(
        &mut c,
        &["DEBUG", "POPULATE", &JOB_KEYS.to_string(), "key", "300"],
    );
    ok(&mut c, &["SAVE"]);
    drop(c);
    s.shutdown(Some("NOSAVE"));
    let s = Anykv::start_env(dir, args, env);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["DBSIZE"]), JOB_KEYS as i64);
    let samples = [0, 1, JOB_KEYS / 2, JOB_KEYS - 1]
        .iter()
        .map(|i| {
            let k = format!("key:{i}");
            let v = call(&mut c, &["GET", &k]);
            assert!(matches!(v, Value::Bulk(_)), "GET {k} replied {v:?}");
            (k, v)
        })
        .collect();
    (s, samples)
}

/// `SET k:<client>:<i> <i>` for i = 0, 1, ... one at a time until the
/// connection dies, counting acknowledgements in `acked` too. Returns how
/// many were acknowledged.
fn counted_writer(port: u16, client: usize, acked: Arc<AtomicU64>) -> u64 {
    let mut c = RespConn::connect(port).expect("writer connect");
    let mut n = 0u64;
    loop {
        let a = vec![
            b"SET".to_vec(),
            format!("k:{client}:{n}").into_bytes(),
            n.to_string().into_bytes(),
        ];
        match c.call(&a) {
            Ok(Value::Simple(s)) if s == b"OK" => {
                n += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(v) => panic!("client {client}: SET k:{client}:{n} replied {v:?}"),
            Err(_) => return n, // the server was killed
        }
    }
}

/// With a background job just started: runs [`JOB_WRITERS`] writers, polls
/// `INFO persistence` until `in_progress` (`rdb_bgsave_in_progress` or
/// `aof_rewrite_in_progress`) is 1 after at least 100 writes were
/// acknowledged, and kills the server (SIGKILL) right then. Returns the
/// acknowledged writes per client and how many had been acknowledged
/// before that INFO (all after the job started, and executed before INFO
/// reported it running). Panics if the job finished first.
fn write_and_kill_during(s: &mut Anykv, in_progress: &str) -> (Vec<u64>, u64) {
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..JOB_WRITERS)
        .map(|client| {
            let (port, acked) = (s.port, acked.clone());
            thread::spawn(move || counted_writer(port, client, acked))
        })
        .collect();
    let mut c = s.conn();
    let t0 = Instant::now();
    let seen = loop {
        // Read before INFO is sent: these writes ran before INFO did.
        let before = acked.load(Ordering::Relaxed);
        let i = info(&mut c, "persistence");
        match field(&i, in_progress) {
            "1" if before >= 100 => break before,
            "1" => {}
            other => panic!(
                "{in_progress}:{other} after {before} writes: the job is not in progress, the \
                 kill would not test a crash during it\n{}",
                s.describe()
            ),
        }
        assert!(
            t0.elapsed() < JOB_TIMEOUT,
            "{in_progress} still 1 but fewer than 100 writes after {JOB_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(2));
    };
    s.kill9();
    let counts = writers
        .into_iter()
        .map(|w| w.join().expect("writer panicked"))
        .collect();
    (counts, seen)
}

/// After the restart: every acknowledged write of each client is there (at
/// most the one in flight besides), the populated keys too, nothing else.
fn check_after_job_kill(s: &Anykv, counts: &[u64], samples: &[(String, Value)], what: &str) {
    let mut c = s.conn();
    let mut present_total = 0;
    for (client, &acked) in counts.iter().enumerate() {
        let present = present_prefix(&mut c, client, acked + 2);
        assert!(
            present >= acked && present <= acked + 1,
            "{what}: client {client} had {acked} writes acknowledged (appendfsync always), \
             {present} are back after kill -9 and a restart\n{}",
            s.describe()
        );
        present_total += present;
    }
    assert_eq!(
        int(&mut c, &["DBSIZE"]),
        (JOB_KEYS + present_total) as i64,
        "{what}: DBSIZE after the restart ({JOB_KEYS} populated + {present_total} written)"
    );
    for (k, v) in samples {
        assert_eq!(
            &call(&mut c, &["GET", k]),
            v,
            "{what}: {k} after the restart"
        );
    }
}

/// How long the fsync shim holds the final fsync of a background job's
/// file in the kill-during-a-job tests: far longer than they take to kill.
const JOB_FSYNC_DELAY_MS: &str = "30000";

/// kill -9 while a BGSAVE is in progress loses nothing and corrupts
/// nothing: with the log on and `appendfsync always`, every write
/// acknowledged during the save is back after the restart, with the 50k
/// keys from before; `dump.akv` is byte for byte the previous snapshot (the
/// new one goes to a temporary file, renamed over it only when complete)
/// and still loads as it was (checked in a separate server with the log
/// off); and a BGSAVE after the restart succeeds.
///
/// The save must surely be in progress when the kill lands, and a save of
/// 50k keys takes only tens of ms. So the server runs under the fsync shim
/// holding any fsync of a file named like `dump.akv` (the save's temporary
/// `temp-<pid>-dump.akv`, fsynced after every record is written) for 30 s:
/// a slow disk. The save walks the keyspace while the writers run, then
/// waits in that fsync. The test asserts what it relies on: INFO reported
/// `rdb_bgsave_in_progress:1` after 100 writes were acknowledged, and the
/// temporary file is still there after the kill (the save never reached
/// its rename).
#[test]
fn kill9_during_bgsave_loses_nothing() {
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let dir = TestDir::new("kill-bgsave");
    let so = build_fsync_shim(&dir);
    let env = shim_env(
        &so,
        &dir.file("fsync-shim.log"),
        &[
            ("ANYKV_FSYNC_SHIM_DELAY_MS", JOB_FSYNC_DELAY_MS),
            // The save's file (under whatever name it is written): the
            // only file with this name the server fsyncs here.
            ("ANYKV_FSYNC_SHIM_DELAY_PATH", "dump.akv"),
        ],
    );
    let (mut s, samples) = populated_for_job(&dir, &args, &env);
    let mut c = s.conn();
    let populated = digest(&mut c);
    let dump = dir.file("dump.akv");
    let old_dump = fs::read(&dump).expect("read dump.akv");
    let pid = s.child.id();
    assert_eq!(text(&mut c, &["BGSAVE"]), "Background saving started");
    let (counts, during) = write_and_kill_during(&mut s, "rdb_bgsave_in_progress");
    let tmp = dir.file(&format!("temp-{pid}-dump.akv"));
    let dump_unchanged = fs::read(&dump).expect("read dump.akv") == old_dump;
    assert!(
        tmp.exists() && dump_unchanged,
        "after kill -9 during BGSAVE: {} exists: {}, dump.akv unchanged: {dump_unchanged} \
         (both must hold: the save was cut short before replacing dump.akv, and did not write \
         it in place)",
        tmp.display(),
        tmp.exists()
    );
    let s = Anykv::start(&dir, &args);
    check_after_job_kill(&s, &counts, &samples, "kill -9 during BGSAVE");
    // The snapshot left behind is whole: it loads, as it was.
    let scratch = TestDir::new("kill-bgsave-dump");
    fs::copy(&dump, scratch.file("dump.akv")).expect("copy dump.akv");
    let other = Anykv::start(&scratch, &["--save", "", "--appendonly", "no"]);
    assert_eq!(
        digest(&mut other.conn()),
        populated,
        "dump.akv after kill -9 during BGSAVE does not load as the previous snapshot\n{}",
        other.describe()
    );
    drop(other);
    // And saving works again.
    let mut c = s.conn();
    assert_eq!(text(&mut c, &["BGSAVE"]), "Background saving started");
    let i = wait_info(&mut c, "the BGSAVE after the restart", |i| {
        field(i, "rdb_bgsave_in_progress") == "0" && field(i, "rdb_saves") == "1"
    });
    assert_eq!(field(&i, "rdb_last_bgsave_status"), "ok", "{i:?}");
    // The dead save's half-written file is removed at the restart.
    assert!(!tmp.exists(), "{} left behind", tmp.display());
    eprintln!(
        "kill -9 during BGSAVE: {during} writes acknowledged while it was seen running, \
         {counts:?} per client in all; all back after the restart"
    );
}

/// kill -9 while a BGREWRITEAOF is in progress loses nothing: with
/// `appendfsync always`, every write acknowledged during the rewrite (they
/// go to the new segment the rewrite rotated to) is back after the restart,
/// with the 50k keys of the old base; the manifest the restart reads names
/// only whole files (the old base and both segments); a rewrite after the
/// restart succeeds and its result survives another kill -9.
///
/// As in [`kill9_during_bgsave_loses_nothing`], the fsync shim holds the
/// fsync of the base the rewrite writes (`appendonly.aof.<n>.base.akv`,
/// under its temporary name) for 30 s, so the kill surely lands during
/// the rewrite; the test asserts that INFO reported
/// `aof_rewrite_in_progress:1` after 100 writes were acknowledged, and that
/// the manifest left behind lists the segment the rewrite rotated to but
/// not its base (a finished rewrite replaces the manifest with the new
/// base).
#[test]
fn kill9_during_bgrewriteaof_loses_nothing() {
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let dir = TestDir::new("kill-rewrite");
    let so = build_fsync_shim(&dir);
    // populated_for_job leaves base 1 and segment 1; the rewrite writes
    // base 2.
    let env = shim_env(
        &so,
        &dir.file("fsync-shim.log"),
        &[
            ("ANYKV_FSYNC_SHIM_DELAY_MS", JOB_FSYNC_DELAY_MS),
            ("ANYKV_FSYNC_SHIM_DELAY_PATH", ".aof.2.base.akv"),
        ],
    );
    let (mut s, samples) = populated_for_job(&dir, &args, &env);
    let m0 = manifest(&dir);
    assert_eq!(
        m0.iter().map(|(_, seq, _)| *seq).max(),
        Some(1),
        "manifest {m0:?}"
    );
    let mut c = s.conn();
    let r = text(&mut c, &["BGREWRITEAOF"]);
    assert!(r.contains("rewriting"), "BGREWRITEAOF replied {r:?}");
    let (counts, during) = write_and_kill_during(&mut s, "aof_rewrite_in_progress");
    let m1 = manifest(&dir);
    let listing = aof_dir_listing(&dir);
    assert!(
        m1.iter().any(|(_, seq, t)| t == "i" && *seq == 2)
            && !m1.iter().any(|(_, seq, t)| t == "b" && *seq == 2)
            && m1.iter().all(|(n, _, _)| listing.contains(n)),
        "after kill -9 during the rewrite the manifest should list the old base, the old \
         segment and the one the rewrite rotated to: {m1:?}; files: {listing:?}"
    );
    let mut s = Anykv::start(&dir, &args);
    check_after_job_kill(&s, &counts, &samples, "kill -9 during BGREWRITEAOF");
    // Rewriting works again, and what it wrote restarts.
    let mut c = s.conn();
    let want = digest(&mut c);
    let r = text(&mut c, &["BGREWRITEAOF"]);
    assert!(r.contains("rewriting"), "BGREWRITEAOF replied {r:?}");
    let i = wait_info(&mut c, "the rewrite after the restart", |i| {
        field(i, "aof_rewrite_in_progress") == "0" && field(i, "aof_rewrites") == "1"
    });
    assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    drop(c);
    s.kill9();
    let s = Anykv::start(&dir, &args);
    assert_eq!(
        digest(&mut s.conn()),
        want,
        "the data after a rewrite and kill -9\n{}",
        s.describe()
    );
    eprintln!(
        "kill -9 during BGREWRITEAOF: {during} writes acknowledged while it was seen running, \
         {counts:?} per client in all; all back after the restart; manifest left by the kill \
         {m1:?} with files {listing:?}; after another rewrite: {:?}",
        aof_dir_listing(&dir)
    );
}

// ---------------------------------------------------------------------------
// 5. Torn tail
// ---------------------------------------------------------------------------

#[test]
fn torn_tail_is_repaired() {
    let dir = TestDir::new("torn");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut rng = Rng(0x7042);
    let mut s = Anykv::start(&dir, &args);
    let mut written = 0u32;
    let mut write = |s: &Anykv, n: u32| {
        let mut c = s.conn();
        for i in written..written + n {
            ok(&mut c, &["SET", &format!("t:{i}"), &format!("v{i}")]);
        }
        written += n;
        written
    };
    let check = |s: &Anykv, n: u32| {
        let mut c = s.conn();
        assert_eq!(int(&mut c, &["DBSIZE"]), n as i64, "{}", s.describe());
        for i in 0..n {
            assert_eq!(
                call(&mut c, &["GET", &format!("t:{i}")]),
                Value::Bulk(format!("v{i}").into_bytes()),
                "t:{i} after the restart\n{}",
                s.describe()
            );
        }
    };
    let cases: [(&str, Vec<u8>); 2] = [
        ("5 random bytes", (0..5).map(|_| rng.next() as u8).collect()),
        ("a frame header claiming 100 bytes with 10 present", {
            let mut b = 100u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(rng.next() as u32).to_le_bytes());
            b.extend((0..10).map(|_| rng.next() as u8));
            b
        }),
    ];
    for (what, garbage) in cases {
        let n = write(&s, 50);
        s.kill9();
        let seg = last_segment(&dir);
        let good_len = file_len(&seg);
        append_bytes(&seg, &garbage);
        s = Anykv::start(&dir, &args);
        let log = s.log_text();
        let name = seg.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            log.contains("torn tail")
                && log.contains(&name)
                && log.contains(&format!("at byte {good_len}"))
                && log.contains(&format!("truncated {} bytes", garbage.len())),
            "{what}: the log does not report the torn tail of {name} at byte {good_len} \
             ({} bytes)\n{}",
            garbage.len(),
            s.describe()
        );
        assert_eq!(
            file_len(&seg),
            good_len,
            "{what}: {name} was not truncated back to its last whole frame"
        );
        check(&s, n);
    }
    // Appending after the repaired tail works.
    let n = write(&s, 20);
    s.kill9();
    let s = Anykv::start(&dir, &args);
    assert!(!s.log_text().contains("torn tail"), "{}", s.describe());
    check(&s, n);
}

// ---------------------------------------------------------------------------
// 6. Corruption inside a segment
// ---------------------------------------------------------------------------

/// Writes `prefix:0..n` one acknowledged SET at a time, pausing between
/// them, so that (with `always`) they land in separate frames.
fn write_slowly(s: &Anykv, prefix: &str, n: usize) {
    let mut c = s.conn();
    for i in 0..n {
        ok(&mut c, &["SET", &format!("{prefix}:{i}"), &i.to_string()]);
        thread::sleep(Duration::from_millis(5));
    }
}

/// Which of `prefix:0..n` each frame of `seg` holds.
fn keys_per_frame(seg: &[u8], prefix: &str, n: usize) -> Vec<Vec<usize>> {
    frames(seg)
        .iter()
        .map(|(_, payload)| {
            (0..n)
                .filter(|i| {
                    let k = format!("{prefix}:{i}");
                    // As a RESP bulk string, so "p:1" does not match "p:10".
                    contains(payload, format!("${}\r\n{k}\r\n", k.len()).as_bytes())
                })
                .collect()
        })
        .collect()
}

fn existing(c: &mut RespConn, prefix: &str, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|i| int(c, &["EXISTS", &format!("{prefix}:{i}")]) == 1)
        .collect()
}

#[test]
fn corruption_in_the_middle_refuses_to_start() {
    let dir = TestDir::new("corrupt-aof");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut repair_args = args.to_vec();
    repair_args.extend(["--repair", "yes"]);
    let mut s = Anykv::start(&dir, &args);
    {
        // "before" keys end up in a base snapshot, "after" keys in the
        // first frames of the new segment.
        let mut c = s.conn();
        for i in 0..50 {
            ok(&mut c, &["SET", &format!("before:{i}"), "x"]);
        }
        let r = text(&mut c, &["BGREWRITEAOF"]);
        assert!(r.contains("rewriting"), "BGREWRITEAOF replied {r:?}");
        let i = wait_info(&mut c, "the rewrite", |i| {
            field(i, "aof_rewrite_in_progress") == "0" && field(i, "aof_rewrites") == "1"
        });
        assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    }
    write_slowly(&s, "after", 10);
    s.kill9();

    // 1. A bad byte in the FIRST frame, with good frames after it.
    let seg = last_segment(&dir);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let good = fs::read(&seg).unwrap();
    let fr = frames(&good);
    assert!(
        fr.len() >= 3,
        "expected several frames in {name}, got {}",
        fr.len()
    );
    let per_frame = keys_per_frame(&good, "after", 10);
    assert!(
        !per_frame[0].is_empty(),
        "the first frame holds no after:* key"
    );
    let mut bad = good.clone();
    let (off, payload) = &fr[0];
    bad[off + 8 + payload.len() / 2] ^= 0x5a;
    fs::write(&seg, &bad).unwrap();
    let log = start_must_fail(&dir, &args);
    assert!(
        log.contains(&name) && log.contains(&format!("corrupt at byte {off}")),
        "the error does not name {name} and 'corrupt at byte {off}':\n{log}"
    );
    assert_eq!(
        fs::read(&seg).unwrap(),
        bad,
        "a refused start must leave the segment untouched"
    );
    // --repair: starts, keeps what precedes the corruption (the base).
    let mut s = Anykv::start(&dir, &repair_args);
    let log = s.log_text();
    let dropped = bad.len() - off;
    assert!(
        log.contains(&name) && log.contains(&format!("dropped {dropped} bytes from byte {off}")),
        "--repair does not report dropping {dropped} bytes from byte {off} of {name}\n{}",
        s.describe()
    );
    {
        let mut c = s.conn();
        assert_eq!(existing(&mut c, "before", 50).len(), 50, "{}", s.describe());
        assert_eq!(existing(&mut c, "after", 10), Vec::<usize>::new());
        assert_eq!(int(&mut c, &["DBSIZE"]), 50);
    }

    // 2. A bad frame in the middle: the frames before it survive --repair.
    write_slowly(&s, "mid", 10);
    s.kill9();
    let good = fs::read(&seg).unwrap();
    let fr = frames(&good);
    let per_frame = keys_per_frame(&good, "mid", 10);
    assert!(
        fr.len() >= 5,
        "expected several frames in {name}, got {}",
        fr.len()
    );
    let k = fr.len() / 2;
    let mut bad = good.clone();
    let (off, payload) = &fr[k];
    bad[off + 8 + payload.len() / 2] ^= 0x01;
    fs::write(&seg, &bad).unwrap();
    let log = start_must_fail(&dir, &args);
    assert!(
        log.contains(&name) && log.contains(&format!("corrupt at byte {off}")),
        "the error does not name {name} and 'corrupt at byte {off}':\n{log}"
    );
    let mut s = Anykv::start(&dir, &repair_args);
    let want: Vec<usize> = per_frame[..k].iter().flatten().copied().collect();
    {
        let mut c = s.conn();
        assert_eq!(
            existing(&mut c, "mid", 10),
            want,
            "keys of the frames before the corrupt frame {k} (of {})\n{}",
            fr.len(),
            s.describe()
        );
        assert_eq!(existing(&mut c, "before", 50).len(), 50);
    }
    // Repaired for good: a plain start now works.
    s.kill9();
    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["DBSIZE"]), 50 + want.len() as i64);
}

// ---------------------------------------------------------------------------
// 7. Corrupt snapshot
// ---------------------------------------------------------------------------

#[test]
fn corrupt_snapshot_refuses_to_start() {
    let dir = TestDir::new("corrupt-snap");
    let args = ["--save", "", "--appendonly", "no"];
    let mut s = Anykv::start(&dir, &args);
    let want = {
        let mut c = s.conn();
        ok(&mut c, &["DEBUG", "POPULATE", "20000", "key", "32"]);
        ok(&mut c, &["SAVE"]);
        digest(&mut c)
    };
    s.shutdown(Some("NOSAVE"));
    let path = dir.file("dump.akv");
    let good = fs::read(&path).unwrap();
    assert!(
        good.starts_with(b"ANYKVSNP"),
        "dump.akv is not an anykv snapshot"
    );
    let len = good.len();
    let mut flipped = good.clone();
    flipped[len / 2] ^= 0x10;
    let mut flipped_header = good.clone();
    flipped_header[20] ^= 0x01;
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("a byte flipped in the middle", flipped, "corrupt at byte"),
        (
            "a byte flipped in the first frame",
            flipped_header,
            "corrupt at byte",
        ),
        ("truncated to half", good[..len / 2].to_vec(), "byte"),
        ("missing its last byte", good[..len - 1].to_vec(), "byte"),
        ("cut inside the magic", good[..5].to_vec(), "dump.akv"),
    ];
    for (what, bytes, needle) in cases {
        fs::write(&path, &bytes).unwrap();
        let log = start_must_fail(&dir, &args);
        assert!(
            log.contains("dump.akv") && log.contains(needle),
            "{what}: the error does not name dump.akv and {needle:?}:\n{log}"
        );
    }
    fs::write(&path, &good).unwrap();
    let s = Anykv::start(&dir, &args);
    assert_eq!(digest(&mut s.conn()), want);
}

// ---------------------------------------------------------------------------
// 8. BGREWRITEAOF
// ---------------------------------------------------------------------------

#[test]
fn bgrewriteaof_compacts_and_restarts() {
    let dir = TestDir::new("rewrite");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut s = Anykv::start(&dir, &args);
    let m0 = manifest(&dir);
    let old_files: Vec<String> = m0.iter().map(|(n, _, _)| n.clone()).collect();
    let old_max_seq = m0.iter().map(|(_, s, _)| *s).max().unwrap();
    // 5000 INCRs, pipelined in chunks (group commit keeps `always` cheap).
    let incr = vec!["INCR".to_string(), "counter".into()];
    for chunk in 0..5 {
        let replies = pipeline_lines(s.port, &vec![incr.clone(); 1000]);
        assert_eq!(replies.last().unwrap(), &format!(":{}", (chunk + 1) * 1000));
    }
    let mut c = s.conn();
    ok(&mut c, &["SET", "other", "value"]);
    let size_before: u64 = info_field(&mut c, "aof_current_size").parse().unwrap();
    assert!(
        size_before > 5000 * 20,
        "aof_current_size {size_before} after 5000 INCRs"
    );
    let digest_before = digest(&mut c);
    let r = text(&mut c, &["BGREWRITEAOF"]);
    assert!(r.contains("rewriting"), "BGREWRITEAOF replied {r:?}");
    let i = wait_info(&mut c, "the rewrite", |i| {
        field(i, "aof_rewrite_in_progress") == "0" && field(i, "aof_rewrites") == "1"
    });
    assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    let size_after: u64 = field(&i, "aof_current_size").parse().unwrap();
    assert!(
        size_after < size_before / 10,
        "aof_current_size {size_before} -> {size_after} after BGREWRITEAOF"
    );
    let m = manifest(&dir);
    let bases: Vec<_> = m.iter().filter(|(_, _, t)| t == "b").collect();
    let incrs: Vec<_> = m.iter().filter(|(_, _, t)| t == "i").collect();
    assert!(
        bases.len() == 1 && incrs.len() == 1 && m.len() == 2,
        "manifest after the rewrite: {m:?}"
    );
    assert!(
        incrs[0].1 > old_max_seq && bases[0].1 > old_max_seq,
        "manifest after the rewrite {m:?} (before: {m0:?})"
    );
    let listing = aof_dir_listing(&dir);
    for old in &old_files {
        assert!(
            !listing.contains(old),
            "{old} still there after the rewrite: {listing:?}"
        );
    }
    let mut want_listing = vec![
        "appendonly.aof.manifest".to_string(),
        bases[0].0.clone(),
        incrs[0].0.clone(),
    ];
    want_listing.sort();
    assert_eq!(listing, want_listing, "files in appendonlydir");
    let base_len = file_len(&dir.aof_dir().join(&bases[0].0));
    assert!(base_len < size_before, "base {base_len} bytes");
    assert_eq!(
        digest(&mut c),
        digest_before,
        "the rewrite changed the data"
    );

    // More writes on top of the new base, then a crash.
    for _ in 0..100 {
        int(&mut c, &["INCR", "counter"]);
    }
    ok(&mut c, &["SET", "late", "write"]);
    let want = digest(&mut c);
    drop(c);
    s.kill9();
    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    assert_eq!(
        text(&mut c, &["GET", "counter"]),
        "5100",
        "{}",
        s.describe()
    );
    assert_eq!(digest(&mut c), want);
    assert_eq!(manifest(&dir), m, "a restart changed the manifest");

    // A second rewrite while clients keep writing (overwrites, deletes and
    // new keys over a populated keyspace): with `always`, everything
    // acknowledged before the kill is back, whatever the rewrite caught.
    ok(&mut c, &["DEBUG", "POPULATE", "50000", "key", "32"]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let (stop, acked, port) = (stop.clone(), acked.clone(), s.port);
            thread::spawn(move || hammer(port, 0, 100 + t, &stop, &acked))
        })
        .collect();
    while acked.load(Ordering::Relaxed) < 100 {
        thread::sleep(Duration::from_millis(1));
    }
    let r = text(&mut c, &["BGREWRITEAOF"]);
    assert!(r.contains("rewriting"), "BGREWRITEAOF replied {r:?}");
    let i = wait_info(&mut c, "the second rewrite", |i| {
        field(i, "aof_rewrite_in_progress") == "0" && field(i, "aof_rewrites") == "1"
    });
    assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    // Writes keep going on top of the new base for a moment.
    let at_end = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < at_end + 200 {
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let want = digest(&mut c);
    let m2 = manifest(&dir);
    assert!(
        m2.len() == 2 && m2.iter().all(|(_, seq, _)| *seq > incrs[0].1),
        "manifest after the second rewrite: {m2:?}"
    );
    drop(c);
    let mut s = s;
    s.kill9();
    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    assert_eq!(
        digest(&mut c),
        want,
        "rewrite under {total} concurrent writes, then kill -9: the data differs\n{}",
        s.describe()
    );
    assert_eq!(text(&mut c, &["GET", "counter"]), "5100");
}

// ---------------------------------------------------------------------------
// 9. DEBUG RELOAD, FLUSHALL with save points, SHUTDOWN modes
// ---------------------------------------------------------------------------

#[test]
fn debug_reload_flushall_and_shutdown_modes() {
    let dir = TestDir::new("shutdown");
    let saving = ["--save", "3600 1", "--appendonly", "no"];
    let mut s = Anykv::start(&dir, &saving);
    let mut c = s.conn();

    // DEBUG RELOAD keeps everything.
    ok(&mut c, &["SET", "a", "1"]);
    ok(&mut c, &["SET", "b", "x", "EX", "1000"]);
    int(&mut c, &["RPUSH", "l", "1", "2", "3"]);
    int(&mut c, &["HSET", "h", "f", "v"]);
    int(&mut c, &["ZADD", "z", "1.5", "m"]);
    int(&mut c, &["SADD", "s", "m"]);
    ok(&mut c, &["SELECT", "5"]);
    ok(&mut c, &["SET", "in5", "v"]);
    ok(&mut c, &["SELECT", "0"]);
    let d = digest(&mut c);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    assert_eq!(digest(&mut c), d, "DEBUG RELOAD changed the keyspace");
    assert!(int(&mut c, &["PTTL", "b"]) > 0);
    assert!(dir.file("dump.akv").exists());

    // FLUSHALL with save points rewrites the snapshot empty.
    ok(&mut c, &["FLUSHALL"]);
    drop(c);
    s.kill9();
    s = Anykv::start(&dir, &saving);
    let mut c = s.conn();
    assert_eq!(
        digest(&mut c),
        EMPTY_DIGEST,
        "FLUSHALL then kill -9: the old data came back\n{}",
        s.describe()
    );

    // SHUTDOWN NOSAVE: what was saved, not what came after.
    ok(&mut c, &["SET", "saved", "1"]);
    ok(&mut c, &["SAVE"]);
    ok(&mut c, &["SET", "unsaved", "1"]);
    drop(c);
    s.shutdown(Some("NOSAVE"));
    s = Anykv::start(&dir, &saving);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["EXISTS", "saved"]), 1, "{}", s.describe());
    assert_eq!(
        int(&mut c, &["EXISTS", "unsaved"]),
        0,
        "SHUTDOWN NOSAVE saved the keyspace"
    );
    assert_eq!(int(&mut c, &["DBSIZE"]), 1);

    // SHUTDOWN SAVE: everything.
    ok(&mut c, &["SET", "at-shutdown", "1"]);
    let d = digest(&mut c);
    drop(c);
    s.shutdown(Some("SAVE"));
    s = Anykv::start(&dir, &saving);
    let mut c = s.conn();
    assert_eq!(
        digest(&mut c),
        d,
        "SHUTDOWN SAVE did not save the last writes"
    );
    assert_eq!(int(&mut c, &["EXISTS", "at-shutdown"]), 1);
    drop(c);
    s.shutdown(Some("NOSAVE"));

    // Without save points a plain SHUTDOWN saves nothing.
    let no_save = ["--save", "", "--appendonly", "no"];
    let dump = dir.file("dump.akv");
    let before = fs::read(&dump).unwrap();
    s = Anykv::start(&dir, &no_save);
    let mut c = s.conn();
    assert_eq!(digest(&mut c), d);
    ok(&mut c, &["SET", "never-saved", "1"]);
    drop(c);
    s.shutdown(None);
    assert_eq!(
        fs::read(&dump).unwrap(),
        before,
        "SHUTDOWN with save \"\" rewrote dump.akv"
    );
    drop(s);

    let fresh = TestDir::new("shutdown-fresh");
    let mut s = Anykv::start(&fresh, &no_save);
    ok(&mut s.conn(), &["SET", "k", "v"]);
    s.shutdown(None);
    assert!(
        !fresh.file("dump.akv").exists(),
        "SHUTDOWN with save \"\" wrote dump.akv"
    );
}

// ---------------------------------------------------------------------------
// 10. Save rules
// ---------------------------------------------------------------------------

#[test]
fn snapshot_save_rules_fire() {
    let dir = TestDir::new("save-rules");
    let mut s = Anykv::start(&dir, &["--save", "1 1", "--appendonly", "no"]);
    let mut c = s.conn();
    // Nothing changed: no save, however long we wait.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(info_field(&mut c, "rdb_saves"), "0");
    assert!(!dir.file("dump.akv").exists(), "saved with no changes");

    ok(&mut c, &["SET", "k", "v"]);
    let t = Instant::now();
    let i = wait_info(&mut c, "the save rule '1 1' to fire", |i| {
        field(i, "rdb_saves") != "0" && field(i, "rdb_bgsave_in_progress") == "0"
    });
    eprintln!("save rule '1 1' fired after {:?}", t.elapsed());
    assert_eq!(field(&i, "rdb_last_bgsave_status"), "ok", "{i:?}");
    assert_eq!(field(&i, "rdb_changes_since_last_save"), "0", "{i:?}");
    assert!(
        dir.file("dump.akv").exists(),
        "rdb_saves went up but no dump.akv"
    );
    drop(c);
    s.kill9();
    let s = Anykv::start(&dir, &["--save", "", "--appendonly", "no"]);
    assert_eq!(text(&mut s.conn(), &["GET", "k"]), "v");
}

/// Automatic rewrite: once the log has grown past `auto-aof-rewrite-min-size`
/// by `auto-aof-rewrite-percentage` of its size after the last rewrite, cron
/// starts a rewrite by itself, and the data survives a restart.
#[test]
fn aof_rewrites_itself_on_growth() {
    let dir = TestDir::new("autorewrite");
    let args = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-percentage",
        "100",
        "--auto-aof-rewrite-min-size",
        "64kb",
    ];
    let mut s = Anykv::start(&dir, &args);
    let incr = vec!["INCR".to_string(), "counter".into()];
    for _ in 0..5 {
        pipeline_lines(s.port, &vec![incr.clone(); 1000]);
    }
    let mut c = s.conn();
    let i = wait_info(&mut c, "an automatic rewrite", |i| {
        field(i, "aof_rewrites") != "0" && field(i, "aof_rewrite_in_progress") == "0"
    });
    assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    let size: u64 = field(&i, "aof_current_size").parse().unwrap();
    assert!(
        size < 64 * 1024,
        "aof_current_size {size} after the rewrite"
    );
    assert_eq!(text(&mut c, &["GET", "counter"]), "5000");
    drop(c);
    s.kill9();
    let s = Anykv::start(&dir, &args);
    let mut c = s.conn();
    assert_eq!(text(&mut c, &["GET", "counter"]), "5000");
}

/// CONFIG SET appendonly yes at run time: the log starts with a rewrite
/// whose base holds everything so far, and a restart with the log on sees
/// all of it; CONFIG SET appendonly no closes it.
#[test]
fn appendonly_switched_on_at_runtime() {
    let dir = TestDir::new("aofswitch");
    let mut s = Anykv::start(&dir, &["--save", "", "--appendonly", "no"]);
    let mut c = s.conn();
    for i in 0..100 {
        ok(&mut c, &["SET", &format!("before:{i}"), &i.to_string()]);
    }
    ok(&mut c, &["CONFIG", "SET", "appendonly", "yes"]);
    let i = wait_info(&mut c, "the log to start", |i| {
        field(i, "aof_enabled") == "1"
            && field(i, "aof_rewrites") == "1"
            && field(i, "aof_rewrite_in_progress") == "0"
    });
    assert_eq!(field(&i, "aof_last_bgrewrite_status"), "ok", "{i:?}");
    for i in 0..100 {
        ok(&mut c, &["SET", &format!("after:{i}"), &i.to_string()]);
    }
    let before = digest(&mut c);
    drop(c);
    s.kill9();
    let mut s = Anykv::start(&dir, &["--save", "", "--appendonly", "yes"]);
    let mut c = s.conn();
    assert_eq!(digest(&mut c), before);
    ok(&mut c, &["CONFIG", "SET", "appendonly", "no"]);
    wait_info(&mut c, "the log to stop", |i| {
        field(i, "aof_enabled") == "0"
    });
    drop(c);
    s.shutdown(Some("NOSAVE"));
}
