//! Consumer-group commands: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM and
//! XAUTOCLAIM, with Redis 7.0's parsing, replies and errors. The groups
//! themselves are `crate::db::stream::group`.
//!
//! What enters the log is what happened, as Redis propagates it: a read
//! by a group is logged as one `XCLAIM ... FORCE JUSTID LASTID` per entry
//! it delivered (the entry, its owner, delivery time and count) and an
//! `XGROUP SETID ... ENTRIESREAD` for the group's new position; a claim
//! as the same `XCLAIM` per entry claimed (or dropped because it was
//! deleted). Replaying those gives replicas and restarts the same PELs,
//! whatever time they run at.

use super::{
    bulk_id, interval_id, parse_id, reply_entry, stream_at, stream_mut, strict_id,
    unreachable_stream, INVALID_ID,
};
use crate::cmd::server::Suspend;
use crate::cmd::{errors, Ctx, Replied};
use crate::config::NOTIFY_STREAM;
use crate::db::stream::group::{Group, Nack, ENTRIES_READ_UNKNOWN};
use crate::db::stream::{Stream, StreamId};
use crate::db::{Kind, Value};
use crate::resp::Reply;

/// Writes `-<code> <text>` where the text names client arguments, each
/// up to its first NUL byte (Redis formats them with `%s`).
fn error_named(ctx: &mut Ctx, code: &str, parts: &[&[u8]]) {
    let mut m = code.as_bytes().to_vec();
    m.push(b' ');
    for p in parts {
        m.extend_from_slice(crate::util::c_str(p, usize::MAX));
    }
    ctx.error_bytes(&m);
}

/// `NOGROUP No such key 'k' or consumer group 'g'` (and `tail`).
fn no_key_or_group(ctx: &mut Ctx, key: &[u8], group: &[u8], tail: &[u8]) {
    error_named(
        ctx,
        "NOGROUP",
        &[
            b"No such key '",
            key,
            b"' or consumer group '",
            group,
            b"'",
            tail,
        ],
    );
}

fn group_of<'c>(s: &'c Stream, name: &[u8]) -> Option<&'c Group> {
    s.groups.get(name)
}

/// The group `name` of the stream at `idx` (checked to exist).
fn group_mut<'c>(ctx: &'c mut Ctx, idx: u32, name: &[u8]) -> &'c mut Group {
    match stream_mut(ctx, idx).groups.get_mut(name) {
        Some(g) => g,
        None => unreachable_stream(),
    }
}

/// Logs `XCLAIM key group consumer 0 id TIME t RETRYCOUNT n FORCE JUSTID
/// LASTID last`: the state of pending entry `id` after this command
/// (Redis's `streamPropagateXCLAIM`). For an entry no longer in the
/// stream, the replay drops it from the PEL as the claim did.
fn log_claim(ctx: &mut Ctx, key: &[u8], group: &[u8], id: StreamId, nack: &Nack, last: StreamId) {
    let (mut a, mut b, mut c, mut d) = ([0u8; 41], [0u8; 41], [0u8; 20], [0u8; 20]);
    let argv: [&[u8]; 14] = [
        b"XCLAIM",
        key,
        group,
        &nack.consumer[..],
        b"0",
        id.write(&mut a),
        b"TIME",
        crate::util::fmt_i64(nack.delivery_time, &mut c),
        b"RETRYCOUNT",
        crate::util::fmt_i64(nack.delivery_count as i64, &mut d),
        b"FORCE",
        b"JUSTID",
        b"LASTID",
        last.write(&mut b),
    ];
    ctx.propagate_quiet(&argv);
}

/// Logs `XGROUP SETID key group last ENTRIESREAD n` (Redis's
/// `streamPropagateGroupID`).
fn log_group_position(ctx: &mut Ctx, key: &[u8], group: &[u8], g_last: StreamId, read: i64) {
    let (mut a, mut b) = ([0u8; 41], [0u8; 20]);
    ctx.propagate_quiet(&[
        b"XGROUP",
        b"SETID",
        key,
        group,
        g_last.write(&mut a),
        b"ENTRIESREAD",
        crate::util::fmt_i64(read, &mut b),
    ]);
}

/// Runs `f` with the log collecting its effects, so that several are
/// written as one MULTI/EXEC (Redis wraps a command's propagated
/// effects so) unless a transaction already collects them.
fn as_one_effect<R>(ctx: &mut Ctx, f: impl FnOnce(&mut Ctx) -> R) -> R {
    let own = !ctx.t.log.in_tx();
    if own {
        ctx.t.log.begin_tx();
    }
    let r = f(ctx);
    if own {
        ctx.t.log.commit_tx();
    }
    r
}

