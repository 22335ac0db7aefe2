//! Long scripts: suspended, not stopped, so one database's script never
//! holds up the other databases on its executor, and its own clients see
//! what Redis shows them.
//!
//! An executor thread serves many databases. A script runs on it to its
//! end, atomically; were it run on the thread's own stack, every other
//! database there would wait for it. So a connection that runs scripts
//! runs its batches in a coroutine ([`suspendable`], a stack of its own:
//! `corosensei`), and the Lua hook ([`Slice::due`]) suspends a script
//! every `script-time-slice` microseconds: the executor serves
//! everything else, then resumes it. The script keeps its database
//! borrowed meanwhile (nothing else of it runs: still atomic).
//!
//! The database's other tasks (its connections, its cron, its
//! replication links, its saves) are [`Gated`]: they are not polled
//! while it is busy, so none finds it borrowed; only a connection's wait
//! for input is [`open`] (what arrives is answered by `conn::while_busy`).
//!
//! The database's own clients wait, as Redis's do, until the script has
//! run `busy-reply-threshold`; after that they get `-BUSY` to everything
//! but what Redis still serves then ([`answer`]): `SCRIPT KILL` /
//! `FUNCTION KILL` stop a script that has not written, `FUNCTION STATS`
//! shows the running function, `SHUTDOWN NOSAVE` stops the server, the
//! transaction commands keep their state. A suspended script is found by
//! its database ([`running`]), and ends as Redis's do: at its end, or at
//! the next hook after a KILL, with an error pcall cannot catch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::client::Session;
use crate::resp::Reply;
use crate::tenant::Tenant;

/// A coroutine's stack: what the commands a script runs and Lua's C
/// calls (at most 200 deep, LUAI_MAXCCALLS) need, as an executor thread
/// has (2 MB). Only the pages touched take memory.
const STACK_SIZE: usize = 2 << 20;

/// Stacks kept for reuse per executor (a connection that scripts takes
/// one per batch).
const KEPT_STACKS: usize = 8;

/// What a running script's database shows the other tasks of its
/// executor while the script is suspended.
pub struct Busy {
    pub started: Instant,
    /// A library's function (FCALL): its name and the command that
    /// called it; `None` for EVAL's scripts.
    pub function: Option<(String, Vec<Vec<u8>>)>,
    /// The script has called a write command: it cannot be killed.
    pub wrote: Cell<bool>,
    /// SCRIPT KILL / FUNCTION KILL asked for its end.
    pub kill: Cell<bool>,
    /// The database's libraries and functions (FUNCTION STATS).
    pub libraries: (usize, usize),
    /// The database's memory account (a new connection's task is
    /// charged to it).
    pub mem: std::sync::Arc<crate::alloc::Account>,
    /// Errors sent meanwhile: counted in the database's statistics once
    /// the script ends ([`count_refused`]).
    pub refused: RefCell<Vec<Refused>>,
    /// The database's replication when the script was first suspended:
    /// what a probe (a planned handoff, the dashboard) is answered
    /// meanwhile. Nothing of it moves while the script holds the
    /// database (its replication links are [`Gated`]), and a script that
    /// never ends (one that wrote) must not hold up a handoff.
    pub repl: crate::metrics::ReplStatus,
}

