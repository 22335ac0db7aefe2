//! CLIENT subcommands. Lists and kills are scoped to the caller's tenant:
//! the registry they read is the tenant's own.

use super::Ctx;
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
                // A database has only its own `default` user: the answer
                // must not tell it which users the operator has.
                let known = if ctx.t.is_customer() {
                    name == "default"
                } else {
                    ctx.shared.users.read().users.contains_key(&name)
                };
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
    super::command::reply_help(
        ctx,
        "CLIENT",
        &[
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
            "    * ID <client-id>",
            "      Kill connections by client id.",
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
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
    );
}
