//! Connection commands: PING, ECHO, QUIT, RESET, AUTH, HELLO, SELECT and
//! the ACL basics.

use super::server::Suspend;
use super::{errors, Ctx};
use crate::acl::User;
use crate::client::{valid_client_name, ReplyMode, Session};
use crate::shared::REDIS_VERSION;
use crate::tenant::TenantId;
use crate::util::parse_i64;
use std::sync::atomic::Ordering::Relaxed;

pub fn ping(ctx: &mut Ctx) {
    if ctx.args.len() > 2 {
        return ctx.err("wrong number of arguments for 'ping' command");
    }
    if ctx.s.resp == 2 && ctx.s.subscriptions() > 0 {
        // Subscribed RESP2 clients get PING as a message-shaped array.
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(ctx.args.get(1).copied().unwrap_or(b""));
    } else if ctx.args.len() == 1 {
        ctx.out.simple("PONG");
    } else {
        ctx.out.bulk(ctx.args[1]);
    }
}

pub fn echo(ctx: &mut Ctx) {
    ctx.out.bulk(ctx.args[1]);
}

pub fn quit(ctx: &mut Ctx) {
    ctx.out.ok();
    ctx.s.close_after_reply = true;
}

pub fn reset(ctx: &mut Ctx) {
    super::multi::unwatch_all(ctx.t, ctx.s);
    super::pubsub::unsubscribe_all(ctx.t, ctx.s);
    crate::tracking::disable(ctx.t, &ctx.s.info);
    if ctx.s.monitor {
        let id = ctx.s.info.id;
        ctx.t.monitors.retain(|m| m.id != id);
    }
    reset_session(ctx.shared, ctx.s, ctx.out);
    ctx.out.simple("RESET");
}

/// What RESET changes in the session itself: its transaction, database,
/// protocol, reply mode, name, MONITOR flag and login. (The WATCHes,
/// subscriptions and the MONITOR registration are the database's: see
/// [`reset`]; while a script holds the database, `conn` answers RESET
/// with this when the session has none of the last two.)
pub fn reset_session(
    shared: &crate::shared::Shared,
    s: &mut Session,
    out: &mut crate::resp::Reply,
) {
    s.multi = None;
    s.multi_error = false;
    s.info.multi_len.set(-1);
    s.db = 0;
    s.info.db.set(0);
    s.resp = 2;
    out.resp = 2;
    s.info.resp.set(2);
    s.reply_mode = ReplyMode::On;
    s.info.name.borrow_mut().clear();
    s.monitor = false;
    s.info.monitor.set(false);
    s.authenticated = shared.default_open();
    set_session_user(shared, s, "default");
}

/// Switches the session to `user` and caches whether ACL checks can be skipped.
fn set_user(ctx: &mut Ctx, user: &str) {
    set_session_user(ctx.shared, ctx.s, user);
}

fn set_session_user(shared: &crate::shared::Shared, s: &mut Session, user: &str) {
    s.user = user.to_string();
    *s.info.user.borrow_mut() = user.to_string();
    s.unrestricted = shared.users.read().is_unrestricted(user);
}

/// What AUTH and HELLO use of a command's context: not the database.
/// Redis answers both while a script runs past busy-reply-threshold
/// (they are `allow-busy`); here the script holds its database meanwhile
/// (`script::busy`), so the connection's wait runs them on this.
pub struct Login<'a> {
    pub args: &'a [&'a [u8]],
    pub shared: &'a crate::shared::Shared,
    pub s: &'a mut Session,
    pub out: &'a mut crate::resp::Reply,
    /// The database the connection is on.
    pub on: TenantId,
    /// Whether the connection may move to another database now (not
    /// while it waits for a script's end).
    pub may_move: bool,
    /// Set when the connection is to move after this reply.
    pub switch: Option<Suspend>,
    /// The error reply written, if one was (the caller counts it).
    pub error: Option<String>,
}

/// How a [`Login`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Replied (`Login::error` says whether with an error).
    Done,
    /// It would move the connection, which may not move now: nothing
    /// was written or changed; run it again later.
    Later,
}

impl Login<'_> {
    /// An error with its own code (`WRONGPASS ...`).
    fn error(&mut self, msg: &str) {
        self.out.error(msg);
        self.error = Some(msg.to_string());
    }

    /// `-ERR <msg>`.
    fn err(&mut self, msg: &str) {
        self.error(&format!("ERR {msg}"));
    }

    /// Runs `f` for a command whose context is `ctx`.
    fn run(ctx: &mut Ctx, f: fn(&mut Login) -> LoginOutcome) {
        let mut l = Login {
            args: ctx.args,
            shared: ctx.shared,
            s: &mut *ctx.s,
            out: &mut *ctx.out,
            on: ctx.t.id,
            may_move: true,
            switch: None,
            error: None,
        };
        f(&mut l);
        let (switch, error) = (l.switch, l.error);
        if switch.is_some() {
            ctx.suspend = switch;
        }
        if let Some(e) = error {
            ctx.failed = true;
            ctx.t.count_error(&e);
        }
    }
}

