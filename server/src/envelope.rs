//! The router ↔ store envelope (wire form in `docs/ROUTING.md`).
//!
//! A router forwards a client's request to the node that holds the
//! tenant's primary or a replica. The node must know whose request it is
//! (tenant, database, client id and name, RESP version, the client's real
//! address) and, for a read sent to a replica, how fresh the answer must be:
//! the client's last write as a [`Token`]. The reply goes back as the
//! client must see it, with a token beside it for the router to remember
//! (the write's, or where the copy that read stood).
//!
//! - Request: one RESP array `ENVELOPE <tenant> <db> <client-id> <resp>
//!   <addr> <name> <min-token> [<user>]` right before the client's
//!   request, whose bytes follow unchanged (empty strings for no name / no
//!   token / no user). `user` is set by a node that holds no copy of the
//!   database's users (docs/ACL.md): the copy checks the request against
//!   that user's rules; without it the sender checked them.
//! - Reply: when the request wrote or read the keyspace, a RESP3 attribute
//!   `|1 token <epoch>:<replid>:<offset>` right before the reply (attributes are
//!   RESP3's frame for metadata about the reply that follows); the reply's
//!   own bytes are unchanged, in the client's RESP version.
//! - A replica that has not applied a request's token answers `-BEHIND
//!   <its own token>` instead (the router retries on the primary or waits).
//!
//! This module is the codec both sides use; [`can_serve`] is the rule a
//! replica applies. The store's side ([`receive`], [`begin`], [`end`])
//! runs on a cluster link: the connection loop (`conn.rs`) calls them
//! around the request that follows an envelope.

use std::net::SocketAddr;

use crate::client::Session;
use crate::repl::ReplIds;
use crate::resp::Reply;
use crate::tenant::Tenant;

/// Why an envelope or a token does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("ENVELOPE takes 7 to 9 arguments, got {0}")]
    Arity(usize),
    #[error("ENVELOPE: invalid {0}")]
    Field(&'static str),
    #[error("invalid token '{0}' (expected <epoch>:<replid>:<offset>)")]
    Token(String),
}

/// A point of a tenant's history: the failover epoch, the replication id
/// and an offset in it. A write's token is the offset right after its
/// effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub epoch: u64,
    pub replid: String,
    pub offset: u64,
}

impl Token {
    /// `<epoch>:<replid>:<offset>`.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.epoch, self.replid, self.offset)
    }

    pub fn parse(b: &[u8]) -> Result<Token, EnvelopeError> {
        let bad = || EnvelopeError::Token(String::from_utf8_lossy(b).into_owned());
        let s = std::str::from_utf8(b).map_err(|_| bad())?;
        let mut parts = s.split(':');
        let (Some(e), Some(id), Some(o), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let valid_id =
            id.len() == crate::repl::REPLID_LEN && id.bytes().all(|c| c.is_ascii_hexdigit());
        match (e.parse(), o.parse()) {
            (Ok(epoch), Ok(offset)) if valid_id => Ok(Token {
                epoch,
                replid: id.to_string(),
                offset,
            }),
            _ => Err(bad()),
        }
    }
}

/// Whether a node whose history is `ids`, having applied up to `applied`,
/// may serve a request that must see `min`: the token's id is its current
/// one or the one it continued from (within the part they share), and it
/// has applied that offset.
pub fn can_serve(ids: &ReplIds, applied: u64, min: &Token) -> bool {
    // A token's offset counts the bytes it needs; `knows` takes the next
    // byte wanted (PSYNC's convention): the bytes up to `offset` are
    // shared when `offset + 1` is.
    ids.knows(&min.replid, min.offset.saturating_add(1)) && applied >= min.offset
}

/// Who a forwarded request is from, and what it must see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub tenant: u64,
    pub db: usize,
    pub client_id: u64,
    /// 2 or 3: the encoding the reply must have.
    pub resp: u8,
    /// The client's own address (CLIENT LIST, logs), not the router's.
    pub addr: SocketAddr,
    pub name: Vec<u8>,
    pub min_token: Option<Token>,
    /// The database user the request runs as, checked by the node that
    /// runs it; empty when the sending node checked it (it has the users).
    pub user: String,
    /// Sent on by a node that was the primary when the router sent it
    /// (see `dispatch::relay`): a copy that is not the primary either
    /// refuses it rather than send it on again.
    pub relayed: bool,
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

