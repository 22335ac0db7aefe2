//! Tenants on one server: `AUTH` with a database's token moves the
//! connection to that database (on the executor that owns it), databases
//! never see each other's keys, messages or flushes, the server's own
//! commands are refused to them, each has its own `maxmemory` and eviction
//! policy (the memory its own work holds, see server/src/alloc.rs), and
//! each keeps its own files under `dir/tenants/<id>/`.
//!
//! Every test runs the real `anykv` binary with a tenants file, two
//! executors (so logins cross threads) and an operator password.

mod common;

use std::time::Duration;

use common::{anykv_bin, poll_every, start_anykv_with, RespConn, Scratch, ServerProcess, Value};

const SHOP_TOKEN: &str = "shop-token-5a1b9c2d7e";
const BLOG_TOKEN: &str = "blog-token-8f3e6d4c1a";
const BLOG_OLD_TOKEN: &str = "blog-token-old-00000000";
const CACHE_TOKEN: &str = "cache-token-3c4d5e6f7a";
const ADMIN_PW: &str = "operator-pw";

/// A scratch directory (removed unless the test failed).
/// shop: 4 MB, allkeys-lru. blog: 2 MB, noeviction, two valid tokens (one
/// given as its SHA-256, as the control plane hands them out). cache: no
/// plan limit (the server's), allkeys-lfu.
fn catalog() -> String {
    let old = sha256_hex(BLOG_OLD_TOKEN.as_bytes());
    format!(
        "# test catalog\n\
         tenant shop id=1 token={SHOP_TOKEN} maxmemory=4mb maxmemory-policy=allkeys-lru\n\
         tenant blog id=2 token={BLOG_TOKEN} token-sha256={old} maxmemory=2mb\n\
         tenant cache id=3 token={CACHE_TOKEN} maxmemory-policy=allkeys-lfu\n"
    )
}

