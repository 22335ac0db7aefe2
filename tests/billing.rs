//! Metering to billing end to end (docs/METERING.md): two iad nodes (the
//! database's primary and its standby), each writing a usage record every
//! 200 ms, and `anykv sidecar` pulling them every second.
//!
//! A known workload, sent to both nodes (the standby's node forwards its
//! writes to the primary, which must not count them again), gives exactly
//! its commands by class, its bytes in and out and its logins on the day's
//! billing line and in GET's usage; after the primary's node restarts (a
//! planned handoff: its last record written on the way out, its log
//! continued after), more commands add exactly themselves, and further
//! pulls add nothing. Deleting the database revokes its token at once and
//! keeps its files through the grace period (3 s here); then the sidecar
//! has every node purge them, and the day's bill still shows its usage.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use anykv_bench::world::World;
use common::{Killed, RespConn, Value};
use serde_json::json;

const ADMIN: &str = "billing-admin-token-0123456789";
const SECRET: &str = "the-secret-fly-signs-with";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SIDECAR: &str = "127.0.65.100:23680";

fn base() -> String {
    format!("http://{SIDECAR}")
}

/// A signed call as Fly makes it.
fn call(method: &str, path: &str, fields: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = anykv_ops::fetch::Client::new(Duration::from_secs(10));
        anykv_ops::fakefly::call_signed(&http, SECRET.as_bytes(), method, &base(), path, fields)
            .await
            .expect("the sidecar answers")
    })
}

/// The RESP encoding of a request, as a client sends it.
fn request_bytes(args: &[&str]) -> u64 {
    let mut n = format!("*{}\r\n", args.len()).len();
    for a in args {
        n += format!("${}\r\n", a.len()).len() + a.len() + 2;
    }
    n as u64
}

/// The RESP2 encoding's length of a reply.
fn reply_bytes(v: &Value) -> u64 {
    match v {
        Value::Simple(s) | Value::Error(s) => 1 + s.len() as u64 + 2,
        Value::Int(i) => 1 + i.to_string().len() as u64 + 2,
        Value::Bulk(b) => (format!("${}\r\n", b.len()).len() + b.len() + 2) as u64,
        Value::Nil => 5,
        Value::Array(a) => {
            format!("*{}\r\n", a.len()).len() as u64 + a.iter().map(reply_bytes).sum::<u64>()
        }
        #[allow(unreachable_patterns)]
        _ => panic!("an unexpected reply {v:?}"),
    }
}

/// What the test sent and got, as the meter should count it.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    reads: u64,
    writes: u64,
    other: u64,
    bytes_in: u64,
    bytes_out: u64,
    connections: u64,
}

/// Logs in to the database on `addr` (AUTH runs on the node's default
/// tenant: not the database's usage) and runs `cmds`, counting them.
fn run(addr: SocketAddr, token: &str, cmds: &[(&[&str], char)], sent: &mut Sent) {
    let mut c = None;
    common::wait_for("a login to the database", Duration::from_secs(20), || {
        c = common::login_ready(addr, "default", token, |_| true);
        c.is_some()
    });
    let mut c: RespConn = c.expect("logged in");
    sent.connections += 1;
    for (args, class) in cmds {
        let v = c.cmd(args).expect("a reply");
        assert!(!matches!(v, Value::Error(_)), "{args:?}: {v:?}");
        sent.bytes_in += request_bytes(args);
        sent.bytes_out += reply_bytes(&v);
        match class {
            'r' => sent.reads += 1,
            'w' => sent.writes += 1,
            _ => sent.other += 1,
        }
    }
}

fn today() -> String {
    anykv_ops::metering::day_of(anykv_ops::unix_now())
}

/// The database's line on today's bill, once it shows `want`'s counts.
fn billed(want: Sent) -> serde_json::Value {
    common::poll_every(
        Duration::from_millis(250),
        Duration::from_secs(30),
        "the bill to show the workload",
        || {
            let (code, bill) = call("GET", &format!("/billing?date={}", today()), None);
            assert_eq!(code, 200, "{bill}");
            let line = &bill["organizations"][0]["databases"][0];
            let c = &line["commands"];
            let seen = Sent {
                reads: c["read"].as_u64().unwrap_or(0),
                writes: c["write"].as_u64().unwrap_or(0),
                other: c["other"].as_u64().unwrap_or(0),
                bytes_in: line["bandwidth_bytes"]["in"].as_u64().unwrap_or(0),
                bytes_out: line["bandwidth_bytes"]["out"].as_u64().unwrap_or(0),
                connections: line["connections"].as_u64().unwrap_or(0),
            };
            assert!(
                seen.reads <= want.reads && seen.writes <= want.writes && seen.other <= want.other,
                "counted more than was sent: {seen:?} against {want:?}"
            );
            (seen == want).then(|| bill.clone())
        },
    )
}

