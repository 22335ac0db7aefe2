//! Writes a primary refused because it stepped down.
//!
//! The router learns who the primary is from `ROLE` polls, so for up to a
//! poll interval after a failover (`FAILOVER`, `REPLICAOF`, Sentinel) it
//! still sends writes to the old primary, which answers each with
//! `-READONLY`. That error is the router's business, not the client's: a
//! write refused that way did not run, so the session sends it again to
//! the new primary (see `Session::redo_refused`), once a `ROLE` sent after
//! the refusal says the server is no longer the primary (a script may
//! return a `-READONLY` error of its own on a live primary). Only the
//! refused tail of a batch goes again, and only when every request in it
//! is a read (safe to repeat) or a command of the table refused whole
//! (scripts and commands the table does not know may have done part of
//! their work): a write that ran is never sent twice. Batches sent to the
//! old primary before the router noticed go again from their start on
//! the same terms, as a read there may have been answered by the demoted
//! server without the client's write that was sent again. What cannot be
//! sent again (a transaction on the client's own connection, no new
//! primary in time) gets [`STEPPED_DOWN`] instead of `-READONLY`.

use std::ops::Range;

use anykv_server::resp::{ParseLimits, Request, RequestParser};

use anykv_server::cmd::{lookup, Lookup};

use crate::classify::{self, Kind};
use crate::frame::Scanner;

/// What replaces `-READONLY` when the router cannot send the write again.
pub const STEPPED_DOWN: &[u8] =
    b"-TRYAGAIN the primary stepped down (failover); no write of this command ran, retry\r\n";

/// Quick test: could `replies` hold a `-READONLY` reply at all?
pub fn may_hold_refusal(replies: &[u8]) -> bool {
    memchr::memmem::find(replies, b"-READONLY").is_some()
}

fn is_refusal(reply: &[u8]) -> bool {
    reply.starts_with(b"-READONLY")
}

/// Where each top-level reply of `replies` starts and ends (`None`: not
/// whole RESP replies).
pub fn reply_ranges(replies: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut sc = Scanner::default();
    let mut out = Vec::new();
    let mut start = 0;
    while start < replies.len() {
        let end = sc.next(replies).ok()??;
        out.push(start..end);
        start = end;
    }
    Some(out)
}

/// What a request of a refused batch may do again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// A read: always.
    Read,
    /// A command of the table, refused whole: if it was refused.
    Refused,
    /// A script, or a command the table does not know: never.
    Never,
}

fn again(args: &[&[u8]]) -> Again {
    match classify::kind(args) {
        Kind::Read | Kind::Scan { .. } => Again::Read,
        _ => match lookup(args) {
            // (A script may have run part way before its refusal.)
            Lookup::Found(r) if r.spec.is_write() && !r.runs_script() => Again::Refused,
            _ => Again::Never,
        },
    }
}

