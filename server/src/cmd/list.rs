//! List commands (Redis's t_list.c): LPUSH/RPUSH(X), LPOP/RPOP, LLEN,
//! LRANGE, LINDEX, LSET, LINSERT, LREM, LTRIM, LPOS, LMOVE, RPOPLPUSH and
//! LMPOP, with Redis 7.0's replies, error texts and argument-checking order.
//!
//! The blocking variants (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) live with
//! the blocking machinery; they share the pop/move code here:
//!
//! * [`lookup_list_write`]: Redis's `lookupKeyWrite` + `checkType(OBJ_LIST)`;
//! * [`probe_write`]: the same without writing a reply (to decide whether a
//!   blocked client can be served at all);
//! * [`pop_first`]: pop from the first non-empty list among some keys
//!   (BLPOP, BRPOP, BLMPOP, LMPOP);
//! * [`pop_at`]: pop from one list already looked up;
//! * [`lmove_generic`]: LMOVE/RPOPLPUSH and their blocking forms;
//! * [`parse_mpop`]: LMPOP/BLMPOP argument parsing with Redis's errors.
//!
//! Every change is propagated as its effect (`LPOP key n` for pops that
//! Redis rewrites, the command as received otherwise), which also drives
//! WATCH invalidation and blocked-client wakeups; every change notifies
//! keyspace events with Redis's names, and a list that becomes empty is
//! deleted (with a `del` event), as Redis does.

use smallvec::SmallVec;

use super::{errors, Ctx, Replied, NOTIFY_GENERIC, NOTIFY_LIST, NOTIFY_NEW};
use crate::db::list::List;
use crate::db::{Kind, Value};
use crate::resp::Reply;
use crate::sds::Sds;
use crate::tenant::Tenant;
use crate::util::{fmt_i64, parse_i64};

/// A list end: Redis's `LIST_HEAD` (LEFT) and `LIST_TAIL` (RIGHT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

impl End {
    /// `LEFT` / `RIGHT`, case-insensitive (`getListPositionFromObjectOrReply`
    /// without the reply).
    pub fn parse(arg: &[u8]) -> Option<End> {
        if arg.eq_ignore_ascii_case(b"left") {
            Some(End::Left)
        } else if arg.eq_ignore_ascii_case(b"right") {
            Some(End::Right)
        } else {
            None
        }
    }

    /// As LMOVE spells it in the propagated command.
    pub fn word(self) -> &'static [u8] {
        match self {
            End::Left => b"LEFT",
            End::Right => b"RIGHT",
        }
    }

    /// The non-blocking pop command for this end (`LPOP`/`RPOP`).
    pub fn pop_cmd(self) -> &'static [u8] {
        match self {
            End::Left => b"LPOP",
            End::Right => b"RPOP",
        }
    }

    /// Keyspace event of a pop at this end.
    pub fn pop_event(self) -> &'static str {
        match self {
            End::Left => "lpop",
            End::Right => "rpop",
        }
    }

    /// Keyspace event of a push at this end.
    pub fn push_event(self) -> &'static str {
        match self {
            End::Left => "lpush",
            End::Right => "rpush",
        }
    }
}

/// How [`pop_at`] / [`pop_first`] write the popped elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopReply {
    /// One element as a bulk (`LPOP key`). Pops exactly one element.
    Bulk,
    /// The elements as an array (`LPOP key count`).
    Array,
    /// `[key, element]` (BLPOP/BRPOP). Pops exactly one element.
    KeyElem,
    /// `[key, [elements...]]` (LMPOP/BLMPOP).
    KeyArray,
}

/// What [`probe_write`] found under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Missing,
    /// A (non-empty) list at this entry index of the current DB.
    List(u32),
    WrongType,
}

/// The list at `idx` of `db`, if the entry holds a list.
#[inline]
fn list_mut(t: &mut Tenant, db: usize, idx: u32) -> Option<&mut List> {
    t.ks.dbs[db].entry_mut(idx).value.as_list_mut()
}

#[inline]
fn list_ref(t: &Tenant, db: usize, idx: u32) -> Option<&List> {
    t.ks.dbs[db].entry(idx).value.as_list()
}

/// Redis's `lookupKeyWrite` + list type check, without replying: lazily
/// expires the key, no hit/miss stats (write lookups have none).
pub fn probe_write(ctx: &mut Ctx, key: &[u8]) -> Probe {
    match ctx.lookup_write(key) {
        None => Probe::Missing,
        Some(idx) => match &ctx.t.ks.dbs[ctx.s.db].entry(idx).value {
            Value::List(_) => Probe::List(idx),
            _ => Probe::WrongType,
        },
    }
}

/// `lookupKeyWrite` + `checkType(OBJ_LIST)`: `Ok(None)` if missing,
/// `Err(Replied)` after replying WRONGTYPE.
pub fn lookup_list_write(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::List, false)
}

/// `lookupKeyRead` (hit/miss stats, keymiss event) + list type check.
pub fn lookup_list_read(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::List, true)
}

/// Creates `key` (known to be absent in the current DB) holding `list`,
/// with the `new` event Redis's `dbAdd` sends.
fn insert_list(ctx: &mut Ctx, key: &[u8], list: List) -> u32 {
    let lru = ctx.new_lru();
    let db = ctx.s.db;
    let idx = ctx.t.ks.dbs[db].insert_new(Sds::from_slice(key), Value::List(Box::new(list)), lru);
    ctx.notify(NOTIFY_NEW, "new", key);
    idx
}

/// Gives memory back after large removals: a ring buffer keeps its
/// capacity, Redis's quicklist frees nodes as it shrinks. Halving when a
/// quarter full keeps this amortised O(1) per removed element.
#[inline]
fn maybe_shrink(l: &mut List) {
    let cap = l.items.capacity();
    if cap > 64 && l.items.len() < cap / 4 {
        l.items.shrink_to(cap / 2);
    }
}

/// Deletes the list at `idx` if it became empty, with the `del` event.
/// Returns true if deleted.
fn delete_if_empty(ctx: &mut Ctx, idx: u32, key: &[u8]) -> bool {
    let db = ctx.s.db;
    let empty = list_ref(ctx.t, db, idx).is_some_and(|l| l.is_empty());
    if empty {
        ctx.t.ks.dbs[db].remove_at(idx);
        ctx.notify(NOTIFY_GENERIC, "del", key);
    }
    empty
}

/// Redis's `getPositiveLongFromObjectOrReply` with the default message.
fn parse_positive(arg: &[u8]) -> Option<i64> {
    parse_i64(arg).filter(|&n| n >= 0)
}