impl Envelope {
    /// The envelope of session `s`'s client for tenant `tenant`: its
    /// database, id, protocol, address and name.
    pub fn of_client(tenant: u64, s: &Session, min_token: Option<Token>, user: String) -> Envelope {
        Envelope {
            tenant,
            db: s.db,
            client_id: s.info.id,
            resp: s.resp,
            addr: s.info.addr,
            name: s.info.name.borrow().clone(),
            min_token,
            user,
            relayed: false,
        }
    }

    /// The `ENVELOPE` array that precedes the client's request.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let token = self
            .min_token
            .as_ref()
            .map(Token::encode)
            .unwrap_or_default();
        let (tenant, db, client, resp, addr) = (
            self.tenant.to_string(),
            self.db.to_string(),
            self.client_id.to_string(),
            self.resp.to_string(),
            self.addr.to_string(),
        );
        let mut fields: Vec<&[u8]> = vec![
            b"ENVELOPE",
            tenant.as_bytes(),
            db.as_bytes(),
            client.as_bytes(),
            resp.as_bytes(),
            addr.as_bytes(),
            &self.name,
            token.as_bytes(),
        ];
        // Without a user, the form nodes of earlier versions take too
        // (a rolling upgrade keeps replica nodes' forwarding working).
        if !self.user.is_empty() || self.relayed {
            fields.push(self.user.as_bytes());
        }
        if self.relayed {
            fields.push(RELAYED);
        }
        crate::resp::encode_request(out, &fields);
    }

    /// This envelope and the request `args` after it, as a store stream
    /// carries them.
    pub fn request(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode(&mut out);
        crate::resp::encode_request(&mut out, args);
        out
    }

    /// Reads an `ENVELOPE` request's arguments (the command name first).
    pub fn from_args(args: &[&[u8]]) -> Result<Envelope, EnvelopeError> {
        // (8: a node of a version before `user`; 10: relayed.)
        if !(8..=10).contains(&args.len()) || !args[0].eq_ignore_ascii_case(b"envelope") {
            return Err(EnvelopeError::Arity(args.len().saturating_sub(1)));
        }
        let relayed = match args.get(9) {
            None => false,
            Some(r) if r.eq_ignore_ascii_case(RELAYED) => true,
            Some(_) => return Err(EnvelopeError::Field("relayed")),
        };
        fn num<T: std::str::FromStr>(b: &[u8], what: &'static str) -> Result<T, EnvelopeError> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(EnvelopeError::Field(what))
        }
        let resp: u8 = num(args[4], "resp")?;
        if resp != 2 && resp != 3 {
            return Err(EnvelopeError::Field("resp"));
        }
        Ok(Envelope {
            tenant: num(args[1], "tenant")?,
            db: num(args[2], "db")?,
            client_id: num(args[3], "client id")?,
            resp,
            addr: num(args[5], "address")?,
            name: args[6].to_vec(),
            min_token: match args[7] {
                b"" => None,
                t => Some(Token::parse(t)?),
            },
            user: match args.get(8) {
                None => String::new(),
                Some(u) => std::str::from_utf8(u)
                    .map_err(|_| EnvelopeError::Field("user"))?
                    .to_string(),
            },
            relayed,
        })
    }
}

/// The attribute that carries a write's token before its reply.
pub fn encode_reply_token(out: &mut Vec<u8>, token: &Token) {
    out.extend_from_slice(b"|1\r\n");
    bulk(out, b"token");
    bulk(out, token.encode().as_bytes());
}

/// Takes a token attribute off the front of `buf`: (token, bytes it
/// took). None when `buf` does not start with a complete one (a reply
/// without a token, or more bytes are needed: the caller tells them apart
/// by the first byte, `|`).
pub fn split_reply_token(buf: &[u8]) -> Option<(Token, usize)> {
    let rest = buf.strip_prefix(b"|1\r\n$5\r\ntoken\r\n")?;
    let (body, used) = bulk_prefix(rest)?;
    let token = Token::parse(body).ok()?;
    Some((token, buf.len() - rest.len() + used))
}

/// The RESP bulk string at the front of `buf`: (its body, bytes it
/// takes). None when `buf` does not start with a whole one.
pub fn bulk_prefix(buf: &[u8]) -> Option<(&[u8], usize)> {
    let rest = buf.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let len: usize = std::str::from_utf8(rest.get(..nl)?.strip_suffix(b"\r")?)
        .ok()?
        .parse()
        .ok()?;
    // `len` comes from the wire: no arithmetic on it may overflow.
    let start = nl + 1;
    let end = start.checked_add(len)?;
    let body = rest.get(start..end)?;
    if rest.get(end..end.checked_add(2)?)? != b"\r\n" {
        return None;
    }
    Some((body, 1 + end + 2))
}

