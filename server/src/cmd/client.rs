//! CLIENT subcommands. Lists and kills are scoped to the caller's tenant:
//! the registry they read is the tenant's own.

use super::{errors, Ctx};
use crate::client::{valid_client_name, ReplyMode};
use crate::tenant::PauseMode;
use crate::util::parse_i64;

/// Redis's `addReplySubcommandSyntaxError`.
pub fn subcommand_syntax_error(ctx: &mut Ctx) {
    let msg = format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        String::from_utf8_lossy(ctx.args[1]),
        String::from_utf8_lossy(ctx.args[0]).to_uppercase()
    );
    ctx.err(&msg);
}

pub fn id(ctx: &mut Ctx) {
    ctx.out.int(ctx.s.info.id as i64);
}

pub fn setname(ctx: &mut Ctx) {
    let n = ctx.args[2];
    if !valid_client_name(n) {
        return ctx.err("Client names cannot contain spaces, newlines or special characters.");
    }
    *ctx.s.info.name.borrow_mut() = n.to_vec();
    ctx.out.ok();
}

pub fn getname(ctx: &mut Ctx) {
    let name = ctx.s.info.name.borrow().clone();
    if name.is_empty() {
        ctx.out.null();
    } else {
        ctx.out.bulk(&name);
    }
}

fn line_of(ctx: &Ctx, info: &crate::client::ClientInfo) -> String {
    info.describe(ctx.now_ms)
}

/// The clients CLIENT LIST and KILL act on: the database's own, not the
/// cluster's links to other nodes (a customer who killed the replication
/// stream would cut its own replicas off).
fn clients<'a>(ctx: &'a Ctx) -> impl Iterator<Item = &'a std::rc::Rc<crate::client::ClientInfo>> {
    let links_too = ctx.s.cluster_peer;
    ctx.t
        .clients
        .values()
        .filter(move |c| links_too || !c.link.get())
}

/// Client type names Redis accepts (`getClientTypeByName`).
fn client_type(name: &[u8]) -> Option<&'static str> {
    let l = name.to_ascii_lowercase();
    match &l[..] {
        b"normal" => Some("normal"),
        b"slave" | b"replica" => Some("replica"),
        b"pubsub" => Some("pubsub"),
        b"master" => Some("master"),
        _ => None,
    }
}

/// Our clients are all "normal" until replication and pub/sub exist.
fn is_type(info: &crate::client::ClientInfo, t: &str) -> bool {
    let _ = info;
    t == "normal"
}

pub fn list(ctx: &mut Ctx) {
    let mut out = String::new();
    if ctx.args.len() == 4 && ctx.args[2].eq_ignore_ascii_case(b"type") {
        let Some(t) = client_type(ctx.args[3]) else {
            let msg = format!(
                "Unknown client type '{}'",
                String::from_utf8_lossy(ctx.args[3])
            );
            return ctx.err(&msg);
        };
        for c in clients(ctx) {
            if is_type(c, t) {
                out.push_str(&line_of(ctx, c));
                out.push('\n');
            }
        }
    } else if ctx.args.len() > 3 && ctx.args[2].eq_ignore_ascii_case(b"id") {
        for j in 3..ctx.args.len() {
            let Some(id) = parse_i64(ctx.args[j]) else {
                return ctx.err("Invalid client ID");
            };
            if let Some(c) = clients(ctx).find(|c| c.id == id as u64) {
                out.push_str(&line_of(ctx, c));
                out.push('\n');
            }
        }
    } else if ctx.args.len() != 2 {
        return ctx.syntax_error();
    } else {
        for c in clients(ctx) {
            out.push_str(&line_of(ctx, c));
            out.push('\n');
        }
    }
    ctx.out.verbatim(out.as_bytes());
}

pub fn info(ctx: &mut Ctx) {
    let mut line = line_of(ctx, &ctx.s.info);
    line.push('\n');
    ctx.out.verbatim(line.as_bytes());
}

