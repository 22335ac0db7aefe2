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
    rest.get(1..end)
        .ok_or_else(|| mlua::Error::runtime("a command's reply has an empty line"))
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

/// How much of a script's return value is written before it is refused:
/// a few tables can name each other so that the reply would be endless
/// (`t = {t, t}` forty times is 2^40 elements).
pub struct Budget {
    pub elements: usize,
    /// The reply may not grow past this many bytes.
    pub max_bytes: usize,
    /// Tables on the path from the top: one met again is a cycle.
    path: Vec<*const std::ffi::c_void>,
}

impl Budget {
    pub fn new(elements: usize, max_bytes: usize) -> Budget {
        Budget {
            elements,
            max_bytes,
            path: Vec::new(),
        }
    }
}

/// Why a return value was not written (Redis's words where it has some).
#[derive(Debug, PartialEq)]
pub enum TooBig {
    /// A table inside itself, or nested past the limit.
    Nested,
    /// More elements or bytes than the budget.
    Elements,
}

/// Tables nested deeper than this in a reply are refused.
pub const MAX_REPLY_DEPTH: usize = 1000;

/// Writes a script's return value as the client's reply: numbers are
/// integers (truncated), strings bulk strings, `true` 1, `false` and
/// `nil` a null, `{err=...}` an error, `{ok=...}` a status, other tables
/// arrays up to their first `nil`. Refused (and nothing meaningful
/// written: the caller cuts `out` back) past the budget or for a table
/// that contains itself.
pub fn lua_to_reply(v: &Value, out: &mut Reply, budget: &mut Budget) -> Result<(), TooBig> {
    if budget.elements == 0 || out.len() > budget.max_bytes {
        return Err(TooBig::Elements);
    }
    budget.elements -= 1;
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
        Value::Table(t) => {
            let p = t.to_pointer();
            if budget.path.contains(&p) || budget.path.len() >= MAX_REPLY_DEPTH {
                return Err(TooBig::Nested);
            }
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                out.error_bytes(&e.as_bytes());
            } else if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                // The bytes as they are, CR/LF as spaces (Redis's).
                let b: Vec<u8> = s
                    .as_bytes()
                    .iter()
                    .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                    .collect();
                out.buf.extend_from_slice(b"+");
                out.buf.extend_from_slice(&b);
                out.buf.extend_from_slice(b"\r\n");
            } else {
                let mut items = Vec::new();
                for i in 1.. {
                    match t.raw_get::<Value>(i) {
                        Ok(Value::Nil) | Err(_) => break,
                        Ok(v) => items.push(v),
                    }
                    if items.len() > budget.elements {
                        return Err(TooBig::Elements);
                    }
                }
                out.array(items.len());
                budget.path.push(p);
                for item in &items {
                    lua_to_reply(item, out, budget)?;
                }
                budget.path.pop();
            }
        }
        _ => out.null(),
    }
    Ok(())
}
