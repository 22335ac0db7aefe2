//! Replication between anykv nodes, as separate `anykv node` processes: a
//! tenant created through the admin API is placed (primary and standby in
//! its primary region, a replica in its read region), every holder opens
//! it, the replicas follow the primary over the cluster's QUIC links
//! (Redis's protocol inside), a random write load over every type (TTLs,
//! SPOP, MULTI, blocking pops) converges to identical keyspaces at equal
//! offsets, a replica stopped and restarted continues by partial resync
//! (asserted on the primary's `sync_partial_ok`), one kept away past the
//! backlog takes a full sync while writes continue, replicas refuse writes,
//! and a deleted tenant's token is refused by every node once the call
//! returns. The same scenario runs on plain loopback and over the link
//! shaper at 100 ms RTT with 1% loss between the regions.

mod common;
mod keyspace;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use common::{RespConn, Value};
use keyspace::{call, compare, info, keyspace_of, random_write, run, wait_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ADMIN_TOKEN: &str = "admin-secret-for-the-test";
const TOKEN: &str = "tenant-token-0123456789abcdef";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anykv"))
}

/// One HTTP/1.1 request; returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One emulated cluster: its nodes' loopback addresses, ports and WAN.
struct World {
    dir: PathBuf,
    /// Third octet of the nodes' addresses (127.0.X.n).
    net: u8,
    /// Gossip port; sync, LAN, RESP and HTTP follow it.
    port: u16,
    /// `--emulate-*` flags (empty: no shaping).
    wan: Vec<String>,
}

