//! One connection to an upstream store, shared by many clients.
//!
//! Clients hand the connection *batches*: the raw bytes of one or more of
//! their requests, in their order, and a channel for the replies. A writer
//! task writes batches back to back (pipelining), a reader task cuts the
//! reply stream at reply boundaries ([`Scanner`]) and hands each batch its
//! replies as one slice of the read buffer, untouched: a batch is written
//! whole, so its replies are contiguous. The connection remembers its
//! selected database and puts a `SELECT` before a batch of another one, so
//! clients of any database share it (twemproxy serves only database 0).
//!
//! Backpressure: the batch queue is bounded, in batches and in bytes not
//! yet written to the upstream, so a slow upstream stops the clients that
//! use it (they stop reading their sockets) instead of growing memory; a slow client never stops the reader, because each
//! batch's replies go to that client's own queue.

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::frame::Scanner;

/// Why a batch got no replies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection to upstream {0} lost before it answered")]
    Lost(SocketAddr),
    #[error("cannot connect to upstream {0}: {1}")]
    Connect(SocketAddr, String),
}

/// Replies of one batch: all of them, contiguous, as the upstream sent them.
pub type BatchReply = Result<Bytes, UpstreamError>;

/// Reply bytes an upstream delivered to a client that the client has not
/// read yet. The upstream reader adds, the client's session subtracts once
/// written, and stops reading requests while it is over its limit: a
/// client that does not read its replies cannot grow the router's memory
/// without bound, and the upstream reader never waits for it.
#[derive(Default)]
pub struct Held(AtomicUsize);

impl Held {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }

    pub fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Requests of one client for one connection.
pub struct Batch {
    /// The database the requests run in.
    pub db: u32,
    /// Raw RESP requests.
    pub bytes: Bytes,
    /// How many replies they produce.
    pub count: u32,
    pub reply: oneshot::Sender<BatchReply>,
    /// The client's held-bytes account.
    pub held: Option<Arc<Held>>,
}

/// A batch on its way: its share of the connection's byte budget goes
/// back once it is written.
struct Queued {
    batch: Batch,
    bytes: Option<OwnedSemaphorePermit>,
    load: Load,
}

/// A batch's requests on the connection's in-flight count until its
/// replies are handed over (or it fails): the count is how busy the
/// upstream is (see [`Conn::in_flight`]).
struct Load {
    count: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.count.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// What the reader owes: `count` replies, then where they go (`None`:
/// swallowed, the router's own `SELECT`).
struct Owed {
    count: u32,
    reply: Option<oneshot::Sender<BatchReply>>,
    held: Option<Arc<Held>>,
    _load: Option<Load>,
}

struct State {
    owed: VecDeque<Owed>,
    dead: bool,
}

struct Inner {
    addr: SocketAddr,
    /// Request bytes queued and not yet written (`queue_bytes` permits).
    budget: Arc<Semaphore>,
    /// Requests sent and not answered yet.
    load: Arc<AtomicUsize>,
    budget_max: u32,
    state: Mutex<State>,
    dead: AtomicBool,
    closed: Notify,
}

impl Inner {
    /// Marks the connection dead and fails everything owed.
    fn kill(&self) {
        let owed = {
            let mut st = self.state.lock();
            st.dead = true;
            std::mem::take(&mut st.owed)
        };
        self.dead.store(true, Ordering::Release);
        self.budget.close();
        self.closed.notify_waiters();
        self.closed.notify_one();
        for o in owed {
            if let Some(tx) = o.reply {
                let _ = tx.send(Err(UpstreamError::Lost(self.addr)));
            }
        }
    }
}

/// A shared, pipelined connection. Cloning shares it.
#[derive(Clone)]
pub struct Conn {
    tx: mpsc::Sender<Queued>,
    inner: Arc<Inner>,
}

/// How a connection introduces itself after connecting.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// `AUTH` with this password (`--upstream-password`).
    pub password: Option<String>,
    /// A client's own upstream user: `AUTH user password` instead.
    pub login: Option<Login>,
    /// RESP version the connection speaks (3: `HELLO 3`).
    pub resp: u8,
    /// `CLIENT SETNAME`, so the upstream's CLIENT LIST says who it is.
    pub name: Option<String>,
}

impl Handshake {
    /// The requests to send first, and how many replies they produce.
    pub fn requests(&self) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut n = 0;
        if let Some(l) = &self.login {
            encode(&mut out, &[b"AUTH", &l.user, &l.password]);
            n += 1;
        } else if let Some(p) = &self.password {
            encode(&mut out, &[b"AUTH", p.as_bytes()]);
            n += 1;
        }
        if self.resp == 3 {
            encode(&mut out, &[b"HELLO", b"3"]);
            n += 1;
        }
        if let Some(name) = &self.name {
            encode(&mut out, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
            n += 1;
        }
        (out, n)
    }
}

pub use anykv_server::resp::encode_request as encode;

