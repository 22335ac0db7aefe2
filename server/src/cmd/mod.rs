//! Commands: the one command table and the execution context.
//!
//! `table.rs` lists every command once (name, arity, Redis flags, key
//! positions, ACL categories, and anykv's route class and tenant scope). The
//! store dispatches from it, the router classifies from it and `COMMAND`
//! describes it. Each command family has its own module, named as Redis
//! groups them (`string`, `keys`, `connection`, `server`, ...).

pub mod acl;
pub mod bitmap;
pub mod blocking;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
pub mod debug;
pub mod dump;
pub mod function;
pub mod geo;
pub mod hash;
pub mod hyperloglog;
pub mod info;
pub mod keys;
pub mod latency;
pub mod list;
pub mod lolwut;
pub mod memory;
pub mod migrate;
pub mod multi;
pub mod pubsub;
pub mod replication;
pub mod script;
pub mod server;
pub mod set;
pub mod sort;
pub mod stream;
pub mod string;
pub mod table;
pub mod zset;

use crate::client::Session;
pub use crate::config::{
    NOTIFY_EVICTED, NOTIFY_EXPIRED, NOTIFY_GENERIC, NOTIFY_HASH, NOTIFY_KEY_MISS, NOTIFY_LIST,
    NOTIFY_NEW, NOTIFY_SET, NOTIFY_STREAM, NOTIFY_STRING, NOTIFY_ZSET,
};
use crate::db::{Kind, Table, Value, NO_EXPIRE};
use crate::resp::Reply;
use crate::shared::Shared;
use crate::tenant::Tenant;
use crate::util::parse_i64;

pub use table::{lookup, registry, CommandSpec, Lookup, Route, Scope};

/// Shared error texts (Redis's `shared.*` objects).
pub mod errors {
    pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
    pub const SYNTAX: &str = "syntax error";
    pub const NOT_INTEGER: &str = "value is not an integer or out of range";
    pub const NOT_FLOAT: &str = "value is not a valid float";
    pub const NO_SUCH_KEY: &str = "no such key";
    pub const DB_INDEX: &str = "DB index is out of range";
    pub const NOAUTH: &str = "NOAUTH Authentication required.";
    /// A primary without its controller's lease (docs/FAILOVER.md).
    pub const NO_LEASE: &str = "TRYAGAIN this node holds no lease for this database from its region's controller (it may no longer be the primary); retry shortly";
    pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
}

/// Marker: an error reply has already been written for this command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replied;

/// Everything a command handler may touch.
pub struct Ctx<'a> {
    pub args: &'a [&'a [u8]],
    pub out: &'a mut Reply,
    pub t: &'a mut Tenant,
    pub s: &'a mut Session,
    pub shared: &'a Shared,
    pub set: &'a crate::shared::Settings,
    /// Time snapshot for this command (Redis evaluates expiry against one
    /// time per command).
    pub now_ms: i64,
    pub spec: &'static CommandSpec,
    /// Set by handlers whose reply is an error, for failed_calls stats.
    pub failed: bool,
    /// Set by handlers that must wait before replying (WAIT).
    pub suspend: Option<server::Suspend>,
}

pub use crate::evict::lru_clock;

