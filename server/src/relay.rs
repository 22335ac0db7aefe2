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
//! notifications the copy raises arrive the same way. Shard channels
//! (SSUBSCRIBE) are not relayed.
//!
//! A SUBSCRIBE's reply waits (up to [`READY_WAIT`]) until the relay is
//! subscribed on the copy, so a message published after the client saw
//! its subscription confirmed is not missed.

use std::cell::RefCell;
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
    /// Woken when `ready` turns true.
    pub readied: tokio::sync::Notify,
}

fn has_subscribers(t: &Tenant) -> bool {
    !t.pubsub.channels.is_empty() || !t.pubsub.patterns.is_empty()
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
            tokio::select! {
                _ = relay.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
        let node = shared
            .remote_route(id)
            .and_then(|r| r.copies.first().copied().or(Some(r.primary)));
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
    loop {
        tokio::select! {
            r = io.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return "the stream ended",
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let nearest = shared
                    .remote_route(id)
                    .and_then(|r| r.copies.first().copied().or(Some(r.primary)));
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
            // A message: `pmessage <pattern> <channel> <message>`, all bulk
            // strings (a request's shape); the subscription's confirmation
            // ends with a count.
            if frame.starts_with(b"*4\r\n$8\r\npmessage\r\n") {
                let mut parser = RequestParser::new();
                if let Ok(Some(Request::Multibulk)) = parser.next(&frame, &limits) {
                    let r = parser.ranges();
                    if r.len() == 4 {
                        let mut t = tenant.borrow_mut();
                        let limit = t.push_limit;
                        t.pubsub.publish(
                            &frame[r[2].clone()],
                            &frame[r[3].clone()],
                            limit,
                            crate::util::mstime(),
                        );
                    }
                }
            } else if frame.starts_with(b"*3\r\n$10\r\npsubscribe\r\n") {
                relay.ready.set(true);
                relay.readied.notify_waiters();
            } else if frame.starts_with(b"-") {
                return "the copy refused PSUBSCRIBE";
            }
        }
    }
}
