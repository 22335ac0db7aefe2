//! Server commands: DBSIZE, FLUSHDB/FLUSHALL, SWAPDB, TIME, LASTSAVE,
//! SHUTDOWN, MONITOR, WAIT, SLOWLOG, LATENCY.

use super::{errors, Ctx};
use crate::util::{parse_i64, ustime};

/// Work a command leaves for the connection task to do after replying
/// (things that wait, which a handler on the executor thread must not do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspend {
    /// WAIT: reply `:<n>` once `want` replicas acknowledged `target`, or
    /// at the deadline (ms; 0 = never) with how many did.
    Wait {
        deadline_ms: i64,
        target: u64,
        want: usize,
    },
    /// PSYNC/SYNC: after this reply the connection is a replica link fed
    /// the stream from this offset.
    /// `wait_ack`: send nothing until the replica's first REPLCONF ACK
    /// (after a `$EOF:` payload, whose end a replica finds by the mark
    /// being the last bytes it read, as Redis 7 waits).
    Replica { from: u64, wait_ack: bool },
    /// PSYNC asked for a full sync while a background save runs: no reply
    /// yet; the connection starts the sync once the save is done.
    AwaitSync,
    /// Blocked on keys until served (reply arrives on the push queue) or
    /// the deadline (0 = never), when it replies a null array.
    Blocked { deadline_ms: i64 },
    /// AUTH logged in to another tenant: the connection moves there after
    /// this reply.
    Switch(crate::tenant::TenantId),
    /// A replica's customer request that the primary must run: this
    /// envelope and request go to the primary's node, and its reply is
    /// the client's (see `crate::forward`). `args`: the request, to run
    /// here after all if this node becomes the primary before it is sent.
    /// `silent`: the client turned replies off (CLIENT REPLY OFF/SKIP).
    /// `pinned`: on the connection's own stream (`forward::Pin`), sent
    /// once (never retried); `blocks`: a blocking command outside MULTI,
    /// which waits as long as the primary takes (its own timeout), where
    /// any other request gets the shared stream's bounded wait.
    Forward {
        req: Vec<u8>,
        args: Vec<Vec<u8>>,
        silent: bool,
        pinned: bool,
        blocks: bool,
        /// A read of a database this node holds no copy of: first this
        /// request (the read with the connection's position as its
        /// `min-token`) to the nearest copy's node; `req` goes to the
        /// primary only if that copy is behind or does not answer.
        read: Option<Vec<u8>>,
    },
    /// A `ryw` read on a replica that lacks the connection's last write:
    /// the connection waits up to `ryw-wait-ms` for the stream to bring
    /// it, then runs `args` again (here, or on the primary if still
    /// behind).
    AwaitApplied { args: Vec<Vec<u8>> },
    /// AUTH or HELLO with credentials for a database this node holds no
    /// copy of: `req` (an envelope and `AUTH <user> <password>`) goes to
    /// its primary's node, which checks them and answers with the
    /// database's users; they are installed here and `args` runs again,
    /// logging in with them. A refusal's reply is the client's.
    VerifyLogin {
        to: crate::tenant::TenantId,
        req: Vec<u8>,
        args: Vec<Vec<u8>>,
        /// The client turned replies off (CLIENT REPLY OFF/SKIP).
        silent: bool,
    },
}

pub fn dbsize(ctx: &mut Ctx) {
    let n = ctx.db().len();
    ctx.out.int(n as i64);
}

/// `getFlushCommandFlags`: only validates (freeing is immediate either way:
/// dropping tables is cheap compared with Redis's per-object frees).
fn flush_flags(ctx: &mut Ctx) -> bool {
    match ctx.args.len() {
        1 => true,
        2 if ctx.args[1].eq_ignore_ascii_case(b"sync")
            || ctx.args[1].eq_ignore_ascii_case(b"async") =>
        {
            true
        }
        _ => {
            ctx.syntax_error();
            false
        }
    }
}

pub fn flushdb(ctx: &mut Ctx) {
    if !flush_flags(ctx) {
        return;
    }
    let n = ctx.db().len() as u64;
    let db = ctx.s.db;
    ctx.t.touch_watched_in_dbs(&[db], None);
    let old = std::mem::take(ctx.db());
    crate::persist::detach_table(ctx.t, old);
    ctx.propagate(&[b"FLUSHDB"]);
    ctx.t.dirty += n;
    ctx.out.ok();
}

