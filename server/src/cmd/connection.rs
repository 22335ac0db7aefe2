//! Connection commands: PING, ECHO, QUIT, RESET, AUTH, HELLO and SELECT.

use super::server::Suspend;
use super::{errors, Ctx};
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
    set_session_user(s, "default");
}

/// Switches the session to `user`; its rules are looked up before its
/// next command (`dispatch::refresh_acl`).
pub(crate) fn set_session_user(s: &mut Session, user: &str) {
    s.user = user.to_string();
    *s.info.user.borrow_mut() = user.to_string();
    s.unrestricted = false;
    if s.acl_epoch != crate::client::ACL_INTERNAL {
        s.acl_epoch = 0;
    }
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
    /// The credentials are for a database this node holds no copy of:
    /// a node that does checks them first (`Login::switch` holds the
    /// check), then the command runs again.
    Verify,
}

/// Whether logins to tenant `to` are checked by another node: this node
/// holds no copy of it (nor of its users) and this login was not just
/// checked there (`Session::login_checked`).
fn held_elsewhere(l: &Login, to: TenantId, checked: bool) -> bool {
    !checked && l.shared.catalog().get(to).is_none() && l.shared.remote_catalog().get(to).is_some()
}

/// Asks a node with a copy of database `to` whether `user` logs in with
/// `pw` there (see `envelope::login_check`); the command runs again once
/// it answers yes.
fn verify_elsewhere(l: &mut Login, to: TenantId, user: &str, pw: &[u8]) -> Auth {
    if !l.may_move {
        return Auth::Later;
    }
    if l.s.in_exec {
        l.err("AUTH to a database held on other nodes is not allowed in a transaction");
        return Auth::Refused;
    }
    l.switch = Some(Suspend::VerifyLogin {
        to,
        req: crate::envelope::login_check(to.0, l.s, user, pw),
        args: l.args.iter().map(|a| a.to_vec()).collect(),
        silent: false,
    });
    Auth::Verify
}

/// Authenticates; on failure replies WRONGPASS (and logs it in the ACL
/// LOG). `user` is None for `AUTH <password>`. In order:
/// - a database's token logs the connection in to that database as its
///   `default` user (`AUTH <token>`, `AUTH default <token>`,
///   `AUTH <db-name> <token>`);
/// - `AUTH <db-name>.<user> <password>`: one of that database's own users;
/// - on a connection in a database, one of that database's users;
/// - otherwise the server's own users, in the default tenant.
///
/// A database this node holds no copy of has its users elsewhere: a login
/// to it is checked by a node that has them (which also sends them, so
/// this node's rules for the connection's own commands are those of its
/// last login), then runs again here.
fn authenticate(l: &mut Login, user: Option<&[u8]>, pw: &[u8]) -> Auth {
    let checked = std::mem::take(&mut l.s.login_checked);
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
        if held_elsewhere(l, to, checked) {
            return verify_elsewhere(l, to, "default", pw);
        }
        // Its default user may have been switched off with ACL SETUSER.
        if !l
            .shared
            .acl
            .read(to, |u| u.users.get("default").is_some_and(|d| d.enabled))
        {
            return refused(l, user, to);
        }
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
    // `<db>.<user>`: database names have no dots.
    let qualified = user.and_then(|u| {
        let dot = u.iter().position(|&b| b == b'.')?;
        let db = std::str::from_utf8(&u[..dot]).ok()?;
        let named = |c: &crate::catalog::Catalog| {
            c.tenants()
                .iter()
                .find(|t| t.name == db)
                .map(|t| (t.id, t.maxclients))
        };
        let (id, max) = named(&catalog).or_else(|| named(&l.shared.remote_catalog()))?;
        Some((id, max, &u[dot + 1..]))
    });
    if let Some((to, max, name)) = qualified {
        if held_elsewhere(l, to, checked) {
            let Ok(name) = std::str::from_utf8(name) else {
                return refused(l, user, to);
            };
            return verify_elsewhere(l, to, name, pw);
        }
        return match l
            .shared
            .acl
            .read(to, |u| u.authenticate(name, pw).map(|u| u.name.clone()))
        {
            Some(name) => database_user_login(l, to, &name, max),
            None => refused(l, user, to),
        };
    }
    if l.on != TenantId::DEFAULT && held_elsewhere(l, l.on, checked) {
        // The operator's users first (they are this node's), then the
        // database's, where they are.
        if let Some(name) = operator_user(l, user, pw) {
            return operator_login(l, &name);
        }
        let Ok(name) = std::str::from_utf8(user.unwrap_or(b"default")) else {
            let on = l.on;
            return refused(l, user, on);
        };
        let on = l.on;
        return verify_elsewhere(l, on, name, pw);
    }
    if l.on != TenantId::DEFAULT {
        let name = user.unwrap_or(b"default");
        if let Some(name) = l
            .shared
            .acl
            .read(l.on, |u| u.authenticate(name, pw).map(|u| u.name.clone()))
        {
            let on = l.on;
            return database_user_login(l, on, &name, 0);
        }
    }
    match operator_user(l, user, pw) {
        Some(name) => operator_login(l, &name),
        None => {
            let on = l.on;
            refused(l, user, on)
        }
    }
}