thread_local! {
    /// The yielder of the coroutine running now on this thread (null on
    /// the thread's own stack): the Lua hook suspends through it.
    static CURRENT: Cell<*const Yielder<(), ()>> = const { Cell::new(std::ptr::null()) };
    /// Suspended scripts, by their database (`Tenant`'s address).
    static RUNNING: RefCell<HashMap<usize, Rc<Busy>>> = RefCell::new(HashMap::new());
    /// Woken whenever a coroutine ends (a database borrowed by one is
    /// free again).
    static DONE: Rc<tokio::sync::Notify> = Rc::new(tokio::sync::Notify::new());
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
    /// The gate of the task being polled.
    static GATE: Cell<Option<Rc<GateState>>> = const { Cell::new(None) };
    /// Gated tasks waiting for a database to be free again.
    static WAITERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// What a [`Gated`] task says of itself.
#[derive(Default)]
struct GateState {
    /// It drives the coroutine that holds its database.
    driving: Cell<bool>,
    /// It waits somewhere that touches no database ([`open`]).
    open: Cell<bool>,
}

/// A database's task that is not polled while a script of the database
/// is suspended (unless it is the one driving it, or [`open`]).
pub struct Gated<F> {
    key: usize,
    state: Rc<GateState>,
    fut: Pin<Box<F>>,
}

/// Spawns `fut` as a task of the database at `key` ([`key_of`]), its
/// work charged to the database's memory account `mem` (the task cell
/// is not); `open`: it starts [`open`] (see [`spawn_conn`]).
pub fn spawn_gated<F: Future + 'static>(
    mem: &std::sync::Arc<crate::alloc::Account>,
    key: usize,
    fut: F,
    open: bool,
) {
    let state = Rc::new(GateState::default());
    state.open.set(open);
    let f = crate::alloc::scoped(
        mem,
        Gated {
            key,
            state,
            fut: Box::pin(fut),
        },
    );
    crate::alloc::unscoped(|| {
        tokio::task::spawn_local(f);
    });
}

/// Spawns a connection's task for the database, even while a script
/// holds it: the task starts [`open`] (`conn::serve` answers what comes
/// before it can register, then calls [`close`]).
pub fn spawn_conn<F: Future + 'static>(tenant: &RefCell<Tenant>, fut: F) {
    let key = key_of(tenant.as_ptr());
    let mem = match tenant.try_borrow() {
        Ok(t) => t.mem.clone(),
        Err(_) => match running(tenant) {
            Some(b) => b.mem.clone(),
            None => {
                tracing::error!("a database is borrowed outside a script: connection dropped");
                return;
            }
        },
    };
    spawn_gated(&mem, key, fut, true);
}

/// Ends the open start of a task made by [`spawn_conn`].
pub fn close() {
    if let Some(g) = current_gate() {
        g.open.set(false);
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let st = &this.state;
        if !st.driving.get()
            && !st.open.get()
            && RUNNING.with(|r| r.borrow().contains_key(&this.key))
        {
            WAITERS.with(|w| {
                let mut w = w.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
            });
            return Poll::Pending;
        }
        let prev = GATE.with(|g| g.replace(Some(st.clone())));
        let r = this.fut.as_mut().poll(cx);
        GATE.with(|g| g.set(prev));
        r
    }
}

/// The gate of the task being polled.
fn current_gate() -> Option<Rc<GateState>> {
    GATE.with(|g| {
        let v = g.take();
        g.set(v.clone());
        v
    })
}

/// Sets a flag of the current task's gate until dropped (back to what
/// it was).
struct Flag(Option<(Rc<GateState>, bool)>, fn(&GateState) -> &Cell<bool>);

impl Flag {
    fn set(which: fn(&GateState) -> &Cell<bool>) -> Flag {
        let g = current_gate().map(|g| {
            let was = which(&g).replace(true);
            (g, was)
        });
        Flag(g, which)
    }
}

impl Drop for Flag {
    fn drop(&mut self) {
        if let Some((g, was)) = &self.0 {
            (self.1)(g).set(*was);
        }
    }
}

/// Runs `f`, which touches no database borrowed by a script (a wait for
/// input, `conn::while_busy`), even while the task's database is busy.
pub async fn open<F: Future>(f: F) -> F::Output {
    let _open = Flag::set(|g| &g.open);
    f.await
}

/// The key of a database in [`RUNNING`]: its address, which a task gets
/// without borrowing it (`RefCell::as_ptr`) and a script from its `&Tenant`.
pub fn key_of(t: *const Tenant) -> usize {
    t as usize
}

/// The script suspended in this database, if one is.
pub fn running(tenant: &RefCell<Tenant>) -> Option<Rc<Busy>> {
    let k = key_of(tenant.as_ptr());
    RUNNING.with(|r| r.borrow().get(&k).cloned())
}

/// Whether a task may borrow the database now (no coroutine holds it).
pub fn is_free(tenant: &RefCell<Tenant>) -> bool {
    tenant.try_borrow_mut().is_ok()
}

