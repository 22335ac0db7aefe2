//! Running a script: `EVAL`, `EVALSHA` and their read-only forms, as Redis
//! 7.0 runs them. The script runs to its end inside the database's
//! executor (nothing else of the database runs meanwhile: it is atomic);
//! its `redis.call`/`redis.pcall` run commands in the database as the
//! caller; the writes it makes are propagated as their effects, wrapped
//! in MULTI/EXEC when there are several (7.0's effects replication).

use mlua::Value;

use crate::cmd::Ctx;

use super::convert::{at_least_elements, lua_to_reply, Budget, TooBig};
use super::engine::{CallError, Engine, Run};
use crate::resp::Reply;

/// The most memory a database's Lua state may hold (its scripts' tables
/// and strings), whatever its plan: 512 MB.
pub const LUA_MEMORY_CAP: u64 = 512 << 20;

/// The most elements a script's reply may have (a few tables naming
/// each other could otherwise make an endless one).
pub const MAX_REPLY_ELEMENTS: usize = 10_000_000;

/// The most memory a tenant's Lua state may hold: its plan's limit, at
/// most [`LUA_MEMORY_CAP`].
pub(crate) fn memory_cap(t: &crate::tenant::Tenant) -> u64 {
    let plan = t.limit.as_ref().map_or(0, |l| l.maxmemory);
    if plan > 0 {
        plan.min(LUA_MEMORY_CAP)
    } else {
        LUA_MEMORY_CAP
    }
}

/// `EVAL script numkeys [key ...] [arg ...]`.
pub fn eval(ctx: &mut Ctx) {
    run(ctx, false, false)
}

/// `EVALSHA sha1 numkeys [key ...] [arg ...]`.
pub fn evalsha(ctx: &mut Ctx) {
    run(ctx, true, false)
}

pub fn eval_ro(ctx: &mut Ctx) {
    run(ctx, false, true)
}

pub fn evalsha_ro(ctx: &mut Ctx) {
    run(ctx, true, true)
}

/// The number of keys in `ctx.args[2]`, checked against the arguments
/// (`bad`: Redis's words for one that is no number), or the error sent.
pub(crate) fn numkeys(ctx: &mut Ctx, bad: &str) -> Option<usize> {
    let Some(n) = std::str::from_utf8(ctx.args[2])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        ctx.error(bad);
        return None;
    };
    if n > (ctx.args.len() - 3) as i64 {
        ctx.error("ERR Number of keys can't be greater than number of args");
        return None;
    }
    if n < 0 {
        ctx.error("ERR Number of keys can't be negative");
        return None;
    }
    Some(n as usize)
}

fn run(ctx: &mut Ctx, by_sha: bool, read_only: bool) {
    let Some(n) = numkeys(ctx, "ERR value is not an integer or out of range") else {
        return;
    };
    let sha: std::borrow::Cow<str> = if by_sha {
        crate::util::ascii_lower(ctx.args[1])
    } else {
        match ctx.t.scripts.load(ctx.args[1]) {
            Ok(sha) => sha.into(),
            Err(e) => return ctx.error(&format!("ERR {e}")),
        }
    };
    let Some((engine, func, flags)) = ctx.t.scripts.function(&sha) else {
        return ctx.error("NOSCRIPT No matching script. Please use EVAL.");
    };
    execute(
        ctx,
        Invocation {
            engine,
            func,
            flags,
            name: &sha,
            kind: Kind::Script,
            read_only,
            numkeys: n,
        },
    );
}

/// Whether a script (EVAL) or a library's function (FCALL) runs: they
/// differ in how they get their keys and arguments and in what errors
/// call them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Script,
    Function,
}

