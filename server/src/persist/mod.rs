//! Persistence: snapshots and the append-only log, per tenant.
//!
//! - [`snapshot`] + [`codec`]: the versioned, checksummed snapshot format
//!   (also what replication's full sync will send).
//! - Snapshots without fork: a background save walks the tables in slices
//!   on the executor between commands while a write barrier in
//!   [`crate::db::Table`] hands it the pre-image of anything about to
//!   change, so the file equals the keyspace at the instant the save began
//!   (its propagation-log offset). A writer thread does the I/O.
//! - [`aof`]: the propagation log on disk, with Redis 7's multi-part
//!   layout (`appenddirname/`: a base snapshot, log segments, a manifest);
//!   a rewrite is a background snapshot that becomes the new base while
//!   new writes go to a new segment.
//! - Restart loads the base (or `dbfilename`) then replays the segments;
//!   a torn tail is truncated, corruption stops the start with the file and
//!   offset (`--repair` salvages what precedes it).

pub mod aof;
pub mod codec;
pub mod files;
pub mod snapshot;

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use crate::db::Table;
use crate::tenant::Tenant;
use aof::{AofWriter, FsyncPolicy, Tail};
use files::Manifest;
use snapshot::{SnapshotMeta, SnapshotWriter};

/// Entries a background save writes per slice before yielding to clients.
pub const SLICE: usize = 2000;
/// Encoded bytes per snapshot block.
const BLOCK: usize = 256 << 10;

/// What a background snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// BGSAVE / save rules: `dir/dbfilename`.
    Save,
    /// BGREWRITEAOF: the new base of the append-only log.
    Rewrite,
}

enum WriterMsg {
    Block(Vec<u8>, u32),
    Finish,
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
    pub keys_done: u64,
    pub keys_total: u64,
    /// For a rewrite: the sequence number of the new base and segment.
    seq: u64,
    /// Changes counted when the snapshot began (later ones stay dirty).
    dirty_at_start: u64,
    finishing: bool,
}

/// A tenant's persistence state.
pub struct Persist {
    /// Where files go (`dir`); tenants other than the default use a
    /// subdirectory each.
    pub dir: PathBuf,
    pub dbfilename: String,
    pub appenddirname: String,
    pub appendfilename: String,
    pub aof: Option<AofWriter>,
    pub manifest: Manifest,
    pub job: Option<SnapJob>,
    /// Unix seconds of the last successful save (LASTSAVE).
    pub lastsave: i64,
    pub last_bgsave_ok: bool,
    pub last_bgsave_time_sec: i64,
    pub saves: u64,
    /// Effects logged at the last save (changes since = log count - this).
    pub dirty_at_save: u64,
    /// A background save or rewrite was asked for (started by the
    /// connection or cron that notices).
    pub requested: Option<Purpose>,
    pub rewrite_scheduled: bool,
    pub aof_rewrites: u64,
    pub aof_last_rewrite_ok: bool,
    pub aof_last_rewrite_time_sec: i64,
    /// Segment size right after the last rewrite (auto-rewrite growth base).
    pub aof_base_size: u64,
    pub loaded_keys: u64,
    pub loaded_expired: u64,
    pub repair: bool,
    /// `appendfsync` (applied to the writer when it changes).
    pub policy: FsyncPolicy,
    /// Set by [`startup`]: this tenant has a data directory. In-process
    /// tenants (tests, replay) write no files on their own.
    pub enabled: bool,
    /// A [`write_round`] is scheduled.
    pub write_armed: bool,
    /// After a failed attempt to turn the log on, when to try again.
    pub enable_retry_at_ms: i64,
}

impl Default for Persist {
    fn default() -> Self {
        Persist {
            dir: PathBuf::from("."),
            dbfilename: "dump.rdb".into(),
            appenddirname: "appendonlydir".into(),
            appendfilename: "appendonly.aof".into(),
            aof: None,
            manifest: Manifest::default(),
            job: None,
            lastsave: crate::util::mstime() / 1000,
            last_bgsave_ok: true,
            last_bgsave_time_sec: -1,
            saves: 0,
            dirty_at_save: 0,
            requested: None,
            rewrite_scheduled: false,
            aof_rewrites: 0,
            aof_last_rewrite_ok: true,
            aof_last_rewrite_time_sec: -1,
            aof_base_size: 0,
            loaded_keys: 0,
            loaded_expired: 0,
            repair: false,
            policy: FsyncPolicy::EverySec,
            enabled: false,
            write_armed: false,
            enable_retry_at_ms: 0,
        }
    }
}

