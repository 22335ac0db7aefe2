//! The deployment files (docs/DEPLOY.md): no container engine runs here,
//! so the image's build is checked as far as this machine allows — the
//! Dockerfile runs scripts/build-release.sh (the same release build CI's
//! binary comes from, `--locked`) and sets up what Fly needs — and the
//! fly.toml files are parsed and checked for the settings Fly and a
//! planned handoff need. The binary CI built is smoke-tested as the image
//! starts it.

use std::process::Command;

fn file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toml_file(name: &str) -> toml::Table {
    file(name)
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{name} is not TOML: {e}"))
}

/// `t[a][b]...`, a table path; arrays of tables take their first entry.
fn get<'a>(t: &'a toml::Table, path: &[&str]) -> &'a toml::Value {
    let mut v: Option<&toml::Value> = None;
    let mut table = t;
    for (i, k) in path.iter().enumerate() {
        let x = table
            .get(*k)
            .unwrap_or_else(|| panic!("no {} in {t:?}", path[..=i].join(".")));
        let x = match x {
            toml::Value::Array(a) if i + 1 < path.len() => a.first().expect("an entry"),
            other => other,
        };
        if let toml::Value::Table(next) = x {
            table = next;
        }
        v = Some(x);
    }
    v.expect("a path")
}

/// A node's service checks (every 15 s) and metrics (on 9091); the
/// cluster ports reach peers over 6PN only: no service exposes them.
fn assert_cluster_ports_private(t: &toml::Table, name: &str) {
    assert!(get(t, &["services", "tcp_checks", "interval"]).is_str());
    // Every port a service or the HTTP service takes, inside the machine
    // (`internal_port`) and at the edge (`ports[].port`).
    let mut exposed: Vec<i64> = Vec::new();
    let services = t.get("services").and_then(|s| s.as_array());
    for s in services.into_iter().flatten().filter_map(|s| s.as_table()) {
        exposed.extend(s.get("internal_port").and_then(|p| p.as_integer()));
        let ports = s.get("ports").and_then(|p| p.as_array());
        for p in ports.into_iter().flatten().filter_map(|p| p.as_table()) {
            exposed.extend(p.get("port").and_then(|p| p.as_integer()));
        }
    }
    let http = t.get("http_service").and_then(|h| h.as_table());
    exposed.extend(http.and_then(|h| h.get("internal_port")?.as_integer()));
    assert!(!exposed.is_empty(), "{name}: no service ports read");
    // Gossip, QUIC, region gossip (src/node.rs's defaults).
    for p in [7946, 7947, 7948] {
        assert!(
            !exposed.contains(&p),
            "{name}: cluster port {p} is exposed by a service ({exposed:?})"
        );
    }
    assert_eq!(get(t, &["metrics", "port"]).as_integer(), Some(9091));
}

