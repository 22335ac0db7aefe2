//! The apply mode: runs a stream of effects that another log already holds
//! (a segment of the append-only log at start, later a primary's
//! replication stream) and appends the stream's own bytes to the tenant's
//! propagation log instead of re-encoding each effect.
//!
//! Why bytes as they are: a replica's offsets must equal its primary's
//! byte for byte (PSYNC asks for "everything after offset N"), and a
//! restart must continue the offsets of the run that wrote the log. Re-
//! encoding would change both (a `SELECT` placed differently, a
//! transaction unwrapped).
//!
//! Effects are applied with expiry off, as Redis's loading mode and its
//! master client: the source already decided what expired (its `DEL`s are
//! in the stream), so a `PEXPIREAT` in the past sets a past TTL and
//! deletes nothing, and no key vanishes because the wall clock moved.
//! Memory limits neither evict nor refuse, and CLIENT PAUSE does not hold
//! the stream back.

use std::rc::Rc;

use thiserror::Error;

use crate::client::{ClientInfo, Session};
use crate::resp::{ParseLimits, Reply, Request, RequestParser};
use crate::shared::{Settings, Shared};
use crate::tenant::Tenant;

/// Why a stream could not be applied.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("unparsable command: {0}")]
    Protocol(String),
    #[error("an inline command (a log holds only RESP multibulks)")]
    Inline,
    #[error("replaying {command} failed: {reply}")]
    Failed { command: String, reply: String },
}

/// Applies a stream of effects to one tenant, keeping the stream's state
/// (its current database, an open MULTI) across calls.
pub struct Applier {
    session: Session,
    parser: RequestParser,
    out: Reply,
    /// Bytes received and not yet applied (a command cut short).
    buf: Vec<u8>,
    /// Bytes of a transaction in progress (MULTI ... not yet EXEC): they
    /// join the log, and the offset, only when it completes, as Redis
    /// advances a replica's offset only outside MULTI. A link that drops
    /// mid-transaction resumes from before its MULTI.
    held: Vec<u8>,
    /// Commands applied so far.
    pub commands: u64,
    /// Take the primary's time stamps (`REPLCONF STAMP <ms>`, sent on
    /// cluster links only, outside the stream's offsets) instead of
    /// applying them.
    pub stamps: bool,
    /// The last stamp's primary time (Unix ms).
    pub last_stamp_ms: Option<i64>,
    /// A `REPLCONF GETACK` was applied: the primary wants an ACK now.
    pub getack: bool,
}

impl Default for Applier {
    fn default() -> Self {
        Applier::new()
    }
}

impl Applier {
    /// An applier for a stream that continues in database `db` (a partial
    /// resync, a replica's next link: the stream names its database only
    /// when it changes).
    pub fn in_db(db: usize) -> Self {
        let mut a = Applier::new();
        a.session.db = db;
        a
    }

    pub fn new() -> Self {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let info = Rc::new(ClientInfo::new(0, local, local, -1, crate::util::mstime()));
        let mut session = Session::new(info, true);
        session.unrestricted = true;
        session.replaying = true;
        Applier {
            session,
            parser: RequestParser::new(),
            out: Reply::new(2),
            buf: Vec::new(),
            held: Vec::new(),
            commands: 0,
            stamps: false,
            last_stamp_ms: None,
            getack: false,
        }
    }

    /// The database the stream is in (its last SELECT).
    pub fn db(&self) -> usize {
        self.session.db
    }

    /// Bytes held back because their command is not complete yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Applies every complete command of `data` (after what an earlier
    /// call held back), at time `now_ms` (which decides nothing the stream
    /// already decided: it only stamps LRU clocks). A command cut short is
    /// kept for the next call. On an error, the commands before the bad
    /// one stay applied and logged; the bad one is not.
    pub fn feed(
        &mut self,
        t: &mut Tenant,
        shared: &Shared,
        set: &Settings,
        data: &[u8],
        now_ms: i64,
    ) -> Result<(), ApplyError> {
        self.buf.extend_from_slice(data);
        let r = self.apply_buffered(t, shared, set, now_ms);
        let done = self.parser.consumed();
        self.buf.drain(..done);
        self.parser.rebase(done);
        r
    }

