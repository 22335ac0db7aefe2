//! A replica's node passes a customer's write on to the tenant's primary.
//!
//! A client logged in on a node that holds only a replica of its database
//! (a read region, or a primary that just handed over) still gets its
//! writes done: the request goes to the primary's node in an envelope
//! (docs/ROUTING.md) on a store stream of the cluster's links, and the
//! primary's reply comes back as the client's reply, with the write's
//! token, which the connection keeps so that its next reads wait for (or
//! go to) a copy that has the write: read-your-writes.
//!
//! One [`Forwarder`] per tenant per executor: one stream to the primary's
//! node, shared by that executor's clients of the tenant, pipelined,
//! replies in request order. A connection's pipelined writes go on it at
//! once, in order (`conn::forward_window`); anything else of the
//! connection waits for the replies before it, so its own requests keep
//! their order.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::envelope::{split_reply_token, Token};
use crate::resp::frame::Scanner;
use crate::shared::Shared;
use crate::tenant::TenantId;

/// `Err` of a forward: a whole Redis error (code and text, no `-`).
/// A forwarded request's outcome: the primary's reply (the client's own
/// bytes, in its RESP version) and the token of what it wrote, if it did.
#[derive(Debug)]
pub struct Forwarded {
    pub reply: Bytes,
    pub token: Option<Token>,
    /// The copy refused the request because the envelope's user is gone
    /// (see [`crate::envelope::refuse_user_gone`]): the client's
    /// connection must close.
    pub user_gone: bool,
}

/// Who waits for the stream's next replies, in order.
type Owed = std::rc::Rc<std::cell::RefCell<VecDeque<oneshot::Sender<Result<Forwarded, String>>>>>;

struct Fwd {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Forwarded, String>>,
    /// Set once the request is written to the link: until then it has
    /// certainly not run (see [`Forwarder::send_tracked`]).
    sent: std::rc::Rc<std::cell::Cell<bool>>,
}

/// The stream to one primary's node for one tenant.
pub struct Forwarder {
    node: SocketAddr,
    tx: mpsc::Sender<Fwd>,
    stop: std::rc::Rc<Stop>,
    /// Requests sent and not answered yet (a copy's load, seen from here).
    in_flight: std::rc::Rc<std::cell::Cell<usize>>,
}

/// Counts one request in its forwarder's `in_flight` while it lives.
struct InFlight(std::rc::Rc<std::cell::Cell<usize>>);

impl InFlight {
    fn new(count: &std::rc::Rc<std::cell::Cell<usize>>) -> InFlight {
        count.set(count.get() + 1);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// A forwarder's end: set by its task when the stream fails, or by a
/// caller that gives the stream up (which wakes the task).
#[derive(Default)]
struct Stop {
    dead: std::cell::Cell<bool>,
    wake: tokio::sync::Notify,
}

impl Stop {
    /// Marks the stream dead and wakes its task, which ends it.
    fn give_up(&self) {
        self.dead.set(true);
        self.wake.notify_one();
    }
}

/// How long dialing the primary's node may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests queued on one forwarder before callers wait.
const QUEUE: usize = 1024;

impl Forwarder {
    /// Starts the stream's task on this executor (it dials on first use).
    pub fn start(shared: &Arc<Shared>, node: SocketAddr, tenant: TenantId) -> Forwarder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = std::rc::Rc::new(Stop::default());
        tokio::task::spawn_local(run(shared.clone(), node, tenant, rx, stop.clone()));
        Forwarder {
            node,
            tx,
            stop,
            in_flight: Default::default(),
        }
    }

    /// Requests sent on it and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// The primary's node this forwarder talks to.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// A request sent now is queued at once (see [`Forwarder::send`]).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Its stream failed (a new forwarder must be started).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.stop.dead.get()
    }

    /// Gives the stream up (a request on it got no reply in time): the
    /// next request starts a new one.
    pub fn abandon(&self) {
        self.stop.give_up();
    }

    /// Sends `bytes` (an envelope and its request) and waits for the reply.
    /// The caller bounds the wait.
    /// The request is queued at once when the queue has room (so requests
    /// sent one after another go on the stream in that order, before any
    /// reply is awaited: a connection's pipelined writes), else when the
    /// future is first polled.
    pub fn send(
        &self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Forwarded, String>> + 'static {
        self.send_tracked(bytes).1
    }

    /// [`Forwarder::send`], and whether the request has been written to
    /// the link yet: a caller that gives up on a request not yet written
    /// (the link still dialing) knows it did not run, and it never will
    /// (a request whose caller is gone is not written).
    pub fn send_tracked(
        &self,
        bytes: Vec<u8>,
    ) -> (
        std::rc::Rc<std::cell::Cell<bool>>,
        impl std::future::Future<Output = Result<Forwarded, String>> + 'static,
    ) {
        let tx = self.tx.clone();
        let counted = InFlight::new(&self.in_flight);
        let (rtx, rrx) = oneshot::channel();
        let sent = std::rc::Rc::new(std::cell::Cell::new(false));
        let fwd = Fwd {
            bytes,
            reply: rtx,
            sent: sent.clone(),
        };
        let waiting = match self.tx.try_send(fwd) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(f)) => Some(Ok(f)),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(Err(())),
        };
        let fut = async move {
            let _counted = counted;
            match waiting {
                None => {}
                Some(Ok(f)) => tx
                    .send(f)
                    .await
                    .map_err(|_| "TRYAGAIN the link to the primary closed; retry".to_string())?,
                Some(Err(())) => {
                    return Err("TRYAGAIN the link to the primary closed; retry".to_string())
                }
            }
            rrx.await.map_err(|_| {
                "ERR the link to the primary closed; the request may or may not have run"
                    .to_string()
            })?
        };
        (sent, fut)
    }
}

