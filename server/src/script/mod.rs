//! Lua scripts, as Redis 7.0 keeps them: a database's script cache, each
//! script named by the SHA-1 of its body (what `EVALSHA` and `SCRIPT
//! EXISTS` take), compiled by Lua 5.1 (the language Redis embeds) when it
//! is loaded, so a script that does not compile is refused at `SCRIPT
//! LOAD` with Lua's own message.
//!
//! - [`Scripts`]: the cache (`SCRIPT LOAD|EXISTS|FLUSH`, `cmd/script.rs`)
//!   and the database's Lua state, made at the first script.
//! - [`engine`]: a database's Lua state, made as Redis makes its own,
//!   and what runs code in it.
//! - [`eval`]: running one (`EVAL`, `EVALSHA`, `*_RO`), with the `redis`
//!   API's `call`/`pcall` running commands in the database.
//! - [`convert`]: values between Redis replies and Lua.
//! - [`libs`]: the C libraries Redis loads into Lua (`bit`, `struct`,
//!   `cjson`, `cmsgpack`), in Rust.
//! - [`busy`]: long scripts suspended so the executor's other databases
//!   go on, and what their own clients get meanwhile (-BUSY, KILL).
//! - [`function`]: libraries of functions (`FUNCTION LOAD`, `FCALL`),
//!   which, unlike scripts, are persisted and replicated.
//!
//! What is not built yet is in docs/COMPATIBILITY.md.

pub mod busy;
mod call;
pub mod convert;
pub mod engine;
pub mod eval;
pub mod function;
pub mod libs;

use std::collections::HashMap;

/// A shebang's flags (`#!lua flags=no-writes,allow-oom`), as Redis 7.0
/// reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// A shebang was there: the script declares its flags (without one it
    /// runs as pre-7.0 scripts do).
    pub declared: bool,
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
}

/// The flags' names, in the order Redis lists them.
pub const FLAG_NAMES: [&str; 5] = [
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

impl Flags {
    /// Sets flag `name` (any case); false for a name Redis does not know.
    pub fn set(&mut self, name: &str) -> bool {
        let f = match name.to_ascii_lowercase().as_str() {
            "no-writes" => &mut self.no_writes,
            "allow-oom" => &mut self.allow_oom,
            "allow-stale" => &mut self.allow_stale,
            "no-cluster" => &mut self.no_cluster,
            "allow-cross-slot-keys" => &mut self.allow_cross_slot_keys,
            _ => return false,
        };
        *f = true;
        true
    }

    /// The names of the flags set, in Redis's order.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.no_writes,
            self.allow_oom,
            self.allow_stale,
            self.no_cluster,
            self.allow_cross_slot_keys,
        ];
        FLAG_NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// One cached script.
pub struct Script {
    pub body: Vec<u8>,
    pub flags: Flags,
    /// Its compiled function, in the database's Lua state.
    pub func: mlua::RegistryKey,
}

/// A database's scripts. The Lua state that compiles them is made at the
/// first load (a database that never loads a script pays nothing).
#[derive(Default)]
pub struct Scripts {
    cache: HashMap<String, Script>,
    lua: Option<engine::Engine>,
}

/// The SHA-1 of `body`, in lowercase hex (Redis's script names).
pub fn sha1_hex(body: &[u8]) -> String {
    use sha1::Digest;
    crate::util::hex(&sha1::Sha1::digest(body))
}

/// Reads a `#!` first line: its flags and how many bytes it takes (the
/// line without its newline; the body compiled starts there, so line
/// numbers in Lua's messages stay those of the script). Errors are
/// Redis's, without the `ERR ` prefix.
pub fn shebang(body: &[u8]) -> Result<(Flags, usize), String> {
    if !body.starts_with(b"#!") {
        return Ok((Flags::default(), 0));
    }
    let Some(len) = body.iter().position(|&b| b == b'\n') else {
        return Err("Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..len]);
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(format!("Unexpected engine in script shebang: {engine}"));
    }
    let mut flags = Flags {
        declared: true,
        ..Flags::default()
    };
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("Unknown lua shebang option: {part}"));
        };
        for f in list.split(',').filter(|f| !f.is_empty()) {
            match f {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "allow-stale" => flags.allow_stale = true,
                "no-cluster" => flags.no_cluster = true,
                "allow-cross-slot-keys" => flags.allow_cross_slot_keys = true,
                other => return Err(format!("Unexpected flag in script shebang: {other}")),
            }
        }
    }
    Ok((flags, len))
}