/// Waits until no coroutine holds the database: what a task that must
/// touch it (a timer, a client's cleanup) does before borrowing it.
pub async fn idle(tenant: &RefCell<Tenant>) {
    while !is_free(tenant) {
        let done = DONE.with(|d| d.clone());
        done.notified().await;
    }
}

/// Work waiting for a database to be free, in order.
type Deferred = Vec<Box<dyn FnOnce(&Rc<RefCell<Tenant>>)>>;

thread_local! {
    /// Work for busy databases ([`when_free`]).
    static DEFERRED: RefCell<HashMap<usize, Deferred>> = RefCell::new(HashMap::new());
}

/// Runs `f` (which borrows the database) now, or once no script holds
/// the database; in order with the others deferred for it. For the
/// executor's own tasks, which serve every database and so are not
/// [`Gated`] (a new connection, a catalog change).
pub fn when_free(tenant: &Rc<RefCell<Tenant>>, f: impl FnOnce(&Rc<RefCell<Tenant>>) + 'static) {
    let key = key_of(tenant.as_ptr());
    let queued = DEFERRED.with(|d| d.borrow().contains_key(&key));
    if !queued && is_free(tenant) {
        return f(tenant);
    }
    let first = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        let q = d.entry(key).or_default();
        q.push(Box::new(f));
        q.len() == 1
    });
    if first {
        let t = tenant.clone();
        tokio::task::spawn_local(async move {
            idle(&t).await;
            while let Some(q) = DEFERRED.with(|d| d.borrow_mut().remove(&key)) {
                for f in q {
                    f(&t);
                }
            }
        });
    }
}

/// Waits until the database is free or `until` passes.
pub async fn idle_or(tenant: &RefCell<Tenant>, until: Instant) {
    if !is_free(tenant) {
        let done = DONE.with(|d| d.clone());
        let _ = tokio::time::timeout_at(until.into(), done.notified()).await;
    }
}

/// Runs `f` in a coroutine the Lua hook can suspend; while it is, the
/// executor runs its other tasks.
///
/// `f` may borrow from the caller: it runs to its end before this future
/// completes; were the future dropped before (the executor stopping),
/// the coroutine is never resumed again and its stack is leaked, never
/// freed or unwound (see the SAFETY comment).
pub async fn suspendable<R>(f: impl FnOnce() -> R) -> R {
    let stack = STACKS
        .with(|s| s.borrow_mut().pop())
        .map(Ok)
        .unwrap_or_else(|| DefaultStack::new(STACK_SIZE));
    let stack = match stack {
        Ok(s) => s,
        Err(e) => {
            // No memory for a stack: the script runs here, and is stopped
            // at busy-reply-threshold rather than suspended.
            tracing::warn!("no stack for a script's coroutine ({e}): running it unsuspended");
            return f();
        }
    };
    // SAFETY: `with_stack_unchecked` asks that what `f` borrows stays
    // valid until the coroutine has completed or is dropped. `f`'s
    // borrows outlive this future (it cannot outlive what it borrows),
    // and the coroutine is resumed only from this future's `poll`, so
    // while it runs they are valid. The coroutine is never dropped
    // unfinished: `Unfinished` forgets it instead (dropping would unwind
    // its stack through Lua's C frames), so its code never runs again
    // and what it borrowed is never touched after this future is gone.
    let co = unsafe {
        Coroutine::with_stack_unchecked(stack, move |y: &Yielder<(), ()>, ()| {
            CURRENT.with(|c| c.set(y));
            let r = f();
            CURRENT.with(|c| c.set(std::ptr::null()));
            r
        })
    };
    let mut co = Unfinished(Some(co));
    let mut yielded = false;
    // This task resumes the coroutine: its gate lets it through while the
    // coroutine holds its database.
    let _driving = Flag::set(|g| &g.driving);
    loop {
        let Some(c) = co.0.as_mut() else {
            unreachable!("the coroutine is kept until it returns");
        };
        let step = {
            // Back on this stack, no yielder is current, however
            // `resume` returns (a panic too).
            struct Clear;
            impl Drop for Clear {
                fn drop(&mut self) {
                    CURRENT.with(|c| c.set(std::ptr::null()));
                }
            }
            let _clear = Clear;
            c.resume(())
        };
        match step {
            CoroutineResult::Yield(()) => {
                yielded = true;
                tokio::task::yield_now().await
            }
            CoroutineResult::Return(r) => {
                if let Some(c) = co.0.take() {
                    let stack = c.into_stack();
                    STACKS.with(|s| {
                        let mut s = s.borrow_mut();
                        if s.len() < KEPT_STACKS {
                            s.push(stack);
                        }
                    });
                }
                // (Only a coroutine that was suspended can have kept
                // anyone waiting.)
                if yielded {
                    DONE.with(|d| d.notify_waiters());
                }
                return r;
            }
        }
    }
}

