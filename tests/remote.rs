//! A database served through a node that holds no copy of it
//! (docs/ROUTING.md, Remote databases): an emulated world of three iad
//! nodes and one cdg node; the database's primary and standby are on two
//! of the iad nodes, its replica in cdg, and a client logs in on the third
//! iad node, as Flycast may send it there.
//!
//! Checked on that node: AUTH with the database's token logs in; writes
//! run on the primary (once), reads are answered by the nearest copies
//! (taking turns on the two equally near ones) and always show the
//! connection's own writes; a pipeline of writes and
//! reads keeps its order; SELECT, CLIENT SETNAME and CLIENT ID are the
//! node's own; a transaction and a blocking pop run on the primary;
//! subscribers (of channels, patterns and shard channels) hear messages
//! published on the primary's node and on this one; MONITOR there shows
//! the writes and reads it forwards and what it answers itself; a
//! consistency changed through the admin API applies to the connections
//! already open there; the plan's maxclients and ops_per_sec hold there;
//! INFO routing counts each route. Then,
//! under load from three clients on that node, the database's standby
//! and then its primary are killed with SIGKILL: the failover harness's
//! history checker finds the registers linearizable and no INCR answered
//! twice, and every error the clients saw is a documented one within
//! seconds of a kill.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_bench::history::{self, Kind, Op};
use anykv_bench::world::World;
use common::{wait_for as wait, RespConn, Value};

const ADMIN: &str = "remote-admin-token";
const TOKEN: &str = "remote-tenant-token-0123456789ab";
const TENANT: u64 = 12;