impl Persist {
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }

    pub fn aof_dir(&self) -> PathBuf {
        self.dir.join(&self.appenddirname)
    }

    fn manifest_path(&self) -> PathBuf {
        self.aof_dir()
            .join(format!("{}.manifest", self.appendfilename))
    }

    fn base_name(&self, seq: u64) -> String {
        format!("{}.{seq}.base.akv", self.appendfilename)
    }

    fn incr_name(&self, seq: u64) -> String {
        format!("{}.{seq}.incr.aof", self.appendfilename)
    }

    pub fn bgsave_in_progress(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| j.purpose == Purpose::Save)
    }

    pub fn rewrite_in_progress(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| j.purpose == Purpose::Rewrite)
    }

    /// Queues the effects logged since the last call for the AOF writer.
    pub fn flush_log(&mut self, log: &mut crate::proplog::PropLog) {
        if let Some(w) = self.aof.as_mut() {
            let end = log.offset();
            if let Some(bytes) = log.sink_mut() {
                if !bytes.is_empty() {
                    w.append(bytes, end);
                    bytes.clear();
                }
            }
        }
    }
}

fn meta_for(t: &Tenant) -> SnapshotMeta {
    SnapshotMeta {
        created_ms: crate::util::mstime(),
        offset: t.log.offset(),
        databases: t.ks.dbs.len() as u32,
        // An estimate for the loader to pre-size with (the trailer has the
        // exact count).
        keys: t.ks.total_keys() as u64,
        aux: vec![
            ("anykv-ver".into(), crate::shared::ANYKV_VERSION.into()),
            ("redis-ver".into(), crate::shared::REDIS_VERSION.into()),
        ],
    }
}