/// What [`authenticate`] did.
enum Auth {
    In,
    Refused,
    Later,
}

/// Authenticates; on failure replies WRONGPASS. `user` is None for
/// `AUTH <password>`. A database's token logs the connection in to that
/// tenant (`AUTH <token>`, `AUTH default <token>`, `AUTH <db-name>
/// <token>`); otherwise the server's own ACL users log in to the default
/// tenant.
fn authenticate(l: &mut Login, user: Option<&[u8]>, pw: &[u8]) -> Auth {
    let catalog = l.shared.catalog();
    // A database held here, or one this node holds no copy of (served
    // through the nodes that do: docs/ROUTING.md, Remote databases).
    let found = catalog
        .authenticate(user, pw)
        .map(|t| (t.id, t.maxclients))
        .or_else(|| {
            let remote = l.shared.remote_catalog();
            remote.authenticate(user, pw).map(|t| (t.id, t.maxclients))
        });
    if let Some((to, max)) = found {
        let r = login(l, to, None, max);
        if matches!(r, Auth::In) {
            // Which token it was: dropping it from the catalog (a
            // rotation's old token retired) closes this connection.
            let digest = crate::catalog::token_digest(pw);
            l.s.info.token.set(Some(digest));
            l.shared.meter.tokens_used(to.0, &[digest]);
        }
        return r;
    }
    let with_catalog = !catalog.is_empty() || l.shared.tenants_only.load(Relaxed);
    let ok = l
        .shared
        .users
        .read()
        .authenticate(user.unwrap_or(b"default"), pw)
        // With tenants, a user without a password would let any wrong
        // token in as the operator: only passwords count.
        .filter(|u| !(with_catalog && u.nopass))
        .map(|u| u.name.clone());
    match ok {
        Some(name) => {
            let r = login(l, TenantId::DEFAULT, Some(&name), 0);
            if matches!(r, Auth::In) {
                // An operator's password, not a database's token.
                l.s.info.token.set(None);
            }
            r
        }
        None => {
            l.error(errors::WRONGPASS);
            Auth::Refused
        }
    }
}

/// Logs the session in to tenant `to`, as the server's ACL user `user` or
/// (None) as a database's own all-powerful `default` user; moves the
/// connection after this reply when `to` is not the tenant it is on and
/// has fewer than `maxclients` (0: no limit) connections.
fn login(l: &mut Login, to: TenantId, user: Option<&str>, maxclients: u64) -> Auth {
    if to != l.on {
        if !l.may_move {
            return Auth::Later;
        }
        let s = &*l.s;
        let busy = s.in_exec
            || s.multi.is_some()
            || !s.watched.is_empty()
            || s.monitor
            || !s.channels.is_empty()
            || !s.patterns.is_empty()
            || !s.shard_channels.is_empty();
        if busy {
            l.err("AUTH to another database is not allowed in a transaction, while watching keys, subscribed or in MONITOR");
            return Auth::Refused;
        }
        if !l.shared.tenant_client_enter(to, maxclients) {
            // The plan's connection limit, in Redis's words for the
            // server's; the connection stays where it is.
            crate::shared::GlobalStats::add(&l.shared.stats.rejected_connections, 1);
            l.err("max number of clients reached");
            return Auth::Refused;
        }
        l.s.moving_to = Some(to);
        l.switch = Some(Suspend::Switch(to));
    }
    l.s.authenticated = true;
    match user {
        Some(name) => set_session_user(l.shared, l.s, name),
        None => {
            l.s.user = "default".to_string();
            *l.s.info.user.borrow_mut() = "default".to_string();
            l.s.unrestricted = true;
        }
    }
    Auth::In
}

pub fn auth(ctx: &mut Ctx) {
    Login::run(ctx, auth_login);
}

/// `AUTH [user] password`.
pub fn auth_login(l: &mut Login) -> LoginOutcome {
    if l.args.len() > 3 {
        l.err(errors::SYNTAX);
        return LoginOutcome::Done;
    }
    let (user, pw): (Option<&[u8]>, &[u8]) = if l.args.len() == 2 {
        if l.shared.default_open() {
            l.err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            return LoginOutcome::Done;
        }
        (None, l.args[1])
    } else {
        (Some(l.args[1]), l.args[2])
    };
    match authenticate(l, user, pw) {
        Auth::In => l.out.ok(),
        Auth::Refused => {}
        Auth::Later => return LoginOutcome::Later,
    }
    LoginOutcome::Done
}

