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
//! - [`bgsave`]: the background snapshot job; [`load`]: start-up.
//! - Restart loads the base (or `dbfilename`) then replays the segments;
//!   a torn tail is truncated, corruption stops the start with the file and
//!   offset (`--repair` salvages what precedes it).

pub mod aof;
pub mod bgsave;
pub mod codec;
pub mod files;
pub mod load;
pub mod replids;
pub mod snapshot;

pub use bgsave::{abort_job, detach_table, run_job, start_job, start_sync_job, step, SnapJob};
pub use load::{startup, LoadReport};

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use crate::tenant::Tenant;
use aof::{AofWriter, FsyncPolicy};
use files::Manifest;
use snapshot::{SnapshotMeta, SnapshotWriter};

/// Entries a background save writes per slice before yielding to clients.
pub const SLICE: usize = 2000;
/// Encoded bytes per snapshot block.
pub(crate) const BLOCK: usize = 256 << 10;

/// What a background snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// BGSAVE / save rules: `dir/dbfilename`.
    Save,
    /// BGREWRITEAOF: the new base of the append-only log.
    Rewrite,
    /// A replica's full sync (as Redis's diskless sync: an RDB child, so
    /// BGSAVE and SAVE wait for it like for a BGSAVE).
    Sync,
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
    /// The replication ids are newer than the data on disk: a replica's
    /// full sync replaced the data in memory, and no snapshot or log base
    /// of it is written yet. A restart must not claim those ids for the
    /// older data it finds (see `replids`). Each kind of file catches up on
    /// its own; a start checks the one it loads.
    pub ids_behind: replids::Behind,
    /// `Tenant::dirty` at the last save (changes since = dirty - this).
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
    /// `dir` at start, where the log lives.
    pub aof_root: PathBuf,
}

impl Default for Persist {
    fn default() -> Self {
        Persist {
            dir: PathBuf::from("."),
            dbfilename: "dump.akv".into(),
            appenddirname: "appendonlydir".into(),
            appendfilename: "appendonly.aof".into(),
            aof: None,
            manifest: Manifest::default(),
            job: None,
            lastsave: crate::util::mstime() / 1000,
            last_bgsave_ok: true,
            last_bgsave_time_sec: -1,
            saves: 0,
            ids_behind: replids::Behind::default(),
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
            aof_root: PathBuf::from("."),
        }
    }
}

impl Persist {
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }

    /// The log's directory: `dir` as it was at start (CONFIG SET dir moves
    /// later snapshots, not a log in use).
    pub fn aof_dir(&self) -> PathBuf {
        self.aof_root.join(&self.appenddirname)
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
            .is_some_and(|j| matches!(j.purpose, Purpose::Save | Purpose::Sync))
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
                }
            }
        }
    }

    /// Queues the logged effects and writes them to the file (and fsyncs,
    /// with `fsync`). A no-op when the log is off.
    pub fn write_log(&mut self, log: &mut crate::proplog::PropLog, fsync: bool) -> io::Result<()> {
        self.flush_log(log);
        match self.aof.as_mut() {
            Some(w) if fsync => w.flush(),
            Some(w) => w.write_pending(),
            None => Ok(()),
        }
    }
}

pub(crate) fn meta_for(t: &Tenant) -> SnapshotMeta {
    SnapshotMeta {
        created_ms: crate::util::mstime(),
        offset: t.log.offset(),
        databases: t.ks.dbs.len() as u32,
        // An estimate for the loader to pre-size with (the trailer has the
        // exact count).
        keys: t.ks.total_keys() as u64,
        // The replication ids go with the offset, so a restart continues
        // the same history (see `crate::repl`).
        aux: [
            ("anykv-ver".into(), crate::shared::ANYKV_VERSION.into()),
            ("redis-ver".into(), crate::shared::REDIS_VERSION.into()),
        ]
        .into_iter()
        .chain(t.repl.to_aux())
        // (Functions are data: a snapshot holds them, as Redis's RDB; so
        // are a customer database's users.)
        .chain(t.functions.to_aux())
        .chain(users_aux(t))
        .chain([(
            "repl-stream-db".to_string(),
            t.log
                .stream_db()
                .map_or("-1".to_string(), |d| d.to_string()),
        )])
        .collect(),
    }
}