/// A user of the upstreams' own (their ACL), as a client logged in with
/// `AUTH user password`: the client's requests go on connections logged
/// in as that user, so the upstream applies the user's rules.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Login {
    /// The user only: a password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", String::from_utf8_lossy(&self.user))
    }
}

/// Connects and runs the handshake; the first error reply fails it.
pub async fn connect_raw(
    addr: SocketAddr,
    hs: &Handshake,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let fail = |e: String| UpstreamError::Connect(addr, e);
    let mut s = dial(addr, timeout).await?;
    let (req, n) = hs.requests();
    if n > 0 {
        let replies = tokio::time::timeout(timeout, exchange(&mut s, &req, n))
            .await
            .map_err(|_| fail("handshake timed out".into()))?
            .map_err(fail)?;
        if let Some(e) = first_error(&replies) {
            return Err(fail(e));
        }
    }
    Ok(s)
}

async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let fail = |e: String| UpstreamError::Connect(addr, e);
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Asks the server at `addr` whether `login` may log in, on a connection
/// of its own (closed after): `Ok(Ok(()))` yes, `Ok(Err(line))` the
/// server's refusal as it said it (`WRONGPASS ...`, without the `-`).
pub async fn check_login(
    addr: SocketAddr,
    login: &Login,
    timeout: Duration,
) -> Result<Result<(), Vec<u8>>, UpstreamError> {
    let fail = |e: String| UpstreamError::Connect(addr, e);
    let mut s = dial(addr, timeout).await?;
    let hs = Handshake {
        login: Some(login.clone()),
        ..Handshake::default()
    };
    let (req, n) = hs.requests();
    let replies = tokio::time::timeout(timeout, exchange(&mut s, &req, n))
        .await
        .map_err(|_| fail("AUTH timed out".into()))?
        .map_err(fail)?;
    Ok(first_error(&replies).map_or(Ok(()), |e| Err(e.into_bytes())))
}

/// Writes `req` and reads exactly `n` replies.
pub async fn exchange(s: &mut TcpStream, req: &[u8], n: u32) -> Result<Vec<Bytes>, String> {
    s.write_all(req).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut sc = Scanner::default();
    let mut out = Vec::with_capacity(n as usize);
    while out.len() < n as usize {
        match sc.next(&buf).map_err(|e| e.to_string())? {
            Some(end) => {
                out.push(buf.split_to(end).freeze());
                sc.rebase(end);
            }
            None => {
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed by the upstream".into());
                }
            }
        }
    }
    Ok(out)
}

/// The text of the first error reply among `replies`, if any.
pub fn first_error(replies: &[Bytes]) -> Option<String> {
    replies
        .iter()
        .find(|r| r.first() == Some(&b'-'))
        .map(|r| String::from_utf8_lossy(&r[1..r.len().saturating_sub(2)]).into_owned())
}

impl Conn {
    /// Connects, runs the handshake and starts the connection's tasks;
    /// `queue` is at most how many batches, and how many request bytes,
    /// wait to be written.
    pub async fn open(
        addr: SocketAddr,
        hs: &Handshake,
        timeout: Duration,
        queue: (usize, usize),
    ) -> Result<Conn, UpstreamError> {
        let (queue, queue_bytes) = queue;
        let budget_max = u32::try_from(queue_bytes.max(1)).unwrap_or(u32::MAX);
        let stream = connect_raw(addr, hs, timeout).await?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let inner = Arc::new(Inner {
            addr,
            budget: Arc::new(Semaphore::new(budget_max as usize)),
            budget_max,
            load: Arc::default(),
            state: Mutex::new(State {
                owed: VecDeque::new(),
                dead: false,
            }),
            dead: AtomicBool::new(false),
            closed: Notify::new(),
        });
        let (rd, wr) = stream.into_split();
        tokio::spawn(write_loop(inner.clone(), rx, wr));
        tokio::spawn(read_loop(inner.clone(), rd));
        metrics::gauge!("anykv_router_upstream_connections").increment(1.0);
        Ok(Conn { tx, inner })
    }

    /// Queues a batch; waits while the queue is full, in batches or in
    /// bytes (backpressure; a batch larger than the whole budget waits for
    /// all of it). A dead connection answers the batch with
    /// [`UpstreamError::Lost`].
    pub async fn send(&self, b: Batch) {
        self.inner
            .load
            .fetch_add(b.count as usize, Ordering::AcqRel);
        let load = Load {
            count: self.inner.load.clone(),
            n: b.count as usize,
        };
        let want = u32::try_from(b.bytes.len())
            .unwrap_or(u32::MAX)
            .min(self.inner.budget_max);
        let permit = if want == 0 {
            None
        } else {
            match self.inner.budget.clone().acquire_many_owned(want).await {
                Ok(p) => Some(p),
                // Closed with the connection.
                Err(_) => {
                    let _ = b.reply.send(Err(UpstreamError::Lost(self.inner.addr)));
                    return;
                }
            }
        };
        let q = Queued {
            batch: b,
            bytes: permit,
            load,
        };
        if let Err(mpsc::error::SendError(q)) = self.tx.send(q).await {
            let _ = q
                .batch
                .reply
                .send(Err(UpstreamError::Lost(self.inner.addr)));
        }
    }