/// The tests here each run an emulated world and kill nodes in it, with
/// timing bounds: on a 2-core machine two at once starve each other, so
/// they take turns.
fn one_world_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static WORLDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WORLDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn ok() -> Value {
    Value::Simple(b"OK".to_vec())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn routing(c: &mut RespConn, field: &str) -> u64 {
    let Ok(Value::Bulk(text)) = c.cmd(&["INFO", "routing"]) else {
        panic!("INFO routing");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO routing has no {field}"))
}

#[test]
fn a_node_without_a_copy_serves_the_database_through_the_others() {
    let _one = one_world_at_a_time();
    let spec = common::world_spec("remote", 52, 22600, &[("iad", 3), ("cdg", 1)], ADMIN, &[]);
    let mut w = World::start(&spec).expect("the world starts");
    w.wait_members(4, Duration::from_secs(60))
        .expect("four members alive");
    common::put_tenant(
        &w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "ryw", 1),
    );
    let mut placed = common::placed_tenant(&w, TENANT);
    wait("a standby named", Duration::from_secs(30), || {
        placed = common::placed_tenant(&w, TENANT);
        placed["standby"].is_string()
    });
    let holders: Vec<String> = [&placed["primary"], &placed["standby"]]
        .iter()
        .map(|v| v.as_str().expect("machine").to_string())
        .collect();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !holders.iter().any(|h| h == n))
        .expect("an iad node without a copy");
    let node = w.node(other).expect("node").clone();
    let primary = w.node(&holders[0]).expect("primary").clone();
    let mut p = common::shop_login(primary.resp, TOKEN, "the primary takes writes", |c| {
        c.cmd(&["SET", "warm", "1"]).ok() == Some(ok())
    });
    // The node learns where the database is and lets its clients in.
    let mut a = common::shop_login(
        node.resp,
        TOKEN,
        "a login on the node without a copy",
        |c| c.cmd(&["GET", "warm"]).ok() == Some(bulk("1")),
    );

    // Writes run on the primary, once; the connection reads them back at
    // once, from the nearest copy.
    let (writes0, remote0) = (
        routing(&mut a, "routed_primary_writes"),
        routing(&mut a, "routed_remote_reads"),
    );
    let sets0 = common::cmdstat_calls(&mut p, "incr");
    for i in 1..=20 {
        assert_eq!(a.cmd(&["INCR", "n"]).ok(), Some(Value::Int(i)));
        assert_eq!(a.cmd(&["GET", "n"]).ok(), Some(bulk(&i.to_string())));
    }
    assert_eq!(common::cmdstat_calls(&mut p, "incr") - sets0, 20);
    assert_eq!(routing(&mut a, "routed_primary_writes") - writes0, 20);
    let remote = routing(&mut a, "routed_remote_reads") - remote0;
    let fell_back = routing(&mut a, "routed_fell_back_reads");
    assert_eq!(remote + fell_back, 20, "every read went to a copy first");
    assert!(remote > 0, "no read was answered by a copy");

    // The primary and the standby are equally near (both in iad): reads
    // take turns on them.
    let standby = w.node(&holders[1]).expect("standby").clone();
    let mut sb = common::shop_login(standby.resp, TOKEN, "the standby's node", |c| {
        c.cmd(&["GET", "warm"]).ok() == Some(bulk("1"))
    });
    // A replica is a copy for reads once its node reports it streaming
    // (and the gossip brought that here): rounds of 20 reads until one
    // spreads, for at most 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = (
            common::cmdstat_calls(&mut p, "strlen"),
            common::cmdstat_calls(&mut sb, "strlen"),
        );
        for _ in 0..20 {
            assert_eq!(a.cmd(&["STRLEN", "n"]).ok(), Some(Value::Int(2)));
        }
        let (on_primary, on_standby) = (
            common::cmdstat_calls(&mut p, "strlen") - before.0,
            common::cmdstat_calls(&mut sb, "strlen") - before.1,
        );
        assert_eq!(on_primary + on_standby, 20, "each read ran once");
        if on_primary >= 5 && on_standby >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 reads: {on_primary} on the primary, {on_standby} on the standby; placed {}",
            common::placed_tenant(&w, TENANT),
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A pipeline keeps its order.
    a.send_all(&[
        vec!["SET", "p", "1"],
        vec!["GET", "p"],
        vec!["APPEND", "p", "2"],
        vec!["GET", "p"],
        vec!["DEL", "p"],
        vec!["EXISTS", "p"],
    ])
    .expect("pipeline");
    let replies: Vec<Value> = (0..6).map(|_| a.read_reply().expect("reply")).collect();
    assert_eq!(
        replies,
        [
            ok(),
            bulk("1"),
            Value::Int(2),
            bulk("12"),
            Value::Int(1),
            Value::Int(0)
        ]
    );

    // A pipeline of reads goes to one copy at once (a read window), not
    // one round trip each: nearly every read is sent while one before it
    // still awaits its reply, and the replies keep their order.
    let n = 300;
    let mut mset = vec!["MSET".to_string()];
    for i in 0..n {
        mset.extend([format!("r{i}"), format!("v{i}")]);
    }
    let mset: Vec<&str> = mset.iter().map(|s| s.as_str()).collect();
    assert_eq!(a.cmd(&mset).ok(), Some(ok()));
    let (piped0, remote0, fell_back0) = (
        routing(&mut a, "routed_pipelined"),
        routing(&mut a, "routed_remote_reads"),
        routing(&mut a, "routed_fell_back_reads"),
    );
    let keys: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let gets: Vec<Vec<&str>> = keys.iter().map(|k| vec!["GET", k.as_str()]).collect();
    a.send_all(&gets).expect("pipeline of reads");
    for i in 0..n {
        assert_eq!(
            a.read_reply().expect("reply"),
            bulk(&format!("v{i}")),
            "reply {i}"
        );
    }
    let piped = routing(&mut a, "routed_pipelined") - piped0;
    let remote = routing(&mut a, "routed_remote_reads") - remote0;
    let fell_back = routing(&mut a, "routed_fell_back_reads") - fell_back0;
    assert_eq!(
        remote + fell_back,
        n as u64,
        "every read went to a copy first"
    );
    assert!(remote > 0, "no read of the pipeline was answered by a copy");
    assert!(
        piped >= 200,
        "{piped} of {n} pipelined reads were sent while one before them was in flight"
    );

    // WAIT counts the replicas that have this connection's writes, though
    // it runs on a stream of its own to the primary: with the cdg replica
    // frozen, a write is on the standby only (durability `region` waited
    // for it) and `WAIT 2` times out with 1. (Counting the new stream's
    // own writes, which are none, gave 2 at once.)
    let cdg = w.node("n4").expect("n4").clone();
    assert_eq!(cdg.region, "cdg");
    assert_eq!(a.cmd(&["WAIT", "2", "1000"]).ok(), Some(Value::Int(2)));
    w.signal("n4", "-STOP").expect("SIGSTOP the cdg node");
    let frozen = a.cmd(&["SET", "waited", "1"]).ok();
    let waited = a.cmd(&["WAIT", "2", "300"]).ok();
    w.signal("n4", "-CONT").expect("SIGCONT the cdg node");
    assert_eq!(frozen, Some(ok()));
    assert_eq!(
        waited,
        Some(Value::Int(1)),
        "WAIT 2 with the cdg replica frozen"
    );
    assert_eq!(a.cmd(&["WAIT", "2", "5000"]).ok(), Some(Value::Int(2)));

    // The connection's own state: its database, name and id are the
    // node's, and its requests run in its database on the primary.
    assert_eq!(a.cmd(&["SELECT", "3"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["SET", "in3", "x"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["GET", "in3"]).ok(), Some(bulk("x")));
    assert_eq!(p.cmd(&["EXISTS", "in3"]).ok(), Some(Value::Int(0)));
    assert_eq!(p.cmd(&["SELECT", "3"]).ok(), Some(ok()));
    assert_eq!(p.cmd(&["GET", "in3"]).ok(), Some(bulk("x")));
    assert_eq!(p.cmd(&["SELECT", "0"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["SELECT", "0"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "far"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]).ok(), Some(bulk("far")));
    assert!(matches!(a.cmd(&["CLIENT", "ID"]), Ok(Value::Int(_))));

    // A transaction and a blocking pop run on the primary.
    assert_eq!(a.cmd(&["MULTI"]).ok(), Some(ok()));
    assert_eq!(
        a.cmd(&["INCR", "n"]).ok(),
        Some(Value::Simple(b"QUEUED".to_vec()))
    );
    assert_eq!(
        a.cmd(&["EXEC"]).ok(),
        Some(Value::Array(vec![Value::Int(21)]))
    );
    // Inside MULTI the connection's own commands are refused; RESET ends
    // the transaction on the primary.
    common::reset_ends_multi(&mut a, TOKEN, "never", |a| {
        let sel = a.cmd(&["SELECT", "1"]).expect("SELECT");
        assert!(
            matches!(&sel, Value::Error(e) if e.starts_with(b"ERR SELECT inside MULTI")),
            "{sel:?}"
        );
    });
    assert_eq!(p.cmd(&["EXISTS", "never"]).ok(), Some(Value::Int(0)));
    // WAIT answers (on a stream of its own: the shared one stays free).
    assert!(matches!(a.cmd(&["WAIT", "1", "100"]), Ok(Value::Int(_))));
    assert_eq!(a.cmd(&["GET", "n"]).ok(), Some(bulk("21")));
    let popper = std::thread::spawn(move || {
        let r = a.cmd(&["BLPOP", "jobs", "0"]).expect("BLPOP");
        (a, r)
    });
    wait(
        "the pop blocked on the primary",
        Duration::from_secs(10),
        || {
            let Ok(Value::Bulk(text)) = p.cmd(&["INFO", "clients"]) else {
                return false;
            };
            String::from_utf8_lossy(&text).contains("blocked_clients:1")
        },
    );
    assert_eq!(p.cmd(&["RPUSH", "jobs", "j"]).ok(), Some(Value::Int(1)));
    let (mut a, popped) = popper.join().expect("popper");
    assert_eq!(popped, Value::Array(vec![bulk("jobs"), bulk("j")]));

    // Pub/sub: subscribers on this node hear what is published anywhere
    // (a relay subscribed on the nearest copy brings it).
    let mut sub = common::login_ready(node.resp, "shop", TOKEN, |_| true).expect("subscriber");
    let push = |kind: &str, parts: &[&str]| {
        let mut v = vec![bulk(kind)];
        v.extend(parts.iter().map(|p| bulk(p)));
        v
    };
    let mut confirm = push("subscribe", &["news"]);
    confirm.push(Value::Int(1));
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "news"]).ok(),
        Some(Value::Array(confirm))
    );
    let mut confirm = push("psubscribe", &["ne*"]);
    confirm.push(Value::Int(2));
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "ne*"]).ok(),
        Some(Value::Array(confirm))
    );
    for (via, text) in [("the primary", "from-iad"), ("this node", "from-here")] {
        let publisher = if via == "the primary" { &mut p } else { &mut a };
        assert!(matches!(
            publisher.cmd(&["PUBLISH", "news", text]),
            Ok(Value::Int(_))
        ));
        assert_eq!(
            sub.read_reply().ok(),
            Some(Value::Array(push("message", &["news", text]))),
            "published on {via}"
        );
        assert_eq!(
            sub.read_reply().ok(),
            Some(Value::Array(push("pmessage", &["ne*", "news", text]))),
            "published on {via}"
        );
    }
    drop(sub);
    // Shard channels: the relay subscribes to each on the copy.
    let mut ssub = common::login_ready(node.resp, "shop", TOKEN, |_| true).expect("subscriber");
    let mut confirm = push("ssubscribe", &["orders"]);
    confirm.push(Value::Int(1));
    assert_eq!(
        ssub.cmd(&["SSUBSCRIBE", "orders"]).ok(),
        Some(Value::Array(confirm))
    );
    for (via, text) in [("the primary", "o-iad"), ("this node", "o-here")] {
        let publisher = if via == "the primary" { &mut p } else { &mut a };
        assert!(matches!(
            publisher.cmd(&["SPUBLISH", "orders", text]),
            Ok(Value::Int(_))
        ));
        assert_eq!(
            ssub.read_reply().ok(),
            Some(Value::Array(push("smessage", &["orders", text]))),
            "published on {via}"
        );
    }
    // Another shard channel joins the relay's; one left stops arriving.
    let mut confirm = push("ssubscribe", &["refunds"]);
    confirm.push(Value::Int(2));
    assert_eq!(
        ssub.cmd(&["SSUBSCRIBE", "refunds"]).ok(),
        Some(Value::Array(confirm))
    );
    let mut confirm = push("sunsubscribe", &["orders"]);
    confirm.push(Value::Int(1));
    assert_eq!(
        ssub.cmd(&["SUNSUBSCRIBE", "orders"]).ok(),
        Some(Value::Array(confirm))
    );
    for (ch, text) in [("orders", "unheard"), ("refunds", "r-iad")] {
        assert!(matches!(p.cmd(&["SPUBLISH", ch, text]), Ok(Value::Int(_))));
    }
    assert_eq!(
        ssub.read_reply().ok(),
        Some(Value::Array(push("smessage", &["refunds", "r-iad"]))),
        "only the channel still subscribed"
    );
    // On the copies, the relay holds exactly the channels listened to here.
    let mut shard_subs = |ch: &str| -> i64 {
        [&mut p, &mut sb]
            .into_iter()
            .map(|c| match c.cmd(&["PUBSUB", "SHARDNUMSUB", ch]).ok() {
                Some(Value::Array(v)) if v.len() == 2 => match v[1] {
                    Value::Int(n) => n,
                    _ => panic!("SHARDNUMSUB {v:?}"),
                },
                other => panic!("SHARDNUMSUB: {other:?}"),
            })
            .sum()
    };
    wait("the relay to leave orders", Duration::from_secs(10), || {
        shard_subs("orders") == 0
    });
    assert_eq!(shard_subs("refunds"), 1);
    drop(ssub);
    wait(
        "the relay to leave refunds",
        Duration::from_secs(10),
        || shard_subs("refunds") == 0,
    );
    // MONITOR on this node shows what its clients send, run here or not.
    let mut mon = common::login_ready(node.resp, "shop", TOKEN, |_| true).expect("monitor");
    assert_eq!(mon.cmd(&["MONITOR"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["SET", "seen", "1"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["GET", "seen"]).ok(), Some(bulk("1")));
    assert_eq!(a.cmd(&["ECHO", "here"]).ok(), Some(bulk("here")));
    for want in [r#""SET" "seen" "1""#, r#""GET" "seen""#, r#""ECHO" "here""#] {
        match mon.read_reply() {
            Ok(Value::Simple(line)) => {
                let line = String::from_utf8_lossy(&line).into_owned();
                assert!(line.ends_with(want), "MONITOR showed {line:?}, want {want}");
            }
            other => panic!("MONITOR: {other:?}"),
        }
    }
    drop(mon);
    // A consistency changed through the admin API applies to the
    // connections already open on the node, not only to new logins.
    assert_eq!(common::info_field(&mut a, "routing", "consistency"), "ryw");
    common::put_tenant(
        &w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "nearest", 2),
    );
    wait(
        "the open connection to read nearest",
        Duration::from_secs(15),
        || common::info_field(&mut a, "routing", "consistency") == "nearest",
    );
    assert_eq!(a.cmd(&["PING"]).ok(), Some(Value::Simple(b"PONG".to_vec())));

    // The plan's limits hold on this node as on a holder: a login past
    // `maxclients` is refused in Redis's words, and commands past
    // `ops_per_sec` wait for the rate.
    let here = match a.cmd(&["CLIENT", "LIST"]) {
        Ok(Value::Bulk(t)) => String::from_utf8_lossy(&t).lines().count(),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    let mut limited = common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "nearest", 3);
    limited["maxclients"] = here.into();
    limited["ops_per_sec"] = 50.into();
    common::put_tenant(&w, &limited);
    wait(
        "a login past maxclients to be refused",
        Duration::from_secs(15),
        || {
            let Ok(mut c) = RespConn::connect_addr(node.resp) else {
                return false;
            };
            c.cmd(&["AUTH", "shop", TOKEN]).ok()
                == Some(Value::Error(b"ERR max number of clients reached".to_vec()))
        },
    );
    // This node's own bucket (each node enforces the plan on its own;
    // `INFO stats` would be a copy's): INFO routing shows it.
    let routing = |a: &mut RespConn, field: &str| -> u64 {
        common::info_field(a, "routing", field)
            .parse()
            .unwrap_or_else(|e| panic!("INFO routing {field}: {e}"))
    };
    // (The node's stand-in follows its catalog entry once a second.)
    wait("the rate to apply here", Duration::from_secs(15), || {
        routing(&mut a, "plan_ops_per_sec") == 50
    });
    // Empty the bucket: the commands past what was saved up wait.
    let throttled0 = routing(&mut a, "plan_throttled_commands");
    wait(
        "a command to wait for the rate",
        Duration::from_secs(15),
        || {
            for _ in 0..60 {
                assert_eq!(a.cmd(&["GET", "absent"]).ok(), Some(Value::Nil));
            }
            routing(&mut a, "plan_throttled_commands") > throttled0
        },
    );
    let throttled0 = routing(&mut a, "plan_throttled_commands");
    let t = Instant::now();
    for _ in 0..150 {
        assert_eq!(a.cmd(&["GET", "absent"]).ok(), Some(Value::Nil));
    }
    // The bucket was just emptied: 50 a second, on this node whichever
    // copies answered the reads.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2_900),
        "150 commands at 50/s took {took:?}"
    );
    let after = routing(&mut a, "plan_throttled_commands");
    assert!(
        after >= throttled0 + 140,
        "{throttled0} -> {after} throttled"
    );
    common::put_tenant(
        &w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "nearest", 4),
    );
    wait("the limits lifted", Duration::from_secs(15), || {
        common::login_ready(node.resp, "shop", TOKEN, |_| true).is_some()
    });
    drop(a);

    faults_under_load(&mut w, &node, ["n1", "n2", "n3"].map(String::from));
    let cdg = w.node("n4").expect("cdg's node").clone();
    assert_eq!(cdg.region, "cdg");
    ryw_under_faults(&mut w, &cdg, ["n1", "n2", "n3"].map(String::from));
    let _ = std::fs::remove_dir_all(&spec.dir);
}

