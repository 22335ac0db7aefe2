//! Commands the router answers itself: they act on the client's own
//! connection (its database, name, protocol, credentials, reply mode), and
//! an upstream connection is shared, so the upstream cannot answer them.
//! Replies and errors are Redis 7.0's, byte for byte.

use anykv_server::cmd::errors;
use anykv_server::cmd::{lookup, Lookup};
use anykv_server::resp::Reply;
use anykv_server::util::{c_str, parse_i64};
use std::time::Instant;

use crate::clients::{ClientHandle, Registry};
use crate::upstream::Login;

/// Router-wide settings the answers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Clients must `AUTH` with this (`--requirepass`).
    pub requirepass: Option<String>,
    /// The primary's `databases` (SELECT's range).
    pub databases: u32,
    /// The primary's `redis_version` (HELLO's `version`).
    pub version: String,
}

/// `CLIENT REPLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// The next command's reply is dropped.
    Skip,
}

/// A client's connection state, kept by the router.
#[derive(Debug, Clone)]
pub struct ConnState {
    pub db: u32,
    pub resp: u8,
    pub name: Vec<u8>,
    pub authed: bool,
    /// Logged in as one of the upstreams' users (`None`: `default`, the
    /// router's own).
    pub login: Option<Login>,
    pub reply: ReplyMode,
}

impl ConnState {
    pub fn new(set: &Settings) -> ConnState {
        ConnState {
            db: 0,
            resp: 2,
            name: Vec::new(),
            authed: set.requirepass.is_none(),
            login: None,
            reply: ReplyMode::On,
        }
    }
}

/// What the session must do after the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Close the connection once the reply is written (QUIT, CLIENT KILL
    /// of itself).
    Close,
    /// RESET: leave any transaction or pinned connection.
    Reset,
    /// No reply yet: ask the primary whether this login is good, then
    /// answer again with its verdict in [`Ctx::checked`].
    CheckLogin(Login),
}

/// The checks Redis makes before running anything: unknown command, arity,
/// authentication. `Some(reply)`: the request is answered by this error.
pub fn precheck(st: &ConnState, args: &[&[u8]]) -> Option<Vec<u8>> {
    if st.authed {
        return None;
    }
    let mut out = Reply::new(st.resp);
    match lookup(args) {
        Lookup::Unknown => {
            // Commands anykv's table lacks are still Redis's: without AUTH
            // the answer is the same NOAUTH a store gives for a known one.
            out.error(errors::NOAUTH);
        }
        Lookup::UnknownSub => out.error_bytes(&unknown_sub(args)),
        Lookup::Found(r) => {
            let argc = args.len() as i32;
            if (r.spec.arity > 0 && r.spec.arity != argc) || argc < -r.spec.arity {
                out.err(&format!(
                    "wrong number of arguments for '{}' command",
                    r.fullname
                ));
            } else if !r.no_auth {
                out.error(errors::NOAUTH);
            } else {
                return None;
            }
        }
    }
    Some(out.buf.to_vec())
}

fn unknown_sub(args: &[&[u8]]) -> Vec<u8> {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(args[1], 128));
    msg.extend_from_slice(b"'. Try ");
    msg.extend_from_slice(&c_str(args[0], usize::MAX).to_ascii_uppercase());
    msg.extend_from_slice(b" HELP.");
    msg
}

/// Everything [`answer`] reads besides the connection itself.
pub struct Ctx<'a> {
    pub me: &'a ClientHandle,
    pub reg: &'a Registry,
    pub set: &'a Settings,
    /// The primary's verdict on the login the request names, once the
    /// session asked it ([`Effect::CheckLogin`]): `Err` holds its error.
    pub checked: Option<Result<(), Vec<u8>>>,
}

