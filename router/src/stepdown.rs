//! Writes a primary refused because it stepped down.
//!
//! The router learns who the primary is from `ROLE` polls, so for up to a
//! poll interval after a failover (`FAILOVER`, `REPLICAOF`, Sentinel) it
//! still sends writes to the old primary, which answers each with
//! `-READONLY`. That error is the router's business, not the client's: a
//! write refused that way did not run, so the session sends it again to
//! the new primary (see `Session::redo_refused`). Only the refused tail of
//! a batch goes again, and only when everything in that tail either was
//! refused or is a read (safe to repeat): a write that ran is never sent
//! twice. What cannot be sent again (a transaction on the client's own
//! connection, no new primary in time) gets [`STEPPED_DOWN`] instead of
//! `-READONLY`.

use std::ops::Range;

use anykv_server::resp::{ParseLimits, Request, RequestParser};

use crate::classify::{self, Kind};
use crate::frame::Scanner;

/// What replaces `-READONLY` when the router cannot send the write again.
pub const STEPPED_DOWN: &[u8] =
    b"-TRYAGAIN the primary stepped down (failover); the command did not run, retry\r\n";

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

/// Where each request of a batch (multibulk requests back to back)
/// starts and ends, and whether it is a read.
pub fn request_ranges(batch: &[u8]) -> Option<Vec<(Range<usize>, bool)>> {
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
                let read = matches!(classify::kind(&args), Kind::Read | Kind::Scan { .. });
                let end = p.consumed();
                out.push((start..end, read));
                start = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The refused tail of a batch: from request `k` on, where `k` is the
/// first request answered `-READONLY`, provided every later request was
/// refused too or is a read. `None`: nothing was refused, or the tail
/// cannot be sent again.
pub fn refused_tail(
    replies: &[u8],
    reply_at: &[Range<usize>],
    reqs: &[(Range<usize>, bool)],
) -> Option<usize> {
    if reply_at.len() != reqs.len() {
        return None;
    }
    let k = reply_at
        .iter()
        .position(|r| is_refusal(&replies[r.clone()]))?;
    let safe = (k..reqs.len()).all(|j| reqs[j].1 || is_refusal(&replies[reply_at[j].clone()]));
    safe.then_some(k)
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
            [false, false, true]
        );
        assert_eq!(reqs[2].0.end, b.len());
        let mut replies = b"+OK\r\n".to_vec();
        replies.extend_from_slice(RO);
        replies.extend_from_slice(b"$1\r\n1\r\n");
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(at.len(), 3);
        assert_eq!(refused_tail(&replies, &at, &reqs), Some(1));
    }

    #[test]
    fn a_write_that_ran_after_a_refusal_is_not_sent_again() {
        let b = batch(&[&[b"SET", b"a", b"1"], &[b"INCR", b"n"]]);
        let reqs = request_ranges(&b).unwrap();
        let mut replies = RO.to_vec();
        replies.extend_from_slice(b":1\r\n");
        let at = reply_ranges(&replies).unwrap();
        assert_eq!(refused_tail(&replies, &at, &reqs), None);
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
        assert_eq!(refused_tail(&replies, &at, &reqs), None);
        assert_eq!(rewrite_refusals(&replies), replies);
        assert!(!may_hold_refusal(b"+OK\r\n:3\r\n"));
    }
}