/// A coroutine that may not have finished: forgotten, not dropped.
struct Unfinished<F>(Option<F>);

impl<F> Drop for Unfinished<F> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            // The executor stopping, or a panic out of the coroutine
            // (a bug): either way it never runs again.
            tracing::warn!(
                "a coroutine did not finish (the executor stops, or it panicked); it is abandoned"
            );
            std::mem::forget(c);
            DONE.with(|d| d.notify_waiters());
        }
    }
}

/// Ends a script's busy state however its run ends (a panic too, which
/// would otherwise leave its database's tasks gated for good).
pub(crate) struct Finish<'a> {
    pub slice: &'a Slice,
    pub key: usize,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let _ = self.slice.finish(self.key, true);
    }
}

/// Whether code runs in a coroutine (where a script can be suspended).
pub fn in_coroutine() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}

/// A script's time slices: the hook asks [`Slice::due`] every 1000 Lua
/// instructions.
pub(crate) struct Slice {
    /// When the script started.
    began: Cell<Instant>,
    /// When the script started, or was last resumed.
    from: Cell<Instant>,
    len: Cell<Duration>,
    /// Set at the script's first suspension.
    busy: RefCell<Option<Rc<Busy>>>,
}

impl Default for Slice {
    fn default() -> Self {
        Slice {
            began: Cell::new(Instant::now()),
            from: Cell::new(Instant::now()),
            len: Cell::new(Duration::from_millis(5)),
            busy: RefCell::new(None),
        }
    }
}

impl Slice {
    pub fn start(&self, len: Duration) {
        self.len.set(len);
        let now = Instant::now();
        self.began.set(now);
        self.from.set(now);
    }

    pub fn began(&self) -> Instant {
        self.began.get()
    }

    /// Whether the script's time slice is over.
    pub fn due(&self, now: Instant) -> bool {
        now.duration_since(self.from.get()) >= self.len.get()
    }

    /// Suspends the script (`make` describes it at the first
    /// suspension); returns once it is resumed, true if it was killed
    /// meanwhile.
    pub fn suspend(&self, key: usize, wrote: bool, make: impl FnOnce() -> Busy) -> bool {
        let y = CURRENT.with(|c| c.get());
        if y.is_null() {
            return false;
        }
        let busy = self
            .busy
            .borrow_mut()
            .get_or_insert_with(|| {
                let b = Rc::new(make());
                RUNNING.with(|r| r.borrow_mut().insert(key, b.clone()));
                b
            })
            .clone();
        busy.wrote.set(wrote);
        // SAFETY: `y` was set by this coroutine's own body (in
        // `suspendable`) from the `&Yielder` it was given, which lives as
        // long as the coroutine; CURRENT is non-null only while this
        // coroutine runs (the driver clears it whenever `resume` returns),
        // so this is the running coroutine's yielder.
        unsafe { (*y).suspend(()) };
        CURRENT.with(|c| c.set(y));
        self.from.set(Instant::now());
        busy.kill.get()
    }

    /// The script ended: its database is no longer busy. Returns what
    /// was refused meanwhile, for the statistics.
    pub fn finish(&self, key: usize, wrote: bool) -> Vec<Refused> {
        match self.busy.borrow_mut().take() {
            Some(b) => {
                b.wrote.set(wrote);
                RUNNING.with(|r| r.borrow_mut().remove(&key));
                for w in WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut())) {
                    w.wake();
                }
                b.refused.take()
            }
            None => Vec::new(),
        }
    }
}