fn sha256_hex(b: &[u8]) -> String {
    anykv_server::catalog::token_digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn start(dir: &Scratch, extra: &[&str]) -> ServerProcess {
    start_with(dir, &catalog(), extra)
}

fn start_with(dir: &Scratch, catalog: &str, extra: &[&str]) -> ServerProcess {
    let file = dir.path("tenants.conf");
    std::fs::write(&file, catalog).expect("write catalog");
    let data = dir.path("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut args = vec![
        "--tenants-file",
        &file,
        "--dir",
        &data,
        "--executors",
        "2",
        "--requirepass",
        ADMIN_PW,
    ];
    args.extend_from_slice(extra);
    start_anykv_with(&anykv_bin(), &args)
}

fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

fn ok(c: &mut RespConn, args: &[&str]) {
    match call(c, args) {
        Value::Simple(s) if s == b"OK" => {}
        other => panic!("{args:?}: expected OK, got {other:?}"),
    }
}

fn int(c: &mut RespConn, args: &[&str]) -> i64 {
    match call(c, args) {
        Value::Int(n) => n,
        other => panic!("{args:?}: expected an integer, got {other:?}"),
    }
}

fn err(c: &mut RespConn, args: &[&str]) -> String {
    match call(c, args) {
        Value::Error(e) => String::from_utf8_lossy(&e).into_owned(),
        other => panic!("{args:?}: expected an error, got {other:?}"),
    }
}

fn bulk(c: &mut RespConn, args: &[&str]) -> Option<Vec<u8>> {
    match call(c, args) {
        Value::Bulk(b) => Some(b),
        Value::Nil => None,
        other => panic!("{args:?}: expected a bulk string, got {other:?}"),
    }
}

fn info_field(c: &mut RespConn, section: &str, field: &str) -> u64 {
    let text = bulk(c, &["INFO", section]).expect("INFO");
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

fn login(srv: &ServerProcess, user: &str, token: &str) -> RespConn {
    let mut c = srv.connect();
    ok(&mut c, &["AUTH", user, token]);
    c
}

#[test]
fn auth_selects_the_database_and_keeps_databases_apart() {
    let dir = Scratch::new("isolation");
    let srv = start(&dir, &[]);

    // Nobody gets in without a token; wrong tokens and wrong names fail.
    let mut anon = srv.connect();
    assert!(err(&mut anon, &["GET", "k"]).starts_with("NOAUTH"));
    assert!(err(&mut anon, &["AUTH", "wrong-token-000000"]).starts_with("WRONGPASS"));
    assert!(err(&mut anon, &["AUTH", "blog", SHOP_TOKEN]).starts_with("WRONGPASS"));
    assert!(err(&mut anon, &["AUTH", "default", "wrong"]).starts_with("WRONGPASS"));

    // `AUTH <token>`, `AUTH default <token>` and `AUTH <db> <token>`.
    let mut shop = srv.connect();
    ok(&mut shop, &["AUTH", SHOP_TOKEN]);
    ok(&mut shop, &["SET", "k", "shop"]);
    ok(&mut shop, &["SELECT", "3"]);
    ok(&mut shop, &["SET", "k3", "shop3"]);
    let mut blog = login(&srv, "default", BLOG_TOKEN);
    assert_eq!(bulk(&mut blog, &["GET", "k"]), None, "blog sees shop's key");
    ok(&mut blog, &["SET", "k", "blog"]);
    assert_eq!(int(&mut blog, &["DBSIZE"]), 1);
    let mut blog_old = login(&srv, "blog", BLOG_OLD_TOKEN);
    assert_eq!(
        bulk(&mut blog_old, &["GET", "k"]).as_deref(),
        Some(&b"blog"[..])
    );

    // Publishing in one database reaches only its own subscribers.
    let mut sub = login(&srv, "shop", SHOP_TOKEN);
    match call(&mut sub, &["SUBSCRIBE", "news"]) {
        Value::Array(_) => {}
        other => panic!("SUBSCRIBE: {other:?}"),
    }
    assert_eq!(int(&mut blog, &["PUBLISH", "news", "from-blog"]), 0);
    ok(&mut shop, &["SELECT", "0"]);
    assert_eq!(int(&mut shop, &["PUBLISH", "news", "from-shop"]), 1);
    match sub.read_reply().expect("message") {
        Value::Array(v) => assert_eq!(v.last(), Some(&Value::Bulk(b"from-shop".to_vec()))),
        other => panic!("message: {other:?}"),
    }

    // FLUSHALL, KEYS and SCAN stay inside the caller's database.
    ok(&mut blog, &["FLUSHALL"]);
    assert_eq!(
        bulk(&mut shop, &["GET", "k"]).as_deref(),
        Some(&b"shop"[..])
    );
    match call(&mut blog, &["KEYS", "*"]) {
        Value::Array(v) => assert!(v.is_empty(), "{v:?}"),
        other => panic!("KEYS: {other:?}"),
    }

    // The operator's default tenant is a third keyspace.
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);
    assert_eq!(bulk(&mut admin, &["GET", "k"]), None);
    assert_eq!(int(&mut admin, &["DBSIZE"]), 0);

    // AUTH again on a database connection moves it to the other one.
    ok(&mut shop, &["AUTH", "blog", BLOG_TOKEN]);
    assert_eq!(bulk(&mut shop, &["GET", "k"]), None);
    ok(&mut shop, &["AUTH", SHOP_TOKEN]);
    assert_eq!(
        bulk(&mut shop, &["GET", "k"]).as_deref(),
        Some(&b"shop"[..])
    );
}

/// Each database has its own script cache and function libraries: a
/// script loaded by one is unknown to another, and a flush empties only
/// the caller's.
#[test]
fn each_database_has_its_own_scripts() {
    let dir = Scratch::new("scripts");
    let srv = start(&dir, &[]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let mut blog = login(&srv, "default", BLOG_TOKEN);
    let one = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
    let two = "7f923f79fe76194c868d7e1d0820de36700eb649";
    assert_eq!(
        bulk(&mut shop, &["SCRIPT", "LOAD", "return 1"]).as_deref(),
        Some(one.as_bytes())
    );
    assert_eq!(
        bulk(&mut blog, &["SCRIPT", "LOAD", "return 2"]).as_deref(),
        Some(two.as_bytes())
    );
    let exists = |c: &mut RespConn| call(c, &["SCRIPT", "EXISTS", one, two]);
    let pair = |a: i64, b: i64| Value::Array(vec![Value::Int(a), Value::Int(b)]);
    assert_eq!(exists(&mut shop), pair(1, 0));
    assert_eq!(exists(&mut blog), pair(0, 1));
    ok(&mut blog, &["SCRIPT", "FLUSH"]);
    assert_eq!(exists(&mut blog), pair(0, 0));
    assert_eq!(
        exists(&mut shop),
        pair(1, 0),
        "shop's script survives blog's flush"
    );
    // So are function libraries: blog's is not shop's.
    let lib = "#!lua name=lib\nredis.register_function('f', function() return 'blog' end)";
    assert_eq!(
        bulk(&mut blog, &["FUNCTION", "LOAD", lib]).as_deref(),
        Some(&b"lib"[..])
    );
    assert_eq!(
        err(&mut shop, &["FCALL", "f", "0"]),
        "ERR Function not found"
    );
    assert_eq!(
        bulk(&mut blog, &["FCALL", "f", "0"]).as_deref(),
        Some(&b"blog"[..])
    );
    // A script's own memory counts against its database's plan (shop: 4
    // MB): it fails, and the next script runs.
    let big = "local t = {} for i = 1, 100 do t[i] = string.rep('x', 1000000) .. i end return #t";
    let e = err(&mut shop, &["EVAL", big, "0"]);
    assert!(e.starts_with("ERR not enough memory script: "), "{e}");
    assert_eq!(
        int(&mut shop, &["EVAL", "return #string.rep('x', 1000)", "0"]),
        1000
    );
}

/// A runaway script of one database does not stall another database on
/// the same executor (one executor here): the script is suspended every
/// `script-time-slice-us` (1 ms) and the other database is served in
/// between, while the script's own database answers -BUSY past the
/// threshold, until SCRIPT KILL stops it. The bound: a PING of the other
/// database waits at most one slice, plus scheduling; asserted under
/// 100 ms (CI machines are noisy), the worst seen is printed.
#[test]
fn a_runaway_script_does_not_stall_other_databases() {
    let dir = Scratch::new("runaway");
    let srv = start(&dir, &["--executors", "1", "--busy-reply-threshold", "300"]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let mut shop2 = login(&srv, "shop", SHOP_TOKEN);
    let mut blog = login(&srv, "default", BLOG_TOKEN);
    assert_eq!(call(&mut blog, &["PING"]), Value::Simple(b"PONG".to_vec()));
    let sent = std::time::Instant::now();
    shop.send_all(&[vec!["EVAL", "while true do end", "0"]])
        .expect("send EVAL");
    // The other database's PINGs for a second, while the script runs.
    let mut worst = Duration::ZERO;
    let mut pings = 0;
    while sent.elapsed() < Duration::from_secs(1) {
        let t = std::time::Instant::now();
        assert_eq!(call(&mut blog, &["PING"]), Value::Simple(b"PONG".to_vec()));
        worst = worst.max(t.elapsed());
        pings += 1;
    }
    // The script was running all along: its own database is busy.
    let busy = call(&mut shop2, &["GET", "k"]);
    assert!(
        matches!(&busy, Value::Error(e) if e.starts_with(b"BUSY Redis is busy running a script.")),
        "{busy:?}"
    );
    assert_eq!(
        call(&mut shop2, &["SCRIPT", "KILL"]),
        Value::Simple(b"OK".to_vec())
    );
    let reply = shop.read_reply().expect("the script's reply");
    assert!(
        matches!(&reply, Value::Error(e) if e.starts_with(b"ERR Script killed by user with SCRIPT KILL...")),
        "{reply:?}"
    );
    eprintln!(
        "{pings} PINGs of the other database while the script ran; the slowest took {worst:?}"
    );
    assert!(pings > 100, "only {pings} PINGs were served in a second");
    assert!(
        worst < Duration::from_millis(100),
        "a PING of the other database waited {worst:?}"
    );
    // The database is free again.
    assert_eq!(
        call(&mut shop2, &["SET", "k", "v"]),
        Value::Simple(b"OK".to_vec())
    );
}

/// A script of one database that writes for a while (so SCRIPT KILL
/// cannot stop it: UNKILLABLE) runs to its end; the other database on the
/// executor is served meanwhile, and the script's database afterwards.
#[test]
fn an_unkillable_script_runs_to_its_end_beside_other_databases() {
    let dir = Scratch::new("unkillable");
    let srv = start(&dir, &["--executors", "1", "--busy-reply-threshold", "100"]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let mut shop2 = login(&srv, "shop", SHOP_TOKEN);
    let mut blog = login(&srv, "default", BLOG_TOKEN);
    // Writes, then spins on the clock for 800 ms.
    let script = "redis.call('INCR', 'runs') \
        local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 800000 \
        return redis.call('GET', 'runs')";
    shop.send_all(&[vec!["EVAL", script, "0"]])
        .expect("send EVAL");
    std::thread::sleep(Duration::from_millis(300));
    let kill = call(&mut shop2, &["SCRIPT", "KILL"]);
    assert!(
        matches!(&kill, Value::Error(e) if e.starts_with(b"UNKILLABLE Sorry the script already executed write commands")),
        "{kill:?}"
    );
    let t = std::time::Instant::now();
    assert_eq!(call(&mut blog, &["PING"]), Value::Simple(b"PONG".to_vec()));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "a PING of the other database waited {:?}",
        t.elapsed()
    );
    assert_eq!(
        shop.read_reply().expect("the script's reply"),
        Value::Bulk(b"1".to_vec())
    );
    assert_eq!(
        call(&mut shop2, &["GET", "runs"]),
        Value::Bulk(b"1".to_vec())
    );
}

#[test]
fn a_login_keeps_the_connection_and_its_pipelined_commands() {
    use std::io::{Read, Write};
    let dir = Scratch::new("pipeline");
    let srv = start(&dir, &[]);
    let mut seed = login(&srv, "shop", SHOP_TOKEN);
    ok(&mut seed, &["SET", "k", "v"]);

    // AUTH and the commands after it in one write: the rest of the input
    // travels with the connection to the database's executor.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "CLIENT SETNAME app\r\nAUTH shop {SHOP_TOKEN}\r\nGET k\r\nCLIENT GETNAME\r\nSELECT 5\r\nPING\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let want = b"-NOAUTH Authentication required.\r\n+OK\r\n$1\r\nv\r\n$-1\r\n+OK\r\n+PONG\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("replies");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));

    // HELLO 3 AUTH: the protocol, the name and the client id move along
    // (RESP3 replies: `%0` for an empty map).
    let mut c = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "HELLO 3 AUTH default {SHOP_TOKEN} SETNAME worker\r\nCLIENT ID\r\nHGETALL nope\r\nCLIENT GETNAME\r\nGET k\r\n"
    );
    c.write_all(req.as_bytes()).expect("write");
    let tail = "%0\r\n$6\r\nworker\r\n$1\r\nv\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with(tail) {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("%"), "HELLO 3 answers a map: {text:?}");
    let hello_id = text
        .split("$2\r\nid\r\n:")
        .nth(1)
        .and_then(|r| r.split("\r\n").next())
        .expect("id in HELLO");
    assert!(
        text.contains(&format!("\r\n:{hello_id}\r\n%0\r\n")),
        "CLIENT ID after the move is HELLO's id {hello_id}: {text:?}"
    );
}

#[test]
fn a_real_client_logs_in_with_its_url() {
    let dir = Scratch::new("url");
    let srv = start(&dir, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let url = format!("redis://default:{SHOP_TOKEN}@127.0.0.1:{}/", srv.port);
        let client = redis::Client::open(url).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let _: () = redis::cmd("SET")
            .arg("from-url")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("SET");
        let v: i64 = redis::cmd("INCR")
            .arg("from-url")
            .query_async(&mut c)
            .await
            .expect("INCR");
        assert_eq!(v, 2);
        let bad = format!("redis://default:not-a-token-0000@127.0.0.1:{}/", srv.port);
        let e = match redis::Client::open(bad)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
        {
            Ok(_) => panic!("a wrong token must not connect"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
    });
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    assert_eq!(
        bulk(&mut shop, &["GET", "from-url"]).as_deref(),
        Some(&b"2"[..])
    );
}

/// Each database has its own ACL users: made with ACL SETUSER inside it,
/// reached with `AUTH <db>.<user>` (or `AUTH <user>` on a connection in the
/// database), held to their rules, invisible to the operator and to other
/// databases, saved with ACL SAVE beside the database's data and back
/// after a restart. Its `default` user logs in with the tokens only.
#[test]
fn databases_have_their_own_acl_users() {
    let dir = Scratch::new("db-users");
    let srv = start(&dir, &[]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    ok(
        &mut shop,
        &[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~pub:*",
            "+@read",
            "+acl|whoami",
        ],
    );
    ok(&mut shop, &["SET", "pub:1", "hello"]);
    ok(&mut shop, &["SET", "secret", "x"]);
    match call(&mut shop, &["ACL", "USERS"]) {
        Value::Array(v) => assert_eq!(
            v,
            [
                Value::Bulk(b"default".to_vec()),
                Value::Bulk(b"reader".to_vec())
            ]
        ),
        other => panic!("ACL USERS: {other:?}"),
    }
    // The token user's passwords are the tokens.
    let e = err(&mut shop, &["ACL", "SETUSER", "default", ">pw"]);
    assert!(e.contains("logs in with the database's tokens"), "{e}");
    // From a fresh connection: `<db>.<user>`.
    let mut r = srv.connect();
    ok(&mut r, &["AUTH", "shop.reader", "reader-pw"]);
    assert_eq!(
        bulk(&mut r, &["ACL", "WHOAMI"]).as_deref(),
        Some(&b"reader"[..])
    );
    assert_eq!(
        bulk(&mut r, &["GET", "pub:1"]).as_deref(),
        Some(&b"hello"[..])
    );
    let e = err(&mut r, &["GET", "secret"]);
    assert!(
        e.starts_with("NOPERM this user has no permissions to access one of the keys"),
        "{e}"
    );
    let e = err(&mut r, &["SET", "pub:1", "x"]);
    assert!(
        e.starts_with("NOPERM this user has no permissions to run the 'set' command"),
        "{e}"
    );
    // On a connection in the database: the plain name.
    ok(&mut shop, &["AUTH", "reader", "reader-pw"]);
    assert_eq!(
        bulk(&mut shop, &["ACL", "WHOAMI"]).as_deref(),
        Some(&b"reader"[..])
    );
    ok(&mut shop, &["AUTH", SHOP_TOKEN]);
    // Wrong passwords are refused and logged in the database's ACL LOG.
    let mut w = srv.connect();
    assert!(err(&mut w, &["AUTH", "shop.reader", "nope"]).starts_with("WRONGPASS"));
    assert!(
        err(&mut w, &["AUTH", "blog.reader", "reader-pw"]).starts_with("WRONGPASS"),
        "another database's user"
    );
    match call(&mut shop, &["ACL", "LOG"]) {
        Value::Array(entries) => {
            let text = format!("{entries:?}");
            // The failed login to shop.reader is shop's to see.
            assert!(
                text.contains("\"auth\"") && text.contains("\"reader\""),
                "{text}"
            );
            assert!(
                text.contains("\"key\"") && text.contains("\"secret\""),
                "{text}"
            );
            assert!(
                text.contains("\"command\"") && text.contains("\"set\""),
                "{text}"
            );
        }
        other => panic!("ACL LOG: {other:?}"),
    }
    // Other databases and the operator do not see it.
    let mut blog = login(&srv, "blog", BLOG_TOKEN);
    match call(&mut blog, &["ACL", "USERS"]) {
        Value::Array(v) => assert_eq!(v, [Value::Bulk(b"default".to_vec())]),
        other => panic!("blog's ACL USERS: {other:?}"),
    }
    assert_eq!(call(&mut blog, &["ACL", "GETUSER", "reader"]), Value::Nil);
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);
    let list = format!("{:?}", call(&mut admin, &["ACL", "LIST"]));
    assert!(!list.contains("reader"), "the operator's users: {list}");
    // A database may restrict its own default user, or switch it off.
    ok(&mut blog, &["ACL", "SETUSER", "default", "-flushall"]);
    assert!(err(&mut blog, &["FLUSHALL"])
        .starts_with("NOPERM this user has no permissions to run the 'flushall' command"));
    ok(
        &mut blog,
        &["ACL", "SETUSER", "default", "resetkeys", "~post:*"],
    );
    assert!(err(&mut blog, &["GET", "secret"]).starts_with("NOPERM"));
    ok(&mut blog, &["ACL", "SETUSER", "default", "off"]);
    let mut b2 = srv.connect();
    assert!(err(&mut b2, &["AUTH", "blog", BLOG_TOKEN]).starts_with("WRONGPASS"));
    // Saved narrowed and off, it stays so after a restart (below).
    ok(&mut blog, &["ACL", "SAVE"]);
    // Saved beside the data; back after a restart.
    ok(&mut shop, &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(dir.path("data/tenants/1/users.acl")).expect("users.acl");
    assert!(saved.contains("user reader on #"), "{saved}");
    assert!(
        !saved.contains("default on #"),
        "tokens are not written: {saved}"
    );
    drop((shop, r, w, blog, b2, admin));
    drop(srv);
    let srv = start(&dir, &[]);
    let mut r = srv.connect();
    ok(&mut r, &["AUTH", "shop.reader", "reader-pw"]);
    assert_eq!(
        bulk(&mut r, &["ACL", "WHOAMI"]).as_deref(),
        Some(&b"reader"[..])
    );
    let mut b3 = srv.connect();
    assert!(
        err(&mut b3, &["AUTH", "blog", BLOG_TOKEN]).starts_with("WRONGPASS"),
        "blog's default user came back on after the restart"
    );
    // DELUSER closes the user's connections.
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    assert_eq!(int(&mut shop, &["ACL", "DELUSER", "reader"]), 1);
    assert!(
        r.cmd(&["PING"]).is_err(),
        "a deleted user's connection stays open"
    );
}

#[test]
fn databases_cannot_run_the_servers_commands() {
    let dir = Scratch::new("denied");
    let srv = start(&dir, &["--enable-debug-command", "yes"]);
    let mut c = login(&srv, "shop", SHOP_TOKEN);
    for args in [
        &["CONFIG", "SET", "maxmemory", "0"][..],
        &["CONFIG", "REWRITE"],
        &["DEBUG", "SLEEP", "0"],
        &["SHUTDOWN", "NOSAVE"],
        &["SAVE"],
        &["BGSAVE"],
        &["BGREWRITEAOF"],
        &["PFSELFTEST"],
        &["MIGRATE", "127.0.0.1", "6379", "k", "0", "100"],
    ] {
        let e = err(&mut c, args);
        assert!(
            e.starts_with("NOPERM this user has no permissions to run the '"),
            "{args:?}: {e}"
        );
    }
    // Reading settings and the database's own view are allowed, but not
    // the operator's secrets or paths.
    match call(&mut c, &["CONFIG", "GET", "maxmemory-policy"]) {
        Value::Array(v) => assert_eq!(
            v,
            [
                Value::Bulk(b"maxmemory-policy".to_vec()),
                Value::Bulk(b"allkeys-lru".to_vec())
            ]
        ),
        other => panic!("CONFIG GET: {other:?}"),
    }
    match call(&mut c, &["CONFIG", "GET", "*"]) {
        Value::Array(v) => {
            let names: Vec<&Value> = v.iter().step_by(2).collect();
            assert!(names.len() > 50, "{} settings", names.len());
            for secret in ["requirepass", "dir", "tenants-file", "masterauth"] {
                assert!(
                    !names.contains(&&Value::Bulk(secret.as_bytes().to_vec())),
                    "{secret} shown"
                );
            }
        }
        other => panic!("CONFIG GET *: {other:?}"),
    }
    // Exact names in any case, as clients may spell them.
    for name in [
        "REQUIREPASS",
        "requirepass",
        "Dir",
        "TENANTS-FILE",
        "masterAuth",
    ] {
        assert_eq!(
            call(&mut c, &["CONFIG", "GET", name]),
            Value::Array(vec![]),
            "{name}"
        );
    }
    match call(&mut c, &["CONFIG", "GET", "MAXMEMORY"]) {
        Value::Array(v) => assert_eq!(v[1], Value::Bulk(b"4194304".to_vec())),
        other => panic!("CONFIG GET MAXMEMORY: {other:?}"),
    }
    assert_eq!(info_field(&mut c, "memory", "maxmemory"), 4 * 1024 * 1024);
    assert!(bulk(&mut c, &["INFO", "memory"])
        .map(|b| String::from_utf8_lossy(&b).contains("maxmemory_policy:allkeys-lru"))
        .unwrap_or(false));
    // The server's users stay invisible; the plan's policy drives OBJECT.
    for user in ["default", "nobody", "operator"] {
        let r = call(&mut c, &["CLIENT", "KILL", "USER", user]);
        match (user, r) {
            ("default", Value::Int(_)) => {}
            (_, Value::Error(e)) => {
                assert_eq!(e, format!("ERR No such user '{user}'").into_bytes())
            }
            (u, other) => panic!("CLIENT KILL USER {u}: {other:?}"),
        }
    }
    ok(&mut c, &["SET", "obj", "v"]);
    assert!(
        err(&mut c, &["OBJECT", "FREQ", "obj"]).contains("LFU maxmemory policy is not selected")
    );
    assert!(int(&mut c, &["OBJECT", "IDLETIME", "obj"]) >= 0);
    // cache's plan is allkeys-lfu (the server's policy is noeviction).
    let mut cache = login(&srv, "cache", CACHE_TOKEN);
    ok(&mut cache, &["SET", "obj", "v"]);
    assert!(int(&mut cache, &["OBJECT", "FREQ", "obj"]) >= 0);
    assert!(err(&mut cache, &["OBJECT", "IDLETIME", "obj"])
        .contains("LFU maxmemory policy is selected"));
    // The operator may.
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);
    ok(&mut admin, &["CONFIG", "SET", "maxmemory-samples", "7"]);
    ok(&mut admin, &["DEBUG", "SLEEP", "0"]);
    // Server settings the operator changes reach every database.
    ok(&mut admin, &["CONFIG", "SET", "repl-backlog-size", "32768"]);
    poll_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "shop's backlog resized",
        || (info_field(&mut c, "replication", "repl_backlog_size") == 32768).then_some(()),
    );
}

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Writes `n` 10 KB values; returns how many were refused (OOM).
fn fill(c: &mut RespConn, prefix: &str, n: usize) -> usize {
    let v = "x".repeat(10 * 1024);
    let mut refused = 0;
    for i in 0..n {
        match call(c, &["SET", &format!("{prefix}:{i}"), &v]) {
            Value::Simple(_) => {}
            Value::Error(e) if e == OOM.as_bytes() => refused += 1,
            other => panic!("SET: {other:?}"),
        }
    }
    refused
}

#[test]
fn each_database_has_its_own_memory_limit() {
    let dir = Scratch::new("maxmemory");
    let srv = start(&dir, &[]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let mut blog = login(&srv, "blog", BLOG_TOKEN);
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);

    // 10 MB into shop (4 MB, allkeys-lru): every write succeeds, old keys
    // go, and the database stays near its limit.
    assert_eq!(fill(&mut shop, "s", 1000), 0);
    let kept = int(&mut shop, &["DBSIZE"]);
    assert!(
        kept > 100 && kept < 450,
        "shop kept {kept} keys of 10 KB under 4 MB"
    );
    assert!(info_field(&mut shop, "stats", "evicted_keys") >= 1000 - kept as u64);
    // (The replication backlog, up to 1 MB of recent writes, is the
    // service's: it shows in used_memory but does not count, as in Redis.)
    let used = counted(&mut shop);
    assert!(used <= 4 * 1024 * 1024 + 64 * 1024, "shop uses {used}");

    // 10 MB into blog (2 MB, noeviction): writes are refused once it is
    // full, nothing is evicted, and shop is untouched.
    let refused = fill(&mut blog, "b", 1000);
    let held = int(&mut blog, &["DBSIZE"]);
    assert!(
        refused > 700 && held > 50,
        "blog refused {refused}, holds {held}"
    );
    assert_eq!(held as usize + refused, 1000);
    assert_eq!(info_field(&mut blog, "stats", "evicted_keys"), 0);
    assert_eq!(int(&mut shop, &["DBSIZE"]), kept);
    // Reads and deletes still work while full.
    assert!(bulk(&mut blog, &["GET", "b:0"]).is_some());

    // The operator's tenant has no limit of its own: 12 MB go in.
    assert_eq!(fill(&mut admin, "a", 1200), 0);
    assert_eq!(int(&mut admin, &["DBSIZE"]), 1200);

    // Freed memory is given back to the database that held it: after a
    // flush blog takes writes again, and fill/flush cycles come back to
    // the same figure (the accounting does not drift with use).
    let full = counted(&mut blog);
    ok(&mut blog, &["FLUSHALL"]);
    let empty = counted(&mut blog);
    assert!(
        empty < full / 3,
        "blog counted {full} full, {empty} after FLUSHALL"
    );
    for round in 0..3 {
        assert_eq!(fill(&mut blog, "c", 100), 0, "round {round}");
        ok(&mut blog, &["FLUSHALL"]);
        let again = counted(&mut blog);
        assert!(
            again <= empty + 16 * 1024,
            "round {round}: {again} after FLUSHALL, {empty} the first time"
        );
    }
}

/// Memory counted for a database: used_memory without the replication
/// backlog (the service's, not counted against the limit).
fn counted(c: &mut RespConn) -> u64 {
    info_field(c, "memory", "used_memory") - info_field(c, "memory", "repl_backlog_bytes")
}

#[test]
fn saves_and_restarts_keep_the_accounting() {
    let dir = Scratch::new("accounting");
    // Background saves every second after a change, and an fsync per write.
    let args = [
        "--save",
        "1 1",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let saved = |c: &mut RespConn| {
        poll_every(
            Duration::from_millis(50),
            Duration::from_secs(30),
            "a background save",
            || {
                (info_field(c, "persistence", "rdb_changes_since_last_save") == 0
                    && info_field(c, "persistence", "rdb_bgsave_in_progress") == 0)
                    .then_some(())
            },
        )
    };
    let full;
    {
        let srv = start(&dir, &args);
        let mut blog = login(&srv, "blog", BLOG_TOKEN);
        assert_eq!(fill(&mut blog, "b", 100), 0, "1 MB fits in blog's 2 MB");
        saved(&mut blog);
        full = counted(&mut blog);
        assert!(
            full > 1000 * 1024,
            "100 values of 10 KB are counted: {full}"
        );
        // More saves and fsync rounds must not add to the count: the
        // snapshot's blocks and the log's messages are freed in blog's
        // account by the helper threads.
        for round in 0..3 {
            for i in 0..200 {
                assert_eq!(int(&mut blog, &["INCR", &format!("n{i}")]), round + 1);
            }
            saved(&mut blog);
        }
        let after = counted(&mut blog);
        assert!(
            after < full + 128 * 1024,
            "{full} before saves, {after} after"
        );
    }
    // After a restart (SIGKILL, then the log and snapshot are loaded) the
    // data counts again, so the limit still holds.
    let srv = start(&dir, &args);
    let mut blog = login(&srv, "blog", BLOG_TOKEN);
    assert_eq!(int(&mut blog, &["DBSIZE"]), 300);
    let loaded = counted(&mut blog);
    assert!(
        loaded > full * 3 / 4,
        "loaded data counted: {loaded} (was {full})"
    );
    let more = 150 - fill(&mut blog, "m", 150);
    assert!(more < 120, "{more} more 10 KB values fit after the restart");
}

#[test]
fn each_database_keeps_its_own_files() {
    let dir = Scratch::new("files");
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    {
        let srv = start(&dir, &aof);
        let mut shop = login(&srv, "shop", SHOP_TOKEN);
        let mut blog = login(&srv, "blog", BLOG_TOKEN);
        let mut admin = srv.connect();
        ok(&mut admin, &["AUTH", ADMIN_PW]);
        ok(&mut shop, &["SET", "who", "shop"]);
        assert_eq!(int(&mut shop, &["RPUSH", "l", "a", "b"]), 2);
        ok(&mut blog, &["SET", "who", "blog"]);
        ok(&mut admin, &["SET", "who", "admin"]);
        // Killed with SIGKILL when dropped: only the logs bring data back.
    }
    assert!(
        std::path::Path::new(&dir.path("data/tenants/1/appendonlydir")).is_dir(),
        "shop's log lives under tenants/1"
    );
    let srv = start(&dir, &aof);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let mut blog = login(&srv, "blog", BLOG_TOKEN);
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);
    assert_eq!(
        bulk(&mut shop, &["GET", "who"]).as_deref(),
        Some(&b"shop"[..])
    );
    assert_eq!(int(&mut shop, &["LLEN", "l"]), 2);
    assert_eq!(
        bulk(&mut blog, &["GET", "who"]).as_deref(),
        Some(&b"blog"[..])
    );
    assert_eq!(int(&mut blog, &["EXISTS", "l"]), 0);
    assert_eq!(
        bulk(&mut admin, &["GET", "who"]).as_deref(),
        Some(&b"admin"[..])
    );
}

#[test]
fn a_bad_tenants_file_stops_the_start() {
    let dir = Scratch::new("badfile");
    let file = dir.path("tenants.conf");
    std::fs::write(&file, "tenant shop id=1 token=short\n").expect("write");
    let out = std::process::Command::new(anykv_bin())
        .args([
            "server",
            "--port",
            "0",
            "--save",
            "",
            "--tenants-file",
            &file,
        ])
        .output()
        .expect("run anykv");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line 1") && text.contains("at least 16"),
        "{text}"
    );
}

/// Databases come and go while the server runs: SIGHUP re-reads the
/// tenants file; a new database is served at once (with its plan), a
/// changed plan applies to the running database, a removed database closes
/// its clients and refuses its token, and one added back finds its data
/// (saved when it was removed). The other databases never notice.
#[test]
fn databases_are_added_changed_and_removed_while_serving() {
    const NEWS_TOKEN: &str = "news-token-77aa88bb99";
    let dir = Scratch::new("runtime");
    // Save points set: a removed database is saved on its way out.
    let srv = start(&dir, &["--save", "3600 1"]);
    let file = dir.path("tenants.conf");
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    ok(&mut shop, &["SET", "mine", "1"]);
    let hup = |what: &str| {
        let st = std::process::Command::new("kill")
            .args(["-HUP", &srv.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(st.success(), "SIGHUP ({what})");
    };
    let try_login = |token: &str| {
        let mut c = srv.connect();
        match call(&mut c, &["AUTH", token]) {
            Value::Simple(s) if s == b"OK" => Some(c),
            _ => None,
        }
    };
    assert!(try_login(NEWS_TOKEN).is_none(), "news is not there yet");

    // Added with a 1 MB noeviction plan.
    let with_news = |mem: &str| {
        format!(
            "{}tenant news id=4 token={NEWS_TOKEN} maxmemory={mem}\n",
            catalog()
        )
    };
    std::fs::write(&file, with_news("1mb")).expect("write catalog");
    hup("add");
    let mut news = poll_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "news served after SIGHUP",
        || try_login(NEWS_TOKEN),
    );
    ok(&mut news, &["SET", "story", "1"]);
    assert!(
        bulk(&mut news, &["GET", "mine"]).is_none(),
        "news sees shop's key"
    );
    let refused = fill(&mut news, "n", 300);
    assert!(
        refused > 100,
        "1 MB plan: {refused} of 300 10 KB writes refused"
    );
    ok(&mut news, &["FLUSHALL"]);
    ok(&mut news, &["SET", "story", "1"]);

    // The plan grows to 8 MB: the same writes now fit.
    std::fs::write(&file, with_news("8mb")).expect("write catalog");
    hup("change");
    poll_every(
        Duration::from_millis(50),
        Duration::from_secs(10),
        "8 MB plan applied",
        || {
            let refused = fill(&mut news, "m", 300);
            for i in 0..300 {
                call(&mut news, &["DEL", &format!("m:{i}")]);
            }
            (refused == 0).then_some(())
        },
    );

    // Removed: its client is closed and its token refused; shop is fine.
    std::fs::write(&file, catalog()).expect("write catalog");
    hup("remove");
    poll_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "news's client closed",
        || news.cmd(&["PING"]).is_err().then_some(()),
    );
    assert!(try_login(NEWS_TOKEN).is_none(), "removed database's token");
    assert_eq!(
        bulk(&mut shop, &["GET", "mine"]).as_deref(),
        Some(&b"1"[..])
    );

    // Added back: its data was saved when it went.
    std::fs::write(&file, with_news("8mb")).expect("write catalog");
    hup("re-add");
    let mut news = poll_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "news served again",
        || try_login(NEWS_TOKEN),
    );
    assert_eq!(
        bulk(&mut news, &["GET", "story"]).as_deref(),
        Some(&b"1"[..])
    );

    // A file that does not parse changes nothing.
    std::fs::write(&file, "tenant broken\n").expect("write catalog");
    hup("bad file");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        try_login(NEWS_TOKEN).is_some(),
        "a bad file removed databases"
    );
}

