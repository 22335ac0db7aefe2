//! Sorted-set commands (Redis 7.0's t_zset.c): ZADD and friends, ranks and
//! ranges (by rank, score and lex, with ZRANGESTORE), range removals, pops
//! (ZPOPMIN/ZPOPMAX/ZMPOP; [`first_zset_key`], [`pop_generic`],
//! [`zset_len`] and [`parse_mpop`] are the API of the blocking variants
//! BZPOPMIN/BZPOPMAX/BZMPOP), ZRANDMEMBER, the set operations
//! (ZUNION/ZINTER/ZDIFF, their STORE forms and ZINTERCARD) and ZSCAN.
//!
//! Replies, error texts and the order of checks follow Redis 7.0.15 (every
//! argument is parsed before the key is looked up, except where Redis does
//! otherwise). Effects on the propagation log:
//!
//! * ZADD/ZREM/ZREMRANGEBYRANK/ZREMRANGEBYSCORE as received (deterministic),
//!   and only when something changed; ZADD ... INCR and ZINCRBY as `ZADD key
//!   <new score> member`, so replicas never redo float arithmetic;
//!   ZREMRANGEBYLEX as `ZREM key <removed members>` (over members with
//!   different scores its choice depends on the encoding and on a
//!   skiplist's random levels, and SORT changes encodings unlogged);
//! * pops as `ZREM key <members>` (what was removed);
//! * ZRANGESTORE, ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE as the stored result:
//!   `DEL dst` (if it existed) then `ZADD dst <score member>...` in chunks,
//!   or only `DEL dst` for an empty result.
//!
//! Scores are replied with `Reply::double` (RESP2 bulk "%.17g", "inf",
//! "-inf"; RESP3 double), except in ZSCAN where Redis replies them as bulk
//! strings in both protocols.

use super::{errors, keys::parse_cursor, Ctx, Replied, NOTIFY_GENERIC, NOTIFY_ZSET};
use crate::db::set::Set;
use crate::db::zset::{
    listpack_score_text, AddResult, LexBound, LexRange, Limits, ScoreRange, ZSet, ZADD_GT,
    ZADD_INCR, ZADD_LT, ZADD_NX, ZADD_XX,
};
use crate::db::{Kind, Value};
use crate::tenant::Tenant;
use crate::util::{fmt_f64, glob_match, parse_f64, parse_i64};

const NAN_ERR: &str = "resulting score is not a number (NaN)";
const NOT_FLOAT_RANGE: &str = "min or max is not a float";
const NOT_LEX_RANGE: &str = "min or max not valid string range item";
/// Pairs per propagated ZADD when a stored result is logged.
const ZADD_CHUNK: usize = 512;
/// Most elements a negative-count ZRANDMEMBER may return. Redis has no
/// limit and builds the reply until memory runs out (taking every tenant of
/// the node with it here); like HRANDFIELD and SRANDMEMBER, anykv replies
/// "value is out of range" instead (an intended difference).
const MAX_RANDOM_REPLY: u64 = 1 << 24;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The listpack thresholds, read once per command.
pub fn limits(ctx: &Ctx) -> Limits {
    Limits {
        max_entries: ctx.set.zset_max_listpack_entries,
        max_value: ctx.set.zset_max_listpack_value,
    }
}

/// Redis's `getRangeLongFromObjectOrReply`: with `msg` every failure
/// replies it; without, the generic texts.
fn range_long(ctx: &mut Ctx, i: usize, min: i64, max: i64, msg: Option<&str>) -> Option<i64> {
    match parse_i64(ctx.args[i]) {
        None => {
            ctx.err(msg.unwrap_or(errors::NOT_INTEGER));
            None
        }
        Some(v) if v < min || v > max => {
            match msg {
                Some(m) => ctx.err(m),
                None => ctx.err(&format!(
                    "value is out of range, value must between {min} and {max}"
                )),
            }
            None
        }
        Some(v) => Some(v),
    }
}

/// Redis's `getPositiveLongFromObjectOrReply`.
fn positive_long(ctx: &mut Ctx, i: usize, msg: Option<&str>) -> Option<i64> {
    range_long(
        ctx,
        i,
        0,
        i64::MAX,
        Some(msg.unwrap_or("value is out of range, must be positive")),
    )
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C's `strtod` over an argument as Redis passes it (a NUL-terminated
/// string), accepted only if it consumed everything: the value and
/// whether `errno` would be ERANGE. An empty string converts nothing but
/// ends at the NUL, so it is 0; leading white space is skipped.
pub fn c_strtod(s: &[u8]) -> Option<(f64, bool)> {
    let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
    if s.is_empty() {
        return Some((0.0, false));
    }
    let t = &s[s.iter().position(|&c| !is_c_space(c))?..];
    if let Some(v) = parse_f64(t) {
        // glibc flags inexact subnormal results with ERANGE.
        let subnormal = v != 0.0 && v.abs() < f64::MIN_POSITIVE;
        return Some((v, subnormal));
    }
    // Only overflow (±HUGE_VAL) and underflow (0) remain valid for strtod.
    let st = std::str::from_utf8(t).ok()?;
    match st.parse::<f64>() {
        Ok(v) if v.is_infinite() || v == 0.0 => Some((v, true)),
        _ => None,
    }
}

/// Redis's `zslParseRange` for one end: `(` makes it exclusive.
fn score_item(a: &[u8]) -> Option<(f64, bool)> {
    let (ex, body) = match a.first() {
        Some(b'(') => (true, &a[1..]),
        _ => (false, a),
    };
    let (v, _) = c_strtod(body)?;
    (!v.is_nan()).then_some((v, ex))
}

/// Parses a score range (`min or max is not a float` on failure).
pub fn parse_score_range(min: &[u8], max: &[u8]) -> Option<ScoreRange> {
    let (min, minex) = score_item(min)?;
    let (max, maxex) = score_item(max)?;
    Some(ScoreRange {
        min,
        max,
        minex,
        maxex,
    })
}

/// Redis's `zslParseLexRangeItem`.
fn lex_item(a: &[u8]) -> Option<(LexBound, bool)> {
    let alone = a.len() == 1 || a.get(1) == Some(&0);
    match a.first() {
        Some(b'+') if alone => Some((LexBound::Max, true)),
        Some(b'-') if alone => Some((LexBound::Min, true)),
        Some(b'(') => Some((LexBound::Str(a[1..].to_vec()), true)),
        Some(b'[') => Some((LexBound::Str(a[1..].to_vec()), false)),
        _ => None,
    }
}

/// Parses a lex range (`min or max not valid string range item`).
pub fn parse_lex_range(min: &[u8], max: &[u8]) -> Option<LexRange> {
    let (min, minex) = lex_item(min)?;
    let (max, maxex) = lex_item(max)?;
    Some(LexRange {
        min,
        minex,
        max,
        maxex,
    })
}

/// Looks a key up for reading: `Ok(Some(idx))` for a sorted set,
/// `Ok(None)` if missing, `Err` after replying WRONGTYPE.
fn read_zset(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::ZSet, true)
}

