//! `redis.call`, `redis.pcall` and `redis.acl_check_cmd`, written against
//! Lua's C API as Redis's own are: the arguments are read from the Lua
//! stack and the command's reply is pushed onto it; and a run's KEYS and
//! ARGV, pushed as tables. These are the hottest path a script has; through mlua's safe API every argument and every
//! value of a reply became a registered handle (an auxiliary stack slot
//! or a registry reference) and a `MultiValue` per call.
//!
//! Reading arguments off the stack also keeps Lua's numbers as they are:
//! mlua turns a float that is close to a whole number into an integer, so
//! `-0.0` went out as `0` and `1e-17` as `0`; Redis writes every number
//! with `%.17g` (`-0`, `1.0000000000000001e-17`).
//!
//! Soundness: Lua raises errors with `longjmp`, which skips the frames it
//! crosses without running their destructors. So every Rust value that
//! owns something lives in [`step`] and below, which only return; the
//! one `lua_error` is in [`enter`], whose frame holds nothing to drop.
//! While a step runs, Lua's memory limit is lifted (as for every Rust
//! callback, see `super::engine`), so the pushes cannot fail with Lua's
//! memory error (mlua's allocator aborts on the system's own failure), and
//! nothing else they do raises: the stack is grown first and map keys
//! Lua cannot take (nil, NaN) are skipped.

use std::os::raw::{c_int, c_void};
use std::rc::Rc;

use mlua::ffi;

use super::engine::Run;
use crate::cmd::Ctx;

/// Which function Lua called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Pcall,
    AclCheck,
}

