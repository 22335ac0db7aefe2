//! The replica's side: `REPLICAOF host port` makes a tenant follow a
//! primary (a redis-server or another anykv) over Redis's protocol.
//!
//! The link task connects, authenticates with `masteruser`/`masterauth`,
//! says `REPLCONF listening-port` and `capa eof psync2`, and asks
//! `PSYNC <its replid> <its offset + 1>`: a primary that shares the history
//! continues from there (`+CONTINUE`, possibly with a new id, which becomes
//! `replid` while the old one is kept as `replid2`); otherwise it sends a
//! full sync, an RDB read with every key kept (even those whose TTL passed:
//! the primary's `DEL` follows) into a fresh keyspace that replaces the old
//! one at once, taking the primary's id and offset. Then the stream is
//! applied in the apply mode ([`super::apply`]), byte for byte, so this
//! tenant's offsets are its primary's. The replica acknowledges its offset
//! every second and when asked (`REPLCONF GETACK`). A dropped link is
//! retried every second; `REPLICAOF NO ONE` or another `REPLICAOF` ends it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::ClientStream;

use crate::shared::Shared;
use crate::tenant::Tenant;
use crate::util::mstime;

/// The state of a replica's link, as INFO and ROLE show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Not connected (yet, or after a failure).
    Connect,
    /// Handshake in progress.
    Connecting,
    /// Receiving the full-sync payload.
    Sync,
    /// Applying the stream.
    Connected,
}

impl LinkStatus {
    pub fn role_name(self) -> &'static str {
        match self {
            LinkStatus::Connect => "connect",
            LinkStatus::Connecting => "connecting",
            LinkStatus::Sync => "sync",
            LinkStatus::Connected => "connected",
        }
    }
}

/// What `REPLICAOF` (or the cluster's placement) set on a tenant.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// The primary is another node of the cluster: its store is dialled
    /// over the cluster's QUIC link at this address
    /// ([`crate::stream::LinkDialer`]), already logged in to the tenant, and
    /// `host`/`port` show that address.
    pub node: Option<std::net::SocketAddr>,
    /// Bumped by every REPLICAOF: a link task whose generation is no longer
    /// current stops.
    pub gen: u64,
    pub status: LinkStatus,
    /// Unix ms of the last bytes from the primary.
    pub last_io_ms: i64,
    /// A link task must be started (by [`kick`]).
    pub start: bool,
    /// Unix ms when the link, once up, went down (None: up, or never up
    /// since this REPLICAOF): `master_link_down_since_seconds`.
    pub down_since_ms: Option<i64>,
    /// A full sync's payload while it arrives: its size (-1 when the
    /// primary streams it to an EOF mark) and the bytes read so far.
    pub sync_bytes: (i64, u64),
}

/// Makes `t` a replica of `host:port` (or of the cluster node `node`):
/// client writes are refused from now on, and [`kick`] starts the link.
pub fn become_replica(
    t: &mut Tenant,
    host: String,
    port: u16,
    node: Option<std::net::SocketAddr>,
    now_ms: i64,
) {
    t.role = super::Role::Replica;
    t.taking_over = None;
    t.frozen_until_ms = 0;
    let gen = t.next_upstream();
    t.upstream = Some(Upstream {
        host,
        port,
        node,
        gen,
        status: LinkStatus::Connect,
        last_io_ms: now_ms,
        start: true,
        down_since_ms: None,
        sync_bytes: (-1, 0),
    });
}

/// Makes a replica `t` a primary (`REPLICAOF NO ONE`): it keeps its data
/// and continues the history under a new id, the old one valid for partial
/// resyncs as `replid2`.
pub fn become_primary(t: &mut Tenant) {
    if t.role != super::Role::Replica {
        return;
    }
    t.role = super::Role::Primary;
    t.taking_over = None;
    t.upstream = None;
    t.next_upstream();
    let off = t.log.offset();
    t.repl.shift(off);
    crate::persist::ids_changed(t);
}

/// Named the primary by a move of the primary, whose old primary stopped
/// writing at offset `at` (`TenantSpec::promote_at`): a copy that already
/// has the stream up to there takes over at once; one that does not stays
/// the old primary's replica, applying its stream (a newer epoch does not
/// fence that link off), with writes waiting, until it has it all
/// ([`take_over`]) or `wait_ms` passed. True: it took over now.
pub fn promote_at(t: &mut Tenant, at: u64, now_ms: i64, wait_ms: i64) -> bool {
    if t.role != super::Role::Replica {
        return false;
    }
    if t.log.offset() >= at {
        took_over(t, "no");
        return true;
    }
    if t.taking_over.map(|(a, _)| a) != Some(at) {
        tracing::warn!(
            tenant = t.id.0,
            at,
            have = t.log.offset(),
            "named the primary by a move: taking over once the old primary's stream is applied up to where it stopped; writes wait"
        );
        t.taking_over = Some((at, now_ms.saturating_add(wait_ms)));
    }
    false
}

/// A copy taking over from a moved primary ([`promote_at`]) becomes the
/// primary once it has applied the old primary's stream up to the handoff
/// offset, or, past its wait, with what it has: the old primary's last
/// writes are then lost (logged and counted here; the old primary counts
/// them too as it rejoins, `discard`). Called after every applied chunk
/// and by the cron.
pub fn take_over(t: &mut Tenant, now_ms: i64) {
    let Some((at, until)) = t.taking_over else {
        return;
    };
    let have = t.log.offset();
    if have >= at {
        tracing::warn!(
            tenant = t.id.0,
            at,
            "took over as the primary: the old primary's stream is applied up to where it stopped"
        );
    } else if now_ms >= until {
        tracing::error!(
            tenant = t.id.0,
            at,
            have,
            "took over as the primary without the old primary's last {} bytes of writes (its stream stopped coming); they are lost",
            at - have
        );
        metrics::counter!("anykv_handoff_bytes_lost_total", "tenant" => t.name.clone())
            .increment(at - have);
    } else {
        return;
    }
    took_over(t, "yes");
}

/// Becomes the primary at the end of a move, counted in
/// `anykv_handoff_takeovers_total{tenant,waited}` (whether it had to wait
/// for the old primary's last bytes).
fn took_over(t: &mut Tenant, waited: &'static str) {
    metrics::counter!("anykv_handoff_takeovers_total", "tenant" => t.name.clone(), "waited" => waited)
        .increment(1);
    become_primary(t);
}

