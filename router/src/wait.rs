//! `WAIT numreplicas timeout` through the router.
//!
//! Redis counts the replicas that acknowledged the *connection's* last
//! write. Through the router a client's writes travel on shared
//! connections, so a `WAIT` sent upstream on any one connection would
//! count against someone else's writes, or none (a fresh connection has
//! written nothing, and its `WAIT` returns at once: durability it does not
//! have). So the router answers `WAIT` itself, once every earlier reply of
//! the client came back: it takes the primary's replication offset at that
//! moment (which covers the client's writes, and maybe others' too, so it
//! never counts too many) and counts the replicas whose acknowledged
//! offset, in the primary's `ROLE`, has reached it. Replicas acknowledge
//! on their own once a second; to hear sooner the router sends, on a
//! connection of the client's own, a `WAIT` for more replicas than exist
//! with a short timeout, which makes the primary ask its replicas for an
//! acknowledgement (`REPLCONF GETACK`) as a client's `WAIT` would.

use anykv_server::util::parse_i64;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::pool::{parse_role, Role, RoleReply};
use crate::session::{error_reply, Router};
use crate::stepdown;
use crate::upstream::{encode, BatchReply, Conn, Held, UpstreamError};

/// `WAIT`'s arguments when the router answers it: two integers, the
/// timeout not negative. Anything else goes to the primary, which gives
/// Redis's own error.
pub fn args(args: &[&[u8]]) -> Option<(i64, u64)> {
    if args.len() != 3 || !args[0].eq_ignore_ascii_case(b"wait") {
        return None;
    }
    let n = parse_i64(args[1])?;
    let t = parse_i64(args[2])?;
    // Redis's limit: the deadline must fit in milliseconds since 1970.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if t > i64::MAX - now_ms {
        return None;
    }
    Some((n, u64::try_from(t).ok()?))
}

/// Sends the reply to `WAIT want timeout_ms` on primary `p` to `tx`, on
/// the client's `held` account as an upstream's replies are; stops
/// (closing its connection) if the client leaves meanwhile.
pub async fn answer(
    r: Arc<Router>,
    p: usize,
    (want, timeout_ms): (i64, u64),
    mut tx: oneshot::Sender<BatchReply>,
    held: Arc<Held>,
) {
    let deliver = |tx: oneshot::Sender<BatchReply>, reply: Vec<u8>| {
        let n = reply.len();
        held.add(n);
        if tx.send(Ok(Bytes::from(reply))).is_err() {
            held.sub(n);
        }
    };
    let c = match r.pools.dedicated(p, 2).await {
        Ok(c) => c,
        Err(e) => return deliver(tx, error_reply(&e)),
    };
    let out = tokio::select! {
        out = count_acks(&c, want, timeout_ms) => out,
        _ = tx.closed() => {
            c.close();
            return;
        }
    };
    r.pools.release(p, 2, c);
    let reply = match out {
        Ok(Some(n)) => format!(":{n}\r\n").into_bytes(),
        Ok(None) => stepdown::STEPPED_DOWN.to_vec(),
        Err(e) => error_reply(&e),
    };
    deliver(tx, reply);
}

/// Longest hurry-up `WAIT` (the primary asks for acks once per call).
const MAX_HURRY_MS: u64 = 100;

/// Replicas with the primary's current offset, waiting until `want` have
/// it or the timeout passed (0: no limit). `None`: not a primary.
async fn count_acks(c: &Conn, want: i64, timeout_ms: u64) -> Result<Option<i64>, UpstreamError> {
    let Some(first) = role(c, None).await? else {
        return Ok(None);
    };
    if first.role != Role::Primary {
        return Ok(None);
    }
    let need = first.offset;
    let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
    let mut acks = first.acks;
    let mut hurry = 1;
    loop {
        let n = acks.iter().filter(|&&a| a >= need).count() as i64;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if n >= want || left == Some(Duration::ZERO) {
            return Ok(Some(n));
        }
        let step = left.map_or(hurry, |l| hurry.min(l.as_millis() as u64).max(1));
        let Some(now) = role(c, Some(step)).await? else {
            return Ok(None);
        };
        acks = now.acks;
        hurry = (hurry * 2).min(MAX_HURRY_MS);
    }
}

/// `ROLE` on `c`, after a hurry-up `WAIT` of `hurry` ms if given.
async fn role(c: &Conn, hurry: Option<u64>) -> Result<Option<RoleReply>, UpstreamError> {
    let mut req = Vec::new();
    let mut count = 1;
    if let Some(ms) = hurry {
        encode(
            &mut req,
            &[b"WAIT", b"2147483647", ms.to_string().as_bytes()],
        );
        count += 1;
    }
    encode(&mut req, &[b"ROLE"]);
    let replies = c.request(0, Bytes::from(req), count).await?;
    let last = stepdown::reply_ranges(&replies).and_then(|at| at.last().cloned());
    Ok(last
        .and_then(|r| redis::parse_redis_value(&replies[r]).ok())
        .and_then(|v| parse_role(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_answers_well_formed_waits_only() {
        assert_eq!(args(&[b"WAIT", b"1", b"100"]), Some((1, 100)));
        assert_eq!(args(&[b"wait", b"-1", b"0"]), Some((-1, 0)));
        assert_eq!(args(&[b"WAIT", b"1", b"-1"]), None);
        assert_eq!(args(&[b"WAIT", b"x", b"0"]), None);
        assert_eq!(args(&[b"WAIT", b"1"]), None);
        assert_eq!(args(&[b"WAIT", b"+1", b"0"]), None);
        assert_eq!(args(&[b"WAIT", b"01", b"0"]), None);
        assert_eq!(args(&[b"WAIT", b"1", b"9223372036854775807"]), None);
        assert_eq!(args(&[b"BLPOP", b"1", b"0"]), None);
    }
}
