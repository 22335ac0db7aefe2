//! Redis 7's coordinated failover (`FAILOVER [TO host port [FORCE]]
//! [ABORT] [TIMEOUT ms]`), the planned handoff of a standalone primary to
//! one of its replicas with nothing lost:
//!
//! 1. `FAILOVER` pauses writes (and expiry, eviction, the stream's PINGs,
//!    so the offset stands still) and asks the replicas to acknowledge at
//!    once (`REPLCONF GETACK *`, sent before the pause takes hold);
//! 2. the cron waits (`waiting-for-sync`) until the target — the one named,
//!    or the first replica to acknowledge the whole offset — has everything;
//!    past `TIMEOUT` it gives up and unpauses, or with `FORCE` goes on;
//! 3. this server becomes a replica of the target (`failover-in-progress`)
//!    and opens its link with `PSYNC <replid> <offset> FAILOVER`: the
//!    target, a replica of this server with the same replication id,
//!    promotes itself and answers `+CONTINUE` with its new id (the old one
//!    stays valid as its `replid2`), so no full sync is needed;
//! 4. the answer ends the failover and lifts the pause: the writes held
//!    meet a replica and get `-READONLY`, as with Redis (clients reconnect
//!    to the new primary). A refusal or a link that cannot be made makes
//!    this server a primary again.
//!
//! The target's half (a PSYNC carrying `FAILOVER`) is in
//! `cmd::replication::psync`. Replies and log lines follow Redis 7.0.

use std::rc::Rc;

use super::primary::ReplicaLink;
use crate::tenant::Tenant;

/// `master_failover_state` in `INFO replication`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    WaitForSync,
    InProgress,
}

/// A failover this tenant is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub state: State,
    /// The replica to hand over to: named by `TO`, or chosen once one has
    /// the whole offset.
    pub target: Option<(String, u16)>,
    /// Unix ms after which the wait for the target gives up (0: never).
    pub end_ms: i64,
    pub force: bool,
}

/// `master_failover_state`'s value.
pub fn state_name(f: Option<&Failover>) -> &'static str {
    match f.map(|f| f.state) {
        None => "no-failover",
        Some(State::WaitForSync) => "waiting-for-sync",
        Some(State::InProgress) => "failover-in-progress",
    }
}

/// The attached replica at `host` (its announced or peer address, as INFO
/// shows it) and listening port `port`.
pub fn find_replica(t: &Tenant, host: &str, port: u16) -> Option<Rc<ReplicaLink>> {
    t.replicas
        .iter()
        .find(|l| l.shown_ip.to_string().eq_ignore_ascii_case(host) && l.listening_port == port)
        .cloned()
}

/// Starts a failover (the command checked everything): holds writes from
/// now on.
pub fn start(t: &mut Tenant, target: Option<(String, u16)>, end_ms: i64, force: bool) {
    match &target {
        Some((h, p)) => tracing::info!("FAILOVER requested to {h}:{p}."),
        None => tracing::info!("FAILOVER requested to any replica."),
    }
    // Acknowledgements now rather than at the replicas' next periodic ACK
    // (up to a second away); this is the last thing the offset takes.
    t.log.append_no_db(&[b"REPLCONF", b"GETACK", b"*"]);
    t.wake_replicas();
    t.failover = Some(Failover {
        state: State::WaitForSync,
        target,
        end_ms,
        force,
    });
}

/// Gives the failover up: a server that had become the target's replica
/// is a primary again (under a new replication id, as `REPLICAOF NO ONE`),
/// and writes flow again.
pub fn abort(t: &mut Tenant, why: &str) {
    let Some(f) = t.failover.take() else {
        return;
    };
    match &f.target {
        Some((h, p)) => tracing::info!("FAILOVER to {h}:{p} aborted: {why}"),
        None => tracing::info!("FAILOVER to any replica aborted: {why}"),
    }
    if f.state == State::InProgress {
        super::replica::become_primary(t);
    }
}

/// The cron's step while waiting for the target: hands over once it has
/// the whole offset, or gives up (or, with FORCE, goes on) at the deadline.
pub fn progress(t: &mut Tenant, now_ms: i64) {
    let Some(f) = t.failover.as_ref() else {
        return;
    };
    if f.state != State::WaitForSync {
        return;
    }
    if f.end_ms != 0 && f.end_ms <= now_ms {
        if f.force {
            if let Some((h, p)) = f.target.clone() {
                tracing::info!("FAILOVER to {h}:{p} time out exceeded, failing over.");
                hand_over(t, h, p, now_ms);
            }
        } else {
            abort(t, "Replica never caught up before timeout");
        }
        return;
    }
    let offset = t.log.offset();
    let target = match &f.target {
        Some((h, p)) => find_replica(t, h, *p)
            .filter(|l| l.ack_offset.get() == offset)
            .map(|_| (h.clone(), *p)),
        None => t
            .replicas
            .iter()
            .find(|l| l.ack_offset.get() == offset)
            .map(|l| (l.shown_ip.to_string(), l.listening_port)),
    };
    if let Some((h, p)) = target {
        tracing::info!("Failover target {h}:{p} is synced, failing over.");
        hand_over(t, h, p, now_ms);
    }
}

/// Becomes the target's replica; the link task sends the PSYNC that
/// promotes it.
fn hand_over(t: &mut Tenant, host: String, port: u16, now_ms: i64) {
    if let Some(f) = t.failover.as_mut() {
        f.state = State::InProgress;
        f.target = Some((host.clone(), port));
    }
    super::replica::become_replica(t, host, port, None, now_ms);
}

/// Whether the link task's PSYNC must carry `FAILOVER`.
pub fn in_progress(t: &Tenant) -> bool {
    t.failover
        .as_ref()
        .is_some_and(|f| f.state == State::InProgress)
}

/// The target answered the link's PSYNC: accepted (`+CONTINUE` or
/// `+FULLRESYNC`) ends the failover, anything else aborts it.
pub fn answered(t: &mut Tenant, accepted: bool) {
    if !in_progress(t) {
        return;
    }
    if accepted {
        if let Some(Failover {
            target: Some((h, p)),
            ..
        }) = t.failover.take()
        {
            tracing::info!("FAILOVER to {h}:{p} done: this server follows it now.");
        }
    } else {
        abort(t, "Failover target rejected psync request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_names_are_redis_s() {
        assert_eq!(state_name(None), "no-failover");
        let mut f = Failover {
            state: State::WaitForSync,
            target: None,
            end_ms: 0,
            force: false,
        };
        assert_eq!(state_name(Some(&f)), "waiting-for-sync");
        f.state = State::InProgress;
        assert_eq!(state_name(Some(&f)), "failover-in-progress");
    }
}
