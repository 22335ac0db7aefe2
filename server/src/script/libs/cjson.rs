//! `cjson`: Lua CJSON 2.1 as Redis ships it. `cjson.encode` writes JSON
//! as it does (numbers `%.14g`, `/` escaped, an empty table `{}`, arrays
//! with holes as `null`s unless excessively sparse, `cjson.null` as
//! `null`), `cjson.decode` reads it with its error words ("Expected ...
//! but found ... at character N"); the configuration functions answer as
//! Lua CJSON's do.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, Table, Value, Variadic};

use super::error;

/// Lua CJSON's settings (per Lua state, as its upvalue is).
struct Config {
    sparse_convert: Cell<bool>,
    sparse_ratio: Cell<i64>,
    sparse_safe: Cell<i64>,
    encode_max_depth: Cell<i64>,
    decode_max_depth: Cell<i64>,
    precision: Cell<i64>,
    encode_invalid: Cell<bool>,
    decode_invalid: Cell<bool>,
    keep_buffer: Cell<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sparse_convert: Cell::new(false),
            sparse_ratio: Cell::new(2),
            sparse_safe: Cell::new(10),
            encode_max_depth: Cell::new(1000),
            decode_max_depth: Cell::new(1000),
            precision: Cell::new(14),
            encode_invalid: Cell::new(false),
            decode_invalid: Cell::new(true),
            keep_buffer: Cell::new(true),
        }
    }
}

/// Nesting past this fails whatever the settings say (Lua CJSON stops at
/// its setting, 1000, or where Lua's stack check does): the encoder and
/// decoder recurse, and the executor thread's stack must not be the
/// limit, also in a debug build (docs/COMPATIBILITY.md).
pub const MAX_DEPTH: i64 = 256;

/// `cjson.null`: a light userdata holding NULL, as Lua CJSON's.
pub fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn is_null(v: &Value) -> bool {
    matches!(v, Value::LightUserData(p) if p.0.is_null())
}

