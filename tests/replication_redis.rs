//! Redis's replication protocol with the real redis-server 7.0 as the
//! replica of an `anykv server`: full sync of every type (RDB, diskless
//! `$EOF:` framing), the live stream under a random write load over every
//! type with TTLs, a dropped link resumed by a partial resync (asserted on
//! the primary's `sync_partial_ok`), `WAIT`, `ROLE`, `INFO replication`,
//! and `redis-cli --rdb` / `--replica` against anykv; anykv as the replica
//! of redis-server (with `REPLICAOF NO ONE` and the old primary continuing
//! from the new one by partial resync), and of another anykv (a replica
//! never expires a key before its primary's DEL).

mod common;
mod keyspace;

use std::time::{Duration, Instant};

use anykv_server::persist::codec::Thresholds;
use common::{anykv_bin, start_anykv_with, start_redis, RespConn, ServerProcess, Value};
use keyspace::{call, compare, info, keyspace_of, random_write, run, wait_for};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn start_primary() -> ServerProcess {
    start_anykv_with(&anykv_bin(), &["--hz", "50"])
}

fn start_replica_of(port: u16) -> ServerProcess {
    start_redis(&["--replicaof".into(), "127.0.0.1".into(), port.to_string()])
}

/// Waits until the replica has everything the primary logged, and the
/// primary has its acknowledgement.
fn caught_up(p: &mut RespConn, r: &mut RespConn) {
    wait_for("the replica to catch up", Duration::from_secs(20), || {
        let master = info(p, "replication", "master_repl_offset");
        let replica = info(r, "replication", "slave_repl_offset");
        master.is_some() && master == replica
    });
}

/// The load's TTLs are all under 400 ms: after 500 ms every one has
/// passed on both sides (both hide such keys from reads, whether or not
/// the primary's DEL has arrived), and the replica has caught up.
fn settle(p: &mut RespConn, r: &mut RespConn) {
    std::thread::sleep(Duration::from_millis(500));
    caught_up(p, r);
}

/// Keys of every type with long TTLs (which the random loads never leave
/// alive long enough to compare) keep them across a full sync, in both
/// directions: each key's PTTL on the replica is the primary's, give or
/// take the sync's duration.
#[test]
fn ttls_survive_a_full_sync_both_ways() {
    let setup: [&[&str]; 10] = [
        &["SET", "s", "v", "EX", "1000"],
        &["RPUSH", "l", "a", "b"],
        &["PEXPIRE", "l", "2000000"],
        &["SADD", "set", "a", "b"],
        &["EXPIRE", "set", "3000"],
        &["ZADD", "z", "1", "a"],
        &["EXPIRE", "z", "4000"],
        &["HSET", "h", "f", "v"],
        &["EXPIRE", "h", "5000"],
        &["SET", "forever", "v"],
    ];
    let keys = ["s", "l", "set", "z", "h", "forever"];
    let check = |p: &mut RespConn, r: &mut RespConn, what: &str| {
        for k in keys {
            let (Value::Int(want), Value::Int(got)) =
                (call(p, &["PTTL", k]), call(r, &["PTTL", k]))
            else {
                panic!("{what}: PTTL {k}");
            };
            if want < 0 {
                assert_eq!(got, want, "{what}: {k} has no TTL on the primary");
            } else {
                assert!(
                    got > 0 && (want - got).abs() < 10_000,
                    "{what}: {k}: PTTL {got} on the replica, {want} on the primary"
                );
            }
        }
    };
    // anykv primary, redis-server replica.
    let a = start_primary();
    let mut ac = a.connect();
    for cmd in setup {
        run(
            &mut ac,
            &cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
    }
    let r = start_replica_of(a.port);
    let mut rc = r.connect();
    caught_up(&mut ac, &mut rc);
    check(&mut ac, &mut rc, "anykv -> redis-server");
    // redis-server primary, anykv replica.
    let p = start_redis(&[]);
    let mut pc = p.connect();
    for cmd in setup {
        run(
            &mut pc,
            &cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
    }
    let b = start_primary();
    let mut bc = b.connect();
    call(&mut bc, &["REPLICAOF", "127.0.0.1", &p.port.to_string()]);
    wait_for("anykv's link", Duration::from_secs(20), || {
        info(&mut bc, "replication", "master_link_status").as_deref() == Some("up")
    });
    caught_up(&mut pc, &mut bc);
    check(&mut pc, &mut bc, "redis-server -> anykv");
}

#[test]
fn redis_server_replicates_from_anykv() {
    let primary = start_primary();
    let mut p = primary.connect();
    // Before the replica exists: every type, TTLs, several databases.
    let seed: u64 = std::env::var("ANYKV_REPL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..1500 {
        run(&mut p, &random_write(&mut rng));
    }
    call(&mut p, &["SELECT", "0"]);
    for i in 0..300 {
        run(
            &mut p,
            &[
                "HSET".into(),
                "bighash".into(),
                format!("f{i}"),
                i.to_string(),
            ],
        );
    }

    let replica = start_replica_of(primary.port);
    let mut r = replica.connect();
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    assert_eq!(info(&mut p, "stats", "sync_full").as_deref(), Some("1"));
    // Writes continue while and after it syncs.
    for _ in 0..1500 {
        run(&mut p, &random_write(&mut rng));
    }
    settle(&mut p, &mut r);
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));

    // The primary's view: one replica, online, acknowledged up to date.
    assert_eq!(
        info(&mut p, "replication", "connected_slaves").as_deref(),
        Some("1")
    );
    let slave0 = info(&mut p, "replication", "slave0").expect("slave0");
    assert!(slave0.contains("state=online"), "{slave0}");
    match call(&mut p, &["ROLE"]) {
        Value::Array(v) => {
            assert_eq!(v[0], Value::Bulk(b"master".to_vec()));
            assert!(matches!(&v[2], Value::Array(rs) if rs.len() == 1), "{v:?}");
        }
        other => panic!("ROLE: {other:?}"),
    }
    // WAIT: this connection's writes reach the replica.
    run(&mut p, &["SET".into(), "waited".into(), "1".into()]);
    assert_eq!(call(&mut p, &["WAIT", "1", "5000"]), Value::Int(1));
    // ... and more replicas than exist: the timeout, with the count.
    let t0 = Instant::now();
    assert_eq!(call(&mut p, &["WAIT", "2", "300"]), Value::Int(1));
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // The link drops: the replica comes back with a partial resync and
    // gets what it missed.
    let partial_before: u64 = info(&mut p, "stats", "sync_partial_ok")
        .unwrap()
        .parse()
        .unwrap();
    let id = client_list_id(&mut p, "cmd=psync").expect("the replica's connection");
    assert_eq!(call(&mut p, &["CLIENT", "KILL", "ID", &id]), Value::Int(1));
    for _ in 0..300 {
        run(&mut p, &random_write(&mut rng));
    }
    wait_for("a partial resync", Duration::from_secs(20), || {
        info(&mut p, "stats", "sync_partial_ok")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > partial_before)
    });
    assert_eq!(
        info(&mut p, "stats", "sync_full").as_deref(),
        Some("1"),
        "no second full sync"
    );
    settle(&mut p, &mut r);
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));
}