async fn run(
    shared: Arc<Shared>,
    node: SocketAddr,
    tenant: TenantId,
    mut rx: mpsc::Receiver<Fwd>,
    stop: std::rc::Rc<Stop>,
) {
    // Requests never sent may be retried by the client: TRYAGAIN.
    let fail_all = |rx: &mut mpsc::Receiver<Fwd>, why: &str| {
        rx.close();
        while let Ok(f) = rx.try_recv() {
            let _ = f
                .reply
                .send(Err(format!("TRYAGAIN forwarding to the primary: {why}")));
        }
    };
    let Some(dialer) = shared.link_dialer.get().cloned() else {
        fail_all(&mut rx, "this server has no cluster link");
        return;
    };
    let dialed = std::time::Instant::now();
    let link = match tokio::time::timeout(DIAL_TIMEOUT, dialer.dial(node, tenant)).await {
        Ok(Ok(l)) => {
            tracing::debug!(tenant = tenant.0, %node, ms = dialed.elapsed().as_millis() as u64, "forwarding link starts");
            l
        }
        Ok(Err(e)) => {
            fail_all(
                &mut rx,
                &format!("cannot reach the primary's node {node}: {e}"),
            );
            return;
        }
        Err(_) => {
            fail_all(
                &mut rx,
                &format!("cannot reach the primary's node {node}: timed out"),
            );
            return;
        }
    };
    let (rd, mut wr) = tokio::io::split(link.io);
    // Who waits for the next reply, in order. The writer (this task)
    // appends before writing; the reader (its own task, so a large write
    // never keeps replies from being read) pops.
    let owed: Owed = Default::default();
    let mut reader =
        tokio::task::spawn_local(read_replies(rd, owed.clone(), shared.clone(), tenant));
    let why = loop {
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { break "closed".to_string() };
                if f.reply.is_closed() {
                    // Its caller gave up and was told it did not run.
                    continue;
                }
                f.sent.set(true);
                owed.borrow_mut().push_back(f.reply);
                if let Err(e) = wr.write_all(&f.bytes).await {
                    break format!("writing to the primary's node: {e}");
                }
            }
            // The reader ended (the link broke, or a bad reply).
            _ = &mut reader => break "the link to the primary's node ended".to_string(),
            _ = stop.wake.notified() => break "given up".to_string(),
        }
    };
    reader.abort();
    stop.dead.set(true);
    tracing::debug!(tenant = tenant.0, %node, "forwarding link ends: {why}");
    // Requests sent may have run: the client must not assume either way.
    for tx in owed.borrow_mut().drain(..) {
        let _ = tx.send(Err(format!(
            "ERR forwarding to the primary: {why}; the request may or may not have run"
        )));
    }
    fail_all(&mut rx, &why);
}

/// Hands each reply on the stream to the request it answers. A token of a
/// later epoch than the stream's replies had so far says the database has
/// a new primary (a node that handed over sends the writes it still gets
/// on to it, `dispatch::relay`, and its replies carry the new primary's
/// tokens): the node asks the controller for the role record at once
/// ([`Shared::primary_missed`]) rather than relay through the old one
/// until the state sync brings the record.
async fn read_replies<R: tokio::io::AsyncRead + Unpin>(
    mut rd: R,
    owed: Owed,
    shared: Arc<Shared>,
    tenant: TenantId,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut sc = Scanner::default();
    let mut epoch_seen = 0u64;
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            match sc.next(&buf) {
                Ok(Some(end)) => {
                    let mut frame = buf.split_to(end).freeze();
                    sc.rebase(end);
                    let token = match split_reply_token(&frame) {
                        Some((t, used)) => {
                            frame = frame.slice(used..);
                            if epoch_seen != 0 && t.epoch > epoch_seen {
                                tracing::debug!(
                                    tenant = tenant.0,
                                    epoch = t.epoch,
                                    "a reply of a later epoch: asking who the primary is"
                                );
                                shared.primary_missed(tenant);
                            }
                            epoch_seen = epoch_seen.max(t.epoch);
                            Some(t)
                        }
                        None => None,
                    };
                    let user_gone = match crate::envelope::split_user_gone(&frame) {
                        Some(used) => {
                            frame = frame.slice(used..);
                            true
                        }
                        None => false,
                    };
                    let Some(tx) = owed.borrow_mut().pop_front() else {
                        tracing::warn!("forwarding link: a reply nobody asked for");
                        return;
                    };
                    let _ = tx.send(Ok(Forwarded {
                        reply: frame,
                        token,
                        user_gone,
                    }));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("forwarding link: {e}");
                    return;
                }
            }
        }
    }
}

/// A connection's own stream to the primary's node, while Redis's
/// semantics tie the connection to one server: a transaction (MULTI until
/// EXEC or DISCARD), watched keys (WATCH until EXEC, DISCARD or UNWATCH),
/// a blocking command until its reply. Everything the connection sends
/// meanwhile (its connection commands excepted) goes on this stream, so
/// the primary sees one client, as a single Redis would: the transaction
/// queues there, WATCH sees the primary's keys, a pop waits for a push
/// from anywhere. Dropping the pin (the connection closed, RESET) closes
/// the stream, which ends the client's state on the primary.
pub struct Pin {
    fwd: Forwarder,
    multi: bool,
    watching: bool,
}

