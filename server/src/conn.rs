//! One client connection, running on its tenant's executor thread.
//!
//! The loop reads what the socket has, parses and executes every complete
//! request in the buffer against the tenant (one `RefCell` borrow per
//! batch, no await inside), and writes all replies with one write: a
//! pipeline of N commands costs one read and one write syscall. Output is
//! flushed early past 64 KiB so a client that pipelines huge replies holds a
//! bounded buffer, and a slow reader only stalls itself.

use crate::stream::ClientStream;
use bytes::{Buf, BytesMut};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{ClientInfo, Session};
use crate::cmd::server::Suspend;
use crate::dispatch::{dispatch, Outcome};
use crate::resp::{ParseLimits, Reply, Request, RequestParser};
use crate::shared::{GlobalStats, Shared};
use crate::tenant::Tenant;
use crate::util::mstime;

/// Flush replies to the socket once this much is buffered mid-batch.
const FLUSH_AT: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

enum After {
    Read,
    /// More buffered input to process after flushing.
    Flush,
    Paused,
    /// Over the plan's `ops_per_sec`: the next token comes in this long
    /// (the command waits in `pending`).
    Throttled(Duration),
    Suspend(Suspend),
    Close,
}

/// What a connection takes along when it moves to another tenant (AUTH
/// with a database's token): its identity, protocol and the input it has
/// read but not run yet. Plain owned data, so it crosses threads.
#[derive(Debug, Default)]
pub struct Carry {
    pub id: u64,
    pub resp: u8,
    pub db: usize,
    pub user: String,
    pub name: Vec<u8>,
    pub lib_name: Vec<u8>,
    pub lib_ver: Vec<u8>,
    pub created_ms: i64,
    pub input: Vec<u8>,
    /// The digest of the token it logged in with (`ClientInfo::token`).
    pub token: Option<[u8; 32]>,
    /// Its last write's (or read's) token, when it moves to the same
    /// database served another way (`ClientInfo::rehome`): its next reads
    /// still see its writes.
    pub last_token: Option<crate::envelope::Token>,
}

/// Serves one connection until it closes or moves to another tenant.
/// `carry` is set when it arrives from another tenant, already logged in.
pub async fn serve(
    mut stream: ClientStream,
    tenant: Rc<RefCell<Tenant>>,
    tenant_id: crate::tenant::TenantId,
    shared: Arc<Shared>,
    carry: Option<Carry>,
) {
    // (Until it registers, this task may run while a script holds the
    // database: nothing here borrows it. See `script::busy::spawn_conn`.)
    stream.set_nodelay();
    let (addr, laddr) = match stream.addrs() {
        Ok(a) => a,
        // Gone already: what came from elsewhere is freed outside the
        // tenant's account, as it was allocated (see alloc.rs).
        Err(_) => return crate::alloc::unscoped(|| drop((stream, carry))),
    };
    let fd = stream.fd();
    let now = mstime();
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let arrived = carry.is_some();
    let (info, mut session) = match carry {
        Some(c) => {
            let info = Rc::new(ClientInfo::new(c.id, addr, laddr, fd, c.created_ms));
            *info.name.borrow_mut() = c.name.clone();
            *info.lib_name.borrow_mut() = c.lib_name.clone();
            *info.lib_ver.borrow_mut() = c.lib_ver.clone();
            *info.user.borrow_mut() = c.user.clone();
            info.token.set(c.token);
            info.resp.set(c.resp);
            let mut s = Session::new(info.clone(), true);
            s.resp = c.resp;
            let dbs = shared.config.read().databases();
            s.db = c.db.min(dbs.saturating_sub(1));
            info.db.set(s.db);
            // Its user's rules are looked up in this database before its
            // first command (`dispatch::refresh_acl`).
            s.user = c.user.clone();
            s.unrestricted = false;
            s.acl_epoch = 0;
            s.last_token = c.last_token.clone();
            // The input was allocated in the tenant it came from: copy it
            // here, free the original outside any account.
            inbuf.extend_from_slice(&c.input);
            crate::alloc::unscoped(|| drop(c));
            (info, s)
        }
        None => {
            let info = Rc::new(ClientInfo::new(
                shared.next_client_id(),
                addr,
                laddr,
                fd,
                now,
            ));
            let open = shared.default_open();
            (info.clone(), Session::new(info, open))
        }
    };
    session.cluster_peer = stream.is_link();
    // A customer's connection is checked against its user's rules; a
    // cluster link carries other nodes' requests, checked where they came
    // from.
    if !session.cluster_peer {
        session.acl_epoch = 0;
    }
    info.link.set(session.cluster_peer);
    // A script holds the database: what the client sends is answered as
    // Redis answers it then, until the database is free.
    let mut first = None;
    if !crate::script::busy::is_free(&tenant) {
        let mut parser = RequestParser::new();
        let mut set = shared.settings();
        let mut out = Reply::new(session.resp);
        let mut shutdown = shared.shutdown_rx();
        let go_on = while_busy(
            &mut stream,
            &mut inbuf,
            &mut parser,
            &tenant,
            &mut session,
            &shared,
            &mut set,
            &mut out,
            &mut first,
            &mut shutdown,
            tenant_id,
        )
        .await;
        if !go_on {
            if arrived && !session.cluster_peer {
                // Counted by the AUTH that moved it here.
                shared.tenant_client_leave(tenant_id);
            }
            return crate::alloc::unscoped(|| drop(stream));
        }
    }
    // From here on, a task of the database like the others.
    crate::script::busy::close();
    // Client connections count against their tenant's `maxclients`: one
    // that moved here was counted by the AUTH that moved it.
    let counted = !session.cluster_peer;
    if counted && !arrived {
        shared.tenant_client_enter(tenant_id, 0);
    }
    let id = info.id;
    {
        let mut t = tenant.borrow_mut();
        // A customer's connection is metered once, when its login brings
        // it to the database's tenant.
        if counted && arrived && t.is_customer() {
            t.usage.connections += 1;
        }
        t.clients.insert(id, info.clone());
    }
    shared.stats.connected_clients.fetch_add(1, Relaxed);
    tracing::debug!(id, %addr, "client connected");

    let mut switch = None;
    // A login checked against the catalog before a change that retired its
    // token, arriving after the change: closed, as the change closed the
    // connections already here.
    let retired = info.token.get().is_some_and(|d| {
        let valid = |s: &crate::catalog::TenantSpec| s.token_sha256.contains(&d);
        let held = shared.catalog().get(tenant_id).map(valid);
        !held.unwrap_or_else(|| shared.remote_catalog().get(tenant_id).is_some_and(valid))
    });
    if retired {
        tracing::info!(
            id,
            "closing a connection whose token was retired while it moved"
        );
    } else {
        run(
            &mut stream,
            inbuf,
            first,
            &tenant,
            &shared,
            &mut session,
            &mut switch,
        )
        .await;
    }

    crate::script::busy::idle(&tenant).await;
    let mut t = tenant.borrow_mut();
    crate::cmd::multi::unwatch_all(&mut t, &mut session);
    crate::blocking::unblock(&mut t, id);
    t.pubsub.remove_client(id);
    crate::tracking::disable(&mut t, &session.info);
    t.clients.remove(&id);
    t.monitors.retain(|m| m.id != id);
    // A replica whose connection ended before its stream began.
    if t.replicas.iter().any(|l| l.client_id == id) {
        let keep = crate::repl::primary::replica_keep(&shared.settings());
        crate::repl::primary::detach(&mut t, id, keep);
    }
    drop(t);
    shared.stats.connected_clients.fetch_sub(1, Relaxed);
    if counted {
        shared.tenant_client_leave(tenant_id);
    }
    // Counted into a tenant it never reached (closed before the move).
    if let (Some(to), None) = (session.moving_to, &switch) {
        shared.tenant_client_leave(to);
    }
    let Some((to, input)) = switch else {
        tracing::debug!(id, %addr, "client closed");
        // The socket was registered outside any account (see alloc.rs).
        crate::alloc::unscoped(|| drop(stream));
        return;
    };
    tracing::debug!(id, %addr, tenant = to.0, "client moves to another tenant");
    let carry = crate::alloc::unscoped(|| Carry {
        id,
        resp: session.resp,
        db: session.db,
        user: session.user.clone(),
        name: info.name.borrow().clone(),
        lib_name: info.lib_name.borrow().clone(),
        lib_ver: info.lib_ver.borrow().clone(),
        created_ms: info.created_ms,
        input: input.to_vec(),
        token: info.token.get(),
        last_token: (to == tenant_id)
            .then(|| session.last_token.clone())
            .flatten(),
    });
    drop(input);
    crate::alloc::unscoped(|| match stream.into_handoff() {
        Ok(s) => shared.handoff(crate::executor::Handoff {
            stream: s,
            tenant: to,
            carry: Some(carry),
        }),
        Err(e) => {
            tracing::warn!(id, "handoff: {e}");
            shared.tenant_client_leave(to);
        }
    });
}

