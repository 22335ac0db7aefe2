//! Checking what clients saw during a fault run: the history checker of
//! the failover harness.
//!
//! A run records every operation its clients invoked and the response each
//! got (or none: a timeout, a closed connection — the operation may or may
//! not have happened). Three properties are checked:
//!
//! - [`linearizable`]: the reads and writes of each register (a key) can be
//!   ordered so that each takes effect at one instant between its
//!   invocation and its response, and every read returns the value of the
//!   last write before it. A lost acknowledged write (a later read returns
//!   an older value) and a stale read both break it. Operations without a
//!   response may take effect at any instant after their invocation, or
//!   never.
//! - [`acknowledged_present`]: every write the cluster acknowledged is in
//!   the state read after the run (for keys written once per value, such as
//!   set members or one key per write).
//! - [`one_primary_per_epoch`]: acknowledgements carry the epoch and the
//!   node that gave them; an epoch has one primary, and no primary of an
//!   older epoch takes a write sent after a newer epoch's primary
//!   acknowledged one.
//!
//! The linearizability search is Wing & Gong's, with Lowe's memoization of
//! (operations linearized, register state) — what Porcupine and Knossos
//! run — applied to each key on its own (linearizability is compositional).
//! It is written here rather than taken from a crate: the crates that offer
//! one (stateright's `LinearizabilityTester`, todc-utils) bring a model
//! checker or a generic framework for a 200-line search over one data
//! type, and this one reports the operation at which a history fails.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What an operation did to a register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Set the register to this value.
    Write(u64),
    /// Read this value (None: the key did not exist).
    Read(Option<u64>),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    pub key: String,
    pub kind: Kind,
    /// When it was invoked (any monotonic clock, e.g. ns since the run began).
    pub invoke: u64,
    /// When its response arrived; None when none did (it may or may not
    /// have taken effect). A read without a response says nothing: leave
    /// it out.
    pub complete: Option<u64>,
}

/// Why a history is not linearizable: the key, and the operation whose
/// response came before any order could place it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub op: Op,
}

/// Every key's history on its own (see the module docs); the first key that
/// fails, with an operation no order could place before its response.
///
/// Writes without a response whose value no read returned are left out
/// first: such a write may be taken to have never happened (no read needs
/// it), so the history is linearizable with it exactly when it is without
/// it, and every one left in doubles the orders the search may try.
pub fn linearizable(ops: &[Op]) -> Result<(), Violation> {
    let read: HashSet<(&str, u64)> = ops
        .iter()
        .filter_map(|op| match op.kind {
            Kind::Read(Some(v)) => Some((op.key.as_str(), v)),
            _ => None,
        })
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        let unseen = match op.kind {
            Kind::Write(v) => op.complete.is_none() && !read.contains(&(op.key.as_str(), v)),
            Kind::Read(_) => false,
        };
        if !unseen {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, ops) in by_key {
        if let Err(i) = check_register(&ops) {
            return Err(Violation {
                key: key.to_string(),
                op: ops[i].clone(),
            });
        }
    }
    Ok(())
}

/// An event of the search's list: an operation's call or its return.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

