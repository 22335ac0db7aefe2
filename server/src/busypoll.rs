//! Adaptive busy polling: while requests keep arriving close together, an
//! executor polls its sockets for a while after the last one instead of
//! going to sleep (`executor-poll-us`, adapted up to
//! `executor-poll-max-us`, see [`Window`]) — but only while that polling
//! pays for itself ([`Budget`]).
//!
//! Why poll: an executor that answers faster than its clients send sleeps
//! between requests, and every request then has to wake it — a futex/epoll
//! wake-up, an inter-processor interrupt and, in a VM, an exit from the
//! halted vCPU, paid partly by the *sending* process. On a machine shared
//! with a CPU-bound client (redis-benchmark on 2 cores) that cost lands on
//! the client and caps throughput at -P 1 even though the server is mostly
//! idle. Spinning a few tens of microseconds after the last request keeps
//! the executor awake through a burst, as Linux's haltpoll and adaptive
//! mutexes do.
//!
//! Why not always: spinning is CPU time, and on shared CPUs (Fly's
//! `shared-cpu` machines) CPU time is the budget a machine is throttled
//! on. A connection that sends a request every 500 µs made the executor
//! spin a whole window after each one: 3-7x redis-server's CPU for the same
//! requests. A single client that waits for each reply (`-c 1`) kept the
//! executor spinning through each of its round trips: 1.5x. Spinning
//! through a gap costs the gap; sleeping through it costs a wake-up
//! ([`Budget::WAKE_COST`], about 5 µs of CPU on the VM measured). So the
//! poller keeps an account of what polling cost lately — the time spun
//! idle against the wake-ups it saved by catching the next batch — and
//! stops polling, going to sleep at once after each batch, when spinning
//! costs more than the wake-ups it saves ([`Budget`]). Gaps far beyond the
//! window make that happen within a few batches (each costs a whole window
//! and saves nothing); so do gaps within the window but longer than a
//! wake-up (one client waiting for each reply). Many connections leave
//! gaps of a few microseconds and keep it polling. While off, the poller
//! tries again now and then ([`Budget::wake_after`]), less often each
//! time a try fails; meanwhile a batch costs a counter decrement.
//!
//! `executor-poll-us 0` turns polling off. An idle server never spins, and
//! spinning stops while connections wait for an fsync.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shared::Shared;

thread_local! {
    /// Batches served on this executor (bumped by connections).
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// The poller sleeps and wants to hear of the n-th next batch (0: it
    /// is not waiting for one).
    static WAKE_IN: Cell<u32> = const { Cell::new(0) };
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

/// Called by a connection after each batch it served: two thread-local
/// accesses, unless this is the batch the sleeping poller waits for.
#[inline]
pub fn activity() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
    let n = WAKE_IN.with(|w| w.get());
    if n != 0 {
        WAKE_IN.with(|w| w.set(n - 1));
        if n == 1 {
            WAKE.with(|w| w.notify_one());
        }
    }
}

/// How long to keep polling after the last batch, adapted as Linux's
/// cpuidle-haltpoll adapts its window: a sleep that ended sooner than the
/// longest window would have been cheaper spent polling, so the window
/// doubles (up to `max`); a long sleep halves it (down to `base`). Steady
/// heavy traffic thus keeps the executor awake through the gaps between
/// a client's bursts, while sparse traffic costs at most `base` per batch
/// (and nothing once [`Budget`] has turned polling off).
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

