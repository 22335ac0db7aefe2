//! FUNCTION and FCALL: a database's function libraries
//! (`crate::script::function`), as Redis 7.0 answers them. LOAD, DELETE,
//! FLUSH and RESTORE change data: they enter the log as they came, so
//! replicas and restarts load the same libraries. A function runs to its
//! end before anything else of its database runs (one past
//! busy-reply-threshold is stopped), so KILL never finds one.

use super::Ctx;
use crate::script::eval::{execute, numkeys, Invocation, Kind};
use crate::script::function::{Policy, LOAD_TIMEOUT};

/// `FCALL function numkeys [key ...] [arg ...]`.
pub fn fcall(ctx: &mut Ctx) {
    call(ctx, false)
}

/// `FCALL_RO function numkeys [key ...] [arg ...]`: only functions flagged
/// `no-writes`.
pub fn fcall_ro(ctx: &mut Ctx) {
    call(ctx, true)
}

fn call(ctx: &mut Ctx, read_only: bool) {
    let Some((engine, func, flags, name)) = ctx.t.functions.get(ctx.args[1]) else {
        return ctx.error("ERR Function not found");
    };
    let Some(n) = numkeys(ctx, "ERR Bad number of keys provided") else {
        return;
    };
    execute(
        ctx,
        Invocation {
            engine,
            func,
            flags,
            name: &name,
            kind: Kind::Function,
            read_only,
            numkeys: n,
        },
    );
}

/// The most memory the database's Lua may take while a library loads.
fn memory(ctx: &Ctx) -> u64 {
    crate::script::eval::memory_cap(ctx.t)
}

/// `FUNCTION LOAD [REPLACE] code`: the library's name.
pub fn load(ctx: &mut Ctx) {
    let last = ctx.args.len() - 1;
    let mut replace = false;
    for a in &ctx.args[2..last] {
        if a.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else {
            let msg = format!("ERR Unknown option given: {}", String::from_utf8_lossy(a));
            return ctx.error(&msg);
        }
    }
    // (Replayed from the log, it ran once already: no time limit.)
    let timeout = (!ctx.s.replaying).then_some(LOAD_TIMEOUT);
    let mem = memory(ctx);
    match ctx.t.functions.load(ctx.args[last], replace, timeout, mem) {
        Ok(name) => {
            ctx.propagate_as_is();
            ctx.t.dirty += 1;
            ctx.out.bulk(name.as_bytes());
        }
        Err(e) => ctx.error(&format!("ERR {e}")),
    }
}

/// `FUNCTION DELETE library`.
pub fn delete(ctx: &mut Ctx) {
    if !ctx.t.functions.delete(ctx.args[2]) {
        return ctx.error("ERR Library not found");
    }
    ctx.propagate_as_is();
    ctx.t.dirty += 1;
    ctx.out.ok();
}

/// `FUNCTION FLUSH [ASYNC|SYNC]` (both free at once: libraries are small
/// next to a keyspace).
pub fn flush(ctx: &mut Ctx) {
    if ctx.args.len() > 3 {
        return super::client::subcommand_syntax_error(ctx);
    }
    if ctx.args.len() == 3
        && !ctx.args[2].eq_ignore_ascii_case(b"sync")
        && !ctx.args[2].eq_ignore_ascii_case(b"async")
    {
        return ctx.error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
    }
    ctx.t.functions.flush();
    ctx.propagate_as_is();
    ctx.t.dirty += 1;
    ctx.out.ok();
}

