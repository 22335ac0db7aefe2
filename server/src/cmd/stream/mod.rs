//! Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID and
//! XREAD (BLOCK too), with Redis 7.0's parsing, replies and errors. The
//! stream itself is `crate::db::stream`.
//!
//! What enters the log is what happened, so the AOF and replicas end up
//! with the same stream: an XADD's generated id is written out, and an
//! approximate trim (`~`, or one stopped by LIMIT) is logged as the exact
//! trim it turned out to be (`MAXLEN = <length after>` or `MINID = <first
//! id after>`), as Redis rewrites them.

use super::server::Suspend;
use super::{errors, Ctx, Replied};
use crate::config::NOTIFY_STREAM;
use crate::db::stream::lp::Elem;
use crate::db::stream::{AppendError, Stream, StreamId, Trim};
use crate::db::{Kind, Value};
use crate::util::parse_i64;

pub mod group;
pub mod info;

pub(super) const INVALID_ID: &str = "Invalid stream ID specified as stream command argument";

/// Redis's `string2ull`: a strict integer that is not negative, else what
/// C's `strtoull` takes (leading blanks, a sign, leading zeros; a minus
/// wraps), up to the first NUL byte.
fn string2ull(s: &[u8]) -> Option<u64> {
    let s = s.split(|&b| b == 0).next().unwrap_or_default();
    if let Some(v) = parse_i64(s) {
        return u64::try_from(v).ok();
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// An id as Redis's `streamGenericParseIDOrReply` reads it: `-`, `+`
/// (unless `strict`), `ms`, `ms-seq`, and with `seq_given` also `ms-*`
/// (then `seq_given` is set false). `missing_seq` is the sequence of a
/// bare `ms`.
pub(super) fn parse_id(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    seq_given: Option<&mut bool>,
) -> Option<StreamId> {
    if arg.len() > 127 {
        return None;
    }
    let arg = arg.split(|&b| b == 0).next().unwrap_or_default();
    if strict && (arg == b"-" || arg == b"+") {
        return None;
    }
    let mut given = true;
    let id = match arg {
        b"-" => StreamId::MIN,
        b"+" => StreamId::MAX,
        _ => {
            let (ms, seq) = match arg.iter().position(|&b| b == b'-') {
                Some(d) => (&arg[..d], Some(&arg[d + 1..])),
                None => (arg, None),
            };
            let ms = string2ull(ms)?;
            let seq = match seq {
                Some(b"*") if seq_given.is_some() => {
                    given = false;
                    0
                }
                Some(s) => string2ull(s)?,
                None => missing_seq,
            };
            StreamId::new(ms, seq)
        }
    };
    if let Some(g) = seq_given {
        *g = given;
    }
    Some(id)
}

/// A strict id or the error sent.
pub(super) fn strict_id(
    ctx: &mut Ctx,
    arg: &[u8],
    seq_given: Option<&mut bool>,
) -> Option<StreamId> {
    let r = parse_id(arg, 0, true, seq_given);
    if r.is_none() {
        ctx.err(INVALID_ID);
    }
    r
}

/// A range bound (`(` for exclusive), or the error sent: the id and
/// whether it excludes.
pub(super) fn interval_id(ctx: &mut Ctx, arg: &[u8], missing_seq: u64) -> Option<(StreamId, bool)> {
    let exclude = arg.len() > 1 && arg[0] == b'(';
    let r = if exclude {
        parse_id(&arg[1..], missing_seq, true, None)
    } else {
        parse_id(arg, missing_seq, false, None)
    };
    match r {
        Some(id) => Some((id, exclude)),
        None => {
            ctx.err(INVALID_ID);
            None
        }
    }
}

/// Writes an id as a bulk string.
pub(super) fn bulk_id(ctx: &mut Ctx, id: StreamId) {
    let mut b = [0u8; 41];
    ctx.out.bulk(id.write(&mut b));
}

/// Writes one entry: `[id, [field, value, ...]]`.
pub(super) fn reply_entry(out: &mut crate::resp::Reply, id: StreamId, fields: &[Elem<'_>]) {
    out.array(2);
    let mut b = [0u8; 41];
    out.bulk(id.write(&mut b));
    out.array(fields.len());
    for f in fields {
        match f {
            Elem::Str(s) => out.bulk(s),
            Elem::Int(v) => out.bulk_i64(*v),
        }
    }
}

/// Writes the entries from `start` to `end` (at most `count`, 0: all), in
/// order or reversed.
pub(super) fn reply_range(
    out: &mut crate::resp::Reply,
    s: &Stream,
    start: StreamId,
    end: StreamId,
    count: u64,
    rev: bool,
) {
    // (The count is known at the end: the entries go to a buffer first.)
    let mut n = 0u64;
    let mut sub = crate::resp::Reply::new(out.resp);
    s.range(start, end, rev, |id, fields| {
        reply_entry(&mut sub, id, fields);
        n += 1;
        count == 0 || n < count
    });
    out.array(n as usize);
    out.raw(&sub.buf);
}

/// The stream at `key` for reading: `Ok(None)` if missing, `Err` after
/// WRONGTYPE.
pub(super) fn read_stream(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::Stream, true)
}

pub(super) fn stream_at<'c>(ctx: &'c mut Ctx, idx: u32) -> &'c Stream {
    match ctx.db().entry(idx).value.as_stream() {
        Some(s) => s,
        None => unreachable_stream(),
    }
}