/// Answers a connection command. Arity and subcommand errors are Redis's.
pub fn answer(st: &mut ConnState, ctx: &Ctx, args: &[&[u8]]) -> (Vec<u8>, Effect) {
    let mut out = Reply::new(st.resp);
    let mut effect = Effect::None;
    let r = match lookup(args) {
        Lookup::Found(r) => r,
        Lookup::UnknownSub => {
            out.error_bytes(&unknown_sub(args));
            return (out.buf.to_vec(), effect);
        }
        Lookup::Unknown => {
            out.error_bytes(&anykv_server::dispatch::unknown_command(args));
            return (out.buf.to_vec(), effect);
        }
    };
    let argc = args.len() as i32;
    if (r.spec.arity > 0 && r.spec.arity != argc) || argc < -r.spec.arity {
        out.err(&format!(
            "wrong number of arguments for '{}' command",
            r.fullname
        ));
        return (out.buf.to_vec(), effect);
    }
    match r.fullname.as_str() {
        "ping" => match args.len() {
            1 => out.simple("PONG"),
            2 => out.bulk(args[1]),
            _ => out.err("wrong number of arguments for 'ping' command"),
        },
        "echo" => out.bulk(args[1]),
        "select" => match parse_i64(args[1]) {
            None => out.err(errors::NOT_INTEGER),
            Some(n) if n < 0 || n >= i64::from(ctx.set.databases) => out.err(errors::DB_INDEX),
            Some(n) => {
                st.db = n as u32;
                out.ok();
            }
        },
        "quit" => {
            out.ok();
            effect = Effect::Close;
        }
        "reset" => {
            st.db = 0;
            st.resp = 2;
            st.name.clear();
            st.reply = ReplyMode::On;
            st.authed = ctx.set.requirepass.is_none();
            st.login = None;
            out = Reply::new(2);
            out.simple("RESET");
            effect = Effect::Reset;
        }
        "auth" | "hello" => {
            let check = if r.fullname == "auth" {
                auth(st, ctx, &args[1..], &mut out)
            } else {
                hello(st, ctx, args, &mut out)
            };
            if let Some(l) = check {
                return (Vec::new(), Effect::CheckLogin(l));
            }
        }
        "client|id" => out.int(ctx.me.id as i64),
        "client|setname" => {
            if valid_name(args[2]) {
                st.name = args[2].to_vec();
                out.ok();
            } else {
                out.err("Client names cannot contain spaces, newlines or special characters.");
            }
        }
        "client|getname" => {
            if st.name.is_empty() {
                out.null();
            } else {
                out.bulk(&st.name);
            }
        }
        "client|info" => {
            let mut line = ctx.me.describe(Instant::now());
            line.push('\n');
            out.verbatim(line.as_bytes());
        }
        "client|list" => client_list(ctx, args, &mut out),
        "client|kill" => effect = client_kill(ctx, args, &mut out),
        "client|reply" => {
            let v = args[2];
            if v.eq_ignore_ascii_case(b"on") {
                st.reply = ReplyMode::On;
                out.ok();
            } else if v.eq_ignore_ascii_case(b"off") {
                st.reply = ReplyMode::Off;
            } else if v.eq_ignore_ascii_case(b"skip") {
                if st.reply == ReplyMode::On {
                    st.reply = ReplyMode::Skip;
                }
            } else {
                out.err(errors::SYNTAX);
            }
        }
        "client|help" => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "KILL <ip:port>",
                "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are: ID, ADDR, LADDR, TYPE, USER, SKIPME.",
                "LIST [TYPE <normal|master|replica|pubsub>] [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "REPLY (ON|OFF|SKIP)",
                "    Control the replies sent to the current connection.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "(Other subcommands run on the primary.)",
                "HELP",
                "    Print this help.",
            ];
            out.array(lines.len());
            for l in lines {
                out.simple(l);
            }
        }
        "acl|whoami" => out.bulk(st.login.as_ref().map_or(&b"default"[..], |l| &l.user)),
        // Not subscribed (a subscribed client is spliced to its own
        // upstream connection): one reply per channel, count 0, as Redis.
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
            let names: Vec<Option<&[u8]>> = if args.len() == 1 {
                vec![None]
            } else {
                args[1..].iter().map(|a| Some(*a)).collect()
            };
            for n in names {
                if out.resp == 3 {
                    out.push(3);
                } else {
                    out.array(3);
                }
                out.bulk(r.fullname.as_bytes());
                match n {
                    Some(c) => out.bulk(c),
                    None => out.null(),
                }
                out.int(0);
            }
        }
        "psync" | "sync" | "replconf" => {
            out.err("the router does not relay replication: connect a replica to the server itself")
        }
        other => out.err(&format!("'{other}' is not answered by the router")),
    }
    (out.buf.to_vec(), effect)
}

fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

/// AUTH [user] pass. `default` is the router's own user (`--requirepass`);
/// any other is one of the upstreams' users (their ACL), which the primary
/// checks: the first call returns the login to check, the second (with
/// [`Ctx::checked`]) answers. A failed AUTH leaves the user as it was.
fn auth(st: &mut ConnState, ctx: &Ctx, a: &[&[u8]], out: &mut Reply) -> Option<Login> {
    if a.len() > 2 {
        out.err(errors::SYNTAX);
        return None;
    }
    if a.len() == 2 && a[0] != b"default" {
        let login = Login {
            user: a[0].to_vec(),
            password: a[1].to_vec(),
        };
        match &ctx.checked {
            None => return Some(login),
            Some(Ok(())) => {
                st.authed = true;
                st.login = Some(login);
                out.ok();
            }
            Some(Err(e)) => out.error_bytes(e),
        }
        return None;
    }
    let Some(pass) = &ctx.set.requirepass else {
        if a.len() == 1 {
            out.err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        } else {
            // `AUTH default <anything>` is accepted by a Redis without a
            // password (the default user is `nopass`).
            st.login = None;
            out.ok();
        }
        return None;
    };
    if a.last().is_some_and(|p| *p == pass.as_bytes()) {
        st.authed = true;
        st.login = None;
        out.ok();
    } else {
        out.error(errors::WRONGPASS);
    }
    None
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]; a login to check is
/// returned as [`auth`] does.
fn hello(st: &mut ConnState, ctx: &Ctx, args: &[&[u8]], out: &mut Reply) -> Option<Login> {
    let mut ver = 0i64;
    let mut j = 1;
    if args.len() >= 2 {
        match parse_i64(args[1]) {
            Some(v) => ver = v,
            None => {
                out.err("Protocol version is not an integer or out of range");
                return None;
            }
        }
        if !(2..=3).contains(&ver) {
            out.error("NOPROTO unsupported protocol version");
            return None;
        }
        j = 2;
    }
    // As Redis 7.0: each option takes effect in order (a name set before
    // a failed login or a bad option stays).
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = args[j];
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            let mut r = Reply::new(out.resp);
            if let Some(check) = auth(st, ctx, &[args[j + 1], args[j + 2]], &mut r) {
                return Some(check);
            }
            if r.buf.first() == Some(&b'-') {
                out.buf.extend_from_slice(&r.buf);
                return None;
            }
            j += 2;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            if !valid_name(args[j + 1]) {
                out.err("Client names cannot contain spaces, newlines or special characters.");
                return None;
            }
            st.name = args[j + 1].to_vec();
            j += 1;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(c_str(opt, usize::MAX));
            msg.push(b'\'');
            out.error_bytes(&msg);
            return None;
        }
        j += 1;
    }
    if !st.authed {
        out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return None;
    }
    if ver != 0 {
        st.resp = ver as u8;
        out.resp = ver as u8;
    }
    anykv_server::cmd::connection::hello_reply(out, &ctx.set.version, st.resp, ctx.me.id);
    None
}

fn client_type_ok(v: &[u8]) -> Result<bool, String> {
    match &v.to_ascii_lowercase()[..] {
        b"normal" => Ok(true),
        b"slave" | b"replica" | b"pubsub" | b"master" => Ok(false),
        _ => Err(format!(
            "Unknown client type '{}'",
            String::from_utf8_lossy(v)
        )),
    }
}

fn client_list(ctx: &Ctx, args: &[&[u8]], out: &mut Reply) {
    let now = Instant::now();
    let mut text = String::new();
    if args.len() == 4 && args[2].eq_ignore_ascii_case(b"type") {
        match client_type_ok(args[3]) {
            Err(e) => return out.err(&e),
            Ok(false) => {}
            Ok(true) => {
                for c in ctx.reg.all() {
                    text.push_str(&c.describe(now));
                    text.push('\n');
                }
            }
        }
    } else if args.len() > 3 && args[2].eq_ignore_ascii_case(b"id") {
        for a in &args[3..] {
            let Some(id) = parse_i64(a) else {
                return out.err("Invalid client ID");
            };
            if let Some(c) = ctx.reg.get(id as u64) {
                text.push_str(&c.describe(now));
                text.push('\n');
            }
        }
    } else if args.len() != 2 {
        return out.err(errors::SYNTAX);
    } else {
        for c in ctx.reg.all() {
            text.push_str(&c.describe(now));
            text.push('\n');
        }
    }
    out.verbatim(text.as_bytes());
}

