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
            for pid in w.nodes.iter().filter_map(local::node_pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
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

/// Runs `anykv regions <args>` again and again, each run killed in a
/// step: as it begins, the first time a run comes to it; a moment after
/// it began (part-way, if it is still going) the second time, should it
/// come again (each run plans afresh from what is done). Once a run
/// finishes on its own, it must succeed and say done. Returns the steps
/// killed as they began, as the runs named them.
///
/// Each run waits [`STEP_PAUSE`] between naming a step and starting it
/// (`--step-pause-ms`), so the kill as a step begins lands before it does
/// anything: local steps take less time than a kill takes to land.
fn run_killed_at_each_step(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut at_start: Vec<String> = Vec::new();
    let mut part_way: Vec<String> = Vec::new();
    for run in 1..=40 {
        let mut child = regions_cmd(dir, args)
            .arg(format!("--step-pause-ms={}", STEP_PAUSE.as_millis()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running anykv regions");
        let stderr = child.stderr.take().expect("stderr");
        let mut killed = false;
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(step) = step_of(&line) {
                let first = !at_start.contains(&step);
                if first || !part_way.contains(&step) {
                    if !first {
                        std::thread::sleep(STEP_PAUSE + Duration::from_millis(30));
                    }
                    let _ = child.kill();
                    if first { &mut at_start } else { &mut part_way }.push(step);
                    killed = true;
                    break;
                }
            }
            seen.push(line);
        }
        let out = child.wait_with_output().expect("wait");
        if killed && !out.status.success() {
            continue;
        }
        // The run before was killed after a removal's last step had
        // finished (before it printed done): nothing is left, as this run
        // says, and the removal is complete.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if run > 1 && !out.status.success() && stderr.contains("nothing to remove") {
            eprintln!("{args:?}: finished by the run killed last; killed as {at_start:?} began, part-way through {part_way:?}");
            return at_start;
        }
        assert!(
            out.status.success(),
            "run {run} of {args:?} failed: {seen:?}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("done in "), "{stdout}");
        // Then what the region holds now.
        let report = format!("\n{}: ", args[1]);
        assert!(
            stdout.contains(&report),
            "no report of {}: {stdout}",
            args[1]
        );
        eprintln!("{args:?}: killed as {at_start:?} began, part-way through {part_way:?}; the last run's report:\n{stdout}");
        return at_start;
    }
    panic!("no run of {args:?} finished in 40: killed in {at_start:?} and {part_way:?}");
}

/// How long each killed run waits before each step.
const STEP_PAUSE: Duration = Duration::from_millis(300);

/// The step a progress line `[i/n] <step>` begins.
fn step_of(line: &str) -> Option<String> {
    let (head, step) = line.strip_prefix('[')?.split_once("] ")?;
    let (i, n) = head.split_once('/')?;
    (i.parse::<usize>().is_ok() && n.parse::<usize>().is_ok()).then(|| step.to_string())
}

/// Some run was killed as a step of each of `kinds` (a step's first
/// words) began.
fn assert_killed_in_each(killed: &[String], kinds: &[&str]) {
    for kind in kinds {
        assert!(
            killed.iter().any(|s| s.starts_with(kind)),
            "no run was killed in \"{kind}...\": {killed:?}"
        );
    }
}

/// Starts `spec` (unshaped, fast gossip) and database 1 ("shop", primary
/// region iad, read region cdg) on it.
fn start_world(mut spec: anykv_bench::world::WorldSpec) -> (World, PathBuf, Reaper) {
    spec.rtt_table = None;
    spec.gossip_profile = "test".into();
    let dir = spec.dir.clone();
    let w = World::start(&spec).expect("the world starts");
    let reaper = Reaper(dir.clone());
    let members: usize = spec.regions.iter().map(|(_, n)| *n).sum();
    w.wait_members(members, Duration::from_secs(60))
        .expect("every member alive");
    put_tenant(&w, &shop_entry(1, TOKEN, &["cdg"], "async", "ryw", 1));
    common::placed_tenant(&w, 1);
    (w, dir, reaper)
}

/// The tests here each run a world of nodes with timing bounds (leases,
/// handoffs, kills at each step): on a 2-core machine two at once starve
/// each other, so they take turns.
fn one_world_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static WORLDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WORLDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A world of `regions` (named `name`, loopback net `net`, gossip port
/// `port`) with the test database placed (see [`start_world`]).
fn world(name: &str, net: u8, port: u16, regions: &[(&str, usize)]) -> (World, PathBuf, Reaper) {
    start_world(common::world_spec(name, net, port, regions, ADMIN, &[]))
}

/// Until iad's controller group holds the database's record (its primary
/// writes under the group's lease; a SIGTERM hands over only then).
fn wait_group_holds_record(w: &World) {
    wait_for(
        "iad's controller group holding the database's record",
        Duration::from_secs(60),
        || {
            w.cluster_view("n4").is_some_and(|v| {
                v["controllers"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["region"] == "iad" && c["leader"].is_string() && c["records"] == 1
                    })
                })
            })
        },
    );
}

/// Until each of `nodes` answers `GET /ready` with 200.
fn wait_ready(w: &World, nodes: &[&str]) {
    for n in nodes {
        wait_for(&format!("{n} ready"), Duration::from_secs(60), || {
            ready(w, n).is_some_and(|(code, _)| code == 200)
        });
    }
}