/// Starts the link task REPLICAOF asked for (called by connections after
/// a batch, which hold the tenant's `Rc`).
pub fn kick(tenant: &Rc<RefCell<Tenant>>, shared: &Arc<Shared>) {
    let job = {
        let mut t = tenant.borrow_mut();
        match t.upstream.as_mut() {
            Some(u) if u.start => {
                u.start = false;
                Some((u.host.clone(), u.port, u.node, u.gen))
            }
            _ => None,
        }
    };
    if let Some((host, port, node, gen)) = job {
        let fut = run(tenant.clone(), shared.clone(), host, port, node, gen);
        tenant.borrow().spawn(fut);
    }
}

fn current(tenant: &Rc<RefCell<Tenant>>, gen: u64) -> bool {
    tenant
        .borrow()
        .upstream
        .as_ref()
        .is_some_and(|u| u.gen == gen)
}

/// The upstream of link task `gen`, while that task is still the current
/// one.
fn upstream_of(t: &mut Tenant, gen: u64) -> Option<&mut Upstream> {
    t.upstream.as_mut().filter(|u| u.gen == gen)
}

fn set_status(tenant: &Rc<RefCell<Tenant>>, gen: u64, s: LinkStatus) {
    if let Some(u) = upstream_of(&mut tenant.borrow_mut(), gen) {
        let now = mstime();
        if s == LinkStatus::Connected {
            u.down_since_ms = None;
        } else if u.status == LinkStatus::Connected {
            u.down_since_ms = Some(now);
        }
        if s == LinkStatus::Sync {
            u.sync_bytes = (-1, 0);
        }
        u.status = s;
        u.last_io_ms = now;
    }
}

/// Notes a full sync's progress: `read` bytes of `total` (-1: unknown).
fn sync_progress(tenant: &Rc<RefCell<Tenant>>, gen: u64, total: i64, read: usize) {
    if let Some(u) = upstream_of(&mut tenant.borrow_mut(), gen) {
        u.sync_bytes = (total, read as u64);
        u.last_io_ms = mstime();
    }
}

async fn run(
    tenant: Rc<RefCell<Tenant>>,
    shared: Arc<Shared>,
    host: String,
    port: u16,
    node: Option<std::net::SocketAddr>,
    gen: u64,
) {
    tracing::info!("Connecting to MASTER {host}:{port}");
    // Retries back off (1 s doubling to 5 s) while attempts fail in a
    // row, so a sync that cannot succeed (a payload this server cannot
    // load) does not make the primary build one every second. Between
    // cluster nodes the first retries come sooner (100 ms): right after a
    // failover the new primary may take its role a moment after its new
    // replicas learn of it, and a region database's writes wait for its
    // new standby.
    let first = if node.is_some() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let mut wait = first;
    let moved = tenant.borrow().upstream_moved.clone();
    loop {
        // Armed before the check: a generation that moves after it wakes
        // this (tokio's Notified counts from its creation).
        let gone = moved.notified();
        if !current(&tenant, gen) {
            return;
        }
        let started = std::time::Instant::now();
        // A new generation (another REPLICAOF, a promotion, the copy
        // dropped) ends this link at once, wherever it is: dropping it
        // closes the stream, so the primary stops counting this copy
        // within a round trip rather than at the next tick here.
        let r = tokio::select! {
            r = follow(&tenant, &shared, &host, port, node, gen) => r,
            _ = gone => {
                tenant.borrow_mut().master_lag_ms = None;
                return;
            }
        };
        // Whatever ended the link, its lag is no longer measured.
        tenant.borrow_mut().master_lag_ms = None;
        match r {
            Ok(()) => return,
            Err(e) => {
                // A failover's link to its target that cannot be made:
                // this server is the primary again.
                if super::failover::in_progress(&tenant.borrow()) {
                    super::failover::abort(
                        &mut tenant.borrow_mut(),
                        &format!("Failover target connection failed: {e}"),
                    );
                }
                if !current(&tenant, gen) {
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    wait = first;
                }
                tracing::warn!(
                    "MASTER {host}:{port}: {e}; retrying in {} ms",
                    wait.as_millis()
                );
                set_status(&tenant, gen, LinkStatus::Connect);
            }
        }
        let mut stop = shared.shutdown_rx();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// A connection to the primary with a read buffer.
struct Link {
    s: ClientStream,
    buf: BytesMut,
    /// The longest silence a read waits out (see [`follow`]).
    timeout: Duration,
}

impl Link {
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.s.write_all(&out).await.map_err(|e| e.to_string())
    }

    async fn fill(&mut self) -> Result<(), String> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(self.timeout, self.s.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err("connection closed by the primary".into()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "timeout ({} ms without data from the primary)",
                self.timeout.as_millis()
            )),
        }
    }

    /// One reply line (without CRLF); bare newlines (a primary's keepalive
    /// while it prepares a full sync) are skipped.
    async fn line(&mut self) -> Result<String, String> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l = String::from_utf8_lossy(&self.buf[..i])
                    .trim_end_matches('\r')
                    .to_string();
                self.buf.advance(i + 1);
                return Ok(l);
            }
            if self.buf.len() > 64 * 1024 {
                return Err("reply line too long".into());
            }
            self.fill().await?;
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<String, String> {
        self.send(args).await?;
        self.line().await
    }
}

