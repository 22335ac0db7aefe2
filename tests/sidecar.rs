//! The Fly extension sidecar end to end (docs/SIDECAR.md): a world of two
//! iad nodes, a cdg node and a syd node, `anykv sidecar` in front of the
//! iad nodes' admin API, and requests signed as Fly signs them.
//!
//! Checked: a signed provisioning request gets a REDIS_URL that logs in
//! (`AUTH default <token>`) and serves, in `redis-cli -u <REDIS_URL>` too;
//! a read region added with PATCH
//! serves reads from its own replica, and dropped again loses it (a region
//! named twice is 422); a PATCH of the plan changes the
//! database's limits on its nodes (an unknown plan is 422); a retry with the same id gets the
//! same URL, and four at once for a new id get one database; a replayed
//! request, a wrong signature and a tampered body are
//! refused (401), an unknown region too (422, naming the field); GET
//! shows the database ready; DELETE revokes its token on the nodes (new
//! logins refused, an open connection closed), and the id cannot be
//! provisioned again; after the sidecar restarts, its
//! state (the deleted database, the nonces it accepted) is still there.
//! A database whose read region has no live node is `provisioning` until
//! that region's node is back, then `ready` (Fly hears it by webhook).
//! Fly hears of the PATCH (`resource.updated`) and of the deletion
//! (`resource.deleted`) through signed webhooks to a fake Fly endpoint;
//! the deletion's, refused while that endpoint is down, is retried and
//! delivered after the sidecar restarts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anykv_bench::world::World;
use common::{wait_for as wait, RespConn, Value};

const ADMIN: &str = "sidecar-admin-token-0123456789";
const SECRET: &str = "the-secret-fly-signs-with";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const LISTEN: &str = "127.0.53.100:22790";
/// The fake Fly API that takes the sidecar's webhooks.
const FLY: &str = "127.0.53.101:22795";
const WEBHOOK_SECRET: &str = "the-secret-webhooks-are-signed-with";

