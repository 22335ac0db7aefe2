//! `anykv regions --backend local` on a world of `anykv node` processes,
//! under a write load: a region added (its node joins and takes the
//! database's replica once the database reads there), a region removed
//! with the command killed at each step in turn and run again until it
//! finishes, and every acknowledged write still there.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_bench::world::{local, World, WorldFile};
use common::{put_tenant, shop_entry, wait_for, RespConn, Value};

const ADMIN: &str = "regions-admin-token";
const TOKEN: &str = "regions-shop-token";

fn regions_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anykv"));
    c.arg("regions")
        .args(args)
        .args(["--backend", "local", "--world"])
        .arg(dir)
        .args(["--wait-timeout", "90", "--stop-timeout", "20"])
        .env_remove("ANYKV_ADMIN_TOKEN");
    c
}

/// Kills, at the end of the test (or a panic), the nodes the command
/// started: they are not the world's children.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(w) = WorldFile::load(&self.0.join("world.json")) {
            for n in w.nodes.iter().filter(|n| local::alive(n.pid)) {
                let _ = Command::new("kill")
                    .args(["-9", &n.pid.to_string()])
                    .status();
            }
        }
    }
}

fn world_file(dir: &Path) -> WorldFile {
    WorldFile::load(&dir.join("world.json")).expect("world.json")
}

fn login(addr: std::net::SocketAddr) -> Option<RespConn> {
    common::login_ready(addr, "shop", TOKEN, |_| true)
}

#[test]
fn regions_are_added_and_removed_under_writes_and_interrupted_runs_resume() {
    let mut spec = common::world_spec("regions", 67, 23800, &[("iad", 2), ("cdg", 1)], ADMIN, &[]);
    spec.rtt_table = None;
    spec.gossip_profile = "test".into();
    let dir = spec.dir.clone();
    let mut w = World::start(&spec).expect("the world starts");
    let _reaper = Reaper(dir.clone());
    w.wait_members(3, Duration::from_secs(60))
        .expect("three members alive");
    put_tenant(&w, &shop_entry(1, TOKEN, &["cdg"], "async", "ryw", 1));
    common::placed_tenant(&w, 1);
    let n1 = w.node("n1").expect("n1").resp;

    // The write load: SETs through n1 (iad) for the whole test; the
    // values it was told OK for are the acknowledged ones.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        let count = count.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut conn: Option<RespConn> = None;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    conn = login(n1);
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (k, v) = (format!("w:{i}"), i.to_string());
                match c.cmd(&["SET", &k, &v]) {
                    Ok(Value::Simple(s)) if s == b"OK" => {
                        acked.push(i);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            acked
        })
    };

    // Adding syd: its node starts, joins, and the run says done.
    let out = regions_cmd(&dir, &["add", "syd"])
        .output()
        .expect("running anykv regions add");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    assert!(err.contains("create a node in syd"), "{err}");
    let syd = world_file(&dir)
        .nodes
        .into_iter()
        .find(|n| n.region == "syd")
        .expect("a syd node in world.json");
    assert!(local::alive(syd.pid));
    // Run again: nothing to make, only the check.
    let out = regions_cmd(&dir, &["add", "syd", "--dry-run"])
        .output()
        .expect("dry run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "  1. wait until 1 node(s) of syd are members and their copies caught up\n"
    );

    // The database now reads in syd: a replica appears on the new node
    // and serves what was written.
    put_tenant(
        &w,
        &shop_entry(1, TOKEN, &["cdg", "syd"], "async", "ryw", 2),
    );
    wait_for("a replica in syd", Duration::from_secs(60), || {
        w.cluster_view("n1").is_some_and(|v| {
            v["tenants"].as_array().is_some_and(|t| {
                t.iter().any(|x| {
                    x["id"] == 1
                        && x["replicas"].as_array().is_some_and(|r| {
                            r.iter()
                                .any(|c| c["node"] == syd.name.as_str() && c["offset"].is_u64())
                        })
                })
            })
        })
    });
    wait_for(
        "the syd replica to serve a write",
        Duration::from_secs(30),
        || {
            login(syd.resp).is_some_and(
                |mut c| matches!(c.cmd(&["GET", "w:0"]), Ok(Value::Bulk(b)) if b == b"0"),
            )
        },
    );

    // Removing cdg, the command killed as step 1 begins, then as step 2
    // of the run after begins, and so on (each run plans afresh from what
    // is done), until a run finishes on its own.
    let mut kills = 0;
    let mut finished = false;
    for k in 1..=8 {
        let mut child = regions_cmd(&dir, &["remove", "cdg"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running anykv regions remove");
        let stderr = child.stderr.take().expect("stderr");
        let mark = format!("[{k}/");
        let mut killed = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(&mark) {
                // Killed as the step begins: it may be half done.
                let _ = child.kill();
                killed = true;
                break;
            }
        }
        let status = child.wait().expect("wait");
        if killed && !status.success() {
            kills += 1;
            continue;
        }
        assert!(status.success(), "run {k} failed: {status}");
        finished = true;
        break;
    }
    assert!(finished, "no run of remove finished");
    assert!(kills >= 2, "the command was killed {kills} time(s)");

    // cdg is gone: its node stopped and out of world.json, its directory
    // (volume) removed; the database reads in syd only and has no copy
    // in cdg; syd still serves it.
    let wf = world_file(&dir);
    assert!(wf.nodes.iter().all(|n| n.region != "cdg"), "{:?}", wf.nodes);
    let n3 = w.node("n3").expect("n3").clone();
    assert!(!n3.dir.exists(), "{} is still there", n3.dir.display());
    assert!(!w.running("n3"), "n3 still runs");
    let view = w.cluster_view("n1").expect("n1 answers");
    let t = view["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|x| x["id"] == 1).cloned())
        .expect("tenant 1");
    assert_eq!(t["read_regions"], serde_json::json!(["syd"]), "{t}");
    assert!(
        t["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().all(|c| c["region"] != "cdg")),
        "{t}"
    );

    // Every acknowledged write is on the primary, and the load ran
    // throughout (writes are acknowledged after the removal too).
    let after_removal = count.load(Ordering::Relaxed);
    wait_for("writes after the removal", Duration::from_secs(10), || {
        count.load(Ordering::Relaxed) > after_removal + 20
    });
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let mut c = login(n1).expect("login on n1");
    for i in &acked {
        let k = format!("w:{i}");
        match c.cmd(&["GET", &k]) {
            Ok(Value::Bulk(b)) => assert_eq!(b, i.to_string().into_bytes(), "{k}"),
            other => panic!("{k}, acknowledged, reads {other:?}"),
        }
    }
    w.stop(Duration::from_secs(10));
}