/// What a client thread saw through the node without a copy.
#[derive(Default)]
struct Seen {
    ops: Vec<Op>,
    incrs: Vec<i64>,
    /// (when, error) of every error reply or broken connection.
    errors: Vec<(u64, String)>,
    done: u64,
}

/// The connection broke, or the node says to log in again (it became a
/// holder of the database, docs/ROUTING.md).
fn gone(r: &std::io::Result<Value>) -> bool {
    match r {
        Err(_) => true,
        Ok(Value::Error(e)) => e.ends_with(b"reconnect and AUTH again"),
        Ok(_) => false,
    }
}

fn ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One client's connection and what it saw, each invocation and response
/// on `t0`'s clock: the operations both kinds of client below record.
struct Recorder {
    id: u32,
    addr: std::net::SocketAddr,
    t0: Instant,
    conn: Option<RespConn>,
    seen: Seen,
}

impl Recorder {
    fn new(id: u32, addr: std::net::SocketAddr, t0: Instant) -> Recorder {
        Recorder {
            id,
            addr,
            t0,
            conn: None,
            seen: Seen::default(),
        }
    }

    /// Logs in when not connected; false (after a pause) when that failed.
    fn connected(&mut self) -> bool {
        if self.conn.is_none() {
            self.conn = common::login_ready(self.addr, "shop", TOKEN, |_| true);
            if self.conn.is_none() {
                self.seen.errors.push((ns(self.t0), "login failed".into()));
                std::thread::sleep(Duration::from_millis(50));
                return false;
            }
        }
        true
    }

