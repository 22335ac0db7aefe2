//! Replication between anykv nodes, as separate `anykv node` processes: a
//! tenant created through the admin API is placed (primary and standby in
//! its primary region, a replica in its read region), every holder opens
//! it, the replicas follow the primary over the cluster's QUIC links
//! (Redis's protocol inside), a random write load over every type (TTLs,
//! SPOP, MULTI, blocking pops, a second client blocked in `BLPOP 0` and
//! served by the load) converges to identical keyspaces at equal offsets,
//! as do the primary's evictions under a plan's memory limit, a replica stopped and restarted continues by partial resync
//! (asserted on the primary's `sync_partial_ok`), one kept away past the
//! backlog takes a full sync while writes continue, replicas refuse writes,
//! and a deleted tenant's token is refused by every node once the call
//! returns. The same scenario runs on plain loopback and over the link
//! shaper at 100 ms RTT with 1% loss between the regions.
//!
//! Besides: durability `region` holds a woken BLPOP's reply until the
//! standby has the pop; a deletion's 200 means every holder refuses the
//! token at once, and a plan change shows on every holder; a node
//! restarted with a stale saved catalog learns a database created while it
//! was away and syncs it; two databases on the same nodes stay apart for
//! every key-taking command `COMMAND` lists (keys in all 16 databases,
//! pub/sub); the primary's evictions reach the replicas, which never evict.