pub(super) fn stream_mut<'c>(ctx: &'c mut Ctx, idx: u32) -> &'c mut Stream {
    match ctx.db().entry_mut(idx).value.as_stream_mut() {
        Some(s) => s,
        None => unreachable_stream(),
    }
}

/// (The type was checked by the lookup.)
#[cold]
pub(super) fn unreachable_stream() -> ! {
    unreachable!("a key checked to hold a stream holds another type")
}

/// XADD's and XTRIM's options.
struct TrimArgs {
    how: Option<Trim>,
    approx: bool,
    /// Entries a trim may remove at most (0: no limit).
    limit: u64,
    /// Where the threshold argument is (rewritten in the log).
    threshold_at: usize,
    /// Where LIMIT is (left out of the log's exact trim).
    limit_at: Option<usize>,
    no_mkstream: bool,
    /// XADD's id, and whether its sequence was given.
    id: Option<(StreamId, bool)>,
}

/// Parses options from `ctx.args[from..]` as Redis's
/// `streamParseAddOrTrimArgsOrReply`: the position after them (XADD's
/// id position), or the error sent.
fn parse_trim(ctx: &mut Ctx, from: usize, xadd: bool) -> Option<(TrimArgs, usize)> {
    let args = ctx.args;
    let mut t = TrimArgs {
        how: None,
        approx: false,
        limit: 0,
        threshold_at: 0,
        limit_at: None,
        no_mkstream: false,
        id: None,
    };
    let mut limit_given = false;
    let mut i = from;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args[i];
        if xadd && opt == b"*" {
            break;
        } else if (opt.eq_ignore_ascii_case(b"maxlen") || opt.eq_ignore_ascii_case(b"minid"))
            && more > 0
        {
            if t.how.is_some() {
                ctx.err(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                );
                return None;
            }
            t.approx = false;
            let next = args[i + 1];
            if more >= 2 && next == b"~" {
                t.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            let v = args[i + 1];
            if opt.eq_ignore_ascii_case(b"maxlen") {
                let Some(n) = parse_i64(v) else {
                    ctx.err(errors::NOT_INTEGER);
                    return None;
                };
                if n < 0 {
                    ctx.err("The MAXLEN argument must be >= 0.");
                    return None;
                }
                t.how = Some(Trim::MaxLen(n as u64));
            } else {
                let id = strict_id(ctx, v, None)?;
                t.how = Some(Trim::MinId(id));
            }
            i += 1;
            t.threshold_at = i;
        } else if opt.eq_ignore_ascii_case(b"limit") && more > 0 {
            let Some(n) = parse_i64(args[i + 1]) else {
                ctx.err(errors::NOT_INTEGER);
                return None;
            };
            if n < 0 {
                ctx.err("The LIMIT argument must be >= 0.");
                return None;
            }
            t.limit = n as u64;
            t.limit_at = Some(i);
            limit_given = true;
            i += 1;
        } else if xadd && opt.eq_ignore_ascii_case(b"nomkstream") {
            t.no_mkstream = true;
        } else if xadd {
            let mut seq_given = true;
            let id = strict_id(ctx, opt, Some(&mut seq_given))?;
            t.id = Some((id, seq_given));
            break;
        } else {
            ctx.err(errors::SYNTAX);
            return None;
        }
        i += 1;
    }
    if t.limit > 0 && t.how.is_none() {
        ctx.err("syntax error, LIMIT cannot be used without specifying a trimming strategy");
        return None;
    }
    if !xadd && t.how.is_none() {
        ctx.err("syntax error, XTRIM must be called with a trimming strategy");
        return None;
    }
    if ctx.s.replaying {
        // The source logged the exact trim (see the module's comment).
        t.limit = 0;
    } else if limit_given {
        if !t.approx {
            ctx.err("syntax error, LIMIT cannot be used without the special ~ option");
            return None;
        }
    } else if t.approx {
        let per = ctx.set.stream_node.max_entries.saturating_mul(100);
        t.limit = if per <= 0 {
            10_000
        } else {
            per.min(1_000_000) as u64
        };
    }
    Some((t, i))
}