// ---- XGROUP ----

/// Options after XGROUP CREATE/SETID's id: MKSTREAM (CREATE only) and
/// ENTRIESREAD.
fn parse_group_options(ctx: &mut Ctx, create: bool) -> Option<(bool, i64)> {
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_UNKNOWN;
    let mut i = 5;
    while i < ctx.args.len() {
        let a = ctx.args[i];
        if create && a.eq_ignore_ascii_case(b"mkstream") {
            mkstream = true;
            i += 1;
        } else if a.eq_ignore_ascii_case(b"entriesread") && i + 1 < ctx.args.len() {
            let n = ctx.arg_i64(i + 1)?;
            if n < 0 && n != ENTRIES_READ_UNKNOWN {
                ctx.err("value for ENTRIESREAD must be positive or -1");
                return None;
            }
            entries_read = n;
            i += 2;
        } else {
            crate::cmd::client::subcommand_syntax_error(ctx);
            return None;
        }
    }
    Some((mkstream, entries_read))
}

/// The stream key of an XGROUP subcommand for writing: `Ok(None)` if
/// missing, `Err` after WRONGTYPE.
fn xgroup_key(ctx: &mut Ctx) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(ctx.args[2], Kind::Stream, false)
}

/// `NOGROUP No such consumer group 'g' for key name 'k'` (the key and
/// group at arguments 2 and 3: XGROUP's, XINFO CONSUMERS').
pub(super) fn no_group(ctx: &mut Ctx) {
    let (key, group) = (ctx.args[2], ctx.args[3]);
    error_named(
        ctx,
        "NOGROUP",
        &[
            b"No such consumer group '",
            group,
            b"' for key name '",
            key,
            b"'",
        ],
    );
}

const REQUIRES_KEY: &str = "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.";

/// The stream and group an XGROUP subcommand other than CREATE works on,
/// or the error sent.
fn existing_group(ctx: &mut Ctx) -> Option<u32> {
    let idx = match xgroup_key(ctx) {
        Err(Replied) => return None,
        Ok(i) => i,
    };
    let name = ctx.args[3];
    let has = idx.is_some_and(|i| group_of(stream_at(ctx, i), name).is_some());
    match idx {
        Some(i) if has => Some(i),
        Some(_) => {
            no_group(ctx);
            None
        }
        None => {
            ctx.err(REQUIRES_KEY);
            None
        }
    }
}

/// `XGROUP CREATE key group id|$ [MKSTREAM] [ENTRIESREAD n]`.
pub fn xgroup_create(ctx: &mut Ctx) {
    // Redis's order: the options (a bad ENTRIESREAD value), the key, then
    // the number of arguments.
    let Some((mkstream, entries_read)) = parse_group_options(ctx, true) else {
        return;
    };
    let idx = match xgroup_key(ctx) {
        Err(Replied) => return,
        Ok(i) => i,
    };
    if idx.is_none() && !mkstream {
        return ctx.err(REQUIRES_KEY);
    }
    if ctx.args.len() > 8 {
        return crate::cmd::client::subcommand_syntax_error(ctx);
    }
    let id = if ctx.args[4] == b"$" {
        idx.map_or(StreamId::MIN, |i| stream_at(ctx, i).last_id)
    } else {
        let Some(id) = strict_id(ctx, ctx.args[4], None) else {
            return;
        };
        id
    };
    let key = ctx.args[2];
    let made = idx.is_none();
    let idx = match idx {
        Some(i) => i,
        None => ctx.set_key(key, Value::Stream(Box::default()), false),
    };
    let name = ctx.args[3];
    let s = stream_mut(ctx, idx);
    if s.groups.contains_key(name) {
        return ctx.error("BUSYGROUP Consumer Group name already exists");
    }
    s.groups.insert(name.to_vec(), Group::new(id, entries_read));
    ctx.out.ok();
    ctx.notify(NOTIFY_STREAM, "xgroup-create", key);
    // (A stream MKSTREAM made is a new key; a group alone is not a change
    // of the key's value.)
    if made {
        ctx.propagate_as_is();
    } else {
        ctx.propagate_quiet_as_is();
    }
}

