//! XINFO STREAM [FULL [COUNT n]], XINFO GROUPS, XINFO CONSUMERS and XINFO
//! HELP, with Redis 7.0's fields in its order.

use super::{reply_entry, reply_range, unreachable_stream};
use crate::cmd::{errors, Ctx, Replied};
use crate::db::stream::group::{Counts, Group, ENTRIES_READ_UNKNOWN};
use crate::db::stream::{Stream, StreamId};
use crate::db::Kind;
use crate::resp::Reply;

/// The stream at `ctx.args[2]`, or the error sent (`no such key` when
/// missing, as Redis's XINFO says).
fn stream_arg(ctx: &mut Ctx) -> Option<u32> {
    match ctx.lookup_typed(ctx.args[2], Kind::Stream, true) {
        Err(Replied) => None,
        Ok(None) => {
            ctx.err(errors::NO_SUCH_KEY);
            None
        }
        Ok(Some(i)) => Some(i),
    }
}

fn stream_of<'c>(ctx: &'c Ctx, idx: u32) -> &'c Stream {
    match ctx.t.ks.dbs[ctx.s.db].entry(idx).value.as_stream() {
        Some(s) => s,
        None => unreachable_stream(),
    }
}

fn id_field(out: &mut Reply, name: &str, id: StreamId) {
    let mut b = [0u8; 41];
    out.bulk(name.as_bytes());
    out.bulk(id.write(&mut b));
}

fn int_field(out: &mut Reply, name: &str, v: i64) {
    out.bulk(name.as_bytes());
    out.int(v);
}

/// The number of nodes in a Redis radix tree holding `keys` (sorted,
/// distinct, 16 bytes each: a stream's node ids). Redis keeps the tree
/// compressed: a chain with no branch and no key inside is one node, a
/// branch is one node whose children are one node each, and each key
/// ends in a node of its own. What XINFO STREAM reports as
/// `radix-tree-nodes`.
pub fn radix_tree_nodes(keys: &[[u8; 16]]) -> usize {
    fn below(keys: &[[u8; 16]], depth: usize) -> usize {
        if depth == 16 {
            return 1;
        }
        let (first, last) = (&keys[0], &keys[keys.len() - 1]);
        let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        if common > depth {
            return 1 + below(keys, common);
        }
        let mut n = 1;
        let mut i = 0;
        while i < keys.len() {
            let b = keys[i][depth];
            let j = i + keys[i..].iter().take_while(|k| k[depth] == b).count();
            n += below(&keys[i..j], depth + 1);
            i = j;
        }
        n
    }
    if keys.is_empty() {
        return 1;
    }
    below(keys, 0)
}

/// A group's `entries-read` and `lag` (nil when unknown).
fn position_fields(out: &mut Reply, counts: &Counts, g: &Group) {
    out.bulk(b"entries-read");
    if g.entries_read == ENTRIES_READ_UNKNOWN {
        out.null();
    } else {
        out.int(g.entries_read);
    }
    out.bulk(b"lag");
    match counts.lag(g) {
        Some(l) => out.int(l),
        None => out.null(),
    }
}