/// A plan's `maxclients` refuses the login that would exceed it (Redis's
/// words; the connection stays usable) and frees a place when a client
/// leaves; its `ops-per-sec` makes commands beyond the rate wait, losing
/// none, while other databases on the same executor run at full speed.
#[test]
fn each_database_has_its_own_connection_limit_and_command_rate() {
    const CAPPED_TOKEN: &str = "capped-token-1f2e3d4c5b";
    let dir = Scratch::new("plan-limits");
    let cat = format!(
        "{}tenant capped id=5 token={CAPPED_TOKEN} maxclients=2 ops-per-sec=200\n",
        catalog()
    );
    let srv = start_with(&dir, &cat, &[]);
    let mut admin = srv.connect();
    ok(&mut admin, &["AUTH", ADMIN_PW]);
    let rejected_before = info_field(&mut admin, "stats", "rejected_connections");

    let a = login(&srv, "capped", CAPPED_TOKEN);
    let mut b = login(&srv, "capped", CAPPED_TOKEN);
    let mut third = srv.connect();
    assert_eq!(
        err(&mut third, &["AUTH", "capped", CAPPED_TOKEN]),
        "ERR max number of clients reached"
    );
    assert_eq!(
        info_field(&mut admin, "stats", "rejected_connections"),
        rejected_before + 1
    );
    // Still connected, and free to log in elsewhere.
    ok(&mut third, &["AUTH", "shop", SHOP_TOKEN]);
    ok(&mut third, &["SET", "k", "v"]);
    // A client moving in from another database counts too.
    assert_eq!(
        err(&mut third, &["AUTH", "capped", CAPPED_TOKEN]),
        "ERR max number of clients reached"
    );
    assert_eq!(bulk(&mut third, &["GET", "k"]).as_deref(), Some(&b"v"[..]));
    assert_eq!(
        info_field(&mut admin, "stats", "rejected_connections"),
        rejected_before + 2,
        "two refused logins"
    );
    // A client leaves: its place is free again.
    drop(a);
    let mut c = poll_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "a place after a client left",
        || {
            let mut c = srv.connect();
            matches!(call(&mut c, &["AUTH", "capped", CAPPED_TOKEN]), Value::Simple(s) if s == b"OK")
                .then_some(c)
        },
    );
    assert_eq!(call(&mut c, &["PING"]), Value::Simple(b"PONG".to_vec()));

    // 200 commands a second with a second's worth saved up: 700 INCRs
    // sent at once take at least (700 - 200) / 200 = 2.5 s and all run;
    // shop, on the same server, answers meanwhile.
    let incrs: Vec<Vec<&str>> = (0..700).map(|_| vec!["INCR", "n"]).collect();
    let started = std::time::Instant::now();
    let capped = std::thread::spawn(move || {
        let replies = b.pipeline(&incrs).expect("pipelined INCRs");
        (replies, std::time::Instant::now())
    });
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    let shop_incrs: Vec<Vec<&str>> = (0..2000).map(|_| vec!["INCR", "s"]).collect();
    let shop_replies = shop.pipeline(&shop_incrs).expect("shop's INCRs");
    let shop_done = std::time::Instant::now();
    assert_eq!(shop_replies.last(), Some(&Value::Int(2000)));
    let (replies, capped_done) = capped.join().expect("capped client");
    let took = capped_done - started;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(*r, Value::Int(i as i64 + 1), "INCR {i}");
    }
    assert!(
        took >= Duration::from_millis(2_300),
        "700 commands at 200/s took only {took:?}"
    );
    assert!(
        shop_done < capped_done,
        "shop's 2,000 commands waited for capped's throttled ones"
    );
    assert!(
        info_field(&mut c, "stats", "throttled_commands") >= 1,
        "INFO counts the commands that waited"
    );
    assert_eq!(info_field(&mut shop, "stats", "throttled_commands"), 0);
}

