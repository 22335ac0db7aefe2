//! Replication commands, the primary's side: `PSYNC`, `SYNC`, `REPLCONF`,
//! `ROLE` (see `crate::repl::primary` for the protocol).

use super::server::Suspend;
use super::{errors, Ctx};
use crate::repl::primary;
use crate::util::parse_i64;

/// `REPLCONF <option> <value> ...`: what a replica tells its primary
/// before and during replication. ACKs arrive on the replica's stream and
/// are read there; here they are accepted silently, as Redis does.
pub fn replconf(ctx: &mut Ctx) {
    if ctx.args.len().is_multiple_of(2) {
        return ctx.syntax_error();
    }
    let mut i = 1;
    while i < ctx.args.len() {
        let (opt, val) = (ctx.args[i], ctx.args[i + 1]);
        if opt.eq_ignore_ascii_case(b"listening-port") {
            match parse_i64(val).and_then(|p| u16::try_from(p).ok()) {
                Some(p) => ctx.s.repl.listening_port = p,
                None => return ctx.err(errors::NOT_INTEGER),
            }
        } else if opt.eq_ignore_ascii_case(b"ip-address") {
            // Shown by INFO and ROLE for this replica. (Redis also takes a
            // host name here; anykv keeps an IP address and otherwise shows
            // the connection's peer address.)
            ctx.s.repl.announced_ip = std::str::from_utf8(val).ok().and_then(|v| v.parse().ok());
        } else if opt.eq_ignore_ascii_case(b"capa") {
            if val.eq_ignore_ascii_case(b"eof") {
                ctx.s.repl.capa_eof = true;
            }
            // psync2 and unknown capabilities: ignored, as Redis does.
        } else if opt.eq_ignore_ascii_case(b"epoch") {
            // A cluster replica says the highest failover epoch it has
            // seen; answered with ours, or refused when ours is older:
            // this node is not the primary of that epoch any more.
            let Some(seen) = parse_i64(val).and_then(|e| u64::try_from(e).ok()) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            if seen > ctx.t.epoch {
                let msg = format!(
                    "FENCED this node's role record for the database is at epoch {}, the replica has seen epoch {seen}",
                    ctx.t.epoch
                );
                return ctx.error(&msg);
            }
            return ctx.out.int(ctx.t.epoch as i64);
        } else if opt.eq_ignore_ascii_case(b"ack") || opt.eq_ignore_ascii_case(b"fack") {
            // Only meaningful on a replica's stream; never answered.
            return;
        } else if opt.eq_ignore_ascii_case(b"getack") {
            // Sent by a primary to its replicas; a client gets nothing.
            return;
        } else if opt.eq_ignore_ascii_case(b"rdb-only") {
            match val {
                b"0" => ctx.s.repl.rdb_only = false,
                b"1" => ctx.s.repl.rdb_only = true,
                _ => return ctx.syntax_error(),
            }
        } else if opt.eq_ignore_ascii_case(b"rdb-filter-only") {
            // Filters only function libraries, which this server does not
            // keep yet: nothing to filter.
        } else {
            let msg = format!(
                "Unrecognized REPLCONF option: {}",
                String::from_utf8_lossy(opt)
            );
            return ctx.err(&msg);
        }
        i += 2;
    }
    ctx.out.ok();
}