/// Every acknowledged `<prefix>:<i>` reads back as `i` through `addr`.
fn assert_read_back(addr: std::net::SocketAddr, prefix: &str, acked: &[u64]) {
    let mut c = login(addr).unwrap_or_else(|| panic!("login on {addr}"));
    for i in acked {
        let k = format!("{prefix}:{i}");
        match c.cmd(&["GET", &k]) {
            Ok(Value::Bulk(b)) => assert_eq!(b, i.to_string().into_bytes(), "{k}"),
            other => panic!("{k}, acknowledged, reads {other:?}"),
        }
    }
}

/// What a writer saw: the acknowledged values, the failures, the slowest
/// acknowledged write.
type Written = (Vec<u64>, Vec<String>, Duration);

/// A client that SETs `<prefix>:<i>` to `i` through `addr` until `stop`,
/// counting acknowledgements in `count` as they come.
fn spawn_writer(
    addr: std::net::SocketAddr,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Written> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        let mut slowest = Duration::ZERO;
        let mut conn: Option<RespConn> = None;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                conn = login(addr);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (k, v) = (format!("{prefix}:{i}"), i.to_string());
            let t = std::time::Instant::now();
            match c.cmd(&["SET", &k, &v]) {
                Ok(Value::Simple(s)) if s == b"OK" => {
                    slowest = slowest.max(t.elapsed());
                    acked.push(i);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    errors.push(format!("{other:?}"));
                    conn = None;
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (acked, errors, slowest)
    })
}

#[test]
fn regions_are_added_and_removed_under_writes_and_interrupted_runs_resume() {
    let _turn = one_world_at_a_time();
    let spec = common::world_spec("regions", 67, 23800, &[("iad", 2), ("cdg", 1)], ADMIN, &[]);
    let (mut w, dir, _reaper) = start_world(spec);
    let n1 = w.node("n1").expect("n1").resp;

    // The write load: SETs through n1 (iad) for the whole test; the
    // values it was told OK for are the acknowledged ones.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(n1, "w", stop.clone(), count.clone());

    // The database reads in syd before syd has a node (202: the region
    // is missing), so `add` must wait for its copy there to catch up.
    let n1_http = w.node("n1").expect("n1").http;
    let (code, body) = anykv_bench::world::http(
        n1_http,
        "PUT",
        "/admin/tenants/1",
        w.admin_token(),
        &shop_entry(1, TOKEN, &["cdg", "syd"], "async", "ryw", 2).to_string(),
    )
    .expect("the admin API answers");
    assert_eq!(code, 202, "{body}");

    // What the primary had written before the add began (once the
    // writes reached its log and its node reported them).
    let mut before_add = 0;
    wait_for("the primary's offset", Duration::from_secs(30), || {
        before_add = common::placed_tenant(&w, 1)["offset"].as_u64().unwrap_or(0);
        before_add > 0
    });

    // Adding syd, the command killed at each step in turn: its node
    // starts (once), joins, its copy catches up, and the last run says
    // done.
    let killed = run_killed_at_each_step(&dir, &["add", "syd"]);
    assert_killed_in_each(
        &killed,
        &[
            "create a volume in syd",
            "create a node in syd",
            "wait until 1 node(s) of syd",
        ],
    );
    let syds = world_file(&dir)
        .nodes
        .into_iter()
        .filter(|n| n.region == "syd")
        .count();
    assert_eq!(syds, 1, "one syd node");
    let syd = world_file(&dir)
        .nodes
        .into_iter()
        .find(|n| n.region == "syd")
        .expect("a syd node in world.json");
    assert!(local::node_pid(&syd).is_some());
    // Run again: nothing to make, only the check.
    let out = regions_cmd(&dir, &["add", "syd", "--dry-run"])
        .output()
        .expect("dry run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "  1. wait until 1 node(s) of syd are members and their copies caught up\n"
    );

    // Done means caught up, as the command returns (no waiting here):
    // the replica on the new node has everything the primary had before
    // the add began.
    let placed = common::placed_tenant(&w, 1);
    let syd_offset = placed["replicas"]
        .as_array()
        .and_then(|r| r.iter().find(|c| c["node"] == syd.name.as_str()))
        .and_then(|c| c["offset"].as_u64());
    assert!(
        syd_offset.is_some_and(|o| o >= before_add),
        "when add said done, the syd replica was at {syd_offset:?}, the primary at {before_add} before the add: {placed}"
    );
    wait_for(
        "the syd replica to serve a write",
        Duration::from_secs(5),
        || {
            login(syd.resp).is_some_and(
                |mut c| matches!(c.cmd(&["GET", "w:0"]), Ok(Value::Bulk(b)) if b == b"0"),
            )
        },
    );

    // Removing cdg, the command killed in each step of its plan in turn
    // (each run plans afresh from what is done), until a run finishes on
    // its own.
    let killed = run_killed_at_each_step(&dir, &["remove", "cdg"]);
    assert_killed_in_each(
        &killed,
        &[
            "take cdg out of database 1's read regions",
            "wait until no database has a copy in cdg",
            "stop node",
            "destroy node",
            "destroy volume",
        ],
    );

    // cdg is gone: its node stopped and out of world.json, its directory
    // (volume) removed; the database reads in syd only and has no copy
    // in cdg; syd still serves it.
    let wf = world_file(&dir);
    assert!(wf.nodes.iter().all(|n| n.region != "cdg"), "{:?}", wf.nodes);
    let n3 = w.node("n3").expect("n3").clone();
    assert!(!n3.dir.exists(), "{} is still there", n3.dir.display());
    assert!(!w.running("n3"), "n3 still runs");
    let view = w.cluster_view("n1").expect("n1 answers");
    // The cluster remembers n3, down, with its start time, as the plan
    // reads it (a later add of cdg weighs spare volumes against it).
    let state: anykv_ops::regions::cluster::State =
        serde_json::from_value(view.clone()).expect("/cluster as the plan reads it");
    let n3_member = state
        .members
        .iter()
        .find(|m| m.machine == "n3")
        .unwrap_or_else(|| panic!("n3 forgotten: {:?}", state.members));
    assert_ne!(n3_member.state, "alive", "{n3_member:?}");
    assert!(
        n3_member.incarnation > 1_700_000_000_000,
        "n3's start time: {n3_member:?}"
    );
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
    let (acked, errors, _) = writer.join().expect("writer");
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    assert_read_back(n1, "w", &acked);

    // The world that started the first nodes (the demo's launcher)
    // starting one of them again keeps the node `add` made in
    // world.json, and stopping the world stops that node too.
    w.signal("n2", "-9").expect("kill n2");
    w.launch("n2").expect("n2 started again");
    let wf = world_file(&dir);
    assert!(
        wf.nodes.iter().any(|n| n.name == syd.name),
        "{} is gone from world.json after the world restarted n2: {:?}",
        syd.name,
        wf.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
    );
    assert!(wf.retired.contains(&"n3".to_string()), "{:?}", wf.retired);
    let syd_pid = local::node_pid(&syd).expect("the syd node runs");
    w.stop(Duration::from_secs(10));
    assert!(
        !local::alive(syd_pid),
        "the syd node (pid {syd_pid}) outlived the world's stop"
    );
}

