//! `anykv node` as separate processes: join through seeds, the cluster view
//! over HTTP (`anykv cluster status`), graceful leave on SIGTERM, crash
//! detection after kill -9.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GOSSIP: u16 = 21600;
const LAN: u16 = 21602;
const REDIS: u16 = 21604;
const HTTP: u16 = 21605;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anykv"))
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(n: u8) -> String {
    format!("127.0.31.{n}")
}

fn start(dir: &Path, n: u8, key: &str) -> Node {
    // Each node's files in its own directory, never the working directory.
    let data = dir.join(format!("n{n}"));
    std::fs::create_dir_all(&data).expect("node dir");
    let child = Command::new(bin())
        .args(["node", "--machine", &format!("n{n}"), "--region", "iad"])
        .args(["--gossip-addr", &format!("{}:{GOSSIP}", ip(n))])
        .args(["--sync-port", &(GOSSIP + 1).to_string()])
        .args(["--seeds", &format!("{}:{GOSSIP}", ip(1))])
        .args([
            "--gossip-keys",
            key,
            "--gossip-profile",
            "test",
            "--cluster-size",
            "4",
        ])
        .args(["--lan-port", &LAN.to_string(), "--lan-profile", "test"])
        .arg("--cluster-ca")
        .arg(dir.join("cluster-ca.pem"))
        .arg("--cluster-ca-key")
        .arg(dir.join("cluster-ca.key"))
        .args([
            "--",
            "--bind",
            &ip(n),
            "--port",
            &REDIS.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&data)
        .args(["--metrics-addr", &format!("{}:{HTTP}", ip(n))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning anykv node");
    Node(child)
}

/// The node's view through the CLI, as JSON.
fn view(n: u8) -> Option<serde_json::Value> {
    let out = Command::new(bin())
        .args([
            "cluster",
            "status",
            "--json",
            "--addr",
            &format!("{}:{HTTP}", ip(n)),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn state_of(v: &serde_json::Value, machine: &str) -> Option<String> {
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["machine"] == machine)
        .and_then(|m| m["state"].as_str().map(String::from))
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("waited {limit:?} for {what}");
}

#[test]
fn nodes_join_leave_on_sigterm_and_crashes_are_detected() {
    let dir = std::env::temp_dir().join(format!("anykv-cluster-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(bin())
        .args(["cluster", "keygen", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_to_string(dir.join("gossip.key")).unwrap();
    let key = key.trim();
    // keygen refuses to overwrite secrets.
    let again = Command::new(bin())
        .args(["cluster", "keygen", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let n1 = start(&dir, 1, key);
    let mut n2 = start(&dir, 2, key);
    let mut n3 = start(&dir, 3, key);
    wait_for(Duration::from_secs(20), "three alive nodes", || {
        view(1).is_some_and(|v| {
            ["n2", "n3"]
                .iter()
                .all(|m| state_of(&v, m).as_deref() == Some("alive"))
        })
    });
    // The table form for people, and Prometheus metrics on the same port.
    let table = Command::new(bin())
        .args(["cluster", "status", "--addr", &format!("{}:{HTTP}", ip(1))])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("NODE") && table.contains("n3") && table.contains("alive"),
        "{table}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let addr: SocketAddr = format!("{}:{HTTP}", ip(1)).parse().unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    assert!(metrics.contains("anykv_gossip_members"), "{metrics}");
    assert!(metrics.contains("anykv_gossip_rtt_min_seconds"));

    // A node holds customers' databases: it is never open to clients that
    // have not logged in, not even before its catalog arrives.
    {
        use std::io::{Read, Write};
        let addr: SocketAddr = format!("{}:{REDIS}", ip(1)).parse().unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            .unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("-NOAUTH"), "unauthenticated SET: {reply}");
    }

    // SIGTERM: the node leaves, peers mark it down at once (well under the
    // failure-detection time), and the process exits 0.
    let st = Command::new("kill")
        .args(["-TERM", &n3.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let took = wait_for(Duration::from_secs(5), "n3 down after SIGTERM", || {
        view(1).is_some_and(|v| state_of(&v, "n3").as_deref() == Some("down"))
    });
    assert!(took < Duration::from_millis(1200), "leave took {took:?}");
    let status = n3.0.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // kill -9: detected by probes and suspicion (Test timings: ~1.3 s).
    n2.0.kill().unwrap();
    let _ = n2.0.wait();
    wait_for(Duration::from_secs(5), "n2 down after kill -9", || {
        view(1).is_some_and(|v| state_of(&v, "n2").as_deref() == Some("down"))
    });
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}
