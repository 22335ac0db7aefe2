//! Running a script: `EVAL`, `EVALSHA` and their read-only forms, as Redis
//! 7.0 runs them. The script runs to its end inside the database's
//! executor (nothing else of the database runs meanwhile: it is atomic);
//! its `redis.call`/`redis.pcall` run commands in the database as the
//! caller; the writes it makes are propagated as their effects, wrapped
//! in MULTI/EXEC when there are several (7.0's effects replication).

use std::cell::RefCell;

use mlua::{Lua, LuaOptions, MultiValue, StdLib, Value};

use crate::cmd::Ctx;
use crate::resp::Reply;

use super::convert::{error_table, lua_to_reply, reply_to_lua, Budget, TooBig};

/// The state scripts run in: Lua 5.1 with the libraries Redis loads
/// (base without `loadfile`/`dofile`/`print`, `table`, `string`, `math`,
/// and `bit`, `struct`, `cjson`, `cmsgpack`: `super::libs`),
/// the `redis` table's constant parts, and globals protected as in 7.0 (a
/// script may neither create a global nor read one that does not exist).
pub fn new_state() -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::new(),
    )?;
    super::libs::install(&lua)?;
    let g = lua.globals();
    for name in ["loadfile", "dofile", "print", "newproxy"] {
        g.raw_set(name, Value::Nil)?;
    }
    let redis = lua.create_table()?;
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, msg: mlua::String| error_table(lua, &msg.to_str()?))?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, msg: mlua::String| {
            let t = lua.create_table()?;
            t.raw_set("ok", msg)?;
            Ok(t)
        })?,
    )?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, s: mlua::String| Ok(super::sha1_hex(&s.as_bytes())))?,
    )?;
    redis.raw_set(
        "log",
        lua.create_function(|_, (level, msg): (i64, mlua::String)| {
            let msg = msg.to_string_lossy();
            match level {
                0 | 1 => tracing::debug!(target: "script", "{msg}"),
                2 => tracing::info!(target: "script", "{msg}"),
                _ => tracing::warn!(target: "script", "{msg}"),
            }
            Ok(())
        })?,
    )?;
    for (name, v) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
    ] {
        redis.raw_set(name, v)?;
    }
    // 7.0 always replicates a script's effects: this says so.
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    // The RESP version `redis.call` replies come in (for this run).
    redis.raw_set(
        "setresp",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(call_error("ERR redis.setresp() requires one argument."));
            }
            let resp = lua.coerce_number(args[0].clone()).ok().flatten();
            match resp {
                Some(r) if r == 2.0 || r == 3.0 => lua.set_named_registry_value(RESP, r as u8),
                _ => Err(call_error("ERR RESP version must be 2 or 3.")),
            }
        })?,
    )?;
    // Where the effects of this run's next commands go. One log feeds
    // both the AOF and the replicas here: REPL_NONE keeps effects out of
    // both; REPL_AOF and REPL_REPLICA alone send them to both.
    redis.raw_set(
        "set_repl",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(call_error("ERR redis.set_repl() requires two arguments."));
            }
            let flags = lua.coerce_number(args[0].clone()).ok().flatten();
            match flags {
                Some(f) if (0.0..=3.0).contains(&f) && f.fract() == 0.0 => {
                    lua.set_named_registry_value(REPL, f as u8)
                }
                _ => Err(call_error(
                    "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                )),
            }
        })?,
    )?;
    for (name, v) in [
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.raw_set(name, v)?;
    }
    // Without a debugger attached (SCRIPT DEBUG), as in Redis: a
    // breakpoint is not taken and debug output goes nowhere.
    redis.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.raw_set("REDIS_VERSION", crate::shared::REDIS_VERSION)?;
    redis.raw_set(
        "REDIS_VERSION_NUM",
        version_num(crate::shared::REDIS_VERSION),
    )?;
    lua.set_named_registry_value(REDIS, redis.clone())?;
    g.raw_set("redis", redis)?;
    // The handler of a script's errors: the error and the script's line.
    let handler = lua.create_function(|lua, e: Value| {
        // A script out of memory still gets its error reported (the
        // limit is set again before the next script).
        let _ = lua.set_memory_limit(0);
        let mut line = 1;
        for level in 1..64 {
            let Some(d) = lua.inspect_stack(level) else {
                break;
            };
            let src = d.source().source;
            if matches!(src.as_deref(), Some("@user_script" | "@user_function")) {
                line = d.curr_line();
                break;
            }
        }
        Ok((e, line))
    })?;
    let raw_xpcall: mlua::Function = g.raw_get("xpcall")?;
    // pcall and xpcall cannot hold on to a script that was stopped: once
    // it is, they raise again whatever they caught.
    let killed = lua
        .create_function(|lua, ()| Ok(lua.named_registry_value::<bool>(KILLED).unwrap_or(false)))?;
    lua.load(
        r##"
        local killed, raw_pcall, raw_xpcall, select, unpack, error = ...
        local match, tostring, type, rawget = string.match, tostring, type, rawget
        local function pack(...) return { n = select("#", ...), ... } end
        local function check(r)
            if killed() then error("Script killed: it ran longer than busy-reply-threshold", 0) end
            return unpack(r, 1, r.n)
        end
        -- As Redis's pcall: a caught error is its text (an error table's
        -- `err`, redis.call's error reply), not the object raised.
        pcall = function(...)
            local r = pack(raw_pcall(...))
            if r[1] == false then
                local e = r[2]
                if type(e) == "table" and rawget(e, "err") ~= nil then
                    r[2] = rawget(e, "err")
                elseif type(e) == "userdata" then
                    r[2] = match(tostring(e), "^[^\n]*")
                end
            end
            return check(r)
        end
        xpcall = function(...) return check(pack(raw_xpcall(...))) end
        "##,
    )
    .set_name("=guard")
    .call::<()>((
        killed,
        g.raw_get::<mlua::Function>("pcall")?,
        raw_xpcall.clone(),
        g.raw_get::<mlua::Function>("select")?,
        g.raw_get::<mlua::Function>("unpack")?,
        g.raw_get::<mlua::Function>("error")?,
    ))?;
    // Read-only globals, as Redis 7.0's: a script runs in an environment
    // of its own (a new one each run) that reads the globals and refuses
    // writes; `_G` and the libraries are read-only views; rawset and
    // setmetatable refuse them; loadstring's chunks run in their caller's
    // environment. Returns the function that runs a script.
    let (runner, fcall, loader): (mlua::Function, mlua::Function, mlua::Function) = lua
        .load(
            r#"
            local handler, raw_xpcall = ...
            local raw_rawset, raw_rawget, raw_setmetatable = rawset, rawget, setmetatable
            local raw_setfenv, raw_getfenv = setfenv, getfenv
            local raw_loadstring, raw_load = loadstring, load
            local error, tostring, type, ipairs, getmetatable = error, tostring, type, ipairs, getmetatable
            local G = _G
            local protected = {}
            local function deny(level) error("Attempt to modify a readonly table", level) end
            local function readonly(t, index)
                local p = {}
                raw_setmetatable(p, {
                    __index = index or t,
                    __newindex = function() deny(3) end,
                    -- (What getmetatable answers: an empty table, as Redis.)
                    __metatable = {},
                })
                protected[p] = true
                return p
            end
            G.loadstring = function(s, name)
                local f, e = raw_loadstring(s, name)
                if f then raw_setfenv(f, raw_getfenv(2)) end
                return f, e
            end
            G.load = function(fn, name)
                local f, e = raw_load(fn, name)
                if f then raw_setfenv(f, raw_getfenv(2)) end
                return f, e
            end
            G.rawset = function(t, k, v)
                if protected[t] then deny(0) end
                return raw_rawset(t, k, v)
            end
            G.setmetatable = function(t, mt)
                if protected[t] then deny(0) end
                return raw_setmetatable(t, mt)
            end
            G.setfenv, G.getfenv = nil, nil
            for _, name in ipairs({ "string", "table", "math", "redis", "bit", "struct", "cjson", "cmsgpack" }) do
                G[name] = readonly(G[name])
            end
            getmetatable("").__metatable = false
            G._G = readonly(G)
            -- An environment reading globals through `index` and refusing
            -- writes.
            local function env_for(index)
                local env = raw_setmetatable({}, {
                    __index = function(_, k)
                        local v = index(k)
                        if v == nil then
                            error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
                        end
                        return v
                    end,
                    __newindex = function() deny(3) end,
                    __metatable = false,
                })
                protected[env] = true
                return env
            end
            local function globals(k) return raw_rawget(G, k) end
            local function trap(e) return { handler(e) } end
            local function finish(ok, e)
                if ok then return true, e end
                -- (Out of memory, Lua calls no handler: the message as is.)
                if type(e) ~= "table" then return false, e, nil end
                return false, e[1], e[2]
            end
            -- A script (EVAL): in an environment of its own each run.
            local function run(f)
                local env = env_for(globals)
                raw_setfenv(f, env)
                local ok, e = raw_xpcall(f, trap)
                protected[env] = nil
                return finish(ok, e)
            end
            -- A function (FCALL): its keys and arguments as parameters.
            local function fcall(f, keys, args)
                return finish(raw_xpcall(function() return f(keys, args) end, trap))
            end
            -- A library (FUNCTION LOAD): its code runs where only the
            -- loading API is (`redis.register_function`, `redis.log`...);
            -- its functions, later, see the globals scripts see.
            local R = G.redis
            local register
            -- (Its `redis` table, as the globals, refuses names it lacks.)
            local function strict(t)
                return readonly(t, function(_, k)
                    local v = raw_rawget(t, k)
                    if v == nil then
                        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
                    end
                    return v
                end)
            end
            local api = {
                redis = strict({
                    register_function = function(...)
                        if not register then
                            error({ err = "ERR redis.register_function can only be called on FUNCTION LOAD command" })
                        end
                        local e = register(...)
                        if e then error({ err = "ERR " .. e }) end
                    end,
                    log = R.log,
                    LOG_DEBUG = R.LOG_DEBUG, LOG_VERBOSE = R.LOG_VERBOSE,
                    LOG_NOTICE = R.LOG_NOTICE, LOG_WARNING = R.LOG_WARNING,
                    REDIS_VERSION = R.REDIS_VERSION, REDIS_VERSION_NUM = R.REDIS_VERSION_NUM,
                }),
            }
            local function load_library(chunk, reg)
                local loading = true
                raw_setfenv(chunk, env_for(function(k)
                    if loading then return raw_rawget(api, k) end
                    return raw_rawget(G, k)
                end))
                register = reg
                local ok, e = raw_xpcall(chunk, trap)
                register, loading = nil, false
                return finish(ok, e)
            end
            return run, fcall, load_library
            "#,
        )
        .set_name("=run")
        .call((handler, raw_xpcall))?;
    lua.set_named_registry_value(RUNNER, runner)?;
    lua.set_named_registry_value(FCALL, fcall)?;
    lua.set_named_registry_value(LIB_LOADER, loader)?;
    Ok(lua)
}