fn client_kill(ctx: &Ctx, args: &[&[u8]], out: &mut Reply) -> Effect {
    let mut addr: Option<&[u8]> = None;
    let mut laddr: Option<&[u8]> = None;
    let mut id: Option<u64> = None;
    let mut normal = true;
    let mut skipme = true;
    let old_form = args.len() == 3;
    if old_form {
        addr = Some(args[2]);
        skipme = false;
    } else {
        let mut i = 2;
        while i < args.len() {
            if i + 1 >= args.len() {
                out.err(errors::SYNTAX);
                return Effect::None;
            }
            let (o, v) = (args[i], args[i + 1]);
            if o.eq_ignore_ascii_case(b"id") {
                match parse_i64(v) {
                    Some(n) if n >= 1 => id = Some(n as u64),
                    _ => {
                        out.err("client-id should be greater than 0");
                        return Effect::None;
                    }
                }
            } else if o.eq_ignore_ascii_case(b"type") {
                match client_type_ok(v) {
                    Ok(t) => normal = t,
                    Err(e) => {
                        out.err(&e);
                        return Effect::None;
                    }
                }
            } else if o.eq_ignore_ascii_case(b"addr") {
                addr = Some(v);
            } else if o.eq_ignore_ascii_case(b"laddr") {
                laddr = Some(v);
            } else if o.eq_ignore_ascii_case(b"user") {
                if v != b"default" {
                    out.err(&format!("No such user '{}'", String::from_utf8_lossy(v)));
                    return Effect::None;
                }
            } else if o.eq_ignore_ascii_case(b"skipme") {
                if v.eq_ignore_ascii_case(b"yes") {
                    skipme = true;
                } else if v.eq_ignore_ascii_case(b"no") {
                    skipme = false;
                } else {
                    out.err(errors::SYNTAX);
                    return Effect::None;
                }
            } else {
                out.err(errors::SYNTAX);
                return Effect::None;
            }
            i += 2;
        }
    }
    let mut killed = 0;
    let mut effect = Effect::None;
    if normal {
        for c in ctx.reg.all() {
            if addr.is_some_and(|a| a != c.addr.to_string().as_bytes())
                || laddr.is_some_and(|a| a != c.laddr.to_string().as_bytes())
                || id.is_some_and(|i| i != c.id)
            {
                continue;
            }
            if c.id == ctx.me.id {
                if skipme {
                    continue;
                }
                effect = Effect::Close;
            } else {
                c.kill();
                ctx.reg.remove(c.id);
            }
            killed += 1;
        }
    }
    if old_form {
        if killed == 0 {
            out.err("No such client");
        } else {
            out.ok();
        }
    } else {
        out.int(killed);
    }
    effect
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(pass: Option<&str>) -> (Registry, Settings) {
        let set = Settings {
            requirepass: pass.map(String::from),
            databases: 16,
            version: "7.0.15".into(),
        };
        (Registry::default(), set)
    }

    fn run(st: &mut ConnState, reg: &Registry, set: &Settings, args: &[&[u8]]) -> String {
        let me = reg.add(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap(),
        );
        let ctx = Ctx {
            me: &me,
            reg,
            set,
            checked: None,
        };
        let (b, _) = answer(st, &ctx, args);
        reg.remove(me.id);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn select_and_errors() {
        let (reg, set) = setup(None);
        let mut st = ConnState::new(&set);
        assert_eq!(run(&mut st, &reg, &set, &[b"SELECT", b"3"]), "+OK\r\n");
        assert_eq!(st.db, 3);
        assert_eq!(
            run(&mut st, &reg, &set, &[b"SELECT", b"16"]),
            "-ERR DB index is out of range\r\n"
        );
        assert_eq!(
            run(&mut st, &reg, &set, &[b"select", b"x"]),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            run(&mut st, &reg, &set, &[b"select"]),
            "-ERR wrong number of arguments for 'select' command\r\n"
        );
        assert_eq!(
            run(&mut st, &reg, &set, &[b"client", b"nope"]),
            "-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n"
        );
    }

    #[test]
    fn auth_and_noauth() {
        let (reg, set) = setup(Some("pw"));
        let mut st = ConnState::new(&set);
        assert!(precheck(&st, &[b"GET", b"k"]).is_some_and(|r| r.starts_with(b"-NOAUTH")));
        assert!(precheck(&st, &[b"AUTH", b"pw"]).is_none());
        assert!(precheck(&st, &[b"get"]).is_some_and(|r| r.starts_with(b"-ERR wrong number")));
        assert!(run(&mut st, &reg, &set, &[b"AUTH", b"no"]).starts_with("-WRONGPASS"));
        assert_eq!(
            run(&mut st, &reg, &set, &[b"AUTH", b"default", b"pw"]),
            "+OK\r\n"
        );
        assert!(st.authed && precheck(&st, &[b"GET", b"k"]).is_none());
        let (reg, set) = setup(None);
        let mut st = ConnState::new(&set);
        assert!(run(&mut st, &reg, &set, &[b"AUTH", b"x"])
            .starts_with("-ERR AUTH <password> called without"));
    }

    #[test]
    fn another_user_is_checked_by_the_primary() {
        let (reg, set) = setup(Some("pw"));
        let mut st = ConnState::new(&set);
        let me = reg.add(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap(),
        );
        let mut ctx = Ctx {
            me: &me,
            reg: &reg,
            set: &set,
            checked: None,
        };
        let alice = Login {
            user: b"alice".to_vec(),
            password: b"a".to_vec(),
        };
        for args in [
            &[&b"AUTH"[..], b"alice", b"a"][..],
            &[b"HELLO", b"3", b"AUTH", b"alice", b"a"],
        ] {
            let (reply, effect) = answer(&mut st, &ctx, args);
            assert_eq!(
                (reply.len(), effect),
                (0, Effect::CheckLogin(alice.clone()))
            );
            assert!(!st.authed && st.login.is_none());
        }
        ctx.checked = Some(Err(
            b"WRONGPASS invalid username-password pair or user is disabled.".to_vec(),
        ));
        let (reply, _) = answer(&mut st, &ctx, &[b"AUTH", b"alice", b"a"]);
        assert!(reply.starts_with(b"-WRONGPASS"));
        assert!(!st.authed && st.login.is_none());
        ctx.checked = Some(Ok(()));
        let (reply, _) = answer(&mut st, &ctx, &[b"AUTH", b"alice", b"a"]);
        assert_eq!((&reply[..], st.authed), (&b"+OK\r\n"[..], true));
        assert_eq!(st.login.as_ref(), Some(&alice));
        let (reply, _) = answer(&mut st, &ctx, &[b"ACL", b"WHOAMI"]);
        assert_eq!(reply, b"$5\r\nalice\r\n");
        // `default` is the router's own, checked here, and leaves alice.
        let (reply, _) = answer(&mut st, &ctx, &[b"AUTH", b"default", b"pw"]);
        assert_eq!((&reply[..], st.login.is_none()), (&b"+OK\r\n"[..], true));
        reg.remove(me.id);
    }

    #[test]
    fn unsubscribe_when_not_subscribed() {
        let (reg, set) = setup(None);
        let mut st = ConnState::new(&set);
        assert_eq!(
            run(&mut st, &reg, &set, &[b"UNSUBSCRIBE", b"a", b"b"]),
            "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
        );
        assert_eq!(
            run(&mut st, &reg, &set, &[b"punsubscribe"]),
            "*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
        );
    }

    #[test]
    fn hello_switches_protocol() {
        let (reg, set) = setup(None);
        let mut st = ConnState::new(&set);
        let r = run(&mut st, &reg, &set, &[b"HELLO", b"3", b"SETNAME", b"app"]);
        assert!(r.starts_with("%7\r\n$6\r\nserver\r\n"), "{r}");
        assert_eq!((st.resp, &st.name[..]), (3, &b"app"[..]));
        assert_eq!(
            run(&mut st, &reg, &set, &[b"HELLO", b"4"]),
            "-NOPROTO unsupported protocol version\r\n"
        );
    }
}
