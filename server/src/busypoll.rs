//! Adaptive busy polling: while requests keep arriving, an executor polls
//! its sockets for a while after the last one instead of going to sleep
//! (`executor-poll-us`, adapted up to `executor-poll-max-us`, see
//! [`Window`]).
//!
//! Why: an executor that answers faster than its clients send sleeps
//! between requests, and every request then has to wake it — a futex/epoll
//! wake-up, an inter-processor interrupt and, in a VM, an exit from the
//! halted vCPU, paid partly by the *sending* process. On a machine shared
//! with a CPU-bound client (redis-benchmark on 2 cores) that cost lands on
//! the client and caps throughput at -P 1 even though the server is mostly
//! idle. Spinning a few tens of microseconds after the last request keeps
//! the executor awake through a burst, as Linux's haltpoll and adaptive
//! mutexes do, and costs nothing once traffic stops (the task then sleeps
//! until the next request wakes it the normal way). 0 turns it off.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shared::Shared;

thread_local! {
    /// Batches served on this executor (bumped by connections).
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// The poller sleeps and wants to hear of the next batch.
    static PARKED: Cell<bool> = const { Cell::new(false) };
    static WAKE: Rc<tokio::sync::Notify> = Rc::new(tokio::sync::Notify::new());
    /// Connections waiting for the disk (`appendfsync always`).
    static IO_WAITERS: Cell<usize> = const { Cell::new(0) };
}

/// While alive, a connection waits for an fsync: the poller stops
/// spinning, since no batch can finish before the disk answers and the
/// fsync thread and the clients need the cores.
pub struct IoWait(());

pub fn io_wait() -> IoWait {
    IO_WAITERS.with(|w| w.set(w.get() + 1));
    IoWait(())
}

impl Drop for IoWait {
    fn drop(&mut self) {
        IO_WAITERS.with(|w| w.set(w.get().saturating_sub(1)));
    }
}

/// Called by a connection after each batch it served: cheap when the
/// poller is already spinning (two thread-local accesses).
#[inline]
pub fn activity() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
    if PARKED.with(|p| p.replace(false)) {
        WAKE.with(|w| w.notify_one());
    }
}

/// How long to keep polling after the last batch, adapted as Linux's
/// cpuidle-haltpoll adapts its window: a sleep that ended sooner than the
/// longest window would have been cheaper spent polling, so the window
/// doubles (up to `max`); a long sleep halves it (down to `base`). Steady
/// heavy traffic thus keeps the executor awake through the gaps between
/// a client's bursts, while sparse traffic costs at most `base` per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub now: Duration,
    pub base: Duration,
    pub max: Duration,
}

impl Window {
    pub fn new(base: Duration, max: Duration) -> Window {
        let max = max.max(base);
        Window {
            now: base,
            base,
            max,
        }
    }

    /// After a sleep of `slept` that followed a spin which found nothing.
    pub fn after_sleep(&mut self, slept: Duration) {
        self.now = if slept <= self.max {
            (self.now * 2).clamp(self.base, self.max)
        } else {
            (self.now / 2).clamp(self.base, self.max)
        };
    }
}

/// The poller task of one executor (spawned once per executor).
pub async fn run(shared: Arc<Shared>) {
    let wake = WAKE.with(|w| w.clone());
    let mut shutdown = shared.shutdown_rx();
    let mut window: Option<Window> = None;
    let mut slept_since: Option<Instant> = None;
    loop {
        // Sleep until a connection serves something.
        PARKED.with(|p| p.set(true));
        tokio::select! {
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let (base, max) = {
            let c = shared.config.read();
            (
                Duration::from_micros(c.executor_poll_us()),
                Duration::from_micros(c.executor_poll_max_us()),
            )
        };
        if base.is_zero() {
            // Off: look again in a while (CONFIG SET may turn it on).
            window = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let w = match window.as_mut() {
            Some(w) if w.base == base && w.max == max.max(base) => w,
            _ => window.insert(Window::new(base, max)),
        };
        if let Some(t) = slept_since.take() {
            w.after_sleep(t.elapsed());
        }
        // Spin while batches keep coming: each yield makes the runtime poll
        // the sockets without blocking instead of parking the thread.
        let mut seen = ACTIVITY.with(|a| a.get());
        let mut last = Instant::now();
        let mut timed_out = false;
        loop {
            tokio::task::yield_now().await;
            if IO_WAITERS.with(|w| w.get()) > 0 {
                break;
            }
            let now = Instant::now();
            let a = ACTIVITY.with(|a| a.get());
            if a != seen {
                seen = a;
                last = now;
            } else if now.duration_since(last) > w.now {
                timed_out = true;
                break;
            }
        }
        // Only a sleep after an idle spin says whether spinning longer
        // would have paid (one during an fsync says nothing).
        slept_since = timed_out.then(Instant::now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_wakes_the_parked_poller_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let wake = WAKE.with(|w| w.clone());
            // Spinning (not parked): batches only count.
            let before = ACTIVITY.with(|a| a.get());
            activity();
            assert_eq!(ACTIVITY.with(|a| a.get()), before + 1);
            let quiet = tokio::time::timeout(Duration::from_millis(20), wake.notified()).await;
            assert!(quiet.is_err(), "no wake-up while the poller spins");
            // Parked: the next batch wakes it, and un-parks it.
            PARKED.with(|p| p.set(true));
            activity();
            assert!(!PARKED.with(|p| p.get()));
            let woke = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            assert!(woke.is_ok(), "the parked poller is woken");
        });
    }

    #[test]
    fn fsync_waiters_are_counted_while_they_wait() {
        let n = || IO_WAITERS.with(|w| w.get());
        let a = io_wait();
        let b = io_wait();
        assert_eq!(n(), 2);
        drop(a);
        assert_eq!(n(), 1);
        drop(b);
        assert_eq!(n(), 0);
    }

    #[test]
    fn the_window_grows_on_short_sleeps_and_shrinks_on_long_ones() {
        let us = Duration::from_micros;
        let mut w = Window::new(us(50), us(400));
        w.after_sleep(us(120));
        assert_eq!(w.now, us(100));
        for _ in 0..5 {
            w.after_sleep(us(300));
        }
        assert_eq!(w.now, us(400), "capped at max");
        w.after_sleep(Duration::from_millis(5));
        assert_eq!(w.now, us(200));
        for _ in 0..5 {
            w.after_sleep(Duration::from_secs(1));
        }
        assert_eq!(w.now, us(50), "never below base");
        assert_eq!(
            Window::new(us(50), us(10)).max,
            us(50),
            "max is at least base"
        );
    }
}