/// The error `redis.call` raises: Redis's error reply text. (A Rust
/// function, as Redis's is a C one: `return redis.call(...)` is then no
/// tail call, and the script's line stays on the stack for the error.)
#[derive(Debug)]
struct CallError(String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// The most memory a database's Lua state may hold (its scripts' tables
/// and strings), whatever its plan: 512 MB.
pub const LUA_MEMORY_CAP: u64 = 512 << 20;

/// The most elements a script's reply may have (a few tables naming
/// each other could otherwise make an endless one).
pub const MAX_REPLY_ELEMENTS: usize = 10_000_000;

/// The registry's name of the RESP version of this run's `redis.call`
/// replies (`redis.setresp`).
const RESP: &str = "anykv.resp";

/// The registry's name of where this run's effects go (`redis.set_repl`):
/// 0 nowhere, else the log.
const REPL: &str = "anykv.repl";

/// An error a `redis` function raises: Redis's text, as `redis.call`'s.
fn call_error(msg: &str) -> mlua::Error {
    mlua::Error::external(CallError(msg.to_string()))
}

/// The registry's flag: the running script was stopped.
const KILLED: &str = "anykv.killed";

/// The registry's name of the `redis` table itself (scripts see a
/// read-only view of it).
const REDIS: &str = "anykv.redis";

/// The registry's name of the function that runs a script.
const RUNNER: &str = "anykv.run";

/// The registry's name of the function that calls a library's function.
const FCALL: &str = "anykv.fcall";

/// The registry's name of the function that runs a library's code.
pub(super) const LIB_LOADER: &str = "anykv.load_library";

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

/// `7.0.15` as 0x07000f.
fn version_num(v: &str) -> i64 {
    v.split('.')
        .take(3)
        .map(|p| p.parse::<i64>().unwrap_or(0))
        .fold(0, |acc, p| (acc << 8) | (p & 0xff))
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
    let sha = if by_sha {
        let sha = String::from_utf8_lossy(ctx.args[1]).to_ascii_lowercase();
        if ctx.t.scripts.get(&sha).is_none() {
            return ctx.error("NOSCRIPT No matching script. Please use EVAL.");
        }
        sha
    } else {
        match ctx.t.scripts.load(ctx.args[1]) {
            Ok(sha) => sha,
            Err(e) => return ctx.error(&format!("ERR {e}")),
        }
    };
    let flags = ctx.t.scripts.get(&sha).map(|s| s.flags).unwrap_or_default();
    let Some((lua, func)) = ctx.t.scripts.function(&sha) else {
        return ctx.error("NOSCRIPT No matching script. Please use EVAL.");
    };
    execute(
        ctx,
        Invocation {
            lua,
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
    pub lua: Lua,
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
        lua,
        func,
        flags,
        name,
        kind,
        read_only,
        numkeys: n,
    } = inv;
    if read_only && flags.declared && !flags.no_writes {
        return ctx.error("ERR Can not execute a script with write flag using *_ro command.");
    }
    // A script declaring no-writes may not write either.
    let no_writes = read_only || (flags.declared && flags.no_writes);
    let keys = ctx.args[3..3 + n].to_vec();
    let argv = ctx.args[3 + n..].to_vec();
    // What a script changes goes out as one transaction (unless it runs
    // inside EXEC, whose transaction it is part of).
    let own_tx = !ctx.t.log.in_tx();
    if own_tx {
        ctx.t.log.begin_tx();
    }
    let db_before = ctx.s.db;
    let in_exec_before = ctx.s.in_exec;
    // Blocking commands do not block in a script (as in a transaction).
    ctx.s.in_exec = true;
    let result = call_script(ctx, &lua, &func, kind, &keys, &argv, no_writes);
    ctx.s.in_exec = in_exec_before;
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
            let script_resp = lua.named_registry_value::<u8>(RESP).unwrap_or(2);
            match lua_to_reply(&v, ctx.out, &mut budget, script_resp) {
                Ok(()) => {
                    if ctx.out.buf.get(mark) == Some(&b'-') {
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
    ctx.error(&format!("{msg} script: {name}, on @{source}:{line}."));
}

/// What a script's raised error says, as Redis reports it.
pub(super) fn raised(e: &Value) -> String {
    match e {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => s.to_string_lossy(),
            _ => "ERR unknown error".to_string(),
        },
        Value::String(s) => format!("ERR {}", s.to_string_lossy()),
        Value::Error(e) => error_text(e),
        other => format!("ERR {}", other.to_string().unwrap_or_default()),
    }
}

/// An mlua error as Redis's words: `redis.call`'s error reply as it
/// came, anything else `ERR` and its first line.
pub(super) fn error_text(e: &mlua::Error) -> String {
    let mut cur = e;
    loop {
        match cur {
            mlua::Error::CallbackError { cause, .. } => cur = cause,
            mlua::Error::ExternalError(x) => {
                if let Some(c) = x.downcast_ref::<CallError>() {
                    return c.0.clone();
                }
                return format!("ERR {x}");
            }
            mlua::Error::RuntimeError(msg) => {
                return format!("ERR {}", msg.lines().next().unwrap_or_default())
            }
            other => {
                return format!(
                    "ERR {}",
                    other.to_string().lines().next().unwrap_or_default()
                )
            }
        }
    }
}

fn call_script(
    ctx: &mut Ctx,
    lua: &Lua,
    func: &mlua::Function,
    kind: Kind,
    keys: &[&[u8]],
    argv: &[&[u8]],
    no_writes: bool,
) -> mlua::Result<Result<Value, (Value, i32)>> {
    let g = lua.globals();
    let list = |items: &[&[u8]]| -> mlua::Result<mlua::Table> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, a) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(a)?)?;
        }
        Ok(t)
    };
    let (keys, argv) = (list(keys)?, list(argv)?);
    if kind == Kind::Script {
        g.raw_set("KEYS", keys.clone())?;
        g.raw_set("ARGV", argv.clone())?;
    }
    let redis: mlua::Table = lua.named_registry_value(REDIS)?;
    let runner: mlua::Function = lua.named_registry_value(match kind {
        Kind::Script => RUNNER,
        Kind::Function => FCALL,
    })?;
    let limit =
        std::time::Duration::from_millis(ctx.shared.config.read().busy_reply_threshold().max(1));
    // Nor may it take the node's memory: at most the database's plan
    // limit (or LUA_MEMORY_CAP without one) for Lua's own allocations.
    let cap = memory_cap(ctx.t);
    lua.set_memory_limit(usize::try_from(cap).unwrap_or(usize::MAX))?;
    let replaying = ctx.s.replaying;
    let ctx = RefCell::new(ctx);
    lua.scope(|scope| {
        let pcall = scope.create_function(|lua, args: MultiValue| {
            let mut c = ctx
                .try_borrow_mut()
                .map_err(|_| mlua::Error::RecursiveMutCallback)?;
            match command(&mut c, lua, args, no_writes)? {
                Ok(v) => Ok(v),
                Err(msg) => Ok(Value::Table(error_table(lua, &msg)?)),
            }
        })?;
        let call = scope.create_function(|lua, args: MultiValue| {
            let mut c = ctx
                .try_borrow_mut()
                .map_err(|_| mlua::Error::RecursiveMutCallback)?;
            match command(&mut c, lua, args, no_writes)? {
                Ok(v) => Ok(v),
                Err(msg) => Err(mlua::Error::external(CallError(msg))),
            }
        })?;
        let acl_check_cmd = scope.create_function(|_, args: MultiValue| {
            let mut c = ctx
                .try_borrow_mut()
                .map_err(|_| mlua::Error::RecursiveMutCallback)?;
            acl_check(&mut c, &args)
        })?;
        redis.raw_set("pcall", pcall)?;
        redis.raw_set("call", call)?;
        redis.raw_set("acl_check_cmd", acl_check_cmd)?;
        // A script shares its executor with other databases: past
        // busy-reply-threshold it is stopped (every check raises again, so
        // a pcall loop cannot hold on for long).
        let start = std::time::Instant::now();
        let mut triggers = mlua::HookTriggers::new();
        triggers.every_nth_instruction = Some(1000);
        lua.set_named_registry_value(KILLED, false)?;
        lua.set_named_registry_value(RESP, 2u8)?;
        lua.set_named_registry_value(REPL, 3u8)?;
        // (Not when the log is replayed: what ran once must run whole.)
        let limit = if replaying {
            std::time::Duration::MAX
        } else {
            limit
        };
        lua.set_hook(triggers, move |lua, _| {
            if start.elapsed() > limit {
                lua.set_named_registry_value(KILLED, true)?;
                return Err(mlua::Error::runtime(
                    "Script killed: it ran longer than busy-reply-threshold",
                ));
            }
            Ok(mlua::VmState::Continue)
        });
        let outcome = match kind {
            Kind::Script => runner.call(func.clone()),
            Kind::Function => runner.call((func.clone(), keys, argv)),
        };
        lua.remove_hook();
        // A script that failed may have left much garbage (one out of
        // memory, up to the limit): collected now, not at the next one.
        if !matches!(outcome, Ok((true, _, _))) {
            let _ = lua.gc_collect();
        }
        let (ok, v, line): (bool, Value, Option<i32>) = outcome?;
        Ok(if ok {
            Ok(v)
        } else {
            Err((v, line.unwrap_or(1)))
        })
    })
}

