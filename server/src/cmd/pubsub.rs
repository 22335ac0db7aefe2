//! Pub/sub commands. Subscriptions live in the tenant's `PubSub` (so one
//! tenant can never publish to another's subscribers) and, for the
//! per-connection view, in the session.

use super::Ctx;
use crate::client::Session;
use crate::tenant::Tenant;
use crate::util::glob_match;

fn counts(s: &Session) {
    s.info.subs.set(s.channels.len());
    s.info.psubs.set(s.patterns.len());
    s.info.ssubs.set(s.shard_channels.len());
}

/// `[kind, name, count]` as a push (RESP3) or array (RESP2).
fn ack(ctx: &mut Ctx, kind: &[u8], name: Option<&[u8]>, count: usize) {
    ctx.out.push(3);
    ctx.out.bulk(kind);
    match name {
        Some(n) => ctx.out.bulk(n),
        None => ctx.out.null(),
    }
    ctx.out.int(count as i64);
}

fn total(s: &Session) -> usize {
    s.channels.len() + s.patterns.len()
}

pub fn subscribe(ctx: &mut Ctx) {
    for i in 1..ctx.args.len() {
        let ch = ctx.args[i];
        if ctx.s.channels.insert(ch.to_vec()) {
            ctx.t
                .pubsub
                .channels
                .entry(ch.to_vec())
                .or_default()
                .push(ctx.s.info.clone());
        }
        let n = total(ctx.s);
        ack(ctx, b"subscribe", Some(ch), n);
    }
    counts(ctx.s);
}

pub fn ssubscribe(ctx: &mut Ctx) {
    for i in 1..ctx.args.len() {
        let ch = ctx.args[i];
        if ctx.s.shard_channels.insert(ch.to_vec()) {
            ctx.t
                .pubsub
                .shard_channels
                .entry(ch.to_vec())
                .or_default()
                .push(ctx.s.info.clone());
        }
        let n = ctx.s.shard_channels.len();
        ack(ctx, b"ssubscribe", Some(ch), n);
    }
    counts(ctx.s);
}

pub fn psubscribe(ctx: &mut Ctx) {
    for i in 1..ctx.args.len() {
        let p = ctx.args[i];
        if !ctx.s.patterns.iter().any(|x| x == p) {
            ctx.s.patterns.push(p.to_vec());
            ctx.t.pubsub.patterns.push((p.to_vec(), ctx.s.info.clone()));
        }
        let n = total(ctx.s);
        ack(ctx, b"psubscribe", Some(p), n);
    }
    counts(ctx.s);
}

fn remove_channel(t: &mut Tenant, id: u64, ch: &[u8], shard: bool) {
    let map = if shard {
        &mut t.pubsub.shard_channels
    } else {
        &mut t.pubsub.channels
    };
    if let Some(subs) = map.get_mut(ch) {
        subs.retain(|c| c.id != id);
        if subs.is_empty() {
            map.remove(ch);
        }
    }
}

pub fn unsubscribe(ctx: &mut Ctx) {
    unsubscribe_generic(ctx, false)
}

pub fn sunsubscribe(ctx: &mut Ctx) {
    unsubscribe_generic(ctx, true)
}

fn unsubscribe_generic(ctx: &mut Ctx, shard: bool) {
    let kind: &[u8] = if shard {
        b"sunsubscribe"
    } else {
        b"unsubscribe"
    };
    let id = ctx.s.info.id;
    let targets: Vec<Vec<u8>> = if ctx.args.len() > 1 {
        ctx.args[1..].iter().map(|a| a.to_vec()).collect()
    } else if shard {
        ctx.s.shard_channels.iter().cloned().collect()
    } else {
        ctx.s.channels.iter().cloned().collect()
    };
    if targets.is_empty() {
        let n = if shard {
            ctx.s.shard_channels.len()
        } else {
            total(ctx.s)
        };
        ack(ctx, kind, None, n);
    }
    for ch in targets {
        let had = if shard {
            ctx.s.shard_channels.remove(&ch)
        } else {
            ctx.s.channels.remove(&ch)
        };
        if had {
            remove_channel(ctx.t, id, &ch, shard);
        }
        let n = if shard {
            ctx.s.shard_channels.len()
        } else {
            total(ctx.s)
        };
        ack(ctx, kind, Some(&ch), n);
    }
    counts(ctx.s);
}

