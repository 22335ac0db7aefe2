//! Per-connection state visible to other connections of the same tenant
//! (CLIENT LIST/KILL, MONITOR, idle timeouts). Everything is a `Cell` so a
//! connection can update its own record while another command on the same
//! executor thread reads it, without borrow conflicts.

use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use tokio::sync::Notify;

/// CLIENT REPLY mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Skip the reply of the next command only.
    Skip,
    /// Internal: the current command's reply is being skipped.
    SkipThis,
}

pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub fd: i32,
    pub created_ms: i64,
    pub name: RefCell<Vec<u8>>,
    pub lib_name: RefCell<Vec<u8>>,
    pub lib_ver: RefCell<Vec<u8>>,
    pub db: Cell<usize>,
    pub resp: Cell<u8>,
    pub last_interaction_ms: Cell<i64>,
    pub last_cmd: Cell<&'static str>,
    pub user: RefCell<String>,
    pub monitor: Cell<bool>,
    pub no_evict: Cell<bool>,
    /// Set when a blocked command of this client was served or unblocked
    /// (its reply is in `push`).
    pub unblocked: Cell<bool>,
    /// A key this client WATCHes was modified: its EXEC must fail.
    pub dirty_cas: Cell<bool>,
    /// Commands queued in MULTI, or -1 (CLIENT LIST `multi=`).
    pub multi_len: Cell<i64>,
    /// Subscription counts (CLIENT LIST `sub=`, `psub=`, `ssub=`).
    pub subs: Cell<usize>,
    pub psubs: Cell<usize>,
    pub ssubs: Cell<usize>,
    /// When the push queue went over the soft output limit (0: it is not).
    pub soft_limit_since: Cell<i64>,
    /// Waiting inside a command (WAIT): exempt from the idle timeout.
    pub blocked: Cell<bool>,
    /// Another node's stream (replication, forwarded requests): cluster
    /// machinery, not a client of the database. Its users' CLIENT LIST
    /// does not show it and CLIENT KILL cannot close it.
    pub link: Cell<bool>,
    /// The SHA-256 of the database token this connection logged in with
    /// (None: an operator's password, a link): when the database's
    /// catalog entry drops that token (a rotation's old one retired), the
    /// connection is closed.
    pub token: Cell<Option<[u8; 32]>>,
    /// The query buffer's bytes in use, and its free capacity.
    pub qbuf: Cell<usize>,
    pub qbuf_free: Cell<usize>,
    pub obuf: Cell<usize>,
    /// See [`ClientInfo::rehome`].
    pub rehome: Cell<bool>,
    /// Requested close (CLIENT KILL, idle timeout, output limits, shutdown).
    pub killed: Cell<bool>,
    /// Bytes queued by other connections (MONITOR feed, later pub/sub).
    pub push: RefCell<BytesMut>,
    /// Client-side caching (`CLIENT TRACKING`): None when off.
    pub tracking: RefCell<Option<crate::tracking::Mode>>,
    /// `CLIENT CACHING yes|no` given for the next command.
    pub caching: Cell<bool>,
    /// Wakes the connection task: something was pushed or it was killed.
    pub wake: Notify,
}

impl ClientInfo {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr, fd: i32, now_ms: i64) -> Self {
        ClientInfo {
            id,
            addr,
            laddr,
            fd,
            created_ms: now_ms,
            name: RefCell::new(Vec::new()),
            lib_name: RefCell::new(Vec::new()),
            lib_ver: RefCell::new(Vec::new()),
            db: Cell::new(0),
            resp: Cell::new(2),
            last_interaction_ms: Cell::new(now_ms),
            last_cmd: Cell::new("NULL"),
            user: RefCell::new("default".into()),
            monitor: Cell::new(false),
            no_evict: Cell::new(false),
            blocked: Cell::new(false),
            link: Cell::new(false),
            token: Cell::new(None),
            soft_limit_since: Cell::new(0),
            dirty_cas: Cell::new(false),
            unblocked: Cell::new(false),
            multi_len: Cell::new(-1),
            subs: Cell::new(0),
            psubs: Cell::new(0),
            ssubs: Cell::new(0),
            qbuf: Cell::new(0),
            qbuf_free: Cell::new(0),
            obuf: Cell::new(0),
            killed: Cell::new(false),
            rehome: Cell::new(false),
            push: RefCell::new(BytesMut::new()),
            tracking: RefCell::new(None),
            caching: Cell::new(false),
            wake: Notify::new(),
        }
    }

    pub fn kill(&self) {
        self.killed.set(true);
        self.wake.notify_one();
    }

    /// The copy of the database this client is connected to was dropped
    /// from this node, which still serves it through the nodes that hold
    /// it: the connection moves to that remote tenant before its next
    /// request (`conn::run`), or closes when its state cannot move.
    pub fn rehome(&self) {
        self.rehome.set(true);
        self.wake.notify_one();
    }

    /// Queues bytes for this client (written by its own task).
    pub fn push_bytes(&self, b: &[u8]) {
        self.push.borrow_mut().extend_from_slice(b);
        self.wake.notify_one();
    }

    /// One line of CLIENT LIST / CLIENT INFO, in Redis 7.0's field order.
    pub fn describe(&self, now_ms: i64) -> String {
        let (multi, sub, psub) = (self.multi_len.get(), self.subs.get(), self.psubs.get());
        // (In Redis 7.0's order.)
        let mut flags = String::new();
        if self.monitor.get() {
            flags.push('O');
        }
        if sub + psub + self.ssubs.get() > 0 {
            flags.push('P');
        }
        if multi >= 0 {
            flags.push('x');
        }
        if self.blocked.get() {
            flags.push('b');
        }
        let redir = match &*self.tracking.borrow() {
            Some(m) => {
                flags.push('t');
                if m.broken {
                    flags.push('R');
                }
                if m.bcast {
                    flags.push('B');
                }
                m.redirect as i64
            }
            None => -1,
        };
        if self.dirty_cas.get() {
            flags.push('d');
        }
        if self.no_evict.get() {
            flags.push('e');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem=0 events=r cmd={} user={} redir={} resp={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            String::from_utf8_lossy(&self.name.borrow()),
            (now_ms - self.created_ms).max(0) / 1000,
            (now_ms - self.last_interaction_ms.get()).max(0) / 1000,
            flags,
            self.db.get(),
            sub,
            psub,
            self.ssubs.get(),
            multi,
            self.qbuf.get(),
            self.qbuf_free.get(),
            self.obuf.get(),
            self.last_cmd.get(),
            self.user.borrow(),
            redir,
            self.resp.get(),
        )
    }
}

