//! A Lua state for a database's scripts, or for its function libraries,
//! made as Redis 7.0 makes its own: the libraries it loads, the `redis`
//! table, globals read-only; and what runs code in it ([`Engine`]).
//!
//! What Rust code does while a script runs is kept cheap, as it costs
//! every EVALSHA: the `redis` functions are made once per state and reach
//! the running command through [`Run`] (no closures made per run); the
//! time limit is one hook set once; and Lua's memory limit is lifted
//! while Rust code builds values for Lua (mlua protects every call it
//! makes under a limit, which allocates), so the limit holds for what the
//! script itself allocates, and what a command's reply adds is counted at
//! the script's next allocation.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, LuaOptions, MultiValue, StdLib, Value};

use super::convert::error_table;
use crate::cmd::Ctx;
use crate::resp::Reply;

/// What a script stopped by SCRIPT KILL / FUNCTION KILL fails with.
const KILLED_BY_USER: &str = "Script killed by user with SCRIPT KILL...";

/// A database's Lua state and the functions that run code in it. Cheap
/// to clone (the state is shared).
#[derive(Clone)]
pub struct Engine(Rc<Inner>);

struct Inner {
    lua: Lua,
    run: Rc<Run>,
    /// `run(f)`: a script.
    runner: mlua::Function,
    /// `fcall(f, keys, args)`: a library's function.
    fcall: mlua::Function,
    /// `load_library(chunk, register)`: a library's code.
    loader: mlua::Function,
}

impl Engine {
    pub fn new() -> mlua::Result<Engine> {
        let run = Rc::new(Run::default());
        let (lua, _redis, [runner, fcall, loader]) = new_state(&run)?;
        // Time: one hook for the state's life. A script in a coroutine
        // is suspended at the end of each time slice (`super::busy`);
        // other code is stopped past `Run`'s deadline.
        let r = run.clone();
        lua.set_hook(
            mlua::HookTriggers::new().every_nth_instruction(1000),
            move |_, _| {
                let now = Instant::now();
                if r.suspendable.get() && super::busy::in_coroutine() {
                    if r.slice.due(now) && r.suspend() {
                        r.killed.set(true);
                        r.kill_message.set(KILLED_BY_USER);
                        return Err(mlua::Error::runtime(KILLED_BY_USER));
                    }
                } else if r.deadline.get().is_some_and(|d| now > d) {
                    r.killed.set(true);
                    return Err(mlua::Error::runtime(r.kill_message.get()));
                }
                Ok(mlua::VmState::Continue)
            },
        );
        Ok(Engine(Rc::new(Inner {
            lua,
            run,
            runner,
            fcall,
            loader,
        })))
    }

    pub fn lua(&self) -> &Lua {
        &self.0.lua
    }

    pub(crate) fn run(&self) -> &Run {
        &self.0.run
    }

    pub(crate) fn runner(&self) -> &mlua::Function {
        &self.0.runner
    }

    pub(crate) fn fcall(&self) -> &mlua::Function {
        &self.0.fcall
    }

    pub(crate) fn loader(&self) -> &mlua::Function {
        &self.0.loader
    }

    /// Runs `f` as Lua code of a run: under `memory` bytes and stopped
    /// past `limit` (none: no limit) with `kill_message`; `run.killed`
    /// then says whether it was. With `slice`, a script in a coroutine
    /// is suspended every `slice` instead of stopped (`super::busy`).
    pub(crate) fn limited<R>(
        &self,
        memory: u64,
        limit: Option<Duration>,
        slice: Option<Duration>,
        kill_message: &'static str,
        f: impl FnOnce() -> R,
    ) -> R {
        let run = self.run();
        run.killed.set(false);
        run.wrote.set(false);
        run.suspendable.set(slice.is_some());
        if let Some(len) = slice {
            run.slice.start(len);
        }
        run.kill_message.set(kill_message);
        run.deadline
            .set(limit.and_then(|l| Instant::now().checked_add(l)));
        let cap = usize::try_from(memory).unwrap_or(usize::MAX);
        run.cap.set(cap);
        let _ = self.lua().set_memory_limit(cap);
        let r = f();
        let _ = self.lua().set_memory_limit(0);
        run.deadline.set(None);
        run.suspendable.set(false);
        r
    }
}