/// One run: the compiled function, in its Lua state, and how it was
/// asked for.
pub(crate) struct Invocation<'a> {
    pub engine: Engine,
    pub func: mlua::Function,
    pub flags: super::Flags,
    /// The script's SHA-1 or the function's name (for errors).
    pub name: &'a str,
    pub kind: Kind,
    /// EVAL_RO, EVALSHA_RO, FCALL_RO.
    pub read_only: bool,
    /// `ctx.args[3..3 + numkeys]` are the keys, the rest the arguments.
    pub numkeys: usize,
}

/// Runs `inv` as the command's reply: atomically, its writes one
/// transaction in the log.
pub(crate) fn execute(ctx: &mut Ctx, inv: Invocation) {
    let Invocation {
        engine,
        func,
        flags,
        name,
        kind,
        read_only,
        numkeys: n,
    } = inv;
    // On a replica cut off from its primary (`replica-serve-stale-data
    // no`), a script runs only if it says `allow-stale`. The command's
    // own check stopped those that declare flags, except inside EXEC.
    if !flags.allow_stale
        && ctx
            .t
            .running_stale(ctx.set.replica_serve_stale, ctx.s.replaying)
    {
        return ctx.error(if flags.declared {
            "MASTERDOWN Link with MASTER is down, replica-serve-stale-data is set to 'no' and 'allow-stale' flag is not set on the script."
        } else {
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."
        });
    }
    if read_only && flags.declared && !flags.no_writes {
        return ctx.error("ERR Can not execute a script with write flag using *_ro command.");
    }
    // A script declaring no-writes may not write either.
    let no_writes = read_only || (flags.declared && flags.no_writes);
    let args: &[&[u8]] = ctx.args;
    let (keys, argv) = (&args[3..3 + n], &args[3 + n..]);
    // What a script changes goes out as one transaction (unless it runs
    // inside EXEC, whose transaction it is part of).
    let own_tx = !ctx.t.log.in_tx();
    if own_tx {
        ctx.t.log.begin_tx();
    }
    let db_before = ctx.s.db;
    let (in_exec_before, in_script_before) = (ctx.s.in_exec, ctx.s.in_script);
    // Blocking commands do not block in a script (as in a transaction).
    ctx.s.in_exec = true;
    ctx.s.in_script = true;
    // Over the memory limit at the start, a script without `allow-oom`
    // runs no `denyoom` command until it has written (Redis's
    // scriptVerifyOOM; one declaring its flags did not even start).
    let run = engine.run();
    run.oom
        .set(ctx.s.oom_at_start && !ctx.s.replaying && !flags.allow_oom);
    run.dirty_at_start.set(ctx.t.dirty);
    run.errors_mark.set(ctx.t.stats.total_error_replies);
    let key = super::busy::key_of(&*ctx.t);
    let finish = super::busy::Finish {
        slice: &run.slice,
        key,
    };
    let result = call_script(ctx, &engine, &func, kind, keys, argv, no_writes);
    // Suspended on the way: its database is no longer busy; what its
    // clients were refused meanwhile is counted now.
    let refused = run.slice.finish(key, run.wrote.get());
    drop(finish);
    super::busy::count_refused(ctx.t, refused);
    ctx.s.in_exec = in_exec_before;
    ctx.s.in_script = in_script_before;
    // SELECT inside a script is the script's own.
    ctx.s.db = db_before;
    ctx.s.info.db.set(db_before);
    if own_tx {
        ctx.t.log.commit_tx();
    }
    let (msg, line) = match result {
        Ok(Ok(v)) => {
            let mark = ctx.out.len();
            let mut budget = Budget::new(MAX_REPLY_ELEMENTS, LUA_MEMORY_CAP as usize);
            let script_resp = engine.run().resp.get();
            // Refused at once when surely too large (see at_least_elements).
            let converted = if at_least_elements(&v, MAX_REPLY_ELEMENTS) > MAX_REPLY_ELEMENTS {
                Err(TooBig::Elements)
            } else {
                lua_to_reply(&v, ctx.out, &mut budget, script_resp)
            };
            match converted {
                Ok(()) => {
                    for e in &budget.errors {
                        ctx.t.count_error(e);
                    }
                    // As Redis: the script failed when its reply holds an
                    // error (one counted where it came from, or one
                    // counted since its last command).
                    if budget.uncounted > 0
                        || ctx.t.stats.total_error_replies > engine.run().errors_mark.get()
                    {
                        ctx.failed = true;
                    }
                }
                Err(why) => {
                    ctx.out.buf.truncate(mark);
                    match why {
                        TooBig::Nested => ctx.error("ERR reached lua stack limit"),
                        TooBig::Elements => ctx.error(&format!(
                            "ERR the script's reply is too large (over {MAX_REPLY_ELEMENTS} elements or {} MB)",
                            LUA_MEMORY_CAP >> 20
                        )),
                    }
                }
            }
            return;
        }
        // An error the script raised: a string (Lua's, with its
        // position) gets `ERR`; an error table (`redis.call`'s, or the
        // script's own) keeps its code.
        Ok(Err((e, line))) => (raised(&e), line),
        Err(e) => (error_text(&e), 1),
    };
    let source = match kind {
        Kind::Script => "user_script",
        Kind::Function => "user_function",
    };
    let ((msg, counted), line) = (msg, line);
    let msg = format!("{msg} script: {name}, on @{source}:{line}.");
    // A command's error the script passed on was counted when the
    // command failed: the script's reply is not counted again.
    if counted {
        ctx.failed = true;
        ctx.out.error(&msg);
    } else {
        ctx.error(&msg);
    }
}