/// Where each request of a batch (multibulk requests back to back)
/// starts and ends, and whether it may be sent again.
pub fn request_ranges(batch: &[u8]) -> Option<Vec<(Range<usize>, Again)>> {
    let mut p = RequestParser::new();
    let limits = ParseLimits {
        max_multibulk_len: i64::MAX,
        max_bulk_len: i64::MAX,
        unauthenticated: false,
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        match p.next(batch, &limits) {
            Ok(Some(Request::Multibulk)) => {
                let args: Vec<&[u8]> = p.ranges().iter().map(|r| &batch[r.clone()]).collect();
                let end = p.consumed();
                out.push((start..end, again(&args)));
                start = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The part of a batch to send again: from request `k` on, where `k` is
/// the first request answered `-READONLY` (or 0 with `whole`: the batch
/// went to the old primary after it stepped down), provided every
/// request from `k` on is a read or a refused command of the table.
/// `None`: nothing to send again, or it cannot be.
pub fn refused_tail(
    replies: &[u8],
    reply_at: &[Range<usize>],
    reqs: &[(Range<usize>, Again)],
    whole: bool,
) -> Option<usize> {
    if reply_at.len() != reqs.len() {
        return None;
    }
    let k = match whole {
        true => 0,
        false => reply_at
            .iter()
            .position(|r| is_refusal(&replies[r.clone()]))?,
    };
    let safe = (k..reqs.len()).all(|j| match reqs[j].1 {
        Again::Read => true,
        Again::Refused => is_refusal(&replies[reply_at[j].clone()]),
        Again::Never => false,
    });
    (safe && k < reqs.len()).then_some(k)
}

/// `replies` with every top-level `-READONLY` replaced by [`STEPPED_DOWN`].
pub fn rewrite_refusals(replies: &[u8]) -> Vec<u8> {
    let Some(at) = reply_ranges(replies) else {
        return replies.to_vec();
    };
    let mut out = Vec::with_capacity(replies.len());
    for r in at {
        let reply = &replies[r];
        if is_refusal(reply) {
            out.extend_from_slice(STEPPED_DOWN);
        } else {
            out.extend_from_slice(reply);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anykv_server::resp::encode_request;

    const RO: &[u8] = b"-READONLY You can't write against a read only replica.\r\n";

    fn batch(cmds: &[&[&[u8]]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            encode_request(&mut out, c);
        }
        out
    }

    #[test]
    fn the_refused_tail_starts_at_the_first_refusal() {
        let b = batch(&[
            &[b"SET", b"a", b"1"],
            &[b"SET", b"b", b"2"],
            &[b"GET", b"a"],
        ]);
        let reqs = request_ranges(&b).unwrap();
        assert_eq!(
            reqs.iter().map(|r| r.1).collect::<Vec<_>>(),
            [Again::Refused, Again::Refused, Again::Read]
        );
        assert_eq!(reqs[2].0.end, b.len());
        let mut replies = b"+OK\r\n".to_vec();
        replies.extend_from_slice(RO);
        replies.extend_from_slice(b"$1\r\n1\r\n");
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(at.len(), 3);
        assert_eq!(refused_tail(&replies, &at, &reqs, false), Some(1));
        // Sent after the step-down: from the start (the first SET ran
        // before it, so not at all).
        assert_eq!(refused_tail(&replies, &at, &reqs, true), None);
        let reads = batch(&[&[b"GET", b"a"], &[b"GET", b"b"]]);
        let rr = request_ranges(&reads).unwrap();
        let got = b"$1\r\n1\r\n$-1\r\n".to_vec();
        let at = reply_ranges(&got).unwrap();
        assert_eq!(refused_tail(&got, &at, &rr, false), None);
        assert_eq!(refused_tail(&got, &at, &rr, true), Some(0));
    }

    #[test]
    fn scripts_are_never_sent_again() {
        let b = batch(&[&[b"EVAL", b"return 1", b"0"], &[b"NOSUCH"]]);
        let reqs = request_ranges(&b).unwrap();
        assert_eq!(reqs[0].1, Again::Never);
        assert_eq!(reqs[1].1, Again::Never);
        let replies = [RO, RO].concat();
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(refused_tail(&replies, &at, &reqs, false), None);
    }

    #[test]
    fn a_write_that_ran_after_a_refusal_is_not_sent_again() {
        let b = batch(&[&[b"SET", b"a", b"1"], &[b"INCR", b"n"]]);
        let reqs = request_ranges(&b).unwrap();
        let mut replies = RO.to_vec();
        replies.extend_from_slice(b":1\r\n");
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(refused_tail(&replies, &at, &reqs, false), None);
        let out = rewrite_refusals(&replies);
        assert_eq!(out, [STEPPED_DOWN, b":1\r\n"].concat());
    }

    #[test]
    fn a_value_that_looks_like_a_refusal_is_data() {
        let b = batch(&[&[b"GET", b"k"]]);
        let reqs = request_ranges(&b).unwrap();
        let replies = b"$9\r\n-READONLY\r\n".to_vec();
        assert!(may_hold_refusal(&replies));
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(refused_tail(&replies, &at, &reqs, false), None);
        assert_eq!(rewrite_refusals(&replies), replies);
        assert!(!may_hold_refusal(b"+OK\r\n:3\r\n"));
    }
}