/// Clears a connection's `blocked` flag when its wait ends, however it ends.
struct Unblocked(std::rc::Rc<crate::client::ClientInfo>);

impl Drop for Unblocked {
    fn drop(&mut self) {
        self.0.blocked.set(false);
    }
}

/// Most requests a connection has in flight in one window (writes to the
/// primary, or reads to one copy) at once.
const FORWARD_WINDOW: usize = 64;

/// How a window ended.
enum WindowEnd {
    /// Nothing was sent (this node follows no primary now, or no copy may
    /// take a read): the request takes the single-request path.
    NotOpened,
    /// Every reply is in `out`; go on with the input.
    Done,
    /// The client went away.
    Gone,
    /// This node became the primary while the window's last request was
    /// refused (nothing after it was sent): it runs here.
    RunHere(Vec<Vec<u8>>),
}

/// Where a window's requests go: all to one node, on one stream, so their
/// replies come in the order they were sent.
#[derive(Clone, Copy, PartialEq)]
enum Leg {
    /// Writes, to the database's primary.
    Primary(std::net::SocketAddr),
    /// Reads of a database held elsewhere, to one copy.
    Copy(std::net::SocketAddr),
}

/// A request of a window on the wire: its reply, its envelope to the
/// primary (to retry a write, or to fall back to for a read), the read's
/// envelope to a copy (to ask another copy), its arguments (to run here),
/// and its place in `Shared::forwarding` (a node that exits waits for its
/// forwarded requests' replies).
struct InFlight {
    reply: crate::forward::PinnedReply,
    env: Vec<u8>,
    read: Option<Vec<u8>>,
    args: Vec<Vec<u8>>,
    _counted: crate::forward::Counted,
}

/// Takes the complete requests at the parser's position that may join the
/// window (plain writes, `dispatch::pipelined_write`, for the primary;
/// reads a copy may answer, `dispatch::pipelined_read`, for a copy) and
/// sends each at once on the window's stream, until `inflight` holds
/// [`FORWARD_WINDOW`] or the input ends (true: more may be taken), or a
/// request that may not join comes (false: take no more; it runs once the
/// window's replies are in).
#[allow(clippy::too_many_arguments)]
fn take_pipelined(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    s: &Session,
    parser: &mut RequestParser,
    inbuf: &BytesMut,
    limits: &ParseLimits,
    inflight: &mut std::collections::VecDeque<InFlight>,
    leg: Leg,
    max_reads: usize,
) -> bool {
    let mut t = tenant.borrow_mut();
    // A write window goes to one primary: once another is named, what
    // follows waits for the window's replies.
    if let Leg::Primary(node) = leg {
        if crate::forward::primary_node(&t, shared) != Some(node) {
            return false;
        }
    }
    while inflight.len() < FORWARD_WINDOW {
        let before = parser.clone();
        let body = match parser.next(inbuf, limits) {
            Ok(Some(Request::Multibulk)) => {
                let args: SmallVec<[&[u8]; 8]> =
                    parser.ranges().iter().map(|r| &inbuf[r.clone()]).collect();
                let envs = match leg {
                    Leg::Primary(_) => {
                        crate::dispatch::pipelined_write(&mut t, s, &args).map(|env| (env, None))
                    }
                    Leg::Copy(_) => crate::dispatch::pipelined_read(&t, s, &args)
                        .map(|(read, env)| (env, Some(read))),
                };
                envs.map(|(env, read)| (env, read, args.iter().map(|a| a.to_vec()).collect()))
            }
            // Incomplete: more may come.
            Ok(None) => {
                *parser = before;
                return true;
            }
            _ => None,
        };
        let sent = body.and_then(|(env, read, args)| {
            let reply: crate::forward::PinnedReply = match (leg, &read) {
                (Leg::Copy(node), Some(read)) => {
                    crate::forward::send_read_to(&mut t, shared, node, max_reads, read.clone())?
                }
                _ => Box::pin(crate::forward::send_now(&mut t, shared, env.clone())?),
            };
            Some(InFlight {
                reply,
                env,
                read,
                args,
                _counted: crate::forward::Counted::new(shared),
            })
        });
        match sent {
            Some(x) => {
                // Metered here, where the client sent it (the window
                // never runs it through dispatch).
                t.stats.routes.pipelined += 1;
                if t.is_customer() {
                    t.usage.count(match leg {
                        Leg::Primary(_) => crate::meter::Class::Write,
                        Leg::Copy(_) => crate::meter::Class::Read,
                    });
                }
                inflight.push_back(x)
            }
            None => {
                *parser = before;
                return false;
            }
        }
    }
    true
}

/// A forwarded request and the requests of the connection that follow it
/// and may join it, in flight together on one stream, in order: writes to
/// the primary, or reads of a database held elsewhere to one copy; the
/// ones already in the input, and those that arrive while replies are
/// awaited (a pipelining or multiplexing client keeps up to
/// [`FORWARD_WINDOW`] requests on the wire, so from a read region a burst
/// of writes, or from a region without a copy a burst of reads, costs
/// about one round trip, not one per request). Each reply goes to the
/// client as soon as it is in. Anything that may not join ends the window:
/// it runs once the replies before it are in.
///
/// A write whose reply says it did not run is retried
/// (`forward::run_for`) only when nothing was sent after it; otherwise it
/// is answered `-TRYAGAIN`, so writes never run out of order. A read the
/// copy does not answer in time, or answers `-BEHIND`, is asked again as a
/// single read is (`forward::run_read`: another copy, then the primary);
/// after a copy that did not answer, the window takes no more.
#[allow(clippy::too_many_arguments)]
async fn forward_window(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    s: &mut Session,
    parser: &mut RequestParser,
    inbuf: &mut BytesMut,
    stream: &mut ClientStream,
    out: &mut Reply,
    first: (Vec<u8>, Option<Vec<u8>>, &[Vec<u8>]),
    set: &crate::shared::Settings,
) -> WindowEnd {
    use crate::forward::{did_not_run, send_now, Outcome};
    let (req, read, args) = first;
    let max_reads = set.copy_max_inflight_reads;
    let (reply, leg) = {
        let mut t = tenant.borrow_mut();
        if t.rate.is_some() {
            return WindowEnd::NotOpened;
        }
        match &read {
            Some(read) => {
                match crate::forward::send_read_near(&mut t, shared, max_reads, read.clone()) {
                    Some((node, f)) => (f, Leg::Copy(node)),
                    None => return WindowEnd::NotOpened,
                }
            }
            None => {
                let Some(node) = crate::forward::primary_node(&t, shared) else {
                    return WindowEnd::NotOpened;
                };
                match send_now(&mut t, shared, req.clone()) {
                    Some(f) => (
                        Box::pin(f) as crate::forward::PinnedReply,
                        Leg::Primary(node),
                    ),
                    None => return WindowEnd::NotOpened,
                }
            }
        }
    };
    let mut inflight = std::collections::VecDeque::from([InFlight {
        reply,
        env: req,
        read,
        args: args.to_vec(),
        _counted: crate::forward::Counted::new(shared),
    }]);
    let limits = ParseLimits {
        max_bulk_len: set.max_bulk_len,
        max_multibulk_len: set.max_multibulk_len,
        unauthenticated: false,
    };
    // How long each reply may take after the one before.
    let patience = match leg {
        Leg::Primary(_) => crate::forward::FORWARD_TIMEOUT,
        Leg::Copy(_) => crate::forward::READ_TIMEOUT,
    };
    // Whether requests of the input may still join the window.
    let mut taking = true;
    // A request of the window was refused: no later one is retried.
    let mut refused = false;
    while let Some(InFlight {
        reply: mut f,
        env: b,
        read,
        args,
        _counted,
    }) = inflight.pop_front()
    {
        let late = tokio::time::sleep(patience);
        tokio::pin!(late);
        // The window's node held as down by the gossip: its replies will
        // not come (see `forward::answer_unless_down`).
        let node = match leg {
            Leg::Primary(n) | Leg::Copy(n) => n,
        };
        let mut down_check = tokio::time::interval(crate::forward::DOWN_CHECK);
        let mut watch = crate::forward::GoneWatch::new(node);
        let r = loop {
            // Requests already in the input join the window whenever it
            // has room: as it opens, after each reply, after each read (a
            // burst that arrived at once is not sent FORWARD_WINDOW at a
            // time, a round trip each).
            if taking && inflight.len() < FORWARD_WINDOW {
                taking = take_pipelined(
                    tenant,
                    shared,
                    s,
                    parser,
                    inbuf,
                    &limits,
                    &mut inflight,
                    leg,
                    max_reads,
                );
            }
            if inbuf.capacity() - inbuf.len() < 1024 {
                inbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                r = &mut f => break r,
                _ = &mut late => {
                    // The stream stopped answering: let it go; what was
                    // sent may or may not have run (a read is asked
                    // elsewhere, and its copy skipped, below).
                    if let Leg::Primary(node) = leg {
                        crate::forward::give_up_primary(tenant, shared, node);
                    }
                    break Err("ERR the primary did not answer in time; the request may or may not have run".to_string());
                }
                _ = down_check.tick() => {
                    // (A copy's leg is not the record's business.)
                    let primary_leg = matches!(leg, Leg::Primary(_));
                    let moved = || {
                        primary_leg
                            && crate::forward::primary_node(&tenant.borrow(), shared) != Some(node)
                    };
                    if watch.gone(shared, moved) {
                        if primary_leg {
                            crate::forward::give_up_primary(tenant, shared, node);
                        }
                        break Err(crate::forward::GONE_IN_FLIGHT.to_string());
                    }
                },
                n = stream.read_buf(inbuf), if taking && inflight.len() < FORWARD_WINDOW => {
                    match n {
                        Ok(n) if n > 0 && (inbuf.len() as u64) <= set.query_buffer_limit => {
                            GlobalStats::add(&shared.stats.net_input_bytes, n as u64);
                        }
                        _ => return WindowEnd::Gone,
                    }
                }
            }
        };
        let outcome = match (read, r) {
            (Some(_), Ok(f)) if !f.reply.starts_with(b"-BEHIND") => {
                tenant.borrow_mut().stats.routes.remote_reads += 1;
                Outcome::Reply(f)
            }
            (Some(read), r) => {
                // Not answered here: asked as a single read is. A copy
                // that did not answer at all is skipped for a while, and
                // what follows in the input waits for this read.
                if let (Err(_), Leg::Copy(node)) = (&r, leg) {
                    tenant.borrow_mut().reads.silence(node);
                    taking = false;
                }
                let limits = (Duration::from_millis(set.ryw_wait_ms), max_reads);
                match crate::forward::run_read(tenant, shared, limits, read, b).await {
                    // Only a write window's refused last request runs here.
                    Outcome::RunHere if !inflight.is_empty() => Outcome::Error(
                        "TRYAGAIN this node took a copy of the database while the read was in flight; retry".into(),
                    ),
                    o => o,
                }
            }
            (None, r) => {
                let not_run = did_not_run(&r);
                let retry = not_run && inflight.is_empty() && !refused;
                if not_run {
                    refused = true;
                    taking = false;
                    shared.primary_missed(tenant.borrow().id);
                }
                match r {
                    _ if retry => crate::forward::run_for(tenant, shared, b).await,
                    _ if not_run => Outcome::Error(
                        "TRYAGAIN the database's primary changed while this write was in flight; it did not run, retry".into(),
                    ),
                    Ok(f) => Outcome::Reply(f),
                    Err(e) => Outcome::Error(e),
                }
            }
        };
        match outcome {
            Outcome::Reply(f) if f.user_gone => {
                user_gone(s);
                return WindowEnd::Gone;
            }
            Outcome::Reply(f) => {
                if f.token.is_some() {
                    s.last_token = f.token;
                }
                out.raw(&f.reply);
            }
            // A connection being closed (CLIENT KILL, a node leaving)
            // ends without the error: the cut tells its client as much.
            Outcome::Error(_) if s.info.killed.get() => return WindowEnd::Gone,
            Outcome::Error(e) => out.error(&e),
            // Refused, and nothing was sent after it.
            Outcome::RunHere => return WindowEnd::RunHere(args),
        }
        // Out at once: the client's next requests need not wait for the
        // window's last reply.
        GlobalStats::add(&shared.stats.net_output_bytes, out.len() as u64);
        meter_bytes(tenant, s, 0, out.len());
        if stream.write_all(&out.buf).await.is_err() {
            return WindowEnd::Gone;
        }
        out.buf.clear();
    }
    WindowEnd::Done
}