    fn cmd(&mut self, args: &[&str]) -> std::io::Result<Value> {
        match self.conn.as_mut() {
            Some(c) => c.cmd(args),
            None => Err(std::io::Error::other("not connected")),
        }
    }

    /// An error reply or a broken connection, recorded (the connection
    /// dropped when it is gone).
    fn failed(&mut self, invoke: u64, r: &std::io::Result<Value>) {
        self.seen.errors.push((invoke, format!("{r:?}")));
        if gone(r) {
            self.conn = None;
        }
    }

    /// `SET key v`, recorded; false when refused with `-TRYAGAIN` (never
    /// sent: it did not happen, and is not an operation).
    fn set(&mut self, key: String, v: u64) -> bool {
        let invoke = ns(self.t0);
        let r = self.cmd(&["SET", &key, &v.to_string()]);
        let complete = match &r {
            Ok(Value::Simple(_)) => Some(ns(self.t0)),
            Ok(Value::Error(e)) if e.starts_with(b"TRYAGAIN") => {
                self.seen
                    .errors
                    .push((invoke, String::from_utf8_lossy(e).into()));
                return false;
            }
            _ => {
                self.failed(invoke, &r);
                None
            }
        };
        self.seen.ops.push(Op {
            client: self.id,
            key,
            kind: Kind::Write(v),
            invoke,
            complete,
        });
        true
    }

