//! Pub/sub within a tenant: channel and pattern subscriptions, PUBLISH, and
//! keyspace notifications (which are publishes to `__keyspace@<db>__:<key>`
//! and `__keyevent@<db>__:<event>`).
//!
//! Messages are encoded once per protocol version and queued on each
//! subscriber's push buffer; the subscriber's own task writes them. A
//! subscriber that does not read is closed once its queue passes the pubsub
//! output-buffer limit (hard, or soft for too long), so publishers never
//! stall and memory never grows without bound.

use bytes::BytesMut;
use hashbrown::HashMap;
use std::rc::Rc;

use crate::client::ClientInfo;
use crate::config::{NOTIFY_KEYEVENT, NOTIFY_KEYSPACE};
use crate::resp::Reply;
use crate::util::glob_match;

/// Output limits applied to subscribers' queues.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

#[derive(Default)]
pub struct PubSub {
    /// Subscribers per channel, in subscription order.
    pub channels: HashMap<Vec<u8>, Vec<Rc<ClientInfo>>>,
    /// Pattern subscriptions in subscription order.
    pub patterns: Vec<(Vec<u8>, Rc<ClientInfo>)>,
    /// Sharded channels (SSUBSCRIBE); one shard per tenant here.
    pub shard_channels: HashMap<Vec<u8>, Vec<Rc<ClientInfo>>>,
    /// Subscribers closed for exceeding the output limit (INFO stats
    /// client_output_buffer_limit_disconnections).
    pub limit_disconnections: u64,
}

fn encode(resp: u8, parts: &[&[u8]]) -> BytesMut {
    let mut r = Reply::new(resp);
    r.buf = BytesMut::with_capacity(parts.iter().map(|p| p.len() + 16).sum::<usize>() + 8);
    r.push(parts.len());
    for p in parts {
        r.bulk(p);
    }
    r.buf
}

/// What [`deliver`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The client was already closing.
    Dropped,
    /// The client exceeded its output limit and was closed now.
    Closed,
}

/// Queues `msg` for `c`, enforcing the limits.
pub fn deliver(c: &ClientInfo, msg: &[u8], limit: PushLimit, now_ms: i64) -> Delivery {
    if c.killed.get() {
        return Delivery::Dropped;
    }
    c.push_bytes(msg);
    let queued = c.push.borrow().len() as u64;
    let over_hard = limit.hard > 0 && queued > limit.hard;
    let mut over_soft = false;
    if limit.soft > 0 && queued > limit.soft {
        match c.soft_limit_since.get() {
            0 => c.soft_limit_since.set(now_ms),
            since => over_soft = now_ms - since >= (limit.soft_secs * 1000) as i64,
        }
    } else {
        c.soft_limit_since.set(0);
    }
    if over_hard || over_soft {
        tracing::warn!(
            id = c.id,
            queued,
            "Client closed for overcoming of output buffer limits."
        );
        c.push.borrow_mut().clear();
        c.kill();
        return Delivery::Closed;
    }
    Delivery::Queued
}

impl PubSub {
    /// PUBLISH: delivers to channel subscribers then pattern subscribers,
    /// as Redis orders them; returns the number of receivers.
    pub fn publish(&mut self, channel: &[u8], msg: &[u8], limit: PushLimit, now_ms: i64) -> usize {
        let (mut n, mut closed) = (0, 0);
        let mut count = |d: Delivery| match d {
            Delivery::Queued => n += 1,
            Delivery::Closed => closed += 1,
            Delivery::Dropped => {}
        };
        let mut enc: [Option<BytesMut>; 2] = [None, None];
        if let Some(subs) = self.channels.get(channel) {
            for c in subs {
                let v = c.resp.get().clamp(2, 3);
                let m = enc[(v - 2) as usize]
                    .get_or_insert_with(|| encode(v, &[b"message", channel, msg]));
                count(deliver(c, m, limit, now_ms));
            }
        }
        for (pat, c) in &self.patterns {
            if glob_match(pat, channel, false) {
                let m = encode(c.resp.get().clamp(2, 3), &[b"pmessage", pat, channel, msg]);
                count(deliver(c, &m, limit, now_ms));
            }
        }
        self.limit_disconnections += closed;
        n
    }

    /// SPUBLISH to shard-channel subscribers.
    pub fn spublish(&mut self, channel: &[u8], msg: &[u8], limit: PushLimit, now_ms: i64) -> usize {
        let (mut n, mut closed) = (0, 0);
        if let Some(subs) = self.shard_channels.get(channel) {
            for c in subs {
                let m = encode(c.resp.get().clamp(2, 3), &[b"smessage", channel, msg]);
                match deliver(c, &m, limit, now_ms) {
                    Delivery::Queued => n += 1,
                    Delivery::Closed => closed += 1,
                    Delivery::Dropped => {}
                }
            }
        }
        self.limit_disconnections += closed;
        n
    }

    /// Forgets every subscription of client `id` (disconnect, RESET).
    pub fn remove_client(&mut self, id: u64) {
        for map in [&mut self.channels, &mut self.shard_channels] {
            map.retain(|_, subs| {
                subs.retain(|c| c.id != id);
                !subs.is_empty()
            });
        }
        self.patterns.retain(|(_, c)| c.id != id);
    }

    /// Keyspace notification for `event` on `key` in `db`, if `class` is
    /// enabled in `flags` (notify-keyspace-events).
    #[allow(clippy::too_many_arguments)]
    pub fn notify(
        &mut self,
        flags: u32,
        class: u32,
        event: &str,
        db: usize,
        key: &[u8],
        limit: PushLimit,
        now_ms: i64,
    ) {
        if flags & class == 0 {
            return;
        }
        if self.channels.is_empty() && self.patterns.is_empty() {
            return;
        }
        if flags & NOTIFY_KEYSPACE != 0 {
            let mut ch = format!("__keyspace@{db}__:").into_bytes();
            ch.extend_from_slice(key);
            self.publish(&ch, event.as_bytes(), limit, now_ms);
        }
        if flags & NOTIFY_KEYEVENT != 0 {
            let ch = format!("__keyevent@{db}__:{event}").into_bytes();
            self.publish(&ch, key, limit, now_ms);
        }
    }
}