async fn follow(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    host: &str,
    port: u16,
    node: Option<std::net::SocketAddr>,
    gen: u64,
) -> Result<(), String> {
    set_status(tenant, gen, LinkStatus::Connecting);
    let s = match node {
        Some(addr) => {
            let Some(dialer) = shared.link_dialer.get() else {
                return Err("this server has no cluster link to dial".into());
            };
            let id = tenant.borrow().id;
            let l = tokio::time::timeout(Duration::from_secs(10), dialer.dial(addr, id))
                .await
                .map_err(|_| "connect: timed out".to_string())?
                .map_err(|e| format!("connect: {e}"))?;
            ClientStream::Link(l)
        }
        None => {
            let s = TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            ClientStream::Tcp(s)
        }
    };
    s.set_nodelay();
    // The handshake, up to the PSYNC reply, waits out at most Redis's
    // `repl-timeout` of silence, or between anykv nodes
    // `repl-link-timeout-ms` (a primary waiting to start a full sync sends
    // a newline every second): a primary that takes the link and never
    // answers (a copy it is dropping, a stream lost on the way) costs a
    // retry seconds later, not a minute of a database without its standby.
    let (handshake, transfer) = {
        let c = shared.config.read();
        let transfer = Duration::from_secs(c.repl_timeout());
        let handshake = match node {
            Some(_) => Duration::from_millis(c.repl_link_timeout_ms()),
            None => transfer,
        };
        (handshake, transfer)
    };
    let mut l = Link {
        s,
        buf: BytesMut::with_capacity(64 * 1024),
        timeout: handshake,
    };
    // A cluster link arrives logged in to the tenant (mutual TLS proves the
    // node); a TCP primary may want masterauth.
    let (auth, user) = if node.is_some() {
        (None, None)
    } else {
        let c = shared.config.read();
        (c.masterauth(), c.masteruser())
    };
    if let Some(pw) = auth {
        let r = match &user {
            Some(u) => l.call(&[b"AUTH", u.as_bytes(), &pw]).await?,
            None => l.call(&[b"AUTH", &pw]).await?,
        };
        if r.starts_with('-') {
            return Err(format!("AUTH: {r}"));
        }
    }
    let pong = l.call(&[b"PING"]).await?;
    if pong.starts_with('-') && !pong.starts_with("-NOAUTH") {
        return Err(format!("PING: {pong}"));
    }
    if pong.starts_with("-NOAUTH") {
        return Err("the primary requires a password (set masterauth)".into());
    }
    let my_port = shared
        .tcp_port
        .load(std::sync::atomic::Ordering::Relaxed)
        .to_string();
    // Redis answers errors to options it does not know; neither is fatal.
    let _ = l
        .call(&[b"REPLCONF", b"listening-port", my_port.as_bytes()])
        .await?;
    let _ = l
        .call(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
        .await?;
    // Between cluster nodes the stream is fenced by the failover epoch:
    // both sides compare the highest epoch they have seen, and neither
    // takes a stream from an older one.
    let link_epoch = match node {
        Some(_) => Some(fence(tenant, &mut l).await?),
        None => None,
    };
    let (id, next, failing_over) = {
        let t = tenant.borrow();
        (
            psync_id(&t.repl, t.log.offset()).to_string(),
            (t.log.offset() + 1).to_string(),
            super::failover::in_progress(&t),
        )
    };
    // A FAILOVER hands over: the target promotes itself on this PSYNC.
    let reply = if failing_over {
        l.call(&[b"PSYNC", id.as_bytes(), next.as_bytes(), b"FAILOVER"])
            .await?
    } else {
        l.call(&[b"PSYNC", id.as_bytes(), next.as_bytes()]).await?
    };
    if failing_over {
        let accepted = reply.starts_with("+FULLRESYNC ") || reply.starts_with("+CONTINUE");
        super::failover::answered(&mut tenant.borrow_mut(), accepted);
        if !accepted {
            return Err(format!("the failover target refused: {reply}"));
        }
    }
    if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
        let mut parts = rest.split(' ');
        let (Some(new_id), Some(off)) = (
            parts.next(),
            parts.next().and_then(|o| o.parse::<u64>().ok()),
        ) else {
            return Err(format!("bad FULLRESYNC reply: {reply}"));
        };
        if let Some(at) = parts
            .next()
            .filter(|w| *w == "DIVERGED")
            .and(parts.next())
            .and_then(|o| o.parse::<u64>().ok())
        {
            discard(&mut tenant.borrow_mut(), at);
        }
        set_status(tenant, gen, LinkStatus::Sync);
        // The payload may pause while the primary's walk waits on a slow
        // writer: Redis's `repl-timeout` here, as its replicas.
        l.timeout = transfer;
        let rdb = read_payload(&mut l, |total, read| {
            sync_progress(tenant, gen, total, read)
        })
        .await?;
        if !current(tenant, gen) {
            return Ok(());
        }
        load_full_sync(tenant, shared, &rdb, new_id, off)?;
    } else if let Some(rest) = reply.strip_prefix("+CONTINUE") {
        let new_id = rest.trim();
        let mut t = tenant.borrow_mut();
        if !new_id.is_empty() && new_id != t.repl.replid {
            // The primary's history continues ours under a new id: keep
            // ours as the previous one (so our own replicas can continue).
            let off = t.log.offset();
            t.repl.replid2 = std::mem::replace(&mut t.repl.replid, new_id.to_string());
            t.repl.second_offset = off as i64 + 1;
            crate::persist::ids_changed(&mut t);
        }
        tracing::info!("MASTER <-> REPLICA sync: Master accepted a Partial Resynchronization.");
    } else {
        return Err(format!("PSYNC: {reply}"));
    }
    {
        let mut t = tenant.borrow_mut();
        t.synced_since_start = true;
        t.diverged = false;
    }
    set_status(tenant, gen, LinkStatus::Connected);
    stream(tenant, shared, l, gen, link_epoch).await
}

/// The history a replica at `offset` asks its primary to continue: its
/// own id, or, when nothing of its own follows the point where it took
/// that id (a restart after a crash, which starts a new id at the end of
/// the data it kept; a `REPLICAOF NO ONE` with no write since), the
/// previous one: its data is exactly that history up to `offset`. So an
/// old primary that crashed and comes back after a failover is known to
/// the new primary (whose previous id is the same): it resumes with a
/// partial resync when its data stops within what the new primary had,
/// and otherwise learns where the histories split and counts the writes
/// only it had (`DIVERGED`, [`discard`]) before the full sync replaces
/// them.
fn psync_id(ids: &super::ReplIds, offset: u64) -> &str {
    if ids.second_offset >= 1 && ids.second_offset == offset as i64 + 1 {
        &ids.replid2
    } else {
        &ids.replid
    }
}

/// This tenant's history went on past offset `at` where the primary's
/// took over (it was the primary before a failover, and wrote what the
/// group never had): the full sync about to replace its data discards
/// those writes. They are counted (`anykv_writes_discarded_total`, by
/// database) and logged, never merged. Writes are the commands of its log
/// after `at` other than SELECT, PING, MULTI and EXEC; when the backlog
/// no longer reaches back there, only the bytes are logged.
fn discard(t: &mut Tenant, at: u64) -> u64 {
    let mine = t.log.offset();
    // What a planned handoff already counted is not counted again; the
    // full sync that follows starts the count afresh.
    let at = at.max(std::mem::take(&mut t.discard_counted));
    if mine <= at {
        return 0;
    }
    let bytes = mine - at;
    match t.log.since(at) {
        Some(tail) => {
            let writes = count_writes(&tail);
            metrics::counter!("anykv_writes_discarded_total", "tenant" => t.name.clone())
                .increment(writes);
            tracing::warn!(
                tenant = t.id.0,
                writes,
                bytes,
                "this node wrote past the point where the new primary took over (offset {at}); the full sync discards those writes"
            );
            writes
        }
        None => {
            tracing::warn!(
            tenant = t.id.0,
            bytes,
            "this node wrote {bytes} bytes past the point where the new primary took over (offset {at}), beyond its backlog: the full sync discards them, uncounted"
            );
            0
        }
    }
}