/// Whether the request runs Lua (EVAL, FCALL and their forms, or an EXEC
/// of a transaction that queued one): it must run in a coroutine.
pub fn runs_script(s: &Session, args: &[&[u8]]) -> bool {
    args.first().is_some_and(|name| {
        is_script(name)
            || (name.eq_ignore_ascii_case(b"exec")
                && crate::dispatch::queued_any(s, |q| is_script(q.fullname.as_bytes())))
    })
}

/// Whether a command name runs Lua (checked by length first: this is
/// asked of every request of a connection that has not run a script).
fn is_script(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        4 => is(b"eval"),
        5 => is(b"fcall"),
        7 => is(b"evalsha") || is(b"eval_ro"),
        8 => is(b"fcall_ro"),
        10 => is(b"evalsha_ro"),
        _ => false,
    }
}

/// A command a client sent while the database was busy: refused, or one
/// Redis serves then (AUTH, HELLO...), for the statistics.
pub struct Refused {
    /// The request's first two arguments.
    pub command: [Vec<u8>; 2],
    /// The error's code (errorstats); empty when the command succeeded.
    pub code: String,
    /// Refused before it ran (`rejected_calls`), or ran (`calls`, and
    /// `failed_calls` with an error).
    pub rejected: bool,
}

impl Busy {
    /// Records a command that ran meanwhile, and its error if it failed.
    pub fn ran(&self, args: &[&[u8]], error: Option<&str>) {
        match error {
            Some(msg) => self.refused(args, msg, false),
            None => self.refused(args, "", false),
        }
    }

    /// Records an error sent meanwhile, for the statistics.
    pub fn refused(&self, args: &[&[u8]], msg: &str, rejected: bool) {
        let arg = |i: usize| {
            args.get(i)
                .map(|a| a.to_ascii_lowercase())
                .unwrap_or_default()
        };
        self.refused.borrow_mut().push(Refused {
            command: [arg(0), arg(1)],
            code: msg.split(' ').next().unwrap_or("ERR").to_string(),
            rejected,
        });
    }
}

/// Counts the errors sent while the script ran, as Redis counts them:
/// the error (errorstats) and the command's `rejected_calls`, or its
/// `calls` and `failed_calls`.
pub fn count_refused(t: &mut Tenant, refused: Vec<Refused>) {
    for r in refused {
        let failed = !r.code.is_empty();
        if failed {
            t.count_error(&r.code);
        }
        let args: [&[u8]; 2] = [&r.command[0], &r.command[1]];
        let n = if r.command[1].is_empty() { 1 } else { 2 };
        if let crate::cmd::table::Lookup::Found(c) = crate::cmd::table::lookup(&args[..n]) {
            if let Some(s) = t.stats.commands.get_mut(c.id) {
                if r.rejected {
                    s.rejected_calls += 1;
                } else {
                    s.calls += 1;
                    s.failed_calls += u64::from(failed);
                }
            }
        }
    }
}

/// What a client's request gets while its database runs a script past
/// `busy-reply-threshold` (Redis 7.0's `CMD_ALLOW_BUSY` commands).
pub enum Answer {
    /// Replied (to `out`).
    Replied,
    /// Replied (EXEC's abort); the client's WATCHes go once the script
    /// ends.
    Unwatch,
    /// Replied (WATCH): the keys are watched once the script ends (as
    /// touched, if it wrote).
    Watch,
    /// Replied; the connection closes (QUIT).
    Close,
    /// Must wait for the script's end, then run as usual (REPLCONF,
    /// RESET of a subscribed or MONITOR session, and AUTH or HELLO that
    /// move the connection to another database: they need the database).
    Later,
    /// SHUTDOWN NOSAVE by a client allowed to: stop the server.
    Shutdown,
}

/// Redis's refusals while a script (`eval`) or a function runs.
pub fn busy_error(b: &Busy) -> &'static str {
    if b.function.is_some() {
        "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
    } else {
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    }
}

