//! Sub-millisecond sleeps for the delay lines.
//!
//! tokio's timer has a resolution of one millisecond and rounds every
//! deadline up to the next tick, so a 0.25 ms one-way delay (two machines
//! in one region) became 1–2 ms, and every emulated hop gained up to a
//! millisecond: a durability `region` write (to the standby and back) was
//! measured at 2.6 ms where the table says 0.5 ms, and the benchmarks
//! charged that to anykv. [`sleep_until`] sleeps on tokio's timer until
//! [`COARSE_MARGIN`] before the deadline and then on one process-wide
//! thread that waits on a condition variable with an absolute deadline
//! (a futex with an hrtimer: tens of microseconds late, not a millisecond)
//! and wakes the task. The thread only ever holds sleeps' deadlines less
//! than the margin away, so cancelled sleeps cost it little. The datagram
//! delay lines hand it their sends directly ([`run_at`]): no task wakes
//! up between a datagram's time and its send.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use parking_lot::{Condvar, Mutex};
use tokio::time::Instant;

/// How long before a deadline the precise thread takes over from tokio's
/// timer: tokio may wake up to a tick (1 ms) late, plus scheduling.
pub(crate) const COARSE_MARGIN: Duration = Duration::from_millis(2);

/// Sleeps until `at` (tokio's clock, so paused-time tests still work for
/// the coarse part) with sub-millisecond precision. Cancel-safe.
pub(crate) async fn sleep_until(at: Instant) {
    if let Some(coarse) = at.checked_sub(COARSE_MARGIN) {
        if coarse > Instant::now() {
            tokio::time::sleep_until(coarse).await;
        }
    }
    let left = at.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return;
    }
    Precise::new(StdInstant::now() + left).await;
}

/// What the timer thread and one sleeping future share.
#[derive(Default)]
struct Slot {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// What the thread does at a deadline.
enum Due {
    /// Wake a sleeping future.
    Wake(Arc<Slot>),
    /// Run a (short, non-blocking) job: a datagram's send.
    Run(Job),
}

/// A job for [`run_at`].
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A deadline in the thread's heap (earliest first, then by insertion).
type Entry = Reverse<(StdInstant, u64, SlotRef)>;

/// A [`Due`] ordered by nothing (the heap orders by deadline and seq).
struct SlotRef(Due);
impl PartialEq for SlotRef {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SlotRef {}
impl PartialOrd for SlotRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SlotRef {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Entry>, u64)>,
    changed: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new((BinaryHeap::new(), 0)),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("link-clock".into())
            .spawn(move || timer.run());
        if let Err(e) = spawned {
            // Without the thread every precise sleep would hang: they end at
            // once, and delays run on tokio's timer (1 ms ticks).
            tracing::warn!(error = %e, "link clock thread failed to start; emulated delays will be tokio's (1 ms ticks)");
            FALLBACK.store(true, Ordering::Relaxed);
        }
        timer
    })
}

/// Set when the clock thread could not start: sleeps end at once.
static FALLBACK: AtomicBool = AtomicBool::new(false);

/// Runs `job` on the clock's thread at `at` (at once when the thread
/// could not start). Jobs due at the same time run in the order given.
pub(crate) fn run_at(at: StdInstant, job: Job) {
    let timer = timer();
    if FALLBACK.load(Ordering::Relaxed) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    job();
                });
            }
            Err(_) => job(),
        }
        return;
    }
    timer.add(at, Due::Run(job));
}