/// What the `redis` functions see of the run in progress.
pub(crate) struct Run {
    /// The running command's context (a `*mut Ctx`), null outside
    /// [`Run::with_ctx`]'s caller's run.
    ctx: Cell<*mut ()>,
    /// The script may not write (EVAL_RO, `no-writes`).
    pub no_writes: Cell<bool>,
    /// The RESP version of `redis.call`'s replies (`redis.setresp`).
    pub resp: Cell<u8>,
    /// Where effects go (`redis.set_repl`): 0 nowhere, else the log.
    pub repl: Cell<u8>,
    /// The code was stopped (past its deadline, or by a KILL).
    pub killed: Cell<bool>,
    /// The script has called a write command (it cannot be killed).
    pub wrote: Cell<bool>,
    /// The run is a library's function (FCALL), not a script.
    pub function: Cell<bool>,
    /// The run may be suspended (a script or function, not a library's
    /// loading).
    suspendable: Cell<bool>,
    pub(crate) slice: super::busy::Slice,
    /// The database was over its memory limit when the script started:
    /// `denyoom` commands are refused until it has written (unless it
    /// declared `allow-oom`).
    pub oom: Cell<bool>,
    /// The database's change count when the script started.
    pub dirty_at_start: Cell<u64>,
    /// The error count after the script's last command (or at its
    /// start): errors past it are the script's own reply's.
    pub errors_mark: Cell<u64>,
    deadline: Cell<Option<Instant>>,
    kill_message: Cell<&'static str>,
    /// Lua's memory limit for the run (lifted while Rust code runs).
    cap: Cell<usize>,
    /// The reply buffer `redis.call` lends each command (one allocation
    /// for the state's life, not one per call).
    reply: Cell<Option<Reply>>,
    /// The state the run is in (set once it exists), for `super::call`.
    pub(super) lua: std::cell::OnceCell<mlua::WeakLua>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            ctx: Cell::new(std::ptr::null_mut()),
            no_writes: Cell::new(false),
            resp: Cell::new(2),
            repl: Cell::new(3),
            killed: Cell::new(false),
            wrote: Cell::new(false),
            function: Cell::new(false),
            suspendable: Cell::new(false),
            slice: super::busy::Slice::default(),
            oom: Cell::new(false),
            dirty_at_start: Cell::new(0),
            errors_mark: Cell::new(0),
            deadline: Cell::new(None),
            kill_message: Cell::new(""),
            cap: Cell::new(0),
            reply: Cell::new(None),
            lua: std::cell::OnceCell::new(),
        }
    }
}

/// A reply buffer grown past this is not kept for the next call.
const KEPT_REPLY: usize = 64 << 10;

impl Run {
    /// An empty reply buffer in the run's RESP version.
    pub(crate) fn take_reply(&self) -> Reply {
        let mut r = self.reply.take().unwrap_or_else(|| Reply::new(2));
        r.buf.clear();
        r.resp = self.resp.get();
        r
    }

    /// Gives the buffer back (unless it grew large).
    pub(crate) fn put_reply(&self, r: Reply) {
        if r.buf.capacity() <= KEPT_REPLY {
            self.reply.set(Some(r));
        }
    }