pub fn kill(ctx: &mut Ctx) {
    let mut addr: Option<&[u8]> = None;
    let mut laddr: Option<&[u8]> = None;
    let mut user: Option<String> = None;
    let mut typ: Option<&str> = None;
    let mut id: Option<u64> = None;
    let mut skipme = true;
    let old_form = ctx.args.len() == 3;
    if old_form {
        addr = Some(ctx.args[2]);
        skipme = false;
    } else {
        let mut i = 2;
        while i < ctx.args.len() {
            let more = ctx.args.len() > i + 1;
            let o = ctx.args[i];
            if !more {
                return ctx.syntax_error();
            }
            let v = ctx.args[i + 1];
            if o.eq_ignore_ascii_case(b"id") {
                match parse_i64(v) {
                    Some(n) if n >= 1 => id = Some(n as u64),
                    _ => return ctx.err("client-id should be greater than 0"),
                }
            } else if o.eq_ignore_ascii_case(b"type") {
                match client_type(v) {
                    Some(t) => typ = Some(t),
                    None => {
                        let msg = format!("Unknown client type '{}'", String::from_utf8_lossy(v));
                        return ctx.err(&msg);
                    }
                }
            } else if o.eq_ignore_ascii_case(b"addr") {
                addr = Some(v);
            } else if o.eq_ignore_ascii_case(b"laddr") {
                laddr = Some(v);
            } else if o.eq_ignore_ascii_case(b"user") {
                let name = String::from_utf8_lossy(v).into_owned();
                // A database's own users: the answer never tells it which
                // users the operator (or another database) has.
                let known = ctx
                    .shared
                    .acl
                    .read(ctx.t.id, |u| u.users.contains_key(&name));
                if !known {
                    let msg = format!("No such user '{name}'");
                    return ctx.err(&msg);
                }
                user = Some(name);
            } else if o.eq_ignore_ascii_case(b"skipme") {
                if v.eq_ignore_ascii_case(b"yes") {
                    skipme = true;
                } else if v.eq_ignore_ascii_case(b"no") {
                    skipme = false;
                } else {
                    return ctx.syntax_error();
                }
            } else {
                return ctx.syntax_error();
            }
            i += 2;
        }
    }
    let me = ctx.s.info.id;
    let mut killed = 0;
    let mut kill_self = false;
    let mut gone = Vec::new();
    for c in clients(ctx) {
        if addr.is_some_and(|a| a != c.addr.to_string().as_bytes())
            || laddr.is_some_and(|a| a != c.laddr.to_string().as_bytes())
            || typ.is_some_and(|t| !is_type(c, t))
            || id.is_some_and(|i| i != c.id)
            || user.as_ref().is_some_and(|u| *u != *c.user.borrow())
        {
            continue;
        }
        if c.id == me {
            if skipme {
                continue;
            }
            kill_self = true;
        } else {
            c.kill();
            gone.push(c.id);
        }
        killed += 1;
    }
    // Killed clients leave the registry at once, as Redis frees them before
    // the next command (CLIENT LIST/KILL in the same pipeline see it gone).
    for id in gone {
        if let Some(c) = ctx.t.clients.get(&id).cloned() {
            crate::tracking::disable(ctx.t, &c);
        }
        ctx.t.clients.remove(&id);
        ctx.t.monitors.retain(|m| m.id != id);
    }
    if old_form {
        if killed == 0 {
            ctx.err("No such client");
        } else {
            ctx.out.ok();
        }
    } else {
        ctx.out.int(killed);
    }
    if kill_self {
        ctx.s.close_after_reply = true;
    }
}

/// Closes these clients of the database (ACL DELUSER and LOAD, a user's
/// lost channel rights): at once, as CLIENT KILL; the caller's own
/// connection after its reply.
pub(crate) fn kill_ids(ctx: &mut Ctx, ids: &[u64]) {
    for &id in ids {
        if id == ctx.s.info.id {
            ctx.s.close_after_reply = true;
            continue;
        }
        if let Some(c) = ctx.t.clients.get(&id).cloned() {
            c.kill();
            crate::tracking::disable(ctx.t, &c);
        }
        ctx.t.clients.remove(&id);
        ctx.t.monitors.retain(|m| m.id != id);
    }
}

pub fn pause(ctx: &mut Ctx) {
    if ctx.args.len() > 4 {
        return subcommand_syntax_error(ctx);
    }
    let mut mode = PauseMode::All;
    if ctx.args.len() == 4 {
        let m = ctx.args[3];
        if m.eq_ignore_ascii_case(b"write") {
            mode = PauseMode::Write;
        } else if m.eq_ignore_ascii_case(b"all") {
            mode = PauseMode::All;
        } else {
            return ctx.err("CLIENT PAUSE mode must be WRITE or ALL");
        }
    }
    let Some(t) = parse_i64(ctx.args[2]) else {
        return ctx.err("timeout is not an integer or out of range");
    };
    if t < 0 {
        return ctx.err("timeout is negative");
    }
    if t > i64::MAX - ctx.now_ms {
        return ctx.err("timeout is out of range");
    }
    // `CLIENT PAUSE 0` ends at once, as in Redis (the deadline is now).
    let end = t + ctx.now_ms;
    // A later, longer or stricter pause wins, as Redis's pauseClients does.
    if ctx.t.pause_mode == PauseMode::None || end > ctx.t.pause_until_ms || mode == PauseMode::All {
        ctx.t.pause_until_ms = ctx.t.pause_until_ms.max(end);
        if ctx.t.pause_mode != PauseMode::All {
            ctx.t.pause_mode = mode;
        }
    }
    ctx.out.ok();
}

