//! HyperLogLog: PFADD, PFCOUNT, PFMERGE and PFDEBUG, as Redis 7.0
//! answers them. The values are Redis's own strings (`crate::hll`), so
//! GET/SET, DUMP/RESTORE and replication carry them both ways.

use super::{Ctx, NOTIFY_STRING};
use crate::db::Value;
use crate::hll;
use crate::sds::GrowBuf;

/// The HyperLogLog at `key` for writing (created empty if missing, and
/// whether it was); `None` after an error reply.
fn hll_for_write<'c>(ctx: &'c mut Ctx, key: &[u8]) -> Option<(&'c mut GrowBuf, bool)> {
    let (idx, created) = match ctx.lookup_write(key) {
        Some(idx) => {
            match ctx.db().entry(idx).value.as_str() {
                None => {
                    ctx.wrongtype();
                    return None;
                }
                Some(s) if !hll::is_hll(s) => {
                    ctx.error(hll::WRONGTYPE);
                    return None;
                }
                Some(_) => {}
            }
            (idx, false)
        }
        None => (ctx.set_key(key, Value::raw_vec(hll::new()), false), true),
    };
    let v = ctx.db().entry_mut(idx).value.str_mut_raw()?;
    Some((v, created))
}

/// Checks `key` (missing is fine) and raises `max` to its registers;
/// false after an error reply. Returns whether it is dense.
fn merge_key(ctx: &mut Ctx, key: &[u8], max: &mut [u8; hll::REGISTERS]) -> Option<bool> {
    let Some(idx) = ctx.lookup_read(key) else {
        return Some(false);
    };
    let Some(s) = ctx.db().entry(idx).value.as_str() else {
        ctx.wrongtype();
        return None;
    };
    if !hll::is_hll(s) {
        ctx.error(hll::WRONGTYPE);
        return None;
    }
    let dense = hll::is_dense(s);
    if hll::merge_into(max, s).is_err() {
        ctx.error(hll::INVALID);
        return None;
    }
    Some(dense)
}

/// `PFADD key [element ...]`: 1 if a register changed (or the key was
/// made), else 0.
pub fn pfadd(ctx: &mut Ctx) {
    let max_bytes = ctx.set.hll_sparse_max_bytes;
    let key = ctx.args[1];
    let elements = &ctx.args[2..];
    let Some((v, created)) = hll_for_write(ctx, key) else {
        return;
    };
    let mut updated = created;
    for e in elements {
        match hll::add(v, e, max_bytes) {
            Ok(true) => updated = true,
            Ok(false) => {}
            Err(_) => return ctx.error(hll::INVALID),
        }
    }
    if updated {
        hll::mark_changed(v);
        ctx.propagate_as_is();
        ctx.notify(NOTIFY_STRING, "pfadd", key);
    }
    ctx.out.int(i64::from(updated));
}

/// `PFCOUNT key [key ...]`: the estimated cardinality (of the union of
/// several). One key's estimate is cached in its header, as Redis does
/// (a change of the value, propagated as the PFCOUNT itself; not on a
/// replica, whose data only its primary changes).
pub fn pfcount(ctx: &mut Ctx) {
    if ctx.args.len() > 2 {
        let mut max = [0u8; hll::REGISTERS];
        for i in 1..ctx.args.len() {
            if merge_key(ctx, ctx.args[i], &mut max).is_none() {
                return;
            }
        }
        ctx.out.int(hll::count_raw(&max) as i64);
        return;
    }
    let key = ctx.args[1];
    let Some(idx) = ctx.lookup_read(key) else {
        return ctx.out.int(0);
    };
    let replica = ctx.t.role == crate::repl::Role::Replica && !ctx.s.replaying;
    let Some(s) = ctx.db().entry(idx).value.as_str() else {
        return ctx.wrongtype();
    };
    if !hll::is_hll(s) {
        return ctx.error(hll::WRONGTYPE);
    }
    if let Some(card) = hll::cached(s) {
        return ctx.out.int(card as i64);
    }
    let Ok(card) = hll::count(s) else {
        return ctx.error(hll::INVALID);
    };
    if !replica {
        if let Some(v) = ctx.db().entry_mut(idx).value.str_mut_raw() {
            hll::set_cached(v, card);
        }
        ctx.propagate_as_is();
    }
    ctx.out.int(card as i64);
}

/// `PFMERGE destkey [sourcekey ...]`: the union into `destkey` (itself
/// included), dense if any input was.
pub fn pfmerge(ctx: &mut Ctx) {
    let max_bytes = ctx.set.hll_sparse_max_bytes;
    let mut max = [0u8; hll::REGISTERS];
    let mut dense = false;
    for i in 1..ctx.args.len() {
        match merge_key(ctx, ctx.args[i], &mut max) {
            None => return,
            Some(d) => dense |= d,
        }
    }
    let key = ctx.args[1];
    let Some((v, _)) = hll_for_write(ctx, key) else {
        return;
    };
    if hll::store(v, &max, dense, max_bytes).is_err() {
        return ctx.error(hll::INVALID);
    }
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_STRING, "pfadd", key);
    ctx.out.ok();
}

/// `PFDEBUG <subcommand> key`: GETREG (the registers, the value made
/// dense first), DECODE, ENCODING, TODENSE, as Redis 7.0.
pub fn pfdebug(ctx: &mut Ctx) {
    let sub = ctx.args[1].to_ascii_lowercase();
    let key = ctx.args[2];
    let Some(idx) = ctx.lookup_write(key) else {
        return ctx.err("The specified key does not exist");
    };
    match ctx.db().entry(idx).value.as_str() {
        None => return ctx.wrongtype(),
        Some(s) if !hll::is_hll(s) => return ctx.error(hll::WRONGTYPE),
        Some(_) => {}
    }
    match &sub[..] {
        b"getreg" | b"todense" => {
            let Some(v) = ctx.db().entry_mut(idx).value.str_mut_raw() else {
                return;
            };
            let was_dense = hll::is_dense(v);
            if !hll::to_dense(v) {
                return ctx.error(hll::INVALID);
            }
            let regs = hll::registers(v);
            if !was_dense {
                ctx.propagate_as_is();
            }
            if &sub[..] == b"getreg" {
                ctx.out.array(regs.len());
                for r in regs {
                    ctx.out.int(r as i64);
                }
            } else {
                ctx.out.int(i64::from(!was_dense));
            }
        }
        b"decode" => {
            let text = ctx.db().entry(idx).value.as_str().and_then(hll::decode);
            match text {
                Some(t) => ctx.out.bulk(t.as_bytes()),
                None => ctx.err("HLL encoding is not sparse"),
            }
        }
        b"encoding" => {
            let dense = ctx
                .db()
                .entry(idx)
                .value
                .as_str()
                .is_some_and(hll::is_dense);
            ctx.out.simple(if dense { "dense" } else { "sparse" });
        }
        _ => {
            let mut msg = b"Unknown PFDEBUG subcommand '".to_vec();
            msg.extend_from_slice(ctx.args[1]);
            msg.push(b'\'');
            ctx.err_bytes(&msg);
        }
    }
}

/// `PFSELFTEST`: the HyperLogLog code's own checks (`hll::selftest`),
/// with ten million elements as Redis runs them; `OK` or `TESTFAILED`.
pub fn pfselftest(ctx: &mut Ctx) {
    let seed = crate::util::ustime() as u64;
    match hll::selftest(seed, 10_000_000, ctx.set.hll_sparse_max_bytes) {
        Ok(()) => ctx.out.simple("OK"),
        Err(e) => ctx.error(&e),
    }
}