/// `XGROUP SETID key group id|$ [ENTRIESREAD n]`.
pub fn xgroup_setid(ctx: &mut Ctx) {
    // Redis's order: the options, the key and group, then the number of
    // arguments.
    let Some((_, entries_read)) = parse_group_options(ctx, false) else {
        return;
    };
    let Some(idx) = existing_group(ctx) else {
        return;
    };
    if ctx.args.len() != 5 && ctx.args.len() != 7 {
        return crate::cmd::client::subcommand_syntax_error(ctx);
    }
    let id = if ctx.args[4] == b"$" {
        stream_at(ctx, idx).last_id
    } else {
        match parse_id(ctx.args[4], 0, false, None) {
            Some(id) => id,
            None => return ctx.err(INVALID_ID),
        }
    };
    let name = ctx.args[3];
    let g = group_mut(ctx, idx, name);
    g.last_id = id;
    g.entries_read = entries_read;
    ctx.out.ok();
    ctx.notify(NOTIFY_STREAM, "xgroup-setid", ctx.args[2]);
    ctx.propagate_quiet_as_is();
}

/// `XGROUP DESTROY key group`: clients blocked reading for the group are
/// answered NOGROUP.
pub fn xgroup_destroy(ctx: &mut Ctx) {
    let idx = match xgroup_key(ctx) {
        Err(Replied) => return,
        Ok(None) => return ctx.err(REQUIRES_KEY),
        Ok(Some(i)) => i,
    };
    let name = ctx.args[3];
    if stream_mut(ctx, idx).groups.remove(name).is_none() {
        return ctx.out.int(0);
    }
    ctx.out.int(1);
    ctx.notify(NOTIFY_STREAM, "xgroup-destroy", ctx.args[2]);
    ctx.propagate_quiet_as_is();
    // Its blocked readers are answered NOGROUP.
    let (db, key) = (ctx.s.db, ctx.args[2]);
    ctx.t.signal_ready(db, key);
}

/// `XGROUP CREATECONSUMER key group consumer`: 1 if made, 0 if it was.
pub fn xgroup_createconsumer(ctx: &mut Ctx) {
    let Some(idx) = existing_group(ctx) else {
        return;
    };
    let (name, consumer, now) = (ctx.args[3], ctx.args[4], ctx.now_ms);
    let (_, created) = group_mut(ctx, idx, name).consumer_or_create(consumer, now);
    ctx.out.int(i64::from(created));
    if created {
        ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", ctx.args[2]);
        ctx.propagate_quiet_as_is();
    }
}

/// `XGROUP DELCONSUMER key group consumer`: the number of entries it
/// had pending (they are dropped).
pub fn xgroup_delconsumer(ctx: &mut Ctx) {
    let Some(idx) = existing_group(ctx) else {
        return;
    };
    let (name, consumer) = (ctx.args[3], ctx.args[4]);
    match group_mut(ctx, idx, name).delete_consumer(consumer) {
        None => ctx.out.int(0),
        Some(n) => {
            ctx.out.int(n as i64);
            ctx.notify(NOTIFY_STREAM, "xgroup-delconsumer", ctx.args[2]);
            ctx.propagate_quiet_as_is();
        }
    }
}

pub fn xgroup_help(ctx: &mut Ctx) {
    crate::cmd::command::reply_help_ending(
        ctx,
        "XGROUP",
        &[
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
        ],
        "    Prints this help.",
    );
}

// ---- XREADGROUP ----

/// What one stream of an XREADGROUP asks: new entries (`>`) or the
/// consumer's history after an id.
#[derive(Clone, Copy)]
enum Want {
    New,
    History(StreamId),
}

/// `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS
/// key [key ...] id [id ...]`.
pub fn xreadgroup(ctx: &mut Ctx) {
    let Some(r) = super::parse_read(ctx, false) else {
        return;
    };
    let Some((group_at, _)) = r.group else {
        return ctx.err("Missing GROUP option for XREADGROUP");
    };
    let group = ctx.args[group_at];
    let mut wants = Vec::with_capacity(r.n);
    for k in 0..r.n {
        let key = ctx.args[r.keys_at + k];
        let arg = ctx.args[r.keys_at + r.n + k];
        let idx = match ctx.lookup_read(key) {
            Some(i) if ctx.db().entry(i).value.kind() != Kind::Stream => {
                return ctx.wrongtype();
            }
            other => other,
        };
        let has_group = idx.is_some_and(|i| group_of(stream_at(ctx, i), group).is_some());
        if !has_group {
            return no_key_or_group(ctx, key, group, b" in XREADGROUP with GROUP option");
        }
        if arg == b"$" {
            return ctx.err("The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.");
        }
        if arg == b">" {
            wants.push(Want::New);
            continue;
        }
        let Some(id) = strict_id(ctx, arg, None) else {
            return;
        };
        wants.push(Want::History(id));
    }
    let served = as_one_effect(ctx, |ctx| serve_group(ctx, &r, &wants, None));
    if served {
        return;
    }
    match r.block {
        Some(deadline) if !ctx.s.in_exec => {
            let keys = ctx.args[r.keys_at..r.keys_at + r.n]
                .iter()
                .map(|k| k.to_vec())
                .collect();
            let args = ctx.args;
            crate::blocking::block(ctx.t, ctx.s, args, keys);
            ctx.suspend = Some(Suspend::Blocked {
                deadline_ms: deadline,
            });
        }
        _ => ctx.out.null_array(),
    }
}

