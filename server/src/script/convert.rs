//! Values between Lua and Redis, as Redis 7.0 converts them: a script's
//! return value becomes the client's reply (in the client's RESP version;
//! the RESP3 types a script may return, `{map=...}`, `{set=...}`,
//! `{double=...}`..., reach a RESP2 client as RESP2 shapes). The other
//! way, a command's reply as `redis.call` returns it, is in `super::call`.

use mlua::{Lua, Table, Value};

use crate::resp::Reply;

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
    /// Tables already written as plain arrays.
    plain: std::collections::HashSet<*const std::ffi::c_void>,
    /// Error replies written that were not counted where they came from
    /// (the script's own `{err=...}`): for the error statistics.
    pub errors: Vec<String>,
    /// Error replies written that were counted where they came from.
    pub uncounted: usize,
}

impl Budget {
    pub fn new(elements: usize, max_bytes: usize) -> Budget {
        Budget {
            elements,
            max_bytes,
            path: Vec::new(),
            plain: Default::default(),
            errors: Vec::new(),
            uncounted: 0,
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
/// integers (truncated), strings bulk strings, `nil` a null, booleans as
/// the script's RESP version says (`script_resp` 2: `true` 1, `false` a
/// null; 3: booleans), `{err=...}` an error, `{ok=...}` a status,
/// `{double=n}`, `{big_number=s}`, `{map=t}`, `{set=t}`,
/// `{verbatim_string={format=f, string=s}}` those types, other tables
/// arrays up to their first `nil`. Refused (and nothing meaningful
/// written: the caller cuts `out` back) past the budget or for a table
/// that contains itself.
pub fn lua_to_reply(
    v: &Value,
    out: &mut Reply,
    budget: &mut Budget,
    script_resp: u8,
) -> Result<(), TooBig> {
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
        Value::Boolean(b) if script_resp >= 3 => out.boolean(*b),
        Value::Boolean(true) => out.int(1),
        Value::Table(t) => {
            let p = t.to_pointer();
            if budget.path.contains(&p) || budget.path.len() >= MAX_REPLY_DEPTH {
                return Err(TooBig::Nested);
            }
            // (A table met again that was a plain array is one still: the
            // same few tables named over and over are looked at once.)
            let plain = budget.plain.contains(&p);
            if plain {
                write_array(t, p, out, budget, script_resp)?;
            } else if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                out.error_bytes(&e.as_bytes());
                // (redis.pcall's were counted when the command failed.)
                if !t
                    .raw_get::<bool>("ignore_error_stats_update")
                    .unwrap_or(false)
                {
                    budget.errors.push(e.to_string_lossy());
                } else {
                    budget.uncounted += 1;
                }
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
            } else if let Ok(Value::Number(f)) = t.raw_get::<Value>("double") {
                out.double(f);
            } else if let Ok(Value::Integer(n)) = t.raw_get::<Value>("double") {
                out.double(n as f64);
            } else if let Ok(Value::String(s)) = t.raw_get::<Value>("big_number") {
                out.big_number(&s.as_bytes());
            } else if let Ok(Value::Table(m)) = t.raw_get::<Value>("map") {
                budget.path.push(p);
                write_pairs(&m, out, budget, script_resp, true)?;
                budget.path.pop();
            } else if let Ok(Value::Table(m)) = t.raw_get::<Value>("set") {
                budget.path.push(p);
                write_pairs(&m, out, budget, script_resp, false)?;
                budget.path.pop();
            } else if let Some((format, text)) = verbatim(t) {
                out.verbatim_as(&format, &text);
            } else {
                budget.plain.insert(p);
                write_array(t, p, out, budget, script_resp)?;
            }
        }
        _ => out.null(),
    }
    Ok(())
}

/// At least how many elements `v` is written as, counted up to past
/// `cap`: a plain array is itself and its entries, any other value one (a
/// lower bound: `{map=...}` and the like count one). Each table is
/// counted once and remembered, so a few tables naming each other over
/// and over (`t = {t, t}` forty times: 2^40 elements) are counted in a
/// few steps, and such a reply is refused before any of it is written
/// rather than after `cap` elements of it.
pub fn at_least_elements(v: &Value, cap: usize) -> usize {
    let mut memo = std::collections::HashMap::new();
    count(v, cap, &mut memo, &mut Vec::new())
}

fn count(
    v: &Value,
    cap: usize,
    memo: &mut std::collections::HashMap<*const std::ffi::c_void, usize>,
    path: &mut Vec<*const std::ffi::c_void>,
) -> usize {
    let Value::Table(t) = v else {
        return 1;
    };
    let p = t.to_pointer();
    if let Some(n) = memo.get(&p) {
        return *n;
    }
    // (Cycles and depth are refused as the reply is written.)
    if path.contains(&p) || path.len() >= MAX_REPLY_DEPTH {
        return 1;
    }
    // Written as one value, as `lua_to_reply` reads them.
    let is = |k: &str, f: fn(&Value) -> bool| t.raw_get::<Value>(k).is_ok_and(|v| f(&v));
    let string = |v: &Value| matches!(v, Value::String(_));
    let table = |v: &Value| matches!(v, Value::Table(_));
    let number = |v: &Value| matches!(v, Value::Number(_) | Value::Integer(_));
    if is("err", string)
        || is("ok", string)
        || is("double", number)
        || is("big_number", string)
        || is("map", table)
        || is("set", table)
        || verbatim(t).is_some()
    {
        return 1;
    }
    path.push(p);
    let mut n = 1usize;
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(c) => n = n.saturating_add(count(&c, cap, memo, path)),
        }
        if n > cap {
            break;
        }
    }
    path.pop();
    memo.insert(p, n);
    n
}