/// Keeps the run alive as long as the Lua state: the functions' upvalue
/// points into it.
struct KeepRun(#[allow(dead_code)] Rc<Run>);

/// Puts `redis.call`, `redis.pcall` and `redis.acl_check_cmd` in `redis`.
pub(super) fn install(lua: &mlua::Lua, redis: &mlua::Table, run: &Rc<Run>) -> mlua::Result<()> {
    lua.set_app_data(KeepRun(run.clone()));
    let _ = run.lua.set(lua.weak());
    let p = Rc::as_ptr(run).cast_mut().cast::<c_void>();
    let functions: [(&str, ffi::lua_CFunction); 3] = [
        ("call", call),
        ("pcall", pcall),
        ("acl_check_cmd", acl_check_cmd),
    ];
    for (name, f) in functions {
        // SAFETY: pushes a light userdata and makes a closure of it, two
        // stack operations on the state exec_raw lends; the function is
        // the one value left, which exec_raw takes.
        let func: mlua::Function = unsafe {
            lua.exec_raw((), |state| {
                ffi::lua_pushlightuserdata(state, p);
                ffi::lua_pushcclosure(state, f, 1);
            })?
        };
        redis.raw_set(name, func)?;
    }
    Ok(())
}

/// Calls `runner(func, KEYS, ARGV)` (a script's or a function's runner,
/// see `super::engine`), the two tables built on the Lua stack: its
/// results `(ok, value, line)`.
pub(super) fn run(
    lua: &mlua::Lua,
    runner: &mlua::Function,
    func: &mlua::Function,
    keys: &[&[u8]],
    argv: &[&[u8]],
) -> mlua::Result<(bool, mlua::Value, Option<i32>)> {
    // SAFETY: exec_raw pushes `runner` and `func` and runs the closure in
    // protected mode (a Lua error, memory's included, unwinds to it); the
    // closure owns nothing to drop (it borrows the slices), pushes the
    // two tables after the checked stack room, and calls the runner with
    // the three values, leaving only its results.
    unsafe {
        lua.exec_raw((runner, func), |state| {
            for list in [keys, argv] {
                ffi::luaL_checkstack(state, 3, std::ptr::null());
                ffi::lua_createtable(state, c_int::try_from(list.len()).unwrap_or(0), 0);
                for (i, a) in (1..).zip(list.iter()) {
                    push_bytes(state, a);
                    ffi::lua_rawseti_(state, -2, i);
                }
            }
            ffi::lua_call(state, 3, ffi::LUA_MULTRET);
        })
    }
}

unsafe extern "C-unwind" fn call(state: *mut ffi::lua_State) -> c_int {
    enter(state, Kind::Call)
}

unsafe extern "C-unwind" fn pcall(state: *mut ffi::lua_State) -> c_int {
    enter(state, Kind::Pcall)
}

unsafe extern "C-unwind" fn acl_check_cmd(state: *mut ffi::lua_State) -> c_int {
    enter(state, Kind::AclCheck)
}

/// What Lua calls: the results' count, or the error on the stack's top
/// raised.
///
/// # Safety
/// Lua calls it, as a closure [`install`] made, whose upvalue points to a
/// `Run` the state keeps alive (`KeepRun`).
unsafe fn enter(state: *mut ffi::lua_State, kind: Kind) -> c_int {
    let run = &*ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<Run>();
    match step(state, run, kind) {
        Ok(n) => n,
        // (Nothing in this frame needs dropping: see the module's comment.)
        Err(Raise) => ffi::lua_error(state),
    }
}

/// The error value is on the stack's top; raise it.
struct Raise;

/// The call, with Lua's memory limit lifted; pushes its results (or its
/// error, `Err`).
unsafe fn step(state: *mut ffi::lua_State, run: &Run, kind: Kind) -> Result<c_int, Raise> {
    let Some(lua) = run.lua.get().and_then(|w| w.try_upgrade()) else {
        // (Cannot be: the state runs, so its owner holds it.)
        push_error(state, "ERR the script's Lua state is gone", false);
        return Err(Raise);
    };
    let limit = lua.set_memory_limit(0).unwrap_or(0);
    let r = with_ctx(state, run, kind);
    let _ = lua.set_memory_limit(limit.max(run.cap()));
    r
}

/// The call with the running command's context.
unsafe fn with_ctx(state: *mut ffi::lua_State, run: &Run, kind: Kind) -> Result<c_int, Raise> {
    // Taken while in use: a second use (there is none: the commands a
    // script runs cannot run Lua) would find it null.
    let p = run.take_ctx();
    if p.is_null() {
        push_error(
            state,
            "ERR redis.call can only be used while a script runs",
            false,
        );
        return Err(Raise);
    }
    // SAFETY: `p` was set by `Run::with_ctx` from a `&mut Ctx` that stays
    // borrowed (unused by its owner) until `with_ctx` returns, and this
    // runs only inside it: Lua calls it synchronously from the code
    // `with_ctx` runs, on this thread (a Lua state is neither Send nor
    // shared). Taking the pointer out above makes this the only reference
    // made from it until it is put back. The context's lifetime parameter
    // is not 'static, but nothing here keeps a reference past this call.
    let ctx = &mut *p.cast::<Ctx<'static>>();
    let r = match kind {
        Kind::AclCheck => match args(state).and_then(|a| {
            let argv: Args<&[u8]> = a.iter().map(|a| &**a).collect();
            super::eval::acl_check(ctx, &argv)
        }) {
            Ok(allowed) => {
                ffi::lua_pushboolean(state, c_int::from(allowed));
                Ok(1)
            }
            Err(msg) => {
                push_error(state, &msg, false);
                Err(Raise)
            }
        },
        Kind::Call | Kind::Pcall => command(state, ctx, run, kind),
    };
    run.put_ctx(p);
    r
}

/// `redis.call` / `redis.pcall`: the reply pushed, or the error (raised
/// by `call`, returned as a table by `pcall`).
unsafe fn command(
    state: *mut ffi::lua_State,
    ctx: &mut Ctx,
    run: &Run,
    kind: Kind,
) -> Result<c_int, Raise> {
    let reply = match args(state) {
        Err(msg) => Err(super::eval::refused(ctx, msg, None)),
        Ok(a) => {
            let argv: Args<&[u8]> = a.iter().map(|a| &**a).collect();
            super::eval::command(ctx, run, &argv)
        }
    };
    let pushed = match reply {
        Ok(out) => {
            let r = push_reply(state, &out.buf);
            run.put_reply(out);
            r
        }
        Err(msg) => Ok(Err(msg)),
    };
    match pushed {
        Ok(Ok(())) => Ok(1),
        // The command's error reply (counted where it happened, as the
        // table says: Redis's field, which scripts see too).
        Ok(Err(msg)) => {
            push_error(state, &msg, true);
            if kind == Kind::Pcall {
                Ok(1)
            } else {
                Err(Raise)
            }
        }
        Err(why) => {
            push_error(state, &format!("ERR {why}"), false);
            Err(Raise)
        }
    }
}

/// A `redis.call` argument's bytes: a Lua string's own, or a number
/// written out.
enum Arg<'a> {
    Str(&'a [u8]),
    Num(String),
}

impl std::ops::Deref for Arg<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Arg::Str(b) => b,
            Arg::Num(v) => v.as_bytes(),
        }
    }
}