/// Removing the database's primary region with `--move-primaries-to`:
/// the primary is handed to the replica in cdg with writes held only
/// while it takes the last bytes, then iad's nodes go, the command killed
/// in each of its steps in turn (the move too) and run again; writes
/// through cdg are acknowledged throughout, none is lost, and no write
/// waited longer than the move's bound.
#[test]
fn removing_the_primary_region_moves_the_primary_with_nothing_lost() {
    let _turn = one_world_at_a_time();
    let (mut w, dir, _reaper) = world("regions-move", 68, 23820, &[("iad", 2), ("cdg", 1)]);
    let n3 = w.node("n3").expect("n3").clone();

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(n3.resp, "m", stop.clone(), count.clone());
    wait_for("writes through cdg", Duration::from_secs(20), || {
        count.load(Ordering::Relaxed) > 50
    });

    // The command killed in each of its steps in turn, the move too.
    let before = count.load(Ordering::Relaxed);
    let killed = run_killed_at_each_step(&dir, &["remove", "iad", "--move-primaries-to", "cdg"]);
    assert_killed_in_each(
        &killed,
        &[
            "hand database 1's primary to cdg",
            "stop node",
            "destroy node",
            "destroy volume",
        ],
    );
    let during = count.load(Ordering::Relaxed) - before;
    assert!(
        during > 10,
        "only {during} writes acknowledged while the commands ran"
    );

    // The database lives in cdg now, iad is gone from it and from the world.
    let view = w.cluster_view("n3").expect("n3 answers");
    let t = view["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|x| x["id"] == 1).cloned())
        .expect("tenant 1");
    assert_eq!(t["primary"], "n3", "{t}");
    assert_eq!(t["primary_region"], "cdg", "{t}");
    assert_eq!(t["read_regions"], serde_json::json!([]), "{t}");
    assert!(world_file(&dir).nodes.iter().all(|n| n.region != "iad"));
    assert!(!w.running("n1") && !w.running("n2"));
    let after = count.load(Ordering::Relaxed);
    wait_for("writes after the removal", Duration::from_secs(10), || {
        count.load(Ordering::Relaxed) > after + 20
    });
    stop.store(true, Ordering::Relaxed);
    let (acked, errors, slowest) = writer.join().expect("writer");
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    // The move holds writes at most its 10 s bound (the replica was caught
    // up first, so in practice milliseconds).
    assert!(
        slowest < Duration::from_secs(10),
        "a write took {slowest:?}"
    );
    assert_read_back(n3.resp, "m", &acked);
    eprintln!("{} writes acknowledged, slowest {slowest:?}", acked.len());
    w.stop(Duration::from_secs(10));
}

/// A primary in a region with a controller group (three nodes: its writes
/// run under the group's lease) moves to its replica in another region
/// under writes through both regions: the lease is given up, the held
/// writes go to the new primary, nothing acknowledged is lost, and the
/// old primary's node (now a replica) passes writes on.
#[test]
fn a_primary_moves_out_of_a_leased_region_with_nothing_lost() {
    let _turn = one_world_at_a_time();
    let (mut w, _dir, _reaper) = world("regions-leased-move", 69, 23840, &[("iad", 3), ("cdg", 1)]);
    let placed = common::placed_tenant(&w, 1);
    // The group holds the database's record: its primary writes under
    // the group's lease.
    wait_group_holds_record(&w);
    let old = placed["primary"].as_str().expect("primary").to_string();
    assert!(["n1", "n2", "n3"].contains(&old.as_str()), "{placed}");
    // Under a group, the standby is ready once the group marks it in sync.
    wait_ready(&w, &["n1", "n2", "n3", "n4"]);
    let n4 = w.node("n4").expect("n4").clone();
    let old_node = w.node(&old).expect("old primary").clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (near, far) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let iad_writer = spawn_writer(old_node.resp, "i", stop.clone(), near.clone());
    let cdg_writer = spawn_writer(n4.resp, "c", stop.clone(), far.clone());
    wait_for(
        "writes through both regions",
        Duration::from_secs(30),
        || near.load(Ordering::Relaxed) > 50 && far.load(Ordering::Relaxed) > 50,
    );

    // Asked of n4, which passes it on to the primary's node.
    let (code, body) = anykv_bench::world::http(
        n4.http,
        "POST",
        "/admin/tenants/1/move",
        ADMIN,
        r#"{"to": "cdg"}"#,
    )
    .expect("n4's admin API answers");
    assert_eq!(code, 200, "{body}");
    let moved: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(moved["primary"], "n4", "{moved}");
    assert_eq!(moved["from"], old.as_str(), "{moved}");

    wait_for("the move seen by n4", Duration::from_secs(30), || {
        w.cluster_view("n4").is_some_and(|v| {
            v["tenants"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["id"] == 1 && t["primary"] == "n4" && t["primary_region"] == "cdg")
            })
        })
    });
    // n4 took over through the move's handoff (the record told it where
    // the old primary stopped), once (its store acts on the record a
    // moment after the view shows it), and lost none of it.
    let name = placed["name"]
        .as_str()
        .expect("the tenant's name")
        .to_string();
    let takeovers = |page: &str| -> f64 {
        ["no", "yes"]
            .iter()
            .filter_map(|w| {
                common::metric(
                    page,
                    &format!("anykv_handoff_takeovers_total{{tenant=\"{name}\",waited=\"{w}\"}}"),
                )
            })
            .sum()
    };
    let mut page = String::new();
    wait_for("n4 to take over", Duration::from_secs(30), || {
        page = common::http_get(&n4.http.to_string(), "/metrics").unwrap_or_default();
        takeovers(&page) > 0.0
    });
    assert_eq!(takeovers(&page), 1.0, "n4 took over once");
    assert!(
        !page.contains("anykv_handoff_bytes_lost_total"),
        "n4 lost bytes of the handoff"
    );
    // Writes go on through both regions, the old primary's node passing
    // its clients' on to cdg.
    let after = (near.load(Ordering::Relaxed), far.load(Ordering::Relaxed));
    wait_for("writes after the move", Duration::from_secs(30), || {
        near.load(Ordering::Relaxed) > after.0 + 20 && far.load(Ordering::Relaxed) > after.1 + 20
    });
    stop.store(true, Ordering::Relaxed);
    let (iad_acked, iad_errors, iad_slowest) = iad_writer.join().expect("iad writer");
    let (cdg_acked, cdg_errors, cdg_slowest) = cdg_writer.join().expect("cdg writer");
    assert!(
        iad_errors.is_empty(),
        "writes through iad failed: {iad_errors:?}"
    );
    assert!(
        cdg_errors.is_empty(),
        "writes through cdg failed: {cdg_errors:?}"
    );
    for slowest in [iad_slowest, cdg_slowest] {
        assert!(
            slowest < Duration::from_secs(10),
            "a write took {slowest:?}"
        );
    }
    // On the new primary, every acknowledged write.
    assert_read_back(n4.resp, "i", &iad_acked);
    assert_read_back(n4.resp, "c", &cdg_acked);
    let mut p = login(n4.resp).expect("login on n4");
    assert!(
        matches!(p.cmd(&["INFO", "replication"]), Ok(Value::Bulk(b)) if String::from_utf8_lossy(&b).contains("role:master")),
        "n4 is the primary"
    );
    eprintln!(
        "{} + {} writes acknowledged, slowest {:?} / {:?}, held {} ms",
        iad_acked.len(),
        cdg_acked.len(),
        iad_slowest,
        cdg_slowest,
        moved["held_ms"]
    );
    w.stop(Duration::from_secs(10));
}

