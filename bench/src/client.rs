//! Talking to an emulated world's databases, for harnesses and benchmarks:
//!
//! - [`Reply`], [`command`] and [`parse_reply`]: RESP2 requests and replies
//!   (what the harnesses send and read, nothing more).
//! - [`Conn`]: a blocking RESP connection to a node's client port, logged
//!   in to a database with its token (`AUTH name token`), as a customer's
//!   app connects.
//! - [`Database`], [`create`], [`record`], [`wait_controller`],
//!   [`settled`]: a database created through the admin API (`PUT
//!   /admin/tenants/{id}`) and its role record as the nodes' `/cluster`
//!   shows it (epoch, primary, standby, in-sync standby).
//! - [`StoreStream`]: a router's store stream to a node (QUIC, a
//!   certificate of the cluster's CA: [`router_client`]), each request
//!   after its `ENVELOPE`; a write's reply carries its token
//!   (`epoch:replid:offset`), so a harness knows under which epoch the
//!   node that acknowledged it wrote it (docs/ROUTING.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anykv_gossip::sync::{QuicDuplex, StoreClient};
use anykv_gossip::tls::ClusterCa;
use anykv_server::envelope::{split_reply_token, Envelope, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::world::{http, World};

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...`, without the `-`.
    Err(String),
    Int(i64),
    /// `$...` (None: `$-1`, or RESP3's `_`).
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// A bulk reply as an unsigned number: Ok(None) for a missing key,
    /// Err for anything else.
    pub fn as_u64(&self) -> Result<Option<u64>, String> {
        match self {
            Reply::Bulk(None) => Ok(None),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("not a number: {:?}", String::from_utf8_lossy(b))),
            other => Err(format!("not a bulk reply: {other:?}")),
        }
    }
}

/// A request as a RESP array of bulk strings.
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The first reply in `buf` and the bytes it took; Ok(None) while it is
/// incomplete, Err when `buf` is not RESP.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_nested(buf, 0)
}

/// Arrays nested deeper than this are refused (not RESP any server sends
/// here; the recursion must not exhaust the stack).
const MAX_DEPTH: usize = 64;

fn parse_nested(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("a reply nested more than {MAX_DEPTH} arrays deep"));
    }
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..nl]).map_err(|_| "a line that is not UTF-8")?;
    let head = nl + 2;
    let num = || -> Result<i64, String> {
        line.parse()
            .map_err(|_| format!("a bad length or number: {line:?}"))
    };
    Ok(Some(match kind {
        b'+' => (Reply::Simple(line.to_string()), head),
        b'-' => (Reply::Err(line.to_string()), head),
        b':' => (Reply::Int(num()?), head),
        b'_' => (Reply::Bulk(None), head),
        b'$' => match num()? {
            n if n < 0 => (Reply::Bulk(None), head),
            n => {
                let end = head + n as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                (Reply::Bulk(Some(buf[head..end].to_vec())), end + 2)
            }
        },
        b'*' => match num()? {
            n if n < 0 => (Reply::Array(Vec::new()), head),
            n => {
                let mut at = head;
                // (A length is only a claim: what is reserved is capped.)
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    match parse_nested(&buf[at..], depth + 1)? {
                        Some((r, used)) => {
                            items.push(r);
                            at += used;
                        }
                        None => return Ok(None),
                    }
                }
                (Reply::Array(items), at)
            }
        },
        other => {
            return Err(format!(
                "not RESP: a reply starting with {:?}",
                other as char
            ))
        }
    }))
}

/// A blocking RESP connection to a node's client port.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (within `connect` time) and, with `login` (database name,
    /// token), logs in; None when either fails. Replies are waited for at
    /// most 5 s (see [`Conn::set_timeout`]).
    pub fn open(addr: SocketAddr, login: Option<(&str, &str)>) -> Option<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_nodelay(true).ok()?;
        let mut c = Conn { s, buf: Vec::new() };
        c.set_timeout(Duration::from_secs(5));
        if let Some((name, token)) = login {
            if !matches!(c.call(&["AUTH", name, token])?, Reply::Simple(_)) {
                return None;
            }
        }
        Some(c)
    }

    /// How long [`Conn::read`] waits for a reply.
    pub fn set_timeout(&mut self, d: Duration) {
        let _ = self.s.set_read_timeout(Some(d));
    }

    /// Sends a request and reads its reply; None on a timeout or a closed
    /// connection.
    pub fn call(&mut self, args: &[&str]) -> Option<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends a request without waiting for its reply.
    pub fn send(&mut self, args: &[&str]) -> Option<()> {
        self.s.write_all(&command(args)).ok()
    }

    /// The next reply; None on a timeout (what arrived so far is kept for
    /// the next call) or a closed connection.
    pub fn read(&mut self) -> Option<Reply> {
        self.next_reply().ok()
    }

    /// The next reply, or why none came: `closed`, `timed out` (what
    /// arrived so far is kept for the next call), or another error.
    pub fn next_reply(&mut self) -> Result<Reply, String> {
        loop {
            if let Some((r, used)) = parse_reply(&self.buf)? {
                self.buf.drain(..used);
                return Ok(r);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out".into())
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A database to create through the admin API.
#[derive(Clone, Debug)]
pub struct Database {
    pub id: u64,
    /// The name clients log in with (`AUTH name token`).
    pub name: String,
    pub token: String,
    pub primary_region: String,
    pub read_regions: Vec<String>,
    /// `region` or `async`.
    pub durability: String,
    /// `nearest`, or `strong` (a leased primary serves reads only under
    /// its lease).
    pub consistency: String,
}

impl Database {
    /// The catalog entry `PUT /admin/tenants/{id}` takes.
    pub fn entry(&self) -> serde_json::Value {
        let digest: String = anykv_server::catalog::token_digest(self.token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        serde_json::json!({
            "id": self.id, "name": self.name, "token_sha256": [digest], "org": "acme",
            "primary_region": self.primary_region, "read_regions": self.read_regions,
            "maxmemory": 0, "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
            "durability": self.durability, "consistency": self.consistency, "version": 1
        })
    }
}

/// Creates `db` through node `via`'s admin API.
pub fn create(w: &World, via: &str, db: &Database) -> Result<(), String> {
    let node = w.node(via).map_err(|e| e.to_string())?;
    match http(
        node.http,
        "PUT",
        &format!("/admin/tenants/{}", db.id),
        w.admin_token(),
        &db.entry().to_string(),
    ) {
        Some((200, _)) => Ok(()),
        other => Err(format!("creating database {}: {other:?}", db.id)),
    }
}

/// Database `id`'s role record as node `by` sees it.
pub fn record(w: &World, by: &str, id: u64) -> Option<serde_json::Value> {
    w.cluster_view(by)?["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
}

/// Waits until node `by` shows `region`'s controller promoting
/// automatically (a formed group with a leader).
pub fn wait_controller(w: &World, by: &str, region: &str, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        let formed = w.cluster_view(by).is_some_and(|v| {
            v["controllers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["region"] == region && c["promotion"] == "automatic")
            })
        });
        if formed {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "{region}'s controller did not form within {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A role record: epoch, primary, standby.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub epoch: u64,
    pub primary: String,
    pub standby: String,
}

/// Waits (at most `limit`) until node `by` shows database `id` past epoch
/// `after` with a standby recorded in sync.
pub fn settled(w: &World, by: &str, id: u64, after: u64, limit: Duration) -> Result<Role, String> {
    let end = Instant::now() + limit;
    loop {
        if let Some(r) = record(w, by, id) {
            let epoch = r["epoch"].as_u64().unwrap_or(0);
            if let (Some(p), Some(s)) = (r["primary"].as_str(), r["in_sync"].as_str()) {
                if r["standby"] == s && epoch > after {
                    return Ok(Role {
                        epoch,
                        primary: p.to_string(),
                        standby: s.to_string(),
                    });
                }
            }
        }
        if Instant::now() > end {
            return Err(format!(
                "database {id} did not settle within {limit:?}: {:?}",
                record(w, by, id)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A QUIC client with a certificate of the world's cluster CA (in `dir`,
/// as `cluster keygen` made it): what a router opens store streams with.
/// Must be called within a tokio runtime.
pub fn router_client(dir: &Path) -> Result<StoreClient, String> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()))
    };
    let ca = ClusterCa {
        cert_pem: read("cluster-ca.pem")?,
        key_pem: read("cluster-ca.key")?,
    };
    let tls = ca
        .issue("fault-harness")
        .map_err(|e| format!("a router certificate: {e}"))?;
    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
    StoreClient::new(&tls, bind).map_err(|e| format!("a QUIC client: {e}"))
}

/// A router's store stream to one node for one database.
pub struct StoreStream {
    io: QuicDuplex,
    buf: Vec<u8>,
}

impl StoreStream {
    /// A stream to the node whose sync endpoint is `sync` (its gossip port
    /// plus one).
    pub async fn open(
        c: &StoreClient,
        sync: SocketAddr,
        tenant: u64,
    ) -> Result<StoreStream, String> {
        let io = c.open(sync, tenant).await.map_err(|e| e.to_string())?;
        Ok(StoreStream {
            io,
            buf: Vec::new(),
        })
    }

    /// Sends requests, each after its envelope, in one write (a pipeline).
    pub async fn send(&mut self, reqs: &[(&Envelope, &[&str])]) -> Result<(), String> {
        let mut wire = Vec::new();
        for (env, args) in reqs {
            env.encode(&mut wire);
            wire.extend_from_slice(&command(args));
        }
        self.io.write_all(&wire).await.map_err(|e| e.to_string())
    }

    /// The next reply and, when its request wrote, the write's token. Err
    /// when the stream closed or sent something that is not RESP (bound
    /// the wait with a timeout: a stopped node never answers).
    pub async fn reply(&mut self) -> Result<(Option<Token>, Reply), String> {
        loop {
            let (token, at) = match split_reply_token(&self.buf) {
                Some((t, used)) => (Some(t), used),
                None => (None, 0),
            };
            // A token attribute arrived in part: wait for the rest.
            let partial = token.is_none() && self.buf.first() == Some(&b'|');
            if !partial {
                if let Some((r, used)) = parse_reply(&self.buf[at..])? {
                    self.buf.drain(..at + used);
                    return Ok((token, r));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the node closed the stream".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let wire = b"+OK\r\n-ERR x y\r\n:-3\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while at < wire.len() {
            let (r, used) = parse_reply(&wire[at..]).unwrap().unwrap();
            got.push(r);
            at += used;
        }
        assert_eq!(
            got,
            [
                Reply::Simple("OK".into()),
                Reply::Err("ERR x y".into()),
                Reply::Int(-3),
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Bulk(None),
                Reply::Array(vec![Reply::Bulk(Some(b"a".to_vec())), Reply::Int(1)]),
            ]
        );
        for cut in [1, 4, 7, 8] {
            assert_eq!(parse_reply(&b"$3\r\nabc\r\n"[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(parse_reply(b"*2\r\n:1\r\n"), Ok(None));
        assert!(parse_reply(b"?\r\n").is_err());
        assert_eq!(Reply::Bulk(Some(b"12".to_vec())).as_u64(), Ok(Some(12)));
        assert!(Reply::Bulk(Some(b"x".to_vec())).as_u64().is_err());
    }
}
