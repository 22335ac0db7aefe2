//! Client-side caching (`CLIENT TRACKING`) against the reference
//! redis-server 7.0: scripted sessions of several connections (RESP3
//! clients, RESP2 clients redirecting to a subscribed connection, BCAST
//! with prefixes, OPTIN/OPTOUT with CLIENT CACHING, NOLOOP, broken
//! redirects, flushes, expiry, transactions and scripts) produce the same
//! bytes on every connection, step by step: replies, invalidation pushes
//! and Pub/Sub messages, in the same order.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{resp_str, start_anykv, start_reference, ServerProcess, Value};

/// One step: connection `n` sends a command (`$ID<k>` stands for
/// connection k's client id), or several at once (a pipeline).
enum Step {
    Cmd(usize, &'static [&'static str]),
    Pipe(usize, &'static [&'static [&'static str]]),
    Sleep(u64),
}

use Step::{Cmd, Pipe, Sleep};

/// Everything that arrives on `s` until it stays quiet for `quiet`.
fn drain(s: &mut std::net::TcpStream, quiet: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    s.set_read_timeout(Some(quiet)).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// The length of the RESP frame at the start of `b` and whether it is a
/// push, or None if it is not all there yet.
fn frame(b: &[u8]) -> Option<(usize, bool)> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..line_end]).ok()?;
    let head = line_end + 2;
    let push = b[0] == b'>';
    match b[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some((head, false)),
        b'$' | b'!' | b'=' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some((head, false));
            }
            let end = head + n as usize + 2;
            (b.len() >= end).then_some((end, false))
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let n: i64 = line.parse().ok()?;
            let items = if b[0] == b'%' || b[0] == b'|' {
                2 * n
            } else {
                n
            };
            let mut at = head;
            for _ in 0..items.max(0) {
                let (len, _) = frame(&b[at..])?;
                at += len;
            }
            Some((at, push))
        }
        _ => None,
    }
}

/// Reads from `s` until `replies` replies (pushes aside) have arrived,
/// then whatever follows until it is quiet.
fn read_replies(s: &mut std::net::TcpStream, replies: usize) -> Vec<u8> {
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    let mut seen = 0;
    let mut at = 0;
    while seen < replies && Instant::now() < deadline {
        while let Some((len, push)) = frame(&out[at..]) {
            at += len;
            if !push {
                seen += 1;
            }
        }
        if seen >= replies {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    out.extend(drain(s, Duration::from_millis(30)));
    out
}

/// Runs `steps` over `conns` connections (RESP3 where `resp3[i]`):
/// what each connection received after each step, with client ids
/// written as `ID<k>`.
fn transcript(server: &ServerProcess, resp3: &[bool], steps: &[Step]) -> Vec<String> {
    let mut conns: Vec<std::net::TcpStream> = resp3
        .iter()
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect"))
        .collect();
    let quiet = Duration::from_millis(50);
    let mut ids = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        use std::io::Write;
        if resp3[i] {
            c.write_all(&resp_str(&["HELLO", "3"])).expect("hello");
            read_replies(c, 1);
        }
        c.write_all(&resp_str(&["CLIENT", "ID"])).expect("id");
        let got = String::from_utf8_lossy(&read_replies(c, 1)).to_string();
        ids.push(got.trim_start_matches(':').trim().to_string());
    }
    let subst = |a: &str| -> String {
        match a.strip_prefix("$ID") {
            Some(k) => ids[k.parse::<usize>().expect("id index")].clone(),
            None => a.to_string(),
        }
    };
    let mut out = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        // (Client ids are replies only to these; elsewhere a number that
        // happens to equal one is left alone.)
        let shows_ids = matches!(step, Cmd(_, a) if a[0] == "CLIENT" && matches!(a[1], "GETREDIR" | "TRACKINGINFO"));
        use std::io::Write;
        match step {
            Cmd(i, args) => {
                let args: Vec<String> = args.iter().map(|a| subst(a)).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                conns[*i].write_all(&resp_str(&args)).expect("send");
            }
            Pipe(i, cmds) => {
                let mut bytes = Vec::new();
                for args in cmds.iter() {
                    let args: Vec<String> = args.iter().map(|a| subst(a)).collect();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    bytes.extend(resp_str(&args));
                }
                conns[*i].write_all(&bytes).expect("send");
            }
            Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        }
        // The sender's replies, then what the others got meanwhile.
        let (sender, replies) = match step {
            Cmd(i, a) if a[0] != "QUIT" => (Some(*i), 1),
            Pipe(i, cmds) => (Some(*i), cmds.len()),
            _ => (None, 0),
        };
        for (i, c) in conns.iter_mut().enumerate() {
            let bytes = if sender == Some(i) {
                read_replies(c, replies)
            } else {
                drain(c, quiet)
            };
            let mut got = String::from_utf8_lossy(&bytes).to_string();
            for (k, id) in ids.iter().enumerate() {
                if shows_ids {
                    got = got.replace(&format!(":{id}\r\n"), &format!(":ID{k}\r\n"));
                }
                got = got.replace(
                    &format!("tracking-redir-broken\r\n:{id}\r\n"),
                    &format!("tracking-redir-broken\r\n:ID{k}\r\n"),
                );
            }
            if !got.is_empty() {
                out.push(format!("step {n} conn {i}: {got:?}"));
            }
        }
    }
    out
}