/// `PSYNC <replid> <offset>`: partial resync when possible, else full.
pub fn psync(ctx: &mut Ctx) {
    let replid = String::from_utf8_lossy(ctx.args[1]).into_owned();
    // `PSYNC <replid> <offset> FAILOVER`: our primary hands over to us (its
    // FAILOVER); with its history ours, we promote ourselves and serve the
    // PSYNC as the new primary (a partial resync from our `replid2`).
    if ctx.args.len() > 3 && ctx.args[3].eq_ignore_ascii_case(b"failover") {
        tracing::info!("Failover request received for replid {replid}.");
        if ctx.t.role != crate::repl::Role::Replica {
            return ctx.err("PSYNC FAILOVER can't be sent to a master.");
        }
        if replid != ctx.t.repl.replid {
            return ctx.err("PSYNC FAILOVER replid must match my replid.");
        }
        crate::repl::replica::become_primary(ctx.t);
        tracing::info!(
            "MASTER MODE enabled (failover request from {})",
            ctx.s.info.addr
        );
    }
    if let Some(why) = no_sync(ctx.t) {
        return ctx.error(why);
    }
    let Some(offset) = parse_i64(ctx.args[2]) else {
        return ctx.err(errors::NOT_INTEGER);
    };
    // Partial: the replica's history is ours and the backlog reaches back
    // to where it stopped. Its offset names the first byte it lacks (its
    // own offset + 1, Redis's convention); `since` takes the last it has.
    if let Ok(off) = u64::try_from(offset) {
        let have = off.saturating_sub(1);
        if off >= 1 && ctx.t.repl.knows(&replid, off) && ctx.t.log.since(have).is_some() {
            let line = format!("+CONTINUE {}\r\n", ctx.t.repl.replid);
            ctx.out.buf.extend_from_slice(line.as_bytes());
            ctx.t.stats.sync_partial_ok += 1;
            attach_replica(ctx, have);
            ctx.suspend = Some(Suspend::Replica {
                from: have,
                wait_ack: false,
            });
            return;
        }
        if replid != "?" {
            ctx.t.stats.sync_partial_err += 1;
        }
        // A node of the cluster whose history went on past where ours took
        // over from it (an old primary coming back after a failover): its
        // full sync says where the histories split, so it can count the
        // writes only it had before they are replaced.
        if ctx.s.cluster_peer
            && replid == ctx.t.repl.replid2
            && ctx.t.repl.second_offset >= 1
            && off as i64 > ctx.t.repl.second_offset
        {
            ctx.s.repl.diverged_at = Some(ctx.t.repl.second_offset as u64 - 1);
        }
    }
    full_sync(ctx, true);
}

/// Attaches this connection as a replica whose stream starts after `from`
/// (the log keeps its bytes while its payload or `+CONTINUE` is sent).
fn attach_replica(ctx: &mut Ctx, from: u64) {
    let keep = primary::replica_keep(ctx.set);
    attach_session(ctx.t, ctx.s, keep, from);
}

fn attach_session(
    t: &mut crate::tenant::Tenant,
    s: &crate::client::Session,
    keep: usize,
    from: u64,
) {
    let port = s.repl.listening_port;
    let shown = s.repl.announced_ip;
    primary::attach(t, &s.info, port, shown, from, s.cluster_peer, keep);
}

/// Starts a full sync whose payload is built in the background (see
/// `crate::repl::fullsync`): attaches the replica, leaves the payload in
/// the session, and returns the `+FULLRESYNC ... $EOF:<mark>` header and
/// the offset the stream starts from. Fails while another background save
/// runs.
pub fn begin_background_sync(
    t: &mut crate::tenant::Tenant,
    s: &mut crate::client::Session,
    keep: usize,
) -> std::io::Result<(String, u64)> {
    let payload = primary::start_payload(t)?;
    let from = t.log.offset();
    // The replica's stream starts from database 0 after loading: the next
    // effect names its database.
    t.log.force_select();
    let head = format!("{}$EOF:{}\r\n", fullresync_line(t, s, from), payload.mark);
    t.stats.sync_full += 1;
    s.sync_payload = Some(payload);
    attach_session(t, s, keep, from);
    Ok((head, from))
}

/// `+FULLRESYNC <replid> <offset>`, and for a cluster replica whose
/// history went past ours, ` DIVERGED <offset>`: the last offset the two
/// histories share (a Redis replica reads only the first two fields).
fn fullresync_line(t: &crate::tenant::Tenant, s: &crate::client::Session, from: u64) -> String {
    match s.repl.diverged_at {
        Some(at) => format!("+FULLRESYNC {} {from} DIVERGED {at}\r\n", t.repl.replid),
        None => format!("+FULLRESYNC {} {from}\r\n", t.repl.replid),
    }
}

/// `SYNC`: the old full synchronisation (no FULLRESYNC line).
pub fn sync(ctx: &mut Ctx) {
    if let Some(why) = no_sync(ctx.t) {
        return ctx.error(why);
    }
    full_sync(ctx, false);
}