impl Scripts {
    /// Compiles `body` and caches it: its SHA-1, or Redis's error (without
    /// the `ERR ` prefix) when its shebang is wrong or it does not compile.
    pub fn load(&mut self, body: &[u8]) -> Result<String, String> {
        let sha = sha1_hex(body);
        if self.cache.contains_key(&sha) {
            return Ok(sha);
        }
        let (flags, skip) = shebang(body)?;
        if self.lua.is_none() {
            self.lua = Some(engine::Engine::new().map_err(|e| format!("starting Lua: {e}"))?);
        }
        let Some(lua) = self.lua.as_ref().map(|e| e.lua()) else {
            return Err("no Lua state".into());
        };
        let compiled = lua
            .load(&body[skip..])
            .set_name("@user_script")
            .into_function();
        let func = match compiled {
            Ok(f) => f,
            Err(e) => {
                let msg = match e {
                    mlua::Error::SyntaxError { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(format!("Error compiling script (new function): {msg}"));
            }
        };
        let func = lua
            .create_registry_value(func)
            .map_err(|e| format!("keeping the script: {e}"))?;
        self.cache.insert(
            sha.clone(),
            Script {
                body: body.to_vec(),
                flags,
                func,
            },
        );
        Ok(sha)
    }

    /// Whether script `sha` (hex, either case) is cached.
    pub fn exists(&self, sha: &[u8]) -> bool {
        std::str::from_utf8(sha)
            .map(|s| self.cache.contains_key(&s.to_ascii_lowercase()))
            .unwrap_or(false)
    }

    /// Script `sha`'s flags (hex, either case).
    pub fn flags(&self, sha: &[u8]) -> Option<Flags> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.cache.get(&sha).map(|s| s.flags)
    }

    /// Script `sha` (lowercase hex).
    pub fn get(&self, sha: &str) -> Option<&Script> {
        self.cache.get(sha)
    }

    /// The Lua state, script `sha`'s function in it and its flags.
    pub fn function(&self, sha: &str) -> Option<(engine::Engine, mlua::Function, Flags)> {
        let engine = self.lua.as_ref()?;
        let script = self.cache.get(sha)?;
        let f = engine.lua().registry_value(&script.func).ok()?;
        Some((engine.clone(), f, script.flags))
    }

    /// Drops every script and the Lua state (SCRIPT FLUSH).
    pub fn flush(&mut self) {
        self.cache.clear();
        self.lua = None;
    }

    /// The cached scripts' bodies, in bytes (`MEMORY STATS lua.caches`).
    pub fn cache_bytes(&self) -> usize {
        self.cache.values().map(|s| s.body.len()).sum()
    }

    /// How many scripts are cached (`INFO memory number_of_cached_scripts`).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_named_by_the_sha1_of_their_body() {
        // Redis: SCRIPT LOAD "return 1" answers this name.
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        let mut s = Scripts::default();
        assert_eq!(
            s.load(b"return 1").as_deref(),
            Ok("e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
        );
        assert!(s.exists(b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB"));
        assert_eq!(s.len(), 1);
        s.flush();
        assert!(s.is_empty() && !s.exists(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
    }

    #[test]
    fn a_shebang_declares_flags_and_is_skipped_when_compiling() {
        let (f, len) = shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap();
        assert!(f.declared && f.no_writes && f.allow_oom && !f.allow_stale);
        assert_eq!(len, "#!lua flags=no-writes,allow-oom".len());
        assert!(shebang(b"#!lua\nreturn 1").unwrap().0.declared);
        assert_eq!(shebang(b"#!lua").unwrap_err(), "Invalid script shebang");
        assert_eq!(
            shebang(b"#!luax\nreturn 1").unwrap_err(),
            "Unexpected engine in script shebang: #!luax"
        );
        assert_eq!(
            shebang(b"#!lua flags=bad\n").unwrap_err(),
            "Unexpected flag in script shebang: bad"
        );
        assert_eq!(
            shebang(b"#!lua name=x\n").unwrap_err(),
            "Unknown lua shebang option: name=x"
        );
        let mut s = Scripts::default();
        assert!(s.load(b"#!lua flags=no-writes\nreturn 1").is_ok());
        let e = s.load(b"#!lua\nreturn +").unwrap_err();
        assert!(
            e.starts_with("Error compiling script (new function): user_script:2:"),
            "{e}"
        );
    }
}