fn same(resp3: &[bool], steps: &[Step]) {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let want = transcript(&reference, resp3, steps);
    let got = transcript(&target, resp3, steps);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "first difference (anykv, then redis-server)");
    }
    assert_eq!(got.len(), want.len(), "anykv {got:#?}\nredis {want:#?}");
}

/// A RESP3 client's reads are remembered and invalidated once per read;
/// its own writes invalidate after their reply; MSET, DEL, EXPIRE,
/// no-op writes, other databases, flushes; CLIENT TRACKINGINFO and
/// GETREDIR; OFF.
#[test]
fn resp3_clients_are_told_what_changed() {
    same(
        &[true, false],
        &[
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(0, &["CLIENT", "GETREDIR"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON"]),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(0, &["CLIENT", "GETREDIR"]),
            Pipe(0, &[&["GET", "a"], &["MGET", "b", "c"], &["EXISTS", "d"]]),
            Cmd(1, &["SET", "a", "1"]),
            Cmd(1, &["SET", "a", "2"]),
            Cmd(1, &["MSET", "b", "1", "c", "2", "d", "3"]),
            // Read again, then changed in another database (the table
            // knows keys by name), by DEL, EXPIRE and a no-op.
            Pipe(
                0,
                &[&["GET", "a"], &["GET", "b"], &["GET", "c"], &["GET", "d"]],
            ),
            Cmd(1, &["SELECT", "1"]),
            Cmd(1, &["SET", "a", "other-db"]),
            Cmd(1, &["SELECT", "0"]),
            Cmd(1, &["DEL", "b", "nokey"]),
            Cmd(1, &["EXPIRE", "c", "100"]),
            Cmd(1, &["SETNX", "d", "x"]),
            Cmd(1, &["APPEND", "d", "x"]),
            // Its own writes: after their reply, in a pipeline too.
            Pipe(
                0,
                &[
                    &["GET", "x"],
                    &["SET", "x", "1"],
                    &["GET", "x"],
                    &["INCR", "x"],
                ],
            ),
            // A read that fails still counts; a write that fails changes
            // nothing.
            Cmd(1, &["LPUSH", "l", "a"]),
            Cmd(0, &["GET", "l"]),
            Cmd(1, &["INCR", "l"]),
            Cmd(1, &["RPUSH", "l", "b"]),
            // Flushes tell every tracking client everything is invalid.
            Cmd(0, &["GET", "f"]),
            Cmd(1, &["FLUSHDB"]),
            Cmd(1, &["SET", "f", "1"]),
            Cmd(0, &["GET", "f"]),
            Cmd(1, &["FLUSHALL"]),
            Cmd(1, &["SET", "f", "2"]),
            Cmd(0, &["GET", "f"]),
            Cmd(0, &["FLUSHALL"]),
            // Off: nothing more.
            Cmd(0, &["GET", "g"]),
            Cmd(0, &["CLIENT", "TRACKING", "OFF"]),
            Cmd(1, &["SET", "g", "1"]),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
        ],
    );
}

/// Invalidations to another connection: a RESP2 one subscribed to
/// `__redis__:invalidate` gets Pub/Sub messages, a RESP3 one pushes, an
/// unsubscribed RESP2 one nothing; a redirect that disconnects leaves
/// the client broken (told so once, in RESP3).
#[test]
fn redirected_invalidations_reach_the_other_connection() {
    same(
        &[false, false, true, false, true],
        &[
            Cmd(1, &["SUBSCRIBE", "__redis__:invalidate"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "REDIRECT", "$ID1"]),
            Cmd(0, &["CLIENT", "GETREDIR"]),
            Cmd(0, &["GET", "k"]),
            Cmd(3, &["SET", "k", "1"]),
            Cmd(0, &["MGET", "k", "j"]),
            Cmd(3, &["MSET", "k", "2", "j", "3"]),
            Cmd(0, &["GET", "k"]),
            Cmd(3, &["FLUSHALL"]),
            // To a RESP3 connection: pushes.
            Cmd(0, &["CLIENT", "TRACKING", "ON", "REDIRECT", "$ID2"]),
            Cmd(0, &["GET", "k"]),
            Cmd(3, &["SET", "k", "3"]),
            // Errors: a missing client, two redirects, ON/OFF, options.
            Cmd(0, &["CLIENT", "TRACKING", "ON", "REDIRECT", "999999"]),
            Cmd(
                0,
                &[
                    "CLIENT", "TRACKING", "ON", "REDIRECT", "$ID1", "REDIRECT", "$ID2",
                ],
            ),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "REDIRECT", "x"]),
            Cmd(0, &["CLIENT", "TRACKING", "MAYBE"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "BOGUS"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "PREFIX", "a"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "BCAST"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTOUT"]),
            Cmd(0, &["CLIENT", "TRACKING", "OFF"]),
            // The redirect goes away: broken.
            Cmd(4, &["CLIENT", "TRACKING", "ON", "REDIRECT", "$ID2"]),
            Cmd(4, &["GET", "b"]),
            Cmd(2, &["QUIT"]),
            Sleep(100),
            Cmd(3, &["SET", "b", "1"]),
            Cmd(4, &["CLIENT", "TRACKINGINFO"]),
            Cmd(4, &["GET", "b"]),
            Cmd(3, &["SET", "b", "2"]),
        ],
    );
}

/// BCAST: every key under the client's prefixes (all keys without one),
/// read or not, in a batch per pipeline; prefix rules; NOLOOP.
#[test]
fn broadcast_clients_get_keys_under_their_prefixes() {
    same(
        &[true, false, true, true],
        &[
            Cmd(
                0,
                &[
                    "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "job:",
                ],
            ),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(2, &["CLIENT", "TRACKING", "ON", "BCAST"]),
            Cmd(
                3,
                &[
                    "CLIENT", "TRACKING", "ON", "BCAST", "NOLOOP", "PREFIX", "job:",
                ],
            ),
            Cmd(1, &["SET", "user:1", "a"]),
            Cmd(1, &["SET", "other", "a"]),
            Pipe(
                1,
                &[
                    &["SET", "job:1", "a"],
                    &["SET", "job:2", "b"],
                    &["DEL", "user:1"],
                ],
            ),
            Cmd(3, &["SET", "job:3", "mine"]),
            Pipe(3, &[&["SET", "job:4", "mine"], &["SET", "user:9", "x"]]),
            Cmd(1, &["FLUSHALL"]),
            // Prefix rules.
            Cmd(
                0,
                &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:x"],
            ),
            Cmd(
                0,
                &[
                    "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", "ab",
                ],
            ),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "new:"]),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON"]),
            Cmd(1, &["SET", "new:1", "x"]),
            Cmd(0, &["CLIENT", "TRACKING", "OFF"]),
            Cmd(1, &["SET", "new:2", "x"]),
        ],
    );
}