fn write_snapshot_file(
    path: &Path,
    meta: &SnapshotMeta,
    blocks: impl FnOnce(&mut dyn FnMut(&[u8], u32) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = files::temp_name(path);
    let f = std::fs::File::create(&tmp)?;
    let mut w = SnapshotWriter::new(BufWriter::with_capacity(1 << 20, f), meta)?;
    let mut keys = 0u64;
    let r = blocks(&mut |b: &[u8], n: u32| {
        keys += u64::from(n);
        w.push_block(b, n)
    });
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bw = w.finish()?;
    let f = bw.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    files::rename_durably(&tmp, path)?;
    Ok(keys)
}

/// SAVE: writes the whole keyspace now, on this thread (as Redis's SAVE
/// blocks the server).
pub fn save_sync(t: &mut Tenant, path: &Path) -> io::Result<u64> {
    let meta = meta_for(t);
    let ks = &t.ks;
    let keys = write_snapshot_file(path, &meta, |push| {
        let mut buf = Vec::with_capacity(BLOCK + 4096);
        let mut n = 0u32;
        for (db, table) in ks.dbs.iter().enumerate() {
            for e in table.iter() {
                codec::encode_entry(&mut buf, db as u32, &e.key, &e.value, e.expire_at);
                n += 1;
                if buf.len() >= BLOCK {
                    push(&buf, n)?;
                    buf.clear();
                    n = 0;
                }
            }
        }
        if n > 0 {
            push(&buf, n)?;
        }
        Ok(())
    })?;
    Ok(keys)
}

/// Marks a successful save of the snapshot file.
fn saved_ok(t: &mut Tenant) {
    t.persist.lastsave = crate::util::mstime() / 1000;
    t.persist.dirty_at_save = t.dirty;
    t.persist.saves += 1;
}

/// SAVE's whole path: refuses while a background save runs.
pub fn save_command(t: &mut Tenant) -> Result<(), String> {
    if t.persist.bgsave_in_progress() {
        return Err("ERR Background save already in progress".into());
    }
    let path = t.persist.snapshot_path();
    match save_sync(t, &path) {
        Ok(keys) => {
            tracing::info!("DB saved on disk ({keys} keys)");
            saved_ok(t);
            t.persist.last_bgsave_ok = true;
            Ok(())
        }
        Err(e) => {
            tracing::error!("Failed saving the DB: {e}");
            t.persist.last_bgsave_ok = false;
            Err(format!("ERR {e}"))
        }
    }
}

/// Starts a background snapshot; the caller schedules [`run_job`].
pub fn start_job(t: &mut Tenant, purpose: Purpose) -> io::Result<()> {
    if t.persist.job.is_some() {
        return Err(io::Error::other("a background save is already in progress"));
    }
    let mut seq = 0;
    let path = match purpose {
        Purpose::Save => t.persist.snapshot_path(),
        Purpose::Rewrite => {
            // New writes go to a new segment from this instant; the old
            // manifest keeps listing everything until the base is written.
            seq = t.persist.manifest.max_seq() + 1;
            let incr = t.persist.incr_name(seq);
            let dir = t.persist.aof_dir();
            std::fs::create_dir_all(&dir)?;
            t.persist.flush_log(&mut t.log);
            let enabling = t.persist.aof.is_none();
            match t.persist.aof.as_mut() {
                Some(w) => w.rotate(&dir.join(&incr))?,
                None => {
                    // CONFIG SET appendonly yes: the log starts now; it
                    // counts only once its base is written (no manifest
                    // until then, as Redis's first rewrite).
                    let w = AofWriter::open(&dir.join(&incr), t.persist.policy, t.log.offset())?;
                    t.persist.aof = Some(w);
                    t.log.enable_sink();
                }
            }
            t.persist.manifest.incrs.push((incr, seq));
            if !enabling {
                t.persist.manifest.save(&t.persist.manifest_path())?;
            }
            dir.join(t.persist.base_name(seq))
        }
    };
    let meta = meta_for(t);
    let (tx, rx) = mpsc::sync_channel::<WriterMsg>(64);
    let (res_tx, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("anykv-bgsave".into())
        .spawn(move || {
            let r = write_snapshot_file(&path, &meta, |push| {
                for m in rx {
                    match m {
                        WriterMsg::Block(b, n) => push(&b, n)?,
                        WriterMsg::Finish => return Ok(()),
                    }
                }
                Err(io::Error::other("background save aborted"))
            });
            let _ = res_tx.send(r);
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
        keys_done: 0,
        keys_total: total,
        seq,
        dirty_at_start: t.dirty,
        finishing: false,
    });
    Ok(())
}

impl SnapJob {
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
    if !job.ship(false) {
        return false; // the disk is behind: let clients run
    }
    for db in ks.dbs.iter_mut() {
        let (b, n) = db.snapshot_take_saved();
        if n > 0 {
            job.scratch.extend_from_slice(&b);
            job.scratch_n += n;
        }
    }
    let mut left = budget;
    while left > 0 {
        if let Some(d) = job.detached.last_mut() {
            let (b, n) = d.snapshot_take_saved();
            job.scratch.extend_from_slice(&b);
            job.scratch_n += n;
            let (n, done) = d.snapshot_step(left, &mut job.scratch);
            job.scratch_n += n;
            left = left.saturating_sub((n as usize).max(1));
            if done {
                job.detached.pop();
            }
        } else if let Some(db) = ks.dbs.iter_mut().find(|d| d.snapshot_active()) {
            let (n, done) = db.snapshot_step(left, &mut job.scratch);
            job.scratch_n += n;
            left = left.saturating_sub((n as usize).max(1));
            if done {
                // Nothing old is left to protect in this table.
                let (b, n) = db.snapshot_take_saved();
                job.scratch.extend_from_slice(&b);
                job.scratch_n += n;
                db.end_snapshot();
            }
        } else {
            break;
        }
        if job.scratch.len() >= BLOCK && !job.ship(false) {
            return false;
        }
    }
    let walking = !job.detached.is_empty() || ks.dbs.iter().any(|d| d.snapshot_active());
    if walking {
        return false;
    }
    if !job.ship(true) || job.held.is_some() {
        return false;
    }
    if job.tx.try_send(WriterMsg::Finish).is_err() {
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
                }
                Err(e) => {
                    p.aof_last_rewrite_ok = false;
                    tracing::error!("Background AOF rewrite: cannot write the manifest: {e}");
                }
            }
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
        let done = {
            let mut t = tenant.borrow_mut();
            if t.persist.job.is_none() {
                return; // aborted
            }
            step(&mut t, SLICE)
        };
        if done {
            break;
        }
        tokio::task::yield_now().await;
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

/// Writes the round's queued log once all connections ready now have
/// added their batches (they wait for it before replying).
pub async fn write_round(tenant: std::rc::Rc<std::cell::RefCell<Tenant>>) {
    // Behind every task already runnable: their batches join this write.
    tokio::task::yield_now().await;
    let mut t = tenant.borrow_mut();
    let t = &mut *t;
    t.persist.write_armed = false;
    t.persist.flush_log(&mut t.log);
    if let Some(w) = t.persist.aof.as_mut() {
        let _ = w.write_pending();
    }
}

/// Starts whatever was requested (by BGSAVE, BGREWRITEAOF, a save rule or
/// auto-rewrite); called by connections after a batch and by cron.
pub fn kick(tenant: &std::rc::Rc<std::cell::RefCell<Tenant>>) {
    let start = {
        let mut t = tenant.borrow_mut();
        if t.persist.job.is_some() {
            return;
        }
        let Some(purpose) = t.persist.requested.take() else {
            return;
        };
        if purpose == Purpose::Rewrite {
            t.persist.rewrite_scheduled = false;
        }
        match start_job(&mut t, purpose) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("Cannot start background save: {e}");
                match purpose {
                    Purpose::Save => t.persist.last_bgsave_ok = false,
                    Purpose::Rewrite => t.persist.aof_last_rewrite_ok = false,
                }
                false
            }
        }
    };
    if start {
        tokio::task::spawn_local(run_job(tenant.clone()));
    }
}