mod common;
mod keyspace;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anykv_bench::world::http;
use common::{RespConn, Value};
use keyspace::{call, compare, info, keyspace_of, random_write, run, wait_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ADMIN_TOKEN: &str = "admin-secret-for-the-test";
const TOKEN: &str = "tenant-token-0123456789abcdef";
/// A second database's token (tenant 8, "blog").
const BLOG_TOKEN: &str = "blog-token-fedcba9876543210";

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

/// A passing test's files go with it (nodes, declared after their world,
/// are stopped first); a failing one's stay for its logs.
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
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

    /// `PUT /admin/tenants/{id}` through node `via`, which must answer 200
    /// (every live holder applied it); returns the reply.
    fn put(&self, via: u8, id: u64, body: &str) -> serde_json::Value {
        let (code, reply) = self
            .http(
                via,
                "PUT",
                &format!("/admin/tenants/{id}"),
                ADMIN_TOKEN,
                body,
            )
            .expect("the admin API answers");
        assert_eq!(code, 200, "{reply}");
        serde_json::from_str(&reply).expect("JSON reply")
    }

    /// `DELETE /admin/tenants/{id}` at catalog `version` through node
    /// `via`, which must answer 200; returns the reply's text.
    fn delete(&self, via: u8, id: u64, version: u64) -> String {
        let body = format!(r#"{{"version":{version}}}"#);
        let (code, reply) = self
            .http(
                via,
                "DELETE",
                &format!("/admin/tenants/{id}"),
                ADMIN_TOKEN,
                &body,
            )
            .expect("the admin API answers");
        assert_eq!(code, 200, "{reply}");
        reply
    }

    fn cluster_json(&self, n: u8) -> Option<serde_json::Value> {
        let (code, body) = self.http(n, "GET", "/cluster", "", "")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// A connection to node `n` logged in to the test tenant, once it
    /// serves it.
    fn serving(&self, n: u8) -> RespConn {
        let mut c = None;
        wait_for(
            &format!("n{n} to serve the tenant"),
            Duration::from_secs(20),
            || {
                c = self.login(n);
                c.is_some()
            },
        );
        c.expect("a connection")
    }

    /// A connection to the primary on node `n`, once it takes writes.
    fn taking_writes(&self, n: u8) -> RespConn {
        let mut c = None;
        wait_for(
            &format!("n{n} to take writes"),
            Duration::from_secs(20),
            || {
                c = self.login(n);
                c.as_mut()
                    .is_some_and(|c| matches!(call(c, &["SET", "k0", "v"]), Value::Simple(_)))
            },
        );
        c.expect("a connection")
    }

    /// A connection to node `n` logged in to the test tenant (None while
    /// the node does not hold it or is not up).
    fn login(&self, n: u8) -> Option<RespConn> {
        self.login_as(n, "shop", TOKEN)
    }

    /// Node `n`'s RESP address.
    fn resp_addr(&self, n: u8) -> SocketAddr {
        format!("{}:{}", self.ip(n), self.port + 4)
            .parse()
            .expect("RESP address")
    }

    /// A connection to node `n` logged in to database `name` (None while
    /// the node does not serve it or is not up).
    fn login_as(&self, n: u8, name: &str, token: &str) -> Option<RespConn> {
        let mut c = RespConn::connect_addr(self.resp_addr(n)).ok()?;
        match c.cmd(&["AUTH", name, token]).ok()? {
            Value::Simple(_) => Some(c),
            _ => None,
        }
    }

    /// Node `n`'s answer to `AUTH name token` (the node must be up: a
    /// refused connection fails the test instead of passing for a refusal).
    fn auth_reply(&self, n: u8, name: &str, token: &str) -> Value {
        let mut c = RespConn::connect_addr(self.resp_addr(n))
            .unwrap_or_else(|e| panic!("node {n} is not up: {e}"));
        call(&mut c, &["AUTH", name, token])
    }

    /// A raw socket on node `n` logged in to database `name`, for replies
    /// the test expects to be held.
    fn raw_login(&self, n: u8, name: &str, token: &str) -> TcpStream {
        let mut raw = TcpStream::connect(self.resp_addr(n)).expect("connect");
        raw.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        raw.write_all(&common::resp_str(&["AUTH", name, token]))
            .expect("AUTH");
        let mut buf = [0u8; 5];
        raw.read_exact(&mut buf).expect("AUTH reply");
        assert_eq!(&buf, b"+OK\r\n");
        raw
    }

    /// Where the catalog placed tenant `id`, as node `via` sees it:
    /// (primary, standby, read-region replicas), as node numbers.
    fn placed(&self, via: u8, id: u64) -> (u8, Option<u8>, Vec<u8>) {
        let machine = |v: &serde_json::Value| -> u8 {
            v.as_str()
                .and_then(|m| m.strip_prefix('n'))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("machine {v}"))
        };
        let mut found = None;
        wait_for(
            &format!("tenant {id} in node {via}'s view"),
            Duration::from_secs(20),
            || {
                found = self.cluster_json(via).and_then(|v| {
                    v["tenants"]
                        .as_array()?
                        .iter()
                        .find(|t| t["id"] == id)
                        .cloned()
                });
                found.is_some()
            },
        );
        let t = found.unwrap();
        let primary = machine(&t["primary"]);
        let standby = (!t["standby"].is_null()).then(|| machine(&t["standby"]));
        let replicas = t["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| machine(&r["node"]))
            .filter(|n| Some(*n) != standby)
            .collect();
        (primary, standby, replicas)
    }
}

fn sha256_hex(token: &str) -> String {
    anykv_server::catalog::token_digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_sha256() -> String {
    sha256_hex(TOKEN)
}

/// A catalog entry for database `id` named `name`, logged in to with
/// `token`, placed as the test tenant (primary in iad, a replica in cdg),
/// for the caller to adjust.
fn entry_for(id: u64, name: &str, token: &str, version: u64) -> serde_json::Value {
    let mut e: serde_json::Value = serde_json::from_str(&entry(version, 0)).expect("entry");
    e["id"] = id.into();
    e["name"] = name.into();
    e["token_sha256"] = serde_json::json!([sha256_hex(token)]);
    e
}

/// The machines an admin reply lists under `field`, sorted.
fn listed(body: &str, field: &str) -> Vec<String> {
    let reply: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut v: Vec<String> = reply[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect();
    v.sort_unstable();
    v
}

fn entry(version: u64, maxmemory: u64) -> String {
    entry_with(version, maxmemory, "async")
}

fn entry_with(version: u64, maxmemory: u64, durability: &str) -> String {
    serde_json::json!({
        "id": 7, "name": "shop", "token_sha256": [token_sha256()], "org": "acme",
        "primary_region": "iad", "read_regions": ["cdg"], "maxmemory": maxmemory,
        "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
        "durability": durability, "consistency": "ryw", "version": version
    })
    .to_string()
}

/// `anykv regions` against this cluster's admin API (n2's) and a fake
/// Fly Machines API holding one data node in iad and one in cdg: `list`
/// counts them and the database's regions, removing iad (the database's
/// primary region) is refused naming it, and removing cdg plans taking
/// cdg out of its read regions, the drain, then machine before volume.
fn regions_cli_plans_from_this_cluster(w: &World) {
    use anykv_ops::machines::{fake::FakeMachines, Machines, NewMachine, NewVolume};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = FakeMachines::new("anykv-data", "fly-tok");
    let base = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/v1", l.local_addr().expect("addr"));
        tokio::spawn(fake.clone().serve(l));
        let api = Machines::new(&base, "anykv-data", "fly-tok");
        for region in ["iad", "cdg"] {
            let v = api
                .create_volume(&NewVolume {
                    name: "anykv_data".into(),
                    region: region.into(),
                    size_gb: 10,
                    require_unique_zone: true,
                })
                .await
                .expect("volume");
            let config = serde_json::json!({
                "image": "registry.fly.io/anykv-data:deployment-1",
                "mounts": [{ "volume": v.id, "path": "/data" }],
            });
            api.create_machine(
                &NewMachine {
                    name: format!("anykv-{region}"),
                    region: region.into(),
                    config,
                },
                region,
            )
            .await
            .expect("machine");
        }
        base
    });
    let made = fake.requests().len();
    let node = format!("{}:{}", w.ip(2), w.port + 5);
    let regions = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("regions")
            .args(args)
            .args(["--app", "anykv-data", "--fly-token", "fly-tok"])
            .args([
                "--machines-api",
                &base,
                "--node",
                &node,
                "--admin-token",
                ADMIN_TOKEN,
            ])
            .output()
            .expect("running anykv regions");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, list, err) = regions(&["list"]);
    assert!(ok, "{err}");
    let row = |r: &str| {
        list.lines()
            .find(|l| l.starts_with(r))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| panic!("no {r} row:\n{list}"))
    };
    // nodes, volumes, primary-region databases, read-region databases
    assert_eq!(row("iad"), ["1", "1", "1", "0"], "{list}");
    assert_eq!(row("cdg"), ["1", "1", "0", "1"], "{list}");
    let (ok, _, err) = regions(&["remove", "iad", "--dry-run"]);
    assert!(!ok);
    assert!(
        err.contains("iad is the primary region of shop") && err.contains("--move-primaries-to"),
        "{err}"
    );
    let (ok, plan, err) = regions(&["remove", "cdg", "--dry-run"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 5, "{plan}");
    assert!(
        lines[0].ends_with("take cdg out of database 7's read regions"),
        "{plan}"
    );
    assert!(
        lines[1].ends_with("wait until no database has a copy in cdg"),
        "{plan}"
    );
    assert!(lines[2].contains("stop node"), "{plan}");
    assert!(lines[3].contains("destroy node"), "{plan}");
    assert!(lines[4].contains("destroy volume"), "{plan}");
    // Listing and dry runs change nothing: only reads reached Fly.
    let after: Vec<_> = fake.requests().into_iter().skip(made).collect();
    assert!(
        !after.is_empty() && after.iter().all(|q| q.method == "GET"),
        "{after:?}"
    );
    // A region that is no Fly region code is refused before Fly is
    // asked; one Fly does not have is refused by Fly at the first volume,
    // and nothing is made there.
    let (ok, _, err) = regions(&["add", "Paris"]);
    assert!(!ok);
    assert!(
        err.contains("\"Paris\" is not a Fly region code") && err.contains("fly platform regions"),
        "{err}"
    );
    let (ok, out, err) = regions(&["add", "xyz"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("Fly refused a volume in xyz") && err.contains("fly platform regions"),
        "{err}"
    );
    assert!(
        fake.volumes().iter().all(|v| v["region"] != "xyz")
            && fake.machines().iter().all(|m| m["region"] != "xyz"),
        "something was made in xyz"
    );
    rt.shutdown_background();
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
    // it, or after 1 s with the ones still applying it listed as pending
    // (202: over this lossy WAN on a busy machine, a holder may take
    // longer); none is down.
    let (code, body) = w
        .http(3, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert!(code == 200 || code == 202, "{code} {body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut holders: Vec<&str> = ["applied", "pending"]
        .iter()
        .flat_map(|f| reply[*f].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str())
        .collect();
    holders.sort_unstable();
    assert_eq!(holders, ["n1", "n2", "n3"], "{body}");
    if code == 200 {
        assert_eq!(reply["pending"], serde_json::json!([]), "{body}");
    }
    // An old version again is a conflict, not a change.
    let (code, _) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 409);
    // The entry as the catalog holds it (what `anykv regions` sends back
    // changed), behind the token; `/cluster` names each database's regions.
    let (code, _) = w
        .http(2, "GET", "/admin/tenants/7/entry", "wrong", "")
        .unwrap();
    assert_eq!(code, 401);
    let (code, _) = w
        .http(2, "GET", "/admin/tenants/99/entry", ADMIN_TOKEN, "")
        .unwrap();
    assert_eq!(code, 404);
    let (code, body) = w
        .http(2, "GET", "/admin/tenants/7/entry", ADMIN_TOKEN, "")
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let held: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let sent: serde_json::Value = serde_json::from_str(&entry(1, 0)).expect("JSON");
    assert_eq!(held, sent);
    wait_for(
        "/cluster to name the regions",
        Duration::from_secs(10),
        || {
            w.cluster_json(1).is_some_and(|v| {
                v["tenants"].as_array().is_some_and(|t| {
                    t.iter().any(|x| {
                        x["id"] == 7
                            && x["primary_region"] == "iad"
                            && x["read_regions"] == serde_json::json!(["cdg"])
                    })
                })
            })
        },
    );
    regions_cli_plans_from_this_cluster(w);

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

    // Besides the load, a second client blocks in `BLPOP blk 0` and is
    // served by the load's pushes: the pops reach the replicas as what
    // they did.
    let popper = {
        let mut c = w.login(pn).expect("a second client");
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match call(&mut c, &["BLPOP", "blk", "0"]) {
                    Value::Array(kv) if kv.len() == 2 => match &kv[1] {
                        Value::Bulk(v) if v == b"stop" => return got,
                        Value::Bulk(v) => got.push(String::from_utf8_lossy(v).into_owned()),
                        other => panic!("BLPOP value {other:?}"),
                    },
                    other => panic!("BLPOP {other:?}"),
                }
            }
        })
    };
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..16 {
        load(&mut p, &mut rng, 100);
        // The popper is blocked right now (the push wakes it, it does not
        // find the value waiting).
        wait_for("the popper blocked", Duration::from_secs(10), || {
            info(&mut p, "clients", "blocked_clients").as_deref() == Some("1")
        });
        let v = if round == 15 {
            "stop".to_string()
        } else {
            format!("b{round}")
        };
        call(&mut p, &["RPUSH", "blk", &v]);
    }
    let popped = popper.join().expect("the popper");
    let want_popped: Vec<String> = (0..15).map(|i| format!("b{i}")).collect();
    assert_eq!(popped, want_popped);
    // Every TTL of the load (< 400 ms) passes, the primary's DELs follow.
    std::thread::sleep(Duration::from_millis(600));
    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, &mut replicas)
    });
    let want = keyspace_of(&mut p);
    assert!(want.len() > 20, "the load left {} keys", want.len());
    for r in replicas.iter_mut() {
        compare(&want, &keyspace_of(r));
    }
    // A customer's write on a replica's node runs on the primary (the node
    // forwards it, docs/ROUTING.md), and the same connection reads it back
    // at once (read-your-writes), however far its local copy lags.
    let (writes0, gets0) = (
        common::cmdstat_calls(&mut p, "set"),
        common::cmdstat_calls(&mut p, "get"),
    );
    for (i, r) in replicas.iter_mut().enumerate() {
        for round in 0..5 {
            let v = format!("fw{i}-{round}");
            assert_eq!(call(r, &["SET", "x", &v]), Value::Simple(b"OK".to_vec()));
            assert_eq!(call(r, &["GET", "x"]), Value::Bulk(v.into_bytes()));
        }
    }
    assert_eq!(call(&mut p, &["GET", "x"]), Value::Bulk(b"fw1-4".to_vec()));
    // The writes ran on the primary (the replicas took none themselves).
    assert_eq!(common::cmdstat_calls(&mut p, "set") - writes0, 10);
    // CLIENT REPLY SKIP holds for a forwarded write too: only GET answers.
    let r = &mut replicas[0];
    r.send_all(&[
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["INCR", "skipped"],
        vec!["GET", "skipped"],
    ])
    .unwrap();
    assert_eq!(r.read_reply().unwrap(), Value::Bulk(b"1".to_vec()));
    let forwarded_gets = common::cmdstat_calls(&mut p, "get") - gets0 - 1;
    eprintln!("read-your-writes: {forwarded_gets} of 10 reads went to the primary");

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
    // where it was. (After a crash it starts a new id where its data ends
    // and asks its primary for the history before it, up to there:
    // docs/PERSISTENCE.md.)
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

    // A plan change applies on every holder: a memory limit a little
    // above what the database holds, under allkeys-lru. The primary
    // evicts, its evictions reach the replicas as DELs, and the replicas
    // never evict on their own.
    let used: u64 = info(&mut p, "memory", "used_memory")
        .and_then(|v| v.parse().ok())
        .expect("used_memory");
    let mut plan: serde_json::Value =
        serde_json::from_str(&entry(2, used + (256 << 10))).expect("entry");
    plan["maxmemory_policy"] = "allkeys-lru".into();
    w.put(2, 7, &plan.to_string());
    // Keys of every database (evictions take from all of them).
    let all_keys = |c: &mut RespConn| -> u64 {
        let Value::Bulk(text) = call(c, &["INFO", "keyspace"]) else {
            panic!("INFO keyspace");
        };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| {
                l.split_once(":keys=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let (evicted_before, keys_before) = (stat(&mut p, "evicted_keys"), all_keys(&mut p));
    let v = "e".repeat(1024);
    let mut written = 0u64;
    while stat(&mut p, "evicted_keys") < evicted_before + 20 {
        assert!(
            written < 5000,
            "5 MB written under a 256 kB margin, nothing evicted"
        );
        let r = call(&mut p, &["SET", &format!("ev:{written}"), &v]);
        assert!(matches!(r, Value::Simple(_)), "SET ev:{written}: {r:?}");
        written += 1;
    }
    // The limit lifted again, so reading the keyspace back (whose replies
    // count against the database's memory, as in Redis) evicts nothing
    // more.
    let mut plan: serde_json::Value = serde_json::from_str(&entry(3, 64 << 20)).expect("entry");
    plan["maxmemory_policy"] = "allkeys-lru".into();
    w.put(2, 7, &plan.to_string());
    let evicted = stat(&mut p, "evicted_keys") - evicted_before;
    std::thread::sleep(Duration::from_millis(600));
    wait_for(
        "equal offsets after evictions",
        Duration::from_secs(60),
        || offsets_equal(&mut p, std::slice::from_mut(&mut r3)),
    );
    let kept = all_keys(&mut p);
    assert_eq!(
        kept + evicted,
        keys_before + written,
        "keys neither kept nor evicted"
    );
    let want = keyspace_of(&mut p);
    compare(&want, &keyspace_of(&mut r3));
    assert_eq!(stat(&mut r3, "evicted_keys"), 0, "the replica evicted");

    // Deleted: once the call returns, no node takes the token.
    w.delete(1, 7, 4);
    for n in 1..=3 {
        assert!(
            w.login(n).is_none(),
            "node {n} still takes the deleted token"
        );
    }
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
    // `consistency: strong` too: a read must not show a write before the
    // standby has it.
    let mut e: serde_json::Value =
        serde_json::from_str(&entry_with(1, 0, "region")).expect("entry");
    e["consistency"] = "strong".into();
    w.put(1, 7, &e.to_string());
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
    let mut p = w.taking_writes(pn);
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
    // Another client reads the key meanwhile: the write is applied here
    // but not on the standby, so the reply waits (shown, it could be
    // lost with this primary).
    let mut reader = w.raw_login(pn, "shop", TOKEN);
    reader
        .write_all(common::resp_str(&["GET", "held"]).as_slice())
        .unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut rbuf = [0u8; 64];
    let shown = reader.read(&mut rbuf);
    assert!(
        shown.is_err(),
        "a strong read showed a write the standby does not have: {shown:?}"
    );
    signal(nodes[sn as usize].as_ref().unwrap(), "-CONT");
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let n = reader.read(&mut rbuf).unwrap();
    assert_eq!(
        &rbuf[..n],
        b"$1\r\n1\r\n",
        "the read, once the standby has it"
    );
    assert_eq!(call(&mut sb, &["GET", "held"]), Value::Bulk(b"1".to_vec()));

    // The standby hangs (as a crashed machine, its QUIC link stays up):
    // once it has not acknowledged for `repl-link-timeout-ms` (3 s) the
    // primary drops its link, and writes are refused instead of held
    // until QUIC's idle timeout (30 s) would end the link.
    signal(nodes[sn as usize].as_ref().unwrap(), "-STOP");
    let hung = std::time::Instant::now();
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(common::resp_str(&["AUTH", "shop", TOKEN]).as_slice())
        .unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    raw.write_all(common::resp_str(&["SET", "held2", "1"]).as_slice())
        .unwrap();
    wait_for(
        "the hung standby's link dropped",
        Duration::from_secs(15),
        || info(&mut p, "replication", "connected_slaves").as_deref() == Some("1"),
    );
    assert!(
        hung.elapsed() >= Duration::from_secs(2),
        "dropped after {:?}, before repl-link-timeout-ms",
        hung.elapsed()
    );
    let refused = call(&mut p, &["SET", "x", "1"]);
    assert!(
        matches!(&refused, Value::Error(e) if e.starts_with(b"NOREPLICAS")),
        "{refused:?}"
    );
    // Back: it reconnects, continues, and the held write is acknowledged.
    signal(nodes[sn as usize].as_ref().unwrap(), "-CONT");
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    assert_eq!(call(&mut sb, &["GET", "held2"]), Value::Bulk(b"1".to_vec()));

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

    // The primary hangs: its cdg replica, stamped every second, notices
    // the silence within `repl-link-timeout-ms` and reconnects once the
    // primary is back.
    let mut far = w.serving(3);
    assert_eq!(
        info(&mut far, "replication", "master_link_status").as_deref(),
        Some("up")
    );
    signal(nodes[pn as usize].as_ref().unwrap(), "-STOP");
    wait_for(
        "the replica sees its primary gone",
        Duration::from_secs(15),
        || info(&mut far, "replication", "master_link_status").as_deref() == Some("down"),
    );
    signal(nodes[pn as usize].as_ref().unwrap(), "-CONT");
    wait_for("the replica back in sync", Duration::from_secs(20), || {
        info(&mut far, "replication", "master_link_status").as_deref() == Some("up")
    });
    assert_eq!(call(&mut far, &["GET", "x"]), Value::Bulk(b"1".to_vec()));
}

/// Durability `region` covers what a write does to a blocked client: a
/// `BLPOP` woken by another client's `RPUSH` pops on the primary at once,
/// but its reply (as the pusher's) waits until the standby acknowledges
/// the pop; once it arrives the standby no longer has the list.
#[test]
fn a_blocked_pop_is_answered_only_once_the_standby_has_it() {
    let w = World::new("repl-blpop", 35, 21760, false);
    let nodes = w.start_three();
    w.put(1, 7, &entry_with(1, 0, "region"));
    let (pn, sn, replicas) = w.placed(1, 7);
    let sn = sn.expect("a standby");
    assert!(pn != 3 && sn != 3 && pn != sn, "{pn} {sn}");
    assert_eq!(replicas, [3]);
    let mut p = w.taking_writes(pn);
    let mut sb = w.login(sn).expect("standby");
    let mut r3 = w.login(3).expect("cdg replica");
    assert_eq!(call(&mut sb, &["GET", "k0"]), Value::Bulk(b"v".to_vec()));

    // A client blocks on the empty list.
    let mut blocked = w.raw_login(pn, "shop", TOKEN);
    blocked
        .write_all(&common::resp_str(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_for("the BLPOP to block", Duration::from_secs(10), || {
        info(&mut p, "clients", "blocked_clients").as_deref() == Some("1")
    });

    // The standby stops; another client pushes (its reply is held too).
    signal(nodes[sn as usize].as_ref().unwrap(), "-STOP");
    let mut pusher = w.raw_login(pn, "shop", TOKEN);
    pusher
        .write_all(&common::resp_str(&["RPUSH", "q", "x"]))
        .unwrap();
    // The primary has served the pop (reads are not held)...
    wait_for("the pop on the primary", Duration::from_secs(10), || {
        info(&mut p, "clients", "blocked_clients").as_deref() == Some("0")
    });
    assert_eq!(call(&mut p, &["EXISTS", "q"]), Value::Int(0));
    // ...but the popping client hears nothing while the standby lacks it.
    blocked
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = blocked.read(&mut buf);
    assert!(
        early.is_err(),
        "BLPOP answered while the standby was stopped: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    pusher
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let early = pusher.read(&mut buf);
    assert!(
        early.is_err(),
        "RPUSH answered while the standby was stopped: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );

    signal(nodes[sn as usize].as_ref().unwrap(), "-CONT");
    blocked
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let want = b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n";
    let mut got = vec![0u8; want.len()];
    blocked.read_exact(&mut got).expect("the BLPOP reply");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    // Acknowledged means the standby has the pop, not only the push.
    assert_eq!(
        call(&mut sb, &["EXISTS", "q"]),
        Value::Int(0),
        "the BLPOP was answered before the standby had its pop"
    );
    pusher
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = [0u8; 4];
    pusher.read_exact(&mut got).expect("the RPUSH reply");
    assert_eq!(&got, b":1\r\n");

    // The cdg replica follows as well.
    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, std::slice::from_mut(&mut r3))
    });
    assert_eq!(call(&mut r3, &["EXISTS", "q"]), Value::Int(0));
    assert_eq!(call(&mut r3, &["GET", "k0"]), Value::Bulk(b"v".to_vec()));
}

/// The memory plan node `n` applies to database `name`, as the database
/// sees it: `INFO memory`'s `maxmemory` and `maxmemory_policy`, and
/// `CONFIG GET maxmemory` (which a database also answers with its plan's).
fn memory_plan(w: &World, n: u8, name: &str, token: &str) -> (String, String, String) {
    let mut c = w
        .login_as(n, name, token)
        .unwrap_or_else(|| panic!("node {n} does not serve {name}"));
    let maxmemory = info(&mut c, "memory", "maxmemory").expect("maxmemory");
    let policy = info(&mut c, "memory", "maxmemory_policy").expect("maxmemory_policy");
    let config = match call(&mut c, &["CONFIG", "GET", "maxmemory"]) {
        Value::Array(v) => match v.as_slice() {
            [Value::Bulk(k), Value::Bulk(v)] if k == b"maxmemory" => {
                String::from_utf8_lossy(v).into_owned()
            }
            other => panic!("CONFIG GET maxmemory: {other:?}"),
        },
        other => panic!("CONFIG GET maxmemory: {other:?}"),
    };
    (maxmemory, policy, config)
}

/// A deletion's 200 means no holder takes the token any more (checked at
/// once, on every node, with each node up and answering `AUTH` with a
/// refusal), and it touches only that database: another one on the same
/// nodes keeps its data and logins, and a plan change to it applies on
/// every holder before its call returns.
#[test]
fn a_deletion_returns_only_once_no_holder_takes_the_token() {
    let w = World::new("repl-delete", 36, 21780, false);
    let _nodes = w.start_three();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let mut blog = entry_for(8, "blog", BLOG_TOKEN, 2);
    blog["maxmemory"] = (32u64 << 20).into();
    let (code, body) = w
        .http(2, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(listed(&body, "applied"), ["n1", "n2", "n3"], "{body}");

    // Both databases are served by all three nodes, each with its data.
    let (p7, _, _) = w.placed(1, 7);
    let (p8, _, _) = w.placed(1, 8);
    let mut shop = w.login(p7).expect("shop on its primary");
    let mut blogc = w
        .login_as(p8, "blog", BLOG_TOKEN)
        .expect("blog on its primary");
    for i in 0..50 {
        call(&mut shop, &["SET", &format!("s{i}"), "shop"]);
        call(&mut blogc, &["SET", &format!("b{i}"), "blog"]);
    }
    for n in 1..=3 {
        wait_for(
            &format!("node {n} to serve both databases with their data"),
            Duration::from_secs(20),
            || {
                let Some(mut s) = w.login(n) else {
                    return false;
                };
                let Some(mut b) = w.login_as(n, "blog", BLOG_TOKEN) else {
                    return false;
                };
                call(&mut s, &["GET", "s49"]) == Value::Bulk(b"shop".to_vec())
                    && call(&mut b, &["GET", "b49"]) == Value::Bulk(b"blog".to_vec())
            },
        );
    }

    // Deleted through a node, the call returns once every holder dropped
    // it: from then on, each node (up, answering) refuses the token.
    let body = w.delete(3, 7, 3);
    assert_eq!(listed(&body, "applied"), ["n1", "n2", "n3"], "{body}");
    assert!(listed(&body, "pending").is_empty(), "{body}");
    for n in 1..=3 {
        match w.auth_reply(n, "shop", TOKEN) {
            Value::Error(e) => assert!(
                e.starts_with(b"WRONGPASS"),
                "node {n}: {}",
                String::from_utf8_lossy(&e)
            ),
            other => panic!("node {n} still takes the deleted database's token: {other:?}"),
        }
    }
    // The other database is untouched everywhere.
    for n in 1..=3 {
        let mut b = w
            .login_as(n, "blog", BLOG_TOKEN)
            .unwrap_or_else(|| panic!("node {n} refuses blog after shop's deletion"));
        assert_eq!(call(&mut b, &["DBSIZE"]), Value::Int(50), "node {n}");
        assert_eq!(
            call(&mut b, &["GET", "b0"]),
            Value::Bulk(b"blog".to_vec()),
            "node {n}"
        );
    }
    // A deletion is a version too: the deleted id's old versions conflict.
    let (code, _) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(3, 0))
        .unwrap();
    assert_eq!(code, 409);

    // A plan change: every holder applies it before the call returns.
    for n in 1..=3 {
        assert_eq!(
            memory_plan(&w, n, "blog", BLOG_TOKEN),
            (
                (32u64 << 20).to_string(),
                "noeviction".to_string(),
                (32u64 << 20).to_string()
            ),
            "node {n}"
        );
    }
    blog["version"] = 4.into();
    blog["maxmemory"] = (48u64 << 20).into();
    blog["maxmemory_policy"] = "allkeys-lru".into();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(listed(&body, "applied"), ["n1", "n2", "n3"], "{body}");
    for n in 1..=3 {
        assert_eq!(
            memory_plan(&w, n, "blog", BLOG_TOKEN),
            (
                (48u64 << 20).to_string(),
                "allkeys-lru".to_string(),
                (48u64 << 20).to_string()
            ),
            "node {n}"
        );
    }
    // The connection limit too, on every holder: with one client logged
    // in, the next login is refused (Redis's words), and taken again once
    // the limit is lifted.
    blog["version"] = 5.into();
    blog["maxclients"] = 1.into();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    drop(blogc);
    for n in 1..=3 {
        // (Earlier clients' ends reach the node a moment after they close.)
        let mut first = None;
        wait_for(
            &format!("node {n}: the one client"),
            Duration::from_secs(10),
            || {
                first = w.login_as(n, "blog", BLOG_TOKEN);
                first.is_some()
            },
        );
        assert_eq!(
            w.auth_reply(n, "blog", BLOG_TOKEN),
            Value::Error(b"ERR max number of clients reached".to_vec()),
            "node {n}"
        );
        drop(first);
    }
    blog["version"] = 6.into();
    blog["maxclients"] = 0.into();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    for n in 1..=3 {
        let _one = w.login_as(n, "blog", BLOG_TOKEN).expect("a client");
        let _two = w
            .login_as(n, "blog", BLOG_TOKEN)
            .unwrap_or_else(|| panic!("node {n} still limits blog to one client"));
    }
}

/// The (table, key) of every row node `n` saved in its catalog file.
fn saved_rows(w: &World, n: u8) -> Vec<(String, String)> {
    let path = w.dir.join(format!("n{n}")).join("cluster-tenants.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let rows: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["table"].as_str().unwrap_or_default().to_string(),
                r["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A node stopped while a database is created comes back with a catalog
/// (its saved file) that lacks it: it learns the database from its peers,
/// is given the read region's replica, opens it and syncs everything
/// written while it was away.
#[test]
fn a_node_restarted_with_a_stale_catalog_catches_up() {
    let w = World::new("repl-stale", 37, 21800, false);
    let mut nodes = w.start_three();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    wait_for("n3 to save tenant 7", Duration::from_secs(20), || {
        saved_rows(&w, 3).contains(&("Tenants".into(), "7".into()))
    });

    // n3 stops as a supervisor stops it, and its peers see it gone.
    let mut n3 = nodes[3].take().unwrap();
    signal(&n3, "-TERM");
    let status = n3.0.wait().unwrap();
    assert!(status.success(), "node 3 exited with {status}");
    wait_for("n1 to see n3 gone", Duration::from_secs(60), || {
        w.cluster_json(1).is_some_and(|v| {
            v["members"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|x| x["machine"] == "n3" && x["state"] != "alive")
            })
        })
    });

    // Meanwhile a database with a cdg read region is created through n1:
    // the call does not wait for n3, and says cdg has no copy yet (its
    // one node is down: whether it was placed there or not).
    let blog = entry_for(8, "blog", BLOG_TOKEN, 1);
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 202, "{body}");
    assert!(listed(&body, "pending").is_empty(), "{body}");
    assert!(
        !listed(&body, "applied").contains(&"n3".to_string()),
        "{body}"
    );
    assert_eq!(listed(&body, "missing_regions"), ["cdg"], "{body}");
    let (pn, _, _) = w.placed(1, 8);
    assert!(pn == 1 || pn == 2, "blog's primary must be in iad: {pn}");
    let mut p = None;
    wait_for("blog's primary to serve", Duration::from_secs(20), || {
        p = w.login_as(pn, "blog", BLOG_TOKEN);
        p.is_some()
    });
    let mut p = p.unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    load(&mut p, &mut rng, 800);
    // n3's own catalog is stale: it has tenant 7, not tenant 8.
    let saved = saved_rows(&w, 3);
    assert!(saved.contains(&("Tenants".into(), "7".into())), "{saved:?}");
    assert!(!saved.iter().any(|(_, k)| k == "8"), "{saved:?}");

    // Restarted, it catches up: it serves the new database within 20 s...
    let back = std::time::Instant::now();
    nodes[3] = Some(w.start(3, "cdg"));
    let mut r3 = None;
    // (Its own copy: until the record names it, n3 serves blog through
    // the nodes that hold it, docs/ROUTING.md, and closes those
    // connections when it opens its copy: a connection it closes between
    // the login and ROLE is tried again.)
    wait_for(
        "the restarted node to serve blog",
        Duration::from_secs(20),
        || {
            r3 = w.login_as(3, "blog", BLOG_TOKEN);
            r3.as_mut().is_some_and(|c| match c.cmd(&["ROLE"]) {
                Ok(Value::Array(items)) => items.first() == Some(&Value::Bulk(b"slave".to_vec())),
                Ok(other) => panic!("ROLE: {other:?}"),
                Err(_) => false,
            })
        },
    );
    eprintln!("n3 served blog {:?} after its restart", back.elapsed());
    let mut r3 = r3.unwrap();
    let (_, _, replicas) = w.placed(1, 8);
    assert_eq!(replicas, [3], "blog's cdg replica");
    // ...with everything written while it was away.
    std::thread::sleep(Duration::from_millis(600));
    wait_for("n3 to catch up on blog", Duration::from_secs(30), || {
        offsets_equal(&mut p, std::slice::from_mut(&mut r3))
    });
    let want = keyspace_of(&mut p);
    assert!(want.len() > 20, "the load left {} keys", want.len());
    compare(&want, &keyspace_of(&mut r3));
    assert!(w.login(3).is_some(), "n3 no longer serves shop");
}

/// A primary at its plan's `maxmemory` under `allkeys-lru` evicts, and its
/// evictions reach the replicas as `DEL`s: they end at its offset with its
/// keyspace, without evicting anything on their own.
#[test]
fn evictions_on_the_primary_reach_the_replicas() {
    let w = World::new("repl-evict", 39, 21840, false);
    let _nodes = w.start_three();
    let mut e: serde_json::Value = serde_json::from_str(&entry(1, 4 << 20)).unwrap();
    e["maxmemory_policy"] = "allkeys-lru".into();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &e.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (pn, sn, replicas) = w.placed(1, 7);
    let mut holders: Vec<u8> = sn.into_iter().chain(replicas).collect();
    holders.sort_unstable();
    assert_eq!(holders.len(), 2, "{holders:?}");
    let mut p = w.serving(pn);
    let mut reps: Vec<RespConn> = holders
        .iter()
        .map(|&n| w.login(n).unwrap_or_else(|| panic!("replica n{n}")))
        .collect();
    wait_for("both replicas attached", Duration::from_secs(30), || {
        info(&mut p, "replication", "connected_slaves").as_deref() == Some("2")
    });
    assert_eq!(
        info(&mut p, "memory", "maxmemory").as_deref(),
        Some("4194304")
    );
    // /metrics: the primary counts the replicas' full syncs and shows each
    // replica's lag; each replica shows its link and its lag.
    let metrics = |n: u8| -> String {
        w.http(n, "GET", "/metrics", "", "")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let line = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("tenant=\"shop\""))
            .map(String::from)
            .collect()
    };
    wait_for(
        "the primary's replication metrics",
        Duration::from_secs(10),
        || {
            let m = metrics(pn);
            line(&m, "anykv_repl_sync_full_total")
                .iter()
                .any(|l| l.ends_with(" 2"))
                && line(&m, "anykv_repl_replica_lag_bytes").len() == 2
                && line(&m, "anykv_repl_replica_lag_ms").len() == 2
        },
    );
    for &n in &holders {
        wait_for(
            &format!("n{n}'s replica metrics"),
            Duration::from_secs(10),
            || {
                let m = metrics(n);
                line(&m, "anykv_repl_link_up")
                    .iter()
                    .any(|l| l.ends_with(" 1"))
                    && line(&m, "anykv_repl_lag_ms").len() == 1
            },
        );
    }

    // 10 KB values until the primary has evicted a few dozen keys.
    let v = "x".repeat(10 * 1024);
    let mut written = 0usize;
    while stat(&mut p, "evicted_keys") < 20 {
        assert!(
            written < 5000,
            "50 MB written under a 4 MB plan, {} evicted",
            stat(&mut p, "evicted_keys")
        );
        match call(&mut p, &["SET", &format!("ev:{written}"), &v]) {
            Value::Simple(_) => {}
            other => panic!("SET ev:{written}: {other:?}"),
        }
        written += 1;
    }
    let evicted = stat(&mut p, "evicted_keys");
    let Value::Int(kept) = call(&mut p, &["DBSIZE"]) else {
        panic!("DBSIZE");
    };
    assert_eq!(
        kept as u64 + evicted,
        written as u64,
        "keys neither kept nor evicted (kept {kept}, evicted {evicted})"
    );
    eprintln!("wrote {written} keys of 10 KB, the primary evicted {evicted}, kept {kept}");

    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, &mut reps)
    });
    let want = keyspace_of(&mut p);
    assert_eq!(want.len() as i64, kept);
    for (n, r) in holders.iter().zip(reps.iter_mut()) {
        compare(&want, &keyspace_of(r));
        assert_eq!(
            stat(r, "evicted_keys"),
            0,
            "replica n{n} evicted on its own"
        );
    }

    // What the primary streams to its replicas is not the database's
    // memory: it keeps taking writes, three times its plan in all, and
    // emptied it is back near where it started. (Before QUIC stream polls
    // ran outside the tenant's account, server/src/stream.rs, every byte
    // sent to a replica stayed charged to the database and writes ended in
    // OOM with every key evicted.)
    let used = |p: &mut RespConn| -> u64 {
        info(p, "memory", "used_memory")
            .and_then(|v| v.parse().ok())
            .expect("used_memory")
    };
    for i in written..1200 {
        let r = call(&mut p, &["SET", &format!("ev:{i}"), &v]);
        assert!(
            matches!(r, Value::Simple(_)),
            "SET ev:{i}: {r:?} (used_memory {}, {:?} keys, {} evicted)",
            used(&mut p),
            call(&mut p, &["DBSIZE"]),
            stat(&mut p, "evicted_keys")
        );
    }
    call(&mut p, &["FLUSHALL"]);
    wait_for(
        "used_memory back near its start",
        Duration::from_secs(10),
        || used(&mut p) < 1 << 20,
    );
    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, &mut reps)
    });
}