/// The error code with which a copy refuses a request of an envelope's
/// user that the database no longer has (deleted, or gone with ACL LOAD):
/// the node that sent it closes the client's connection, as Redis closes
/// the connections of a deleted user, rather than pass it on.
pub const USER_GONE: &str = "NOUSER";
/// The last field of a relayed envelope.
const RELAYED: &[u8] = b"relayed";

/// The attribute a copy puts before its [`USER_GONE`] refusal. The sender
/// acts on the attribute, never on the error's text: a script may return
/// any error it likes (`redis.error_reply("NOUSER x")`), and that reply
/// must reach its client like any other. No command's reply carries an
/// attribute, so nothing else can look like this.
pub const USER_GONE_ATTR: &[u8] = b"|1\r\n$4\r\ngone\r\n$4\r\nuser\r\n";

/// Writes a copy's refusal of a request whose user is gone: the
/// [`USER_GONE_ATTR`] attribute, then the error for the client.
pub fn refuse_user_gone(out: &mut Reply, user: &str) -> String {
    out.raw(USER_GONE_ATTR);
    let e = format!("{USER_GONE} the user '{user}' no longer exists in this database");
    out.error(&e);
    e
}

/// Takes a copy's user-gone attribute off the front of a reply: the
/// bytes it took, or None when the reply has none.
pub fn split_user_gone(buf: &[u8]) -> Option<usize> {
    buf.starts_with(USER_GONE_ATTR)
        .then_some(USER_GONE_ATTR.len())
}

/// The envelope and `AUTH <user> <password>` with which a node that holds
/// no copy of tenant `tenant` asks one that does whether the credentials
/// log in (docs/ACL.md): the answer is the database's users (an aclfile,
/// as a bulk string), or WRONGPASS. `user` is `default` for a token.
pub fn login_check(tenant: u64, s: &Session, user: &str, pw: &[u8]) -> Vec<u8> {
    // (A login check reads no keys: database 0.)
    let env = Envelope {
        db: 0,
        ..Envelope::of_client(tenant, s, None, String::new())
    };
    env.request(&[b"AUTH", user.as_bytes(), pw])
}

/// The request, in an envelope naming the refused user, with which a
/// node that holds no copy of a database sends an ACL refusal it made
/// itself (of a command that runs on that node: PING, CLIENT, SUBSCRIBE...)
/// to the database's primary, so that `ACL LOG` (the primary's) shows it.
/// Only taken after an envelope on a cluster link: a client sending it is
/// told the command is unknown.
pub const ACL_LOG_RECORD: &str = "ANYKV-ACL-LOG-RECORD";

/// An ACL refusal to send to the database's primary.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: &'static str,
    pub context: &'static str,
    pub object: String,
    pub username: String,
}

/// The envelope and [`ACL_LOG_RECORD`] request for refusal `r` of client
/// `s` of tenant `tenant`.
pub fn acl_log_record(tenant: u64, s: &Session, r: &Refusal) -> Vec<u8> {
    let env = Envelope {
        db: 0,
        ..Envelope::of_client(tenant, s, None, r.username.clone())
    };
    env.request(&[
        ACL_LOG_RECORD.as_bytes(),
        r.reason.as_bytes(),
        r.context.as_bytes(),
        r.object.as_bytes(),
    ])
}