/// The temporary file a snapshot of `path` is written to (its directory
/// made if missing): renamed over `path` once complete and synced.
fn create_temp(path: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = files::temp_name(path);
    let f = std::fs::File::create(&tmp)?;
    Ok((tmp, f))
}

pub(crate) fn write_snapshot_file(
    path: &Path,
    meta: &SnapshotMeta,
    blocks: impl FnOnce(&mut dyn FnMut(&[u8], u32) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<u64> {
    let (tmp, f) = create_temp(path)?;
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

/// Whether a snapshot file of this name is a Redis RDB file (`*.rdb`):
/// the format follows the name, so anykv never writes its own format
/// under a name redis-server and RDB tools would open.
pub fn is_rdb_name(name: &str) -> bool {
    name.len() >= 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|e| e.eq_ignore_ascii_case(".rdb"))
}

/// An RDB snapshot's metadata: Redis's AUX fields (the replication id
/// and offset among them) with anykv's own (its version, the second
/// replication id and where it ends), so a restart from the file
/// continues the same history; the databases' sizes; the libraries.
pub struct RdbFileMeta {
    pub aux: Vec<(String, String)>,
    pub sizes: Vec<(u64, u64)>,
    pub functions: Vec<Vec<u8>>,
}

/// A customer database's users as a snapshot AUX field (Redis ignores
/// fields it does not know).
fn users_aux(t: &Tenant) -> Option<(String, String)> {
    t.users_file
        .as_ref()
        .map(|f| (crate::acl::AUX_KEY.to_string(), crate::util::hex(f)))
}

pub(crate) fn rdb_meta_for(t: &Tenant) -> RdbFileMeta {
    let stream_db = t.log.stream_db().map_or(0, |d| d as i64).to_string();
    let mut aux: Vec<(String, String)> = crate::repl::primary::rdb_aux(t)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "repl-stream-db" {
                stream_db.clone()
            } else {
                v
            };
            (k.to_string(), v)
        })
        .collect();
    aux.push(("anykv-ver".into(), crate::shared::ANYKV_VERSION.into()));
    aux.extend(t.repl.to_aux().into_iter().filter(|(k, _)| k != "repl-id"));
    RdbFileMeta {
        aux,
        sizes: t
            .ks
            .dbs
            .iter()
            .map(|d| (d.len() as u64, d.volatile_len() as u64))
            .collect(),
        functions: t.functions.codes(),
    }
}