/// One way to run each key-taking command in a database: (the command as
/// `COMMAND` names it, its subcommands as `container|sub`; the commands to
/// run, `;`-separated, where `K` stands for `iso:<command>` and `K:x` for
/// `iso:<command>:x`; `\s` and `\n` a space and a newline, for function
/// libraries). Each one sets up the keys it reads.
const ISO_COMMANDS: &[(&str, &str)] = &[
    ("append", "APPEND K v"),
    ("bitcount", "SET K foobar ; BITCOUNT K 1 2"),
    ("bitfield", "BITFIELD K SET u8 0 200 INCRBY i5 8 3 GET u4 0"),
    ("bitfield_ro", "SET K foobar ; BITFIELD_RO K GET i8 8"),
    ("bitop", "SET K foobar ; SET K:2 abcdef ; BITOP XOR K:dest K K:2"),
    ("bitpos", "SET K foobar ; BITPOS K 1 2"),
    ("blmove", "RPUSH K a b ; BLMOVE K K:to LEFT RIGHT 1"),
    ("blpop", "RPUSH K a b ; BLPOP K 1"),
    ("brpop", "RPUSH K a b ; BRPOP K 1"),
    ("brpoplpush", "RPUSH K a b ; BRPOPLPUSH K K:to 1"),
    ("bzpopmax", "ZADD K 1 a 2 b ; BZPOPMAX K 1"),
    ("bzpopmin", "ZADD K 1 a 2 b ; BZPOPMIN K 1"),
    ("copy", "SET K v ; COPY K K:copy DB 2"),
    ("dump", "SET K v ; DUMP K"),
    ("decr", "DECR K"),
    ("decrby", "DECRBY K 5"),
    ("del", "SET K v ; SET K:2 v ; DEL K:2"),
    ("exists", "SET K v ; EXISTS K K:none"),
    ("expire", "SET K v ; EXPIRE K 100000"),
    ("expireat", "SET K v ; EXPIREAT K 4000000000"),
    ("expiretime", "SET K v EX 100000 ; EXPIRETIME K"),
    ("geoadd", "GEOADD K 13.361389 38.115556 a 15.087269 37.502669 b"),
    ("geodist", "GEOADD K 13.361389 38.115556 a 15.087269 37.502669 b ; GEODIST K a b km"),
    ("geohash", "GEOADD K 13.361389 38.115556 a ; GEOHASH K a"),
    ("geopos", "GEOADD K 13.361389 38.115556 a ; GEOPOS K a"),
    ("georadius", "GEOADD K 13.361389 38.115556 a ; GEORADIUS K 15 37 200 km STORE K:dst"),
    ("georadius_ro", "GEOADD K 13.361389 38.115556 a ; GEORADIUS_RO K 15 37 200 km"),
    ("georadiusbymember", "GEOADD K 13.361389 38.115556 a ; GEORADIUSBYMEMBER K a 100 km STOREDIST K:dst"),
    ("georadiusbymember_ro", "GEOADD K 13.361389 38.115556 a ; GEORADIUSBYMEMBER_RO K a 100 km"),
    ("geosearch", "GEOADD K 13.361389 38.115556 a ; GEOSEARCH K FROMLONLAT 15 37 BYBOX 400 400 km"),
    ("geosearchstore", "GEOADD K 13.361389 38.115556 a ; GEOSEARCHSTORE K:dst K FROMMEMBER a BYRADIUS 10 km"),
    ("get", "SET K v ; GET K"),
    ("eval", "EVAL return(redis.call('SET',KEYS[1],'v')) 1 K ; GET K"),
    ("eval_ro", "SET K v ; EVAL_RO return(redis.call('GET',KEYS[1])) 1 K"),
    ("evalsha", "SCRIPT LOAD return(redis.call('SET',KEYS[1],'v')) ; EVALSHA 3e2feda524ce47490a94e4a49a2a6ef846627ef6 1 K"),
    ("evalsha_ro", "SET K v ; SCRIPT LOAD return(redis.call('GET',KEYS[1])) ; EVALSHA_RO bfef805d9dcd9d3857da9372933ef22c17736f58 1 K"),
    ("fcall", "FUNCTION LOAD REPLACE #!lua\\sname=iso\\nredis.register_function('isoset',function(k)return(redis.call('SET',k[1],'v'))end)\\nredis.register_function{function_name='isoget',callback=function(k)return(redis.call('GET',k[1]))end,flags={'no-writes'}} ; FCALL isoset 1 K ; GET K"),
    ("fcall_ro", "SET K v ; FUNCTION LOAD REPLACE #!lua\\sname=iso\\nredis.register_function('isoset',function(k)return(redis.call('SET',k[1],'v'))end)\\nredis.register_function{function_name='isoget',callback=function(k)return(redis.call('GET',k[1]))end,flags={'no-writes'}} ; FCALL_RO isoget 1 K"),
    ("getbit", "SET K foobar ; GETBIT K 9"),
    ("getdel", "SET K v ; SET K:2 v ; GETDEL K:2"),
    ("getex", "SET K v ; GETEX K EX 100000"),
    ("getrange", "SET K value ; GETRANGE K 1 3"),
    ("getset", "SET K v ; GETSET K w"),
    ("hdel", "HSET K a 1 b 2 ; HDEL K a"),
    ("hexists", "HSET K a 1 ; HEXISTS K a"),
    ("hget", "HSET K a 1 ; HGET K a"),
    ("hgetall", "HSET K a 1 b 2 ; HGETALL K"),
    ("hincrby", "HINCRBY K a 3"),
    ("hincrbyfloat", "HINCRBYFLOAT K a 1.5"),
    ("hkeys", "HSET K a 1 ; HKEYS K"),
    ("hlen", "HSET K a 1 ; HLEN K"),
    ("hmget", "HSET K a 1 ; HMGET K a b"),
    ("hmset", "HMSET K a 1 b 2"),
    ("hrandfield", "HSET K a 1 b 2 ; HRANDFIELD K 2 WITHVALUES"),
    ("hscan", "HSET K a 1 b 2 ; HSCAN K 0"),
    ("hset", "HSET K a 1 b 2"),
    ("hsetnx", "HSETNX K a 1"),
    ("hstrlen", "HSET K a 123 ; HSTRLEN K a"),
    ("hvals", "HSET K a 1 ; HVALS K"),
    ("incr", "INCR K"),
    ("incrby", "INCRBY K 7"),
    ("incrbyfloat", "INCRBYFLOAT K 2.5"),
    ("lcs", "SET K ohmytext ; SET K:2 mynewtext ; LCS K K:2"),
    ("lindex", "RPUSH K a b ; LINDEX K 1"),
    ("linsert", "RPUSH K a b ; LINSERT K BEFORE b x"),
    ("llen", "RPUSH K a b ; LLEN K"),
    ("lmove", "RPUSH K a b ; LMOVE K K:to LEFT RIGHT"),
    ("lpop", "RPUSH K a b c ; LPOP K"),
    ("lpos", "RPUSH K a b ; LPOS K b"),
    ("lpush", "LPUSH K a b"),
    ("lpushx", "LPUSH K a ; LPUSHX K b"),
    ("lrange", "RPUSH K a b ; LRANGE K 0 -1"),
    ("lrem", "RPUSH K a b a ; LREM K 1 a"),
    ("lset", "RPUSH K a b ; LSET K 0 z"),
    ("ltrim", "RPUSH K a b c ; LTRIM K 0 1"),
    ("memory|usage", "SET K v ; MEMORY USAGE K"),
    ("mget", "SET K v ; MGET K K:none"),
    ("move", "SET K v ; MOVE K 1"),
    ("mset", "MSET K v K:2 w"),
    ("msetnx", "MSETNX K v K:2 w"),
    ("persist", "SET K v EX 100 ; PERSIST K"),
    ("pexpire", "SET K v ; PEXPIRE K 100000000"),
    ("pexpireat", "SET K v ; PEXPIREAT K 4000000000000"),
    ("pexpiretime", "SET K v EX 100000 ; PEXPIRETIME K"),
    // A database may not open connections from the server: refused, and
    // K stays.
    ("migrate", "SET K v ; MIGRATE 127.0.0.1 1 K 0 100 ; GET K"),
    ("pfadd", "PFADD K a b c"),
    ("pfcount", "PFADD K a b ; PFADD K:x c ; PFCOUNT K K:x"),
    ("pfdebug", "PFADD K a ; PFDEBUG TODENSE K"),
    ("pfmerge", "PFADD K:x a b ; PFMERGE K K:x"),
    ("psetex", "PSETEX K 100000000 v"),
    ("pttl", "SET K v EX 100000 ; PTTL K"),
    ("restore", "SET K v ; RESTORE K:copy 0 DUMPOF:K ; GET K:copy"),
    ("rename", "SET K v ; RENAME K K:renamed"),
    ("renamenx", "SET K v ; RENAMENX K K:renamed"),
    ("rpop", "RPUSH K a b c ; RPOP K"),
    ("rpoplpush", "RPUSH K a b ; RPOPLPUSH K K:to"),
    ("rpush", "RPUSH K a b"),
    ("rpushx", "RPUSH K a ; RPUSHX K b"),
    ("sadd", "SADD K a b"),
    ("scard", "SADD K a b ; SCARD K"),
    ("sdiff", "SADD K a b ; SADD K:2 b ; SDIFF K K:2"),
    (
        "sdiffstore",
        "SADD K:1 a b ; SADD K:2 b ; SDIFFSTORE K K:1 K:2",
    ),
    ("set", "SET K v"),
    ("setbit", "SETBIT K 100 1"),
    ("setex", "SETEX K 100000 v"),
    ("setnx", "SETNX K v"),
    ("setrange", "SET K hello ; SETRANGE K 1 a"),
    ("sinter", "SADD K a b ; SADD K:2 b ; SINTER K K:2"),
    (
        "sinterstore",
        "SADD K:1 a b ; SADD K:2 b ; SINTERSTORE K K:1 K:2",
    ),
    ("sismember", "SADD K a ; SISMEMBER K a"),
    ("smembers", "SADD K a b ; SMEMBERS K"),
    ("smismember", "SADD K a ; SMISMEMBER K a b"),
    ("smove", "SADD K a b ; SMOVE K K:to a"),
    ("sort", "RPUSH K 3 1 2 ; SORT K STORE K:sorted"),
    ("sort_ro", "RPUSH K 3 1 2 ; SORT_RO K"),
    ("spop", "SADD K a b c ; SPOP K"),
    ("spublish", "SPUBLISH K hello"),
    ("srandmember", "SADD K a b ; SRANDMEMBER K"),
    ("srem", "SADD K a b ; SREM K a"),
    ("sscan", "SADD K a b ; SSCAN K 0"),
    ("ssubscribe", "SSUBSCRIBE K ; SUNSUBSCRIBE K"),
    ("strlen", "SET K value ; STRLEN K"),
    ("substr", "SET K value ; SUBSTR K 1 3"),
    ("sunion", "SADD K a ; SADD K:2 b ; SUNION K K:2"),
    (
        "sunionstore",
        "SADD K:1 a ; SADD K:2 b ; SUNIONSTORE K K:1 K:2",
    ),
    ("sunsubscribe", "SSUBSCRIBE K ; SUNSUBSCRIBE K"),
    ("touch", "SET K v ; TOUCH K K:none"),
    ("ttl", "SET K v EX 100000 ; TTL K"),
    ("type", "HSET K a 1 ; TYPE K"),
    ("unlink", "SET K v ; SET K:2 v ; UNLINK K:2"),
    ("watch", "SET K v ; WATCH K ; UNWATCH"),
    ("xadd", "XADD K MAXLEN ~ 10 * f v ; XADD K 99999999999999-* g w"),
    ("xdel", "XADD K 1-1 f v ; XADD K 2-1 f v ; XDEL K 1-1"),
    ("xlen", "XADD K * f v ; XLEN K"),
    ("xrange", "XADD K * f v ; XRANGE K - + COUNT 5"),
    ("xread", "XADD K * f v ; XADD K:2 * f v ; XREAD COUNT 2 STREAMS K K:2 0 0"),
    ("xrevrange", "XADD K * f v ; XREVRANGE K + - COUNT 5"),
    ("xsetid", "XADD K 5-5 f v ; XSETID K 7-7"),
    ("xtrim", "XADD K 1-1 f v ; XADD K 2-1 f v ; XTRIM K MINID 2"),
    ("xgroup|create", "XGROUP CREATE K g $ MKSTREAM"),
    ("xgroup|setid", "XGROUP CREATE K g $ MKSTREAM ; XGROUP SETID K g 0"),
    ("xgroup|createconsumer", "XGROUP CREATE K g $ MKSTREAM ; XGROUP CREATECONSUMER K g c"),
    ("xgroup|delconsumer", "XGROUP CREATE K g $ MKSTREAM ; XGROUP CREATECONSUMER K g c ; XGROUP DELCONSUMER K g c"),
    ("xgroup|destroy", "XGROUP CREATE K g $ MKSTREAM ; XGROUP DESTROY K g"),
    ("xreadgroup", "XGROUP CREATE K g $ MKSTREAM ; XADD K 1-1 f v ; XREADGROUP GROUP g c STREAMS K >"),
    ("xack", "XGROUP CREATE K g $ MKSTREAM ; XADD K 1-1 f v ; XREADGROUP GROUP g c STREAMS K > ; XACK K g 1-1"),
    ("xpending", "XGROUP CREATE K g $ MKSTREAM ; XADD K 1-1 f v ; XREADGROUP GROUP g c STREAMS K > ; XPENDING K g"),
    ("xclaim", "XGROUP CREATE K g $ MKSTREAM ; XADD K 1-1 f v ; XREADGROUP GROUP g c STREAMS K > ; XCLAIM K g d 0 1-1"),
    ("xautoclaim", "XGROUP CREATE K g $ MKSTREAM ; XADD K 1-1 f v ; XREADGROUP GROUP g c STREAMS K > ; XAUTOCLAIM K g d 0 0"),
    ("xinfo|stream", "XADD K 1-1 f v ; XINFO STREAM K"),
    ("xinfo|groups", "XGROUP CREATE K g $ MKSTREAM ; XINFO GROUPS K"),
    ("xinfo|consumers", "XGROUP CREATE K g $ MKSTREAM ; XGROUP CREATECONSUMER K g c ; XINFO CONSUMERS K g"),
    ("zadd", "ZADD K 1 a 2 b"),
    ("zcard", "ZADD K 1 a ; ZCARD K"),
    ("zcount", "ZADD K 1 a 2 b ; ZCOUNT K 1 2"),
    (
        "zdiffstore",
        "ZADD K:1 1 a 2 b ; ZADD K:2 1 a ; ZDIFFSTORE K 2 K:1 K:2",
    ),
    ("zincrby", "ZINCRBY K 2.5 a"),
    (
        "zinterstore",
        "ZADD K:1 1 a 2 b ; ZADD K:2 1 a ; ZINTERSTORE K 2 K:1 K:2",
    ),
    ("zlexcount", "ZADD K 0 a 0 b ; ZLEXCOUNT K - +"),
    ("zmscore", "ZADD K 1 a ; ZMSCORE K a b"),
    ("zpopmax", "ZADD K 1 a 2 b 3 c ; ZPOPMAX K"),
    ("zpopmin", "ZADD K 1 a 2 b 3 c ; ZPOPMIN K"),
    ("zrandmember", "ZADD K 1 a 2 b ; ZRANDMEMBER K 2 WITHSCORES"),
    ("zrange", "ZADD K 1 a 2 b ; ZRANGE K 0 -1 WITHSCORES"),
    ("zrangebylex", "ZADD K 0 a 0 b ; ZRANGEBYLEX K - +"),
    (
        "zrangebyscore",
        "ZADD K 1 a 2 b ; ZRANGEBYSCORE K -inf +inf",
    ),
    ("zrangestore", "ZADD K 1 a 2 b ; ZRANGESTORE K:dst K 0 -1"),
    ("zrank", "ZADD K 1 a 2 b ; ZRANK K b"),
    ("zrem", "ZADD K 1 a 2 b ; ZREM K a"),
    (
        "zremrangebylex",
        "ZADD K 0 a 0 b 0 c ; ZREMRANGEBYLEX K [a [a",
    ),
    (
        "zremrangebyrank",
        "ZADD K 1 a 2 b 3 c ; ZREMRANGEBYRANK K 0 0",
    ),
    (
        "zremrangebyscore",
        "ZADD K 1 a 2 b 3 c ; ZREMRANGEBYSCORE K 1 1",
    ),
    ("zrevrange", "ZADD K 1 a 2 b ; ZREVRANGE K 0 -1"),
    ("zrevrangebylex", "ZADD K 0 a 0 b ; ZREVRANGEBYLEX K + -"),
    (
        "zrevrangebyscore",
        "ZADD K 1 a 2 b ; ZREVRANGEBYSCORE K +inf -inf",
    ),
    ("zrevrank", "ZADD K 1 a 2 b ; ZREVRANK K a"),
    ("zscan", "ZADD K 1 a ; ZSCAN K 0"),
    ("zscore", "ZADD K 1 a ; ZSCORE K a"),
    (
        "zunionstore",
        "ZADD K:1 1 a ; ZADD K:2 2 b ; ZUNIONSTORE K 2 K:1 K:2",
    ),
    ("object|encoding", "RPUSH K a ; OBJECT ENCODING K"),
    ("object|freq", "SET K v ; OBJECT FREQ K"),
    ("object|idletime", "SET K v ; OBJECT IDLETIME K"),
    ("object|refcount", "SET K v ; OBJECT REFCOUNT K"),
    ("blmpop", "RPUSH K a b ; BLMPOP 1 1 K LEFT"),
    ("lmpop", "RPUSH K a b ; LMPOP 1 K RIGHT COUNT 1"),
    ("bzmpop", "ZADD K 1 a 2 b ; BZMPOP 1 1 K MIN"),
    ("zmpop", "ZADD K 1 a 2 b ; ZMPOP 1 K MAX"),
    (
        "sintercard",
        "SADD K:1 a b ; SADD K:2 b ; SINTERCARD 2 K:1 K:2",
    ),
    (
        "zdiff",
        "ZADD K:1 1 a 2 b ; ZADD K:2 1 a ; ZDIFF 2 K:1 K:2 WITHSCORES",
    ),
    (
        "zinter",
        "ZADD K:1 1 a 2 b ; ZADD K:2 1 a ; ZINTER 2 K:1 K:2",
    ),
    (
        "zintercard",
        "ZADD K:1 1 a 2 b ; ZADD K:2 1 a ; ZINTERCARD 2 K:1 K:2",
    ),
    ("zunion", "ZADD K:1 1 a ; ZADD K:2 2 b ; ZUNION 2 K:1 K:2"),
];

