//! Start-up: load the snapshot (or the log's base) and replay the log's
//! segments, repairing a torn tail and refusing corruption.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use super::aof::{self, AofWriter, FsyncPolicy, Tail};
use super::files::Manifest;
use super::{codec, save_sync, snapshot};
use crate::tenant::Tenant;

/// What a start-up load found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub keys: u64,
    pub expired: u64,
    pub commands: u64,
    pub source: String,
}

/// Which keys whose TTL passed a snapshot load keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Skip them: a primary loading `dbfilename`, as Redis loading an RDB
    /// file (nothing else will ever mention them).
    Skip,
    /// Keep them with their past TTL: the base of the append-only log,
    /// whose segments may still `PERSIST` or change them (Redis keeps them
    /// in an AOF preamble), and a replica's full sync (its primary's `DEL`
    /// follows). Expiry deletes them afterwards, logging `DEL`.
    Keep,
}

/// Loads a snapshot file into the tenant's (empty) keyspace and takes its
/// propagation-log offset and replication ids, so a restart continues the
/// same history. Returns (keys loaded, expired keys skipped).
pub(super) fn load_snapshot_into(
    t: &mut Tenant,
    path: &Path,
    th: &codec::Thresholds,
    now_ms: i64,
    expired_keys: Expired,
) -> Result<(u64, u64), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = snapshot::SnapshotReader::new(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    t.log.set_offset(reader.meta().offset);
    let codes = crate::script::function::Functions::codes_in_aux(&reader.meta().aux)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    t.users_file = crate::acl::users_in_aux(&reader.meta().aux)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mem = crate::script::eval::memory_cap(t);
    t.functions =
        crate::script::function::Functions::from_codes(codes.iter().map(|c| c.as_slice()), mem)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(ids) = crate::repl::ReplIds::from_aux(&reader.meta().aux) {
        t.repl = ids;
    }
    // Where the stream was at that offset (a replica continuing from here
    // starts in that database).
    let stream_db = reader
        .meta()
        .aux
        .iter()
        .find(|(k, _)| k == "repl-stream-db")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    t.log.set_stream_db(stream_db);
    let dbs = &mut t.ks.dbs;
    // Most data lives in db 0: size it once instead of growing by doubling.
    if let Some(db0) = dbs.first_mut() {
        db0.reserve(usize::try_from(reader.meta().keys.min(1 << 30)).unwrap_or(0));
    }
    // Reading, decoding and hashing run on a helper thread while this one
    // inserts: on a cold start the halves overlap instead of adding up.
    // Each batch is sorted by hash-index bucket, so the inserts walk the
    // index upwards instead of jumping around it (cache misses dominate).
    const BATCH: usize = 1 << 16;
    let hasher = dbs.first().map(|d| d.hasher()).unwrap_or_default();
    let mask = dbs.first().map(|d| d.buckets() as u64 - 1).unwrap_or(0);
    let (tx, rx) = mpsc::sync_channel::<Vec<(u64, codec::Record)>>(4);
    let th2 = *th;
    // The records become the tenant's keys: charge them to it from the start.
    let acct = t.mem.clone();
    let decoder = std::thread::Builder::new()
        .name("anykv-load".into())
        .spawn(move || {
            crate::alloc::with_account(&acct, || {
                use std::hash::BuildHasher;
                let ship = |mut b: Vec<(u64, codec::Record)>| {
                    b.sort_unstable_by_key(|(h, _)| *h & mask);
                    let _ = tx.send(b);
                };
                let mut batch = Vec::with_capacity(BATCH);
                let r = reader.read_records(&th2, |rec| {
                    let h = hasher.hash_one(rec.key.as_bytes());
                    batch.push((h, rec));
                    if batch.len() == BATCH {
                        ship(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                    }
                });
                if !batch.is_empty() {
                    ship(batch);
                }
                r
            })
        })
        .map_err(|e| format!("starting the loader thread: {e}"))?;
    let mut keys = 0u64;
    let mut expired = 0u64;
    let mut bad_db = None;
    for batch in rx {
        for (h, r) in batch {
            if expired_keys == Expired::Skip
                && r.expire_at != crate::db::NO_EXPIRE
                && r.expire_at <= now_ms
            {
                expired += 1;
                continue;
            }
            let Some(db) = dbs.get_mut(r.db as usize) else {
                bad_db = Some(r.db);
                continue;
            };
            // The hash was made with db 0's hasher.
            let idx = if r.db == 0 {
                db.load_insert_hashed(h, r.key, r.value)
            } else {
                db.load_insert(r.key, r.value)
            };
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

/// Whether `path` holds a Redis RDB file rather than an anykv snapshot
/// (migrating in: a redis-server's `dump.rdb`, or `redis-cli --rdb`'s).
fn is_rdb(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"REDIS"
}

/// Loads a Redis RDB file as a primary does: keys whose TTL passed are
/// skipped; a redis-server's file starts a new replication history (fresh
/// ids, offset 0), one anykv wrote continues its own. The next save
/// writes the format `dbfilename` names.
fn load_rdb_into(
    t: &mut Tenant,
    path: &Path,
    th: &codec::Thresholds,
    now_ms: i64,
) -> Result<(u64, u64), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (info, expired) = crate::rdb::read_into(f, th, &mut t.ks, Some(now_ms))
        .map_err(|e| format!("{} (Redis RDB): {e}", path.display()))?;
    t.users_file = crate::acl::users_in_aux(&info.aux)
        .map_err(|e| format!("{} (Redis RDB): {e}", path.display()))?;
    let mem = crate::script::eval::memory_cap(t);
    t.functions = crate::script::function::Functions::from_codes(
        info.functions.iter().map(|c| c.as_slice()),
        mem,
    )
    .map_err(|e| format!("{} (Redis RDB): {e}", path.display()))?;
    // One anykv wrote continues its history: the log's offset, both
    // replication ids and the database the stream was in (a Redis's own
    // file starts a new history, as a Redis restarted from it does).
    if info.aux("anykv-ver").is_some() {
        if let Some(ids) = crate::repl::ReplIds::from_aux(&info.aux) {
            t.repl = ids;
            if let Some(off) = info.aux("repl-offset").and_then(|v| v.parse().ok()) {
                t.log.set_offset(off);
            }
            t.log.set_stream_db(
                info.aux("repl-stream-db")
                    .and_then(|v| v.parse::<usize>().ok()),
            );
        }
    }
    tracing::info!("{} is a Redis RDB file: loaded it", path.display());
    Ok((info.keys - expired, expired))
}

/// Loads a snapshot file of either format (as its first bytes say).
pub(super) fn load_any(
    t: &mut Tenant,
    path: &Path,
    th: &codec::Thresholds,
    now_ms: i64,
) -> Result<(u64, u64), String> {
    if is_rdb(path) {
        load_rdb_into(t, path, th, now_ms)
    } else {
        load_snapshot_into(t, path, th, now_ms, Expired::Skip)
    }
}

/// Loads the tenant's data at start: with `appendonly yes` the log's base
/// and segments, else `dbfilename`; then opens the log for appending.
/// Loads `dir/dbfilename` when it exists, recording it in `report`.
fn load_snapshot_if_any(
    t: &mut Tenant,
    th: &codec::Thresholds,
    now: i64,
    report: &mut LoadReport,
) -> Result<(), String> {
    let mut snap = t.persist.snapshot_path();
    // No snapshot under the configured name, but one under the other
    // usual name: moving in (a redis-server's `dump.rdb`), or switching to
    // writing RDB (`dbfilename dump.rdb` over anykv's own `dump.akv`).
    // Starting empty there would lose the data at the next save, so the
    // newest of them is loaded, as what its first bytes say.
    if !snap.exists() {
        let newest = ["dump.rdb", "dump.akv"]
            .iter()
            .map(|name| t.persist.dir.join(name))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max_by_key(|(modified, _)| *modified);
        if let Some((_, other)) = newest {
            tracing::info!("no {} but {}: loading it", snap.display(), other.display());
            snap = other;
        }
    }
    if snap.exists() {
        let (k, e) = load_any(t, &snap, th, now)?;
        report.keys = k;
        report.expired = e;
        report.source = snap.display().to_string();
    }
    Ok(())
}

/// Makes the users a snapshot brought (`Tenant::users_file`) a customer
/// database's users.
fn install_users(t: &Tenant, shared: &crate::shared::Shared) -> Result<(), String> {
    if t.is_customer() {
        shared
            .acl
            .install(t.id, t.users_file.as_deref(), "the snapshot's users")?;
    }
    Ok(())
}

pub fn startup(t: &mut Tenant, shared: &crate::shared::Shared) -> Result<LoadReport, String> {
    let cfg = shared.config.read().clone();
    let set = shared.settings();
    let th = codec::Thresholds::from_settings(&set);
    let dir = t.data_dir(&cfg.dir());
    if t.is_customer() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let p = &mut t.persist;
    p.dir = dir;
    p.aof_root = p.dir.clone();
    p.dbfilename = cfg.dbfilename();
    p.appenddirname = cfg.appenddirname();
    p.appendfilename = cfg.appendfilename();
    p.repair = cfg.repair();
    p.enabled = true;
    super::files::remove_stale_temps(&t.persist.dir);
    super::files::remove_stale_temps(&t.persist.aof_dir());
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
                    let (k, e) = load_snapshot_into(t, &dir.join(base), &th, now, Expired::Keep)?;
                    report.keys += k;
                    report.expired += e;
                }
                // The base's users, before the segments' ACL changes
                // apply to them.
                install_users(t, shared)?;
                // The segments continue one stream: the first starts in the
                // database the stream was in when the base was taken (a
                // replica's log holds its primary's bytes as they were,
                // which name a database only when it changes); a segment
                // this node's own writes began starts with its SELECT.
                let mut applier =
                    crate::repl::apply::Applier::in_db(t.log.stream_db().unwrap_or(0));
                for (name, _) in &m.incrs {
                    let path = dir.join(name);
                    if !path.exists() {
                        return Err(format!(
                            "{}: listed in the manifest but missing",
                            path.display()
                        ));
                    }
                    // Expiry is off (the effects were decided when they
                    // were logged); the bytes continue the log's offsets.
                    let repair = t.persist.repair;
                    let mut cmds = 0u64;
                    let tail = aof::read_segment(&path, repair, |payload, _| {
                        let before = applier.commands;
                        applier
                            .feed(t, shared, &set, payload, crate::util::mstime())
                            .map_err(|e| e.to_string())?;
                        if applier.pending() > 0 {
                            return Err("a command is cut short inside a frame".into());
                        }
                        cmds += applier.commands - before;
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
                load_snapshot_if_any(t, &th, now, &mut report)?;
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
        let w = AofWriter::open(&dir.join(last), policy, t.log.offset(), &t.mem)
            .map_err(|e| format!("opening the AOF: {e}"))?;
        t.persist.aof_base_size = w.status.size.load(std::sync::atomic::Ordering::Relaxed);
        t.persist.aof = Some(w);
        t.log.enable_sink();
    } else {
        load_snapshot_if_any(t, &th, now, &mut report)?;
    }
    // The users the data holds (after a log's replay: as it left them).
    install_users(t, shared)?;
    let dir = t.persist.dir.clone();
    let loaded = t.log.offset();
    super::replids::restore(&dir, &mut t.repl, loaded, cfg.appendonly())
        .map_err(|e| format!("{}: {e}", dir.join(super::replids::FILE).display()))?;
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