/// Waits (up to `ryw-wait-ms`) until the local replica has applied the
/// connection's last write, woken by every chunk the replica applies.
/// Either way the request then runs again: locally if the write arrived,
/// on the primary if not.
async fn await_applied(
    tenant: &Rc<RefCell<Tenant>>,
    s: &Session,
    set: &crate::shared::Settings,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(set.ryw_wait_ms);
    let applied = tenant.borrow().applied.clone();
    loop {
        // Registered before the check, so a chunk applied in between is
        // not missed.
        let woken = applied.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let caught_up = {
            let t = tenant.borrow();
            s.last_token
                .as_ref()
                .is_none_or(|tok| crate::envelope::can_serve(&t.repl, t.log.offset(), tok))
        };
        if caught_up || !tenant.borrow().upstream_connected() {
            break;
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => break,
        }
    }
    let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut t = tenant.borrow_mut();
    t.stats.routes.wait_us = t.stats.routes.wait_us.saturating_add(us);
}

async fn run(
    stream: &mut ClientStream,
    mut inbuf: BytesMut,
    first: Option<Vec<Vec<u8>>>,
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    s: &mut Session,
    switch: &mut Option<(crate::tenant::TenantId, BytesMut)>,
) {
    let mut out = Reply::new(s.resp);
    let mut parser = RequestParser::new();
    let mut set = shared.settings();
    // (A request that waited for a script's end, see `serve`.)
    let mut pending: Option<Vec<Vec<u8>>> = first;
    let mut shutdown = shared.shutdown_rx();
    // A reply another client's write produced for this one (a blocked pop
    // served): the log offset its effect reached, which durability
    // `region` must see acknowledged before the reply goes out.
    let mut served_at: u64 = 0;
    let on = tenant.borrow().id;
    loop {
        // This node dropped its copy of the database and serves it through
        // the nodes that hold it (`ClientInfo::rehome`): the connection
        // moves there between two requests, nothing it sent lost (its
        // unread input goes with it), unless it holds state that lives in
        // this copy (a transaction, WATCH, subscriptions, MONITOR,
        // tracking, a stream pinned to the primary): then it closes, as
        // it did before connections moved.
        if s.info.rehome.get() && pending.is_none() && !s.info.killed.get() {
            if movable(s) {
                shared.tenant_client_enter(on, 0);
                *switch = Some((on, std::mem::take(&mut inbuf)));
            } else {
                tracing::info!(
                    id = s.info.id,
                    "closing a connection whose copy of the database left this node"
                );
            }
            return;
        }
        shared.refresh(&mut set);
        let limits = ParseLimits {
            max_bulk_len: set.max_bulk_len,
            max_multibulk_len: set.max_multibulk_len,
            unauthenticated: !s.authenticated,
        };
        let now = mstime();
        s.info.last_interaction_ms.set(now);
        // While a batch runs its bytes are the query buffer in use (what
        // Redis's CLIENT LIST shows as qbuf, the running command's too).
        s.info.qbuf.set(inbuf.len());
        s.info
            .qbuf_free
            .set(inbuf.capacity().saturating_sub(inbuf.len()));
        // A script of this database runs (suspended, in another
        // connection's coroutine): this client waits, then gets -BUSY.
        if !crate::script::busy::is_free(tenant) {
            let busy = while_busy(
                stream,
                &mut inbuf,
                &mut parser,
                tenant,
                s,
                shared,
                &mut set,
                &mut out,
                &mut pending,
                &mut shutdown,
                on,
            )
            .await;
            if !busy {
                return;
            }
            continue;
        }
        let log_before = tenant.borrow().log.offset();
        let mut ran = 0;
        let batch = Batch {
            tenant,
            s: &mut *s,
            shared,
            set: &set,
            parser: &mut parser,
            inbuf: &inbuf,
            out: &mut out,
            pending: &mut pending,
            limits,
            now,
            ran: &mut ran,
        };
        // A connection that runs scripts runs its batches in a coroutine
        // a long script can be suspended in (script::busy).
        let after = if batch.s.scripting {
            crate::script::busy::suspendable(|| batch.run(true)).await
        } else {
            batch.run(false)
        };
        // Input the waits below read (a pipelining client's next requests,
        // arriving while a write waits for the disk or the standby) is
        // parsed before the connection waits for more.
        let parsed_len = inbuf.len();
        // Persistence: hand this batch's effects to the append-only log,
        // start a save someone asked for, and send no reply before the log
        // holds everything this batch could have seen: written to the file
        // (as Redis writes before replying, so a process crash loses no
        // acknowledged write), and with `appendfsync always` also fsynced.
        // The writer thread takes all queued batches in one write and one
        // fsync, so connections share them (group commit).
        let (durable_at, arm) = {
            let mut t = tenant.borrow_mut();
            let t = &mut *t;
            t.persist.flush_log(&mut t.log);
            let mut arm = false;
            let wait = t.persist.aof.as_ref().map(|w| {
                arm = w.has_pending() && !t.persist.write_armed;
                (
                    w.durable(),
                    t.log.offset(),
                    w.policy() == crate::persist::aof::FsyncPolicy::Always,
                )
            });
            if arm {
                t.persist.write_armed = true;
            }
            (wait, arm)
        };
        if arm {
            tenant
                .borrow()
                .spawn(crate::persist::write_round(tenant.clone()));
        }
        // Starts a save BGSAVE/BGREWRITEAOF asked for (a no-op otherwise).
        crate::persist::kick(tenant);
        if let Some((mut durable, target, fsync)) = durable_at {
            while *durable.borrow_and_update() < target {
                if fsync {
                    // An fsync takes a while: sleep until it is done (and
                    // let the executor sleep too: polling cannot hurry the
                    // disk, and would take a core from the fsync thread).
                    let changed = {
                        let _wait = crate::busypoll::io_wait();
                        durable.changed().await
                    };
                    if changed.is_err() {
                        return;
                    }
                } else {
                    // The write happens in this round on this thread:
                    // stepping behind it is cheaper than parking.
                    tokio::task::yield_now().await;
                }
            }
        }
        crate::busypoll::activity();
        tenant.borrow().wake_replicas();
        crate::repl::replica::kick(tenant, shared);
        // Durability `region`: no reply before the standby has every write
        // this batch made (its acknowledgements ride the stream back); with
        // `consistency: strong`, not before it has every write the batch
        // could have read either (another client's write still waiting for
        // it would be lost with this primary: a read must not show it).
        let target = {
            let mut t = tenant.borrow_mut();
            let wrote = t.log.offset() > log_before;
            let read = std::mem::take(&mut s.read_needs_standby);
            if !t.durable {
                None
            } else if wrote || served_at > 0 {
                let target = t.log.offset().max(served_at);
                t.pending_write_offset = t.pending_write_offset.max(target);
                Some(target)
            } else if read && t.pending_write_offset > t.standby_acked {
                // Every client write so far (not the stream's PINGs: a
                // read waits for data, not for a standby that left after
                // acknowledging everything).
                Some(t.pending_write_offset)
            } else {
                None
            }
        };
        served_at = 0;
        if let Some(target) = target {
            if !standby_acked(
                stream,
                &mut inbuf,
                tenant,
                &s.info,
                target,
                &mut shutdown,
                &set,
            )
            .await
            {
                // Not acknowledged: the client must not take it as done.
                // Closing tells it the outcome is unknown, as a network
                // failure would.
                tracing::warn!(
                    id = s.info.id,
                    "closing a client whose write the standby did not acknowledge"
                );
                return;
            }
        }
        // Drop consumed input; the parser's ranges are relative to it.
        let consumed = parser.consumed();
        if consumed > 0 {
            meter_bytes(tenant, s, consumed, 0);
            inbuf.advance(consumed);
            parser.rebase(consumed);
        }
        s.info.qbuf.set(inbuf.len());
        s.info
            .qbuf_free
            .set(inbuf.capacity().saturating_sub(inbuf.len()));
        // A subscriber of a database held elsewhere hears messages through
        // the relay: its subscription's confirmation goes out once the
        // relay is subscribed on a copy (or after a bounded wait).
        if std::mem::take(&mut s.awaits_relay) {
            let relay = tenant.borrow().relay.clone();
            let deadline = tokio::time::Instant::now() + crate::relay::READY_WAIT;
            loop {
                let woken = relay.readied.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if relay.covers(&tenant.borrow()) {
                    break;
                }
                if tokio::time::timeout_at(deadline, woken).await.is_err() {
                    break;
                }
            }
        }
        if !out.is_empty() {
            GlobalStats::add(&shared.stats.net_output_bytes, out.len() as u64);
            meter_bytes(tenant, s, 0, out.len());
            // A pipelining client's replies wait until the other
            // connections ready now have run theirs, then go out together,
            // as Redis writes every client's replies after the event
            // loop's reads: the client is woken once for a burst of
            // replies instead of once per connection (measured: PFADD and
            // PFCOUNT over 100k keys at `-P 16` went from 0.83x to 1.0x
            // redis-server; docs/BENCHMARKS.md). One request alone is
            // answered at once.
            if ran > 1 {
                tokio::task::yield_now().await;
            }
            if stream.write_all(&out.buf).await.is_err() {
                return;
            }
            out.buf.clear();
            if out.buf.capacity() > 1024 * 1024 {
                out.buf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        match after {
            After::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            After::Flush => continue,
            After::Paused => {
                // Re-check the pause every few ms; CLIENT UNPAUSE or the
                // deadline lets the pending command run.
                let until = mstime() + 10;
                if wait_event(stream, &mut inbuf, &s.info, until, &mut shutdown, &set).await
                    == Waited::Gone
                {
                    return;
                }
                continue;
            }
            After::Throttled(mut wait) => {
                // Wait for a token (input meanwhile is buffered); the
                // command then runs from `pending` with the token taken.
                loop {
                    let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1);
                    let until = mstime().saturating_add(ms);
                    if wait_event(stream, &mut inbuf, &s.info, until, &mut shutdown, &set).await
                        == Waited::Gone
                    {
                        return;
                    }
                    let now = std::time::Instant::now();
                    match tenant.borrow_mut().rate.as_mut().map(|r| r.take(now)) {
                        Some(Err(w)) => wait = w,
                        // A token, or the limit was lifted.
                        _ => break,
                    }
                }
                continue;
            }
            After::Suspend(Suspend::Wait {
                deadline_ms,
                target,
                want,
            }) => {
                s.info.blocked.set(true);
                tenant.borrow_mut().ack_waiters.push(s.info.clone());
                // Replica links wake this client when an ACK arrives.
                let enough = || crate::repl::primary::acked(&tenant.borrow(), target) >= want;
                let waited = wait_until(
                    stream,
                    &mut inbuf,
                    &s.info,
                    deadline_ms,
                    &mut shutdown,
                    &set,
                    enough,
                )
                .await;
                let id = s.info.id;
                tenant.borrow_mut().ack_waiters.retain(|c| c.id != id);
                if waited == Waited::Gone {
                    return;
                }
                s.info.blocked.set(false);
                if let Some(sv) = s.serving.as_mut() {
                    sv.reply_starts_at(out.len());
                }
                out.int(crate::repl::primary::acked(&tenant.borrow(), target) as i64);
                if let Some(sv) = s.serving.take() {
                    crate::envelope::end(&tenant.borrow(), s, &mut out, sv);
                }
                continue;
            }
            After::Suspend(Suspend::Replica { from, wait_ack }) => {
                // The FULLRESYNC/CONTINUE reply is out: from here on this
                // connection is fed the replication stream.
                // (Input after PSYNC, already rebased above, is the
                // replica's: its ACKs.)
                feed_replica(
                    stream,
                    &mut inbuf,
                    tenant,
                    shared,
                    s,
                    from,
                    wait_ack,
                    &mut shutdown,
                )
                .await;
                return;
            }
            After::Suspend(Suspend::AwaitSync) => {
                // A full sync waits for the background save that runs; its
                // `+FULLRESYNC` goes out when its own payload starts (input
                // meanwhile is buffered; a replica that goes away ends it).
                // A newline every second meanwhile, as Redis sends a
                // replica waiting for a BGSAVE: the replica's handshake
                // timeout measures silence, not the wait.
                let mut alive_at = mstime();
                let from = loop {
                    let until = mstime() + 5;
                    if wait_event(stream, &mut inbuf, &s.info, until, &mut shutdown, &set).await
                        == Waited::Gone
                    {
                        return;
                    }
                    if mstime() - alive_at >= 1000 {
                        alive_at = mstime();
                        if stream.write_all(b"\n").await.is_err() {
                            return;
                        }
                    }
                    let started = {
                        let mut t = tenant.borrow_mut();
                        if t.persist.job.is_some() {
                            continue;
                        }
                        let keep = crate::repl::primary::replica_keep(&set);
                        crate::cmd::replication::begin_background_sync(&mut t, s, keep)
                    };
                    match started {
                        Ok((head, from)) => {
                            crate::persist::kick(tenant);
                            if stream.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            break from;
                        }
                        Err(e) => {
                            tracing::warn!(id = s.info.id, "full sync: {e}");
                            return;
                        }
                    }
                };
                feed_replica(
                    stream,
                    &mut inbuf,
                    tenant,
                    shared,
                    s,
                    from,
                    true,
                    &mut shutdown,
                )
                .await;
                return;
            }
            After::Suspend(Suspend::Forward {
                req,
                args,
                silent,
                pinned: true,
                blocks,
                ..
            }) => {
                // On the connection's own stream: a blocking pop for as
                // long as the primary takes, anything else for a bounded
                // while; a client that goes away meanwhile drops the
                // stream, which ends its wait there.
                let Some(reply) = crate::forward::pin_send(tenant, shared, s, req) else {
                    // It runs here after all; it was metered already.
                    s.metered = true;
                    pending = Some(args);
                    continue;
                };
                // An exiting node waits for it (`Shared::forwarding`).
                let _counted = crate::forward::Counted::new(shared);
                let deadline = (!blocks)
                    .then(|| tokio::time::Instant::now() + crate::forward::FORWARD_TIMEOUT);
                // CLIENT LIST shows it blocked (flag `b`), as where it runs.
                s.info.blocked.set(blocks);
                let _unblocked = Unblocked(s.info.clone());
                let late = async move {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(reply, late);
                // A primary that dies, or is replaced, while the request
                // waits (a blocking pop may wait for ever) is given up.
                let mut watch = s
                    .pin
                    .as_ref()
                    .map(|p| crate::forward::GoneWatch::new(p.node()));
                let mut down_check = tokio::time::interval(crate::forward::DOWN_CHECK);
                let r = loop {
                    tokio::select! {
                        r = &mut reply => break r,
                        _ = &mut late => break Err(
                            "ERR the primary did not answer in time; the request may or may not have run".to_string()
                        ),
                        _ = down_check.tick(), if watch.is_some() => {
                            if let Some(w) = watch.as_mut() {
                                let node = w.node();
                                let moved = || crate::forward::primary_node(&tenant.borrow(), shared) != Some(node);
                                if w.gone(shared, moved) {
                                    crate::forward::give_up_primary(tenant, shared, node);
                                    break Err(crate::forward::GONE_IN_FLIGHT.to_string());
                                }
                            }
                        }
                        w = wait_event(stream, &mut inbuf, &s.info, 0, &mut shutdown, &set) => {
                            if w == Waited::Gone {
                                return;
                            }
                        }
                    }
                };
                match r {
                    Ok(f) if f.user_gone => return user_gone(s),
                    Ok(f) => {
                        crate::forward::pin_after(s, &args[0], &f.reply);
                        if f.token.is_some() {
                            s.last_token = f.token;
                        }
                        if !silent {
                            out.raw(&f.reply);
                        }
                    }
                    Err(e) => {
                        s.pin = None;
                        if !silent {
                            out.error(&e);
                        }
                    }
                }
                continue;
            }
            After::Suspend(Suspend::Forward {
                req,
                args,
                silent,
                read,
                ..
            }) => {
                // A write another node sent here as to the primary, sent
                // on to the new one (`dispatch::relay`): its reply goes
                // back as that client's, with the new primary's token.
                if s.serving.is_some() {
                    relay_reply(tenant, shared, s, &mut out, req, args, &mut pending).await;
                    continue;
                }
                // Writes (or reads of a database held elsewhere) right
                // behind it in the input go at once too, in order, on the
                // same stream (a pipelining client's burst costs one round
                // trip, not one each).
                if !silent {
                    match forward_window(
                        tenant,
                        shared,
                        s,
                        &mut parser,
                        &mut inbuf,
                        stream,
                        &mut out,
                        (req.clone(), read.clone(), &args),
                        &set,
                    )
                    .await
                    {
                        WindowEnd::Done => continue,
                        WindowEnd::Gone => return,
                        WindowEnd::RunHere(a) => {
                            s.metered = true;
                            pending = Some(a);
                            continue;
                        }
                        WindowEnd::NotOpened => {}
                    }
                }
                // Replies before it are out; this one is the primary's (or,
                // for a database held elsewhere, the nearest copy's).
                let outcome = match read {
                    Some(read) => {
                        let limits = (
                            Duration::from_millis(set.ryw_wait_ms),
                            set.copy_max_inflight_reads,
                        );
                        crate::forward::run_read(tenant, shared, limits, read, req).await
                    }
                    None => crate::forward::run_for(tenant, shared, req).await,
                };
                match outcome {
                    crate::forward::Outcome::Reply(f) if f.user_gone => {
                        return user_gone(s);
                    }
                    crate::forward::Outcome::Reply(f) => {
                        if f.token.is_some() {
                            s.last_token = f.token;
                        }
                        if !silent {
                            out.raw(&f.reply);
                        }
                    }
                    // A connection being closed (CLIENT KILL, a node
                    // leaving after a handoff) ends without the error: the
                    // cut tells its client the outcome is unknown, as the
                    // error would, and the client connects again.
                    crate::forward::Outcome::Error(_) if s.info.killed.get() => return,
                    crate::forward::Outcome::Error(e) if !silent => out.error(&e),
                    crate::forward::Outcome::Error(_) => {}
                    // This node is the primary now: the request runs here.
                    crate::forward::Outcome::RunHere => {
                        // MONITOR saw it when it was forwarded, and it
                        // was metered then.
                        s.monitor_fed = true;
                        s.metered = true;
                        pending = Some(args);
                    }
                }
                continue;
            }
            After::Suspend(Suspend::VerifyLogin {
                to,
                req,
                args,
                silent,
            }) => {
                // Nothing of the connection's runs meanwhile: its next
                // requests are for whoever this login makes it. A client
                // that goes away, or a shutdown, ends the wait.
                let check = crate::forward::check_login(shared, to, req);
                tokio::pin!(check);
                let checked = loop {
                    tokio::select! {
                        r = &mut check => break r,
                        w = wait_event(stream, &mut inbuf, &s.info, 0, &mut shutdown, &set) => {
                            if w == Waited::Gone {
                                return;
                            }
                        }
                    }
                };
                match checked {
                    Ok(crate::forward::LoginCheck::Users(file)) => {
                        if let Err(e) = shared.acl.install(to, Some(&file), "the database's users")
                        {
                            tracing::warn!(
                                tenant = to.0,
                                "a login check brought users that do not load: {e}"
                            );
                            out.error("ERR the database's users could not be loaded on this node; connect to a node in one of the database's regions");
                        } else {
                            s.login_checked = true;
                            s.metered = true;
                            // A CLIENT REPLY SKIP the first run used up
                            // still applies to the run that replies.
                            if silent && s.reply_mode == crate::client::ReplyMode::On {
                                s.reply_mode = crate::client::ReplyMode::SkipThis;
                            }
                            pending = Some(args);
                        }
                    }
                    Ok(crate::forward::LoginCheck::Refused(reply)) => {
                        // WRONGPASS, or a copy's TRYAGAIN.
                        let code = reply
                            .get(1..)
                            .and_then(|r| r.split(|b| *b == b' ' || *b == b'\r').next())
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        tenant.borrow_mut().count_error(&code);
                        if !silent {
                            out.raw(&reply);
                        }
                    }
                    Err(e) => {
                        tenant.borrow_mut().count_error(&e);
                        if !silent {
                            out.error(&e);
                        }
                    }
                }
                continue;
            }
            After::Suspend(Suspend::AwaitApplied { args }) => {
                await_applied(tenant, s, &set, &mut shutdown).await;
                s.ryw_waited = true;
                s.metered = true;
                pending = Some(args);
                continue;
            }
            After::Suspend(Suspend::Switch(to)) => {
                // AUTH logged in to another tenant: its reply is out; the
                // rest of the input belongs to the new tenant's connection.
                *switch = Some((to, std::mem::take(&mut inbuf)));
                return;
            }
            After::Suspend(Suspend::Blocked { deadline_ms }) => {
                s.info.blocked.set(true);
                let served = || s.info.unblocked.replace(false);
                let timed_out = match wait_until(
                    stream,
                    &mut inbuf,
                    &s.info,
                    deadline_ms,
                    &mut shutdown,
                    &set,
                    served,
                )
                .await
                {
                    Waited::Gone => return,
                    Waited::Deadline => true,
                    Waited::Woken => false,
                };
                s.info.blocked.set(false);
                if let Some(sv) = s.serving.as_mut() {
                    sv.reply_starts_at(out.len());
                }
                if timed_out {
                    // Still registered means nobody served us: reply the
                    // timeout value. (Served at the last moment: the reply
                    // is already queued.)
                    let was_waiting =
                        crate::blocking::unblock(&mut tenant.borrow_mut(), s.info.id).is_some();
                    if was_waiting {
                        out.null_array();
                    }
                    s.info.unblocked.set(false);
                }
                let pushed = std::mem::take(&mut *s.info.push.borrow_mut());
                if !timed_out && !pushed.is_empty() {
                    served_at = tenant.borrow().log.offset();
                }
                out.buf.extend_from_slice(&pushed);
                if let Some(sv) = s.serving.take() {
                    crate::envelope::end(&tenant.borrow(), s, &mut out, sv);
                }
                continue;
            }
            After::Read => {}
        }
        if inbuf.len() + consumed > parsed_len {
            continue;
        }
        if inbuf.len() as u64 > set.query_buffer_limit {
            tracing::warn!(
                id = s.info.id,
                "Closing client that reached max query buffer length"
            );
            GlobalStats::add(&shared.stats.client_query_limit_disconnections, 1);
            return;
        }
        // Make room for the next read; size once for a large bulk.
        let missing = parser.bulk_bytes_missing(inbuf.len());
        let want = missing.clamp(READ_CHUNK, 64 * 1024 * 1024);
        if inbuf.capacity() - inbuf.len() < want / 2 {
            inbuf.reserve(want);
        }
        // (Open: what arrives while another connection's script holds
        // the database is answered at the loop's top, `while_busy`.)
        let gone = crate::script::busy::open(async {
            loop {
                tokio::select! {
                    biased;
                    r = stream.read_buf(&mut inbuf) => {
                        match r {
                            Ok(0) | Err(_) => return true,
                            Ok(n) => {
                                GlobalStats::add(&shared.stats.net_input_bytes, n as u64);
                                return false;
                            }
                        }
                    }
                    _ = s.info.wake.notified() => {
                        if s.info.killed.get() {
                            return true;
                        }
                        // (It moves at the loop's top.)
                        if s.info.rehome.get() {
                            return false;
                        }
                        let pushed = std::mem::take(&mut *s.info.push.borrow_mut());
                        if !pushed.is_empty() {
                            GlobalStats::add(&shared.stats.net_output_bytes, pushed.len() as u64);
                            meter_bytes(tenant, s, 0, pushed.len());
                            if stream.write_all(&pushed).await.is_err() {
                                return true;
                            }
                        }
                    }
                    _ = shutdown.changed() => {
                        // Graceful shutdown: stop after the batch in flight.
                        return true;
                    }
                }
            }
        })
        .await;
        if gone {
            return;
        }
    }
}

/// Whether a connection can move to another tenant of the same database
/// as it is: nothing of it lives in the tenant it leaves but what
/// [`Carry`] takes.
fn movable(s: &Session) -> bool {
    s.multi.is_none()
        && s.watched.is_empty()
        && s.subscriptions() == 0
        && !s.monitor
        && s.info.tracking.borrow().is_none()
        && s.pin.is_none()
        && s.serving.is_none()
        && !s.cluster_peer
        && s.reply_mode == crate::client::ReplyMode::On
}

/// Sends a relayed write on to the primary and writes its reply (or why
/// it failed) as the envelope's client's (`dispatch::relay`). When this
/// node turns out to be the primary again, the request runs here, as the
/// same client's (`pending`).
async fn relay_reply(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    s: &mut Session,
    out: &mut Reply,
    req: Vec<u8>,
    args: Vec<Vec<u8>>,
    pending: &mut Option<Vec<Vec<u8>>>,
) {
    let outcome = crate::forward::run_for(tenant, shared, req).await;
    let Some(mut sv) = s.serving.take() else {
        return;
    };
    match outcome {
        crate::forward::Outcome::Reply(f) => {
            sv.relayed_reply(out.len(), f.token);
            if f.user_gone {
                // (The relayed envelope names no user: only a copy that
                // lost one since could say so; the client's node closes.)
                out.raw(crate::envelope::USER_GONE_ATTR);
            }
            out.raw(&f.reply);
        }
        crate::forward::Outcome::Error(e) => {
            sv.relayed_reply(out.len(), None);
            tenant.borrow_mut().count_error(&e);
            out.error(&e);
        }
        crate::forward::Outcome::RunHere => {
            let env = crate::envelope::end(&tenant.borrow(), s, out, sv);
            s.envelope = Some(crate::envelope::Pending::Serve(env));
            *pending = Some(args);
            return;
        }
    }
    crate::envelope::end(&tenant.borrow(), s, out, sv);
}

/// Bytes a customer's connection sent (parsed) or was sent, metered on
/// its database (a cluster link's are the other node's customer's: the
/// link flag, not `cluster_peer`, which serving a router's request
/// clears for as long as it runs).
fn meter_bytes(tenant: &Rc<RefCell<Tenant>>, s: &Session, bytes_in: usize, bytes_out: usize) {
    if s.info.link.get() {
        return;
    }
    // (Held by a script: counted with the next bytes.)
    let (held_in, held_out) = s.unmetered.take();
    let Ok(mut t) = tenant.try_borrow_mut() else {
        s.unmetered.set((held_in + bytes_in, held_out + bytes_out));
        return;
    };
    if t.is_customer() {
        t.usage.bytes_in += (held_in + bytes_in) as u64;
        t.usage.bytes_out += (held_out + bytes_out) as u64;
    }
}

/// The database's primary no longer has the connection's user (it was
/// deleted there): the connection closes, as Redis closes a deleted
/// user's connections.
fn user_gone(s: &Session) {
    tracing::info!(
        id = s.info.id,
        user = %s.user,
        "closing a connection whose user the database no longer has"
    );
}

/// Runs one request: as its client's when a router's envelope came
/// before it (the envelope taken; refused when the envelope was), as the
/// connection's own otherwise.
fn run_request(
    t: &mut Tenant,
    s: &mut Session,
    shared: &Shared,
    set: &crate::shared::Settings,
    args: &[&[u8]],
    out: &mut Reply,
    now: i64,
) -> Outcome {
    use crate::envelope::{begin, end, Pending};
    let env = match s.envelope.take() {
        None => return dispatch(t, s, shared, set, args, out, now),
        Some(Pending::Refuse(e)) => {
            t.count_error(&e);
            out.error(&e);
            return Outcome::Continue;
        }
        Some(Pending::Serve(env)) => env,
    };
    if !env.user.is_empty() && !shared.acl.read(t.id, |u| u.users.contains_key(&env.user)) {
        // A replica may only not have the user yet (made on the primary a
        // moment ago): behind, so the request goes to the primary, which
        // alone says a user is gone.
        let e = if t.role == crate::repl::Role::Replica {
            let e = format!("BEHIND {}", crate::envelope::token_of(t).encode());
            out.error(&e);
            e
        } else {
            crate::envelope::refuse_user_gone(out, &env.user)
        };
        t.count_error(&e);
        return Outcome::Continue;
    }
    let serving = match begin(t, s, out, env, args) {
        Ok(sv) => sv,
        Err(e) => {
            t.count_error(&e);
            out.error(&e);
            return Outcome::Continue;
        }
    };
    if args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"auth"))
    {
        crate::cmd::connection::check_login_for_node(t, s, shared, args, out);
        end(t, s, out, serving);
        return Outcome::Continue;
    }
    if args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(crate::envelope::ACL_LOG_RECORD.as_bytes()))
    {
        // The envelope names the refused user.
        match crate::envelope::parse_acl_log_record(&args[1..], serving.user()) {
            Some(r) if !r.username.is_empty() => {
                crate::dispatch::acl_log_entry(
                    shared, t.id, s, r.reason, r.context, r.object, r.username,
                );
                out.ok();
            }
            _ => out.error("ERR malformed ACL refusal record"),
        }
        end(t, s, out, serving);
        return Outcome::Continue;
    }
    let outcome = dispatch(t, s, shared, set, args, out, now);
    if matches!(
        outcome,
        Outcome::Suspend(Suspend::Blocked { .. } | Suspend::Wait { .. } | Suspend::Forward { .. })
    ) {
        // Its reply comes after the wait, still as its client's (RESP
        // version, and the token of a pop served meanwhile, or of the new
        // primary that took a relayed write).
        s.serving = Some(serving);
        return outcome;
    }
    let env = end(t, s, out, serving);
    if matches!(outcome, Outcome::Paused) {
        // It runs again once the pause ends, as the same client's.
        s.envelope = Some(Pending::Serve(env));
    }
    outcome
}

