//! Background snapshots without fork: the job, its slices on the
//! executor, the writer thread, and what a finished rewrite does to the
//! append-only log's manifest (see the module above for the design).

use std::io;
use std::sync::mpsc;
use std::time::Instant;

use super::aof::AofWriter;
use super::files::Manifest;
use super::{meta_for, write_snapshot_file, Purpose, BLOCK, SLICE};
use crate::db::Table;
use crate::tenant::Tenant;

enum WriterMsg {
    Block(Vec<u8>, u32),
    Finish,
}

/// Where a background snapshot's blocks go.
pub enum Sink {
    /// A snapshot file: BGSAVE's, or the append-only log's new base.
    File(std::path::PathBuf),
    /// BGSAVE's file when `dbfilename` names an RDB file: the blocks
    /// transcoded to RDB on the writer thread.
    Rdb(std::path::PathBuf, super::RdbFileMeta),
    /// A replica's full sync: the writer thread transcodes the blocks to
    /// RDB and hands them to the replica's connection in chunks (see
    /// `repl::fullsync`), so building the payload takes the executor no
    /// longer than a BGSAVE's slices do.
    Replica(crate::repl::fullsync::RdbStream),
}

/// A background snapshot in progress.
pub struct SnapJob {
    pub purpose: Purpose,
    tx: mpsc::SyncSender<WriterMsg>,
    result: mpsc::Receiver<io::Result<u64>>,
    pub started: Instant,
    pub started_ms: i64,
    /// Tables FLUSHDB/FLUSHALL took away mid-save (still to be written).
    detached: Vec<Table>,
    /// A block that did not fit the writer's queue yet.
    held: Option<(Vec<u8>, u32)>,
    scratch: Vec<u8>,
    scratch_n: u32,
    /// Bytes of blocks built and not yet written by the writer thread
    /// (shared with it): a save's buffers, like a forked child's memory in
    /// Redis, are not the database's data (see [`SnapJob::in_flight`]).
    inflight: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub keys_done: u64,
    pub keys_total: u64,
    /// For a rewrite: the sequence number of the new base and segment.
    seq: u64,
    /// Changes counted when the snapshot began (later ones stay dirty).
    dirty_at_start: u64,
    finishing: bool,
    /// The last slice stopped because the writer's queue was full: the
    /// next one waits a moment instead of spinning.
    stalled: bool,
    /// [`run_job`] drives it (a job started by a command is picked up by
    /// [`super::kick`]).
    pub(crate) driven: bool,
}

/// Starts a background snapshot; the caller schedules [`run_job`].
pub fn start_job(t: &mut Tenant, purpose: Purpose) -> io::Result<()> {
    if t.persist.job.is_some() {
        return Err(io::Error::other("a background save is already in progress"));
    }
    let mut seq = 0;
    let path = match purpose {
        Purpose::Sync => {
            return Err(io::Error::other(
                "a replica's full sync starts with start_sync_job",
            ))
        }
        Purpose::Save if super::is_rdb_name(&t.persist.dbfilename) => {
            let meta = super::rdb_meta_for(t);
            return launch(t, purpose, seq, Sink::Rdb(t.persist.snapshot_path(), meta));
        }
        Purpose::Save => t.persist.snapshot_path(),
        Purpose::Rewrite => {
            // New writes go to a new segment from this instant; the old
            // manifest keeps listing everything until the base is written.
            let dir = t.persist.aof_dir();
            seq = t
                .persist
                .manifest
                .max_seq()
                .max(super::files::max_seq_on_disk(
                    &dir,
                    &t.persist.appendfilename,
                ))
                + 1;
            let incr = t.persist.incr_name(seq);
            std::fs::create_dir_all(&dir)?;
            t.persist.flush_log(&mut t.log);
            let enabling = t.persist.aof.is_none();
            match t.persist.aof.as_mut() {
                Some(w) => w.rotate(&dir.join(&incr))?,
                None => {
                    // CONFIG SET appendonly yes: the log starts now; it
                    // counts only once its base is written (no manifest
                    // until then, as Redis's first rewrite).
                    let w = AofWriter::open(
                        &dir.join(&incr),
                        t.persist.policy,
                        t.log.offset(),
                        &t.mem,
                    )?;
                    t.persist.aof = Some(w);
                    t.log.enable_sink();
                }
            }
            // The new segment is read from database 0: it must name its
            // database before its first effect.
            t.log.force_select();
            t.persist.manifest.incrs.push((incr, seq));
            if !enabling {
                t.persist.manifest.save(&t.persist.manifest_path())?;
            }
            dir.join(t.persist.base_name(seq))
        }
    };
    launch(t, purpose, seq, Sink::File(path))
}

