//! Connection commands: PING, ECHO, QUIT, RESET, AUTH, HELLO, SELECT and
//! the ACL basics.

use super::server::Suspend;
use super::{errors, Ctx};
use crate::acl::User;
use crate::client::{valid_client_name, ReplyMode};
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
    ctx.s.multi = None;
    ctx.s.multi_error = false;
    ctx.s.info.multi_len.set(-1);
    super::multi::unwatch_all(ctx.t, ctx.s);
    super::pubsub::unsubscribe_all(ctx.t, ctx.s);
    ctx.s.db = 0;
    ctx.s.info.db.set(0);
    ctx.s.resp = 2;
    ctx.out.resp = 2;
    ctx.s.info.resp.set(2);
    ctx.s.reply_mode = ReplyMode::On;
    ctx.s.info.name.borrow_mut().clear();
    if ctx.s.monitor {
        ctx.s.monitor = false;
        ctx.s.info.monitor.set(false);
        let id = ctx.s.info.id;
        ctx.t.monitors.retain(|m| m.id != id);
    }
    let open = ctx.shared.default_open();
    ctx.s.authenticated = open;
    set_user(ctx, "default");
    ctx.out.simple("RESET");
}

/// Switches the session to `user` and caches whether ACL checks can be skipped.
fn set_user(ctx: &mut Ctx, user: &str) {
    ctx.s.user = user.to_string();
    *ctx.s.info.user.borrow_mut() = user.to_string();
    ctx.s.unrestricted = ctx.shared.users.read().is_unrestricted(user);
}

/// Authenticates; on failure replies WRONGPASS and returns false. `user`
/// is None for `AUTH <password>`. A database's token logs the connection in
/// to that tenant (`AUTH <token>`, `AUTH default <token>`, `AUTH <db-name>
/// <token>`); otherwise the server's own ACL users log in to the default
/// tenant.
fn authenticate(ctx: &mut Ctx, user: Option<&[u8]>, pw: &[u8]) -> bool {
    let catalog = ctx.shared.catalog();
    // A database held here, or one this node holds no copy of (served
    // through the nodes that do: docs/ROUTING.md, Remote databases).
    let found = catalog
        .authenticate(user, pw)
        .map(|t| (t.id, t.maxclients))
        .or_else(|| {
            let remote = ctx.shared.remote_catalog();
            remote.authenticate(user, pw).map(|t| (t.id, t.maxclients))
        });
    if let Some((to, max)) = found {
        let ok = login(ctx, to, None, max);
        if ok {
            // Which token it was: dropping it from the catalog (a
            // rotation's old token retired) closes this connection.
            let digest = crate::catalog::token_digest(pw);
            ctx.s.info.token.set(Some(digest));
            ctx.shared.meter.tokens_used(to.0, &[digest]);
        }
        return ok;
    }
    let with_catalog = !catalog.is_empty() || ctx.shared.tenants_only.load(Relaxed);
    let ok = ctx
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
            let logged_in = login(ctx, TenantId::DEFAULT, Some(&name), 0);
            if logged_in {
                // An operator's password, not a database's token.
                ctx.s.info.token.set(None);
            }
            logged_in
        }
        None => {
            ctx.error(errors::WRONGPASS);
            false
        }
    }
}

/// Logs the session in to tenant `to`, as the server's ACL user `user` or
/// (None) as a database's own all-powerful `default` user; moves the
/// connection after this reply when `to` is not the tenant it is on and
/// has fewer than `maxclients` (0: no limit) connections.
fn login(ctx: &mut Ctx, to: TenantId, user: Option<&str>, maxclients: u64) -> bool {
    if to != ctx.t.id {
        let busy = ctx.s.in_exec
            || ctx.s.multi.is_some()
            || !ctx.s.watched.is_empty()
            || ctx.s.monitor
            || !ctx.s.channels.is_empty()
            || !ctx.s.patterns.is_empty()
            || !ctx.s.shard_channels.is_empty();
        if busy {
            ctx.err("AUTH to another database is not allowed in a transaction, while watching keys, subscribed or in MONITOR");
            return false;
        }
        if !ctx.shared.tenant_client_enter(to, maxclients) {
            // The plan's connection limit, in Redis's words for the
            // server's; the connection stays where it is.
            crate::shared::GlobalStats::add(&ctx.shared.stats.rejected_connections, 1);
            ctx.err("max number of clients reached");
            return false;
        }
        ctx.s.moving_to = Some(to);
        ctx.suspend = Some(Suspend::Switch(to));
    }
    ctx.s.authenticated = true;
    match user {
        Some(name) => set_user(ctx, name),
        None => {
            ctx.s.user = "default".to_string();
            *ctx.s.info.user.borrow_mut() = "default".to_string();
            ctx.s.unrestricted = true;
        }
    }
    true
}

pub fn auth(ctx: &mut Ctx) {
    if ctx.args.len() > 3 {
        return ctx.syntax_error();
    }
    let (user, pw): (Option<&[u8]>, &[u8]) = if ctx.args.len() == 2 {
        if ctx.shared.default_open() {
            return ctx.err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        (None, ctx.args[1])
    } else {
        (Some(ctx.args[1]), ctx.args[2])
    };
    if authenticate(ctx, user, pw) {
        ctx.out.ok();
    }
}

pub fn hello(ctx: &mut Ctx) {
    let mut ver = 0;
    let mut next = 1;
    if ctx.args.len() >= 2 {
        match parse_i64(ctx.args[1]) {
            Some(v) => ver = v,
            None => return ctx.err("Protocol version is not an integer or out of range"),
        }
        next = 2;
        if !(2..=3).contains(&ver) {
            return ctx.error("NOPROTO unsupported protocol version");
        }
    }
    let mut creds: Option<(&[u8], &[u8])> = None;
    let mut j = next;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        let opt = ctx.args[j];
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            creds = Some((ctx.args[j + 1], ctx.args[j + 2]));
            j += 2;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let n = ctx.args[j + 1];
            if !valid_client_name(n) {
                return ctx
                    .err("Client names cannot contain spaces, newlines or special characters.");
            }
            // Redis 7.0 applies SETNAME while parsing, even if a later
            // option is rejected.
            *ctx.s.info.name.borrow_mut() = n.to_vec();
            j += 1;
        } else {
            let mut msg = b"Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(crate::util::c_str(opt, usize::MAX));
            msg.push(b'\'');
            return ctx.err_bytes(&msg);
        }
        j += 1;
    }
    if let Some((u, p)) = creds {
        if !authenticate(ctx, Some(u), p) {
            return;
        }
    }
    if !ctx.s.authenticated {
        return ctx.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if ver != 0 {
        ctx.s.resp = ver as u8;
        ctx.out.resp = ver as u8;
        ctx.s.info.resp.set(ver as u8);
    }
    let (resp, id) = (ctx.s.resp, ctx.s.info.id);
    hello_reply(ctx.out, REDIS_VERSION, resp, id);
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