/// A number as `%.<precision>g` writes it.
fn fmt_g(v: f64, precision: i64) -> String {
    let p = precision.clamp(1, 14) as usize;
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let exp = v.abs().log10().floor() as i32;
    let sci = format!("{:.*e}", p - 1, v);
    // %g: scientific when the exponent is < -4 or >= the precision.
    let (mantissa, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if e < -4 || e >= p as i32 {
        let m = trim_zeros(mantissa);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (p as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The type name of a value as the encoder's errors give it.
fn type_name(v: &Value) -> &'static str {
    super::type_name(Some(v))
}

struct Encoder<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    out: Vec<u8>,
}

impl Encoder<'_> {
    fn fail(&self, v: &Value, why: &str) -> mlua::Error {
        error(
            self.lua,
            &format!("Cannot serialise {}: {why}", type_name(v)),
        )
    }

    fn number(&mut self, v: &Value, n: f64) -> mlua::Result<()> {
        if !n.is_finite() && !self.cfg.encode_invalid.get() {
            return Err(self.fail(v, "must not be NaN or Inf"));
        }
        let s = if n.is_nan() {
            "nan".to_string()
        } else if n.is_infinite() {
            if n > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            fmt_g(n, self.cfg.precision.get())
        };
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn string(&mut self, s: &[u8]) {
        self.out.push(b'"');
        for &c in s {
            match c {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'/' => self.out.extend_from_slice(b"\\/"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                0x08 => self.out.extend_from_slice(b"\\b"),
                0x0c => self.out.extend_from_slice(b"\\f"),
                c if c < 0x20 || c == 0x7f => {
                    self.out.extend_from_slice(format!("\\u{c:04x}").as_bytes())
                }
                c => self.out.push(c),
            }
        }
        self.out.push(b'"');
    }

    /// The array length of `t` when it is one (every key a positive
    /// integer), 0 when it is empty or an object.
    fn array_length(&self, t: &Table) -> mlua::Result<Option<usize>> {
        let Some((max, items)) = super::index_keys(t)? else {
            return Ok(None);
        };
        let ratio = self.cfg.sparse_ratio.get();
        if ratio > 0
            && max > (items as f64) * ratio as f64
            && max > self.cfg.sparse_safe.get() as f64
        {
            if !self.cfg.sparse_convert.get() {
                return Err(self.fail(&Value::Table(t.clone()), "excessively sparse array"));
            }
            return Ok(None);
        }
        Ok(Some(max as usize))
    }

    fn value(&mut self, v: &Value, depth: i64) -> mlua::Result<()> {
        if self.out.len() > super::MAX_OUTPUT {
            return Err(mlua::Error::runtime(super::TOO_LARGE));
        }
        match v {
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::Boolean(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Integer(i) => self.number(v, *i as f64)?,
            Value::Number(n) => self.number(v, *n)?,
            Value::String(s) => self.string(&s.as_bytes()),
            x if is_null(x) => self.out.extend_from_slice(b"null"),
            Value::Table(t) => {
                let depth = depth + 1;
                if depth > self.cfg.encode_max_depth.get().min(MAX_DEPTH) {
                    return Err(error(
                        self.lua,
                        &format!("Cannot serialise, excessive nesting ({depth})"),
                    ));
                }
                match self.array_length(t)? {
                    Some(len) if len > 0 => {
                        self.out.push(b'[');
                        for i in 1..=len {
                            if i > 1 {
                                self.out.push(b',');
                            }
                            let item: Value = t.raw_get(i)?;
                            self.value(&item, depth)?;
                        }
                        self.out.push(b']');
                    }
                    _ => {
                        self.out.push(b'{');
                        let mut first = true;
                        for pair in t.pairs::<Value, Value>() {
                            let (k, item) = pair?;
                            if !first {
                                self.out.push(b',');
                            }
                            first = false;
                            match &k {
                                Value::String(s) => self.string(&s.as_bytes()),
                                Value::Integer(_) | Value::Number(_) => {
                                    self.out.push(b'"');
                                    let n = match k {
                                        Value::Integer(i) => i as f64,
                                        Value::Number(n) => n,
                                        _ => 0.0,
                                    };
                                    self.number(&k, n)?;
                                    self.out.push(b'"');
                                }
                                other => {
                                    return Err(
                                        self.fail(other, "table key must be a number or string")
                                    )
                                }
                            }
                            self.out.push(b':');
                            self.value(&item, depth)?;
                        }
                        self.out.push(b'}');
                    }
                }
            }
            other => return Err(self.fail(other, "type not supported")),
        }
        Ok(())
    }
}

/// JSON's tokens, named as Lua CJSON's errors name them.
#[derive(Debug)]
enum Token {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    /// An error: its words.
    Error(&'static str),
}

impl Token {
    fn name(&self) -> &'static str {
        match self {
            Token::ObjBegin => "T_OBJ_BEGIN",
            Token::ObjEnd => "T_OBJ_END",
            Token::ArrBegin => "T_ARR_BEGIN",
            Token::ArrEnd => "T_ARR_END",
            Token::Str(_) => "T_STRING",
            Token::Num(_) => "T_NUMBER",
            Token::Bool(_) => "T_BOOLEAN",
            Token::Null => "T_NULL",
            Token::Colon => "T_COLON",
            Token::Comma => "T_COMMA",
            Token::End => "T_END",
            Token::Error(e) => e,
        }
    }
}

struct Decoder<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    s: &'a [u8],
    at: usize,
    depth: i64,
}

impl Decoder<'_> {
    /// The next token and where it started.
    fn token(&mut self) -> (Token, usize) {
        while self
            .s
            .get(self.at)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
        let start = self.at;
        let Some(&c) = self.s.get(self.at) else {
            return (Token::End, start);
        };
        let simple = |t| (t, start);
        match c {
            b'{' => {
                self.at += 1;
                simple(Token::ObjBegin)
            }
            b'}' => {
                self.at += 1;
                simple(Token::ObjEnd)
            }
            b'[' => {
                self.at += 1;
                simple(Token::ArrBegin)
            }
            b']' => {
                self.at += 1;
                simple(Token::ArrEnd)
            }
            b':' => {
                self.at += 1;
                simple(Token::Colon)
            }
            b',' => {
                self.at += 1;
                simple(Token::Comma)
            }
            b'"' => (self.string(), start),
            b'-' | b'0'..=b'9' => (self.number(), start),
            _ => {
                for (word, t) in [
                    (&b"true"[..], Token::Bool(true)),
                    (b"false", Token::Bool(false)),
                    (b"null", Token::Null),
                ] {
                    if self.s[self.at..].starts_with(word) {
                        self.at += word.len();
                        return (t, start);
                    }
                }
                if self.cfg.decode_invalid.get() {
                    let rest = &self.s[self.at..];
                    for (word, v) in [
                        (&b"nan"[..], f64::NAN),
                        (b"inf", f64::INFINITY),
                        (b"infinity", f64::INFINITY),
                    ] {
                        if rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word)
                        {
                            self.at += word.len();
                            return (Token::Num(v), start);
                        }
                    }
                }
                (Token::Error("invalid token"), start)
            }
        }
    }

    fn number(&mut self) -> Token {
        let start = self.at;
        let mut end = start;
        while self
            .s
            .get(end)
            .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'x' | b'X' | b'a'..=b'd' | b'f' | b'A'..=b'D' | b'F'))
        {
            end += 1;
        }
        let text = std::str::from_utf8(&self.s[start..end]).unwrap_or("");
        let parsed = if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            i64::from_str_radix(h, 16).ok().map(|v| v as f64)
        } else if let Some(h) = text
            .strip_prefix("-0x")
            .or_else(|| text.strip_prefix("-0X"))
        {
            i64::from_str_radix(h, 16).ok().map(|v| -(v as f64))
        } else {
            text.parse::<f64>().ok()
        };
        match parsed {
            Some(v) => {
                self.at = end;
                Token::Num(v)
            }
            None => Token::Error("invalid number"),
        }
    }

    fn string(&mut self) -> Token {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Token::Error("unexpected end of string");
            };
            self.at += 1;
            match c {
                b'"' => return Token::Str(out),
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return Token::Error("unexpected end of string");
                    };
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => match self.unicode() {
                            Some(ch) => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            None => return Token::Error("invalid unicode escape code"),
                        },
                        _ => return Token::Error("invalid escape code"),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.at..self.at + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        self.at += 4;
        Some(v)
    }

    fn unicode(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                return None;
            }
            self.at += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
        }
        if (0xDC00..0xE000).contains(&hi) {
            return None;
        }
        char::from_u32(hi)
    }

    fn fail(&self, expected: &str, t: &Token, at: usize) -> mlua::Error {
        error(
            self.lua,
            &format!(
                "Expected {expected} but found {} at character {}",
                t.name(),
                at + 1
            ),
        )
    }

    fn nest(&mut self, at: usize) -> mlua::Result<()> {
        self.depth += 1;
        if self.depth > self.cfg.decode_max_depth.get().min(MAX_DEPTH) {
            return Err(error(
                self.lua,
                &format!(
                    "Found too many nested data structures ({}) at character {}",
                    self.depth,
                    at + 1
                ),
            ));
        }
        Ok(())
    }

    /// The value that starts with token `t`.
    fn value(&mut self, t: Token, at: usize) -> mlua::Result<Value> {
        Ok(match t {
            Token::Str(s) => Value::String(self.lua.create_string(&s)?),
            Token::Num(n) => Value::Number(n),
            Token::Bool(b) => Value::Boolean(b),
            Token::Null => null(),
            Token::ObjBegin => {
                self.nest(at)?;
                let obj = self.lua.create_table()?;
                let (mut t, mut at) = self.token();
                if !matches!(t, Token::ObjEnd) {
                    loop {
                        let Token::Str(k) = t else {
                            return Err(self.fail("object key string", &t, at));
                        };
                        let (c, cat) = self.token();
                        if !matches!(c, Token::Colon) {
                            return Err(self.fail("colon", &c, cat));
                        }
                        let (vt, vat) = self.token();
                        let v = self.value(vt, vat)?;
                        obj.raw_set(self.lua.create_string(&k)?, v)?;
                        let (sep, sat) = self.token();
                        match sep {
                            Token::ObjEnd => break,
                            Token::Comma => {}
                            other => return Err(self.fail("comma or object end", &other, sat)),
                        }
                        (t, at) = self.token();
                    }
                }
                self.depth -= 1;
                Value::Table(obj)
            }
            Token::ArrBegin => {
                self.nest(at)?;
                let arr = self.lua.create_table()?;
                let (mut t, mut at) = self.token();
                if !matches!(t, Token::ArrEnd) {
                    let mut i = 1;
                    loop {
                        let v = self.value(t, at)?;
                        arr.raw_set(i, v)?;
                        i += 1;
                        let (sep, sat) = self.token();
                        match sep {
                            Token::ArrEnd => break,
                            Token::Comma => {}
                            other => return Err(self.fail("comma or array end", &other, sat)),
                        }
                        (t, at) = self.token();
                    }
                }
                self.depth -= 1;
                Value::Table(arr)
            }
            other => return Err(self.fail("value", &other, at)),
        })
    }
}