/// Starts a replica's full sync in the background: the keyspace as of now
/// (its log offset), as RDB, into `stream`'s channel. Fails when another
/// background snapshot runs (the caller builds the payload at once then).
pub fn start_sync_job(t: &mut Tenant, stream: crate::repl::fullsync::RdbStream) -> io::Result<()> {
    if t.persist.job.is_some() {
        return Err(io::Error::other("a background save is already in progress"));
    }
    launch(t, Purpose::Sync, 0, Sink::Replica(stream))
}

/// Starts the writer thread for `sink` and the walk of the keyspace.
fn launch(t: &mut Tenant, purpose: Purpose, seq: u64, sink: Sink) -> io::Result<()> {
    let meta = meta_for(t);
    let (tx, rx) = mpsc::sync_channel::<WriterMsg>(64);
    let inflight = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let written = inflight.clone();
    let (res_tx, result) = mpsc::channel();
    // The blocks are built on the executor, in the tenant's account, and
    // freed here: free them in the same account.
    let acct = t.mem.clone();
    std::thread::Builder::new()
        .name("anykv-bgsave".into())
        .spawn(move || {
            crate::alloc::with_account(&acct, || {
                let pump = |push: &mut dyn FnMut(&[u8], u32) -> io::Result<()>| {
                    for m in rx {
                        match m {
                            WriterMsg::Block(b, n) => {
                                let r = push(&b, n);
                                written.fetch_sub(
                                    b.capacity() as u64,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                r?
                            }
                            WriterMsg::Finish => return Ok(()),
                        }
                    }
                    Err(io::Error::other("background save aborted"))
                };
                let r = match sink {
                    Sink::File(path) => write_snapshot_file(&path, &meta, pump),
                    Sink::Rdb(path, rdb) => super::write_rdb_file(&path, &rdb, pump),
                    Sink::Replica(stream) => stream.write(pump),
                };
                let _ = res_tx.send(r);
            })
        })?;
    let total = t.ks.total_keys() as u64;
    for (i, db) in t.ks.dbs.iter_mut().enumerate() {
        db.begin_snapshot(i as u32);
    }
    t.persist.job = Some(SnapJob {
        purpose,
        tx,
        result,
        started: Instant::now(),
        started_ms: crate::util::mstime(),
        detached: Vec::new(),
        held: None,
        scratch: Vec::with_capacity(BLOCK + 4096),
        scratch_n: 0,
        inflight,
        keys_done: 0,
        keys_total: total,
        seq,
        dirty_at_start: t.dirty,
        finishing: false,
        stalled: false,
        driven: purpose != Purpose::Sync,
    });
    Ok(())
}

impl SnapJob {
    /// Bytes the save holds besides the keyspace: its block being built and
    /// those queued for the writer. Left out of `maxmemory`, as Redis leaves
    /// a forked save out: a slow disk must not make a database refuse
    /// writes.
    pub fn in_flight(&self) -> u64 {
        // (A block waiting for room in the queue is counted in `inflight`
        // already.)
        self.scratch.capacity() as u64 + self.inflight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the pre-images `table`'s write barrier saved into the block
    /// being built.
    fn collect_saved(&mut self, table: &mut Table) {
        let (b, n) = table.snapshot_take_saved();
        self.scratch.extend_from_slice(&b);
        self.scratch_n += n;
    }

    /// Walks up to `budget` entries of `table` into the block; returns the
    /// budget used (at least 1) and whether the walk is complete, in which
    /// case the last pre-images are collected too.
    fn walk(&mut self, table: &mut Table, budget: usize) -> (usize, bool) {
        let (n, done) = table.snapshot_step(budget, &mut self.scratch);
        self.scratch_n += n;
        if done {
            self.collect_saved(table);
        }
        ((n as usize).max(1), done)
    }

    /// Queues the scratch block for the writer; false when the queue is full.
    fn ship(&mut self, force: bool) -> bool {
        if let Some((b, n)) = self.held.take() {
            match self.tx.try_send(WriterMsg::Block(b, n)) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(WriterMsg::Block(b, n))) => {
                    self.held = Some((b, n));
                    return false;
                }
                Err(_) => return false,
            }
        }
        if self.scratch_n > 0 && (force || self.scratch.len() >= BLOCK) {
            let b = std::mem::replace(&mut self.scratch, Vec::with_capacity(BLOCK + 4096));
            let n = std::mem::take(&mut self.scratch_n);
            self.inflight
                .fetch_add(b.capacity() as u64, std::sync::atomic::Ordering::Relaxed);
            self.keys_done += u64::from(n);
            if let Err(mpsc::TrySendError::Full(WriterMsg::Block(b, n))) =
                self.tx.try_send(WriterMsg::Block(b, n))
            {
                self.held = Some((b, n));
                return false;
            }
        }
        true
    }
}