/// Whether the client may stop a server a script holds (SHUTDOWN NOSAVE):
/// not a customer database's (the command is denied to them), nor a
/// cluster link.
fn may_shutdown(tenant: crate::tenant::TenantId, s: &Session) -> bool {
    tenant == crate::tenant::TenantId::DEFAULT && !s.cluster_peer
}

/// Serves the client while another connection's script holds its
/// database (`script::busy`): up to `busy-reply-threshold` it waits, as
/// Redis's clients do; past it, what it sends is answered as Redis
/// answers it then (-BUSY to most). Returns once the database is free
/// (false: the connection is to close).
#[allow(clippy::too_many_arguments)]
async fn while_busy(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    parser: &mut RequestParser,
    tenant: &Rc<RefCell<Tenant>>,
    s: &mut Session,
    shared: &Arc<Shared>,
    set: &mut crate::shared::Settings,
    out: &mut Reply,
    pending: &mut Option<Vec<Vec<u8>>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    on: crate::tenant::TenantId,
) -> bool {
    use crate::cmd::connection::{auth_login, hello_login, Login, LoginOutcome};
    use crate::script::busy::{self, Answer};
    let may_shutdown = may_shutdown(on, s);
    let mut unwatch = false;
    // WATCHes answered meanwhile, and whether a script that ran wrote.
    let mut watch: Vec<Vec<u8>> = Vec::new();
    let mut wrote = false;
    let mut last: Option<Rc<crate::script::busy::Busy>> = None;
    let (mut bytes_in, mut bytes_out) = (0usize, 0usize);
    let free = busy::open(async {
        loop {
            shared.refresh(set);
            if busy::is_free(tenant) {
                break true;
            }
            let Some(b) = busy::running(tenant) else {
                busy::idle(tenant).await;
                continue;
            };
            // The scripts seen: whether one wrote decides a WATCH
            // answered meanwhile (the last one's final word comes at its
            // end).
            if !last.as_ref().is_some_and(|l| Rc::ptr_eq(l, &b)) {
                if let Some(l) = last.take() {
                    wrote |= l.wrote.get();
                }
                last = Some(b.clone());
            }
            let threshold = b.started + Duration::from_millis(set.busy_reply_threshold_ms);
            // A request that waits for the script's end holds back the
            // ones after it; a router's link is not answered meanwhile
            // (its envelopes pair requests with replies: they wait).
            if pending.is_some() || s.cluster_peer {
                tokio::select! {
                    _ = busy::idle(tenant) => {}
                    _ = shutdown.changed() => break false,
                }
                continue;
            }
            if std::time::Instant::now() < threshold {
                tokio::select! {
                    _ = busy::idle_or(tenant, threshold) => {}
                    _ = shutdown.changed() => break false,
                }
                continue;
            }
            let limits = ParseLimits {
                max_bulk_len: set.max_bulk_len,
                max_multibulk_len: set.max_multibulk_len,
                unauthenticated: !s.authenticated,
            };
            let mut close = false;
            while pending.is_none() && !close {
                let req = match parser.next(inbuf, &limits) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        GlobalStats::add(&shared.stats.protocol_errors, 1);
                        out.err(&e.to_string());
                        close = true;
                        break;
                    }
                };
                let args = parser.args(&req, inbuf);
                use crate::cmd::table::{lookup, Lookup};
                let found = lookup(&args);
                if !s.authenticated && !matches!(found, Lookup::Found(r) if r.no_auth) {
                    b.refused(&args, crate::cmd::errors::NOAUTH, true);
                    out.error(crate::cmd::errors::NOAUTH);
                    continue;
                }
                // What Redis checks before it answers BUSY: the command
                // exists, its arity, the user's rights.
                crate::dispatch::refresh_acl(shared, on, s);
                let refusal = match found {
                    Lookup::Found(r) if !crate::dispatch::arity_fits(r.spec, args.len()) => Some(
                        format!("ERR wrong number of arguments for '{}' command", r.fullname),
                    ),
                    Lookup::Found(r) if !s.unrestricted => {
                        crate::dispatch::acl_denied(shared, on, s, r, &args)
                    }
                    Lookup::Found(_) | Lookup::UnknownSub => None,
                    Lookup::Unknown => Some(
                        String::from_utf8_lossy(&crate::dispatch::unknown_command(&args))
                            .into_owned(),
                    ),
                };
                if let Some(e) = refusal {
                    if s.multi.is_some() {
                        s.multi_error = true;
                    }
                    b.refused(&args, &e, true);
                    out.error(&e);
                    continue;
                }
                // RESET too, when what it undoes is the session's own (a
                // WATCH is dropped once the script ends, as UNWATCH's).
                if args[0].eq_ignore_ascii_case(b"reset")
                    && s.subscriptions() == 0
                    && !s.monitor
                    && s.info.tracking.borrow().is_none()
                {
                    crate::cmd::connection::reset_session(shared, s, out);
                    out.simple("RESET");
                    b.ran(&args, None);
                    unwatch = true;
                    watch.clear();
                    continue;
                }
                // AUTH and HELLO are answered now, as Redis answers them
                // (outside MULTI, which queues them), unless they would
                // move the connection to another database.
                let login: Option<fn(&mut Login) -> LoginOutcome> = match &args[0] {
                    n if n.eq_ignore_ascii_case(b"auth") => Some(auth_login),
                    n if n.eq_ignore_ascii_case(b"hello") => Some(hello_login),
                    _ => None,
                };
                if let (Some(f), None) = (login, &s.multi) {
                    let mut l = Login {
                        args: &args,
                        shared,
                        s: &mut *s,
                        out: &mut *out,
                        on,
                        may_move: false,
                        switch: None,
                        error: None,
                    };
                    if f(&mut l) == LoginOutcome::Done {
                        b.ran(&args, l.error.as_deref());
                        continue;
                    }
                }
                match busy::answer(&b, s, &args, out, may_shutdown) {
                    Answer::Replied => {}
                    Answer::Unwatch => {
                        unwatch = true;
                        watch.clear();
                    }
                    Answer::Watch => watch.extend(args[1..].iter().map(|k| k.to_vec())),
                    Answer::Close => close = true,
                    Answer::Later => *pending = Some(args.iter().map(|a| a.to_vec()).collect()),
                    Answer::Shutdown => {
                        tracing::warn!(
                            client = s.info.id,
                            "User requested shutdown while a script was running..."
                        );
                        shared.set_shutdown_save(Some(false));
                        shared.begin_shutdown();
                        close = true;
                    }
                }
            }
            let consumed = parser.consumed();
            if consumed > 0 {
                bytes_in += consumed;
                inbuf.advance(consumed);
                parser.rebase(consumed);
            }
            if !out.is_empty() {
                GlobalStats::add(&shared.stats.net_output_bytes, out.len() as u64);
                bytes_out += out.len();
                if stream.write_all(&out.buf).await.is_err() {
                    break false;
                }
                out.buf.clear();
            }
            if close {
                let _ = stream.shutdown().await;
                break false;
            }
            if pending.is_some() {
                continue;
            }
            tokio::select! {
                w = wait_event(stream, inbuf, &s.info, 0, shutdown, set) => {
                    if w == Waited::Gone {
                        break false;
                    }
                }
                _ = busy::idle(tenant) => {}
            }
        }
    })
    .await;
    // What the wait held back, now that the database is free (or the
    // connection ends).
    busy::idle(tenant).await;
    if unwatch {
        crate::cmd::multi::unwatch_all(&mut tenant.borrow_mut(), s);
    }
    if !watch.is_empty() {
        // (A script's last writes are known once it has ended.)
        wrote |= last.is_some_and(|l| l.wrote.get());
        let keys: Vec<&[u8]> = watch.iter().map(|k| k.as_slice()).collect();
        crate::cmd::multi::watch_keys(&mut tenant.borrow_mut(), s, &keys, mstime());
        if wrote {
            s.info.dirty_cas.set(true);
        }
    }
    meter_bytes(tenant, s, bytes_in, bytes_out);
    free
}