/// Whether polling pays for itself, judged from what it cost lately.
///
/// While polling, every gap between batches is a cycle: the poller spins
/// through it (`spun`), and either a batch arrives within the window —
/// one wake-up saved — or the window runs out and the executor goes to
/// sleep anyway. Spinning pays while it costs less than the wake-ups it
/// saves: the budget keeps moving averages (over about the last
/// [`Budget::AVG_CYCLES`] gaps) of the time spun per gap and of the share
/// of gaps caught, and polling goes on while
/// `spun ≤ WAKE_COST × caught`:
///
/// - gaps far beyond the window (a client sending every 500 µs against a
///   50 µs window) each cost a whole window and save nothing — polling
///   stops after [`Budget::MIN_CYCLES`] of them;
/// - gaps within the window but longer than a wake-up (one client waiting
///   for each reply, ~10 µs between a reply and the next request) cost
///   more than they save — polling stops too;
/// - many connections leave gaps of a few microseconds — polling goes on.
///
/// Once off, the poller sleeps right after each batch; after `probe`
/// further batches it polls again for a trial, and each trial that fails
/// doubles `probe` (from [`Budget::PROBE_FIRST`] up to
/// [`Budget::PROBE_MAX`] batches), so a workload that changes is noticed
/// while one that stays sparse costs a few windows per thousand batches.
/// Only a long stint of polling that clearly paid (at half the wake-up
/// cost) brings trials back to frequent when it ends, so traffic whose
/// gaps sit near a wake-up's cost does not flap between the two.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Moving averages over recent gaps: µs spun per gap, and the share of
    /// gaps that ended in a batch within the window.
    spun: f64,
    caught: f64,
    /// Gaps counted since polling (re)started, and their sums: µs spun,
    /// gaps caught.
    cycles: u32,
    stint_spun: f64,
    stint_caught: f64,
    /// Off: batches left before the next trial.
    off_for: Option<u32>,
    /// Batches between trials (doubles per failed trial).
    probe: u32,
    /// What a wake-up costs, CPU µs (`executor-poll-wake-ns`).
    wake_cost: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    /// What sleeping and being woken costs an executor thread, in CPU µs
    /// (the epoll wait, two context switches, the wake-up path). Measured
    /// on the project's 2-core VM with bench/scripts/cpu.py: at `-c 1`, a
    /// request cost 13.7 µs of CPU sleeping after each reply and 19.9 µs
    /// spinning through every gap (a 20 µs round trip at 49,600 requests
    /// a second, about half of it the gap), so a wake-up costs about 4-5.
    pub const WAKE_COST: f64 = 5.0;
    /// Gaps seen before the first verdict (one slow gap is no trend).
    pub const MIN_CYCLES: u32 = 4;
    /// The averages' horizon, in gaps.
    pub const AVG_CYCLES: u32 = 64;
    /// A stint of polling this many gaps long that spun at most half a
    /// wake-up per gap caught has proven itself: when it ends, trials
    /// start again from [`Budget::PROBE_FIRST`].
    pub const PROVEN_CYCLES: u32 = 256;
    pub const PROBE_FIRST: u32 = 16;
    pub const PROBE_MAX: u32 = 1024;

    /// A budget that starts by polling, weighing spinning against
    /// [`Budget::WAKE_COST`].
    pub fn new() -> Budget {
        Budget::with_wake_cost(Budget::WAKE_COST)
    }

    /// A budget that weighs spinning against wake-ups of `wake_cost` µs.
    pub fn with_wake_cost(wake_cost: f64) -> Budget {
        Budget {
            spun: 0.0,
            caught: 0.0,
            cycles: 0,
            stint_spun: 0.0,
            stint_caught: 0.0,
            off_for: None,
            probe: Budget::PROBE_FIRST,
            wake_cost,
        }
    }

    /// Whether polling is on (or on trial).
    pub fn polling(&self) -> bool {
        self.off_for.is_none()
    }

    /// One gap while polling: `spun` spinning, ended by a batch (`caught`)
    /// or by the window running out.
    pub fn cycle(&mut self, spun: Duration, caught: bool) {
        self.cycles = self.cycles.saturating_add(1);
        let spun = spun.as_secs_f64() * 1e6;
        let caught = if caught { 1.0 } else { 0.0 };
        self.stint_spun += spun;
        self.stint_caught += caught;
        // A plain mean over the first gaps, then an exponential average.
        let n = f64::from(self.cycles.min(Budget::AVG_CYCLES));
        self.spun += (spun - self.spun) / n;
        self.caught += (caught - self.caught) / n;
    }

    /// Whether the polling since it (re)started still pays (always, for
    /// the first [`Budget::MIN_CYCLES`] gaps).
    pub fn pays(&self) -> bool {
        self.cycles < Budget::MIN_CYCLES || self.spun <= self.wake_cost * self.caught
    }

    /// Turns polling off (when [`Budget::pays`] said no): batches are
    /// served without polling until [`Budget::wake_after`] says.
    pub fn stop(&mut self) {
        if self.off_for.is_some() {
            return;
        }
        let proven = self.cycles >= Budget::PROVEN_CYCLES
            && self.stint_spun <= 0.5 * self.wake_cost * self.stint_caught;
        self.probe = if proven {
            Budget::PROBE_FIRST
        } else {
            (self.probe * 2).min(Budget::PROBE_MAX)
        };
        self.off_for = Some(self.probe);
    }

    /// After which batch the sleeping poller should be woken: the next
    /// one while polling is on, else the one that starts the next trial.
    pub fn wake_after(&self) -> u32 {
        self.off_for.unwrap_or(1)
    }

    /// The poller was woken ([`Budget::wake_after`] batches later): it
    /// polls after this batch, on trial if polling was off (with fresh
    /// averages, judged after MIN_CYCLES gaps again).
    pub fn on_wake(&mut self) {
        if self.off_for.take().is_some() {
            *self = Budget {
                probe: self.probe,
                ..Budget::with_wake_cost(self.wake_cost)
            };
        }
    }
}

