//! The router's own clients: what `CLIENT LIST`, `CLIENT INFO` and
//! `CLIENT KILL` see. Upstream connections are shared, so the upstream's
//! CLIENT LIST shows the router; the router's shows the applications.

use anykv_server::cmd::{lookup, Lookup};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// What changes while a client runs.
#[derive(Debug, Clone)]
pub struct ClientVar {
    pub name: Vec<u8>,
    pub db: u32,
    pub resp: u8,
    /// The upstreams' user it logged in as (`None`: `default`).
    pub user: Option<Vec<u8>>,
    /// Last command's name (`client|list` style).
    pub cmd: String,
    pub last: Instant,
    /// In MULTI.
    pub multi: bool,
    /// Subscribed or MONITOR (the connection is spliced upstream).
    pub tunnel: bool,
    /// Waiting for a blocking command's or WAIT's reply.
    pub blocked: bool,
}

/// One client connection of the router.
pub struct ClientHandle {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    created: Instant,
    pub var: Mutex<ClientVar>,
    killed: AtomicBool,
    kill: Notify,
}

impl ClientHandle {
    /// Asks the client's session to close. Every waiter wakes: a spliced
    /// session waits on a future of its own while the main loop's is
    /// still registered.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once [`kill`](Self::kill) was called.
    pub async fn killed(&self) {
        // Registered before the flag is read, so a kill in between is
        // not missed.
        let notified = self.kill.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_killed() {
            return;
        }
        notified.await;
    }

    /// Redis's CLIENT LIST line for this client.
    pub fn describe(&self, now: Instant) -> String {
        let v = self.var.lock();
        let mut flags = String::new();
        if v.multi {
            flags.push('x');
        }
        if v.blocked {
            flags.push('b');
        }
        if v.tunnel {
            flags.push('P');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr,
            String::from_utf8_lossy(&v.name),
            now.duration_since(self.created).as_secs(),
            now.duration_since(v.last).as_secs(),
            flags,
            v.db,
            if v.multi { 0 } else { -1 },
            if v.cmd.is_empty() { "NULL" } else { &v.cmd },
            v.user
                .as_deref()
                .map_or("default".into(), String::from_utf8_lossy),
            v.resp,
        )
    }
}

/// Every client of the router.
#[derive(Default)]
pub struct Registry {
    map: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    next: AtomicU64,
}

impl Registry {
    pub fn add(&self, addr: SocketAddr, laddr: SocketAddr) -> Arc<ClientHandle> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let h = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            created: now,
            var: Mutex::new(ClientVar {
                name: Vec::new(),
                user: None,
                db: 0,
                resp: 2,
                cmd: String::new(),
                last: now,
                multi: false,
                tunnel: false,
                blocked: false,
            }),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        });
        self.map.lock().insert(id, h.clone());
        metrics::gauge!("anykv_router_clients").increment(1.0);
        h
    }

    pub fn remove(&self, id: u64) {
        if self.map.lock().remove(&id).is_some() {
            metrics::gauge!("anykv_router_clients").decrement(1.0);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All clients, in id order.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.map.lock().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.map.lock().get(&id).cloned()
    }
}

/// Commands whose CLIENT LIST `cmd=` names the subcommand too
/// (`client|list`), as Redis 7.0 shows its container commands.
const CONTAINERS: &[&str] = &[
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

fn is_container(name: &[u8]) -> bool {
    CONTAINERS
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
}

/// The `cmd=` of CLIENT LIST for a request (never empty `args`): the
/// table's name (`client|list`), or for a command the table does not
/// know (the upstream may: streams, scripts) its name if it looks like
/// one; `None` leaves the last one (Redis names only commands it ran).
pub fn cmd_name(args: &[&[u8]]) -> Option<String> {
    let plausible = |n: &[u8]| {
        !n.is_empty()
            && n.len() <= 32
            && n.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(b))
    };
    match lookup(args) {
        Lookup::Found(r) => Some(r.fullname.clone()),
        _ if plausible(args[0]) => Some(String::from_utf8_lossy(args[0]).to_ascii_lowercase()),
        _ => None,
    }
}

/// Is `cur` already the `cmd=` of `args` (the common case, checked
/// without allocating)?
pub fn same_cmd(cur: &str, args: &[&[u8]]) -> bool {
    let cur = cur.as_bytes();
    match cur.iter().position(|&b| b == b'|') {
        None => cur.eq_ignore_ascii_case(args[0]) && !is_container(args[0]),
        Some(i) => {
            cur[..i].eq_ignore_ascii_case(args[0])
                && args
                    .get(1)
                    .is_some_and(|s| cur[i + 1..].eq_ignore_ascii_case(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_commands_name_their_subcommand() {
        assert_eq!(cmd_name(&[b"GET", b"k"]).as_deref(), Some("get"));
        assert_eq!(
            cmd_name(&[b"CLIENT", b"List"]).as_deref(),
            Some("client|list")
        );
        assert_eq!(cmd_name(&[b"XADD", b"s", b"*"]).as_deref(), Some("xadd"));
        assert_eq!(
            cmd_name(&[b"OBJECT", b"a\nid=1"]).as_deref(),
            Some("object")
        );
        assert_eq!(cmd_name(&[b"bad\nname"]), None);
        assert!(same_cmd("get", &[b"GET", b"x"]));
        assert!(same_cmd("client|list", &[b"client", b"LIST"]));
        assert!(!same_cmd("client|list", &[b"client", b"id"]));
        assert!(!same_cmd("client", &[b"client", b"id"]));
        assert!(!same_cmd("get", &[b"set", b"x"]));
    }
}