/// Detaches a table that FLUSHDB/FLUSHALL is about to drop, if a
/// snapshot still needs it; returns it otherwise (to drop).
pub fn detach_table(t: &mut Tenant, table: Table) {
    if let Some(job) = t.persist.job.as_mut() {
        if table.snapshot_active() {
            job.detached.push(table);
        }
    }
}

/// One slice of a background snapshot; returns true once every table is
/// written and the writer has been told to finish.
pub fn step(t: &mut Tenant, budget: usize) -> bool {
    let Tenant { ks, persist, .. } = t;
    let Some(job) = persist.job.as_mut() else {
        return true;
    };
    if job.finishing {
        return true;
    }
    job.stalled = false;
    if !job.ship(false) {
        job.stalled = true;
        return false; // the disk (or the replica) is behind: let clients run
    }
    for db in ks.dbs.iter_mut() {
        job.collect_saved(db);
    }
    let mut left = budget;
    while left > 0 {
        if let Some(mut d) = job.detached.pop() {
            // Detached tables no longer change: walk them out.
            let (used, done) = job.walk(&mut d, left);
            left = left.saturating_sub(used);
            if !done {
                job.detached.push(d);
            }
        } else if let Some(db) = ks.dbs.iter_mut().find(|d| d.snapshot_active()) {
            let (used, done) = job.walk(db, left);
            left = left.saturating_sub(used);
            if done {
                // Nothing old is left to protect in this table.
                db.end_snapshot();
            }
        } else {
            break;
        }
        if job.scratch.len() >= BLOCK && !job.ship(false) {
            job.stalled = true;
            return false;
        }
    }
    let walking = !job.detached.is_empty() || ks.dbs.iter().any(|d| d.snapshot_active());
    if walking {
        return false;
    }
    if !job.ship(true) || job.held.is_some() {
        job.stalled = true;
        return false;
    }
    if job.tx.try_send(WriterMsg::Finish).is_err() {
        job.stalled = true;
        return false;
    }
    job.finishing = true;
    true
}

/// Drops a running background snapshot (FLUSHALL, shutdown).
pub fn abort_job(t: &mut Tenant) {
    if let Some(job) = t.persist.job.take() {
        drop(job.tx); // the writer sees the channel close and removes its temp file
        for db in t.ks.dbs.iter_mut() {
            db.end_snapshot();
        }
        tracing::warn!("Background save aborted");
    }
}

/// A snapshot (`log` false) or a log base (`log` true) of the data in
/// memory is on disk now: if a full sync had left the ids ahead of that
/// kind of file, they describe it again.
fn data_caught_up(t: &mut Tenant, log: bool) {
    if t.persist.ids_behind.caught_up(log) {
        let behind = t.persist.ids_behind;
        if let Err(e) = super::replids::save(&t.persist.dir, &t.repl, None, behind) {
            tracing::error!("writing {}: {e}", super::replids::FILE);
        }
    }
}