/// Records a write effect: appends it to the propagation log and, since
/// the effect names exactly the keys that changed, invalidates WATCHes
/// on them and marks them ready for clients blocked on them.
pub fn record(t: &mut Tenant, db: usize, args: &[&[u8]]) {
    t.log.append(db, args);
    if t.watched.is_empty() && t.blocked_keys.is_empty() && !t.tracking.active() {
        return;
    }
    let name = args[0].to_ascii_lowercase();
    match &name[..] {
        // Their WATCH effects depend on which keys existed before, so
        // the commands call `touch_watched_in_dbs` themselves. Blocked
        // clients of the emptied databases look again (a group's reader
        // learns its stream is gone, as in Redis).
        b"flushall" | b"flushdb" => {
            let all = name == b"flushall";
            crate::tracking::flushed(t);
            let keys: Vec<(usize, Vec<u8>)> = t
                .blocked_keys
                .keys()
                .filter(|(d, _)| all || *d == db)
                .cloned()
                .collect();
            t.ready_keys.extend(keys);
        }
        b"swapdb" => {
            // Blocked clients may now find data in either database.
            let keys: Vec<(usize, Vec<u8>)> = t.blocked_keys.keys().cloned().collect();
            t.ready_keys.extend(keys);
        }
        _ => {
            // (Resolved as a call is: XGROUP's keys are its subcommand's.)
            let Lookup::Found(r) = lookup(args) else {
                return;
            };
            // (COPY changes its destination only: its source's WATCHes
            // and cached copies stay valid, as in Redis.)
            if name != b"copy" {
                for k in command::key_positions(r.spec, args) {
                    t.touch_key(db, args[k]);
                }
            } else if !args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db")) {
                t.touch_key(db, args[2]);
            }
            // MOVE and COPY ... DB n also change a key in another database.
            let other_db = match &name[..] {
                b"move" => args.get(2).and_then(|a| crate::util::parse_i64(a)),
                b"copy" => (3..args.len())
                    .find(|&i| args[i].eq_ignore_ascii_case(b"db"))
                    .and_then(|i| args.get(i + 1))
                    .and_then(|a| crate::util::parse_i64(a)),
                _ => None,
            };
            if let Some(d) = other_db {
                let key = if name == b"move" { args[1] } else { args[2] };
                t.touch_key(d as usize, key);
            }
        }
    }
}

impl<'a> Ctx<'a> {
    #[inline]
    pub fn db(&mut self) -> &mut Table {
        &mut self.t.ks.dbs[self.s.db]
    }

    /// Writes an `-ERR <msg>` reply and marks the call failed.
    pub fn err(&mut self, msg: &str) {
        self.failed = true;
        self.t.count_error("ERR");
        self.out.err(msg);
    }

    /// `-ERR <msg>` from bytes (messages that echo client arguments).
    pub fn err_bytes(&mut self, msg: &[u8]) {
        let mut m = b"ERR ".to_vec();
        m.extend_from_slice(msg);
        self.error_bytes(&m);
    }

    /// An error reply with its own code, from bytes (`NOGROUP ...` naming
    /// client arguments): counted under that code.
    pub fn error_bytes(&mut self, msg: &[u8]) {
        self.failed = true;
        let code = msg.split(|&b| b == b' ').next().unwrap_or_default();
        self.t.count_error(&String::from_utf8_lossy(code));
        self.out.error_bytes(msg);
    }

    /// Writes an error reply with its own code (`WRONGTYPE ...`).
    pub fn error(&mut self, msg: &str) {
        self.failed = true;
        self.t.count_error(msg);
        self.out.error(msg);
    }

    pub fn wrongtype(&mut self) {
        self.error(errors::WRONGTYPE);
    }

    pub fn syntax_error(&mut self) {
        self.err(errors::SYNTAX);
    }

    /// Parses argument `i` as an i64 or replies Redis's error.
    pub fn arg_i64(&mut self, i: usize) -> Option<i64> {
        let r = parse_i64(self.args[i]);
        if r.is_none() {
            self.err(errors::NOT_INTEGER);
        }
        r
    }

    /// The `lru` field for a key created now: the LRU clock, or the initial
    /// LFU counter under an LFU policy.
    pub fn new_lru(&self) -> u32 {
        if self.t.lfu.is_some() {
            crate::evict::lfu_new(self.now_ms)
        } else {
            lru_clock(self.now_ms)
        }
    }