/// Normalises `start..=end` (negative from the end) against `len` as
/// Redis's `addListRangeReply`/`ltrimCommand` do; `None` if empty.
fn range_bounds(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    let llen = len as i64;
    let mut start = if start < 0 { llen + start } else { start };
    let mut end = if end < 0 { llen + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= llen {
        return None;
    }
    if end >= llen {
        end = llen - 1;
    }
    Some((start as usize, end as usize))
}

/// Writes `l[start..=end]` (as [`range_bounds`] normalises it) as an array.
fn reply_range(out: &mut Reply, l: &List, start: i64, end: i64) {
    let Some((s, e)) = range_bounds(l.len(), start, end) else {
        return out.empty_array();
    };
    out.array(e - s + 1);
    for v in l.items.range(s..=e) {
        out.bulk(v);
    }
}

// ---------------------------------------------------------------------------
// Shared pop / move logic (also used by the blocking commands).

/// Pops from the list at entry `idx` (key `key`, current DB) at `end`:
/// one element when `count` is `None` or the shape is [`PopReply::Bulk`] /
/// [`PopReply::KeyElem`], else `min(count, len)` elements (`count` >= 1).
///
/// Writes the reply in `shape`, notifies `lpop`/`rpop` (and `del` when the
/// list empties and is deleted) and propagates `LPOP key` (no count) or
/// `LPOP key <popped>` (`RPOP` for [`End::Right`]). Returns how many
/// elements were popped (0, with nothing written, only if `idx` is not a
/// non-empty list).
///
/// Redis's `popGenericCommand` single/range paths, `listPopRangeAndReplyWithKey`
/// and the BLPOP serving path.
pub fn pop_at(
    ctx: &mut Ctx,
    idx: u32,
    key: &[u8],
    end: End,
    count: Option<usize>,
    shape: PopReply,
) -> usize {
    let db = ctx.s.db;
    let Some(l) = list_mut(ctx.t, db, idx) else {
        return 0;
    };
    let single = matches!(shape, PopReply::Bulk | PopReply::KeyElem);
    let want = if single { 1 } else { count.unwrap_or(1) };
    let n = want.min(l.len());
    if n == 0 {
        return 0;
    }
    let out = &mut *ctx.out;
    match shape {
        PopReply::Bulk => {}
        PopReply::Array => out.array(n),
        PopReply::KeyElem => {
            out.array(2);
            out.bulk(key);
        }
        PopReply::KeyArray => {
            out.array(2);
            out.bulk(key);
            out.array(n);
        }
    }
    match end {
        End::Left => {
            for v in l.items.drain(..n) {
                out.bulk(&v);
            }
        }
        End::Right => {
            let from = l.len() - n;
            for v in l.items.drain(from..).rev() {
                out.bulk(&v);
            }
        }
    }
    maybe_shrink(l);
    ctx.notify(NOTIFY_LIST, end.pop_event(), key);
    delete_if_empty(ctx, idx, key);
    match count {
        None => ctx.propagate(&[end.pop_cmd(), key]),
        Some(_) => {
            let mut b = [0u8; 20];
            ctx.propagate(&[end.pop_cmd(), key, fmt_i64(n as i64, &mut b)]);
        }
    }
    n
}

/// Pops from the first key of `keys` that holds a non-empty list, in
/// order, as [`pop_at`] does (`count`/`shape` as there). `Ok(true)`: popped
/// and replied. `Ok(false)`: no key holds a list; nothing was written (the
/// caller replies a null array, or blocks). `Err(Replied)`: a key before
/// the first list holds another type; WRONGTYPE was replied.
///
/// Redis's `mpopGenericCommand` and the immediate path of
/// `blockingPopGenericCommand`: LMPOP uses `(Some(count), KeyArray)`,
/// BLPOP/BRPOP `(None, KeyElem)` (propagated as `LPOP key`/`RPOP key`),
/// BLMPOP `(Some(count), KeyArray)` (propagated as `LPOP key <n>`).
pub fn pop_first(
    ctx: &mut Ctx,
    keys: &[&[u8]],
    end: End,
    count: Option<usize>,
    shape: PopReply,
) -> Result<bool, Replied> {
    for &key in keys {
        if let Some(idx) = lookup_list_write(ctx, key)? {
            if pop_at(ctx, idx, key, end, count, shape) > 0 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// LMOVE `src dst from to` (RPOPLPUSH is `(Right, Left)`): pops at `from`
/// of `src`, pushes at `to` of `dst` (created if missing) and replies the
/// element as a bulk. `Ok(false)`: `src` does not exist; nothing was
/// written (the caller replies null, or blocks). `Err(Replied)`: `src` or
/// `dst` holds another type; WRONGTYPE was replied and nothing changed.
///
/// Events as Redis orders them: `lpush`/`rpush` on `dst`, then
/// `lpop`/`rpop` on `src`, then `del` on `src` if it emptied. Propagated as
/// `RPOPLPUSH src dst` when `as_rpoplpush`, else `LMOVE src dst <from> <to>`
/// (what Redis rewrites BRPOPLPUSH and BLMOVE to).
pub fn lmove_generic(
    ctx: &mut Ctx,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
    as_rpoplpush: bool,
) -> Result<bool, Replied> {
    if lookup_list_write(ctx, src)?.is_none() {
        return Ok(false);
    }
    let didx = lookup_list_write(ctx, dst)?;
    // Expiring `dst` may have moved `src`'s entry: find it again.
    let db = ctx.s.db;
    let Some(sidx) = ctx.t.ks.dbs[db].find(src) else {
        return Ok(false);
    };
    let Some(l) = list_mut(ctx.t, db, sidx) else {
        return Ok(false);
    };
    let popped = match from {
        End::Left => l.items.pop_front(),
        End::Right => l.items.pop_back(),
    };
    let Some(value) = popped else {
        return Ok(false);
    };
    ctx.out.bulk(&value);
    // `didx` is still valid: nothing was removed since it was looked up
    // (when `dst` expired instead, it is `None`).
    let target = if src == dst { Some(sidx) } else { didx };
    match target.and_then(|d| list_mut(ctx.t, db, d)) {
        Some(dl) => match to {
            End::Left => dl.items.push_front(value),
            End::Right => dl.items.push_back(value),
        },
        None => {
            let mut nl = List::new();
            nl.items.push_back(value);
            insert_list(ctx, dst, nl);
        }
    }
    ctx.notify(NOTIFY_LIST, to.push_event(), dst);
    ctx.notify(NOTIFY_LIST, from.pop_event(), src);
    if src != dst {
        // `insert_list` appends: `sidx` is still the source's index.
        if !delete_if_empty(ctx, sidx, src) {
            if let Some(l) = list_mut(ctx.t, db, sidx) {
                maybe_shrink(l);
            }
        }
    }
    if as_rpoplpush {
        ctx.propagate(&[b"RPOPLPUSH", src, dst]);
    } else {
        ctx.propagate(&[b"LMOVE", src, dst, from.word(), to.word()]);
    }
    Ok(true)
}

/// Parsed LMPOP/BLMPOP arguments: the keys are
/// `args[first_key .. first_key + numkeys]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpopArgs {
    pub first_key: usize,
    pub numkeys: usize,
    pub end: End,
    pub count: usize,
}

/// Key positions of LMPOP (`numkeys_idx` 1) / BLMPOP (2) in a full
/// command line, for key extraction (COMMAND GETKEYS, ACL key checks,
/// WATCH/wakeups of movable-key commands): `None` when `numkeys` is not a
/// positive integer or names more keys than there are arguments.
pub fn mpop_key_range(args: &[&[u8]], numkeys_idx: usize) -> Option<std::ops::Range<usize>> {
    let n = parse_i64(args.get(numkeys_idx)?)?;
    let first = numkeys_idx + 1;
    let n = usize::try_from(n).ok().filter(|&n| n >= 1)?;
    (n <= args.len().saturating_sub(first)).then_some(first..first + n)
}

/// Redis's `lmpopGenericCommand` parsing: `numkeys` at `numkeys_idx`
/// (1 for LMPOP, 2 for BLMPOP), then the keys, `LEFT|RIGHT`, `[COUNT n]`.
/// Replies the error and returns `None` on bad input.
pub fn parse_mpop(ctx: &mut Ctx, numkeys_idx: usize) -> Option<MpopArgs> {
    let args = ctx.args;
    let numkeys = match args.get(numkeys_idx).and_then(|a| parse_i64(a)) {
        Some(n) if n >= 1 => n as u64,
        _ => {
            ctx.err("numkeys should be greater than 0");
            return None;
        }
    };
    let first_key = numkeys_idx + 1;
    // where_idx = numkeys_idx + numkeys + 1 must name an argument.
    let avail = args.len().saturating_sub(first_key) as u64;
    if numkeys >= avail {
        ctx.syntax_error();
        return None;
    }
    let numkeys = numkeys as usize;
    let where_idx = first_key + numkeys;
    let Some(end) = End::parse(args[where_idx]) else {
        ctx.syntax_error();
        return None;
    };
    let mut count: Option<usize> = None;
    let mut j = where_idx + 1;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if count.is_none() && more > 0 && args[j].eq_ignore_ascii_case(b"count") {
            j += 1;
            match parse_i64(args[j]) {
                Some(n) if n >= 1 => count = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => {
                    ctx.err("count should be greater than 0");
                    return None;
                }
            }
        } else {
            ctx.syntax_error();
            return None;
        }
        j += 1;
    }
    Some(MpopArgs {
        first_key,
        numkeys,
        end,
        count: count.unwrap_or(1),
    })
}

// ---------------------------------------------------------------------------
// Commands.

/// `pushGenericCommand`: LPUSH/RPUSH, and with `only_existing` LPUSHX/RPUSHX.
fn push_generic(ctx: &mut Ctx, end: End, only_existing: bool) {
    let args = ctx.args;
    let key = args[1];
    let elems = &args[2..];
    let len = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) if only_existing => return ctx.out.int(0),
        Ok(None) => {
            let mut l = List::new();
            l.items.reserve_exact(elems.len());
            push_all(&mut l, end, elems);
            let len = l.len();
            insert_list(ctx, key, l);
            len
        }
        Ok(Some(idx)) => {
            let db = ctx.s.db;
            let Some(l) = list_mut(ctx.t, db, idx) else {
                return ctx.wrongtype();
            };
            push_all(l, end, elems);
            l.len()
        }
    };
    ctx.out.int(len as i64);
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_LIST, end.push_event(), key);
}

