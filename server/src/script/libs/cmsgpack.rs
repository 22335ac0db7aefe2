//! `cmsgpack`: lua-cmsgpack 0.4 as Redis ships it. `pack(...)` writes
//! each argument as MessagePack (integral numbers as the smallest integer
//! type, others as float32 when exact, else float64; strings as str8/16/32;
//! tables as arrays when their keys are exactly 1..n, else maps; nested
//! past 16 levels as nil); `unpack(s)` reads every object back;
//! `unpack_one` and `unpack_limit` read some, with the offset to go on
//! from.

use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::{check_number, check_string, error};

const MAX_NESTING: usize = 16;

fn encode_number(out: &mut Vec<u8>, n: f64) {
    if n.is_finite() && n == (n as i64) as f64 && n.abs() < 9.3e18 {
        let i = n as i64;
        if i >= 0 {
            let u = i as u64;
            if u <= 127 {
                out.push(u as u8);
            } else if u <= 0xff {
                out.extend_from_slice(&[0xcc, u as u8]);
            } else if u <= 0xffff {
                out.push(0xcd);
                out.extend_from_slice(&(u as u16).to_be_bytes());
            } else if u <= 0xffff_ffff {
                out.push(0xce);
                out.extend_from_slice(&(u as u32).to_be_bytes());
            } else {
                out.push(0xcf);
                out.extend_from_slice(&u.to_be_bytes());
            }
        } else if i >= -32 {
            out.push(i as i8 as u8);
        } else if i >= -128 {
            out.extend_from_slice(&[0xd0, i as i8 as u8]);
        } else if i >= -32768 {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        } else if i >= -(1 << 31) {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    } else if f64::from(n as f32) == n {
        out.push(0xca);
        out.extend_from_slice(&(n as f32).to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_len(out: &mut Vec<u8>, n: usize, fix: (u8, usize), b8: Option<u8>, b16: u8, b32: u8) {
    if n < fix.1 {
        out.push(fix.0 | n as u8);
    } else if let Some(b8) = b8.filter(|_| n <= 0xff) {
        out.extend_from_slice(&[b8, n as u8]);
    } else if n <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Whether `t`'s keys are exactly 1..n (an empty table is an array).
fn is_array(t: &Table) -> mlua::Result<Option<usize>> {
    Ok(super::index_keys(t)?
        .filter(|&(max, count)| max as usize == count)
        .map(|(_, count)| count))
}

fn encode(out: &mut Vec<u8>, v: &Value, level: usize) -> mlua::Result<()> {
    if out.len() > MAX_OUTPUT {
        return Err(mlua::Error::runtime(super::TOO_LARGE));
    }
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_number(out, *i as f64),
        Value::Number(n) => encode_number(out, *n),
        Value::String(s) => {
            let b = s.as_bytes();
            encode_len(out, b.len(), (0xa0, 32), Some(0xd9), 0xda, 0xdb);
            out.extend_from_slice(&b);
        }
        Value::Table(t) if level < MAX_NESTING => match is_array(t)? {
            Some(n) => {
                encode_len(out, n, (0x90, 16), None, 0xdc, 0xdd);
                for i in 1..=n {
                    encode(out, &t.raw_get::<Value>(i)?, level + 1)?;
                }
            }
            None => {
                let pairs: Vec<(Value, Value)> =
                    t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
                encode_len(out, pairs.len(), (0x80, 16), None, 0xde, 0xdf);
                for (k, item) in &pairs {
                    encode(out, k, level + 1)?;
                    encode(out, item, level + 1)?;
                }
            }
        },
        _ => out.push(0xc0),
    }
    Ok(())
}

/// Why a decode stopped, in lua-cmsgpack's words.
#[derive(Debug)]
enum Bad {
    Missing,
    Format,
    /// Nested deeper than [`MAX_DECODE_DEPTH`] (Lua's stack check).
    Deep,
}

/// Arrays and maps nested deeper than this are refused when decoding (the
/// C library stops where Lua's stack does; this thread's stack must not
/// be the limit: the same bound as cjson's).
const MAX_DECODE_DEPTH: usize = super::cjson::MAX_DEPTH as usize;

/// The most bytes `pack` writes (past it the script is refused: Rust's
/// buffer is not under Lua's memory limit).
const MAX_OUTPUT: usize = super::MAX_OUTPUT;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    depth: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Bad> {
        let s = self.b.get(self.at..self.at + n).ok_or(Bad::Missing)?;
        self.at += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, Bad> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &c| (acc << 8) | u64::from(c)))
    }

    fn value(&mut self, lua: &Lua) -> Result<mlua::Result<Value>, Bad> {
        let c = self.take(1)?[0];
        let num = |v: f64| Ok(Ok(Value::Number(v)));
        match c {
            0x00..=0x7f => num(f64::from(c)),
            0xe0..=0xff => num(f64::from(c as i8)),
            0xc0 => Ok(Ok(Value::Nil)),
            0xc2 => Ok(Ok(Value::Boolean(false))),
            0xc3 => Ok(Ok(Value::Boolean(true))),
            0xcc => num(self.be(1)? as f64),
            0xcd => num(self.be(2)? as f64),
            0xce => num(self.be(4)? as f64),
            0xcf => num(self.be(8)? as f64),
            0xd0 => num(f64::from(self.be(1)? as u8 as i8)),
            0xd1 => num(f64::from(self.be(2)? as u16 as i16)),
            0xd2 => num(f64::from(self.be(4)? as u32 as i32)),
            0xd3 => num(self.be(8)? as i64 as f64),
            0xca => num(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => num(f64::from_bits(self.be(8)?)),
            0xa0..=0xbf => self.string(lua, usize::from(c & 0x1f)),
            0xd9 | 0xc4 => {
                let n = self.be(1)? as usize;
                self.string(lua, n)
            }
            0xda | 0xc5 => {
                let n = self.be(2)? as usize;
                self.string(lua, n)
            }
            0xdb | 0xc6 => {
                let n = self.be(4)? as usize;
                self.string(lua, n)
            }
            0x90..=0x9f => self.array(lua, usize::from(c & 0x0f)),
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(lua, n)
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(lua, n)
            }
            0x80..=0x8f => self.map(lua, usize::from(c & 0x0f)),
            0xde => {
                let n = self.be(2)? as usize;
                self.map(lua, n)
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(lua, n)
            }
            _ => Err(Bad::Format),
        }
    }

    fn string(&mut self, lua: &Lua, n: usize) -> Result<mlua::Result<Value>, Bad> {
        let s = self.take(n)?;
        Ok(lua.create_string(s).map(Value::String))
    }

    /// Decodes one level deeper with `f` (an array's or a map's items).
    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<mlua::Result<Value>, Bad>,
    ) -> Result<mlua::Result<Value>, Bad> {
        self.depth += 1;
        if self.depth > MAX_DECODE_DEPTH {
            return Err(Bad::Deep);
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn array(&mut self, lua: &Lua, n: usize) -> Result<mlua::Result<Value>, Bad> {
        self.nested(|r| r.array_items(lua, n))
    }

    fn array_items(&mut self, lua: &Lua, n: usize) -> Result<mlua::Result<Value>, Bad> {
        let t = match lua.create_table() {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        for i in 1..=n {
            let v = match self.value(lua)? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = t.raw_set(i, v) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(Value::Table(t)))
    }

    fn map(&mut self, lua: &Lua, n: usize) -> Result<mlua::Result<Value>, Bad> {
        self.nested(|r| r.map_items(lua, n))
    }

    fn map_items(&mut self, lua: &Lua, n: usize) -> Result<mlua::Result<Value>, Bad> {
        let t = match lua.create_table() {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        for _ in 0..n {
            let k = match self.value(lua)? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let v = match self.value(lua)? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            // (A nil key cannot be stored: Lua would raise; skipped.)
            if k != Value::Nil {
                if let Err(e) = t.raw_set(k, v) {
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(Value::Table(t)))
    }
}

/// Decodes up to `limit` objects (0: all) from `offset`: the values and
/// the offset after them (-1 at the end of the input).
fn unpack_some(
    lua: &Lua,
    s: &[u8],
    limit: usize,
    offset: usize,
) -> mlua::Result<(Vec<Value>, i64)> {
    let mut r = Reader {
        b: s,
        at: offset,
        depth: 0,
    };
    let mut out = Vec::new();
    while r.at < s.len() && (limit == 0 || out.len() < limit) {
        match r.value(lua) {
            Ok(v) => out.push(v?),
            Err(Bad::Missing) => return Err(error(lua, "Missing bytes in input.")),
            Err(Bad::Format) => return Err(error(lua, "Bad data format in input.")),
            Err(Bad::Deep) => {
                return Err(error(
                    lua,
                    "stack overflow (in function mp_decode_to_lua_array)",
                ))
            }
        }
    }
    let next = if r.at >= s.len() { -1 } else { r.at as i64 };
    Ok((out, next))
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: Variadic<Value>| {
            if args.is_empty() {
                return Err(super::arg_error(
                    lua,
                    0,
                    "pack",
                    "MessagePack pack needs input.",
                ));
            }
            let mut out = Vec::new();
            for a in args.iter() {
                encode(&mut out, a, 0)?;
            }
            lua.create_string(&out)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, args: Variadic<Value>| {
            let s = check_string(lua, args.as_slice(), 1, "unpack")?;
            let (vals, _) = unpack_some(lua, &s, 0, 0)?;
            Ok(MultiValue::from_iter(vals))
        })?,
    )?;
    let limited = |name: &'static str, fixed: Option<usize>| {
        move |lua: &Lua, args: Variadic<Value>| {
            let a = args.as_slice();
            let s = check_string(lua, a, 1, name)?;
            let (limit, off_arg) = match fixed {
                Some(l) => (l as i64, 2),
                None => (check_number(lua, a, 2, name)? as i64, 3),
            };
            let offset = match a.get(off_arg - 1) {
                None | Some(Value::Nil) => 0,
                Some(_) => check_number(lua, a, off_arg, name)? as i64,
            };
            // lua_cmsgpack's checks and words (its first message names
            // the input's length as the limit).
            let len = s.len() as i64;
            if offset < 0 || limit < 0 {
                return Err(error(
                    lua,
                    &format!(
                        "Invalid request to unpack with offset of {offset} and limit of {len}."
                    ),
                ));
            }
            if offset > len {
                return Err(error(
                    lua,
                    &format!("Start offset {offset} greater than input length {len}."),
                ));
            }
            let (vals, next) = unpack_some(lua, &s, limit as usize, offset as usize)?;
            // (Everything from the start: no offset to go on from, as
            // `unpack`.)
            if limit == 0 && offset == 0 {
                return Ok(MultiValue::from_iter(vals));
            }
            Ok(MultiValue::from_iter(
                std::iter::once(Value::Integer(next)).chain(vals),
            ))
        }
    };
    t.raw_set(
        "unpack_one",
        lua.create_function(limited("unpack_one", Some(1)))?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(limited("unpack_limit", None))?,
    )?;
    t.raw_set("_NAME", "cmsgpack")?;
    t.raw_set("_VERSION", "lua-cmsgpack 0.4.0")?;
    lua.globals().raw_set("cmsgpack", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_lua_cmsgpack_and_reads_back() {
        let lua = Lua::new();
        install(&lua).unwrap();
        let hex = |code: &str| -> String {
            let s: mlua::String = lua.load(code).eval().unwrap();
            crate::util::hex(&s.as_bytes())
        };
        assert_eq!(
            hex("return cmsgpack.pack(1, -1, 200, -200, 70000)"),
            "01ffccc8d1ff38ce00011170"
        );
        assert_eq!(
            hex("return cmsgpack.pack(1.5, 0.1)"),
            "ca3fc00000cb3fb999999999999a"
        );
        assert_eq!(hex("return cmsgpack.pack('ab', true, nil)"), "a26162c3c0");
        assert_eq!(
            hex("return cmsgpack.pack({1, 2}, {})"),
            "9201029 0".replace(' ', "")
        );
        assert_eq!(hex("return cmsgpack.pack({a = 1})"), "81a16101");
        let v: String = lua
            .load("local a, b, c = cmsgpack.unpack(cmsgpack.pack({1, {x = 'y'}}, 'z', 3.25)) return a[2].x .. b .. c")
            .eval()
            .unwrap();
        assert_eq!(v, "yz3.25");
        let e = lua
            .load("return cmsgpack.unpack('\\146\\1')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("Missing bytes in input."), "{e}");
        let e = lua
            .load("return cmsgpack.unpack('\\193')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bad data format in input."), "{e}");
        // Nesting past the limit is an error, not this thread's stack.
        let e = lua
            .load("return cmsgpack.unpack(string.rep('\\145', 100000))")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("stack overflow"), "{e}");
        let (next, one): (i64, i64) = lua
            .load("return cmsgpack.unpack_one(cmsgpack.pack(7, 8))")
            .eval()
            .unwrap();
        assert_eq!((next, one), (1, 7));
    }
}