/// Serves an XREADGROUP: for each stream, the consumer's history, or the
/// entries after the group's last id if there are any (`only`: for a
/// client that blocked, just that key, new entries only). The consumer is
/// made where missing, and seen now. False (nothing written) if no stream
/// had anything.
fn serve_group(ctx: &mut Ctx, r: &super::Read, wants: &[Want], only: Option<&[u8]>) -> bool {
    let Some((group_at, consumer_at)) = r.group else {
        return false;
    };
    let (group, consumer) = (ctx.args[group_at], ctx.args[consumer_at]);
    let mut body = Reply::new(ctx.out.resp);
    let mut served = 0;
    let now = ctx.now_ms;
    for (k, want) in wants.iter().enumerate() {
        let key = ctx.args[r.keys_at + k];
        if only.is_some_and(|o| o != key) {
            continue;
        }
        let db = ctx.s.db;
        let found = ctx.t.ks.dbs[db].find(key);
        // (A second lookup, as Redis's, counted; not for a blocked client.)
        if only.is_none() {
            ctx.count_read(key, found.is_some());
        }
        let Some(idx) = found else {
            continue;
        };
        let Some(s) = ctx.t.ks.dbs[db].entry(idx).value.as_stream() else {
            continue;
        };
        let Some(g) = group_of(s, group) else {
            continue;
        };
        // Where this stream is read from, if it is: the history always
        // (after the greatest id, Redis's increment wraps to 0-0), new
        // entries when the group is behind the last one.
        // New entries are read at once (one walk of the node): none
        // there, the stream is not served, unless for a client that
        // blocked, which is served once the stream's last id passed its
        // group's (the entries may be gone: an empty list).
        let (start, new) = match *want {
            Want::History(_) if only.is_some() => continue,
            Want::History(after) => (after.incr().unwrap_or(StreamId::MIN), None),
            Want::New => {
                let last = g.last_id;
                let Some(start) = last.incr() else {
                    continue;
                };
                if only.is_some() && s.last_id <= last {
                    continue;
                }
                let read = read_new(s, start, r.count);
                if read.0.is_empty() && only.is_none() {
                    continue;
                }
                (start, Some(read))
            }
        };
        // The consumer is made when it is served (seen now).
        let (c, created) = group_mut(ctx, idx, group).consumer_or_create(consumer, now);
        c.seen_time = now;
        if created {
            ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", key);
            if r.noack {
                ctx.propagate_quiet(&[b"XGROUP", b"CREATECONSUMER", key, group, consumer]);
            }
        }
        super::stream_header(&mut body, key);
        match new {
            None => history(ctx, idx, key, group, consumer, start, r.count, &mut body),
            Some((ids, entries)) => {
                body.array(ids.len());
                body.raw(&entries.buf);
                deliver(ctx, idx, key, group, consumer, &ids, r.noack);
            }
        }
        served += 1;
        if only.is_some() {
            break;
        }
    }
    super::finish_streams(ctx, served, &body)
}

/// The consumer's pending entries from `start` (at most `count`, 0: all),
/// each delivered again (its time and count move), or `[id, nil]` for
/// one deleted from the stream since.
///
/// Redis 7.0 does not propagate these moves, so its replicas and its
/// AOF keep the earlier delivery time and count; anykv logs each as the
/// `XCLAIM` a delivery is logged as, so that a replica taking over, or a
/// restart, hands out the same counts (which consumers use to give up on
/// poison entries).
#[allow(clippy::too_many_arguments)]
fn history(
    ctx: &mut Ctx,
    idx: u32,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    start: StreamId,
    count: u64,
    body: &mut Reply,
) {
    let now = ctx.now_ms;
    let s = stream_mut(ctx, idx);
    let Some(g) = s.groups.get(group) else {
        return;
    };
    let ids: Vec<StreamId> = g
        .consumers
        .get(consumer)
        .map(|c| {
            c.pel
                .range(start..)
                .take(if count == 0 {
                    usize::MAX
                } else {
                    count as usize
                })
                .copied()
                .collect()
        })
        .unwrap_or_default();
    body.array(ids.len());
    let mut delivered = Vec::with_capacity(ids.len());
    for id in ids {
        let mut found = false;
        s.range(id, id, false, |id, fields| {
            reply_entry(body, id, fields);
            found = true;
            false
        });
        if found {
            delivered.push(id);
        } else {
            body.array(2);
            let mut b = [0u8; 41];
            body.bulk(id.write(&mut b));
            body.null_array();
        }
    }
    for id in delivered {
        let g = group_mut(ctx, idx, group);
        let Some(n) = g.pel.get_mut(&id) else {
            continue;
        };
        n.delivery_time = now;
        n.delivery_count = n.delivery_count.saturating_add(1);
        let (nack, last) = (n.clone(), g.last_id);
        log_claim(ctx, key, group, id, &nack, last);
    }
}

