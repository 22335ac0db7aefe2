//! ACL: users, their rules and the log of refusals, per database
//! (`server/src/acl/`). A customer database administers its own users;
//! the operator's are the default tenant's.

use super::Ctx;
use crate::acl::{file, log, Denied, User, Users};
use crate::util::parse_i64;

pub fn whoami(ctx: &mut Ctx) {
    let u = ctx.s.user.clone();
    ctx.out.bulk(u.as_bytes());
}

pub fn list(ctx: &mut Ctx) {
    let lines: Vec<Vec<u8>> = ctx
        .shared
        .acl
        .read(ctx.t.id, |u| u.users.values().map(User::describe).collect());
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.bulk(&l);
    }
}

pub fn users(ctx: &mut Ctx) {
    let names: Vec<String> = ctx
        .shared
        .acl
        .read(ctx.t.id, |u| u.users.keys().cloned().collect());
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

fn valid_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name)
        .ok()
        .filter(|n| !crate::acl::selector::has_spaces(n.as_bytes()))
}

pub fn setuser(ctx: &mut Ctx) {
    let Some(name) = valid_name(ctx.args[2]) else {
        return ctx.err("Usernames can't contain spaces or null characters");
    };
    let name = name.to_string();
    let merged = match crate::acl::user::merge_selectors(&ctx.args[3..]) {
        Ok(m) => m,
        Err(arg) => {
            let msg = format!(
                "Unmatched parenthesis in acl selector starting at '{}'.",
                String::from_utf8_lossy(&arg)
            );
            return ctx.err(&msg);
        }
    };
    // All or nothing: the rules apply to a copy first, as in Redis.
    let tenant = ctx.t.id;
    let before = ctx.shared.acl.read(tenant, |u| u.users.get(&name).cloned());
    let mut u = before.clone().unwrap_or_else(|| User::new(&name));
    for op in &merged {
        if let Err(why) = u.apply(op) {
            let msg = format!(
                "Error in ACL SETUSER modifier '{}': {why}",
                String::from_utf8_lossy(op)
            );
            return ctx.err(&msg);
        }
    }
    let after = u.clone();
    ctx.shared.acl.write(tenant, |users| {
        users.users.insert(name.clone(), u);
    });
    if let Some(before) = before {
        kill_lost_subscribers(ctx, &before, &after);
    }
    log_rebuild(ctx, &after);
    changed(ctx);
    ctx.out.ok();
}

/// A customer database's users are data: after a change, its snapshot
/// copy follows (`Tenant::users_file`).
fn changed(ctx: &mut Ctx) {
    if ctx.t.is_customer() {
        ctx.t.users_file = Some(ctx.shared.acl.read(ctx.t.id, file::serialize));
    }
}

/// Logs a customer database's user as the SETUSER that rebuilds it from
/// nothing (passwords as their digests, never as sent), so the database's
/// replicas and its append-only log carry it. (Redis propagates no ACL
/// change; its users are the server's, not a database's.)
fn log_rebuild(ctx: &mut Ctx, u: &User) {
    if !ctx.t.is_customer() {
        return;
    }
    let mut args: Vec<Vec<u8>> = vec![
        b"ACL".to_vec(),
        b"SETUSER".to_vec(),
        u.name.clone().into_bytes(),
    ];
    let mut from_nothing = vec![
        "off",
        "resetkeys",
        "resetchannels",
        "clearselectors",
        "-@all",
    ];
    if !u.token_login {
        from_nothing.push("resetpass");
    }
    args.extend(from_nothing.iter().map(|w| w.as_bytes().to_vec()));
    // The ACL LIST words after `user <name>`.
    let line = u.describe();
    args.extend(line.split(|&b| b == b' ').skip(2).map(<[u8]>::to_vec));
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    ctx.propagate(&args);
}