    /// Keyspace notification for `key` in the current DB (Redis's
    /// `notifyKeyspaceEvent`); `class` is a `config::NOTIFY_*` flag.
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8]) {
        let db = self.s.db;
        self.t.notify(class, event, db, key, self.now_ms);
    }

    /// Redis's `getIntFromObjectOrReply` without a custom message: an i64
    /// in the C `int` range, or the matching error reply.
    pub fn arg_int(&mut self, i: usize) -> Option<i32> {
        let v = self.arg_i64(i)?;
        match i32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err("value is out of range, value must between -2147483648 and 2147483647");
                None
            }
        }
    }

    /// Appends an effect to the tenant's propagation log (current DB).
    pub fn propagate(&mut self, args: &[&[u8]]) {
        let db = self.s.db;
        record(self.t, db, args);
        self.t.dirty += 1;
    }

    /// Whether an absolute expiry time `when` means "delete now" (Redis's
    /// `checkAlreadyExpired`): only on a primary deciding for itself; when
    /// applying effects or on a replica the key keeps its past TTL and the
    /// source's own `DEL` removes it.
    pub fn already_expired(&self, when: i64) -> bool {
        when <= self.now_ms && !self.s.replaying && self.t.role == crate::repl::Role::Primary
    }

    /// Logs an effect that changes a key's bookkeeping, not the value
    /// clients read or cache (a stream's consumer groups): no WATCH fails,
    /// no cached copy is invalidated, no blocked client looks again, as
    /// Redis does not signal the key for them.
    pub fn propagate_quiet(&mut self, args: &[&[u8]]) {
        let db = self.s.db;
        self.t.log.append(db, args);
        self.t.dirty += 1;
    }

    /// [`Ctx::propagate_quiet`] of the command as it was received.
    pub fn propagate_quiet_as_is(&mut self) {
        let args = self.args;
        self.propagate_quiet(args);
    }

    /// Propagates the command as it was received.
    pub fn propagate_as_is(&mut self) {
        let args = self.args;
        self.propagate(args);
    }

    /// Lazy expiry (Redis's `expireIfNeeded`): true if `idx` in `db` is
    /// logically expired and must be treated as missing. A primary deletes
    /// it and logs `DEL`, as Redis propagates expiry. Effects being
    /// applied (the log at start, a primary's stream) see every key alive:
    /// their source already decided what expired. A replica or a paused
    /// primary hides the key but keeps it (see
    /// [`Tenant::deletes_on_its_own`]); they run no client writes, so
    /// nothing inserts over a hidden key.
    pub fn expire_if_needed(&mut self, db: usize, idx: u32) -> bool {
        let e = self.t.ks.dbs[db].entry(idx);
        if e.expire_at == NO_EXPIRE || e.expire_at > self.now_ms {
            return false;
        }
        if self.s.replaying {
            return false;
        }
        if !self.t.deletes_on_its_own(self.now_ms) {
            return true;
        }
        let entry = self.t.ks.dbs[db].remove_at(idx);
        self.t.stats.expired_keys += 1;
        self.t.record_del(db, entry.key.as_bytes());
        self.t.notify(
            NOTIFY_EXPIRED,
            "expired",
            db,
            entry.key.as_bytes(),
            self.now_ms,
        );
        true
    }

    /// Looks a key up for writing in the current DB (expired keys vanish).
    #[inline]
    pub fn lookup_write(&mut self, key: &[u8]) -> Option<u32> {
        self.lookup_write_in(self.s.db, key)
    }

    pub fn lookup_write_in(&mut self, db: usize, key: &[u8]) -> Option<u32> {
        let idx = self.t.ks.dbs[db].find(key)?;
        if self.expire_if_needed(db, idx) {
            return None;
        }
        let lru = match self.t.lfu {
            Some((factor, decay)) => {
                let r: f64 = rand::Rng::random(&mut self.t.rng);
                let old = self.t.ks.dbs[db].entry(idx).lru;
                crate::evict::lfu_touch(old, self.now_ms, factor, decay, r)
            }
            None => lru_clock(self.now_ms),
        };
        self.t.ks.dbs[db].set_lru(idx, lru);
        Some(idx)
    }

    /// Looks a key up for reading: like `lookup_write` plus hit/miss stats.
    #[inline]
    pub fn lookup_read(&mut self, key: &[u8]) -> Option<u32> {
        let r = self.lookup_write(key);
        if r.is_some() {
            self.t.stats.keyspace_hits += 1;
        } else {
            self.t.stats.keyspace_misses += 1;
            self.notify(NOTIFY_KEY_MISS, "keymiss", key);
        }
        r
    }

    /// Looks a key up without touching LRU or stats (EXISTS-like probes
    /// still expire lazily, as Redis's `lookupKeyReadWithFlags(NOTOUCH)`).
    pub fn lookup_notouch(&mut self, db: usize, key: &[u8]) -> Option<u32> {
        let idx = self.t.ks.dbs[db].find(key)?;
        if self.expire_if_needed(db, idx) {
            return None;
        }
        Some(idx)
    }

    /// Counts a read (hit or miss) for lookups made with Redis's
    /// LOOKUP_NOTOUCH (EXISTS, TYPE, TTL...): stats plus the keymiss event.
    pub fn count_read(&mut self, key: &[u8], hit: bool) {
        if hit {
            self.t.stats.keyspace_hits += 1;
        } else {
            self.t.stats.keyspace_misses += 1;
            self.notify(NOTIFY_KEY_MISS, "keymiss", key);
        }
    }

    /// Checks that `idx` (in the current DB) holds a `kind`: `Ok(None)` if
    /// missing, `Err(Replied)` after replying WRONGTYPE otherwise.
    #[inline]
    pub fn check_kind(&mut self, idx: Option<u32>, kind: Kind) -> Result<Option<u32>, Replied> {
        match idx {
            None => Ok(None),
            Some(i) if self.db().entry(i).value.kind() == kind => Ok(Some(i)),
            Some(_) => {
                self.wrongtype();
                Err(Replied)
            }
        }
    }

    /// Looks `key` up in the current DB and checks its type: for reading
    /// (`read`: Redis's `lookupKeyRead`, with hit/miss stats and the keymiss
    /// event, as [`Ctx::lookup_read`]) or writing (`lookupKeyWrite`, as
    /// [`Ctx::lookup_write`]), then `checkType`: `Ok(None)` if missing,
    /// `Ok(Some(idx))` if it holds a `kind`, `Err(Replied)` after replying
    /// WRONGTYPE otherwise.
    #[inline]
    pub fn lookup_typed(
        &mut self,
        key: &[u8],
        kind: Kind,
        read: bool,
    ) -> Result<Option<u32>, Replied> {
        let idx = if read {
            self.lookup_read(key)
        } else {
            self.lookup_write(key)
        };
        self.check_kind(idx, kind)
    }

    /// Reads a string key: `Ok(None)` if missing, `Err(Replied)` after replying
    /// WRONGTYPE.
    pub fn get_str(&mut self, key: &[u8]) -> Result<Option<u32>, Replied> {
        self.lookup_typed(key, Kind::String, true)
    }

    /// Sets `key` to `value` in the current DB, clearing any TTL unless
    /// `keep_ttl`.
    pub fn set_key(&mut self, key: &[u8], value: Value, keep_ttl: bool) -> u32 {
        let lru = self.new_lru();
        let new = self.t.notify_flags & NOTIFY_NEW != 0 && self.db().find(key).is_none();
        let db = self.db();
        let idx = db.upsert(key, value, lru);
        if !keep_ttl {
            db.set_expire(idx, NO_EXPIRE);
        }
        if new {
            self.notify(NOTIFY_NEW, "new", key);
        }
        idx
    }

    /// The common end of HDEL/SREM-style removals: drop the key if the
    /// collection emptied, log and notify only when something was removed,
    /// and reply the count.
    pub fn finish_removal(
        &mut self,
        idx: u32,
        key: &[u8],
        removed: i64,
        emptied: bool,
        class: u32,
        event: &str,
    ) {
        if emptied {
            self.db().remove_at(idx);
        }
        if removed > 0 {
            self.propagate_as_is();
            self.notify(class, event, key);
            if emptied {
                self.notify(NOTIFY_GENERIC, "del", key);
            }
        }
        self.out.int(removed);
    }

    /// Deletes a key (after lazy expiry); true if it existed.
    pub fn delete_key(&mut self, key: &[u8]) -> bool {
        match self.lookup_write(key) {
            Some(idx) => {
                self.db().remove_at(idx);
                true
            }
            None => false,
        }
    }
}
