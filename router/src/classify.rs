//! What the router does with a request, from the store's one command table
//! (each row's route class) plus the few rules the table cannot say:
//! which commands hold a connection (transactions, blocking, pub/sub,
//! MONITOR, CLIENT TRACKING) and which the router answers itself.

use anykv_server::cmd::{lookup, Lookup, Route};

/// What the session does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read: a replica may answer it (per the consistency mode).
    Read,
    /// A cursor read (`SCAN` family): `first` when the cursor is 0. Later
    /// calls go where the first went (cursors are a node's own).
    Scan { first: bool },
    /// Runs on the primary, on a shared connection.
    Primary,
    /// `MULTI`: the connection is the client's until `EXEC`/`DISCARD`.
    Multi,
    /// `WATCH`: as `MULTI`, until `EXEC`/`DISCARD`/`UNWATCH`.
    Watch,
    /// `EXEC`, `DISCARD`: end the transaction.
    EndTx,
    /// `UNWATCH`.
    Unwatch,
    /// May block: runs on a connection of the client's own.
    Blocking,
    /// Changes the connection for good (subscriptions, MONITOR, CLIENT
    /// TRACKING): the client gets its own upstream connection, spliced.
    Tunnel,
    /// Answered by the router (connection state).
    Local,
}

/// Commands that block which the command table does not route as such
/// (newer list and sorted-set pops, WAIT; XREAD blocks only with BLOCK,
/// checked below): they must never block a shared connection.
const BLOCKING_UNKNOWN: &[&str] = &[
    "blmpop",
    "bzmpop",
    "blmove",
    "brpoplpush",
    "bzpopmin",
    "bzpopmax",
    "wait",
    "waitaof",
];