pub fn unpause(ctx: &mut Ctx) {
    ctx.t.pause_mode = PauseMode::None;
    ctx.t.pause_until_ms = 0;
    ctx.out.ok();
}

pub fn no_evict(ctx: &mut Ctx) {
    let v = ctx.args[2];
    if v.eq_ignore_ascii_case(b"on") {
        ctx.s.info.no_evict.set(true);
    } else if v.eq_ignore_ascii_case(b"off") {
        ctx.s.info.no_evict.set(false);
    } else {
        return ctx.syntax_error();
    }
    ctx.out.ok();
}

pub fn reply(ctx: &mut Ctx) {
    let v = ctx.args[2];
    if v.eq_ignore_ascii_case(b"on") {
        ctx.s.reply_mode = ReplyMode::On;
        ctx.out.ok();
    } else if v.eq_ignore_ascii_case(b"off") {
        ctx.s.reply_mode = ReplyMode::Off;
    } else if v.eq_ignore_ascii_case(b"skip") {
        if ctx.s.reply_mode == ReplyMode::On {
            ctx.s.reply_mode = ReplyMode::Skip;
        }
    } else {
        ctx.syntax_error();
    }
}

pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "CLIENT",
        &[
            "CACHING (YES|NO)",
            "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
            "GETREDIR",
            "    Return the client ID we are redirecting to when tracking is enabled.",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "UNPAUSE",
            "    Stop the current client pause, resuming traffic.",
            "PAUSE <timeout> [WRITE|ALL]",
            "    Suspend all, or just write, clients for <timeout> milliseconds.",
            "REPLY (ON|OFF|SKIP)",
            "    Control the replies sent to the current connection.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "UNBLOCK <clientid> [TIMEOUT|ERROR]",
            "    Unblock the specified blocked client.",
            "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
            "         [OPTIN] [OPTOUT] [NOLOOP]",
            "    Control server assisted client side caching.",
            "TRACKINGINFO",
            "    Report tracking status for the current connection.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
        "    Prints this help.",
    );
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN]
/// [OPTOUT] [NOLOOP]`: options first, then their fit with each other and
/// with the mode already on, as Redis checks them.
pub fn tracking(ctx: &mut Ctx) {
    use crate::tracking::{overlap, Mode};
    let mut mode = Mode::default();
    let mut j = 3;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        let a = ctx.args[j];
        if a.eq_ignore_ascii_case(b"redirect") && more > 0 {
            j += 1;
            if mode.redirect != 0 {
                return ctx.err("A client can only redirect to a single other client");
            }
            let Some(id) = ctx.arg_i64(j) else {
                return;
            };
            // (A client of this database: others are not visible.)
            if id <= 0 || !ctx.t.clients.contains_key(&(id as u64)) {
                return ctx.err("The client ID you want redirect to does not exist");
            }
            mode.redirect = id as u64;
        } else if a.eq_ignore_ascii_case(b"bcast") {
            mode.bcast = true;
        } else if a.eq_ignore_ascii_case(b"optin") {
            mode.optin = true;
        } else if a.eq_ignore_ascii_case(b"optout") {
            mode.optout = true;
        } else if a.eq_ignore_ascii_case(b"noloop") {
            mode.noloop = true;
        } else if a.eq_ignore_ascii_case(b"prefix") && more > 0 {
            j += 1;
            mode.prefixes.push(ctx.args[j].to_vec());
        } else {
            return ctx.err(errors::SYNTAX);
        }
        j += 1;
    }
    let on = ctx.args[2];
    if on.eq_ignore_ascii_case(b"off") {
        crate::tracking::disable(ctx.t, &ctx.s.info);
        return ctx.out.ok();
    }
    if !on.eq_ignore_ascii_case(b"on") {
        return ctx.err(errors::SYNTAX);
    }
    // A node without a copy of the database sees none of its writes: it
    // could not invalidate anything.
    if ctx.t.remote {
        return ctx.err("CLIENT TRACKING needs a node holding a copy of this database: connect to one of its regions, or through the router");
    }
    if !mode.bcast && !mode.prefixes.is_empty() {
        return ctx.err("PREFIX option requires BCAST mode to be enabled");
    }
    let old = ctx.s.info.tracking.borrow().clone();
    if let Some(o) = &old {
        if o.bcast != mode.bcast {
            return ctx.err("You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if mode.bcast && (mode.optin || mode.optout) {
        return ctx.err("OPTIN and OPTOUT are not compatible with BCAST");
    }
    if mode.optin && mode.optout {
        return ctx.err("You can't specify both OPTIN mode and OPTOUT mode");
    }
    if let Some(o) = &old {
        if (mode.optin && o.optout) || (mode.optout && o.optin) {
            return ctx.err("You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if mode.bcast {
        // No prefix may start another: among those given, and against
        // those the client already has.
        let have: &[Vec<u8>] = old.as_ref().map_or(&[], |o| &o.prefixes);
        for (i, p) in mode.prefixes.iter().enumerate() {
            if let Some(q) = have.iter().find(|q| overlap(p, q)) {
                return prefix_clash(ctx, p, q, "an existing prefix");
            }
            if let Some(q) = mode.prefixes[i + 1..].iter().find(|q| overlap(p, q)) {
                return prefix_clash(ctx, p, q, "another provided prefix");
            }
        }
    }
    crate::tracking::enable(ctx.t, &ctx.s.info, mode);
    ctx.out.ok();
}

/// `Prefix 'p' overlaps with <what> 'q'. ...`
fn prefix_clash(ctx: &mut Ctx, p: &[u8], q: &[u8], what: &str) {
    let mut m = b"Prefix '".to_vec();
    m.extend_from_slice(p);
    m.extend_from_slice(b"' overlaps with ");
    m.extend_from_slice(what.as_bytes());
    m.extend_from_slice(b" '");
    m.extend_from_slice(q);
    m.extend_from_slice(b"'. Prefixes for a single client must not overlap.");
    ctx.err_bytes(&m);
}

/// `CLIENT CACHING YES|NO`: for the next command, in OPTIN / OPTOUT mode.
pub fn caching(ctx: &mut Ctx) {
    let (optin, optout) = match &*ctx.s.info.tracking.borrow() {
        None => (None, None),
        Some(m) => (Some(m.optin), Some(m.optout)),
    };
    if optin.is_none() {
        return ctx.err("CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
    }
    let a = ctx.args[2];
    if a.eq_ignore_ascii_case(b"yes") {
        if optin != Some(true) {
            return ctx
                .err("CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
        }
    } else if a.eq_ignore_ascii_case(b"no") {
        if optout != Some(true) {
            return ctx
                .err("CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
        }
    } else {
        return ctx.err(errors::SYNTAX);
    }
    ctx.s.info.caching.set(true);
    ctx.out.ok();
}

/// `CLIENT GETREDIR`: the redirect (0: none), -1 when not tracking.
pub fn getredir(ctx: &mut Ctx) {
    let r = ctx
        .s
        .info
        .tracking
        .borrow()
        .as_ref()
        .map_or(-1, |m| m.redirect as i64);
    ctx.out.int(r);
}

/// `CLIENT TRACKINGINFO`: flags, redirect and prefixes.
pub fn trackinginfo(ctx: &mut Ctx) {
    let m = ctx.s.info.tracking.borrow().clone();
    let caching = ctx.s.info.caching.get();
    let mut flags: Vec<&str> = Vec::new();
    match &m {
        None => flags.push("off"),
        Some(m) => {
            flags.push("on");
            if m.bcast {
                flags.push("bcast");
            }
            if m.optin {
                flags.push("optin");
                if caching {
                    flags.push("caching-yes");
                }
            }
            if m.optout {
                flags.push("optout");
                if caching {
                    flags.push("caching-no");
                }
            }
            if m.noloop {
                flags.push("noloop");
            }
            if m.broken {
                flags.push("broken_redirect");
            }
        }
    }
    let out = &mut *ctx.out;
    out.map(3);
    out.bulk(b"flags");
    out.set(flags.len());
    for f in flags {
        out.bulk(f.as_bytes());
    }
    out.bulk(b"redirect");
    out.int(m.as_ref().map_or(-1, |m| m.redirect as i64));
    out.bulk(b"prefixes");
    let prefixes: &[Vec<u8>] = m.as_ref().map_or(&[], |m| &m.prefixes);
    out.array(prefixes.len());
    for p in prefixes {
        out.bulk(p);
    }
}