/// A command's arguments, on the stack when there are few.
type Args<T> = smallvec::SmallVec<[T; 8]>;

/// The call's arguments (Redis's error when one is neither a string nor
/// a number). The strings are borrowed from the stack, where they stay
/// until the call returns.
unsafe fn args<'a>(state: *mut ffi::lua_State) -> Result<Args<Arg<'a>>, String> {
    let n = ffi::lua_gettop(state);
    let mut out = Args::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 1..=n {
        match ffi::lua_type(state, i) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let ptr = ffi::lua_tolstring(state, i, &mut len);
                // SAFETY: a string value's bytes, `len` of them, which Lua
                // keeps while the value is on the stack (the call's
                // arguments stay there until it returns).
                out.push(Arg::Str(std::slice::from_raw_parts(ptr.cast::<u8>(), len)));
            }
            // (Lua 5.1's numbers are doubles: as Redis, %.17g.)
            ffi::LUA_TNUMBER => {
                out.push(Arg::Num(crate::util::fmt_f64(ffi::lua_tonumber(state, i))))
            }
            _ => {
                return Err(
                    "ERR Lua redis lib command arguments must be strings or integers".into(),
                )
            }
        }
    }
    Ok(out)
}

/// `{err = msg}` pushed (with `ignore_error_stats_update = true` when the
/// error was counted already).
unsafe fn push_error(state: *mut ffi::lua_State, msg: &str, counted: bool) {
    ffi::lua_checkstack(state, 4);
    ffi::lua_createtable(state, 0, 2);
    push_bytes(state, b"err");
    push_bytes(state, msg.as_bytes());
    ffi::lua_rawset(state, -3);
    if counted {
        push_bytes(state, b"ignore_error_stats_update");
        ffi::lua_pushboolean(state, 1);
        ffi::lua_rawset(state, -3);
    }
}

unsafe fn push_bytes(state: *mut ffi::lua_State, b: &[u8]) {
    ffi::lua_pushlstring_(state, b.as_ptr().cast(), b.len());
}

/// `{name = <the value on top>}`, replacing it.
unsafe fn wrap(state: *mut ffi::lua_State, name: &[u8]) {
    ffi::lua_createtable(state, 0, 1);
    push_bytes(state, name);
    ffi::lua_pushvalue(state, -3);
    ffi::lua_rawset(state, -3);
    ffi::lua_replace(state, -2);
}

/// A command's reply (RESP2 or RESP3 bytes) pushed as a Lua value, as
/// Redis 7.0 converts them: integers are numbers, bulk strings strings, a
/// RESP2 null bulk or array `false`, arrays tables, status replies
/// `{ok=...}`; and RESP3's null `nil`, booleans booleans, maps
/// `{map={k=v...}}`, sets `{set={e=true...}}`, doubles `{double=n}`, big
/// numbers `{big_number=s}`, verbatim strings `{verbatim_string={format=f,
/// string=s}}` (attributes are skipped). An error reply is `Ok(Err)`,
/// nothing pushed; `Err` is a reply this code cannot read (a bug).
unsafe fn push_reply(
    state: *mut ffi::lua_State,
    bytes: &[u8],
) -> Result<Result<(), String>, &'static str> {
    let mut at = 0;
    push(state, bytes, &mut at, 0)
}

/// The value at `at` (an error inside an aggregate is an `{err=...}`
/// element).
unsafe fn element(
    state: *mut ffi::lua_State,
    bytes: &[u8],
    at: &mut usize,
    depth: usize,
) -> Result<(), &'static str> {
    if let Err(e) = push(state, bytes, at, depth + 1)? {
        push_error(state, &e, false);
    }
    Ok(())
}

