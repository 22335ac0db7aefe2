//! Functions, as Redis 7.0 keeps them (`FUNCTION LOAD`, `FCALL`): a
//! database's libraries of Lua functions. A library is Lua code that
//! starts with `#!lua name=<library>` and, when it runs at load, calls
//! `redis.register_function` for each function it offers; its functions
//! then stay for `FCALL` until the library is deleted or replaced.
//!
//! Unlike scripts, libraries are data: they are written to snapshots and
//! replicated (`FUNCTION LOAD` and the like enter the log as they came),
//! and `FUNCTION DUMP`/`RESTORE` move them between servers in Redis's
//! payload format (`crate::rdb`).
//!
//! Each database has its own libraries in a Lua state of their own (a
//! `SCRIPT FLUSH` leaves them alone).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mlua::{Lua, MultiValue, Value};

use super::engine::Engine;
use super::eval::{error_text, raised};
use super::Flags;

/// How long a library's code may run at `FUNCTION LOAD` (Redis's fixed
/// 500 ms: it should only register functions).
pub const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// The snapshot AUX key of a library's code.
const AUX_KEY: &str = "lua-library";

/// One function of a library.
pub struct Function {
    /// (Shared: FCALL takes it along for its errors without a copy.)
    pub name: std::rc::Rc<str>,
    pub description: Option<Vec<u8>>,
    pub flags: Flags,
    func: mlua::RegistryKey,
}

/// A loaded library.
pub struct Library {
    pub name: String,
    /// Its whole code, shebang included (what `WITHCODE` and `DUMP` give).
    pub code: Vec<u8>,
    /// In the order they were registered.
    pub functions: Vec<Function>,
}

/// A database's libraries.
#[derive(Default)]
pub struct Functions {
    libs: BTreeMap<String, Library>,
    /// Every function's name, lowercased (FCALL finds a function whatever
    /// the case), to its library's name.
    index: HashMap<String, String>,
    lua: Option<Engine>,
}

/// How `FUNCTION RESTORE` treats the libraries already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Drop them all first.
    Flush,
    /// Keep them; a library of the same name is an error.
    Append,
    /// Keep them; a library of the same name is replaced.
    Replace,
}

/// A library or function name as Redis takes them: letters, digits and
/// `_`, at least one.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

const BAD_NAME: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// Reads a library's first line (`#!lua name=mylib`): its name, and where
/// the code after the shebang starts (its newline, so line numbers stay
/// the file's). Errors in Redis's words (without `ERR `).
pub fn metadata(code: &[u8]) -> Result<(String, usize), String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    let line = String::from_utf8_lossy(&code[..end]);
    let mut parts = line.split_ascii_whitespace();
    let Some(first) = parts.next() else {
        return Err("Invalid library metadata".into());
    };
    let engine = &first[2..];
    let mut name = None;
    for part in parts {
        // (Compared as bytes: the line may have any characters.)
        if part
            .as_bytes()
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"name="))
        {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(part[5..].to_string());
            continue;
        }
        return Err(format!("Invalid metadata value given: {part}"));
    }
    let Some(name) = name else {
        return Err("Library name was not given".into());
    };
    if !valid_name(name.as_bytes()) {
        return Err(BAD_NAME.into());
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("Engine '{engine}' not found"));
    }
    Ok((name, end))
}

/// A function `redis.register_function` was given, before its library is
/// accepted.
struct Registered {
    name: String,
    description: Option<Vec<u8>>,
    flags: Flags,
    func: mlua::Function,
}

/// A string argument as Lua's `lua_isstring` takes it (numbers too).
fn string_arg(lua: &Lua, v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => lua
            .coerce_string(v.clone())
            .ok()
            .flatten()
            .map(|s| s.as_bytes().to_vec()),
        _ => None,
    }
}

