//! The primary side of Redis's replication protocol, per tenant: full and
//! partial resynchronisation, then the effects stream, to a real
//! redis-server replica, `redis-cli --rdb` / `--replica`, or (later) an
//! anykv replica.
//!
//! - `PSYNC <replid> <offset>`: when `<replid>` is this tenant's history
//!   ([`super::ReplIds::knows`]) and the backlog still holds `<offset>`,
//!   `+CONTINUE <replid>` and the bytes from there; else `+FULLRESYNC
//!   <replid> <offset>`, an RDB of the keyspace at exactly that offset
//!   (`$EOF:<mark>` framing when the replica said `capa eof`, `$<len>`
//!   otherwise), then the stream from that offset.
//! - The stream is the propagation log's own bytes: a replica link keeps
//!   only the offset it has sent and reads new bytes from the backlog
//!   ([`crate::proplog::PropLog::since`]) when woken, so the backlog is the
//!   one buffer every replica shares (as Redis 7's shared replication
//!   buffer), bounded by `repl-backlog-size`; a replica that falls further
//!   behind is dropped and reconnects with PSYNC.
//! - `REPLCONF ACK <offset>` from the replica records how far it has
//!   applied (`WAIT`, `INFO replication`'s `offset=` and `lag=`).
//! - A replica's output buffer is the part of the log it has not been sent
//!   yet. The log keeps that part for the slowest replica even past
//!   `repl-backlog-size`, up to `client-output-buffer-limit replica`'s hard
//!   limit; a replica further behind than the hard limit, or past the soft
//!   limit for longer than its seconds, is dropped (and resyncs), as Redis
//!   7 does with its shared replication buffer.
//!
//! - The full sync's RDB is built in the background when the replica
//!   takes `$EOF:` framing ([`super::fullsync`]: a background snapshot of
//!   the keyspace at the PSYNC's offset, transcoded on a helper thread),
//!   so writes continue during a large sync. A replica without `capa eof`
//!   (the length goes first) or `redis-cli --rdb` gets it built at once on
//!   the executor; a PSYNC while another background save runs waits for it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::ClientInfo;
use crate::resp::{ParseLimits, Request, RequestParser};
use crate::tenant::Tenant;
use crate::util::mstime;

/// A replica attached to this tenant.
#[derive(Debug)]
pub struct ReplicaLink {
    pub client_id: u64,
    pub addr: SocketAddr,
    /// The address INFO and ROLE show: its `REPLCONF ip-address`, else the
    /// connection's peer address.
    pub shown_ip: std::net::IpAddr,
    /// `REPLCONF listening-port` (0 when not given).
    pub listening_port: u16,
    /// Offset the replica says it has applied (`REPLCONF ACK`).
    pub ack_offset: Cell<u64>,
    /// When it last said so (Unix ms).
    pub ack_ms: Cell<i64>,
    /// Offset sent to it so far.
    pub sent: Cell<u64>,
    /// How far behind it is in ms, as it measured against this primary's
    /// time stamps (cluster links only; `REPLCONF ACK <offset> LAG <ms>`).
    pub lag_ms: Cell<Option<i64>>,
    /// It is another node of the cluster (stamps go to it).
    pub cluster: bool,
    /// Its stream is flowing (false while its full sync is sent and
    /// loaded: INFO shows `send_bulk`, and it is not yet a good replica).
    pub streaming: Cell<bool>,
    /// Its last acknowledgement did not say `KEEP 0` (its node keeps the
    /// copy; see `TenantSpec::leaving`).
    pub kept: Cell<bool>,
}

/// The bytes the log keeps for replicas past the backlog: the replica
/// class's hard output-buffer limit (0: no limit).
pub fn replica_keep(set: &crate::shared::Settings) -> usize {
    usize::try_from(set.replica_limit.hard)
        .ok()
        .filter(|&h| h > 0)
        .unwrap_or(usize::MAX)
}

