//! Pub/sub for a database this node holds no copy of.
//!
//! Its subscribers subscribe here, on the node they are connected to (the
//! remote tenant's own `PubSub`); what they must hear is published on the
//! database's primary (a customer's PUBLISH anywhere goes there) and
//! reaches every copy in its replication stream (docs/REPLICATION.md). So
//! while the remote tenant has subscribers, one task per executor holds a
//! store stream to the nearest copy's node, subscribed there to every
//! channel (`PSUBSCRIBE *`), and publishes each message it receives to the
//! local subscribers, as if it had been published here. Keyspace
//! notifications the copy raises arrive the same way. Shard channels have
//! no patterns: the relay subscribes on the copy (`SSUBSCRIBE`) to each
//! shard channel its local subscribers have, and lets go of the ones they
//! left (`SUNSUBSCRIBE`).
//!
//! A SUBSCRIBE's (or SSUBSCRIBE's) reply waits (up to [`READY_WAIT`])
//! until the relay is subscribed on the copy, so a message published after
//! the client saw its subscription confirmed is not missed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::resp::{ParseLimits, Request, RequestParser};
use crate::shared::Shared;
use crate::tenant::Tenant;

/// How long a SUBSCRIBE's reply waits for the relay to be subscribed.
pub const READY_WAIT: Duration = Duration::from_secs(2);

/// The relay's state, on the remote tenant.
#[derive(Default)]
pub struct Relay {
    /// Woken when the tenant gains subscribers (the relay connects).
    pub wake: tokio::sync::Notify,
    /// Subscribed on a copy: messages published from now on arrive.
    pub ready: std::cell::Cell<bool>,
    /// Woken when `ready` turns true or a shard channel is subscribed.
    pub readied: tokio::sync::Notify,
    /// Shard channels the copy confirmed the relay's subscription to.
    pub shards: RefCell<HashSet<Vec<u8>>>,
    /// The stand-in was let go: the relay ends.
    pub retired: std::cell::Cell<bool>,
}

impl Relay {
    /// Subscribed on the copy to everything `t`'s subscribers listen to:
    /// every channel, and each of their shard channels.
    pub fn covers(&self, t: &Tenant) -> bool {
        let shards = self.shards.borrow();
        self.ready.get() && t.pubsub.shard_channels.keys().all(|c| shards.contains(c))
    }
}

/// The node the relay follows: the nearest copy (the primary when the
/// route lists none). None: the database is gone.
fn nearest_copy(shared: &Shared, id: crate::tenant::TenantId) -> Option<std::net::SocketAddr> {
    shared
        .remote_route(id)
        .map(|r| r.copies.first().map_or(r.primary, |c| c.addr))
}

fn has_subscribers(t: &Tenant) -> bool {
    !t.pubsub.channels.is_empty()
        || !t.pubsub.patterns.is_empty()
        || !t.pubsub.shard_channels.is_empty()
}