/// Errors a template gets by design: the command ran on its key, and
/// answers this (OBJECT FREQ needs an LFU policy; the plan has none).
const ISO_EXPECTED_ERRORS: &[(&str, &str)] = &[
    ("object|freq", "ERR An LFU maxmemory policy is not selected"),
    (
        "migrate",
        "NOPERM this user has no permissions to run the 'migrate' command",
    ),
];

/// The commands `COMMAND` lists that take keys: a known first key
/// position, or keys found by parsing (`movablekeys`, first key 0, as
/// Redis reports LMPOP, ZUNION...). Subcommands as `container|sub`.
fn key_taking_commands(c: &mut RespConn) -> (Vec<String>, usize) {
    fn walk(entries: &[Value], out: &mut Vec<String>, all: &mut usize) {
        for e in entries {
            let Value::Array(f) = e else {
                panic!("COMMAND entry: {e:?}");
            };
            let (Some(Value::Bulk(name)), Some(Value::Array(flags)), Some(Value::Int(first))) =
                (f.first(), f.get(2), f.get(3))
            else {
                panic!("COMMAND entry: {e:?}");
            };
            *all += 1;
            let movable = flags
                .iter()
                .any(|x| matches!(x, Value::Simple(s) | Value::Bulk(s) if s == b"movablekeys"));
            if *first > 0 || movable {
                out.push(String::from_utf8_lossy(name).to_lowercase());
            }
            if let Some(Value::Array(subs)) = f.get(9) {
                walk(subs, out, all);
            }
        }
    }
    let Value::Array(entries) = call(c, &["COMMAND"]) else {
        panic!("COMMAND");
    };
    let mut out = Vec::new();
    let mut all = 0;
    walk(&entries, &mut out, &mut all);
    out.sort();
    (out, all)
}