    fn apply_buffered(
        &mut self,
        t: &mut Tenant,
        shared: &Shared,
        set: &Settings,
        now_ms: i64,
    ) -> Result<(), ApplyError> {
        let lim = ParseLimits::default();
        loop {
            let start = self.parser.consumed();
            match self.parser.next(&self.buf, &lim) {
                Ok(Some(Request::Multibulk)) => {}
                Ok(Some(Request::Inline)) => return Err(ApplyError::Inline),
                Ok(None) => return Ok(()),
                Err(e) => return Err(ApplyError::Protocol(e.0)),
            }
            let end = self.parser.consumed();
            let buf = &self.buf;
            let args: Vec<&[u8]> = self
                .parser
                .ranges()
                .iter()
                .map(|r| &buf[r.clone()])
                .collect();
            if self.stamps
                && args.len() == 3
                && args[0].eq_ignore_ascii_case(b"replconf")
                && args[1].eq_ignore_ascii_case(b"stamp")
            {
                // Not the stream's bytes: neither applied nor counted.
                if let Some(ms) = crate::util::parse_i64(args[2]) {
                    self.last_stamp_ms = Some(ms);
                }
                continue;
            }
            if args.len() >= 2
                && args[0].eq_ignore_ascii_case(b"replconf")
                && args[1].eq_ignore_ascii_case(b"getack")
            {
                // Part of the stream (applied and counted); answered by the
                // link once this chunk is applied.
                self.getack = true;
            }
            if args.is_empty() {
                // `*0`: nothing to run, but the bytes are the stream's.
                self.held.extend_from_slice(&self.buf[start..end]);
                self.flush_held(t);
                continue;
            }
            self.out.buf.clear();
            let was = t.log.is_suppressed();
            t.log.set_suppressed(true);
            crate::dispatch::dispatch(
                t,
                &mut self.session,
                shared,
                set,
                &args,
                &mut self.out,
                now_ms,
            );
            t.log.set_suppressed(was);
            let failed = (self.out.buf.first() == Some(&b'-'))
                .then(|| String::from_utf8_lossy(args[0]).into_owned());
            self.commands += 1;
            // A command that failed is still part of the stream: its bytes
            // count (as Redis counts a failed command from its primary), so
            // the offset stays the primary's.
            self.held.extend_from_slice(&self.buf[start..end]);
            self.flush_held(t);
            if let Some(command) = failed {
                return Err(ApplyError::Failed {
                    command,
                    reply: String::from_utf8_lossy(&self.out.buf)
                        .trim_end()
                        .to_string(),
                });
            }
        }
    }

