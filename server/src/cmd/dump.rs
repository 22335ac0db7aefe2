//! DUMP and RESTORE: a key's value in Redis's serialized form (the RDB
//! codec, `crate::rdb`), so values move between anykv and redis-server
//! both ways (migration tools use them).

use super::{errors, Ctx, NOTIFY_GENERIC};
use crate::util::parse_i64;

/// `DUMP key`: the payload, or nil.
pub fn dump(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let payload = ctx
        .lookup_read(key)
        .map(|idx| crate::rdb::write::dump_value(&ctx.db().entry(idx).value));
    match payload {
        Some(p) => ctx.out.bulk(&p),
        None => ctx.out.null(),
    }
}

/// `RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds]
/// [FREQ frequency]`, in Redis 7.0's order of checks.
pub fn restore(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq): (Option<i64>, Option<i64>) = (None, None);
    let mut j = 4;
    while j < ctx.args.len() {
        let a = ctx.args[j];
        let more = ctx.args.len() - j - 1;
        if a.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if a.eq_ignore_ascii_case(b"absttl") {
            absttl = true;
        } else if a.eq_ignore_ascii_case(b"idletime") && more >= 1 && freq.is_none() {
            let Some(n) = parse_i64(ctx.args[j + 1]) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            if n < 0 {
                return ctx.err("Invalid IDLETIME value, must be >= 0");
            }
            idle = Some(n);
            j += 1;
        } else if a.eq_ignore_ascii_case(b"freq") && more >= 1 && idle.is_none() {
            let Some(n) = parse_i64(ctx.args[j + 1]) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            if !(0..=255).contains(&n) {
                return ctx.err("Invalid FREQ value, must be >= 0 and <= 255");
            }
            freq = Some(n);
            j += 1;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    if !replace && ctx.lookup_write(key).is_some() {
        return ctx.error("BUSYKEY Target key name already exists.");
    }
    let Some(ttl) = parse_i64(ctx.args[2]) else {
        return ctx.err(errors::NOT_INTEGER);
    };
    if ttl < 0 {
        return ctx.err("Invalid TTL value, must be >= 0");
    }
    let Some(body) = crate::rdb::read::dump_body(ctx.args[3]) else {
        return ctx.err("DUMP payload version or checksum are wrong");
    };
    let th = crate::persist::codec::Thresholds::from_settings(ctx.set);
    let Some(value) = crate::rdb::read::dump_value(body, &th) else {
        return ctx.err("Bad data format");
    };
    let deleted = replace && ctx.delete_key(key);
    let at = if ttl > 0 && !absttl {
        ttl.saturating_add(ctx.now_ms)
    } else {
        ttl
    };
    if at > 0 && ctx.already_expired(at) {
        // Restored already expired: it is not created, and the key it
        // replaced is gone.
        if deleted {
            ctx.propagate(&[b"DEL", key]);
            ctx.notify(NOTIFY_GENERIC, "del", key);
        }
        return ctx.out.ok();
    }
    let idx = ctx.set_key(key, value, false);
    if at > 0 {
        ctx.db().set_expire(idx, at);
    }
    let lru = match (idle, freq, ctx.t.lfu.is_some()) {
        (Some(secs), _, false) => Some(crate::evict::lru_clock(
            ctx.now_ms.saturating_sub(secs.saturating_mul(1000)),
        )),
        (_, Some(f), true) => Some((crate::evict::lfu_new(ctx.now_ms) & !0xff) | f as u32),
        _ => None,
    };
    if let Some(lru) = lru {
        ctx.db().entry_mut(idx).lru = lru;
    }
    // Logged with the TTL made absolute, as Redis rewrites it.
    if at > 0 && !absttl {
        let abs = at.to_string();
        let mut args: Vec<&[u8]> = ctx.args.to_vec();
        args[2] = abs.as_bytes();
        args.push(b"ABSTTL");
        ctx.propagate(&args);
    } else {
        ctx.propagate_as_is();
    }
    ctx.notify(NOTIFY_GENERIC, "restore", key);
    ctx.out.ok();
}