#[test]
fn redis_cli_takes_an_rdb_and_follows_the_stream() {
    let primary = start_primary();
    let mut p = primary.connect();
    for i in 0..50 {
        call(&mut p, &["SET", &format!("k{i}"), &i.to_string()]);
    }
    call(&mut p, &["SELECT", "2"]);
    call(&mut p, &["ZADD", "z", "1", "a", "2", "b"]);
    let dir = std::env::temp_dir().join(format!("anykv-cli-rdb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("snap.rdb");
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &primary.port.to_string(), "--rdb"])
        .arg(&file)
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut keys = 0;
    let meta = anykv_server::rdb::read(
        std::fs::File::open(&file).expect("rdb"),
        &Thresholds::default(),
        16,
        |_| {
            keys += 1;
            Ok(())
        },
    )
    .expect("the RDB anykv sent");
    assert_eq!(keys, 51);
    assert!(meta.aux("repl-id").is_some());
    let _ = std::fs::remove_dir_all(&dir);

    // --replica prints the stream as it comes.
    // (stdbuf: redis-cli's stdout is a pipe here; unbuffered, nothing is
    // lost when it is killed.)
    let mut child = std::process::Command::new("stdbuf")
        .args([
            "-o0",
            "redis-cli",
            "-p",
            &primary.port.to_string(),
            "--replica",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli --replica");
    wait_for("redis-cli to attach", Duration::from_secs(10), || {
        info(&mut p, "replication", "connected_slaves").as_deref() == Some("1")
    });
    call(&mut p, &["SET", "live", "value"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"SET\",\"live\",\"value\""), "{text}");
}

/// The keyspaces of redis-server and of its replica anykv, with what
/// Redis 7.0 does not send its replicas (a group's read counter after an
/// acknowledged read) left out.
fn compare_as_replica(redis: &mut RespConn, anykv: &mut RespConn) {
    let (mut want, mut got) = (keyspace_of(redis), keyspace_of(anykv));
    keyspace::forget_entries_read(&mut want);
    keyspace::forget_entries_read(&mut got);
    compare(&want, &got);
}

fn client_list_id(c: &mut RespConn, needle: &str) -> Option<String> {
    let Value::Bulk(b) = call(c, &["CLIENT", "LIST"]) else {
        return None;
    };
    String::from_utf8_lossy(&b)
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next())
        .map(|s| s.to_string())
}

fn counter(c: &mut RespConn, field: &str) -> u64 {
    info(c, "stats", field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO stats {field}"))
}

/// anykv as the replica of a real redis-server: full sync, the stream under
/// a random load, client writes refused, a dropped link resumed with a
/// partial resync (asserted on redis-server's counters), then `REPLICAOF NO
/// ONE`: anykv takes over with a new id, keeps the old one as replid2, and
/// the old primary, turned replica, continues from it with a partial resync
/// (psync2), not a full one.
#[test]
fn anykv_replicates_from_redis_server_and_takes_over() {
    let redis = start_redis(&["--repl-diskless-sync-delay".into(), "0".into()]);
    let mut r = redis.connect();
    let mut rng = StdRng::seed_from_u64(0xfee1);
    for _ in 0..1500 {
        run(&mut r, &random_write(&mut rng));
    }
    let anykv = start_primary();
    let mut a = anykv.connect();
    assert_eq!(
        call(&mut a, &["REPLICAOF", "127.0.0.1", &redis.port.to_string()]),
        Value::Simple(b"OK".to_vec())
    );
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut a, "replication", "master_link_status").as_deref() == Some("up")
    });
    for _ in 0..1500 {
        run(&mut r, &random_write(&mut rng));
    }
    let caught = |r: &mut RespConn, a: &mut RespConn| {
        wait_for("anykv to catch up", Duration::from_secs(20), || {
            let m = info(r, "replication", "master_repl_offset");
            m.is_some() && m == info(a, "replication", "slave_repl_offset")
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    caught(&mut r, &mut a);
    compare_as_replica(&mut r, &mut a);
    match call(&mut a, &["SET", "x", "1"]) {
        Value::Error(e) => assert!(
            e.starts_with(b"READONLY"),
            "{}",
            String::from_utf8_lossy(&e)
        ),
        other => panic!("a replica took a write: {other:?}"),
    }
    assert_eq!(
        info(&mut a, "replication", "role").as_deref(),
        Some("slave")
    );
    // redis-server's WAIT counts anykv's acknowledgement.
    run(&mut r, &["SET".into(), "acked".into(), "1".into()]);
    assert_eq!(call(&mut r, &["WAIT", "1", "5000"]), Value::Int(1));

    // The link drops: anykv resumes with a partial resync.
    let (full, partial) = (
        counter(&mut r, "sync_full"),
        counter(&mut r, "sync_partial_ok"),
    );
    call(&mut r, &["CLIENT", "KILL", "TYPE", "replica"]);
    for _ in 0..300 {
        run(&mut r, &random_write(&mut rng));
    }
    wait_for("a partial resync", Duration::from_secs(20), || {
        counter(&mut r, "sync_partial_ok") > partial
    });
    assert_eq!(counter(&mut r, "sync_full"), full, "no second full sync");
    std::thread::sleep(Duration::from_millis(500));
    caught(&mut r, &mut a);
    compare_as_replica(&mut r, &mut a);

    // Take over.
    let old_id = info(&mut r, "replication", "master_replid").expect("replid");
    assert_eq!(
        call(&mut a, &["REPLICAOF", "NO", "ONE"]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        info(&mut a, "replication", "role").as_deref(),
        Some("master")
    );
    assert_eq!(info(&mut a, "replication", "master_replid2"), Some(old_id));
    assert_ne!(
        info(&mut a, "replication", "master_replid"),
        info(&mut r, "replication", "master_replid")
    );
    run(&mut a, &["SET".into(), "after".into(), "takeover".into()]);
    // The old primary follows the new one from where it was.
    let a_partial = counter(&mut a, "sync_partial_ok");
    call(&mut r, &["REPLICAOF", "127.0.0.1", &anykv.port.to_string()]);
    wait_for(
        "redis-server to follow anykv",
        Duration::from_secs(20),
        || info(&mut r, "replication", "master_link_status").as_deref() == Some("up"),
    );
    assert_eq!(
        counter(&mut a, "sync_partial_ok"),
        a_partial + 1,
        "psync2 continuation"
    );
    assert_eq!(
        counter(&mut a, "sync_full"),
        0,
        "no full sync after the takeover"
    );
    wait_for(
        "the write after the takeover",
        Duration::from_secs(10),
        || call(&mut r, &["GET", "after"]) == Value::Bulk(b"takeover".to_vec()),
    );
}

/// Two anykv servers: the replica applies its primary's effects byte for
/// byte (equal offsets), never expires a key on its own — a key whose TTL
/// passed is hidden from reads but kept until the primary's DEL arrives —
/// and refuses client writes.
#[test]
fn an_anykv_replica_waits_for_its_primarys_del() {
    let primary = start_anykv_with(&anykv_bin(), &["--enable-debug-command", "yes"]);
    let mut p = primary.connect();
    // The primary deletes only when asked (no active expiry): the replica
    // must not run ahead of it.
    assert_eq!(
        call(&mut p, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]),
        Value::Simple(b"OK".to_vec())
    );
    call(&mut p, &["SET", "soon", "v", "PX", "300"]);
    call(&mut p, &["SET", "stays", "v"]);
    let replica = start_primary();
    let mut r = replica.connect();
    call(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        call(&mut r, &["EXISTS", "soon"]),
        Value::Int(0),
        "hidden after its TTL"
    );
    assert_eq!(
        call(&mut r, &["DBSIZE"]),
        Value::Int(2),
        "but kept until the DEL"
    );
    // The primary notices (lazily) and logs the DEL; the replica follows.
    assert_eq!(call(&mut p, &["GET", "soon"]), Value::Nil);
    wait_for("the DEL to arrive", Duration::from_secs(10), || {
        call(&mut r, &["DBSIZE"]) == Value::Int(1)
    });
    let po = info(&mut p, "replication", "master_repl_offset");
    wait_for("equal offsets", Duration::from_secs(10), || {
        info(&mut r, "replication", "slave_repl_offset") == po
    });
    assert_eq!(info(&mut r, "replication", "master_repl_offset"), po);
    match call(&mut r, &["DEL", "stays"]) {
        Value::Error(e) => assert!(e.starts_with(b"READONLY")),
        other => panic!("{other:?}"),
    }
    assert!(client_list_id(&mut p, "cmd=psync").is_some());
}

/// `min-replicas-to-write`: a primary without enough replicas that
/// acknowledged lately refuses writes (not reads) with -NOREPLICAS, and
/// takes them once a replica is attached. `replica-serve-stale-data no`: a
/// replica whose link is down refuses reads with -MASTERDOWN but still
/// answers INFO.
#[test]
fn min_replicas_and_stale_replicas_refuse_as_configured() {
    let primary = start_anykv_with(
        &anykv_bin(),
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "10",
        ],
    );
    let mut p = primary.connect();
    assert_eq!(
        call(&mut p, &["SET", "k", "v"]),
        Value::Error(b"NOREPLICAS Not enough good replicas to write.".to_vec())
    );
    assert_eq!(call(&mut p, &["GET", "k"]), Value::Nil);
    let replica = start_replica_of(primary.port);
    let mut r = replica.connect();
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_for("a good replica", Duration::from_secs(10), || {
        call(&mut p, &["SET", "k", "v"]) == Value::Simple(b"OK".to_vec())
    });

    // A replica of a primary that is not there.
    let closed = common::free_port();
    let stale = start_anykv_with(&anykv_bin(), &["--replica-serve-stale-data", "no"]);
    let mut s = stale.connect();
    call(&mut s, &["REPLICAOF", "127.0.0.1", &closed.to_string()]);
    assert_eq!(
        call(&mut s, &["GET", "k"]),
        Value::Error(
            b"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."
                .to_vec()
        )
    );
    assert_eq!(
        info(&mut s, "replication", "master_link_status").as_deref(),
        Some("down")
    );
}

/// `INFO replication`'s fields, in order, with their values.
fn replication_fields(c: &mut RespConn) -> Vec<(String, String)> {
    let Value::Bulk(text) = call(c, &["INFO", "replication"]) else {
        panic!("INFO replication");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The field names, less the per-replica `slaveN` lines.
fn field_names(fields: &[(String, String)]) -> Vec<&str> {
    fields
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !k.starts_with("slave") || !k[5..].starts_with(|c: char| c.is_ascii_digit()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `INFO replication` has redis-server 7.0's fields, in its order, in each
/// state: a primary under `min-replicas-to-write` (`min_slaves_good_slaves`),
/// a replica whose primary was never reached (`master_link_down_since_seconds`
/// -1), and one whose link was up and went down (the seconds since).
#[test]
fn info_replication_has_redis_fields_in_each_state() {
    let min = [
        "--min-replicas-to-write",
        "1",
        "--min-replicas-max-lag",
        "10",
    ];
    let anykv = start_anykv_with(&anykv_bin(), &min);
    let redis = start_redis(&min.map(String::from));
    let (mut a, mut r) = (anykv.connect(), redis.connect());
    let (fa, fr) = (replication_fields(&mut a), replication_fields(&mut r));
    assert_eq!(field_names(&fa), field_names(&fr), "a primary");
    assert_eq!(field(&fa, "min_slaves_good_slaves"), Some("0"));

    // Replicas of a port nothing listens on.
    let closed = common::free_port().to_string();
    for c in [&mut a, &mut r] {
        call(c, &["REPLICAOF", "127.0.0.1", &closed]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fa, fr) = (replication_fields(&mut a), replication_fields(&mut r));
    assert_eq!(field_names(&fa), field_names(&fr), "a replica never linked");
    assert_eq!(field(&fa, "master_link_down_since_seconds"), Some("-1"));

    // Replicas of a primary that goes away after their link was up.
    let primary = start_redis(&[]);
    let port = primary.port.to_string();
    for c in [&mut a, &mut r] {
        call(c, &["REPLICAOF", "127.0.0.1", &port]);
    }
    for c in [&mut a, &mut r] {
        wait_for("the link up", Duration::from_secs(20), || {
            info(c, "replication", "master_link_status").as_deref() == Some("up")
        });
    }
    let (fa, fr) = (replication_fields(&mut a), replication_fields(&mut r));
    assert_eq!(field_names(&fa), field_names(&fr), "a replica linked");
    drop(primary);
    for c in [&mut a, &mut r] {
        wait_for("the link down", Duration::from_secs(20), || {
            info(c, "replication", "master_link_status").as_deref() == Some("down")
        });
    }
    std::thread::sleep(Duration::from_millis(1100));
    let (fa, fr) = (replication_fields(&mut a), replication_fields(&mut r));
    assert_eq!(
        field_names(&fa),
        field_names(&fr),
        "a replica whose link went down"
    );
    let since: i64 = field(&fa, "master_link_down_since_seconds")
        .and_then(|v| v.parse().ok())
        .expect("master_link_down_since_seconds");
    assert!((1..=30).contains(&since), "down since {since} s");
}

/// An anykv primary holding `n` keys (DEBUG POPULATE's `key:<i>`).
fn populated_primary(n: usize) -> (ServerProcess, RespConn) {
    let primary = start_anykv_with(&anykv_bin(), &["--enable-debug-command", "yes"]);
    let mut p = primary.connect();
    assert_eq!(
        call(&mut p, &["DEBUG", "POPULATE", &n.to_string()]),
        Value::Simple(b"OK".to_vec())
    );
    (primary, p)
}

/// A thread running `round(conn, n)` for n = 0, 1, ... on its own
/// connection to `port` until the flag is set; joins to the sum of what the
/// rounds returned.
fn keep_writing(
    port: u16,
    round: impl Fn(&mut RespConn, u64) -> u64 + Send + 'static,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut w = RespConn::connect(port).expect("writer");
        let (mut n, mut sum) = (0u64, 0u64);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            sum += round(&mut w, n);
            n += 1;
        }
        sum
    });
    (stop, handle)
}

/// Writes that keep coming while replicas take a full sync reach them: an
/// anykv and a redis-server replica attach to a busy anykv primary (both
/// take the diskless `$EOF:` payload, which ends at its mark only if the
/// stream waits for the replica's first ACK), and both end equal to it.
#[test]
fn writes_during_a_full_sync_reach_the_replicas() {
    let (primary, mut p) = populated_primary(5000);
    let port = primary.port;
    let (stop, writer) = keep_writing(port, |w, n| {
        call(w, &["INCR", "counter"]);
        call(w, &["SET", &format!("w{}", n % 500), &n.to_string()]);
        1
    });
    std::thread::sleep(Duration::from_millis(100));
    let anykv_replica = start_primary();
    let mut a = anykv_replica.connect();
    call(&mut a, &["REPLICAOF", "127.0.0.1", &port.to_string()]);
    let redis_replica = start_replica_of(port);
    let mut r = redis_replica.connect();
    for (what, c) in [("anykv", &mut a), ("redis-server", &mut r)] {
        wait_for(
            &format!("the {what} replica's link"),
            Duration::from_secs(30),
            || info(c, "replication", "master_link_status").as_deref() == Some("up"),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    assert!(writes > 100, "only {writes} writes during the syncs");
    let want = info(&mut p, "replication", "master_repl_offset");
    for (what, c) in [("anykv", &mut a), ("redis-server", &mut r)] {
        wait_for(
            &format!("the {what} replica to catch up"),
            Duration::from_secs(30),
            || info(c, "replication", "slave_repl_offset") == want,
        );
    }
    let ks = keyspace_of(&mut p);
    compare(&ks, &keyspace_of(&mut a));
    compare(&ks, &keyspace_of(&mut r));
}

/// The full sync's payload is built in the background: the primary serves
/// writes (new keys, overwrites and deletions of keys the payload has yet
/// to reach) while `rdb_bgsave_in_progress` says the build is running, and
/// two redis-server replicas asking at once (the second waits for the
/// first's payload, then gets its own in the background too) end with
/// exactly the primary's keyspace (the payload holds the keyspace as of the
/// PSYNC, the stream what came after).
#[test]
fn the_payload_is_built_while_writes_go_on() {
    let (primary, mut p) = populated_primary(40000);
    let port = primary.port;
    let (stop, writer) = keep_writing(port, |w, n| {
        let building = |w: &mut RespConn| {
            info(w, "persistence", "rdb_bgsave_in_progress").as_deref() == Some("1")
        };
        let before = building(w);
        let k = (n * 7919) % 40000;
        call(w, &["SET", &format!("key:{k}"), &format!("new{n}")]);
        call(w, &["DEL", &format!("key:{}", (k + 1) % 40000)]);
        call(w, &["SET", &format!("fresh{n}"), "1"]);
        u64::from(before && building(w))
    });
    // Two replicas asking at once: the second waits for the first's
    // payload to be built, then gets its own, also in the background.
    let replicas = [start_redis(&[]), start_redis(&[])];
    let mut rs: Vec<RespConn> = replicas.iter().map(|r| r.connect()).collect();
    for r in rs.iter_mut() {
        call(r, &["REPLICAOF", "127.0.0.1", &port.to_string()]);
    }
    for r in rs.iter_mut() {
        wait_for("the replica's link", Duration::from_secs(60), || {
            info(r, "replication", "master_link_status").as_deref() == Some("up")
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = writer.join().expect("writer");
    eprintln!("{during} writes served while the payload was being built");
    assert!(
        during > 0,
        "no write was served while the payload was being built"
    );
    assert_eq!(info(&mut p, "stats", "sync_full").as_deref(), Some("2"));
    let log = std::fs::read_to_string(&primary.log_path).expect("the primary's log");
    assert!(
        log.contains("waits for the background save in progress"),
        "the second full sync did not wait for the first"
    );
    assert!(
        !log.contains("building it now"),
        "a payload was built at once, pausing the primary"
    );
    let want = keyspace_of(&mut p);
    for r in rs.iter_mut() {
        caught_up(&mut p, r);
        compare(&want, &keyspace_of(r));
    }
}

/// A replica with the append-only log on: the full sync replaces its log
/// (a rewrite whose base is the primary's snapshot, then the stream), so
/// after kill -9 it restarts with its primary's keyspace at its primary's
/// offset.
#[test]
fn a_replica_with_the_log_on_restarts_with_its_primarys_data() {
    let primary = start_primary();
    let mut p = primary.connect();
    for i in 0..200 {
        call(&mut p, &["SET", &format!("before{i}"), &i.to_string()]);
    }
    let dir = std::env::temp_dir().join(format!("anykv-replica-aof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let d = dir.to_string_lossy().into_owned();
    let flags = [
        "--dir",
        d.as_str(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let replica = start_anykv_with(&anykv_bin(), &flags);
    let mut r = replica.connect();
    // Something of its own first: the sync must replace it.
    call(&mut r, &["SET", "mine", "1"]);
    call(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_for("the log's new base", Duration::from_secs(20), || {
        info(&mut r, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
            && info(&mut r, "persistence", "aof_enabled").as_deref() == Some("1")
            && info(&mut r, "persistence", "aof_rewrites")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
    });
    // The stream moves to database 3; then the replica's log starts a new
    // segment (a rewrite) while the stream stays there: the segment's
    // bytes never name database 3, yet a restart must replay them there.
    call(&mut p, &["SELECT", "3"]);
    call(&mut p, &["SET", "in3", "x"]);
    let mid = info(&mut p, "replication", "master_repl_offset");
    wait_for("the replica to catch up", Duration::from_secs(20), || {
        info(&mut r, "replication", "slave_repl_offset") == mid
    });
    let rewrites = |r: &mut RespConn| {
        info(r, "persistence", "aof_rewrites")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = rewrites(&mut r);
    call(&mut r, &["BGREWRITEAOF"]);
    wait_for("the replica's rewrite", Duration::from_secs(20), || {
        rewrites(&mut r) > before
            && info(&mut r, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
    });
    for i in 0..100 {
        call(&mut p, &["SET", &format!("after{i}"), &i.to_string()]);
    }
    let want = info(&mut p, "replication", "master_repl_offset");
    wait_for("the replica to catch up", Duration::from_secs(20), || {
        info(&mut r, "replication", "slave_repl_offset") == want
    });
    drop(r);
    drop(replica); // kill -9
    let again = start_anykv_with(&anykv_bin(), &flags);
    let mut r = again.connect();
    assert_eq!(info(&mut r, "replication", "master_repl_offset"), want);
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stream names its database only when it changes: after a partial
/// resync the replica continues in the database the stream was in (here
/// 3), not in database 0.
#[test]
fn a_partial_resync_continues_in_the_streams_database() {
    let redis = start_redis(&["--repl-diskless-sync-delay".into(), "0".into()]);
    let mut r = redis.connect();
    let anykv = start_primary();
    let mut a = anykv.connect();
    call(&mut a, &["REPLICAOF", "127.0.0.1", &redis.port.to_string()]);
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut a, "replication", "master_link_status").as_deref() == Some("up")
    });
    call(&mut r, &["SELECT", "3"]);
    call(&mut r, &["SET", "x", "1"]);
    let caught = |r: &mut RespConn, a: &mut RespConn| {
        wait_for("anykv to catch up", Duration::from_secs(20), || {
            let m = info(r, "replication", "master_repl_offset");
            m.is_some() && m == info(a, "replication", "slave_repl_offset")
        })
    };
    caught(&mut r, &mut a);
    let partial = counter(&mut r, "sync_partial_ok");
    call(&mut r, &["CLIENT", "KILL", "TYPE", "replica"]);
    call(&mut r, &["SET", "y", "2"]);
    wait_for("a partial resync", Duration::from_secs(20), || {
        counter(&mut r, "sync_partial_ok") > partial
    });
    caught(&mut r, &mut a);
    call(&mut a, &["SELECT", "3"]);
    assert_eq!(call(&mut a, &["GET", "y"]), Value::Bulk(b"2".to_vec()));
    call(&mut a, &["SELECT", "0"]);
    assert_eq!(call(&mut a, &["DBSIZE"]), Value::Int(0), "y landed in db 0");
}

/// Redis 7's shared replication buffer: a replica that stops reading keeps
/// its place past `repl-backlog-size` while it is within its
/// `client-output-buffer-limit replica`, and is dropped (then resyncs)
/// once it is further behind than that.
#[test]
fn a_stalled_replica_is_kept_within_its_output_limit_and_dropped_past_it() {
    let primary = start_anykv_with(&anykv_bin(), &["--repl-backlog-size", "16kb"]);
    let mut p = primary.connect();
    call(
        &mut p,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "replica 64mb 0 0",
        ],
    );
    let replica = start_replica_of(primary.port);
    let mut r = replica.connect();
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    let counters = |p: &mut RespConn| {
        [
            "sync_full",
            "sync_partial_ok",
            "client_output_buffer_limit_disconnections",
        ]
        .map(|f| info(p, "stats", f).unwrap_or_default())
    };
    let before = counters(&mut p);
    let stall = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &replica.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    let value = "v".repeat(1000);
    // 8 MB while the replica does not read: far more than the backlog
    // (16 kB) and than the sockets hold, less than its limit.
    stall("-STOP");
    for i in 0..8000 {
        call(&mut p, &["SET", &format!("a{i}"), &value]);
    }
    stall("-CONT");
    caught_up(&mut p, &mut r);
    assert_eq!(
        counters(&mut p),
        before,
        "the replica was dropped or resynced"
    );
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));

    // Now a 1 MB limit, and 8 MB again: the primary drops it, it resyncs.
    call(
        &mut p,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "replica 1mb 0 0",
        ],
    );
    // (How much the two sockets hold depends on the kernel's buffer
    // tuning, megabytes on loopback: the writes go on, up to 48 MB, until
    // the primary has dropped it.)
    stall("-STOP");
    let dropped = |p: &mut RespConn| {
        info(p, "stats", "client_output_buffer_limit_disconnections") != Some(before[2].clone())
    };
    let mut written = 0;
    while written < 48_000 && !dropped(&mut p) {
        for _ in 0..1000 {
            call(&mut p, &["SET", &format!("b{written}"), &value]);
            written += 1;
        }
    }
    wait_for(
        "the primary to drop the replica",
        Duration::from_secs(20),
        || dropped(&mut p),
    );
    eprintln!("dropped after {written} writes of 1 kB");
    stall("-CONT");
    wait_for("the replica to resync", Duration::from_secs(30), || {
        info(&mut p, "stats", "sync_full") != Some(before[0].clone())
    });
    caught_up(&mut p, &mut r);
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));
}

/// A replica is attached from its PSYNC, before its full-sync payload is
/// sent: while it does not read its payload, INFO lists it in `send_bulk`
/// and the log keeps its stream's start past `repl-backlog-size` under the
/// writes going on, so once it has read the payload its stream follows
/// (before, the primary found that start trimmed and dropped it into
/// another full sync).
#[test]
fn a_replica_slow_to_take_its_payload_keeps_its_stream() {
    use std::io::{BufRead, Read, Write};
    let primary = start_anykv_with(
        &anykv_bin(),
        &[
            "--repl-backlog-size",
            "16kb",
            "--enable-debug-command",
            "yes",
        ],
    );
    let mut p = primary.connect();
    // A payload of ~20 MB: more than the sockets between hold.
    call(&mut p, &["DEBUG", "POPULATE", "200000", "key", "64"]);
    assert_eq!(call(&mut p, &["DBSIZE"]), Value::Int(200000));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", primary.port)).expect("connect");
    s.write_all(&common::resp_str(&["PSYNC", "?", "-1"]))
        .expect("PSYNC");
    let mut r = std::io::BufReader::with_capacity(1 << 20, s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("FULLRESYNC");
    assert!(line.starts_with("+FULLRESYNC "), "{line:?}");
    // Not reading: 100 kB of writes meanwhile, far past the 16 kB backlog.
    for i in 0..1000 {
        call(&mut p, &["SET", &format!("w{i}"), &"x".repeat(100)]);
    }
    let listed = info(&mut p, "replication", "slave0").unwrap_or_default();
    assert!(listed.contains("state=send_bulk"), "slave0: {listed:?}");
    // The payload, then the stream: the writes made meanwhile.
    line.clear();
    r.read_line(&mut line).expect("payload length");
    let len: usize = line.trim().trim_start_matches('$').parse().expect("$<len>");
    let mut rdb = vec![0u8; len];
    r.read_exact(&mut rdb).expect("payload");
    assert!(rdb.starts_with(b"REDIS"), "an RDB payload");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut stream = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !stream.windows(4).any(|w| w == b"w999") {
        let n = r.read(&mut buf).expect("the stream after the payload");
        assert!(n > 0, "the primary closed the link after the payload");
        stream.extend_from_slice(&buf[..n]);
    }
    assert!(
        stream.windows(2).any(|w| w == b"w0"),
        "the stream starts at the sync"
    );
    assert_eq!(info(&mut p, "stats", "sync_full").as_deref(), Some("1"));
}

/// A replica's `replica-announce-ip` (`REPLCONF ip-address`) is the
/// address the primary's INFO and ROLE show for it, as in Redis.
#[test]
fn a_replicas_announced_address_is_shown() {
    let primary = start_primary();
    let mut p = primary.connect();
    let replica = start_redis(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        primary.port.to_string(),
        "--replica-announce-ip".into(),
        "10.9.8.7".into(),
    ]);
    let mut r = replica.connect();
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_for("the replica listed", Duration::from_secs(20), || {
        info(&mut p, "replication", "slave0")
            .is_some_and(|l| l.contains("ip=10.9.8.7,") && l.contains("state=online"))
    });
    let Value::Array(role) = call(&mut p, &["ROLE"]) else {
        panic!("ROLE");
    };
    let Some(Value::Array(replicas)) = role.get(2) else {
        panic!("ROLE replicas: {role:?}");
    };
    assert!(
        matches!(replicas.first(), Some(Value::Array(r)) if r.first() == Some(&Value::Bulk(b"10.9.8.7".to_vec()))),
        "{replicas:?}"
    );
}

/// A primary that wants a password: the replica logs in with `masteruser`
/// / `masterauth` (refused without them), and its ROLE says whom it
/// follows, the link's state and its offset.
#[test]
fn a_replica_logs_in_with_masterauth_and_shows_its_role() {
    let primary = start_anykv_with(&anykv_bin(), &["--requirepass", "s3cret-primary"]);
    let mut p = primary.connect();
    call(&mut p, &["AUTH", "s3cret-primary"]);
    call(&mut p, &["SET", "k", "v"]);
    let port = primary.port.to_string();
    // Without the password the link never comes up.
    let replica = start_anykv_with(&anykv_bin(), &[]);
    let mut r = replica.connect();
    call(&mut r, &["REPLICAOF", "127.0.0.1", &port]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        info(&mut r, "replication", "master_link_status").as_deref(),
        Some("down")
    );
    // With masteruser/masterauth it does.
    call(&mut r, &["CONFIG", "SET", "masteruser", "default"]);
    call(&mut r, &["CONFIG", "SET", "masterauth", "s3cret-primary"]);
    call(&mut r, &["REPLICAOF", "NO", "ONE"]);
    call(&mut r, &["REPLICAOF", "127.0.0.1", &port]);
    wait_for("the link", Duration::from_secs(20), || {
        info(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    caught_up(&mut p, &mut r);
    assert_eq!(call(&mut r, &["GET", "k"]), Value::Bulk(b"v".to_vec()));
    let offset = info(&mut r, "replication", "slave_repl_offset")
        .and_then(|o| o.parse::<i64>().ok())
        .expect("offset");
    assert_eq!(
        call(&mut r, &["ROLE"]),
        Value::Array(vec![
            Value::Bulk(b"slave".to_vec()),
            Value::Bulk(b"127.0.0.1".to_vec()),
            Value::Int(primary.port.into()),
            Value::Bulk(b"connected".to_vec()),
            Value::Int(offset),
        ])
    );
}

/// A replica that stops taking its full-sync payload (it died mid-sync,
/// its host froze) is dropped after `repl-timeout` without progress, as
/// Redis drops a stalled diskless transfer: before, its payload job held
/// on until the transport gave up (never, for a peer that keeps its
/// socket open), and every other replica's full sync waited for it.
/// Meanwhile the waiting replica hears a newline every second.
#[test]
fn a_replica_that_stops_taking_its_payload_does_not_hold_up_the_next_sync() {
    use std::io::{BufRead, Write};
    let primary = start_anykv_with(
        &anykv_bin(),
        &["--repl-timeout", "2", "--enable-debug-command", "yes"],
    );
    let mut p = primary.connect();
    // ~20 MB: far more than the sockets between hold.
    call(&mut p, &["DEBUG", "POPULATE", "200000", "key", "64"]);
    let psync = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", primary.port)).expect("connect");
        let mut req = common::resp_str(&["REPLCONF", "capa", "eof"]);
        req.extend(common::resp_str(&["PSYNC", "?", "-1"]));
        s.write_all(&req).expect("PSYNC");
        s
    };
    // The first never reads past its handshake.
    let stuck = psync();
    wait_for("the first sync under way", Duration::from_secs(10), || {
        info(&mut p, "replication", "slave0").is_some_and(|l| l.contains("state=send_bulk"))
    });
    let s = psync();
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut r = std::io::BufReader::new(s);
    let t0 = std::time::Instant::now();
    let mut line = String::new();
    r.read_line(&mut line).expect("+OK to REPLCONF");
    assert_eq!(line, "+OK\r\n");
    let mut newlines = 0;
    let header = loop {
        line.clear();
        let n = r.read_line(&mut line).expect("the second sync's answer");
        assert!(n > 0, "the primary closed the second replica's link");
        if line == "\n" {
            newlines += 1;
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "still waiting after {newlines} newlines"
            );
            continue;
        }
        break line.clone();
    };
    let waited = t0.elapsed();
    assert!(header.starts_with("+FULLRESYNC "), "{header:?}");
    assert!(waited < Duration::from_secs(20), "waited {waited:?}");
    // It waited for the first's job to end (2 s without progress at the
    // least), hearing newlines meanwhile.
    assert!(
        waited >= Duration::from_secs(1) && newlines >= 1,
        "waited {waited:?}, {newlines} newlines"
    );
    drop(stuck);
}