/// Cron's check of `save <seconds> <changes>` rules and AOF growth.
pub fn check_rules(
    t: &mut Tenant,
    rules: &[(i64, i32)],
    now_ms: i64,
    auto_pct: i64,
    auto_min: u64,
) {
    if !t.persist.enabled {
        return;
    }
    if t.persist.job.is_some() || t.persist.requested.is_some() {
        return;
    }
    let dirty = t.dirty.saturating_sub(t.persist.dirty_at_save);
    let since = now_ms / 1000 - t.persist.lastsave;
    for &(secs, changes) in rules {
        if dirty >= changes.max(0) as u64 && since >= secs && dirty > 0 {
            tracing::info!("{changes} changes in {secs} seconds. Saving...");
            t.persist.requested = Some(Purpose::Save);
            return;
        }
    }
    if let Some(w) = &t.persist.aof {
        let size = w.status.size.load(std::sync::atomic::Ordering::Relaxed);
        let base = t.persist.aof_base_size.max(1);
        if auto_pct > 0
            && size >= auto_min
            && (size - base.min(size)) * 100 / base >= auto_pct as u64
        {
            tracing::info!(
                "Starting automatic rewriting of AOF on {}% growth",
                (size - base.min(size)) * 100 / base
            );
            t.persist.requested = Some(Purpose::Rewrite);
        }
    }
}

/// Applies CONFIG SET of appendonly/appendfsync (from cron): turning the
/// log on starts a rewrite that writes its base; turning it off closes it.
pub fn apply_config(t: &mut Tenant, appendonly: bool, fsync: FsyncPolicy) {
    if !t.persist.enabled {
        return;
    }
    t.persist.policy = fsync;
    if let Some(w) = t.persist.aof.as_mut() {
        w.set_policy(fsync);
    }
    if appendonly
        && t.persist.aof.is_none()
        && t.persist.job.is_none()
        && t.persist.requested.is_none()
        && crate::util::mstime() >= t.persist.enable_retry_at_ms
    {
        t.persist.manifest = Manifest::default();
        t.persist.requested = Some(Purpose::Rewrite);
    } else if !appendonly && t.persist.aof.is_some() {
        if t.persist.rewrite_in_progress() {
            abort_job(t);
        }
        t.persist.flush_log(&mut t.log);
        if let Some(mut w) = t.persist.aof.take() {
            let _ = w.flush();
        }
        t.log.disable_sink();
        tracing::info!("Background append only file disabled");
    }
}

/// What a start-up load found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub keys: u64,
    pub expired: u64,
    pub commands: u64,
    pub source: String,
}