    /// Runs `f` (Lua code calling back into the command through `redis.*`)
    /// with `ctx` reachable from those functions, and unreachable again
    /// once it returns.
    pub(crate) fn with_ctx<R>(&self, ctx: &mut Ctx<'_>, f: impl FnOnce() -> R) -> R {
        /// Clears the pointer however `f` ends (a panic unwinding too).
        struct Clear<'a>(&'a Cell<*mut ()>);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.set(std::ptr::null_mut());
            }
        }
        let p: *mut Ctx<'_> = ctx;
        self.ctx.set(p.cast());
        let _clear = Clear(&self.ctx);
        f()
    }

    /// The running command's context, taken out while a `redis` function
    /// uses it (null outside a run, or while in use); see `super::call`.
    pub(super) fn take_ctx(&self) -> *mut () {
        self.ctx.replace(std::ptr::null_mut())
    }

    /// Puts back what [`Run::take_ctx`] took.
    pub(super) fn put_ctx(&self, p: *mut ()) {
        self.ctx.set(p);
    }

    /// Lua's memory limit for the run.
    pub(super) fn cap(&self) -> usize {
        self.cap.get()
    }

    /// Suspends the running script (see `super::busy`); true if it was
    /// killed meanwhile.
    fn suspend(&self) -> bool {
        let p = self.ctx.replace(std::ptr::null_mut());
        if p.is_null() {
            return false;
        }
        // SAFETY: as in `call`: `p` comes from `with_ctx`'s `&mut Ctx`,
        // borrowed until it returns, and the hook runs inside it, on this
        // thread; taken out of the cell, it is the only reference made
        // from it until it is put back below. While the coroutine is
        // suspended, nothing else reaches what it points to: the
        // database stays borrowed by this run, and its connection waits
        // for the coroutine.
        let ctx = unsafe { &mut *p.cast::<Ctx<'static>>() };
        let key = super::busy::key_of(&*ctx.t);
        let killed = self
            .slice
            .suspend(key, self.wrote.get(), || super::busy::Busy {
                started: self.slice.began(),
                function: self.function.get().then(|| {
                    (
                        String::from_utf8_lossy(ctx.args.get(1).copied().unwrap_or_default())
                            .into_owned(),
                        ctx.args.iter().map(|a| a.to_vec()).collect(),
                    )
                }),
                wrote: Cell::new(false),
                kill: Cell::new(false),
                libraries: ctx.t.functions.counts(),
                mem: ctx.t.mem.clone(),
                refused: Default::default(),
                repl: crate::metrics::ReplStatus::of(ctx.t),
            });
        self.ctx.set(p);
        killed
    }
}