/// A planned handoff of this tenant (this node its primary) went ahead
/// with the standby holding the log only up to `at` (durability `async`,
/// the handoff's deadline reached): the writes after it are acknowledged
/// ones the new primary never gets. Counted and logged as [`discard`]
/// does, since this node may stop before it rejoins and discards them.
pub(crate) fn abandon(t: &mut Tenant, at: u64) -> u64 {
    let n = discard(t, at);
    t.discard_counted = t.log.offset();
    n
}

/// The writes among the stream's commands in `tail` (see [`discard`]).
pub(crate) fn count_writes(tail: &[u8]) -> u64 {
    stream_writes(tail).0
}

/// The writes among the stream's commands in `tail` and the bytes they
/// take: every command but the stream's framing (`SELECT`, `PING`,
/// `MULTI`, `EXEC`), whole commands only.
pub(crate) fn stream_writes(tail: &[u8]) -> (u64, u64) {
    use crate::resp::parse::{ParseLimits, Request, RequestParser};
    let mut p = RequestParser::new();
    let lim = ParseLimits::default();
    let (mut n, mut bytes) = (0, 0);
    let mut start = 0;
    while let Ok(Some(req)) = p.next(tail, &lim) {
        let end = p.consumed();
        if let Request::Multibulk = req {
            let name = p.ranges().first().map(|r| &tail[r.clone()]);
            let framing = [&b"select"[..], b"ping", b"multi", b"exec"]
                .iter()
                .any(|c| name.is_some_and(|n| n.eq_ignore_ascii_case(c)));
            if !framing {
                n += 1;
                bytes += end.saturating_sub(start) as u64;
            }
        }
        start = end;
    }
    (n, bytes)
}

/// `REPLCONF EPOCH <seen>`: tells the primary the highest failover epoch
/// this replica has seen and learns the primary's. A primary whose role
/// record is older refuses (`-FENCED`: it is not the primary any more);
/// one that answers an older epoch is refused here. A newer one is now
/// seen by this replica too. The link's epoch is returned: once this
/// replica sees a newer one, the link ends ([`fenced`]).
async fn fence(tenant: &Rc<RefCell<Tenant>>, l: &mut Link) -> Result<u64, String> {
    let seen = tenant.borrow().epoch;
    let reply = l
        .call(&[b"REPLCONF", b"EPOCH", seen.to_string().as_bytes()])
        .await?;
    let Some(theirs) = reply.strip_prefix(':').and_then(|n| n.parse::<u64>().ok()) else {
        return Err(format!("REPLCONF EPOCH: {reply}"));
    };
    let mut t = tenant.borrow_mut();
    // Taking over from a moved primary: its stream up to where it stopped
    // is what this copy needs, at whatever epoch it is now.
    if t.taking_over.is_some() {
        return Ok(theirs);
    }
    if theirs < t.epoch {
        return Err(format!(
            "the primary is at epoch {theirs}, this replica has seen epoch {}: refused",
            t.epoch
        ));
    }
    t.epoch = theirs;
    Ok(theirs)
}

/// Whether a link of `link_epoch` must end: this replica has seen a newer
/// epoch since it was made (a new role record), so its primary may not be
/// the primary any more. Nothing more of its stream is applied and no
/// acknowledgement is sent to it; the link is made again, fenced anew.
fn fenced(tenant: &Rc<RefCell<Tenant>>, link_epoch: Option<u64>) -> Result<(), String> {
    let (seen, taking_over) = {
        let t = tenant.borrow();
        (t.epoch, t.taking_over.is_some())
    };
    match link_epoch {
        // Taking over from a moved primary: the newer epoch named this
        // copy the primary, and the old one's stream up to where it
        // stopped is exactly what it still needs.
        Some(_) if taking_over => Ok(()),
        Some(e) if e < seen => Err(format!(
            "this replica has seen epoch {seen}, newer than the link's {e}: dropping the link"
        )),
        _ => Ok(()),
    }
}

/// The full-sync payload: `$EOF:<mark>` ... `<mark>`, or `$<len>` bytes.
/// `progress(total, read)` after each read (`total` -1 with an EOF mark).
async fn read_payload(l: &mut Link, progress: impl Fn(i64, usize)) -> Result<Vec<u8>, String> {
    let head = l.line().await?;
    let Some(spec) = head.strip_prefix('$') else {
        return Err(format!("bad full-sync header: {head}"));
    };
    if let Some(mark) = spec.strip_prefix("EOF:") {
        let mark = mark.as_bytes().to_vec();
        if mark.len() != 40 {
            return Err("bad EOF mark".into());
        }
        // The mark ends the payload. A primary that streams right after it
        // (instead of waiting for our first ACK, as Redis 7 and anykv do)
        // puts stream bytes behind it in the same read: search for it
        // rather than only at the end; what follows it is the stream.
        let mut searched = 0usize;
        loop {
            let from = searched.saturating_sub(mark.len());
            if let Some(i) = l.buf[from..]
                .windows(mark.len())
                .position(|w| w == &mark[..])
            {
                let n = from + i;
                let rdb = l.buf[..n].to_vec();
                l.buf.advance(n + mark.len());
                return Ok(rdb);
            }
            searched = l.buf.len();
            l.fill().await?;
            progress(-1, l.buf.len());
        }
    }
    let len: usize = spec
        .parse()
        .map_err(|_| format!("bad full-sync length: {head}"))?;
    let total = i64::try_from(len).unwrap_or(i64::MAX);
    progress(total, l.buf.len().min(len));
    while l.buf.len() < len {
        l.fill().await?;
        progress(total, l.buf.len().min(len));
    }
    let rdb = l.buf[..len].to_vec();
    l.buf.advance(len);
    Ok(rdb)
}