fn load_snapshot_into(
    t: &mut Tenant,
    path: &Path,
    th: &codec::Thresholds,
    now_ms: i64,
) -> Result<(u64, u64), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = snapshot::SnapshotReader::new(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let dbs = &mut t.ks.dbs;
    // Most data lives in db 0: size it once instead of growing by doubling.
    if let Some(db0) = dbs.first_mut() {
        db0.reserve(usize::try_from(reader.meta().keys.min(1 << 30)).unwrap_or(0));
    }
    // Reading and decoding run on a helper thread while this one inserts:
    // on a cold start the two halves overlap instead of adding up.
    const BATCH: usize = 4096;
    let (tx, rx) = mpsc::sync_channel::<Vec<codec::Record>>(16);
    let th2 = *th;
    let decoder = std::thread::Builder::new()
        .name("anykv-load".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let r = reader.read_records(&th2, |rec| {
                batch.push(rec);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let _ = tx.send(full);
                }
            });
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            r
        })
        .map_err(|e| format!("starting the loader thread: {e}"))?;
    let mut keys = 0u64;
    let mut expired = 0u64;
    let mut bad_db = None;
    for batch in rx {
        for r in batch {
            if r.expire_at != crate::db::NO_EXPIRE && r.expire_at <= now_ms {
                expired += 1;
                continue;
            }
            let Some(db) = dbs.get_mut(r.db as usize) else {
                bad_db = Some(r.db);
                continue;
            };
            let idx = db.load_insert(r.key, r.value);
            if r.expire_at != crate::db::NO_EXPIRE {
                db.set_expire(idx, r.expire_at);
            }
            keys += 1;
        }
    }
    decoder
        .join()
        .map_err(|_| format!("{}: the loader thread panicked", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(db) = bad_db {
        return Err(format!(
            "{}: holds database {db}, but 'databases' is {}",
            path.display(),
            dbs.len()
        ));
    }
    Ok((keys, expired))
}

/// Replays RESP commands (a log segment) through the command path.
fn replay(
    t: &mut Tenant,
    shared: &crate::shared::Shared,
    set: &crate::shared::Settings,
    session: &mut crate::client::Session,
    data: &[u8],
) -> Result<u64, String> {
    let mut p = crate::resp::RequestParser::new();
    let lim = crate::resp::ParseLimits::default();
    let mut out = crate::resp::Reply::new(2);
    let mut n = 0u64;
    loop {
        match p.next(data, &lim) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(format!("unparsable command: {e:?}")),
        }
        let args: Vec<&[u8]> = p.ranges().iter().map(|r| &data[r.clone()]).collect();
        out.buf.clear();
        crate::dispatch::dispatch(
            t,
            session,
            shared,
            set,
            &args,
            &mut out,
            crate::util::mstime(),
        );
        if out.buf.first() == Some(&b'-') {
            return Err(format!(
                "replaying {} failed: {}",
                String::from_utf8_lossy(args.first().copied().unwrap_or(b"")),
                String::from_utf8_lossy(&out.buf).trim_end()
            ));
        }
        n += 1;
    }
    if p.consumed() != data.len() {
        return Err("a command is cut short inside a frame".into());
    }
    Ok(n)
}

