//! The upstreams of a standalone router: one primary and its replicas,
//! told apart by asking each `ROLE`, and a few shared connections to each.
//!
//! A poller per upstream asks `ROLE` every `--role-interval-ms` on a
//! control connection of its own (the `redis` crate's client), which gives
//! four things at once: the upstream's role, whether it answers (one that
//! does not within `--upstream-timeout-ms` is skipped), its round-trip time
//! (replicas are chosen nearest first), and its replication offset, which
//! is how read-your-writes knows a replica has caught up (see
//! [`Upstreams::primary_offset_since`]).

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::upstream::{Conn, Handshake, Login, UpstreamError};

/// What an upstream said it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Replica,
}

/// The last poll's view of one upstream.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    /// Answered the last poll in time.
    pub reachable: bool,
    /// A replica's link to its primary is up (`connected`).
    pub link_up: bool,
    /// Replication offset: a primary's master offset, a replica's
    /// processed offset.
    pub offset: u64,
    /// Smoothed round-trip time of `ROLE`.
    pub rtt: Option<Duration>,
    /// When the `ROLE` that said all this was sent.
    pub polled: Option<Instant>,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Shared connections per upstream and RESP version.
    pub connections: usize,
    /// Bounded batch queue per connection.
    pub queue: usize,
    /// Bounded request bytes queued per connection.
    pub queue_bytes: usize,
    pub connect_timeout: Duration,
    pub role_interval: Duration,
    pub password: Option<String>,
}

/// Primary polls kept for read-your-writes (`sent at`, `offset`).
const HISTORY: usize = 256;

/// One upstream server.
pub struct Server {
    pub addr: SocketAddr,
    status: RwLock<Status>,
    /// The primary's recent polls: when each `ROLE` was sent and the
    /// master offset it answered.
    history: Mutex<VecDeque<(Instant, u64)>>,
    /// Wakes the poller for an early `ROLE` (a write was refused).
    poke: tokio::sync::Notify,
    /// Woken after every answered `ROLE` (a read waiting for a replica
    /// to catch up looks again).
    pub polled: tokio::sync::Notify,
}

impl Server {
    pub fn status(&self) -> Status {
        self.status.read().clone()
    }

    /// Asks the poller for a `ROLE` now rather than at its next interval.
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}

/// All upstreams of the router: what the polls say about each. Their
/// connections are per worker thread ([`Pools`]).
pub struct Upstreams {
    pub servers: Vec<Arc<Server>>,
    pub cfg: PoolConfig,
    /// Every worker's pools (the poller closes a silent upstream's).
    pools: Mutex<Vec<Arc<Pools>>>,
}

/// One worker thread's connections to the upstreams: shared ones
/// (`[resp2, resp3][slot]` per server) and idle dedicated ones
/// (transactions, blocking commands). A worker's sessions and its
/// connections run on one thread, so a request never wakes another core.
pub struct Pools {
    ups: Arc<Upstreams>,
    /// The user these connections log in as (`None`: the router's own,
    /// `--upstream-password`).
    login: Option<Login>,
    shared: Vec<[Vec<tokio::sync::Mutex<Option<Conn>>>; 2]>,
    idle: Vec<[Mutex<Vec<Conn>>; 2]>,
    /// The worker's pools for the upstream users its clients logged in
    /// as (kept on the router's own pools only).
    users: Mutex<HashMap<Login, Arc<Pools>>>,
}

/// Dedicated connections kept idle per upstream and RESP version.
const IDLE_DEDICATED: usize = 16;

fn resp_index(resp: u8) -> usize {
    usize::from(resp == 3)
}