    /// `GET key`, recorded.
    fn get(&mut self, key: String) {
        let invoke = ns(self.t0);
        let r = self.cmd(&["GET", &key]);
        let got = match &r {
            Ok(Value::Bulk(b)) => String::from_utf8_lossy(b).parse().ok(),
            Ok(Value::Nil) => None,
            _ => return self.failed(invoke, &r),
        };
        self.seen.ops.push(Op {
            client: self.id,
            key,
            kind: Kind::Read(got),
            invoke,
            complete: Some(ns(self.t0)),
        });
    }

    /// `INCR ctr`, its answer recorded.
    fn incr(&mut self) {
        let invoke = ns(self.t0);
        match self.cmd(&["INCR", "ctr"]) {
            Ok(Value::Int(v)) => self.seen.incrs.push(v),
            r => self.failed(invoke, &r),
        }
    }
}

/// One client: unique-value SETs and GETs of a few registers and INCRs of
/// a counter, each invocation and response on `t0`'s clock, until `stop`.
fn client(id: u32, addr: std::net::SocketAddr, t0: Instant, stop: Arc<AtomicBool>) -> Seen {
    let mut r = Recorder::new(id, addr, t0);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        if !r.connected() {
            continue;
        }
        n += 1;
        let key = format!("reg:{}", n % 4);
        match n % 3 {
            0 => {
                if !r.set(key, u64::from(id) * 1_000_000 + n) {
                    continue;
                }
            }
            1 => r.get(key),
            _ => r.incr(),
        }
        r.seen.done += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    r.seen
}

/// An in-sync standby for the database: its placement then.
fn settled(w: &World) -> serde_json::Value {
    common::poll_every(
        Duration::from_millis(100),
        Duration::from_secs(60),
        "an in-sync standby",
        || {
            let p = common::placed_tenant(w, TENANT);
            (p["standby"].is_string() && p["in_sync"] == p["standby"]).then_some(p)
        },
    )
}

/// Kills the database's standby, then its primary, with SIGKILL (never
/// `keep`), each started again and the record given an in-sync standby
/// (a new primary, for the primary) before the next; the kill times on
/// `t0`'s clock.
fn kill_standby_then_primary(
    w: &mut World,
    t0: Instant,
    iad: &[String; 3],
    keep: &str,
) -> Vec<u64> {
    let mut kills = Vec::new();
    for role in ["standby", "primary"] {
        let p = settled(w);
        let victim = p[role].as_str().expect("machine").to_string();
        assert!(iad.contains(&victim) && victim != keep, "{victim}");
        kills.push(ns(t0));
        w.signal(&victim, "-9").expect("kill -9");
        if role == "primary" {
            // Restarted only once replaced: a primary that was also the
            // controller's leader waits for a new leader first, which can
            // take longer than a fixed pause.
            common::poll_every(
                Duration::from_millis(100),
                Duration::from_secs(30),
                "a new primary",
                // (As a live node sees it: n1 may be the one killed.)
                || {
                    let view = w.cluster_view(keep)?;
                    let t = view["tenants"]
                        .as_array()?
                        .iter()
                        .find(|t| t["id"] == TENANT)?;
                    (t["primary"] != victim.as_str()).then_some(())
                },
            );
        } else {
            std::thread::sleep(Duration::from_secs(3));
        }
        w.launch(&victim).expect("restart");
        let last = std::cell::RefCell::new(serde_json::Value::Null);
        let _show = Show(&last, role);
        common::poll_every(
            Duration::from_millis(100),
            Duration::from_secs(60),
            "an in-sync standby again",
            || {
                let p = common::placed_tenant(w, TENANT);
                *last.borrow_mut() = p.clone();
                (p["standby"].is_string()
                    && p["in_sync"] == p["standby"]
                    && (role != "primary" || p["primary"] != victim.as_str()))
                .then_some(())
            },
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    kills
}

/// Prints the last placement seen if a wait for it fails.
struct Show<'a>(&'a std::cell::RefCell<serde_json::Value>, &'a str);

impl Drop for Show<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "after killing the {}: last placement {}",
                self.1,
                self.0.borrow()
            );
        }
    }
}