/// The refusal an [`ACL_LOG_RECORD`] request carries (`args` after the
/// command's name: reason, context, object); None when it names a reason
/// or context ACL LOG does not have.
pub fn parse_acl_log_record(args: &[&[u8]], username: &str) -> Option<Refusal> {
    let [reason, context, object] = args else {
        return None;
    };
    let pick = |v: &[u8], of: &[&'static str]| of.iter().copied().find(|k| k.as_bytes() == v);
    Some(Refusal {
        reason: pick(reason, &["command", "key", "channel", "auth"])?,
        context: pick(context, &["toplevel", "multi", "lua"])?,
        object: String::from_utf8_lossy(object).into_owned(),
        username: username.to_string(),
    })
}

/// What an `ENVELOPE` left for the request after it.
#[derive(Debug)]
pub enum Pending {
    /// Run it as this client's.
    Serve(Envelope),
    /// Do not run it: this error (without its `-`) is its reply.
    Refuse(String),
}

/// Commands that act on the connection itself, which on a stream shared
/// by many clients is the router's: the router answers them (it keeps each
/// client's database, name, protocol and subscriptions) and never forwards
/// them. Forwarded anyway, they are refused rather than run on the shared
/// stream.
const ROUTER_COMMANDS: &[&str] = &[
    "auth",
    "hello",
    "select",
    "quit",
    "reset",
    "client",
    "monitor",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "psync",
    "sync",
    "replconf",
];

/// Whether `name` (lower case) acts on the connection itself (the
/// router's to answer, never forwarded).
pub fn is_router_command(name: &str) -> bool {
    ROUTER_COMMANDS.contains(&name)
}

/// Whether a request is an envelope (on a cluster link, where they are
/// taken; elsewhere `ENVELOPE` is an unknown command like any other).
pub fn is_envelope(args: &[&[u8]]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"envelope"))
}

/// This node's point of tenant `t`'s history.
pub fn token_of(t: &Tenant) -> Token {
    Token {
        epoch: t.epoch,
        replid: t.repl.replid.clone(),
        offset: t.log.offset(),
    }
}

/// Reads an envelope that arrived on tenant `t`'s stream: what the request
/// after it gets. A node that has not applied the client's `min-token` yet,
/// or whose copy is `diverged`, answers `BEHIND` with its own token.
pub fn receive(t: &Tenant, args: &[&[u8]]) -> Pending {
    let env = match Envelope::from_args(args) {
        Ok(e) => e,
        Err(e) => return Pending::Refuse(format!("ERR {e}")),
    };
    if env.tenant != t.id.0 {
        return Pending::Refuse(format!(
            "ERR ENVELOPE for tenant {} on a stream of tenant {}",
            env.tenant, t.id.0
        ));
    }
    if env.db >= t.ks.dbs.len() {
        return Pending::Refuse("ERR DB index is out of range".into());
    }
    // A copy that may hold what the database never had (it served as the
    // primary and has not synced with its successor yet) serves no one.
    let behind = env
        .min_token
        .as_ref()
        .is_some_and(|min| !can_serve(&t.repl, t.log.offset(), min));
    if behind || (t.diverged && t.role == crate::repl::Role::Replica) {
        return Pending::Refuse(format!("BEHIND {}", token_of(t).encode()));
    }
    Pending::Serve(env)
}

/// The stream's own state while a client's request runs in its place.
pub struct Serving {
    env: Envelope,
    db: usize,
    resp: u8,
    name: Vec<u8>,
    /// The stream's own user, "may do anything" and ACL epoch, while an
    /// envelope's user is checked in its place.
    user: (String, bool, u64),
    /// Where the request's reply starts in the output, and the log's
    /// offset before it ran (a write moves it).
    reply_at: usize,
    log_at: u64,
    /// A relayed write's reply: the new primary's token, which it carries
    /// (though this copy's log did not move), or none (the relay failed;
    /// this copy's log may have moved meanwhile, by its stream).
    relayed: Option<Option<Token>>,
}

impl Serving {
    /// The envelope's user (empty: the sender checked the request).
    pub fn user(&self) -> &str {
        &self.env.user
    }

    /// The reply of a request that waited starts here (its bytes come
    /// after the wait, in a later batch).
    pub fn reply_starts_at(&mut self, at: usize) {
        self.reply_at = at;
    }

    /// The reply that starts at `at` is a relayed write's, done at the
    /// point `token` of the new primary's history (`dispatch::relay`;
    /// None: it did not run, or wrote nothing).
    pub fn relayed_reply(&mut self, at: usize, token: Option<Token>) {
        self.reply_at = at;
        self.relayed = Some(token);
    }
}