/// A `redis.call`'s arguments as bytes (Redis's error when one is neither
/// a string nor a number).
fn command_args(args: &MultiValue) -> Result<Vec<Vec<u8>>, String> {
    args.iter()
        .map(|a| match a {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            // (Lua 5.1's numbers are doubles: as Redis, %.17g.)
            Value::Integer(n) => Ok(crate::util::fmt_f64(*n as f64).into_bytes()),
            Value::Number(f) => Ok(crate::util::fmt_f64(*f).into_bytes()),
            _ => Err("ERR Lua redis lib command arguments must be strings or integers".into()),
        })
        .collect()
}

/// `redis.acl_check_cmd(command, args...)`: whether the caller's user may
/// run it.
fn acl_check(ctx: &mut Ctx, args: &MultiValue) -> mlua::Result<bool> {
    let owned = command_args(args).map_err(|e| call_error(&e))?;
    let argv: Vec<&[u8]> = owned.iter().map(|a| a.as_slice()).collect();
    let r = match crate::cmd::lookup(&argv) {
        crate::cmd::Lookup::Found(r) if !argv.is_empty() => r,
        _ => {
            return Err(call_error(
                "ERR Invalid command passed to redis.acl_check_cmd()",
            ))
        }
    };
    Ok(ctx.s.unrestricted || crate::dispatch::acl_denied(ctx.shared, ctx.s, r, &argv).is_none())
}