/// No two INCRs answered the same, and none acknowledged was lost
/// (`ctr`: the counter read after the run).
fn check_incrs(seen: &[Seen], ctr: i64) -> usize {
    let mut incrs: Vec<i64> = seen.iter().flat_map(|s| s.incrs.iter().copied()).collect();
    let acked = incrs.len();
    incrs.sort_unstable();
    incrs.dedup();
    assert_eq!(incrs.len(), acked, "two INCRs answered the same value");
    assert!(
        ctr >= incrs.last().copied().unwrap_or(0) && ctr >= acked as i64,
        "an acknowledged INCR was lost: counter {ctr}, {acked} acknowledged"
    );
    acked
}

/// Every error a client saw is one the docs name, sent within a second
/// before a kill to 10 s after it.
fn check_errors(seen: &[Seen], kills: &[u64]) -> Vec<String> {
    let window = Duration::from_secs(10).as_nanos() as u64;
    // `at` is when the failed request was sent: it may have been on its
    // way (up to a second) when the kill came.
    let before = Duration::from_secs(1).as_nanos() as u64;
    for (at, e) in seen.iter().flat_map(|s| s.errors.iter()) {
        let near = kills
            .iter()
            .any(|k| *at + before >= *k && *at <= *k + window);
        let documented = e.contains("may or may not have run")
            || e.contains("TRYAGAIN")
            || e.contains("did not answer in time");
        assert!(
            near && documented,
            "an error {} s into the run (kills at {:?} s): {e}",
            *at as f64 / 1e9,
            kills.iter().map(|k| *k as f64 / 1e9).collect::<Vec<_>>()
        );
    }
    seen.iter()
        .flat_map(|s| s.errors.iter())
        .map(|(at, e)| format!("{:.2} s: {e}", *at as f64 / 1e9))
        .collect()
}

fn read_ctr(c: &mut RespConn) -> i64 {
    match c.cmd(&["GET", "ctr"]) {
        Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).parse::<i64>().expect("ctr"),
        other => panic!("GET ctr: {other:?}"),
    }
}