/// Puts the envelope's client in the stream's place for `args`: its
/// database, protocol, name and address (CLIENT INFO, MONITOR, SLOWLOG
/// show the client, not the router), and customer rights (a forwarded
/// request never runs the replication commands a link may). A command the
/// router answers itself is refused (the error is its reply).
pub fn begin(
    t: &Tenant,
    s: &mut Session,
    out: &mut Reply,
    env: Envelope,
    args: &[&[u8]],
) -> Result<Serving, String> {
    if let Some(name) = args.first() {
        // (AUTH in an envelope is a login check: `run_request` answers it.)
        if let Some(c) = ROUTER_COMMANDS
            .iter()
            .filter(|c| **c != "auth")
            .find(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            return Err(format!(
                "ERR {} acts on the router's connection: it is not forwarded in an envelope",
                c.to_uppercase()
            ));
        }
    }
    let name = std::mem::replace(&mut *s.info.name.borrow_mut(), env.name.clone());
    let sv = Serving {
        db: s.db,
        resp: s.resp,
        name,
        user: (s.user.clone(), s.unrestricted, s.acl_epoch),
        reply_at: out.len(),
        log_at: t.log.offset(),
        relayed: None,
        env,
    };
    if !sv.env.user.is_empty() {
        // Checked against the user's rules here (`dispatch::refresh_acl`
        // looks them up before the request runs).
        s.user = sv.env.user.clone();
        *s.info.user.borrow_mut() = sv.env.user.clone();
        s.unrestricted = false;
        s.acl_epoch = 0;
    }
    s.db = sv.env.db;
    s.info.db.set(sv.env.db);
    s.resp = sv.env.resp;
    out.resp = sv.env.resp;
    s.origin = Some(sv.env.addr);
    s.relayed = sv.env.relayed;
    s.cluster_peer = false;
    // The client's writes reached this copy's history up to its token
    // (`receive` checked that it is this history): a WAIT counts the
    // replicas that have them. Raising the stream's own mark never makes
    // a later WAIT on it count a replica that lacks its writes.
    if let Some(min) = &sv.env.min_token {
        s.woff = s.woff.max(min.offset);
    }
    Ok(sv)
}