/// A user whose channel rules shrank: its clients subscribed to a channel
/// (or pattern) it may no longer use are disconnected, as Redis's
/// `ACLKillPubsubClientsIfNeeded`.
fn kill_lost_subscribers(ctx: &mut Ctx, before: &User, after: &User) {
    let allows = |u: &User, ch: &[u8], pattern: bool| {
        std::iter::once(&u.root)
            .chain(&u.selectors)
            .any(|s| s.may_use_channel(ch, pattern))
    };
    let user = after.name.as_str();
    let ps = &ctx.t.pubsub;
    let mut lost: Vec<u64> = Vec::new();
    let plain = ps.channels.iter().chain(ps.shard_channels.iter());
    for (ch, subs) in plain {
        if allows(before, ch, false) && !allows(after, ch, false) {
            lost.extend(
                subs.iter()
                    .filter(|c| *c.user.borrow() == user)
                    .map(|c| c.id),
            );
        }
    }
    for (p, c) in &ps.patterns {
        if *c.user.borrow() == user && !allows(after, p, true) {
            lost.push(c.id);
        }
    }
    lost.sort_unstable();
    lost.dedup();
    super::client::kill_ids(ctx, &lost);
}

pub fn deluser(ctx: &mut Ctx) {
    if ctx.args[2..].iter().any(|a| *a == b"default") {
        return ctx.err("The 'default' user cannot be removed");
    }
    let names: Vec<String> = ctx.args[2..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let gone: Vec<String> = ctx.shared.acl.write(ctx.t.id, |u| {
        names
            .iter()
            .filter(|n| u.users.remove(*n).is_some())
            .cloned()
            .collect()
    });
    // Their connections close, as in Redis.
    kill_logged_in(ctx, |user| gone.iter().any(|g| g == user));
    let names: Vec<&[u8]> = gone.iter().map(|g| g.as_bytes()).collect();
    log_deleted(ctx, &names);
    if !gone.is_empty() {
        changed(ctx);
    }
    ctx.out.int(gone.len() as i64);
}

/// Closes the database's client connections logged in as a user `which`
/// names (links to other nodes aside).
fn kill_logged_in(ctx: &mut Ctx, which: impl Fn(&str) -> bool) {
    let ids: Vec<u64> = ctx
        .t
        .clients
        .values()
        .filter(|c| !c.link.get() && which(&c.user.borrow()))
        .map(|c| c.id)
        .collect();
    super::client::kill_ids(ctx, &ids);
}

/// Logs a customer database's deleted users as the ACL DELUSER that
/// deletes them on its replicas and at a replay.
fn log_deleted(ctx: &mut Ctx, names: &[&[u8]]) {
    if ctx.t.is_customer() && !names.is_empty() {
        let mut del: Vec<&[u8]> = vec![b"ACL", b"DELUSER"];
        del.extend_from_slice(names);
        ctx.propagate(&del);
    }
}

/// The user named by argument 2 of the caller's database, if any.
fn named_user(ctx: &Ctx) -> (String, Option<User>) {
    let name = String::from_utf8_lossy(ctx.args[2]).into_owned();
    let u = ctx
        .shared
        .acl
        .read(ctx.t.id, |u| u.users.get(&name).cloned());
    (name, u)
}

pub fn getuser(ctx: &mut Ctx) {
    let Some(u) = named_user(ctx).1 else {
        return ctx.out.null();
    };
    ctx.out.map(6);
    ctx.out.bulk(b"flags");
    let flags = u.flags();
    ctx.out.set(flags.len());
    for f in flags {
        ctx.out.bulk(f.as_bytes());
    }
    ctx.out.bulk(b"passwords");
    ctx.out.array(u.passwords.len());
    for p in &u.passwords {
        ctx.out.bulk(crate::util::hex(p).as_bytes());
    }
    reply_selector(ctx, &u.root);
    ctx.out.bulk(b"selectors");
    ctx.out.array(u.selectors.len());
    for s in &u.selectors {
        ctx.out.map(3);
        reply_selector(ctx, s);
    }
}

fn reply_selector(ctx: &mut Ctx, s: &crate::acl::Selector) {
    ctx.out.bulk(b"commands");
    ctx.out
        .bulk(crate::acl::describe::command_rules(s).as_bytes());
    ctx.out.bulk(b"keys");
    ctx.out.bulk(&s.keys_rules());
    ctx.out.bulk(b"channels");
    ctx.out.bulk(&s.channels_rules());
}

pub fn cat(ctx: &mut Ctx) {
    use crate::acl::describe::{category_index, members, CATEGORIES};
    if ctx.args.len() > 3 {
        return super::client::subcommand_syntax_error(ctx);
    }
    if ctx.args.len() == 2 {
        ctx.out.array(CATEGORIES.len());
        for c in CATEGORIES {
            ctx.out.bulk(c.as_bytes());
        }
        return;
    }
    let name = String::from_utf8_lossy(ctx.args[2]).into_owned();
    let Some(idx) = category_index(&name) else {
        let msg = format!("Unknown category '{name}'");
        return ctx.err(&msg);
    };
    let reg = crate::cmd::registry();
    let ids = members(idx);
    ctx.out.array(ids.len());
    for &id in ids {
        ctx.out.bulk(reg.all[id].fullname.as_bytes());
    }
}

pub fn genpass(ctx: &mut Ctx) {
    if ctx.args.len() > 3 {
        return super::client::subcommand_syntax_error(ctx);
    }
    let bits = if ctx.args.len() == 3 {
        match parse_i64(ctx.args[2]) {
            None => return ctx.err(super::errors::NOT_INTEGER),
            Some(b) if (1..=4096).contains(&b) => b as usize,
            Some(_) => {
                return ctx.err("ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096")
            }
        }
    } else {
        256
    };
    // Hex digits from a CSPRNG seeded by the operating system (rand's
    // thread-local generator).
    let chars = bits.div_ceil(4);
    let mut bytes = vec![0u8; chars.div_ceil(2)];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let mut s = crate::util::hex(&bytes);
    s.truncate(chars);
    ctx.out.bulk(s.as_bytes());
}

pub fn dryrun(ctx: &mut Ctx) {
    let (name, u) = named_user(ctx);
    let Some(u) = u else {
        let msg = format!("User '{name}' not found");
        return ctx.err(&msg);
    };
    let args = &ctx.args[3..];
    let r = match crate::cmd::lookup(args) {
        crate::cmd::Lookup::Found(r) => r,
        _ => {
            let msg = format!("Command '{}' not found", String::from_utf8_lossy(args[0]));
            return ctx.err(&msg);
        }
    };
    if !crate::dispatch::arity_fits(r.spec, args.len()) {
        let msg = format!("wrong number of arguments for '{}' command", r.fullname);
        return ctx.err(&msg);
    }
    // A database never runs the server's own commands, whoever asks.
    let denied_here = r.spec.scope == super::table::Scope::Denied && ctx.t.is_customer();
    let verdict = if denied_here {
        Err(Denied::Command)
    } else {
        u.check(r, args)
    };
    match verdict {
        Ok(()) => ctx.out.ok(),
        Err(d) => {
            let msg = match d {
                Denied::Command => format!(
                    "This user has no permissions to run the '{}' command",
                    r.fullname
                ),
                Denied::Key(i) => format!(
                    "This user has no permissions to access the '{}' key",
                    String::from_utf8_lossy(args[i])
                ),
                Denied::Channel(i) => format!(
                    "This user has no permissions to access the '{}' channel",
                    String::from_utf8_lossy(args[i])
                ),
            };
            ctx.out.bulk(msg.as_bytes());
        }
    }
}

pub fn acl_log(ctx: &mut Ctx) {
    if ctx.args.len() > 3 {
        return super::client::subcommand_syntax_error(ctx);
    }
    let mut count = 10usize;
    if ctx.args.len() == 3 {
        if ctx.args[2].eq_ignore_ascii_case(b"reset") {
            ctx.shared.acl.write(ctx.t.id, |u| u.log.entries.clear());
            return ctx.out.ok();
        }
        let Some(n) = parse_i64(ctx.args[2]) else {
            return ctx.err(super::errors::NOT_INTEGER);
        };
        count = n.max(0) as usize;
    }
    let entries: Vec<log::Entry> = ctx.shared.acl.read(ctx.t.id, |u| {
        u.log.entries.iter().take(count).cloned().collect()
    });
    ctx.out.array(entries.len());
    for e in entries {
        ctx.out.map(7);
        ctx.out.bulk(b"count");
        ctx.out.int(e.count as i64);
        ctx.out.bulk(b"reason");
        ctx.out.bulk(e.reason.as_bytes());
        ctx.out.bulk(b"context");
        ctx.out.bulk(e.context.as_bytes());
        ctx.out.bulk(b"object");
        ctx.out.bulk(e.object.as_bytes());
        ctx.out.bulk(b"username");
        ctx.out.bulk(e.username.as_bytes());
        ctx.out.bulk(b"age-seconds");
        ctx.out
            .double((ctx.now_ms - e.ctime_ms).max(0) as f64 / 1000.0);
        ctx.out.bulk(b"client-info");
        ctx.out.bulk(e.client_info.as_bytes());
    }
}

/// Where this database's users are saved: the operator's `aclfile`, a
/// customer database's `users.acl` beside its data.
fn acl_path(ctx: &Ctx) -> Option<std::path::PathBuf> {
    if ctx.t.is_customer() {
        return Some(ctx.t.persist.dir.join("users.acl"));
    }
    let f = ctx.shared.config.read().aclfile();
    (!f.is_empty()).then(|| std::path::PathBuf::from(f))
}

const NO_ACLFILE: &str = "This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";

pub fn save(ctx: &mut Ctx) {
    let Some(path) = acl_path(ctx) else {
        return ctx.err(NO_ACLFILE);
    };
    let users = ctx.shared.acl.read(ctx.t.id, Users::clone);
    match file::save(&path, &users) {
        Ok(()) => ctx.out.ok(),
        Err(e) => {
            tracing::warn!("ACL SAVE to {}: {e}", path.display());
            ctx.err("There was an error trying to save the ACLs. Please check the server logs for more information")
        }
    }
}

pub fn load(ctx: &mut Ctx) {
    let Some(path) = acl_path(ctx) else {
        return ctx.err(NO_ACLFILE);
    };
    let tenant = ctx.t.id;
    let before: Vec<String> = ctx
        .shared
        .acl
        .read(tenant, |u| u.users.keys().cloned().collect());
    match load_file(ctx.shared, tenant, &path) {
        Ok(()) => {
            // Logged as what it did: the users gone deleted, every user
            // rebuilt (a replica has no such file to read).
            if ctx.t.is_customer() {
                let now: Vec<User> = ctx
                    .shared
                    .acl
                    .read(tenant, |u| u.users.values().cloned().collect());
                let gone: Vec<&[u8]> = before
                    .iter()
                    .filter(|n| !now.iter().any(|u| u.name == **n))
                    .map(|n| n.as_bytes())
                    .collect();
                log_deleted(ctx, &gone);
                for u in &now {
                    log_rebuild(ctx, u);
                }
                changed(ctx);
            }
            // Connections logged in as the users replaced close, as in
            // Redis (the default user's stay).
            kill_logged_in(ctx, |user| user != "default");
            ctx.out.ok();
        }
        Err(e) => ctx.err(&e),
    }
}

/// Replaces database `tenant`'s users with those of the file at `path`
/// (its ACL LOG stays); on any error nothing changes.
pub fn load_file(
    shared: &crate::shared::Shared,
    tenant: crate::tenant::TenantId,
    path: &std::path::Path,
) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "Error loading ACLs, opening file '{}': {}",
            path.display(),
            os_error_text(&e)
        )
    })?;
    // (Errors name the operator's file as configured, a database's by
    // its name alone: its path is the operator's.)
    let name = if tenant == crate::tenant::TenantId::DEFAULT {
        path.display().to_string()
    } else {
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    shared.acl.install(tenant, Some(&text), &name)
}

/// The operating system's words for an I/O error, without Rust's
/// "(os error N)" (Redis prints `strerror`).
fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "ACL",
        &[
            "CAT [<category>]",
            "    List all commands that belong to <category>, or all command categories",
            "    when no category is specified.",
            "DELUSER <username> [<username> ...]",
            "    Delete a list of users.",
            "DRYRUN <username> <command> [<arg> ...]",
            "    Returns whether the user can execute the given command without executing the command.",
            "GETUSER <username>",
            "    Get the user's details.",
            "GENPASS [<bits>]",
            "    Generate a secure 256-bit user password. The optional `bits` argument can",
            "    be used to specify a different size.",
            "LIST",
            "    Show users details in config file format.",
            "LOAD",
            "    Reload users from the ACL file.",
            "LOG [<count> | RESET]",
            "    Show the ACL log entries.",
            "SAVE",
            "    Save the current config to the ACL file.",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "    Create or modify a user with the specified attributes.",
            "USERS",
            "    List all the registered usernames.",
            "WHOAMI",
            "    Return the current connection username.",
        ],
        "    Prints this help.",
    );
}