/// The entries from `start` on (at most `count`, 0: all): their ids,
/// and their reply (without its array header).
fn read_new(s: &Stream, start: StreamId, count: u64) -> (smallvec::SmallVec<[StreamId; 8]>, Reply) {
    let mut ids = smallvec::SmallVec::new();
    let mut entries = Reply::new(2);
    s.range(start, StreamId::MAX, false, |id, fields| {
        reply_entry(&mut entries, id, fields);
        ids.push(id);
        count == 0 || (ids.len() as u64) < count
    });
    (ids, entries)
}

/// Delivers entries `ids` to the consumer: the group moves past them
/// and, unless `noack`, each becomes the consumer's pending entry (taken
/// from another consumer if one had it).
fn deliver(
    ctx: &mut Ctx,
    idx: u32,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    ids: &[StreamId],
    noack: bool,
) {
    let now = ctx.now_ms;
    let counts = stream_at(ctx, idx).counts();
    let Some(name) = group_mut(ctx, idx, group).name_of(consumer) else {
        return;
    };
    let mut moved = false;
    for &id in ids {
        let g = group_mut(ctx, idx, group);
        moved |= counts.advance(g, id);
        if noack {
            continue;
        }
        g.assign_named(id, &name, now, 1);
        let nack = Nack {
            delivery_time: now,
            delivery_count: 1,
            consumer: name.clone(),
        };
        let last = g.last_id;
        log_claim(ctx, key, group, id, &nack, last);
    }
    if moved {
        let g = group_mut(ctx, idx, group);
        let (last, read) = (g.last_id, g.entries_read);
        log_group_position(ctx, key, group, last, read);
    }
}

/// Serves a client blocked in XREADGROUP once `key` changed: the new
/// entries for its group, or an error if the stream (deleted, replaced,
/// flushed, swapped away) or the group went away meanwhile, as Redis 7.0
/// answers.
pub fn serve_xreadgroup(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some(r) = super::parse_read(ctx, true) else {
        return false;
    };
    let Some((group_at, _)) = r.group else {
        return false;
    };
    let group = ctx.args[group_at];
    let db = ctx.s.db;
    // (A stream whose TTL passed is gone, as a read would find it.)
    let live = ctx.t.ks.dbs[db]
        .find(key)
        .filter(|&i| !ctx.expire_if_needed(db, i));
    let stream = live.and_then(|i| ctx.t.ks.dbs[db].entry(i).value.as_stream());
    match stream {
        None => {
            ctx.error("UNBLOCKED the stream key no longer exists");
            return true;
        }
        Some(s) if !s.groups.contains_key(group) => {
            ctx.error("NOGROUP the consumer group this client was blocked on no longer exists");
            return true;
        }
        Some(_) => {}
    }
    let wants = vec![Want::New; r.n];
    as_one_effect(ctx, |ctx| serve_group(ctx, &r, &wants, Some(key)))
}

// ---- XACK, XPENDING ----

/// `XACK key group id [id ...]`: the number acknowledged.
pub fn xack(ctx: &mut Ctx) {
    let idx = match ctx.lookup_typed(ctx.args[1], Kind::Stream, true) {
        Err(Replied) => return,
        Ok(i) => i,
    };
    let group = ctx.args[2];
    let Some(idx) = idx.filter(|&i| group_of(stream_at(ctx, i), group).is_some()) else {
        return ctx.out.int(0);
    };
    let mut ids = Vec::with_capacity(ctx.args.len() - 3);
    for j in 3..ctx.args.len() {
        let Some(id) = strict_id(ctx, ctx.args[j], None) else {
            return;
        };
        ids.push(id);
    }
    let g = group_mut(ctx, idx, group);
    let acked = ids.into_iter().filter(|&id| g.ack(id)).count();
    ctx.out.int(acked as i64);
    if acked > 0 {
        ctx.propagate_quiet_as_is();
    }
}