fn write_zset(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::ZSet, false)
}

pub(crate) fn zset_in(t: &Tenant, db: usize, idx: u32) -> Option<&ZSet> {
    t.ks.dbs[db].entry(idx).value.as_zset()
}

/// The sorted set at `idx` in the current db, borrowing only `ctx.t` (so
/// `ctx.out` stays writable).
macro_rules! zset_of {
    ($ctx:expr, $idx:expr) => {
        zset_in($ctx.t, $ctx.s.db, $idx)
    };
}

fn zset_mut<'c>(ctx: &'c mut Ctx, idx: u32) -> Option<&'c mut ZSet> {
    ctx.db().entry_mut(idx).value.as_zset_mut()
}

/// Writes (member, score) results as Redis's range replies do: a flat
/// array (with scores interleaved in RESP2) or, with scores in RESP3, an
/// array of [member, score] pairs.
fn reply_entries(out: &mut crate::resp::Reply, items: &[(&[u8], f64)], withscores: bool) {
    if withscores && out.resp == 2 {
        out.array(items.len() * 2);
    } else {
        out.array(items.len());
    }
    for (m, s) in items {
        if withscores && out.resp > 2 {
            out.array(2);
        }
        out.bulk(m);
        if withscores {
            out.double(*s);
        }
    }
}

/// Stores `entries` (unique members) at `dst` as the result of a STORE
/// command, or deletes `dst` when empty; replies the count, notifies and
/// propagates the result. `event` is the keyspace event of a non-empty
/// result.
pub(crate) fn store_result(ctx: &mut Ctx, dst: &[u8], entries: Vec<(Vec<u8>, f64)>, event: &str) {
    let existed = ctx.lookup_write(dst).is_some();
    if entries.is_empty() {
        ctx.out.int(0);
        if existed {
            ctx.delete_key(dst);
            ctx.notify(NOTIFY_GENERIC, "del", dst);
            ctx.propagate(&[b"DEL", dst]);
        }
        return;
    }
    let lim = limits(ctx);
    let n = entries.len();
    let z = ZSet::from_entries(entries, &lim);
    let (log, fixups) = store_log(&z, &lim);
    ctx.set_key(dst, Value::ZSet(Box::new(z)), false);
    ctx.out.int(n as i64);
    ctx.notify(NOTIFY_ZSET, event, dst);
    if existed {
        ctx.propagate(&[b"DEL", dst]);
    }
    for chunk in log.chunks(ZADD_CHUNK) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * chunk.len());
        args.push(b"ZADD");
        args.push(dst);
        for (m, s) in chunk {
            args.push(s.as_bytes());
            args.push(m);
        }
        ctx.propagate(&args);
    }
    for chunk in fixups.chunks(ZADD_CHUNK) {
        let mut args: Vec<&[u8]> = vec![b"ZREM", dst];
        args.extend(chunk.iter().map(|m| &m[..]));
        ctx.propagate(&args);
        let mut args: Vec<&[u8]> = vec![b"ZADD", dst];
        for m in chunk {
            args.push(b"-0");
            args.push(m);
        }
        ctx.propagate(&args);
    }
}

/// A stored result's ZADD log: (member, formatted score) pairs, then the
/// members to re-add with -0.
type StoreLog = (Vec<(Vec<u8>, String)>, Vec<Vec<u8>>);

/// The ZADD log of a stored set, replaying to the same value *and*
/// encoding: (member, score) in logging order, plus members to re-add with
/// score -0 once the replayed set is a skiplist. A listpack stores -0 as 0
/// while a skiplist keeps it, so for a skiplist result the log creates the
/// key with a member too long for a listpack when there is one (a skiplist
/// from the start), else logs the -0 members last and re-adds those that
/// were still inserted into the listpack.
fn store_log(z: &ZSet, lim: &Limits) -> StoreLog {
    let neg_zero = |s: f64| s == 0.0 && s.is_sign_negative();
    let mut entries: Vec<(&[u8], f64)> = z.iter().collect();
    let mut fixups = Vec::new();
    if z.encoding() == "skiplist" && entries.iter().any(|e| neg_zero(e.1)) {
        if let Some(i) = entries.iter().position(|e| e.0.len() > lim.max_value) {
            let long = entries.remove(i);
            entries.insert(0, long);
        } else {
            entries.sort_by_key(|e| neg_zero(e.1));
            for (i, e) in entries.iter().enumerate() {
                if neg_zero(e.1) && i < lim.max_entries {
                    fixups.push(e.0.to_vec());
                }
            }
        }
    }
    let log = entries
        .into_iter()
        .map(|(m, s)| (m.to_vec(), fmt_f64(s)))
        .collect();
    (log, fixups)
}

/// Deletes the key if its set became empty; returns true if it did.
fn delete_if_empty(ctx: &mut Ctx, key: &[u8], idx: u32) -> bool {
    if zset_of!(ctx, idx).is_some_and(|z| z.is_empty()) {
        ctx.db().remove_at(idx);
        ctx.notify(NOTIFY_GENERIC, "del", key);
        return true;
    }
    false
}

/// Redis's rank normalisation (ZRANGE, ZREMRANGEBYRANK): `None` when empty.
fn norm_rank(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut end = if end < 0 { end + len } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return None;
    }
    if end >= len {
        end = len - 1;
    }
    Some((start as usize, end as usize))
}

// ---------------------------------------------------------------------------
// ZADD, ZINCRBY, ZREM, reads of one member
// ---------------------------------------------------------------------------