impl Pin {
    /// Inside MULTI on the primary.
    pub fn in_multi(&self) -> bool {
        self.multi
    }

    /// The node the stream goes to.
    pub fn node(&self) -> SocketAddr {
        self.fwd.node()
    }
}

/// The reply to a request sent on a pin.
pub type PinnedReply =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Forwarded, String>>>>;

/// Whether request `r` ties a customer's connection on a replica's node to
/// the primary (see [`Pin`]). WAIT blocks like a blocking pop, and must
/// never hold the stream other clients share.
pub fn pins(r: &crate::cmd::table::Registered, args: &[&[u8]]) -> bool {
    matches!(r.fullname.as_str(), "multi" | "watch" | "wait")
        || r.spec.route == crate::cmd::table::Route::Blocking
        || blocks_by_option(r, args)
}

/// Whether `r`, sent on a pin, waits without a deadline of the router's
/// own: a blocking command or WAIT, outside a transaction (its own
/// timeout bounds it; queued in MULTI it only queues).
pub fn blocks(r: &crate::cmd::table::Registered, args: &[&[u8]], in_multi: bool) -> bool {
    (r.spec.route == crate::cmd::table::Route::Blocking
        || r.fullname == "wait"
        || blocks_by_option(r, args))
        && !in_multi
}

/// XREADGROUP (a write the primary runs) and XREAD block only when given
/// BLOCK, which may come anywhere among their options before `STREAMS`
/// (a group or consumer named "block" counts too: pinning one that
/// would not block costs a stream, not correctness); without it they are
/// forwarded like any write or read.
fn blocks_by_option(r: &crate::cmd::table::Registered, args: &[&[u8]]) -> bool {
    matches!(r.fullname.as_str(), "xreadgroup" | "xread")
        && args
            .get(1..)
            .unwrap_or_default()
            .iter()
            .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
            .any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// Sends `req` on the session's pin, opening it to the node the tenant
/// follows first. None: this node follows no primary any more (it became
/// the primary): the request runs here.
pub fn pin_send(
    tenant: &std::rc::Rc<std::cell::RefCell<crate::tenant::Tenant>>,
    shared: &Arc<Shared>,
    s: &mut crate::client::Session,
    req: Vec<u8>,
) -> Option<PinnedReply> {
    let t = tenant.borrow();
    let Some(node) = primary_node(&t, shared) else {
        s.pin = None;
        if t.remote {
            return Some(Box::pin(std::future::ready(Err(GONE.to_string()))));
        }
        return None;
    };
    // Not to a node the gossip says is down: it could only be lost.
    let target = s.pin.as_ref().map_or(node, |p| p.fwd.node());
    if shared.link_down(target) {
        return Some(Box::pin(std::future::ready(Err(PRIMARY_DOWN.to_string()))));
    }
    let pin = s.pin.get_or_insert_with(|| Pin {
        fwd: Forwarder::start(shared, node, t.id),
        multi: false,
        watching: false,
    });
    Some(Box::pin(pin.fwd.send(req)))
}

/// The answer to a request for a connection's own stream to a primary
/// whose node the gossip says is down: it was not sent.
const PRIMARY_DOWN: &str =
    "TRYAGAIN the primary's node is down (a failover may follow); the request did not run, retry";

/// A remote tenant's requests once the remote catalog no longer has it
/// (deleted, or now held here): the client must log in again.
const GONE: &str =
    "ERR this node no longer routes this database (it was moved or deleted); reconnect and AUTH again";

/// Where the tenant's primary is, seen from this node: the node a
/// replica follows, or a remote tenant's primary (None: this node is the
/// primary, or the remote tenant is gone).
pub fn primary_node(t: &crate::tenant::Tenant, shared: &Shared) -> Option<SocketAddr> {
    if t.remote {
        return shared.remote_route(t.id).map(|r| r.primary);
    }
    t.upstream
        .as_ref()
        .and_then(|u| u.node)
        .filter(|_| t.role == crate::repl::Role::Replica)
}

/// The forwarder in `slot`, started anew when it talks to another node or
/// its stream failed.
fn to_node<'a>(
    slot: &'a mut Option<Forwarder>,
    shared: &Arc<Shared>,
    node: SocketAddr,
    tenant: TenantId,
) -> &'a Forwarder {
    match slot {
        Some(f) if f.node() == node && !f.is_closed() => {}
        _ => *slot = Some(Forwarder::start(shared, node, tenant)),
    }
    slot.get_or_insert_with(|| Forwarder::start(shared, node, tenant))
}

/// Sends `req` to the tenant's primary at once, without retries (a
/// pipelined write of a window, see `conn`); None when this node follows
/// no primary now (or none the gossip thinks is up), or the stream's
/// queue is full.
pub fn send_now(
    t: &mut crate::tenant::Tenant,
    shared: &Arc<Shared>,
    req: Vec<u8>,
) -> Option<impl std::future::Future<Output = Result<Forwarded, String>> + 'static> {
    // Not to a node the gossip says is down (`forward_until` waits).
    let node = primary_node(t, shared).filter(|n| !shared.link_down(*n))?;
    let id = t.id;
    let f = to_node(&mut t.forwarder, shared, node, id);
    // Queued now or not at all: a request that waited for room could go
    // out after one sent later.
    f.has_room().then(|| f.send(req))
}