/// `XPENDING key group [[IDLE min-idle] start end count [consumer]]`.
pub fn xpending(ctx: &mut Ctx) {
    let argc = ctx.args.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return ctx.err(errors::SYNTAX);
    }
    let mut min_idle = 0i64;
    let mut range = None;
    let mut consumer = None;
    if argc >= 6 {
        let mut at = 3;
        if ctx.args[3].eq_ignore_ascii_case(b"idle") {
            let Some(v) = ctx.arg_i64(4) else {
                return;
            };
            min_idle = v;
            if argc < 8 {
                return ctx.err(errors::SYNTAX);
            }
            at += 2;
        }
        let Some(count) = ctx.arg_i64(at + 2) else {
            return;
        };
        let Some((mut start, start_ex)) = interval_id(ctx, ctx.args[at], 0) else {
            return;
        };
        if start_ex {
            match start.incr() {
                Some(s) => start = s,
                None => return ctx.err("invalid start ID for the interval"),
            }
        }
        let Some((mut end, end_ex)) = interval_id(ctx, ctx.args[at + 1], u64::MAX) else {
            return;
        };
        if end_ex {
            match end.decr() {
                Some(e) => end = e,
                None => return ctx.err("invalid end ID for the interval"),
            }
        }
        range = Some((start, end, count.max(0) as u64));
        // (An argument after the consumer is ignored, as Redis does.)
        consumer = ctx.args.get(at + 3).copied();
    }
    let (key, group) = (ctx.args[1], ctx.args[2]);
    let idx = match ctx.lookup_typed(key, Kind::Stream, true) {
        Err(Replied) => return,
        Ok(i) => i,
    };
    let Some(idx) = idx.filter(|&i| group_of(stream_at(ctx, i), group).is_some()) else {
        return no_key_or_group(ctx, key, group, b"");
    };
    let now = ctx.now_ms;
    let s: &Stream = match ctx.t.ks.dbs[ctx.s.db].entry(idx).value.as_stream() {
        Some(s) => s,
        None => unreachable_stream(),
    };
    let Some(g) = group_of(s, group) else {
        return;
    };
    let out = &mut *ctx.out;
    let Some((start, end, count)) = range else {
        out.array(4);
        out.int(g.pel.len() as i64);
        let (Some((first, _)), Some((last, _))) = (g.pel.first_key_value(), g.pel.last_key_value())
        else {
            out.null();
            out.null();
            out.null_array();
            return;
        };
        let mut b = [0u8; 41];
        out.bulk(first.write(&mut b));
        out.bulk(last.write(&mut b));
        let owners: Vec<_> = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pel.is_empty())
            .collect();
        out.array(owners.len());
        for (name, c) in owners {
            out.array(2);
            out.bulk(&name[..]);
            out.bulk_i64(c.pel.len() as i64);
        }
        return;
    };
    if start > end {
        return out.empty_array();
    }
    let ids: Box<dyn Iterator<Item = &StreamId>> = match consumer {
        Some(name) => match g.consumers.get(name) {
            None => return out.empty_array(),
            Some(c) => Box::new(c.pel.range(start..=end)),
        },
        None => Box::new(g.pel.range(start..=end).map(|(id, _)| id)),
    };
    let mut rows = Reply::new(out.resp);
    let mut n = 0usize;
    for id in ids {
        if n as u64 >= count {
            break;
        }
        let Some(nack) = g.pel.get(id) else {
            continue;
        };
        let idle = (now - nack.delivery_time).max(0);
        if min_idle != 0 && idle < min_idle {
            continue;
        }
        n += 1;
        rows.array(4);
        let mut b = [0u8; 41];
        rows.bulk(id.write(&mut b));
        rows.bulk(&nack.consumer[..]);
        rows.int(idle);
        rows.int(nack.delivery_count as i64);
    }
    out.array(n);
    out.raw(&rows.buf);
}

// ---- XCLAIM, XAUTOCLAIM ----

/// What XCLAIM and XAUTOCLAIM claim for, and how they reply.
struct Claim<'a> {
    idx: u32,
    key: &'a [u8],
    group: &'a [u8],
    consumer: &'a [u8],
    justid: bool,
    /// The consumer was made (and seen) by this command's first claim.
    made: bool,
}