pub fn hello(ctx: &mut Ctx) {
    Login::run(ctx, hello_login);
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub fn hello_login(l: &mut Login) -> LoginOutcome {
    let mut ver = 0;
    let mut next = 1;
    if l.args.len() >= 2 {
        match parse_i64(l.args[1]) {
            Some(v) => ver = v,
            None => {
                l.err("Protocol version is not an integer or out of range");
                return LoginOutcome::Done;
            }
        }
        next = 2;
        if !(2..=3).contains(&ver) {
            l.error("NOPROTO unsupported protocol version");
            return LoginOutcome::Done;
        }
    }
    let mut creds: Option<(&[u8], &[u8])> = None;
    let mut j = next;
    while j < l.args.len() {
        let more = l.args.len() - 1 - j;
        let opt = l.args[j];
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            creds = Some((l.args[j + 1], l.args[j + 2]));
            j += 2;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let n = l.args[j + 1];
            if !valid_client_name(n) {
                l.err("Client names cannot contain spaces, newlines or special characters.");
                return LoginOutcome::Done;
            }
            // Redis 7.0 applies SETNAME while parsing, even if a later
            // option is rejected. (Again when run later: the same name.)
            *l.s.info.name.borrow_mut() = n.to_vec();
            j += 1;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(crate::util::c_str(opt, usize::MAX));
            msg.push(b'\'');
            l.out.error_bytes(&msg);
            l.error = Some(String::from_utf8_lossy(&msg).into_owned());
            return LoginOutcome::Done;
        }
        j += 1;
    }
    if let Some((u, p)) = creds {
        match authenticate(l, Some(u), p) {
            Auth::In => {}
            Auth::Refused => return LoginOutcome::Done,
            Auth::Later => return LoginOutcome::Later,
        }
    }
    if !l.s.authenticated {
        l.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return LoginOutcome::Done;
    }
    if ver != 0 {
        l.s.resp = ver as u8;
        l.out.resp = ver as u8;
        l.s.info.resp.set(ver as u8);
    }
    let (resp, id) = (l.s.resp, l.s.info.id);
    hello_reply(l.out, REDIS_VERSION, resp, id);
    LoginOutcome::Done
}

/// HELLO's map (the router answers HELLO for its clients with it too).
pub fn hello_reply(out: &mut crate::resp::Reply, version: &str, resp: u8, id: u64) {
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(version.as_bytes());
    out.bulk(b"proto");
    out.int(resp as i64);
    out.bulk(b"id");
    out.int(id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.empty_array();
}

pub fn select(ctx: &mut Ctx) {
    let Some(id) = ctx.arg_int(1) else { return };
    if id < 0 || id as usize >= ctx.t.ks.dbs.len() {
        return ctx.err(errors::DB_INDEX);
    }
    ctx.s.db = id as usize;
    ctx.s.info.db.set(id as usize);
    ctx.out.ok();
}

pub fn acl_whoami(ctx: &mut Ctx) {
    let u = ctx.s.user.clone();
    ctx.out.bulk(u.as_bytes());
}

pub fn acl_list(ctx: &mut Ctx) {
    let lines: Vec<String> = ctx
        .shared
        .users
        .read()
        .users
        .values()
        .map(User::describe)
        .collect();
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.bulk(l.as_bytes());
    }
}

pub fn acl_users(ctx: &mut Ctx) {
    let names: Vec<String> = ctx.shared.users.read().users.keys().cloned().collect();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

pub fn acl_setuser(ctx: &mut Ctx) {
    let Ok(name) = std::str::from_utf8(ctx.args[2]) else {
        return ctx.err("Usernames can't contain spaces or null characters");
    };
    if name.contains(' ') || name.contains('\0') {
        return ctx.err("Usernames can't contain spaces or null characters");
    }
    let mut users = ctx.shared.users.write();
    // All-or-nothing, as Redis applies rules to a copy first.
    let mut u = users
        .users
        .get(name)
        .cloned()
        .unwrap_or_else(|| User::new(name));
    for i in 3..ctx.args.len() {
        if let Err(why) = u.apply_rule(ctx.args[i]) {
            drop(users);
            let msg = format!(
                "Error in ACL SETUSER modifier '{}': {}",
                String::from_utf8_lossy(ctx.args[i]),
                why
            );
            return ctx.err(&msg);
        }
    }
    users.users.insert(name.to_string(), u);
    drop(users);
    if ctx.s.user == name {
        set_user(ctx, name);
    }
    ctx.out.ok();
}

pub fn acl_help(ctx: &mut Ctx) {
    super::command::reply_help(
        ctx,
        "ACL",
        &[
            "LIST",
            "    Show users details in config file format.",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "    Create or modify a user with the specified attributes.",
            "USERS",
            "    List all the registered usernames.",
            "WHOAMI",
            "    Return the current connection username.",
        ],
    );
}