/// Writes an RDB file at `path` (through a temporary file, renamed once
/// synced) from the snapshot blocks `blocks` feeds.
pub(crate) fn write_rdb_file(
    path: &Path,
    meta: &RdbFileMeta,
    blocks: impl FnOnce(&mut dyn FnMut(&[u8], u32) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<u64> {
    let (tmp, f) = create_temp(path)?;
    let aux: Vec<(&str, &str)> = meta
        .aux
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let written = (|| {
        let mut w = crate::rdb::RdbWriter::new(BufWriter::with_capacity(1 << 20, f), &aux)?;
        for code in &meta.functions {
            w.function(code)?;
        }
        let keys = crate::repl::fullsync::transcode(&mut w, &meta.sizes, blocks)?;
        let bw = w.finish()?;
        let f = bw.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok::<u64, io::Error>(keys)
    })();
    let keys = match written {
        Ok(k) => k,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    files::rename_durably(&tmp, path)?;
    Ok(keys)
}

/// The keyspace as snapshot blocks, for `push` (SAVE's walk).
fn keyspace_blocks(
    ks: &crate::db::Keyspace,
    push: &mut dyn FnMut(&[u8], u32) -> io::Result<()>,
) -> io::Result<()> {
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
}

/// SAVE: writes the whole keyspace now, on this thread (as Redis's SAVE
/// blocks the server), as RDB or anykv's snapshot as `path` is named.
pub fn save_sync(t: &mut Tenant, path: &Path) -> io::Result<u64> {
    let rdb = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_rdb_name);
    if rdb {
        let meta = rdb_meta_for(t);
        return write_rdb_file(path, &meta, |push| keyspace_blocks(&t.ks, push));
    }
    let meta = meta_for(t);
    let ks = &t.ks;
    let keys = write_snapshot_file(path, &meta, |push| keyspace_blocks(ks, push))?;
    Ok(keys)
}

/// Marks a successful save of the snapshot file.
fn saved_ok(t: &mut Tenant) {
    t.persist.lastsave = crate::util::mstime() / 1000;
    t.persist.dirty_at_save = t.dirty;
    t.persist.saves += 1;
}

/// SAVE's whole path: refuses while a background save runs.
/// The error for tenants without a data directory (in-process tenants of
/// tests and fuzzing: they must not write files into the working dir).
pub const NOT_PERSISTENT: &str = "ERR persistence is not configured for this tenant";

pub fn save_command(t: &mut Tenant) -> Result<(), String> {
    if !t.persist.enabled {
        return Err(NOT_PERSISTENT.into());
    }
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

/// Writes the round's queued log once all connections ready now have
/// added their batches (they wait for it before replying).
pub async fn write_round(tenant: std::rc::Rc<std::cell::RefCell<Tenant>>) {
    // Behind every task already runnable: their batches join this write.
    tokio::task::yield_now().await;
    let mut t = tenant.borrow_mut();
    let t = &mut *t;
    t.persist.write_armed = false;
    // A failed write is logged and refused further writes in the writer.
    let _ = t.persist.write_log(&mut t.log, false);
}

/// Starts whatever was requested (by BGSAVE, BGREWRITEAOF, a save rule or
/// auto-rewrite); called by connections after a batch and by cron.
pub fn kick(tenant: &std::rc::Rc<std::cell::RefCell<Tenant>>) {
    let start = {
        let mut t = tenant.borrow_mut();
        if let Some(job) = t.persist.job.as_mut() {
            // A replica's full sync, started by its PSYNC.
            let pick_up = !job.driven;
            job.driven = true;
            drop(t);
            if pick_up {
                tenant.borrow().spawn(run_job(tenant.clone()));
            }
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
                    Purpose::Sync => {}
                }
                false
            }
        }
    };
    if start {
        tenant.borrow().spawn(run_job(tenant.clone()));
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
        let _ = t.persist.write_log(&mut t.log, true);
        t.persist.aof = None;
        t.log.disable_sink();
        tracing::info!("Background append only file disabled");
    }
}

/// SHUTDOWN's persistence: abort a running snapshot, make the log
/// durable, and save a snapshot if asked (SAVE) or if save points are set
/// (unless NOSAVE), as Redis does.
pub fn shutdown(t: &mut Tenant, save: Option<bool>, has_save_points: bool) -> Result<(), String> {
    abort_job(t);
    t.persist
        .write_log(&mut t.log, true)
        .map_err(|e| format!("flushing the AOF: {e}"))?;
    if save.unwrap_or(has_save_points) {
        let path = t.persist.snapshot_path();
        let keys = save_sync(t, &path).map_err(|e| format!("Error trying to save the DB: {e}"))?;
        tracing::info!("DB saved on disk ({keys} keys)");
    }
    if t.persist.enabled {
        // Where the data on disk ends: the log's end when it is on, else
        // the snapshot just saved (if not saved, a restart finds an older
        // snapshot and continues under a new id).
        let clean = t.log.offset();
        replids::save(&t.persist.dir, &t.repl, Some(clean), t.persist.ids_behind)
            .map_err(|e| format!("writing {}: {e}", replids::FILE))?;
    }
    Ok(())
}

/// Records new replication ids durably (a promotion, a full sync), so a
/// crash cannot bring back ids the node no longer follows.
pub fn ids_changed(t: &mut Tenant) {
    if t.persist.enabled {
        if let Err(e) = replids::save(&t.persist.dir, &t.repl, None, t.persist.ids_behind) {
            tracing::error!("writing {}: {e}", replids::FILE);
        }
    }
}

/// DEBUG RELOAD: save, empty the keyspace, load the file back.
pub fn debug_reload(t: &mut Tenant, set: &crate::shared::Settings) -> Result<(), String> {
    save_command(t)?;
    let path = t.persist.snapshot_path();
    let n = t.ks.dbs.len();
    t.ks = crate::db::Keyspace::new(n);
    let th = codec::Thresholds::from_settings(set);
    load::load_any(t, &path, &th, crate::util::mstime()).map(|_| ())
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