#[test]
fn a_known_workload_is_billed_exactly_across_a_restart_and_repeated_pulls() {
    // An append-only log, so that the database has files to purge.
    let spec = common::world_spec(
        "billing",
        65,
        23600,
        &[("iad", 2)],
        ADMIN,
        &["--appendonly", "yes"],
    );
    // Records every 200 ms; taken ones leave the log at once (no 48 h
    // keep) so that a compaction happens within the test.
    let fast: Vec<String> = ["--meter-interval-ms", "200", "--usage-keep-hours", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let args = BTreeMap::from([("n1".to_string(), fast.clone()), ("n2".to_string(), fast)]);
    let mut w = World::start_with(&spec, &args).expect("the world starts");
    w.wait_members(2, Duration::from_secs(60))
        .expect("both nodes alive");
    let admins: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| w.node(n).expect("node").http.to_string())
        .collect();
    let start_sidecar = || {
        Killed(
            Command::new(env!("CARGO_BIN_EXE_anykv"))
                .args(["sidecar", "--listen", SIDECAR, "--meter-pull-secs", "1"])
                .args(["--purge-after-secs", "3"])
                .arg("--data")
                .arg(spec.dir.join("sidecar"))
                .args(["--cluster-admin", &admins[0], "--cluster-admin", &admins[1]])
                .args(["--redis-url-host", "127.0.65.1"])
                .args(["--fly-api-base", "http://127.0.65.101:9"])
                .env("ANYKV_WEBHOOK_SECRET", "webhook-secret")
                .env("ANYKV_EXT_SECRET", SECRET)
                .env("ANYKV_TOKEN_KEY", KEY)
                .env("ANYKV_ADMIN_TOKEN", ADMIN)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("anykv sidecar starts"),
        )
    };
    let mut sidecar = start_sidecar();
    common::wait_for("the sidecar to listen", Duration::from_secs(20), || {
        TcpStream::connect(SIDECAR).is_ok()
    });
    let (code, a) = call(
        "POST",
        "/extensions",
        Some(json!({
            "id": "ext_1", "name": "Shop", "organization_id": "org_a",
            "organization_name": "Acme", "organization_email": "admins@acme.example",
            "user_id": "u1", "user_email": "u1@customer.fly.io", "user_role": "admin",
            "primary_region": "iad", "read_regions": [], "ip_address": "fdaa:0:1::3",
        })),
    );
    assert_eq!(code, 200, "{a}");
    let url = a["config"]["REDIS_URL"].as_str().expect("REDIS_URL");
    let token = url
        .strip_prefix("redis://default:")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t.to_string())
        .expect("a token");
    let placed = common::placed_tenant(&w, 1);
    let primary = placed["primary"].as_str().expect("a primary").to_string();
    let standby = if primary == "n1" { "n2" } else { "n1" }.to_string();
    let p_addr = w.node(&primary).expect("primary").resp;
    let s_addr = w.node(&standby).expect("standby").resp;

    // On the primary's node: writes, reads, a PING. On the standby's:
    // writes it forwards to the primary, reads it serves.
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    let mut on_primary: Vec<(Vec<&str>, char)> = Vec::new();
    for k in &keys {
        on_primary.push((vec!["SET", k, "value"], 'w'));
    }
    for k in &keys[..50] {
        on_primary.push((vec!["GET", k], 'r'));
    }
    for _ in 0..10 {
        on_primary.push((vec!["PING"], 'o'));
    }
    let mut sent = Sent::default();
    let cmds: Vec<(&[&str], char)> = on_primary.iter().map(|(a, c)| (a.as_slice(), *c)).collect();
    run(p_addr, &token, &cmds, &mut sent);
    let mut on_standby: Vec<(Vec<&str>, char)> = Vec::new();
    for k in &keys[..30] {
        on_standby.push((vec!["SET", k, "other"], 'w'));
    }
    for k in &keys[50..70] {
        on_standby.push((vec!["STRLEN", k], 'r'));
    }
    let cmds: Vec<(&[&str], char)> = on_standby.iter().map(|(a, c)| (a.as_slice(), *c)).collect();
    run(s_addr, &token, &cmds, &mut sent);
    assert_eq!((sent.reads, sent.writes, sent.other), (70, 130, 10));
    let bill = billed(sent);
    let org = &bill["organizations"][0];
    assert_eq!(org["organization_id"], "org_a");
    let line = &org["databases"][0];
    assert_eq!(
        (line["id"].as_str(), line["plan"].as_str()),
        (Some("ext_1"), Some("payg"))
    );
    assert!(
        line["storage_gb_hours"].as_f64().is_some_and(|g| g > 0.0),
        "{line}"
    );

    // The primary's node stops (a planned handoff: its last record goes
    // out with it) and starts again; more writes, through the other node.
    w.signal(&primary, "-TERM").expect("SIGTERM");
    common::wait_for("the old primary to exit", Duration::from_secs(30), || {
        !w.is_running(&primary)
    });
    w.launch(&primary).expect("restart");
    w.wait_members(2, Duration::from_secs(60))
        .expect("both nodes alive again");
    let more: Vec<(Vec<&str>, char)> = keys[..40]
        .iter()
        .map(|k| (vec!["SET", k.as_str(), "again"], 'w'))
        .collect();
    let cmds: Vec<(&[&str], char)> = more.iter().map(|(a, c)| (a.as_slice(), *c)).collect();
    run(s_addr, &token, &cmds, &mut sent);
    let bill = billed(sent);
    let line = bill["organizations"][0]["databases"][0].clone();

    // The nodes drop from their usage logs the records the sidecar took
    // (a compaction once 64 taken records wait in a file: 200 ms apart
    // here); the bill below stays exact.
    let logs: Vec<std::path::PathBuf> = ["n1", "n2"]
        .iter()
        .map(|n| w.node(n).expect("node").dir.join("usage.log"))
        .collect();
    let first_seq = |p: &std::path::Path| -> u64 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| {
                let first = t.lines().next()?.to_string();
                serde_json::from_str::<serde_json::Value>(&first).ok()?["seq"].as_u64()
            })
            .unwrap_or(0)
    };
    common::wait_for("a usage log compacted", Duration::from_secs(60), || {
        logs.iter().any(|p| first_seq(p) > 1)
    });

    // Pulls go on every second, and the sidecar restarts (killed, as a
    // crash would): nothing is counted twice.
    drop(sidecar);
    sidecar = start_sidecar();
    common::wait_for(
        "the sidecar to listen again",
        Duration::from_secs(20),
        || TcpStream::connect(SIDECAR).is_ok(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (_, again) = call("GET", &format!("/billing?date={}", today()), None);
    let again_line = &again["organizations"][0]["databases"][0];
    assert_eq!(again_line["commands"], line["commands"], "{again}");
    assert_eq!(again_line["bandwidth_bytes"], line["bandwidth_bytes"]);
    assert_eq!(again_line["connections"], line["connections"]);

    // The amount is the prices' (docs/METERING.md), and GET's usage so far
    // this month agrees with the bill.
    let t = anykv_ops::metering::Totals {
        reads: sent.reads,
        writes: sent.writes,
        other: sent.other,
        bytes_in: sent.bytes_in,
        bytes_out: sent.bytes_out,
        ..Default::default()
    };
    assert!(again_line["amount_cents"].as_u64() >= Some(t.amount_cents()));
    // Exactly the prices of the line's own usage: its counts (the
    // workload's, above) and its storage and read-region seconds.
    let exact = anykv_ops::metering::Totals {
        storage_byte_seconds: again_line["storage_byte_seconds"]
            .as_u64()
            .expect("storage_byte_seconds"),
        read_region_seconds: again_line["read_region_seconds"]
            .as_u64()
            .expect("read_region_seconds"),
        connections: sent.connections,
        ..t
    };
    assert!(exact.storage_byte_seconds > 0, "{again_line}");
    assert_eq!(
        again_line["amount_micro_cents"].as_u64(),
        u64::try_from(exact.amount_micro()).ok(),
        "{again_line}"
    );
    assert_eq!(
        again_line["amount_cents"].as_u64(),
        Some(exact.amount_cents()),
        "{again_line}"
    );
    let (code, shown) = call("GET", "/extensions/ext_1", None);
    assert_eq!(code, 200, "{shown}");
    assert_eq!(
        shown["usage"]["commands"]["total"],
        sent.reads + sent.writes + sent.other
    );
    // A malformed date is refused, naming the field.
    let (code, bad) = call("GET", "/billing?date=2026-02-30", None);
    assert_eq!((code, bad["field"].as_str()), (400, Some("date")), "{bad}");

    // Deletion: the token stops at once, the files stay for the grace
    // period, then every node purges them.
    let dirs: Vec<std::path::PathBuf> = ["n1", "n2"]
        .iter()
        .map(|n| w.node(n).expect("node").dir.join("tenants").join("1"))
        .collect();
    for d in &dirs {
        assert!(d.is_dir(), "{} before the deletion", d.display());
    }
    let (code, gone) = call("DELETE", "/extensions/ext_1", None);
    assert_eq!(code, 200, "{gone}");
    assert!(
        common::login_ready(s_addr, "default", &token, |_| true).is_none(),
        "the deleted database's token still logs in"
    );
    for d in &dirs {
        assert!(d.is_dir(), "{} purged within the grace period", d.display());
    }
    common::wait_for(
        "the files purged on both nodes",
        Duration::from_secs(30),
        || dirs.iter().all(|d| !d.exists()),
    );
    let (_, bill) = call("GET", &format!("/billing?date={}", today()), None);
    let line = &bill["organizations"][0]["databases"][0];
    assert_eq!(
        (line["id"].as_str(), line["status"].as_str()),
        (Some("ext_1"), Some("deleted")),
        "{bill}"
    );
    drop(sidecar);
    drop(w);
    let _ = std::fs::remove_dir_all(&spec.dir);
}