/// Attaches a replica at PSYNC/SYNC time, before its full-sync payload or
/// `+CONTINUE` is written: from then on the log keeps its bytes from
/// `from` (within its output-buffer limit), so a payload written while
/// writes go on cannot outlast the backlog and send it into a resync loop.
pub fn attach(
    t: &mut Tenant,
    info: &ClientInfo,
    listening_port: u16,
    announced_ip: Option<std::net::IpAddr>,
    from: u64,
    cluster: bool,
    keep: usize,
) {
    t.replicas.push(Rc::new(ReplicaLink {
        client_id: info.id,
        addr: info.addr,
        shown_ip: announced_ip.unwrap_or(info.addr.ip()),
        listening_port,
        ack_offset: Cell::new(0),
        ack_ms: Cell::new(mstime()),
        sent: Cell::new(from),
        lag_ms: Cell::new(None),
        cluster,
        streaming: Cell::new(false),
        // A cluster replica says with its first acknowledgement (at once
        // once it streams); until then it counts as no standby.
        kept: Cell::new(!cluster),
    }));
    retain_for_replicas(t, keep);
}

/// Detaches client `id`'s replica link, if it has one (its connection
/// ended, perhaps before its payload was written).
pub fn detach(t: &mut Tenant, id: u64, keep: usize) {
    let before = t.replicas.len();
    t.replicas.retain(|l| l.client_id != id);
    if t.replicas.len() != before {
        retain_for_replicas(t, keep);
    }
}

/// The full-sync payload: an RDB of the tenant's keyspace at its current
/// offset, with the ids a replica continues from.
pub fn rdb_payload(t: &Tenant) -> std::io::Result<Vec<u8>> {
    let aux = rdb_aux(t);
    let aux: Vec<(&str, &str)> = aux.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut w = crate::rdb::RdbWriter::new(Vec::new(), &aux)?;
    for code in t.functions.codes() {
        w.function(&code)?;
    }
    w.keyspace(&t.ks)?;
    w.finish()
}

/// Starts building the full-sync payload in the background (see
/// `super::fullsync`): the keyspace as of now, at the log's offset.
/// Fails when another background snapshot runs.
pub fn start_payload(t: &mut Tenant) -> std::io::Result<super::fullsync::Payload> {
    let aux = rdb_aux(t)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let sizes =
        t.ks.dbs
            .iter()
            .map(|d| (d.len() as u64, d.volatile_len() as u64))
            .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(super::fullsync::CHUNKS_QUEUED);
    crate::persist::start_sync_job(
        t,
        super::fullsync::RdbStream {
            aux,
            sizes,
            functions: t.functions.codes(),
            tx,
        },
    )?;
    Ok(super::fullsync::Payload {
        rx,
        mark: super::random_replid(),
    })
}

/// A full-sync RDB's AUX fields: Redis's, with the ids a replica continues
/// from (the offset is the log's now).
pub(crate) fn rdb_aux(t: &Tenant) -> Vec<(&'static str, String)> {
    let now = mstime();
    let offset = t.log.offset().to_string();
    let ctime = (now / 1000).to_string();
    // The tenant's own memory (the whole process for the default tenant).
    let used = if t.is_customer() {
        t.mem.used()
    } else {
        crate::alloc::allocated() as u64
    }
    .to_string();
    let mut aux = vec![
        ("redis-ver", crate::shared::REDIS_VERSION.to_string()),
        ("redis-bits", "64".to_string()),
        ("ctime", ctime),
        ("used-mem", used),
        ("repl-stream-db", "0".to_string()),
        ("repl-id", t.repl.replid.clone()),
        ("repl-offset", offset),
        ("aof-base", "0".to_string()),
    ];
    // A customer database's users travel with its keys (a redis-server
    // replica ignores the field).
    if let Some(f) = &t.users_file {
        aux.push((crate::acl::AUX_KEY, crate::util::hex(f)));
    }
    aux
}