const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// Answers one request while the database is busy (see [`Answer`]).
/// `may_shutdown`: the client may run SHUTDOWN (not a tenant's).
pub fn answer(
    b: &Busy,
    s: &mut Session,
    args: &[&[u8]],
    out: &mut Reply,
    may_shutdown: bool,
) -> Answer {
    let name = args
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    // Refused before running (Redis's rejectCommand), or run and failed.
    let refuse = |out: &mut Reply, msg: &str| {
        b.refused(args, msg, true);
        out.error(msg);
    };
    let fail = |out: &mut Reply, msg: &str| {
        b.refused(args, msg, false);
        out.error(msg);
    };
    let allowed_in_multi = matches!(
        (&name[..], &sub[..]),
        (b"script", b"kill") | (b"function", b"kill") | (b"function", b"stats")
    );
    if s.multi.is_some() && allowed_in_multi {
        // Served while busy, so queued as usual.
        if let Some(q) = s.multi.as_mut() {
            q.push(args.iter().map(|a| a.to_vec()).collect());
        }
        out.simple("QUEUED");
        return Answer::Replied;
    }
    match (&name[..], &sub[..], args.len()) {
        (b"script", b"kill", 2) | (b"function", b"kill", 2) => {
            let eval = &name[..] == b"script";
            if b.wrote.get() {
                fail(out, UNKILLABLE);
            } else if eval == b.function.is_some() {
                // SCRIPT KILL of a function, FUNCTION KILL of a script.
                fail(out, busy_error(b));
            } else {
                b.kill.set(true);
                out.ok();
            }
            Answer::Replied
        }
        (b"function", b"stats", 2) => {
            let Some((fname, command)) = &b.function else {
                fail(out, busy_error(b));
                return Answer::Replied;
            };
            out.map(2);
            out.bulk(b"running_script");
            out.map(3);
            out.bulk(b"name");
            out.bulk(fname.as_bytes());
            out.bulk(b"command");
            out.array(command.len());
            for a in command {
                out.bulk(a);
            }
            out.bulk(b"duration_ms");
            out.int(b.started.elapsed().as_millis() as i64);
            out.bulk(b"engines");
            out.map(1);
            out.bulk(b"LUA");
            out.map(2);
            out.bulk(b"libraries_count");
            out.int(b.libraries.0 as i64);
            out.bulk(b"functions_count");
            out.int(b.libraries.1 as i64);
            Answer::Replied
        }
        (b"shutdown", _, _) if s.multi.is_some() => {
            s.multi_error = true;
            refuse(out, "ERR Command not allowed inside a transaction");
            Answer::Replied
        }
        (b"shutdown", _, _) => {
            let nosave = args[1..].iter().any(|a| a.eq_ignore_ascii_case(b"nosave"))
                && !args[1..].iter().any(|a| a.eq_ignore_ascii_case(b"save"));
            if nosave && may_shutdown && s.multi.is_none() {
                Answer::Shutdown
            } else {
                refuse(out, busy_error(b));
                Answer::Replied
            }
        }
        (b"multi", _, 1) if s.multi.is_none() => {
            s.multi = Some(Vec::new());
            s.multi_error = false;
            out.ok();
            Answer::Replied
        }
        (b"discard", _, 1) => {
            if s.multi.take().is_some() {
                s.multi_error = false;
                out.ok();
                Answer::Unwatch
            } else {
                fail(out, "ERR DISCARD without MULTI");
                Answer::Replied
            }
        }
        (b"unwatch", _, 1) => {
            out.ok();
            Answer::Unwatch
        }
        (b"quit", _, _) => {
            out.ok();
            Answer::Close
        }
        (b"watch", _, n) if n > 1 => {
            if s.multi.is_some() {
                fail(out, "ERR WATCH inside MULTI is not allowed");
                Answer::Replied
            } else {
                out.ok();
                Answer::Watch
            }
        }
        // (AUTH, HELLO and RESET are answered before: `conn`'s wait.)
        (b"watch" | b"auth" | b"hello" | b"reset" | b"replconf" | b"multi", _, _) => Answer::Later,
        (b"exec", _, _) => {
            // Redis discards the transaction: EXECABORT with the refusal.
            s.multi = None;
            s.multi_error = false;
            s.info.dirty_cas.set(false);
            let msg = format!(
                "EXECABORT Transaction discarded because of: {}",
                busy_error(b)
            );
            refuse(out, &msg);
            Answer::Unwatch
        }
        _ => {
            if s.multi.is_some() {
                s.multi_error = true;
            }
            refuse(out, busy_error(b));
            Answer::Replied
        }
    }
}