/// A new state: Lua 5.1 with the libraries Redis loads
/// (base without `loadfile`/`dofile`/`print`, `table`, `string`, `math`,
/// and `bit`, `struct`, `cjson`, `cmsgpack`: `super::libs`),
/// the `redis` table's constant parts, and globals protected as in 7.0 (a
/// script may neither create a global nor read one that does not exist).
fn new_state(run: &Rc<Run>) -> mlua::Result<(Lua, mlua::Table, [mlua::Function; 3])> {
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
    redis.raw_set("setresp", {
        let run = run.clone();
        lua.create_function(move |lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(call_error("ERR redis.setresp() requires one argument."));
            }
            let resp = lua.coerce_number(args[0].clone()).ok().flatten();
            match resp {
                Some(r) if r == 2.0 || r == 3.0 => {
                    run.resp.set(r as u8);
                    Ok(())
                }
                _ => Err(call_error("ERR RESP version must be 2 or 3.")),
            }
        })?
    })?;
    // Where the effects of this run's next commands go. One log feeds
    // both the AOF and the replicas here: REPL_NONE keeps effects out of
    // both; REPL_AOF and REPL_REPLICA alone send them to both.
    redis.raw_set(
        "set_repl",
        {
            let run = run.clone();
            lua.create_function(move |lua, args: MultiValue| {
                if args.len() != 1 {
                    return Err(call_error("ERR redis.set_repl() requires two arguments."));
                }
                let flags = lua.coerce_number(args[0].clone()).ok().flatten();
                match flags {
                    Some(f) if (0.0..=3.0).contains(&f) && f.fract() == 0.0 => {
                        run.repl.set(f as u8);
                        Ok(())
                    }
                    _ => Err(call_error(
                        "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                    )),
                }
            })?
        },
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
    // The functions that reach the running command (`Run::ctx`).
    super::call::install(&lua, &redis, run)?;
    g.raw_set("redis", redis.clone())?;
    // The handler of a script's errors: the error and the script's line.
    let handler = lua.create_function(|lua, e: Value| {
        // A script out of memory still gets its error reported (the
        // limit is set again at the next run).
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
    let killed = {
        let run = run.clone();
        lua.create_function(move |_, ()| Ok(run.killed.get().then(|| run.kill_message.get())))?
    };
    lua.load(
        r##"
        local killed, raw_pcall, raw_xpcall, select, unpack, error = ...
        local match, tostring, type, rawget = string.match, tostring, type, rawget
        local function pack(...) return { n = select("#", ...), ... } end
        local function check(r)
            local why = killed()
            if why then error(why, 0) end
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
    // that reads the globals and refuses writes; `_G` and the libraries are read-only views; rawset and
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
            -- An environment reading globals through `index` (a table, or
            -- a function returning nil for what is not there) and refusing
            -- writes; and its metatable.
            local function env_for(index)
                local mt = {
                    __index = index,
                    __newindex = function() deny(3) end,
                    __metatable = false,
                }
                if type(index) == "function" then
                    mt.__index = function(_, k)
                        local v = index(k)
                        if v == nil then
                            error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
                        end
                        return v
                    end
                end
                local env = raw_setmetatable({}, mt)
                protected[env] = true
                return env, mt
            end
            local function trap(e) return { handler(e) } end
            local function finish(ok, e)
                if ok then return true, e end
                -- (Out of memory, Lua calls no handler: the message as is.)
                if type(e) ~= "table" then return false, e, nil end
                return false, e[1], e[2]
            end
            -- A script (EVAL): every script in the one environment that
            -- reads the globals and refuses writes. (The globals table
            -- itself, not a function: a script reads a global at the cost
            -- of a table lookup; a missing one reaches the globals'
            -- metatable, set below.)
            local script_env = env_for(G)
            local function run(f, keys, args)
                raw_rawset(G, "KEYS", keys)
                raw_rawset(G, "ARGV", args)
                raw_setfenv(f, script_env)
                return finish(raw_xpcall(f, trap))
            end
            -- A function (FCALL): its keys and arguments as parameters.
            -- (xpcall passes no arguments: one closure, made once, reads
            -- them from these, set just before; none is made per call.)
            local cur_f, cur_keys, cur_args
            local function call_current() return cur_f(cur_keys, cur_args) end
            local function fcall(f, keys, args)
                cur_f, cur_keys, cur_args = f, keys, args
                local ok, e = raw_xpcall(call_current, trap)
                cur_f, cur_keys, cur_args = nil, nil, nil
                return finish(ok, e)
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
                local env, mt = env_for(function(k) return raw_rawget(api, k) end)
                raw_setfenv(chunk, env)
                register = reg
                local ok, e = raw_xpcall(chunk, trap)
                register = nil
                -- Loaded: its functions read the globals as scripts do.
                mt.__index = G
                return finish(ok, e)
            end
            -- Reading a global that does not exist is an error, in Redis's
            -- words, whether by name or through `_G`. (Set last: the code
            -- above reads only what is there.)
            raw_setmetatable(G, {
                __index = function(_, k)
                    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
                end,
                __metatable = false,
            })
            return run, fcall, load_library
            "#,
        )
        .set_name("=run")
        .call((handler, raw_xpcall))?;
    Ok((lua, redis, [runner, fcall, loader]))
}

/// The error `redis.call` and the other `redis` functions raise: Redis's
/// error text. (A Rust function, as Redis's is a C one: `return
/// redis.call(...)` is then no tail call, and the script's line stays on
/// the stack for the error.)
#[derive(Debug)]
pub(crate) struct CallError {
    pub msg: String,
    /// Already counted in the error statistics (a command's error, which
    /// the script's own error reply then does not count again).
    pub counted: bool,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CallError {}

/// An error a `redis` function raises: Redis's text, as `redis.call`'s.
pub(crate) fn call_error(msg: &str) -> mlua::Error {
    mlua::Error::external(CallError {
        msg: msg.to_string(),
        counted: false,
    })
}

/// `7.0.15` as 0x07000f.
fn version_num(v: &str) -> i64 {
    v.split('.')
        .take(3)
        .map(|p| p.parse::<i64>().unwrap_or(0))
        .fold(0, |acc, p| (acc << 8) | (p & 0xff))
}