pub fn flushall(ctx: &mut Ctx) {
    if !flush_flags(ctx) {
        return;
    }
    let n = ctx.t.ks.total_keys() as u64;
    let all: Vec<usize> = (0..ctx.t.ks.dbs.len()).collect();
    ctx.t.touch_watched_in_dbs(&all, None);
    // As Redis: a snapshot in progress would save the data just flushed.
    if ctx.t.persist.bgsave_in_progress() {
        crate::persist::abort_job(ctx.t);
    }
    for i in 0..ctx.t.ks.dbs.len() {
        let old = std::mem::take(&mut ctx.t.ks.dbs[i]);
        crate::persist::detach_table(ctx.t, old);
    }
    ctx.propagate(&[b"FLUSHALL"]);
    ctx.t.dirty += n;
    // Persistence follows: an empty snapshot when save points are set
    // (Redis's rdbSave in flushallCommand), and the append-only log is
    // truncated by a rewrite whose base is now empty.
    if ctx.t.persist.enabled && !ctx.shared.config.read().save_params().is_empty() {
        let _ = crate::persist::save_command(ctx.t);
    }
    if ctx.t.persist.aof.is_some() && !ctx.t.persist.rewrite_in_progress() {
        ctx.t.persist.requested = Some(crate::persist::Purpose::Rewrite);
    }
    ctx.out.ok();
}

pub fn swapdb(ctx: &mut Ctx) {
    let parse = |a: &[u8]| parse_i64(a).filter(|v| *v >= i32::MIN as i64 && *v <= i32::MAX as i64);
    let Some(a) = parse(ctx.args[1]) else {
        return ctx.err("invalid first DB index");
    };
    let Some(b) = parse(ctx.args[2]) else {
        return ctx.err("invalid second DB index");
    };
    let n = ctx.t.ks.dbs.len() as i64;
    if a < 0 || a >= n || b < 0 || b >= n {
        return ctx.err(errors::DB_INDEX);
    }
    let (a, b) = (a as usize, b as usize);
    let other = move |d: usize| if d == a { b } else { a };
    ctx.t.touch_watched_in_dbs(&[a, b], Some(&other));
    ctx.t.ks.dbs.swap(a, b);
    ctx.propagate_as_is();
    ctx.out.ok();
}

pub fn time(ctx: &mut Ctx) {
    let us = ustime();
    ctx.out.array(2);
    ctx.out.bulk_i64(us / 1_000_000);
    ctx.out.bulk_i64(us % 1_000_000);
}

pub fn lastsave(ctx: &mut Ctx) {
    ctx.out.int(ctx.t.persist.lastsave);
}

/// SAVE: a snapshot now, blocking this tenant (as Redis's SAVE blocks).
pub fn save(ctx: &mut Ctx) {
    match crate::persist::save_command(ctx.t) {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(&e),
    }
}

/// BGSAVE [SCHEDULE]: a snapshot in the background, without fork: the
/// executor writes it in slices between commands (see `persist`).
pub fn bgsave(ctx: &mut Ctx) {
    let schedule = match ctx.args.len() {
        1 => false,
        2 if ctx.args[1].eq_ignore_ascii_case(b"schedule") => true,
        _ => return ctx.syntax_error(),
    };
    let p = &mut ctx.t.persist;
    if !p.enabled {
        return ctx.out.error(crate::persist::NOT_PERSISTENT);
    }
    if p.bgsave_in_progress() {
        return ctx.err("Background save already in progress");
    }
    if p.rewrite_in_progress() {
        if schedule {
            p.requested = Some(crate::persist::Purpose::Save);
            return ctx.out.simple("Background saving scheduled");
        }
        return ctx.err("Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible.");
    }
    p.requested = Some(crate::persist::Purpose::Save);
    ctx.out.simple("Background saving started");
}

/// BGREWRITEAOF: a new base for the append-only log, in the background.
pub fn bgrewriteaof(ctx: &mut Ctx) {
    let p = &mut ctx.t.persist;
    if !p.enabled {
        return ctx.out.error(crate::persist::NOT_PERSISTENT);
    }
    if p.rewrite_in_progress() {
        return ctx.err("Background append only file rewriting already in progress");
    }
    if p.aof.is_none() {
        // Redis rewrites even with AOF off (a one-off file); anykv's log
        // lives only while appendonly is on.
        return ctx.err("Background append only file rewriting needs appendonly yes");
    }
    if p.bgsave_in_progress() {
        p.rewrite_scheduled = true;
        p.requested = Some(crate::persist::Purpose::Rewrite);
        return ctx
            .out
            .simple("Background append only file rewriting scheduled");
    }
    p.requested = Some(crate::persist::Purpose::Rewrite);
    ctx.out
        .simple("Background append only file rewriting started");
}

pub fn shutdown(ctx: &mut Ctx) {
    for i in 1..ctx.args.len() {
        let a = ctx.args[i].to_ascii_lowercase();
        if !matches!(&a[..], b"nosave" | b"save" | b"now" | b"force" | b"abort") {
            return ctx.syntax_error();
        }
        if a == b"abort" {
            // No shutdown is ever in progress long enough to abort.
            return ctx.err("No shutdown in progress.");
        }
    }
    let mode = ctx.args[1..].iter().fold(None, |m, a| {
        if a.eq_ignore_ascii_case(b"save") {
            Some(true)
        } else if a.eq_ignore_ascii_case(b"nosave") {
            Some(false)
        } else {
            m
        }
    });
    tracing::warn!(client = ctx.s.info.id, "User requested shutdown...");
    // Executors run the tenants' persistence on the way out (see
    // executor::executor_main): fsync the log, save if asked or if save
    // points are set.
    ctx.shared.set_shutdown_save(mode);
    ctx.shared.begin_shutdown();
    // Redis sends no reply: the connection closes.
    ctx.s.close_after_reply = true;
}