/// `XINFO STREAM key [FULL [COUNT n]]`.
pub fn xinfo_stream(ctx: &mut Ctx) {
    // (The key first, then the options, as Redis's XINFO checks them.)
    let Some(idx) = stream_arg(ctx) else {
        return;
    };
    let argc = ctx.args.len();
    let mut full = false;
    let mut count: i64 = 10;
    if argc > 3 {
        if !ctx.args[3].eq_ignore_ascii_case(b"full") || (argc != 4 && argc != 6) {
            return crate::cmd::client::subcommand_syntax_error(ctx);
        }
        full = true;
        if argc == 6 {
            if !ctx.args[4].eq_ignore_ascii_case(b"count") {
                return crate::cmd::client::subcommand_syntax_error(ctx);
            }
            let Some(c) = ctx.arg_i64(5) else {
                return;
            };
            // (A negative count is the default, as in Redis.)
            if c >= 0 {
                count = c;
            }
        }
    }
    let resp = ctx.out.resp;
    let mut out = Reply::new(resp);
    let s = stream_of(ctx, idx);
    out.map(if full { 9 } else { 10 });
    int_field(&mut out, "length", s.length as i64);
    int_field(&mut out, "radix-tree-keys", s.node_count() as i64);
    let keys: Vec<[u8; 16]> = s.nodes().map(|(k, _)| k.to_key()).collect();
    int_field(&mut out, "radix-tree-nodes", radix_tree_nodes(&keys) as i64);
    id_field(&mut out, "last-generated-id", s.last_id);
    id_field(&mut out, "max-deleted-entry-id", s.max_deleted);
    int_field(&mut out, "entries-added", s.entries_added as i64);
    id_field(&mut out, "recorded-first-entry-id", s.first_id);
    if !full {
        int_field(&mut out, "groups", s.groups.len() as i64);
        for (name, last) in [("first-entry", false), ("last-entry", true)] {
            out.bulk(name.as_bytes());
            let mut found = false;
            s.range(StreamId::MIN, StreamId::MAX, last, |id, fields| {
                reply_entry(&mut out, id, fields);
                found = true;
                false
            });
            if !found {
                out.null();
            }
        }
        return ctx.out.raw(&out.buf);
    }
    let limit = count as u64;
    let take = |n: usize| if limit == 0 { n } else { n.min(limit as usize) };
    out.bulk(b"entries");
    reply_range(&mut out, s, StreamId::MIN, StreamId::MAX, limit, false);
    out.bulk(b"groups");
    out.array(s.groups.len());
    let counts = s.counts();
    for (name, g) in &s.groups {
        out.map(7);
        out.bulk(b"name");
        out.bulk(name);
        id_field(&mut out, "last-delivered-id", g.last_id);
        position_fields(&mut out, &counts, g);
        int_field(&mut out, "pel-count", g.pel.len() as i64);
        out.bulk(b"pending");
        out.array(take(g.pel.len()));
        for (id, n) in g.pel.iter().take(take(g.pel.len())) {
            out.array(4);
            let mut b = [0u8; 41];
            out.bulk(id.write(&mut b));
            out.bulk(&n.consumer[..]);
            out.int(n.delivery_time);
            out.int(n.delivery_count as i64);
        }
        out.bulk(b"consumers");
        out.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            out.map(4);
            out.bulk(b"name");
            out.bulk(&cname[..]);
            int_field(&mut out, "seen-time", c.seen_time);
            int_field(&mut out, "pel-count", c.pel.len() as i64);
            out.bulk(b"pending");
            out.array(take(c.pel.len()));
            for id in c.pel.iter().take(take(c.pel.len())) {
                let Some(n) = g.pel.get(id) else {
                    continue;
                };
                out.array(3);
                let mut b = [0u8; 41];
                out.bulk(id.write(&mut b));
                out.int(n.delivery_time);
                out.int(n.delivery_count as i64);
            }
        }
    }
    ctx.out.raw(&out.buf);
}

/// `XINFO GROUPS key`.
pub fn xinfo_groups(ctx: &mut Ctx) {
    let Some(idx) = stream_arg(ctx) else {
        return;
    };
    let mut out = Reply::new(ctx.out.resp);
    let s = stream_of(ctx, idx);
    let counts = s.counts();
    out.array(s.groups.len());
    for (name, g) in &s.groups {
        out.map(6);
        out.bulk(b"name");
        out.bulk(name);
        int_field(&mut out, "consumers", g.consumers.len() as i64);
        int_field(&mut out, "pending", g.pel.len() as i64);
        id_field(&mut out, "last-delivered-id", g.last_id);
        position_fields(&mut out, &counts, g);
    }
    ctx.out.raw(&out.buf);
}

/// `XINFO CONSUMERS key group`.
pub fn xinfo_consumers(ctx: &mut Ctx) {
    let Some(idx) = stream_arg(ctx) else {
        return;
    };
    let now = ctx.now_ms;
    let mut out = Reply::new(ctx.out.resp);
    let s = stream_of(ctx, idx);
    let Some(g) = s.groups.get(ctx.args[3]) else {
        return super::group::no_group(ctx);
    };
    out.array(g.consumers.len());
    for (name, c) in &g.consumers {
        out.map(3);
        out.bulk(b"name");
        out.bulk(&name[..]);
        int_field(&mut out, "pending", c.pel.len() as i64);
        int_field(&mut out, "idle", (now - c.seen_time).max(0));
    }
    ctx.out.raw(&out.buf);
}

pub fn xinfo_help(ctx: &mut Ctx) {
    crate::cmd::command::reply_help_ending(
        ctx,
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
        "    Prints this help.",
    );
}

#[cfg(test)]
mod tests {
    use super::radix_tree_nodes;

    fn key(ms: u64, seq: u64) -> [u8; 16] {
        crate::db::stream::StreamId::new(ms, seq).to_key()
    }

    #[test]
    fn radix_tree_nodes_count_compressed_chains_branches_and_leaves() {
        assert_eq!(radix_tree_nodes(&[]), 1);
        // One key: the root's chain and the key's node.
        assert_eq!(radix_tree_nodes(&[key(1, 0)]), 2);
        // Two keys differing in the last byte: chain, branch... the
        // chain to the branch point, the branch, two leaves.
        assert_eq!(radix_tree_nodes(&[key(1, 0), key(1, 1)]), 4);
        // Differing earlier: each side keeps a chain before its leaf.
        assert_eq!(radix_tree_nodes(&[key(1, 0), key(2, 0)]), 6);
    }
}