/// Replaces the keyspace with the primary's snapshot and takes its history.
fn load_full_sync(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    rdb: &[u8],
    replid: &str,
    offset: u64,
) -> Result<(), String> {
    let set = shared.settings();
    let th = crate::persist::codec::Thresholds::from_settings(&set);
    let mut t = tenant.borrow_mut();
    let n = t.ks.dbs.len();
    let mut ks = crate::db::Keyspace::new(n);
    let (info, _) = crate::rdb::read_into(rdb, &th, &mut ks, None)
        .map_err(|e| format!("loading the primary's RDB: {e}"))?;
    let mem = crate::script::eval::memory_cap(&t);
    let functions = crate::script::function::Functions::from_codes(
        info.functions.iter().map(|c| c.as_slice()),
        mem,
    )
    .map_err(|e| format!("loading the primary's RDB: {e}"))?;
    // The database's users come with it (none: only its default user).
    let users_file = if t.is_customer() {
        let f = crate::acl::users_in_aux(&info.aux)
            .map_err(|e| format!("loading the primary's RDB: {e}"))?;
        shared
            .acl
            .install(t.id, f.as_deref(), "the primary's users")
            .map_err(|e| format!("loading the primary's RDB: {e}"))?;
        f
    } else {
        None
    };
    // This tenant's own replicas follow a history that ends here: drop
    // them (they reconnect and resync from the new one), as Redis's
    // disconnectSlaves() after a full sync.
    let subs: Vec<u64> = t.replicas.iter().map(|l| l.client_id).collect();
    for id in subs {
        if let Some(c) = t.clients.get(&id) {
            c.kill();
        }
    }
    t.replicas.clear();
    // Every WATCH fails and every cached copy is stale: the keyspace
    // changed under them (Redis flushes before loading).
    for cs in t.watched.values() {
        for c in cs {
            c.dirty_cas.set(true);
        }
    }
    crate::tracking::flushed(&mut t);
    // A save or rewrite walking the old tables would write half of each
    // history: stop it. The append-only log, which holds the old history,
    // is closed; cron reopens it with a rewrite whose base is the new
    // keyspace (as Redis restarts its AOF after a sync).
    crate::persist::abort_job(&mut t);
    if t.persist.aof.is_some() {
        let t = &mut *t;
        if let Err(e) = t.persist.write_log(&mut t.log, true) {
            tracing::error!("flushing the AOF before a full sync: {e}");
        }
        t.persist.aof = None;
        t.log.disable_sink();
    }
    t.ks = ks;
    t.functions = functions;
    t.users_file = users_file;
    t.repl = super::ReplIds {
        replid: replid.to_string(),
        replid2: super::NO_REPLID.to_string(),
        second_offset: -1,
    };
    t.log.set_offset(offset);
    // The data on disk is the old one until a snapshot or log base of
    // this one is written (the next job: any running one was aborted).
    t.persist.ids_behind = crate::persist::replids::Behind {
        snapshot: true,
        log: true,
    };
    crate::persist::ids_changed(&mut t);
    t.applied.notify_waiters();
    tracing::info!(
        "MASTER <-> REPLICA sync: Finished with success ({} keys, offset {offset})",
        info.keys
    );
    Ok(())
}