/// `redis.register_function(name, callback)` or
/// `redis.register_function{function_name=..., callback=..., flags=...,
/// description=...}`: the function, or Redis's error text.
fn read_registration(lua: &Lua, args: MultiValue) -> Result<Registered, String> {
    let args = args.into_vec();
    match args.as_slice() {
        [Value::Table(t)] => {
            let (mut name, mut description, mut func, mut flags) = (None, None, None, Flags::default());
            flags.declared = true;
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                let Some(key) = string_arg(lua, &k) else {
                    return Err("named argument key given to redis.register_function is not a string".into());
                };
                let key = String::from_utf8_lossy(&key).to_ascii_lowercase();
                match key.as_str() {
                    "function_name" => {
                        name = Some(string_arg(lua, &v).ok_or(
                            "function_name argument given to redis.register_function must be a string",
                        )?);
                    }
                    "description" => {
                        description = Some(string_arg(lua, &v).ok_or(
                            "description argument given to redis.register_function must be a string",
                        )?);
                    }
                    "callback" => match v {
                        Value::Function(f) => func = Some(f),
                        _ => {
                            return Err("callback argument given to redis.register_function must be a function".into())
                        }
                    },
                    "flags" => {
                        let Value::Table(list) = v else {
                            return Err("flags argument to redis.register_function must be a table representing function flags".into());
                        };
                        for i in 1.. {
                            let item: Value = list.raw_get(i).map_err(|e| e.to_string())?;
                            if item == Value::Nil {
                                break;
                            }
                            let known = string_arg(lua, &item)
                                .is_some_and(|f| flags.set(&String::from_utf8_lossy(&f)));
                            if !known {
                                return Err("unknown flag given".into());
                            }
                        }
                    }
                    _ => return Err("unknown argument given to redis.register_function".into()),
                }
            }
            let Some(name) = name else {
                return Err("redis.register_function must get a function name argument".into());
            };
            let Some(func) = func else {
                return Err("redis.register_function must get a callback argument".into());
            };
            Ok(Registered {
                name: String::from_utf8_lossy(&name).into_owned(),
                description,
                flags,
                func,
            })
        }
        [_] => Err("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).".into()),
        [name, callback] => {
            let Some(name) = string_arg(lua, name) else {
                return Err("first argument to redis.register_function must be a string".into());
            };
            let Value::Function(func) = callback else {
                return Err("second argument to redis.register_function must be a function".into());
            };
            Ok(Registered {
                name: String::from_utf8_lossy(&name).into_owned(),
                description: None,
                flags: Flags {
                    declared: true,
                    ..Flags::default()
                },
                func: func.clone(),
            })
        }
        _ => Err("wrong number of arguments to redis.register_function".into()),
    }
}

impl Functions {
    fn state(&mut self) -> Result<Engine, String> {
        if self.lua.is_none() {
            self.lua = Some(Engine::new().map_err(|e| format!("starting Lua: {e}"))?);
        }
        self.lua.clone().ok_or_else(|| "no Lua state".into())
    }