impl Claim<'_> {
    /// Gives entry `id` (in the stream) to the consumer, delivered at
    /// `time` for the `count`th time; the consumer is made (and seen) by
    /// the first claim of the command. Replies with the id or the entry,
    /// and logs the claim.
    fn give(&mut self, ctx: &mut Ctx, id: StreamId, time: i64, count: u64, out: &mut Reply) {
        let now = ctx.now_ms;
        let g = group_mut(ctx, self.idx, self.group);
        if !self.made {
            self.made = true;
            let (c, created) = g.consumer_or_create(self.consumer, now);
            c.seen_time = now;
            if created {
                ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", self.key);
            }
        }
        let g = group_mut(ctx, self.idx, self.group);
        g.assign(id, self.consumer, time, count);
        let (nack, last) = (g.pel.get(&id).cloned(), g.last_id);
        if self.justid {
            let mut b = [0u8; 41];
            out.bulk(id.write(&mut b));
        } else {
            stream_at(ctx, self.idx).range(id, id, false, |id, fields| {
                reply_entry(out, id, fields);
                false
            });
        }
        if let Some(nack) = nack {
            log_claim(ctx, self.key, self.group, id, &nack, last);
        }
    }
}

/// `XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME
/// ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]`.
pub fn xclaim(ctx: &mut Ctx) {
    let (key, group) = (ctx.args[1], ctx.args[2]);
    let idx = match ctx.lookup_typed(key, Kind::Stream, true) {
        Err(Replied) => return,
        Ok(i) => i,
    };
    let Some(idx) = idx.filter(|&i| group_of(stream_at(ctx, i), group).is_some()) else {
        return no_key_or_group(ctx, key, group, b"");
    };
    let Some(min_idle) = parse_i64_or(ctx, 4, "Invalid min-idle-time argument for XCLAIM") else {
        return;
    };
    let min_idle = min_idle.max(0);
    let mut ids = Vec::new();
    let mut j = 5;
    while j < ctx.args.len() {
        match parse_id(ctx.args[j], 0, true, None) {
            Some(id) => ids.push(id),
            None => break,
        }
        j += 1;
    }
    let now = ctx.now_ms;
    let (mut force, mut justid) = (false, false);
    let mut retry: Option<u64> = None;
    let mut delivery: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        let o = ctx.args[j];
        if o.eq_ignore_ascii_case(b"force") {
            force = true;
        } else if o.eq_ignore_ascii_case(b"justid") {
            justid = true;
        } else if o.eq_ignore_ascii_case(b"idle") && more > 0 {
            j += 1;
            let Some(v) = parse_i64_or(ctx, j, "Invalid IDLE option argument for XCLAIM") else {
                return;
            };
            delivery = Some(now.saturating_sub(v));
        } else if o.eq_ignore_ascii_case(b"time") && more > 0 {
            j += 1;
            let Some(v) = parse_i64_or(ctx, j, "Invalid TIME option argument for XCLAIM") else {
                return;
            };
            delivery = Some(v);
        } else if o.eq_ignore_ascii_case(b"retrycount") && more > 0 {
            j += 1;
            let Some(v) = parse_i64_or(ctx, j, "Invalid RETRYCOUNT option argument for XCLAIM")
            else {
                return;
            };
            // (A negative count is as if not given, as in Redis.)
            retry = u64::try_from(v).ok();
        } else if o.eq_ignore_ascii_case(b"lastid") && more > 0 {
            j += 1;
            let Some(id) = strict_id(ctx, ctx.args[j], None) else {
                return;
            };
            last_id = id;
        } else {
            let mut m = b"Unrecognized XCLAIM option '".to_vec();
            m.extend_from_slice(o);
            m.push(b'\'');
            return ctx.err_bytes(&m);
        }
        j += 1;
    }
    // A time in the future (or before 1970) is now.
    let time = match delivery {
        Some(t) if (0..=now).contains(&t) => t,
        _ => now,
    };
    let consumer = ctx.args[3];
    let mut out = Reply::new(ctx.out.resp);
    let mut n = 0usize;
    as_one_effect(ctx, |ctx| {
        let mut last_moved = false;
        {
            let g = group_mut(ctx, idx, group);
            if last_id > g.last_id {
                g.last_id = last_id;
                last_moved = true;
            }
        }
        let mut claim = Claim {
            idx,
            key,
            group,
            consumer,
            justid,
            made: false,
        };
        for &id in &ids {
            let exists = stream_at(ctx, idx).contains(id);
            let g = group_mut(ctx, idx, group);
            let pending = g.pel.get(&id).cloned();
            if !exists {
                // Gone from the stream: gone from the PEL too.
                if let Some(nack) = pending {
                    g.ack(id);
                    let last = g.last_id;
                    log_claim(ctx, key, group, id, &nack, last);
                    last_moved = false;
                }
                continue;
            }
            let count = match &pending {
                None if !force => continue,
                // (A new pending entry counts as delivered once.)
                None => 1,
                Some(nack) => {
                    if min_idle > 0 && now - nack.delivery_time < min_idle {
                        continue;
                    }
                    nack.delivery_count
                }
            };
            let count = match retry {
                Some(r) => r,
                None if justid => count,
                None => count.saturating_add(1),
            };
            claim.give(ctx, id, time, count, &mut out);
            n += 1;
            last_moved = false;
        }
        if last_moved {
            let g = group_mut(ctx, idx, group);
            let (last, read) = (g.last_id, g.entries_read);
            log_group_position(ctx, key, group, last, read);
        }
    });
    ctx.out.array(n);
    ctx.out.raw(&out.buf);
}

