//! The C libraries Redis 7.0 loads into its Lua, written here in Rust
//! with the same behaviour and error words: `bit` (LuaBitOp), `struct`,
//! `cjson` and `cmsgpack`; and `math.random` as Redis replaces it. Each module's `install` adds its table to the
//! globals (scripts then see it read-only, as the standard libraries).

pub mod bit;
pub mod cjson;
pub mod cmsgpack;
pub mod random;
pub mod structlib;

use mlua::{Lua, Table, Value};

/// The most bytes a library function writes into one Rust buffer
/// (`cjson.encode`, `cmsgpack.pack`): those buffers are not under Lua's
/// memory limit, and a few tables naming each other could make an
/// endless output. A script's Lua memory is capped at this too.
pub(crate) const MAX_OUTPUT: usize = 512 << 20;

/// The error past [`MAX_OUTPUT`].
pub(crate) const TOO_LARGE: &str = "the encoded value is too large (over 512 MB)";

/// Adds the four libraries to `lua`'s globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    bit::install(lua)?;
    structlib::install(lua)?;
    cjson::install(lua)?;
    cmsgpack::install(lua)?;
    random::install(lua)?;
    Ok(())
}

/// Where the calling Lua code is (`user_script:3: `), as C libraries'
/// `luaL_error` prefixes their messages; empty when the caller is not
/// Lua code.
pub(crate) fn caller_position(lua: &Lua) -> String {
    let Some(d) = lua.inspect_stack(1) else {
        return String::new();
    };
    let line = d.curr_line();
    if line < 0 {
        return String::new();
    }
    let src = d.source();
    let name = src.short_src.as_deref().unwrap_or("?").to_string();
    format!("{name}:{line}: ")
}

/// `luaL_error`: `msg` at the caller's position.
pub(crate) fn error(lua: &Lua, msg: &str) -> mlua::Error {
    mlua::Error::RuntimeError(format!("{}{msg}", caller_position(lua)))
}

/// `luaL_argerror`: `bad argument #n to 'f' (msg)`.
pub(crate) fn arg_error(lua: &Lua, n: usize, f: &str, msg: &str) -> mlua::Error {
    error(lua, &format!("bad argument #{n} to '{f}' ({msg})"))
}

/// A value's type name as Lua's messages give it.
pub(crate) fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(Value::LightUserData(_) | Value::UserData(_)) => "userdata",
        Some(_) => "userdata",
    }
}

/// `luaL_checknumber`: argument `n` (1-based) of `f` as a number
/// (numeric strings too).
pub(crate) fn check_number(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<f64> {
    let v = args.get(n - 1);
    let num = match v {
        Some(Value::Integer(i)) => Some(*i as f64),
        Some(Value::Number(x)) => Some(*x),
        Some(Value::String(s)) => lua.coerce_number(Value::String(s.clone())).ok().flatten(),
        _ => None,
    };
    num.ok_or_else(|| arg_error(lua, n, f, &format!("number expected, got {}", type_name(v))))
}

/// `luaL_checklstring`: argument `n` of `f` as bytes (numbers as Lua
/// writes them).
pub(crate) fn check_string(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<Vec<u8>> {
    let v = args.get(n - 1);
    match v {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(x @ (Value::Integer(_) | Value::Number(_))) => Ok(lua
            .coerce_string(x.clone())?
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default()),
        _ => Err(arg_error(
            lua,
            n,
            f,
            &format!("string expected, got {}", type_name(v)),
        )),
    }
}

/// When every key of `t` is a positive integer: the largest and how many
/// there are (how cjson and cmsgpack tell arrays from maps).
pub(crate) fn index_keys(t: &Table) -> mlua::Result<Option<(f64, usize)>> {
    let (mut max, mut count) = (0f64, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(None),
        };
        if n < 1.0 || n.fract() != 0.0 {
            return Ok(None);
        }
        max = max.max(n);
        count += 1;
    }
    Ok(Some((max, count)))
}
