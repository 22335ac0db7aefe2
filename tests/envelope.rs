//! The store's side of the router ↔ store envelope (docs/ROUTING.md), as a
//! router will use it: a QUIC store stream opened with a certificate of the
//! cluster's CA to a node of a three-node world (two in iad, one in cdg,
//! the WAN emulated between them), requests of several clients pipelined
//! on it, each after its `ENVELOPE`.
//!
//! Checked: a write's reply carries the write's token (the primary's epoch,
//! replid and offset, as its INFO says) before the reply the client sees;
//! reads carry the token of the copy they read; each request runs in its
//! client's database and RESP version, and MONITOR shows the client's address, not the router's; the
//! cdg replica answers `-BEHIND` for a token it has not applied and serves
//! it once it has (always with the write's value); replicas refuse writes;
//! malformed envelopes, another tenant's, and commands that act on the
//! router's own connection are refused without running the request; a
//! blocking command waits as its client's (a timeout in its RESP version,
//! a pop served later with its token); a customer's own connection does
//! not know `ENVELOPE`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anykv_bench::world::World;
use anykv_gossip::sync::{QuicDuplex, StoreClient};
use anykv_gossip::tls::ClusterCa;
use anykv_server::envelope::{split_reply_token, Envelope, Token};
use common::{wait_for as wait, RespConn, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "envelope-admin-token";
const TOKEN: &str = "envelope-tenant-token-0123456789";
const TENANT: u64 = 7;

/// Length of the first complete RESP2/RESP3 value in `b` (attributes
/// included), None while incomplete.
fn frame_len(b: &[u8]) -> Option<usize> {
    let nl = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..nl]).ok()?;
    let head = nl + 2;
    let items = |n: usize, per: usize| {
        let mut at = head;
        for _ in 0..n * per {
            at += frame_len(&b[at..])?;
        }
        Some(at)
    };
    match b[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' => Some(head),
        b'$' | b'=' | b'!' => match line.parse::<i64>().ok()? {
            -1 => Some(head),
            n => {
                let end = head + n as usize + 2;
                (b.len() >= end).then_some(end)
            }
        },
        b'*' | b'~' | b'>' => match line.parse::<i64>().ok()? {
            -1 => Some(head),
            n => items(n as usize, 1),
        },
        b'%' => items(line.parse().ok()?, 2),
        b'|' => {
            // An attribute, then the value it describes.
            let at = items(line.parse().ok()?, 2)?;
            Some(at + frame_len(&b[at..])?)
        }
        _ => panic!("not RESP: {:?}", String::from_utf8_lossy(b)),
    }
}