#[inline]
fn push_all(l: &mut List, end: End, elems: &[&[u8]]) {
    match end {
        End::Left => {
            for e in elems {
                l.items.push_front(Sds::from_slice(e));
            }
        }
        End::Right => {
            for e in elems {
                l.items.push_back(Sds::from_slice(e));
            }
        }
    }
}

pub fn lpush(ctx: &mut Ctx) {
    push_generic(ctx, End::Left, false)
}

pub fn rpush(ctx: &mut Ctx) {
    push_generic(ctx, End::Right, false)
}

pub fn lpushx(ctx: &mut Ctx) {
    push_generic(ctx, End::Left, true)
}

pub fn rpushx(ctx: &mut Ctx) {
    push_generic(ctx, End::Right, true)
}

/// `popGenericCommand`: LPOP/RPOP `key [count]`.
fn pop_command(ctx: &mut Ctx, end: End) {
    let args = ctx.args;
    if args.len() > 3 {
        let msg = format!("wrong number of arguments for '{}' command", ctx.spec.name);
        return ctx.err(&msg);
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match parse_positive(a) {
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => return ctx.err("value is out of range, must be positive"),
        },
    };
    let key = args[1];
    let idx = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) if count.is_some() => return ctx.out.null_array(),
        Ok(None) => return ctx.out.null(),
        Ok(Some(idx)) => idx,
    };
    match count {
        None => {
            pop_at(ctx, idx, key, end, None, PopReply::Bulk);
        }
        Some(0) => ctx.out.empty_array(),
        Some(n) => {
            pop_at(ctx, idx, key, end, Some(n), PopReply::Array);
        }
    }
}

pub fn lpop(ctx: &mut Ctx) {
    pop_command(ctx, End::Left)
}

pub fn rpop(ctx: &mut Ctx) {
    pop_command(ctx, End::Right)
}

pub fn llen(ctx: &mut Ctx) {
    let key = ctx.args[1];
    match lookup_list_read(ctx, key) {
        Err(Replied) => {}
        Ok(None) => ctx.out.int(0),
        Ok(Some(idx)) => {
            let n = list_ref(ctx.t, ctx.s.db, idx).map_or(0, |l| l.len());
            ctx.out.int(n as i64)
        }
    }
}

pub fn lrange(ctx: &mut Ctx) {
    let Some(start) = ctx.arg_i64(2) else { return };
    let Some(end) = ctx.arg_i64(3) else { return };
    let key = ctx.args[1];
    let idx = match lookup_list_read(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.empty_array(),
        Ok(Some(idx)) => idx,
    };
    match list_ref(ctx.t, ctx.s.db, idx) {
        Some(l) => reply_range(ctx.out, l, start, end),
        None => ctx.out.empty_array(),
    }
}

/// A Redis list index (negative from the end) as a position, if in range.
fn position(len: usize, index: i64) -> Option<usize> {
    let i = if index < 0 { len as i64 + index } else { index };
    (0..len as i64).contains(&i).then_some(i as usize)
}

pub fn lindex(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let idx = match lookup_list_read(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.null(),
        Ok(Some(idx)) => idx,
    };
    let Some(index) = ctx.arg_i64(2) else { return };
    let elem = list_ref(ctx.t, ctx.s.db, idx)
        .and_then(|l| position(l.len(), index).and_then(|p| l.items.get(p)));
    match elem {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
}

pub fn lset(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let idx = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.err(errors::NO_SUCH_KEY),
        Ok(Some(idx)) => idx,
    };
    let Some(index) = ctx.arg_i64(2) else { return };
    let value = ctx.args[3];
    let db = ctx.s.db;
    let slot = list_mut(ctx.t, db, idx)
        .and_then(|l| position(l.len(), index).and_then(|p| l.items.get_mut(p)));
    match slot {
        Some(v) => *v = Sds::from_slice(value),
        None => return ctx.err("index out of range"),
    }
    ctx.out.ok();
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_LIST, "lset", key);
}