    /// `FUNCTION LOAD [REPLACE] code`: runs the library's code so that it
    /// registers its functions, and keeps them. `timeout`: how long the
    /// code may run (none when the log is replayed: it ran once already);
    /// `memory`: the most Lua may hold meanwhile. The library's name, or
    /// Redis's error (without `ERR `); on an error nothing changed.
    pub fn load(
        &mut self,
        code: &[u8],
        replace: bool,
        timeout: Option<Duration>,
        memory: u64,
    ) -> Result<String, String> {
        let (name, body) = metadata(code)?;
        if self.libs.contains_key(&name) && !replace {
            return Err(format!("Library '{name}' already exists"));
        }
        let engine = self.state()?;
        let lua = engine.lua();
        let chunk = match lua
            .load(&code[body..])
            .set_name("@user_function")
            .into_function()
        {
            Ok(f) => f,
            Err(mlua::Error::SyntaxError { message, .. }) => {
                return Err(format!("Error compiling function: {message}"))
            }
            Err(e) => return Err(format!("Error compiling function: {e}")),
        };
        let registered = run_library(&engine, chunk, timeout, memory)?;
        if registered.is_empty() {
            return Err("No functions registered".into());
        }
        for f in &registered {
            match self.index.get(&f.name.to_ascii_lowercase()) {
                Some(owner) if *owner != name => {
                    return Err(format!("Function {} already exists", f.name))
                }
                _ => {}
            }
        }
        let mut functions = Vec::with_capacity(registered.len());
        for f in registered {
            let func = lua
                .create_registry_value(f.func)
                .map_err(|e| format!("keeping the function: {e}"))?;
            functions.push(Function {
                name: f.name.into(),
                description: f.description,
                flags: f.flags,
                func,
            });
        }
        self.remove(&name);
        for f in &functions {
            self.index.insert(f.name.to_ascii_lowercase(), name.clone());
        }
        self.libs.insert(
            name.clone(),
            Library {
                name: name.clone(),
                code: code.to_vec(),
                functions,
            },
        );
        Ok(name)
    }

    /// Drops library `name` and its functions; whether it was there.
    fn remove(&mut self, name: &str) -> bool {
        let Some(lib) = self.libs.remove(name) else {
            return false;
        };
        for f in &lib.functions {
            self.index.remove(&f.name.to_ascii_lowercase());
        }
        if let Some(engine) = &self.lua {
            drop(lib);
            engine.lua().expire_registry_values();
        }
        true
    }

    /// `FUNCTION DELETE name`: whether there was such a library.
    pub fn delete(&mut self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|n| self.remove(n))
    }

    /// `FUNCTION FLUSH`: drops every library and the Lua state.
    pub fn flush(&mut self) {
        self.libs.clear();
        self.index.clear();
        self.lua = None;
    }

    /// The libraries, by name.
    pub fn libraries(&self) -> impl Iterator<Item = &Library> {
        self.libs.values()
    }

    /// How many libraries and functions there are (`FUNCTION STATS`).
    pub fn counts(&self) -> (usize, usize) {
        (self.libs.len(), self.index.len())
    }

    pub fn is_empty(&self) -> bool {
        self.libs.is_empty()
    }

    /// The libraries' code, in bytes (`MEMORY STATS functions.caches`).
    pub fn cache_bytes(&self) -> usize {
        self.libs.values().map(|l| l.code.len()).sum()
    }

    /// Function `name` (any case): its Lua state, compiled callback, flags
    /// and registered name.
    pub fn get(&self, name: &[u8]) -> Option<(Engine, mlua::Function, Flags, std::rc::Rc<str>)> {
        let lower = crate::util::ascii_lower(name);
        let lib = self.libs.get(self.index.get(&*lower)?)?;
        let f = lib
            .functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(&lower))?;
        let engine = self.lua.as_ref()?;
        let func = engine.lua().registry_value(&f.func).ok()?;
        Some((engine.clone(), func, f.flags, f.name.clone()))
    }

    /// `FUNCTION DUMP`: every library in Redis's payload format.
    pub fn dump(&self) -> Vec<u8> {
        crate::rdb::write::function_dump(self.libs.values().map(|l| l.code.as_slice()))
    }

    /// `FUNCTION RESTORE payload [policy]`: Redis's error (without `ERR `)
    /// when the payload is bad or its libraries collide with these; then
    /// nothing changed.
    pub fn restore(
        &mut self,
        payload: &[u8],
        policy: Policy,
        timeout: Option<Duration>,
        memory: u64,
    ) -> Result<(), String> {
        let codes = crate::rdb::read::function_dump(payload)?;
        // Loaded on the side first: a payload that fails leaves these as
        // they were.
        let mut new = Functions::default();
        for code in &codes {
            new.load(code, false, timeout, memory)?;
        }
        if policy == Policy::Flush {
            *self = new;
            return Ok(());
        }
        // (In the payload's order, as Redis reports the first it meets.)
        for code in &codes {
            let name = metadata(code)?.0;
            if self.libs.contains_key(&name) && policy == Policy::Append {
                return Err(format!("Library {name} already exists"));
            }
        }
        for (f, lib) in &new.index {
            match self.index.get(f) {
                Some(owner) if !new.libs.contains_key(owner) => {
                    let name = new
                        .libs
                        .get(lib)
                        .and_then(|l| l.functions.iter().find(|x| x.name.eq_ignore_ascii_case(f)))
                        .map_or(f.as_str(), |x| &*x.name);
                    return Err(format!("Function {name} already exists"));
                }
                _ => {}
            }
        }
        // The libraries kept join the new ones on the side too, and the
        // whole set replaces the old one only once every library loaded:
        // a failure here (Lua's memory) leaves nothing half restored.
        for (name, lib) in &self.libs {
            if !new.libs.contains_key(name) {
                new.load(&lib.code, false, None, memory)?;
            }
        }
        *self = new;
        Ok(())
    }

    /// The libraries of `codes` (a snapshot's or a full sync's), or the
    /// error of one that did not load.
    pub fn from_codes<'a>(
        codes: impl IntoIterator<Item = &'a [u8]>,
        memory: u64,
    ) -> Result<Functions, String> {
        let mut f = Functions::default();
        for code in codes {
            f.load(code, true, None, memory)
                .map_err(|e| format!("loading a function library: {e}"))?;
        }
        Ok(f)
    }

    /// The libraries as snapshot AUX pairs (`lua-library`, the code in
    /// hex: AUX values are text).
    pub fn to_aux(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.libs
            .values()
            .map(|l| (AUX_KEY.to_string(), crate::util::hex(&l.code)))
    }

    /// The libraries' code in snapshot AUX pairs (see [`Functions::to_aux`]).
    pub fn codes_in_aux(aux: &[(String, String)]) -> Result<Vec<Vec<u8>>, String> {
        aux.iter()
            .filter(|(k, _)| k == AUX_KEY)
            .map(|(_, v)| {
                crate::util::unhex(v.as_bytes())
                    .ok_or_else(|| "a function library in the snapshot is not hex".to_string())
            })
            .collect()
    }

    /// Every library's code (for a full sync's RDB).
    pub fn codes(&self) -> Vec<Vec<u8>> {
        self.libs.values().map(|l| l.code.clone()).collect()
    }
}

