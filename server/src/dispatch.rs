//! Runs one parsed request against a tenant: Redis's `processCommand` +
//! `call` (lookup, arity, auth, ACL, pause, execution, stats, slowlog,
//! MONITOR feed, CLIENT REPLY handling), in that order so the errors a client
//! sees match Redis's.

use std::time::Instant;

use crate::client::{ReplyMode, Session};
use crate::cmd::server::{monitor_line, Suspend};
use crate::cmd::{errors, lookup, Ctx, Lookup};
use crate::resp::Reply;
use crate::shared::{Settings, Shared};
use crate::tenant::{CmdStat, PauseMode, SlowEntry, Tenant};
use crate::util::c_str;

/// What the connection must do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Reply written; close the connection after sending it.
    Close,
    /// The tenant is paused for this command: run it again later.
    Paused,
    /// The command waits before replying.
    Suspend(Suspend),
}

/// Commands a RESP2 client may send while subscribed.
const SUBSCRIBED_ALLOWED: &[&str] = &[
    "subscribe",
    "ssubscribe",
    "psubscribe",
    "unsubscribe",
    "sunsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];
/// Commands that run at once inside MULTI instead of being queued.
const MULTI_IMMEDIATE: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

const SLOWLOG_MAX_ARGC: usize = 32;
/// Most bytes queued for a MONITOR client that does not read, when no
/// normal-class output limit is configured.
pub const MONITOR_PUSH_CAP: usize = 64 * 1024 * 1024;
const SLOWLOG_MAX_STRING: usize = 128;

/// A write held by a move of the database's primary (or a planned
/// failover) longer than the move may take: this node no longer takes
/// writes, and has not learnt where the new primary is.
const MOVE_STALLED: &str = "TRYAGAIN the database's primary is moving and this node has not seen the move end yet; the write did not run, retry";

/// Redis's "unknown command" text, byte for byte.
pub fn unknown_command(args: &[&[u8]]) -> Vec<u8> {
    let mut list: Vec<u8> = Vec::new();
    for a in &args[1..] {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(c_str(a, room));
        list.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str(args[0], 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&list);
    msg
}

fn reject(
    t: &mut Tenant,
    s: &mut Session,
    out: &mut Reply,
    id: Option<usize>,
    msg: &str,
    with_code: bool,
) {
    // A command rejected while queuing aborts the transaction (EXECABORT).
    if s.multi.is_some() {
        s.multi_error = true;
    }
    // EXEC itself refused (a user without it): the transaction (if any)
    // is discarded, in Redis's words (`execCommandAbort`, even outside
    // MULTI).
    let is_exec = id.is_some_and(|i| crate::cmd::registry().all[i].fullname == "exec");
    if is_exec {
        s.multi = None;
        s.multi_error = false;
        s.info.multi_len.set(-1);
        crate::cmd::multi::unwatch_all(t, s);
        // (Redis's text: the error's code, if it has one, not `ERR`.)
        let abort = format!("EXECABORT Transaction discarded because of: {msg}");
        t.count_error(&abort);
        out.error(&abort);
    } else if with_code {
        t.count_error(msg);
        out.error(msg);
    } else {
        t.count_error("ERR");
        out.err(msg);
    }
    if let Some(id) = id {
        if let Some(s) = t.stats.commands.get_mut(id) {
            s.rejected_calls += 1;
        }
    }
}

/// Whether a command queued in the session's transaction is `f` (EXEC
/// counts as a write / may-replicate command when one of its commands is).
pub(crate) fn queued_any(s: &Session, f: impl Fn(&crate::cmd::table::Registered) -> bool) -> bool {
    s.multi.as_ref().is_some_and(|q| {
        q.iter().any(|c| {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
            matches!(lookup(&args), Lookup::Found(r) if f(r))
        })
    })
}

/// The flags a script or function declares (a shebang, a library's
/// registration) that EVAL, EVALSHA, FCALL or one of their `_RO` forms
/// runs; None for other commands, unknown scripts and scripts without a
/// shebang. Redis's `scriptFlagsToCmdFlags` makes them the command's
/// own: one that may write is a write (and `denyoom` unless
/// `allow-oom`), one that says `allow-stale` runs on a stale replica.
/// (Scripts without a shebang are checked as they run instead.)
fn declared_script_flags(
    t: &Tenant,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Option<crate::script::Flags> {
    let name = args.get(1)?;
    let flags = match r.fullname.as_str() {
        "eval" | "eval_ro" => crate::script::shebang(name).ok().map(|f| f.0),
        "evalsha" | "evalsha_ro" => t.scripts.flags(name),
        "fcall" | "fcall_ro" => t.functions.get(name).map(|(_, _, flags, _)| flags),
        _ => None,
    };
    flags.filter(|f| f.declared)
}

/// Whether CLIENT PAUSE WRITE holds the command: a write or a command that
/// may replicate (Redis 7.0's `is_may_replicate_command`). A script or
/// function that declares its flags is a write unless it says
/// `no-writes`, and nothing else (Redis's `scriptFlagsToCmdFlags` drops
/// the command's own may-replicate then): a read-only one runs during the
/// pause.
fn may_replicate(t: &Tenant, r: &crate::cmd::table::Registered, args: &[&[u8]]) -> bool {
    match declared_script_flags(t, r, args) {
        Some(f) => !f.no_writes,
        None => r.may_replicate,
    }
}

/// Whether a script or function that declares its flags may not start
/// over the memory limit: it may write and says nothing of `allow-oom`.
fn script_denies_oom(t: &Tenant, r: &crate::cmd::table::Registered, args: &[&[u8]]) -> bool {
    declared_script_flags(t, r, args).is_some_and(|f| !f.allow_oom && !f.no_writes)
}

/// Redis's `is_write_command`: a write, or an EXEC that queued one.
/// A write, for routing and the primary's checks: a script or function
/// that may write (EVAL, EVALSHA, FCALL: their writes are known only once
/// they run) counts as one.
/// A write, or a PUBLISH: what the replication stream carries.
fn writes_or_publishes(r: &crate::cmd::table::Registered, s: &Session) -> bool {
    is_write_command(r, s) || matches!(r.fullname.as_str(), "publish" | "spublish")
}

/// What only the primary runs, for every copy: writes and publishes (its
/// stream carries them to all), and the state kept on the primary that
/// later requests there depend on. Scripts are cached on the primary,
/// where EVAL/EVALSHA run: SCRIPT LOAD, FLUSH and EXISTS go there too,
/// so SCRIPT LOAD then EVALSHA works from any region. A database's users
/// change on its primary, whose stream brings the change to every copy
/// (docs/ACL.md).
fn primary_bound(r: &crate::cmd::table::Registered, s: &Session) -> bool {
    writes_or_publishes(r, s)
        || matches!(
            r.fullname.as_str(),
            "script|load"
                | "script|flush"
                | "script|exists"
                | "acl|setuser"
                | "acl|deluser"
                | "acl|load"
        )
}

fn is_write_command(r: &crate::cmd::table::Registered, s: &Session) -> bool {
    r.write
        || r.runs_script()
        || (r.fullname == "exec" && queued_any(s, |q| q.write || q.runs_script()))
}

/// The envelope and request that send `args` to the tenant's primary, when
/// this connection's request can go there: a customer's (not a cluster
/// link's), on a replica the cluster placed (its primary is a node), and
/// not one that holds the connection (a transaction, a blocking command,
/// subscriptions stay local and get Redis's replica answers).
fn forward_request(
    t: &Tenant,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Option<Vec<u8>> {
    t.upstream.as_ref()?.node?;
    // `origin`: the request came in a router's envelope (its link is a
    // cluster peer's, made a customer's for the request): never again.
    // `in_exec`: EXEC's queued commands reply inside its array.
    if s.cluster_peer
        || s.origin.is_some()
        || s.multi.is_some()
        || s.in_exec
        || s.subscriptions() > 0
        // (XREADGROUP blocks only with BLOCK; XREAD may block here.)
        || (r.spec.has_flag("blocking") && r.fullname != "xreadgroup")
        || crate::forward::pins(r, args)
        || r.fullname == "exec"
    {
        return None;
    }
    Some(enveloped(t, s, args))
}

/// A write another node sent here in an envelope, as to the primary, that
/// meets a replica: this copy handed the primary over since the router
/// sent it (a planned handoff), and the router has not learnt the new
/// primary yet. Rather than answer `-READONLY` (the router would learn
/// the new primary, then send the write again: a round trip across the
/// WAN from a far region), this node sends it on to its own primary, a
/// hop inside the region, and the reply goes back with the new primary's
/// token. So are the other requests only the primary runs
/// ([`primary_bound`]: the script cache, users). Once only (the envelope
/// says it was relayed): a relayed write that meets a replica again gets
/// `-READONLY`. A request that ties a stream (MULTI, WATCH, blocking) is
/// not relayed either.
fn relay(
    t: &mut Tenant,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Option<Outcome> {
    t.upstream.as_ref()?.node?;
    if s.relayed
        || !primary_bound(r, s)
        || s.multi.is_some()
        || s.in_exec
        || r.fullname == "exec"
        || r.spec.has_flag("blocking")
        || crate::forward::pins(r, args)
    {
        return None;
    }
    let req = crate::envelope::Envelope {
        relayed: true,
        ..crate::envelope::Envelope::of_client(t.id.0, s, None, String::new())
    }
    .request(args);
    t.stats.routes.relayed_writes += 1;
    // Counted as it happens: the copy that relays is usually dropped a
    // moment later (its node was the primary, and is not the standby), and
    // with it the tenant whose counters the cron publishes.
    metrics::counter!("anykv_relayed_writes_total", "tenant" => t.name.clone()).increment(1);
    tracing::debug!(
        tenant = t.id.0,
        client = s.info.id,
        "relaying a write to the new primary"
    );
    Some(Outcome::Suspend(Suspend::Forward {
        req,
        args: args.iter().map(|a| a.to_vec()).collect(),
        silent: false,
        pinned: false,
        blocks: false,
        read: None,
    }))
}

/// A request for the connection's pin. WAIT carries the connection's
/// position as its `min-token`: the pin's stream on the primary is not
/// the one the connection's writes went on, and WAIT must count the
/// replicas that have those writes (Redis's `c->woff`; see
/// `envelope::begin`), not the ones that have what the new stream wrote,
/// which is nothing.
fn pinned_request(
    t: &Tenant,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Vec<u8> {
    let min = (r.fullname == "wait")
        .then(|| s.last_token.clone())
        .flatten();
    enveloped_at(t, s, args, min)
}

/// `args` in an envelope of this connection's client (docs/ROUTING.md).
fn enveloped(t: &Tenant, s: &Session, args: &[&[u8]]) -> Vec<u8> {
    enveloped_at(t, s, args, None)
}

/// `args` in an envelope that asks the copy to have `min_token`.
fn enveloped_at(
    t: &Tenant,
    s: &Session,
    args: &[&[u8]],
    min_token: Option<crate::envelope::Token>,
) -> Vec<u8> {
    // A node holding no copy of the database has no copy of its users
    // either (only those of its last login, docs/ACL.md): the copy checks
    // the request against the user's rules as they are there. A
    // replica's node checked them itself.
    let user = if t.remote {
        s.user.clone()
    } else {
        String::new()
    };
    crate::envelope::Envelope::of_client(t.id.0, s, min_token, user).request(args)
}

/// A request this node forwards: MONITOR shows it here (once), and CLIENT
/// LIST's `cmd=` names it, as if it ran here.
#[allow(clippy::too_many_arguments)]
fn forwarding(
    t: &mut Tenant,
    s: &mut Session,
    shared: &Shared,
    set: &Settings,
    r: &'static crate::cmd::table::Registered,
    args: &[&[u8]],
    fed: bool,
    outcome: &Outcome,
) {
    if !matches!(outcome, Outcome::Suspend(Suspend::Forward { .. })) {
        return;
    }
    s.info.last_cmd.set(r.fullname.as_str());
    if !fed {
        feed_monitors(t, s, shared, set, r, args);
    }
}

/// A read whose answer is a fact of one copy rather than of the data:
/// a replica's encodings follow the effects it applied (a set rebuilt by
/// a full sync, a sorted set the primary converted before it shrank) and
/// its idle times its own reads. The primary's are the database's, as the
/// standalone router also has it (router/src/classify.rs).
fn primary_only_read(name: &str) -> bool {
    name == "object"
}

/// A read of the keyspace (Redis's `readonly` flag), or an EXEC that
/// queued one.
fn is_read_command(r: &crate::cmd::table::Registered, s: &Session) -> bool {
    r.read || (r.fullname == "exec" && queued_any(s, |q| q.read))
}

/// Where a customer's request on a cluster replica runs: None here, or the
/// outcome that sends it to the primary (or waits for this copy to catch
/// up first). Counts the route in the tenant's `routes` (INFO routing).
fn route_on_replica(
    t: &mut Tenant,
    s: &mut Session,
    set: &Settings,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
    waited: bool,
    out: &mut Reply,
) -> Option<Outcome> {
    use crate::catalog::Consistency;
    let customer = !s.cluster_peer && s.origin.is_none() && t.upstream.as_ref()?.node.is_some();
    if !customer {
        return None;
    }
    // A transaction, WATCH or a blocking command ties the connection to
    // the primary, on a stream of its own, until it ends (forward::Pin).
    // (`fullname` of a subcommand is `client|setname`: the command is
    // what acts on the connection.)
    let name = r.fullname.split('|').next().unwrap_or_default();
    let own = crate::envelope::is_router_command(name);
    if s.pin.is_some() || (crate::forward::pins(r, args) && !own && s.subscriptions() == 0) {
        if !own {
            t.stats.routes.pinned += 1;
            let in_multi = s.pin.as_ref().is_some_and(|p| p.in_multi());
            return Some(Outcome::Suspend(Suspend::Forward {
                req: pinned_request(t, s, r, args),
                args: args.iter().map(|a| a.to_vec()).collect(),
                silent: false,
                pinned: true,
                blocks: crate::forward::blocks(r, args, in_multi),
                read: None,
            }));
        }
        // The connection's own commands stay here. RESET ends the
        // transaction and every WATCH: letting the stream go does.
        if name == "reset" {
            s.pin = None;
        } else if name != "quit" && s.pin.as_ref().is_some_and(|p| p.in_multi()) {
            let msg = format!(
                "ERR {} inside MULTI is not supported on a node that holds a replica of this database; DISCARD, then send it before MULTI",
                name.to_ascii_uppercase()
            );
            reject(t, s, out, Some(r.id), &msg, true);
            return Some(Outcome::Continue);
        }
        return None;
    }
    // Writes, publishes, the script cache and users go to the primary
    // (`primary_bound`); a read-only script this copy has not cached runs
    // there.
    let write = primary_bound(r, s);
    let script_elsewhere =
        name == "evalsha_ro" && args.get(1).is_some_and(|sha| !t.scripts.exists(sha));
    let read = !write && (is_read_command(r, s) || primary_only_read(name));
    if !(write || read) {
        return None;
    }
    let mut behind = read
        && s.last_token
            .as_ref()
            .is_some_and(|tok| !crate::envelope::can_serve(&t.repl, t.log.offset(), tok));
    let mut to_primary = write
        || primary_only_read(name)
        || script_elsewhere
        || (read && t.diverged)
        || match t.consistency {
            Consistency::Strong => read,
            Consistency::Ryw => behind,
            Consistency::Nearest => false,
        };
    // A SCAN cursor is valid only on the copy that gave it (the tables it
    // walks are that copy's): an iteration stays where its cursor 0 ran.
    let cursor = match name {
        "scan" => args.get(1),
        "sscan" | "hscan" | "zscan" => args.get(2),
        _ => None,
    };
    if let Some(c) = cursor {
        // One iteration per command and key (a SCAN may nest HSCANs).
        let key = if name == "scan" {
            Vec::new()
        } else {
            args[1].to_vec()
        };
        let it = (name.to_string(), key);
        if *c == b"0" {
            if s.scans_on_primary.len() >= 64 {
                s.scans_on_primary.clear();
            }
            s.scans_on_primary.insert(it, to_primary);
        } else if let Some(on_primary) = s.scans_on_primary.get(&it) {
            to_primary = *on_primary;
            behind &= to_primary;
        }
    }
    let routes = &mut t.stats.routes;
    if !to_primary {
        if read && waited {
            routes.waited_reads += 1;
        } else if read {
            routes.local_reads += 1;
        }
        return None;
    }
    // A transaction, a blocking command or a subscribed connection stays
    // here (Redis's replica answers).
    let req = forward_request(t, s, r, args)?;
    // The copy is usually only a moment behind the write (the primary
    // sent both at once): wait for it rather than cross the WAN, unless
    // the link is down and nothing will arrive.
    if behind && !waited && set.ryw_wait_ms > 0 && t.upstream_connected() {
        let args = args.iter().map(|a| a.to_vec()).collect();
        return Some(Outcome::Suspend(Suspend::AwaitApplied { args }));
    }
    let routes = &mut t.stats.routes;
    if write {
        routes.primary_writes += 1;
    } else {
        routes.primary_reads += 1;
        if behind {
            routes.fell_back_reads += 1;
        }
    }
    let args = args.iter().map(|a| a.to_vec()).collect();
    Some(Outcome::Suspend(Suspend::Forward {
        req,
        args,
        silent: false,
        pinned: false,
        blocks: false,
        read: None,
    }))
}

/// Commands a remote tenant's connection answers on this node: they act on
/// the connection itself (besides the envelope's refusals below), or need
/// no database.
const REMOTE_LOCAL: &[&str] = &[
    "auth", "hello", "select", "quit", "reset", "client", "ping", "echo", "command", "monitor",
];

/// Whether a remote tenant's request runs on this node (the connection's
/// own commands, subscriptions, `INFO routing`), where its user's rules
/// are checked as the database's last login here brought them; the rest
/// is checked by the copy that runs it (its envelope names the user), with
/// the rules as they are now.
fn runs_on_remote_node(r: &crate::cmd::table::Registered, args: &[&[u8]]) -> bool {
    let name = r.fullname.split('|').next().unwrap_or_default();
    REMOTE_LOCAL.contains(&name)
        || matches!(
            name,
            "subscribe"
                | "psubscribe"
                | "ssubscribe"
                | "unsubscribe"
                | "punsubscribe"
                | "sunsubscribe"
        )
        || (name == "info" && args.len() == 2 && args[1].eq_ignore_ascii_case(b"routing"))
}

/// A customer's request for a database this node holds no copy of
/// (`Tenant::remote`): everything but the connection's own commands is
/// forwarded, as on a replica's node, except that reads go to the nearest
/// node with a copy (with the connection's position as `min-token`, which
/// a copy that lacks it refuses; the primary answers then).
fn route_remote(
    t: &mut Tenant,
    s: &mut Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
    out: &mut Reply,
) -> Option<Outcome> {
    let name = r.fullname.split('|').next().unwrap_or_default();
    // `INFO routing` is this node's own account of the connection's routes.
    let own_info = name == "info" && args.len() == 2 && args[1].eq_ignore_ascii_case(b"routing");
    let in_multi = s.pin.as_ref().is_some_and(|p| p.in_multi());
    // RESET ends the transaction and every WATCH (letting the pin's stream
    // go does); QUIT closes. Inside MULTI the connection's other commands
    // would act at once rather than at EXEC: refused, as on a replica's
    // node.
    if name == "reset" {
        s.pin = None;
        return None;
    }
    if in_multi && (REMOTE_LOCAL.contains(&name) || crate::envelope::is_router_command(name)) {
        if name == "quit" {
            return None;
        }
        let msg = format!(
            "ERR {} inside MULTI is not supported on a node that holds no copy of this database; DISCARD, then send it before MULTI",
            name.to_ascii_uppercase()
        );
        reject(t, s, out, Some(r.id), &msg, true);
        return Some(Outcome::Continue);
    }
    if REMOTE_LOCAL.contains(&name) || own_info {
        return None;
    }
    // Subscriptions are the node's own; a relay brings them what is
    // published (see `relay`).
    if matches!(
        name,
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    ) && s.pin.is_none()
    {
        if matches!(name, "subscribe" | "psubscribe" | "ssubscribe") {
            s.awaits_relay = true;
        }
        t.relay.wake.notify_one();
        return None;
    }
    if crate::envelope::is_router_command(name) {
        let msg = format!(
            "ERR {} needs a node that holds a copy of this database; this node forwards its requests to other nodes. Connect to a node in one of the database's regions",
            name.to_ascii_uppercase()
        );
        reject(t, s, out, Some(r.id), &msg, true);
        return Some(Outcome::Continue);
    }
    let forward = |req, pinned, blocks, read| {
        Some(Outcome::Suspend(Suspend::Forward {
            req,
            args: args.iter().map(|a| a.to_vec()).collect(),
            silent: false,
            pinned,
            blocks,
            read,
        }))
    };
    if s.pin.is_some() || crate::forward::pins(r, args) {
        t.stats.routes.pinned += 1;
        let req = pinned_request(t, s, r, args);
        return forward(req, true, crate::forward::blocks(r, args, in_multi), None);
    }
    let write = writes_or_publishes(r, s);
    let read = !write && (is_read_command(r, s) || primary_only_read(name));
    if let Some(at_copy) = near_read(t, s, r, args) {
        return forward(enveloped(t, s, args), false, false, Some(at_copy));
    }
    if write {
        t.stats.routes.primary_writes += 1;
    } else if read {
        t.stats.routes.primary_reads += 1;
    }
    forward(enveloped(t, s, args), false, false, None)
}

/// A remote tenant's read that may go to the nearest copy: the envelope
/// that asks a copy for it (with the connection's position as
/// `min-token` under read-your-writes). None: it goes to the primary
/// (strong consistency, or a read only the primary answers right).
fn near_read(
    t: &Tenant,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Option<Vec<u8>> {
    use crate::catalog::Consistency;
    let name = r.fullname.split('|').next().unwrap_or_default();
    let write = writes_or_publishes(r, s);
    // A SCAN cursor is valid only on the copy that gave it, and the
    // nearest copy may change between calls: iterations run on the
    // primary. (EVALSHA_RO too: the copy may not have the script cached.)
    let scan = matches!(name, "scan" | "sscan" | "hscan" | "zscan");
    if write || !is_read_command(r, s) || scan || name == "evalsha_ro" || primary_only_read(name) {
        return None;
    }
    let min = match t.consistency {
        Consistency::Strong => return None,
        Consistency::Ryw => s.last_token.clone(),
        Consistency::Nearest => None,
    };
    Some(enveloped_at(t, s, args, min))
}

/// Whether a connection's pipelined requests may be sent without going
/// through `dispatch` (`conn`'s windows): nothing here would refuse or
/// need to see them (a user that may do anything, replies on, no
/// transaction, pin or subscription, no pause or failover, no MONITOR;
/// the primary runs forwarded requests without ACL checks, so restricted
/// users go through `dispatch`, which checks them here).
fn pipelinable(t: &Tenant, s: &Session) -> bool {
    s.authenticated
        && s.unrestricted
        && (s.acl_epoch == crate::acl::epoch() || s.acl_epoch == crate::client::ACL_INTERNAL)
        && s.reply_mode == ReplyMode::On
        && s.pin.is_none()
        && s.multi.is_none()
        && s.subscriptions() == 0
        && !s.cluster_peer
        && s.origin.is_none()
        && t.pause_mode == PauseMode::None
        && t.failover.is_none()
        // A MONITOR client sees each request (dispatch shows it).
        && t.monitors.is_empty()
}

/// A write pipelined behind another forwarded request of the same
/// connection (`conn`'s window): the envelope to send it in at once,
/// without waiting for the reply before it, when it would be forwarded to
/// the primary anyway and nothing on this node needs to see it first
/// ([`pipelinable`]); anything else (None) goes through `dispatch` once
/// the window's replies are in.
pub fn pipelined_write(t: &mut Tenant, s: &Session, args: &[&[u8]]) -> Option<Vec<u8>> {
    let plain = pipelinable(t, s);
    let forwarded = t.remote
        || (t.role == crate::repl::Role::Replica
            && t.upstream.as_ref().is_some_and(|u| u.node.is_some()));
    if !plain || !forwarded {
        return None;
    }
    let Lookup::Found(r) = lookup(args) else {
        return None;
    };
    if !arity_fits(r.spec, args.len()) || !r.write || crate::forward::pins(r, args) || r.no_multi {
        return None;
    }
    t.stats.routes.primary_writes += 1;
    Some(enveloped(t, s, args))
}

/// A read of a database held elsewhere, pipelined behind another such
/// read of the same connection (`conn`'s read window): the envelopes that
/// ask the nearest copy for it and, should that copy not answer, the
/// primary ([`near_read`]). None: it goes through `dispatch` once the
/// window's replies are in (also when the client tracks keys: the keys it
/// reads are remembered there).
pub fn pipelined_read(t: &Tenant, s: &Session, args: &[&[u8]]) -> Option<(Vec<u8>, Vec<u8>)> {
    if !t.remote || !pipelinable(t, s) || s.info.tracking.borrow().is_some() {
        return None;
    }
    let Lookup::Found(r) = lookup(args) else {
        return None;
    };
    if !arity_fits(r.spec, args.len())
        || crate::forward::pins(r, args)
        || runs_on_remote_node(r, args)
        || crate::envelope::is_router_command(r.fullname.split('|').next().unwrap_or_default())
    {
        return None;
    }
    let read = near_read(t, s, r, args)?;
    Some((read, enveloped(t, s, args)))
}

/// How long a primary just named at a new epoch holds requests that
/// need its lease before refusing them with `TRYAGAIN`: its renewal is
/// asked for as soon as the record arrives and takes a round trip to the
/// controller's leader and its majority.
const NEW_EPOCH_LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Executes `args` for session `s` of tenant `t`, writing the reply to `out`.
pub fn dispatch(
    t: &mut Tenant,
    s: &mut Session,
    shared: &Shared,
    set: &Settings,
    args: &[&[u8]],
    out: &mut Reply,
    now_ms: i64,
) -> Outcome {
    let mark = out.len();
    if s.reply_mode == ReplyMode::Skip {
        s.reply_mode = ReplyMode::SkipThis;
    }
    let silent = matches!(s.reply_mode, ReplyMode::Off | ReplyMode::SkipThis);
    s.class = None;
    let again = std::mem::take(&mut s.metered);
    t.tracking.current = s.info.id;
    let mut outcome = run(t, s, shared, set, args, out, now_ms);
    // Metered where the customer is: a cluster link's requests were
    // counted by the node that took them from the client (one a router
    // sent runs with the client's `origin`), a replica's
    // stream and a log's replay are no customer's; a paused
    // request is counted when it runs, one that runs again was counted
    // the first time.
    if matches!(outcome, Outcome::Paused) {
        s.metered = again;
    } else if matches!(outcome, Outcome::Suspend(Suspend::Switch(_))) {
        // A login that moves the connection to another database is no
        // command of this one's.
    } else if !again && !s.cluster_peer && s.origin.is_none() && !s.replaying && t.is_customer() {
        t.usage.count(s.class.unwrap_or(crate::meter::Class::Other));
    }
    // A forwarded request's reply is written later, by the connection.
    if let Outcome::Suspend(
        Suspend::Forward { silent: sl, .. } | Suspend::VerifyLogin { silent: sl, .. },
    ) = &mut outcome
    {
        *sl = silent;
    }
    // Messages this command published to its own client (PUBLISH to a
    // channel it subscribes to, keyspace events of its own writes) precede
    // its reply, as in Redis.
    // CLIENT REPLY OFF/SKIP silence the command's reply, not what Redis
    // pushes: subscription confirmations (in RESP2 too) and messages.
    let confirms = args.first().is_some_and(|n| {
        [
            &b"subscribe"[..],
            b"unsubscribe",
            b"psubscribe",
            b"punsubscribe",
            b"ssubscribe",
            b"sunsubscribe",
        ]
        .iter()
        .any(|c| n.eq_ignore_ascii_case(c))
    });
    // An error (arity, NOAUTH, NOPERM) is the command's reply, silenced
    // like any other: only confirmations are pushed.
    let pushed_confirms = confirms && out.buf.get(mark) != Some(&b'-');
    if matches!(s.reply_mode, ReplyMode::Off | ReplyMode::SkipThis) && !pushed_confirms {
        out.buf.truncate(mark);
    }
    if s.reply_mode == ReplyMode::SkipThis {
        s.reply_mode = ReplyMode::On;
    }
    if !s.info.push.borrow().is_empty() {
        let pushed = std::mem::take(&mut *s.info.push.borrow_mut());
        let tail = out.buf.split_off(mark);
        out.buf.extend_from_slice(&pushed);
        out.buf.extend_from_slice(&tail);
    }
    // Invalidations of keys this client cached and just changed follow
    // the reply (Redis's pending tracking keys); `CLIENT CACHING` lasts
    // one command (a transaction's, when queued in one).
    crate::tracking::after_command(t, &s.info, out);
    t.tracking.current = 0;
    if s.info.caching.get() && s.multi.is_none() && !is_client_command(args) {
        s.info.caching.set(false);
    }
    // Writes may have given data to blocked clients: serve them now, before
    // any other command runs (Redis's handleClientsBlockedOnKeys).
    if !t.ready_keys.is_empty() {
        crate::blocking::serve_ready(t, shared, set, now_ms);
    }
    outcome
}

fn is_client_command(args: &[&[u8]]) -> bool {
    args.first()
        .is_some_and(|n| n.eq_ignore_ascii_case(b"client"))
}

/// Whether `argc` arguments (the command's name included) fit the
/// command's arity (Redis's: exactly `arity`, or at least `-arity`).
pub(crate) fn arity_fits(spec: &crate::cmd::table::CommandSpec, argc: usize) -> bool {
    let argc = argc as i32;
    !((spec.arity > 0 && spec.arity != argc) || argc < -spec.arity)
}

/// One command without the CLIENT REPLY/push bookkeeping (EXEC calls this
/// for each queued command).
pub(crate) fn run(
    t: &mut Tenant,
    s: &mut Session,
    shared: &Shared,
    set: &Settings,
    args: &[&[u8]],
    out: &mut Reply,
    now_ms: i64,
) -> Outcome {
    // Set by the connection when this request already waited for the
    // local copy to catch up (read-your-writes): it does not wait again.
    let waited = std::mem::take(&mut s.ryw_waited);
    let fed = std::mem::take(&mut s.monitor_fed);
    let r = match lookup(args) {
        Lookup::Found(r) => {
            if s.class.is_none() {
                s.class = Some(crate::meter::Class::of(r));
            }
            r
        }
        Lookup::Unknown => {
            if s.multi.is_some() {
                s.multi_error = true;
            }
            t.count_error("ERR");
            out.error_bytes(&unknown_command(args));
            return Outcome::Continue;
        }
        Lookup::UnknownSub => {
            let mut msg = b"ERR unknown subcommand '".to_vec();
            msg.extend_from_slice(c_str(args[1], 128));
            msg.extend_from_slice(b"'. Try ");
            msg.extend_from_slice(&c_str(args[0], usize::MAX).to_ascii_uppercase());
            msg.extend_from_slice(b" HELP.");
            if s.multi.is_some() {
                s.multi_error = true;
            }
            t.count_error("ERR");
            out.error_bytes(&msg);
            return Outcome::Continue;
        }
    };
    let spec = r.spec;
    if t.stats.commands.len() <= r.id {
        t.stats
            .commands
            .resize_with(crate::cmd::registry().all.len(), CmdStat::default);
    }
    if !arity_fits(spec, args.len()) {
        let msg = format!("wrong number of arguments for '{}' command", r.fullname);
        reject(t, s, out, Some(r.id), &msg, false);
        return Outcome::Continue;
    }
    if !s.authenticated && !r.no_auth {
        reject(t, s, out, Some(r.id), errors::NOAUTH, true);
        return Outcome::Continue;
    }
    refresh_acl(shared, t.id, s);
    // (A remote tenant's forwarded requests are checked where they run.)
    let checked_elsewhere = t.remote && !s.replaying && !runs_on_remote_node(r, args);
    if !s.unrestricted && !checked_elsewhere {
        if let Some(msg) = acl_denied(shared, t.id, s, r, args) {
            reject(t, s, out, Some(r.id), &msg, true);
            return Outcome::Continue;
        }
    }
    // A customer's database never runs the server's own commands
    // (SHUTDOWN, DEBUG, CONFIG SET...), whatever its user may do.
    let peer_replication =
        s.cluster_peer && matches!(r.fullname.as_str(), "psync" | "sync" | "replconf");
    if spec.scope == crate::cmd::table::Scope::Denied
        && t.is_customer()
        && !s.replaying
        && !peer_replication
    {
        let msg = format!(
            "NOPERM this user has no permissions to run the '{}' command",
            r.fullname
        );
        reject(t, s, out, Some(r.id), &msg, true);
        return Outcome::Continue;
    }
    // A database held on other nodes: nothing runs here but the
    // connection's own commands.
    if t.remote && !s.replaying {
        if let Some(outcome) = route_remote(t, s, r, args, out) {
            forwarding(t, s, shared, set, r, args, fed, &outcome);
            return outcome;
        }
    }
    if r.protected {
        let mode = set.debug_command.as_str();
        let local = s.client_is_local();
        if !(mode == "yes" || (mode == "local" && local)) {
            let msg = format!(
                "{} command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
                r.fullname.to_uppercase()
            );
            reject(t, s, out, Some(r.id), &msg, false);
            return Outcome::Continue;
        }
    }
    // maxmemory: evict as needed before any command; refuse commands that
    // may grow memory when that is not enough (Redis's performEvictions).
    let (lim, own_account) = t.memory_limits(&set.evict);
    t.lfu = lim
        .policy
        .is_lfu()
        .then_some((set.lfu_log_factor, lim.decay_time));
    // A replica and a paused primary neither evict nor refuse: their data
    // must change only by their primary's effects / stand still (Redis's
    // `isSafeToPerformEvictions`).
    if !s.in_exec {
        s.oom_at_start = false;
    }
    if lim.maxmemory > 0 && !s.in_exec && !s.replaying && t.deletes_on_its_own(now_ms) {
        // As Redis does, the replication backlog does not count against
        // a database's limit (it is the service's, sized by the operator),
        // nor what it keeps past its size for a slow replica (Redis's
        // freeMemoryGetNotCountedMemory): its whole allocation.
        // Nor a background save's buffers (a fork's memory, in Redis).
        let not_counted =
            t.log.backlog_alloc() as u64 + t.persist.job.as_ref().map_or(0, |j| j.in_flight());
        // (Cloned only here: eviction needs `t` mutably.)
        let acct = own_account.then(|| t.mem.clone());
        let used = || match &acct {
            Some(a) => a.used().saturating_sub(not_counted),
            None => crate::alloc::allocated() as u64,
        };
        let ok = crate::evict::perform(t, &lim, now_ms, used);
        s.oom_at_start = !ok;
        if !ok && (r.denyoom || script_denies_oom(t, r, args)) {
            reject(
                t,
                s,
                out,
                Some(r.id),
                "OOM command not allowed when used memory > 'maxmemory'.",
                true,
            );
            return Outcome::Continue;
        }
    }
    // Persistence errors stop writes (and PING, as in Redis) so nothing is
    // acknowledged that cannot be made durable.
    if r.write || r.fullname == "ping" {
        if let Some(msg) = disk_error(t, shared) {
            reject(t, s, out, Some(r.id), &msg, true);
            return Outcome::Continue;
        }
    }
    // Under a region controller, a primary writes only while its lease
    // covers the tenant at the tenant's epoch: once it lapses, the
    // controller may already have promoted the standby (docs/FAILOVER.md).
    // With `consistency: strong` its reads need the lease as well: only
    // then is no other primary taking writes they would miss. So do all
    // its reads until a lease has covered its epoch once (`lease_proven`):
    // a node that restarted as the primary its saved record names may
    // have been replaced, and hold writes only it had.
    let strong = t.consistency == crate::catalog::Consistency::Strong;
    let reads_need_lease = strong || !t.lease_proven;
    if t.leased
        && t.role == crate::repl::Role::Primary
        && !s.replaying
        && (is_write_command(r, s) || (reads_need_lease && is_read_command(r, s)))
    {
        if shared.lease_holds(t.id.0, t.epoch, std::time::Instant::now()) {
            t.lease_proven = true;
        } else {
            // Given up for a planned handoff: the request waits (as under
            // Redis's FAILOVER) until this node is the standby's replica
            // (writes then meet `-READONLY`) or the handoff failed and the
            // next renewal covers the tenant again. Just made the primary at
            // a new epoch, or just put under a lease (its region's group
            // formed): it waits for the renewal that covers it (asked for at
            // once), up to NEW_EPOCH_LEASE_WAIT.
            let new_epoch = t
                .epoch_changed_at
                .is_some_and(|at| at.elapsed() < NEW_EPOCH_LEASE_WAIT);
            if (new_epoch || shared.handing_off(t.id.0, t.epoch)) && !s.in_exec {
                return Outcome::Paused;
            }
            reject(t, s, out, Some(r.id), errors::NO_LEASE, true);
            return Outcome::Continue;
        }
    }
    // A primary whose writes are held (a move of the primary to another
    // region, leased or not: a region without a controller group has no
    // lease to give up): they wait, until this node follows the new
    // primary (they then go there) or the move failed.
    // (PUBLISH too: the replication stream carries it.)
    if t.role == crate::repl::Role::Primary
        && !s.replaying
        && !s.in_exec
        && writes_or_publishes(r, s)
    {
        match shared.writes_held(t.id.0, t.epoch) {
            crate::shared::Held::No => {}
            crate::shared::Held::Wait => return Outcome::Paused,
            crate::shared::Held::TooLong => {
                reject(t, s, out, Some(r.id), MOVE_STALLED, true);
                return Outcome::Continue;
            }
        }
    }
    // A primary refuses writes without enough good replicas:
    // min-replicas-to-write (replicas that acknowledged within
    // min-replicas-max-lag seconds), and durability `region` (the standby
    // that must acknowledge every write is attached).
    if t.role == crate::repl::Role::Primary && !s.replaying && is_write_command(r, s) {
        let (min_good, max_lag) = set.min_replicas;
        let too_few = min_good > 0
            && max_lag > 0
            && crate::repl::primary::good_replicas(t, now_ms, max_lag) < min_good;
        // A standby still taking its full sync has none of the writes yet.
        let no_standby =
            t.durable && crate::repl::primary::standby_link(t).is_none_or(|l| !l.streaming.get());
        if !no_standby {
            t.standby_missing_since = None;
        } else if !too_few && !s.in_exec && s.multi.is_none() {
            // A standby not attached yet (a new one after a failover,
            // still syncing): the write waits for it, a bounded while.
            let since = *t
                .standby_missing_since
                .get_or_insert_with(std::time::Instant::now);
            let wait = std::time::Duration::from_millis(set.standby_wait_ms.max(0) as u64);
            if since.elapsed() < wait {
                return Outcome::Paused;
            }
        }
        if too_few || no_standby {
            reject(
                t,
                s,
                out,
                Some(r.id),
                "NOREPLICAS Not enough good replicas to write.",
                true,
            );
            return Outcome::Continue;
        }
    }
    // A read on a `strong` database's `region` primary: its reply waits
    // until the standby has everything the read could have seen (see
    // `conn::standby_acked`).
    if strong && t.durable && t.role == crate::repl::Role::Primary && is_read_command(r, s) {
        s.read_needs_standby = true;
    }
    // A read in a router's envelope: its reply carries this copy's token
    // (what the read could reflect), so the client's later reads, on any
    // copy, never go back in time (monotonic reads).
    if s.origin.is_some() && is_read_command(r, s) {
        s.read_token = true;
    }
    // Named the primary by a move and still applying the old primary's
    // stream up to where it stopped: writes (a customer's here, or sent by
    // other nodes) and what would tie a connection to the primary wait
    // until this copy takes over (`repl::replica::take_over`), rather than
    // go to the old primary, which takes none any more.
    if t.taking_over.is_some()
        && !s.replaying
        && !s.in_exec
        && (writes_or_publishes(r, s) || (!s.cluster_peer && crate::forward::pins(r, args)))
    {
        return Outcome::Paused;
    }
    // A router's write that reached the old primary after it handed over
    // goes on to the new one (see `relay`).
    if t.role == crate::repl::Role::Replica && !s.replaying && s.origin.is_some() {
        if let Some(outcome) = relay(t, s, r, args) {
            return outcome;
        }
    }
    // A replica's data changes only by its primary's effects: a customer's
    // write on a cluster replica goes to the primary (see `forward`). A
    // read goes there too when the database's consistency asks: always
    // with `strong`; with `ryw` when this copy lacks the connection's own
    // last write even after waiting `ryw-wait-ms` for it.
    if t.role == crate::repl::Role::Replica && !s.replaying {
        if let Some(outcome) = route_on_replica(t, s, set, r, args, waited, out) {
            // A read the primary answers is cached all the same: this
            // copy applies the primary's writes and invalidates it then.
            if r.read {
                remember_reads(t, s, r, args);
            }
            forwarding(t, s, shared, set, r, args, fed, &outcome);
            return outcome;
        }
    }
    // A script that declares it may write is a write; one without a
    // shebang runs, and is refused at its first write, as in Redis.
    let on_replica = t.role == crate::repl::Role::Replica && !s.replaying;
    let declared = if on_replica {
        declared_script_flags(t, r, args)
    } else {
        None
    };
    let writes_here = r.write
        || declared.is_some_and(|f| !f.no_writes)
        || (r.fullname == "exec" && queued_any(s, |q| q.write));
    if on_replica && writes_here {
        reject(
            t,
            s,
            out,
            Some(r.id),
            "READONLY You can't write against a read only replica.",
            true,
        );
        return Outcome::Continue;
    }
    // RESP2 connections in subscribed mode accept only these commands.
    if s.resp == 2 && s.subscriptions() > 0 && !SUBSCRIBED_ALLOWED.contains(&r.fullname.as_str()) {
        let msg = format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            r.fullname
        );
        reject(t, s, out, Some(r.id), &msg, false);
        return Outcome::Continue;
    }
    // replica-serve-stale-data no: while the link is down only commands
    // flagged `stale` (INFO, REPLICAOF...) run, and scripts that declare
    // `allow-stale`.
    let stale_ok = || match declared {
        Some(f) => f.allow_stale,
        None => spec.has_flag("stale"),
    };
    if t.running_stale(set.replica_serve_stale, s.replaying) && !stale_ok() {
        reject(
            t,
            s,
            out,
            Some(r.id),
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            true,
        );
        return Outcome::Continue;
    }
    // CLIENT PAUSE holds back everything (ALL) or what may move the
    // replication offset (WRITE: writes, may-replicate commands, an EXEC
    // that queued one), before queuing inside MULTI, as Redis 7.0. Effects
    // being applied (the log at start, a primary's stream) are never held.
    // A FAILOVER holds writes the same way.
    if (t.pause_mode != PauseMode::None || t.failover.is_some()) && !s.in_exec && !s.replaying {
        let mode = t.pause_now(now_ms);
        if mode == PauseMode::All
            || (mode == PauseMode::Write
                && (may_replicate(t, r, args)
                    || (r.fullname == "exec" && queued_any(s, |q| q.may_replicate))))
        {
            return Outcome::Paused;
        }
    }
    if s.multi.is_some() && !s.in_exec {
        if r.no_multi {
            reject(
                t,
                s,
                out,
                Some(r.id),
                "Command not allowed inside a transaction",
                false,
            );
            return Outcome::Continue;
        }
        if !MULTI_IMMEDIATE.contains(&r.fullname.as_str()) {
            if let Some(q) = s.multi.as_mut() {
                q.push(args.iter().map(|a| a.to_vec()).collect());
                s.info.multi_len.set(q.len() as i64);
            }
            out.simple("QUEUED");
            return Outcome::Continue;
        }
    }

    s.info.last_cmd.set(r.fullname.as_str());
    t.notify_flags = set.notify_flags;
    t.latency_tracking = set.latency_tracking;
    t.push_limit = set.pubsub_limit;
    let start = Instant::now();
    let mut ctx = Ctx {
        args,
        out,
        t,
        s,
        shared,
        set,
        now_ms,
        spec,
        failed: false,
        suspend: None,
    };
    let offset_before = ctx.t.log.offset();
    // On a replica the log is its primary's stream, byte for byte: nothing
    // a client runs there (DEBUG POPULATE, a local admin command) may add
    // to it. Effects being applied come with their bytes (apply mode).
    let shield = ctx.t.role == crate::repl::Role::Replica && !ctx.s.replaying;
    let was_suppressed = ctx.t.log.is_suppressed();
    if shield {
        ctx.t.log.set_suppressed(true);
    }
    (spec.handler)(&mut ctx);
    if shield {
        ctx.t.log.set_suppressed(was_suppressed);
    }
    if r.read {
        remember_reads(ctx.t, ctx.s, r, args);
    }
    if ctx.t.log.offset() != offset_before {
        ctx.s.woff = ctx.t.log.offset();
    }
    let failed = ctx.failed;
    let suspend = ctx.suspend;
    let elapsed_us = start.elapsed().as_micros() as u64;

    count_call(t, r.id, elapsed_us, failed);
    t.stats.total_commands += 1;

    if set.slowlog_slower_than >= 0 && elapsed_us as i64 >= set.slowlog_slower_than && !r.admin {
        record_slow(t, s, args, elapsed_us, now_ms, set.slowlog_max_len);
    }
    let ev = if r.fast { "fast-command" } else { "command" };
    t.latency_sample(
        ev,
        elapsed_us / 1000,
        set.latency_threshold_ms,
        now_ms / 1000,
    );
    if !fed {
        feed_monitors(t, s, shared, set, r, args);
    }
    if let Some(su) = suspend {
        return Outcome::Suspend(su);
    }
    if s.close_after_reply {
        return Outcome::Close;
    }
    Outcome::Continue
}

/// After a read-only command: its keys, for the session's client if it
/// tracks them (`tracking.rs`). Not the read-only script commands
/// themselves: the reads their scripts make are remembered one by one.
pub(crate) fn remember_reads(
    t: &mut Tenant,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) {
    if s.info.tracking.borrow().is_none()
        || matches!(r.fullname.as_str(), "eval_ro" | "evalsha_ro" | "fcall_ro")
        || r.spec.has_flag("pubsub")
    {
        return;
    }
    let keys = crate::cmd::command::key_positions(r.spec, args);
    crate::tracking::after_read(t, &s.info, keys.into_iter().map(|k| args[k]));
}

/// Counts a run of command `id` in its `INFO commandstats` line (a
/// script's `redis.call` too).
pub(crate) fn count_call(t: &mut Tenant, id: usize, us: u64, failed: bool) {
    // The handler may have reset the stats (CONFIG RESETSTAT).
    if t.stats.commands.len() <= id {
        t.stats
            .commands
            .resize_with(crate::cmd::registry().all.len(), CmdStat::default);
    }
    crate::alloc::sample_peak();
    let tracking = t.latency_tracking;
    let stat = &mut t.stats.commands[id];
    stat.calls += 1;
    stat.usec += us;
    if failed {
        stat.failed_calls += 1;
    }
    if tracking {
        crate::cmd::latency::record(stat, us);
    }
}

/// Shows request `args` to the tenant's MONITOR clients (not to the
/// sender itself; admin commands never). Called for every request this
/// node runs or forwards for its clients, so a MONITOR on a replica's node
/// or on a node without a copy sees the writes it sent to the primary
/// too.
fn feed_monitors(
    t: &mut Tenant,
    s: &Session,
    shared: &Shared,
    set: &Settings,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) {
    if t.monitors.is_empty() || r.admin {
        return;
    }
    let addr = s.peer_addr().to_string();
    let line = monitor_line(s.db, &addr, &redact(r.fullname.as_str(), args));
    t.monitors.retain(|m| !m.killed.get());
    // A MONITOR client that does not read must not grow our memory
    // without bound: past the normal class's hard limit (or
    // MONITOR_PUSH_CAP when that is 0, Redis's "unlimited") it is closed.
    let cap = match set.output_hard_limit {
        0 => MONITOR_PUSH_CAP,
        n => n as usize,
    };
    for m in &t.monitors {
        if m.id != s.info.id {
            m.push_bytes(&line);
            if m.push.borrow().len() > cap {
                tracing::warn!(
                    id = m.id,
                    "MONITOR client closed for overcoming of output buffer limits."
                );
                shared
                    .stats
                    .client_output_limit_disconnections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                m.push.borrow_mut().clear();
                m.kill();
            }
        }
    }
}

/// Arguments as MONITOR/SLOWLOG show them: secrets redacted, as Redis does.
fn redact<'a>(fullname: &str, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut v: Vec<&[u8]> = args.to_vec();
    let from = match fullname {
        "auth" => 1,
        "hello" => {
            // HELLO ... AUTH user pass
            if let Some(p) = v.iter().position(|a| a.eq_ignore_ascii_case(b"auth")) {
                p + 1
            } else {
                v.len()
            }
        }
        "acl|setuser" => 3,
        "config|set" => 2,
        _ => v.len(),
    };
    for a in v.iter_mut().skip(from) {
        *a = b"(redacted)";
    }
    v
}

fn record_slow(t: &mut Tenant, s: &Session, args: &[&[u8]], us: u64, now_ms: i64, max_len: usize) {
    let shown = redact(s.info.last_cmd.get(), args);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let argc = shown.len().min(SLOWLOG_MAX_ARGC);
    for (i, a) in shown.iter().take(argc).enumerate() {
        if argc != shown.len() && i == argc - 1 {
            out.push(format!("... ({} more arguments)", shown.len() - argc + 1).into_bytes());
        } else if a.len() > SLOWLOG_MAX_STRING {
            let mut v = a[..SLOWLOG_MAX_STRING].to_vec();
            v.extend_from_slice(
                format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_STRING).as_bytes(),
            );
            out.push(v);
        } else {
            out.push(a.to_vec());
        }
    }
    let id = t.slowlog_next_id;
    t.slowlog_next_id += 1;
    t.slowlog.push_front(SlowEntry {
        id,
        time: now_ms / 1000,
        duration_us: us,
        args: out,
        peer: s.peer_addr().to_string(),
        name: s.info.name.borrow().clone(),
    });
    while t.slowlog.len() > max_len {
        t.slowlog.pop_back();
    }
}

/// Brings the session's cached "may do anything" answer up to date with
/// its user's rules (they may have changed since it was worked out).
/// Internal sessions (a log's replay, a primary's stream, cluster links)
/// are never checked.
pub(crate) fn refresh_acl(shared: &Shared, tenant: crate::tenant::TenantId, s: &mut Session) {
    let now = crate::acl::epoch();
    if s.acl_epoch != now && s.acl_epoch != crate::client::ACL_INTERNAL {
        s.acl_epoch = now;
        s.unrestricted = shared.acl.read(tenant, |u| u.is_unrestricted(&s.user));
    }
}

/// Whether the session's user may run the command with these arguments.
pub(crate) fn acl_check(
    shared: &Shared,
    tenant: crate::tenant::TenantId,
    s: &Session,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Result<(), crate::acl::Denied> {
    shared
        .acl
        .read(tenant, |users| match users.users.get(&s.user) {
            Some(u) => u.check(r, args),
            None => Err(crate::acl::Denied::Command),
        })
}

/// Whether the running command's user may read every key with it (SORT's
/// BY and GET read keys its arguments do not name).
pub(crate) fn reads_every_key(ctx: &Ctx) -> bool {
    if ctx.s.unrestricted {
        return true;
    }
    let Lookup::Found(r) = lookup(ctx.args) else {
        return false;
    };
    ctx.shared.acl.read(ctx.t.id, |users| {
        users
            .users
            .get(&ctx.s.user)
            .is_some_and(|u| u.reads_every_key_with(r, ctx.args))
    })
}

/// Adds a refusal to the database's ACL LOG, as Redis's `addACLLogEntry`.
pub(crate) fn acl_log(
    shared: &Shared,
    tenant: crate::tenant::TenantId,
    s: &Session,
    denied: crate::acl::Denied,
    context: &'static str,
    r: &crate::cmd::table::Registered,
    args: &[&[u8]],
) {
    use crate::acl::Denied;
    let (reason, object) = match denied {
        Denied::Command => ("command", r.fullname.clone()),
        Denied::Key(i) => ("key", String::from_utf8_lossy(args[i]).into_owned()),
        Denied::Channel(i) => ("channel", String::from_utf8_lossy(args[i]).into_owned()),
    };
    acl_log_entry(shared, tenant, s, reason, context, object, s.user.clone());
}

/// One entry of database `tenant`'s ACL LOG: the session's client, now.
pub(crate) fn acl_log_entry(
    shared: &Shared,
    tenant: crate::tenant::TenantId,
    s: &Session,
    reason: &'static str,
    context: &'static str,
    object: String,
    username: String,
) {
    let now = crate::util::mstime();
    let mut client_info = s.info.describe(now);
    // A request another node forwarded: its client's address, not the
    // link's.
    if let Some(origin) = s.origin {
        client_info = client_info.replacen(
            &format!(" addr={} ", s.info.addr),
            &format!(" addr={origin} "),
            1,
        );
    }
    let entry = crate::acl::log::Entry {
        count: 1,
        reason,
        context,
        object,
        username,
        ctime_ms: now,
        client_info,
    };
    let max = shared.config.read().acllog_max_len() as usize;
    // A database this node holds no copy of: its ACL LOG is its primary's,
    // where the connection loop sends the refusal (`ship_acl_refusals`).
    // (Kept here too: this node's copy of the users keeps its own log.)
    if shared.remote_route(tenant).is_some() {
        s.acl_refusals.borrow_mut().push(crate::envelope::Refusal {
            reason,
            context,
            object: entry.object.clone(),
            username: entry.username.clone(),
        });
    }
    shared.acl.log(tenant, entry, max);
}

/// An ACL LOG entry's context outside scripts: `multi` while a
/// transaction is queued or runs.
pub(crate) fn acl_context(s: &Session) -> &'static str {
    if s.in_exec || s.multi.is_some() {
        "multi"
    } else {
        "toplevel"
    }
}

/// ACL check for restricted users; `Some(error)` when denied (logged in
/// the ACL LOG). At EXEC, a queued command refused now was allowed when
/// it was queued: Redis's words say the rules changed.
pub(crate) fn acl_denied(
    shared: &Shared,
    tenant: crate::tenant::TenantId,
    s: &Session,
    r: &'static crate::cmd::table::Registered,
    args: &[&[u8]],
) -> Option<String> {
    use crate::acl::Denied;
    let denied = acl_check(shared, tenant, s, r, args).err()?;
    // Redis names the command before it checks it: the log's client line
    // (and CLIENT LIST after) show the refused command.
    s.info.last_cmd.set(r.fullname.as_str());
    acl_log(shared, tenant, s, denied, acl_context(s), r, args);
    if s.in_exec {
        let reason = match denied {
            Denied::Command => "no permission to execute the command or subcommand",
            Denied::Key(_) => "no permission to touch the specified keys",
            Denied::Channel(_) => "no permission to access one of the channels used as arguments",
        };
        return Some(format!("NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"));
    }
    Some(match denied {
        Denied::Command => format!(
            "NOPERM this user has no permissions to run the '{}' command",
            r.fullname
        ),
        Denied::Key(_) => {
            "NOPERM this user has no permissions to access one of the keys used as arguments".into()
        }
        Denied::Channel(_) => {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into()
        }
    })
}

/// Redis's `writeCommandsDeniedByDiskError`.
pub(crate) fn disk_error(t: &Tenant, shared: &Shared) -> Option<String> {
    let p = &t.persist;
    if !p.last_bgsave_ok {
        let c = shared.config.read();
        if c.stop_writes_on_bgsave_error() && !c.save_params().is_empty() {
            return Some("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.".into());
        }
    }
    if let Some(w) = &p.aof {
        if !w.status.write_ok.load(std::sync::atomic::Ordering::Relaxed) {
            return Some("MISCONF Errors writing to the AOF file: see the server log".into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientInfo, Session};
    use crate::config::Config;
    use crate::tenant::TenantId;
    use std::rc::Rc;

    fn session(id: u64, peer: bool) -> Session {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let info = Rc::new(ClientInfo::new(id, addr, addr, 0, 0));
        let mut s = Session::new(info, true);
        s.cluster_peer = peer;
        s
    }

    /// A copy a move named the primary, still applying the old primary's
    /// stream: writes wait (a customer's here, and those other nodes
    /// send), reads are served, and no replica may sync from it; once it
    /// took over, the writes that waited run here.
    #[test]
    fn a_copy_taking_over_holds_writes_and_syncs_until_it_has_the_stream() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        let node = "127.0.0.1:7000".parse().ok();
        crate::repl::replica::become_replica(&mut t, "127.0.0.1".into(), 7000, node, 0);
        t.log.append(0, &[b"SET", b"k", b"old"]);
        let at = t.log.offset() + 30;
        assert!(!crate::repl::replica::promote_at(&mut t, at, 1_000, 5_000));
        let mut out = Reply::new(2);
        let run = |t: &mut Tenant, s: &mut Session, args: &[&[u8]], out: &mut Reply| {
            out.buf.clear();
            dispatch(t, s, &shared, &set, args, out, 1_000)
        };
        let (mut customer, mut peer) = (session(1, false), session(2, true));
        for s in [&mut customer, &mut peer] {
            let o = run(&mut t, s, &[b"SET", b"k", b"new"], &mut out);
            assert!(matches!(o, Outcome::Paused), "a write waits");
            let o = run(&mut t, s, &[b"PUBLISH", b"ch", b"m"], &mut out);
            assert!(matches!(o, Outcome::Paused), "PUBLISH waits");
        }
        let o = run(&mut t, &mut customer, &[b"MULTI"], &mut out);
        assert!(
            matches!(o, Outcome::Paused),
            "a customer's MULTI is not pinned to the old primary"
        );
        let o = run(&mut t, &mut peer, &[b"PSYNC", b"?", b"-1"], &mut out);
        assert!(!matches!(o, Outcome::Paused));
        assert!(
            out.buf.starts_with(b"-NOMASTERLINK"),
            "{:?}",
            String::from_utf8_lossy(&out.buf)
        );
        // Taken over: the write that waited runs here.
        t.log.append(0, &[b"SET", b"k", b"last"]);
        crate::repl::replica::take_over(&mut t, 1_000);
        assert_eq!(t.role, crate::repl::Role::Primary);
        let o = run(&mut t, &mut customer, &[b"SET", b"k", b"new"], &mut out);
        assert!(matches!(o, Outcome::Continue));
        assert_eq!(&out.buf[..], b"+OK\r\n");
    }
}