async fn stream(
    tenant: &Rc<RefCell<Tenant>>,
    shared: &Arc<Shared>,
    mut l: Link,
    gen: u64,
    link_epoch: Option<u64>,
) -> Result<(), String> {
    // The stream continues in the database it was in (Redis keeps it in
    // its cached primary client); after a full sync the primary's first
    // effect names its database.
    let db = tenant.borrow().log.stream_db().unwrap_or(0);
    let mut applier = super::apply::Applier::in_db(db);
    // A cluster primary stamps its clock into the link (not the stream).
    let cluster = l.s.is_link();
    applier.stamps = cluster;
    let mut lag = super::lag::LagClock::new();
    let mut set = shared.settings();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut stop = shared.shutdown_rx();
    loop {
        if !current(tenant, gen) {
            return Ok(());
        }
        if !l.buf.is_empty() {
            fenced(tenant, link_epoch)?;
            shared.refresh(&mut set);
            let data = std::mem::take(&mut l.buf);
            {
                let mut t = tenant.borrow_mut();
                let mut r = applier.feed(&mut t, shared, &set, &data, mstime());
                while let Err(e) = r {
                    if !matches!(e, super::apply::ApplyError::Failed { .. }) {
                        // A stream that does not parse: drop the link and
                        // resynchronise rather than guess.
                        return Err(format!("the primary's stream: {e}"));
                    }
                    // As Redis with a failing command from its primary: log
                    // it and go on with the rest of the stream.
                    tracing::warn!("applying the primary's stream: {e}");
                    r = applier.feed(&mut t, shared, &set, &[], mstime());
                }
                let now = mstime();
                if let Some(u) = t.upstream.as_mut() {
                    u.last_io_ms = now;
                }
                if let Some(stamp) = applier.last_stamp_ms.take() {
                    // Two machines' clocks, corrected with the link's
                    // round trip (see lag.rs).
                    t.master_lag_ms = Some(lag.sample(stamp, now, l.s.rtt()));
                }
                t.wake_replicas();
                // Reads waiting for their connection's write look again.
                t.applied.notify_waiters();
                take_over(&mut t, now);
            }
            l.buf = data;
            l.buf.clear();
            // Took over as the primary with that chunk: the link is done.
            if !current(tenant, gen) {
                return Ok(());
            }
            // Asked for (`REPLCONF GETACK`, however the reads split it), or,
            // on a cluster link, every applied chunk is acknowledged at once:
            // a primary with durability `region` holds its replies until its
            // standby has the writes (and lag_bytes stays exact).
            if std::mem::take(&mut applier.getack) || cluster {
                send_ack(tenant, &mut l, link_epoch).await?;
            }
            continue;
        }
        tokio::select! {
            r = l.fill() => r?,
            _ = tick.tick() => {
                // A primary that went silent (it PINGs every 10 s, a
                // cluster primary stamps every second) is gone: drop the
                // link and reconnect, as Redis's replicas after
                // `repl-timeout` (`repl-link-timeout-ms` between nodes).
                shared.refresh(&mut set);
                let limit_ms = if cluster {
                    set.repl_link_timeout_ms
                } else {
                    set.repl_timeout_s.saturating_mul(1000)
                };
                let silent = tenant
                    .borrow()
                    .upstream
                    .as_ref()
                    .map_or(0, |u| (mstime() - u.last_io_ms).max(0));
                if silent as u64 > limit_ms {
                    return Err(format!(
                        "MASTER timeout: no data nor PING received for {silent} ms"
                    ));
                }
                send_ack(tenant, &mut l, link_epoch).await?
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// `REPLCONF ACK <offset>`; on a cluster link followed by `LAG <ms>` (the
/// primary learns this replica's lag) and `EPOCH <e>` (the link's epoch:
/// an acknowledgement counts only for a primary of that epoch). Never
/// sent on a link this replica has fenced off.
async fn send_ack(
    tenant: &Rc<RefCell<Tenant>>,
    l: &mut Link,
    link_epoch: Option<u64>,
) -> Result<(), String> {
    fenced(tenant, link_epoch)?;
    let (off, lag, leaving) = {
        let t = tenant.borrow();
        (t.log.offset().to_string(), t.master_lag_ms, t.leaving)
    };
    let mut args: Vec<Vec<u8>> = vec![b"REPLCONF".to_vec(), b"ACK".to_vec(), off.into_bytes()];
    if let Some(ms) = lag.filter(|_| l.s.is_link()) {
        args.extend([b"LAG".to_vec(), ms.to_string().into_bytes()]);
    }
    if let Some(e) = link_epoch {
        args.extend([b"EPOCH".to_vec(), e.to_string().into_bytes()]);
        // Whether this copy stays (see `TenantSpec::leaving`).
        let keep: &[u8] = if leaving { b"0" } else { b"1" };
        args.extend([b"KEEP".to_vec(), keep.to_vec()]);
    }
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    l.send(&refs).await
}

/// `INFO replication`'s replica fields.
pub fn info_lines(t: &Tenant, out: &mut String) {
    use std::fmt::Write;
    let Some(u) = &t.upstream else {
        return;
    };
    let up = u.status == LinkStatus::Connected;
    let off = t.log.offset();
    let now = mstime();
    let _ = write!(
        out,
        "master_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{off}\r\nslave_repl_offset:{off}\r\n",
        u.host,
        u.port,
        if up { "up" } else { "down" },
        if up { (now - u.last_io_ms).max(0) / 1000 } else { -1 },
        (u.status == LinkStatus::Sync) as u8,
    );
    // While the payload arrives, as Redis 7.0 shows it: with an EOF mark
    // the size is -1, and so the "percentage" is read / -1 (Redis's own
    // arithmetic, kept so tools reading both see the same).
    if u.status == LinkStatus::Sync {
        let (total, read) = u.sync_bytes;
        let read = i64::try_from(read).unwrap_or(i64::MAX);
        let perc = if total != 0 {
            read as f64 / total as f64 * 100.0
        } else {
            0.0
        };
        let _ = write!(
            out,
            "master_sync_total_bytes:{total}\r\nmaster_sync_read_bytes:{read}\r\nmaster_sync_left_bytes:{}\r\nmaster_sync_perc:{perc:.2}\r\nmaster_sync_last_io_seconds_ago:{}\r\n",
            total - read,
            (now - u.last_io_ms).max(0) / 1000,
        );
    }
    if !up {
        let since = u.down_since_ms.map_or(-1, |t| (now - t).max(0) / 1000);
        let _ = write!(out, "master_link_down_since_seconds:{since}\r\n");
    }
    out.push_str("slave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n");
    if let Some(ms) = t.master_lag_ms.filter(|_| u.node.is_some()) {
        let _ = write!(out, "master_lag_ms:{ms}\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;

    /// A primary that answers one `REPLCONF EPOCH` with `reply`, over a
    /// real TCP connection; `fence`'s verdict and the epoch it leaves.
    fn fence_against(seen: u64, reply: &'static str) -> (Result<u64, String>, u64) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let lis = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = lis.local_addr().expect("addr");
            let primary = async move {
                let (mut s, _) = lis.accept().await.expect("accept");
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                // `*3 $8 REPLCONF $5 EPOCH $n <seen>`: seven CRLF lines.
                while got.windows(2).filter(|w| w == b"\r\n").count() < 7 {
                    let n = s.read(&mut buf).await.expect("read");
                    assert!(n > 0, "the replica closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply.as_bytes()).await.expect("write");
                String::from_utf8(got).expect("utf-8")
            };
            let tenant = Rc::new(RefCell::new(Tenant::new(TenantId::DEFAULT, "r", 16)));
            tenant.borrow_mut().epoch = seen;
            let replica = async {
                let s = TcpStream::connect(addr).await.expect("connect");
                let mut l = Link {
                    s: ClientStream::Tcp(s),
                    buf: BytesMut::new(),
                    timeout: Duration::from_secs(60),
                };
                fence(&tenant, &mut l).await
            };
            let (asked, r) = tokio::join!(primary, replica);
            assert!(
                asked.contains(&format!(
                    "EPOCH\r\n${}\r\n{seen}\r\n",
                    seen.to_string().len()
                )),
                "{asked:?}"
            );
            let now = tenant.borrow().epoch;
            (r, now)
        })
    }

    #[test]
    fn a_stream_from_an_older_epoch_is_refused() {
        let (r, seen) = fence_against(5, ":4\r\n");
        assert!(r.is_err_and(|e| e.contains("epoch 4")));
        assert_eq!(seen, 5);
        // The primary's own refusal ends the link too.
        let (r, _) = fence_against(5, "-FENCED this node's role record ...\r\n");
        assert!(r.is_err_and(|e| e.contains("FENCED")));
    }

    #[test]
    fn a_newer_epoch_is_seen_from_then_on() {
        assert_eq!(fence_against(5, ":5\r\n"), (Ok(5), 5));
        assert_eq!(fence_against(5, ":9\r\n"), (Ok(9), 9));
    }

    #[test]
    fn discarded_writes_are_the_streams_commands_but_framing() {
        let tail = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n*1\r\n$4\r\nEXEC\r\n";
        assert_eq!(count_writes(tail), 3);
        // SET k v (27 bytes), INCR c (21), DEL k (20).
        assert_eq!(stream_writes(tail), (3, 27 + 21 + 20));
        assert_eq!(count_writes(b""), 0);
        // A piece cut inside a command counts what is whole.
        assert_eq!(count_writes(&tail[..60]), 1);
    }

    #[test]
    fn writes_a_handoff_abandoned_are_not_counted_again_at_the_rejoin() {
        let mut t = Tenant::new(TenantId::DEFAULT, "r", 16);
        t.log.retain_for_replicas(Some(0), 1 << 20);
        t.log.append(0, &[b"SET", b"a", b"1"]);
        let at = t.log.offset();
        t.log.append(0, &[b"SET", b"b", b"2"]);
        t.log.append(0, &[b"INCR", b"c"]);
        assert_eq!(abandon(&mut t, at), 2);
        // The rejoin's full sync diverges at the same point: nothing new.
        assert_eq!(discard(&mut t, at), 0);
        // A later divergence counts afresh.
        t.log.append(0, &[b"DEL", b"a"]);
        assert_eq!(discard(&mut t, at), 3);
    }

    #[test]
    fn a_link_ends_once_a_newer_epoch_is_seen() {
        let t = Rc::new(RefCell::new(Tenant::new(TenantId::DEFAULT, "r", 16)));
        t.borrow_mut().epoch = 3;
        assert!(fenced(&t, Some(3)).is_ok());
        assert!(
            fenced(&t, None).is_ok(),
            "links to a redis-server are not fenced"
        );
        t.borrow_mut().epoch = 4;
        assert!(fenced(&t, Some(3)).is_err());
    }

    /// INFO's replica lines in each state of the link, as Redis 7.0 writes
    /// them: the payload's progress while it arrives (size -1 with an EOF
    /// mark, and Redis's percentage of that), and how long the link has
    /// been down once it was up (-1 before it ever was).
    #[test]
    fn info_shows_the_syncs_progress_and_how_long_the_link_is_down() {
        let t = Rc::new(RefCell::new(Tenant::new(TenantId::DEFAULT, "r", 16)));
        become_replica(&mut t.borrow_mut(), "h".into(), 1, None, 0);
        let gen = t.borrow().upstream.as_ref().map(|u| u.gen).unwrap_or(0);
        let lines = |t: &Rc<RefCell<Tenant>>| {
            let mut out = String::new();
            info_lines(&t.borrow(), &mut out);
            out
        };
        let l = lines(&t);
        assert!(l.contains("master_link_down_since_seconds:-1\r\n"), "{l}");
        assert!(!l.contains("master_sync_total"), "{l}");

        set_status(&t, gen, LinkStatus::Sync);
        let l = lines(&t);
        assert!(l.contains("master_sync_in_progress:1\r\n"), "{l}");
        assert!(
            l.contains("master_sync_total_bytes:-1\r\nmaster_sync_read_bytes:0\r\nmaster_sync_left_bytes:-1\r\nmaster_sync_perc:-0.00\r\nmaster_sync_last_io_seconds_ago:0\r\nmaster_link_down_since_seconds:-1\r\nslave_priority:100\r\n"),
            "{l}"
        );
        sync_progress(&t, gen, 1000, 250);
        let l = lines(&t);
        assert!(
            l.contains("master_sync_total_bytes:1000\r\nmaster_sync_read_bytes:250\r\nmaster_sync_left_bytes:750\r\nmaster_sync_perc:25.00\r\n"),
            "{l}"
        );

        set_status(&t, gen, LinkStatus::Connected);
        let l = lines(&t);
        assert!(
            !l.contains("master_sync_total") && !l.contains("down_since"),
            "{l}"
        );
        // Down after being up: the seconds since (a link that went down
        // 3 s ago).
        set_status(&t, gen, LinkStatus::Connect);
        if let Some(u) = t.borrow_mut().upstream.as_mut() {
            u.down_since_ms = u.down_since_ms.map(|d| d - 3_000);
        }
        let l = lines(&t);
        assert!(l.contains("master_link_down_since_seconds:3\r\n"), "{l}");
    }

    #[test]
    fn a_replica_with_nothing_of_its_own_since_its_new_id_asks_for_the_old_history() {
        let mut ids = crate::repl::ReplIds::random();
        let first = ids.replid.clone();
        assert_eq!(psync_id(&ids, 100), first);
        // A crash at offset 300: a new id from there, nothing since.
        ids.shift(300);
        assert_eq!(psync_id(&ids, 300), first);
        // Its own history went on under the new id: that one.
        assert_eq!(psync_id(&ids, 301), ids.replid);
    }

    /// A replica of a cluster node, with `n` writes of its stream applied.
    fn replica_with(n: usize) -> Tenant {
        let mut t = Tenant::new(TenantId::DEFAULT, "r", 16);
        let node = "127.0.0.1:7000".parse().ok();
        become_replica(&mut t, "127.0.0.1".into(), 7000, node, 0);
        for i in 0..n {
            t.log.append(0, &[b"SET", b"k", i.to_string().as_bytes()]);
        }
        t
    }

    #[test]
    fn a_copy_named_by_a_move_takes_over_once_it_has_the_old_primarys_stream() {
        let mut t = replica_with(2);
        let replid = t.repl.replid.clone();
        let mut ahead = replica_with(3);
        let at = ahead.log.offset();
        assert!(at > t.log.offset());
        // Behind where the old primary stopped: it stays a replica, its
        // link to the old primary survives the newer epoch, writes wait.
        assert!(!promote_at(&mut t, at, 1_000, 5_000));
        assert_eq!(t.role, crate::repl::Role::Replica);
        assert_eq!(t.taking_over, Some((at, 6_000)));
        t.epoch = 9;
        let link = Rc::new(RefCell::new(std::mem::replace(
            &mut t,
            Tenant::new(TenantId::DEFAULT, "x", 16),
        )));
        assert!(
            fenced(&link, Some(8)).is_ok(),
            "the old primary's link is kept"
        );
        let mut t = Rc::try_unwrap(link).ok().expect("one owner").into_inner();
        // Named again: the deadline does not move.
        assert!(!promote_at(&mut t, at, 2_000, 5_000));
        assert_eq!(t.taking_over, Some((at, 6_000)));
        // Not there yet: nothing happens before the deadline.
        take_over(&mut t, 5_999);
        assert_eq!(t.role, crate::repl::Role::Replica);
        // The last write arrives: it takes over, under a new history id
        // that continues the old one (its replicas resync partially).
        t.log.append(0, &[b"SET", b"k", b"2"]);
        assert_eq!(t.log.offset(), at);
        take_over(&mut t, 3_000);
        assert_eq!(t.role, crate::repl::Role::Primary);
        assert_eq!(t.taking_over, None);
        assert!(t.upstream.is_none());
        assert_ne!(t.repl.replid, replid);
        assert_eq!(t.repl.replid2, replid);
        // A copy that already has it all takes over at once.
        assert!(promote_at(&mut ahead, at, 1_000, 5_000));
        assert_eq!(ahead.role, crate::repl::Role::Primary);
        // A primary is not named again.
        assert!(!promote_at(&mut ahead, at + 10, 1_000, 5_000));
        assert_eq!(ahead.taking_over, None);
    }

    #[test]
    fn a_copy_whose_old_primary_went_silent_takes_over_at_its_deadline() {
        let mut t = replica_with(1);
        let at = t.log.offset() + 100;
        assert!(!promote_at(&mut t, at, 1_000, 5_000));
        take_over(&mut t, 5_999);
        assert_eq!(t.role, crate::repl::Role::Replica);
        take_over(&mut t, 6_000);
        assert_eq!(t.role, crate::repl::Role::Primary);
        assert_eq!(t.taking_over, None);
        // Following someone again ends a take-over that was pending.
        let mut u = replica_with(1);
        assert!(!promote_at(&mut u, at, 1_000, 5_000));
        become_replica(&mut u, "127.0.0.1".into(), 7001, None, 2_000);
        assert_eq!(u.taking_over, None);
        take_over(&mut u, 10_000);
        assert_eq!(u.role, crate::repl::Role::Replica);
    }

    /// A primary that takes connections and never answers: each accepted
    /// connection is passed on, still open, to the test.
    async fn silent_primary() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<TcpStream>) {
        let lis = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = lis.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((s, _)) = lis.accept().await {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        });
        (addr, rx)
    }

    /// Reads what the replica sends until it closes the connection.
    async fn until_closed(s: &mut TcpStream) {
        let mut buf = [0u8; 512];
        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    }

    fn local(f: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    /// A replica of the primary at `addr` (a cluster node's when `node`),
    /// its link task running.
    fn replicate_from(
        shared: Arc<Shared>,
        addr: std::net::SocketAddr,
        node: Option<std::net::SocketAddr>,
    ) -> (Rc<RefCell<Tenant>>, tokio::task::JoinHandle<()>) {
        let tenant = Rc::new(RefCell::new(Tenant::new(TenantId::DEFAULT, "r", 16)));
        let host = addr.ip().to_string();
        become_replica(
            &mut tenant.borrow_mut(),
            host.clone(),
            addr.port(),
            node,
            mstime(),
        );
        let gen = tenant.borrow().upstream_gen;
        let task =
            tokio::task::spawn_local(run(tenant.clone(), shared, host, addr.port(), node, gen));
        (tenant, task)
    }

    /// `REPLICAOF NO ONE` (any new generation: a promotion, the copy
    /// dropped) ends the link at once, even mid-handshake: the primary
    /// sees the connection closed, and stops counting this copy. Before,
    /// the link waited for its read (here up to `repl-timeout`, 60 s).
    #[test]
    fn a_new_generation_closes_the_old_link_at_once() {
        local(async {
            let (addr, mut conns) = silent_primary().await;
            let shared = Arc::new(Shared::new(crate::config::Config::default(), 1));
            let (tenant, task) = replicate_from(shared, addr, None);
            let mut s = conns.recv().await.expect("the replica connects");
            // The handshake is under way (its PING waits for an answer).
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.expect("read");
            assert!(buf[..n].starts_with(b"*1\r\n$4\r\nPING"), "{:?}", &buf[..n]);
            become_primary(&mut tenant.borrow_mut());
            tokio::time::timeout(Duration::from_secs(10), until_closed(&mut s))
                .await
                .expect("the old link closed within 10 s");
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .expect("the link task ended")
                .expect("no panic");
        });
    }

    /// Dials "cluster links" as plain TCP, so a test can play the primary.
    struct TcpDialer;

    impl crate::stream::LinkDialer for TcpDialer {
        fn dial(
            &self,
            node: std::net::SocketAddr,
            _tenant: TenantId,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::io::Result<crate::stream::LinkStream>> + Send,
            >,
        > {
            Box::pin(async move {
                let s = TcpStream::connect(node).await?;
                let local = s.local_addr()?;
                Ok(crate::stream::LinkStream {
                    io: Box::new(s),
                    peer: node,
                    local,
                    rtt: None,
                })
            })
        }
    }

    /// Between nodes, a handshake reply that does not come within
    /// `repl-link-timeout-ms` drops the link and dials again, rather than
    /// wait a minute (Redis's `repl-timeout`) with the database short of
    /// its standby.
    #[test]
    fn a_cluster_handshake_without_an_answer_is_retried_within_the_link_timeout() {
        local(async {
            let (addr, mut conns) = silent_primary().await;
            let mut c = crate::config::Config::default();
            c.set(&[(b"repl-link-timeout-ms", b"300")]).expect("config");
            let shared = Arc::new(Shared::new(c, 1));
            let _ = shared.link_dialer.set(Arc::new(TcpDialer));
            let (tenant, task) = replicate_from(shared, addr, Some(addr));
            let t0 = std::time::Instant::now();
            let mut first = conns.recv().await.expect("the replica connects");
            let again = tokio::time::timeout(Duration::from_secs(10), conns.recv())
                .await
                .expect("dialled again within 10 s")
                .expect("a second connection");
            let took = t0.elapsed();
            // The first was dropped, not left open beside the second.
            tokio::time::timeout(Duration::from_secs(1), until_closed(&mut first))
                .await
                .expect("the first link closed");
            assert!(took >= Duration::from_millis(300), "retried after {took:?}");
            drop(again);
            become_primary(&mut tenant.borrow_mut());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        });
    }

    /// A copy its node keeps only a while says so in every cluster
    /// acknowledgement (`KEEP 0`): its primary then counts it as no
    /// standby. A copy that stays says `KEEP 1`.
    #[test]
    fn a_leaving_copy_says_so_in_its_acknowledgements() {
        local(async {
            let lis = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = lis.local_addr().expect("addr");
            let tenant = Rc::new(RefCell::new(Tenant::new(TenantId::DEFAULT, "r", 16)));
            let mut l = Link {
                s: ClientStream::Tcp(TcpStream::connect(addr).await.expect("connect")),
                buf: BytesMut::new(),
                timeout: Duration::from_secs(5),
            };
            let (mut p, _) = lis.accept().await.expect("accept");
            async fn read(p: &mut TcpStream) -> String {
                let mut buf = vec![0u8; 256];
                let n = p.read(&mut buf).await.expect("read");
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }
            send_ack(&tenant, &mut l, Some(3)).await.expect("ack");
            let kept = read(&mut p).await;
            assert!(
                kept.ends_with("$5\r\nEPOCH\r\n$1\r\n3\r\n$4\r\nKEEP\r\n$1\r\n1\r\n"),
                "{kept:?}"
            );
            tenant.borrow_mut().leaving = true;
            send_ack(&tenant, &mut l, Some(3)).await.expect("ack");
            let leaving = read(&mut p).await;
            assert!(
                leaving.ends_with("$4\r\nKEEP\r\n$1\r\n0\r\n"),
                "{leaving:?}"
            );
        });
    }
}