/// Wing & Gong / Lowe on one register that starts absent. Err: the index
/// of the latest operation whose response the search reached with it
/// unplaced (the furthest any order got).
fn check_register(ops: &[&Op]) -> Result<(), usize> {
    // Events by time; at equal times calls first (an operation that begins
    // when another ends may be ordered after it).
    let mut evs: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        evs.push((op.invoke, true, i));
        if let Some(c) = op.complete {
            evs.push((c.max(op.invoke), false, i));
        }
    }
    evs.sort_by_key(|&(t, call, i)| (t, !call, i));
    // A doubly linked list with a head sentinel (index 0).
    let n = evs.len();
    let mut list: Vec<Event> = Vec::with_capacity(n + 1);
    list.push(Event {
        op: usize::MAX,
        call: false,
        prev: 0,
        next: if n > 0 { 1 } else { usize::MAX },
    });
    let mut call_at = vec![usize::MAX; ops.len()];
    let mut ret_at = vec![usize::MAX; ops.len()];
    for (j, &(_, call, i)) in evs.iter().enumerate() {
        let idx = j + 1;
        list.push(Event {
            op: i,
            call,
            prev: idx - 1,
            next: if j + 1 < n { idx + 1 } else { usize::MAX },
        });
        if call {
            call_at[i] = idx;
        } else {
            ret_at[i] = idx;
        }
    }
    let returns = ops.iter().filter(|o| o.complete.is_some()).count();
    let unlink = |list: &mut Vec<Event>, idx: usize| {
        let Event { prev, next, .. } = list[idx];
        list[prev].next = next;
        if next != usize::MAX {
            list[next].prev = prev;
        }
    };
    let relink = |list: &mut Vec<Event>, idx: usize| {
        let Event { prev, next, .. } = list[idx];
        list[prev].next = idx;
        if next != usize::MAX {
            list[next].prev = idx;
        }
    };
    let mut linearized = vec![false; ops.len()];
    let mut returns_linearized = 0usize;
    let mut state: Option<u64> = None;
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    // (event index, operation) of the latest return reached unplaced.
    let mut furthest: (usize, usize) = (0, 0);
    let bits = |lin: &[bool]| -> Vec<u64> {
        let mut v = vec![0u64; lin.len().div_ceil(64)];
        for (i, &b) in lin.iter().enumerate() {
            if b {
                v[i / 64] |= 1 << (i % 64);
            }
        }
        v
    };
    let mut cur = list[0].next;
    loop {
        if returns_linearized == returns {
            return Ok(());
        }
        if cur == usize::MAX {
            // Only calls without returns are left: nothing forces them.
            return Ok(());
        }
        let e = list[cur];
        if e.call {
            let op = ops[e.op];
            let next_state = match &op.kind {
                Kind::Write(v) => Some(Some(*v)),
                Kind::Read(r) => (*r == state).then_some(state),
            };
            let placed = next_state.and_then(|s| {
                linearized[e.op] = true;
                let key = (bits(&linearized), s);
                if seen.insert(key) {
                    Some(s)
                } else {
                    linearized[e.op] = false;
                    None
                }
            });
            match placed {
                Some(s) => {
                    stack.push((e.op, state));
                    state = s;
                    if op.complete.is_some() {
                        returns_linearized += 1;
                    }
                    unlink(&mut list, call_at[e.op]);
                    if ret_at[e.op] != usize::MAX {
                        unlink(&mut list, ret_at[e.op]);
                    }
                    cur = list[0].next;
                }
                None => cur = e.next,
            }
        } else {
            // A return reached with its operation unplaced: undo the last
            // placement and try the next candidate after it.
            if cur >= furthest.0 {
                furthest = (cur, e.op);
            }
            let Some((op, prev_state)) = stack.pop() else {
                return Err(furthest.1);
            };
            linearized[op] = false;
            if ops[op].complete.is_some() {
                returns_linearized -= 1;
            }
            state = prev_state;
            if ret_at[op] != usize::MAX {
                relink(&mut list, ret_at[op]);
            }
            relink(&mut list, call_at[op]);
            cur = list[call_at[op]].next;
        }
    }
}

/// Writes acknowledged (`acked`: key → values the cluster answered OK for)
/// that the final state (`final_state`: key → values present) lacks.
pub fn acknowledged_present(
    acked: &HashMap<String, Vec<u64>>,
    final_state: &HashMap<String, HashSet<u64>>,
) -> Vec<(String, u64)> {
    let mut lost = Vec::new();
    for (key, values) in acked {
        let have = final_state.get(key);
        for v in values {
            if !have.is_some_and(|h| h.contains(v)) {
                lost.push((key.clone(), *v));
            }
        }
    }
    lost.sort();
    lost
}