/// [`Session::acl_epoch`] of a session no ACL applies to (Redis's
/// connection-less clients: the AOF loader, the master link).
pub const ACL_INTERNAL: u64 = u64::MAX;

/// Connection-local state, owned by the connection task and lent to
/// commands through `Ctx`.
pub struct Session {
    pub info: std::rc::Rc<ClientInfo>,
    /// This batch read a `strong` database on its `region` primary: its
    /// replies wait for the standby (see `dispatch`).
    pub read_needs_standby: bool,
    pub db: usize,
    pub resp: u8,
    pub authenticated: bool,
    pub user: String,
    /// The user may run every command on every key: skip ACL checks.
    pub unrestricted: bool,
    /// The ACL epoch `unrestricted` was worked out at
    /// (`dispatch::refresh_acl`); [`ACL_INTERNAL`] for sessions never
    /// checked (a log's replay, a primary's stream, cluster links).
    pub acl_epoch: u64,
    pub reply_mode: ReplyMode,
    pub close_after_reply: bool,
    pub monitor: bool,
    /// Commands queued since MULTI (None: not in a transaction).
    pub multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A command was rejected while queuing: EXEC must abort.
    pub multi_error: bool,
    /// The connection has run a script: its batches run in a coroutine
    /// (`script::busy`).
    pub scripting: bool,
    /// Bytes to meter once the database is free (`conn::meter_bytes`).
    pub unmetered: std::cell::Cell<(usize, usize)>,
    /// Running EXEC's queued commands (blocking commands do not block).
    pub in_exec: bool,
    /// Running a script's `redis.call`s (XREAD's BLOCK is refused there).
    pub in_script: bool,
    /// The database was over its memory limit when this command (or its
    /// EXEC) started, eviction notwithstanding: a script may then not
    /// write (Redis's `pre_command_oom_state`).
    pub oom_at_start: bool,
    /// WATCHed keys: (db, key, was logically expired when watched).
    pub watched: Vec<(usize, Vec<u8>, bool)>,
    pub channels: hashbrown::HashSet<Vec<u8>>,
    pub patterns: Vec<Vec<u8>>,
    pub shard_channels: hashbrown::HashSet<Vec<u8>>,
    /// Replaying the append-only log at start: memory limits neither evict
    /// nor refuse (the log holds what was accepted), as Redis while loading.
    pub replaying: bool,
    /// A stream from another node of the cluster (mutual TLS proved it):
    /// a replica's link, which runs the replication commands a customer's
    /// own connections may not.
    pub cluster_peer: bool,
    /// The billing class of the request being dispatched (set by its
    /// first lookup: EXEC's own, not its queued commands').
    pub class: Option<crate::meter::Class>,
    /// The request about to run again was metered already (it went to
    /// the primary and runs here after all, or waited for the local copy).
    pub metered: bool,
    /// AUTH counted this connection into another tenant it is about to
    /// move to (see `Shared::tenant_client_enter`): the move, or the
    /// connection's end, settles that count.
    pub moving_to: Option<crate::tenant::TenantId>,
    /// A full sync's payload being built in the background (PSYNC), for
    /// the connection to send before the stream.
    pub sync_payload: Option<crate::repl::fullsync::Payload>,
    /// What this connection said with REPLCONF (when it is a replica).
    pub repl: ReplHello,
    /// The log offset after this connection's last write (WAIT waits for
    /// replicas to acknowledge it, as Redis's `c->woff`).
    pub woff: u64,
    /// On a cluster link: an `ENVELOPE` arrived, for the request after it
    /// (docs/ROUTING.md).
    pub envelope: Option<crate::envelope::Pending>,
    /// While a router's request runs: its client's address, which MONITOR
    /// and SLOWLOG show instead of the link's.
    pub origin: Option<std::net::SocketAddr>,
    /// While a router's request runs: another node relayed it here (it
    /// was sent to that node as the primary): it is not sent on again.
    pub relayed: bool,
    /// A router's request that is waiting (a blocking command, WAIT): its
    /// client stays in place until its reply is made.
    pub serving: Option<crate::envelope::Serving>,
    /// The token of this connection's last write that a replica's node
    /// forwarded to the primary: reads here wait for a copy that has it
    /// (read-your-writes).
    pub last_token: Option<crate::envelope::Token>,
    /// The request about to run again already waited for the local copy
    /// to catch up with `last_token` (it goes to the primary now instead).
    pub ryw_waited: bool,
    /// A node with a copy of the database just accepted the login the
    /// connection runs again now (`Suspend::VerifyLogin`).
    pub login_checked: bool,
    /// ACL refusals this node logged for a database it holds no copy of,
    /// still to be sent to the database's primary, whose ACL LOG is the
    /// database's (see `envelope::acl_log_record`).
    pub acl_refusals: std::cell::RefCell<Vec<crate::envelope::Refusal>>,
    /// The next request was shown to MONITOR already (it was forwarded,
    /// then came back to run here: this node became the primary).
    pub monitor_fed: bool,
    /// The request running in an envelope read the keyspace: its reply
    /// carries the token (see `envelope::end`).
    pub read_token: bool,
    /// On a replica's node: this connection's own stream to the primary
    /// while a transaction, WATCH or blocking command ties it there.
    pub pin: Option<crate::forward::Pin>,
    /// Where each of the connection's SCAN-family iterations (by command
    /// and key) started: true on the primary (its cursors are valid there
    /// only). At most 64 remembered.
    pub scans_on_primary: std::collections::HashMap<(String, Vec<u8>), bool>,
    /// A SUBSCRIBE to a database held elsewhere in this batch: its
    /// confirmation waits for the relay (see `relay`).
    pub awaits_relay: bool,
}