/// A database's users are data: with the append-only log on they come
/// back after a restart without ACL SAVE, changes and deletions included,
/// and a `users.acl` older than the log does not undo them.
#[test]
fn database_users_survive_a_restart_through_the_log() {
    let dir = Scratch::new("db-users-aof");
    let srv = start(&dir, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    ok(
        &mut shop,
        &["ACL", "SETUSER", "old", "on", ">old-pw", "+@all", "~*"],
    );
    ok(&mut shop, &["ACL", "SAVE"]);
    ok(
        &mut shop,
        &[
            "ACL",
            "SETUSER",
            "writer",
            "on",
            ">w-pw",
            "~w:*",
            "+@write",
            "(~r:* +get)",
        ],
    );
    assert_eq!(int(&mut shop, &["ACL", "DELUSER", "old"]), 1);
    ok(&mut shop, &["ACL", "SETUSER", "default", "-flushdb"]);
    let before = format!("{:?}", call(&mut shop, &["ACL", "LIST"]));
    drop(shop);
    drop(srv);
    let srv = start(&dir, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    assert_eq!(format!("{:?}", call(&mut shop, &["ACL", "LIST"])), before);
    assert!(err(&mut shop, &["FLUSHDB"]).starts_with("NOPERM"));
    let mut w = srv.connect();
    ok(&mut w, &["AUTH", "shop.writer", "w-pw"]);
    ok(&mut w, &["SET", "w:1", "v"]);
    assert!(err(&mut w, &["SET", "r:1", "v"]).starts_with("NOPERM"));
    let mut o = srv.connect();
    assert!(
        err(&mut o, &["AUTH", "shop.old", "old-pw"]).starts_with("WRONGPASS"),
        "a deleted user came back from users.acl"
    );
}

/// Client-side caching is per database: a tracking client of one hears
/// about writes to its keys there, never about another database's key of
/// the same name, nor about another database's flush.
#[test]
fn tracking_invalidations_stay_in_their_database() {
    let dir = Scratch::new("tenancy-tracking");
    let srv = start(&dir, &[]);
    let mut t = RespConn::connect_resp3_auth(srv.port, "shop", SHOP_TOKEN).expect("HELLO 3 AUTH");
    ok(&mut t, &["CLIENT", "TRACKING", "ON"]);
    call(&mut t, &["GET", "k"]);
    let mut blog = login(&srv, "blog", BLOG_TOKEN);
    let mut shop = login(&srv, "shop", SHOP_TOKEN);
    ok(&mut blog, &["SET", "k", "blog's"]);
    ok(&mut blog, &["FLUSHALL"]);
    assert_eq!(
        common::until_pong(&mut t),
        Vec::<Value>::new(),
        "another database's writes"
    );
    ok(&mut shop, &["SET", "k", "shop's"]);
    assert_eq!(
        common::until_pong(&mut t),
        vec![Value::Array(vec![
            Value::Bulk(b"invalidate".to_vec()),
            Value::Array(vec![Value::Bulk(b"k".to_vec())]),
        ])],
        "its own database's write"
    );
}
