//! Values between Redis and Lua, as Redis 7.0 converts them for RESP2
//! scripts: a command's reply becomes a Lua value for `redis.call`, and a
//! script's return value becomes the client's reply.

use mlua::{Lua, Table, Value};

use crate::resp::Reply;

/// A command's reply (RESP2 bytes) as a Lua value: integers are numbers,
/// bulk strings strings, a null bulk or array `false`, arrays tables,
/// status replies `{ok=...}`; an error reply is `Err(message)`.
pub fn reply_to_lua(lua: &Lua, bytes: &[u8]) -> mlua::Result<Result<Value, String>> {
    let mut at = 0;
    parse(lua, bytes, &mut at, 0)
}

fn line<'a>(bytes: &'a [u8], at: &mut usize) -> mlua::Result<&'a [u8]> {
    let rest = &bytes[*at..];
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| mlua::Error::runtime("a command's reply was cut short"))?;
    *at += end + 2;
    Ok(&rest[1..end])
}

fn number(l: &[u8]) -> mlua::Result<i64> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| mlua::Error::runtime("a command's reply has a bad number"))
}

fn parse(
    lua: &Lua,
    bytes: &[u8],
    at: &mut usize,
    depth: usize,
) -> mlua::Result<Result<Value, String>> {
    if depth > 64 {
        return Err(mlua::Error::runtime("a command's reply is nested too deep"));
    }
    let kind = *bytes
        .get(*at)
        .ok_or_else(|| mlua::Error::runtime("a command gave no reply"))?;
    let l = line(bytes, at)?;
    Ok(Ok(match kind {
        b'+' => {
            let t = lua.create_table()?;
            t.raw_set("ok", lua.create_string(l)?)?;
            Value::Table(t)
        }
        b'-' => return Ok(Err(String::from_utf8_lossy(l).into_owned())),
        b':' => Value::Integer(number(l)?),
        b'$' => match number(l)? {
            n if n < 0 => Value::Boolean(false),
            n => {
                let n = n as usize;
                let body = bytes
                    .get(*at..*at + n)
                    .ok_or_else(|| mlua::Error::runtime("a command's reply was cut short"))?;
                *at += n + 2;
                Value::String(lua.create_string(body)?)
            }
        },
        b'*' => match number(l)? {
            n if n < 0 => Value::Boolean(false),
            n => {
                let t = lua.create_table()?;
                for i in 1..=n {
                    // An error inside an array is an `{err=...}` element.
                    let v = match parse(lua, bytes, at, depth + 1)? {
                        Ok(v) => v,
                        Err(e) => Value::Table(error_table(lua, &e)?),
                    };
                    t.raw_set(i, v)?;
                }
                Value::Table(t)
            }
        },
        other => {
            return Err(mlua::Error::runtime(format!(
                "a command's reply of a kind scripts do not take ({:?})",
                other as char
            )))
        }
    }))
}

/// `{err=message}`: an error as scripts hold it (`redis.pcall`,
/// `redis.error_reply`).
pub fn error_table(lua: &Lua, msg: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("err", msg)?;
    Ok(t)
}

/// Writes a script's return value as the client's reply: numbers are
/// integers (truncated), strings bulk strings, `true` 1, `false` and
/// `nil` a null, `{err=...}` an error, `{ok=...}` a status, other tables
/// arrays up to their first `nil`.
pub fn lua_to_reply(v: &Value, out: &mut Reply, depth: usize) {
    match v {
        Value::Integer(n) => out.int(*n),
        // C's cast, as Redis's: what does not fit is i64::MIN.
        Value::Number(f) => out.int(if f.is_finite() && f.abs() < 9.2e18 {
            *f as i64
        } else {
            i64::MIN
        }),
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Boolean(true) => out.int(1),
        Value::Table(t) if depth < 64 => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                out.error_bytes(&e.as_bytes());
            } else if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                out.simple(&String::from_utf8_lossy(&s.as_bytes()).replace(['\r', '\n'], " "));
            } else {
                let mut items = Vec::new();
                for i in 1.. {
                    match t.raw_get::<Value>(i) {
                        Ok(Value::Nil) | Err(_) => break,
                        Ok(v) => items.push(v),
                    }
                }
                out.array(items.len());
                for item in &items {
                    lua_to_reply(item, out, depth + 1);
                }
            }
        }
        _ => out.null(),
    }
}
