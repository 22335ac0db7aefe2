//! A counting global allocator: `used_memory` (INFO, maxmemory) is the sum
//! of the sizes the program *requested* and has not freed — the `Layout`
//! sizes passed to the allocator — counted exactly rather than estimated
//! from the data.
//!
//! That is less than the allocator holds for them. glibc's malloc, which
//! this forwards to, puts an 8-byte header before every chunk and rounds
//! chunks up to 16 bytes (32 at least): a 24-byte request holds 32 bytes,
//! a 25-byte one 48. Nor does it count freed memory the allocator keeps
//! (fragmentation, per-thread arenas). Redis's `used_memory` is not
//! comparable either way: it adds up jemalloc's *usable* sizes (each
//! request rounded up to its size class, no header). So comparisons with
//! Redis's memory go by resident memory (`used_memory_rss`, or the peak
//! RSS `VmHWM` that bench/scripts/compare.py reads): that is what the
//! memory goals in docs/BENCHMARKS.md are judged on. Counting usable sizes
//! (`malloc_usable_size` on every allocation and free) would close most of
//! the gap for maxmemory, at the cost of a call per allocation and free.
//!
//! The binary installs it with `#[global_allocator]`; libraries and tests
//! that don't simply see zero.
//!
//! Besides the process total, every byte is also charged to the *account*
//! of the tenant whose work is running on the thread (see [`Scoped`] and
//! [`with_account`]): that is what per-tenant `maxmemory` compares against. The
//! attribution is by scope, not per allocation (a tag per allocation
//! would cost memory on every small value), so it is exact only while
//! memory is freed in the scope that allocated it. Tenant tasks keep that
//! rule: keyspaces are touched only by their tenant's tasks and helper
//! threads (which enter the tenant's scope), and what crosses scopes — task
//! cells, sockets, a connection's buffered input when it moves to another
//! tenant — is allocated and freed outside any scope ([`unscoped`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Bytes charged to one tenant.
#[derive(Debug, Default)]
pub struct Account {
    bytes: AtomicIsize,
}

impl Account {
    /// Bytes the tenant's work holds now (never negative: a free charged to
    /// a scope that did not allocate it can only make this read low).
    pub fn used(&self) -> u64 {
        self.bytes.load(Relaxed).max(0) as u64
    }
}

thread_local! {
    /// The account charged for this thread's allocations (null: none).
    /// Const-initialised and without a destructor, so reading it from the
    /// allocator never allocates and works until the thread is gone.
    static SCOPE: Cell<*const Account> = const { Cell::new(std::ptr::null()) };
}

#[inline]
fn charge(delta: isize) {
    let _ = SCOPE.try_with(|s| {
        let p = s.get();
        if !p.is_null() {
            // SAFETY: SCOPE is non-null only inside `with_account`, whose
            // stack frame holds an `Arc` to the account for as long as the
            // pointer is installed; scopes are entered and left only through
            // closures (`with_account`, `unscoped`), so they nest strictly
            // and each restores, even on unwind, a pointer whose frame is
            // still alive.
            unsafe { (*p).bytes.fetch_add(delta, Relaxed) };
        }
    });
}

/// Puts back the scope that was current when it was made (also when a
/// panic unwinds). Private: only the closure APIs below create it, which
/// is what keeps scopes strictly nested.
struct Restore(*const Account);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = SCOPE.try_with(|s| s.set(self.0));
    }
}

/// Runs `f` with this thread's allocations charged to `acct`.
pub fn with_account<R>(acct: &Arc<Account>, f: impl FnOnce() -> R) -> R {
    let keep = acct.clone();
    let _restore = Restore(SCOPE.with(|s| s.replace(Arc::as_ptr(&keep))));
    let r = f();
    drop(_restore);
    drop(keep);
    r
}

/// Runs `f` with no account charged (for memory that crosses scopes).
pub fn unscoped<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(SCOPE.with(|s| s.replace(std::ptr::null())));
    f()
}