/// Trims `idx`'s stream as `t` says; the number removed.
fn apply_trim(ctx: &mut Ctx, idx: u32, t: &TrimArgs) -> u64 {
    let Some(how) = t.how else {
        return 0;
    };
    stream_mut(ctx, idx).trim(how, t.approx, t.limit)
}

/// The command with an approximate trim written as the exact one it
/// was (and without LIMIT, which an exact trim does not take), and
/// (XADD) the id it used at `id_at`.
fn exact_effect(
    args: &[&[u8]],
    t: &TrimArgs,
    s: &Stream,
    id_at: Option<(usize, StreamId)>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        if t.approx {
            if t.limit_at.is_some_and(|l| i == l || i == l + 1) {
                continue;
            }
            if i + 1 == t.threshold_at {
                out.push(b"=".to_vec());
                continue;
            }
            if i == t.threshold_at {
                out.push(match t.how {
                    Some(Trim::MaxLen(_)) => s.length.to_string().into_bytes(),
                    // (Deleted entries count: a node of them the trim kept
                    // stays on the replica too; an empty stream is
                    // trimmed whole there.)
                    _ => s.first_any().to_string().into_bytes(),
                });
                continue;
            }
        }
        match id_at {
            Some((at, id)) if i == at => out.push(id.to_string().into_bytes()),
            _ => out.push(a.to_vec()),
        }
    }
    out
}

/// A timeout in milliseconds (XREAD's BLOCK): the deadline (0: none), or
/// the error sent (Redis's `getTimeoutFromObjectOrReply` in ms).
pub(super) fn timeout_ms(ctx: &mut Ctx, arg: &[u8]) -> Option<i64> {
    let Some(ms) = parse_i64(arg) else {
        ctx.err("timeout is not an integer or out of range");
        return None;
    };
    super::blocking::deadline(ctx, ms)
}