    /// Logs the held bytes unless a transaction is still open.
    fn flush_held(&mut self, t: &mut Tenant) {
        if self.session.multi.is_none() && !self.held.is_empty() {
            t.log.append_raw(&self.held, self.session.db);
            self.held.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tenant::TenantId;

    fn run(
        t: &mut Tenant,
        s: &mut Session,
        shared: &Shared,
        set: &Settings,
        cmd: &[&str],
        now: i64,
    ) -> Vec<u8> {
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
        let mut out = Reply::new(2);
        crate::dispatch::dispatch(t, s, shared, set, &args, &mut out, now);
        out.buf.to_vec()
    }

    fn session() -> Session {
        let a = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        Session::new(Rc::new(ClientInfo::new(7, a, a, -1, 0)), true)
    }

    /// A primary's log, fed to a replica in arbitrary pieces, gives the
    /// replica the same keyspace and the same offset, byte for byte, even
    /// long after the TTLs in it passed.
    #[test]
    fn a_replica_fed_the_log_in_pieces_matches_its_primary() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let now = 1_700_000_000_000;
        let mut p = Tenant::new(TenantId::DEFAULT, "p", 16);
        p.log.enable_capture();
        let mut s = session();
        for cmd in [
            &["SET", "a", "1", "PX", "50"][..],
            &["PERSIST", "a"],
            &["SELECT", "3"],
            &["SET", "b", "2", "EX", "1"],
            &["MULTI"],
            &["INCR", "b"],
            &["RPUSH", "l", "x", "y"],
            &["EXEC"],
            &["SADD", "s", "m"],
            &["PEXPIRE", "s", "10"],
        ] {
            run(&mut p, &mut s, &shared, &set, cmd, now);
        }
        let log = p.log.take_capture();
        let mut r = Tenant::new(TenantId::DEFAULT, "r", 16);
        r.role = crate::repl::Role::Replica;
        r.log.enable_capture();
        let mut a = Applier::new();
        // An hour later: nothing may expire while applying.
        let later = now + 3_600_000;
        for piece in log.chunks(7) {
            a.feed(&mut r, &shared, &set, piece, later).unwrap();
        }
        assert_eq!(a.pending(), 0);
        assert_eq!(r.log.offset(), p.log.offset());
        assert_eq!(r.log.take_capture(), log);
        assert_eq!(r.ks.digest(), p.ks.digest());
        assert_eq!(r.ks.dbs[3].len(), 3);
        // The replica hides the expired set from a client but keeps it.
        let mut c = session();
        run(&mut r, &mut c, &shared, &set, &["SELECT", "3"], later);
        assert_eq!(
            run(&mut r, &mut c, &shared, &set, &["EXISTS", "s"], later),
            b":0\r\n"
        );
        assert_eq!(r.ks.dbs[3].len(), 3);
        assert_eq!(r.log.offset(), p.log.offset());
        // ...and refuses client writes.
        let w = run(&mut r, &mut c, &shared, &set, &["SET", "z", "1"], later);
        assert!(
            w.starts_with(b"-READONLY"),
            "{}",
            String::from_utf8_lossy(&w)
        );
    }

    #[test]
    fn a_failing_effect_is_reported_and_not_logged() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut r = Tenant::new(TenantId::DEFAULT, "r", 16);
        let mut a = Applier::new();
        let good = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let bad = b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";
        let mut data = good.to_vec();
        data.extend_from_slice(bad);
        let e = a.feed(&mut r, &shared, &set, &data, 0).unwrap_err();
        assert!(
            matches!(e, ApplyError::Failed { ref command, .. } if command == "INCR"),
            "{e}"
        );
        // Reported, and still counted: the offset is the stream's.
        assert_eq!(r.log.offset(), data.len() as u64);
    }

    /// `REPLCONF GETACK *` is noticed however the reads split it (the link
    /// used to search each read's bytes for the word), and it is the
    /// stream's: applied and counted.
    #[test]
    fn a_getack_split_across_reads_is_noticed() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut r = Tenant::new(TenantId::DEFAULT, "r", 16);
        r.role = crate::repl::Role::Replica;
        let mut a = Applier::new();
        let getack = b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n";
        let (head, tail) = getack.split_at(25);
        a.feed(&mut r, &shared, &set, head, 0).unwrap();
        assert!(!a.getack, "not before the whole command is in");
        a.feed(&mut r, &shared, &set, tail, 0).unwrap();
        assert!(a.getack);
        assert_eq!(r.log.offset(), getack.len() as u64);
        a.getack = false;
        a.feed(&mut r, &shared, &set, b"*1\r\n$4\r\nPING\r\n", 0)
            .unwrap();
        assert!(!a.getack, "only GETACK asks");
    }

    /// A transaction's bytes join the log when it completes: a stream cut
    /// inside MULTI leaves the offset before the MULTI (a resync resends
    /// the whole transaction), and nothing of it applied.
    #[test]
    fn a_transaction_counts_only_when_it_completes() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut r = Tenant::new(TenantId::DEFAULT, "r", 16);
        let mut a = Applier::new();
        let before = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n";
        let tx = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n";
        let exec = b"*1\r\n$4\r\nEXEC\r\n";
        a.feed(&mut r, &shared, &set, before, 0).unwrap();
        a.feed(&mut r, &shared, &set, tx, 0).unwrap();
        assert_eq!(
            r.log.offset(),
            before.len() as u64,
            "offset moved inside MULTI"
        );
        assert_eq!(r.ks.dbs[0].len(), 1);
        a.feed(&mut r, &shared, &set, exec, 0).unwrap();
        assert_eq!(
            r.log.offset(),
            (before.len() + tx.len() + exec.len()) as u64
        );
        assert_eq!(r.ks.dbs[0].len(), 2);
    }
}
