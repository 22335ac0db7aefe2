//! The per-socket delay line for datagrams: each datagram is handed to
//! the real socket by the link clock's thread (`clock`) when its time
//! comes, with no task in between. A task's wake-up per datagram cost
//! every emulated hop tens of microseconds more than the table says on a
//! loaded machine; the clock thread only makes the (non-blocking) send.
//!
//! Items leave by deliver-at time, ties in the order they were queued, so
//! without jitter a flow is not reordered (a send that would block is
//! finished on the runtime, and may then leave after a later one, as a
//! real network may reorder).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use super::clock;

/// Bytes a socket may have in flight in its delay line before further
/// datagrams are dropped, like a router's tail drop: a sender blasting
/// faster than it can be delivered must not grow memory without bound.
pub(crate) const MAX_QUEUED_BYTES: usize = 16 << 20;

/// A send finished on the runtime.
pub(crate) type Later = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Handle to a delay line; what is queued is delivered even after the
/// last handle is dropped.
pub(crate) struct DelayQueue<T> {
    line: Arc<Line<T>>,
}

struct Line<T> {
    queued: AtomicUsize,
    /// Sends an item now; gives it back when the socket would block.
    now: Box<dyn Fn(T) -> Result<(), T> + Send + Sync>,
    /// Sends an item that would have blocked, on the runtime.
    later: Box<dyn Fn(T) -> Later + Send + Sync>,
    runtime: tokio::runtime::Handle,
}

/// Why [`DelayQueue::push`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Over [`MAX_QUEUED_BYTES`]: the datagram is lost.
    Full,
}

impl<T: Send + 'static> DelayQueue<T> {
    /// A delay line that sends with `now` (non-blocking; it swallows its
    /// own errors, as a network does) and finishes a send that would block
    /// with `later`. Must be called inside a tokio runtime.
    pub(crate) fn spawn(
        now: impl Fn(T) -> Result<(), T> + Send + Sync + 'static,
        later: impl Fn(T) -> Later + Send + Sync + 'static,
    ) -> Self {
        DelayQueue {
            line: Arc::new(Line {
                queued: AtomicUsize::new(0),
                now: Box::new(now),
                later: Box::new(later),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Queues `item` (of `len` bytes) for delivery after `delay`.
    pub(crate) fn push(&self, delay: Duration, len: usize, item: T) -> Result<(), PushError> {
        let before = self.line.queued.fetch_add(len, AtomicOrdering::Relaxed);
        if before + len > MAX_QUEUED_BYTES {
            self.line.queued.fetch_sub(len, AtomicOrdering::Relaxed);
            return Err(PushError::Full);
        }
        let line = self.line.clone();
        clock::run_at(
            std::time::Instant::now() + delay,
            Box::new(move || {
                line.queued.fetch_sub(len, AtomicOrdering::Relaxed);
                if let Err(item) = (line.now)(item) {
                    line.runtime.spawn((line.later)(item));
                }
            }),
        );
        Ok(())
    }
}

impl<T> std::fmt::Debug for DelayQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayQueue")
            .field(
                "queued_bytes",
                &self.line.queued.load(AtomicOrdering::Relaxed),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::time::Instant;

    #[tokio::test]
    async fn delivers_in_time_order_fifo_on_ties() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let start = Instant::now();
        let q = DelayQueue::spawn(
            move |tag: u32| {
                sink.lock().push((tag, start.elapsed()));
                Ok(())
            },
            |_| Box::pin(async {}),
        );
        q.push(Duration::from_millis(30), 1, 1).unwrap();
        q.push(Duration::from_millis(10), 1, 2).unwrap();
        q.push(Duration::from_millis(10), 1, 3).unwrap();
        q.push(Duration::ZERO, 1, 4).unwrap();
        drop(q);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = out.lock().clone();
        let tags: Vec<u32> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [4, 2, 3, 1], "in-flight items survive the handle");
        assert!(got[3].1 >= Duration::from_millis(30), "{got:?}");
        assert!(got[1].1 >= Duration::from_millis(10), "{got:?}");
    }

    #[tokio::test]
    async fn a_send_that_would_block_is_finished_on_the_runtime() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        let q = DelayQueue::spawn(Err, move |item: u32| {
            let tx = tx.lock().take();
            Box::pin(async move {
                if let Some(tx) = tx {
                    let _ = tx.send(item);
                }
            })
        });
        q.push(Duration::from_micros(200), 1, 7).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert_eq!(got.ok().and_then(Result::ok), Some(7));
    }

    #[tokio::test]
    async fn full_queue_drops() {
        let q = DelayQueue::spawn(|_: ()| Ok(()), |_| Box::pin(async {}));
        q.push(Duration::from_secs(10), MAX_QUEUED_BYTES, ())
            .unwrap();
        assert_eq!(q.push(Duration::ZERO, 1, ()), Err(PushError::Full));
    }
}