/// Emulates Fly migrating node `name` to another host: stopped with
/// SIGTERM, started again from its directory (its volume) with the same
/// machine name at `127.0.<net>.<octet>`. Returns it as it is now.
fn migrate(w: &mut World, name: &str, octet: u8) -> anykv_bench::world::NodeInfo {
    move_host(w, name, "-TERM", octet)
}

/// [`migrate`], the node stopped by `signal` (`-KILL`: its host died, and
/// Fly starts the machine on another one from its volume).
fn move_host(w: &mut World, name: &str, signal: &str, octet: u8) -> anykv_bench::world::NodeInfo {
    let before = w.node(name).expect("the node").clone();
    w.signal(name, signal).expect("stopping the node");
    let std::net::IpAddr::V4(old) = before.ip else {
        panic!("IPv4 loopback")
    };
    let o = old.octets();
    let new_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(o[0], o[1], o[2], octet));
    // It finds its peers as on Fly, where `<app>.internal` lists every
    // machine: the others' gossip addresses (the world's one static seed
    // may be the node itself, at its old address).
    let peers: Vec<String> = w
        .file
        .nodes
        .iter()
        .filter(|n| n.name != name)
        .map(|n| n.gossip.to_string())
        .collect();
    {
        let node = w
            .file
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("the node in the world");
        let (from, to) = (old.to_string(), new_ip.to_string());
        for a in node.argv.iter_mut() {
            if a.starts_with(&from) {
                *a = a.replacen(&from, &to, 1);
            }
        }
        if let Some(i) = node.argv.iter().position(|a| a == "--seeds") {
            node.argv[i + 1] = peers.join(",");
        }
        node.ip = new_ip;
        node.gossip.set_ip(new_ip);
        node.resp.set_ip(new_ip);
        node.http.set_ip(new_ip);
    }
    w.launch(name).expect("the node starts on its new host");
    w.node(name).expect("the node").clone()
}