/// Runs for the remote tenant's life on its executor: connected while it
/// has subscribers, reconnecting (to the nearest copy as it is then) when
/// the stream fails or the nearest copy changes.
pub async fn run(tenant: Rc<RefCell<Tenant>>, shared: Arc<Shared>) {
    let relay = tenant.borrow().relay.clone();
    let id = tenant.borrow().id;
    let mut shutdown = shared.shutdown_rx();
    loop {
        // Idle until someone subscribes.
        while !has_subscribers(&tenant.borrow()) {
            if relay.retired.get() {
                return;
            }
            tokio::select! {
                _ = relay.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
        let node = nearest_copy(&shared, id);
        let (Some(node), Some(dialer)) = (node, shared.link_dialer.get().cloned()) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let link = match tokio::time::timeout(Duration::from_secs(5), dialer.dial(node, id)).await {
            Ok(Ok(l)) => l,
            _ => {
                tracing::debug!(tenant = id.0, %node, "pub/sub relay: cannot reach the copy");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let why = follow(&tenant, &shared, link.io, node, &mut shutdown).await;
        relay.ready.set(false);
        relay.shards.borrow_mut().clear();
        tracing::debug!(tenant = id.0, %node, "pub/sub relay ends: {why}");
        if *shutdown.borrow() {
            return;
        }
        // A copy that ends the stream at once is not asked again at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Subscribes to everything on the copy at `node` and publishes what
/// arrives locally, until the stream fails, the tenant has no subscriber
/// left or another copy is nearer.
async fn follow(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    mut io: Box<dyn crate::stream::Duplex>,
    node: std::net::SocketAddr,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> &'static str {
    let relay = tenant.borrow().relay.clone();
    let id = tenant.borrow().id;
    let mut req = Vec::new();
    crate::resp::encode_request(&mut req, &[b"PSUBSCRIBE", b"*"]);
    if io.write_all(&req).await.is_err() {
        return "writing PSUBSCRIBE";
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut sc = crate::resp::frame::Scanner::default();
    let limits = ParseLimits {
        max_bulk_len: i64::MAX,
        max_multibulk_len: i64::MAX,
        unauthenticated: false,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Shard channels asked of the copy (see `Shard`).
    let mut asked: HashMap<Vec<u8>, Shard> = HashMap::new();
    loop {
        if !sync_shards(tenant, &mut asked, &mut io).await {
            return "writing SSUBSCRIBE";
        }
        tokio::select! {
            r = io.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return "the stream ended",
                Ok(_) => {}
            },
            // A local SSUBSCRIBE or SUNSUBSCRIBE (checked at the top).
            _ = relay.wake.notified() => continue,
            _ = tick.tick() => {
                let nearest = nearest_copy(shared, id);
                if !has_subscribers(&tenant.borrow()) {
                    return "no subscribers left";
                }
                if nearest != Some(node) {
                    return "another copy is nearer";
                }
                continue;
            }
            _ = shutdown.changed() => return "shutting down",
        }
        loop {
            let end = match sc.next(&buf) {
                Ok(Some(end)) => end,
                Ok(None) => break,
                Err(_) => return "a reply that does not parse",
            };
            let frame = buf.split_to(end);
            sc.rebase(end);
            // A message: `pmessage <pattern> <channel> <message>` or
            // `smessage <channel> <message>`, all bulk strings (a
            // request's shape); a subscription's confirmation ends with a
            // count.
            let shard = frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n");
            if shard || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n") {
                let mut parser = RequestParser::new();
                if let Ok(Some(Request::Multibulk)) = parser.next(&frame, &limits) {
                    let r = parser.ranges();
                    if let [.., ch, msg] = r {
                        let (ch, msg) = (&frame[ch.clone()], &frame[msg.clone()]);
                        let mut t = tenant.borrow_mut();
                        let (limit, now) = (t.push_limit, crate::util::mstime());
                        if shard {
                            t.pubsub.spublish(ch, msg, limit, now);
                        } else {
                            t.pubsub.publish(ch, msg, limit, now);
                        }
                    }
                }
            } else if frame.starts_with(b"*3\r\n$10\r\nssubscribe\r\n")
                || frame.starts_with(b"*3\r\n$12\r\nsunsubscribe\r\n")
            {
                // `ssubscribe <channel> <count>` (the count an integer),
                // or its `sunsubscribe`: one per channel, in order.
                if let Some(ch) = second_bulk(&frame) {
                    if let Some(s) = asked.get_mut(&ch) {
                        s.pending = s.pending.saturating_sub(1);
                        if s.pending == 0 {
                            if s.wanted {
                                relay.shards.borrow_mut().insert(ch);
                                relay.readied.notify_waiters();
                            } else {
                                asked.remove(&ch);
                            }
                        }
                    }
                }
            } else if frame.starts_with(b"*3\r\n$10\r\npsubscribe\r\n") {
                relay.ready.set(true);
                relay.readied.notify_waiters();
            } else if frame.starts_with(b"-") {
                return "the copy refused a subscription";
            }
        }
    }
}

/// A shard channel the relay asked the copy about: whether its last
/// request was SSUBSCRIBE, and how many of its requests have no reply
/// yet. It counts as subscribed on the copy (`Relay::shards`) only once
/// every request has its reply and the last was SSUBSCRIBE, so a late
/// reply to an SSUBSCRIBE since undone confirms nothing.
struct Shard {
    wanted: bool,
    pending: u32,
}

/// Subscribes the relay on the copy to the shard channels the local
/// subscribers have and it has not asked for yet, and unsubscribes it
/// from those nobody here listens to any more. False: the stream failed.
async fn sync_shards(
    tenant: &Rc<RefCell<Tenant>>,
    asked: &mut HashMap<Vec<u8>, Shard>,
    io: &mut Box<dyn crate::stream::Duplex>,
) -> bool {
    let (add, drop): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
        let t = tenant.borrow();
        let want = &t.pubsub.shard_channels;
        let wanted = |c: &Vec<u8>| asked.get(c).is_some_and(|s| s.wanted);
        (
            want.keys().filter(|c| !wanted(c)).cloned().collect(),
            asked
                .iter()
                .filter(|(c, s)| s.wanted && !want.contains_key(*c))
                .map(|(c, _)| c.clone())
                .collect(),
        )
    };
    if add.is_empty() && drop.is_empty() {
        return true;
    }
    let mut req = Vec::new();
    for (cmd, chans) in [(&b"SSUBSCRIBE"[..], &add), (&b"SUNSUBSCRIBE"[..], &drop)] {
        if !chans.is_empty() {
            let mut args: Vec<&[u8]> = vec![cmd];
            args.extend(chans.iter().map(Vec::as_slice));
            crate::resp::encode_request(&mut req, &args);
        }
    }
    if io.write_all(&req).await.is_err() {
        return false;
    }
    let relay = tenant.borrow().relay.clone();
    let mut confirmed = relay.shards.borrow_mut();
    for (chans, wanted) in [(add, true), (drop, false)] {
        for c in chans {
            confirmed.remove(&c);
            let s = asked.entry(c).or_insert(Shard { wanted, pending: 0 });
            s.wanted = wanted;
            s.pending += 1;
        }
    }
    true
}

/// The second element of a RESP array whose first two are bulk strings
/// (`ssubscribe <channel> <count>`): the channel.
fn second_bulk(frame: &[u8]) -> Option<Vec<u8>> {
    let mut at = frame.iter().position(|&b| b == b'\n')? + 1;
    for i in 0..2 {
        let rest = frame.get(at..)?;
        if rest.first() != Some(&b'$') {
            return None;
        }
        let eol = rest.iter().position(|&b| b == b'\n')?;
        let len: usize = std::str::from_utf8(rest.get(1..eol.checked_sub(1)?)?)
            .ok()?
            .parse()
            .ok()?;
        let start = at + eol + 1;
        let end = start.checked_add(len)?;
        if i == 1 {
            return frame.get(start..end).map(<[u8]>::to_vec);
        }
        at = end + 2;
    }
    None
}