/// One batch's requests, run in the database without a wait: what is
/// buffered, up to a wait (a pause, a blocked pop, the plan's rate) or a
/// full reply buffer.
struct Batch<'a> {
    tenant: &'a Rc<RefCell<Tenant>>,
    s: &'a mut Session,
    shared: &'a Arc<Shared>,
    set: &'a crate::shared::Settings,
    parser: &'a mut RequestParser,
    inbuf: &'a BytesMut,
    out: &'a mut Reply,
    pending: &'a mut Option<Vec<Vec<u8>>>,
    limits: ParseLimits,
    now: i64,
    /// Requests run (the caller's count).
    ran: &'a mut usize,
}

impl Batch<'_> {
    /// Runs the batch; `coroutine`: in one a script can be suspended in
    /// (without, a script ends the batch: it runs first in the next one,
    /// which runs in a coroutine).
    fn run(self, coroutine: bool) -> After {
        let Batch {
            tenant,
            s,
            shared,
            set,
            parser,
            inbuf,
            out,
            pending,
            limits,
            now,
            ran,
        } = self;
        let mut after = After::Read;
        {
            let mut t = tenant.borrow_mut();
            if let Some(p) = pending.take() {
                let args: SmallVec<[&[u8]; 8]> = p.iter().map(|a| a.as_slice()).collect();
                if !coroutine && crate::script::busy::runs_script(s, &args) {
                    s.scripting = true;
                    drop(args);
                    *pending = Some(p);
                    return After::Flush;
                }
                after = after_request(
                    {
                        *ran += 1;
                        run_request(&mut t, s, shared, set, &args, out, now)
                    },
                    pending,
                    &args,
                );
            }
            while matches!(after, After::Read) {
                let limits = ParseLimits {
                    unauthenticated: !s.authenticated,
                    ..limits
                };
                let req = match parser.next(inbuf, &limits) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        GlobalStats::add(&shared.stats.protocol_errors, 1);
                        t.count_error("ERR");
                        out.err(&e.to_string());
                        tracing::debug!(id = s.info.id, "protocol error: {e}");
                        after = After::Close;
                        break;
                    }
                };
                let args = parser.args(&req, inbuf);
                // A router's envelope (docs/ROUTING.md), on cluster links
                // only: it says whose the next request is, and has no reply
                // of its own.
                if s.cluster_peer && crate::envelope::is_envelope(&args) {
                    if s.envelope.is_some() {
                        // The one before had no request: it gets an error.
                        t.count_error("ERR");
                        out.err("ENVELOPE must be followed by the request it is for");
                    }
                    s.envelope = Some(crate::envelope::receive(&t, &args));
                    shared.peer_request();
                    continue;
                }
                // The plan's command rate (replication links are not
                // customer commands; a router's requests are).
                let customer = !s.cluster_peer || s.envelope.is_some();
                if let (Some(rate), true) = (t.rate.as_mut(), customer) {
                    if let Err(wait) = rate.take(std::time::Instant::now()) {
                        t.stats.throttled_commands += 1;
                        *pending = Some(args.iter().map(|a| a.to_vec()).collect());
                        after = After::Throttled(wait);
                        break;
                    }
                }
                // A script runs in a coroutine: this one runs first in the
                // next batch, which is one (and so are the connection's
                // batches from now on).
                if !coroutine && crate::script::busy::runs_script(s, &args) {
                    s.scripting = true;
                    *pending = Some(args.iter().map(|a| a.to_vec()).collect());
                    after = After::Flush;
                    break;
                }
                after = after_request(
                    {
                        *ran += 1;
                        run_request(&mut t, s, shared, set, &args, out, now)
                    },
                    pending,
                    &args,
                );
                // (A full sync's payload is a replica's, not a normal
                // client's reply: the normal class's limit does not apply.)
                if set.output_hard_limit > 0
                    && out.len() as u64 > set.output_hard_limit
                    && !matches!(after, After::Suspend(Suspend::Replica { .. }))
                {
                    tracing::warn!(
                        id = s.info.id,
                        "Client closed for overcoming of output buffer limits."
                    );
                    GlobalStats::add(&shared.stats.client_output_limit_disconnections, 1);
                    out.buf.clear();
                    after = After::Close;
                }
                if matches!(after, After::Read) && out.len() >= FLUSH_AT {
                    after = After::Flush;
                }
            }
            // Broadcast-mode invalidations go out once per batch (Redis:
            // once per event-loop turn).
            crate::tracking::housekeeping(&mut t, set.tracking_max_keys);
            ship_acl_refusals(&mut t, s, shared);
        }
        after
    }
}

