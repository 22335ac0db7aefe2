//! `struct`: Roberto Ierusalimschy's struct library as Redis ships it
//! (`struct.pack`, `struct.unpack`, `struct.size`): binary strings from
//! a format such as `>I2 b s`.
//!
//! Formats: `>` big and `<` little endian (little by default), `![n]`
//! alignment (a power of two, 8 without `n`), `x` a zero byte, `b`/`B`
//! `h`/`H` `l`/`L` `T` `i[n]`/`I[n]` signed/unsigned integers of 1, 2, 8,
//! 8 and `n` (4) bytes, `f`/`d` floats, `s` a zero-terminated string,
//! `c[n]` `n` bytes (`c0`: the string's length, or in `unpack` the number
//! just read), spaces ignored.

use mlua::{Lua, MultiValue, Value, Variadic};

use super::{arg_error, check_number, check_string, error};

const MAXINTSIZE: usize = 32;
const MAXALIGN: usize = 8;

struct Header {
    little: bool,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            little: true,
            align: 1,
        }
    }
}

/// A format string being read.
struct Fmt<'a> {
    b: &'a [u8],
    at: usize,
}

impl Fmt<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    /// The number that follows, or `default`.
    fn num(&mut self, lua: &Lua, default: usize) -> mlua::Result<usize> {
        if !self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut a: usize = 0;
        while let Some(d) = self.b.get(self.at).filter(|c| c.is_ascii_digit()) {
            let digit = usize::from(d - b'0');
            if a > (i32::MAX as usize) / 10 || a * 10 > i32::MAX as usize - digit {
                return Err(error(lua, "integral size overflow"));
            }
            a = a * 10 + digit;
            self.at += 1;
        }
        Ok(a)
    }
}

/// The size of option `opt` (0 for those that take no room or align
/// nothing).
fn opt_size(lua: &Lua, opt: u8, fmt: &mut Fmt) -> mlua::Result<usize> {
    Ok(match opt {
        b'B' | b'b' => 1,
        b'H' | b'h' => 2,
        b'L' | b'l' | b'T' | b'd' => 8,
        b'f' => 4,
        b'x' => 1,
        b'c' => fmt.num(lua, 1)?,
        b'i' | b'I' => {
            let sz = fmt.num(lua, 4)?;
            if sz > MAXINTSIZE {
                return Err(error(
                    lua,
                    &format!("integral size {sz} is larger than limit of {MAXINTSIZE}"),
                ));
            }
            sz
        }
        _ => 0,
    })
}

fn to_align(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size - (len & (size - 1))) & (size - 1)
}

/// The options that change the header; anything else is an error.
fn control(lua: &Lua, f: &str, opt: u8, fmt: &mut Fmt, h: &mut Header) -> mlua::Result<()> {
    match opt {
        b' ' => {}
        b'>' => h.little = false,
        b'<' => h.little = true,
        b'!' => {
            let a = fmt.num(lua, MAXALIGN)?;
            if !a.is_power_of_two() {
                return Err(error(lua, &format!("alignment {a} is not a power of 2")));
            }
            h.align = a;
        }
        other => {
            return Err(arg_error(
                lua,
                1,
                f,
                &format!("invalid format option '{}'", other as char),
            ))
        }
    }
    Ok(())
}

fn put_integer(out: &mut Vec<u8>, n: f64, little: bool, size: usize) {
    // (C's casts: a negative number through a signed 64-bit integer.)
    let mut value: u64 = if n < 0.0 { n as i64 as u64 } else { n as u64 };
    let mut buf = vec![0u8; size];
    let order: Vec<usize> = if little {
        (0..size).collect()
    } else {
        (0..size).rev().collect()
    };
    for i in order {
        buf[i] = (value & 0xff) as u8;
        value = value.checked_shr(8).unwrap_or(0);
    }
    out.extend_from_slice(&buf);
}

fn get_integer(b: &[u8], little: bool, signed: bool) -> f64 {
    let mut l: u64 = 0;
    let bytes: Vec<u8> = if little {
        b.iter().rev().copied().collect()
    } else {
        b.to_vec()
    };
    for c in bytes {
        l = (l << 8) | u64::from(c);
    }
    if !signed {
        return l as f64;
    }
    let bits = b.len() * 8;
    if (1..=64).contains(&bits) {
        let mask = u64::MAX << (bits - 1);
        if l & mask != 0 {
            l |= mask;
        }
    }
    l as i64 as f64
}

