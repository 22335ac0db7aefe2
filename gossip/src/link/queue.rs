//! The per-socket delay line for datagrams: one tokio task with a timer
//! heap that hands each datagram to the real socket when its time comes.
//!
//! One task per socket (rather than a `sleep` task per datagram) keeps the
//! emulation cheap under gossip fan-out and gives a strict order: items
//! leave by deliver-at time, ties in the order they were queued, so
//! without jitter a flow is never reordered.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::clock::sleep_until;

/// Bytes a socket may have in flight in its delay line before further
/// datagrams are dropped, like a router's tail drop: a sender blasting
/// faster than it can be delivered must not grow memory without bound.
pub(crate) const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Handle to a running delay line; dropping every handle lets the task
/// deliver what is still queued and exit.
pub(crate) struct DelayQueue<T> {
    tx: mpsc::UnboundedSender<(Instant, usize, T)>,
    queued: Arc<AtomicUsize>,
}

/// Why [`DelayQueue::push`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Over [`MAX_QUEUED_BYTES`]: the datagram is lost.
    Full,
    /// The delivery task is gone (it panicked); nothing will be sent.
    Closed,
}

impl<T: Send + 'static> DelayQueue<T> {
    /// Spawns the delivery task; `deliver` is awaited for each item in
    /// deliver-at order (it should swallow its own errors, as a network
    /// does). Must be called inside a tokio runtime.
    pub(crate) fn spawn<F, Fut>(deliver: F) -> Self
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(rx, queued.clone(), deliver));
        DelayQueue { tx, queued }
    }

    /// Queues `item` (of `len` bytes) for delivery after `delay`.
    pub(crate) fn push(&self, delay: Duration, len: usize, item: T) -> Result<(), PushError> {
        let before = self.queued.fetch_add(len, AtomicOrdering::Relaxed);
        if before + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, AtomicOrdering::Relaxed);
            return Err(PushError::Full);
        }
        let at = Instant::now() + delay;
        self.tx.send((at, len, item)).map_err(|_| {
            self.queued.fetch_sub(len, AtomicOrdering::Relaxed);
            PushError::Closed
        })
    }
}

impl<T> fmt::Debug for DelayQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayQueue")
            .field("queued_bytes", &self.queued.load(AtomicOrdering::Relaxed))
            .finish()
    }
}

/// A queued item; the heap pops the earliest `at`, then the lowest `seq`.
struct Entry<T> {
    at: Instant,
    seq: u64,
    len: usize,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed so `BinaryHeap` (a max-heap) pops the earliest entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Most channel messages taken per loop turn, so a sender that never
/// pauses cannot starve delivery (and vice versa).
const INTAKE_BATCH: usize = 1024;

async fn run<T, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<(Instant, usize, T)>,
    queued: Arc<AtomicUsize>,
    mut deliver: F,
) where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut heap: BinaryHeap<Entry<T>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut open = true;
    let mut push = |heap: &mut BinaryHeap<Entry<T>>, (at, len, item): (Instant, usize, T)| {
        heap.push(Entry { at, seq, len, item });
        seq += 1;
    };
    // Stands in for "no deadline" so the sleep branch can always be built.
    let far = Duration::from_secs(86_400);
    loop {
        for _ in 0..INTAKE_BATCH {
            match rx.try_recv() {
                Ok(msg) => push(&mut heap, msg),
                Err(mpsc::error::TryRecvError::Empty) => break,
                // Every handle is gone: deliver what is in flight, then stop.
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|e| e.at <= now) {
            if let Some(e) = heap.pop() {
                queued.fetch_sub(e.len, AtomicOrdering::Relaxed);
                deliver(e.item).await;
            }
        }
        if !open && heap.is_empty() {
            return;
        }
        let next = heap.peek().map(|e| e.at);
        tokio::select! {
            msg = rx.recv(), if open => match msg {
                Some(msg) => push(&mut heap, msg),
                None => open = false,
            },
            _ = sleep_until(next.unwrap_or_else(|| Instant::now() + far)), if next.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[tokio::test]
    async fn delivers_in_time_order_fifo_on_ties() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let start = Instant::now();
        let q = DelayQueue::spawn(move |(tag, _): (u32, ())| {
            let sink = sink.clone();
            async move { sink.lock().push((tag, start.elapsed())) }
        });
        q.push(Duration::from_millis(30), 1, (1, ())).unwrap();
        q.push(Duration::from_millis(10), 1, (2, ())).unwrap();
        q.push(Duration::from_millis(10), 1, (3, ())).unwrap();
        q.push(Duration::ZERO, 1, (4, ())).unwrap();
        drop(q);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = out.lock().clone();
        let tags: Vec<u32> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [4, 2, 3, 1], "in-flight items survive the handle");
        assert!(got[3].1 >= Duration::from_millis(30), "{got:?}");
    }

    #[tokio::test]
    async fn full_queue_drops() {
        let q = DelayQueue::spawn(|_: ()| async {});
        q.push(Duration::from_secs(10), MAX_QUEUED_BYTES, ())
            .unwrap();
        assert_eq!(q.push(Duration::ZERO, 1, ()), Err(PushError::Full));
    }
}