impl Timer {
    fn add(&self, at: StdInstant, due: Due) {
        let mut guard = self.heap.lock();
        let (heap, seq) = &mut *guard;
        let earliest = heap.peek().is_none_or(|Reverse((first, _, _))| at < *first);
        *seq += 1;
        heap.push(Reverse((at, *seq, SlotRef(due))));
        drop(guard);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut guard = self.heap.lock();
        let mut ready = Vec::new();
        loop {
            let now = StdInstant::now();
            while let Some(Reverse((at, _, _))) = guard.0.peek() {
                if *at > now {
                    break;
                }
                if let Some(Reverse((_, _, SlotRef(due)))) = guard.0.pop() {
                    ready.push(due);
                }
            }
            if !ready.is_empty() {
                // Sends and wakes outside the lock: pushes go on meanwhile.
                parking_lot::MutexGuard::unlocked(&mut guard, || {
                    for due in ready.drain(..) {
                        // A job that panics (a bug in a send) must not
                        // take the clock, and every emulated link, down.
                        let ran =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match due {
                                Due::Wake(slot) => {
                                    slot.fired.store(true, Ordering::Release);
                                    if let Some(w) = slot.waker.lock().take() {
                                        w.wake();
                                    }
                                }
                                Due::Run(job) => job(),
                            }));
                        if ran.is_err() {
                            tracing::error!("a link clock job panicked");
                        }
                    }
                });
                continue;
            }
            match guard.0.peek() {
                Some(Reverse((at, _, _))) => {
                    let at = *at;
                    self.changed.wait_until(&mut guard, at);
                }
                None => self.changed.wait(&mut guard),
            }
        }
    }
}

/// A future that is ready once the timer thread passed `at`.
struct Precise {
    at: StdInstant,
    slot: Option<Arc<Slot>>,
}

impl Precise {
    fn new(at: StdInstant) -> Self {
        Precise { at, slot: None }
    }
}

impl Future for Precise {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Started first, so a thread that cannot start is known below.
        let timer = timer();
        if StdInstant::now() >= self.at || FALLBACK.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        match &self.slot {
            Some(slot) => {
                // Store the waker before checking `fired`, so a firing in
                // between either sees this waker or is seen here.
                *slot.waker.lock() = Some(cx.waker().clone());
                if slot.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
            }
            None => {
                let slot = Arc::new(Slot {
                    fired: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                self.slot = Some(slot.clone());
                timer.add(self.at, Due::Wake(slot));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sub_millisecond_sleeps_end_sooner_than_on_tokios_timer() {
        // tokio's timer ends a 250 µs sleep at its next 1 ms tick (0.25 to
        // 1.25 ms later); the clock's, tens of microseconds late. Taken in
        // turns so load on the machine weighs on both alike: the medians
        // must differ.
        let (mut ours, mut tokios) = (Vec::new(), Vec::new());
        for _ in 0..41 {
            let start = Instant::now();
            sleep_until(start + Duration::from_micros(250)).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_micros(250), "woke early: {took:?}");
            ours.push(took);
            let start = Instant::now();
            tokio::time::sleep_until(start + Duration::from_micros(250)).await;
            tokios.push(start.elapsed());
        }
        ours.sort();
        tokios.sort();
        assert!(
            ours[20] < tokios[20],
            "median {:?} against tokio's {:?}",
            ours[20],
            tokios[20]
        );
    }

    #[test]
    fn jobs_due_together_run_in_the_order_given() {
        let (tx, rx) = std::sync::mpsc::channel();
        let at = StdInstant::now() + Duration::from_millis(5);
        for i in 0..50 {
            let tx = tx.clone();
            run_at(
                at,
                Box::new(move || {
                    let _ = tx.send(i);
                }),
            );
        }
        let got: Vec<i32> = (0..50)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a job ran"))
            .collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert!(StdInstant::now() >= at);
    }

    #[tokio::test]
    async fn long_sleeps_end_on_time_and_cancelled_ones_do_not_fire() {
        let start = Instant::now();
        sleep_until(start + Duration::from_millis(12)).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(12) && took < Duration::from_millis(40),
            "{took:?}"
        );
        // A cancelled precise sleep leaves a harmless entry behind.
        let cancelled = sleep_until(Instant::now() + Duration::from_micros(500));
        let _ = tokio::time::timeout(Duration::from_micros(100), cancelled).await;
        sleep_until(Instant::now() + Duration::from_millis(1)).await;
    }
}