    /// Sends `count` requests (`bytes`, in database `db`) and waits for
    /// their replies, outside any client's held-bytes account (the
    /// router's own requests, and requests sent again).
    pub async fn request(&self, db: u32, bytes: Bytes, count: u32) -> BatchReply {
        let (tx, rx) = oneshot::channel();
        self.send(Batch {
            db,
            bytes,
            count,
            reply: tx,
            held: None,
        })
        .await;
        rx.await.map_err(|_| UpstreamError::Lost(self.addr()))?
    }

    pub fn is_dead(&self) -> bool {
        self.inner.dead.load(Ordering::Acquire)
    }

    /// Requests sent on this connection and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.inner.load.load(Ordering::Acquire)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Closes the connection; what it owes is failed.
    pub fn close(&self) {
        self.inner.kill();
    }

    /// Same connection (clones share one).
    pub fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Largest write the writer gathers from queued batches.
const WRITE_GATHER: usize = 64 * 1024;

async fn write_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Queued>,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_GATHER);
    // Budget of the batches in `out`, returned once it is written.
    let mut spent: Vec<OwnedSemaphorePermit> = Vec::new();
    // The database the upstream will be in once it has read `out`.
    let mut db = 0u32;
    let mut select = Vec::new();
    'outer: loop {
        if inner.dead.load(Ordering::Acquire) {
            break;
        }
        let first = tokio::select! {
            b = rx.recv() => b,
            _ = inner.closed.notified() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        out.clear();
        while let Some(q) = next.take() {
            let b = q.batch;
            let load = q.load;
            spent.extend(q.bytes);
            let switch = b.db != db;
            {
                let mut st = inner.state.lock();
                if st.dead {
                    drop(st);
                    let _ = b.reply.send(Err(UpstreamError::Lost(inner.addr)));
                    break 'outer;
                }
                if switch {
                    st.owed.push_back(Owed {
                        count: 1,
                        reply: None,
                        held: None,
                        _load: None,
                    });
                }
                st.owed.push_back(Owed {
                    count: b.count,
                    reply: Some(b.reply),
                    held: b.held,
                    _load: Some(load),
                });
            }
            if switch {
                select.clear();
                encode(&mut select, &[b"SELECT", b.db.to_string().as_bytes()]);
                out.extend_from_slice(&select);
                db = b.db;
            }
            out.extend_from_slice(&b.bytes);
            if out.len() < WRITE_GATHER {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&out).await.is_err() {
            break;
        }
        spent.clear();
        if out.capacity() > 4 * WRITE_GATHER {
            // A large batch passed: do not keep its size.
            out = Vec::with_capacity(WRITE_GATHER);
        }
    }
    inner.kill();
    rx.close();
    while let Some(q) = rx.recv().await {
        let _ = q.batch.reply.send(Err(UpstreamError::Lost(inner.addr)));
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(inner: Arc<Inner>, mut rd: tokio::net::tcp::OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut sc = Scanner::default();
    // Replies found so far for the batch at the front.
    let mut got = 0u32;
    'read: loop {
        if inner.dead.load(Ordering::Acquire) {
            break;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = inner.closed.notified() => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let end = match sc.next(&buf) {
                Ok(Some(end)) => end,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(upstream = %inner.addr, "{e}");
                    break 'read;
                }
            };
            got += 1;
            let mut st = inner.state.lock();
            let Some(front) = st.owed.front() else {
                drop(st);
                tracing::warn!(upstream = %inner.addr, "reply nobody asked for");
                break 'read;
            };
            if got < front.count {
                continue;
            }
            let Some(done) = st.owed.pop_front() else {
                break 'read;
            };
            drop(st);
            got = 0;
            let replies = buf.split_to(end).freeze();
            sc.rebase(end);
            match done.reply {
                Some(tx) => {
                    if let Some(h) = &done.held {
                        h.add(replies.len());
                    }
                    if let Err(Ok(r)) = tx.send(Ok(replies)) {
                        // The client is gone: nobody will subtract.
                        if let Some(h) = &done.held {
                            h.sub(r.len());
                        }
                    }
                }
                None => {
                    if replies.first() == Some(&b'-') {
                        // What follows would run in the wrong database.
                        tracing::warn!(upstream = %inner.addr, reply = %String::from_utf8_lossy(&replies), "SELECT refused; closing the connection");
                        break 'read;
                    }
                }
            }
        }
    }
    metrics::gauge!("anykv_router_upstream_connections").decrement(1.0);
    inner.kill();
}
