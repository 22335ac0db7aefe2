//! Shared harness of the in-process replay tests: a client connection to an
//! in-process tenant that captures its propagation log, dispatching commands
//! on a virtual clock, splitting a captured log into its commands, and
//! replaying it on a fresh tenant to compare the two keyspaces.

use std::net::SocketAddr;
use std::rc::Rc;

use anykv_server::client::{ClientInfo, Session};
use anykv_server::dispatch::dispatch;
use anykv_server::resp::{ParseLimits, Reply, Request, RequestParser};
use anykv_server::shared::{Settings, Shared};
use anykv_server::tenant::{Tenant, TenantId};

/// Virtual clock epoch of the original run.
pub const START_MS: i64 = 1_700_000_000_000;

/// One client connection to one in-process tenant.
pub struct Node {
    pub t: Tenant,
    pub s: Session,
    pub out: Reply,
}

impl Node {
    pub fn new(id: u64) -> Node {
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        t.log.enable_capture();
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let laddr: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let info = Rc::new(ClientInfo::new(id, addr, laddr, -1, START_MS));
        Node {
            t,
            s: Session::new(info, true),
            out: Reply::new(2),
        }
    }

    /// Runs one command; returns its reply.
    pub fn run(&mut self, shared: &Shared, set: &Settings, args: &[&[u8]], now_ms: i64) -> &[u8] {
        self.out.buf.clear();
        dispatch(
            &mut self.t,
            &mut self.s,
            shared,
            set,
            args,
            &mut self.out,
            now_ms,
        );
        &self.out.buf
    }
}

/// Splits a propagation log into its commands.
pub fn parse_log(log: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut p = RequestParser::new();
    let lim = ParseLimits::default();
    let mut v = Vec::new();
    while let Some(r) = p.next(log, &lim).expect("log parses") {
        assert_eq!(r, Request::Multibulk, "the log holds multibulks only");
        v.push(p.ranges().iter().map(|r| log[r.clone()].to_vec()).collect());
    }
    assert_eq!(p.consumed(), log.len(), "log ends mid-command");
    v
}

/// Every key of `t` with its database and OBJECT ENCODING, sorted.
#[allow(dead_code)]
pub fn encodings(t: &Tenant) -> Vec<(usize, Vec<u8>, &'static str)> {
    let mut v: Vec<(usize, Vec<u8>, &'static str)> =
        t.ks.dbs
            .iter()
            .enumerate()
            .flat_map(|(i, db)| {
                db.iter()
                    .map(move |e| (i, e.key.as_bytes().to_vec(), e.value.encoding()))
            })
            .collect();
    v.sort();
    v
}

/// An original run and its replay, from [`run_and_replay`].
#[allow(dead_code)]
pub struct Replayed {
    pub orig: Node,
    pub rep: Node,
    /// The commands of the original's propagation log.
    pub cmds: Vec<Vec<Vec<u8>>>,
    /// Error replies the original run got.
    pub errors: usize,
    /// [`encodings`] of the original and of the replay (same keys).
    pub eo: Vec<(usize, Vec<u8>, &'static str)>,
    pub er: Vec<(usize, Vec<u8>, &'static str)>,
}

/// Runs `ops` commands from `next` (each with the milliseconds the virtual
/// clock advances before it) on a fresh node from [`START_MS`], then replays
/// its captured propagation log on another fresh node at `START_MS`: every
/// replayed command must succeed, the original must hold keys, and the
/// replay must hold the same keys.
#[allow(dead_code)]
pub fn run_and_replay(
    seed: u64,
    shared: &Shared,
    set: &Settings,
    ops: usize,
    mut next: impl FnMut() -> (i64, Vec<Vec<u8>>),
) -> Replayed {
    let mut orig = Node::new(1);
    let mut now = START_MS;
    let mut errors = 0;
    for _ in 0..ops {
        let (step, cmd) = next();
        now += step;
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_slice()).collect();
        if orig.run(shared, set, &args, now).first() == Some(&b'-') {
            errors += 1;
        }
    }
    let log = orig.t.log.take_capture().to_vec();
    let cmds = parse_log(&log);
    let mut rep = Node::new(2);
    for c in &cmds {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
        let reply = rep.run(shared, set, &args, START_MS);
        assert_ne!(
            reply.first(),
            Some(&b'-'),
            "seed {seed}: replaying {:?} failed: {}",
            c.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(reply)
        );
    }
    assert!(orig.t.ks.total_keys() > 0, "seed {seed}: empty keyspace");
    let (eo, er) = (encodings(&orig.t), encodings(&rep.t));
    assert_eq!(
        eo.iter().map(|e| (e.0, &e.1)).collect::<Vec<_>>(),
        er.iter().map(|e| (e.0, &e.1)).collect::<Vec<_>>(),
        "seed {seed}: different keys after replay"
    );
    Replayed {
        orig,
        rep,
        cmds,
        errors,
        eo,
        er,
    }
}

impl Replayed {
    /// Every key must have the same OBJECT ENCODING in the replay as in the
    /// original, unless `may_differ(key)`.
    #[allow(dead_code)]
    pub fn check_encodings(&self, seed: u64, may_differ: impl Fn(&Vec<u8>) -> bool) {
        for (o, r) in self.eo.iter().zip(&self.er) {
            assert!(
                o.2 == r.2 || may_differ(&o.1),
                "seed {seed}: {:?} is {} but {} after replay",
                String::from_utf8_lossy(&o.1),
                o.2,
                r.2
            );
        }
    }

    /// The replayed keyspace must have the original's digest; returns the
    /// (upper-case) names of the logged commands, after printing a summary.
    #[allow(dead_code)]
    pub fn check_digest(&self, seed: u64, ops: usize) -> std::collections::BTreeSet<String> {
        assert!(
            self.orig.t.ks.digest() == self.rep.t.ks.digest(),
            "seed {seed}: replayed keyspace differs"
        );
        let names: std::collections::BTreeSet<String> = self
            .cmds
            .iter()
            .map(|c| String::from_utf8_lossy(&c[0]).to_uppercase())
            .collect();
        eprintln!(
            "seed {seed}: {ops} ops, {} errors, {} keys, log entries {names:?}",
            self.errors,
            self.orig.t.ks.total_keys()
        );
        names
    }
}
