//! Whole-server input fuzzing without a network: the input is what a client
//! sends on one connection. It is fed to `RequestParser` in reads of a
//! fuzzer-chosen size and every parsed request is dispatched against an
//! in-process tenant, on a virtual clock, with active expiry running now and
//! then — the path `conn.rs` takes for a socket.
//!
//! Input layout: `[read size][clock step][client bytes...]`
//! * read size 0: everything in one read; n: reads of `n % 97 + 1` bytes.
//! * clock step: the virtual clock moves `step * 37` ms per command.
//!
//! Oracles, beyond "no panic, no sanitizer report, no hang":
//! * every parse error's text starts with "Protocol error: ";
//! * every reply is well-formed RESP (RESP2 types only on a RESP2
//!   connection), and a command writes exactly one reply when replies are on
//!   (none for a SHUTDOWN that goes ahead, which also ends the session; one
//!   per channel for the (UN)SUBSCRIBE family);
//! * replaying the tenant's captured propagation log on a fresh tenant
//!   rebuilds the same keyspace (as `server/tests/replay.rs` checks for
//!   random workloads), with no error replies.
//!
//! A few commands are bounded so that a run measures the server rather than
//! the machine: DEBUG SLEEP is skipped, DEBUG POPULATE is capped, and
//! `proto-max-bulk-len` is pinned to its 1 MB minimum (CONFIG SET of it is
//! skipped), which bounds SETRANGE/APPEND/LCS allocations.

#![no_main]

use std::net::SocketAddr;
use std::rc::Rc;

use anykv_server::client::{ClientInfo, ReplyMode, Session};
use anykv_server::config::Config;
use anykv_server::dispatch::{dispatch, Outcome};
use anykv_server::expire::active_expire_cycle;
use anykv_server::resp::{ParseLimits, Reply, Request, RequestParser};
use anykv_server::shared::{Settings, Shared};
use anykv_server::tenant::{Tenant, TenantId};
use libfuzzer_sys::fuzz_target;

const START_MS: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| run(data));

fn new_shared() -> Shared {
    let shared = Shared::new(Config::default(), 1);
    shared
        .update_config(|c| c.set(&[(b"proto-max-bulk-len", b"1048576")]))
        .expect("proto-max-bulk-len 1mb");
    shared
}

fn settings(shared: &Shared, set: &mut Settings) {
    shared.refresh(set);
    set.debug_command = "yes".into();
}

fn new_session(shared: &Shared, t: &mut Tenant, authenticated: bool) -> Session {
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let laddr: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    let info = Rc::new(ClientInfo::new(
        shared.next_client_id(),
        addr,
        laddr,
        7,
        START_MS,
    ));
    t.clients.insert(info.id, info.clone());
    Session::new(info, authenticated)
}

fn num(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

/// Requests the harness does not run (see the module doc).
fn skipped(args: &[&[u8]]) -> bool {
    let is = |i: usize, s: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(s.as_bytes()))
    };
    if is(0, "debug") && is(1, "sleep") {
        return true;
    }
    if is(0, "debug") && is(1, "populate") {
        let count = args.get(2).and_then(|a| num(a)).unwrap_or(0);
        let size = args.get(4).and_then(|a| num(a)).unwrap_or(0);
        return count > 10_000 || size > 100_000;
    }
    if is(0, "config") && is(1, "set") {
        return args
            .iter()
            .any(|a| a.eq_ignore_ascii_case(b"proto-max-bulk-len"));
    }
    false
}

/// (UN)SUBSCRIBE and friends reply once per channel, not once per command.
fn one_reply_per_channel(args: &[&[u8]]) -> bool {
    [
        "subscribe",
        "unsubscribe",
        "psubscribe",
        "punsubscribe",
        "ssubscribe",
        "sunsubscribe",
    ]
    .iter()
    .any(|c| args[0].eq_ignore_ascii_case(c.as_bytes()))
}