/// Frames an RDB for the wire: `$EOF:<40 random chars>` ... mark (diskless,
/// when the replica can take it) or `$<len>`.
pub fn frame_payload(out: &mut BytesMut, rdb: &[u8], eof_capable: bool) {
    if eof_capable {
        let mark = super::random_replid();
        out.extend_from_slice(b"$EOF:");
        out.extend_from_slice(mark.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(rdb);
        out.extend_from_slice(mark.as_bytes());
    } else {
        out.extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
        out.extend_from_slice(rdb);
    }
}

/// Sends a payload built in the background as its chunks arrive, then its
/// mark; false when the replica, the writer or the server went away, or
/// the replica took nothing for `stall` (the replica resyncs). A replica
/// that died mid-payload must not hold the background job (and so every
/// other replica's full sync, which waits for it) until the transport
/// notices: between nodes QUIC's idle timeout is 30 s.
async fn send_payload(
    stream: &mut crate::stream::ClientStream,
    mut p: super::fullsync::Payload,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    stall: std::time::Duration,
) -> bool {
    loop {
        let chunk = tokio::select! {
            c = p.rx.recv() => c,
            _ = shutdown.changed() => return false,
        };
        match chunk {
            Some(c) if c.is_empty() => {
                return write_progressing(stream, p.mark.as_bytes(), stall).await;
            }
            Some(c) => {
                let sent = write_progressing(stream, &c, stall).await;
                // Made outside any account by the writer thread.
                crate::alloc::unscoped(|| drop(c));
                if !sent {
                    tracing::warn!(
                        "Disconnecting timedout replica (its full sync took nothing for {} ms, or the link failed)",
                        stall.as_millis()
                    );
                    return false;
                }
            }
            None => {
                tracing::warn!("the full sync's payload ended early; the replica will resync");
                return false;
            }
        }
    }
}

/// Writes all of `b`, each write making progress within `stall`.
async fn write_progressing(
    stream: &mut crate::stream::ClientStream,
    mut b: &[u8],
    stall: std::time::Duration,
) -> bool {
    while !b.is_empty() {
        match tokio::time::timeout(stall, stream.write(b)).await {
            Ok(Ok(n)) if n > 0 => b = &b[n..],
            _ => return false,
        }
    }
    true
}

/// Removes the link from its tenant when the feeding loop ends.
struct Attached<'a> {
    tenant: &'a Rc<RefCell<Tenant>>,
    link: Rc<ReplicaLink>,
    /// The replica output-buffer hard limit (bytes the log keeps for it).
    keep: usize,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tenant.try_borrow_mut() {
            t.replicas.retain(|l| !Rc::ptr_eq(l, &self.link));
            retain_for_replicas(&mut t, self.keep);
        }
    }
}

/// Tells the log where the slowest replica is, so it keeps those bytes.
fn retain_for_replicas(t: &mut Tenant, keep: usize) {
    let slowest = t.replicas.iter().map(|l| l.sent.get()).min();
    t.log.retain_for_replicas(slowest, keep);
}

/// Whether `link` is past its output-buffer limit (then logged and
/// counted: the caller drops it).
fn dropped_for_limit(
    t: &Tenant,
    link: &ReplicaLink,
    set: &crate::shared::Settings,
    over_since: &Cell<Option<i64>>,
    info: &ClientInfo,
    shared: &crate::shared::Shared,
) -> bool {
    let behind = t.log.offset().saturating_sub(link.sent.get());
    if !over_limit(&set.replica_limit, behind, over_since, mstime()) {
        return false;
    }
    tracing::warn!(
        id = info.id,
        addr = %info.addr,
        behind,
        "Client scheduled to be closed ASAP for overcoming of output buffer limits (client-output-buffer-limit replica); it will resync"
    );
    crate::shared::GlobalStats::add(&shared.stats.client_output_limit_disconnections, 1);
    true
}

/// Why a replica is dropped for its output buffer, if it is: `behind`
/// bytes not yet sent, over the soft limit since `over_since` (Unix ms).
fn over_limit(
    lim: &crate::pubsub::PushLimit,
    behind: u64,
    over_since: &Cell<Option<i64>>,
    now: i64,
) -> bool {
    if lim.hard > 0 && behind > lim.hard {
        return true;
    }
    if lim.soft > 0 && behind > lim.soft {
        let since = over_since.get().unwrap_or(now);
        over_since.set(Some(since));
        return now - since >= (lim.soft_secs as i64) * 1000;
    }
    over_since.set(None);
    false
}

/// Where a replica's stream starts (from its PSYNC/SYNC).
#[derive(Debug)]
pub struct StreamStart {
    /// Offset of the last byte the replica has.
    pub from: u64,
    /// Send nothing until its first ACK (after a `$EOF:` payload).
    pub wait_ack: bool,
    /// Its `REPLCONF listening-port`.
    pub listening_port: u16,
    /// A full sync's payload still being built (after `$EOF:<mark>`).
    pub payload: Option<super::fullsync::Payload>,
}

