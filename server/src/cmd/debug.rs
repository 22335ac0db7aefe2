//! DEBUG: the subcommands test suites and memory benchmarks rely on.
//! Denied to tenants; off unless `enable-debug-command` allows it, as in
//! Redis 7.

use super::{client::subcommand_syntax_error, errors, Ctx};
use crate::db::Value;
use crate::util::{parse_f64, parse_i64};

pub fn debug(ctx: &mut Ctx) {
    let sub = ctx.args[1].to_ascii_lowercase();
    let argc = ctx.args.len();
    match &sub[..] {
        b"sleep" if argc == 3 => {
            let Some(secs) = parse_f64(ctx.args[2]) else {
                return ctx.err(errors::NOT_FLOAT);
            };
            // Blocks the executor like Redis blocks its main thread: that is
            // what tests use DEBUG SLEEP to simulate.
            if secs > 0.0 {
                std::thread::sleep(std::time::Duration::from_micros((secs * 1e6) as u64));
            }
            ctx.out.ok();
        }
        // Save the keyspace and load it back (the test suites use it to
        // check that everything survives a restart).
        b"reload" => {
            let set = ctx.set.clone();
            match crate::persist::debug_reload(ctx.t, &set) {
                Ok(()) => ctx.out.ok(),
                Err(e) => ctx
                    .out
                    .error(&format!("ERR Error trying to load the snapshot: {e}")),
            }
        }
        // An order-independent digest of the whole keyspace (40 hex digits
        // as Redis prints; all zeros when empty). The values differ from
        // Redis's: it compares two anykv keyspaces, not anykv with Redis.
        b"digest" if argc == 2 => {
            let hex: String = if ctx.t.ks.total_keys() == 0 {
                "0".repeat(40)
            } else {
                ctx.t.ks.digest()[..20]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            ctx.out.simple(&hex);
        }
        b"set-active-expire" if argc == 3 => {
            let Some(v) = parse_i64(ctx.args[2]) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            ctx.t.active_expire = v != 0;
            ctx.out.ok();
        }
        b"object" if argc == 3 => {
            let db = ctx.s.db;
            let Some(idx) = ctx.lookup_notouch(db, ctx.args[2]) else {
                return ctx.err(errors::NO_SUCH_KEY);
            };
            let e = ctx.db().entry(idx);
            let len = e.value.as_str().map_or(0, |s| s.len());
            let lru = e.lru;
            let enc = e.value.encoding();
            let ptr = e as *const _ as usize;
            let idle = super::lru_clock(ctx.now_ms).wrapping_sub(lru) & 0x00FF_FFFF;
            let line = format!(
                "Value at:0x{ptr:x} refcount:1 encoding:{enc} serializedlength:{len} lru:{lru} lru_seconds_idle:{idle}"
            );
            ctx.out.simple(&line);
        }
        b"populate" if (3..=5).contains(&argc) => populate(ctx),
        b"help" if argc == 2 => super::command::reply_help(
            ctx,
            "DEBUG",
            &[
                "OBJECT <key>",
                "    Show low level info about the key and associated value.",
                "POPULATE <count> [<prefix>] [<size>]",
                "    Create <count> string keys named key:<num>. If <prefix> is specified then",
                "    it is used instead of the 'key' prefix. These are not propagated to",
                "    replicas. Cluster slots are not respected so keys not belonging to the",
                "    current node can be created in cluster mode.",
                "SET-ACTIVE-EXPIRE <0|1>",
                "    Setting it to 0 disables expiring keys in background when they are not",
                "    accessed (otherwise the Redis behavior). Setting it to 1 reenables back the",
                "    default.",
                "SLEEP <seconds>",
                "    Stop the server for <seconds>. Decimals allowed.",
            ],
        ),
        _ => subcommand_syntax_error(ctx),
    }
}

/// DEBUG POPULATE count [prefix] [size]: keys `prefix:N` with values
/// `value:N` (zero-padded to `size`). Unlike Redis we log the writes, so a
/// replica or the append-only file never diverges from the primary.
fn populate(ctx: &mut Ctx) {
    let positive = |ctx: &mut Ctx, a: &[u8]| -> Option<i64> {
        match parse_i64(a) {
            None => {
                ctx.err(errors::NOT_INTEGER);
                None
            }
            Some(v) if v < 0 => {
                ctx.err("value is out of range, must be positive");
                None
            }
            Some(v) => Some(v),
        }
    };
    let Some(count) = positive(ctx, ctx.args[2]) else {
        return;
    };
    let size = if ctx.args.len() == 5 {
        match positive(ctx, ctx.args[4]) {
            Some(v) => v as usize,
            None => return,
        }
    } else {
        0
    };
    let prefix: Vec<u8> = if ctx.args.len() >= 4 {
        ctx.args[3].to_vec()
    } else {
        b"key".to_vec()
    };
    let mut key = Vec::with_capacity(prefix.len() + 21);
    let mut val = Vec::with_capacity(size.max(26));
    for j in 0..count {
        key.clear();
        key.extend_from_slice(&prefix);
        key.push(b':');
        key.extend_from_slice(j.to_string().as_bytes());
        if ctx.lookup_write(&key).is_some() {
            continue;
        }
        val.clear();
        val.extend_from_slice(b"value:");
        val.extend_from_slice(j.to_string().as_bytes());
        if size > 0 {
            val.resize(size, 0);
        }
        ctx.set_key(&key, Value::plain(&val), false);
        ctx.propagate(&[b"SET", &key, &val]);
    }
    ctx.out.ok();
}