fn run(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (read, step) = (data[0], data[1] as i64 * 37);
    let input = &data[2..];

    let shared = new_shared();
    let mut set = shared.settings();
    settings(&shared, &mut set);
    let mut t = Tenant::new(TenantId::DEFAULT, "fuzz", 16);
    t.log.enable_capture();
    let open = shared.users.read().default_is_open();
    let mut s = new_session(&shared, &mut t, open);
    let mut out = Reply::new(2);
    let mut p = RequestParser::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut now = START_MS;
    let mut fed = 0;
    let mut ncmd = 0u64;

    'conn: while fed < input.len() {
        let n = if read == 0 {
            input.len() - fed
        } else {
            (read as usize % 97 + 1).min(input.len() - fed)
        };
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            settings(&shared, &mut set);
            let limits = ParseLimits {
                max_bulk_len: set.max_bulk_len,
                max_multibulk_len: set.max_multibulk_len,
                unauthenticated: !s.authenticated,
            };
            let req = match p.next(&buf, &limits) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.starts_with("Protocol error: "), "{text:?}");
                    break 'conn;
                }
            };
            let args: Vec<&[u8]> = match req {
                Request::Multibulk => p.ranges().iter().map(|r| &buf[r.clone()]).collect(),
                Request::Inline => p.inline_args().iter().map(|a| a.as_slice()).collect(),
            };
            assert!(!args.is_empty());
            if skipped(&args) {
                continue;
            }
            now += step;
            ncmd += 1;
            if ncmd.is_multiple_of(8) {
                active_expire_cycle(&mut t, now, 1, 10);
            }
            let (mode_before, resp_before) = (s.reply_mode, s.resp);
            out.buf.clear();
            let outcome = dispatch(&mut t, &mut s, &shared, &set, &args, &mut out, now);
            let resp3_ok = resp_before >= 3 || s.resp >= 3;
            let frames = match check_replies(&out.buf, resp3_ok) {
                Ok(n) => n,
                Err(why) => panic!(
                    "malformed reply to {:?}: {why}\nreply: {:?}",
                    show_args(&args),
                    out.buf.escape_ascii().to_string()
                ),
            };
            if shared.is_shutting_down() {
                // SHUTDOWN: no reply (as Redis), every connection closes.
                assert_eq!(frames, 0, "SHUTDOWN replied");
                break 'conn;
            }
            let replies_on = mode_before == ReplyMode::On && s.reply_mode == ReplyMode::On;
            if replies_on
                && matches!(outcome, Outcome::Continue | Outcome::Close)
                && !one_reply_per_channel(&args)
            {
                assert_eq!(
                    frames,
                    1,
                    "{:?} wrote {frames} replies: {:?}",
                    show_args(&args),
                    out.buf.escape_ascii().to_string()
                );
            }
            // A paused or waiting command would wait; the harness moves on.
            if outcome == Outcome::Close {
                break 'conn;
            }
            if s.info.killed.get() {
                break 'conn;
            }
        }
        let c = p.consumed();
        assert!(c <= buf.len());
        buf.drain(..c);
        p.rebase(c);
    }

    check_replay(&mut t);
}

fn show_args(args: &[&[u8]]) -> Vec<String> {
    args.iter().map(|a| a.escape_ascii().to_string()).collect()
}

/// Replays the captured propagation log on a fresh tenant, at a time no
/// later than the run's start; the keyspaces must match exactly.
fn check_replay(orig: &mut Tenant) {
    let log = orig.log.take_capture();
    let shared = new_shared();
    let mut set = shared.settings();
    settings(&shared, &mut set);
    let mut t = Tenant::new(TenantId::DEFAULT, "replay", 16);
    let mut s = new_session(&shared, &mut t, true);
    let mut out = Reply::new(2);
    let mut p = RequestParser::new();
    let lim = ParseLimits::default();
    while let Some(r) = p.next(&log, &lim).expect("the log parses") {
        assert_eq!(r, Request::Multibulk);
        let args: Vec<&[u8]> = p.ranges().iter().map(|r| &log[r.clone()]).collect();
        out.buf.clear();
        dispatch(&mut t, &mut s, &shared, &set, &args, &mut out, START_MS);
        assert!(
            out.buf.first() != Some(&b'-'),
            "replaying {:?} failed: {:?}",
            show_args(&args),
            out.buf.escape_ascii().to_string()
        );
    }
    assert_eq!(p.consumed(), log.len(), "the log ends mid-command");
    if orig.ks.digest() != t.ks.digest() {
        for (dbi, (a, b)) in orig.ks.dbs.iter().zip(t.ks.dbs.iter()).enumerate() {
            for e in a.iter() {
                let same = b.find(e.key.as_bytes()).is_some_and(|i| {
                    let f = b.entry(i);
                    f.value.as_str() == e.value.as_str() && f.expire_at == e.expire_at
                });
                if !same {
                    let got = b.find(e.key.as_bytes()).map(|i| {
                        let f = b.entry(i);
                        (
                            f.value.as_str().map(|v| v.escape_ascii().to_string()),
                            f.expire_at,
                        )
                    });
                    panic!(
                        "replay diverges in db {dbi} at key {:?}: original {:?} expire_at {}, replayed {got:?}\nlog: {:?}",
                        e.key.as_bytes().escape_ascii().to_string(),
                        e.value.as_str().map(|v| v.escape_ascii().to_string()),
                        e.expire_at,
                        log.escape_ascii().to_string()
                    );
                }
            }
            if a.len() != b.len() {
                panic!(
                    "replay diverges in db {dbi}: {} keys originally, {} replayed\nlog: {:?}",
                    a.len(),
                    b.len(),
                    log.escape_ascii().to_string()
                );
            }
        }
        panic!("digests differ but no differing key was found");
    }
}