/// Argument `i` as an integer, or `msg` as the error.
fn parse_i64_or(ctx: &mut Ctx, i: usize, msg: &str) -> Option<i64> {
    let r = crate::util::parse_i64(ctx.args[i]);
    if r.is_none() {
        ctx.err(msg);
    }
    r
}

/// `XAUTOCLAIM key group consumer min-idle-time start [COUNT n]
/// [JUSTID]`: `[next start, claimed, ids deleted from the stream]`.
pub fn xautoclaim(ctx: &mut Ctx) {
    let Some(min_idle) = parse_i64_or(ctx, 4, "Invalid min-idle-time argument for XAUTOCLAIM")
    else {
        return;
    };
    let min_idle = min_idle.max(0);
    let Some((mut start, start_ex)) = interval_id(ctx, ctx.args[5], 0) else {
        return;
    };
    if start_ex {
        match start.incr() {
            Some(s) => start = s,
            None => return ctx.err("invalid start ID for the interval"),
        }
    }
    const ATTEMPTS_FACTOR: i64 = 10;
    let mut count: i64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        let o = ctx.args[j];
        if o.eq_ignore_ascii_case(b"count") && more > 0 {
            let max = i64::MAX / 16;
            match crate::util::parse_i64(ctx.args[j + 1]) {
                Some(v) if (1..=max).contains(&v) => count = v,
                _ => return ctx.err("COUNT must be > 0"),
            }
            j += 1;
        } else if o.eq_ignore_ascii_case(b"justid") {
            justid = true;
        } else {
            return ctx.err(errors::SYNTAX);
        }
        j += 1;
    }
    let (key, group, consumer) = (ctx.args[1], ctx.args[2], ctx.args[3]);
    let idx = match ctx.lookup_typed(key, Kind::Stream, true) {
        Err(Replied) => return,
        Ok(i) => i,
    };
    let Some(idx) = idx.filter(|&i| group_of(stream_at(ctx, i), group).is_some()) else {
        return no_key_or_group(ctx, key, group, b"");
    };
    let now = ctx.now_ms;
    let mut attempts = count.saturating_mul(ATTEMPTS_FACTOR);
    let mut out = Reply::new(ctx.out.resp);
    let mut claimed = 0usize;
    let mut deleted: Vec<StreamId> = Vec::new();
    let mut next = StreamId::MIN;
    as_one_effect(ctx, |ctx| {
        let mut cursor = start;
        let mut claim = Claim {
            idx,
            key,
            group,
            consumer,
            justid,
            made: false,
        };
        loop {
            let Some((id, nack)) = group_mut(ctx, idx, group)
                .pel
                .range(cursor..)
                .next()
                .map(|(id, n)| (*id, n.clone()))
            else {
                // (Every pending entry was looked at: start over next time.)
                next = StreamId::MIN;
                break;
            };
            if attempts == 0 || count == 0 {
                next = id;
                break;
            }
            attempts -= 1;
            cursor = match id.incr() {
                Some(c) => c,
                None => StreamId::MAX,
            };
            let last_entry = id == StreamId::MAX;
            if !stream_at(ctx, idx).contains(id) {
                let g = group_mut(ctx, idx, group);
                g.ack(id);
                let last = g.last_id;
                log_claim(ctx, key, group, id, &nack, last);
                deleted.push(id);
                count -= 1;
                if last_entry {
                    break;
                }
                continue;
            }
            if min_idle > 0 && now - nack.delivery_time < min_idle {
                if last_entry {
                    break;
                }
                continue;
            }
            let times = if justid {
                nack.delivery_count
            } else {
                nack.delivery_count.saturating_add(1)
            };
            claim.give(ctx, id, now, times, &mut out);
            claimed += 1;
            count -= 1;
            if last_entry {
                break;
            }
        }
    });
    ctx.out.array(3);
    bulk_id(ctx, next);
    ctx.out.array(claimed);
    ctx.out.raw(&out.buf);
    ctx.out.array(deleted.len());
    for id in deleted {
        bulk_id(ctx, id);
    }
}