/// Runs `name`'s template in the connection's database; false when the
/// table has none.
fn run_template(c: &mut RespConn, name: &str) -> bool {
    let Some((_, body)) = ISO_COMMANDS.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    let key = format!("iso:{}", name.replace('|', ":"));
    let words: Vec<String> = name.split('|').map(|w| w.to_uppercase()).collect();
    let mut ran_it = false;
    for seg in body.split(';') {
        let args: Vec<String> = seg
            .split_whitespace()
            .map(|a| match a {
                "K" => key.clone(),
                _ => match a.strip_prefix("K:") {
                    Some(rest) => format!("{key}:{rest}"),
                    None => a.replace("\\s", " ").replace("\\n", "\n"),
                },
            })
            .collect();
        ran_it |= args.len() >= words.len() && args[..words.len()] == words[..];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // `DUMPOF:<key>` stands for that key's DUMP payload (binary).
        let reply = if let Some(at) = argv.iter().position(|a| a.starts_with("DUMPOF:")) {
            let of = &argv[at]["DUMPOF:".len()..];
            let of = match of.strip_prefix('K') {
                Some(rest) if rest.is_empty() || rest.starts_with(':') => format!("{key}{rest}"),
                _ => of.to_string(),
            };
            let Value::Bulk(payload) = call(c, &["DUMP", &of]) else {
                panic!("DUMP for {name}'s template");
            };
            let mut bytes: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
            bytes[at] = payload;
            common::Conn::call(c, &bytes).expect("reply")
        } else {
            call(c, &argv)
        };
        if let Value::Error(e) = reply {
            let allowed = ISO_EXPECTED_ERRORS
                .iter()
                .any(|(n, prefix)| *n == name && e.starts_with(prefix.as_bytes()));
            assert!(allowed, "{argv:?}: {}", String::from_utf8_lossy(&e));
        }
    }
    assert!(ran_it, "the template for {name} does not run it: {body}");
    true
}