pub fn punsubscribe(ctx: &mut Ctx) {
    let id = ctx.s.info.id;
    let targets: Vec<Vec<u8>> = if ctx.args.len() > 1 {
        ctx.args[1..].iter().map(|a| a.to_vec()).collect()
    } else {
        ctx.s.patterns.clone()
    };
    if targets.is_empty() {
        let n = total(ctx.s);
        ack(ctx, b"punsubscribe", None, n);
    }
    for p in targets {
        if let Some(pos) = ctx.s.patterns.iter().position(|x| *x == p) {
            ctx.s.patterns.remove(pos);
            ctx.t
                .pubsub
                .patterns
                .retain(|(x, c)| !(c.id == id && *x == p));
        }
        let n = total(ctx.s);
        ack(ctx, b"punsubscribe", Some(&p), n);
    }
    counts(ctx.s);
}

/// Drops every subscription of the session (RESET, disconnect).
pub fn unsubscribe_all(t: &mut Tenant, s: &mut Session) {
    t.pubsub.remove_client(s.info.id);
    s.channels.clear();
    s.patterns.clear();
    s.shard_channels.clear();
    counts(s);
}

/// PUBLISH: delivered to this node's subscribers, and propagated in the
/// replication stream (as Redis 7.0 does without cluster mode), so every
/// replica delivers it to its own: a subscriber in any region hears a
/// message published in any other (a replica's node sends its customers'
/// PUBLISH to the primary, see `dispatch`). The stream's bytes also reach
/// the append-only log, whose offsets are the stream's; replayed at a
/// restart it finds no subscribers.
pub fn publish(ctx: &mut Ctx) {
    let (ch, msg) = (ctx.args[1], ctx.args[2]);
    let limit = ctx.t.push_limit;
    let n = ctx.t.pubsub.publish(ch, msg, limit, ctx.now_ms);
    ctx.t.log.append_no_db(&[b"PUBLISH", ch, msg]);
    ctx.out.int(n as i64);
}

/// SPUBLISH: as PUBLISH, for shard channels.
pub fn spublish(ctx: &mut Ctx) {
    let (ch, msg) = (ctx.args[1], ctx.args[2]);
    let limit = ctx.t.push_limit;
    let n = ctx.t.pubsub.spublish(ch, msg, limit, ctx.now_ms);
    ctx.t.log.append_no_db(&[b"SPUBLISH", ch, msg]);
    ctx.out.int(n as i64);
}

fn channels_matching(ctx: &mut Ctx, shard: bool) {
    let pat = ctx.args.get(2).copied();
    let map = if shard {
        &ctx.t.pubsub.shard_channels
    } else {
        &ctx.t.pubsub.channels
    };
    let names: Vec<Vec<u8>> = map
        .keys()
        .filter(|c| pat.is_none_or(|p| glob_match(p, c, false)))
        .cloned()
        .collect();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(&n);
    }
}

pub fn pubsub_channels(ctx: &mut Ctx) {
    channels_matching(ctx, false)
}

pub fn pubsub_shardchannels(ctx: &mut Ctx) {
    channels_matching(ctx, true)
}

fn numsub(ctx: &mut Ctx, shard: bool) {
    // A flat array even in RESP3, as Redis 7.0 replies.
    let n = ctx.args.len() - 2;
    ctx.out.array(2 * n);
    for i in 2..ctx.args.len() {
        let ch = ctx.args[i];
        let map = if shard {
            &ctx.t.pubsub.shard_channels
        } else {
            &ctx.t.pubsub.channels
        };
        let count = map.get(ch).map_or(0, |v| v.len());
        ctx.out.bulk(ch);
        ctx.out.int(count as i64);
    }
}

pub fn pubsub_numsub(ctx: &mut Ctx) {
    numsub(ctx, false)
}

pub fn pubsub_shardnumsub(ctx: &mut Ctx) {
    numsub(ctx, true)
}

pub fn pubsub_numpat(ctx: &mut Ctx) {
    let mut pats: Vec<&Vec<u8>> = ctx.t.pubsub.patterns.iter().map(|(p, _)| p).collect();
    pats.sort();
    pats.dedup();
    ctx.out.int(pats.len() as i64);
}

pub fn pubsub_help(ctx: &mut Ctx) {
    super::command::reply_help(
        ctx,
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
        ],
    );
}