/// The database's copies killed under load, its clients all on the node
/// without a copy: first the standby (a copy reads may go to), then the
/// primary (a failover). Each is started again and the record waits for
/// an in-sync standby before the next. Checked with the failover harness's
/// history checker: the registers are linearizable (the database is
/// `strong` for this part), no two INCRs answered the same, every error
/// is one the docs name and falls within a few seconds of a kill.
fn faults_under_load(w: &mut World, node: &anykv_bench::world::NodeInfo, iad: [String; 3]) {
    common::put_tenant(
        w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "strong", 5),
    );
    settled(w);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=3)
        .map(|id| {
            let (addr, stop) = (node.resp, stop.clone());
            std::thread::spawn(move || client(id, addr, t0, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let kills = kill_standby_then_primary(w, t0, &iad, &node.name);
    stop.store(true, Ordering::Release);
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .collect();

    let done: u64 = seen.iter().map(|s| s.done).sum();
    assert!(done > 300, "the clients did little: {done} operations");
    // The final state, read through the node: the last word on every
    // register.
    let mut c = common::login_ready(node.resp, "shop", TOKEN, |_| true).expect("login");
    let mut ops: Vec<Op> = seen.iter().flat_map(|s| s.ops.iter().cloned()).collect();
    for k in 0..4 {
        let key = format!("reg:{k}");
        let invoke = ns(t0);
        let v = match c.cmd(&["GET", &key]) {
            Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).parse().ok(),
            Ok(Value::Nil) => None,
            other => panic!("final GET {key}: {other:?}"),
        };
        ops.push(Op {
            client: 0,
            key,
            kind: Kind::Read(v),
            invoke,
            complete: Some(ns(t0)),
        });
    }
    if let Err(v) = history::linearizable(&ops) {
        panic!("not linearizable through the node without a copy: {v:?}");
    }
    let acked = check_incrs(&seen, read_ctr(&mut c));
    let errors = check_errors(&seen, &kills);
    eprintln!(
        "faults through the node without a copy: {done} operations, {acked} INCRs, kills at {:?} s, errors: {errors:#?}",
        kills.iter().map(|k| *k as f64 / 1e9).collect::<Vec<_>>(),
    );
}

/// The same kills with the database `ryw` (the default), its clients on
/// the node without a copy and on cdg's node, which holds a replica:
/// reads come from replicas, which fall behind and re-sync with the new
/// primary across the failover. Each client writes keys of its own with
/// increasing values and reads its own and the others'; the history keeps
/// the session guarantees (read-your-writes, monotonic reads, no invented
/// value), no acknowledged write or INCR is lost or doubled, and every
/// error is a documented one near a kill.
fn ryw_under_faults(w: &mut World, cdg: &anykv_bench::world::NodeInfo, iad: [String; 3]) {
    common::put_tenant(
        w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "region", "ryw", 6),
    );
    // The failovers before moved the copies: the node without one now.
    let placed = settled(w);
    let other = iad
        .iter()
        .find(|n| placed["primary"] != n.as_str() && placed["standby"] != n.as_str())
        .expect("an iad node without a copy");
    let node = w.node(other).expect("node").clone();
    let nodes = [&node, cdg];
    let mut on_cdg = common::login_ready(nodes[1].resp, "shop", TOKEN, |_| true).expect("login");
    let local0 = routing(&mut on_cdg, "routed_local_reads");
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    const CLIENTS: u32 = 4;
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| {
            let (addr, stop) = (nodes[(id % 2) as usize].resp, stop.clone());
            std::thread::spawn(move || ryw_client(id, CLIENTS, addr, t0, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let kills = kill_standby_then_primary(w, t0, &iad, &nodes[0].name);
    stop.store(true, Ordering::Release);
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .collect();
    let done: u64 = seen.iter().map(|s| s.done).sum();
    assert!(done > 300, "the clients did little: {done} operations");
    let ops: Vec<Op> = seen.iter().flat_map(|s| s.ops.iter().cloned()).collect();
    if let Err(v) = history::session_guarantees(&ops) {
        panic!("a ryw session guarantee broke: {v:?}");
    }
    // cdg's clients read its replica (the guarantees above were kept
    // with reads that could lag, not by sending every read to the
    // primary).
    let replica_reads = routing(&mut on_cdg, "routed_local_reads") - local0;
    assert!(
        replica_reads > 50,
        "only {replica_reads} reads on cdg's replica"
    );
    // Every acknowledged write reaches every copy: each node's reads end
    // at or past the last acknowledged value of every key.
    for n in nodes {
        let mut c = common::login_ready(n.resp, "shop", TOKEN, |_| true).expect("login");
        for op in &ops {
            let (Kind::Write(v), Some(_)) = (&op.kind, op.complete) else {
                continue;
            };
            common::poll_every(
                Duration::from_millis(50),
                Duration::from_secs(15),
                "an acknowledged write on every node",
                || match c.cmd(&["GET", &op.key]) {
                    Ok(Value::Bulk(b)) => {
                        (String::from_utf8_lossy(&b).parse::<u64>().ok()? >= *v).then_some(())
                    }
                    _ => None,
                },
            );
        }
        if n.region == "cdg" {
            let ctr = read_ctr(&mut c);
            check_incrs(&seen, ctr);
        }
    }
    let errors = check_errors(&seen, &kills);
    eprintln!(
        "ryw faults: {done} operations ({replica_reads} read on cdg's replica), kills at {:?} s, errors: {errors:#?}",
        kills.iter().map(|k| *k as f64 / 1e9).collect::<Vec<_>>(),
    );
}

/// One `ryw` client: SETs of its own two keys with increasing values,
/// GETs of its own and the other clients' keys, INCRs, on `t0`'s clock.
fn ryw_client(
    id: u32,
    clients: u32,
    addr: std::net::SocketAddr,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut r = Recorder::new(id, addr, t0);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        if !r.connected() {
            continue;
        }
        n += 1;
        let own = format!("w{id}:{}", n % 2);
        match n % 4 {
            0 => {
                if r.set(own, n) {
                    r.seen.done += 1;
                }
                continue;
            }
            1 => r.get(own),
            2 => r.get(format!("w{}:{}", 1 + (n / 4) as u32 % clients, (n / 8) % 2)),
            _ => r.incr(),
        }
        r.seen.done += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    r.seen
}

/// A primary that is gone with nothing to replace it (two nodes in its
/// region: no controller, so no failover): a write sent to a node that
/// must forward it waits out the failover window a forwarded request is
/// given, then learns it did not run (`-TRYAGAIN ...`), never a replica's
/// `-READONLY`; reads on the node's own copy go on; once the primary is
/// back, writes run again.
#[test]
fn a_write_with_no_primary_to_take_it_says_it_did_not_run() {
    let _one = one_world_at_a_time();
    let spec = common::world_spec(
        "no-primary",
        55,
        22900,
        &[("iad", 2), ("cdg", 1)],
        ADMIN,
        &[],
    );
    let mut w = World::start(&spec).expect("the world starts");
    w.wait_members(3, Duration::from_secs(60))
        .expect("three members alive");
    common::put_tenant(
        &w,
        &common::shop_entry(TENANT, TOKEN, &["cdg"], "async", "nearest", 1),
    );
    let placed = common::placed_tenant(&w, TENANT);
    let primary = placed["primary"].as_str().expect("primary").to_string();
    let cdg = w.node("n3").expect("n3").clone();
    assert_eq!(cdg.region, "cdg");
    let mut c = common::shop_login(cdg.resp, TOKEN, "writes through cdg's node", |c| {
        c.cmd(&["SET", "before", "1"]).ok() == Some(ok())
    });
    wait(
        "cdg's replica has the write",
        Duration::from_secs(20),
        || c.cmd(&["GET", "before"]).ok() == Some(bulk("1")),
    );

    w.signal(&primary, "-9").expect("kill -9");
    // Until the gossip says the node is down, a write goes out on the
    // link to it and whether it ran is unknown: the client is told so.
    // Then a write is not sent there; it waits for a new primary until
    // the window ends and is told it did not run.
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let t = Instant::now();
        let r = c.cmd(&["SET", "during", &n.to_string()]).expect("a reply");
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "write {n} answered after {took:?}"
        );
        let Value::Error(e) = &r else {
            panic!("write {n} with no primary answered {r:?}");
        };
        let e = String::from_utf8_lossy(e);
        if e.starts_with("TRYAGAIN") && e.contains("did not run") {
            assert!(took >= Duration::from_secs(4), "told after {took:?}: {e}");
            break;
        }
        assert!(e.ends_with("may or may not have run"), "write {n}: {e}");
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "no write was told it did not run; cdg's view: {}",
            common::http_get(&cdg.http.to_string(), "/cluster").unwrap_or_default()
        );
    }
    assert_eq!(c.cmd(&["GET", "before"]).ok(), Some(bulk("1")));
    // A blocking command (the connection's own stream to the primary) is
    // not sent there either: told at once.
    let t = Instant::now();
    match c.cmd(&["BLPOP", "q", "0"]).expect("a reply") {
        Value::Error(e) => assert!(
            e.starts_with(b"TRYAGAIN the primary's node is down"),
            "{}",
            String::from_utf8_lossy(&e)
        ),
        other => panic!("BLPOP with the primary down answered {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    w.launch(&primary).expect("restart");
    wait("writes run again", Duration::from_secs(60), || {
        c.cmd(&["SET", "after", "1"]).ok() == Some(ok())
    });
    drop(w);
    let _ = std::fs::remove_dir_all(&spec.dir);
}

/// Router nodes (`anykv node --router`, fly.router.toml): one among a
/// region's data nodes and one alone in a region without data. Neither
/// gets a copy of anything nor a vote in its region's controller (the
/// group forms of the three data nodes, which a router in their region
/// would otherwise keep from forming), a region of routers only has no
/// controller, and each serves the database through the data nodes.
#[test]
fn router_nodes_hold_nothing_and_serve_every_database() {
    let _one = one_world_at_a_time();
    let spec = common::world_spec("routers", 57, 23060, &[("iad", 4), ("syd", 1)], ADMIN, &[]);
    let router = vec!["--router".to_string()];
    let args = std::collections::BTreeMap::from([
        ("n4".to_string(), router.clone()),
        ("n5".to_string(), router),
    ]);
    let mut w = World::start_with(&spec, &args).expect("the world starts");
    w.wait_members(5, Duration::from_secs(60))
        .expect("five members alive");
    // Still going (202): syd, a read region, has no data node to take
    // its replica.
    let entry = common::shop_entry(TENANT, TOKEN, &["syd"], "region", "ryw", 1);
    let (code, body) = anykv_bench::world::http(
        w.node("n1").expect("n1").http,
        "PUT",
        &format!("/admin/tenants/{TENANT}"),
        ADMIN,
        &entry.to_string(),
    )
    .expect("the admin API answers");
    assert_eq!(code, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        answer["missing_regions"],
        serde_json::json!(["syd"]),
        "{body}"
    );
    let mut placed = common::placed_tenant(&w, TENANT);
    wait("a standby named", Duration::from_secs(30), || {
        placed = common::placed_tenant(&w, TENANT);
        placed["standby"].is_string()
    });
    let mut controllers = serde_json::Value::Null;
    wait(
        "iad's controller formed of its data nodes, holding the record",
        Duration::from_secs(60),
        || {
            controllers = w.cluster_view("n5").unwrap_or_default()["controllers"].clone();
            controllers.as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["region"] == "iad"
                        && c["leader"].is_string()
                        && c["records"] == 1
                        && c["nodes"] == 3
                })
            })
        },
    );
    let iad = controllers
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["region"] == "iad"))
        .expect("iad's controller");
    let mut voters: Vec<&str> = iad["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    voters.sort();
    assert_eq!(voters, ["n1", "n2", "n3"], "{controllers}");
    assert!(
        !controllers
            .as_array()
            .expect("controllers")
            .iter()
            .any(|c| c["region"] == "syd"),
        "a region of routers only has no controller: {controllers}"
    );
    // No copy on a router: syd, a read region without a data node, has
    // none yet.
    let placed = common::placed_tenant(&w, TENANT);
    let mut holders = vec![placed["primary"].clone(), placed["standby"].clone()];
    holders.extend(
        placed["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| r["node"].clone()),
    );
    for h in &holders {
        assert!(h != "n4" && h != "n5", "a copy on a router: {placed}");
    }
    let view = w.cluster_view("n1").expect("n1's view");
    let roles = |name: &str| {
        view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["machine"] == name))
            .map(|m| m["meta"]["roles"].clone())
    };
    assert_eq!(roles("n4"), Some(serde_json::json!(["router"])));
    assert_eq!(roles("n1"), Some(serde_json::json!(["store"])));

    // Each router serves the database: writes on the primary, the
    // connection's own writes read back.
    for (i, name) in ["n4", "n5"].into_iter().enumerate() {
        let node = w.node(name).expect("router").clone();
        let mut c = common::shop_login(node.resp, TOKEN, "a login on a router", |c| {
            c.cmd(&["PING"]).ok() == Some(Value::Simple(b"PONG".to_vec()))
        });
        let key = format!("via:{name}");
        for n in 1..=10 {
            assert_eq!(c.cmd(&["INCR", &key]).ok(), Some(Value::Int(n)));
            assert_eq!(c.cmd(&["GET", &key]).ok(), Some(bulk(&n.to_string())));
        }
        assert_eq!(c.cmd(&["SET", "last", name]).ok(), Some(ok()), "router {i}");
        assert!(routing(&mut c, "routed_primary_writes") >= 11);
    }
    let primary = w
        .node(placed["primary"].as_str().expect("primary"))
        .expect("primary")
        .clone();
    let mut p = common::shop_login(primary.resp, TOKEN, "the primary", |c| {
        c.cmd(&["GET", "last"]).ok() == Some(bulk("n5"))
    });
    assert_eq!(p.cmd(&["GET", "via:n4"]).ok(), Some(bulk("10")));
    w.stop(Duration::from_secs(10));
}
