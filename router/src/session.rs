//! One client connection through the router.
//!
//! One task per client. It parses requests, answers connection commands
//! itself ([`crate::local`]), and sends the rest, as batches of consecutive
//! requests for the same upstream connection, to shared upstream
//! connections ([`crate::upstream`]). For each batch, and each local
//! answer, it queues a [`Slot`]; replies are written in slot order as they
//! arrive. One task (not a reader and a writer) because every hop between
//! tasks is a wakeup per request, which is most of a proxy's cost at
//! pipeline depth 1. The queue is bounded (`--max-pending`), and so are
//! the reply bytes delivered but not yet written (`--client-buffer-limit`):
//! a client that does not read its replies stops being read, so it cannot
//! grow the router's memory, while the upstream connection it shares never
//! waits for it.
//!
//! Order: Redis runs one connection's requests in order. Batches on one
//! upstream connection run in the order sent; before a client's requests
//! move to another connection (primary to replica, shared to its own
//! connection), the reader waits until every reply on the previous one
//! came back. That wait happens only at such a switch.
//!
//! Read-your-writes (`--consistency ryw`): after the client touched the
//! primary, a read goes to its replica only once the replica's offset is
//! at least the primary's offset as polled *after* the client's last
//! primary reply (see [`crate::pool::Upstreams::primary_offset_since`]);
//! until then it goes to the primary. Each client keeps one replica
//! (the nearest when it first reads), so its reads are monotonic.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use anykv_server::resp::{ParseLimits, Request, RequestParser};

use crate::classify::{self, Kind};
use crate::clients::{ClientHandle, Registry};
use crate::local::{self, ConnState, Effect, ReplyMode, Settings};
use crate::pool::{Pools, Upstreams};
use crate::upstream::{self, Batch, BatchReply, Conn, Held, Login, UpstreamError};
use crate::{stepdown, wait};

/// Which replies a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Read-your-writes and monotonic reads (replicas that caught up).
    Ryw,
    /// Every read from the primary.
    Strong,
    /// Reads from the nearest replica, whatever it has.
    Nearest,
}

/// Per-route counters, looked up once.
pub struct Counters {
    pub primary: metrics::Counter,
    pub replica: metrics::Counter,
    pub local: metrics::Counter,
    pub pinned: metrics::Counter,
    pub tunnel: metrics::Counter,
    pub ryw_fallback: metrics::Counter,
    pub ryw_waited: metrics::Counter,
    pub retried: metrics::Counter,
    pub write_retries: metrics::Counter,
    pub replica_busy: metrics::Counter,
}

impl Counters {
    fn new() -> Counters {
        let c = |route: &'static str| metrics::counter!("anykv_router_requests_total", "route" => route);
        Counters {
            primary: c("primary"),
            replica: c("replica"),
            local: c("local"),
            pinned: c("pinned"),
            tunnel: c("tunnel"),
            ryw_fallback: metrics::counter!("anykv_router_ryw_primary_reads_total"),
            ryw_waited: metrics::counter!("anykv_router_ryw_waited_reads_total"),
            retried: metrics::counter!("anykv_router_read_retries_total"),
            write_retries: metrics::counter!("anykv_router_write_retries_total"),
            replica_busy: metrics::counter!("anykv_router_busy_replica_skips_total"),
        }
    }
}

/// Everything the sessions of one worker thread share (the upstreams'
/// status and the client registry are the whole router's).
pub struct Router {
    pub ups: Arc<Upstreams>,
    /// This worker's upstream connections.
    pub pools: Arc<Pools>,
    pub set: Settings,
    pub consistency: Consistency,
    pub reg: Arc<Registry>,
    /// Slots (batches and local answers) a client may have unanswered.
    pub max_pending: usize,
    /// How long a write waits for a primary to appear (failover).
    pub primary_wait: Duration,
    /// How long a read-your-writes read waits for its replica to catch
    /// up before it goes to the primary (`--ryw-wait-ms`).
    pub ryw_wait: Duration,
    /// Reply bytes a client may leave unread before the router stops
    /// reading its requests.
    pub client_buffer: usize,
    /// Requests in flight on this worker's connection to a replica at
    /// which it counts as busy (reads go to the next).
    pub replica_busy: usize,
    pub limits: ParseLimits,
    pub counters: Counters,
}

/// How sessions behave (`anykv router`'s flags).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub consistency: Consistency,
    pub max_pending: usize,
    pub primary_wait: Duration,
    pub ryw_wait: Duration,
    pub client_buffer: usize,
    pub replica_busy: usize,
}

impl Router {
    pub fn new(
        ups: Arc<Upstreams>,
        reg: Arc<Registry>,
        set: Settings,
        cfg: SessionConfig,
    ) -> Arc<Router> {
        Arc::new(Router {
            pools: ups.pools(),
            ups,
            set,
            consistency: cfg.consistency,
            reg,
            max_pending: cfg.max_pending.max(1),
            primary_wait: cfg.primary_wait,
            ryw_wait: cfg.ryw_wait,
            client_buffer: cfg.client_buffer,
            replica_busy: cfg.replica_busy.max(1),
            limits: ParseLimits::default(),
            counters: Counters::new(),
        })
    }
}

/// A batch on a shared connection, kept so that it may be sent again: a
/// read batch to the primary if its upstream fails before answering
/// (reads are safe to repeat), a write batch's refused tail to the new
/// primary if the old one stepped down ([`stepdown`]; refused writes did
/// not run). A write that may have run is never sent again.
struct Retry {
    /// Only reads (the whole batch may be sent again on failure).
    read: bool,
    /// The server it went to, and when.
    server: usize,
    sent: Instant,
    bytes: Bytes,
    db: u32,
    count: u32,
    resp: u8,
    slot: usize,
}