/// `FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]`.
pub fn list(ctx: &mut Ctx) {
    let mut with_code = false;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let a = ctx.args[i];
        if !with_code && a.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if pattern.is_none() && a.eq_ignore_ascii_case(b"libraryname") {
            if i + 1 >= ctx.args.len() {
                return ctx.error("ERR library name argument was not given");
            }
            i += 1;
            pattern = Some(ctx.args[i]);
        } else {
            let msg = format!("ERR Unknown argument {}", String::from_utf8_lossy(a));
            return ctx.error(&msg);
        }
        i += 1;
    }
    let libs: Vec<_> = ctx
        .t
        .functions
        .libraries()
        .filter(|l| pattern.is_none_or(|p| crate::util::glob_match(p, l.name.as_bytes(), true)))
        .collect();
    let out = &mut *ctx.out;
    out.array(libs.len());
    for lib in libs {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(lib.name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(lib.functions.len());
        for f in &lib.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d),
                None => out.null(),
            }
            out.bulk(b"flags");
            let names = f.flags.names();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&lib.code);
        }
    }
}

/// `FUNCTION DUMP`: the libraries as a payload for FUNCTION RESTORE (here
/// or on a redis-server).
pub fn dump(ctx: &mut Ctx) {
    let payload = ctx.t.functions.dump();
    ctx.out.bulk(&payload);
}

/// `FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]`.
pub fn restore(ctx: &mut Ctx) {
    if ctx.args.len() > 4 {
        return super::client::subcommand_syntax_error(ctx);
    }
    let policy =
        match ctx.args.get(3) {
            None => Policy::Append,
            Some(p) if p.eq_ignore_ascii_case(b"append") => Policy::Append,
            Some(p) if p.eq_ignore_ascii_case(b"replace") => Policy::Replace,
            Some(p) if p.eq_ignore_ascii_case(b"flush") => Policy::Flush,
            Some(_) => return ctx.error(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            ),
        };
    let mem = memory(ctx);
    let timeout = (!ctx.s.replaying).then_some(LOAD_TIMEOUT);
    match ctx.t.functions.restore(ctx.args[2], policy, timeout, mem) {
        Ok(()) => {
            ctx.propagate_as_is();
            ctx.t.dirty += 1;
            ctx.out.ok();
        }
        Err(e) => ctx.error(&format!("ERR {e}")),
    }
}

/// `FUNCTION STATS`: no function is ever running when this runs (see the
/// module's comment), and the one engine's counts.
pub fn stats(ctx: &mut Ctx) {
    let (libs, funcs) = ctx.t.functions.counts();
    let out = &mut *ctx.out;
    out.map(2);
    out.bulk(b"running_script");
    out.null();
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(libs as i64);
    out.bulk(b"functions_count");
    out.int(funcs as i64);
}

/// `FUNCTION KILL`: see the module's comment.
pub fn kill(ctx: &mut Ctx) {
    ctx.error("NOTBUSY No scripts in execution right now.");
}

/// `FUNCTION HELP`, as Redis 7.0 words it (its "Library description"
/// line included, though LIST has no such field).
pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "FUNCTION",
        &[
        "LOAD [REPLACE] <FUNCTION CODE>",
        "    Create a new library with the given library name and code.",
        "DELETE <LIBRARY NAME>",
        "    Delete the given library.",
        "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
        "    Return general information on all the libraries:",
        "    * Library name",
        "    * The engine used to run the Library",
        "    * Library description",
        "    * Functions list",
        "    * Library code (if WITHCODE is given)",
        "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
        "STATS",
        "    Return information about the current function running:",
        "    * Function name",
        "    * Command used to run the function",
        "    * Duration in MS that the function is running",
        "    If no function is running, return nil",
        "    In addition, returns a list of available engines.",
        "KILL",
        "    Kill the current running function.",
        "FLUSH [ASYNC|SYNC]",
        "    Delete all the libraries.",
        "    When called without the optional mode argument, the behavior is determined by the",
        "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
        "    * ASYNC: Asynchronously flush the libraries.",
        "    * SYNC: Synchronously flush the libraries.",
        "DUMP",
        "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
        "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
        "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
        "    control how to handle existing libraries (default APPEND):",
        "    * FLUSH: delete all existing libraries.",
        "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
        "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
        "      libraries with the new libraries (notice that even on this option there is a chance of failure",
        "      in case of functions name collision with another library).",
        ],
        "    Prints this help.",
    );
}
