//! Server configuration with redis-server 7.0's names, defaults, validation,
//! error texts and file format, so that existing `redis.conf` files,
//! `redis-server --port 6380 ...` command lines, `CONFIG GET/SET/REWRITE`
//! scripts and the tools that parse their replies carry over unchanged.
//!
//! The model follows Redis's `config.c`: one static table of parameters,
//! each with a kind that knows how to parse (`set`), render (`get`) and
//! rewrite itself. Values are kept both typed (for the getters the server
//! uses) and rendered (what `CONFIG GET` returns), so reads never re-render.
//!
//! Behaviour was checked against a real redis-server 7.0.15; the unit tests
//! (at the bottom of each file) assert the texts it produced.
//!
//! Deliberate differences from Redis 7.0.15:
//! - `dir` is stored as a resolved absolute path instead of `chdir()`ing the
//!   process (relative values resolve against the current `dir`).
//! - No TLS, sentinel or module parameters; `loadmodule` is rejected;
//!   `rename-command` and `user` lines are kept for the command table and
//!   ACL code (`renamed_commands()`, `users()`), not validated here.
//! - `include` nesting is capped; wildcards only in the file name part.
//! - A `save` after an `include` appends like every later `save` (Redis
//!   7.0.15 resets the list there, a bug); a memory value whose unit
//!   multiplication overflows is rejected (7.0.15 wraps around).
//! - CONFIG GET and CONFIG REWRITE use table order, not hash order; REWRITE
//!   does not write ACL `user` lines.
//! - String values are UTF-8 (invalid bytes are replaced).
//!
//! # Layout
//!
//! - `mod.rs` (this file): the [`Config`] type and its public entry points:
//!   [`Config::load`] (argv and config file), CONFIG GET ([`Config::get`])
//!   and CONFIG SET ([`Config::set`], [`Config::set_from`]); the public
//!   types and `NOTIFY_*` flags.
//! - `table.rs`: the parameter table (names, aliases, kinds, defaults,
//!   flags), the lookups over it, and the checked parameter handles.
//! - `parse.rs`: parameter values: parsing (`memtoull`, yes/no, enums,
//!   Redis's special parameters such as `save` or
//!   `client-output-buffer-limit`), validators, rendering, C-semantics
//!   helpers.
//! - `file.rs`: reading config text (lines, `include`, `rename-command`,
//!   `user`, ...).
//! - `rewrite.rs`: CONFIG REWRITE.
//! - `getters.rs`: the typed getters the rest of the server uses.
//!
//! # Typed getters, and why a misspelled parameter name cannot compile
//!
//! The server reads its configuration only through typed getters
//! (`repl_backlog_size() -> usize`, `appendonly() -> bool`, ...). There is
//! no public look-up by name that could quietly return 0 or "" for a
//! misspelled name: CONFIG GET/SET (which must accept any client-supplied
//! name) report unknown names as errors, and inside this module every
//! accessor takes a `table::Id` made by the `param!` macro instead of a
//! string. `param!(NUM, "maxmemory")` resolves the name against the table
//! in a `const` item, so an unknown name, an alias, or a parameter whose
//! value is not of the shape named (a bool read as a number...) is a
//! compile error at the `param!` call, reported by `cargo check` and
//! clippy as well as `cargo build`; the accessors take `Id<NUM>`,
//! `Id<BOOL>`, ... so a handle passed to the wrong accessor does not
//! type-check either. Checking at compile time rather than with a unit
//! test that walks the getters means there is no list of names to keep in
//! step with the code, and a typo fails before any test runs; unit tests
//! in `table.rs` check that the compile-time lookup agrees with the
//! run-time one and rejects misspelled names, aliases and wrong shapes.

mod file;
mod getters;
mod parse;
mod rewrite;
mod table;
#[cfg(test)]
mod testutil;

use std::fmt;
use std::path::PathBuf;

use parse::{lossy, parse_value, render, repr, split_spaces, strerror, LoadState, Val};
use table::{defaults, lookup, param, IMMUTABLE, PARAMS, PROTECTED, SENSITIVE};

use crate::resp::parse::split_args;
use crate::util::glob_match;

pub(crate) use parse::memtoull;

/// The Redis version quoted in the fatal config error banner (what
/// redis-server prints, so log scrapers and humans see the same text).
const REDIS_VERSION: &str = "7.0.15";

// Keyspace notification flags (Redis's `NOTIFY_*`), exported so the
// notification code can test bits without re-parsing the string.
pub const NOTIFY_KEYSPACE: u32 = 1 << 0;
pub const NOTIFY_KEYEVENT: u32 = 1 << 1;
pub const NOTIFY_GENERIC: u32 = 1 << 2;
pub const NOTIFY_STRING: u32 = 1 << 3;
pub const NOTIFY_LIST: u32 = 1 << 4;
pub const NOTIFY_SET: u32 = 1 << 5;
pub const NOTIFY_HASH: u32 = 1 << 6;
pub const NOTIFY_ZSET: u32 = 1 << 7;
pub const NOTIFY_EXPIRED: u32 = 1 << 8;
pub const NOTIFY_EVICTED: u32 = 1 << 9;
pub const NOTIFY_STREAM: u32 = 1 << 10;
pub const NOTIFY_KEY_MISS: u32 = 1 << 11;
pub const NOTIFY_MODULE: u32 = 1 << 12;
pub const NOTIFY_NEW: u32 = 1 << 13;
/// 'A': every class except key-miss and new (as in Redis).
pub const NOTIFY_ALL: u32 = NOTIFY_GENERIC
    | NOTIFY_STRING
    | NOTIFY_LIST
    | NOTIFY_SET
    | NOTIFY_HASH
    | NOTIFY_ZSET
    | NOTIFY_EXPIRED
    | NOTIFY_EVICTED
    | NOTIFY_STREAM
    | NOTIFY_MODULE;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// One client class's output buffer limits (`client-output-buffer-limit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