impl Upstreams {
    pub fn new(addrs: &[SocketAddr], cfg: PoolConfig) -> Arc<Upstreams> {
        let servers = addrs
            .iter()
            .map(|&addr| {
                Arc::new(Server {
                    addr,
                    status: RwLock::new(Status {
                        role: Role::Unknown,
                        reachable: false,
                        link_up: false,
                        offset: 0,
                        rtt: None,
                        polled: None,
                    }),
                    history: Mutex::new(VecDeque::new()),
                    poke: tokio::sync::Notify::new(),
                    polled: tokio::sync::Notify::new(),
                })
            })
            .collect();
        Arc::new(Upstreams {
            servers,
            cfg,
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Connection pools for one worker thread.
    pub fn pools(self: &Arc<Self>) -> Arc<Pools> {
        self.new_pools(None)
    }

    fn new_pools(self: &Arc<Self>, login: Option<Login>) -> Arc<Pools> {
        let slots = || {
            (0..self.cfg.connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect()
        };
        let p = Arc::new(Pools {
            ups: self.clone(),
            login,
            users: Mutex::new(HashMap::new()),
            shared: self.servers.iter().map(|_| [slots(), slots()]).collect(),
            idle: self
                .servers
                .iter()
                .map(|_| [Mutex::new(Vec::new()), Mutex::new(Vec::new())])
                .collect(),
        });
        self.pools.lock().push(p.clone());
        p
    }

    /// Fails what waits on server `i`'s shared connections, everywhere.
    fn close_server(&self, i: usize) {
        for p in self.pools.lock().iter() {
            for pool in &p.shared[i] {
                for slot in pool {
                    if let Ok(g) = slot.try_lock() {
                        if let Some(c) = g.as_ref() {
                            c.close();
                        }
                    }
                }
            }
        }
    }
}

impl Pools {
    /// How a connection of these pools introduces itself: as their user,
    /// speaking `resp`, named `name`.
    pub fn handshake(&self, resp: u8, name: Option<String>) -> Handshake {
        Handshake {
            password: self.ups.cfg.password.clone(),
            login: self.login.clone(),
            resp,
            name,
        }
    }

    /// This worker's pools for connections logged in as `login` (`None`:
    /// the router's own user), made at its first use and kept: a login
    /// reaches here only once the primary accepted it, so there are as
    /// many as the upstreams have users (and passwords) in use.
    pub fn for_login(self: &Arc<Self>, login: Option<&Login>) -> Arc<Pools> {
        let Some(l) = login else {
            return self.clone();
        };
        let mut users = self.users.lock();
        if let Some(p) = users.get(l) {
            return p.clone();
        }
        let p = self.ups.new_pools(Some(l.clone()));
        users.insert(l.clone(), p.clone());
        p
    }

    /// The shared connection `slot` (taken modulo the pool size) to server
    /// `i`, connecting it when missing or dead.
    pub async fn shared(&self, i: usize, resp: u8, slot: usize) -> Result<Conn, UpstreamError> {
        let s = &self.ups.servers[i];
        let pool = &self.shared[i][resp_index(resp)];
        let mut g = pool[slot % pool.len()].lock().await;
        if let Some(c) = g.as_ref() {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        let c = Conn::open(
            s.addr,
            &self.handshake(resp, Some("anykv-router".into())),
            self.ups.cfg.connect_timeout,
            (self.ups.cfg.queue, self.ups.cfg.queue_bytes),
        )
        .await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Requests in flight on this worker's shared connections to server
    /// `i` for protocol `resp`.
    pub fn in_flight(&self, i: usize, resp: u8) -> usize {
        self.shared[i][resp_index(resp)]
            .iter()
            .filter_map(|slot| slot.try_lock().ok()?.as_ref().map(Conn::in_flight))
            .sum()
    }

    /// A connection of the caller's alone, to server `i`: an idle one or a
    /// new one.
    pub async fn dedicated(&self, i: usize, resp: u8) -> Result<Conn, UpstreamError> {
        let s = &self.ups.servers[i];
        loop {
            let c = self.idle[i][resp_index(resp)].lock().pop();
            match c {
                Some(c) if !c.is_dead() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        Conn::open(
            s.addr,
            &self.handshake(resp, Some("anykv-router-pinned".into())),
            self.ups.cfg.connect_timeout,
            (4, self.ups.cfg.queue_bytes),
        )
        .await
    }

    /// Returns a dedicated connection whose transaction or blocking command
    /// is over (its only state left is its database, which the connection
    /// itself tracks).
    pub fn release(&self, i: usize, resp: u8, c: Conn) {
        if c.is_dead() {
            return;
        }
        let mut idle = self.idle[i][resp_index(resp)].lock();
        if idle.len() < IDLE_DEDICATED {
            idle.push(c);
        } else {
            c.close();
        }
    }
}

impl Upstreams {
    /// A `redis` crate client for server `i`'s control connections (ROLE
    /// polls, CONFIG GET), with the upstream password.
    pub fn control_client(&self, i: usize) -> redis::RedisResult<redis::Client> {
        let addr = self.servers[i].addr;
        redis::Client::open(redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
            redis: redis::RedisConnectionInfo {
                password: self.cfg.password.clone(),
                ..Default::default()
            },
        })
    }

    /// The primary: the reachable upstream that says `master`.
    pub fn primary(&self) -> Option<usize> {
        self.servers.iter().position(|s| {
            let st = s.status.read();
            st.reachable && st.role == Role::Primary
        })
    }

    /// What a `-READONLY` from server `old` at `t` meant, once a poll
    /// sent after `t` tells: `Ok(p)`, it stepped down and `p` is the
    /// primary now; `Err(())`, it is still the primary (the error was not
    /// a step-down: a script's own error, say). `None`: not known yet.
    pub fn after_refusal(&self, old: usize, t: Instant) -> Option<Result<usize, ()>> {
        {
            let st = self.servers[old].status.read();
            if st.polled.is_none_or(|sent| sent < t) {
                return None;
            }
            if st.reachable && st.role == Role::Primary {
                return Some(Err(()));
            }
        }
        let p = self.primary()?;
        (p != old).then_some(Ok(p))
    }

    /// Asks every poller for an early `ROLE` (a primary stepped down: the
    /// new one should be known soon).
    pub fn poke_all(&self) {
        for s in &self.servers {
            s.poke();
        }
    }

    /// Every usable replica and its RTT.
    pub fn usable_replicas(&self) -> Vec<(usize, Duration)> {
        (0..self.servers.len())
            .filter(|&i| self.replica_usable(i))
            .map(|i| {
                let rtt = self.servers[i].status.read().rtt;
                (i, rtt.unwrap_or(Duration::MAX / 2))
            })
            .collect()
    }

    /// The nearest usable replica (lowest RTT; ties: the first listed).
    pub fn nearest_replica(&self) -> Option<usize> {
        self.usable_replicas()
            .into_iter()
            .min_by_key(|&(_, rtt)| rtt)
            .map(|(i, _)| i)
    }

    /// Is server `i` still a usable replica?
    pub fn replica_usable(&self, i: usize) -> bool {
        let st = self.servers[i].status.read();
        st.reachable && st.role == Role::Replica && st.link_up
    }

    /// The primary's master offset as answered by the first `ROLE` sent at
    /// or after `t`: every write acknowledged before `t` is at or below it.
    /// `None` until such a poll has answered.
    pub fn primary_offset_since(&self, i: usize, t: Instant) -> Option<u64> {
        let h = self.servers[i].history.lock();
        h.iter().find(|(sent, _)| *sent >= t).map(|&(_, o)| o)
    }

    /// Replica `i`'s processed offset (last poll).
    pub fn offset(&self, i: usize) -> u64 {
        self.servers[i].status.read().offset
    }

    /// Starts one poller per upstream; returns when every upstream has
    /// answered once or `wait` passed.
    pub async fn start_polling(self: &Arc<Self>, wait: Duration) {
        for i in 0..self.servers.len() {
            tokio::spawn(poll_loop(self.clone(), i));
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.servers.iter().all(|s| s.status.read().reachable) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What `ROLE` answered.
pub struct RoleReply {
    pub role: Role,
    pub offset: u64,
    pub link_up: bool,
    /// A primary's replicas' acknowledged offsets.
    pub acks: Vec<u64>,
}

pub fn parse_role(v: &redis::Value) -> Option<RoleReply> {
    use redis::Value;
    let Value::Array(items) = v else { return None };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    match text(items.first()?)?.as_str() {
        "master" => Some(RoleReply {
            role: Role::Primary,
            offset: int(items.get(1)?)?.max(0) as u64,
            link_up: true,
            // Each replica is `[ip, port, offset]`, the offset as text.
            acks: match items.get(2) {
                Some(Value::Array(reps)) => reps
                    .iter()
                    .filter_map(|r| match r {
                        Value::Array(f) => text(f.get(2)?)?.parse().ok(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
        }),
        "slave" => Some(RoleReply {
            role: Role::Replica,
            offset: int(items.get(4)?)?.max(0) as u64,
            link_up: text(items.get(3)?)? == "connected",
            acks: Vec::new(),
        }),
        _ => Some(RoleReply {
            role: Role::Unknown,
            offset: 0,
            link_up: false,
            acks: Vec::new(),
        }),
    }
}

async fn poll_loop(ups: Arc<Upstreams>, i: usize) {
    let s = ups.servers[i].clone();
    let timeout = ups.cfg.connect_timeout;
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut warned = false;
    loop {
        let sent = Instant::now();
        let answer = async {
            if conn.is_none() {
                let client = ups.control_client(i).map_err(|e| e.to_string())?;
                let c = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                conn = Some(c);
            }
            let c = conn.as_mut().ok_or("no connection")?;
            let v: redis::Value = redis::cmd("ROLE")
                .query_async(c)
                .await
                .map_err(|e| e.to_string())?;
            parse_role(&v).ok_or_else(|| format!("unexpected ROLE reply {v:?}"))
        };
        let r = match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err("ROLE timed out".to_string()),
        };
        let took = sent.elapsed();
        match r {
            Ok(role) => {
                if warned {
                    tracing::info!(upstream = %s.addr, "upstream answers again");
                    warned = false;
                }
                {
                    let mut st = s.status.write();
                    if st.role != role.role {
                        tracing::info!(upstream = %s.addr, role = ?role.role, "upstream role");
                        s.history.lock().clear();
                    }
                    st.role = role.role;
                    st.reachable = true;
                    st.link_up = role.link_up;
                    st.offset = role.offset;
                    st.rtt = Some(match st.rtt {
                        Some(old) => (old * 7 + took) / 8,
                        None => took,
                    });
                    st.polled = Some(sent);
                }
                if role.role == Role::Primary {
                    let mut h = s.history.lock();
                    if h.len() == HISTORY {
                        h.pop_front();
                    }
                    h.push_back((sent, role.offset));
                }
                s.polled.notify_waiters();
            }
            Err(e) => {
                conn = None;
                let was = {
                    let mut st = s.status.write();
                    std::mem::replace(&mut st.reachable, false)
                };
                if was || !warned {
                    tracing::warn!(upstream = %s.addr, "upstream does not answer: {e}");
                    warned = true;
                }
                if was {
                    // What waits on it fails now (reads retry on the
                    // primary) instead of hanging until TCP gives up.
                    ups.close_server(i);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ups.cfg.role_interval.saturating_sub(took)) => {}
            _ = s.poke.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn role_replies() {
        let m = Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(42),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::BulkString(b"6380".to_vec()),
                Value::BulkString(b"40".to_vec()),
            ])]),
        ]);
        let r = parse_role(&m).unwrap();
        assert_eq!((r.role, r.offset, r.link_up), (Role::Primary, 42, true));
        assert_eq!(r.acks, [40]);
        let s = Value::Array(vec![
            Value::BulkString(b"slave".to_vec()),
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(6379),
            Value::BulkString(b"connect".to_vec()),
            Value::Int(-1),
        ]);
        let r = parse_role(&s).unwrap();
        assert_eq!((r.role, r.offset, r.link_up), (Role::Replica, 0, false));
        assert!(parse_role(&Value::Int(1)).is_none());
    }
}