/// OPTIN remembers only after `CLIENT CACHING yes`, OPTOUT all but after
/// `CLIENT CACHING no`, for one command (a transaction's, when queued);
/// NOLOOP hides a client's own writes; transactions and scripts.
#[test]
fn optin_optout_noloop_transactions_and_scripts() {
    same(
        &[true, false, true],
        &[
            Cmd(0, &["CLIENT", "CACHING", "YES"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTIN"]),
            Cmd(0, &["CLIENT", "CACHING", "NO"]),
            Cmd(0, &["CLIENT", "CACHING", "MAYBE"]),
            Cmd(0, &["GET", "a"]),
            Cmd(0, &["CLIENT", "CACHING", "YES"]),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(0, &["GET", "b"]),
            Cmd(0, &["GET", "c"]),
            Cmd(1, &["MSET", "a", "1", "b", "1", "c", "1"]),
            Pipe(
                0,
                &[
                    &["CLIENT", "CACHING", "YES"],
                    &["MULTI"],
                    &["GET", "a"],
                    &["GET", "c"],
                    &["EXEC"],
                ],
            ),
            Cmd(1, &["MSET", "a", "2", "c", "2"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTOUT"]),
            Cmd(0, &["CLIENT", "TRACKING", "OFF"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTOUT", "NOLOOP"]),
            Pipe(
                0,
                &[&["CLIENT", "CACHING", "NO"], &["GET", "a"], &["GET", "b"]],
            ),
            Cmd(1, &["MSET", "a", "3", "b", "3"]),
            Pipe(0, &[&["GET", "s"], &["SET", "s", "mine"]]),
            Cmd(1, &["SET", "s", "theirs"]),
            // Scripts: the reads their calls make are the caller's.
            Cmd(2, &["CLIENT", "TRACKING", "ON"]),
            Cmd(2, &["EVAL", "return redis.call('get', KEYS[1])", "1", "e"]),
            Cmd(
                2,
                &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "f"],
            ),
            Cmd(1, &["MSET", "e", "1", "f", "1"]),
            Cmd(
                2,
                &[
                    "EVAL",
                    "redis.call('get', KEYS[1]); return redis.call('set', KEYS[1], 'x')",
                    "1",
                    "h",
                ],
            ),
            Cmd(2, &["GET", "m"]),
            Pipe(
                2,
                &[&["MULTI"], &["SET", "m", "1"], &["GET", "m"], &["EXEC"]],
            ),
            Cmd(1, &["SET", "m", "2"]),
            Cmd(2, &["RESET"]),
            Cmd(2, &["CLIENT", "TRACKINGINFO"]),
        ],
    );
}

/// Keys that expire (lazily and actively) are invalidated.
#[test]
fn expired_keys_are_invalidated() {
    same(
        &[true, false],
        &[
            Cmd(1, &["SET", "lazy", "v", "PX", "50"]),
            Cmd(1, &["SET", "active", "v", "PX", "50"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON"]),
            Pipe(0, &[&["GET", "lazy"], &["GET", "active"]]),
            Sleep(80),
            Cmd(1, &["GET", "lazy"]),
            Sleep(400),
            Cmd(1, &["EXISTS", "active"]),
        ],
    );
}

/// `CLIENT CACHING` is spent by the next command (not by another CLIENT
/// subcommand; by an unknown command; by a transaction as a whole);
/// scripts count as reading their declared keys; COPY, RENAME, MOVE and
/// SWAPDB change what Redis says they change.
#[test]
fn caching_flag_scripts_and_key_moving_commands() {
    same(
        &[true, false, true],
        &[
            Cmd(0, &["CLIENT", "TRACKING", "ON", "OPTIN"]),
            Pipe(
                0,
                &[
                    &["CLIENT", "CACHING", "YES"],
                    &["CLIENT", "GETNAME"],
                    &["GET", "o4"],
                ],
            ),
            Pipe(
                0,
                &[&["CLIENT", "CACHING", "YES"], &["PING"], &["GET", "o5"]],
            ),
            Pipe(
                0,
                &[
                    &["CLIENT", "CACHING", "YES"],
                    &["NOSUCHCMD"],
                    &["GET", "o6"],
                ],
            ),
            Pipe(
                0,
                &[&["CLIENT", "CACHING", "YES"], &["GET"], &["GET", "o9"]],
            ),
            Pipe(
                0,
                &[
                    &["CLIENT", "CACHING", "YES"],
                    &["MULTI"],
                    &["GET", "o7"],
                    &["DISCARD"],
                    &["GET", "o8"],
                ],
            ),
            Pipe(
                0,
                &[
                    &["MULTI"],
                    &["GET", "o10"],
                    &["CLIENT", "CACHING", "YES"],
                    &["GET", "o11"],
                    &["EXEC"],
                ],
            ),
            Cmd(0, &["CLIENT", "TRACKINGINFO"]),
            Cmd(
                1,
                &[
                    "MSET", "o4", "1", "o5", "1", "o6", "1", "o7", "1", "o8", "1", "o9", "1",
                    "o10", "1", "o11", "1",
                ],
            ),
            // A script reading one key while declaring another.
            Cmd(2, &["CLIENT", "TRACKING", "ON"]),
            Cmd(2, &["EVAL", "return redis.call('get','ek2')", "1", "ek3"]),
            Cmd(2, &["EVAL", "return redis.call('dbsize')", "1", "ek4"]),
            Cmd(1, &["MSET", "ek2", "1", "ek3", "1", "ek4", "1"]),
            // COPY changes its destination only; RENAME both; MOVE the
            // key once; SWAPDB nothing.
            Pipe(2, &[&["GET", "c1"], &["GET", "c2"]]),
            Cmd(1, &["SET", "c1", "v"]),
            Cmd(2, &["GET", "c1"]),
            Cmd(1, &["COPY", "c1", "c2"]),
            Pipe(2, &[&["GET", "c2"], &["GET", "c3"]]),
            Cmd(1, &["RENAME", "c1", "c3"]),
            Cmd(2, &["GET", "m"]),
            Cmd(1, &["SET", "m", "1"]),
            Cmd(2, &["GET", "m"]),
            Cmd(1, &["MOVE", "m", "1"]),
            Cmd(2, &["GET", "s"]),
            Cmd(1, &["SWAPDB", "0", "1"]),
            Cmd(1, &["SET", "s", "1"]),
        ],
    );
}

/// INFO's tracking fields and CLIENT LIST's flags and `redir=` read as
/// Redis's.
#[test]
fn info_and_client_list_show_tracking() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let run = |server: &ServerProcess| -> Vec<String> {
        let mut a = server.connect();
        let mut b = server.connect();
        let mut c = server.connect();
        let b_id = match b.cmd(&["CLIENT", "ID"]).expect("id") {
            common::Value::Int(n) => n.to_string(),
            other => panic!("CLIENT ID: {other:?}"),
        };
        b.cmd(&["SUBSCRIBE", "x"]).expect("subscribe");
        a.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &b_id])
            .expect("on");
        a.cmd(&["MGET", "k1", "k2", "k3"]).expect("mget");
        c.cmd(&[
            "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "p:", "PREFIX", "q:",
        ])
        .expect("bcast");
        c.cmd(&["GET", "k1"]).expect("get");
        let mut out = Vec::new();
        let Ok(common::Value::Bulk(info)) = c.cmd(&["INFO", "everything"]) else {
            panic!("INFO");
        };
        for line in String::from_utf8_lossy(&info).lines() {
            if line.starts_with("tracking_") {
                out.push(line.to_string());
            }
        }
        for (who, conn) in [("a", &mut a), ("c", &mut c)] {
            let Ok(common::Value::Bulk(me)) = conn.cmd(&["CLIENT", "INFO"]) else {
                panic!("CLIENT INFO");
            };
            let me = String::from_utf8_lossy(&me).to_string();
            for f in me.split_whitespace() {
                if f.starts_with("flags=") {
                    out.push(format!("{who} {f}"));
                }
                if let Some(r) = f.strip_prefix("redir=") {
                    let r = if r == b_id { "B" } else { r };
                    out.push(format!("{who} redir={r}"));
                }
            }
        }
        out
    };
    assert_eq!(run(&target), run(&reference));
}

/// A RESP3 connection with tracking on, and the invalidations pushed to
/// it: each push's keys (a nil push, a flush, as `*`).
struct Tracked {
    c: common::RespConn,
}

impl Tracked {
    fn new(server: &ServerProcess) -> Tracked {
        let mut c = common::RespConn::connect_resp3(server.port).expect("HELLO 3");
        assert_eq!(
            c.cmd(&["CLIENT", "TRACKING", "ON"]).expect("tracking"),
            common::Value::Simple(b"OK".to_vec())
        );
        Tracked { c }
    }

    /// The keys invalidated since the last call: pushes read until this
    /// PING's reply.
    fn invalidated(&mut self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for reply in common::until_pong(&mut self.c) {
            match reply {
                // (The replies of reads sent without waiting for them.)
                Value::Nil => {}
                Value::Array(p) if p.len() == 2 && p[0] == Value::Bulk(b"invalidate".to_vec()) => {
                    match &p[1] {
                        Value::Array(ks) => keys.extend(ks.iter().filter_map(|k| match k {
                            Value::Bulk(b) => Some(b.clone()),
                            _ => None,
                        })),
                        _ => keys.push(b"*".to_vec()),
                    }
                }
                other => panic!("not an invalidation: {other:?}"),
            }
        }
        keys
    }
}

fn info_u64(c: &mut common::RespConn, field: &str) -> u64 {
    let v = common::info_field(c, "all", field);
    v.parse()
        .unwrap_or_else(|_| panic!("INFO {field}: {v} is not a number"))
}

/// `tracking-table-max-keys`: past it, keys are dropped from the table
/// (which keys is Redis's random pick) and their readers told they are
/// invalid, as in redis-server: the table holds at most the limit, and
/// every key read is either still tracked or was invalidated, once.
#[test]
fn the_tracking_table_keeps_to_its_limit() {
    for server in [start_reference(), start_anykv(&common::anykv_bin())] {
        let mut admin = server.connect();
        admin
            .cmd(&["CONFIG", "SET", "tracking-table-max-keys", "2"])
            .expect("config set");
        let mut t = Tracked::new(&server);
        // (Sent without reading: pushes may come between the replies.)
        let gets: Vec<Vec<&str>> = ["k1", "k2", "k3", "k4", "k5"]
            .iter()
            .map(|k| vec!["GET", k])
            .collect();
        t.c.send_all(&gets).expect("gets");
        // (The GETs' replies and any pushes before them, once they ran.)
        let mut dropped = t.invalidated();
        let deadline = Instant::now() + Duration::from_secs(5);
        while info_u64(&mut admin, "tracking_total_keys") > 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        dropped.extend(t.invalidated());
        let kept = info_u64(&mut admin, "tracking_total_keys");
        assert!(kept <= 2, "{}: {kept} keys tracked", server.name);
        dropped.sort();
        let before = dropped.len();
        dropped.dedup();
        assert_eq!(
            dropped.len(),
            before,
            "{}: a key invalidated twice",
            server.name
        );
        assert_eq!(
            dropped.len() as u64 + kept,
            5,
            "{}: every key read is tracked or was invalidated: {dropped:?}",
            server.name
        );
    }
}

/// A key evicted under maxmemory is invalidated for the clients that
/// cached it, as in redis-server: exactly the keys that are gone.
#[test]
fn evicted_keys_are_invalidated() {
    for server in [start_reference(), start_anykv(&common::anykv_bin())] {
        let mut admin = server.connect();
        admin
            .cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-random"])
            .expect("policy");
        let value = "v".repeat(10_000);
        let keys: Vec<String> = (0..200).map(|i| format!("big:{i}")).collect();
        for k in &keys {
            admin.cmd(&["SET", k, &value]).expect("set");
        }
        let mut t = Tracked::new(&server);
        for k in &keys {
            t.c.cmd(&["GET", k]).expect("get");
        }
        let used = info_u64(&mut admin, "used_memory");
        admin
            .cmd(&[
                "CONFIG",
                "SET",
                "maxmemory",
                &(used - 1_000_000).to_string(),
            ])
            .expect("maxmemory");
        // Eviction runs before the next command (and, in Redis, in the
        // background until memory is under the limit).
        let limit = used - 1_000_000;
        let deadline = Instant::now() + Duration::from_secs(10);
        while info_u64(&mut admin, "used_memory") > limit && Instant::now() < deadline {
            admin.cmd(&["PING"]).expect("ping");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Eviction may still be going on (each command runs it first,
        // Redis's timer too): the keys gone and the invalidations are
        // compared once they agree or eviction has surely stopped.
        let mut told: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let gone = loop {
            let mut gone: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| admin.cmd(&["EXISTS", k]).expect("exists") == common::Value::Int(0))
                .map(|k| k.as_bytes().to_vec())
                .collect();
            gone.sort();
            told.extend(t.invalidated());
            told.sort();
            if told == gone || Instant::now() >= deadline {
                break gone;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!gone.is_empty(), "{}: nothing was evicted", server.name);
        assert_eq!(told, gone, "{}: invalidated = evicted", server.name);
    }
}

/// Reads and writes of issue 17's families, tracked: a RESP3 client (0)
/// and a RESP2 one redirecting to a subscribed connection (2) read
/// streams, bitmaps, HyperLogLogs, geo sets and DUMPs; another client (1)
/// changes them with each family's writes (XADD, XDEL, XTRIM, XSETID,
/// group commands, SETBIT, BITFIELD, BITOP, PFADD, PFMERGE, GEOADD,
/// GEORADIUS/GEOSEARCH STORE). Invalidations, or their absence
/// (a read-only BITFIELD_RO, a PFADD that changes no register, an XREAD
/// of nothing new), are as redis-server sends them.
#[test]
fn the_new_families_writes_invalidate_what_was_read() {
    same(
        &[true, false, false],
        &[
            Cmd(2, &["SUBSCRIBE", "__redis__:invalidate"]),
            Cmd(0, &["CLIENT", "TRACKING", "ON"]),
            Cmd(1, &["XADD", "s", "1-1", "f", "v"]),
            Cmd(1, &["SETBIT", "b", "7", "1"]),
            Cmd(1, &["PFADD", "h", "a", "b"]),
            Cmd(1, &["GEOADD", "g", "13.361389", "38.115556", "palermo"]),
            Cmd(1, &["SET", "d", "dumped"]),
            // Streams: a range read, then an entry added; XLEN then XDEL.
            Pipe(0, &[&["XRANGE", "s", "-", "+"], &["XLEN", "s"]]),
            Cmd(1, &["XADD", "s", "2-1", "f", "w"]),
            Cmd(0, &["XREAD", "COUNT", "10", "STREAMS", "s", "0-0"]),
            Cmd(1, &["XDEL", "s", "1-1"]),
            Cmd(0, &["XINFO", "STREAM", "s"]),
            Cmd(1, &["XTRIM", "s", "MAXLEN", "0"]),
            Cmd(0, &["XREVRANGE", "s", "+", "-"]),
            Cmd(1, &["XSETID", "s", "5-0"]),
            // Groups: reading as a group changes the stream (its groups).
            Cmd(1, &["XADD", "s", "6-1", "f", "x"]),
            Cmd(1, &["XGROUP", "CREATE", "s", "grp", "0"]),
            Cmd(0, &["XLEN", "s"]),
            Cmd(
                1,
                &["XREADGROUP", "GROUP", "grp", "c1", "STREAMS", "s", ">"],
            ),
            Cmd(0, &["XPENDING", "s", "grp"]),
            Cmd(1, &["XACK", "s", "grp", "6-1"]),
            Cmd(0, &["XLEN", "s"]),
            Cmd(1, &["XGROUP", "CREATECONSUMER", "s", "grp", "c2"]),
            // Bitmaps.
            Pipe(0, &[&["GETBIT", "b", "7"], &["BITCOUNT", "b"]]),
            Cmd(1, &["SETBIT", "b", "7", "1"]),
            Cmd(1, &["SETBIT", "b", "8", "1"]),
            Cmd(0, &["BITPOS", "b", "1"]),
            Cmd(1, &["BITFIELD_RO", "b", "GET", "u8", "0"]),
            Cmd(1, &["BITFIELD", "b", "INCRBY", "u8", "0", "1"]),
            Cmd(0, &["BITFIELD_RO", "b", "GET", "u4", "0"]),
            Cmd(1, &["BITOP", "NOT", "b", "b"]),
            // HyperLogLog: PFCOUNT caches its estimate in the value.
            Cmd(0, &["PFCOUNT", "h"]),
            Cmd(1, &["PFADD", "h", "a"]),
            Cmd(1, &["PFADD", "h", "c"]),
            Cmd(0, &["PFCOUNT", "h"]),
            Cmd(1, &["PFCOUNT", "h"]),
            Cmd(1, &["PFMERGE", "h", "h2"]),
            // Geo.
            Pipe(
                0,
                &[&["GEOPOS", "g", "palermo"], &["GEOHASH", "g", "palermo"]],
            ),
            Cmd(1, &["GEOADD", "g", "15.087269", "37.502669", "catania"]),
            Cmd(
                0,
                &[
                    "GEOSEARCH",
                    "g",
                    "FROMLONLAT",
                    "15",
                    "37",
                    "BYRADIUS",
                    "200",
                    "km",
                    "ASC",
                ],
            ),
            Cmd(
                1,
                &["GEOADD", "g", "XX", "15.087269", "37.502669", "catania"],
            ),
            Cmd(0, &["GEODIST", "g", "palermo", "catania"]),
            Cmd(
                1,
                &[
                    "GEOSEARCHSTORE",
                    "gs",
                    "g",
                    "FROMLONLAT",
                    "15",
                    "37",
                    "BYRADIUS",
                    "200",
                    "km",
                ],
            ),
            Cmd(0, &["ZCARD", "gs"]),
            Cmd(
                1,
                &["GEORADIUS", "g", "15", "37", "200", "km", "STORE", "gs"],
            ),
            // DUMP is a read.
            Cmd(0, &["DUMP", "d"]),
            Cmd(1, &["SET", "d", "other"]),
            // The RESP2 client redirecting to connection 2.
            Cmd(1, &["CLIENT", "TRACKING", "ON", "REDIRECT", "$ID2"]),
            Pipe(
                1,
                &[
                    &["XLEN", "s"],
                    &["BITCOUNT", "b"],
                    &["PFCOUNT", "h"],
                    &["ZCARD", "g"],
                ],
            ),
            Cmd(0, &["XADD", "s", "7-1", "f", "y"]),
            Cmd(0, &["SETRANGE", "b", "0", "z"]),
            Cmd(0, &["PFADD", "h", "zz"]),
            Cmd(0, &["GEOADD", "g", "2.3522", "48.8566", "paris"]),
            Cmd(0, &["DEL", "d"]),
        ],
    );
}

/// Client-side caching on a cluster's nodes (docs/CLIENT_CACHING.md): a
/// RESP3 client of the read region's node (cdg, holding a replica) reads
/// a key there; a client of the primary's node (iad) changes it; the
/// replica's node invalidates as it applies the write: a push to its
/// client, and only for the key it read. A node holding no copy (syd)
/// refuses tracking, saying where to connect.
#[test]
fn a_replicas_node_invalidates_as_it_applies_its_primarys_writes() {
    const ADMIN: &str = "tracking-admin-token";
    const TOKEN: &str = "tracking-database-token-0123456789";
    let w = common::three_regions("track-nodes", 76, 24100, ADMIN, TOKEN);
    let node = |n: &str| w.node(n).expect("node").resp;
    let mut primary = common::shop_login(node("n1"), TOKEN, "the primary serves", |c| {
        matches!(c.cmd(&["SET", "cached", "1"]), Ok(Value::Simple(_)))
    });
    // The replica in cdg has the write, read by a RESP3 client there.
    let mut reader = common::poll_every(
        Duration::from_millis(50),
        Duration::from_secs(30),
        "the cdg replica serves the write",
        || {
            let mut c =
                common::RespConn::connect_resp3_auth_addr(node("n2"), "shop", TOKEN).ok()?;
            (c.cmd(&["GET", "cached"]).ok()? == Value::Bulk(b"1".to_vec())).then_some(c)
        },
    );
    let tracking = |c: &mut common::RespConn| c.cmd(&["CLIENT", "TRACKING", "ON"]).expect("reply");
    assert_eq!(tracking(&mut reader), Value::Simple(b"OK".to_vec()));
    assert_eq!(
        reader.cmd(&["GET", "cached"]).expect("GET"),
        Value::Bulk(b"1".to_vec())
    );
    let served_here = common::info_field(&mut reader, "replication", "role");
    assert_eq!(served_here, "slave", "n2 serves the database as a replica");
    // Another key first (not read by the client), then the one it read.
    for (k, v) in [("other", "x"), ("cached", "2")] {
        assert_eq!(
            primary.cmd(&["SET", k, v]).expect("SET"),
            Value::Simple(b"OK".to_vec())
        );
    }
    let push = reader
        .read_reply()
        .expect("an invalidation push from the replica's node");
    let shape = common::Conn::shape(&reader).unwrap_or_default().to_string();
    assert!(shape.starts_with('>'), "a push, not {shape}: {push:?}");
    assert_eq!(
        push,
        Value::Array(vec![
            Value::Bulk(b"invalidate".to_vec()),
            Value::Array(vec![Value::Bulk(b"cached".to_vec())])
        ])
    );
    assert_eq!(
        reader.cmd(&["GET", "cached"]).expect("GET"),
        Value::Bulk(b"2".to_vec())
    );
    // syd holds no copy: no tracking there.
    let mut far = common::shop_login(node("n3"), TOKEN, "syd serves", |_| true);
    match tracking(&mut far) {
        Value::Error(e) => assert!(
            String::from_utf8_lossy(&e).contains("needs a node holding a copy"),
            "{}",
            String::from_utf8_lossy(&e)
        ),
        other => panic!("tracking on a node with no copy: {other:?}"),
    }
}