pub(super) fn propagate_owned(ctx: &mut Ctx, args: &[Vec<u8>]) {
    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    ctx.propagate(&argv);
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]]
/// *|id field value [field value ...]`.
pub fn xadd(ctx: &mut Ctx) {
    let Some((t, id_at)) = parse_trim(ctx, 2, true) else {
        return;
    };
    let fields_at = id_at + 1;
    let n = ctx.args.len();
    if n < fields_at + 2 || (n - fields_at) % 2 == 1 {
        return ctx.err("wrong number of arguments for 'xadd' command");
    }
    if let Some((id, true)) = t.id {
        if id == StreamId::MIN {
            return ctx.err("The ID specified in XADD must be greater than 0-0");
        }
    }
    let key = ctx.args[1];
    let idx = match ctx.lookup_typed(key, Kind::Stream, false) {
        Err(Replied) => return,
        Ok(Some(i)) => i,
        Ok(None) if t.no_mkstream => return ctx.out.null(),
        Ok(None) => ctx.set_key(key, Value::Stream(Box::default()), false),
    };
    let last = stream_at(ctx, idx).last_id;
    if last == StreamId::MAX {
        return ctx.err("The stream has exhausted the last possible ID, unable to add more items");
    }
    let id = match t.id {
        Some((id, true)) => Some(id),
        Some((id, false)) if id.ms == last.ms => {
            if last.seq == u64::MAX {
                None
            } else {
                Some(StreamId::new(id.ms, last.seq + 1))
            }
        }
        Some((id, false)) => Some(id),
        None => {
            let ms = u64::try_from(ctx.now_ms).unwrap_or(0);
            if ms > last.ms {
                Some(StreamId::new(ms, 0))
            } else {
                last.incr()
            }
        }
    };
    let limits = ctx.set.stream_node;
    let args = ctx.args;
    let appended = match id {
        Some(id) => stream_mut(ctx, idx)
            .append(id, &args[fields_at..], limits)
            .map(|()| id),
        // `ms-*` after `ms-18446744073709551615`: Redis 7.0's XADD fails
        // without setting errno, so it answers with its other error.
        None => return ctx.err("Elements are too large to be stored"),
    };
    let id = match appended {
        Ok(id) => id,
        Err(e) => {
            // (As in Redis, a stream this XADD made stays, empty: an
            // append to a new stream cannot fail but for 1 GB of values.)
            return ctx.err(match e {
                AppendError::IdTooSmall => {
                    "The ID specified in XADD is equal or smaller than the target stream top item"
                }
                AppendError::TooLarge => "Elements are too large to be stored",
            });
        }
    };
    bulk_id(ctx, id);
    ctx.notify(NOTIFY_STREAM, "xadd", key);
    if t.how.is_some() && apply_trim(ctx, idx, &t) > 0 {
        ctx.notify(NOTIFY_STREAM, "xtrim", key);
    }
    let id_rewrite = match t.id {
        Some((_, true)) => None,
        _ => Some((id_at, id)),
    };
    if t.approx {
        let effect = exact_effect(ctx.args, &t, stream_at(ctx, idx), id_rewrite);
        propagate_owned(ctx, &effect);
    } else if let Some((at, id)) = id_rewrite {
        // (The common case: a generated id, written in place.)
        let mut b = [0u8; 41];
        let written = id.write(&mut b);
        let argv: smallvec::SmallVec<[&[u8]; 16]> = ctx
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| if i == at { written } else { *a })
            .collect();
        ctx.propagate(&argv);
    } else {
        ctx.propagate_as_is();
    }
}

/// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count]`.
pub fn xtrim(ctx: &mut Ctx) {
    let Some((t, _)) = parse_trim(ctx, 2, false) else {
        return;
    };
    let key = ctx.args[1];
    let idx = match ctx.lookup_typed(key, Kind::Stream, false) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let removed = apply_trim(ctx, idx, &t);
    if removed > 0 {
        ctx.notify(NOTIFY_STREAM, "xtrim", key);
        if t.approx {
            let effect = exact_effect(ctx.args, &t, stream_at(ctx, idx), None);
            propagate_owned(ctx, &effect);
        } else {
            ctx.propagate_as_is();
        }
    }
    ctx.out.int(removed as i64);
}

/// `XLEN key`.
pub fn xlen(ctx: &mut Ctx) {
    let Ok(idx) = read_stream(ctx, ctx.args[1]) else {
        return;
    };
    let n = idx.map_or(0, |i| stream_at(ctx, i).len());
    ctx.out.int(n as i64);
}

pub fn xrange(ctx: &mut Ctx) {
    range(ctx, false)
}

pub fn xrevrange(ctx: &mut Ctx) {
    range(ctx, true)
}