/// Finishes a job whose writer reported `r`.
fn complete(t: &mut Tenant, job: SnapJob, r: io::Result<u64>) {
    let secs = job.started.elapsed().as_secs() as i64;
    match (job.purpose, r) {
        (Purpose::Save, Ok(keys)) => {
            tracing::info!("Background saving terminated with success ({keys} keys)");
            t.persist.last_bgsave_ok = true;
            t.persist.last_bgsave_time_sec = secs;
            t.persist.lastsave = job.started_ms / 1000;
            t.persist.dirty_at_save = job.dirty_at_start;
            t.persist.saves += 1;
            data_caught_up(t, false);
        }
        (Purpose::Save, Err(e)) => {
            tracing::error!("Background saving error: {e}");
            t.persist.last_bgsave_ok = false;
            t.persist.last_bgsave_time_sec = secs;
        }
        (Purpose::Rewrite, Ok(keys)) => {
            let p = &mut t.persist;
            let old = p.manifest.clone();
            let new = Manifest {
                base: Some((p.base_name(job.seq), job.seq)),
                incrs: p
                    .manifest
                    .incrs
                    .iter()
                    .filter(|(_, s)| *s >= job.seq)
                    .cloned()
                    .collect(),
            };
            match new.save(&p.manifest_path()) {
                Ok(()) => {
                    let dir = p.aof_dir();
                    for (name, _) in old.base.iter().chain(old.incrs.iter()) {
                        if !new.incrs.iter().any(|(n, _)| n == name)
                            && new.base.as_ref().is_none_or(|(n, _)| n != name)
                        {
                            let _ = std::fs::remove_file(dir.join(name));
                        }
                    }
                    p.manifest = new;
                    p.aof_rewrites += 1;
                    p.aof_last_rewrite_ok = true;
                    p.aof_last_rewrite_time_sec = secs;
                    p.aof_base_size = p
                        .aof
                        .as_ref()
                        .map(|w| w.status.size.load(std::sync::atomic::Ordering::Relaxed))
                        .unwrap_or(0);
                    tracing::info!("Background AOF rewrite finished successfully ({keys} keys)");
                    data_caught_up(t, true);
                }
                Err(e) => {
                    p.aof_last_rewrite_ok = false;
                    tracing::error!("Background AOF rewrite: cannot write the manifest: {e}");
                }
            }
        }
        (Purpose::Sync, Ok(keys)) => {
            tracing::info!("Background RDB transfer terminated with success ({keys} keys)");
        }
        (Purpose::Sync, Err(e)) => {
            tracing::warn!("Background RDB transfer error: {e}");
        }
        (Purpose::Rewrite, Err(e)) => {
            t.persist.aof_last_rewrite_ok = false;
            t.persist.aof_last_rewrite_time_sec = secs;
            tracing::error!("Background AOF rewrite terminated with error: {e}");
            if t.persist.manifest.base.is_none() {
                // The first rewrite after CONFIG SET appendonly yes failed:
                // a log without a base is not a log. Close it; it is
                // retried (after a pause) while appendonly stays yes.
                if let Some(w) = t.persist.aof.take() {
                    let _ = std::fs::remove_file(w.path());
                }
                t.log.disable_sink();
                t.persist.manifest = Manifest::default();
                t.persist.enable_retry_at_ms = crate::util::mstime() + 5000;
            }
        }
    }
}

/// Drives a started job to the end: slices on the executor between
/// clients' commands, then waits for the writer thread.
pub async fn run_job(tenant: std::rc::Rc<std::cell::RefCell<Tenant>>) {
    loop {
        let (done, stalled) = {
            let mut t = tenant.borrow_mut();
            let Some(job) = t.persist.job.as_ref() else {
                return; // aborted
            };
            // A writer that stopped early (a full disk, a replica gone)
            // ends the job now: nothing would take the rest.
            if let Ok(r) = job.result.try_recv() {
                let r = r.and_then(|_| Err(io::Error::other("the writer stopped early")));
                for db in t.ks.dbs.iter_mut() {
                    db.end_snapshot();
                }
                if let Some(job) = t.persist.job.take() {
                    complete(&mut t, job, r);
                }
                return;
            }
            let done = step(&mut t, SLICE);
            (done, t.persist.job.as_ref().is_some_and(|j| j.stalled))
        };
        if done {
            break;
        }
        if stalled {
            // The writer's queue is full: give it a moment.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    loop {
        let r = {
            let t = tenant.borrow();
            match t.persist.job.as_ref() {
                None => return,
                Some(job) => match job.result.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        Some(Err(io::Error::other("background writer died")))
                    }
                },
            }
        };
        if let Some(r) = r {
            let mut t = tenant.borrow_mut();
            if let Some(job) = t.persist.job.take() {
                complete(&mut t, job, r);
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