/// What the poller reads from the configuration before each spin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// `executor-poll-us` (zero: never spin).
    pub base: Duration,
    /// `executor-poll-max-us`.
    pub max: Duration,
    /// `executor-poll-wake-ns`, in µs.
    pub wake_cost: f64,
    /// How many executors may spin at once (`executor-poll-spinners`,
    /// resolved).
    pub spinners: usize,
}

/// Executors spinning right now, process-wide.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// A place among the executors allowed to spin at once, held while
/// spinning.
struct Spinner(&'static AtomicUsize);

impl Spinner {
    /// Takes a place if fewer than `limit` executors spin (as counted by
    /// `count`: [`SPINNING`] outside tests).
    fn try_take(count: &'static AtomicUsize, limit: usize) -> Option<Spinner> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Spinner(count))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `executor-poll-spinners` resolved: 0 means half the cores, at least one.
pub fn spinners_allowed(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The poller task of one executor (spawned once per executor).
pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_rx();
    let params = move || {
        let c = shared.config.read();
        Params {
            base: Duration::from_micros(c.executor_poll_us()),
            max: Duration::from_micros(c.executor_poll_max_us()),
            wake_cost: c.executor_poll_wake_ns() as f64 / 1000.0,
            spinners: spinners_allowed(c.executor_poll_spinners()),
        }
    };
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    poll_loop(params, stop).await;
}

/// What [`run`] does, with the configuration and the shutdown signal
/// passed in.
async fn poll_loop(params: impl Fn() -> Params, stop: impl std::future::Future) {
    let wake = WAKE.with(|w| w.clone());
    let mut stop = std::pin::pin!(stop);
    let mut window: Option<Window> = None;
    let mut budget = Budget::new();
    let mut slept_since: Option<Instant> = None;
    loop {
        // Sleep until a connection serves something (or, while polling does
        // not pay, until the batch that starts the next trial).
        WAKE_IN.with(|n| n.set(budget.wake_after()));
        tokio::select! {
            _ = wake.notified() => {}
            _ = &mut stop => return,
        }
        WAKE_IN.with(|n| n.set(0));
        let p = params();
        if p.base.is_zero() {
            // Off: look again in a while (CONFIG SET may turn it on).
            window = None;
            slept_since = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if budget.wake_cost != p.wake_cost {
            budget = Budget::with_wake_cost(p.wake_cost);
        }
        let w = match window.as_mut() {
            Some(w) if w.base == p.base && w.max == p.max.max(p.base) => w,
            _ => window.insert(Window::new(p.base, p.max)),
        };
        if let Some(t) = slept_since.take() {
            w.after_sleep(t.elapsed());
        }
        // As many executors as may spin do already: sleep until the next
        // batch instead (the budget is not charged; nothing was spun).
        let Some(_spinner) = Spinner::try_take(&SPINNING, p.spinners) else {
            continue;
        };
        budget.on_wake();
        // Spin while batches keep coming: each yield makes the runtime poll
        // the sockets without blocking (and run what they woke) instead of
        // parking the thread. Rounds in which no batch was served add up to
        // a gap.
        let mut seen = ACTIVITY.with(|a| a.get());
        let mut last = Instant::now();
        let mut spun = Duration::ZERO;
        let mut timed_out = false;
        loop {
            tokio::task::yield_now().await;
            if IO_WAITERS.with(|w| w.get()) > 0 {
                break;
            }
            let now = Instant::now();
            let round = now.duration_since(last);
            last = now;
            let a = ACTIVITY.with(|a| a.get());
            if a != seen {
                seen = a;
                if !spun.is_zero() {
                    // A gap caught: a wake-up saved, for `spun`.
                    budget.cycle(spun, true);
                    spun = Duration::ZERO;
                    if !budget.pays() {
                        budget.stop();
                        break;
                    }
                }
            } else {
                spun += round;
                if spun > w.now {
                    // Nothing within the window: spun for nothing.
                    budget.cycle(spun, false);
                    if !budget.pays() {
                        budget.stop();
                    }
                    timed_out = true;
                    break;
                }
            }
        }
        // Only a sleep after an idle spin says whether spinning longer
        // would have paid (one during an fsync says nothing).
        slept_since = (timed_out && budget.polling()).then(Instant::now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_sleeping_poller_is_woken_by_the_batch_it_waits_for() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let wake = WAKE.with(|w| w.clone());
            let quiet = || tokio::time::timeout(Duration::from_millis(20), wake.notified());
            // Spinning (not waiting): batches only count.
            let before = ACTIVITY.with(|a| a.get());
            activity();
            assert_eq!(ACTIVITY.with(|a| a.get()), before + 1);
            assert!(quiet().await.is_err(), "no wake-up while the poller spins");
            // Waiting for the next batch: it wakes the poller, once.
            WAKE_IN.with(|n| n.set(1));
            activity();
            assert_eq!(WAKE_IN.with(|n| n.get()), 0);
            let woke = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            assert!(woke.is_ok(), "the poller is woken");
            activity();
            assert!(quiet().await.is_err(), "and only once");
            // Polling off, the next trial 3 batches away: the first two
            // only count down.
            WAKE_IN.with(|n| n.set(3));
            activity();
            activity();
            assert!(quiet().await.is_err(), "no wake-up before the trial");
            activity();
            let woke = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            assert!(woke.is_ok(), "the trial's batch wakes the poller");
        });
    }

    #[test]
    fn no_more_executors_spin_at_once_than_allowed() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let a = Spinner::try_take(&COUNT, 2).expect("first place");
        let b = Spinner::try_take(&COUNT, 2).expect("second place");
        assert!(Spinner::try_take(&COUNT, 2).is_none(), "both places taken");
        drop(a);
        let c = Spinner::try_take(&COUNT, 2).expect("a place freed");
        drop(b);
        drop(c);
        assert_eq!(COUNT.load(Ordering::Acquire), 0);
        assert_eq!(spinners_allowed(3), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = spinners_allowed(0);
        assert!(
            auto >= 1 && (cores < 2 || auto < cores),
            "{auto} of {cores}"
        );
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

    #[test]
    fn gaps_shorter_than_a_wake_up_keep_polling() {
        // Many connections: gaps of a few µs, now and then a window that
        // runs out.
        let mut b = Budget::new();
        for i in 0..10_000 {
            if i % 100 == 99 {
                b.cycle(us(50), false);
            } else {
                b.cycle(us(2), true);
            }
            assert!(b.pays(), "gap {i}");
        }
        assert!(b.polling());
    }

    #[test]
    fn gaps_far_beyond_the_window_stop_polling_within_a_few_batches() {
        // One connection every 500 µs, a 50 µs window: every spin runs out.
        let mut b = Budget::new();
        let mut polled = 0;
        for _ in 0..Budget::MIN_CYCLES + 1 {
            if b.wake_after() != 1 {
                break;
            }
            b.on_wake();
            polled += 1;
            b.cycle(us(50), false);
            if !b.pays() {
                b.stop();
            }
        }
        assert_eq!(polled, Budget::MIN_CYCLES, "stops at the first verdict");
        assert!(!b.polling());
        assert_eq!(
            b.wake_after(),
            2 * Budget::PROBE_FIRST,
            "sleeps through the next batches"
        );
    }

    #[test]
    fn gaps_within_the_window_but_longer_than_a_wake_up_stop_polling() {
        // -c 1: the client's next request comes 12 µs after each reply,
        // always within a 50 µs window: each gap caught costs 12 µs of
        // spinning to save a 5 µs wake-up.
        let mut b = Budget::new();
        let mut n = 0;
        while b.pays() {
            b.cycle(us(12), true);
            n += 1;
        }
        assert_eq!(n, Budget::MIN_CYCLES);
        // Gaps just under a wake-up's cost stay on.
        let mut b = Budget::new();
        for _ in 0..1000 {
            b.cycle(us(4), true);
        }
        assert!(b.pays());
    }

    #[test]
    fn while_off_trials_come_less_often_each_time_one_fails() {
        let mut b = Budget::new();
        let fail = |b: &mut Budget| {
            for _ in 0..Budget::MIN_CYCLES {
                b.cycle(us(50), false);
            }
            assert!(!b.pays());
            b.stop();
        };
        fail(&mut b);
        let mut gaps = Vec::new();
        for _ in 0..10 {
            // The batch that starts the next trial.
            gaps.push(b.wake_after());
            b.on_wake();
            assert!(b.polling(), "on trial");
            fail(&mut b);
        }
        let f = Budget::PROBE_FIRST;
        assert_eq!(gaps[..4], [2 * f, 4 * f, 8 * f, 16 * f]);
        assert_eq!(*gaps.last().unwrap(), Budget::PROBE_MAX, "capped");
        // A trial that pays turns polling back on for good; when that
        // stint ends after proving itself, trials start frequent again.
        assert!(!b.polling());
        b.on_wake();
        for _ in 0..Budget::PROVEN_CYCLES * 4 {
            b.cycle(us(2), true);
            assert!(b.pays());
        }
        assert!(b.polling());
        // The traffic stops: the windows run out until polling stops.
        while b.pays() {
            b.cycle(us(50), false);
        }
        b.stop();
        assert_eq!(b.wake_after(), Budget::PROBE_FIRST);
        // A long stint that only just paid does not: gaps near a wake-up's
        // cost keep trials rare.
        b.on_wake();
        for _ in 0..Budget::PROVEN_CYCLES * 2 {
            b.cycle(us(4), true);
        }
        while b.pays() {
            b.cycle(us(6), true);
        }
        b.stop();
        assert_eq!(b.wake_after(), 2 * Budget::PROBE_FIRST);
    }

    /// Thread CPU time (the poller's cost shows up here).
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn the_poller_stops_spinning_on_sparse_batches_and_spins_on_dense_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let poller = tokio::task::spawn_local(poll_loop(
                || Params {
                    base: us(200),
                    max: us(200),
                    wake_cost: Budget::WAKE_COST,
                    spinners: 64,
                },
                rx,
            ));
            // Sparse: a batch every 2 ms for 0.4 s. Spinning 200 µs after
            // each would take 10% of the thread; the poller must stop
            // after a few and try again only now and then.
            let cpu = thread_cpu();
            let t = Instant::now();
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                activity();
            }
            let sparse = (thread_cpu() - cpu).as_secs_f64() / t.elapsed().as_secs_f64();
            assert!(
                sparse < 0.05,
                "the thread was busy {:.1}% of the time",
                sparse * 100.0
            );
            // Dense: batches that take 20 µs each, back to back (a
            // yield between them). The next trial (at most PROBE_MAX
            // batches away) turns polling on, and it stays on: the poller
            // no longer sleeps between batches.
            let mut parked = 0;
            for i in 0..Budget::PROBE_MAX + 2000 {
                let w = Instant::now();
                while w.elapsed() < us(20) {
                    std::hint::spin_loop();
                }
                activity();
                tokio::task::yield_now().await;
                if i > Budget::PROBE_MAX + 100 && WAKE_IN.with(|n| n.get()) != 0 {
                    parked += 1;
                }
            }
            assert!(
                parked < 20,
                "the poller slept after {parked} of 1900 dense batches"
            );
            let _ = tx.send(());
            poller.await.expect("poller");
        });
    }
}