/// Output buffer limits of the three client classes Redis configures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputBufferLimits {
    pub normal: OutputLimit,
    pub replica: OutputLimit,
    pub pubsub: OutputLimit,
}

/// Why the configuration could not be loaded. `Display` is the text
/// redis-server prints before exiting, so operators see familiar messages.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line of the file (or of the argv options) was rejected.
    #[error("*** FATAL CONFIG FILE ERROR (Redis {REDIS_VERSION}) ***\nReading the configuration file, at line {line}\n>>> '{text}'\n{reason}")]
    Line {
        line: usize,
        text: String,
        reason: String,
    },
    /// A check made after all lines were read (no line to point at).
    #[error("*** FATAL CONFIG FILE ERROR (Redis {REDIS_VERSION}) ***\n{reason}")]
    Invalid { reason: String },
    /// A startup failure redis-server reports as a plain log line.
    #[error("{reason}")]
    Fatal { reason: String },
    /// The config file (or an included one) could not be read.
    #[error("Fatal error, can't open config file '{path}': {reason}")]
    Open { path: String, reason: String },
}

/// The server configuration: every parameter's typed and rendered value,
/// plus what `CONFIG REWRITE` needs (the file path).
#[derive(Clone)]
pub struct Config {
    vals: Vec<Val>,
    rendered: Vec<String>,
    generation: u64,
    config_file: Option<PathBuf>,
    renamed_commands: Vec<(String, String)>,
    users: Vec<Vec<String>>,
}