/// A session guarantee a history breaks (see [`session_guarantees`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionViolation {
    /// `read-your-writes`, `monotonic-reads`, `invented-value` or
    /// `not-single-writer` (the history does not fit the check).
    pub rule: &'static str,
    pub op: Op,
    pub detail: String,
}

/// What a client of a `ryw` database is promised (docs/ROUTING.md), for
/// histories where each key has one writer that writes increasing values
/// (so a value's size is its place in the key's order):
///
/// - read-your-writes: a read returns at least the last value its client
///   wrote to that key and had acknowledged before invoking the read;
/// - monotonic reads: a client's reads of a key never go back to an older
///   value (nor to "no key" after a value: keys are never deleted);
/// - no invented values: a read returns a value that some write of that
///   key had been invoked with before the read completed.
///
/// Weaker than [`linearizable`] on purpose: a `ryw` client may read
/// another client's key a little behind its writer.
pub fn session_guarantees(ops: &[Op]) -> Result<(), SessionViolation> {
    let fail = |rule, op: &Op, detail: String| {
        Err(SessionViolation {
            rule,
            op: op.clone(),
            detail,
        })
    };
    // Each key's writer and its writes (value, invoked), in value order.
    type Writes = (u32, Vec<(u64, u64)>);
    let mut writes: HashMap<&str, Writes> = HashMap::new();
    for op in ops {
        if let Kind::Write(v) = op.kind {
            let e = writes.entry(&op.key).or_insert((op.client, Vec::new()));
            if e.0 != op.client {
                return fail(
                    "not-single-writer",
                    op,
                    format!("written by clients {} and {}", e.0, op.client),
                );
            }
            e.1.push((v, op.invoke));
        }
    }
    for (_, w) in writes.values_mut() {
        w.sort_unstable();
    }
    let mut by_client: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_client.entry(op.client).or_default().push(op);
    }
    for (_, mut mine) in by_client {
        mine.sort_by_key(|o| o.invoke);
        // Per key: last acknowledged own write (and when it was
        // acknowledged), last value read.
        let mut acked: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut seen: HashMap<&str, Option<u64>> = HashMap::new();
        for op in mine {
            match op.kind {
                Kind::Write(v) => {
                    if let Some(done) = op.complete {
                        acked.insert(&op.key, (v, done));
                    }
                }
                Kind::Read(got) => {
                    if let Some(v) = got {
                        let written = writes.get(op.key.as_str()).is_some_and(|(_, w)| {
                            w.binary_search_by_key(&v, |&(x, _)| x)
                                .is_ok_and(|i| w[i].1 <= op.complete.unwrap_or(u64::MAX))
                        });
                        if !written {
                            return fail("invented-value", op, format!("{v} was never written"));
                        }
                    }
                    if let Some(&(mine, at)) = acked.get(op.key.as_str()) {
                        if at <= op.invoke && got.is_none_or(|g| g < mine) {
                            return fail(
                                "read-your-writes",
                                op,
                                format!(
                                    "read {got:?} after its own write of {mine} was acknowledged"
                                ),
                            );
                        }
                    }
                    if let Some(before) = seen.insert(&op.key, got) {
                        if got < before {
                            return fail(
                                "monotonic-reads",
                                op,
                                format!("read {got:?} after reading {before:?}"),
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// One acknowledgement of a write: when its request was sent and when the
/// acknowledgement arrived (one clock, as [`Op`]'s), in which epoch, by
/// which node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub sent: u64,
    pub at: u64,
    pub epoch: u64,
    /// The node the request was sent to.
    pub node: String,
    /// The request may have been relayed: `node` may have sent it on to
    /// its primary, whose epoch the acknowledgement carries, so `node`
    /// need not be the one that ran it (the epoch still is).
    pub relayed: bool,
}

/// Two primaries: the same epoch acknowledged by two nodes, or a primary
/// of an older epoch that took a write sent after a newer epoch's primary
/// had acknowledged one (both wrote at once). An older epoch's
/// acknowledgement that merely *arrives* late (its node was stopped after
/// its standby had the write) is no split: the write was taken before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitBrain {
    TwoNodesOneEpoch { epoch: u64, nodes: (String, String) },
    OldEpochAfterNew { old: Ack, new_began: Ack },
}

/// Checks the acknowledgements of a run (see the module docs).
pub fn one_primary_per_epoch(acks: &[Ack]) -> Result<(), SplitBrain> {
    let mut owner: BTreeMap<u64, &str> = BTreeMap::new();
    // Per epoch: the acknowledgement that arrived first, and the one
    // whose request was sent last.
    let mut first: BTreeMap<u64, &Ack> = BTreeMap::new();
    let mut last: BTreeMap<u64, &Ack> = BTreeMap::new();
    for a in acks {
        // Which node ran a relayed write is unknown; its epoch still
        // counts below.
        match owner.get(&a.epoch).filter(|_| !a.relayed) {
            Some(n) if *n != a.node => {
                return Err(SplitBrain::TwoNodesOneEpoch {
                    epoch: a.epoch,
                    nodes: (n.to_string(), a.node.clone()),
                })
            }
            _ if !a.relayed => {
                owner.insert(a.epoch, &a.node);
            }
            _ => {}
        }
        first
            .entry(a.epoch)
            .and_modify(|f| {
                if a.at < f.at {
                    *f = a;
                }
            })
            .or_insert(a);
        last.entry(a.epoch)
            .and_modify(|l| {
                if a.sent > l.sent {
                    *l = a;
                }
            })
            .or_insert(a);
    }
    // Any older epoch's write sent after a newer epoch's first ack.
    let epochs: Vec<u64> = first.keys().copied().collect();
    for (i, e) in epochs.iter().enumerate() {
        for newer in &epochs[i + 1..] {
            let (old, new) = (last[e], first[newer]);
            if old.sent > new.at {
                return Err(SplitBrain::OldEpochAfterNew {
                    old: old.clone(),
                    new_began: new.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sop(client: u32, key: &str, kind: Kind, invoke: u64, complete: Option<u64>) -> Op {
        Op {
            client,
            key: key.into(),
            kind,
            invoke,
            complete,
        }
    }

    #[test]
    fn session_guarantees_catch_each_broken_promise() {
        let w = |c, v, i, d| sop(c, "a", Kind::Write(v), i, d);
        let r = |c, v, i| sop(c, "a", Kind::Read(v), i, Some(i + 1));
        // Another client may lag; the writer may not.
        let ok = [
            w(1, 1, 0, Some(1)),
            w(1, 2, 2, Some(3)),
            r(2, Some(1), 4),
            r(1, Some(2), 5),
        ];
        assert_eq!(session_guarantees(&ok), Ok(()));
        let stale_own = [w(1, 1, 0, Some(1)), w(1, 2, 2, Some(3)), r(1, Some(1), 4)];
        assert_eq!(
            session_guarantees(&stale_own).unwrap_err().rule,
            "read-your-writes"
        );
        let lost = [w(1, 1, 0, Some(1)), r(1, None, 4)];
        assert_eq!(
            session_guarantees(&lost).unwrap_err().rule,
            "read-your-writes"
        );
        // A write without an answer promises nothing.
        let unknown = [w(1, 1, 0, Some(1)), w(1, 2, 2, None), r(1, Some(1), 4)];
        assert_eq!(session_guarantees(&unknown), Ok(()));
        let back = [
            w(1, 1, 0, Some(1)),
            w(1, 2, 2, Some(3)),
            r(2, Some(2), 4),
            r(2, Some(1), 6),
        ];
        assert_eq!(
            session_guarantees(&back).unwrap_err().rule,
            "monotonic-reads"
        );
        let gone = [w(1, 1, 0, Some(1)), r(2, Some(1), 4), r(2, None, 6)];
        assert_eq!(
            session_guarantees(&gone).unwrap_err().rule,
            "monotonic-reads"
        );
        let invented = [w(1, 1, 0, Some(1)), r(2, Some(7), 4)];
        assert_eq!(
            session_guarantees(&invented).unwrap_err().rule,
            "invented-value"
        );
        let future = [r(2, Some(1), 0), w(1, 1, 5, Some(6))];
        assert_eq!(
            session_guarantees(&future).unwrap_err().rule,
            "invented-value"
        );
        let two = [w(1, 1, 0, Some(1)), w(2, 2, 2, Some(3))];
        assert_eq!(
            session_guarantees(&two).unwrap_err().rule,
            "not-single-writer"
        );
    }

    fn w(client: u32, v: u64, invoke: u64, complete: Option<u64>) -> Op {
        Op {
            client,
            key: "r".into(),
            kind: Kind::Write(v),
            invoke,
            complete,
        }
    }

    fn r(client: u32, v: Option<u64>, invoke: u64, complete: u64) -> Op {
        Op {
            client,
            key: "r".into(),
            kind: Kind::Read(v),
            invoke,
            complete: Some(complete),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let h = vec![
            w(1, 1, 0, Some(10)),
            r(2, Some(1), 11, 20),
            w(1, 2, 21, Some(30)),
            r(2, Some(2), 31, 40),
        ];
        assert_eq!(linearizable(&h), Ok(()));
        // Overlapping write and reads: either order of the reads' values
        // is fine while they overlap the write.
        let h = vec![
            w(1, 1, 0, Some(5)),
            w(1, 2, 10, Some(50)),
            r(2, Some(2), 12, 20),
            r(3, Some(1), 11, 15),
            r(2, Some(2), 51, 60),
        ];
        assert_eq!(linearizable(&h), Ok(()));
        assert_eq!(linearizable(&[r(1, None, 0, 1)]), Ok(()));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        // Write 2 was acknowledged; a later read still sees 1.
        let h = vec![
            w(1, 1, 0, Some(10)),
            w(1, 2, 20, Some(30)),
            r(2, Some(1), 40, 50),
        ];
        let v = linearizable(&h).expect_err("a lost write");
        assert_eq!(v.key, "r");
        assert_eq!(v.op.kind, Kind::Read(Some(1)));
    }

    #[test]
    fn a_stale_read_is_caught() {
        // Client 2 read 2, then client 3, strictly later, read 1: values
        // never go back.
        let h = vec![
            w(1, 1, 0, Some(10)),
            w(1, 2, 11, Some(100)),
            r(2, Some(2), 20, 30),
            r(3, Some(1), 40, 50),
        ];
        assert!(linearizable(&h).is_err());
        // A read of a value never written.
        assert!(linearizable(&[w(1, 1, 0, Some(1)), r(2, Some(7), 2, 3)]).is_err());
    }

    #[test]
    fn a_write_without_a_response_may_or_may_not_have_happened() {
        // Timed out: later reads may see it...
        let h = vec![
            w(1, 1, 0, Some(10)),
            w(1, 2, 20, None),
            r(2, Some(2), 40, 50),
        ];
        assert_eq!(linearizable(&h), Ok(()));
        // ...or not...
        let h = vec![
            w(1, 1, 0, Some(10)),
            w(1, 2, 20, None),
            r(2, Some(1), 40, 50),
        ];
        assert_eq!(linearizable(&h), Ok(()));
        // ...but not before it was sent, nor come and go.
        let h = vec![
            w(1, 1, 0, Some(10)),
            r(2, Some(2), 12, 15),
            w(1, 2, 20, None),
        ];
        assert!(linearizable(&h).is_err());
        let h = vec![
            w(1, 1, 0, Some(10)),
            w(1, 2, 20, None),
            r(2, Some(2), 40, 50),
            r(3, Some(1), 60, 70),
        ];
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn keys_are_checked_on_their_own() {
        let mut h = vec![w(1, 1, 0, Some(10)), r(2, Some(1), 20, 30)];
        h.push(Op {
            key: "other".into(),
            ..r(3, Some(9), 0, 5)
        });
        let v = linearizable(&h).expect_err("other's read of a value never written");
        assert_eq!(v.key, "other");
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 8 clients, 300 writes of distinct values each overlapping its
        // neighbours, every read returning the value of the last write
        // that completed before it began.
        let mut h = Vec::new();
        let mut t = 0u64;
        for i in 0..300u64 {
            h.push(w((i % 8) as u32, i + 1, t, Some(t + 15)));
            h.push(r(100, Some(i + 1), t + 16, t + 17));
            t += 10;
        }
        let start = std::time::Instant::now();
        assert_eq!(linearizable(&h), Ok(()));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn unanswered_writes_nobody_read_are_left_out() {
        // Sixty writes that never got an answer, all overlapping: none was
        // read, so none can matter (nor slow the search down).
        let mut h = vec![w(1, 1, 0, Some(10))];
        for i in 0..60 {
            h.push(w(2 + i, 100 + i as u64, 11 + i as u64, None));
        }
        h.push(r(99, Some(1), 200, 210));
        h.push(w(1, 2, 220, Some(230)));
        h.push(r(99, Some(2), 240, 250));
        let start = std::time::Instant::now();
        assert_eq!(linearizable(&h), Ok(()));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // One that was read stays in, and is still checked: it may take
        // effect late, but not come and go.
        h.push(r(98, Some(130), 260, 270));
        assert_eq!(linearizable(&h), Ok(()));
        h.push(r(97, Some(2), 280, 290));
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn lost_acknowledged_writes_are_listed() {
        let acked = HashMap::from([("s".to_string(), vec![1, 2, 3])]);
        let mut fin = HashMap::new();
        fin.insert("s".to_string(), HashSet::from([1, 3, 4]));
        assert_eq!(acknowledged_present(&acked, &fin), [("s".to_string(), 2)]);
        fin.get_mut("s").unwrap().insert(2);
        assert!(acknowledged_present(&acked, &fin).is_empty());
    }

    #[test]
    fn split_brain_is_caught() {
        let ack = |at, epoch, node: &str| Ack {
            sent: at,
            at,
            epoch,
            node: node.into(),
            relayed: false,
        };
        // A clean handover: n1 in epoch 1, then n2 in epoch 2.
        let ok = [ack(1, 1, "n1"), ack(5, 1, "n1"), ack(9, 2, "n2")];
        assert_eq!(one_primary_per_epoch(&ok), Ok(()));
        // n1's acknowledgement of a write sent before epoch 2 began
        // arrives after it (n1 was stopped): no split.
        let slow = Ack {
            sent: 4,
            ..ack(12, 1, "n1")
        };
        assert_eq!(
            one_primary_per_epoch(&[ack(1, 1, "n1"), ack(9, 2, "n2"), slow]),
            Ok(())
        );
        // Two nodes acknowledging in one epoch.
        let two = [ack(1, 1, "n1"), ack(2, 1, "n2")];
        assert!(matches!(
            one_primary_per_epoch(&two),
            Err(SplitBrain::TwoNodesOneEpoch { epoch: 1, .. })
        ));
        // The old primary, cut off, still acknowledging after epoch 2 began.
        let late = [ack(1, 1, "n1"), ack(9, 2, "n2"), ack(12, 1, "n1")];
        assert!(matches!(
            one_primary_per_epoch(&late),
            Err(SplitBrain::OldEpochAfterNew { .. })
        ));
        // A write relayed by n3 to n2 carries epoch 2: no second node in
        // epoch 2; but one relayed into epoch 1 after epoch 2 began is a
        // split all the same.
        let relayed = |at, epoch| Ack {
            relayed: true,
            ..ack(at, epoch, "n3")
        };
        assert_eq!(
            one_primary_per_epoch(&[ack(1, 1, "n1"), ack(9, 2, "n2"), relayed(10, 2)]),
            Ok(())
        );
        assert!(matches!(
            one_primary_per_epoch(&[ack(1, 1, "n1"), ack(9, 2, "n2"), relayed(12, 1)]),
            Err(SplitBrain::OldEpochAfterNew { .. })
        ));
    }
}