pub fn linsert(ctx: &mut Ctx) {
    let args = ctx.args;
    let after = if args[2].eq_ignore_ascii_case(b"after") {
        true
    } else if args[2].eq_ignore_ascii_case(b"before") {
        false
    } else {
        return ctx.syntax_error();
    };
    let (key, pivot, value) = (args[1], args[3], args[4]);
    let idx = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(idx)) => idx,
    };
    let db = ctx.s.db;
    let Some(l) = list_mut(ctx.t, db, idx) else {
        return ctx.out.int(0);
    };
    let Some(pos) = l.items.iter().position(|e| e.as_bytes() == pivot) else {
        return ctx.out.int(-1);
    };
    l.items
        .insert(if after { pos + 1 } else { pos }, Sds::from_slice(value));
    let len = l.len();
    ctx.out.int(len as i64);
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_LIST, "linsert", key);
}

pub fn lrem(ctx: &mut Ctx) {
    let Some(count) = ctx.arg_i64(2) else { return };
    let (key, elem) = (ctx.args[1], ctx.args[3]);
    let idx = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(idx)) => idx,
    };
    let db = ctx.s.db;
    let Some(l) = list_mut(ctx.t, db, idx) else {
        return ctx.out.int(0);
    };
    let removed = remove_matches(l, elem, count);
    if removed > 0 {
        maybe_shrink(l);
        ctx.propagate_as_is();
        ctx.notify(NOTIFY_LIST, "lrem", key);
    }
    delete_if_empty(ctx, idx, key);
    ctx.out.int(removed as i64);
}

/// LREM's removal: `count` > 0 removes the first `count` matches from the
/// head, < 0 the last `|count|` from the tail, 0 all of them.
fn remove_matches(l: &mut List, elem: &[u8], count: i64) -> usize {
    let limit = if count == 0 {
        usize::MAX
    } else {
        usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
    };
    // Matches to keep before removing: from the tail, the first ones are kept.
    let mut skip = if count < 0 {
        let total = l.items.iter().filter(|e| e.as_bytes() == elem).count();
        total.saturating_sub(limit)
    } else {
        0
    };
    let mut removed = 0usize;
    l.items.retain(|e| {
        if removed >= limit || e.as_bytes() != elem {
            return true;
        }
        if skip > 0 {
            skip -= 1;
            return true;
        }
        removed += 1;
        false
    });
    removed
}

pub fn ltrim(ctx: &mut Ctx) {
    let Some(start) = ctx.arg_i64(2) else { return };
    let Some(end) = ctx.arg_i64(3) else { return };
    let key = ctx.args[1];
    let idx = match lookup_list_write(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.ok(),
        Ok(Some(idx)) => idx,
    };
    let db = ctx.s.db;
    let Some(l) = list_mut(ctx.t, db, idx) else {
        return ctx.out.ok();
    };
    let len = l.len();
    let (ltrim, rtrim) = match range_bounds(len, start, end) {
        None => (len, 0),
        Some((s, e)) => (s, len - e - 1),
    };
    l.items.truncate(len - rtrim);
    l.items.drain(..ltrim);
    maybe_shrink(l);
    ctx.notify(NOTIFY_LIST, "ltrim", key);
    delete_if_empty(ctx, idx, key);
    if ltrim + rtrim > 0 {
        ctx.propagate_as_is();
    } else {
        // Nothing removed: Redis still signals the key (WATCH), but
        // propagates nothing.
        ctx.t.touch_key(db, key);
    }
    ctx.out.ok();
}