/// Puts the stream back after the request and, when it wrote or read,
/// sets the token (where this copy's history stands after it) before its
/// reply. Returns the envelope (a paused request
/// runs again under it).
pub fn end(t: &Tenant, s: &mut Session, out: &mut Reply, sv: Serving) -> Envelope {
    let read = std::mem::take(&mut s.read_token);
    let token = match sv.relayed {
        Some(tok) => tok,
        None => (t.log.offset() > sv.log_at || read).then(|| token_of(t)),
    };
    if let Some(token) = token.filter(|_| out.len() > sv.reply_at) {
        let mut attr = Vec::with_capacity(80);
        encode_reply_token(&mut attr, &token);
        let tail = out.buf.split_off(sv.reply_at);
        out.buf.extend_from_slice(&attr);
        out.buf.unsplit(tail);
    }
    *s.info.name.borrow_mut() = sv.name;
    if !sv.env.user.is_empty() {
        (s.user, s.unrestricted, s.acl_epoch) = sv.user;
        *s.info.user.borrow_mut() = s.user.clone();
    }
    s.db = sv.db;
    s.info.db.set(sv.db);
    s.resp = sv.resp;
    out.resp = sv.resp;
    s.origin = None;
    s.relayed = false;
    s.cluster_peer = true;
    sv.env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(offset: u64) -> Token {
        Token {
            epoch: 3,
            replid: "a".repeat(40),
            offset,
        }
    }

    #[test]
    fn an_envelope_round_trips_through_the_resp_parser() {
        let env = Envelope {
            tenant: 42,
            db: 3,
            client_id: 17,
            resp: 3,
            addr: "[fdaa::5]:41234".parse().unwrap(),
            name: b"worker 1".to_vec(),
            min_token: Some(token(1234)),
            user: "reader".into(),
            relayed: false,
        };
        let mut wire = Vec::new();
        env.encode(&mut wire);
        wire.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut p = crate::resp::RequestParser::new();
        let lim = crate::resp::ParseLimits::default();
        assert!(matches!(
            p.next(&wire, &lim),
            Ok(Some(crate::resp::Request::Multibulk))
        ));
        let args: Vec<&[u8]> = p.ranges().iter().map(|r| &wire[r.clone()]).collect();
        assert_eq!(Envelope::from_args(&args), Ok(env.clone()));
        // The client's request follows unchanged.
        assert_eq!(&wire[p.consumed()..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        // Without a name or token.
        let plain = Envelope {
            name: Vec::new(),
            min_token: None,
            user: String::new(),
            ..env
        };
        let mut wire = Vec::new();
        plain.encode(&mut wire);
        // (Without a user: the 8-field form earlier versions read.)
        assert!(wire.starts_with(b"*8\r\n"));
        let mut p = crate::resp::RequestParser::new();
        p.next(&wire, &lim).unwrap();
        let args: Vec<&[u8]> = p.ranges().iter().map(|r| &wire[r.clone()]).collect();
        assert_eq!(Envelope::from_args(&args), Ok(plain.clone()));
        // Relayed, without a user: the user's place is kept, empty.
        let relayed = Envelope {
            relayed: true,
            ..plain
        };
        let mut wire = Vec::new();
        relayed.encode(&mut wire);
        assert!(wire.starts_with(b"*10\r\n"));
        let mut p = crate::resp::RequestParser::new();
        p.next(&wire, &lim).unwrap();
        let args: Vec<&[u8]> = p.ranges().iter().map(|r| &wire[r.clone()]).collect();
        assert_eq!(Envelope::from_args(&args), Ok(relayed));
    }

    #[test]
    fn malformed_envelopes_and_tokens_are_refused() {
        let ok: [&[u8]; 8] = [
            b"ENVELOPE",
            b"1",
            b"0",
            b"5",
            b"2",
            b"127.0.0.1:1",
            b"",
            b"",
        ];
        assert!(Envelope::from_args(&ok).is_ok());
        assert_eq!(Envelope::from_args(&ok[..7]), Err(EnvelopeError::Arity(6)));
        let mut with_user = ok.to_vec();
        with_user.push(b"reader");
        assert_eq!(
            Envelope::from_args(&with_user).map(|e| e.user),
            Ok("reader".to_string())
        );
        with_user[8] = b"\xff";
        assert_eq!(
            Envelope::from_args(&with_user),
            Err(EnvelopeError::Field("user"))
        );
        with_user[8] = b"reader";
        with_user.push(b"x");
        assert_eq!(
            Envelope::from_args(&with_user),
            Err(EnvelopeError::Field("relayed"))
        );
        with_user[9] = b"RELAYED";
        assert_eq!(Envelope::from_args(&with_user).map(|e| e.relayed), Ok(true));
        with_user.push(b"x");
        assert_eq!(
            Envelope::from_args(&with_user),
            Err(EnvelopeError::Arity(10))
        );
        for (i, bad, what) in [
            (1, &b"x"[..], "tenant"),
            (2, b"-1", "db"),
            (4, b"4", "resp"),
            (5, b"nowhere", "address"),
        ] {
            let mut a = ok;
            a[i] = bad;
            assert_eq!(Envelope::from_args(&a), Err(EnvelopeError::Field(what)));
        }
        for t in ["1:abc:5", "x:aaaa:1", "1:2", "", "1:{id}:2:3"] {
            assert!(Token::parse(t.as_bytes()).is_err(), "{t}");
        }
    }

    #[test]
    fn a_reply_token_is_split_off_and_the_reply_left_as_it_was() {
        let mut wire = Vec::new();
        encode_reply_token(&mut wire, &token(99));
        wire.extend_from_slice(b"+OK\r\n");
        let (t, used) = split_reply_token(&wire).unwrap();
        assert_eq!(t, token(99));
        assert_eq!(&wire[used..], b"+OK\r\n");
        // Incomplete, or no token: None.
        assert!(split_reply_token(&wire[..10]).is_none());
        assert!(split_reply_token(b"+OK\r\n").is_none());
        // A length that would overflow is refused, not a panic.
        let huge = format!("|1\r\n$5\r\ntoken\r\n${}\r\nx\r\n", usize::MAX);
        assert!(split_reply_token(huge.as_bytes()).is_none());
    }

    #[test]
    fn a_replica_serves_a_token_of_its_history_once_applied() {
        let mut ids = ReplIds::random();
        let old = ids.replid.clone();
        let t = |id: &str, offset| Token {
            epoch: 1,
            replid: id.to_string(),
            offset,
        };
        assert!(can_serve(&ids, 100, &t(&old, 100)));
        assert!(!can_serve(&ids, 99, &t(&old, 100)));
        // Promoted at offset 150: the old history's first 150 bytes are
        // the new one's too, byte 151 of the old one never existed here.
        ids.shift(150);
        let new = ids.replid.clone();
        assert!(can_serve(&ids, 200, &t(&old, 150)));
        assert!(!can_serve(&ids, 200, &t(&old, 151)));
        assert!(can_serve(&ids, 200, &t(&new, 180)));
        // Another history altogether: never.
        assert!(!can_serve(&ids, 1 << 40, &t(&"b".repeat(40), 1)));
    }
}