/// Sends the ACL refusals this node logged for a database it holds no
/// copy of to the database's primary (docs/ACL.md), on the stream its
/// forwarded requests take, without waiting for the answer: best effort,
/// as a log is (one that finds the stream full or the primary down is
/// only in this node's log).
fn ship_acl_refusals(t: &mut Tenant, s: &Session, shared: &Arc<Shared>) {
    if s.acl_refusals.borrow().is_empty() {
        return;
    }
    let refusals = std::mem::take(&mut *s.acl_refusals.borrow_mut());
    if !t.remote {
        return;
    }
    for r in refusals {
        let req = crate::envelope::acl_log_record(t.id.0, s, &r);
        if let Some(sent) = crate::forward::send_now(t, shared, req) {
            tokio::task::spawn_local(async move {
                if let Ok(f) = sent.await {
                    if f.reply.first() == Some(&b'-') {
                        tracing::debug!(
                            "the primary did not record an ACL refusal: {}",
                            String::from_utf8_lossy(&f.reply).trim_end()
                        );
                    }
                }
            });
        }
    }
}

/// What follows a request's outcome in its batch (a paused one waits in
/// `pending`).
fn after_request(o: Outcome, pending: &mut Option<Vec<Vec<u8>>>, args: &[&[u8]]) -> After {
    match o {
        Outcome::Continue => After::Read,
        Outcome::Close => After::Close,
        Outcome::Paused => {
            *pending = Some(args.iter().map(|a| a.to_vec()).collect());
            After::Paused
        }
        Outcome::Suspend(su) => After::Suspend(su),
    }
}