/// `XRANGE key start end [COUNT n]`, `XREVRANGE key end start [COUNT n]`.
fn range(ctx: &mut Ctx, rev: bool) {
    let (start_arg, end_arg) = if rev {
        (ctx.args[3], ctx.args[2])
    } else {
        (ctx.args[2], ctx.args[3])
    };
    let Some((mut start, start_ex)) = interval_id(ctx, start_arg, 0) else {
        return;
    };
    if start_ex {
        match start.incr() {
            Some(s) => start = s,
            None => return ctx.err("invalid start ID for the interval"),
        }
    }
    let Some((mut end, end_ex)) = interval_id(ctx, end_arg, u64::MAX) else {
        return;
    };
    if end_ex {
        match end.decr() {
            Some(e) => end = e,
            None => return ctx.err("invalid end ID for the interval"),
        }
    }
    let mut count: i64 = -1;
    let mut j = 4;
    while j < ctx.args.len() {
        if ctx.args[j].eq_ignore_ascii_case(b"count") && j + 1 < ctx.args.len() {
            let Some(c) = ctx.arg_i64(j + 1) else {
                return;
            };
            count = c.max(0);
            j += 2;
        } else {
            return ctx.err(errors::SYNTAX);
        }
    }
    let idx = match read_stream(ctx, ctx.args[1]) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.empty_array(),
        Ok(Some(i)) => i,
    };
    if count == 0 {
        return ctx.out.null_array();
    }
    let count = if count < 0 { 0 } else { count as u64 };
    let s: &Stream = match ctx.t.ks.dbs[ctx.s.db].entry(idx).value.as_stream() {
        Some(s) => s,
        None => unreachable_stream(),
    };
    reply_range(ctx.out, s, start, end, count, rev);
}

/// `XDEL key id [id ...]`.
pub fn xdel(ctx: &mut Ctx) {
    // As Redis 7.0: the key first (missing: 0, whatever the ids), then
    // every id before anything is deleted.
    let key = ctx.args[1];
    let idx = match ctx.lookup_typed(key, Kind::Stream, false) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let mut ids = Vec::with_capacity(ctx.args.len() - 2);
    for j in 2..ctx.args.len() {
        let Some(id) = strict_id(ctx, ctx.args[j], None) else {
            return;
        };
        ids.push(id);
    }
    let deleted = stream_mut(ctx, idx).xdel(&ids);
    if deleted > 0 {
        ctx.notify(NOTIFY_STREAM, "xdel", key);
        ctx.propagate_as_is();
    }
    ctx.out.int(deleted as i64);
}

/// `XSETID key last-id [ENTRIESADDED n] [MAXDELETEDID id]`.
pub fn xsetid(ctx: &mut Ctx) {
    let Some(id) = strict_id(ctx, ctx.args[2], None) else {
        return;
    };
    let mut entries_added: i64 = -1;
    let mut max_deleted = StreamId::MIN;
    let mut i = 3;
    while i < ctx.args.len() {
        let more = ctx.args.len() - 1 - i;
        let opt = ctx.args[i];
        if opt.eq_ignore_ascii_case(b"entriesadded") && more > 0 {
            let Some(n) = ctx.arg_i64(i + 1) else {
                return;
            };
            if n < 0 {
                return ctx.err("entries_added must be positive");
            }
            entries_added = n;
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"maxdeletedid") && more > 0 {
            let Some(m) = strict_id(ctx, ctx.args[i + 1], None) else {
                return;
            };
            if id < m {
                return ctx.err(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                );
            }
            max_deleted = m;
            i += 2;
        } else {
            return ctx.err(errors::SYNTAX);
        }
    }
    let key = ctx.args[1];
    let idx = match ctx.lookup_typed(key, Kind::Stream, false) {
        Err(Replied) => return,
        Ok(None) => return ctx.err(errors::NO_SUCH_KEY),
        Ok(Some(i)) => i,
    };
    // (Redis 7.0 does not compare it with the greatest deleted id.)
    let s = stream_at(ctx, idx);
    if s.length > 0 {
        let top = s.edge(true).unwrap_or_default();
        if id < top {
            return ctx
                .err("The ID specified in XSETID is smaller than the target stream top item");
        }
        if entries_added != -1 && s.length > entries_added as u64 {
            return ctx.err(
                "The entries_added specified in XSETID is smaller than the target stream length",
            );
        }
    }
    let s = stream_mut(ctx, idx);
    s.last_id = id;
    if entries_added != -1 {
        s.entries_added = entries_added as u64;
    }
    if max_deleted != StreamId::MIN {
        s.max_deleted = max_deleted;
    }
    ctx.out.ok();
    ctx.notify(NOTIFY_STREAM, "xsetid", key);
    // Redis 7.0's XSETID notifies and replicates but does not signal the
    // key: no WATCH fails, no cached copy is invalidated.
    ctx.propagate_quiet_as_is();
}