/// What a script's raised error says, as Redis reports it, and whether
/// it was counted already (see [`CallError`]).
pub(super) fn raised(e: &Value) -> (String, bool) {
    match e {
        Value::Table(t) => (
            match t.raw_get::<Value>("err") {
                Ok(Value::String(s)) => s.to_string_lossy(),
                _ => "ERR unknown error".to_string(),
            },
            t.raw_get::<bool>("ignore_error_stats_update")
                .unwrap_or(false),
        ),
        Value::String(s) => (format!("ERR {}", s.to_string_lossy()), false),
        Value::Error(e) => error_text(e),
        other => (
            format!("ERR {}", other.to_string().unwrap_or_default()),
            false,
        ),
    }
}

/// An mlua error as Redis's words: `redis.call`'s error reply as it
/// came, anything else `ERR` and its first line; and whether it was
/// counted already (see [`CallError`]).
pub(super) fn error_text(e: &mlua::Error) -> (String, bool) {
    let mut cur = e;
    loop {
        match cur {
            mlua::Error::CallbackError { cause, .. } => cur = cause,
            mlua::Error::ExternalError(x) => {
                if let Some(c) = x.downcast_ref::<CallError>() {
                    return (c.msg.clone(), c.counted);
                }
                return (format!("ERR {x}"), false);
            }
            mlua::Error::RuntimeError(msg) => {
                return (
                    format!("ERR {}", msg.lines().next().unwrap_or_default()),
                    false,
                )
            }
            other => {
                return (
                    format!(
                        "ERR {}",
                        other.to_string().lines().next().unwrap_or_default()
                    ),
                    false,
                )
            }
        }
    }
}