/// A replica's REPLCONF options, before its PSYNC.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplHello {
    pub listening_port: u16,
    /// `REPLCONF ip-address` (`replica-announce-ip`): the address INFO and
    /// ROLE show for it instead of the connection's peer address.
    pub announced_ip: Option<std::net::IpAddr>,
    /// Takes the diskless `$EOF:` framing.
    pub capa_eof: bool,
    /// `redis-cli --rdb`: the snapshot, then close.
    pub rdb_only: bool,
    /// A cluster replica whose history went past ours after this offset
    /// (its PSYNC named our previous id beyond where we took it over): its
    /// `+FULLRESYNC` line says so (`DIVERGED <offset>`).
    pub diverged_at: Option<u64>,
}

impl Session {
    /// Whether the client is on this machine (`enable-debug-command
    /// local`, protected configs): a router's request is its client's, and
    /// the router's own link being local says nothing about that client.
    pub fn client_is_local(&self) -> bool {
        self.origin.unwrap_or(self.info.addr).ip().is_loopback()
    }

    pub fn new(info: std::rc::Rc<ClientInfo>, authenticated: bool) -> Self {
        Session {
            info,
            read_needs_standby: false,
            db: 0,
            resp: 2,
            authenticated,
            user: "default".into(),
            unrestricted: true,
            acl_epoch: ACL_INTERNAL,
            reply_mode: ReplyMode::On,
            close_after_reply: false,
            monitor: false,
            multi: None,
            multi_error: false,
            scripting: false,
            unmetered: Default::default(),
            in_exec: false,
            in_script: false,
            oom_at_start: false,
            watched: Vec::new(),
            channels: Default::default(),
            patterns: Vec::new(),
            shard_channels: Default::default(),
            replaying: false,
            cluster_peer: false,
            class: None,
            metered: false,
            moving_to: None,
            sync_payload: None,
            repl: ReplHello::default(),
            woff: 0,
            envelope: None,
            origin: None,
            relayed: false,
            serving: None,
            last_token: None,
            ryw_waited: false,
            login_checked: false,
            acl_refusals: Default::default(),
            monitor_fed: false,
            read_token: false,
            pin: None,
            scans_on_primary: Default::default(),
            awaits_relay: false,
        }
    }

    /// The client's address: a router's client's while its request runs.
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.origin.unwrap_or(self.info.addr)
    }

    /// Subscriptions of any kind (RESP2 subscribed-mode check).
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }
}

/// Redis's `validateClientName`: printable ASCII without spaces.
pub fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_client_is_local_only_if_its_own_address_is() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let info = std::rc::Rc::new(ClientInfo::new(1, lo, lo, -1, 0));
        let mut s = Session::new(info, true);
        assert!(s.client_is_local(), "a loopback connection");
        // A router's request over a loopback link, from a remote client.
        s.origin = Some("10.1.2.3:4567".parse().unwrap());
        assert!(!s.client_is_local());
        s.origin = Some("[::1]:4567".parse().unwrap());
        assert!(s.client_is_local());
    }
}