/// A subscriber's next message: (kind, channel, payload).
fn next_message(c: &mut RespConn) -> (String, String, String) {
    let text = |v: &Value| match v {
        Value::Bulk(b) | Value::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("message field: {other:?}"),
    };
    match c.read_reply().expect("a message") {
        Value::Array(v) if v.len() == 3 => (text(&v[0]), text(&v[1]), text(&v[2])),
        // pmessage: pattern, channel, payload.
        Value::Array(v) if v.len() == 4 => (text(&v[0]), text(&v[2]), text(&v[3])),
        other => panic!("message: {other:?}"),
    }
}

/// Two databases on the same three nodes: every command `COMMAND` lists
/// with keys runs in one of them (A, "shop"), touching several of its
/// 16 databases, publishing and subscribing; the other (B, "blog") sees
/// none of it on any node (no key in any of its databases, no message),
/// and A's replicas end with A's primary's keyspace.
#[test]
fn databases_on_the_same_nodes_are_isolated_for_every_command() {
    let w = World::new("repl-isolation", 38, 21820, false);
    let _nodes = w.start_three();
    let (code, body) = w
        .http(1, "PUT", "/admin/tenants/7", ADMIN_TOKEN, &entry(1, 0))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let blog = entry_for(8, "blog", BLOG_TOKEN, 1);
    let (code, body) = w
        .http(2, "PUT", "/admin/tenants/8", ADMIN_TOKEN, &blog.to_string())
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (pa, sa, ra) = w.placed(1, 7);
    let (pb, sb, rb) = w.placed(1, 8);
    let a_replicas: Vec<u8> = sa.into_iter().chain(ra).collect();
    let mut b_holders: Vec<u8> = std::iter::once(pb).chain(sb).chain(rb).collect();
    b_holders.sort_unstable();
    assert_eq!(b_holders, [1, 2, 3], "B on all three nodes");
    let mut a = None;
    wait_for("A's primary to serve", Duration::from_secs(20), || {
        a = w.login(pa);
        a.is_some()
    });
    let mut a = a.unwrap();
    wait_for("A's replicas attached", Duration::from_secs(30), || {
        info(&mut a, "replication", "connected_slaves").as_deref() == Some("2")
    });
    // B's too: a subscription made on a replica's node while its first
    // sync is still running can miss what is published later (seen about
    // once in seven runs; not understood yet, see the session notes), and
    // this test is about isolation, not that.
    let mut bprim = None;
    wait_for("B's primary to serve", Duration::from_secs(20), || {
        bprim = w.login_as(pb, "blog", BLOG_TOKEN);
        bprim.is_some()
    });
    let mut bprim = bprim.unwrap();
    wait_for("B's replicas attached", Duration::from_secs(30), || {
        info(&mut bprim, "replication", "connected_slaves").as_deref() == Some("2")
    });

    // Subscribers on every node, before anything runs: B's listen to every
    // channel (a pattern) and to the shard channels A uses; A's to one of
    // each kind.
    let shard_channels = [
        "iso:spublish",
        "iso:ssubscribe",
        "iso:sunsubscribe",
        "iso:shard",
    ];
    let mut b_subs = Vec::new();
    let mut a_subs = Vec::new();
    for n in 1..=3 {
        let mut b = None;
        wait_for("B on every node", Duration::from_secs(20), || {
            b = w.login_as(n, "blog", BLOG_TOKEN);
            b.is_some()
        });
        let mut b = b.unwrap();
        assert!(matches!(
            call(&mut b, &["PSUBSCRIBE", "*"]),
            Value::Array(_)
        ));
        for ch in shard_channels {
            assert!(matches!(call(&mut b, &["SSUBSCRIBE", ch]), Value::Array(_)));
        }
        b_subs.push((n, b));
        let mut s = w.login(n).unwrap_or_else(|| panic!("A on node {n}"));
        assert!(matches!(
            call(&mut s, &["SUBSCRIBE", "iso:chan"]),
            Value::Array(_)
        ));
        assert!(matches!(
            call(&mut s, &["SSUBSCRIBE", "iso:shard"]),
            Value::Array(_)
        ));
        a_subs.push((n, s));
    }

    // Every key-taking command, in A, on its primary.
    let (commands, all) = key_taking_commands(&mut a);
    for (name, _) in ISO_COMMANDS {
        assert!(
            commands.iter().any(|c| c == name),
            "the table's {name} is not a key-taking command of COMMAND"
        );
    }
    let mut ran = 0;
    let mut skipped = Vec::new();
    for name in &commands {
        if run_template(&mut a, name) {
            ran += 1;
        } else {
            skipped.push(name.clone());
        }
    }
    eprintln!(
        "COMMAND lists {all} commands and subcommands, {} of them take keys: {ran} ran in A, {} skipped {skipped:?}",
        commands.len(),
        skipped.len()
    );
    assert!(skipped.is_empty(), "no template for {skipped:?}");
    assert!(ran >= 140, "only {ran} key-taking commands ran");
    // And the keyspace-wide ones, over more of A's databases.
    for cmd in [
        "SELECT 4",
        "SET iso:db4 v",
        "SWAPDB 4 5",
        "SELECT 6",
        "MULTI",
        "SET iso:db6 v",
        "INCR iso:db6:n",
        "EXEC",
        "SELECT 0",
        "RANDOMKEY",
        "SCAN 0",
        "KEYS iso:*",
        "DBSIZE",
    ] {
        let argv: Vec<&str> = cmd.split(' ').collect();
        let r = call(&mut a, &argv);
        assert!(!r.is_error(), "{cmd}: {r:?}");
    }

    // Publications: A's reach A's subscriber on the node, not B's; B's own
    // then arrive first at B's subscribers (nothing of A's came before).
    for ((n, bs), (_, as_)) in b_subs.iter_mut().zip(a_subs.iter_mut()) {
        let n = *n;
        let mut ap = w.login(n).unwrap();
        assert_eq!(
            call(&mut ap, &["PUBLISH", "iso:chan", "from-a"]),
            Value::Int(1),
            "node {n}: A's PUBLISH reached other than A's subscriber"
        );
        assert_eq!(
            call(&mut ap, &["SPUBLISH", "iso:shard", "from-a"]),
            Value::Int(1),
            "node {n}: A's SPUBLISH reached other than A's subscriber"
        );
        assert_eq!(
            next_message(as_),
            ("message".into(), "iso:chan".into(), "from-a".into())
        );
        assert_eq!(
            next_message(as_),
            ("smessage".into(), "iso:shard".into(), "from-a".into())
        );
        let mut bp = w.login_as(n, "blog", BLOG_TOKEN).unwrap();
        assert_eq!(
            call(&mut bp, &["PUBLISH", "iso:chan", "from-b"]),
            Value::Int(1)
        );
        assert_eq!(
            call(&mut bp, &["SPUBLISH", "iso:shard", "from-b"]),
            Value::Int(1)
        );
        assert_eq!(
            next_message(bs),
            ("pmessage".into(), "iso:chan".into(), "from-b".into()),
            "node {n}: B's subscriber got another message first"
        );
        assert_eq!(
            next_message(bs),
            ("smessage".into(), "iso:shard".into(), "from-b".into()),
            "node {n}: B's subscriber got another message first"
        );
    }

    // A's replicas have exactly A's keyspace, over several databases.
    let mut reps: Vec<RespConn> = a_replicas
        .iter()
        .map(|&n| w.login(n).unwrap_or_else(|| panic!("A on replica n{n}")))
        .collect();
    wait_for("A's equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut a, &mut reps)
    });
    let want = keyspace_of(&mut a);
    assert!(want.len() > 100, "A holds {} keys", want.len());
    let dbs: std::collections::BTreeSet<u32> = want.keys().map(|(db, _)| *db).collect();
    assert!(dbs.len() >= 4, "A's keys are in databases {dbs:?} only");
    for r in reps.iter_mut() {
        compare(&want, &keyspace_of(r));
    }

    // B, on its primary and each replica, has nothing in any database.
    for n in 1..=3 {
        let mut b = w
            .login_as(n, "blog", BLOG_TOKEN)
            .unwrap_or_else(|| panic!("B on node {n}"));
        for db in 0..16 {
            call(&mut b, &["SELECT", &db.to_string()]);
            assert_eq!(call(&mut b, &["DBSIZE"]), Value::Int(0), "node {n} db {db}");
            assert_eq!(
                call(&mut b, &["KEYS", "*"]),
                Value::Array(Vec::new()),
                "node {n} db {db}"
            );
        }
    }
}