/// A value made and freed outside any account, held by a tenant's task on
/// the service's behalf (a piece of the replication stream on its way to
/// a replica: Redis does not count replication buffers against
/// `maxmemory` either). Free it anywhere: its drop leaves the scope.
pub struct Unaccounted<T>(Option<T>);

impl<T> Unaccounted<T> {
    /// Runs `make` outside any account and keeps what it returns.
    pub fn new(make: impl FnOnce() -> T) -> Self {
        Unaccounted(Some(unscoped(make)))
    }

    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()
    }
}

impl<T> Drop for Unaccounted<T> {
    fn drop(&mut self) {
        let v = self.0.take();
        unscoped(|| drop(v));
    }
}

pin_project_lite::pin_project! {
    /// A future whose polls are charged to an account: how a tenant's
    /// tasks run. An async fn drops its locals inside its last poll, so
    /// what the task allocated is freed inside the scope too; the task cell
    /// holding the future is allocated and freed outside any scope (see
    /// `Tenant::spawn`).
    pub struct Scoped<F> {
        acct: Arc<Account>,
        #[pin]
        fut: F,
    }
}

/// Wraps `fut` so that its work is charged to `acct`.
pub fn scoped<F: Future>(acct: &Arc<Account>, fut: F) -> Scoped<F> {
    Scoped {
        acct: acct.clone(),
        fut,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let fut = this.fut;
        with_account(this.acct, || fut.poll(cx))
    }
}

pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counters are side data.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (layout has non-zero size per caller).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Relaxed);
            charge(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (ptr came from this allocator with layout).
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Relaxed);
        charge(-(layout.size() as isize));
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Relaxed);
            charge(layout.size() as isize);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (ptr/layout from this allocator).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                ALLOCATED.fetch_add(new_size - layout.size(), Relaxed);
            } else {
                ALLOCATED.fetch_sub(layout.size() - new_size, Relaxed);
            }
            charge(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Bytes currently allocated through the counting allocator, as requested
/// (not rounded up to what the allocator hands out; see the module docs).
pub fn allocated() -> usize {
    ALLOCATED.load(Relaxed)
}

/// Highest `allocated()` seen by [`sample_peak`].
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}

/// Updates the peak: after every command, as Redis 7 does in `call()`
/// (a peak one command makes and the next frees, `DEBUG POPULATE` then
/// `FLUSHDB`, would slip between two runs of the cron), and from the cron.
/// Only a new peak writes the shared line.
pub fn sample_peak() {
    let now = allocated();
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

/// Resident set size from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Peak RSS (VmHWM) in bytes.
pub fn peak_rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn total_system_memory() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        let a = Arc::new(Account::default());
        let b = Arc::new(Account::default());
        // The library's tests run without the counting allocator: charge
        // by hand to check the bookkeeping of the scope pointer.
        with_account(&a, || {
            charge(10);
            with_account(&b, || {
                charge(5);
                unscoped(|| charge(100));
            });
            charge(-3);
        });
        charge(1000);
        assert_eq!(a.used(), 7);
        assert_eq!(b.used(), 5);
        with_account(&b, || charge(-50));
        assert_eq!(b.used(), 0, "a negative balance reads as zero");
        // A panic inside a scope still restores the outer one.
        let r = std::panic::catch_unwind(|| with_account(&a, || -> () { panic!("x") }));
        assert!(r.is_err());
        charge(1000);
        assert_eq!(a.used(), 7, "no scope left installed after the panic");
    }

    #[test]
    fn an_unaccounted_value_is_made_and_freed_outside_the_scope() {
        /// Frees (by hand, as above) what its maker charged.
        struct Charged(isize);
        impl Drop for Charged {
            fn drop(&mut self) {
                charge(-self.0);
            }
        }
        let a = Arc::new(Account::default());
        with_account(&a, || {
            let piece = Unaccounted::new(|| {
                charge(4096);
                Charged(4096)
            });
            charge(7);
            assert_eq!(a.used(), 7, "made inside the scope's account");
            drop(piece);
        });
        assert_eq!(a.used(), 7, "freed inside the scope's account");
    }
}