/// A router's view of one store stream.
struct Stream {
    io: QuicDuplex,
    buf: Vec<u8>,
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn envelope(db: usize, client: u64, resp: u8, addr: &str, min: Option<&Token>) -> Envelope {
    Envelope {
        tenant: TENANT,
        db,
        client_id: client,
        resp,
        addr: addr.parse().expect("address"),
        name: format!("client-{client}").into_bytes(),
        min_token: min.cloned(),
        user: String::new(),
        relayed: false,
    }
}

impl Stream {
    /// A stream to the node whose gossip address is `node` (its sync
    /// endpoint is on the next port).
    async fn open(c: &StoreClient, node: SocketAddr) -> Stream {
        let sync = SocketAddr::new(node.ip(), node.port() + 1);
        let io = c.open(sync, TENANT).await.expect("a store stream");
        Stream {
            io,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
    }

    /// Sends requests (each after its envelope, or bare when None) in one
    /// write: a pipeline of several clients.
    async fn pipeline(&mut self, reqs: &[(Option<Envelope>, &[&str])]) {
        let mut wire = Vec::new();
        for (env, args) in reqs {
            if let Some(e) = env {
                e.encode(&mut wire);
            }
            wire.extend_from_slice(&cmd(args));
        }
        self.send(&wire).await;
    }

    /// The next reply: (its token, if any, and its bytes as the client
    /// sees them).
    async fn reply(&mut self) -> (Option<Token>, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(n) = (!self.buf.is_empty())
                .then(|| frame_len(&self.buf))
                .flatten()
            {
                let frame: Vec<u8> = self.buf.drain(..n).collect();
                return match split_reply_token(&frame) {
                    Some((t, used)) => (Some(t), frame[used..].to_vec()),
                    None => (None, frame),
                };
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .expect("a reply within 10 s")
                .expect("read");
            assert!(n > 0, "the store closed the stream");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn one(&mut self, env: Envelope, args: &[&str]) -> (Option<Token>, Vec<u8>) {
        self.pipeline(&[(Some(env), args)]).await;
        self.reply().await
    }
}

#[test]
fn the_store_serves_a_routers_enveloped_requests() {
    let spec = common::world_spec("envelope", 43, 21920, &[("iad", 2), ("cdg", 1)], ADMIN, &[]);
    let w = World::start(&spec).expect("the world starts");
    w.wait_members(3, Duration::from_secs(60))
        .expect("three members alive");
    let entry = common::shop_entry(TENANT, TOKEN, &["cdg"], "async", "nearest", 1);
    common::put_tenant(&w, &entry);
    let placed = common::placed_tenant(&w, TENANT);
    let primary = w
        .node(placed["primary"].as_str().expect("primary"))
        .expect("primary node")
        .clone();
    let epoch = placed["epoch"].as_u64().expect("epoch");
    let far = w.node("n3").expect("n3").clone();
    let login = |addr: SocketAddr| -> Option<RespConn> {
        let mut c = RespConn::connect_addr(addr).ok()?;
        matches!(c.cmd(&["AUTH", "shop", TOKEN]).ok()?, Value::Simple(_)).then_some(c)
    };
    let mut p = None;
    wait("the primary takes writes", Duration::from_secs(20), || {
        p = login(primary.resp);
        p.as_mut()
            .is_some_and(|c| matches!(c.cmd(&["SET", "warm", "1"]), Ok(Value::Simple(_))))
    });
    let mut p = p.expect("primary connection");
    wait("the cdg replica serves", Duration::from_secs(30), || {
        login(far.resp)
            .is_some_and(|mut c| c.cmd(&["GET", "warm"]).ok() == Some(Value::Bulk(b"1".to_vec())))
    });

    // A router's certificate, from the cluster's CA like every node's.
    let read = |f: &str| std::fs::read_to_string(spec.dir.join(f)).expect(f);
    let ca = ClusterCa {
        cert_pem: read("cluster-ca.pem"),
        key_pem: read("cluster-ca.key"),
    };
    let tls = ca.issue("router-test").expect("a router certificate");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = StoreClient::new(&tls, "127.0.0.1:0".parse().unwrap()).expect("client");
        let mut s = Stream::open(&client, primary.gossip).await;

        // A write: its token first, then the reply the client sees.
        let (tok, reply) = s
            .one(
                envelope(0, 501, 2, "10.1.2.3:4567", None),
                &["SET", "k", "v1"],
            )
            .await;
        assert_eq!(reply, b"+OK\r\n");
        let tok = tok.expect("a write's reply carries its token");
        assert_eq!(tok.epoch, epoch, "the role record's epoch");
        assert_eq!(
            tok.replid,
            common::info_field(&mut p, "replication", "master_replid")
        );
        let offset: u64 = common::info_field(&mut p, "replication", "master_repl_offset")
            .parse()
            .expect("offset");
        assert_eq!(tok.offset, offset, "the offset right after the write");

        // Reads carry the token of where the copy stood (a router keeps
        // it: the client's later reads never go back in time); clients of
        // several databases and RESP versions pipelined on one stream each
        // get theirs.
        s.pipeline(&[
            (
                Some(envelope(0, 501, 2, "10.1.2.3:4567", None)),
                &["GET", "k"],
            ),
            (
                Some(envelope(2, 502, 3, "[fdaa::9]:999", None)),
                &["HSET", "h", "f", "x"],
            ),
            (
                Some(envelope(2, 502, 3, "[fdaa::9]:999", None)),
                &["HGETALL", "h"],
            ),
            (
                Some(envelope(2, 503, 2, "10.1.2.4:1", None)),
                &["HGETALL", "h"],
            ),
            (
                Some(envelope(0, 503, 2, "10.1.2.4:1", None)),
                &["EXISTS", "h"],
            ),
        ])
        .await;
        assert_eq!(
            s.reply().await,
            (Some(tok.clone()), b"$2\r\nv1\r\n".to_vec())
        );
        let (t, r) = s.reply().await;
        assert_eq!(r, b":1\r\n");
        let hset = t.expect("HSET's token");
        assert!(hset.offset > tok.offset);
        assert_eq!(
            s.reply().await,
            (Some(hset.clone()), b"%1\r\n$1\r\nf\r\n$1\r\nx\r\n".to_vec())
        );
        assert_eq!(
            s.reply().await,
            (Some(hset.clone()), b"*2\r\n$1\r\nf\r\n$1\r\nx\r\n".to_vec())
        );
        assert_eq!(
            s.reply().await,
            (Some(hset), b":0\r\n".to_vec()),
            "h is in db 2 only"
        );
        assert_eq!(
            p.cmd(&["SELECT", "2"]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
        assert_eq!(
            p.cmd(&["HGET", "h", "f"]).ok(),
            Some(Value::Bulk(b"x".to_vec()))
        );
        assert_eq!(
            p.cmd(&["SELECT", "0"]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );

        // MONITOR shows the client's address.
        let mut m = login(primary.resp).expect("monitor connection");
        assert_eq!(
            m.cmd(&["MONITOR"]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
        let (_, r) = s
            .one(envelope(0, 504, 2, "10.9.8.7:6543", None), &["GET", "k"])
            .await;
        assert_eq!(r, b"$2\r\nv1\r\n");
        let Ok(Value::Simple(line)) = m.read_reply() else {
            panic!("a MONITOR line");
        };
        let line = String::from_utf8_lossy(&line);
        assert!(line.contains("[0 10.9.8.7:6543]"), "{line}");
        drop(m);

        // Refused, the request after it not run: a malformed envelope,
        // another tenant's, a command the router answers itself.
        let mut bad = envelope(0, 505, 2, "10.1.2.3:4567", None);
        bad.tenant = 99;
        let mut wire = cmd(&["ENVELOPE", "7", "x", "1", "2", "1.2.3.4:5", "", ""]);
        wire.extend_from_slice(&cmd(&["SET", "never1", "x"]));
        bad.encode(&mut wire);
        wire.extend_from_slice(&cmd(&["SET", "never2", "x"]));
        envelope(20, 505, 2, "10.1.2.3:4567", None).encode(&mut wire);
        wire.extend_from_slice(&cmd(&["SET", "never3", "x"]));
        envelope(0, 505, 2, "10.1.2.3:4567", None).encode(&mut wire);
        wire.extend_from_slice(&cmd(&["SELECT", "3"]));
        envelope(0, 505, 2, "10.1.2.3:4567", None).encode(&mut wire);
        // AUTH in an envelope is a login check (a node holding no copy
        // asks): the database's users for a token or a user's password,
        // WRONGPASS otherwise; nothing logs in.
        wire.extend_from_slice(&cmd(&["AUTH", "default", TOKEN]));
        envelope(0, 505, 2, "10.1.2.3:4567", None).encode(&mut wire);
        wire.extend_from_slice(&cmd(&["AUTH", "shop", TOKEN]));
        s.send(&wire).await;
        for want in [
            "-ERR ENVELOPE: invalid db",
            "-ERR ENVELOPE for tenant 99 on a stream of tenant 7",
            "-ERR DB index is out of range",
            "-ERR SELECT acts on the router's connection",
            "$",
            "-WRONGPASS invalid username-password pair",
        ] {
            let (t, r) = s.reply().await;
            assert!(t.is_none());
            let r = String::from_utf8_lossy(&r);
            assert!(r.starts_with(want), "{r} (wanted {want})");
            if want == "$" {
                assert!(r.contains("\r\nuser default on "), "{r}");
            }
        }
        for k in ["never1", "never2", "never3"] {
            assert_eq!(p.cmd(&["EXISTS", k]).ok(), Some(Value::Int(0)), "{k}");
        }
        // The stream still works, in its own database.
        let (t, r) = s
            .one(
                envelope(0, 505, 2, "10.1.2.3:4567", None),
                &["SET", "k", "v2"],
            )
            .await;
        assert_eq!(r, b"+OK\r\n");
        let mut last = t.expect("token");

        // The cdg replica, ~50 ms behind: a read that must see the
        // client's last write is answered BEHIND until the replica has it,
        // then served with that write's value.
        let mut r = Stream::open(&client, far.gossip).await;
        let (mut behind, mut served) = (0, 0);
        for i in 0..20 {
            let v = format!("w{i}");
            let (t, rep) = s
                .one(
                    envelope(0, 506, 2, "10.1.2.3:4567", None),
                    &["SET", "k", &v],
                )
                .await;
            assert_eq!(rep, b"+OK\r\n");
            last = t.expect("token");
            let start = Instant::now();
            loop {
                let (t, rep) = r
                    .one(
                        envelope(0, 506, 2, "10.1.2.3:4567", Some(&last)),
                        &["GET", "k"],
                    )
                    .await;
                let text = String::from_utf8_lossy(&rep).into_owned();
                if let Some(their) = text.strip_prefix("-BEHIND ") {
                    assert!(t.is_none(), "a refusal carries no token");
                    let their = Token::parse(their.trim_end().as_bytes()).expect("its token");
                    assert_eq!(their.replid, last.replid);
                    assert!(their.offset < last.offset, "{their:?} vs {last:?}");
                    behind += 1;
                    assert!(start.elapsed() < Duration::from_secs(10), "never caught up");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                assert_eq!(text, format!("${}\r\n{v}\r\n", v.len()), "round {i}");
                // The replica's own token: at least the write it served.
                let t = t.expect("a served read carries the replica's token");
                assert_eq!(t.replid, last.replid);
                assert!(t.offset >= last.offset, "{t:?} vs {last:?}");
                served += 1;
                break;
            }
        }
        assert_eq!(served, 20);
        assert!(
            behind > 0,
            "the replica was never behind: the test shows nothing"
        );
        // A write sent to the replica as to the primary (a router that
        // has not learnt of a handoff) is sent on to the primary, and its
        // reply carries the primary's token.
        let (t, rep) = r
            .one(
                envelope(0, 507, 2, "10.1.2.3:4567", None),
                &["SET", "k", "relayed"],
            )
            .await;
        assert_eq!(rep, b"+OK\r\n", "{}", String::from_utf8_lossy(&rep));
        let t = t.expect("the primary's token");
        assert_eq!(t.replid, last.replid);
        assert!(t.offset > last.offset, "{t:?} vs {last:?}");
        assert_eq!(
            p.cmd(&["GET", "k"]).ok(),
            Some(Value::Bulk(b"relayed".to_vec()))
        );
        // So are the requests whose state lives on the primary: a script
        // loaded through the replica is in the primary's cache (EVALSHA
        // runs there), a user set through it is the primary's.
        let (_, rep) = r
            .one(
                envelope(0, 507, 2, "10.1.2.3:4567", None),
                &["SCRIPT", "LOAD", "return 'relayed script'"],
            )
            .await;
        let sha = String::from_utf8_lossy(&rep)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert_eq!(sha.len(), 40, "{}", String::from_utf8_lossy(&rep));
        assert_eq!(
            p.cmd(&["SCRIPT", "EXISTS", &sha]).ok(),
            Some(Value::Array(vec![Value::Int(1)]))
        );
        let (_, rep) = r
            .one(
                envelope(0, 507, 2, "10.1.2.3:4567", None),
                &["ACL", "SETUSER", "relayed-user", "on", ">pw", "+get"],
            )
            .await;
        assert_eq!(rep, b"+OK\r\n", "{}", String::from_utf8_lossy(&rep));
        assert!(
            matches!(
                p.cmd(&["ACL", "GETUSER", "relayed-user"]).ok(),
                Some(Value::Array(_))
            ),
            "the primary never got the user"
        );
        // Once only: a relayed write that meets a replica is refused.
        let (_, rep) = r
            .one(
                Envelope {
                    relayed: true,
                    ..envelope(0, 507, 2, "10.1.2.3:4567", None)
                },
                &["SET", "k", "x"],
            )
            .await;
        assert!(
            rep.starts_with(b"-READONLY"),
            "{}",
            String::from_utf8_lossy(&rep)
        );
        assert_eq!(
            p.cmd(&["GET", "k"]).ok(),
            Some(Value::Bulk(b"relayed".to_vec()))
        );
        // A token of another history is never served.
        let other = Token {
            replid: "f".repeat(40),
            ..last.clone()
        };
        let (_, rep) = r
            .one(
                envelope(0, 507, 2, "10.1.2.3:4567", Some(&other)),
                &["GET", "k"],
            )
            .await;
        assert!(
            rep.starts_with(b"-BEHIND "),
            "{}",
            String::from_utf8_lossy(&rep)
        );
    });

    // A blocking command waits as its client's: a timeout answers in the
    // client's RESP version, a pop served by another client's push
    // carries the token of the pop.
    rt.block_on(async {
        let client = StoreClient::new(&tls, "127.0.0.1:0".parse().unwrap()).expect("client");
        let mut a = Stream::open(&client, primary.gossip).await;
        let mut b = Stream::open(&client, primary.gossip).await;
        let (t, r) = b
            .one(
                envelope(0, 601, 3, "10.6.0.1:1", None),
                &["BLPOP", "nothing", "0.2"],
            )
            .await;
        assert_eq!(
            (t, r),
            (None, b"_\r\n".to_vec()),
            "RESP3's null, not RESP2's"
        );
        b.pipeline(&[(
            Some(envelope(0, 602, 2, "10.6.0.2:1", None)),
            &["BLPOP", "q", "0"],
        )])
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (pushed, _) = a
            .one(
                envelope(0, 603, 2, "10.6.0.3:1", None),
                &["RPUSH", "q", "x"],
            )
            .await;
        let pushed = pushed.expect("RPUSH's token");
        let (t, r) = b.reply().await;
        assert_eq!(r, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
        let t = t.expect("the served pop's token");
        assert!(t.offset >= pushed.offset, "{t:?} before {pushed:?}");
        // The stream is itself again afterwards.
        let (t, r) = b
            .one(
                envelope(1, 604, 2, "10.6.0.4:1", None),
                &["SET", "after", "1"],
            )
            .await;
        assert_eq!(r, b"+OK\r\n");
        assert!(t.is_some());
    });

    // Replication between nodes is fenced by the epoch: the primary
    // answers a replica that has seen its epoch (or an older one) with
    // its own, and refuses one that has seen a newer epoch (this node is
    // not the primary of that epoch any more).
    rt.block_on(async {
        let client = StoreClient::new(&tls, "127.0.0.1:0".parse().unwrap()).expect("client");
        let mut s = Stream::open(&client, primary.gossip).await;
        for seen in [0, epoch] {
            s.pipeline(&[(None, &["REPLCONF", "EPOCH", &seen.to_string()])])
                .await;
            assert_eq!(s.reply().await.1, format!(":{epoch}\r\n").into_bytes());
        }
        let newer = (epoch + 1).to_string();
        s.pipeline(&[(None, &["REPLCONF", "EPOCH", &newer])]).await;
        let (_, r) = s.reply().await;
        assert!(
            r.starts_with(b"-FENCED "),
            "{}",
            String::from_utf8_lossy(&r)
        );
    });

    // A customer's own connection does not know ENVELOPE.
    let reply = p
        .cmd(&["ENVELOPE", "7", "0", "1", "2", "1.2.3.4:5", "", ""])
        .expect("reply");
    let Value::Error(e) = reply else {
        panic!("{reply:?}");
    };
    assert!(
        e.starts_with(b"ERR unknown command 'ENVELOPE'"),
        "{}",
        String::from_utf8_lossy(&e)
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&spec.dir);
}