/// XREAD's and XREADGROUP's parsed request.
pub(super) struct Read {
    pub count: u64,
    /// The deadline when it may block (0: forever).
    pub block: Option<i64>,
    /// Where the keys start, and how many.
    pub keys_at: usize,
    pub n: usize,
    /// XREADGROUP's GROUP: where the group and consumer names are.
    pub group: Option<(usize, usize)>,
    pub noack: bool,
}

/// Parses XREAD's and XREADGROUP's options as Redis's `xreadCommand`
/// (one parser for both: each refuses the other's options by name).
/// `blocked`: re-read for a client that blocked (its timeout was checked
/// then and is not read again).
pub(super) fn parse_read(ctx: &mut Ctx, blocked: bool) -> Option<Read> {
    let xreadgroup = ctx.spec.name == "xreadgroup";
    let mut count = 0u64;
    let mut block = None;
    let mut group = None;
    let mut noack = false;
    let mut i = 1;
    while i < ctx.args.len() {
        let more = ctx.args.len() - 1 - i;
        let o = ctx.args[i];
        if o.eq_ignore_ascii_case(b"block") && more > 0 {
            if ctx.s.in_script {
                // (Redis's words, with the command's name as typed.)
                let mut m = ctx.args[0].to_vec();
                m.extend_from_slice(b" command is not allowed with BLOCK option from scripts");
                ctx.err_bytes(&m);
                return None;
            }
            block = Some(if blocked {
                0
            } else {
                timeout_ms(ctx, ctx.args[i + 1])?
            });
            i += 2;
        } else if o.eq_ignore_ascii_case(b"count") && more > 0 {
            count = ctx.arg_i64(i + 1)?.max(0) as u64;
            i += 2;
        } else if o.eq_ignore_ascii_case(b"streams") && more > 0 {
            let keys_at = i + 1;
            let rest = ctx.args.len() - keys_at;
            if !rest.is_multiple_of(2) {
                ctx.err("Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.");
                return None;
            }
            return Some(Read {
                count,
                block,
                keys_at,
                n: rest / 2,
                group,
                noack,
            });
        } else if o.eq_ignore_ascii_case(b"group") && more >= 2 {
            if !xreadgroup {
                ctx.err(
                    "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                );
                return None;
            }
            group = Some((i + 1, i + 2));
            i += 3;
        } else if o.eq_ignore_ascii_case(b"noack") {
            if !xreadgroup {
                ctx.err(
                    "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                );
                return None;
            }
            noack = true;
            i += 1;
        } else {
            ctx.err(errors::SYNTAX);
            return None;
        }
    }
    ctx.err(errors::SYNTAX);
    None
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS key [key ...] id [id ...]`.
pub fn xread(ctx: &mut Ctx) {
    let Some(r) = parse_read(ctx, false) else {
        return;
    };
    let mut after = Vec::with_capacity(r.n);
    for k in 0..r.n {
        let key = ctx.args[r.keys_at + k];
        let arg = ctx.args[r.keys_at + r.n + k];
        let idx = match ctx.lookup_read(key) {
            Some(i) if ctx.db().entry(i).value.kind() != Kind::Stream => {
                return ctx.wrongtype();
            }
            other => other,
        };
        let id = if arg == b"$" {
            idx.map_or(StreamId::MIN, |i| stream_at(ctx, i).last_id)
        } else if arg == b">" {
            return ctx.err("The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.");
        } else {
            let Some(id) = strict_id(ctx, arg, None) else {
                return;
            };
            id
        };
        after.push(id);
    }
    let served = reply_new_entries(ctx, &r, &after, None);
    if served {
        return;
    }
    match r.block {
        Some(deadline) if !ctx.s.in_exec => {
            // Blocks with `$` resolved: what arrives after now.
            let mut args: Vec<Vec<u8>> = ctx.args.iter().map(|a| a.to_vec()).collect();
            for (k, id) in after.iter().enumerate() {
                args[r.keys_at + r.n + k] = id.to_string().into_bytes();
            }
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let keys = ctx.args[r.keys_at..r.keys_at + r.n]
                .iter()
                .map(|k| k.to_vec())
                .collect();
            crate::blocking::block(ctx.t, ctx.s, &argv, keys);
            ctx.suspend = Some(Suspend::Blocked {
                deadline_ms: deadline,
            });
        }
        _ => ctx.out.null_array(),
    }
}

/// Replies with the entries after `after[k]` of each stream that has
/// some; false (nothing written) if none has. For a client that blocked
/// (`only`: the key that changed), as Redis 7.0 serves one: that key once,
/// when the stream's last id passed the one it waits after (the entries
/// may since be deleted: the list is then empty).
fn reply_new_entries(ctx: &mut Ctx, r: &Read, after: &[StreamId], only: Option<&[u8]>) -> bool {
    let mut body = crate::resp::Reply::new(ctx.out.resp);
    let mut served = 0;
    for (k, gt) in after.iter().enumerate() {
        let key = ctx.args[r.keys_at + k];
        if only.is_some_and(|o| o != key) || (only.is_some() && served > 0) {
            continue;
        }
        let db = ctx.s.db;
        let found = ctx.t.ks.dbs[db].find(key);
        // Redis looks every key up a second time to serve it (a hit or a
        // miss more in INFO); a blocked client is served without.
        if only.is_none() {
            ctx.count_read(key, found.is_some());
        }
        let Some(idx) = found else {
            continue;
        };
        let Some(s) = ctx.t.ks.dbs[db].entry(idx).value.as_stream() else {
            continue;
        };
        let has_new = if only.is_some() {
            s.last_id > *gt
        } else {
            s.length > 0 && s.edge(true).is_some_and(|top| top > *gt)
        };
        if !has_new {
            continue;
        }
        let Some(start) = gt.incr() else {
            continue;
        };
        stream_header(&mut body, key);
        reply_range(&mut body, s, start, StreamId::MAX, r.count, false);
        served += 1;
    }
    finish_streams(ctx, served, &body)
}

/// Starts one stream's part of an XREAD/XREADGROUP reply: `[key, ...]`
/// in RESP2, a map key in RESP3 (its entries follow).
pub(super) fn stream_header(body: &mut crate::resp::Reply, key: &[u8]) {
    if body.resp == 2 {
        body.array(2);
    }
    body.bulk(key);
}

/// Writes an XREAD/XREADGROUP reply of `served` streams from `body`: an
/// array (RESP2) or a map (RESP3); false, nothing written, when none.
pub(super) fn finish_streams(ctx: &mut Ctx, served: usize, body: &crate::resp::Reply) -> bool {
    if served == 0 {
        return false;
    }
    if ctx.out.resp == 2 {
        ctx.out.array(served);
    } else {
        ctx.out.map(served);
    }
    ctx.out.raw(&body.buf);
    true
}

/// Serves a client blocked in XREAD once `key` changed: true if the
/// stream's last id is now past the id it waits after.
pub fn serve_xread(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some(r) = parse_read(ctx, true) else {
        return false;
    };
    let mut after = Vec::with_capacity(r.n);
    for k in 0..r.n {
        match parse_id(ctx.args[r.keys_at + r.n + k], 0, true, None) {
            Some(id) => after.push(id),
            None => return false,
        }
    }
    reply_new_entries(ctx, &r, &after, Some(key))
}