fn call_script(
    ctx: &mut Ctx,
    engine: &Engine,
    func: &mlua::Function,
    kind: Kind,
    keys: &[&[u8]],
    argv: &[&[u8]],
    no_writes: bool,
) -> mlua::Result<Result<Value, (Value, i32)>> {
    let lua = engine.lua();
    let run = engine.run();
    run.no_writes.set(no_writes);
    run.resp.set(2);
    run.repl.set(3);
    run.function.set(kind == Kind::Function);
    // A script shares its executor with other databases. Run from a
    // client's coroutine it is suspended every script-time-slice
    // (`super::busy`): the others go on, its own clients wait, then get
    // -BUSY. Anywhere else it is stopped past busy-reply-threshold
    // (every check raises again, so a pcall loop cannot hold on for
    // long); not when the log is replayed (what ran once must run
    // whole). Nor may it take the node's memory: at most the database's
    // plan limit (or LUA_MEMORY_CAP without one) for Lua's own
    // allocations.
    let limit = (!ctx.s.replaying)
        .then(|| std::time::Duration::from_millis(ctx.set.busy_reply_threshold_ms.max(1)));
    let slice = std::time::Duration::from_micros(ctx.set.script_time_slice_us.max(100));
    let cap = memory_cap(ctx.t);
    let outcome = engine.limited(
        cap,
        limit,
        Some(slice),
        "Script killed: it ran longer than busy-reply-threshold",
        || {
            run.with_ctx(ctx, || {
                let runner = match kind {
                    // (The runner makes them the globals KEYS and ARGV.)
                    Kind::Script => engine.runner(),
                    Kind::Function => engine.fcall(),
                };
                super::call::run(lua, runner, func, keys, argv)
            })
        },
    );
    // A script that failed may have left much garbage (one out of memory,
    // up to the limit): collected now, not at the next one.
    if !matches!(outcome, Ok((true, _, _))) {
        let _ = lua.gc_collect();
    }
    let (ok, v, line): (bool, Value, Option<i32>) = outcome?;
    Ok(if ok {
        Ok(v)
    } else {
        Err((v, line.unwrap_or(1)))
    })
}

/// `redis.acl_check_cmd(command, args...)`: whether the caller's user may
/// run it.
pub(super) fn acl_check(ctx: &mut Ctx, argv: &[&[u8]]) -> Result<bool, String> {
    let r = match crate::cmd::lookup(argv) {
        crate::cmd::Lookup::Found(r) if !argv.is_empty() => r,
        _ => return Err("ERR Invalid command passed to redis.acl_check_cmd()".into()),
    };
    crate::dispatch::refresh_acl(ctx.shared, ctx.t.id, ctx.s);
    Ok(ctx.s.unrestricted
        || crate::dispatch::acl_check(ctx.shared, ctx.t.id, ctx.s, r, argv).is_ok())
}

/// Runs one `redis.call`: the buffer holding the command's reply (an
/// error reply too), or the error of a call refused before running.
pub(super) fn command(ctx: &mut Ctx, run: &Run, argv: &[&[u8]]) -> Result<Reply, String> {
    let result = match checked(ctx, run, argv) {
        Err((msg, id)) => Err(refused(ctx, msg, id)),
        Ok(r) => Ok(run_command(ctx, run, r, argv)),
    };
    // (Errors counted from here on are the script's own.)
    run.errors_mark.set(ctx.t.stats.total_error_replies);
    result
}

/// A `redis.call` refused before running: counted, as Redis counts a call
/// it refuses (`id`: the command, when it is one), and its error text.
pub(super) fn refused(ctx: &mut Ctx, msg: String, id: Option<usize>) -> String {
    ctx.t.count_error(&msg);
    if let Some(s) = id.and_then(|id| ctx.t.stats.commands.get_mut(id)) {
        s.rejected_calls += 1;
    }
    msg
}