/// Waits until the tenant's standby has acknowledged `target`; false when
/// it cannot (no standby attached for `repl-timeout`, the client gone,
/// shutdown, or this node stopped being the primary it was when the write
/// ran: demoted by a newer role record, its writes not on the standby may
/// be discarded, so they are never acknowledged).
async fn standby_acked(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    tenant: &Rc<RefCell<Tenant>>,
    info: &Rc<ClientInfo>,
    target: u64,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    set: &crate::shared::Settings,
) -> bool {
    let timeout_ms = set.repl_timeout_s.saturating_mul(1000) as i64;
    let mut detached_since: Option<i64> = None;
    let epoch = {
        let mut t = tenant.borrow_mut();
        t.ack_waiters.push(info.clone());
        t.epoch
    };
    let id = info.id;
    let ok = loop {
        let acked = {
            let t = tenant.borrow();
            if t.role != crate::repl::Role::Primary || t.epoch != epoch {
                // A newer role record made another node the primary while
                // this write waited: it may never reach the group.
                break false;
            }
            if !t.durable {
                // The tenant became async (plan change): nothing to wait for.
                break true;
            }
            crate::repl::primary::standby_link(&t).map(|l| l.ack_offset.get())
        };
        match acked {
            Some(a) if a >= target => break true,
            Some(_) => detached_since = None,
            None => {
                let now = mstime();
                let since = *detached_since.get_or_insert(now);
                if now - since >= timeout_ms {
                    break false;
                }
            }
        }
        // ACKs wake this client; a short deadline re-checks an attachment.
        match wait_event(stream, inbuf, info, mstime() + 100, shutdown, set).await {
            Waited::Gone => break false,
            Waited::Deadline | Waited::Woken => {}
        }
    };
    tenant.borrow_mut().ack_waiters.retain(|c| c.id != id);
    ok
}