/// Checks that `b` is a sequence of complete, well-formed RESP frames;
/// returns how many top-level frames it holds.
fn check_replies(b: &[u8], resp3: bool) -> Result<usize, String> {
    let mut at = 0;
    let mut n = 0;
    while at < b.len() {
        at = frame(b, at, resp3, 0)?;
        n += 1;
    }
    Ok(n)
}

/// One header line starting at `at` (after the type byte): its content and
/// the offset after its CRLF. The content may hold no CR or LF.
fn line(b: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let rest = &b[at..];
    let Some(cr) = rest.iter().position(|&c| c == b'\r' || c == b'\n') else {
        return Err(format!("unterminated line at {at}"));
    };
    if rest[cr] != b'\r' || rest.get(cr + 1) != Some(&b'\n') {
        return Err(format!("bare CR or LF in a line at {}", at + cr));
    }
    Ok((&rest[..cr], at + cr + 2))
}

fn int_of(l: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|v| v.to_string().as_bytes() == l)
        .ok_or_else(|| {
            format!(
                "not a canonical integer: {:?}",
                l.escape_ascii().to_string()
            )
        })
}

fn frame(b: &[u8], at: usize, resp3: bool, depth: usize) -> Result<usize, String> {
    if depth > 64 {
        return Err("nested too deep".into());
    }
    let Some(&t) = b.get(at) else {
        return Err(format!("missing frame at {at}"));
    };
    if !resp3
        && matches!(
            t,
            b'_' | b'#' | b',' | b'(' | b'=' | b'%' | b'~' | b'>' | b'|' | b'!'
        )
    {
        return Err(format!("RESP3 type {:?} on a RESP2 connection", t as char));
    }
    let (l, mut next) = line(b, at + 1)?;
    match t {
        b'+' | b'-' => {}
        b':' => {
            int_of(l)?;
        }
        b'(' => {
            let digits = l.strip_prefix(b"-").unwrap_or(l);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err("bad big number".into());
            }
        }
        b'_' => {
            if !l.is_empty() {
                return Err("null with content".into());
            }
        }
        b'#' => {
            if l != b"t" && l != b"f" {
                return Err("bad boolean".into());
            }
        }
        b',' => {
            if l.is_empty() {
                return Err("empty double".into());
            }
        }
        b'$' | b'=' | b'!' => {
            let len = int_of(l)?;
            if len == -1 && t == b'$' {
                return Ok(next);
            }
            if len < 0 {
                return Err(format!("negative length {len}"));
            }
            let end = next + len as usize;
            if b.len() < end + 2 || &b[end..end + 2] != b"\r\n" {
                return Err(format!("bulk of {len} bytes at {at} not terminated"));
            }
            if t == b'=' && (len < 4 || b[next + 3] != b':') {
                return Err("verbatim string without a format".into());
            }
            return Ok(end + 2);
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let count = int_of(l)?;
            if count == -1 && t == b'*' {
                return Ok(next);
            }
            if count < 0 {
                return Err(format!("negative count {count}"));
            }
            let items = if matches!(t, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            for _ in 0..items {
                next = frame(b, next, resp3, depth + 1)?;
            }
            if t == b'|' {
                // An attribute precedes the frame it describes.
                next = frame(b, next, resp3, depth + 1)?;
            }
        }
        _ => return Err(format!("unknown type byte {:?} at {at}", t as char)),
    }
    Ok(next)
}