/// Loads the tenant's data at start: with `appendonly yes` the log's base
/// and segments, else `dbfilename`; then opens the log for appending.
pub fn startup(t: &mut Tenant, shared: &crate::shared::Shared) -> Result<LoadReport, String> {
    let cfg = shared.config.read().clone();
    let set = shared.settings();
    let th = codec::Thresholds::from_settings(&set);
    let p = &mut t.persist;
    p.dir = PathBuf::from(cfg.dir());
    p.dbfilename = cfg.dbfilename();
    p.appenddirname = cfg.appenddirname();
    p.appendfilename = cfg.appendfilename();
    p.repair = cfg.repair();
    p.enabled = true;
    let now = crate::util::mstime();
    let mut report = LoadReport::default();
    let start = Instant::now();
    if cfg.appendonly() {
        let dir = t.persist.aof_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let manifest = Manifest::load(&t.persist.manifest_path()).map_err(|e| e.to_string())?;
        match manifest {
            Some(m) => {
                if let Some((base, _)) = &m.base {
                    let (k, e) = load_snapshot_into(t, &dir.join(base), &th, now)?;
                    report.keys += k;
                    report.expired += e;
                }
                let info = std::rc::Rc::new(crate::client::ClientInfo::new(
                    0,
                    "127.0.0.1:0".parse().map_err(|_| "addr")?,
                    "127.0.0.1:0".parse().map_err(|_| "addr")?,
                    -1,
                    now,
                ));
                let mut session = crate::client::Session::new(info, true);
                session.unrestricted = true;
                for (name, _) in &m.incrs {
                    let path = dir.join(name);
                    if !path.exists() {
                        return Err(format!(
                            "{}: listed in the manifest but missing",
                            path.display()
                        ));
                    }
                    let repair = t.persist.repair;
                    let mut cmds = 0u64;
                    let tail = aof::read_segment(&path, repair, |payload, _| {
                        cmds += replay(t, shared, &set, &mut session, payload)?;
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
                    report.commands += cmds;
                    match tail {
                        Tail::Clean => {}
                        Tail::Torn { at, dropped } => {
                            tracing::warn!("{}: torn tail at byte {at}: truncated {dropped} bytes of an incomplete append (crash mid-write)", path.display());
                            metrics::counter!("anykv_aof_torn_tail_total").increment(1);
                        }
                        Tail::Repaired { at, dropped } => {
                            tracing::warn!(
                                "{}: --repair dropped {dropped} bytes from byte {at} (corrupt)",
                                path.display()
                            );
                            metrics::counter!("anykv_aof_repaired_total").increment(1);
                        }
                    }
                }
                report.keys = t.ks.total_keys() as u64;
                report.source = t.persist.manifest_path().display().to_string();
                t.persist.manifest = m;
            }
            None => {
                // First start with AOF on: begin from the snapshot if any.
                let snap = t.persist.snapshot_path();
                if snap.exists() {
                    let (k, e) = load_snapshot_into(t, &snap, &th, now)?;
                    report.keys = k;
                    report.expired = e;
                    report.source = snap.display().to_string();
                }
                let seq = 1;
                let base = t.persist.base_name(seq);
                save_sync(t, &dir.join(&base)).map_err(|e| format!("writing the AOF base: {e}"))?;
                t.persist.manifest = Manifest {
                    base: Some((base, seq)),
                    incrs: vec![(t.persist.incr_name(seq), seq)],
                };
                t.persist
                    .manifest
                    .save(&t.persist.manifest_path())
                    .map_err(|e| format!("writing the AOF manifest: {e}"))?;
            }
        }
        let last = t
            .persist
            .manifest
            .incrs
            .last()
            .map(|(n, _)| n.clone())
            .ok_or("the AOF manifest lists no segment")?;
        let policy = FsyncPolicy::parse(&cfg.appendfsync());
        t.persist.policy = policy;
        let w = AofWriter::open(&dir.join(last), policy, t.log.offset())
            .map_err(|e| format!("opening the AOF: {e}"))?;
        t.persist.aof_base_size = w.status.size.load(std::sync::atomic::Ordering::Relaxed);
        t.persist.aof = Some(w);
        t.log.enable_sink();
    } else {
        let snap = t.persist.snapshot_path();
        if snap.exists() {
            let (k, e) = load_snapshot_into(t, &snap, &th, now)?;
            report.keys = k;
            report.expired = e;
            report.source = snap.display().to_string();
        }
    }
    t.persist.loaded_keys = report.keys;
    t.persist.loaded_expired = report.expired;
    t.persist.dirty_at_save = t.dirty;
    if !report.source.is_empty() {
        tracing::info!(
            "DB loaded from {} in {:.3} s: {} keys, {} expired skipped, {} log commands",
            report.source,
            start.elapsed().as_secs_f64(),
            report.keys,
            report.expired,
            report.commands
        );
    }
    Ok(report)
}

/// SHUTDOWN's persistence: abort a running snapshot, make the log
/// durable, and save a snapshot if asked (SAVE) or if save points are set
/// (unless NOSAVE), as Redis does.
pub fn shutdown(t: &mut Tenant, save: Option<bool>, has_save_points: bool) -> Result<(), String> {
    abort_job(t);
    t.persist.flush_log(&mut t.log);
    if let Some(w) = t.persist.aof.as_mut() {
        w.flush().map_err(|e| format!("flushing the AOF: {e}"))?;
    }
    if save.unwrap_or(has_save_points) {
        let path = t.persist.snapshot_path();
        let keys = save_sync(t, &path).map_err(|e| format!("Error trying to save the DB: {e}"))?;
        tracing::info!("DB saved on disk ({keys} keys)");
    }
    Ok(())
}

/// DEBUG RELOAD: save, empty the keyspace, load the file back.
pub fn debug_reload(t: &mut Tenant, set: &crate::shared::Settings) -> Result<(), String> {
    save_command(t)?;
    let path = t.persist.snapshot_path();
    let n = t.ks.dbs.len();
    t.ks = crate::db::Keyspace::new(n);
    let th = codec::Thresholds::from_settings(set);
    load_snapshot_into(t, &path, &th, crate::util::mstime()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::codec::{decode_entry, Thresholds};
    use crate::db::{Table, Value, NO_EXPIRE};
    use crate::sds::Sds;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Upsert(u16, u8),
        Remove(u16),
        Expire(u16, i64),
        Persist(u16),
        Mutate(u16, u8),
        Step(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..400u16, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..400u16, any::<u8>()).prop_map(|(k, v)| Op::Upsert(k, v)),
            (0..400u16).prop_map(Op::Remove),
            (0..400u16, 1..1_000_000i64).prop_map(|(k, t)| Op::Expire(k, t)),
            (0..400u16).prop_map(Op::Persist),
            (0..400u16, any::<u8>()).prop_map(|(k, v)| Op::Mutate(k, v)),
            (1..50usize).prop_map(Op::Step),
        ]
    }

    type State = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

    fn state(t: &Table) -> State {
        t.iter()
            .map(|e| {
                let v = e.value.as_str().unwrap_or_default().to_vec();
                (e.key.as_bytes().to_vec(), (v, e.expire_at))
            })
            .collect()
    }

    fn key(k: u16) -> Vec<u8> {
        format!("key:{k}").into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A snapshot taken while the table keeps changing holds exactly
        /// the table as it was when the snapshot began: every key once,
        /// with its value and TTL of that instant, nothing added later.
        #[test]
        fn snapshot_is_the_table_at_its_start(initial in 0..300u16, ops in prop::collection::vec(op(), 0..400)) {
            let mut t = Table::new();
            for k in 0..initial {
                let idx = t.upsert(&key(k), Value::from_bytes(&[k as u8]), 0);
                if k % 3 == 0 {
                    t.set_expire(idx, i64::from(k) * 1000 + 1);
                }
            }
            let expected = state(&t);
            t.begin_snapshot(0);
            let mut out = Vec::new();
            let mut walk_done = false;
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if t.find(&key(k)).is_none() {
                            t.insert_new(Sds::from_slice(&key(k)), Value::from_bytes(&[v]), 0);
                        }
                    }
                    Op::Upsert(k, v) => {
                        t.upsert(&key(k), Value::from_bytes(&[v, v]), 0);
                    }
                    Op::Remove(k) => {
                        t.remove(&key(k));
                    }
                    Op::Expire(k, at) => {
                        if let Some(i) = t.find(&key(k)) {
                            t.set_expire(i, at);
                        }
                    }
                    Op::Persist(k) => {
                        if let Some(i) = t.find(&key(k)) {
                            t.set_expire(i, NO_EXPIRE);
                        }
                    }
                    Op::Mutate(k, v) => {
                        if let Some(i) = t.find(&key(k)) {
                            t.entry_mut(i).value = Value::from_bytes(&[v, 1, 2]);
                        }
                    }
                    Op::Step(n) => {
                        if !walk_done {
                            let (_, done) = t.snapshot_step(n, &mut out);
                            let (b, _) = t.snapshot_take_saved();
                            out.extend_from_slice(&b);
                            if done {
                                t.end_snapshot();
                                walk_done = true;
                            }
                        }
                    }
                }
            }
            while !walk_done {
                let (_, done) = t.snapshot_step(7, &mut out);
                let (b, _) = t.snapshot_take_saved();
                out.extend_from_slice(&b);
                if done {
                    t.end_snapshot();
                    walk_done = true;
                }
            }
            let th = Thresholds::default();
            let mut got = State::new();
            let mut input = &out[..];
            while !input.is_empty() {
                let r = decode_entry(&mut input, &th).unwrap();
                let v = r.value.as_str().unwrap_or_default().to_vec();
                let dup = got.insert(r.key.as_bytes().to_vec(), (v, r.expire_at));
                prop_assert!(dup.is_none(), "key {:?} written twice", String::from_utf8_lossy(r.key.as_bytes()));
            }
            prop_assert_eq!(got, expected);
        }
    }
}