fn zadd_generic(ctx: &mut Ctx, mut flags: u8) {
    let argc = ctx.args.len();
    let mut ch = false;
    let mut i = 2;
    while i < argc {
        let o = ctx.args[i];
        if o.eq_ignore_ascii_case(b"nx") {
            flags |= ZADD_NX;
        } else if o.eq_ignore_ascii_case(b"xx") {
            flags |= ZADD_XX;
        } else if o.eq_ignore_ascii_case(b"ch") {
            ch = true;
        } else if o.eq_ignore_ascii_case(b"incr") {
            flags |= ZADD_INCR;
        } else if o.eq_ignore_ascii_case(b"gt") {
            flags |= ZADD_GT;
        } else if o.eq_ignore_ascii_case(b"lt") {
            flags |= ZADD_LT;
        } else {
            break;
        }
        i += 1;
    }
    let (incr, nx, xx) = (
        flags & ZADD_INCR != 0,
        flags & ZADD_NX != 0,
        flags & ZADD_XX != 0,
    );
    let (gt, lt) = (flags & ZADD_GT != 0, flags & ZADD_LT != 0);
    let elements = argc - i;
    if !elements.is_multiple_of(2) || elements == 0 {
        return ctx.syntax_error();
    }
    let elements = elements / 2;
    if nx && xx {
        return ctx.err("XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return ctx.err("GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && elements > 1 {
        return ctx.err("INCR option supports a single increment-element pair");
    }
    let mut scores = Vec::with_capacity(elements);
    for j in 0..elements {
        match parse_f64(ctx.args[i + 2 * j]) {
            Some(s) => scores.push(s),
            None => return ctx.err(errors::NOT_FLOAT),
        }
    }
    let key = ctx.args[1];
    let lim = limits(ctx);
    let idx = match write_zset(ctx, key) {
        Err(_) => return,
        Ok(Some(idx)) => idx,
        Ok(None) if xx => {
            return if incr { ctx.out.null() } else { ctx.out.int(0) };
        }
        Ok(None) => {
            let z = ZSet::new_for(ctx.args[i + 1].len(), &lim);
            ctx.set_key(key, Value::ZSet(Box::new(z)), false)
        }
    };
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0i64);
    let mut score = 0.0;
    let mut nan = false;
    let args = ctx.args;
    if let Some(z) = zset_mut(ctx, idx) {
        for (j, &s) in scores.iter().enumerate() {
            let r = z.add(args[i + 1 + 2 * j], s, flags, &lim);
            match r {
                AddResult::Nan => {
                    nan = true;
                    break;
                }
                AddResult::Added(_) => added += 1,
                AddResult::Updated(_) => updated += 1,
                _ => {}
            }
            if let Some(ns) = r.score() {
                processed += 1;
                score = ns;
            }
        }
    }
    if nan {
        ctx.err(NAN_ERR);
    } else if incr {
        if processed > 0 {
            ctx.out.double(score);
        } else {
            ctx.out.null();
        }
    } else {
        ctx.out.int(if ch { added + updated } else { added });
    }
    if added + updated > 0 {
        ctx.notify(NOTIFY_ZSET, if incr { "zincr" } else { "zadd" }, key);
        if incr {
            let s = fmt_f64(score);
            ctx.propagate(&[b"ZADD", key, s.as_bytes(), args[i + 1]]);
        } else {
            ctx.propagate_as_is();
        }
    } else if zset_of!(ctx, idx).is_some_and(|z| z.is_empty()) {
        // A key created for nothing (cannot normally happen) is not kept.
        ctx.db().remove_at(idx);
    }
}

pub fn zadd(ctx: &mut Ctx) {
    zadd_generic(ctx, 0);
}

pub fn zincrby(ctx: &mut Ctx) {
    zadd_generic(ctx, ZADD_INCR);
}

pub fn zrem(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let idx = match write_zset(ctx, key) {
        Err(_) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let args = ctx.args;
    let mut deleted = 0;
    let mut emptied = false;
    if let Some(z) = zset_mut(ctx, idx) {
        for m in &args[2..] {
            if z.remove(m) {
                deleted += 1;
            }
            if z.is_empty() {
                emptied = true;
                break;
            }
        }
    }
    if deleted > 0 {
        ctx.notify(NOTIFY_ZSET, "zrem", key);
        if emptied {
            ctx.db().remove_at(idx);
            ctx.notify(NOTIFY_GENERIC, "del", key);
        }
        ctx.propagate_as_is();
    }
    ctx.out.int(deleted);
}

pub fn zcard(ctx: &mut Ctx) {
    match read_zset(ctx, ctx.args[1]) {
        Err(_) => {}
        Ok(None) => ctx.out.int(0),
        Ok(Some(idx)) => {
            let n = zset_of!(ctx, idx).map_or(0, |z| z.len());
            ctx.out.int(n as i64)
        }
    }
}

pub fn zscore(ctx: &mut Ctx) {
    match read_zset(ctx, ctx.args[1]) {
        Err(_) => {}
        Ok(None) => ctx.out.null(),
        Ok(Some(idx)) => match zset_of!(ctx, idx).and_then(|z| z.score(ctx.args[2])) {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        },
    }
}

pub fn zmscore(ctx: &mut Ctx) {
    let Ok(idx) = read_zset(ctx, ctx.args[1]) else {
        return;
    };
    let scores: Vec<Option<f64>> = ctx.args[2..]
        .iter()
        .map(|m| idx.and_then(|i| zset_of!(ctx, i)).and_then(|z| z.score(m)))
        .collect();
    ctx.out.array(scores.len());
    for s in scores {
        match s {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
}

fn zrank_generic(ctx: &mut Ctx, rev: bool) {
    match read_zset(ctx, ctx.args[1]) {
        Err(_) => {}
        Ok(None) => ctx.out.null(),
        Ok(Some(idx)) => match zset_of!(ctx, idx).and_then(|z| z.rank(ctx.args[2], rev)) {
            Some(r) => ctx.out.int(r as i64),
            None => ctx.out.null(),
        },
    }
}

pub fn zrank(ctx: &mut Ctx) {
    zrank_generic(ctx, false);
}

pub fn zrevrank(ctx: &mut Ctx) {
    zrank_generic(ctx, true);
}

pub fn zcount(ctx: &mut Ctx) {
    let Some(r) = parse_score_range(ctx.args[2], ctx.args[3]) else {
        return ctx.err(NOT_FLOAT_RANGE);
    };
    match read_zset(ctx, ctx.args[1]) {
        Err(_) => {}
        Ok(None) => ctx.out.int(0),
        Ok(Some(idx)) => {
            let n = zset_of!(ctx, idx).map_or(0, |z| z.count_in_score(&r));
            ctx.out.int(n as i64)
        }
    }
}

pub fn zlexcount(ctx: &mut Ctx) {
    let Some(r) = parse_lex_range(ctx.args[2], ctx.args[3]) else {
        return ctx.err(NOT_LEX_RANGE);
    };
    match read_zset(ctx, ctx.args[1]) {
        Err(_) => {}
        Ok(None) => ctx.out.int(0),
        Ok(Some(idx)) => {
            let n = zset_of!(ctx, idx).map_or(0, |z| z.count_in_lex(&r));
            ctx.out.int(n as i64)
        }
    }
}

// ---------------------------------------------------------------------------
// ZRANGE and friends
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeType {
    Auto,
    Rank,
    Score,
    Lex,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Auto,
    Forward,
    Reverse,
}

enum Range {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// Redis's `zrangeGenericCommand`: `store` is ZRANGESTORE's destination.
fn zrange_generic(
    ctx: &mut Ctx,
    argc_start: usize,
    store: Option<&[u8]>,
    mut rangetype: RangeType,
    mut direction: Direction,
) {
    let args = ctx.args;
    let key = args[argc_start];
    let mut minidx = argc_start + 1;
    let mut maxidx = argc_start + 2;
    let mut withscores = false;
    let mut offset = 0i64;
    let mut limit = -1i64;
    let mut j = argc_start + 3;
    while j < args.len() {
        let left = args.len() - j - 1;
        let o = args[j];
        if store.is_none() && o.eq_ignore_ascii_case(b"withscores") {
            withscores = true;
        } else if o.eq_ignore_ascii_case(b"limit") && left >= 2 {
            let Some(off) = ctx.arg_i64(j + 1) else {
                return;
            };
            let Some(lim) = ctx.arg_i64(j + 2) else {
                return;
            };
            offset = off;
            limit = lim;
            j += 2;
        } else if direction == Direction::Auto && o.eq_ignore_ascii_case(b"rev") {
            direction = Direction::Reverse;
        } else if rangetype == RangeType::Auto && o.eq_ignore_ascii_case(b"bylex") {
            rangetype = RangeType::Lex;
        } else if rangetype == RangeType::Auto && o.eq_ignore_ascii_case(b"byscore") {
            rangetype = RangeType::Score;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    if direction == Direction::Auto {
        direction = Direction::Forward;
    }
    if rangetype == RangeType::Auto {
        rangetype = RangeType::Rank;
    }
    if limit != -1 && rangetype == RangeType::Rank {
        return ctx.err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if withscores && rangetype == RangeType::Lex {
        return ctx.err("syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    let rev = direction == Direction::Reverse;
    if rev && rangetype != RangeType::Rank {
        std::mem::swap(&mut minidx, &mut maxidx);
    }
    let range = match rangetype {
        RangeType::Score => match parse_score_range(args[minidx], args[maxidx]) {
            Some(r) => Range::Score(r),
            None => return ctx.err(NOT_FLOAT_RANGE),
        },
        RangeType::Lex => match parse_lex_range(args[minidx], args[maxidx]) {
            Some(r) => Range::Lex(r),
            None => return ctx.err(NOT_LEX_RANGE),
        },
        _ => {
            let Some(s) = ctx.arg_i64(minidx) else {
                return;
            };
            let Some(e) = ctx.arg_i64(maxidx) else {
                return;
            };
            Range::Rank(s, e)
        }
    };
    let idx = match read_zset(ctx, key) {
        Err(_) => return,
        Ok(None) => {
            match store {
                Some(dst) => store_result(ctx, dst, Vec::new(), "zrangestore"),
                None => ctx.out.empty_array(),
            }
            return;
        }
        Ok(Some(i)) => i,
    };
    let Some(z) = zset_of!(ctx, idx) else {
        return ctx.out.empty_array();
    };
    let items = match &range {
        Range::Rank(s, e) => match norm_rank(*s, *e, z.len()) {
            Some((s, e)) => z.range_by_rank(s, e, rev),
            None => Vec::new(),
        },
        Range::Score(r) => z.range_by_score(r, rev, offset, limit),
        Range::Lex(r) => z.range_by_lex(r, rev, offset, limit),
    };
    match store {
        Some(dst) => {
            let owned: Vec<(Vec<u8>, f64)> = items.iter().map(|(m, s)| (m.to_vec(), *s)).collect();
            store_result(ctx, dst, owned, "zrangestore");
        }
        None => reply_entries(ctx.out, &items, withscores),
    }
}

pub fn zrange(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Auto, Direction::Auto);
}

pub fn zrangestore(ctx: &mut Ctx) {
    let dst = ctx.args[1];
    zrange_generic(ctx, 2, Some(dst), RangeType::Auto, Direction::Auto);
}

pub fn zrevrange(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Rank, Direction::Reverse);
}

pub fn zrangebyscore(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Score, Direction::Forward);
}

pub fn zrevrangebyscore(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Score, Direction::Reverse);
}

pub fn zrangebylex(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Lex, Direction::Forward);
}

pub fn zrevrangebylex(ctx: &mut Ctx) {
    zrange_generic(ctx, 1, None, RangeType::Lex, Direction::Reverse);
}

// ---------------------------------------------------------------------------
// ZREMRANGEBY*
// ---------------------------------------------------------------------------

fn zremrange_generic(ctx: &mut Ctx, rangetype: RangeType) {
    let (a, b) = (ctx.args[2], ctx.args[3]);
    let (range, event) = match rangetype {
        RangeType::Score => match parse_score_range(a, b) {
            Some(r) => (Range::Score(r), "zremrangebyscore"),
            None => return ctx.err(NOT_FLOAT_RANGE),
        },
        RangeType::Lex => match parse_lex_range(a, b) {
            Some(r) => (Range::Lex(r), "zremrangebylex"),
            None => return ctx.err(NOT_LEX_RANGE),
        },
        _ => {
            let Some(s) = ctx.arg_i64(2) else { return };
            let Some(e) = ctx.arg_i64(3) else { return };
            (Range::Rank(s, e), "zremrangebyrank")
        }
    };
    let key = ctx.args[1];
    let idx = match write_zset(ctx, key) {
        Err(_) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let Some(z) = zset_mut(ctx, idx) else {
        return ctx.out.int(0);
    };
    let mut lex_removed = Vec::new();
    let deleted = match &range {
        Range::Rank(s, e) => match norm_rank(*s, *e, z.len()) {
            Some((s, e)) => z.remove_range_by_rank(s, e),
            None => return ctx.out.int(0),
        },
        Range::Score(r) => z.remove_range_by_score(r),
        Range::Lex(r) => {
            lex_removed = z.remove_range_by_lex(r);
            lex_removed.len()
        }
    };
    if deleted > 0 {
        ctx.notify(NOTIFY_ZSET, event, key);
        delete_if_empty(ctx, key, idx);
        if let Range::Lex(_) = range {
            // What a lex range selects among different scores depends on
            // the encoding and, in a skiplist, on its random levels: log
            // the removed members.
            for chunk in lex_removed.chunks(ZADD_CHUNK) {
                let mut args: Vec<&[u8]> = vec![b"ZREM", key];
                args.extend(chunk.iter().map(|m| &m[..]));
                ctx.propagate(&args);
            }
        } else {
            ctx.propagate_as_is();
        }
    }
    ctx.out.int(deleted as i64);
}

pub fn zremrangebyrank(ctx: &mut Ctx) {
    zremrange_generic(ctx, RangeType::Rank);
}

pub fn zremrangebyscore(ctx: &mut Ctx) {
    zremrange_generic(ctx, RangeType::Score);
}

pub fn zremrangebylex(ctx: &mut Ctx) {
    zremrange_generic(ctx, RangeType::Lex);
}

// ---------------------------------------------------------------------------
// Pops
// ---------------------------------------------------------------------------

/// For the blocking pops: the index in `keys` of the first key that exists
/// (an existing sorted set is never empty), `Ok(None)` if none does, or
/// `Err` after replying WRONGTYPE for the first existing key of another
/// type — the checks Redis's `blockingGenericZpopCommand` makes before
/// deciding to block. Lazily expires keys as it goes.
pub fn first_zset_key(ctx: &mut Ctx, keys: &[&[u8]]) -> Result<Option<usize>, Replied> {
    for (i, &k) in keys.iter().enumerate() {
        if write_zset(ctx, k)?.is_some() {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// For serving a client blocked on `key`: the length of the sorted set at
/// `key`, or `None` if the key is missing or holds another type (nothing is
/// replied either way).
pub fn zset_len(ctx: &mut Ctx, key: &[u8]) -> Option<usize> {
    let idx = ctx.lookup_write(key)?;
    match &ctx.db().entry(idx).value {
        Value::ZSet(z) => Some(z.len()),
        _ => None,
    }
}

/// What [`pop_generic`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopOutcome {
    /// Replied WRONGTYPE for the first existing key that is not a sorted set.
    WrongType,
    /// None of the keys exists; replied nil (or an empty array, see
    /// `nil_when_empty`).
    NoKey,
    /// Popped from an existing key (or replied an empty array for
    /// `count == 0`); `deleted` if the key became empty and was removed.
    Popped { key_index: usize, deleted: bool },
}

/// Redis's `genericZpopCommand`: pops from the first key of `keys` that
/// exists, writing the reply, notifications and effects.
///
/// * `max`: ZPOPMAX side (highest scores) instead of ZPOPMIN;
/// * `emit_key`: the reply starts with the key name (BZPOPMIN/BZMPOP/ZMPOP);
/// * `count`: how many; `-1` means one, with the single-pop reply shape;
/// * `nested`: [member, score] pairs as nested arrays (ZMPOP, BZMPOP, and
///   ZPOPMIN with a count in RESP3); with `emit_key` the reply is then
///   `[key, [[m, s], ...]]`, else `[key, m, s, ...]` flat;
/// * `nil_when_empty`: reply a null array when no key exists (ZMPOP),
///   else an empty array (ZPOPMIN).
///
/// The blocking commands use [`first_zset_key`] to decide whether to block,
/// then call this with the one key they found (`BZPOPMIN k1 k2 0` →
/// `pop_generic(ctx, &[k], false, true, -1, false, false)`, reply
/// `[key, member, score]`; `BZMPOP 0 n keys MIN COUNT c` → `(ctx, &[k],
/// false, true, c, true, true)`, reply `[key, [[member, score], ...]]`);
/// serving a waiter: `zset_len(ctx, key) > 0` then the same call. The
/// effect is logged as `ZREM key members...` (Redis logs a ZPOPMIN/ZPOPMAX
/// of the same members), so WATCH and wake-ups see it like any write.
#[allow(clippy::too_many_arguments)]
pub fn pop_generic(
    ctx: &mut Ctx,
    keys: &[&[u8]],
    max: bool,
    emit_key: bool,
    count: i64,
    nested: bool,
    nil_when_empty: bool,
) -> PopOutcome {
    let mut found = None;
    for (ki, &k) in keys.iter().enumerate() {
        match write_zset(ctx, k) {
            Err(_) => return PopOutcome::WrongType,
            Ok(None) => continue,
            Ok(Some(idx)) => {
                found = Some((ki, k, idx));
                break;
            }
        }
    }
    let Some((key_index, key, idx)) = found else {
        if nil_when_empty {
            ctx.out.null_array();
        } else {
            ctx.out.empty_array();
        }
        return PopOutcome::NoKey;
    };
    if count == 0 {
        ctx.out.empty_array();
        return PopOutcome::Popped {
            key_index,
            deleted: false,
        };
    }
    let count = if count < 0 { 1 } else { count as u64 };
    let mut popped: Vec<(Vec<u8>, f64)> = Vec::new();
    if let Some(z) = zset_mut(ctx, idx) {
        let n = count.min(z.len() as u64) as usize;
        popped.reserve(n);
        for _ in 0..n {
            match z.pop(max) {
                Some(e) => popped.push(e),
                None => break,
            }
        }
    }
    let n = popped.len();
    match (nested, emit_key) {
        (false, false) => ctx.out.array(n * 2),
        (true, false) => ctx.out.array(n),
        (false, true) => {
            ctx.out.array(n * 2 + 1);
            ctx.out.bulk(key);
        }
        (true, true) => {
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.array(n);
        }
    }
    for (m, s) in &popped {
        if nested {
            ctx.out.array(2);
        }
        ctx.out.bulk(m);
        ctx.out.double(*s);
    }
    if n > 0 {
        ctx.notify(NOTIFY_ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
    }
    let deleted = delete_if_empty(ctx, key, idx);
    for chunk in popped.chunks(ZADD_CHUNK) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(2 + chunk.len());
        args.push(b"ZREM");
        args.push(key);
        args.extend(chunk.iter().map(|(m, _)| &m[..]));
        ctx.propagate(&args);
    }
    PopOutcome::Popped { key_index, deleted }
}

fn zpop_minmax(ctx: &mut Ctx, max: bool) {
    if ctx.args.len() > 3 {
        return ctx.syntax_error();
    }
    let mut count = -1;
    if ctx.args.len() == 3 {
        match positive_long(ctx, 2, None) {
            Some(c) => count = c,
            None => return,
        }
    }
    let nested = ctx.out.resp > 2 && count != -1;
    let key = ctx.args[1];
    pop_generic(ctx, &[key], max, false, count, nested, false);
}

pub fn zpopmin(ctx: &mut Ctx) {
    zpop_minmax(ctx, false);
}

pub fn zpopmax(ctx: &mut Ctx) {
    zpop_minmax(ctx, true);
}

/// Parsed `numkeys key... MIN|MAX [COUNT count]` of ZMPOP/BZMPOP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpopArgs {
    /// Argument indices of the keys.
    pub keys: std::ops::Range<usize>,
    pub max: bool,
    /// At least 1 (1 when COUNT is absent).
    pub count: i64,
}

/// Parses ZMPOP's arguments from `numkeys_idx` (1 for ZMPOP, 2 for
/// BZMPOP, whose timeout is argument 1), replying Redis's errors.
pub fn parse_mpop(ctx: &mut Ctx, numkeys_idx: usize) -> Option<MpopArgs> {
    let argc = ctx.args.len();
    let numkeys = range_long(
        ctx,
        numkeys_idx,
        1,
        i64::MAX,
        Some("numkeys should be greater than 0"),
    )?;
    let where_idx = (numkeys_idx as u64)
        .saturating_add(numkeys as u64)
        .saturating_add(1);
    if where_idx >= argc as u64 {
        ctx.syntax_error();
        return None;
    }
    let where_idx = where_idx as usize;
    let w = ctx.args[where_idx];
    let max = if w.eq_ignore_ascii_case(b"min") {
        false
    } else if w.eq_ignore_ascii_case(b"max") {
        true
    } else {
        ctx.syntax_error();
        return None;
    };
    let mut count = -1;
    let mut j = where_idx + 1;
    while j < argc {
        let more = argc - 1 - j;
        if count == -1 && ctx.args[j].eq_ignore_ascii_case(b"count") && more > 0 {
            j += 1;
            count = range_long(ctx, j, 1, i64::MAX, Some("count should be greater than 0"))?;
        } else {
            ctx.syntax_error();
            return None;
        }
        j += 1;
    }
    Some(MpopArgs {
        keys: numkeys_idx + 1..where_idx,
        max,
        count: if count == -1 { 1 } else { count },
    })
}

pub fn zmpop(ctx: &mut Ctx) {
    let Some(a) = parse_mpop(ctx, 1) else {
        return;
    };
    let keys: Vec<&[u8]> = ctx.args[a.keys].to_vec();
    pop_generic(ctx, &keys, a.max, true, a.count, true, true);
}

// ---------------------------------------------------------------------------
// ZRANDMEMBER
// ---------------------------------------------------------------------------

pub fn zrandmember(ctx: &mut Ctx) {
    let argc = ctx.args.len();
    if argc >= 3 {
        let Some(l) = range_long(ctx, 2, -i64::MAX, i64::MAX, None) else {
            return;
        };
        let withscores = argc == 4;
        if argc > 4 || (argc == 4 && !ctx.args[3].eq_ignore_ascii_case(b"withscores")) {
            return ctx.syntax_error();
        }
        if withscores && !(i64::MIN / 2..=i64::MAX / 2).contains(&l) {
            return ctx.err("value is out of range");
        }
        return zrandmember_count(ctx, l, withscores);
    }
    let idx = match read_zset(ctx, ctx.args[1]) {
        Err(_) => return,
        Ok(None) => return ctx.out.null(),
        Ok(Some(i)) => i,
    };
    let r = ctx.t.random();
    match zset_of!(ctx, idx).and_then(|z| z.random_entry(r)) {
        Some((m, _)) => ctx.out.bulk(m),
        None => ctx.out.null(),
    }
}

fn zrandmember_count(ctx: &mut Ctx, l: i64, withscores: bool) {
    let idx = match read_zset(ctx, ctx.args[1]) {
        Err(_) => return,
        Ok(None) => return ctx.out.empty_array(),
        Ok(Some(i)) => i,
    };
    let (count, uniq) = if l >= 0 {
        (l as u64, true)
    } else {
        (l.unsigned_abs(), false)
    };
    if count == 0 {
        return ctx.out.empty_array();
    }
    if !uniq && count > MAX_RANDOM_REPLY {
        return ctx.err("value is out of range");
    }
    let resp = ctx.out.resp;
    let emit = |out: &mut crate::resp::Reply, m: &[u8], s: f64| {
        if withscores && resp > 2 {
            out.array(2);
        }
        out.bulk(m);
        if withscores {
            out.double(s);
        }
    };
    let header = |out: &mut crate::resp::Reply, n: u64| {
        out.array(if withscores && resp == 2 {
            (n * 2) as usize
        } else {
            n as usize
        })
    };
    let size = zset_of!(ctx, idx).map_or(0, |z| z.len()) as u64;
    if !uniq || count == 1 {
        // With repetitions: `count` independent draws.
        header(ctx.out, count);
        let mut rs: Vec<u64> = Vec::new();
        for _ in 0..count {
            rs.push(ctx.t.random());
            if rs.len() == 1024 {
                if let Some(z) = zset_of!(ctx, idx) {
                    for &r in &rs {
                        if let Some((m, s)) = z.random_entry(r) {
                            emit(ctx.out, m, s);
                        }
                    }
                }
                rs.clear();
            }
        }
        if let Some(z) = zset_of!(ctx, idx) {
            for &r in &rs {
                if let Some((m, s)) = z.random_entry(r) {
                    emit(ctx.out, m, s);
                }
            }
        }
        return;
    }
    if count >= size {
        // The whole set, from the highest element down as Redis walks it.
        header(ctx.out, size);
        if let Some(z) = zset_of!(ctx, idx) {
            for &(m, s) in z.entries().iter().rev() {
                emit(ctx.out, m, s);
            }
        }
        return;
    }
    // Distinct members: a partial Fisher-Yates shuffle of the ranks.
    let count = count as usize;
    let mut ranks: Vec<usize> = (0..size as usize).collect();
    for i in 0..count {
        let j = i + (ctx.t.random() % (ranks.len() - i) as u64) as usize;
        ranks.swap(i, j);
    }
    header(ctx.out, count as u64);
    if let Some(z) = zset_of!(ctx, idx) {
        let all = z.entries();
        for &r in &ranks[..count] {
            let (m, s) = all[r];
            emit(ctx.out, m, s);
        }
    }
}

// ---------------------------------------------------------------------------
// ZUNION, ZINTER, ZDIFF (+STORE), ZINTERCARD
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Redis's `zunionInterAggregate`.
fn aggregate(target: &mut f64, val: f64, agg: Aggregate) {
    match agg {
        Aggregate::Sum => {
            *target += val;
            // Adding +inf and -inf gives NaN: Redis makes it 0.
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => {
            if val < *target {
                *target = val;
            }
        }
        Aggregate::Max => {
            if val > *target {
                *target = val;
            }
        }
    }
}

/// One input of a set operation: a sorted set, a set (every score 1) or
/// a missing key.
enum Source<'a> {
    Missing,
    Z(&'a ZSet),
    S(&'a Set),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Missing => 0,
            Source::Z(z) => z.len(),
            Source::S(x) => x.len(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&[u8], f64)) {
        match self {
            Source::Missing => {}
            Source::Z(z) => z.iter().for_each(|(m, s)| f(m, s)),
            Source::S(x) => x.iter().for_each(|e| e.with_bytes(|m| f(m, 1.0))),
        }
    }

    fn find(&self, m: &[u8]) -> Option<f64> {
        match self {
            Source::Missing => None,
            Source::Z(z) => z.score(m),
            Source::S(x) => x.contains(m).then_some(1.0),
        }
    }
}

/// Redis's `zunionInterDiffGenericCommand`.
fn zset_op(ctx: &mut Ctx, dst: Option<&[u8]>, numkeys_idx: usize, op: SetOp, card_only: bool) {
    let args = ctx.args;
    let argc = args.len();
    let Some(setnum) = ctx.arg_i64(numkeys_idx) else {
        return;
    };
    if setnum < 1 {
        let msg = format!(
            "at least 1 input key is needed for '{}' command",
            ctx.spec.name
        );
        return ctx.err(&msg);
    }
    if setnum as u64 > (argc - (numkeys_idx + 1)) as u64 {
        return ctx.syntax_error();
    }
    let setnum = setnum as usize;
    let first = numkeys_idx + 1;
    // Look the inputs up (WRONGTYPE comes before option errors).
    let mut found: Vec<Option<u32>> = Vec::with_capacity(setnum);
    for &k in &args[first..first + setnum] {
        let idx = ctx.lookup_read(k);
        if let Some(i) = idx {
            if !matches!(ctx.db().entry(i).value, Value::ZSet(_) | Value::Set(_)) {
                return ctx.wrongtype();
            }
        }
        found.push(idx);
    }
    // A later lookup's lazy expiry may have moved an earlier key's entry:
    // find the live ones again (a key the lookups hid stays missing).
    let db = ctx.s.db;
    let found: Vec<Option<u32>> = found
        .iter()
        .zip(&args[first..first + setnum])
        .map(|(f, k)| f.and_then(|_| ctx.t.ks.dbs[db].find(k)))
        .collect();
    let mut weights = vec![1.0f64; setnum];
    let mut agg = Aggregate::Sum;
    let mut withscores = false;
    let mut limit: u64 = 0;
    let mut j = first + setnum;
    while j < argc {
        let remaining = argc - j;
        let o = args[j];
        if op != SetOp::Diff
            && !card_only
            && remaining > setnum
            && o.eq_ignore_ascii_case(b"weights")
        {
            j += 1;
            for w in weights.iter_mut() {
                match parse_f64(args[j]) {
                    Some(v) => *w = v,
                    None => return ctx.err("weight value is not a float"),
                }
                j += 1;
            }
            continue;
        } else if op != SetOp::Diff
            && !card_only
            && remaining >= 2
            && o.eq_ignore_ascii_case(b"aggregate")
        {
            let a = args[j + 1];
            agg = if a.eq_ignore_ascii_case(b"sum") {
                Aggregate::Sum
            } else if a.eq_ignore_ascii_case(b"min") {
                Aggregate::Min
            } else if a.eq_ignore_ascii_case(b"max") {
                Aggregate::Max
            } else {
                return ctx.syntax_error();
            };
            j += 2;
            continue;
        } else if dst.is_none() && !card_only && o.eq_ignore_ascii_case(b"withscores") {
            withscores = true;
        } else if card_only && remaining >= 2 && o.eq_ignore_ascii_case(b"limit") {
            match positive_long(ctx, j + 1, Some("LIMIT can't be negative")) {
                Some(l) => limit = l as u64,
                None => return,
            }
            j += 1;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }

    let db = ctx.s.db;
    let table = &ctx.t.ks.dbs[db];
    let mut srcs: Vec<(Source<'_>, f64)> = found
        .iter()
        .zip(&weights)
        .map(|(idx, &w)| {
            let s = match idx.map(|i| &table.entry(i).value) {
                Some(Value::ZSet(z)) => Source::Z(z),
                Some(Value::Set(s)) => Source::S(s),
                _ => Source::Missing,
            };
            (s, w)
        })
        .collect();
    if op != SetOp::Diff {
        // Smallest first (stable, as glibc's qsort is in practice).
        srcs.sort_by_key(|(s, _)| s.len());
    }
    let mut result: Vec<(Vec<u8>, f64)> = Vec::new();
    let mut cardinality: u64 = 0;
    match op {
        SetOp::Inter => {
            if srcs[0].0.len() > 0 {
                let (first_src, w0) = (&srcs[0].0, srcs[0].1);
                let mut stop = false;
                first_src.for_each(|m, s| {
                    if stop {
                        return;
                    }
                    let mut score = w0 * s;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    for (src, w) in &srcs[1..] {
                        match src.find(m) {
                            Some(v) => aggregate(&mut score, v * w, agg),
                            None => return,
                        }
                    }
                    if card_only {
                        cardinality += 1;
                        if limit > 0 && cardinality >= limit {
                            stop = true;
                        }
                    } else {
                        result.push((m.to_vec(), score));
                    }
                });
            }
        }
        SetOp::Union => {
            let mut acc: hashbrown::HashMap<Vec<u8>, f64> = hashbrown::HashMap::new();
            for (src, w) in &srcs {
                src.for_each(|m, s| {
                    let mut score = w * s;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    match acc.get_mut(m) {
                        Some(t) => aggregate(t, score, agg),
                        None => {
                            acc.insert(m.to_vec(), score);
                        }
                    }
                });
            }
            result = acc.into_iter().collect();
        }
        SetOp::Diff => {
            if srcs[0].0.len() > 0 {
                srcs[0].0.for_each(|m, s| {
                    if !srcs[1..].iter().any(|(src, _)| src.find(m).is_some()) {
                        result.push((m.to_vec(), s));
                    }
                });
            }
        }
    }
    drop(srcs);

    if let Some(dst) = dst {
        let event = match op {
            SetOp::Union => "zunionstore",
            SetOp::Inter => "zinterstore",
            SetOp::Diff => "zdiffstore",
        };
        return store_result(ctx, dst, result, event);
    }
    if card_only {
        return ctx.out.int(cardinality as i64);
    }
    result.sort_by(|a, b| crate::db::zset::cmp_entry(a.1, &a.0, b.1, &b.0));
    let items: Vec<(&[u8], f64)> = result.iter().map(|(m, s)| (&m[..], *s)).collect();
    reply_entries(ctx.out, &items, withscores);
}

pub fn zunionstore(ctx: &mut Ctx) {
    let dst = ctx.args[1];
    zset_op(ctx, Some(dst), 2, SetOp::Union, false);
}

pub fn zinterstore(ctx: &mut Ctx) {
    let dst = ctx.args[1];
    zset_op(ctx, Some(dst), 2, SetOp::Inter, false);
}

pub fn zdiffstore(ctx: &mut Ctx) {
    let dst = ctx.args[1];
    zset_op(ctx, Some(dst), 2, SetOp::Diff, false);
}

pub fn zunion(ctx: &mut Ctx) {
    zset_op(ctx, None, 1, SetOp::Union, false);
}

pub fn zinter(ctx: &mut Ctx) {
    zset_op(ctx, None, 1, SetOp::Inter, false);
}

pub fn zdiff(ctx: &mut Ctx) {
    zset_op(ctx, None, 1, SetOp::Diff, false);
}

pub fn zintercard(ctx: &mut Ctx) {
    zset_op(ctx, None, 1, SetOp::Inter, true);
}

// ---------------------------------------------------------------------------
// ZSCAN
// ---------------------------------------------------------------------------

pub fn zscan(ctx: &mut Ctx) {
    let Some(cursor) = parse_cursor(ctx.args[2]) else {
        return ctx.err("invalid cursor");
    };
    let idx = match read_zset(ctx, ctx.args[1]) {
        Err(_) => return,
        Ok(None) => {
            ctx.out.array(2);
            ctx.out.bulk(b"0");
            return ctx.out.empty_array();
        }
        Ok(Some(i)) => i,
    };
    let args = ctx.args;
    let mut count: i64 = 10;
    let mut pat: Option<&[u8]> = None;
    let mut i = 3;
    while i < args.len() {
        let left = args.len() - i;
        let o = args[i];
        if o.eq_ignore_ascii_case(b"count") && left >= 2 {
            let Some(c) = ctx.arg_i64(i + 1) else { return };
            if c < 1 {
                return ctx.syntax_error();
            }
            count = c;
        } else if o.eq_ignore_ascii_case(b"match") && left >= 2 {
            let p = args[i + 1];
            pat = if p == b"*" { None } else { Some(p) };
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    let Some(z) = zset_of!(ctx, idx) else {
        return ctx.out.empty_array();
    };
    let mut items: Vec<(&[u8], f64)> = Vec::new();
    let next = z.scan(cursor, count as usize, |m, s| {
        if pat.is_none_or(|p| glob_match(p, m, false)) {
            items.push((m, s));
        }
    });
    // Redis replies the listpack's own text of a score (integers in full),
    // or a skiplist score as "%.17Lg".
    let listpack = z.encoding() == "listpack";
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(items.len() * 2);
    for (m, s) in items {
        ctx.out.bulk(m);
        let text = if listpack {
            listpack_score_text(s)
        } else {
            fmt_f64(s)
        };
        ctx.out.bulk(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtod_like_redis_ranges() {
        assert_eq!(c_strtod(b""), Some((0.0, false)));
        assert_eq!(c_strtod(b" 5"), Some((5.0, false)));
        assert_eq!(c_strtod(b"   "), None);
        assert_eq!(c_strtod(b"1e"), None);
        assert_eq!(c_strtod(b"1\0junk"), Some((1.0, false)));
        assert_eq!(c_strtod(b"1e400"), Some((f64::INFINITY, true)));
        assert_eq!(c_strtod(b"-1e400"), Some((f64::NEG_INFINITY, true)));
        assert_eq!(c_strtod(b"1e-400"), Some((0.0, true)));
        assert!(c_strtod(b"1e-310").is_some_and(|(_, e)| e));
        assert_eq!(c_strtod(b"inf"), Some((f64::INFINITY, false)));
        assert!(score_item(b"nan").is_none());
        assert_eq!(score_item(b"(1.5"), Some((1.5, true)));
        assert_eq!(score_item(b"("), Some((0.0, true)));
        assert!(score_item(b"[1").is_none());
    }

    #[test]
    fn lex_items() {
        assert_eq!(lex_item(b"-"), Some((LexBound::Min, true)));
        assert_eq!(lex_item(b"+"), Some((LexBound::Max, true)));
        assert_eq!(lex_item(b"+a"), None);
        assert_eq!(lex_item(b"+\0a"), Some((LexBound::Max, true)));
        assert_eq!(lex_item(b"(a"), Some((LexBound::Str(b"a".to_vec()), true)));
        assert_eq!(lex_item(b"["), Some((LexBound::Str(Vec::new()), false)));
        assert_eq!(lex_item(b"a"), None);
        assert_eq!(lex_item(b""), None);
    }

    #[test]
    fn rank_normalisation() {
        assert_eq!(norm_rank(0, -1, 3), Some((0, 2)));
        assert_eq!(norm_rank(-100, 100, 3), Some((0, 2)));
        assert_eq!(norm_rank(2, 1, 3), None);
        assert_eq!(norm_rank(3, 5, 3), None);
        assert_eq!(norm_rank(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(norm_rank(0, 0, 0), None);
    }
}