/// The operator's user (the default tenant's) these credentials are.
fn operator_user(l: &Login, user: Option<&[u8]>, pw: &[u8]) -> Option<String> {
    let with_catalog = !l.shared.catalog().is_empty() || l.shared.tenants_only.load(Relaxed);
    l.shared.acl.read(TenantId::DEFAULT, |u| {
        u.authenticate(user.unwrap_or(b"default"), pw)
            // With tenants, a user without a password would let any
            // wrong token in as the operator: only passwords count.
            .filter(|u| !(with_catalog && u.nopass))
            .map(|u| u.name.clone())
    })
}

fn operator_login(l: &mut Login, name: &str) -> Auth {
    let r = login(l, TenantId::DEFAULT, Some(name), 0);
    if matches!(r, Auth::In) {
        // An operator's password, not a database's token.
        l.s.info.token.set(None);
    }
    r
}

/// `AUTH <user> <password>` in an envelope: a node that holds no copy of
/// this database asks whether the credentials log in to it (see
/// `authenticate`). `default` logs in with one of the database's tokens
/// while it is on; any other user with its password. The answer is the
/// database's users as an aclfile (bulk string), which that node keeps
/// for the connection's own commands; a refusal is WRONGPASS, logged in
/// this database's ACL LOG as Redis logs a failed AUTH (on a replica,
/// asked while the primary is down: TRYAGAIN, logged nowhere). Nothing
/// logs in.
pub fn check_login_for_node(
    t: &crate::tenant::Tenant,
    s: &Session,
    shared: &crate::shared::Shared,
    args: &[&[u8]],
    out: &mut crate::resp::Reply,
) {
    if args.len() != 3 {
        out.error("ERR wrong number of arguments for 'auth' command");
        return;
    }
    let (user, pw) = (args[1], args[2]);
    let ok = if user == b"default" {
        let token = shared
            .catalog()
            .authenticate(None, pw)
            .is_some_and(|spec| spec.id == t.id);
        token
            && shared
                .acl
                .read(t.id, |u| u.users.get("default").is_some_and(|d| d.enabled))
    } else {
        shared
            .acl
            .read(t.id, |u| u.authenticate(user, pw).is_some())
    };
    if ok {
        let file = shared.acl.read(t.id, crate::acl::file::serialize);
        out.bulk(&file);
        return;
    }
    if t.role == crate::repl::Role::Replica {
        // Asked while the primary's node is down: a user made there a
        // moment ago may not have reached this copy yet, so the refusal
        // (and its ACL LOG entry) is the primary's alone to give.
        out.error("TRYAGAIN the database's primary is unreachable and its copy does not take these credentials (they may be newer than it); retry");
        return;
    }
    crate::dispatch::acl_log_entry(
        shared,
        t.id,
        s,
        "auth",
        "toplevel",
        "AUTH".into(),
        String::from_utf8_lossy(user).into_owned(),
    );
    out.error(errors::WRONGPASS);
}

/// Logs in as one of database `to`'s own users (not by token).
fn database_user_login(l: &mut Login, to: TenantId, name: &str, max: u64) -> Auth {
    let r = login(l, to, Some(name), max);
    if matches!(r, Auth::In) {
        l.s.info.token.set(None);
    }
    r
}

/// WRONGPASS, logged in the ACL LOG of database `log_to`: the one whose
/// user it was (`AUTH <db>.<user>`, a token), or the one the connection is
/// on.
fn refused(l: &mut Login, user: Option<&[u8]>, log_to: TenantId) -> Auth {
    crate::dispatch::acl_log_entry(
        l.shared,
        log_to,
        l.s,
        "auth",
        crate::dispatch::acl_context(l.s),
        String::from_utf8_lossy(l.args[0]).into_owned(),
        String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned(),
    );
    l.error(errors::WRONGPASS);
    Auth::Refused
}

/// Logs the session in to tenant `to`, as its ACL user `user` or (None)
/// as a database's `default` user (by token); moves the
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
    set_session_user(l.s, user.unwrap_or("default"));
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
        Auth::Refused | Auth::Verify => {}
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
            Auth::Refused | Auth::Verify => return LoginOutcome::Done,
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