#[test]
fn the_dockerfile_builds_with_the_release_script_and_runs_a_node_as_a_user() {
    let d = file("Dockerfile");
    let lines: Vec<&str> = d
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].ends_with(" AS build") && froms[0].contains("rust:"),
        "{froms:?}"
    );
    assert!(
        froms[1].contains("debian:") && froms[1].contains("slim"),
        "{froms:?}"
    );
    let build_stage = &d[..d.find(froms[1]).expect("second stage")];
    assert!(
        build_stage.contains("RUN scripts/build-release.sh"),
        "the build stage runs the release script"
    );
    assert!(lines.contains(&"COPY --from=build /src/dist/anykv /usr/local/bin/anykv"));
    // Root only until the entrypoint has given the volume (mounted owned
    // by root on Fly) to the user and dropped to it: no USER, and the
    // node runs through the script (tested below).
    assert!(
        !lines.iter().any(|l| l.starts_with("USER ")),
        "the entrypoint drops to the user itself"
    );
    assert!(
        d.contains("useradd --system --uid 10001"),
        "the user exists"
    );
    assert!(lines.contains(&"COPY scripts/docker-entrypoint.sh /usr/local/bin/anykv-entrypoint"));
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(lines.contains(&r#"ENTRYPOINT ["anykv-entrypoint", "anykv", "node"]"#));
    assert!(lines.contains(&"VOLUME /data") && d.contains("chown anykv:anykv /data"));
    let cmd = lines
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let at = |flag: &str| cmd.iter().position(|a| a == flag).map(|i| &cmd[i + 1..]);
    assert_eq!(cmd[0], "--", "store arguments after --");
    let bind = at("--bind").expect("--bind");
    assert_eq!(
        &bind[..2],
        ["0.0.0.0", "::"],
        "Flycast needs IPv4, 6PN IPv6"
    );
    assert_eq!(at("--dir").expect("--dir")[0], "/data");
    assert_eq!(at("--port").expect("--port")[0], "6379");
    assert_eq!(
        at("--metrics-addr").expect("--metrics-addr")[0],
        "[::]:9091"
    );

    let script = file("scripts/build-release.sh");
    assert!(script.contains("cargo build --release --locked --bin anykv"));
    assert!(script.contains("cp target/release/anykv dist/anykv"));
    let ignore = file(".dockerignore");
    for p in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == p),
            ".dockerignore leaves out {p}"
        );
    }
}