/// Runs one `redis.call`: the command's reply as a Lua value, or the
/// error reply's text (`Err`).
fn command(
    ctx: &mut Ctx,
    lua: &Lua,
    args: MultiValue,
    no_writes: bool,
) -> mlua::Result<Result<Value, String>> {
    let owned = match command_args(&args) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    if owned.is_empty() {
        return Ok(Err(
            "ERR Please specify at least one argument for this redis lib call".into(),
        ));
    }
    let argv: Vec<&[u8]> = owned.iter().map(|a| a.as_slice()).collect();
    let r = match crate::cmd::lookup(&argv) {
        crate::cmd::Lookup::Found(r) => r,
        _ => return Ok(Err("ERR Unknown Redis command called from script".into())),
    };
    if !crate::dispatch::arity_fits(r.spec, argv.len()) {
        return Ok(Err(
            "ERR Wrong number of args calling Redis command from script".into(),
        ));
    }
    if r.spec.has_flag("noscript") {
        return Ok(Err(
            "ERR This Redis command is not allowed from script".into()
        ));
    }
    if r.spec.scope == crate::cmd::table::Scope::Denied && ctx.t.is_customer() {
        return Ok(Err(format!(
            "NOPERM this user has no permissions to run the '{}' command",
            r.fullname
        )));
    }
    // The caller's ACL holds inside its script (Redis's words).
    if !ctx.s.unrestricted {
        if let Some(denied) = crate::dispatch::acl_denied(ctx.shared, ctx.s, r, &argv) {
            return Ok(Err(if denied.contains("keys") {
                "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments".into()
            } else {
                "ERR The user executing the script can't run this command or subcommand".into()
            }));
        }
    }
    // Writes stop while persistence fails, inside scripts too.
    if r.write {
        if let Some(msg) = crate::dispatch::disk_error(ctx.t, ctx.shared) {
            return Ok(Err(msg));
        }
    }
    // A read-only script neither writes nor publishes (PUBLISH and the
    // like move the replication stream).
    if (r.write || r.may_replicate) && no_writes {
        return Ok(Err(
            "ERR Write commands are not allowed from read-only scripts.".into(),
        ));
    }
    // A replica's data changes only by its primary's stream.
    if r.write && ctx.t.role == crate::repl::Role::Replica && !ctx.s.replaying {
        return Ok(Err(
            "READONLY You can't write against a read only replica.".into()
        ));
    }
    let resp = lua.named_registry_value::<u8>(RESP).unwrap_or(2);
    let mut out = Reply::new(resp);
    // redis.set_repl(redis.REPL_NONE): the effects stay here.
    let unlogged = lua.named_registry_value::<u8>(REPL).unwrap_or(3) == 0;
    let was_suppressed = ctx.t.log.is_suppressed();
    if unlogged {
        ctx.t.log.set_suppressed(true);
    }
    let start = std::time::Instant::now();
    {
        let mut inner = Ctx {
            args: &argv,
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
        let failed = inner.failed;
        let us = start.elapsed().as_micros() as u64;
        crate::dispatch::count_call(ctx.t, r.id, us, failed);
    }
    ctx.t.log.set_suppressed(was_suppressed);
    reply_to_lua(lua, &out.buf)
}