/// The command a `redis.call` names once the checks Redis makes before
/// running it pass; else the error and the command refused.
fn checked(
    ctx: &mut Ctx,
    run: &Run,
    argv: &[&[u8]],
) -> Result<&'static crate::cmd::table::Registered, (String, Option<usize>)> {
    let no_writes = run.no_writes.get();
    if argv.is_empty() {
        return Err((
            "ERR Please specify at least one argument for this redis lib call".into(),
            None,
        ));
    }
    let r = match crate::cmd::lookup(argv) {
        crate::cmd::Lookup::Found(r) => r,
        _ => return Err(("ERR Unknown Redis command called from script".into(), None)),
    };
    let refuse = |msg: &str| Err((msg.to_string(), Some(r.id)));
    if !crate::dispatch::arity_fits(r.spec, argv.len()) {
        return refuse("ERR Wrong number of args calling Redis command from script");
    }
    if r.noscript {
        return refuse("ERR This Redis command is not allowed from script");
    }
    // A script that may run on a stale replica (`allow-stale`) runs only
    // the commands that may.
    if ctx
        .t
        .running_stale(ctx.set.replica_serve_stale, ctx.s.replaying)
        && !r.spec.has_flag("stale")
    {
        return refuse("ERR Can not execute the command on a stale replica");
    }
    if r.spec.scope == crate::cmd::table::Scope::Denied && ctx.t.is_customer() {
        return refuse(&format!(
            "NOPERM this user has no permissions to run the '{}' command",
            r.fullname
        ));
    }
    // The caller's ACL holds inside its script (Redis's words).
    crate::dispatch::refresh_acl(ctx.shared, ctx.t.id, ctx.s);
    if !ctx.s.unrestricted {
        use crate::acl::Denied;
        if let Err(denied) = crate::dispatch::acl_check(ctx.shared, ctx.t.id, ctx.s, r, argv) {
            crate::dispatch::acl_log(ctx.shared, ctx.t.id, ctx.s, denied, "lua", r, argv);
            return refuse(match denied {
                Denied::Command => "ERR The user executing the script can't run this command or subcommand",
                Denied::Key(_) => "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments",
                Denied::Channel(_) => "ERR The user executing the script can't publish to the channel mentioned in the command",
            });
        }
    }
    // A read-only script neither writes nor publishes (PUBLISH and the
    // like move the replication stream).
    if (r.write || r.may_replicate) && no_writes {
        return refuse("ERR Write commands are not allowed from read-only scripts.");
    }
    // A replica's data changes only by its primary's stream.
    if r.write && ctx.t.role == crate::repl::Role::Replica && !ctx.s.replaying {
        return refuse("READONLY You can't write against a read only replica.");
    }
    // Writes stop while persistence fails, inside scripts too.
    if r.write {
        if let Some(msg) = crate::dispatch::disk_error(ctx.t, ctx.shared) {
            return refuse(&msg);
        }
    }
    if r.denyoom && run.oom.get() && ctx.t.dirty == run.dirty_at_start.get() {
        return refuse("OOM command not allowed when used memory > 'maxmemory'.");
    }
    Ok(r)
}

/// Runs a checked `redis.call`: the buffer holding its reply.
fn run_command(
    ctx: &mut Ctx,
    run: &Run,
    r: &crate::cmd::table::Registered,
    argv: &[&[u8]],
) -> Reply {
    let mut out = run.take_reply();
    // redis.set_repl(redis.REPL_NONE): the effects stay here.
    let unlogged = run.repl.get() == 0;
    let was_suppressed = ctx.t.log.is_suppressed();
    if unlogged {
        ctx.t.log.set_suppressed(true);
    }
    if r.write {
        run.wrote.set(true);
    }
    let start = std::time::Instant::now();
    {
        let mut inner = Ctx {
            args: argv,
            out: &mut out,
            t: &mut *ctx.t,
            s: &mut *ctx.s,
            shared: ctx.shared,
            set: ctx.set,
            now_ms: ctx.now_ms,
            spec: r.spec,
            failed: false,
            suspend: None,
        };
        (r.spec.handler)(&mut inner);
        // A tracking caller is remembered as having read the script's
        // declared keys once the script reads anything (Redis 7.0 takes
        // them from the calling command, not from the call).
        if r.read && inner.s.info.tracking.borrow().is_some() {
            let keys = crate::cmd::command::key_positions(ctx.spec, ctx.args);
            crate::tracking::after_read(
                inner.t,
                &inner.s.info,
                keys.into_iter().map(|k| ctx.args[k]),
            );
        }
        let failed = inner.failed;
        let us = start.elapsed().as_micros() as u64;
        crate::dispatch::count_call(ctx.t, r.id, us, failed);
    }
    ctx.t.log.set_suppressed(was_suppressed);
    out
}