/// Client subcommands the router answers (its own clients).
const CLIENT_LOCAL: &[&str] = &[
    "id", "setname", "getname", "list", "info", "kill", "reply", "help",
];

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// The session's action for `args` (never empty).
pub fn kind(args: &[&[u8]]) -> Kind {
    let name = args[0];
    let arg = |i: usize| args.get(i).copied().unwrap_or(b"");
    if eq(name, "multi") {
        return Kind::Multi;
    }
    if eq(name, "watch") {
        return Kind::Watch;
    }
    if eq(name, "exec") || eq(name, "discard") {
        return Kind::EndTx;
    }
    if eq(name, "unwatch") {
        return Kind::Unwatch;
    }
    if ["subscribe", "psubscribe", "ssubscribe", "monitor"]
        .iter()
        .any(|n| eq(name, n))
    {
        return Kind::Tunnel;
    }
    // A client not yet spliced is subscribed to nothing: the router
    // answers these (on a shared connection they would answer once per
    // channel). A shared connection never carries replication either.
    if [
        "unsubscribe",
        "punsubscribe",
        "sunsubscribe",
        "psync",
        "sync",
        "replconf",
    ]
    .iter()
    .any(|n| eq(name, n))
    {
        return Kind::Local;
    }
    if eq(name, "client") {
        let sub = arg(1);
        if eq(sub, "tracking") && eq(arg(2), "on") {
            return Kind::Tunnel;
        }
        if CLIENT_LOCAL.iter().any(|n| eq(sub, n)) {
            return Kind::Local;
        }
        return Kind::Primary;
    }
    if (eq(name, "xread") || eq(name, "xreadgroup")) && args.iter().any(|a| eq(a, "block")) {
        return Kind::Blocking;
    }
    if BLOCKING_UNKNOWN.iter().any(|n| eq(name, n)) {
        return Kind::Blocking;
    }
    if ["scan", "hscan", "sscan", "zscan"]
        .iter()
        .any(|n| eq(name, n))
    {
        let cursor = if eq(name, "scan") { arg(1) } else { arg(2) };
        return Kind::Scan {
            first: cursor == b"0",
        };
    }
    // Facts of one copy, not of the data: a replica's encodings follow
    // the effects it applied (and its idle times its own reads), so they
    // may differ from the primary's. The primary's are the database's.
    if eq(name, "object") {
        return Kind::Primary;
    }
    // ACL is the upstreams' (their users, categories, log): the router
    // answers only WHOAMI, which is about the client's own login.
    if eq(name, "acl") && !eq(arg(1), "whoami") {
        return Kind::Primary;
    }
    // Scripts are cached where SCRIPT LOAD ran, the primary (replicas get
    // libraries, not scripts): a replica would answer NOSCRIPT.
    if eq(name, "evalsha_ro") {
        return Kind::Primary;
    }
    match lookup(args) {
        Lookup::Found(r) => match r.spec.route {
            Route::Read => Kind::Read,
            Route::Blocking => Kind::Blocking,
            Route::Connection => {
                // COMMAND's rows are static facts of the store: ask it.
                if eq(name, "command") {
                    Kind::Primary
                } else {
                    Kind::Local
                }
            }
            Route::Write | Route::Admin | Route::PubSub => Kind::Primary,
        },
        // Unknown to anykv's table (stream consumer groups...): the
        // primary answers, or produces Redis's own error.
        _ => Kind::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_kinds() {
        assert_eq!(kind(&[b"get", b"k"]), Kind::Read);
        assert_eq!(kind(&[b"OBJECT", b"ENCODING", b"k"]), Kind::Primary);
        assert_eq!(kind(&[b"SET", b"k", b"v"]), Kind::Primary);
        assert_eq!(kind(&[b"multi"]), Kind::Multi);
        assert_eq!(kind(&[b"EXEC"]), Kind::EndTx);
        assert_eq!(kind(&[b"watch", b"k"]), Kind::Watch);
        assert_eq!(kind(&[b"blpop", b"k", b"0"]), Kind::Blocking);
        assert_eq!(
            kind(&[b"BLMOVE", b"a", b"b", b"LEFT", b"LEFT", b"0"]),
            Kind::Blocking
        );
        assert_eq!(
            kind(&[b"xread", b"BLOCK", b"0", b"STREAMS", b"s", b"$"]),
            Kind::Blocking
        );
        // Without BLOCK, a read a replica may answer.
        assert_eq!(kind(&[b"xread", b"STREAMS", b"s", b"0"]), Kind::Read);
        assert_eq!(kind(&[b"subscribe", b"c"]), Kind::Tunnel);
        assert_eq!(kind(&[b"client", b"tracking", b"on"]), Kind::Tunnel);
        assert_eq!(kind(&[b"client", b"setname", b"x"]), Kind::Local);
        assert_eq!(kind(&[b"client", b"pause", b"10"]), Kind::Primary);
        assert_eq!(kind(&[b"scan", b"0"]), Kind::Scan { first: true });
        assert_eq!(kind(&[b"hscan", b"h", b"17"]), Kind::Scan { first: false });
        assert_eq!(kind(&[b"select", b"1"]), Kind::Local);
        assert_eq!(kind(&[b"PING"]), Kind::Local);
        assert_eq!(kind(&[b"ACL", b"WHOAMI"]), Kind::Local);
        assert_eq!(kind(&[b"acl", b"cat", b"geo"]), Kind::Primary);
        assert_eq!(kind(&[b"ACL", b"GENPASS"]), Kind::Primary);
        assert_eq!(kind(&[b"nosuch"]), Kind::Primary);
        assert_eq!(kind(&[b"command", b"count"]), Kind::Primary);
        assert_eq!(kind(&[b"publish", b"c", b"m"]), Kind::Primary);
        assert_eq!(kind(&[b"UNSUBSCRIBE", b"a", b"b"]), Kind::Local);
        assert_eq!(kind(&[b"psync", b"?", b"-1"]), Kind::Local);
        // Scripts: cached on the primary; functions are replicated.
        assert_eq!(kind(&[b"EVALSHA_RO", b"abc", b"0"]), Kind::Primary);
        assert_eq!(kind(&[b"EVAL_RO", b"return 1", b"0"]), Kind::Read);
        assert_eq!(kind(&[b"FCALL_RO", b"f", b"0"]), Kind::Read);
        assert_eq!(kind(&[b"FCALL", b"f", b"0"]), Kind::Primary);
        assert_eq!(kind(&[b"FUNCTION", b"LOAD", b"x"]), Kind::Primary);
    }
}