/// One entry of the reply queue, in request order.
enum Slot {
    /// A reply the router made.
    Ready(Vec<u8>),
    /// Replies an upstream will send.
    Wait {
        rx: oneshot::Receiver<BatchReply>,
        count: u32,
        skip: bool,
        retry: Option<Retry>,
        /// Ends with a blocking command or WAIT: the client is blocked
        /// (CLIENT LIST's flag `b`) until it completes.
        blocks: bool,
    },
}

/// Where a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// A shared connection to server `i`.
    Shared(usize),
    /// The client's own connection (transaction, blocking command).
    Pinned,
}

/// Consecutive requests for one destination, not yet sent.
struct Run {
    dest: Dest,
    /// The database its requests run in.
    db: u32,
    /// Contiguous range of the current chunk, or owned bytes once not.
    start: usize,
    end: usize,
    owned: Option<Vec<u8>>,
    count: u32,
    reads_only: bool,
}

/// A parsed request: where its bytes are in the chunk (or its own bytes,
/// for an inline request), and its arguments.
struct Req {
    range: Range<usize>,
    own: Option<Bytes>,
    args: SmallVec<[Range<usize>; 4]>,
}

impl Req {
    fn bytes<'a>(&'a self, chunk: &'a Bytes) -> &'a [u8] {
        match &self.own {
            Some(b) => b,
            None => &chunk[self.range.clone()],
        }
    }
}

/// Runs a client connection to its end.
pub async fn serve<S>(router: Arc<Router>, stream: S, me: Arc<ClientHandle>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut s = Session {
        st: ConnState::new(&router.set),
        pools: router.pools.clone(),
        slot: me.id as usize,
        me: me.clone(),
        r: router.clone(),
        wr: Box::new(wr),
        fifo: VecDeque::new(),
        out: Vec::with_capacity(16 * 1024),
        last_done: Instant::now(),
        run: None,
        cur: None,
        shared: Vec::new(),
        pinned: None,
        release_pinned: false,
        next_batch_blocks: false,
        in_multi: false,
        multi_failed: false,
        watching: false,
        scan_at: None,
        replica: None,
        primary_touched: false,
        since: None,
        floor: 0,
        chunk: Bytes::new(),
        held: Arc::new(Held::default()),
        inflight: 0,
        reply_size: None,
        closing: false,
        stepped_from: None,
        must_drain: false,
        wait_task: None,
    };
    s.run(rd).await;
    router.reg.remove(me.id);
}

struct Session {
    r: Arc<Router>,
    me: Arc<ClientHandle>,
    st: ConnState,
    /// The upstream connections of the client's user (the router's own
    /// until it logs in as one of the upstreams' users).
    pools: Arc<Pools>,
    /// Which shared connection of each pool this client uses.
    slot: usize,
    wr: Box<dyn AsyncWrite + Unpin + Send>,
    /// Replies owed to the client, in request order.
    fifo: VecDeque<Slot>,
    /// Replies ready to write.
    out: Vec<u8>,
    /// When the last upstream reply was taken off the queue.
    last_done: Instant,
    run: Option<Run>,
    /// Destination of the last batch sent.
    cur: Option<Dest>,
    /// Cached shared connections, by server.
    shared: Vec<Option<Conn>>,
    /// The client's own connection and its server.
    pinned: Option<(usize, Conn)>,
    /// Give the pinned connection back at the next switch.
    release_pinned: bool,
    /// The next batch sent ends with a blocking command.
    next_batch_blocks: bool,
    in_multi: bool,
    /// A request inside MULTI was refused: EXEC must abort.
    multi_failed: bool,
    watching: bool,
    /// Server that answered the client's `SCAN` with cursor 0.
    scan_at: Option<usize>,
    /// The client's replica.
    replica: Option<usize>,
    /// Sent something to the primary since `since` was last set.
    primary_touched: bool,
    /// The client has seen the primary's state as of (at most) this time;
    /// turned into `floor` once a poll after it answered.
    since: Option<Instant>,
    /// The replication offset a replica needs to serve this client.
    floor: u64,
    /// The read chunk whose requests are being handled (runs slice it).
    chunk: Bytes,
    /// Replies delivered but not yet written to the client.
    held: Arc<Held>,
    /// Requests sent upstream whose replies are not yet written.
    inflight: usize,
    /// Smoothed bytes per reply of this client (None before the first).
    reply_size: Option<f64>,
    closing: bool,
    /// A server that refused this client's writes as a replica, and when
    /// the router knew: batches sent to it before then go again.
    stepped_from: Option<(usize, Instant)>,
    /// Every queued reply must be in before the next batch goes out (a
    /// `WAIT` in progress: Redis runs nothing after it meanwhile).
    must_drain: bool,
    /// The task answering the client's `WAIT`, if one runs.
    wait_task: Option<tokio::task::AbortHandle>,
}