/// Why no replica may sync from this tenant now: a FAILOVER of it runs,
/// or it is taking over from a moved primary (what it has is not yet the
/// database: a replica asking for more than it has would be given a full
/// sync of less than it holds; it asks again once this copy took over).
fn no_sync(t: &crate::tenant::Tenant) -> Option<&'static str> {
    if t.failover.is_some() {
        Some("NOMASTERLINK Can't SYNC while failing over")
    } else if t.taking_over.is_some() {
        Some("NOMASTERLINK Can't SYNC while taking over as the primary")
    } else {
        None
    }
}

/// `FAILOVER [TO host port [FORCE]] [ABORT] [TIMEOUT ms]`: hands this
/// primary's role to a replica with nothing lost (see
/// `crate::repl::failover`). Arguments and errors as Redis 7.0.
pub fn failover(ctx: &mut Ctx) {
    use crate::repl::failover as fo;
    if ctx.args.len() == 2 && ctx.args[1].eq_ignore_ascii_case(b"abort") {
        if ctx.t.failover.is_none() {
            return ctx.err("No failover in progress.");
        }
        fo::abort(ctx.t, "Failover manually aborted");
        return ctx.out.ok();
    }
    let mut timeout_ms = 0i64;
    let mut force = false;
    let mut target: Option<(String, i64)> = None;
    let mut j = 1;
    while j < ctx.args.len() {
        let a = ctx.args[j];
        if a.eq_ignore_ascii_case(b"timeout") && j + 1 < ctx.args.len() && timeout_ms == 0 {
            let Some(ms) = parse_i64(ctx.args[j + 1]) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            if ms <= 0 {
                return ctx.err("FAILOVER timeout must be greater than 0");
            }
            timeout_ms = ms;
            j += 2;
        } else if a.eq_ignore_ascii_case(b"to") && j + 2 < ctx.args.len() && target.is_none() {
            let Some(port) = parse_i64(ctx.args[j + 2]) else {
                return ctx.err(errors::NOT_INTEGER);
            };
            target = Some((String::from_utf8_lossy(ctx.args[j + 1]).into_owned(), port));
            j += 3;
        } else if a.eq_ignore_ascii_case(b"force") && !force {
            force = true;
            j += 1;
        } else {
            return ctx.syntax_error();
        }
    }
    if ctx.t.failover.is_some() {
        return ctx.err("FAILOVER already in progress.");
    }
    if ctx.t.role == crate::repl::Role::Replica {
        return ctx.err("FAILOVER is not valid when server is a replica.");
    }
    if ctx.t.replicas.is_empty() {
        return ctx.err("FAILOVER requires connected replicas.");
    }
    if force && (timeout_ms == 0 || target.is_none()) {
        return ctx
            .err("FAILOVER with force option requires both a timeout and target HOST and IP.");
    }
    let target = match target {
        Some((host, port)) => {
            let found = u16::try_from(port)
                .ok()
                .and_then(|p| fo::find_replica(ctx.t, &host, p).map(|l| (l, p)));
            let Some((link, port)) = found else {
                return ctx.err("FAILOVER target HOST and PORT is not a replica.");
            };
            if !link.streaming.get() {
                return ctx.err("FAILOVER target replica is not online.");
            }
            Some((host, port))
        }
        None => None,
    };
    let end_ms = if timeout_ms > 0 {
        ctx.now_ms.saturating_add(timeout_ms)
    } else {
        0
    };
    fo::start(ctx.t, target, end_ms, force);
    ctx.out.ok();
}

