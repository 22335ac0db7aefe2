//! The emulated world's launcher (`anykv_bench::world`): three `anykv node`
//! processes (two regions, the WAN emulated between them) find each other;
//! `world.json` records each node so one killed with `kill -9` starts again
//! from its record and rejoins; `POST /shaper` isolates a node at runtime
//! (the others see it go down) and heals.

use std::time::Duration;

use anykv_bench::world::{World, WorldFile, WorldSpec};

fn spec(name: &str) -> WorldSpec {
    let dir = std::env::temp_dir().join(format!("anykv-world-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    WorldSpec {
        bin: env!("CARGO_BIN_EXE_anykv").into(),
        dir,
        net: 42,
        port: 21900,
        regions: vec![("iad".into(), 2), ("cdg".into(), 1)],
        rtt_table: Some("builtin".into()),
        loss: 0.0,
        gossip_profile: "test".into(),
        lan_profile: "test".into(),
        admin_token: "world-admin-token".into(),
        server_args: vec![
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ],
        launch: Default::default(),
    }
}

fn alive_seen_by(w: &World, by: &str, name: &str) -> bool {
    w.cluster_view(by).is_some_and(|v| {
        v["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|x| x["machine"] == name && x["state"] == "alive")
        })
    })
}

fn seen_down_by(w: &World, by: &str, name: &str) -> bool {
    w.cluster_view(by).is_some_and(|v| {
        v["members"].as_array().is_some_and(|m| {
            !m.iter()
                .any(|x| x["machine"] == name && x["state"] != "down")
        })
    })
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_world_starts_records_its_nodes_and_restarts_a_killed_one() {
    let spec = spec("launch");
    let mut w = World::start(&spec).expect("the world starts");
    w.wait_members(3, Duration::from_secs(60))
        .expect("three members alive everywhere");

    // world.json says what runs, where, and how to start it again.
    let file = WorldFile::load(&spec.dir.join("world.json")).expect("world.json");
    assert_eq!(file, w.file);
    let names: Vec<(&str, &str)> = file
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.region.as_str()))
        .collect();
    assert_eq!(names, [("n1", "iad"), ("n2", "iad"), ("n3", "cdg")]);
    for n in &file.nodes {
        assert!(
            std::path::Path::new(&format!("/proc/{}", n.pid)).exists(),
            "{} runs",
            n.name
        );
        assert!(
            n.argv.iter().any(|a| a == "--emulate-wan"),
            "{} is shaped",
            n.name
        );
    }

    // kill -9 n3: the others see it go; started again from its record, it
    // is back with a new pid.
    let old_pid = w.node("n3").unwrap().pid;
    w.signal("n3", "-9").expect("kill -9 n3");
    wait("n1 to see n3 gone", Duration::from_secs(30), || {
        !alive_seen_by(&w, "n1", "n3")
    });
    w.launch("n3").expect("n3 starts again");
    assert_ne!(w.node("n3").unwrap().pid, old_pid);
    let again = WorldFile::load(&spec.dir.join("world.json")).expect("world.json");
    assert_eq!(
        again.nodes[2].pid,
        w.node("n3").unwrap().pid,
        "the new pid is recorded"
    );
    w.wait_members(3, Duration::from_secs(60))
        .expect("n3 back in every view");

    // The shaper at runtime: n3 isolated from everyone, then healed. (n3
    // is alone in its region. This test was written to isolate it when a
    // partition between two nodes of one region did not heal; since
    // a8a3bb3 it does — the merge in gossip/src/cluster.rs announces to
    // same-region nodes the cluster-wide pool hears but the region pool
    // holds down, see docs/CLUSTER.md — and the fault harness's overlapping
    // faults cover that case, not this test.)
    let n3 = w.node("n3").unwrap().ip.to_string();
    w.shape(&serde_json::json!({ "isolate": [n3] }))
        .expect("isolate n3");
    // Declared down (not only suspected): the heal is then a rejoin.
    wait("n1 to see n3 down", Duration::from_secs(30), || {
        seen_down_by(&w, "n1", "n3")
    });
    w.shape(&serde_json::json!({ "heal": true, "restore": [n3] }))
        .expect("heal");
    w.wait_members(3, Duration::from_secs(60))
        .expect("n3 back after the heal");
    let _ = std::fs::remove_dir_all(&spec.dir);
}