/// Over the shaped WAN (the cdg replica ~50 ms behind): a key whose TTL
/// passed is hidden on the replica while it still holds it (the primary's
/// `DEL` is on its way), and the replica only ever shows states the primary
/// had: `a` and `b`, written together in MULTI/EXEC, always read equal, and
/// they never go back.
#[test]
fn a_replica_shows_only_states_the_primary_had() {
    let w = World::new("repl-states", 41, 21880, true);
    let _nodes = w.start_three();
    w.put(1, 7, &entry(1, 0));
    let (pn, _, replicas) = w.placed(1, 7);
    let far = *replicas.first().expect("a read-region replica");
    assert_eq!(far, 3, "the cdg replica");
    let mut p = w.taking_writes(pn);
    let mut r = w.serving(far);
    wait_for("the cdg replica attached", Duration::from_secs(30), || {
        offsets_equal(&mut p, std::slice::from_mut(&mut r))
    });

    // Expiry. Each round: a key with a 300 ms TTL reaches the replica;
    // past the TTL the replica must answer nil, and it is caught at least
    // once still holding the key (DBSIZE counts it) while hiding it.
    let mut hidden_while_held = 0;
    let Value::Int(base) = call(&mut r, &["DBSIZE"]) else {
        panic!("DBSIZE");
    };
    for round in 0..5 {
        let key = format!("ttl:{round}");
        let set_at = std::time::Instant::now();
        assert!(matches!(
            call(&mut p, &["SET", &key, "v", "PX", "300"]),
            Value::Simple(_)
        ));
        // The SET's place in the stream reached the replica (a busy machine
        // may deliver it after the TTL: then the key is held but hidden,
        // which the loop below counts too).
        let written: u64 = info(&mut p, "replication", "master_repl_offset")
            .and_then(|o| o.parse().ok())
            .expect("master_repl_offset");
        wait_for("the SET on the replica", Duration::from_secs(30), || {
            info(&mut r, "replication", "slave_repl_offset")
                .and_then(|o| o.parse::<u64>().ok())
                .is_some_and(|o| o >= written)
        });
        loop {
            let before = set_at.elapsed();
            let replies = r
                .pipeline(&[vec!["GET", key.as_str()], vec!["DBSIZE"]])
                .expect("replica reads");
            match (&replies[0], &replies[1]) {
                // Past its TTL by the clock read before asking (plus the
                // SET's own trip to the primary): never shown.
                (Value::Bulk(v), _) => assert!(
                    before < Duration::from_millis(330),
                    "round {round}: the replica showed {v:?} {before:?} after a 300 ms TTL"
                ),
                (Value::Nil, Value::Int(n)) => {
                    if *n > base {
                        hidden_while_held += 1;
                    } else {
                        break;
                    }
                }
                other => panic!("round {round}: {other:?}"),
            }
            assert!(
                set_at.elapsed() < Duration::from_secs(10),
                "round {round}: the primary's DEL never reached the replica"
            );
        }
        assert_eq!(call(&mut p, &["EXISTS", &key]), Value::Int(0));
    }
    assert!(
        hidden_while_held > 0,
        "never caught the replica holding an expired key before the DEL"
    );

    // States: 1,500 transactions setting a and b to i, while a reader on the
    // replica checks every state it sees.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut r = w.serving(far);
        std::thread::spawn(move || {
            let mut last = -1i64;
            let mut distinct = 0;
            let num = |v: &Value| match v {
                Value::Bulk(b) => String::from_utf8_lossy(b).parse::<i64>().expect("a number"),
                Value::Nil => -1,
                other => panic!("MGET item {other:?}"),
            };
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let Value::Array(items) = call(&mut r, &["MGET", "a", "b"]) else {
                    panic!("MGET");
                };
                let (a, b) = (num(&items[0]), num(&items[1]));
                assert_eq!(
                    a, b,
                    "the replica showed a={a} b={b}, a state never written"
                );
                assert!(a >= last, "the replica went back from {last} to {a}");
                if a != last {
                    distinct += 1;
                }
                last = a;
            }
            (last, distinct)
        })
    };
    // (1,500: enough that a reader slowed by a busy machine still reads
    // while they change.)
    for i in 0..1500 {
        let i = i.to_string();
        let replies = p
            .pipeline(&[
                vec!["MULTI"],
                vec!["SET", "a", &i],
                vec!["SET", "b", &i],
                vec!["EXEC"],
            ])
            .expect("transaction");
        assert!(matches!(replies[3], Value::Array(_)), "{replies:?}");
    }
    wait_for("equal offsets", Duration::from_secs(30), || {
        offsets_equal(&mut p, std::slice::from_mut(&mut r))
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (last, distinct) = reader.join().expect("reader");
    assert_eq!(last, 1499, "the reader saw the last state");
    assert!(
        distinct > 10,
        "the reader saw only {distinct} states: it did not read while they changed"
    );
}
