//! The store-side shape replication builds on, end to end with the real
//! binary: a tenant's replication id and offset survive restarts (from the
//! append-only log and from a snapshot), and `CLIENT PAUSE WRITE` holds the
//! offset still (writes and may-replicate commands wait, expiry waits).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{anykv_bin, start_anykv_with, RespConn, ServerProcess, Value};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p =
            std::env::temp_dir().join(format!("anykv-repl-shape-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
    fn dir(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

/// A field of one INFO section.
fn info_in(c: &mut RespConn, section: &str, field: &str) -> String {
    let Value::Bulk(text) = call(c, &["INFO", section]) else {
        panic!("INFO {section} is not a bulk string");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

fn info(c: &mut RespConn, field: &str) -> String {
    info_in(c, "replication", field)
}

fn ids(c: &mut RespConn) -> (String, u64) {
    let id = info(c, "master_replid");
    let off = info(c, "master_repl_offset").parse().expect("offset");
    (id, off)
}

fn start(dir: &Scratch, extra: &[&str]) -> ServerProcess {
    let d = dir.dir();
    let mut args = vec!["--dir", d.as_str()];
    args.extend_from_slice(extra);
    start_anykv_with(&anykv_bin(), &args)
}

fn workload(c: &mut RespConn) {
    for cmd in [
        &["SET", "a", "1"][..],
        &["SELECT", "2"],
        &["RPUSH", "l", "x", "y", "z"],
        &["MULTI"],
        &["INCR", "n"],
        &["HSET", "h", "f", "v"],
        &["EXEC"],
        &["SET", "t", "v", "PX", "100000"],
    ] {
        assert!(!call(c, cmd).is_error(), "{cmd:?}");
    }
}

/// With the append-only log (`always`), a restart replays the log in the
/// apply mode to the same offset, byte for byte. After kill -9 the history
/// continues under a new id (the old one kept as replid2 up to that
/// offset); after a graceful shutdown under the same id.
#[test]
fn replication_id_and_offset_survive_a_restart_from_the_log() {
    let dir = Scratch::new("aof");
    let flags = ["--appendonly", "yes", "--appendfsync", "always"];
    let srv = start(&dir, &flags);
    let mut c = srv.connect();
    let fresh = ids(&mut c);
    workload(&mut c);
    // A rewrite in the middle: the new base carries the ids and offset.
    assert!(!call(&mut c, &["BGREWRITEAOF"]).is_error());
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_persistence(&mut c, "aof_rewrite_in_progress") != "0" {
        assert!(Instant::now() < deadline, "rewrite did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!call(&mut c, &["SET", "after", "rewrite"]).is_error());
    let before = ids(&mut c);
    assert!(before.1 > fresh.1, "writes moved the offset");
    drop(c);
    drop(srv); // SIGKILL

    // After kill -9 the data is all there (appendfsync always) at the same
    // offset, but replicas may hold bytes the disk lost: the history goes
    // on under a new id, the old one valid up to this offset (a replica at
    // or below it resumes with a partial resync, one beyond gets a full).
    let srv = start(&dir, &flags);
    let mut c = srv.connect();
    let (id, off) = ids(&mut c);
    assert_eq!(off, before.1, "offset after kill -9");
    assert_ne!(id, before.0);
    assert_eq!(info(&mut c, "master_replid2"), before.0);
    assert_eq!(
        info(&mut c, "second_repl_offset"),
        (before.1 + 1).to_string()
    );
    assert!(!call(&mut c, &["SET", "more", "1"]).is_error());
    assert!(ids(&mut c).1 > before.1);
    // A graceful shutdown: the same id and offset after the restart.
    let again = ids(&mut c);
    let _ = c.cmd(&["SHUTDOWN"]);
    wait_exit(srv);
    let srv = start(&dir, &flags);
    let mut c = srv.connect();
    assert_eq!(
        ids(&mut c),
        again,
        "replid and offset after a clean restart"
    );
    // Written in db 2 after the rewrite started a new segment: the segment
    // names its database, so the key comes back in db 2.
    call(&mut c, &["SELECT", "2"]);
    assert_eq!(
        call(&mut c, &["GET", "after"]),
        Value::Bulk(b"rewrite".to_vec())
    );
}

/// From a snapshot (no log), after a graceful shutdown: the ids and the
/// offset it was taken at.
#[test]
fn replication_id_and_offset_survive_a_restart_from_a_snapshot() {
    let dir = Scratch::new("rdb");
    let srv = start(&dir, &[]);
    let mut c = srv.connect();
    workload(&mut c);
    assert_eq!(call(&mut c, &["SAVE"]), Value::Simple(b"OK".to_vec()));
    let saved = ids(&mut c);
    let _ = c.cmd(&["SHUTDOWN", "NOSAVE"]);
    wait_exit(srv);
    let srv = start(&dir, &[]);
    let mut c = srv.connect();
    assert_eq!(ids(&mut c), saved);
    assert_eq!(info(&mut c, "role"), "master");
}

/// Waits for a server that was told to SHUTDOWN to exit.
fn wait_exit(mut srv: ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.exited().is_none() {
        assert!(Instant::now() < deadline, "the server did not shut down");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn info_persistence(c: &mut RespConn, field: &str) -> String {
    info_in(c, "persistence", field)
}

/// Sends a command on a raw socket and returns what arrives within `wait`
/// (empty: no reply yet).
fn send_and_peek(s: &mut TcpStream, cmd: &[u8], wait: Duration) -> Vec<u8> {
    s.write_all(cmd).expect("send");
    read_within(s, wait)
}

fn read_within(s: &mut TcpStream, wait: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// CLIENT PAUSE WRITE holds back writes, PUBLISH and an EXEC that queued a
/// write (not reads, not an EXEC of reads), and stops expiry: a key whose
/// TTL passes during the pause is hidden from reads but not deleted, so
/// the replication offset stands still until the pause ends.
#[test]
fn client_pause_write_holds_the_offset_still() {
    let dir = Scratch::new("pause");
    let srv = start(&dir, &["--hz", "50"]);
    let mut admin = srv.connect();
    assert!(!call(&mut admin, &["SET", "soon", "x", "PX", "150"]).is_error());
    assert!(!call(&mut admin, &["SET", "stay", "y"]).is_error());
    assert_eq!(
        call(&mut admin, &["CLIENT", "PAUSE", "5000", "WRITE"]),
        Value::Simple(b"OK".to_vec())
    );
    let (_, off) = ids(&mut admin);
    std::thread::sleep(Duration::from_millis(400));

    let mut reader = srv.connect();
    assert_eq!(
        call(&mut reader, &["GET", "stay"]),
        Value::Bulk(b"y".to_vec())
    );
    assert_eq!(
        call(&mut reader, &["EXISTS", "soon"]),
        Value::Int(0),
        "hidden"
    );
    assert_eq!(call(&mut reader, &["DBSIZE"]), Value::Int(2), "but kept");
    assert_eq!(call(&mut reader, &["MULTI"]), Value::Simple(b"OK".to_vec()));
    call(&mut reader, &["GET", "stay"]);
    assert!(
        matches!(call(&mut reader, &["EXEC"]), Value::Array(_)),
        "EXEC of reads runs"
    );

    let port = srv.port;
    let mut w = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
    assert!(
        send_and_peek(&mut w, set, Duration::from_millis(300)).is_empty(),
        "SET ran while paused"
    );
    let mut p = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let publish = b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\nm\r\n";
    assert!(
        send_and_peek(&mut p, publish, Duration::from_millis(300)).is_empty(),
        "PUBLISH ran while paused"
    );
    let mut x = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let tx = b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n";
    // MULTI answers; INCR waits before it is even queued (Redis 7.0's order).
    let got = send_and_peek(&mut x, tx, Duration::from_millis(300));
    assert_eq!(got, b"+OK\r\n", "MULTI then a held INCR");
    assert_eq!(ids(&mut admin).1, off, "the offset moved during the pause");

    assert_eq!(
        call(&mut admin, &["CLIENT", "UNPAUSE"]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(read_within(&mut w, Duration::from_secs(5)), b"+OK\r\n");
    assert_eq!(read_within(&mut p, Duration::from_secs(5)), b":0\r\n");
    assert_eq!(read_within(&mut x, Duration::from_secs(5)), b"+QUEUED\r\n");
    // Expiry resumes: the key goes, as a logged DEL.
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&mut admin, &["DBSIZE"]) != Value::Int(2) {
        assert!(Instant::now() < deadline, "expiry did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ids(&mut admin).1 > off);
}

fn wait_log_on(c: &mut RespConn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if info_persistence(c, "aof_enabled") == "1"
            && info_persistence(c, "aof_rewrite_in_progress") == "0"
            && info_persistence(c, "aof_rewrite_scheduled") == "0"
        {
            return;
        }
        assert!(Instant::now() < deadline, "the log did not come on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log switched on (and off and on again) at runtime by a connection
/// in database 3: the new segments name their database, never append to an
/// older segment, and after kill -9 every key is back in database 3 at the
/// same offset.
#[test]
fn the_log_switched_on_at_runtime_keeps_databases_and_offsets() {
    let dir = Scratch::new("aof-on");
    let srv = start(&dir, &["--appendfsync", "always"]);
    let mut c = srv.connect();
    for cmd in [
        &["SELECT", "3"][..],
        &["SET", "a", "1"],
        &["CONFIG", "SET", "appendonly", "yes"],
    ] {
        assert!(!call(&mut c, cmd).is_error(), "{cmd:?}");
    }
    wait_log_on(&mut c);
    assert!(!call(&mut c, &["SET", "b", "2"]).is_error());
    assert!(!call(&mut c, &["CONFIG", "SET", "appendonly", "no"]).is_error());
    assert!(!call(&mut c, &["SET", "c", "3"]).is_error());
    assert!(!call(&mut c, &["CONFIG", "SET", "appendonly", "yes"]).is_error());
    wait_log_on(&mut c);
    assert!(!call(&mut c, &["SET", "d", "4"]).is_error());
    let before = ids(&mut c).1;
    drop(c);
    drop(srv); // SIGKILL
    let srv = start(&dir, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = srv.connect();
    assert_eq!(ids(&mut c).1, before, "offset after the restart");
    assert_eq!(
        call(&mut c, &["DBSIZE"]),
        Value::Int(0),
        "keys leaked into db 0"
    );
    call(&mut c, &["SELECT", "3"]);
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        assert_eq!(
            call(&mut c, &["GET", k]),
            Value::Bulk(v.as_bytes().to_vec()),
            "{k}"
        );
    }
}