/// A table's elements up to its first `nil`, as an array reply.
fn write_array(
    t: &Table,
    p: *const std::ffi::c_void,
    out: &mut Reply,
    budget: &mut Budget,
    script_resp: u8,
) -> Result<(), TooBig> {
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
        lua_to_reply(item, out, budget, script_resp)?;
    }
    budget.path.pop();
    Ok(())
}

/// A `{verbatim_string={format=f, string=s}}` table's format and text.
fn verbatim(t: &Table) -> Option<(Vec<u8>, Vec<u8>)> {
    let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string") else {
        return None;
    };
    match (v.raw_get::<Value>("format"), v.raw_get::<Value>("string")) {
        (Ok(Value::String(f)), Ok(Value::String(s))) => {
            Some((f.as_bytes().to_vec(), s.as_bytes().to_vec()))
        }
        _ => None,
    }
}

/// A `{map=t}` (`with_values`) or `{set=t}` table's pairs as a map or set
/// reply.
fn write_pairs(
    t: &Table,
    out: &mut Reply,
    budget: &mut Budget,
    script_resp: u8,
    with_values: bool,
) -> Result<(), TooBig> {
    let mut pairs = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let Ok(kv) = pair else {
            break;
        };
        pairs.push(kv);
        if pairs.len() > budget.elements {
            return Err(TooBig::Elements);
        }
    }
    if with_values {
        out.map(pairs.len());
    } else {
        out.set(pairs.len());
    }
    for (k, v) in &pairs {
        lua_to_reply(k, out, budget, script_resp)?;
        if with_values {
            lua_to_reply(v, out, budget, script_resp)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(lua: &Lua, code: &str) -> Value {
        lua.load(code).eval().expect("the chunk runs")
    }

    /// Tables that name each other are counted once each, so an endless
    /// reply is seen as such in a few steps; a plain array counts itself
    /// and its entries up to the first nil; a special table counts one.
    #[test]
    fn a_reply_is_counted_without_expanding_shared_tables() {
        let lua = Lua::new();
        let endless = eval(
            &lua,
            "local t = {} for i = 1, 40 do t = {t, t} end return t",
        );
        let started = std::time::Instant::now();
        assert!(at_least_elements(&endless, 10_000_000) > 10_000_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            at_least_elements(&eval(&lua, "return {1, 'a', {2, 3}, nil, 9}"), 100),
            6
        );
        assert_eq!(
            at_least_elements(&eval(&lua, "return {map={a=1, b=2}}"), 100),
            1
        );
        assert_eq!(at_least_elements(&eval(&lua, "return 7"), 100), 1);
        // A key that only looks special does not hide the table's entries.
        let fake_err = eval(
            &lua,
            "local t = {} for i = 1, 40 do t = {t, t, err = true} end return t",
        );
        assert!(at_least_elements(&fake_err, 10_000_000) > 10_000_000);
        // Twenty tables each naming the next twice: 2^21 - 1 elements.
        let wide = eval(
            &lua,
            "local t = {} for i = 1, 20 do t = {t, t} end return t",
        );
        assert_eq!(at_least_elements(&wide, usize::MAX), (1 << 21) - 1);
    }
}