/// A setting function: with no argument it answers the setting; with one
/// it sets it first.
fn setting_int(
    lua: &Lua,
    cfg: Rc<Config>,
    name: &'static str,
    get: fn(&Config) -> &Cell<i64>,
    min: i64,
    max: i64,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args: Variadic<Value>| {
        if let Some(v) = args.first().filter(|v| !v.is_nil()) {
            let n = lua.coerce_number(v.clone())?.unwrap_or(f64::NAN);
            if !(min as f64..=max as f64).contains(&n) {
                return Err(super::arg_error(
                    lua,
                    1,
                    name,
                    &format!("expected integer between {min} and {max}"),
                ));
            }
            get(&cfg).set(n as i64);
        }
        Ok(get(&cfg).get())
    })
}

fn setting_bool(
    lua: &Lua,
    cfg: Rc<Config>,
    get: fn(&Config) -> &Cell<bool>,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_, args: Variadic<Value>| {
        match args.first() {
            Some(Value::Boolean(b)) => get(&cfg).set(*b),
            Some(Value::String(s)) if s.as_bytes().as_ref() == b"on" => get(&cfg).set(true),
            Some(Value::String(s)) if s.as_bytes().as_ref() == b"off" => get(&cfg).set(false),
            _ => {}
        }
        Ok(get(&cfg).get())
    })
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let cfg = Rc::new(Config::default());
    let t = lua.create_table()?;
    let c = cfg.clone();
    t.raw_set(
        "encode",
        lua.create_function(move |lua, args: Variadic<Value>| {
            if args.len() != 1 {
                return Err(error(lua, "expected 1 argument"));
            }
            let mut e = Encoder {
                lua,
                cfg: &c,
                out: Vec::new(),
            };
            e.value(&args[0], 0)?;
            lua.create_string(&e.out)
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode",
        lua.create_function(move |lua, args: Variadic<Value>| {
            if args.len() != 1 {
                return Err(error(lua, "expected 1 argument"));
            }
            let s = super::check_string(lua, args.as_slice(), 1, "decode")?;
            let mut d = Decoder {
                lua,
                cfg: &c,
                s: &s,
                at: 0,
                depth: 0,
            };
            let (t, at) = d.token();
            let v = d.value(t, at)?;
            let (end, eat) = d.token();
            if !matches!(end, Token::End) {
                return Err(d.fail("the end", &end, eat));
            }
            Ok(v)
        })?,
    )?;
    t.raw_set(
        "encode_max_depth",
        setting_int(
            lua,
            cfg.clone(),
            "encode_max_depth",
            |c| &c.encode_max_depth,
            1,
            i32::MAX as i64,
        )?,
    )?;
    t.raw_set(
        "decode_max_depth",
        setting_int(
            lua,
            cfg.clone(),
            "decode_max_depth",
            |c| &c.decode_max_depth,
            1,
            i32::MAX as i64,
        )?,
    )?;
    t.raw_set(
        "encode_number_precision",
        setting_int(
            lua,
            cfg.clone(),
            "encode_number_precision",
            |c| &c.precision,
            1,
            14,
        )?,
    )?;
    t.raw_set(
        "encode_keep_buffer",
        setting_bool(lua, cfg.clone(), |c| &c.keep_buffer)?,
    )?;
    t.raw_set(
        "encode_invalid_numbers",
        setting_bool(lua, cfg.clone(), |c| &c.encode_invalid)?,
    )?;
    t.raw_set(
        "decode_invalid_numbers",
        setting_bool(lua, cfg.clone(), |c| &c.decode_invalid)?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_sparse_array",
        lua.create_function(move |lua, args: Variadic<Value>| {
            if let Some(Value::Boolean(b)) = args.first() {
                c.sparse_convert.set(*b);
            }
            if let Some(n) = args.get(1).filter(|v| !v.is_nil()) {
                if let Some(n) = lua.coerce_number(n.clone())? {
                    c.sparse_ratio.set(n as i64);
                }
            }
            if let Some(n) = args.get(2).filter(|v| !v.is_nil()) {
                if let Some(n) = lua.coerce_number(n.clone())? {
                    c.sparse_safe.set(n as i64);
                }
            }
            Ok((
                c.sparse_convert.get(),
                c.sparse_ratio.get(),
                c.sparse_safe.get(),
            ))
        })?,
    )?;
    t.raw_set("null", null())?;
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    lua.globals().raw_set("cjson", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(lua: &Lua, code: &str) -> String {
        match lua.load(code).eval::<Value>() {
            Ok(Value::String(s)) => s.to_string_lossy(),
            Ok(v) => format!("{v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn nesting_is_bounded_whatever_the_settings() {
        let lua = Lua::new();
        install(&lua).unwrap();
        // 256 levels decode...
        let ok: mlua::Value = lua
            .load("return cjson.decode(string.rep('[', 256) .. string.rep(']', 256))")
            .eval()
            .unwrap();
        assert!(matches!(ok, mlua::Value::Table(_)));
        // ...past that, an error even when a script raised the setting.
        for (code, want) in [
            (
                "cjson.decode_max_depth(1e9) return cjson.decode(string.rep('[', 100000))",
                "Found too many nested data structures (257)",
            ),
            (
                "cjson.encode_max_depth(1e9) local t = {} t[1] = t return cjson.encode(t)",
                "Cannot serialise, excessive nesting (257)",
            ),
        ] {
            let e = lua.load(code).exec().unwrap_err().to_string();
            assert!(e.contains(want), "{code}: {e}");
        }
    }

    #[test]
    fn encodes_and_decodes_as_lua_cjson() {
        let lua = Lua::new();
        install(&lua).unwrap();
        for (code, want) in [
            ("return cjson.encode({1, 2, {a = 1}})", "[1,2,{\"a\":1}]"),
            ("return cjson.encode(1.5)", "1.5"),
            ("return cjson.encode(0.1)", "0.1"),
            ("return cjson.encode(1e20)", "1e+20"),
            (
                "return cjson.encode(123456789012345)",
                "1.2345678901234e+14",
            ),
            ("return cjson.encode(-3)", "-3"),
            ("return cjson.encode({})", "{}"),
            ("return cjson.encode({[1] = 1, [3] = 3})", "[1,null,3]"),
            (
                "return cjson.encode('a/\"b\"\\n\\1')",
                "\"a\\/\\\"b\\\"\\n\\u0001\"",
            ),
            ("return cjson.encode({[2.5] = 'x'})", "{\"2.5\":\"x\"}"),
            ("return cjson.encode(cjson.null)", "null"),
            (
                "return cjson.encode(cjson.decode('[1,2,null,\"x\"]'))",
                "[1,2,null,\"x\"]",
            ),
            (
                "return cjson.decode('{\"a\":[true,false]}').a[2] == false and 'ok'",
                "ok",
            ),
            (
                "return cjson.decode('\"\\\\u00e9\\\\ud83d\\\\ude00\"')",
                "é😀",
            ),
            (
                "return tostring(cjson.decode('[1,2,null]')[3] == cjson.null)",
                "true",
            ),
        ] {
            assert_eq!(eval(&lua, code), want, "{code}");
        }
        for (code, want) in [
            (
                "return cjson.encode({[1] = 1, [20] = 3})",
                "Cannot serialise table: excessively sparse array",
            ),
            (
                "return cjson.encode(function() end)",
                "Cannot serialise function: type not supported",
            ),
            (
                "return cjson.encode({[true] = 1})",
                "Cannot serialise boolean: table key must be a number or string",
            ),
            (
                "return cjson.encode(0/0)",
                "Cannot serialise number: must not be NaN or Inf",
            ),
            (
                "return cjson.decode('{')",
                "Expected object key string but found T_END at character 2",
            ),
            (
                "return cjson.decode('[1,]')",
                "Expected value but found T_ARR_END at character 4",
            ),
            (
                "return cjson.decode('[1 2]')",
                "Expected comma or array end but found T_NUMBER at character 4",
            ),
            (
                "return cjson.decode('{\"a\" 1}')",
                "Expected colon but found T_NUMBER at character 6",
            ),
            (
                "return cjson.decode('1 2')",
                "Expected the end but found T_NUMBER at character 3",
            ),
            (
                "return cjson.decode('x')",
                "Expected value but found invalid token at character 1",
            ),
        ] {
            let got = eval(&lua, code);
            assert!(got.contains(want), "{code}: {got}");
        }
    }
}
