//! SCRIPT: a database's Lua script cache (`crate::script`). SCRIPT LOAD
//! compiles and caches, EXISTS and FLUSH as Redis 7.0 answers them. A
//! script runs to its end before anything else of its database runs
//! (one past busy-reply-threshold is stopped), so KILL never finds one.

use super::Ctx;

/// `SCRIPT LOAD script`: the script's SHA-1 once it compiled.
pub fn load(ctx: &mut Ctx) {
    match ctx.t.scripts.load(ctx.args[2]) {
        Ok(sha) => ctx.out.bulk(sha.as_bytes()),
        Err(e) => ctx.error(&format!("ERR {e}")),
    }
}

/// `SCRIPT EXISTS sha1 [sha1 ...]`: 1 or 0 for each.
pub fn exists(ctx: &mut Ctx) {
    let shas = &ctx.args[2..];
    ctx.out.array(shas.len());
    for sha in shas {
        let there = ctx.t.scripts.exists(sha);
        ctx.out.int(i64::from(there));
    }
}

/// `SCRIPT FLUSH [ASYNC|SYNC]`: forgets every script (both modes free at
/// once: a cache is small next to a keyspace).
pub fn flush(ctx: &mut Ctx) {
    let ok = match ctx.args.len() {
        2 => true,
        3 => {
            ctx.args[2].eq_ignore_ascii_case(b"async") || ctx.args[2].eq_ignore_ascii_case(b"sync")
        }
        _ => false,
    };
    if !ok {
        return ctx.error("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
    }
    ctx.t.scripts.flush();
    ctx.out.ok();
}

/// `SCRIPT DEBUG YES|SYNC|NO`: there is no Lua debugger here, so
/// debugging stays off: NO is what is already so, YES and SYNC are
/// refused (not accepted and then ignored).
pub fn debug(ctx: &mut Ctx) {
    let mode = ctx.args[2];
    if mode.eq_ignore_ascii_case(b"no") {
        ctx.out.ok();
    } else if mode.eq_ignore_ascii_case(b"yes") || mode.eq_ignore_ascii_case(b"sync") {
        ctx.error("ERR SCRIPT DEBUG is not supported: this server has no Lua debugger");
    } else {
        ctx.error("ERR Use SCRIPT DEBUG YES/SYNC/NO");
    }
}

/// `SCRIPT KILL`: no other command of a database runs while its script
/// does, so there is never one to kill.
pub fn kill(ctx: &mut Ctx) {
    ctx.error("NOTBUSY No scripts in execution right now.");
}

/// `SCRIPT HELP`, word for word as Redis 7.0 (whose last line says
/// "Prints", unlike the other commands' help).
pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "SCRIPT",
        &[
            "DEBUG (YES|SYNC|NO)",
            "    Set the debug mode for subsequent scripts executed.",
            "EXISTS <sha1> [<sha1> ...]",
            "    Return information about the existence of the scripts in the script cache.",
            "FLUSH [ASYNC|SYNC]",
            "    Flush the Lua scripts cache. Very dangerous on replicas.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the scripts cache.",
            "    * SYNC: Synchronously flush the scripts cache.",
            "KILL",
            "    Kill the currently executing Lua script.",
            "LOAD <script>",
            "    Load a script into the scripts cache without executing it.",
        ],
        "    Prints this help.",
    );
}