impl fmt::Debug for Config {
    /// Lists non-default values only, with secrets masked, so debug logs
    /// stay short and never leak passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defs = defaults();
        let mut m = f.debug_map();
        for (i, p) in PARAMS.iter().enumerate() {
            if defs.get(i) == self.vals.get(i) {
                continue;
            }
            let v = self.rendered.get(i).map(String::as_str).unwrap_or("");
            if p.flags & SENSITIVE != 0 {
                m.entry(&p.name, &"<redacted>");
            } else {
                m.entry(&p.name, &v);
            }
        }
        m.entry(&"generation", &self.generation);
        m.entry(&"config_file", &self.config_file);
        m.finish()
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

impl Default for Config {
    fn default() -> Self {
        let mut vals: Vec<Val> = defaults().to_vec();
        let cwd = std::env::current_dir()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".into());
        if let Some(v) = vals.get_mut(param!(STR, "dir").index()) {
            *v = Val::Str(cwd);
        }
        let rendered = PARAMS
            .iter()
            .zip(&vals)
            .map(|(p, v)| render(p, v))
            .collect();
        Config {
            vals,
            rendered,
            generation: 1,
            config_file: None,
            renamed_commands: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the configuration from redis-server style arguments (argv
    /// *without* the program name): an optional config file path first
    /// (any first argument not starting with '-'), then `--name v1 [v2 ..]`
    /// options. Options become config lines appended after the file, each
    /// value quoted as Redis does, so `--save ''`, `--save` (alone or before
    /// another option) and `"--port 7000"` as one argument all behave like
    /// redis-server. Error line numbers therefore match redis-server's too.
    pub fn load(args: &[String]) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let mut content: Vec<u8> = Vec::new();
        let mut j = 0;
        if let Some(first) = args.first() {
            if !first.starts_with('-') {
                let path = std::path::absolute(first).unwrap_or_else(|_| PathBuf::from(first));
                content = std::fs::read(&path).map_err(|e| ConfigError::Open {
                    path: first.clone(),
                    reason: strerror(&e),
                })?;
                cfg.config_file = Some(path);
                j = 1;
            }
        }
        let mut options = String::new();
        let mut handled_last = true;
        while j < args.len() {
            let a = &args[j];
            let last = j + 1 == args.len();
            if a == "-" && (j == 0 || last) {
                return Err(ConfigError::Fatal {
                    reason: "Reading the configuration from stdin ('-') is not supported".into(),
                });
            } else if handled_last && a.starts_with("--") {
                if !options.is_empty() {
                    options.push('\n');
                }
                options.push_str(&a[2..]);
                options.push(' ');
                let words = split_args(a.as_bytes()).map(|v| v.len()).unwrap_or(0);
                if words == 1 {
                    // A name without value: the value follows, except for
                    // Redis's special cases of `--save` without value.
                    handled_last = false;
                    let next_is_opt = args.get(j + 1).is_some_and(|n| n.starts_with("--"));
                    if a.eq_ignore_ascii_case("--save") && next_is_opt {
                        options.push_str("\"\"");
                        handled_last = true;
                    } else if a.eq_ignore_ascii_case("--save") && last {
                        options.push_str("\"\"");
                    } else if a.eq_ignore_ascii_case("--sentinel") && next_is_opt {
                        handled_last = true;
                    }
                } else {
                    handled_last = true;
                }
            } else {
                options.push_str(&repr(a.as_bytes()));
                options.push(' ');
                handled_last = true;
            }
            j += 1;
        }
        content.push(b'\n');
        content.extend_from_slice(options.as_bytes());
        let mut st = LoadState {
            loading: true,
            ..LoadState::default()
        };
        cfg.load_string(&content, 0, &mut st)?;
        if st.module_config {
            return Err(ConfigError::Fatal {
                reason: "Module Configuration detected without loadmodule directive or no ApplyConfig call: aborting".into(),
            });
        }
        if cfg.cluster_enabled()
            && matches!(
                cfg.val(param!(REPLICAOF, "replicaof")),
                Some(Val::Replicaof(Some(_)))
            )
        {
            return Err(ConfigError::Invalid {
                reason: "replicaof directive not allowed in cluster mode".into(),
            });
        }
        Ok(cfg)
    }

    /// Parses and stores one param's value.
    fn apply(&mut self, idx: usize, args: &[String], st: &mut LoadState) -> Result<(), String> {
        let (Some(p), Some(cur)) = (PARAMS.get(idx), self.vals.get(idx)) else {
            return Err("internal error: unknown parameter".into());
        };
        let v = parse_value(p, cur, args, st)?;
        let r = render(p, &v);
        // Refused rather than accepted and ignored: a replica's log is its
        // primary's stream byte for byte, so a local write has nowhere to go.
        if idx == param!(BOOL, "replica-read-only").index() && r == "no" {
            return Err("anykv replicas are always read-only (their log is their primary's stream); remove 'replica-read-only no'".into());
        }
        if let (Some(slot), Some(rslot)) = (self.vals.get_mut(idx), self.rendered.get_mut(idx)) {
            *slot = v;
            *rslot = r;
        }
        Ok(())
    }

    /// CONFIG GET: each pattern is matched case-insensitively against every
    /// name and alias. A pattern without glob characters is a direct lookup
    /// reported under the spelling given; a glob reports each matching name
    /// or alias under its own name (so `*` lists aliases too, like Redis
    /// 7.0). No name appears twice (compared case-insensitively). Order:
    /// patterns in order, table order within a pattern.
    pub fn get(&self, patterns: &[&[u8]]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let seen = |out: &Vec<(String, String)>, k: &str| {
            out.iter().any(|(n, _)| n.eq_ignore_ascii_case(k))
        };
        for pat in patterns {
            if !pat.iter().any(|c| matches!(c, b'[' | b'*' | b'?')) {
                let name = lossy(pat);
                if seen(&out, &name) {
                    continue;
                }
                if let Some((idx, _)) = lookup(&name) {
                    let v = self.rendered.get(idx).cloned().unwrap_or_default();
                    out.push((name, v));
                }
                continue;
            }
            for (idx, p) in PARAMS.iter().enumerate() {
                for key in std::iter::once(p.name).chain(p.alias) {
                    if !seen(&out, key) && glob_match(pat, key.as_bytes(), true) {
                        out.push((
                            key.to_string(),
                            self.rendered.get(idx).cloned().unwrap_or_default(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// CONFIG SET from a client that is not local. See [`Config::set_from`].
    pub fn set(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), String> {
        self.set_from(pairs, false)
    }

    /// CONFIG SET name value [name value ...], all or nothing. Returns the
    /// error text after "ERR ", in Redis 7.0's words. `local_client` tells
    /// whether the caller is connected over loopback/unix socket, which
    /// `enable-protected-configs local` requires for protected params
    /// (dir, dbfilename).
    ///
    /// Validation order follows Redis: first every name is checked (unknown,
    /// immutable, protected, duplicate; the first problem wins), then the
    /// values are parsed in order and the first failure is reported under
    /// the param's canonical spelling of the name used (alias or not).
    pub fn set_from(&mut self, pairs: &[(&[u8], &[u8])], local_client: bool) -> Result<(), String> {
        let protected_ok = match self.enum_of(param!(ENUM, "enable-protected-configs")) {
            "yes" => true,
            "local" => local_client,
            _ => false,
        };
        let mut resolved: Vec<(usize, bool)> = Vec::with_capacity(pairs.len());
        for (name, _) in pairs {
            let shown = lossy(name);
            let Some((idx, alias)) = lookup(&shown) else {
                return Err(format!(
                    "Unknown option or number of arguments for CONFIG SET - '{shown}'"
                ));
            };
            let flags = PARAMS.get(idx).map(|p| p.flags).unwrap_or(0);
            let fail = |why: &str| {
                format!("CONFIG SET failed (possibly related to argument '{shown}') - {why}")
            };
            if flags & IMMUTABLE != 0 {
                return Err(fail("can't set immutable config"));
            }
            if flags & PROTECTED != 0 && !protected_ok {
                return Err(fail("can't set protected config"));
            }
            // Redis registers an alias as a separate entry, so "name" and
            // its alias in one call are not duplicates (the last one wins).
            if resolved.contains(&(idx, alias)) {
                return Err(fail("duplicate parameter"));
            }
            resolved.push((idx, alias));
        }
        let mut next = self.clone();
        let mut st = LoadState::default();
        for ((idx, alias), (_, value)) in resolved.into_iter().zip(pairs) {
            let Some(p) = PARAMS.get(idx) else { continue };
            let value = lossy(value);
            let args = if p.multi_arg() {
                split_spaces(&value)
            } else {
                vec![value]
            };
            let applied = next.apply(idx, &args, &mut st).and_then(|()| {
                // Redis's resizeReplicationBacklog (run by CONFIG SET only)
                // raises a too small backlog to CONFIG_REPL_BACKLOG_MIN_SIZE.
                let backlog = param!(NUM, "repl-backlog-size");
                if idx == backlog.index() && next.num_of(backlog) < 16 * 1024 {
                    next.apply(idx, &["16384".to_string()], &mut st)?;
                }
                Ok(())
            });
            if let Err(why) = applied {
                let shown = if alias {
                    p.alias.unwrap_or(p.name)
                } else {
                    p.name
                };
                return Err(format!(
                    "CONFIG SET failed (possibly related to argument '{shown}') - {why}"
                ));
            }
        }
        next.generation = self.generation.wrapping_add(1);
        *self = next;
        Ok(())
    }

    /// Bumped on every successful `set`, so hot paths can cache typed
    /// values and re-read them only when this changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rendered value (as CONFIG GET shows it) by name or alias, for
    /// tests. The server itself reads typed getters (see the module doc).
    #[cfg(test)]
    fn value(&self, name: &str) -> Option<&str> {
        lookup(name)
            .and_then(|(i, _)| self.rendered.get(i))
            .map(String::as_str)
    }

    /// The config file given at startup (absolute), used by CONFIG REWRITE.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.config_file.clone()
    }

    /// `rename-command old new` directives, in file order (new may be ""
    /// meaning "remove the command").
    pub fn renamed_commands(&self) -> &[(String, String)] {
        &self.renamed_commands
    }

    /// `user ...` directives (arguments after "user"), in file order.
    pub fn users(&self) -> &[Vec<String>] {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::*;
    use std::collections::HashSet;

    #[test]
    fn argv_parsing() {
        let c = Config::load(&args(&[
            "--port",
            "7000",
            "--save",
            "",
            "--client-output-buffer-limit",
            "normal",
            "1mb",
            "2mb",
            "3",
        ]))
        .unwrap();
        assert_eq!(c.port(), 7000);
        assert_eq!(c.value("save"), Some(""));
        assert_eq!(
            c.value("client-output-buffer-limit"),
            Some("normal 1048576 2097152 3 slave 268435456 67108864 60 pubsub 33554432 8388608 60")
        );
        assert_eq!(
            c.client_output_buffer_limit().normal,
            OutputLimit {
                hard: 1 << 20,
                soft: 2 << 20,
                soft_secs: 3
            }
        );
        assert_eq!(c.config_file(), None);

        // `--save` followed by another option or last means `save ""`.
        let c = Config::load(&args(&["--save", "--port", "7001"])).unwrap();
        assert_eq!((c.value("save"), c.port()), (Some(""), 7001));
        let c = Config::load(&args(&["--port", "7002", "--save"])).unwrap();
        assert_eq!((c.value("save"), c.port()), (Some(""), 7002));
        // Name and value in one argument; negative values are values.
        let c = Config::load(&args(&["--port 7003", "--slowlog-log-slower-than", "-1"])).unwrap();
        assert_eq!((c.port(), c.slowlog_log_slower_than()), (7003, -1));
        // Several values; values with spaces and quotes stay one argument.
        let c = Config::load(&args(&[
            "--save",
            "60",
            "1",
            "30",
            "2",
            "--requirepass",
            "a b\"c",
            "--bind",
            "127.0.0.1",
            "::1",
        ]))
        .unwrap();
        assert_eq!(c.value("save"), Some("60 1 30 2"));
        assert_eq!(c.requirepass(), Some(b"a b\"c".to_vec()));
        assert_eq!(c.bind(), args(&["127.0.0.1", "::1"]));
        // Names are case-insensitive, aliases work.
        let c = Config::load(&args(&[
            "--PORT",
            "7004",
            "--slave-serve-stale-data",
            "no",
            "--lua-time-limit",
            "100",
        ]))
        .unwrap();
        assert_eq!(c.port(), 7004);
        assert_eq!(c.value("replica-serve-stale-data"), Some("no"));
        // A writable replica is refused, by name and by alias.
        for name in ["--replica-read-only", "--slave-read-only"] {
            let e = Config::load(&args(&[name, "no"])).unwrap_err();
            assert!(e.to_string().contains("always read-only"), "{e}");
        }
        assert_eq!(c.value("busy-reply-threshold"), Some("100"));
        // Several `save` options accumulate (the first replaces the default).
        let c = Config::load(&args(&["--save", "10 1", "--save", "20 2"])).unwrap();
        assert_eq!(c.value("save"), Some("10 1 20 2"));
        // Immutable params can be set at startup.
        let c = Config::load(&args(&[
            "--databases",
            "4",
            "--enable-debug-command",
            "local",
            "--executors",
            "3",
        ]))
        .unwrap();
        assert_eq!(
            (
                c.databases(),
                c.enable_debug_command().as_str(),
                c.executors()
            ),
            (4, "local", 3)
        );
    }

    #[test]
    fn argv_errors_match_redis_server() {
        // Texts printed by `redis-server --port abc` etc. (7.0.15).
        let e = Config::load(&args(&["--port", "abc"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\nReading the configuration file, at line 2\n>>> 'port \"abc\"'\nargument couldn't be parsed into an integer"
        );
        let e = Config::load(&args(&["--foo", "bar"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("at line 2\n>>> 'foo \"bar\"'\nBad directive or wrong number of arguments"),
            "{e}"
        );
        let e = Config::load(&args(&["--port", "0", "--port"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("at line 3\n>>> 'port'\nwrong number of arguments"),
            "{e}"
        );
        let e = Config::load(&args(&["--maxmemory-policy", "foo"]))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(">>> 'maxmemory-policy \"foo\"'\nargument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction"), "{e}");
        let e = Config::load(&args(&["--databases", "0"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("argument must be between 1 and 2147483647 inclusive"),
            "{e}"
        );
        let e = Config::load(&args(&["/nonexistent/anykv.conf"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Fatal error, can't open config file '/nonexistent/anykv.conf': No such file or directory");
        let e = Config::load(&args(&["--foo.bar", "1"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Module Configuration detected without loadmodule directive or no ApplyConfig call: aborting"), "{e}");
        let e = Config::load(&args(&["--foo.bar", "1", "--zz", "1"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(">>> 'zz \"1\"'\nBad directive or wrong number of arguments"),
            "{e}"
        );
        // Not a replica via file/argv: the startup value is not clamped.
        let c = Config::load(&args(&[
            "--repl-backlog-size",
            "1",
            "--save",
            "10 1",
            "--replicaof",
            "h 6380",
        ]))
        .unwrap();
        assert_eq!(c.value("repl-backlog-size"), Some("1"));
        assert_eq!(c.value("save"), Some("10 1"));
        assert_eq!(c.replicaof(), Some(("h".to_string(), 6380)));
        let e = Config::load(&args(&[
            "--cluster-enabled",
            "yes",
            "--replicaof",
            "h",
            "1",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with("\nreplicaof directive not allowed in cluster mode"),
            "{e}"
        );
    }

    #[test]
    fn config_set_error_texts_match_redis() {
        let mut c = Config::default();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("foo", "bar")], "Unknown option or number of arguments for CONFIG SET - 'foo'"),
            (&[("port", "1"), ("foo", "2")], "Unknown option or number of arguments for CONFIG SET - 'foo'"),
            (&[("port", "x"), ("foo", "1")], "Unknown option or number of arguments for CONFIG SET - 'foo'"),
            (&[("port", "abc")], "CONFIG SET failed (possibly related to argument 'port') - argument couldn't be parsed into an integer"),
            (&[("port", "70000")], "CONFIG SET failed (possibly related to argument 'port') - argument must be between 0 and 65535 inclusive"),
            (&[("port", "-1")], "CONFIG SET failed (possibly related to argument 'port') - argument must be between 0 and 65535 inclusive"),
            (&[("timeout", "01")], "CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer"),
            (&[("timeout", "+1")], "CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer"),
            (&[("timeout", "")], "CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer"),
            (&[("maxmemory", "-1")], "CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"),
            (&[("maxmemory", "1.5")], "CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"),
            (&[("maxmemory", " 1")], "CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"),
            (&[("maxmemory", "1tb")], "CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"),
            (&[("activerehashing", "maybe")], "CONFIG SET failed (possibly related to argument 'activerehashing') - argument must be 'yes' or 'no'"),
            (&[("maxmemory-policy", "foo")], "CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction"),
            (&[("appendfsync", "foo")], "CONFIG SET failed (possibly related to argument 'appendfsync') - argument(s) must be one of the following: everysec, always, no"),
            (&[("loglevel", "foo")], "CONFIG SET failed (possibly related to argument 'loglevel') - argument(s) must be one of the following: debug, verbose, notice, warning"),
            (&[("oom-score-adj", "foo")], "CONFIG SET failed (possibly related to argument 'oom-score-adj') - argument(s) must be one of the following: no, yes, relative, absolute"),
            (&[("enable-debug-command", "yes")], "CONFIG SET failed (possibly related to argument 'enable-debug-command') - can't set immutable config"),
            (&[("DATABASES", "1")], "CONFIG SET failed (possibly related to argument 'DATABASES') - can't set immutable config"),
            (&[("port", "7399"), ("databases", "2")], "CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config"),
            (&[("unixsocketperm", "1")], "CONFIG SET failed (possibly related to argument 'unixsocketperm') - can't set immutable config"),
            (&[("executors", "2")], "CONFIG SET failed (possibly related to argument 'executors') - can't set immutable config"),
            (&[("dir", "/tmp")], "CONFIG SET failed (possibly related to argument 'dir') - can't set protected config"),
            (&[("dbfilename", "x.rdb")], "CONFIG SET failed (possibly related to argument 'dbfilename') - can't set protected config"),
            (&[("PORT", "1"), ("port", "2")], "CONFIG SET failed (possibly related to argument 'port') - duplicate parameter"),
            (&[("SLAVE-READ-ONLY", "x")], "CONFIG SET failed (possibly related to argument 'slave-read-only') - argument must be 'yes' or 'no'"),
            (&[("Hash-Max-Ziplist-Entries", "x")], "CONFIG SET failed (possibly related to argument 'hash-max-ziplist-entries') - argument couldn't be parsed into an integer"),
            (&[("maxclients", "0")], "CONFIG SET failed (possibly related to argument 'maxclients') - argument must be between 1 and 4294967295 inclusive"),
            (&[("slowlog-log-slower-than", "-2")], "CONFIG SET failed (possibly related to argument 'slowlog-log-slower-than') - argument must be between -1 and 9223372036854775807 inclusive"),
            (&[("hz", "-1")], "CONFIG SET failed (possibly related to argument 'hz') - argument must be between 0 and 2147483647 inclusive"),
            (&[("tracking-table-max-keys", "-1")], "CONFIG SET failed (possibly related to argument 'tracking-table-max-keys') - argument must be between 0 and 9223372036854775807 inclusive"),
            (&[("proto-max-bulk-len", "1000")], "CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be between 1048576 and 9223372036854775807 inclusive"),
            (&[("proto-max-bulk-len", "18446744073709551615")], "CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be between 1048576 and 9223372036854775807 inclusive"),
            (&[("client-query-buffer-limit", "1")], "CONFIG SET failed (possibly related to argument 'client-query-buffer-limit') - argument must be between 1048576 and 9223372036854775807 inclusive"),
            (&[("repl-backlog-size", "0")], "CONFIG SET failed (possibly related to argument 'repl-backlog-size') - argument must be between 1 and 9223372036854775807 inclusive"),
            (&[("maxmemory-clients", "-1")], "CONFIG SET failed (possibly related to argument 'maxmemory-clients') - argument must be a memory or percent value"),
            (&[("maxmemory-clients", "101%")], "CONFIG SET failed (possibly related to argument 'maxmemory-clients') - percentage argument must be less or equal to 100"),
            (&[("notify-keyspace-events", "q")], "CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."),
            (&[("save", "100 x")], "CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"),
            (&[("save", "100")], "CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"),
            (&[("save", "0 1")], "CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"),
            (&[("save", "100 -1")], "CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"),
            (&[("save", "  100   10 ")], "CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"),
            (&[("bind", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17")], "CONFIG SET failed (possibly related to argument 'bind') - Too many bind addresses specified."),
            (&[("client-output-buffer-limit", "master 1 2 3")], "CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - Invalid client class specified in buffer limit configuration."),
            (&[("client-output-buffer-limit", "normal 1 2")], "CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - Wrong number of arguments in buffer limit configuration."),
            (&[("client-output-buffer-limit", "normal 1 2 -1")], "CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - Error in hard, soft or soft_seconds setting in buffer limit configuration."),
            (&[("client-output-buffer-limit", "normal 1 2 x")], "CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - Error in hard, soft or soft_seconds setting in buffer limit configuration."),
            (&[("oom-score-adj-values", "0 200 9999")], "CONFIG SET failed (possibly related to argument 'oom-score-adj-values') - Invalid oom-score-adj-values, elements must be between -2000 and 2000."),
            (&[("oom-score-adj-values", "0 200")], "CONFIG SET failed (possibly related to argument 'oom-score-adj-values') - wrong number of arguments"),
            (&[("latency-tracking-info-percentiles", "101")], "CONFIG SET failed (possibly related to argument 'latency-tracking-info-percentiles') - latency-tracking-info-percentiles parameters should sit between [0.0,100.0]"),
            (&[("latency-tracking-info-percentiles", " 5")], "CONFIG SET failed (possibly related to argument 'latency-tracking-info-percentiles') - Invalid latency-tracking-info-percentiles parameters"),
            (&[("replicaof", "a b")], "CONFIG SET failed (possibly related to argument 'replicaof') - can't set immutable config"),
            (&[("proc-title-template", "{foo}")], "CONFIG SET failed (possibly related to argument 'proc-title-template') - template format is invalid or contains unknown variables"),
            (&[("proc-title-template", "{title}")], "CONFIG SET failed (possibly related to argument 'proc-title-template') - template format is invalid or contains unknown variables"),
            (&[("proc-title-template", "")], "CONFIG SET failed (possibly related to argument 'proc-title-template') - template format is invalid or contains unknown variables"),
            (&[("cluster-announce-hostname", "a_b")], "CONFIG SET failed (possibly related to argument 'cluster-announce-hostname') - Hostnames may only contain alphanumeric characters, hyphens or dots"),
            (&[("appendfilename", "x")], "CONFIG SET failed (possibly related to argument 'appendfilename') - can't set immutable config"),
        ];
        let before = c.get(&[b"*"]);
        for (pairs, want) in cases {
            let p: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(a, b)| (a.as_bytes(), b.as_bytes()))
                .collect();
            assert_eq!(c.set(&p).unwrap_err(), *want, "{pairs:?}");
        }
        // Nothing changed, generation untouched.
        assert_eq!(c.get(&[b"*"]), before);
        assert_eq!(c.generation(), 1);
    }

    #[test]
    fn config_set_values_and_rendering() {
        let mut c = Config::default();
        for (v, want) in [
            ("", "0"),
            ("mb", "0"),
            ("1k", "1000"),
            ("1kb", "1024"),
            ("1K", "1000"),
            ("1KB", "1024"),
            ("1m", "1000000"),
            ("1mb", "1048576"),
            ("1g", "1000000000"),
            ("1gb", "1073741824"),
            ("1b", "1"),
            ("01", "1"),
            ("99999999999999999999999", "18446744073709551615"),
        ] {
            set1(&mut c, "maxmemory", v).unwrap();
            assert_eq!(c.value("maxmemory"), Some(want), "{v}");
        }
        set1(&mut c, "hz", "0").unwrap();
        assert_eq!((c.value("hz"), c.hz()), (Some("1"), 1));
        set1(&mut c, "hz", "1000").unwrap();
        assert_eq!(c.value("hz"), Some("500"));
        set1(&mut c, "maxmemory-clients", "10%").unwrap();
        assert_eq!(
            (c.value("maxmemory-clients"), c.maxmemory_clients()),
            (Some("10%"), -10)
        );
        set1(&mut c, "maxmemory-clients", "5").unwrap();
        assert_eq!(c.value("maxmemory-clients"), Some("5"));
        set1(&mut c, "save", "100 10 200 20").unwrap();
        assert_eq!(c.value("save"), Some("100 10 200 20"));
        set1(&mut c, "save", "").unwrap();
        assert_eq!(c.value("save"), Some(""));
        set1(&mut c, "client-output-buffer-limit", "normal 1mb 2mb 3").unwrap();
        set1(
            &mut c,
            "client-output-buffer-limit",
            "replica 1 2 3 PUBSUB 4 5 6",
        )
        .unwrap();
        assert_eq!(
            c.value("client-output-buffer-limit"),
            Some("normal 1048576 2097152 3 slave 1 2 3 pubsub 4 5 6")
        );
        set1(&mut c, "client-output-buffer-limit", "").unwrap();
        assert_eq!(
            c.value("client-output-buffer-limit"),
            Some("normal 1048576 2097152 3 slave 1 2 3 pubsub 4 5 6")
        );
        set1(&mut c, "list-max-listpack-size", "-5").unwrap();
        assert_eq!(c.value("list-max-ziplist-size"), Some("-5"));
        set1(&mut c, "SLAVE-SERVE-STALE-DATA", "NO").unwrap();
        assert_eq!(c.value("replica-serve-stale-data"), Some("no"));
        assert!(set1(&mut c, "replica-read-only", "no")
            .unwrap_err()
            .contains("always read-only"));
        set1(&mut c, "replica-read-only", "yes").unwrap();
        set1(&mut c, "maxmemory-policy", "ALLKEYS-LRU").unwrap();
        assert_eq!(c.maxmemory_policy(), "allkeys-lru");
        set1(&mut c, "oom-score-adj", "relative").unwrap();
        assert_eq!(c.value("oom-score-adj"), Some("yes"));
        set1(
            &mut c,
            "latency-tracking-info-percentiles",
            "50 99.99 100 0.5",
        )
        .unwrap();
        assert_eq!(
            c.value("latency-tracking-info-percentiles"),
            Some("50 99.99 100 0.5")
        );
        set1(&mut c, "latency-tracking-info-percentiles", "1e1").unwrap();
        assert_eq!(c.value("latency-tracking-info-percentiles"), Some("10"));
        set1(&mut c, "bind", "").unwrap();
        assert_eq!((c.value("bind"), c.bind()), (Some(""), vec![]));
        set1(&mut c, "requirepass", "secret").unwrap();
        assert_eq!(c.requirepass(), Some(b"secret".to_vec()));
        set1(&mut c, "requirepass", "").unwrap();
        assert_eq!(c.requirepass(), None);
        set1(&mut c, "repl-backlog-size", "1k").unwrap();
        assert_eq!(c.value("repl-backlog-size"), Some("16384"));
        set1(&mut c, "repl-backlog-size", "1mb").unwrap();
        assert_eq!(c.value("repl-backlog-size"), Some("1048576"));
        set1(&mut c, "max-multibulk-len", "1024").unwrap();
        assert_eq!(c.max_multibulk_len(), 1024);
        for (v, shown) in [
            ("save", "save"),
            ("nosave now", "nosave now"),
            ("now force save", "save now force"),
            ("default", "default"),
            ("default now", "now"),
            ("NOW", "now"),
        ] {
            set1(&mut c, "shutdown-on-sigint", v).unwrap();
            assert_eq!(c.shutdown_on_sigint(), shown, "{v}");
        }
        assert_eq!(
            set1(&mut c, "shutdown-on-sigterm", "save nosave").unwrap_err(),
            "CONFIG SET failed (possibly related to argument 'shutdown-on-sigterm') - shutdown options SAVE and NOSAVE can't be used simultaneously"
        );
        assert_eq!(
            set1(&mut c, "shutdown-on-sigterm", "").unwrap_err(),
            "CONFIG SET failed (possibly related to argument 'shutdown-on-sigterm') - argument(s) must be one of the following: default, save, nosave, now, force"
        );
        // Alias and canonical name in one call are not duplicates (Redis
        // registers them separately); the last one wins.
        c.set(&[(b"lua-time-limit", b"10"), (b"busy-reply-threshold", b"5")])
            .unwrap();
        assert_eq!(c.value("lua-time-limit"), Some("5"));
    }

    #[test]
    fn protected_configs() {
        let d = tmpdir("prot");
        let mut c = Config::load(&args(&["--enable-protected-configs", "local"])).unwrap();
        let dir = d.to_str().unwrap().as_bytes();
        assert!(c
            .set_from(&[(b"dir", dir)], false)
            .unwrap_err()
            .contains("can't set protected config"));
        c.set_from(&[(b"dir", dir)], true).unwrap();
        assert_eq!(
            std::fs::canonicalize(c.dir()).unwrap(),
            std::fs::canonicalize(&d).unwrap()
        );
        std::fs::create_dir_all(d.join("sub")).unwrap();
        // Relative to the current `dir`, like Redis's chdir.
        c.set_from(&[(b"dir", b"sub")], true).unwrap();
        assert!(c.dir().ends_with("/sub"));
        assert_eq!(
            c.set_from(&[(b"dir", b"/nonexistent-anykv")], true)
                .unwrap_err(),
            "CONFIG SET failed (possibly related to argument 'dir') - No such file or directory"
        );
        let mut c = Config::load(&args(&["--enable-protected-configs", "yes"])).unwrap();
        c.set(&[(b"dbfilename", b"x.rdb")]).unwrap();
        assert_eq!(
            c.set(&[(b"dbfilename", b"a/b")]).unwrap_err(),
            "CONFIG SET failed (possibly related to argument 'dbfilename') - dbfilename can't be a path, just a filename"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn set_is_all_or_nothing_and_bumps_generation() {
        let mut c = Config::default();
        let g = c.generation();
        let err = c
            .set(&[
                (b"maxmemory", b"100mb"),
                (b"timeout", b"30"),
                (b"port", b"nope"),
            ])
            .unwrap_err();
        assert!(err.contains("'port'"));
        assert_eq!((c.maxmemory(), c.timeout(), c.generation()), (0, 0, g));
        c.set(&[(b"maxmemory", b"100mb"), (b"timeout", b"30")])
            .unwrap();
        assert_eq!((c.maxmemory(), c.timeout()), (100 << 20, 30));
        assert_eq!(c.generation(), g + 1);
        c.set(&[(b"timeout", b"30")]).unwrap();
        assert_eq!(c.generation(), g + 2);
    }

    #[test]
    fn config_get_globs_and_aliases() {
        let c = Config::default();
        let all = get1(&c, "*");
        assert!(all.iter().any(|(k, _)| k == "hash-max-ziplist-entries"));
        assert!(all.iter().any(|(k, _)| k == "hash-max-listpack-entries"));
        assert!(all.iter().any(|(k, _)| k == "slave-read-only"));
        let names: HashSet<_> = all.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names.len(), all.len());
        // Exact lookups keep the spelling asked for; case-insensitive dedupe.
        assert_eq!(
            c.get(&[b"port", b"PORT", b"Port"]),
            vec![("port".to_string(), "6379".to_string())]
        );
        assert_eq!(
            get1(&c, "SLAVE-READ-ONLY"),
            vec![("SLAVE-READ-ONLY".to_string(), "yes".to_string())]
        );
        assert_eq!(
            get1(&c, "PO*"),
            vec![("port".to_string(), "6379".to_string())]
        );
        assert_eq!(get1(&c, "nonexist"), vec![]);
        let ro: Vec<_> = get1(&c, "*read-only*")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(ro, vec!["replica-read-only", "slave-read-only"]);
        let tcp: Vec<_> = get1(&c, "tcp-*").into_iter().map(|(k, _)| k).collect();
        assert_eq!(tcp, vec!["tcp-keepalive", "tcp-backlog"]);
        let lua: Vec<_> = c
            .get(&[b"lua*", b"busy*"])
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(lua, vec!["lua-time-limit", "busy-reply-threshold"]);
        assert_eq!(
            c.get(&[b"maxmemory", b"max*"])
                .iter()
                .filter(|(k, _)| k == "maxmemory")
                .count(),
            1
        );
    }

    #[test]
    fn no_panics_on_odd_input() {
        let mut c = Config::default();
        let junk: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"\"",
            b"'",
            b"\\",
            b"{",
            b"}",
            b"%",
            b"-",
            b"--",
            b"\x00",
            b"9999999999999999999999999999%",
        ];
        let names: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
        for n in &names {
            for v in junk {
                let _ = c.set_from(&[(n.as_bytes(), v)], true);
            }
        }
        for v in junk {
            let _ = c.get(&[v]);
            let _ = c.set(&[(v, v)]);
            let a = vec![String::from_utf8_lossy(v).into_owned(); 3];
            let _ = Config::load(&a);
        }
        let _ = Config::load(&args(&["-"]));
        let _ = Config::load(&args(&["--", "--", "x"]));
        let _ = format!("{c:?}");
    }
}
