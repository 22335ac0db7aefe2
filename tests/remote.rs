//! A database served through a node that holds no copy of it
//! (docs/ROUTING.md, Remote databases): an emulated world of three iad
//! nodes and one cdg node; the database's primary and standby are on two
//! of the iad nodes, its replica in cdg, and a client logs in on the third
//! iad node, as Flycast may send it there.
//!
//! Checked on that node: AUTH with the database's token logs in; writes
//! run on the primary (once), reads are answered by the nearest copy and
//! always show the connection's own writes; a pipeline of writes and
//! reads keeps its order; SELECT, CLIENT SETNAME and CLIENT ID are the
//! node's own; a transaction and a blocking pop run on the primary; pub/sub
//! is refused with a clear error; INFO routing counts each route.

mod common;

use std::time::Duration;

use anykv_bench::world::World;
use common::{wait_for as wait, RespConn, Value};

const ADMIN: &str = "remote-admin-token";
const TOKEN: &str = "remote-tenant-token-0123456789ab";
const TENANT: u64 = 12;

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
    let spec = common::world_spec("remote", 52, 22600, &[("iad", 3), ("cdg", 1)], ADMIN, &[]);
    let w = World::start(&spec).expect("the world starts");
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

    // Pub/sub needs a node with a copy: a clear error, nothing else.
    let sub = a.cmd(&["SUBSCRIBE", "news"]).expect("SUBSCRIBE");
    assert!(
        matches!(&sub, Value::Error(e) if e.starts_with(b"ERR SUBSCRIBE needs a node that holds a copy")),
        "{sub:?}"
    );
    assert_eq!(a.cmd(&["PING"]).ok(), Some(Value::Simple(b"PONG".to_vec())));
    let _ = std::fs::remove_dir_all(&spec.dir);
}