/// Fly's webhook endpoint, as far as the sidecar can tell: it checks each
/// webhook's signature (the webhook secret over the body), url and
/// timestamp as Fly would, records the good ones, and answers 200 while
/// `accept` is set, 503 otherwise (counted in `refused`).
#[derive(Clone, Default)]
struct FakeFly {
    got: std::sync::Arc<parking_lot::Mutex<Vec<serde_json::Value>>>,
    accept: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeFly {
    fn start() -> FakeFly {
        use std::sync::atomic::Ordering::SeqCst;
        let fly = FakeFly::default();
        fly.accept.store(true, SeqCst);
        let listener = std::net::TcpListener::bind(FLY).expect("the fake Fly's port");
        let f = fly.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let Some((head, body)) = read_http(&mut conn) else {
                    continue;
                };
                let path_ok = head.starts_with("POST /api/hooks/extensions/anykv HTTP/1.1");
                let sig = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-signature")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let signed = sig == anykv_ops::sign::sign(WEBHOOK_SECRET.as_bytes(), &body)
                    && v["url"] == format!("http://{FLY}/api/hooks/extensions/anykv")
                    && v["timestamp"]
                        .as_i64()
                        .is_some_and(|t| (t - now()).abs() < 60);
                let status = if !(path_ok && signed) {
                    "401 Unauthorized"
                } else if f.accept.load(SeqCst) {
                    f.got.lock().push(v);
                    "200 OK"
                } else {
                    f.refused.fetch_add(1, SeqCst);
                    "503 Service Unavailable"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        fly
    }

    /// Waits for a webhook `action` about `id` and returns its resource.
    fn expect(&self, action: &str, id: &str) -> serde_json::Value {
        common::poll_every(
            Duration::from_millis(50),
            Duration::from_secs(20),
            &format!("a {action} webhook for {id}"),
            || {
                self.got
                    .lock()
                    .iter()
                    .find(|v| v["action"] == action && v["resource"]["id"] == id)
                    .map(|v| v["resource"].clone())
            },
        )
    }
}

/// An HTTP/1.1 request's head and body (by Content-Length).
fn read_http(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[end..end + len].to_vec()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One request to the sidecar: (status, JSON body).
fn call(method: &str, target: &str, sig: &str, body: &str) -> (u16, serde_json::Value) {
    let addr: SocketAddr = LISTEN.parse().expect("address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("the sidecar");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {LISTEN}\r\nX-Signature: {sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn provision_body(id: &str, region: &str, nonce: &str) -> String {
    provision_body_with(id, region, &[], nonce)
}

fn provision_body_with(id: &str, region: &str, read: &[&str], nonce: &str) -> String {
    serde_json::json!({
        "id": id, "name": "Shop", "organization_id": "org_1",
        "organization_name": "Acme", "organization_email": "admins@acme.example",
        "user_id": "u_1", "user_email": "u1@customer.fly.io", "user_role": "admin",
        "primary_region": region, "read_regions": read,
        "ip_address": "fdaa:0:1::3",
        "url": format!("http://{LISTEN}/extensions"),
        "nonce": nonce, "timestamp": now(),
    })
    .to_string()
}

/// POST /extensions signed with `secret`.
fn post(body: &str, secret: &str) -> (u16, serde_json::Value) {
    let sig = anykv_ops::sign::sign(secret.as_bytes(), body.as_bytes());
    call("POST", "/extensions", &sig, body)
}

/// `fields` as Fly sends a body to `path`: with the signed `url` (this
/// sidecar plus `path`), `nonce` and `timestamp`; and its X-Signature.
fn signed_body(path: &str, mut fields: serde_json::Value, nonce: &str) -> (String, String) {
    fields["url"] = serde_json::json!(format!("http://{LISTEN}{path}"));
    fields["nonce"] = serde_json::json!(nonce);
    fields["timestamp"] = serde_json::json!(now());
    let body = fields.to_string();
    let sig = anykv_ops::sign::sign(SECRET.as_bytes(), body.as_bytes());
    (body, sig)
}

/// PATCH /extensions/{id} with `fields`, signed.
fn patch(id: &str, fields: serde_json::Value, nonce: &str) -> (u16, serde_json::Value) {
    let path = format!("/extensions/{id}");
    let (body, sig) = signed_body(&path, fields, nonce);
    call("PATCH", &path, &sig, &body)
}

/// GET or DELETE /extensions/{id}, its query signed.
fn signed_query(method: &str, id: &str, nonce: &str) -> (u16, serde_json::Value) {
    let url: String = url_encode(&format!("http://{LISTEN}/extensions/{id}"));
    let query = format!("url={url}&nonce={nonce}&timestamp={}", now());
    let sig = anykv_ops::sign::sign(SECRET.as_bytes(), query.as_bytes());
    call(method, &format!("/extensions/{id}?{query}"), &sig, "")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sidecar's process, killed when dropped (a failed assertion must
/// not leave it holding the port for the next run).
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sidecar(w: &World, data: &std::path::Path, resp: SocketAddr) -> Sidecar {
    start_sidecar_with(w, data, resp, &[])
}

/// The sidecar's command line for this world (without `--data`).
fn sidecar_command(w: &World, resp: SocketAddr) -> Command {
    let admins: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| w.node(n).expect("node").http.to_string())
        .collect();
    let mut c = Command::new(env!("CARGO_BIN_EXE_anykv"));
    c.args(["sidecar", "--listen", LISTEN])
        .args(["--cluster-admin", &admins[0], "--cluster-admin", &admins[1]])
        .args(["--redis-url-host", &resp.ip().to_string()])
        .args(["--redis-port", &resp.port().to_string()])
        .args(["--fly-api-base", &format!("http://{FLY}")])
        .env("ANYKV_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("ANYKV_EXT_SECRET", SECRET)
        .env("ANYKV_TOKEN_KEY", KEY)
        .env("ANYKV_ADMIN_TOKEN", ADMIN);
    c
}

fn start_sidecar_with(
    w: &World,
    data: &std::path::Path,
    resp: SocketAddr,
    extra: &[&std::ffi::OsStr],
) -> Sidecar {
    assert!(
        TcpStream::connect(LISTEN).is_err(),
        "something else listens on {LISTEN}"
    );
    let child = sidecar_command(w, resp)
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("anykv sidecar starts");
    wait("the sidecar to listen", Duration::from_secs(20), || {
        TcpStream::connect(LISTEN).is_ok()
    });
    Sidecar(child)
}

/// The REDIS_URL's token (`redis://default:<token>@host:port`).
fn token_of(url: &str) -> String {
    url.strip_prefix("redis://default:")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("REDIS_URL {url}"))
}

#[test]
fn fly_provisions_a_database_that_answers_on_its_redis_url() {
    let spec = common::world_spec(
        "sidecar",
        53,
        22700,
        &[("iad", 2), ("cdg", 1), ("syd", 1)],
        ADMIN,
        &[],
    );
    let mut w = World::start(&spec).expect("the world starts");
    w.wait_members(4, Duration::from_secs(60))
        .expect("four members alive");
    let resp = w.node("n1").expect("n1").resp;
    let data = spec.dir.join("sidecar");
    let fly = FakeFly::start();
    let sidecar = start_sidecar(&w, &data, resp);

    // Provisioning: a REDIS_URL that works.
    let body = provision_body("ext_1", "iad", "nonce-1");
    let (code, answer) = post(&body, SECRET);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["id"], "ext_1");
    let url = answer["config"]["REDIS_URL"]
        .as_str()
        .expect("REDIS_URL")
        .to_string();
    assert!(
        url.ends_with(&format!("@{}:{}", resp.ip(), resp.port())),
        "{url}"
    );
    let token = token_of(&url);
    let mut c = None;
    wait(
        "AUTH default <token> on n1",
        Duration::from_secs(20),
        || {
            c = common::login_ready(resp, "default", &token, |c| {
                c.cmd(&["SET", "k", "v"]).ok() == Some(Value::Simple(b"OK".to_vec()))
            });
            c.is_some()
        },
    );
    let mut c: RespConn = c.expect("logged in");
    assert_eq!(c.cmd(&["GET", "k"]).ok(), Some(Value::Bulk(b"v".to_vec())));
    // The REDIS_URL as Fly hands it to the app, in redis-cli.
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["--no-auth-warning", "-u", &url])
            .args(args)
            .output()
            .expect("redis-cli runs (scripts/test.sh installs redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "via-cli", "yes"]), "OK");
    assert_eq!(cli(&["GET", "via-cli"]), "yes");
    assert_eq!(cli(&["GET", "k"]), "v");

    // A read region added through PATCH: its node serves reads from its
    // own replica.
    let (code, changed) = patch(
        "ext_1",
        serde_json::json!({ "read_regions": ["cdg"] }),
        "nonce-p1",
    );
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["read_regions"], serde_json::json!(["cdg"]));
    // Fly hears of it too, the resource shaped like GET's answer.
    let hooked = fly.expect("resource.updated", "ext_1");
    assert_eq!(
        hooked["read_regions"],
        serde_json::json!(["cdg"]),
        "{hooked}"
    );
    assert_eq!(hooked["status"], "ready", "{hooked}");
    let cdg = w.node("n3").expect("the cdg node").resp;
    let mut r = None;
    wait(
        "the cdg replica to serve k",
        Duration::from_secs(30),
        || {
            r = common::login_ready(cdg, "default", &token, |c| {
                c.cmd(&["GET", "k"]).ok() == Some(Value::Bulk(b"v".to_vec()))
            });
            r.is_some()
        },
    );
    let mut r = r.expect("logged in on cdg");
    assert_eq!(common::info_field(&mut r, "replication", "role"), "slave");
    let local = |r: &mut RespConn| -> u64 {
        common::info_field(r, "routing", "routed_local_reads")
            .parse()
            .expect("a count")
    };
    let before = local(&mut r);
    assert_eq!(r.cmd(&["GET", "k"]).ok(), Some(Value::Bulk(b"v".to_vec())));
    assert_eq!(local(&mut r), before + 1, "the read was answered on cdg");
    // Plans: a new database is on `payg` (1 GiB on each node); PATCH
    // moves it to `pro` (10 GiB), which the nodes apply live; a plan that
    // does not exist is 422 naming the field.
    let maxmemory = |c: &mut RespConn| common::info_field(c, "memory", "maxmemory");
    assert_eq!(maxmemory(&mut c), (1u64 << 30).to_string());
    let patch_plan =
        |plan: &str, nonce: &str| patch("ext_1", serde_json::json!({ "plan": plan }), nonce);
    let (code, err) = patch_plan("gold", "nonce-p2");
    assert_eq!((code, err["field"].as_str()), (422, Some("plan")), "{err}");
    let (code, changed) = patch_plan("pro", "nonce-p3");
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["plan"], "pro", "{changed}");
    assert_eq!(
        changed["read_regions"],
        serde_json::json!(["cdg"]),
        "{changed}"
    );
    wait(
        "the nodes to apply pro's limits",
        Duration::from_secs(20),
        || {
            maxmemory(&mut c) == (10u64 << 30).to_string()
                && maxmemory(&mut r) == (10u64 << 30).to_string()
        },
    );
    // The read region dropped again: the cdg node's replica goes (the
    // cluster places no copy there); a region named twice is refused.
    let (code, err) = patch(
        "ext_1",
        serde_json::json!({ "read_regions": ["cdg", "cdg"] }),
        "nonce-p4",
    );
    assert_eq!(
        (code, err["field"].as_str()),
        (422, Some("read_regions")),
        "{err}"
    );
    let (code, changed) = patch(
        "ext_1",
        serde_json::json!({ "read_regions": [] }),
        "nonce-p5",
    );
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["read_regions"], serde_json::json!([]), "{changed}");
    // (ext_1 is the first database this world's sidecar provisions.)
    let tenant = 1;
    wait("the cdg replica to go", Duration::from_secs(30), || {
        w.cluster_view("n1").is_some_and(|v| {
            v["tenants"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["id"] == tenant
                        && t["replicas"]
                            .as_array()
                            .is_some_and(|rs| rs.iter().all(|r| r["region"] != "cdg"))
                })
            })
        })
    });
    drop(r);

    // The same request again is a replay; a retry (new nonce) gets the
    // same database.
    let (code, _) = post(&body, SECRET);
    assert_eq!(code, 401, "a replayed nonce");
    let (code, again) = post(&provision_body("ext_1", "iad", "nonce-2"), SECRET);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["config"]["REDIS_URL"], url.as_str());

    // Four provisioning requests for one new id at once: one database.
    let racers: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                post(
                    &provision_body("ext_c", "iad", &format!("nonce-c{i}")),
                    SECRET,
                )
            })
        })
        .collect();
    let urls: Vec<String> = racers
        .into_iter()
        .map(|h| {
            let (code, a) = h.join().expect("a racer");
            assert_eq!(code, 200, "{a}");
            a["config"]["REDIS_URL"]
                .as_str()
                .expect("REDIS_URL")
                .to_string()
        })
        .collect();
    assert!(urls.iter().all(|u| *u == urls[0]), "{urls:?}");
    assert_ne!(urls[0], url, "another database than ext_1's");

    // Refusals.
    let (code, _) = post(&provision_body("ext_2", "iad", "nonce-3"), "not-the-secret");
    assert_eq!(code, 401, "wrong secret");
    let good = provision_body("ext_2", "iad", "nonce-4");
    let sig = anykv_ops::sign::sign(SECRET.as_bytes(), good.as_bytes());
    let (code, _) = call("POST", "/extensions", &sig, &good.replace("Shop", "Shoq"));
    assert_eq!(code, 401, "a tampered body");
    let (code, err) = post(&provision_body("ext_2", "xyz", "nonce-5"), SECRET);
    assert_eq!(
        (code, err["field"].as_str()),
        (422, Some("primary_region")),
        "{err}"
    );

    // Fly's machine events are taken (signed like the rest) and logged.
    let (event, sig) = signed_body(
        "/extensions/events",
        serde_json::json!({ "action": "machine.started", "app": "customer-app" }),
        "nonce-e1",
    );
    let (code, _) = call("POST", "/extensions/events", &sig, &event);
    assert_eq!(code, 200, "a signed event");
    let (code, _) = call("POST", "/extensions/events", &sig, &event);
    assert_eq!(code, 401, "a replayed event");

    // A read region with no node up: the database is `provisioning`
    // (GET says so) until the region's node takes it; then Fly hears
    // `resource.updated` with status `ready`, and that node serves it.
    w.signal("n4", "-KILL").expect("stop the syd node");
    w.wait_members(3, Duration::from_secs(30))
        .expect("the others see the syd node down");
    let (code, a) = post(
        &provision_body_with("ext_s", "iad", &["syd"], "nonce-s1"),
        SECRET,
    );
    assert_eq!(
        (code, a["status"].as_str()),
        (200, Some("provisioning")),
        "{a}"
    );
    let (code, shown) = signed_query("GET", "ext_s", "nonce-s2");
    assert_eq!(
        (code, shown["status"].as_str()),
        (200, Some("provisioning")),
        "{shown}"
    );
    let s_token = token_of(a["config"]["REDIS_URL"].as_str().expect("REDIS_URL"));
    w.launch("n4").expect("the syd node starts again");
    let ready = fly.expect("resource.updated", "ext_s");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["read_regions"], serde_json::json!(["syd"]), "{ready}");
    let syd = w.node("n4").expect("the syd node").resp;
    let mut s = common::login_ready(syd, "default", &s_token, |_| true).expect("login on syd");
    assert_eq!(common::info_field(&mut s, "replication", "role"), "slave");
    let (code, shown) = signed_query("GET", "ext_s", "nonce-s3");
    assert_eq!(
        (code, shown["status"].as_str()),
        (200, Some("ready")),
        "{shown}"
    );

    // Status, then deletion: the token stops working on the nodes.
    let (code, shown) = signed_query("GET", "ext_1", "nonce-6");
    assert_eq!(code, 200, "{shown}");
    assert_eq!(shown["status"], "ready");
    assert_eq!(shown["plan"], "pro");
    // Fly's webhook endpoint is down from here until after the restart:
    // the deletion's webhook waits in the outbox, retried, and survives
    // the restart.
    fly.accept.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut open =
        common::login_ready(resp, "default", &token, |_| true).expect("a connection before");
    assert_eq!(
        open.cmd(&["PING"]).ok(),
        Some(Value::Simple(b"PONG".to_vec()))
    );
    let (code, gone) = signed_query("DELETE", "ext_1", "nonce-7");
    assert_eq!(code, 200, "{gone}");
    // At once: the admin API answered once every node holding it applied
    // the deletion.
    let mut fresh = RespConn::connect_addr(resp).expect("connect");
    let refused = fresh.cmd(&["AUTH", "default", &token]);
    assert!(matches!(refused, Ok(Value::Error(_))), "{refused:?}");
    // A connection already open is closed too (within its tenant's next
    // check of the catalog, a second).
    wait("the open connection closed", Duration::from_secs(5), || {
        !matches!(open.cmd(&["PING"]), Ok(Value::Simple(_)))
    });
    let (code, _) = post(&provision_body("ext_1", "iad", "nonce-8"), SECRET);
    assert_eq!(code, 409, "a deleted id is not provisioned again");

    // A restart keeps the sidecar's state.
    wait("a refused webhook attempt", Duration::from_secs(20), || {
        fly.refused.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    drop(sidecar);
    fly.accept.store(true, std::sync::atomic::Ordering::SeqCst);
    let sidecar = start_sidecar(&w, &data, resp);
    let deleted = fly.expect("resource.deleted", "ext_1");
    assert_eq!(deleted["status"], "deleted", "{deleted}");
    let (code, shown) = signed_query("GET", "ext_1", "nonce-9");
    assert_eq!(
        (code, shown["status"].as_str()),
        (200, Some("deleted")),
        "{shown}"
    );
    let (code, _) = signed_query("GET", "ext_1", "nonce-7");
    assert_eq!(code, 401, "a nonce accepted before the restart");

    // Online backups on a schedule, and a restore into an empty data
    // directory: the same databases and nonces.
    drop(sidecar);
    let backups = spec.dir.join("sidecar-backups");
    let sidecar = start_sidecar_with(
        &w,
        &data,
        resp,
        &[
            "--backup-dir".as_ref(),
            backups.as_os_str(),
            "--backup-interval-secs".as_ref(),
            "1".as_ref(),
        ],
    );
    let mut file = None;
    wait("a backup", Duration::from_secs(20), || {
        file = anykv_ops::backup::list(&backups)
            .ok()
            .and_then(|l| l.last().cloned());
        file.is_some()
    });
    drop(sidecar);
    let file = file.expect("a backup file");
    let restored = spec.dir.join("sidecar-restored");
    let sidecar = start_sidecar_with(
        &w,
        &restored,
        resp,
        &["--restore-from".as_ref(), file.as_os_str()],
    );
    let (code, shown) = signed_query("GET", "ext_1", "nonce-10");
    assert_eq!(
        (code, shown["status"].as_str()),
        (200, Some("deleted")),
        "{shown}"
    );
    let (code, _) = signed_query("GET", "ext_1", "nonce-9");
    assert_eq!(code, 401, "a nonce accepted before the backup");
    drop(sidecar);
    // Never over a database that is there: the sidecar does not start.
    let out = sidecar_command(&w, resp)
        .arg("--data")
        .arg(&restored)
        .arg("--restore-from")
        .arg(&file)
        .output()
        .expect("anykv sidecar runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("move it aside"),
        "{err}"
    );
    // Mounted under --base-path: the API answers there, signed for the
    // URL with the base path, and nowhere else.
    let sidecar = start_sidecar_with(
        &w,
        &restored,
        resp,
        &["--base-path".as_ref(), "/fly".as_ref()],
    );
    let signed_at = |path: &str, nonce: &str| {
        let url = url_encode(&format!("http://{LISTEN}/fly/extensions/ext_1"));
        let query = format!("url={url}&nonce={nonce}&timestamp={}", now());
        let sig = anykv_ops::sign::sign(SECRET.as_bytes(), query.as_bytes());
        call("GET", &format!("{path}?{query}"), &sig, "")
    };
    let (code, shown) = signed_at("/fly/extensions/ext_1", "nonce-11");
    assert_eq!(
        (code, shown["status"].as_str()),
        (200, Some("deleted")),
        "{shown}"
    );
    let (code, _) = signed_at("/extensions/ext_1", "nonce-12");
    assert_eq!(code, 404, "the API is under the base path only");
    drop(sidecar);
    drop(w);
    let _ = std::fs::remove_dir_all(&spec.dir);
}