/// Feeds a replica its stream from offset `from` until it goes away, is
/// killed, falls behind the backlog, or the server shuts down; reads its
/// `REPLCONF ACK`s meanwhile.
pub async fn serve_replica(
    stream: &mut crate::stream::ClientStream,
    inbuf: &mut BytesMut,
    tenant: &Rc<RefCell<Tenant>>,
    shared: &std::sync::Arc<crate::shared::Shared>,
    info: &Rc<ClientInfo>,
    start: StreamStart,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    let StreamStart {
        from,
        wait_ack,
        listening_port,
        payload,
    } = start;
    // After a `$EOF:` payload the replica must read the mark last: the
    // stream starts with its first ACK (it sends one once loaded).
    let mut streaming = !wait_ack;
    let mut set = shared.settings();
    let keep = |set: &crate::shared::Settings| replica_keep(set);
    let (link, wake) = {
        let mut t = tenant.borrow_mut();
        // Attached by its PSYNC (see `attach`); a link that is not there
        // any more (dropped meanwhile) is attached again here.
        let found = t.replicas.iter().find(|l| l.client_id == info.id).cloned();
        let link = match found {
            Some(l) => l,
            None => {
                attach(
                    &mut t,
                    info,
                    listening_port,
                    None,
                    from,
                    stream.is_link(),
                    keep(&set),
                );
                match t.replicas.last() {
                    Some(l) => l.clone(),
                    None => return,
                }
            }
        };
        link.streaming.set(streaming);
        (link, t.repl_wake.clone())
    };
    let _attached = Attached {
        tenant,
        link: link.clone(),
        keep: keep(&set),
    };
    let over_since = Cell::new(None);
    let mut last_stamp = 0i64;
    tracing::info!(id = info.id, addr = %info.addr, from, "replica attached");
    if let Some(p) = payload {
        let stall = std::time::Duration::from_millis(link_limit_ms(&link, &set));
        if !send_payload(stream, p, shutdown, stall).await {
            return;
        }
        // Its silence is counted from the end of the payload, however long
        // that took to send.
        link.ack_ms.set(mstime());
    }
    let mut parser = RequestParser::new();
    let lim = ParseLimits::default();
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Acknowledgements the replica sent, read without waiting: a link
        // that always has more to send reads them here, not only when it
        // has caught up.
        tokio::select! {
            biased;
            r = stream.read_buf(inbuf) => match r {
                Ok(n) if n > 0 => {}
                _ => return,
            },
            _ = std::future::ready(()) => {}
        }
        loop {
            match parser.next(inbuf, &lim) {
                Ok(Some(Request::Multibulk)) => {
                    let args: Vec<&[u8]> =
                        parser.ranges().iter().map(|r| &inbuf[r.clone()]).collect();
                    if args.len() >= 3
                        && args[0].eq_ignore_ascii_case(b"replconf")
                        && args[1].eq_ignore_ascii_case(b"ack")
                    {
                        if let Some(off) =
                            crate::util::parse_i64(args[2]).and_then(|o| u64::try_from(o).ok())
                        {
                            let extra = AckExtras::parse(&args[3..]);
                            let ours = tenant.borrow().epoch;
                            if extra.epoch.is_some_and(|e| e > ours) {
                                // The replica has seen a newer role record:
                                // this node is not the primary of its epoch,
                                // and nothing it writes may count as
                                // acknowledged by that replica.
                                tracing::warn!(
                                    id = info.id,
                                    "replica acknowledged at epoch {:?}, ours is {ours}: fenced, dropping it",
                                    extra.epoch
                                );
                                return;
                            }
                            if off > link.ack_offset.get() {
                                link.ack_offset.set(off);
                            }
                            link.kept.set(extra.keep.unwrap_or(true));
                            {
                                let mut t = tenant.borrow_mut();
                                // A copy its node is dropping holds no
                                // write for the database (see
                                // `TenantSpec::leaving`).
                                if standby_link(&t).is_some_and(|l| Rc::ptr_eq(l, &link)) {
                                    t.standby_acked = t.standby_acked.max(off);
                                }
                            }
                            if extra.lag_ms.is_some() {
                                link.lag_ms.set(extra.lag_ms);
                            }
                            streaming = true;
                            link.streaming.set(true);
                            link.ack_ms.set(mstime());
                            for c in tenant.borrow().ack_waiters.iter() {
                                c.wake.notify_one();
                            }
                        }
                    }
                }
                Ok(Some(Request::Inline)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let done = parser.consumed();
        inbuf.advance(done);
        parser.rebase(done);
        shared.refresh(&mut set);
        let Some(quiet_for) = ack_due(&link, streaming, &set, info) else {
            return;
        };
        let chunk = {
            let mut t = tenant.borrow_mut();
            let sent = link.sent.get();
            if dropped_for_limit(&t, &link, &set, &over_since, info, shared) {
                return;
            }
            retain_for_replicas(&mut t, keep(&set));
            if !streaming || t.log.offset() == sent {
                None
            } else {
                // The piece is the service's buffer, not the database's
                // memory: a slow link holds it for a while, and it must
                // not make the primary evict.
                let piece =
                    crate::alloc::Unaccounted::new(|| t.log.since_at_most(sent, LINK_CHUNK));
                match piece.get().map(|b| b.as_ref().map(Vec::len)) {
                    // Whether the piece ends where the log does (a command
                    // boundary: a stamp may follow it).
                    Some(Some(len)) => {
                        let whole = sent + len as u64 == t.log.offset();
                        Some((piece, whole))
                    }
                    _ => {
                        tracing::warn!(
                            id = info.id,
                            "replica fell behind the backlog (repl-backlog-size): dropped, it will resync"
                        );
                        return;
                    }
                }
            }
        };
        if let Some((piece, whole)) = chunk {
            let b: &[u8] = piece.get().and_then(|b| b.as_deref()).unwrap_or_default();
            // Written piece by piece, watching the log meanwhile: a replica
            // that stopped reading blocks this write, and must still be
            // dropped once it is too far behind (Redis checks the limit
            // whenever the primary writes).
            let mut pos = 0;
            // A peer that died mid-write takes nothing more (and its
            // acknowledgements, unread meanwhile, stop too): no progress
            // for as long as the silence a link may keep ends it.
            let mut progress_at = tokio::time::Instant::now();
            let stall = std::time::Duration::from_millis(link_limit_ms(&link, &set));
            while pos < b.len() {
                let grew = wake.notified();
                tokio::pin!(grew);
                grew.as_mut().enable();
                tokio::select! {
                    r = stream.write(&b[pos..]) => match r {
                        Ok(n) if n > 0 => {
                            pos += n;
                            link.sent.set(link.sent.get() + n as u64);
                            progress_at = tokio::time::Instant::now();
                        }
                        _ => return,
                    },
                    _ = &mut grew => {
                        shared.refresh(&mut set);
                        let t = tenant.borrow();
                        if dropped_for_limit(&t, &link, &set, &over_since, info, shared) {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(progress_at + stall) => {
                        tracing::warn!(
                            id = info.id,
                            addr = %info.addr,
                            "Disconnecting timedout replica (it took nothing of the stream for {} ms)",
                            stall.as_millis()
                        );
                        return;
                    }
                    _ = shutdown.changed() => return,
                }
            }
            if whole && link.cluster && mstime() - last_stamp >= STAMP_EVERY_MS {
                last_stamp = mstime();
                if !stamp(stream, last_stamp).await {
                    return;
                }
            }
            continue;
        }
        if inbuf.capacity() - inbuf.len() < 1024 {
            inbuf.reserve(16 * 1024);
        }
        // An idle cluster link is stamped too, every second counted from
        // the last stamp (not from this turn of the loop, which every ACK
        // restarts), so the replica's lag stays current (about the one-way
        // latency) and its silence check hears from us while nothing is
        // written.
        let next_stamp_in = (last_stamp + IDLE_STAMP_EVERY_MS - mstime()).max(0) as u64;
        let idle_stamp = async {
            if link.cluster {
                tokio::time::sleep(std::time::Duration::from_millis(next_stamp_in)).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = &mut notified => {}
            r = stream.read_buf(inbuf) => match r {
                Ok(n) if n > 0 => {}
                _ => return,
            },
            _ = info.wake.notified() => {
                if info.killed.get() {
                    return;
                }
            }
            _ = tokio::time::sleep(quiet_for), if streaming => {}
            _ = idle_stamp, if streaming => {
                last_stamp = mstime();
                if !stamp(stream, last_stamp).await {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// What a cluster replica adds after `REPLCONF ACK <offset>`: `LAG <ms>`
/// and `EPOCH <e>`, in any order (unknown pairs are skipped).
#[derive(Debug, Default, PartialEq, Eq)]
struct AckExtras {
    lag_ms: Option<i64>,
    epoch: Option<u64>,
    /// `KEEP 0`: the replica's node is dropping this copy.
    keep: Option<bool>,
}

impl AckExtras {
    fn parse(pairs: &[&[u8]]) -> AckExtras {
        let mut x = AckExtras::default();
        for p in pairs.chunks_exact(2) {
            if p[0].eq_ignore_ascii_case(b"lag") {
                x.lag_ms = crate::util::parse_i64(p[1]);
            } else if p[0].eq_ignore_ascii_case(b"epoch") {
                x.epoch = crate::util::parse_i64(p[1]).and_then(|e| u64::try_from(e).ok());
            } else if p[0].eq_ignore_ascii_case(b"keep") {
                x.keep = Some(p[1] != b"0");
            }
        }
        x
    }
}

/// How long a streaming replica may stay silent from now: its link is
/// dropped (None) once it has not acknowledged for `repl-timeout` (Redis's
/// replicas, which acknowledge every second; Redis drops them the same
/// way) or `repl-link-timeout-ms` (another anykv node: a crashed standby
/// must stop holding durability `region` writes in seconds, well before
/// QUIC's idle timeout would end its link).
fn ack_due(
    link: &ReplicaLink,
    streaming: bool,
    set: &crate::shared::Settings,
    info: &ClientInfo,
) -> Option<std::time::Duration> {
    let limit_ms = i64::try_from(link_limit_ms(link, set)).unwrap_or(i64::MAX);
    let silent = (mstime() - link.ack_ms.get()).max(0);
    if !streaming || silent < limit_ms {
        let left = if streaming {
            limit_ms - silent
        } else {
            limit_ms
        };
        return Some(std::time::Duration::from_millis(left.max(1) as u64));
    }
    tracing::warn!(
        id = info.id,
        addr = %info.addr,
        silent_ms = silent,
        "Disconnecting timedout replica (streaming sync)"
    );
    None
}

/// How long a replica link may stay silent (see [`ack_due`]).
fn link_limit_ms(link: &ReplicaLink, set: &crate::shared::Settings) -> u64 {
    if link.cluster {
        set.repl_link_timeout_ms
    } else {
        set.repl_timeout_s.saturating_mul(1000)
    }
}

/// The most a replica link copies out of the log at a time.
const LINK_CHUNK: usize = 256 << 10;

/// How often a busy cluster link is stamped with the primary's clock.
const STAMP_EVERY_MS: i64 = 100;

/// How often an idle cluster link is stamped.
const IDLE_STAMP_EVERY_MS: i64 = 1000;

/// Writes a time stamp to a cluster replica: `REPLCONF STAMP <unix ms>`,
/// between two whole commands of the stream and outside its offsets (the
/// replica takes it out before applying; a redis-server replica never gets
/// one). Returns false when the replica is gone.
async fn stamp(stream: &mut crate::stream::ClientStream, now_ms: i64) -> bool {
    let ms = now_ms.to_string();
    let frame = format!(
        "*3\r\n$8\r\nREPLCONF\r\n$5\r\nSTAMP\r\n${}\r\n{ms}\r\n",
        ms.len()
    );
    stream.write_all(frame.as_bytes()).await.is_ok()
}

/// `INFO replication` lines for the attached replicas.
/// `min_replicas`: `min-replicas-to-write` and `-max-lag`; with both set,
/// the count of good replicas is shown, as Redis does.
pub fn info_lines(t: &Tenant, min_replicas: (usize, i64), out: &mut String) {
    use std::fmt::Write;
    let now = mstime();
    let _ = write!(out, "connected_slaves:{}\r\n", t.replicas.len());
    if min_replicas.0 > 0 && min_replicas.1 > 0 {
        let good = good_replicas(t, now, min_replicas.1);
        let _ = write!(out, "min_slaves_good_slaves:{good}\r\n");
    }
    for (i, l) in t.replicas.iter().enumerate() {
        let _ = write!(
            out,
            "slave{i}:ip={},port={},state={},offset={},lag={}",
            l.shown_ip,
            l.listening_port,
            if l.streaming.get() {
                "online"
            } else {
                "send_bulk"
            },
            l.ack_offset.get(),
            (now - l.ack_ms.get()).max(0) / 1000
        );
        // Other nodes of the cluster: bytes not acknowledged yet, and the
        // lag it measured against this primary's stamps.
        if l.cluster {
            let _ = write!(
                out,
                ",lag_bytes={},lag_ms={}",
                t.log.offset().saturating_sub(l.ack_offset.get()),
                l.lag_ms.get().map_or(-1, |v| v)
            );
        }
        out.push_str("\r\n");
    }
}

/// The link of the standby durability `region` waits for, when attached
/// and kept (a copy its node is dropping holds nothing for the database,
/// even on the standby's node: see `TenantSpec::leaving`).
pub fn standby_link(t: &Tenant) -> Option<&Rc<ReplicaLink>> {
    let want = t.standby?;
    t.replicas.iter().find(|l| l.addr == want && l.kept.get())
}

/// Replicas that have acknowledged `offset`.
pub fn acked(t: &Tenant, offset: u64) -> usize {
    t.replicas
        .iter()
        .filter(|l| l.ack_offset.get() >= offset)
        .count()
}

/// Replicas that acknowledged within the last `max_lag` seconds
/// (`min-replicas-max-lag`'s "good" replicas).
pub fn good_replicas(t: &Tenant, now_ms: i64, max_lag: i64) -> usize {
    t.replicas
        .iter()
        .filter(|l| l.streaming.get() && (now_ms - l.ack_ms.get()) / 1000 <= max_lag)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_extras_are_pairs_in_any_order() {
        let p = |a: &[&str]| AckExtras::parse(&a.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
        assert_eq!(p(&[]), AckExtras::default());
        assert_eq!(
            p(&["LAG", "12", "EPOCH", "3"]),
            AckExtras {
                lag_ms: Some(12),
                epoch: Some(3),
                keep: None,
            }
        );
        assert_eq!(
            p(&["epoch", "7", "FACK", "100", "lag", "5", "KEEP", "0"]),
            AckExtras {
                lag_ms: Some(5),
                epoch: Some(7),
                keep: Some(false),
            }
        );
        assert_eq!(p(&["KEEP", "1"]).keep, Some(true));
        // A malformed epoch is no epoch; a dangling name is ignored.
        assert_eq!(p(&["EPOCH", "-1", "LAG"]), AckExtras::default());
    }

    /// Two copies on the standby's node (one lingering before it is
    /// dropped, one just made): only the one its node keeps is the
    /// standby that writes wait for, whichever attached first.
    #[test]
    fn a_copy_its_node_is_dropping_is_not_the_standby() {
        let mut t = Tenant::new(crate::tenant::TenantId::DEFAULT, "p", 16);
        let node: SocketAddr = "127.0.0.2:7000".parse().expect("addr");
        t.standby = Some(node);
        let info = |id| ClientInfo::new(id, node, node, -1, 0);
        attach(&mut t, &info(1), 0, None, 0, true, usize::MAX);
        attach(&mut t, &info(2), 0, None, 0, true, usize::MAX);
        // Neither has said it keeps its copy yet.
        assert!(standby_link(&t).is_none());
        for l in &t.replicas {
            l.kept.set(true);
        }
        assert_eq!(standby_link(&t).map(|l| l.client_id), Some(1));
        t.replicas[0].kept.set(false);
        assert_eq!(standby_link(&t).map(|l| l.client_id), Some(2));
        t.replicas[1].kept.set(false);
        assert!(standby_link(&t).is_none());
        // Nor is such a copy reported synced (the controller marks a
        // standby in sync from that report).
        for l in &t.replicas {
            l.streaming.set(true);
            l.ack_offset.set(10);
        }
        t.replicas[1].kept.set(true);
        let st = crate::metrics::ReplStatus::of(&t);
        let synced: Vec<bool> = st.replicas.iter().map(|r| r.synced).collect();
        assert_eq!(synced, [false, true]);
    }
}