/// Waits until `via` sees one member `name`, alive at `ip`.
fn wait_alive_at(w: &World, via: &str, name: &str, ip: std::net::IpAddr) {
    wait_for(
        &format!("{via} seeing {name} alive at {ip}"),
        Duration::from_secs(60),
        || {
            w.cluster_view(via).is_some_and(|v| {
                let ms = v["members"].as_array().cloned().unwrap_or_default();
                let found: Vec<_> = ms.iter().filter(|m| m["machine"] == name).collect();
                found.len() == 1
                    && found[0]["state"] == "alive"
                    && found[0]["addr"]
                        .as_str()
                        .is_some_and(|a| a.starts_with(&format!("{ip}:")))
            })
        },
    );
}

/// A machine that Fly migrates to another host keeps its id and volume
/// and gets a new 6PN address. Emulated on a world of three iad nodes
/// (a controller group) and one cdg node: first n4 (cdg, the database's
/// read replica) moves while writes go on; it rejoins as itself: one
/// member n4, alive at the new address, the same copy (caught up with
/// what was written while it was away, served at its new address), no
/// database placed anew. Then an iad node holding no copy, one of the
/// controller group's voters, moves: the group reaches it at its new
/// address (a record committed afterwards is applied there too).
#[test]
fn a_migrated_machine_rejoins_as_itself_at_its_new_address() {
    let _turn = one_world_at_a_time();
    let (mut w, _dir, _reaper) = world("regions-migrate", 70, 23880, &[("iad", 3), ("cdg", 1)]);
    let placed = common::placed_tenant(&w, 1);
    let n1 = w.node("n1").expect("n1").clone();
    let primary = w
        .node(placed["primary"].as_str().expect("primary"))
        .expect("primary")
        .clone();
    let mut p = login(primary.resp).expect("login on the primary");
    for i in 0..100 {
        let k = format!("before:{i}");
        assert_eq!(
            p.cmd(&["SET", &k, &i.to_string()]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
    }
    let n4 = w.node("n4").expect("n4").clone();
    wait_for("n4's replica caught up", Duration::from_secs(30), || {
        login(n4.resp).is_some_and(|mut c| {
            c.cmd(&["GET", "before:99"]).ok() == Some(Value::Bulk(b"99".to_vec()))
        })
    });
    let epoch_before = common::placed_tenant(&w, 1)["epoch"].clone();

    // n4's host goes; writes go on meanwhile.
    w.signal("n4", "-STOP").expect("pausing n4");
    for i in 0..100 {
        let k = format!("away:{i}");
        assert_eq!(
            p.cmd(&["SET", &k, &i.to_string()]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
    }
    w.signal("n4", "-CONT").expect("resuming n4");
    let moved = migrate(&mut w, "n4", 9);
    wait_alive_at(&w, &n1.name, "n4", moved.ip);
    // Its copy is served at the new address, with what it missed.
    wait_for(
        "n4's replica caught up at its new address",
        Duration::from_secs(60),
        || {
            login(moved.resp).is_some_and(|mut c| {
                c.cmd(&["GET", "away:99"]).ok() == Some(Value::Bulk(b"99".to_vec()))
            })
        },
    );
    let mut c = login(moved.resp).expect("login on n4");
    for prefix in ["before", "away"] {
        for i in 0..100 {
            let k = format!("{prefix}:{i}");
            assert_eq!(
                c.cmd(&["GET", &k]).ok(),
                Some(Value::Bulk(i.to_string().into_bytes())),
                "{k} on the migrated n4"
            );
        }
    }
    // The same placement: n4 keeps the cdg copy, nothing was re-placed.
    let placed = common::placed_tenant(&w, 1);
    assert_eq!(placed["epoch"], epoch_before, "{placed}");
    assert!(
        placed["replicas"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["node"] == "n4" && r["region"] == "cdg")),
        "{placed}"
    );
    // n4 answers in the cluster from its new address: writes through it
    // reach the primary.
    assert_eq!(
        c.cmd(&["SET", "from:n4", "1"]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    assert_eq!(
        p.cmd(&["GET", "from:n4"]).ok(),
        Some(Value::Bulk(b"1".to_vec()))
    );

    // A voter of iad's controller group moves: the iad node with no copy.
    let holders: Vec<String> = [&placed["primary"], &placed["standby"]]
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let voter = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !holders.iter().any(|h| h == n))
        .expect("an iad node without a copy");
    let via = holders[0].clone();
    let group = |w: &World| -> Option<Vec<serde_json::Value>> {
        let v = w.cluster_view(&via)?;
        let ms = v["members"].as_array()?.clone();
        Some(
            ms.into_iter()
                .filter(|m| m["region"] == "iad")
                .map(|m| m["meta"]["controller"].clone())
                .collect(),
        )
    };
    wait_for(
        "iad's controller group formed",
        Duration::from_secs(60),
        || {
            group(&w).is_some_and(|g| {
                g.len() == 3
                    && g.iter()
                        .all(|c| c["voters"].as_array().is_some_and(|v| v.len() == 3))
            })
        },
    );
    wait_for(
        "the group counting the standby in sync",
        Duration::from_secs(30),
        || {
            let p = common::placed_tenant(&w, 1);
            p["in_sync"].is_string() && p["in_sync"] == p["standby"]
        },
    );
    let placed = common::placed_tenant(&w, 1);
    let moved = migrate(&mut w, voter, 10);
    wait_alive_at(&w, &via, voter, moved.ip);
    // A record the group commits now (a new database's) is applied on the
    // moved voter too: the leader replicates to its new address.
    put_tenant(
        &w,
        &serde_json::json!({
            "id": 2, "name": "cart",
            "token_sha256": [anykv_server::catalog::token_digest(b"cart-token")
                .iter().map(|b| format!("{b:02x}")).collect::<String>()],
            "org": "acme", "primary_region": "iad", "read_regions": [], "maxmemory": 0,
            "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
            "durability": "async", "consistency": "ryw", "version": 1
        }),
    );
    wait_for(
        "the moved voter applying the group's newest record",
        Duration::from_secs(60),
        || {
            group(&w).is_some_and(|g| {
                let applied: Vec<&serde_json::Value> = g.iter().map(|c| &c["applied"]).collect();
                g.len() == 3
                    && g.iter().all(|c| c["records"] == 2)
                    && applied.iter().all(|a| !a.is_null() && *a == applied[0])
            })
        },
    );
    // The database's primary keeps renewing its lease from the group's
    // leader (the moved voter may be it, at its new address): its writes
    // are taken for several lease periods (2 s each).
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut i = 0;
    while std::time::Instant::now() < until {
        let k = format!("after-move:{i}");
        assert_eq!(
            p.cmd(&["SET", &k, "1"]).ok(),
            Some(Value::Simple(b"OK".to_vec())),
            "a write {i} after the voter moved"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nor did the voter's restart move any copy: it led the group and
    // leads again at once (openraft resumes it), before it has heard of
    // the other members; it must not take the in-sync standby it has not
    // heard of yet for gone and place the standby on itself.
    let after = common::placed_tenant(&w, 1);
    for field in ["epoch", "primary", "standby", "in_sync"] {
        assert_eq!(
            after[field], placed[field],
            "{field}: {after} after {placed}"
        );
    }
    let copies = |p: &serde_json::Value| -> Vec<(String, String)> {
        p["replicas"].as_array().map_or_else(Vec::new, |rs| {
            rs.iter()
                .map(|r| (r["node"].to_string(), r["region"].to_string()))
                .collect()
        })
    };
    assert_eq!(copies(&after), copies(&placed), "{after} after {placed}");
    w.stop(Duration::from_secs(10));
}

/// The controller's leader dies (kill -9: no handoff, no leadership
/// transfer) and its machine starts again at once on another host.
/// openraft resumes it as the leader of the same term, with no election,
/// before it has heard of the other members. It must not take the copies
/// it has not heard of yet for gone (before, it moved the in-sync standby
/// onto itself, a full sync), and the database's primary must keep its
/// lease: its renewals find the leader at its new address as soon as the
/// cluster view has it there (before, they went to the old address until
/// the group committed the move). Writes go on throughout.
#[test]
fn a_leader_that_crashes_and_comes_back_elsewhere_moves_nothing() {
    let _turn = one_world_at_a_time();
    let (mut w, _dir, _reaper) = world("regions-crash", 79, 24500, &[("iad", 3), ("cdg", 1)]);
    wait_group_holds_record(&w);
    let leader_of = |w: &World, via: &str| -> Option<(String, u64)> {
        let v = w.cluster_view(via)?;
        let c = v["controllers"]
            .as_array()?
            .iter()
            .find(|c| c["region"] == "iad")?
            .clone();
        Some((c["leader"].as_str()?.to_string(), c["term"].as_u64()?))
    };
    wait_for(
        "the standby in sync, and a leader with no copy",
        Duration::from_secs(30),
        || {
            let p = common::placed_tenant(&w, 1);
            let in_sync = p["in_sync"].is_string() && p["in_sync"] == p["standby"];
            in_sync
                && leader_of(&w, "n1").is_some_and(|(l, _)| l != p["primary"] && l != p["standby"])
        },
    );
    let placed = common::placed_tenant(&w, 1);
    let primary = placed["primary"].as_str().expect("primary").to_string();
    // (The primary's view may lack a leader for a moment though n1's
    // named one: a gossip round apart.)
    let mut seen = None;
    wait_for(
        "the primary's view names the leader",
        Duration::from_secs(30),
        || {
            seen = leader_of(&w, &primary);
            seen.is_some()
        },
    );
    let (leader, term) = seen.expect("the group's leader");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let p_resp = w.node(&primary).expect("primary").resp;
    let writer = spawn_writer(p_resp, "w", stop.clone(), count.clone());
    wait_for("writes going", Duration::from_secs(10), || {
        count.load(Ordering::Relaxed) > 20
    });

    let moved = move_host(&mut w, &leader, "-KILL", 11);
    wait_alive_at(&w, &primary, &leader, moved.ip);
    // Writes for three lease periods from there.
    let at = count.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let (acked, errors, slowest) = writer.join().expect("the writer");
    assert!(
        errors.is_empty(),
        "{} writes failed: {errors:?}",
        errors.len()
    );
    assert!(
        acked.len() as u64 > at + 100,
        "writes went on: {} before the move was seen, {} in all",
        at,
        acked.len()
    );
    // It came back leading the term it led: resumed, not elected (this
    // test is about that case).
    assert_eq!(
        leader_of(&w, &primary),
        Some((leader.clone(), term)),
        "the same leader at the same term"
    );
    let after = common::placed_tenant(&w, 1);
    for field in ["epoch", "primary", "standby", "in_sync"] {
        assert_eq!(
            after[field], placed[field],
            "{field}: {after} after {placed}"
        );
    }
    eprintln!("{} writes, slowest {slowest:?}", acked.len());
    w.stop(Duration::from_secs(10));
}

/// A region whose third node arrives forms its controller group, which
/// takes over the records of the databases already there: their
/// primaries write under its lease from then on. Writes going on through
/// the region's nodes meanwhile are not refused: the primary waits for
/// its first lease as after a new epoch (before, the writes between the
/// group's adoption and that lease met "no lease").
#[test]
fn writes_go_on_while_a_region_forms_its_controller_group() {
    let _turn = one_world_at_a_time();
    let (w, dir, _reaper) = world("regions-forms", 71, 23920, &[("iad", 2), ("cdg", 1)]);
    let group_holds_the_record = |w: &World| {
        w.cluster_view("n3").is_some_and(|v| {
            v["controllers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["region"] == "iad" && c["leader"].is_string() && c["records"] == 1)
            })
        })
    };
    assert!(!group_holds_the_record(&w), "two nodes form no group");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let writers: Vec<_> = [("n1", "a"), ("n2", "b")]
        .into_iter()
        .zip(&counts)
        .map(|((n, prefix), count)| {
            let addr = w.node(n).expect("node").resp;
            spawn_writer(addr, prefix, stop.clone(), count.clone())
        })
        .collect();
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    wait_for(
        "writes through both iad nodes",
        Duration::from_secs(20),
        || counts.iter().all(|c| c.load(Ordering::Relaxed) > 20),
    );
    let out = regions_cmd(&dir, &["add", "iad", "--count", "3"])
        .output()
        .expect("running anykv regions add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "iad's new group holding the database's record",
        Duration::from_secs(60),
        || group_holds_the_record(&w),
    );
    // Past the group's first leases.
    let after = total();
    wait_for(
        "writes under the group's lease",
        Duration::from_secs(30),
        || total() > after + 200,
    );
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for (wr, prefix) in writers.into_iter().zip(["a", "b"]) {
        let (acked, errors, slowest) = wr.join().expect("writer");
        assert!(
            errors.is_empty(),
            "writes through the {prefix} writer failed: {errors:?}"
        );
        assert!(slowest < Duration::from_secs(5), "a write took {slowest:?}");
        all.push((prefix, acked));
    }
    for (prefix, acked) in &all {
        assert_read_back(w.node("n1").expect("n1").resp, prefix, acked);
    }
}

/// What a backup holds is readable: a node's volume keeps each database
/// in `tenants/<id>/` in the server's own formats, so a copy of that
/// directory (as a volume restored from a snapshot holds it) is served by
/// a standalone `anykv server --dir` started on it, every key there
/// (docs/DEPLOY.md, Backups).
#[test]
fn a_databases_files_from_a_nodes_volume_are_served_by_a_standalone_server() {
    let _turn = one_world_at_a_time();
    let spec = common::world_spec(
        "regions-restore",
        73,
        23960,
        &[("iad", 1), ("cdg", 1)],
        ADMIN,
        &["--appendonly", "yes"],
    );
    let (mut w, dir, _reaper) = start_world(spec);
    let n1 = w.node("n1").expect("n1").clone();
    let mut c = login(n1.resp).expect("login on n1");
    for i in 0..200 {
        let (k, v) = (format!("b:{i}"), format!("v{i}"));
        assert_eq!(
            c.cmd(&["SET", &k, &v]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
    }
    assert_eq!(c.cmd(&["HSET", "b:h", "f", "1"]).ok(), Some(Value::Int(1)));
    drop(c);
    w.stop(Duration::from_secs(10));
    // The volume's copy, as a snapshot would restore it.
    let restored = dir.join("restored");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(n1.dir.join("tenants").join("1"))
        .arg(&restored)
        .status()
        .expect("cp");
    assert!(copy.success());
    let restored = restored.to_string_lossy().into_owned();
    let mut s = common::start_anykv_with(
        Path::new(env!("CARGO_BIN_EXE_anykv")),
        &["--dir", &restored, "--appendonly", "yes"],
    );
    common::wait_ready(&mut s, Duration::from_secs(20)).expect("the server on the copy starts");
    let mut r = RespConn::connect(s.port).expect("connect");
    assert_eq!(r.cmd(&["DBSIZE"]).ok(), Some(Value::Int(201)));
    for i in 0..200 {
        assert_eq!(
            r.cmd(&["GET", &format!("b:{i}")]).ok(),
            Some(Value::Bulk(format!("v{i}").into_bytes())),
            "b:{i}"
        );
    }
    assert_eq!(
        r.cmd(&["HGET", "b:h", "f"]).ok(),
        Some(Value::Bulk(b"1".to_vec()))
    );
}

/// Node `n`'s `GET /ready`: its status and JSON body.
fn ready(w: &World, n: &str) -> Option<(u16, serde_json::Value)> {
    let node = w.node(n).ok()?;
    let (code, body) = anykv_bench::world::http(node.http, "GET", "/ready", "", "")?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// `GET /ready` on a node's metrics port: what fly.toml's health check
/// asks, so a rolling deploy stops the next machine only once the one it
/// restarted has its copies back in sync. Every node of a settled world
/// is ready; the standby, restarted while its primary is frozen, answers
/// 503 naming the database until it has synced again, then 200.
#[test]
fn a_restarted_node_is_ready_only_once_its_copies_synced_again() {
    let _turn = one_world_at_a_time();
    let (mut w, _dir, _reaper) = world("regions-ready", 74, 23980, &[("iad", 2), ("cdg", 1)]);
    wait_ready(&w, &["n1", "n2", "n3"]);
    let placed = common::placed_tenant(&w, 1);
    let primary = placed["primary"].as_str().expect("primary").to_string();
    let standby = placed["standby"]
        .as_str()
        .expect("a standby in iad")
        .to_string();

    w.signal(&primary, "-STOP").expect("freezing the primary");
    w.signal(&standby, "-TERM").expect("stopping the standby");
    wait_for("the standby stopped", Duration::from_secs(20), || {
        !w.running(&standby)
    });
    w.launch(&standby).expect("the standby starts again");
    let mut seen = None;
    wait_for(
        "the restarted standby answering /ready",
        Duration::from_secs(30),
        || {
            seen = ready(&w, &standby);
            seen.is_some()
        },
    );
    let (code, body) = seen.expect("an answer");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert!(
        body["waiting"].as_array().is_some_and(|w| w
            .iter()
            .any(|x| x.as_str().is_some_and(|s| s.contains("database 1 (shop)")))),
        "{body}"
    );
    // Still not ready a moment later: nothing to sync from.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ready(&w, &standby).map(|(c, _)| c), Some(503));

    w.signal(&primary, "-CONT").expect("thawing the primary");
    wait_for("the standby ready again", Duration::from_secs(60), || {
        ready(&w, &standby).is_some_and(|(code, _)| code == 200)
    });
    w.stop(Duration::from_secs(10));
}

/// `text` without its terminal colour codes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A rolling upgrade as `fly deploy` runs one (fly.toml's rolling
/// strategy, one machine at a time, the next only once the restarted one
/// passes its `/ready` check): every node of a three-node region (its
/// controller group) is stopped with SIGTERM and started again in turn,
/// while a client writes through the read region. The primary's node
/// hands its database over on SIGTERM each time it is stopped (its log
/// says the handoff ended with it done, none failed: no lease ran out),
/// no write fails, and every acknowledged write reads back.
#[test]
fn a_rolling_restart_paced_by_readiness_hands_primaries_over_with_nothing_lost() {
    let _turn = one_world_at_a_time();
    let (mut w, _dir, _reaper) = world("regions-rolling", 75, 24000, &[("iad", 3), ("cdg", 1)]);
    // The group holds the database's record (a SIGTERM hands over only
    // under a group), and every node is ready.
    wait_group_holds_record(&w);
    wait_ready(&w, &["n1", "n2", "n3", "n4"]);
    let n4 = w.node("n4").expect("n4").clone();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(n4.resp, "roll", stop.clone(), count.clone());
    wait_for("writes through cdg", Duration::from_secs(30), || {
        count.load(Ordering::Relaxed) > 50
    });
    // Fly sends SIGKILL kill_timeout after its SIGTERM.
    let kill_timeout = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fly.toml"))
        .expect("fly.toml")
        .parse::<toml::Table>()
        .expect("fly.toml parses")["kill_timeout"]
        .as_integer()
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .expect("kill_timeout in seconds");
    let mut handed = 0;
    for n in ["n1", "n2", "n3"] {
        // As the node about to stop sees it.
        let placed = w
            .cluster_view(n)
            .and_then(|v| {
                v["tenants"]
                    .as_array()?
                    .iter()
                    .find(|t| t["id"] == 1)
                    .cloned()
            })
            .expect("the database in the node's view");
        let primary = placed["primary"].as_str().expect("primary").to_string();
        let log = w.node(n).expect("node").log.clone();
        let ended_before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("planned handoff ended")
            .count();
        let pid = w.node(n).expect("node").pid;
        let sent = std::time::Instant::now();
        w.signal(n, "-TERM").expect("SIGTERM");
        wait_for(&format!("{n} stopped"), Duration::from_secs(20), || {
            !local::alive(pid)
        });
        let stopped_in = sent.elapsed();
        if primary == n {
            // Its handoff ends, and the node exits, before Fly would
            // have killed it.
            assert!(
                stopped_in < kill_timeout,
                "{n}, holding the primary, took {stopped_in:?} to exit after SIGTERM; fly.toml's kill_timeout is {kill_timeout:?}"
            );
            let text = plain(&std::fs::read_to_string(&log).expect("the node's log"));
            let ended: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("planned handoff ended"))
                .collect();
            assert_eq!(
                ended.len(),
                ended_before + 1,
                "{n} handed over once ({placed}); its log ends: {}",
                text.lines().rev().take(40).collect::<Vec<_>>().join("\n")
            );
            let last = ended.last().expect("a handoff");
            assert!(
                last.contains("done=1") && last.contains("failed=0"),
                "{n}: {last}"
            );
            handed += 1;
        }
        w.launch(n).expect("started again");
        let before = count.load(Ordering::Relaxed);
        let mut answers = Vec::new();
        wait_for(&format!("{n} ready again"), Duration::from_secs(60), || {
            let r = ready(&w, n);
            answers.push(format!("{r:?}"));
            r.is_some_and(|(code, _)| code == 200)
        });
        eprintln!("{n}'s /ready after its restart: {}", answers.join(" | "));
        wait_for("writes go on", Duration::from_secs(20), || {
            count.load(Ordering::Relaxed) > before + 20
        });
    }
    assert!(handed >= 1, "the primary's node was among those restarted");
    stop.store(true, Ordering::Relaxed);
    let (acked, errors, _) = writer.join().expect("writer");
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    let primary = common::placed_tenant(&w, 1)["primary"]
        .as_str()
        .expect("primary")
        .to_string();
    assert_read_back(w.node(&primary).expect("primary").resp, "roll", &acked);
    w.stop(Duration::from_secs(10));
}