/// The `n` bytes of a bulk-like reply at `at`, and its CRLF.
fn body<'a>(bytes: &'a [u8], at: &mut usize, n: i64) -> Result<&'a [u8], &'static str> {
    let n = usize::try_from(n).map_err(|_| "a command's reply has a bad length")?;
    let b = bytes
        .get(*at..*at + n)
        .ok_or("a command's reply was cut short")?;
    *at += n + 2;
    Ok(b)
}

fn line<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], &'static str> {
    let rest = bytes.get(*at..).unwrap_or_default();
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("a command's reply was cut short")?;
    *at += end + 2;
    rest.get(1..end)
        .ok_or("a command's reply has an empty line")
}

fn number(l: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("a command's reply has a bad number")
}

/// The most nested a reply may be (Lua's C stack has room for it).
const MAX_DEPTH: usize = 64;

unsafe fn push(
    state: *mut ffi::lua_State,
    bytes: &[u8],
    at: &mut usize,
    depth: usize,
) -> Result<Result<(), String>, &'static str> {
    if depth > MAX_DEPTH {
        return Err("a command's reply is nested too deep");
    }
    if ffi::lua_checkstack(state, 6) == 0 {
        return Err("a command's reply is nested too deep");
    }
    let kind = *bytes.get(*at).ok_or("a command gave no reply")?;
    let l = line(bytes, at)?;
    match kind {
        b'+' => {
            push_bytes(state, l);
            wrap(state, b"ok");
        }
        b'-' => return Ok(Err(String::from_utf8_lossy(l).into_owned())),
        b':' => ffi::lua_pushnumber(state, number(l)? as f64),
        b'$' => match number(l)? {
            n if n < 0 => ffi::lua_pushboolean(state, 0),
            n => push_bytes(state, body(bytes, at, n)?),
        },
        b'*' => match number(l)? {
            n if n < 0 => ffi::lua_pushboolean(state, 0),
            n => {
                let narr = c_int::try_from(n).map_err(|_| "a command's reply is too long")?;
                ffi::lua_createtable(state, narr, 0);
                for i in 1..=narr {
                    element(state, bytes, at, depth)?;
                    ffi::lua_rawseti_(state, -2, i);
                }
            }
        },
        b'_' => ffi::lua_pushnil(state),
        b'#' => ffi::lua_pushboolean(state, c_int::from(l == b"t")),
        b',' => {
            let f = crate::util::parse_f64(l).ok_or("a command's reply has a bad double")?;
            ffi::lua_pushnumber(state, f);
            wrap(state, b"double");
        }
        b'(' => {
            push_bytes(state, l);
            wrap(state, b"big_number");
        }
        b'=' => {
            let b = body(bytes, at, number(l)?)?;
            let (format, text) = match b.get(3) {
                Some(b':') => (&b[..3], &b[4..]),
                _ => (&b""[..], b),
            };
            ffi::lua_createtable(state, 0, 2);
            push_bytes(state, b"format");
            push_bytes(state, format);
            ffi::lua_rawset(state, -3);
            push_bytes(state, b"string");
            push_bytes(state, text);
            ffi::lua_rawset(state, -3);
            wrap(state, b"verbatim_string");
        }
        b'%' | b'~' => {
            ffi::lua_createtable(state, 0, 0);
            for _ in 0..number(l)? {
                element(state, bytes, at, depth)?;
                if kind == b'%' {
                    element(state, bytes, at, depth)?;
                } else {
                    ffi::lua_pushboolean(state, 1);
                }
                // Lua takes neither nil nor NaN as a key (it would raise):
                // such an entry is left out.
                let key_ok = match ffi::lua_type(state, -2) {
                    ffi::LUA_TNIL => false,
                    ffi::LUA_TNUMBER => !ffi::lua_tonumber(state, -2).is_nan(),
                    _ => true,
                };
                if key_ok {
                    ffi::lua_rawset(state, -3);
                } else {
                    ffi::lua_settop(state, -3);
                }
            }
            wrap(state, if kind == b'%' { b"map" } else { b"set" });
        }
        // Attributes annotate the reply that follows: skipped.
        b'|' => {
            let mark = ffi::lua_gettop(state);
            for _ in 0..2 * number(l)? {
                element(state, bytes, at, depth)?;
                ffi::lua_settop(state, mark);
            }
            return push(state, bytes, at, depth + 1);
        }
        _ => return Err("a command's reply of a kind scripts do not take"),
    }
    Ok(Ok(()))
}