#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// The deadline passed.
    Deadline,
    /// Woken (served, unblocked, pushed to) or more input was buffered.
    Woken,
    /// The client went away, was killed, or the server is shutting down.
    Gone,
}

/// Waits in [`wait_event`] rounds until `done()` (then `Woken`), the
/// deadline, or the client goes away.
async fn wait_until(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    info: &ClientInfo,
    deadline_ms: i64,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    set: &crate::shared::Settings,
    done: impl Fn() -> bool,
) -> Waited {
    loop {
        if done() {
            return Waited::Woken;
        }
        match wait_event(stream, inbuf, info, deadline_ms, shutdown, set).await {
            Waited::Woken => {}
            other => return other,
        }
    }
}

/// The rest of a replica's connection: its payload if one is being built,
/// then the stream from `from` (see `repl::primary::serve_replica`).
#[allow(clippy::too_many_arguments)]
async fn feed_replica(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    s: &mut Session,
    from: u64,
    wait_ack: bool,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    let start = crate::repl::primary::StreamStart {
        from,
        wait_ack,
        listening_port: s.repl.listening_port,
        payload: s.sync_payload.take(),
    };
    crate::repl::primary::serve_replica(stream, inbuf, tenant, shared, &s.info, start, shutdown)
        .await;
}

/// Waits, while a command is suspended, for the deadline (`0`: none), a
/// wake-up, or input. Input is buffered for later (clients may pipeline
/// behind a blocking command) and EOF is noticed at once, so a client that
/// disconnects while blocked is cleaned up instead of waiting forever.
async fn wait_event(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    info: &ClientInfo,
    deadline_ms: i64,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    set: &crate::shared::Settings,
) -> Waited {
    if info.killed.get() {
        return Waited::Gone;
    }
    let sleep = async {
        if deadline_ms == 0 {
            std::future::pending::<()>().await
        } else {
            // +1: the timer may fire up to a millisecond early relative to
            // the millisecond clock; never answer before the deadline.
            let ms = (deadline_ms - mstime()).max(0) as u64 + 1;
            tokio::time::sleep(Duration::from_millis(ms)).await
        }
    };
    if inbuf.capacity() - inbuf.len() < 1024 {
        inbuf.reserve(READ_CHUNK);
    }
    tokio::select! {
        _ = sleep => Waited::Deadline,
        _ = info.wake.notified() => {
            if info.killed.get() { Waited::Gone } else { Waited::Woken }
        }
        r = stream.read_buf(inbuf) => match r {
            Ok(n) if n > 0 && (inbuf.len() as u64) <= set.query_buffer_limit => Waited::Woken,
            _ => Waited::Gone,
        },
        _ = shutdown.changed() => Waited::Gone,
    }
}
