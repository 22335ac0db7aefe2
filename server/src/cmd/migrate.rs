//! MIGRATE: moves keys to another server (redis-server or anykv) with
//! RESTORE, then deletes them here unless COPY, as Redis 7.0 does.
//!
//! Like redis-server, the transfer is synchronous: the command waits for
//! the target (at most `timeout` per step), and with it every database on
//! this executor. So it is the operator's command: a customer's database
//! may not run it (it would also let a customer's database open
//! connections to any address); customers move data with DUMP/RESTORE or
//! replication. Connections to targets are kept 10 s between MIGRATEs,
//! as Redis keeps them (logged in, in the database last selected), one
//! set per executor thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{errors, Ctx, NOTIFY_GENERIC};
use crate::util::parse_i64;

/// `MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE]
/// [AUTH password | AUTH2 username password] [KEYS key [key ...]]`.
pub fn migrate(ctx: &mut Ctx) {
    let argc = ctx.args.len();
    let (mut copy, mut replace) = (false, false);
    let mut auth: Option<(Option<&[u8]>, &[u8])> = None;
    let (mut first, mut count) = (3, 1);
    let mut j = 6;
    while j < argc {
        let a = ctx.args[j];
        let more = argc - j - 1;
        if a.eq_ignore_ascii_case(b"copy") {
            copy = true;
        } else if a.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if a.eq_ignore_ascii_case(b"auth") {
            if more == 0 {
                return ctx.syntax_error();
            }
            auth = Some((None, ctx.args[j + 1]));
            j += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            if more < 2 {
                return ctx.syntax_error();
            }
            auth = Some((Some(ctx.args[j + 1]), ctx.args[j + 2]));
            j += 2;
        } else if a.eq_ignore_ascii_case(b"keys") {
            if !ctx.args[3].is_empty() {
                return ctx.err("When using MIGRATE KEYS option, the key argument must be set to the empty string");
            }
            first = j + 1;
            count = argc - j - 1;
            break;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let (Some(timeout), Some(dbid)) = (parse_i64(ctx.args[5]), parse_i64(ctx.args[4])) else {
        return ctx.err(errors::NOT_INTEGER);
    };
    let timeout = Duration::from_millis(if timeout <= 0 { 1000 } else { timeout as u64 });

    // The keys that exist, their payloads and remaining times to live.
    let mut keys: Vec<(&[u8], Vec<u8>, i64)> = Vec::new();
    let now = ctx.now_ms;
    for k in first..first + count {
        let key = ctx.args[k];
        if let Some(idx) = ctx.lookup_read(key) {
            let e = ctx.db().entry(idx);
            let ttl = if e.has_expire() {
                (e.expire_at - now).max(1)
            } else {
                0
            };
            keys.push((key, crate::rdb::write::dump_value(&e.value), ttl));
        }
    }
    if keys.is_empty() {
        return ctx.out.simple("NOKEY");
    }

    let target = format!(
        "{}:{}",
        String::from_utf8_lossy(ctx.args[1]),
        String::from_utf8_lossy(ctx.args[2])
    );
    // A cached connection may have been closed by the target meanwhile:
    // one more try on a new one when nothing was answered.
    let mut may_retry = true;
    loop {
        let mut conn = match take_socket(&target, ctx.args[1], ctx.args[2], timeout) {
            Ok(c) => c,
            // Redis connects without blocking and finds a refused
            // connection when it writes: its words for it are those.
            Err(Some(std::io::ErrorKind::ConnectionRefused)) => {
                return ctx.error("IOERR error or timeout writing to target instance")
            }
            Err(_) => return ctx.error("IOERR error or timeout connecting to the client"),
        };
        match transfer(ctx, &mut conn, auth, dbid, replace, copy, &keys) {
            Transfer::Done {
                moved,
                target_error,
            } => {
                conn.last_dbid = if target_error.is_some() { -1 } else { dbid };
                put_socket(target, conn);
                log_moved(ctx, &moved);
                match target_error {
                    Some(e) => {
                        let msg = format!(
                            "Target instance replied with error: {}",
                            String::from_utf8_lossy(&e[1..])
                        );
                        ctx.err(&msg);
                    }
                    None => ctx.out.ok(),
                }
                return;
            }
            Transfer::Failed {
                moved,
                writing,
                timed_out,
                answered,
            } => {
                log_moved(ctx, &moved);
                // Once more on a new connection, unless it timed out or
                // the target answered something (Redis's rule).
                if may_retry && !answered && !timed_out {
                    may_retry = false;
                    continue;
                }
                return ctx.error(if writing {
                    "IOERR error or timeout writing to target instance"
                } else {
                    "IOERR error or timeout reading to target instance"
                });
            }
        }
    }
}

/// What the target acknowledged is gone from here: logged as one DEL.
fn log_moved(ctx: &mut Ctx, moved: &[Vec<u8>]) {
    if !moved.is_empty() {
        let mut del: Vec<&[u8]> = vec![b"DEL"];
        del.extend(moved.iter().map(Vec::as_slice));
        ctx.propagate(&del);
    }
}

/// How one attempt ended.
enum Transfer {
    /// Every reply read; the first error the target gave, if any.
    Done {
        moved: Vec<Vec<u8>>,
        target_error: Option<Vec<u8>>,
    },
    /// The connection failed (the keys moved before it stay moved).
    Failed {
        moved: Vec<Vec<u8>>,
        writing: bool,
        timed_out: bool,
        answered: bool,
    },
}

/// Sends AUTH, SELECT (unless the connection is in that database already)
/// and a RESTORE per key, then reads the replies; each key the target
/// restored is deleted here, unless COPY.
fn transfer(
    ctx: &mut Ctx,
    conn: &mut Cached,
    auth: Option<(Option<&[u8]>, &[u8])>,
    dbid: i64,
    replace: bool,
    copy: bool,
    keys: &[(&[u8], Vec<u8>, i64)],
) -> Transfer {
    let mut request = Vec::new();
    let mut push = |args: &[&[u8]]| crate::resp::encode_request(&mut request, args);
    if let Some((user, pw)) = auth {
        match user {
            Some(u) => push(&[b"AUTH", u, pw]),
            None => push(&[b"AUTH", pw]),
        }
    }
    let select = conn.last_dbid != dbid;
    let db = dbid.to_string();
    if select {
        push(&[b"SELECT", db.as_bytes()]);
    }
    for (key, payload, ttl) in keys {
        let ttl = ttl.to_string();
        let mut cmd: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), payload];
        if replace {
            cmd.push(b"REPLACE");
        }
        push(&cmd);
    }
    let failed = |moved, writing, e: Option<std::io::Error>, answered| Transfer::Failed {
        moved,
        writing,
        timed_out: e.is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        }),
        answered,
    };
    if let Err(e) = (&conn.stream).write_all(&request) {
        return failed(Vec::new(), true, Some(e), false);
    }
    let mut reader = BufReader::new(&conn.stream);
    // A reply line is short (Redis reads at most 1024 bytes of one): a
    // target sending more without an end of line is not answering.
    let mut line = || -> Result<Vec<u8>, Option<std::io::Error>> {
        let mut l = Vec::new();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut l) {
            Ok(0) => Err(None),
            Ok(_) if l.last() != Some(&b'\n') => Err(None),
            Ok(_) => Ok(l.trim_ascii_end().to_vec()),
            Err(e) => Err(Some(e)),
        }
    };
    // AUTH's and SELECT's replies: an error there fails every key.
    let mut target_error = None;
    for _ in 0..(auth.is_some() as usize + select as usize) {
        match line() {
            Ok(l) => {
                if l.first() == Some(&b'-') && target_error.is_none() {
                    target_error = Some(l);
                }
            }
            Err(e) => return failed(Vec::new(), false, e, false),
        }
    }
    let setup_failed = target_error.is_some();
    // Each key the target took moves, whatever happened to the others;
    // the reply is the first error.
    let mut moved = Vec::new();
    for (i, (key, _, _)) in keys.iter().enumerate() {
        let l = match line() {
            Ok(l) => l,
            Err(e) => return failed(moved, false, e, i > 0),
        };
        if setup_failed || l.first() == Some(&b'-') {
            if target_error.is_none() {
                target_error = Some(l);
            }
        } else if !copy {
            ctx.delete_key(key);
            ctx.notify(NOTIFY_GENERIC, "del", key);
            moved.push(key.to_vec());
        }
    }
    Transfer::Done {
        moved,
        target_error,
    }
}