pub fn lpos(ctx: &mut Ctx) {
    let args = ctx.args;
    let (key, elem) = (args[1], args[2]);
    let mut rank: i64 = 1;
    let mut count: i64 = -1; // -1: no COUNT option
    let mut maxlen: i64 = 0;
    let mut j = 3;
    while j < args.len() {
        let opt = args[j];
        let more = args.len() - 1 - j;
        if opt.eq_ignore_ascii_case(b"rank") && more > 0 {
            j += 1;
            let Some(r) = ctx.arg_i64(j) else { return };
            if r == 0 {
                return ctx.err(
                    "RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                );
            }
            rank = r;
        } else if opt.eq_ignore_ascii_case(b"count") && more > 0 {
            j += 1;
            match parse_positive(args[j]) {
                Some(c) => count = c,
                None => return ctx.err("COUNT can't be negative"),
            }
        } else if opt.eq_ignore_ascii_case(b"maxlen") && more > 0 {
            j += 1;
            match parse_positive(args[j]) {
                Some(m) => maxlen = m,
                None => return ctx.err("MAXLEN can't be negative"),
            }
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    // A negative rank searches from the tail. As in C, -LONG_MIN stays
    // LONG_MIN, which every match then satisfies.
    let from_tail = rank < 0;
    if from_tail {
        rank = rank.wrapping_neg();
    }
    let idx = match lookup_list_read(ctx, key) {
        Err(Replied) => return,
        Ok(None) if count != -1 => return ctx.out.empty_array(),
        Ok(None) => return ctx.out.null(),
        Ok(Some(idx)) => idx,
    };
    let Some(l) = list_ref(ctx.t, ctx.s.db, idx) else {
        return ctx.out.null();
    };
    let llen = l.len() as i64;
    let mut found: SmallVec<[i64; 16]> = SmallVec::new();
    let mut matches: i64 = 0;
    let mut matchindex: i64 = -1;
    let mut index: i64 = 0;
    let mut visit = |e: &Sds| -> bool {
        // Returns false to stop.
        if maxlen != 0 && index >= maxlen {
            return false;
        }
        if e.as_bytes() == elem {
            matches += 1;
            matchindex = if from_tail { llen - index - 1 } else { index };
            if matches >= rank {
                if count == -1 {
                    return false;
                }
                found.push(matchindex);
                if count != 0 && matches.wrapping_sub(rank).wrapping_add(1) >= count {
                    return false;
                }
            }
        }
        index += 1;
        matchindex = -1;
        true
    };
    if from_tail {
        for e in l.items.iter().rev() {
            if !visit(e) {
                break;
            }
        }
    } else {
        for e in l.items.iter() {
            if !visit(e) {
                break;
            }
        }
    }
    if count != -1 {
        ctx.out.array(found.len());
        for i in found {
            ctx.out.int(i);
        }
    } else if matchindex != -1 {
        ctx.out.int(matchindex);
    } else {
        ctx.out.null();
    }
}

pub fn lmove(ctx: &mut Ctx) {
    let args = ctx.args;
    let Some(from) = End::parse(args[3]) else {
        return ctx.syntax_error();
    };
    let Some(to) = End::parse(args[4]) else {
        return ctx.syntax_error();
    };
    if let Ok(false) = lmove_generic(ctx, args[1], args[2], from, to, false) {
        ctx.out.null();
    }
}

pub fn rpoplpush(ctx: &mut Ctx) {
    let args = ctx.args;
    if let Ok(false) = lmove_generic(ctx, args[1], args[2], End::Right, End::Left, true) {
        ctx.out.null();
    }
}

pub fn lmpop(ctx: &mut Ctx) {
    let Some(a) = parse_mpop(ctx, 1) else { return };
    let args = ctx.args;
    let keys = &args[a.first_key..a.first_key + a.numkeys];
    if let Ok(false) = pop_first(ctx, keys, a.end, Some(a.count), PopReply::KeyArray) {
        ctx.out.null_array();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientInfo, Session};
    use crate::config::Config;
    use crate::dispatch::dispatch;
    use crate::shared::{Settings, Shared};
    use crate::tenant::TenantId;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    const NOW: i64 = 1_700_000_000_000;

    /// A decoded reply.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum R {
        Ok,
        Int(i64),
        Bulk(Vec<u8>),
        Nil,
        NilArray,
        Arr(Vec<R>),
        Err(String),
        Simple(String),
    }

    fn bulk(s: &str) -> R {
        R::Bulk(s.as_bytes().to_vec())
    }

    fn arr(items: &[&str]) -> R {
        R::Arr(items.iter().map(|s| bulk(s)).collect())
    }

    fn parse(buf: &[u8], pos: &mut usize) -> R {
        let end = buf[*pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("complete reply")
            + *pos;
        let line = &buf[*pos + 1..end];
        let kind = buf[*pos];
        *pos = end + 2;
        let text = || String::from_utf8_lossy(line).into_owned();
        let num = || text().parse::<i64>().expect("number");
        match kind {
            b'+' if line == b"OK" => R::Ok,
            b'+' => R::Simple(text()),
            b'-' => R::Err(text()),
            b':' => R::Int(num()),
            b'$' if num() < 0 => R::Nil,
            b'$' => {
                let n = num() as usize;
                let v = buf[*pos..*pos + n].to_vec();
                *pos += n + 2;
                R::Bulk(v)
            }
            b'*' if num() < 0 => R::NilArray,
            b'*' => R::Arr((0..num()).map(|_| parse(buf, pos)).collect()),
            other => panic!("unexpected reply type {:?}", other as char),
        }
    }

    /// One in-process tenant with one client (RESP2), on a fixed clock.
    struct Env {
        shared: Shared,
        set: Settings,
        t: Tenant,
        s: Session,
        out: Reply,
    }

    impl Env {
        fn new() -> Env {
            let shared = Shared::new(Config::default(), 1);
            let set = shared.settings();
            let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
            t.log.enable_capture();
            let addr = "127.0.0.1:40000".parse().unwrap();
            let laddr = "127.0.0.1:6379".parse().unwrap();
            let info = Rc::new(ClientInfo::new(1, addr, laddr, -1, NOW));
            Env {
                shared,
                set,
                t,
                s: Session::new(info, true),
                out: Reply::new(2),
            }
        }

        fn raw(&mut self, args: &[&[u8]]) -> R {
            self.out.buf.clear();
            dispatch(
                &mut self.t,
                &mut self.s,
                &self.shared,
                &self.set,
                args,
                &mut self.out,
                NOW,
            );
            let mut pos = 0;
            let r = parse(&self.out.buf, &mut pos);
            assert_eq!(pos, self.out.buf.len(), "exactly one reply");
            r
        }

        fn cmd(&mut self, line: &str) -> R {
            let args: Vec<&[u8]> = line.split(' ').map(|a| a.as_bytes()).collect();
            self.raw(&args)
        }

        /// The captured propagation log, as commands (SELECTs included).
        fn log(&mut self) -> Vec<Vec<Vec<u8>>> {
            let bytes = self.t.log.take_capture();
            let mut pos = 0;
            let mut cmds = Vec::new();
            while pos < bytes.len() {
                match parse(&bytes, &mut pos) {
                    R::Arr(items) => cmds.push(
                        items
                            .into_iter()
                            .map(|i| match i {
                                R::Bulk(b) => b,
                                other => panic!("log item {other:?}"),
                            })
                            .collect(),
                    ),
                    other => panic!("log entry {other:?}"),
                }
            }
            cmds
        }

        fn log_lines(&mut self) -> Vec<String> {
            self.log()
                .into_iter()
                .filter(|c| c[0] != b"SELECT")
                .map(|c| {
                    c.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        }

        /// Every list in db 0, by key.
        fn lists(&self) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
            let mut m = BTreeMap::new();
            for e in self.t.ks.dbs[0].iter() {
                if let Value::List(l) = &e.value {
                    m.insert(e.key.to_vec(), l.items.iter().map(|x| x.to_vec()).collect());
                }
            }
            m
        }
    }

    fn err(s: &str) -> R {
        R::Err(s.to_string())
    }

    const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

    #[test]
    fn push_pop_basics() {
        let mut e = Env::new();
        assert_eq!(e.cmd("RPUSH l a b c"), R::Int(3));
        assert_eq!(e.cmd("LPUSH l x y"), R::Int(5));
        assert_eq!(e.cmd("LRANGE l 0 -1"), arr(&["y", "x", "a", "b", "c"]));
        assert_eq!(e.cmd("LPUSHX nokey a"), R::Int(0));
        assert_eq!(e.cmd("RPUSHX l z"), R::Int(6));
        assert_eq!(e.cmd("LPOP l"), bulk("y"));
        assert_eq!(e.cmd("RPOP l 2"), arr(&["z", "c"]));
        assert_eq!(e.cmd("LPOP l 0"), R::Arr(vec![]));
        assert_eq!(e.cmd("LPOP nokey 0"), R::NilArray);
        assert_eq!(e.cmd("LPOP nokey"), R::Nil);
        assert_eq!(
            e.cmd("LPOP l -1"),
            err("ERR value is out of range, must be positive")
        );
        assert_eq!(
            e.cmd("LPOP l 1 2"),
            err("ERR wrong number of arguments for 'lpop' command")
        );
        assert_eq!(e.cmd("LPOP l 100"), arr(&["x", "a", "b"]));
        assert_eq!(e.cmd("EXISTS l"), R::Int(0));
        assert_eq!(e.cmd("OBJECT ENCODING nokey"), R::Nil);
        e.cmd("RPUSH l 1");
        assert_eq!(e.cmd("OBJECT ENCODING l"), bulk("quicklist"));
        assert_eq!(e.cmd("TYPE l"), R::Simple("list".into()));
    }

    #[test]
    fn wrong_type_and_error_order() {
        let mut e = Env::new();
        e.cmd("SET s x");
        for c in [
            "LPUSH s a",
            "RPUSHX s a",
            "LPOP s",
            "LPOP s 0",
            "LLEN s",
            "LRANGE s 0 1",
            "LINDEX s abc",
            "LSET s abc x",
            "LINSERT s before a b",
            "LREM s 0 a",
            "LTRIM s 0 1",
            "LPOS s a",
            "LMOVE s d left left",
            "RPOPLPUSH s d",
            "LMPOP 2 nokey s left",
        ] {
            assert_eq!(e.cmd(c), err(WRONGTYPE), "{c}");
        }
        // Argument errors that come before the key lookup.
        assert_eq!(e.cmd("LINSERT s middle a b"), err("ERR syntax error"));
        assert_eq!(
            e.cmd("LRANGE s abc 1"),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(e.cmd("LMOVE s d up left"), err("ERR syntax error"));
        // Missing keys answer before the index is parsed.
        assert_eq!(e.cmd("LINDEX nokey abc"), R::Nil);
        assert_eq!(e.cmd("LSET nokey abc x"), err("ERR no such key"));
        e.cmd("RPUSH l a b c");
        assert_eq!(e.cmd("LSET l 3 x"), err("ERR index out of range"));
        assert_eq!(e.cmd("LSET l -3 x"), R::Ok);
        assert_eq!(e.cmd("LINDEX l 0"), bulk("x"));
        // A list destination of the wrong type changes nothing.
        assert_eq!(e.cmd("LMOVE l s left left"), err(WRONGTYPE));
        assert_eq!(e.cmd("LLEN l"), R::Int(3));
        // Nothing of the failed commands was propagated.
        assert_eq!(
            e.log_lines(),
            vec!["SET s x", "RPUSH l a b c", "LSET l -3 x"]
        );
    }

    #[test]
    fn lpos_options() {
        let mut e = Env::new();
        e.cmd("RPUSH l a b a c a");
        assert_eq!(e.cmd("LPOS l a"), R::Int(0));
        assert_eq!(e.cmd("LPOS l a RANK 2"), R::Int(2));
        assert_eq!(e.cmd("LPOS l a RANK -1"), R::Int(4));
        assert_eq!(e.cmd("LPOS l a RANK 4"), R::Nil);
        assert_eq!(
            e.cmd("LPOS l a COUNT 0"),
            R::Arr(vec![R::Int(0), R::Int(2), R::Int(4)])
        );
        assert_eq!(
            e.cmd("LPOS l a RANK -2 COUNT 5"),
            R::Arr(vec![R::Int(2), R::Int(0)])
        );
        assert_eq!(e.cmd("LPOS l a MAXLEN 2 COUNT 0"), R::Arr(vec![R::Int(0)]));
        assert_eq!(e.cmd("LPOS l z COUNT 1"), R::Arr(vec![]));
        assert_eq!(e.cmd("LPOS nokey z COUNT 1"), R::Arr(vec![]));
        assert_eq!(e.cmd("LPOS nokey z"), R::Nil);
        // -LONG_MIN overflows in C and every match satisfies the rank.
        assert_eq!(
            e.cmd("LPOS l a RANK -9223372036854775808 COUNT 1"),
            R::Arr(vec![R::Int(4), R::Int(2), R::Int(0)])
        );
        assert_eq!(
            e.cmd("LPOS l a RANK 0"),
            err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list")
        );
        assert_eq!(
            e.cmd("LPOS l a COUNT -1"),
            err("ERR COUNT can't be negative")
        );
        assert_eq!(
            e.cmd("LPOS l a MAXLEN x"),
            err("ERR MAXLEN can't be negative")
        );
        assert_eq!(e.cmd("LPOS l a COUNT"), err("ERR syntax error"));
    }

    #[test]
    fn lmove_and_events_order_and_propagation() {
        let mut e = Env::new();
        e.cmd("RPUSH a 1");
        assert_eq!(e.cmd("LMOVE a b LEFT RIGHT"), bulk("1"));
        assert_eq!(e.cmd("EXISTS a"), R::Int(0));
        // A one-element list moved onto itself survives.
        assert_eq!(e.cmd("LMOVE b b left right"), bulk("1"));
        assert_eq!(e.cmd("LRANGE b 0 -1"), arr(&["1"]));
        e.cmd("RPUSH b 2 3");
        assert_eq!(e.cmd("RPOPLPUSH b b"), bulk("3"));
        assert_eq!(e.cmd("LRANGE b 0 -1"), arr(&["3", "1", "2"]));
        assert_eq!(e.cmd("RPOPLPUSH nokey b"), R::Nil);
        assert_eq!(e.cmd("LMOVE nokey b left left"), R::Nil);
        assert_eq!(
            e.log_lines(),
            vec![
                "RPUSH a 1",
                "LMOVE a b LEFT RIGHT",
                "LMOVE b b LEFT RIGHT",
                "RPUSH b 2 3",
                "RPOPLPUSH b b",
            ]
        );
    }

    /// LMOVE whose destination expires on lookup: the expiry swap-removes
    /// an entry, which moves the source (the last entry) to a new slot.
    #[test]
    fn lmove_onto_expired_destination() {
        let mut e = Env::new();
        e.cmd("SET d x");
        e.cmd("SET other y");
        e.cmd("RPUSH src 1 2");
        let d = e.t.ks.dbs[0].find(b"d").unwrap();
        e.t.ks.dbs[0].set_expire(d, NOW - 1);
        assert_eq!(e.cmd("LMOVE src d LEFT LEFT"), bulk("1"));
        assert_eq!(e.cmd("LRANGE src 0 -1"), arr(&["2"]));
        assert_eq!(e.cmd("LRANGE d 0 -1"), arr(&["1"]));
        assert_eq!(e.cmd("GET other"), bulk("y"));
        assert_eq!(
            e.log_lines(),
            vec![
                "SET d x",
                "SET other y",
                "RPUSH src 1 2",
                "DEL d",
                "LMOVE src d LEFT LEFT"
            ]
        );
    }

    #[test]
    fn lmpop_parsing_and_propagation() {
        let mut e = Env::new();
        e.cmd("RPUSH l a b c d");
        for (c, want) in [
            ("LMPOP 0 l left", "ERR numkeys should be greater than 0"),
            ("LMPOP x l left", "ERR numkeys should be greater than 0"),
            ("LMPOP 2 l left", "ERR syntax error"),
            ("LMPOP 9223372036854775807 l left", "ERR syntax error"),
            ("LMPOP 1 l middle", "ERR syntax error"),
            (
                "LMPOP 1 l left count 0",
                "ERR count should be greater than 0",
            ),
            ("LMPOP 1 l left count", "ERR syntax error"),
            ("LMPOP 1 l left count 1 count 1", "ERR syntax error"),
        ] {
            assert_eq!(e.cmd(c), err(want), "{c}");
        }
        assert_eq!(
            e.cmd("LMPOP 2 nokey l RIGHT COUNT 3"),
            R::Arr(vec![bulk("l"), arr(&["d", "c", "b"])])
        );
        assert_eq!(
            e.cmd("LMPOP 1 l left count 10"),
            R::Arr(vec![bulk("l"), arr(&["a"])])
        );
        assert_eq!(e.cmd("LMPOP 1 l left"), R::NilArray);
        assert_eq!(
            e.log_lines(),
            vec!["RPUSH l a b c d", "RPOP l 3", "LPOP l 1"]
        );
    }

    #[test]
    fn lrem_ltrim_linsert() {
        let mut e = Env::new();
        e.cmd("RPUSH l a a b a c a a");
        assert_eq!(e.cmd("LREM l 2 a"), R::Int(2));
        assert_eq!(e.cmd("LRANGE l 0 -1"), arr(&["b", "a", "c", "a", "a"]));
        assert_eq!(e.cmd("LREM l -2 a"), R::Int(2));
        assert_eq!(e.cmd("LRANGE l 0 -1"), arr(&["b", "a", "c"]));
        assert_eq!(e.cmd("LREM l -9223372036854775808 b"), R::Int(1));
        assert_eq!(e.cmd("LINSERT l BEFORE c x"), R::Int(3));
        assert_eq!(e.cmd("LINSERT l after c y"), R::Int(4));
        assert_eq!(e.cmd("LINSERT l after zz y"), R::Int(-1));
        assert_eq!(e.cmd("LINSERT nokey after zz y"), R::Int(0));
        assert_eq!(e.cmd("LRANGE l 0 -1"), arr(&["a", "x", "c", "y"]));
        assert_eq!(e.cmd("LTRIM l 1 -2"), R::Ok);
        assert_eq!(e.cmd("LRANGE l 0 -1"), arr(&["x", "c"]));
        assert_eq!(e.cmd("LTRIM l 0 -1"), R::Ok);
        assert_eq!(e.cmd("LTRIM l 5 1"), R::Ok);
        assert_eq!(e.cmd("EXISTS l"), R::Int(0));
        assert_eq!(e.cmd("LTRIM l 0 1"), R::Ok);
        // The no-op LTRIM is not propagated.
        assert_eq!(
            e.log_lines(),
            vec![
                "RPUSH l a a b a c a a",
                "LREM l 2 a",
                "LREM l -2 a",
                "LREM l -9223372036854775808 b",
                "LINSERT l BEFORE c x",
                "LINSERT l after c y",
                "LTRIM l 1 -2",
                "LTRIM l 5 1",
            ]
        );
    }

    #[test]
    fn mpop_keys() {
        let a: Vec<&[u8]> = vec![b"LMPOP", b"2", b"k1", b"k2", b"LEFT"];
        assert_eq!(mpop_key_range(&a, 1), Some(2..4));
        let a: Vec<&[u8]> = vec![b"LMPOP", b"3", b"k1", b"k2"];
        assert_eq!(mpop_key_range(&a, 1), None);
        let a: Vec<&[u8]> = vec![b"BLMPOP", b"0", b"1", b"k1", b"LEFT"];
        assert_eq!(mpop_key_range(&a, 2), Some(3..4));
        let a: Vec<&[u8]> = vec![b"LMPOP", b"0", b"k1", b"LEFT"];
        assert_eq!(mpop_key_range(&a, 1), None);
    }

    #[test]
    fn range_bounds_edges() {
        assert_eq!(range_bounds(0, 0, -1), None);
        assert_eq!(range_bounds(5, 0, -1), Some((0, 4)));
        assert_eq!(range_bounds(5, -100, 100), Some((0, 4)));
        assert_eq!(range_bounds(5, 3, 2), None);
        assert_eq!(range_bounds(5, 5, 10), None);
        assert_eq!(range_bounds(5, i64::MIN, i64::MAX), Some((0, 4)));
        assert_eq!(range_bounds(5, 0, i64::MIN), None);
        assert_eq!(position(3, -3), Some(0));
        assert_eq!(position(3, -4), None);
        assert_eq!(position(3, i64::MIN), None);
        assert_eq!(position(3, i64::MAX), None);
    }

    // -----------------------------------------------------------------------
    // Property test: random list workloads against a Vec model, then the
    // propagation log replayed on a fresh tenant must rebuild the same lists.

    type Model = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

    const PKEYS: &[&str] = &["a", "b", "c", "s"];
    const ELEMS: &[&str] = &["x", "y", "z", "1", "", "long-element-value"];

    fn norm_range(len: usize, start: i64, end: i64) -> Vec<usize> {
        let n = len as i64;
        let s = if start < 0 { (n + start).max(0) } else { start };
        let e = if end < 0 { n + end } else { end.min(n - 1) };
        (s..=e)
            .filter(|i| *i >= 0 && *i < n)
            .map(|i| i as usize)
            .collect()
    }

    fn model_pos(len: usize, i: i64) -> Option<usize> {
        let i = if i < 0 { len as i64 + i } else { i };
        (i >= 0 && i < len as i64).then_some(i as usize)
    }

    /// Applies `args` to the model and returns the expected reply.
    fn model(m: &mut Model, args: &[String]) -> R {
        let a = |i: usize| args[i].as_str();
        let int = |i: usize| a(i).parse::<i64>().unwrap();
        let key = a(1).as_bytes().to_vec();
        if key == b"s" && args[0] != "LMPOP" {
            return err(WRONGTYPE);
        }
        let to_arr = |v: Vec<Vec<u8>>| R::Arr(v.into_iter().map(R::Bulk).collect());
        let r = match a(0) {
            "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" => {
                if a(0).ends_with('X') && !m.contains_key(&key) {
                    return R::Int(0);
                }
                let l = m.entry(key.clone()).or_default();
                for e in &args[2..] {
                    if a(0).starts_with('L') {
                        l.insert(0, e.as_bytes().to_vec());
                    } else {
                        l.push(e.as_bytes().to_vec());
                    }
                }
                R::Int(l.len() as i64)
            }
            "LPOP" | "RPOP" => {
                let left = a(0) == "LPOP";
                let count = (args.len() == 3).then(|| int(2) as usize);
                let Some(l) = m.get_mut(&key) else {
                    return if count.is_some() { R::NilArray } else { R::Nil };
                };
                let n = count.unwrap_or(1).min(l.len());
                let popped: Vec<Vec<u8>> = if left {
                    l.drain(..n).collect()
                } else {
                    l.drain(l.len() - n..).rev().collect()
                };
                match count {
                    None => R::Bulk(popped[0].clone()),
                    Some(_) => to_arr(popped),
                }
            }
            "LLEN" => R::Int(m.get(&key).map_or(0, |l| l.len() as i64)),
            "LRANGE" => {
                let l = m.get(&key).cloned().unwrap_or_default();
                to_arr(
                    norm_range(l.len(), int(2), int(3))
                        .into_iter()
                        .map(|i| l[i].clone())
                        .collect(),
                )
            }
            "LINDEX" => match m.get(&key) {
                None => R::Nil,
                Some(l) => model_pos(l.len(), int(2)).map_or(R::Nil, |p| R::Bulk(l[p].clone())),
            },
            "LSET" => match m.get_mut(&key) {
                None => err("ERR no such key"),
                Some(l) => match model_pos(l.len(), int(2)) {
                    None => err("ERR index out of range"),
                    Some(p) => {
                        l[p] = a(3).as_bytes().to_vec();
                        R::Ok
                    }
                },
            },
            "LINSERT" => match m.get_mut(&key) {
                None => R::Int(0),
                Some(l) => match l.iter().position(|e| e == a(3).as_bytes()) {
                    None => R::Int(-1),
                    Some(p) => {
                        let at = if a(2) == "AFTER" { p + 1 } else { p };
                        l.insert(at, a(4).as_bytes().to_vec());
                        R::Int(l.len() as i64)
                    }
                },
            },
            "LREM" => match m.get_mut(&key) {
                None => R::Int(0),
                Some(l) => {
                    let count = int(2);
                    let limit = if count == 0 {
                        usize::MAX
                    } else {
                        count.unsigned_abs() as usize
                    };
                    let mut hits: Vec<usize> =
                        (0..l.len()).filter(|&i| l[i] == a(3).as_bytes()).collect();
                    if count < 0 {
                        hits.reverse();
                    }
                    hits.truncate(limit);
                    hits.sort_unstable();
                    for &i in hits.iter().rev() {
                        l.remove(i);
                    }
                    R::Int(hits.len() as i64)
                }
            },
            "LTRIM" => {
                if let Some(l) = m.get_mut(&key) {
                    let keep = norm_range(l.len(), int(2), int(3));
                    *l = keep.into_iter().map(|i| l[i].clone()).collect();
                }
                R::Ok
            }
            "LPOS" => {
                let l = m.get(&key).cloned();
                let (rank, count, maxlen) = (int(4), int(6), int(8));
                let Some(l) = l else {
                    return R::Arr(vec![]);
                };
                let n = l.len();
                let order: Vec<usize> = if rank < 0 {
                    (0..n).rev().collect()
                } else {
                    (0..n).collect()
                };
                let scanned = if maxlen == 0 {
                    n
                } else {
                    (maxlen as usize).min(n)
                };
                let hits: Vec<R> = order[..scanned]
                    .iter()
                    .filter(|&&i| l[i] == a(2).as_bytes())
                    .skip(rank.unsigned_abs() as usize - 1)
                    .take(if count == 0 {
                        usize::MAX
                    } else {
                        count as usize
                    })
                    .map(|&i| R::Int(i as i64))
                    .collect();
                R::Arr(hits)
            }
            "LMOVE" => {
                let dst = a(2).as_bytes().to_vec();
                if !m.contains_key(&key) {
                    return R::Nil;
                }
                if dst == b"s" {
                    return err(WRONGTYPE);
                }
                let l = m.get_mut(&key).unwrap();
                let v = if a(3) == "LEFT" {
                    l.remove(0)
                } else {
                    l.pop().unwrap()
                };
                if l.is_empty() {
                    m.remove(&key);
                }
                let d = m.entry(dst).or_default();
                if a(4) == "LEFT" {
                    d.insert(0, v.clone());
                } else {
                    d.push(v.clone());
                }
                R::Bulk(v)
            }
            "LMPOP" => {
                let numkeys = int(1) as usize;
                let end = a(2 + numkeys);
                let count = int(4 + numkeys) as usize;
                for k in &args[2..2 + numkeys] {
                    let k = k.as_bytes().to_vec();
                    if k == b"s" {
                        return err(WRONGTYPE);
                    }
                    if let Some(l) = m.get_mut(&k) {
                        let n = count.min(l.len());
                        let popped: Vec<Vec<u8>> = if end == "LEFT" {
                            l.drain(..n).collect()
                        } else {
                            l.drain(l.len() - n..).rev().collect()
                        };
                        if l.is_empty() {
                            m.remove(&k);
                        }
                        return R::Arr(vec![R::Bulk(k), to_arr(popped)]);
                    }
                }
                return R::NilArray;
            }
            other => panic!("model: {other}"),
        };
        if m.get(&key).is_some_and(|l| l.is_empty()) {
            m.remove(&key);
        }
        r
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop::sample::select(PKEYS).prop_map(|s| s.to_string())
    }

    fn arb_elem() -> impl Strategy<Value = String> {
        prop::sample::select(ELEMS).prop_map(|s| s.to_string())
    }

    fn arb_end() -> impl Strategy<Value = String> {
        prop::sample::select(&["LEFT", "RIGHT"][..]).prop_map(|s| s.to_string())
    }

    fn arb_op() -> impl Strategy<Value = Vec<String>> {
        let idx = -8i64..8;
        prop_oneof![
            4 => (prop::sample::select(&["LPUSH", "RPUSH", "LPUSHX", "RPUSHX"][..]), arb_key(),
                  prop::collection::vec(arb_elem(), 1..5))
                .prop_map(|(c, k, es)| [vec![c.to_string(), k], es].concat()),
            2 => (prop::sample::select(&["LPOP", "RPOP"][..]), arb_key(), prop::option::of(0usize..6))
                .prop_map(|(c, k, n)| {
                    let mut v = vec![c.to_string(), k];
                    v.extend(n.map(|n| n.to_string()));
                    v
                }),
            1 => arb_key().prop_map(|k| vec!["LLEN".into(), k]),
            2 => (arb_key(), idx.clone(), idx.clone())
                .prop_map(|(k, s, e)| vec!["LRANGE".into(), k, s.to_string(), e.to_string()]),
            1 => (arb_key(), idx.clone())
                .prop_map(|(k, i)| vec!["LINDEX".into(), k, i.to_string()]),
            1 => (arb_key(), idx.clone(), arb_elem())
                .prop_map(|(k, i, v)| vec!["LSET".into(), k, i.to_string(), v]),
            1 => (arb_key(), prop::sample::select(&["BEFORE", "AFTER"][..]), arb_elem(), arb_elem())
                .prop_map(|(k, w, p, v)| vec!["LINSERT".into(), k, w.to_string(), p, v]),
            1 => (arb_key(), -3i64..4, arb_elem())
                .prop_map(|(k, n, v)| vec!["LREM".into(), k, n.to_string(), v]),
            1 => (arb_key(), idx.clone(), idx)
                .prop_map(|(k, s, e)| vec!["LTRIM".into(), k, s.to_string(), e.to_string()]),
            1 => (arb_key(), arb_elem(), prop::sample::select(&[-3i64, -2, -1, 1, 2, 3][..]), 0i64..3, 0i64..5)
                .prop_map(|(k, v, r, c, m)| vec!["LPOS".into(), k, v, "RANK".into(), r.to_string(),
                    "COUNT".into(), c.to_string(), "MAXLEN".into(), m.to_string()]),
            2 => (arb_key(), arb_key(), arb_end(), arb_end())
                .prop_map(|(s, d, f, t)| vec!["LMOVE".into(), s, d, f, t]),
            1 => (prop::collection::vec(arb_key(), 1..4), arb_end(), 1usize..4)
                .prop_map(|(ks, e, n)| {
                    let mut v = vec!["LMPOP".to_string(), ks.len().to_string()];
                    v.extend(ks);
                    v.extend([e, "COUNT".into(), n.to_string()]);
                    v
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // PROPTEST_CASES raises it for a longer soak.
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn lists_match_a_vec_model_and_replay(ops in prop::collection::vec(arb_op(), 1..400)) {
            let mut e = Env::new();
            e.cmd("SET s string");
            let mut m = Model::new();
            for op in &ops {
                let args: Vec<&[u8]> = op.iter().map(|a| a.as_bytes()).collect();
                let got = e.raw(&args);
                let want = model(&mut m, op);
                prop_assert_eq!(&got, &want, "command {:?}", op);
            }
            prop_assert_eq!(e.lists(), m.clone());
            // No empty list is ever kept.
            prop_assert!(e.lists().values().all(|l| !l.is_empty()));
            // Replaying the propagated effects rebuilds the same lists.
            let log = e.log();
            let mut r = Env::new();
            for c in &log {
                let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
                let reply = r.raw(&args);
                prop_assert!(!matches!(reply, R::Err(_)), "replay of {:?}: {:?}", c, reply);
            }
            prop_assert_eq!(r.lists(), m);
        }
    }
}