/// A reply (or failure) that says the request did not run: it may be sent
/// again (`forward_until` does, for up to [`FORWARD_TIMEOUT`]). `-BEHIND`
/// is a refused envelope (a copy that is, or just became, a replica).
pub fn did_not_run(r: &Result<Forwarded, String>) -> bool {
    match r {
        Ok(f) => {
            f.reply.starts_with(b"-READONLY")
                || f.reply.starts_with(b"-TRYAGAIN")
                || f.reply.starts_with(b"-BEHIND")
        }
        Err(e) => e.starts_with("TRYAGAIN"),
    }
}

/// How long a read may wait for another node's copy before it is tried
/// elsewhere (a read may run twice; a write never does).
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a copy that left a read unanswered for [`READ_TIMEOUT`] (or
/// whose stream failed) gets no reads from this executor: the gossip takes
/// a dead node out of the route within a few seconds.
const SILENT_FOR: Duration = Duration::from_secs(5);
/// Copies whose round trips differ by no more than this are equally near:
/// reads are spread over them.
const TIE_MS: u64 = 1;

/// A remote tenant's reads on one executor: a stream to each copy's node
/// it reads from, the copies lately silent, and whose turn it is among
/// equally near ones.
#[derive(Default)]
pub struct Reads {
    streams: Vec<Forwarder>,
    silent: Vec<(SocketAddr, tokio::time::Instant)>,
    turn: usize,
}

impl Reads {
    /// The stream to `node`, started anew when it failed.
    fn to(&mut self, shared: &Arc<Shared>, node: SocketAddr, tenant: TenantId) -> &Forwarder {
        self.streams.retain(|f| !f.is_closed());
        let i = match self.streams.iter().position(|f| f.node() == node) {
            Some(i) => i,
            None => {
                self.streams.push(Forwarder::start(shared, node, tenant));
                self.streams.len() - 1
            }
        };
        &self.streams[i]
    }

    fn load(&self, node: SocketAddr) -> usize {
        self.streams
            .iter()
            .find(|f| f.node() == node)
            .map_or(0, |f| f.in_flight())
    }

    /// Skips `node` for [`SILENT_FOR`] and gives its stream up (a read
    /// left unanswered, or its stream failed).
    pub(crate) fn silence(&mut self, node: SocketAddr) {
        for f in self.streams.iter().filter(|f| f.node() == node) {
            f.abandon();
        }
        self.silent
            .push((node, tokio::time::Instant::now() + SILENT_FOR));
    }

    /// The copy the next read goes to (see [`choose`]), skipping those
    /// lately silent.
    fn pick(
        &mut self,
        copies: &[crate::catalog::CopyAt],
        max_in_flight: usize,
    ) -> Option<crate::catalog::CopyAt> {
        let now = tokio::time::Instant::now();
        self.silent.retain(|(_, until)| *until > now);
        // A node that is no longer a copy keeps no stream.
        self.streams
            .retain(|f| copies.iter().any(|c| c.addr == f.node()));
        self.turn = self.turn.wrapping_add(1);
        let silent = |a: SocketAddr| self.silent.iter().any(|(s, _)| *s == a);
        choose(copies, self.turn, max_in_flight, silent, |a| self.load(a))
    }
}

/// Sends `read` at once to the copy a read of the remote tenant would go
/// to now ([`Reads::pick`]), opening a read window (`conn`): the copy's
/// node and the reply. None: no copy may take it now (none in the route,
/// all silent or busy, or the stream's queue is full).
pub fn send_read_near(
    t: &mut crate::tenant::Tenant,
    shared: &Arc<Shared>,
    max_in_flight: usize,
    read: Vec<u8>,
) -> Option<(SocketAddr, PinnedReply)> {
    let route = shared.remote_route(t.id)?;
    let copy = t.reads.pick(&route.copies, max_in_flight)?;
    Some((copy.addr, send_on(t, shared, copy.addr, read)?))
}

/// Sends `read` at once to the copy on `node` (a read pipelined behind
/// others of a read window, which all go to one copy, so that their
/// replies come in order). None: `node` holds no copy in the route any
/// more, is lately silent or busy, or its stream's queue is full.
pub fn send_read_to(
    t: &mut crate::tenant::Tenant,
    shared: &Arc<Shared>,
    node: SocketAddr,
    max_in_flight: usize,
    read: Vec<u8>,
) -> Option<PinnedReply> {
    let route = shared.remote_route(t.id)?;
    let now = tokio::time::Instant::now();
    let silent = t.reads.silent.iter().any(|(a, u)| *a == node && *u > now);
    if silent || !route.copies.iter().any(|c| c.addr == node) || t.reads.load(node) >= max_in_flight
    {
        return None;
    }
    send_on(t, shared, node, read)
}

/// `read` on the tenant's stream to the copy on `node`, queued now or not
/// at all (None: the stream's queue is full).
fn send_on(
    t: &mut crate::tenant::Tenant,
    shared: &Arc<Shared>,
    node: SocketAddr,
    read: Vec<u8>,
) -> Option<PinnedReply> {
    let id = t.id;
    let f = t.reads.to(shared, node, id);
    f.has_room().then(|| Box::pin(f.send(read)) as PinnedReply)
}

/// From `copies` (nearest first): the nearest group of equally near copies
/// (within [`TIE_MS`] of the group's first) that has one neither skipped
/// nor busy (`max_in_flight` reads in flight from here), and in it the
/// least loaded, taken in turns (`turn`) when loads are equal. None:
/// every copy is skipped or busy.
fn choose(
    copies: &[crate::catalog::CopyAt],
    turn: usize,
    max_in_flight: usize,
    skipped: impl Fn(SocketAddr) -> bool,
    load: impl Fn(SocketAddr) -> usize,
) -> Option<crate::catalog::CopyAt> {
    let mut i = 0;
    while i < copies.len() {
        let near = copies[i].rtt_ms;
        let n = copies[i..]
            .iter()
            .take_while(|c| c.rtt_ms.saturating_sub(near) <= TIE_MS)
            .count();
        let group = &copies[i..i + n];
        let best = (0..n)
            .map(|k| group[(k + turn) % n])
            .filter(|c| !skipped(c.addr))
            .map(|c| (load(c.addr), c))
            .filter(|(load, _)| *load < max_in_flight)
            .min_by_key(|(load, _)| *load);
        if let Some((_, c)) = best {
            return Some(c);
        }
        i += n;
    }
    None
}

/// A remote tenant's read: `read` (with the connection's position as its
/// `min-token`) to the nearest copy ([`Reads::pick`]: ties and busy copies
/// go to the next). A copy whose stream fails is skipped for
/// [`SILENT_FOR`] and the read tried on the next; one silent for
/// [`READ_TIMEOUT`] is skipped as well, and the primary answers. A copy
/// that is behind (`-BEHIND`: the connection's own write has
/// not reached it) is asked again, a round trip to it later, for as long
/// as that beats asking the primary and `ryw_wait` allows; then `req` goes
/// to the primary, which has everything.
pub async fn run_read(
    tenant: &std::rc::Rc<std::cell::RefCell<crate::tenant::Tenant>>,
    shared: &Arc<Shared>,
    limits: (Duration, usize),
    read: Vec<u8>,
    req: Vec<u8>,
) -> Outcome {
    let (ryw_wait, max_in_flight) = limits;
    let start = tokio::time::Instant::now();
    let mut tried = false;
    // When a copy first answered that it is behind: the time from then on
    // is spent waiting for the connection's write (ryw waits).
    let mut behind: Option<tokio::time::Instant> = None;
    let waited = |t: &mut crate::tenant::Tenant, since: tokio::time::Instant| {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        t.stats.routes.wait_us = t.stats.routes.wait_us.saturating_add(us);
    };
    loop {
        let (copy, primary_rtt, sent) = {
            let mut t = tenant.borrow_mut();
            let Some(route) = shared.remote_route(t.id) else {
                break;
            };
            let Some(copy) = t.reads.pick(&route.copies, max_in_flight) else {
                break;
            };
            let id = t.id;
            let sent = t.reads.to(shared, copy.addr, id).send(read.clone());
            (copy, route.primary_rtt_ms(), sent)
        };
        tried = true;
        match tokio::time::timeout(READ_TIMEOUT, sent).await {
            Ok(Ok(f)) if !f.reply.starts_with(b"-BEHIND") => {
                let mut t = tenant.borrow_mut();
                t.stats.routes.remote_reads += 1;
                if let Some(since) = behind {
                    t.stats.routes.waited_reads += 1;
                    waited(&mut t, since);
                }
                return Outcome::Reply(f);
            }
            Ok(Ok(_)) => {
                // Behind: worth another try there only while one more
                // round trip to the copy ends before the primary's would.
                let rtt = Duration::from_millis(copy.rtt_ms.max(1));
                let bound = ryw_wait.min(Duration::from_millis(primary_rtt));
                if start.elapsed() + rtt * 2 >= bound {
                    break;
                }
                behind.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(rtt.max(Duration::from_millis(2))).await;
            }
            Ok(Err(_)) | Err(_) => {
                tenant.borrow_mut().reads.silence(copy.addr);
                // A silent copy cost a second already: the primary next.
                if start.elapsed() >= READ_TIMEOUT {
                    break;
                }
            }
        }
    }
    {
        let mut t = tenant.borrow_mut();
        if tried {
            t.stats.routes.fell_back_reads += 1;
        }
        if let Some(since) = behind {
            waited(&mut t, since);
        }
        t.stats.routes.primary_reads += 1;
    }
    run_for(tenant, shared, req).await
}

/// Follows the primary's reply to pinned command `name`: MULTI, WATCH,
/// EXEC, DISCARD and UNWATCH change what ties the connection, and once
/// nothing does the pin (and its stream) is let go.
pub fn pin_after(s: &mut crate::client::Session, name: &[u8], reply: &[u8]) {
    let Some(p) = s.pin.as_mut() else { return };
    let ok = !reply.starts_with(b"-");
    let name = name.to_ascii_lowercase();
    match name.as_slice() {
        b"multi" if ok => p.multi = true,
        // EXEC ends the transaction and every WATCH, whatever it answers
        // (EXECABORT, a nil for a watched key that changed); without a
        // MULTI it changes nothing.
        b"exec" | b"discard" if p.multi => {
            p.multi = false;
            p.watching = false;
        }
        b"watch" if ok => p.watching = true,
        // Inside MULTI it is queued, and EXEC ends every WATCH anyway.
        b"unwatch" if !p.multi => p.watching = false,
        _ => {}
    }
    if !p.multi && !p.watching {
        s.pin = None;
    }
}

/// The answer to a forwarded request that no primary took within
/// [`FORWARD_TIMEOUT`] (a failover that lasts): it did not run.
pub const NOT_RUN: &str =
    "TRYAGAIN no primary took the request within 5 s (a failover in progress?); it did not run, retry";

/// How long a forwarded request may take, retries included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// One forwarded request in `Shared::forwarding` while it lives (a node
/// that exits waits for its forwarded requests' replies).
pub struct Counted(Arc<Shared>);

impl Counted {
    pub fn new(shared: &Arc<Shared>) -> Counted {
        shared
            .forwarding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(shared.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .forwarding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What became of a forwarded request.
#[derive(Debug)]
pub enum Outcome {
    /// The primary's reply.
    Reply(Forwarded),
    /// An error for the client (a whole Redis error, no `-`).
    Error(String),
    /// This node's copy is no longer a replica (it became the primary)
    /// and the request was not sent: run it here.
    RunHere,
}

/// Gives up `t`'s forwarding stream if it goes to `node`: only that one,
/// since the tenant may forward to a new primary already.
pub fn abandon_stream_to(t: &crate::tenant::Tenant, node: SocketAddr) {
    if let Some(f) = t.forwarder.as_ref().filter(|f| f.node() == node) {
        f.abandon();
    }
}

/// How often a forwarded request's wait looks whether the gossip holds the
/// node it went to as down.
pub const DOWN_CHECK: Duration = Duration::from_millis(20);

/// The answer to a request sent to a primary whose node then went down
/// or was replaced without answering it.
pub const GONE_IN_FLIGHT: &str = "ERR the primary's node went down or was replaced while the request was in flight; the request may or may not have run";

/// How long a request sent to a node that the database's role record no
/// longer names its primary may still wait for that node's reply. A node
/// handing the database over answers the writes it held once it knows
/// (`-READONLY`: retried at the new primary); a primary that died answers
/// nothing, and the gossip may take seconds more to call it down (at
/// Fly's timings; a router in another region suspects it later still).
/// Waiting only for nodes the gossip suspects was measured worse on both
/// counts (docs/BENCHMARKS.md): a far router then waited out the whole
/// forwarding timeout after a kill.
pub const MOVED_GRACE: Duration = Duration::from_millis(300);

/// Whether the node a request awaits a reply from is gone, asked every
/// [`DOWN_CHECK`]: the gossip holds it as down, or the role record
/// stopped naming it the database's primary [`MOVED_GRACE`] ago. A node
/// that died closes nothing: without this a wait would last until the
/// link's own idle timeout (a blocking pop's, for ever), and the client
/// with it, while a failover had already given the database another
/// primary. Every wait on a primary's reply uses it: a single request's
/// ([`answer_unless_down`]), a pipelined window's and a pinned stream's
/// (`conn`).
pub struct GoneWatch {
    node: SocketAddr,
    /// When the record was first seen naming another primary.
    moved_at: Option<tokio::time::Instant>,
}

impl GoneWatch {
    pub fn new(node: SocketAddr) -> GoneWatch {
        GoneWatch {
            node,
            moved_at: None,
        }
    }

    /// The node watched.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// `moved`: whether the record names another node the primary now
    /// (asked until it first does).
    pub fn gone(&mut self, shared: &Shared, moved: impl FnOnce() -> bool) -> bool {
        if shared.link_down(self.node) {
            return true;
        }
        match self.moved_at {
            Some(at) => at.elapsed() >= MOVED_GRACE,
            None => {
                if moved() {
                    self.moved_at = Some(tokio::time::Instant::now());
                }
                false
            }
        }
    }
}

/// Gives up the tenant's stream to `node`, a primary that is gone or
/// stopped answering (only that one: the tenant may follow a new primary
/// already), and asks who the primary is now (the gossip may not know
/// yet that it is gone).
pub fn give_up_primary(
    tenant: &std::rc::Rc<std::cell::RefCell<crate::tenant::Tenant>>,
    shared: &Shared,
    node: SocketAddr,
) {
    let t = tenant.borrow();
    abandon_stream_to(&t, node);
    shared.primary_missed(t.id);
}

/// `reply` of a request sent to `node`, unless `deadline` passes first
/// (`Err(false)`), or the node is gone meanwhile ([`GoneWatch`], with
/// `moved` saying whether the record names another primary): `Err(true)`.
pub async fn answer_unless_down<T>(
    shared: &Shared,
    node: SocketAddr,
    deadline: tokio::time::Instant,
    moved: impl Fn() -> bool,
    reply: impl std::future::Future<Output = T>,
) -> Result<T, bool> {
    let mut reply = std::pin::pin!(reply);
    let mut tick = tokio::time::interval(DOWN_CHECK);
    let mut watch = GoneWatch::new(node);
    loop {
        tokio::select! {
            biased;
            r = &mut reply => return Ok(r),
            _ = tokio::time::sleep_until(deadline) => return Err(false),
            _ = tick.tick() => {
                if watch.gone(shared, &moved) {
                    return Err(true);
                }
            }
        }
    }
}

/// Forwards `req` to tenant `tenant`'s primary and returns its reply.
///
/// A reply that says the request did not run there (`-READONLY`: that
/// node is no longer the primary; `-TRYAGAIN`: a primary without its
/// lease yet), or a link that failed before sending it, is retried, on
/// whatever node the tenant then follows, until [`FORWARD_TIMEOUT`]: a
/// failover in progress is waited out rather than shown to the client. A
/// request that may have run is never sent twice.
pub async fn run_for(
    tenant: &std::rc::Rc<std::cell::RefCell<crate::tenant::Tenant>>,
    shared: &Arc<Shared>,
    req: Vec<u8>,
) -> Outcome {
    let _counted = Counted::new(shared);
    forward_until(tenant, shared, req).await
}

async fn forward_until(
    tenant: &std::rc::Rc<std::cell::RefCell<crate::tenant::Tenant>>,
    shared: &Arc<Shared>,
    req: Vec<u8>,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    loop {
        let sent = {
            let mut t = tenant.borrow_mut();
            if t.remote && primary_node(&t, shared).is_none() {
                return Outcome::Error(GONE.into());
            }
            match primary_node(&t, shared) {
                // The gossip says that node is down: nothing sent there
                // could run. Wait for another primary (a failover), or
                // tell the client it did not run.
                Some(node) if shared.link_down(node) => Err(node),
                Some(node) => {
                    let id = t.id;
                    let (written, reply) =
                        to_node(&mut t.forwarder, shared, node, id).send_tracked(req.clone());
                    Ok(Some((written, reply, node)))
                }
                _ => Ok(None),
            }
        };
        let (written, f, node) = match sent {
            Ok(Some(sent)) => sent,
            Ok(None) => return Outcome::RunHere,
            Err(down) => {
                give_up_primary(tenant, shared, down);
                if tokio::time::Instant::now() >= deadline {
                    return Outcome::Error(NOT_RUN.into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let moved = || primary_node(&tenant.borrow(), shared) != Some(node);
        let r = match answer_unless_down(shared, node, deadline, moved, f).await {
            Ok(r) => r,
            Err(down) => {
                // A stream that stopped answering, or whose node is
                // gone, is not used again.
                give_up_primary(tenant, shared, node);
                if !written.get() {
                    // Still waiting for the link: it never went out, and
                    // now never will; before the deadline, it goes to the
                    // next primary (a failover) like a new request.
                    if down && tokio::time::Instant::now() < deadline {
                        continue;
                    }
                    return Outcome::Error(NOT_RUN.into());
                }
                return Outcome::Error(if down {
                    GONE_IN_FLIGHT
                } else {
                    "ERR the primary did not answer in time; the request may or may not have run"
                }
                .into());
            }
        };
        let retry = did_not_run(&r);
        if retry {
            shared.primary_missed(tenant.borrow().id);
        }
        if retry && tokio::time::Instant::now() >= deadline {
            // A replica's -READONLY is the cluster's business, not the
            // client's: what it learns is that nothing ran.
            return Outcome::Error(NOT_RUN.into());
        }
        if !retry {
            return match r {
                Ok(f) => Outcome::Reply(f),
                Err(e) => Outcome::Error(e),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a node with a copy of a database answered a login check
/// (`envelope::login_check`).
pub enum LoginCheck {
    /// The credentials log in: the database's users, as an aclfile.
    Users(Vec<u8>),
    /// Refused: the reply for the client, as the copy wrote it
    /// (WRONGPASS from the primary; TRYAGAIN from a copy that could not
    /// confirm the credentials).
    Refused(Bytes),
}

thread_local! {
    /// Each executor's login-check stream per database (see
    /// [`check_login`]).
    static LOGIN_STREAMS: std::cell::RefCell<std::collections::HashMap<TenantId, Forwarder>> =
        Default::default();
}

/// Sends a login check for database `to`, which this node holds no copy
/// of, to its primary's node (whose users and ACL LOG are the
/// database's), or, while the gossip holds that node as down (a failover
/// under way), to a copy's. The checks go on a stream of their own, one per database
/// and executor, kept while it works: a client's login must not wait
/// behind other clients' requests, and a storm of logins (a password
/// being guessed) costs the primary one stream, not one per attempt. At
/// most the stream's queue (1024) of checks wait at once; a login beyond
/// that is refused with TRYAGAIN before anything is sent. `Err`: a whole
/// Redis error for the client (the check did not happen).
pub async fn check_login(
    shared: &Arc<Shared>,
    to: TenantId,
    req: Vec<u8>,
) -> Result<LoginCheck, String> {
    const UNREACHED: &str =
        "TRYAGAIN the database's primary could not check this login (it is unreachable); retry";
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    // Between tries of a node that refused its link: doubled each time.
    let mut pause = Duration::from_millis(20);
    let reply = loop {
        let Some(route) = shared.remote_route(to) else {
            return Err(GONE.into());
        };
        // The primary's node down (a failover under way): a copy checks
        // the login meanwhile; its users are the primary's as of its
        // stream, and a login it does not know is not refused there (see
        // `check_login_for_node`).
        let node = if shared.link_down(route.primary) {
            shared.primary_missed(to);
            match route
                .copies
                .iter()
                .map(|c| c.addr)
                .find(|a| *a != route.primary && !shared.link_down(*a))
            {
                Some(copy) => copy,
                // No copy streams either (their links went down with the
                // primary): the check waits for a new primary, as a
                // forwarded request does.
                None if tokio::time::Instant::now() + Duration::from_millis(20) < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                None => return Err(UNREACHED.into()),
            }
        } else {
            route.primary
        };
        let sent = LOGIN_STREAMS.with(|streams| {
            let mut streams = streams.borrow_mut();
            // Streams of databases whose primary moved, or that failed, go.
            streams.retain(|_, f| !f.is_closed());
            let mut slot = streams.remove(&to);
            let f = to_node(&mut slot, shared, node, to);
            let sent = f.has_room().then(|| (f.send(req.clone()), f.stop.clone()));
            if let Some(f) = slot {
                streams.insert(to, f);
            }
            sent
        });
        let Some((reply, stop)) = sent else {
            return Err(
                "TRYAGAIN too many logins to this database are being checked on this node; retry"
                    .into(),
            );
        };
        // (Sent to the primary: given up once another is named.)
        let moved =
            || node == route.primary && shared.remote_route(to).is_some_and(|r| r.primary != node);
        match answer_unless_down(shared, node, deadline, moved, reply).await {
            Ok(Ok(r)) => break r.reply,
            // The stream failed before an answer (a node that just died
            // refuses its link before the gossip says it is down): asked
            // again shortly, until the deadline.
            Ok(Err(_)) => {
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(UNREACHED.into());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
            // Its node went down meanwhile: asked again, of a copy (a
            // check changes nothing, it may run twice).
            Err(true) => {
                stop.give_up();
                continue;
            }
            Err(false) => {
                // No reply in time: the stream is given up, the next check
                // starts a new one.
                stop.give_up();
                return Err(UNREACHED.into());
            }
        }
    };
    match reply.first() {
        Some(b'$') => bulk_body(&reply)
            .map(|b| LoginCheck::Users(b.to_vec()))
            .ok_or_else(|| {
                "ERR the database's primary answered the login check with a malformed reply".into()
            }),
        Some(b'-') => Ok(LoginCheck::Refused(reply)),
        _ => {
            Err("ERR the database's primary answered the login check with a malformed reply".into())
        }
    }
}

/// The body of a whole RESP bulk string (`$<len>\r\n<body>\r\n`).
fn bulk_body(reply: &[u8]) -> Option<&[u8]> {
    crate::envelope::bulk_prefix(reply)
        .filter(|(_, used)| *used == reply.len())
        .map(|(body, _)| body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CopyAt;

    fn at(port: u16, rtt_ms: u64) -> CopyAt {
        CopyAt {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            rtt_ms,
        }
    }

    #[test]
    fn equally_near_copies_take_turns_and_the_least_loaded_goes_first() {
        // Two copies in the region (0 and 1 ms: a tie), one across the sea.
        let copies = [at(1, 0), at(2, 1), at(3, 98)];
        let idle = |_| 0;
        let picked: Vec<u16> = (0..4)
            .map(|turn| {
                choose(&copies, turn, 8, |_| false, idle)
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert_eq!(picked, [1, 2, 1, 2]);
        // Unequal loads: the lighter one, whoever's turn it is.
        let load = |a: SocketAddr| if a.port() == 1 { 3 } else { 1 };
        for turn in 0..4 {
            assert_eq!(
                choose(&copies, turn, 8, |_| false, load)
                    .unwrap()
                    .addr
                    .port(),
                2
            );
        }
    }

    #[test]
    fn busy_and_silent_copies_send_reads_to_the_next_nearest() {
        let copies = [at(1, 0), at(2, 1), at(3, 98)];
        let busy_near = |a: SocketAddr| if a.port() == 3 { 0 } else { 8 };
        assert_eq!(
            choose(&copies, 0, 8, |_| false, busy_near)
                .unwrap()
                .addr
                .port(),
            3
        );
        let near_silent = |a: SocketAddr| a.port() != 3;
        assert_eq!(
            choose(&copies, 0, 8, near_silent, |_| 0)
                .unwrap()
                .addr
                .port(),
            3
        );
        let one_silent = |a: SocketAddr| a.port() == 1;
        for turn in 0..3 {
            assert_eq!(
                choose(&copies, turn, 8, one_silent, |_| 0)
                    .unwrap()
                    .addr
                    .port(),
                2
            );
        }
        // Everything busy or silent: the caller asks the primary.
        assert_eq!(choose(&copies, 0, 8, |a| a.port() == 3, |_| 8), None);
        assert_eq!(choose(&[], 0, 8, |_| false, |_| 0), None);
    }

    #[test]
    fn a_tie_is_measured_from_the_nearest_of_its_group() {
        // 0, 1 and 2 ms: 2 is not within a millisecond of 0.
        let copies = [at(1, 0), at(2, 1), at(3, 2)];
        let picked: Vec<u16> = (0..6)
            .map(|t| choose(&copies, t, 8, |_| false, |_| 0).unwrap().addr.port())
            .collect();
        assert!(!picked.contains(&3), "{picked:?}");
    }

    #[test]
    fn a_bulk_body_is_read_whole_or_not_at_all() {
        assert_eq!(bulk_body(b"$5\r\nhello\r\n"), Some(&b"hello"[..]));
        assert_eq!(bulk_body(b"$0\r\n\r\n"), Some(&b""[..]));
        assert_eq!(bulk_body(b"$5\r\nhell\r\n"), None);
        assert_eq!(bulk_body(b"$5\r\nhello\r\nx"), None);
        assert_eq!(bulk_body(b"$-1\r\n"), None);
        let huge = format!("${}\r\nx\r\n", usize::MAX);
        assert_eq!(bulk_body(huge.as_bytes()), None);
    }
}