fn full_sync(ctx: &mut Ctx, psync: bool) {
    let eof = psync && ctx.s.repl.capa_eof;
    // Diskless framing takes a payload of unknown length: build it in the
    // background while clients keep writing (after any background save
    // that runs). Otherwise, or if it cannot start, at once, below.
    if eof && !ctx.s.repl.rdb_only {
        if ctx.t.persist.job.is_some() {
            // Another background save (or another replica's payload) is
            // running: wait for it to end, then start ours (Redis's
            // replicas wait for the next BGSAVE the same way).
            tracing::info!(
                id = ctx.s.info.id,
                "full sync waits for the background save in progress"
            );
            ctx.suspend = Some(Suspend::AwaitSync);
            return;
        }
        let keep = primary::replica_keep(ctx.set);
        match begin_background_sync(ctx.t, ctx.s, keep) {
            Ok((head, from)) => {
                ctx.out.buf.extend_from_slice(head.as_bytes());
                ctx.suspend = Some(Suspend::Replica {
                    from,
                    wait_ack: true,
                });
                return;
            }
            Err(e) => tracing::warn!("full sync in the background: {e}; building it now"),
        }
    }
    let rdb = match primary::rdb_payload(ctx.t) {
        Ok(r) => r,
        Err(e) => return ctx.err(&format!("full sync: {e}")),
    };
    let from = ctx.t.log.offset();
    // The replica's stream starts from database 0 after loading: the next
    // effect names its database.
    ctx.t.log.force_select();
    // Framed straight into the reply buffer (one copy of the RDB besides
    // the encoded one).
    ctx.out.buf.reserve(rdb.len() + 128);
    if psync {
        let line = fullresync_line(ctx.t, ctx.s, from);
        ctx.out.buf.extend_from_slice(line.as_bytes());
    }
    primary::frame_payload(&mut ctx.out.buf, &rdb, eof);
    ctx.t.stats.sync_full += 1;
    if ctx.s.repl.rdb_only {
        // `redis-cli --rdb`: the snapshot only, then the link closes.
        ctx.s.close_after_reply = true;
    } else {
        attach_replica(ctx, from);
        ctx.suspend = Some(Suspend::Replica {
            from,
            wait_ack: eof,
        });
    }
}

/// `ROLE`: `master`, the offset, and each replica's address and ack.
pub fn role(ctx: &mut Ctx) {
    match ctx.t.role {
        crate::repl::Role::Primary => {
            let off = ctx.t.log.offset();
            ctx.out.array(3);
            ctx.out.bulk(b"master");
            ctx.out.int(off as i64);
            let replicas: Vec<(String, u16, u64)> = ctx
                .t
                .replicas
                .iter()
                .map(|l| (l.shown_ip.to_string(), l.listening_port, l.ack_offset.get()))
                .collect();
            ctx.out.array(replicas.len());
            for (ip, port, ack) in replicas {
                ctx.out.array(3);
                ctx.out.bulk(ip.as_bytes());
                ctx.out.bulk(port.to_string().as_bytes());
                ctx.out.bulk(ack.to_string().as_bytes());
            }
        }
        crate::repl::Role::Replica => {
            let off = ctx.t.log.offset();
            let (host, port, state) = match &ctx.t.upstream {
                Some(u) => (u.host.clone(), i64::from(u.port), u.status.role_name()),
                None => (String::new(), 0, "connect"),
            };
            ctx.out.array(5);
            ctx.out.bulk(b"slave");
            ctx.out.bulk(host.as_bytes());
            ctx.out.int(port);
            ctx.out.bulk(state.as_bytes());
            ctx.out.int(off as i64);
        }
    }
}

/// `REPLICAOF host port`: follow that primary (client writes are refused
/// from now on); `REPLICAOF NO ONE`: become a primary, keeping the data
/// and continuing the history under a new id (the old one stays valid for
/// partial resyncs as `replid2`).
pub fn replicaof(ctx: &mut Ctx) {
    if ctx.t.failover.is_some() {
        return ctx.err("REPLICAOF not allowed while failing over.");
    }
    let (a, b) = (ctx.args[1], ctx.args[2]);
    if a.eq_ignore_ascii_case(b"no") && b.eq_ignore_ascii_case(b"one") {
        if ctx.t.role == crate::repl::Role::Replica {
            crate::repl::replica::become_primary(ctx.t);
            tracing::info!("MASTER MODE enabled (user request)");
        }
        return ctx.out.ok();
    }
    let Some(port) = parse_i64(b).filter(|p| (0..=65535).contains(p)) else {
        return ctx.err("Invalid master port");
    };
    let host = String::from_utf8_lossy(a).into_owned();
    if let Some(u) = &ctx.t.upstream {
        if u.host.eq_ignore_ascii_case(&host) && i64::from(u.port) == port {
            return ctx.out.simple("OK Already connected to specified master");
        }
    }
    crate::repl::replica::become_replica(ctx.t, host.clone(), port as u16, None, ctx.now_ms);
    tracing::info!("REPLICAOF {host}:{port} enabled (user request)");
    ctx.out.ok();
}