/// Runs a library's code with `redis.register_function` collecting what
/// it registers (Redis's error text, `Error registering functions: ...`,
/// when it fails).
fn run_library(
    engine: &Engine,
    chunk: mlua::Function,
    timeout: Option<Duration>,
    memory: u64,
) -> Result<Vec<Registered>, String> {
    let failed = |msg: String| format!("Error registering functions: {msg}");
    let lua = engine.lua();
    let registered: RefCell<Vec<Registered>> = RefCell::new(Vec::new());
    let outcome = lua.scope(|scope| {
        let register = scope.create_function(|lua, args: MultiValue| {
            let mut list = registered
                .try_borrow_mut()
                .map_err(|_| mlua::Error::RecursiveMutCallback)?;
            Ok(match read_registration(lua, args) {
                Err(e) => Some(e),
                Ok(f) if !valid_name(f.name.as_bytes()) => Some(BAD_NAME.to_string()),
                Ok(f) if list.iter().any(|x| x.name == f.name) => {
                    Some("Function already exists in the library".to_string())
                }
                Ok(f) => {
                    list.push(f);
                    None
                }
            })
        })?;
        engine.limited(memory, timeout, None, "FUNCTION LOAD timeout", || {
            engine
                .loader()
                .call::<(bool, Value, Option<i32>)>((chunk, register))
        })
    });
    match outcome {
        Ok((true, _, _)) => Ok(registered.into_inner()),
        Ok((false, e, _)) => {
            let _ = lua.gc_collect();
            Err(failed(raised(&e).0))
        }
        Err(e) => Err(failed(error_text(&e).0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: u64 = 64 << 20;

    #[test]
    fn metadata_is_read_as_redis_reads_it() {
        assert_eq!(metadata(b"#!lua name=lib\nx").unwrap(), ("lib".into(), 14));
        assert_eq!(metadata(b"#!LUA  NAME=a_1\n").unwrap().0, "a_1");
        let err = |c: &[u8]| metadata(c).unwrap_err();
        assert_eq!(err(b"return 1"), "Missing library metadata");
        assert_eq!(err(b"#!lua name=x"), "Invalid library metadata");
        assert_eq!(err(b"#!lua\n"), "Library name was not given");
        assert_eq!(err(b"#!lua name=a-b\n"), BAD_NAME);
        assert_eq!(
            err(b"#!lua name=x foo=1\n"),
            "Invalid metadata value given: foo=1"
        );
        assert_eq!(
            err(b"#!lua name=x name=y\n"),
            "Invalid metadata value, name argument was given multiple times"
        );
        assert_eq!(err(b"#!js name=x\n"), "Engine 'js' not found");
        // Any characters: no panic on a multi-byte one.
        assert_eq!(
            err("#!lua abcdé\n".as_bytes()),
            "Invalid metadata value given: abcdé"
        );
    }

    #[test]
    fn a_library_registers_functions_and_replaces_its_old_self() {
        let mut f = Functions::default();
        let lib = b"#!lua name=lib\nredis.register_function('f', function(k, a) return a[1] end)\n\
            redis.register_function{function_name='G', callback=function() return 2 end, flags={'no-writes'}, description='two'}";
        assert_eq!(f.load(lib, false, Some(LOAD_TIMEOUT), MEM).unwrap(), "lib");
        assert_eq!(f.counts(), (1, 2));
        let (_, _, flags, name) = f.get(b"g").unwrap();
        assert_eq!(&*name, "G");
        assert!(flags.no_writes && flags.declared);
        assert_eq!(
            f.load(lib, false, None, MEM).unwrap_err(),
            "Library 'lib' already exists"
        );
        // Another library may not take a function's name, whatever case.
        let other = b"#!lua name=other\nredis.register_function('F', function() return 1 end)";
        assert_eq!(
            f.load(other, false, None, MEM).unwrap_err(),
            "Function F already exists"
        );
        // Replaced: the old functions go.
        let v2 = b"#!lua name=lib\nredis.register_function('h', function() return 3 end)";
        f.load(v2, true, None, MEM).unwrap();
        assert!(f.get(b"f").is_none() && f.get(b"h").is_some());
        assert_eq!(f.counts(), (1, 1));
        assert!(f.delete(b"lib") && !f.delete(b"lib"));
        assert!(f.is_empty() && f.get(b"h").is_none());
    }

    #[test]
    fn load_errors_read_as_redis_writes_them() {
        let mut f = Functions::default();
        let mut err = |body: &str| {
            f.load(format!("#!lua name=x\n{body}").as_bytes(), false, None, MEM)
                .unwrap_err()
        };
        assert_eq!(err("return 1"), "No functions registered");
        assert_eq!(
            err("x = 1"),
            "Error registering functions: ERR user_function:2: Attempt to modify a readonly table"
        );
        assert_eq!(
            err("local s = string.len('a')"),
            "Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'string'"
        );
        assert_eq!(
            err("redis.register_function('f-1', function() end)"),
            format!("Error registering functions: ERR {BAD_NAME}")
        );
        assert_eq!(
            err("redis.register_function('f', function() end) redis.register_function('f', function() end)"),
            "Error registering functions: ERR Function already exists in the library"
        );
        assert_eq!(
            err("redis.register_function{function_name='f', callback=function() end, flags={'bad'}}"),
            "Error registering functions: ERR unknown flag given"
        );
        assert_eq!(
            err("redis.register_function('f', 1)"),
            "Error registering functions: ERR second argument to redis.register_function must be a function"
        );
        assert_eq!(
            err("redis.register_function('f')"),
            "Error registering functions: ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments)."
        );
        assert!(err("return +").starts_with("Error compiling function: user_function:2:"));
        assert!(f.is_empty());
    }

    #[test]
    fn a_library_that_runs_too_long_is_stopped() {
        let mut f = Functions::default();
        let e = f
            .load(
                b"#!lua name=x\nwhile true do end",
                false,
                Some(Duration::from_millis(50)),
                MEM,
            )
            .unwrap_err();
        assert!(e.contains("FUNCTION LOAD timeout"), "{e}");
    }

    #[test]
    fn a_restored_library_that_runs_too_long_is_stopped() {
        let payload =
            crate::rdb::write::function_dump([&b"#!lua name=x\nwhile true do end"[..]].into_iter());
        let mut f = Functions::default();
        let e = f
            .restore(
                &payload,
                Policy::Append,
                Some(Duration::from_millis(50)),
                MEM,
            )
            .unwrap_err();
        assert!(e.contains("FUNCTION LOAD timeout"), "{e}");
        assert!(f.is_empty());
    }

    /// A library whose load keeps about 4 MB of Lua memory alive.
    fn heavy(name: &str) -> Vec<u8> {
        format!(
            "#!lua name={name}\nlocal t = {{}} for i = 1, 200000 do t[i] = i end\n\
             redis.register_function('{name}_f', function() return #t end)"
        )
        .into_bytes()
    }

    #[test]
    fn a_restore_that_runs_out_of_memory_changes_nothing() {
        // Each heavy library fits alone, two fit together, three do not.
        let cap: u64 = 11 << 20;
        let mut probe = Functions::default();
        probe.load(&heavy("p1"), false, None, cap).unwrap();
        probe.load(&heavy("p2"), false, None, cap).unwrap();
        assert!(probe.load(&heavy("p3"), false, None, cap).is_err());

        let mut f = Functions::default();
        f.load(&heavy("kept"), false, None, cap).unwrap();
        let (c, d) = (heavy("c"), heavy("d"));
        let payload = crate::rdb::write::function_dump([&c[..], &d[..]].into_iter());
        for policy in [Policy::Append, Policy::Replace] {
            let e = f.restore(&payload, policy, None, cap).unwrap_err();
            assert!(e.contains("memory"), "{e}");
            // Neither `c` nor `d` arrived; `kept` is still there.
            assert_eq!(f.counts(), (1, 1));
            assert!(f.get(b"kept_f").is_some());
        }
    }

    #[test]
    fn dump_and_restore_move_libraries() {
        let mut a = Functions::default();
        a.load(
            b"#!lua name=one\nredis.register_function('f1', function() return 1 end)",
            false,
            None,
            MEM,
        )
        .unwrap();
        a.load(
            b"#!lua name=two\nredis.register_function('f2', function() return 2 end)",
            false,
            None,
            MEM,
        )
        .unwrap();
        let payload = a.dump();
        let mut b = Functions::default();
        b.restore(&payload, Policy::Append, None, MEM).unwrap();
        assert_eq!(b.counts(), (2, 2));
        assert_eq!(
            b.restore(&payload, Policy::Append, None, MEM).unwrap_err(),
            "Library one already exists"
        );
        b.restore(&payload, Policy::Replace, None, MEM).unwrap();
        b.restore(&payload, Policy::Flush, None, MEM).unwrap();
        assert_eq!(b.counts(), (2, 2));
        let mut bad = payload.clone();
        bad[3] ^= 1;
        assert_eq!(
            b.restore(&bad, Policy::Flush, None, MEM).unwrap_err(),
            "DUMP payload version or checksum are wrong"
        );
        assert_eq!(b.counts(), (2, 2));
    }
}
