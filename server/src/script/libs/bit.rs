//! `bit`: LuaBitOp 1.0, the bitwise operations Redis gives scripts. Every
//! argument is a number taken modulo 2^32 (rounded to the nearest integer
//! first, ties to even, as LuaBitOp's double trick does) and every result
//! a signed 32-bit number.

use mlua::{Lua, Value, Variadic};

use super::check_number;

/// LuaBitOp's `barg`: argument `n` of `f` as 32 bits.
fn arg(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<u32> {
    let x = check_number(lua, args, n, f)?;
    Ok(to_bits(x))
}

/// A number as LuaBitOp reads it: rounded to an integer (ties to even),
/// its low 32 bits.
pub fn to_bits(x: f64) -> u32 {
    if !x.is_finite() {
        return 0;
    }
    let r = x.round_ties_even();
    (r.rem_euclid(4_294_967_296.0)) as u64 as u32
}

/// A result as LuaBitOp gives it: signed.
fn out(b: u32) -> f64 {
    f64::from(b as i32)
}

type Op = fn(&Lua, &[Value]) -> mlua::Result<f64>;

fn fold(lua: &Lua, args: &[Value], f: &str, op: fn(u32, u32) -> u32) -> mlua::Result<f64> {
    let mut acc = arg(lua, args, 1, f)?;
    for i in 2..=args.len() {
        acc = op(acc, arg(lua, args, i, f)?);
    }
    Ok(out(acc))
}

fn shift(lua: &Lua, args: &[Value], f: &str, op: fn(u32, u32) -> u32) -> mlua::Result<f64> {
    let b = arg(lua, args, 1, f)?;
    let n = arg(lua, args, 2, f)? & 31;
    Ok(out(op(b, n)))
}

const OPS: &[(&str, Op)] = &[
    ("tobit", |l, a| Ok(out(arg(l, a, 1, "tobit")?))),
    ("bnot", |l, a| Ok(out(!arg(l, a, 1, "bnot")?))),
    ("band", |l, a| fold(l, a, "band", |x, y| x & y)),
    ("bor", |l, a| fold(l, a, "bor", |x, y| x | y)),
    ("bxor", |l, a| fold(l, a, "bxor", |x, y| x ^ y)),
    ("lshift", |l, a| shift(l, a, "lshift", |b, n| b << n)),
    ("rshift", |l, a| shift(l, a, "rshift", |b, n| b >> n)),
    ("arshift", |l, a| {
        shift(l, a, "arshift", |b, n| ((b as i32) >> n) as u32)
    }),
    ("rol", |l, a| shift(l, a, "rol", |b, n| b.rotate_left(n))),
    ("ror", |l, a| shift(l, a, "ror", |b, n| b.rotate_right(n))),
    ("bswap", |l, a| Ok(out(arg(l, a, 1, "bswap")?.swap_bytes()))),
];

/// `bit.tohex(x [, n])`: the low `n` hex digits (8 unless given; a
/// negative `n` gives upper case).
fn tohex(lua: &Lua, args: &[Value]) -> mlua::Result<String> {
    let mut b = arg(lua, args, 1, "tohex")?;
    let mut n: i64 = match args.get(1) {
        None | Some(Value::Nil) => 8,
        Some(_) => i64::from(arg(lua, args, 2, "tohex")? as i32),
    };
    let digits: &[u8; 16] = if n < 0 {
        n = -n;
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let n = n.min(8) as usize;
    let mut buf = vec![b'0'; n];
    for i in (0..n).rev() {
        buf[i] = digits[(b & 15) as usize];
        b >>= 4;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    for (name, op) in OPS {
        let op = *op;
        t.raw_set(
            *name,
            lua.create_function(move |lua, args: Variadic<Value>| op(lua, args.as_slice()))?,
        )?;
    }
    t.raw_set(
        "tohex",
        lua.create_function(|lua, args: Variadic<Value>| tohex(lua, args.as_slice()))?,
    )?;
    lua.globals().raw_set("bit", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(lua: &Lua, code: &str) -> String {
        lua.load(code)
            .eval::<mlua::Value>()
            .map(|v| v.to_string().unwrap_or_default())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn operations_as_luabitop_gives_them() {
        let lua = Lua::new();
        install(&lua).unwrap();
        for (code, want) in [
            ("return bit.tobit(2^32 + 5)", "5"),
            ("return bit.tobit(1.5)", "2"),
            ("return bit.tobit(2.5)", "2"),
            ("return bit.tobit(-1.5)", "-2"),
            ("return bit.tobit(0xffffffff)", "-1"),
            ("return bit.bnot(0)", "-1"),
            ("return bit.band(0xff, 0x0f, 0x3)", "3"),
            ("return bit.bor(1, 2, 4)", "7"),
            ("return bit.bxor(5, 1)", "4"),
            ("return bit.lshift(1, 33)", "2"),
            ("return bit.rshift(-1, 28)", "15"),
            ("return bit.arshift(-256, 4)", "-16"),
            ("return bit.rol(1, 33)", "2"),
            ("return bit.ror(1, 1)", "-2147483648"),
            ("return bit.bswap(0x12345678)", "2018915346"),
            ("return bit.tohex(255)", "000000ff"),
            ("return bit.tohex(-1, -4)", "FFFF"),
            ("return bit.tohex(0x1234, 2)", "34"),
            ("return bit.band('3', 1)", "1"),
        ] {
            assert_eq!(eval(&lua, code), want, "{code}");
        }
        let e = eval(&lua, "return bit.band('x')");
        assert!(
            e.contains("bad argument #1 to 'band' (number expected, got string)"),
            "{e}"
        );
        let e = eval(&lua, "return bit.bor()");
        assert!(e.contains("(number expected, got no value)"), "{e}");
    }
}