#[test]
fn fly_toml_keeps_data_nodes_up_with_their_volume_and_a_handoff_before_the_kill() {
    let t = toml_file("fly.toml");
    assert!(get(&t, &["app"]).as_str().is_some_and(|a| !a.is_empty()));
    assert!(get(&t, &["primary_region"]).is_str());
    // The planned handoff (--handoff-timeout-ms), the drain of forwarded
    // requests after it (at most 1.5 s), closing the customers'
    // connections (0.5 s) and a second to stop must fit
    // before Fly's SIGKILL: read from the binary's own default.
    let kill = get(&t, &["kill_timeout"])
        .as_integer()
        .expect("kill_timeout in seconds");
    // What Fly sends first is SIGTERM, as the image's STOPSIGNAL (Fly's
    // own default is SIGINT).
    assert_eq!(get(&t, &["kill_signal"]).as_str(), Some("SIGTERM"));
    let help = Command::new(env!("CARGO_BIN_EXE_anykv"))
        .args(["node", "--help"])
        .output()
        .expect("anykv node --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let handoff_ms: i64 = help
        .split("--handoff-timeout-ms")
        .nth(1)
        .and_then(|s| s.split("[default: ").nth(1))
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
        .expect("--handoff-timeout-ms's default in anykv node --help");
    assert!(
        kill * 1000 >= handoff_ms + 1500 + 500 + 1000,
        "kill_timeout {kill} s < the handoff's {handoff_ms} ms + drain + closing + stop"
    );
    // (docs/DEPLOY.md gives the value: they agree.)
    assert!(
        file("docs/DEPLOY.md").contains(&format!("kill_timeout = {kill}`")),
        "DEPLOY.md names kill_timeout = {kill}"
    );
    assert_eq!(get(&t, &["mounts", "source"]).as_str(), Some("anykv_data"));
    assert_eq!(get(&t, &["mounts", "destination"]).as_str(), Some("/data"));
    let services = t["services"].as_array().expect("[[services]]");
    assert_eq!(services.len(), 1, "one service: RESP over Flycast");
    assert_eq!(
        get(&t, &["services", "internal_port"]).as_integer(),
        Some(6379)
    );
    assert_eq!(get(&t, &["services", "protocol"]).as_str(), Some("tcp"));
    assert_eq!(
        get(&t, &["services", "auto_stop_machines"]).as_str(),
        Some("off")
    );
    assert_eq!(
        get(&t, &["services", "auto_start_machines"]).as_bool(),
        Some(false)
    );
    assert!(get(&t, &["services", "min_machines_running"])
        .as_integer()
        .is_some_and(|n| n >= 3));
    assert_eq!(
        get(&t, &["services", "ports", "port"]).as_integer(),
        Some(6379)
    );
    let port = get(&t, &["services", "ports"])
        .as_array()
        .and_then(|p| p.first())
        .and_then(|p| p.as_table())
        .expect("[[services.ports]]");
    assert!(port.get("handlers").is_none(), "plain TCP: {port:?}");
    // A rolling deploy replaces one machine at a time (Fly's default is a
    // third of them): a region keeps its other nodes while one restarts.
    assert_eq!(get(&t, &["deploy", "strategy"]).as_str(), Some("rolling"));
    assert_eq!(
        get(&t, &["deploy", "max_unavailable"]).as_integer(),
        Some(1)
    );
    // ... and only once the restarted one's copies are in sync: a machine
    // check on the node's readiness (GET /ready, tests/regions.rs).
    assert_eq!(
        get(&t, &["checks", "copies_in_sync", "type"]).as_str(),
        Some("http")
    );
    assert_eq!(
        get(&t, &["checks", "copies_in_sync", "path"]).as_str(),
        Some("/ready")
    );
    assert_eq!(
        get(&t, &["checks", "copies_in_sync", "port"]).as_integer(),
        Some(9091)
    );
    assert_cluster_ports_private(&t, "fly.toml");
    assert_eq!(get(&t, &["metrics", "path"]).as_str(), Some("/metrics"));
    assert!(get(&t, &["vm", "size"]).is_str());
    assert!(get(&t, &["vm", "memory"]).is_str());
    assert_eq!(
        get(&t, &["build", "dockerfile"]).as_str(),
        Some("Dockerfile")
    );
    // The log level, keeping the node's quiet defaults for its libraries.
    let filter = get(&t, &["env", "RUST_LOG"])
        .as_str()
        .expect("[env] RUST_LOG");
    assert!(
        filter.starts_with("info,") && filter.contains("openraft=error"),
        "{filter}"
    );
}

#[test]
fn fly_sidecar_toml_runs_the_sidecar_on_its_volume_with_a_health_check() {
    let t = toml_file("fly.sidecar.toml");
    assert_eq!(get(&t, &["kill_signal"]).as_str(), Some("SIGTERM"));
    assert_eq!(get(&t, &["mounts", "destination"]).as_str(), Some("/data"));
    assert_eq!(
        get(&t, &["mounts", "source"]).as_str(),
        Some("sidecar_data")
    );
    assert_eq!(
        get(&t, &["http_service", "internal_port"]).as_integer(),
        Some(8080)
    );
    assert_eq!(
        get(&t, &["http_service", "auto_stop_machines"]).as_str(),
        Some("off")
    );
    assert_eq!(
        get(&t, &["http_service", "force_https"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        get(&t, &["http_service", "checks", "path"]).as_str(),
        Some("/healthz")
    );
    let cmd: Vec<&str> = get(&t, &["experimental", "cmd"])
        .as_array()
        .expect("cmd")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(cmd[0], "sidecar");
    // Through the image's entrypoint: the volume is the user's.
    let entry: Vec<&str> = get(&t, &["experimental", "entrypoint"])
        .as_array()
        .expect("entrypoint")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(entry, ["anykv-entrypoint", "anykv"]);
    let after = |flag: &str| cmd.iter().position(|a| *a == flag).map(|i| cmd[i + 1]);
    assert!(after("--data").is_some_and(|d| d.starts_with("/data/")));
    assert!(after("--backup-dir").is_some_and(|d| d.starts_with("/data/")));
    assert_eq!(after("--listen"), Some("0.0.0.0:8080"));
    assert!(after("--cluster-admin").is_some_and(|a| a.ends_with(".internal:9091")));
    assert!(after("--public-url").is_some_and(|u| u.starts_with("https://")));
    // The binary takes these flags (its own parser says so).
    let help = Command::new(env!("CARGO_BIN_EXE_anykv"))
        .args(["sidecar", "--help"])
        .output()
        .expect("anykv sidecar --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in cmd.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "anykv sidecar takes {flag}");
    }
}

#[test]
fn fly_router_toml_runs_routers_that_hold_no_data_and_may_stop() {
    let t = toml_file("fly.router.toml");
    assert_eq!(get(&t, &["kill_signal"]).as_str(), Some("SIGTERM"));
    let data = toml_file("fly.toml");
    assert_ne!(get(&t, &["app"]), get(&data, &["app"]), "an app of its own");
    // No volume: a router holds no data.
    assert!(t.get("mounts").is_none(), "a router has no volume");
    // A router, finding its peers through the data nodes' app.
    assert_eq!(get(&t, &["env", "ANYKV_ROUTER"]).as_str(), Some("true"));
    assert_eq!(
        get(&t, &["env", "ANYKV_DISCOVER_APP"]).as_str(),
        get(&data, &["app"]).as_str()
    );
    // Fly's cost-cutting: stopped when idle, started on a connection.
    assert_eq!(
        get(&t, &["services", "auto_stop_machines"]).as_str(),
        Some("stop")
    );
    assert_eq!(
        get(&t, &["services", "auto_start_machines"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        get(&t, &["services", "min_machines_running"]).as_integer(),
        Some(0)
    );
    assert_eq!(
        get(&t, &["services", "internal_port"]).as_integer(),
        Some(6379)
    );
    assert_eq!(get(&t, &["services", "protocol"]).as_str(), Some("tcp"));
    assert_eq!(
        get(&t, &["services", "ports", "port"]).as_integer(),
        Some(6379)
    );
    assert_cluster_ports_private(&t, "fly.router.toml");
    assert_eq!(
        get(&t, &["build", "dockerfile"]).as_str(),
        Some("Dockerfile")
    );
    // The binary takes the variables the file sets, with those values.
    let help = Command::new(env!("CARGO_BIN_EXE_anykv"))
        .args(["node", "--help"])
        .output()
        .expect("anykv node --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for v in ["ANYKV_ROUTER", "ANYKV_DISCOVER_APP"] {
        assert!(help.contains(v), "anykv node reads {v}");
    }
    // (That ANYKV_ROUTER=true makes a router: the test below.)
}

/// The image's entrypoint: started as root (as on Fly, whose volumes are
/// mounted owned by root) it gives the data directory and everything in
/// it to uid/gid 10001 and runs its command as that user, with no
/// supplementary groups; started as another user it runs the command as
/// that user, changing nothing.
#[test]
fn the_entrypoint_gives_the_volume_to_the_user_and_drops_to_it() {
    use std::os::unix::fs::MetadataExt;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-entrypoint.sh");
    let mode = std::fs::metadata(&script).expect("the script").mode();
    assert!(mode & 0o111 != 0, "executable: {mode:o}");
    let dir = std::env::temp_dir().join(format!("anykv-entrypoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("dirs");
    std::fs::write(dir.join("sub/old"), b"x").expect("a file");
    let me = std::fs::metadata(&dir).expect("dir").uid();
    let out = Command::new(&script)
        .env("ANYKV_DATA_DIR", &dir)
        .args([
            "sh",
            "-c",
            r#"id -u; id -g; id -G; touch "$ANYKV_DATA_DIR/written""#,
        ])
        .output()
        .expect("running the entrypoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let owners: Vec<u32> = ["", "sub", "sub/old", "written"]
        .iter()
        .map(|p| std::fs::metadata(dir.join(p)).expect("a file").uid())
        .collect();
    if me == 0 {
        assert_eq!(ids, ["10001", "10001", "10001"], "dropped to the user");
        assert_eq!(owners, [10001; 4], "the volume is the user's");
    } else {
        assert_eq!(ids[0], me.to_string(), "run as it is");
        assert_eq!(owners, [me; 4], "nothing changed hands");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary CI built starts as the image starts it: `anykv node` knows
/// the flags and variables the image and fly.toml give it.
#[test]
fn the_built_binary_takes_what_the_image_gives_it() {
    let bin = env!("CARGO_BIN_EXE_anykv");
    let v = Command::new(bin)
        .arg("--version")
        .output()
        .expect("--version");
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("anykv "));
    let help = Command::new(bin)
        .args(["node", "--help"])
        .output()
        .expect("node --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for v in [
        "FLY_MACHINE_ID",
        "FLY_REGION",
        "FLY_APP_NAME",
        "ANYKV_GOSSIP_KEYS",
        "ANYKV_CLUSTER_CA",
        "ANYKV_CLUSTER_CA_KEY",
    ] {
        assert!(help.contains(v), "anykv node reads {v}");
    }
}

/// The image's command line, as the Dockerfile's ENTRYPOINT (less the
/// entrypoint script) and CMD give it.
fn image_argv() -> Vec<String> {
    let docker = file("Dockerfile");
    let json_of = |word: &str| -> Vec<String> {
        let line = docker
            .lines()
            .find(|l| l.starts_with(word))
            .unwrap_or_else(|| panic!("the Dockerfile has no {word}"));
        serde_json::from_str(line[word.len()..].trim()).expect("exec form (a JSON array)")
    };
    let mut argv = json_of("ENTRYPOINT");
    assert_eq!(argv[0], "anykv-entrypoint");
    argv.remove(0);
    argv.extend(json_of("CMD"));
    argv
}

/// A node started as the image starts it: the binary CI built, the
/// image's very command line (its volume, RESP and metrics ports moved to
/// free ones here), Fly's variables, the cluster's secrets as PEM text in
/// them, and `env` besides. Returns it once it answers RESP and lists
/// itself in `/cluster` with its addresses: the process, its directory,
/// its RESP and metrics ports, and its own `/cluster` entry.
struct ImageNode {
    child: std::process::Child,
    dir: std::path::PathBuf,
    resp: u16,
    metrics: u16,
    me: serde_json::Value,
}

impl Drop for ImageNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `six_pn`: the node's 6PN address (FLY_PRIVATE_IP), its own loopback
/// address, where its cluster ports bind.
fn start_image_node(name: &str, six_pn: &str, env: &[(&str, &str)]) -> ImageNode {
    use std::io::{Read, Write};
    let bin = env!("CARGO_BIN_EXE_anykv");
    let dir = std::env::temp_dir().join(format!("anykv-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secrets = dir.join("secrets");
    let out = Command::new(bin)
        .args(["cluster", "keygen", "--dir"])
        .arg(&secrets)
        .output()
        .expect("anykv cluster keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(secrets.join(f)).expect("a secret");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (resp, metrics) = (free(), free());
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let argv: Vec<String> = image_argv()
        .into_iter()
        .map(|a| match a.as_str() {
            "6379" => resp.to_string(),
            "/data" => data.display().to_string(),
            "[::]:9091" => format!("[::]:{metrics}"),
            _ => a,
        })
        .collect();
    assert_eq!(argv[0], "anykv");
    let child = Command::new(bin)
        .args(&argv[1..])
        .env("FLY_MACHINE_ID", "d8dd123a456789")
        .env("FLY_REGION", "iad")
        .env("FLY_PRIVATE_IP", six_pn)
        .env("ANYKV_GOSSIP_KEYS", read("gossip.key").trim())
        .env("ANYKV_CLUSTER_CA", read("cluster-ca.pem"))
        .env("ANYKV_CLUSTER_CA_KEY", read("cluster-ca.key"))
        .env_remove("FLY_APP_NAME")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("anykv node");
    let mut node = ImageNode {
        child,
        dir,
        resp,
        metrics,
        me: serde_json::Value::Null,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    node.me = loop {
        if node.child.try_wait().expect("wait").is_some() {
            let mut err = String::new();
            if let Some(mut e) = node.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the node exited: {err}");
        }
        let pong = std::net::TcpStream::connect(("127.0.0.1", resp))
            .ok()
            .and_then(|mut s| {
                s.write_all(b"PING\r\n").ok()?;
                let mut b = [0u8; 7];
                s.read_exact(&mut b).ok()?;
                Some(b)
            });
        // (A node is never open before it loaded its databases: NOAUTH.)
        let pong = pong.filter(|b| b == b"+PONG\r\n" || b == b"-NOAUTH");
        let cluster = anykv_bench::world::http(
            std::net::SocketAddr::from(([127, 0, 0, 1], metrics)),
            "GET",
            "/cluster",
            "",
            "",
        )
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok());
        let me = cluster.and_then(|v| {
            v["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["me"] == true).cloned())
                .filter(|m| m["meta"]["redis_addr"].is_string())
        });
        if let (Some(_), Some(me)) = (pong, me) {
            break me;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    node
}

/// The image's node: it serves RESP on the wildcard bind, metrics on
/// `[::]`, and announces its RESP address at its 6PN (here loopback)
/// address, not at `0.0.0.0`; a SIGTERM ends it within kill_timeout.
#[test]
fn the_node_starts_from_the_images_command_line_and_fly_variables() {
    use std::io::{Read, Write};
    let six_pn = "127.0.0.93";
    let mut node = start_image_node("data", six_pn, &[]);
    let (resp, metrics) = (node.resp, node.metrics);
    let announced = node.me.clone();
    // The CMD binds `::` beside `0.0.0.0` (Flycast and 6PN): RESP answers
    // over IPv6 too, where the machine has it (this one has ::1).
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let mut s = std::net::TcpStream::connect(("::1", resp)).expect("RESP on [::1]");
        s.write_all(b"PING\r\n").expect("write");
        let mut b = [0u8; 7];
        s.read_exact(&mut b).expect("read");
        assert!(b == *b"+PONG\r\n" || b == *b"-NOAUTH", "{b:?}");
    }
    // A SIGTERM ends it well within fly.toml's kill_timeout (Fly's SIGKILL).
    let kill_timeout = toml_file("fly.toml")["kill_timeout"]
        .as_integer()
        .and_then(|s| u64::try_from(s).ok())
        .expect("kill_timeout");
    let stopping = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status();
    let status = node.child.wait().expect("wait");
    let stopped_in = stopping.elapsed();
    assert!(
        stopped_in < std::time::Duration::from_secs(kill_timeout),
        "stopping took {stopped_in:?}, fly.toml's kill_timeout is {kill_timeout} s"
    );
    assert_eq!(
        announced["meta"]["redis_addr"],
        format!("{six_pn}:{resp}"),
        "{announced}"
    );
    assert_eq!(
        announced["meta"]["http_addr"],
        format!("{six_pn}:{metrics}"),
        "{announced}"
    );
    assert_eq!(announced["machine"], "d8dd123a456789", "{announced}");
    assert_eq!(announced["region"], "iad", "{announced}");
    assert!(
        status.success(),
        "a SIGTERM ends the node cleanly: {status}"
    );
}

/// fly.router.toml's `[env]` makes the image's node a router: it
/// announces the router role (no store), so it holds no data and no
/// vote.
#[test]
fn the_router_apps_environment_starts_a_router() {
    let t = toml_file("fly.router.toml");
    let router = get(&t, &["env", "ANYKV_ROUTER"])
        .as_str()
        .expect("ANYKV_ROUTER in fly.router.toml");
    let node = start_image_node("router", "127.0.0.94", &[("ANYKV_ROUTER", router)]);
    assert_eq!(
        node.me["meta"]["roles"],
        serde_json::json!(["router"]),
        "{}",
        node.me
    );
    let data = start_image_node("not-router", "127.0.0.95", &[]);
    assert_eq!(
        data.me["meta"]["roles"],
        serde_json::json!(["store"]),
        "{}",
        data.me
    );
}