pub fn monitor(ctx: &mut Ctx) {
    if !ctx.s.monitor {
        ctx.s.monitor = true;
        ctx.s.info.monitor.set(true);
        ctx.t.monitors.push(ctx.s.info.clone());
    }
    ctx.out.ok();
}

/// Formats a MONITOR line: `+<sec>.<usec> [<db> <addr>] "arg" ...`.
pub fn monitor_line(db: usize, addr: &str, args: &[&[u8]]) -> Vec<u8> {
    let us = ustime();
    let mut s = format!(
        "+{}.{:06} [{} {}]",
        us / 1_000_000,
        us % 1_000_000,
        db,
        addr
    );
    for a in args {
        s.push(' ');
        s.push_str(&repr(a));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Redis's `sdscatrepr`: a quoted, escaped rendering of bytes.
pub fn repr(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            c if c.is_ascii_graphic() || c == b' ' => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// WAIT numreplicas timeout: answers once that many replicas acknowledged
/// this connection's last write, or at the timeout with how many did
/// (see `crate::repl::primary`). Refused on replicas, as in Redis.
pub fn wait(ctx: &mut Ctx) {
    ctx.suspend = wait_parse(ctx);
}

fn wait_parse(ctx: &mut Ctx) -> Option<Suspend> {
    let Some(t) = parse_i64(ctx.args[2]) else {
        ctx.err("timeout is not an integer or out of range");
        return None;
    };
    if t < 0 {
        ctx.err("timeout is negative");
        return None;
    }
    if t > i64::MAX - ctx.now_ms {
        ctx.err("timeout is out of range");
        return None;
    }
    let Some(n) = parse_i64(ctx.args[1]) else {
        ctx.err(errors::NOT_INTEGER);
        return None;
    };
    // A negative count is allowed in 7.0 (answered at once); 7.2 refuses.
    if ctx.t.role == crate::repl::Role::Replica {
        ctx.err("WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
        return None;
    }
    // This connection's last write (Redis's `c->woff`).
    let target = ctx.s.woff;
    let acked = crate::repl::primary::acked(ctx.t, target);
    // Inside EXEC, WAIT answers at once (Redis: CLIENT_MULTI never blocks).
    if acked as i64 >= n || ctx.s.in_exec {
        ctx.out.int(acked as i64);
        return None;
    }
    // Ask the replicas to acknowledge now rather than at their next
    // periodic ACK (Redis sends `REPLCONF GETACK *` the same way), unless
    // clients are paused: the offset must stand still then.
    if !ctx.t.paused(ctx.now_ms) {
        ctx.t.log.append_no_db(&[b"REPLCONF", b"GETACK", b"*"]);
    }
    Some(Suspend::Wait {
        deadline_ms: if t > 0 { ctx.now_ms + t } else { 0 },
        target,
        want: n as usize,
    })
}

pub fn slowlog_get(ctx: &mut Ctx) {
    let mut count: i64 = 10;
    if ctx.args.len() == 3 {
        match parse_i64(ctx.args[2]) {
            Some(v) if v >= -1 => count = v,
            Some(_) => return ctx.err("count should be greater than or equal to -1"),
            None => return ctx.err(errors::NOT_INTEGER),
        }
    } else if ctx.args.len() > 3 {
        return super::client::subcommand_syntax_error(ctx);
    }
    let n = if count == -1 {
        ctx.t.slowlog.len()
    } else {
        (count as usize).min(ctx.t.slowlog.len())
    };
    ctx.out.array(n);
    let out = &mut *ctx.out;
    for e in ctx.t.slowlog.iter().take(n) {
        out.array(6);
        out.int(e.id as i64);
        out.int(e.time);
        out.int(e.duration_us as i64);
        out.array(e.args.len());
        for a in &e.args {
            out.bulk(a);
        }
        out.bulk(e.peer.as_bytes());
        out.bulk(&e.name);
    }
}

pub fn slowlog_len(ctx: &mut Ctx) {
    ctx.out.int(ctx.t.slowlog.len() as i64);
}

pub fn slowlog_reset(ctx: &mut Ctx) {
    ctx.t.slowlog.clear();
    ctx.out.ok();
}

pub fn slowlog_help(ctx: &mut Ctx) {
    super::command::reply_help(
        ctx,
        "SLOWLOG",
        &[
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
        ],
    );
}