/// The longest reply line read from a target.
const MAX_LINE: u64 = 1024;

/// How long an unused connection to a target is kept (Redis's
/// `MIGRATE_SOCKET_CACHE_TTL`), and how many are kept.
const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 64;

/// A connection to a target, kept between MIGRATEs as Redis keeps it: the
/// database it is in saves a SELECT, and it stays logged in.
struct Cached {
    stream: TcpStream,
    last_dbid: i64,
    last_use: std::time::Instant,
}

thread_local! {
    static SOCKETS: std::cell::RefCell<std::collections::HashMap<String, Cached>> =
        Default::default();
}

/// The cached connection to `target`, or a new one (Err: why not, when
/// the system said).
fn take_socket(
    target: &str,
    host: &[u8],
    port: &[u8],
    timeout: Duration,
) -> Result<Cached, Option<std::io::ErrorKind>> {
    close_idle_sockets();
    let cached = SOCKETS.with(|s| s.borrow_mut().remove(target));
    if let Some(c) = cached {
        let set = |s: &TcpStream| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        set(&c.stream).map_err(|e| Some(e.kind()))?;
        return Ok(c);
    }
    Ok(Cached {
        stream: connect(host, port, timeout)?,
        last_dbid: -1,
        last_use: std::time::Instant::now(),
    })
}

/// Closes this executor's connections to targets unused for
/// [`CACHE_TTL`] (the executor's cron calls it, as Redis's cron closes
/// them: a target must not see a connection linger for ever).
pub fn close_idle_sockets() {
    SOCKETS.with(|s| {
        let mut s = s.borrow_mut();
        if !s.is_empty() {
            s.retain(|_, c| c.last_use.elapsed() < CACHE_TTL);
        }
    });
}

fn put_socket(target: String, mut c: Cached) {
    c.last_use = std::time::Instant::now();
    SOCKETS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < CACHE_MAX || s.contains_key(&target) {
            s.insert(target, c);
        }
    });
}

/// A connection to the target, every step bounded by `timeout`.
fn connect(
    host: &[u8],
    port: &[u8],
    timeout: Duration,
) -> Result<TcpStream, Option<std::io::ErrorKind>> {
    let host = std::str::from_utf8(host).map_err(|_| None)?;
    let port: u16 = std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or(None)?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| Some(e.kind()))?
        .next()
        .ok_or(None)?;
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| Some(e.kind()))?;
    let setup = |s: &TcpStream| {
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)
    };
    setup(&s).map_err(|e| Some(e.kind()))?;
    Ok(s)
}