impl World {
    fn new(name: &str, net: u8, port: u16, shaped: bool) -> World {
        let dir = std::env::temp_dir().join(format!("anykv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(bin())
            .args(["cluster", "keygen", "--dir"])
            .arg(&dir)
            .output()
            .expect("keygen");
        assert!(out.status.success(), "keygen: {out:?}");
        let mut w = World {
            dir,
            net,
            port,
            wan: Vec::new(),
        };
        if shaped {
            let table = w.dir.join("rtt.csv");
            std::fs::write(&table, "from,to,rtt_ms\niad,cdg,100\n").expect("rtt table");
            let hosts = format!("{}=iad,{}=iad,{}=cdg", w.ip(1), w.ip(2), w.ip(3));
            w.wan = vec![
                "--emulate-wan".into(),
                table.display().to_string(),
                "--emulate-host".into(),
                hosts,
                "--emulate-loss".into(),
                "0.01".into(),
            ];
        }
        w
    }

    fn ip(&self, n: u8) -> String {
        format!("127.0.{}.{n}", self.net)
    }

    fn start(&self, n: u8, region: &str) -> Node {
        let dir = &self.dir;
        let key = std::fs::read_to_string(dir.join("gossip.key")).expect("gossip key");
        let data = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&data).expect("node dir");
        let log = std::fs::File::create(dir.join(format!("n{n}.log"))).expect("log file");
        let p = self.port;
        let child = Command::new(bin())
            .args(["node", "--machine", &format!("n{n}"), "--region", region])
            .args(["--gossip-addr", &format!("{}:{p}", self.ip(n))])
            .args(["--sync-port", &(p + 1).to_string()])
            .args(["--seeds", &format!("{}:{p}", self.ip(1))])
            .args(["--gossip-keys", key.trim()])
            .args(["--gossip-profile", "test", "--cluster-size", "4"])
            .args(["--lan-port", &(p + 2).to_string(), "--lan-profile", "test"])
            .args(&self.wan)
            .arg("--cluster-ca")
            .arg(dir.join("cluster-ca.pem"))
            .arg("--cluster-ca-key")
            .arg(dir.join("cluster-ca.key"))
            .env("ANYKV_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(["--", "--bind", &self.ip(n), "--port", &(p + 4).to_string()])
            .args(["--save", "", "--appendonly", "yes", "--hz", "50"])
            .args(["--repl-backlog-size", "64kb"])
            .arg("--dir")
            .arg(&data)
            .args(["--metrics-addr", &format!("{}:{}", self.ip(n), p + 5)])
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning anykv node");
        Node(child)
    }

    fn http(
        &self,
        n: u8,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> Option<(u16, String)> {
        let addr: SocketAddr = format!("{}:{}", self.ip(n), self.port + 5).parse().ok()?;
        http(addr, method, path, token, body)
    }

    fn cluster_json(&self, n: u8) -> Option<serde_json::Value> {
        let (code, body) = self.http(n, "GET", "/cluster", "", "")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// A connection to node `n` logged in to the test tenant (None while
    /// the node does not hold it or is not up).
    fn login(&self, n: u8) -> Option<RespConn> {
        let addr: SocketAddr = format!("{}:{}", self.ip(n), self.port + 4).parse().ok()?;
        let mut c = RespConn::connect_addr(addr).ok()?;
        match c.cmd(&["AUTH", "shop", TOKEN]).ok()? {
            Value::Simple(_) => Some(c),
            _ => None,
        }
    }
}

fn token_sha256() -> String {
    anykv_server::catalog::token_digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn entry(version: u64, maxmemory: u64) -> String {
    entry_with(version, maxmemory, "async")
}

fn entry_with(version: u64, maxmemory: u64, durability: &str) -> String {
    serde_json::json!({
        "id": 7, "name": "shop", "token_sha256": [token_sha256()], "org": "acme",
        "primary_region": "iad", "read_regions": ["cdg"], "maxmemory": maxmemory,
        "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
        "durability": durability, "consistency": "eventual", "version": version
    })
    .to_string()
}

fn role(c: &mut RespConn) -> String {
    match call(c, &["ROLE"]) {
        Value::Array(items) => match items.first() {
            Some(Value::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("ROLE: {other:?}"),
        },
        other => panic!("ROLE: {other:?}"),
    }
}

fn offsets_equal(p: &mut RespConn, replicas: &mut [RespConn]) -> bool {
    let master = info(p, "replication", "master_repl_offset");
    master.is_some()
        && replicas
            .iter_mut()
            .all(|r| info(r, "replication", "slave_repl_offset") == master)
}

fn stat(c: &mut RespConn, field: &str) -> u64 {
    info(c, "stats", field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO stats {field}"))
}

/// The random load, plus what only a primary decides: transactions and
/// blocking pops (they reach replicas as what they did).
fn load(p: &mut RespConn, rng: &mut StdRng, n: usize) {
    for _ in 0..n {
        match rng.random_range(0..20) {
            0 => {
                let l = format!("l{}", rng.random_range(0..5));
                for cmd in [
                    vec!["MULTI".to_string()],
                    vec!["INCR".into(), "tx-counter".into()],
                    vec!["RPUSH".into(), l.clone(), "from-multi".into()],
                    vec!["EXEC".into()],
                ] {
                    run(p, &cmd);
                }
            }
            1 => {
                let l = format!("l{}", rng.random_range(0..5));
                run(p, &["BLPOP".into(), l, "0.01".into()]);
            }
            _ => {
                let cmd = random_write(rng);
                run(p, &cmd);
            }
        }
    }
    call(p, &["SELECT", "0"]);
}

impl World {
    /// n1 and n2 in iad, n3 in cdg, all alive in each other's view.
    fn start_three(&self) -> Vec<Option<Node>> {
        let mut nodes: Vec<Option<Node>> = vec![None];
        for (n, region) in [(1, "iad"), (2, "iad"), (3, "cdg")] {
            nodes.push(Some(self.start(n, region)));
        }
        wait_for("three alive members", Duration::from_secs(60), || {
            (1..=3).all(|n| {
                self.cluster_json(n).is_some_and(|v| {
                    v["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().filter(|x| x["state"] == "alive").count() == 3)
                })
            })
        });
        nodes
    }
}

fn scenario(w: &World) {
    let mut nodes = w.start_three();

    if !w.wan.is_empty() {
        // The links really are shaped: n1 (iad) measures ~100 ms to n3 (cdg).
        wait_for(
            "n1 to measure its RTT to n3",
            Duration::from_secs(30),
            || {
                w.cluster_json(1).is_some_and(|v| {
                    v["members"].as_array().is_some_and(|m| {
                        m.iter().any(|x| {
                            x["machine"] == "n3"
                                && x["rtt_min_ms"].as_f64().is_some_and(|r| r >= 90.0)
                        })
                    })
                })
            },
        );
    }

    // The admin API: refused without the token, invalid entries refused.
    let (code, _) = w
        .http(3, "PUT", "/admin/tenants/7", "wrong", &entry(1, 0))
        .unwrap();
    assert_eq!(code, 401);
    let (code, body) = w
        .http(3, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 400, "{body}");

    // Created through a node that is not its primary: the call returns once
    // all three holders (primary and standby in iad, replica in cdg) have
    // it.
    let (code, body) = w
        .http(3, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut applied: Vec<&str> = reply["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    applied.sort_unstable();
    assert_eq!(applied, ["n1", "n2", "n3"], "{body}");
    // An old version again is a conflict, not a change.
    let (code, _) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 409);

    // Exactly one primary, in iad; the others follow it.
    let mut conns: Vec<(u8, RespConn)> = Vec::new();
    wait_for(
        "every holder to serve the tenant",
        Duration::from_secs(10),
        || {
            conns = (1..=3).filter_map(|n| w.login(n).map(|c| (n, c))).collect();
            conns.len() == 3
        },
    );
    let roles: Vec<(u8, String)> = conns.iter_mut().map(|(n, c)| (*n, role(c))).collect();
    let primaries: Vec<u8> = roles
        .iter()
        .filter(|(_, r)| r == "master")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(primaries.len(), 1, "{roles:?}");
    let pn = primaries[0];
    assert!(pn == 1 || pn == 2, "the primary must be in iad: {roles:?}");
    let pos = conns.iter().position(|(n, _)| *n == pn).unwrap();
    let (_, mut p) = conns.remove(pos);
    let mut replicas: Vec<RespConn> = conns.into_iter().map(|(_, c)| c).collect();
    wait_for("both replicas attached", Duration::from_secs(30), || {
        info(&mut p, "replication", "connected_slaves").as_deref() == Some("2")
    });

    let mut rng = StdRng::seed_from_u64(7);
    load(&mut p, &mut rng, 1500);
    // Every TTL of the load (< 400 ms) passes, the primary's DELs follow.
    std::thread::sleep(Duration::from_millis(600));
    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, &mut replicas)
    });
    let want = keyspace_of(&mut p);
    assert!(want.len() > 20, "the load left {} keys", want.len());
    for r in replicas.iter_mut() {
        compare(&want, &keyspace_of(r));
        match call(r, &["SET", "x", "1"]) {
            Value::Error(e) => assert!(e.starts_with(b"READONLY"), "{e:?}"),
            other => panic!("a replica took a write: {other:?}"),
        }
    }

    // The cluster view: the tenant's roles, and each replica's position
    // and lag as it measured it against the primary's time stamps (one way
    // is ~50 ms on the shaped WAN).
    let min_lag = if w.wan.is_empty() { 0 } else { 40 };
    wait_for(
        "the cdg replica's lag in the view",
        Duration::from_secs(15),
        || {
            let Some(v) = w.cluster_json(3) else {
                return false;
            };
            let Some(t) = v["tenants"].as_array().and_then(|t| t.first()) else {
                return false;
            };
            assert_eq!(t["name"], "shop", "{t}");
            assert_eq!(t["primary"], format!("n{pn}"), "{t}");
            let replicas = t["replicas"].as_array().expect("replicas");
            assert_eq!(replicas.len(), 2, "{t}");
            replicas.iter().any(|r| {
                r["node"] == "n3"
                    && r["region"] == "cdg"
                    && r["lag_ms"].as_i64().is_some_and(|l| l >= min_lag)
            })
        },
    );
    let lines: Vec<String> = (0..2)
        .filter_map(|i| info(&mut p, "replication", &format!("slave{i}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains("lag_bytes=") && l.contains("lag_ms=")),
        "{lines:?}"
    );

    // The cdg replica is stopped as a supervisor stops it (SIGTERM): its
    // log is made durable and its replication id kept, so it continues
    // where it was. (After a crash it takes a full sync, as Redis does: the
    // log alone does not say which history its tail belongs to.)
    let restart = |nodes: &mut Vec<Option<Node>>, during: &mut dyn FnMut()| {
        let mut n3 = nodes[3].take().unwrap();
        let pid = n3.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = n3.0.wait().unwrap();
        assert!(status.success(), "node 3 exited with {status}");
        during();
        nodes[3] = Some(w.start(3, "cdg"));
    };
    let (partial, full) = (stat(&mut p, "sync_partial_ok"), stat(&mut p, "sync_full"));
    restart(&mut nodes, &mut || load(&mut p, &mut rng, 200));
    let mut r3 = None;
    wait_for(
        "the restarted replica to serve",
        Duration::from_secs(30),
        || {
            r3 = w.login(3);
            r3.is_some()
        },
    );
    let mut r3 = r3.unwrap();
    std::thread::sleep(Duration::from_millis(600));
    wait_for(
        "the restarted replica to catch up",
        Duration::from_secs(30),
        || offsets_equal(&mut p, std::slice::from_mut(&mut r3)),
    );
    assert_eq!(
        stat(&mut p, "sync_partial_ok"),
        partial + 1,
        "no partial resync happened"
    );
    assert_eq!(
        stat(&mut p, "sync_full"),
        full,
        "a full sync happened instead"
    );
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r3));

    // Kept away while more than the backlog (64 kB) is written: it comes
    // back to a full sync, with writes going on meanwhile.
    drop(r3);
    let full = stat(&mut p, "sync_full");
    restart(&mut nodes, &mut || {
        for i in 0..400 {
            run(&mut p, &["SET".into(), format!("big-{i}"), "x".repeat(300)]);
        }
    });
    let mut r3 = None;
    let mut writes = 0;
    wait_for(
        "the replica back after the backlog",
        Duration::from_secs(30),
        || {
            // Writes continue while it syncs.
            load(&mut p, &mut rng, 20);
            writes += 20;
            r3 = w.login(3);
            r3.as_mut().is_some_and(|r| {
                info(r, "replication", "master_link_status").as_deref() == Some("up")
            })
        },
    );
    assert!(writes > 0);
    let mut r3 = r3.unwrap();
    load(&mut p, &mut rng, 200);
    std::thread::sleep(Duration::from_millis(600));
    wait_for(
        "the resynced replica to catch up",
        Duration::from_secs(30),
        || offsets_equal(&mut p, std::slice::from_mut(&mut r3)),
    );
    assert_eq!(stat(&mut p, "sync_full"), full + 1, "no full sync happened");
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r3));

    // A plan change applies on every holder.
    let (code, body) = w
        .http(
            2,
            "PUT",
            "/admin/tenants/7",
            ADMIN_TOKEN,
            &entry(2, 64 << 20),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");

    // Deleted: once the call returns, no node takes the token.
    let (code, body) = w
        .http(
            1,
            "DELETE",
            "/admin/tenants/7",
            ADMIN_TOKEN,
            r#"{"version":3}"#,
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    for n in 1..=3 {
        assert!(
            w.login(n).is_none(),
            "node {n} still takes the deleted token"
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[test]
fn a_tenant_is_placed_replicated_between_nodes_and_removed() {
    scenario(&World::new("repl-cluster", 32, 21700, false));
}

#[test]
fn replication_converges_over_a_100ms_lossy_wan() {
    scenario(&World::new("repl-wan", 33, 21720, true));
}

fn signal(node: &Node, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &node.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// Durability `region`: a write is acknowledged only once the in-region
/// standby has it. With the standby stopped (SIGSTOP) the primary holds
/// the reply, and sends it once the standby is back and acknowledges;
/// with the standby gone, writes are refused; a plan change to `async`
/// lifts both.
#[test]
fn durability_region_acknowledges_only_what_the_standby_has() {
    let w = World::new("repl-durability", 34, 21740, false);
    let mut nodes = w.start_three();
    let (code, body) = w
        .http(
            1,
            "PUT",
            "/admin/tenants/7",
            ADMIN_TOKEN,
            &entry_with(1, 0, "region"),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let view = w.cluster_json(1).unwrap();
    let t = &view["tenants"][0];
    let machine = |v: &serde_json::Value| -> u8 {
        v.as_str()
            .and_then(|m| m.strip_prefix('n'))
            .and_then(|n| n.parse().ok())
            .expect("machine")
    };
    let (pn, sn) = (machine(&t["primary"]), machine(&t["standby"]));
    assert!(pn != 3 && sn != 3 && pn != sn, "{t}");
    let mut p = None;
    wait_for(
        "the primary to take writes",
        Duration::from_secs(20),
        || {
            p = w.login(pn);
            p.as_mut()
                .is_some_and(|c| matches!(call(c, &["SET", "k0", "v"]), Value::Simple(_)))
        },
    );
    let mut p = p.unwrap();
    let mut sb = w.login(sn).expect("standby");
    // Every acknowledged write is on the standby already.
    for i in 0..100 {
        call(&mut p, &["SET", &format!("k{i}"), &i.to_string()]);
        assert_eq!(
            call(&mut sb, &["GET", &format!("k{i}")]),
            Value::Bulk(i.to_string().into_bytes()),
            "k{i} acknowledged before the standby had it"
        );
    }

    // The standby stops: the write is applied but not acknowledged.
    signal(nodes[sn as usize].as_ref().unwrap(), "-STOP");
    let addr: SocketAddr = format!("{}:{}", w.ip(pn), w.port + 4).parse().unwrap();
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(common::resp_str(&["AUTH", "shop", TOKEN]).as_slice())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    raw.write_all(common::resp_str(&["SET", "held", "1"]).as_slice())
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let early = raw.read(&mut buf);
    assert!(
        early.is_err(),
        "acknowledged while the standby was stopped: {early:?}"
    );
    signal(nodes[sn as usize].as_ref().unwrap(), "-CONT");
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    assert_eq!(call(&mut sb, &["GET", "held"]), Value::Bulk(b"1".to_vec()));

    // The standby gone: writes are refused (reads go on).
    drop(sb);
    // (Stopped cleanly, its link closes at once; a crashed standby's link
    // lasts until QUIC's idle timeout, and writes wait meanwhile.)
    let mut standby = nodes[sn as usize].take().unwrap();
    signal(&standby, "-TERM");
    assert!(standby.0.wait().unwrap().success());
    wait_for(
        "writes refused without the standby",
        Duration::from_secs(20),
        || matches!(call(&mut p, &["SET", "x", "1"]), Value::Error(e) if e.starts_with(b"NOREPLICAS")),
    );
    assert_eq!(call(&mut p, &["GET", "k5"]), Value::Bulk(b"5".to_vec()));

    // Back to async: writes go on without it.
    let (code, body) = w
        .http(
            pn,
            "PUT",
            "/admin/tenants/7",
            ADMIN_TOKEN,
            &entry_with(2, 0, "async"),
        )
        .unwrap();
    assert!(code == 200 || code == 202, "{code} {body}");
    wait_for("writes taken again", Duration::from_secs(20), || {
        matches!(call(&mut p, &["SET", "x", "1"]), Value::Simple(_))
    });
    drop(nodes);
    let _ = std::fs::remove_dir_all(&w.dir);
}