/// `struct.pack(fmt, ...)`.
fn pack(lua: &Lua, args: &[Value]) -> mlua::Result<mlua::String> {
    let f = check_string(lua, args, 1, "pack")?;
    let mut fmt = Fmt { b: &f, at: 0 };
    let mut h = Header::default();
    let mut arg = 2;
    let mut out = Vec::new();
    while let Some(opt) = fmt.next() {
        let mut size = opt_size(lua, opt, &mut fmt)?;
        let pad = to_align(out.len(), &h, opt, size);
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = check_number(lua, args, arg, "pack")?;
                arg += 1;
                put_integer(&mut out, n, h.little, size);
            }
            b'x' => out.push(0),
            b'f' => {
                let v = check_number(lua, args, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'd' => {
                let v = check_number(lua, args, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = check_string(lua, args, arg, "pack")?;
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    // (struct.c names the argument after this one.)
                    return Err(arg_error(lua, arg, "pack", "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => control(lua, "pack", opt, &mut fmt, &mut h)?,
        }
    }
    lua.create_string(&out)
}

/// `struct.unpack(fmt, data [, init])`: the values, then the position
/// after them.
fn unpack(lua: &Lua, args: &[Value]) -> mlua::Result<MultiValue> {
    let f = check_string(lua, args, 1, "unpack")?;
    let data = check_string(lua, args, 2, "unpack")?;
    let mut pos = match args.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => check_number(lua, args, 3, "unpack")?,
    };
    if pos <= 0.0 {
        return Err(arg_error(lua, 3, "unpack", "offset must be 1 or greater"));
    }
    pos -= 1.0;
    let ld = data.len();
    // (Past the end, nothing fits: as struct.c's check of the first
    // option, without arithmetic near usize's end.)
    if pos > ld as f64 {
        return Err(arg_error(lua, 2, "unpack", "data string too short"));
    }
    let mut pos = pos as usize;
    let mut fmt = Fmt { b: &f, at: 0 };
    let mut h = Header::default();
    let mut out: Vec<Value> = Vec::new();
    let short = |lua: &Lua| arg_error(lua, 2, "unpack", "data string too short");
    while let Some(opt) = fmt.next() {
        let mut size = opt_size(lua, opt, &mut fmt)?;
        pos += to_align(pos, &h, opt, size);
        if size > ld || pos > ld - size {
            return Err(short(lua));
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let v = get_integer(&data[pos..pos + size], h.little, opt.is_ascii_lowercase());
                out.push(Value::Number(v));
            }
            b'x' => {}
            b'f' => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[pos..pos + 4]);
                let v = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                out.push(Value::Number(f64::from(v)));
            }
            b'd' => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[pos..pos + 8]);
                let v = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                out.push(Value::Number(v));
            }
            b'c' => {
                if size == 0 {
                    let n = match out.last() {
                        Some(Value::Number(n)) => *n,
                        Some(Value::Integer(n)) => *n as f64,
                        _ => return Err(error(lua, "format 'c0' needs a previous size")),
                    };
                    out.pop();
                    size = if n > 0.0 { n as usize } else { 0 };
                    if size > ld || pos > ld - size {
                        return Err(short(lua));
                    }
                }
                out.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|&c| c == 0) else {
                    return Err(error(lua, "unfinished string in data"));
                };
                out.push(Value::String(lua.create_string(&data[pos..pos + end])?));
                size = end + 1;
            }
            _ => control(lua, "unpack", opt, &mut fmt, &mut h)?,
        }
        pos += size;
    }
    out.push(Value::Integer((pos + 1) as i64));
    Ok(MultiValue::from_iter(out))
}

/// `struct.size(fmt)`: the bytes `pack` writes for it.
fn size(lua: &Lua, args: &[Value]) -> mlua::Result<i64> {
    let f = check_string(lua, args, 1, "size")?;
    let mut fmt = Fmt { b: &f, at: 0 };
    let mut h = Header::default();
    let mut pos = 0usize;
    while let Some(opt) = fmt.next() {
        let size = opt_size(lua, opt, &mut fmt)?;
        pos += to_align(pos, &h, opt, size);
        if opt == b's' || (opt == b'c' && size == 0) {
            let name = if opt == b's' { "s" } else { "c0" };
            return Err(arg_error(
                lua,
                1,
                "size",
                &format!("option '{name}' has no fixed size"),
            ));
        }
        if !opt.is_ascii_alphanumeric() {
            control(lua, "size", opt, &mut fmt, &mut h)?;
        }
        pos += size;
    }
    Ok(pos as i64)
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, a: Variadic<Value>| pack(lua, a.as_slice()))?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, a: Variadic<Value>| unpack(lua, a.as_slice()))?,
    )?;
    t.raw_set(
        "size",
        lua.create_function(|lua, a: Variadic<Value>| size(lua, a.as_slice()))?,
    )?;
    lua.globals().raw_set("struct", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_as_struct_c() {
        let lua = Lua::new();
        install(&lua).unwrap();
        let hex = |code: &str| -> String {
            let s: mlua::String = lua.load(code).eval().unwrap();
            crate::util::hex(&s.as_bytes())
        };
        assert_eq!(hex("return struct.pack('>I2', 1)"), "0001");
        assert_eq!(hex("return struct.pack('<i4', -2)"), "feffffff");
        assert_eq!(
            hex("return struct.pack('!4 b i4', 1, 2)"),
            "0100000002000000"
        );
        assert_eq!(
            hex("return struct.pack('s c3 x', 'ab', 'xyz')"),
            "6162007879 7a00".replace(' ', "")
        );
        assert_eq!(hex("return struct.pack('>d', 1.5)"), "3ff8000000000000");
        let vals: Vec<f64> = lua
            .load("return {struct.unpack('>i2 B c2', struct.pack('>i2 B c2', -3, 200, 'hi'))}")
            .eval::<mlua::Table>()
            .unwrap()
            .sequence_values::<Value>()
            .map(|v| match v.unwrap() {
                Value::Number(n) => n,
                Value::Integer(n) => n as f64,
                _ => -1.0,
            })
            .collect();
        assert_eq!(vals, vec![-3.0, 200.0, -1.0, 6.0]);
        let n: i64 = lua.load("return struct.size('>!4 b i4 d')").eval().unwrap();
        assert_eq!(n, 16);
        let e = lua
            .load("return struct.pack('z')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad argument #1 to 'pack' (invalid format option 'z')"),
            "{e}"
        );
        let e = lua
            .load("return struct.unpack('i4', 'ab')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("data string too short"), "{e}");
        let e = lua
            .load("return struct.unpack('!8 i4', 'abcd', 2^63)")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("data string too short"), "{e}");
        let e = lua
            .load("return struct.size('s')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("option 's' has no fixed size"), "{e}");
    }
}