impl Session {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::new();
        let mut reqs: Vec<Req> = Vec::new();
        // Made once: registering a waiter on every wakeup costs a lock.
        let me = self.me.clone();
        let mut killed = std::pin::pin!(me.killed());
        while !self.closing {
            let mut limits = self.r.limits;
            limits.unauthenticated = !self.st.authed;
            let mut proto_err = None;
            reqs.clear();
            let mut last = parser.consumed();
            loop {
                match parser.next(&buf, &limits) {
                    Ok(Some(Request::Multibulk)) => {
                        let end = parser.consumed();
                        let args = parser.ranges().iter().cloned().collect();
                        reqs.push(Req {
                            range: last..end,
                            own: None,
                            args,
                        });
                        last = end;
                    }
                    Ok(Some(Request::Inline)) => {
                        let end = parser.consumed();
                        let mut enc = Vec::new();
                        let argv: Vec<&[u8]> =
                            parser.inline_args().iter().map(|a| &a[..]).collect();
                        upstream::encode(&mut enc, &argv);
                        let args = arg_ranges(&enc);
                        reqs.push(Req {
                            range: last..end,
                            own: Some(Bytes::from(enc)),
                            args,
                        });
                        last = end;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        proto_err = Some(e);
                        break;
                    }
                }
                // A request may change what the next may be (AUTH lifts
                // the unauthenticated limits): parse one at a time then.
                if !self.st.authed {
                    break;
                }
            }
            if reqs.is_empty() && proto_err.is_none() {
                // Everything buffered is handled: send it, then wait for
                // a reply or more requests.
                self.flush_run().await;
                self.settle().await;
                let missing = parser.bulk_bytes_missing(buf.len());
                buf.reserve(missing.clamp(16 * 1024, 64 * 1024 * 1024));
                // A client that leaves its replies unread is not read.
                let can_read =
                    self.fifo.len() < self.r.max_pending && self.held.get() <= self.r.client_buffer;
                let waiting = !self.fifo.is_empty();
                let ev = {
                    let fifo = &mut self.fifo;
                    tokio::select! {
                        biased;
                        r = front_reply(fifo), if waiting => Event::Reply(r),
                        n = rd.read_buf(&mut buf), if can_read => Event::Read(n),
                        _ = &mut killed => Event::Killed,
                    }
                };
                match ev {
                    Event::Reply(r) => self.complete(r).await,
                    Event::Read(Ok(0)) | Event::Read(Err(_)) | Event::Killed => {
                        // The client is gone: a blocking command it left on
                        // its own connection must not wait (nor take a
                        // value nobody will read), so that connection goes.
                        if let Some((_, c)) = self.pinned.take() {
                            c.close();
                        }
                        // Likewise a WAIT (its connection goes with it).
                        if let Some(t) = self.wait_task.take() {
                            t.abort();
                        }
                        break;
                    }
                    Event::Read(Ok(_)) => {}
                }
                continue;
            }
            let consumed = parser.consumed();
            let chunk = buf.split_to(consumed).freeze();
            parser.rebase(consumed);
            self.flush_run().await;
            self.chunk = chunk.clone();
            for req in &reqs {
                if self.closing {
                    break;
                }
                if let Some(up) = self.handle(&chunk, req).await {
                    // The rest of what the client sent goes up as it is.
                    let mut rest = chunk.slice(req.range.start..).to_vec();
                    rest.extend_from_slice(&buf);
                    self.splice(up, rest, rd).await;
                    return;
                }
            }
            if let Some(e) = proto_err {
                let mut msg = b"-ERR ".to_vec();
                msg.extend_from_slice(e.to_string().as_bytes());
                msg.extend_from_slice(b"\r\n");
                self.local_reply(msg).await;
                self.closing = true;
            }
        }
        self.flush_run().await;
        if !self.me.is_killed() {
            self.drain().await;
        }
        let _ = self.wr.shutdown().await;
        if let Some((_, c)) = self.pinned.take() {
            c.close();
        }
    }

    /// Queues a slot; with `--max-pending` slots queued, first waits for
    /// the oldest (the client's own pipeline is then as deep as allowed).
    async fn push(&mut self, slot: Slot) {
        if matches!(slot, Slot::Wait { blocks: true, .. }) {
            self.me.var.lock().blocked = true;
        }
        self.fifo.push_back(slot);
        while self.fifo.len() > self.r.max_pending && !self.closing {
            self.next_reply().await;
        }
    }

    /// Writes out the leading ready slots, without waiting.
    async fn settle(&mut self) {
        while let Some(front) = self.fifo.front_mut() {
            match front {
                Slot::Ready(b) => {
                    let b = std::mem::take(b);
                    self.fifo.pop_front();
                    self.out.extend_from_slice(&b);
                }
                Slot::Wait { rx, .. } => match rx.try_recv() {
                    Ok(r) => self.complete(Some(r)).await,
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => self.complete(None).await,
                },
            }
        }
        self.flush_out().await;
    }

    /// Waits for the oldest slot and writes what is ready.
    async fn next_reply(&mut self) {
        self.settle().await;
        if !self.fifo.is_empty() {
            let r = front_reply(&mut self.fifo).await;
            self.complete(r).await;
            self.settle().await;
        }
    }

    /// Finishes the front slot (a `Wait`) with its replies.
    async fn complete(&mut self, r: Option<BatchReply>) {
        let Some(Slot::Wait {
            count,
            skip,
            retry,
            blocks,
            ..
        }) = self.fifo.pop_front()
        else {
            return;
        };
        if blocks {
            self.me.var.lock().blocked = false;
        }
        self.inflight = self.inflight.saturating_sub(count as usize);
        let lost = || UpstreamError::Lost(self.r.ups.servers[0].addr);
        let r = r.unwrap_or_else(|| Err(lost()));
        // Delivered replies are on the client's account until written
        // (a retry's never were).
        let accounted = r.as_ref().map(|b| b.len()).unwrap_or(0);
        if accounted > 0 {
            let per = accounted as f64 / f64::from(count.max(1));
            self.reply_size = Some(match self.reply_size {
                Some(old) => old * 0.75 + per * 0.25,
                None => per,
            });
        }
        // Sent to a primary that has since stepped down (a refusal in an
        // earlier batch said so): it may have answered as a replica.
        let whole = retry.as_ref().is_some_and(|rt| {
            self.stepped_from
                .is_some_and(|(s, at)| s == rt.server && rt.sent < at)
        });
        let r = match (r, retry) {
            (Err(e), Some(rt)) if rt.read => retry_on_primary(&self.r, &self.pools, rt)
                .await
                .map_err(|_| e),
            (Ok(b), Some(rt)) if whole || stepdown::may_hold_refusal(&b) => {
                Ok(self.redo_refused(b, rt, whole).await)
            }
            // The client's own connection (a transaction, a blocking
            // command): its state was on the old primary.
            (Ok(b), None) if stepdown::may_hold_refusal(&b) => {
                Ok(Bytes::from(stepdown::rewrite_refusals(&b)))
            }
            (r, _) => r,
        };
        // After any retry: read-your-writes counts from the last reply.
        self.last_done = Instant::now();
        if !skip {
            match r {
                Ok(b) if b.len() >= BIG_REPLY => {
                    // Large replies go out as they are, uncopied.
                    self.flush_out().await;
                    if self.wr.write_all(&b).await.is_err() {
                        self.closing = true;
                    }
                }
                Ok(b) => self.out.extend_from_slice(&b),
                Err(e) => {
                    for _ in 0..count {
                        self.out.extend_from_slice(&error_reply(&e));
                    }
                }
            }
        }
        self.held.sub(accounted);
        if self.out.len() >= 64 * 1024 {
            self.flush_out().await;
        }
    }

    async fn flush_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if self.wr.write_all(&self.out).await.is_err() {
            self.closing = true;
        }
        self.out.clear();
    }

    /// Waits for every queued reply and writes them.
    async fn drain(&mut self) {
        while !self.fifo.is_empty() {
            self.next_reply().await;
        }
        self.flush_out().await;
    }

    fn in_flight(&self) -> bool {
        !self.fifo.is_empty()
    }

    /// Requests this client may have in flight: what its unread-reply
    /// limit holds at its usual reply size (two batches until its first
    /// reply says how large they are). Replies arrive whatever the client
    /// does, so this is what bounds what it can make the router hold.
    fn window(&self) -> usize {
        let max = self.r.max_pending * MAX_BATCH as usize;
        match self.reply_size {
            None => 2 * MAX_BATCH as usize,
            Some(size) => ((self.r.client_buffer as f64 / size.max(16.0)) as usize)
                .clamp(MAX_BATCH as usize, max),
        }
    }

    /// Handles one request. `Some(conn)`: the client is now spliced to
    /// that upstream connection (subscriptions, MONITOR).
    async fn handle(&mut self, chunk: &Bytes, req: &Req) -> Option<tokio::net::TcpStream> {
        let base = req.own.as_ref().unwrap_or(chunk);
        let args: SmallVec<[&[u8]; 4]> = req.args.iter().map(|r| &base[r.clone()]).collect();
        if args.is_empty() {
            return None;
        }
        {
            let mut v = self.me.var.lock();
            if !crate::clients::same_cmd(&v.cmd, &args) {
                if let Some(name) = crate::clients::cmd_name(&args) {
                    v.cmd = name;
                }
            }
            v.last = Instant::now();
        }
        if let Some(err) = local::precheck(&self.st, &args) {
            self.local_reply(err).await;
            return None;
        }
        let skip = match self.st.reply {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.st.reply = ReplyMode::On;
                true
            }
        };
        let mut kind = classify::kind(&args);
        if self.in_multi {
            kind = match kind {
                Kind::EndTx => Kind::EndTx,
                Kind::Local => {
                    let name = args[0].to_ascii_lowercase();
                    match &name[..] {
                        b"ping" | b"echo" => Kind::Primary,
                        b"quit" | b"reset" => Kind::Local,
                        _ => {
                            self.refuse_in_multi(args[0]).await;
                            return None;
                        }
                    }
                }
                // They would change the connection for good: refused, as
                // the connection commands are.
                Kind::Tunnel => {
                    self.refuse_in_multi(args[0]).await;
                    return None;
                }
                _ => Kind::Primary,
            };
            if kind != Kind::Local {
                // Inside MULTI everything is queued on the client's own
                // connection.
                if kind == Kind::EndTx {
                    if self.multi_failed && args[0].eq_ignore_ascii_case(b"exec") {
                        // Redis's answer to EXEC after a refused command;
                        // the upstream's transaction is discarded.
                        self.flush_run().await;
                        self.send_batch(
                            Dest::Pinned,
                            self.st.db,
                            Bytes::from_static(b"*1\r\n$7\r\nDISCARD\r\n"),
                            1,
                            false,
                            true,
                        )
                        .await;
                        self.local_reply(
                            b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                                .to_vec(),
                        )
                        .await;
                        self.end_tx();
                        return None;
                    }
                    self.forward(req, chunk, Dest::Pinned, skip, false).await;
                    self.end_tx();
                    return None;
                }
                self.forward(req, chunk, Dest::Pinned, skip, false).await;
                return None;
            }
        }
        match kind {
            Kind::Local => {
                let resp_before = self.st.resp;
                let login_before = self.st.login.clone();
                let mut checked = None;
                let (reply, effect) = loop {
                    let ctx = local::Ctx {
                        me: &self.me,
                        reg: &self.r.reg,
                        set: &self.r.set,
                        checked: checked.take(),
                    };
                    match local::answer(&mut self.st, &ctx, &args) {
                        // A user of the upstreams': the primary says
                        // whether it may log in, then the answer is made.
                        (_, Effect::CheckLogin(l)) => checked = Some(self.check_login(&l).await),
                        done => break done,
                    }
                };
                if self.st.resp != resp_before || self.st.login != login_before {
                    // Later requests use connections of the new protocol
                    // or user: they must not overtake the earlier ones.
                    self.flush_run().await;
                    self.drain().await;
                    self.shared.clear();
                    self.cur = None;
                    self.pools = self.r.pools.for_login(self.st.login.as_ref());
                    // Its own connection speaks the old protocol, as the
                    // old user.
                    if let Some((_, c)) = self.pinned.take() {
                        c.close();
                        self.end_tx();
                        self.release_pinned = false;
                    }
                }
                {
                    let mut v = self.me.var.lock();
                    v.db = self.st.db;
                    v.resp = self.st.resp;
                    v.name.clone_from(&self.st.name);
                    v.user = self.st.login.as_ref().map(|l| l.user.clone());
                }
                self.r.counters.local.increment(1);
                match effect {
                    Effect::None => {
                        if !skip {
                            self.local_reply(reply).await;
                        }
                    }
                    Effect::Close => {
                        self.local_reply(reply).await;
                        self.closing = true;
                    }
                    Effect::CheckLogin(_) => {}
                    Effect::Reset => {
                        self.flush_run().await;
                        self.drain().await;
                        if let Some((_, c)) = self.pinned.take() {
                            c.close();
                        }
                        self.end_tx();
                        self.release_pinned = false;
                        self.local_reply(reply).await;
                    }
                }
            }
            Kind::Read => {
                let d = self.read_dest().await;
                self.forward(req, chunk, d, skip, true).await;
            }
            Kind::Scan { first } => {
                let d = match (first, self.scan_at) {
                    (false, Some(i)) => Dest::Shared(i),
                    _ => self.read_dest().await,
                };
                if let Dest::Shared(i) = d {
                    self.scan_at = Some(i);
                }
                self.forward(req, chunk, d, skip, true).await;
            }
            Kind::Primary | Kind::EndTx | Kind::Unwatch => {
                if self.pinned.is_some() && (self.watching || kind != Kind::Primary) {
                    self.forward(req, chunk, Dest::Pinned, skip, false).await;
                    if kind != Kind::Primary {
                        self.end_tx();
                    }
                } else {
                    match self.primary().await {
                        Some(p) => self.forward(req, chunk, Dest::Shared(p), skip, false).await,
                        None => self.no_primary().await,
                    }
                }
            }
            Kind::Blocking if wait::args(&args).is_some() => {
                let (want, timeout) = wait::args(&args)?;
                // After every earlier reply: the client's writes are in.
                self.flush_run().await;
                self.drain().await;
                let Some(p) = self.primary().await else {
                    self.no_primary().await;
                    return None;
                };
                // Answered by a task of its own, so the session still sees
                // its client leave (or get killed) meanwhile; nothing is
                // sent upstream until it is in.
                let (tx, rx) = oneshot::channel();
                let r = self.r.clone();
                let task = tokio::spawn(wait::answer(r, p, (want, timeout), tx, self.held.clone()));
                self.wait_task = Some(task.abort_handle());
                self.must_drain = true;
                self.push(Slot::Wait {
                    rx,
                    count: 1,
                    skip,
                    retry: None,
                    blocks: true,
                })
                .await;
            }
            Kind::Multi | Kind::Watch | Kind::Blocking => {
                if !self.pin().await {
                    if kind == Kind::Multi {
                        // What the client queues next must not run on its
                        // own: it fails, and EXEC aborts.
                        self.in_multi = true;
                        self.multi_failed = true;
                    }
                } else {
                    // Outside MULTI a blocking command blocks: its batch
                    // ends with it, and the client shows blocked until
                    // its reply.
                    let blocks = kind == Kind::Blocking && !self.in_multi;
                    if blocks {
                        self.flush_run().await;
                        self.next_batch_blocks = true;
                    }
                    self.forward(req, chunk, Dest::Pinned, skip, false).await;
                    if blocks {
                        self.flush_run().await;
                    }
                    match kind {
                        Kind::Multi => {
                            self.in_multi = true;
                            self.multi_failed = false;
                            self.me.var.lock().multi = true;
                        }
                        Kind::Watch => self.watching = true,
                        _ => {
                            if !self.watching {
                                self.release_pinned = true;
                            }
                        }
                    }
                }
            }
            Kind::Tunnel => return self.tunnel().await,
        }
        None
    }

    /// A command the router cannot queue in a transaction: refused, and
    /// EXEC will abort (as Redis after any refused command).
    async fn refuse_in_multi(&mut self, name: &[u8]) {
        self.multi_failed = true;
        let msg = format!(
            "-ERR {} inside MULTI is not supported by the router\r\n",
            String::from_utf8_lossy(name).to_uppercase()
        );
        self.local_reply(msg.into_bytes()).await;
    }

    fn end_tx(&mut self) {
        self.in_multi = false;
        self.multi_failed = false;
        self.watching = false;
        self.release_pinned = true;
        self.me.var.lock().multi = false;
    }

    async fn local_reply(&mut self, reply: Vec<u8>) {
        self.flush_run().await;
        self.push(Slot::Ready(reply)).await;
    }

    /// Whether the primary lets `login` log in: `Err` holds the error
    /// line the client gets (the primary's own refusal, `WRONGPASS ...`).
    async fn check_login(&mut self, login: &Login) -> Result<(), Vec<u8>> {
        let Some(p) = self.primary().await else {
            return Err(NO_PRIMARY.to_vec());
        };
        let addr = self.r.ups.servers[p].addr;
        match upstream::check_login(addr, login, self.r.ups.cfg.connect_timeout).await {
            Ok(verdict) => verdict,
            Err(e) => Err(format!("ERR router: {e}").into_bytes()),
        }
    }

    async fn no_primary(&mut self) {
        let mut line = b"-".to_vec();
        line.extend_from_slice(NO_PRIMARY);
        line.extend_from_slice(b"\r\n");
        self.local_reply(line).await;
    }

    /// The primary's index, waiting up to `--primary-wait-ms` for one
    /// (a failover in progress).
    async fn primary(&mut self) -> Option<usize> {
        if let Some(p) = self.r.ups.primary() {
            return Some(p);
        }
        let deadline = Instant::now() + self.r.primary_wait;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(p) = self.r.ups.primary() {
                return Some(p);
            }
        }
        None
    }

    /// Sends the refused tail of a batch (see [`stepdown`]) to the primary
    /// that replaced the one that refused it, or the whole batch when it
    /// went to that server before the router noticed (`whole`); returns
    /// the batch's replies as the client gets them. What cannot go again,
    /// or finds no new primary within `--primary-wait-ms`, is answered
    /// with [`stepdown::STEPPED_DOWN`]; a `-READONLY` from a server that
    /// is still the primary is passed on as it is.
    async fn redo_refused(&mut self, replies: Bytes, rt: Retry, whole: bool) -> Bytes {
        let mut done: Vec<u8> = Vec::new();
        let (mut replies, mut bytes, mut server) = (replies, rt.bytes, rt.server);
        let mut whole = whole;
        // A few rounds: the new primary may step down too.
        for _ in 0..3 {
            let (Some(at), Some(reqs)) = (
                stepdown::reply_ranges(&replies),
                stepdown::request_ranges(&bytes),
            ) else {
                break;
            };
            let Some(k) = stepdown::refused_tail(&replies, &at, &reqs, whole) else {
                break;
            };
            whole = false;
            let old = self.r.ups.servers[server].clone();
            let p = match self.after_refusal(server, Instant::now()).await {
                Some(Ok(p)) => p,
                Some(Err(())) => {
                    // Not a step-down: the server's own answer.
                    done.extend_from_slice(&replies);
                    return Bytes::from(done);
                }
                None => break,
            };
            self.stepped_from = Some((server, Instant::now()));
            done.extend_from_slice(&replies[..at[k].start]);
            let tail = bytes.slice(reqs[k].0.start..);
            let n = (reqs.len() - k) as u32;
            self.r.counters.write_retries.increment(u64::from(n));
            tracing::debug!(from = %old.addr, to = %self.r.ups.servers[p].addr, n, "sending refused requests to the new primary");
            let sent = match self.pools.shared(p, rt.resp, rt.slot).await {
                Ok(c) => c.request(rt.db, tail.clone(), n).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(b) => (replies, bytes, server) = (b, tail, p),
                Err(e) => {
                    for _ in 0..n {
                        done.extend_from_slice(&error_reply(&e));
                    }
                    return Bytes::from(done);
                }
            }
        }
        done.extend_from_slice(&stepdown::rewrite_refusals(&replies));
        Bytes::from(done)
    }

    /// What a refusal by server `old` at `t` meant (see
    /// [`Upstreams::after_refusal`]): every poller is asked for an early
    /// `ROLE`, and the answer awaited up to `--primary-wait-ms`.
    async fn after_refusal(&mut self, old: usize, t: Instant) -> Option<Result<usize, ()>> {
        self.r.ups.poke_all();
        let deadline = Instant::now() + self.r.primary_wait;
        loop {
            if let Some(r) = self.r.ups.after_refusal(old, t) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether this worker has `--replica-max-inflight` requests in flight
    /// to replica `i` (its shared connection for the client's protocol).
    fn replica_busy(&self, i: usize) -> bool {
        self.pools.in_flight(i, self.st.resp) >= self.r.replica_busy
    }

    /// The replica for the client's reads: among those within 1 ms of the
    /// nearest (equally near), the least loaded (clients take turns among
    /// equals); then farther ones by RTT; never a busy one. None: every replica is busy or unusable
    /// (the primary answers).
    fn pick_replica(&self) -> Option<usize> {
        let mut cands = self.r.ups.usable_replicas();
        let near = cands.iter().map(|c| c.1).min()? + Duration::from_millis(1);
        let load = |i: usize| self.pools.in_flight(i, self.st.resp);
        let mut ranked: Vec<(bool, usize, Duration, usize)> = cands
            .drain(..)
            .map(|(i, rtt)| {
                let far = rtt > near;
                (
                    far,
                    if far { 0 } else { load(i) },
                    if far { rtt } else { Duration::ZERO },
                    i,
                )
            })
            .collect();
        ranked.sort_unstable();
        // Equally near and equally loaded: clients take turns (by id).
        let equals = ranked
            .iter()
            .take_while(|r| (r.0, r.1) == (ranked[0].0, ranked[0].1))
            .count();
        ranked[..equals].rotate_left(self.slot % equals.max(1));
        let first = ranked[0].3;
        let chosen = ranked.iter().map(|r| r.3).find(|&i| !self.replica_busy(i));
        if chosen != Some(first) {
            // The first choice was busy: this read goes elsewhere.
            self.r.counters.replica_busy.increment(1);
        }
        chosen
    }

    /// Where a read goes under the consistency mode.
    async fn read_dest(&mut self) -> Dest {
        let ups = self.r.ups.clone();
        let Some(p) = ups.primary() else {
            // No primary: a replica still answers reads.
            return match ups.nearest_replica() {
                Some(r) => Dest::Shared(r),
                None => Dest::Shared(self.primary().await.unwrap_or(0)),
            };
        };
        if self.pinned.is_some() && self.watching {
            return Dest::Pinned;
        }
        if self.r.consistency == Consistency::Strong {
            return Dest::Shared(p);
        }
        let rep = match self.replica {
            Some(r) if ups.replica_usable(r) && !self.replica_busy(r) => r,
            _ => match self.pick_replica() {
                Some(r) => {
                    if self.replica.is_some() {
                        // Another replica: it must catch up with what the
                        // client saw, bounded by the primary's state now.
                        self.since = Some(Instant::now());
                    }
                    self.replica = Some(r);
                    r
                }
                None => return Dest::Shared(p),
            },
        };
        if self.r.consistency == Consistency::Nearest {
            return Dest::Shared(rep);
        }
        let run_on_primary = self
            .run
            .as_ref()
            .is_some_and(|r| r.dest == Dest::Shared(p) || r.dest == Dest::Pinned);
        if run_on_primary {
            // The client's write is not even sent yet: stay behind it.
            self.r.counters.ryw_fallback.increment(1);
            return Dest::Shared(p);
        }
        if self.primary_touched {
            if self.cur == Some(Dest::Shared(p)) && self.in_flight() {
                // The client's write is still on its way: stay behind it.
                self.r.counters.ryw_fallback.increment(1);
                return Dest::Shared(p);
            }
            self.flush_run().await;
            self.drain().await;
            self.since = Some(self.last_done);
            self.primary_touched = false;
        }
        if self.caught_up(p, rep) {
            return Dest::Shared(rep);
        }
        if self.wait_caught_up(p, rep).await {
            self.r.counters.ryw_waited.increment(1);
            return Dest::Shared(rep);
        }
        self.r.counters.ryw_fallback.increment(1);
        Dest::Shared(p)
    }

    /// Whether replica `rep` has everything the client saw on primary
    /// `p`, as the polls tell now: the primary's offset at a `ROLE` sent
    /// after the client's last reply from it (`since`) becomes the floor
    /// the replica's offset must reach.
    fn caught_up(&mut self, p: usize, rep: usize) -> bool {
        let ups = &self.r.ups;
        if let Some(t) = self.since {
            match ups.primary_offset_since(p, t) {
                Some(need) => {
                    self.floor = self.floor.max(need);
                    self.since = None;
                }
                None => return false,
            }
        }
        ups.offset(rep) >= self.floor
    }

    /// [`caught_up`](Self::caught_up), waiting up to `--ryw-wait-ms` for
    /// early polls (the primary's until its offset after the client's
    /// write is known, then the replica's) to say so.
    async fn wait_caught_up(&mut self, p: usize, rep: usize) -> bool {
        let wait = self.r.ryw_wait;
        if wait.is_zero() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let ups = self.r.ups.clone();
        loop {
            let server = &ups.servers[if self.since.is_some() { p } else { rep }];
            // Registered before the poke, so its answer is not missed.
            let polled = server.polled.notified();
            tokio::pin!(polled);
            polled.as_mut().enable();
            server.poke();
            if tokio::time::timeout_at(deadline, polled).await.is_err() {
                return self.caught_up(p, rep);
            }
            if self.caught_up(p, rep) {
                return true;
            }
        }
    }

    /// Makes sure the client has its own connection to the primary.
    async fn pin(&mut self) -> bool {
        if self.pinned.is_some() {
            self.release_pinned = false;
            return true;
        }
        let Some(p) = self.primary().await else {
            self.no_primary().await;
            return false;
        };
        match self.pools.dedicated(p, self.st.resp).await {
            Ok(c) => {
                self.pinned = Some((p, c));
                self.release_pinned = false;
                true
            }
            Err(e) => {
                self.local_reply(error_reply(&e)).await;
                false
            }
        }
    }

    /// Adds a request to the run for `dest`, sending the previous run
    /// first if it went elsewhere.
    async fn forward(&mut self, req: &Req, chunk: &Bytes, dest: Dest, skip: bool, read: bool) {
        if let Some(run) = &self.run {
            if run.dest != dest || run.db != self.st.db || skip || run.count >= MAX_BATCH {
                self.flush_run().await;
            }
        }
        match &mut self.run {
            Some(run) => {
                run.count += 1;
                run.reads_only &= read;
                match (&mut run.owned, &req.own) {
                    (None, None) if req.range.start == run.end => run.end = req.range.end,
                    (owned, _) => {
                        let v = owned.get_or_insert_with(|| chunk[run.start..run.end].to_vec());
                        v.extend_from_slice(req.bytes(chunk));
                    }
                }
            }
            None => {
                self.run = Some(Run {
                    dest,
                    db: self.st.db,
                    start: req.range.start,
                    end: req.range.end,
                    owned: req.own.as_ref().map(|b| b.to_vec()),
                    count: 1,
                    reads_only: read,
                });
            }
        }
        if skip {
            self.send_run(true).await;
        }
    }

    async fn flush_run(&mut self) {
        self.send_run(false).await;
    }

    /// Sends the current run as one batch.
    async fn send_run(&mut self, skip: bool) {
        let Some(run) = self.run.take() else { return };
        let bytes = match run.owned {
            Some(v) => Bytes::from(v),
            None => self.chunk.slice(run.start..run.end),
        };
        self.send_batch(run.dest, run.db, bytes, run.count, run.reads_only, skip)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_batch(
        &mut self,
        dest: Dest,
        db: u32,
        bytes: Bytes,
        count: u32,
        reads: bool,
        skip: bool,
    ) {
        if std::mem::take(&mut self.must_drain) && self.in_flight() {
            self.drain().await;
        }
        if self.cur.is_some() && self.cur != Some(dest) {
            if self.in_flight() {
                self.drain().await;
            }
            if self.release_pinned && dest != Dest::Pinned {
                if let Some((i, c)) = self.pinned.take() {
                    self.pools.release(i, self.st.resp, c);
                }
                self.release_pinned = false;
            }
        }
        self.cur = Some(dest);
        let (conn, server) = match dest {
            Dest::Pinned => match &self.pinned {
                Some((i, c)) => (Ok(c.clone()), *i),
                None => (Err(UpstreamError::Lost(self.r.ups.servers[0].addr)), 0),
            },
            Dest::Shared(i) => (self.shared_conn(i).await, i),
        };
        let c = &self.r.counters;
        let primary = self.r.ups.primary();
        match dest {
            Dest::Pinned => c.pinned.increment(u64::from(count)),
            Dest::Shared(i) if Some(i) == primary => c.primary.increment(u64::from(count)),
            Dest::Shared(_) => c.replica.increment(u64::from(count)),
        }
        if Some(server) == primary || dest == Dest::Pinned {
            self.primary_touched = true;
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                let mut out = Vec::new();
                for _ in 0..count {
                    out.extend_from_slice(&error_reply(&e));
                }
                if !skip {
                    self.push(Slot::Ready(out)).await;
                }
                return;
            }
        };
        // Backpressure: a client over its unread-reply limit sends nothing
        // more until it reads.
        while (self.held.get() > self.r.client_buffer
            || self.inflight + count as usize > self.window())
            && !self.fifo.is_empty()
            && !self.closing
        {
            self.next_reply().await;
        }
        self.inflight += count as usize;
        let (tx, rx) = oneshot::channel();
        let retry = (dest != Dest::Pinned).then(|| Retry {
            read: reads,
            server,
            sent: Instant::now(),
            bytes: bytes.clone(),
            db,
            count,
            resp: self.st.resp,
            slot: self.slot,
        });
        conn.send(Batch {
            db,
            bytes,
            count,
            reply: tx,
            held: Some(self.held.clone()),
        })
        .await;
        let blocks = std::mem::take(&mut self.next_batch_blocks);
        self.push(Slot::Wait {
            rx,
            count,
            skip,
            retry,
            blocks,
        })
        .await;
    }

    async fn shared_conn(&mut self, i: usize) -> Result<Conn, UpstreamError> {
        if self.shared.len() <= i {
            self.shared.resize(i + 1, None);
        }
        if let Some(c) = &self.shared[i] {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        let c = self.pools.shared(i, self.st.resp, self.slot).await?;
        self.shared[i] = Some(c.clone());
        Ok(c)
    }

    /// Opens the client's own connection to the primary, in the client's
    /// state, for a connection that will be spliced (subscriptions,
    /// MONITOR, CLIENT TRACKING).
    async fn tunnel(&mut self) -> Option<tokio::net::TcpStream> {
        self.flush_run().await;
        self.drain().await;
        let Some(p) = self.primary().await else {
            self.no_primary().await;
            return None;
        };
        // Logged in as the client's pools are (its user), named as it is.
        let name =
            (!self.st.name.is_empty()).then(|| String::from_utf8_lossy(&self.st.name).into_owned());
        let hs = self.pools.handshake(self.st.resp, name);
        let addr = self.r.ups.servers[p].addr;
        let mut s = match upstream::connect_raw(addr, &hs, self.r.ups.cfg.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                self.local_reply(error_reply(&e)).await;
                return None;
            }
        };
        if self.st.db != 0 {
            let mut sel = Vec::new();
            upstream::encode(&mut sel, &[b"SELECT", self.st.db.to_string().as_bytes()]);
            match upstream::exchange(&mut s, &sel, 1).await {
                Ok(r) if upstream::first_error(&r).is_none() => {}
                _ => {
                    self.local_reply(
                        b"-ERR router could not select the database upstream\r\n".to_vec(),
                    )
                    .await;
                    return None;
                }
            }
        }
        self.r.counters.tunnel.increment(1);
        self.me.var.lock().tunnel = true;
        Some(s)
    }

    /// Splices the client to `up` for the rest of its life: `first` (the
    /// request that asked for it and what followed) goes up, then bytes
    /// flow both ways untouched.
    async fn splice<R: AsyncRead + Unpin>(
        &mut self,
        up: tokio::net::TcpStream,
        first: Vec<u8>,
        mut rd: R,
    ) {
        self.drain().await;
        let (mut ur, mut uw) = up.into_split();
        if uw.write_all(&first).await.is_err() {
            return;
        }
        let me = self.me.clone();
        let wr = &mut self.wr;
        tokio::select! {
            _ = tokio::io::copy(&mut rd, &mut uw) => {}
            _ = tokio::io::copy(&mut ur, wr) => {}
            _ = me.killed() => {}
        }
        let _ = uw.shutdown().await;
        let _ = self.wr.shutdown().await;
    }
}

/// The oldest slot's replies (a `Wait` slot; pending for anything else).
async fn front_reply(fifo: &mut VecDeque<Slot>) -> Option<BatchReply> {
    match fifo.front_mut() {
        Some(Slot::Wait { rx, .. }) => rx.await.ok(),
        _ => std::future::pending().await,
    }
}

/// What woke a session.
enum Event {
    Reply(Option<BatchReply>),
    Read(std::io::Result<usize>),
    Killed,
}

/// Argument ranges of an encoded multibulk request.
fn arg_ranges(enc: &[u8]) -> SmallVec<[Range<usize>; 4]> {
    let mut p = RequestParser::new();
    match p.next(enc, &ParseLimits::default()) {
        Ok(Some(Request::Multibulk)) => p.ranges().iter().cloned().collect(),
        _ => SmallVec::new(),
    }
}

/// A client-facing error for an upstream failure.
pub(crate) fn error_reply(e: &UpstreamError) -> Vec<u8> {
    format!("-ERR router: {e}\r\n").into_bytes()
}

/// What a request that needs the primary gets while there is none.
const NO_PRIMARY: &[u8] =
    b"TRYAGAIN no primary among the router's upstreams answers; retry shortly";

/// Most requests in one batch: an upstream reader holds a batch's replies
/// until the last arrives, so this bounds what one batch can hold (and
/// the client-buffer check runs between batches).
const MAX_BATCH: u32 = 32;

/// Replies this large are written without copying them into the buffer.
const BIG_REPLY: usize = 16 * 1024;

/// Sends a failed read batch to the primary once.
async fn retry_on_primary(
    router: &Router,
    pools: &Pools,
    rt: Retry,
) -> Result<Bytes, UpstreamError> {
    let p = router
        .ups
        .primary()
        .ok_or(UpstreamError::Lost(router.ups.servers[0].addr))?;
    router.counters.retried.increment(u64::from(rt.count));
    let c = pools.shared(p, rt.resp, rt.slot).await?;
    c.request(rt.db, rt.bytes, rt.count).await
}
