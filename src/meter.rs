//! The node's usage log writer (docs/METERING.md): every interval, what
//! the executors handed to the meter becomes one record of
//! `<dir>/usage.log`, fsynced unless `appendfsync no`; on the way out, a
//! last record after the executors handed over their last counts. Records
//! the sidecar took (`POST /admin/usage/taken`) are dropped from the file
//! as it goes.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anykv_server::meter::UsageLog;
use anykv_server::shared::Shared;

/// The writer thread.
pub struct Writer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn now_ms() -> i64 {
    anykv_server::util::mstime()
}

/// One record of what the meter holds (usage that could not be written is
/// given back for the next).
fn write(log: &mut UsageLog, shared: &Shared, last: bool) {
    let taken = shared.meter.take();
    let fsync = shared.config.read().appendfsync() != "no";
    match log.append(&taken, now_ms(), fsync, last) {
        Ok(Some(seq)) => tracing::debug!(seq, "usage record written"),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("{e}; the usage goes into the next record");
            shared.meter.restore(taken);
        }
    }
}

/// How often a compaction may run (it rewrites the file).
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// What the writer keeps of the log besides its records: the size limit,
/// how long taken records stay, when it last compacted.
#[derive(Clone, Debug)]
pub struct Keep {
    /// `--usage-log-max-mb`, in bytes (0: no limit).
    pub max_bytes: u64,
    /// `--usage-keep-hours`, in ms.
    pub taken_ms: i64,
    pub last: Option<std::time::Instant>,
}

/// Drops the records the sidecar has taken (once they are `keep.taken_ms`
/// old) from the file, and the oldest others when it is over its limit
/// (see [`UsageLog::compact`]).
fn compact(log: &mut UsageLog, shared: &Shared, keep: &mut Keep) {
    let taken = shared.meter.taken_upto(log.log_id());
    let kept_from = now_ms().saturating_sub(keep.taken_ms);
    let due = keep.last.is_none_or(|t| t.elapsed() >= COMPACT_EVERY);
    if !due || !log.wants_compaction(taken, kept_from, keep.max_bytes) {
        return;
    }
    keep.last = Some(std::time::Instant::now());
    match log.compact(taken, kept_from, keep.max_bytes) {
        Ok(c) => {
            if c.young > 0 {
                tracing::warn!(
                    dropped = c.young,
                    "usage log over --usage-log-max-mb: dropped records the sidecar took less \
                     than --usage-keep-hours ago (a sidecar restored from an older backup would \
                     miss them); raise the limit"
                );
            }
            if c.untaken > 0 {
                tracing::warn!(
                    dropped = c.untaken,
                    "usage log over --usage-log-max-mb: dropped its oldest records, which the \
                     sidecar had not taken (their usage is not billed); is the sidecar pulling?"
                );
            }
            tracing::debug!(taken = c.taken, bytes = c.len, "usage log compacted");
        }
        Err(e) => tracing::warn!("compacting the usage log: {e}"),
    }
}

impl Writer {
    /// Opens `dir/usage.log` and writes a record every `every`, dropping
    /// what the sidecar took as `keep` says.
    pub fn start(
        dir: &Path,
        machine: &str,
        shared: Arc<Shared>,
        every: Duration,
        mut keep: Keep,
    ) -> anyhow::Result<Writer> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut log = UsageLog::open(dir, machine, &shared.run_id, now_ms())?;
        tracing::info!(
            "usage log {} (log {}, last record {})",
            log.path().display(),
            log.log_id(),
            log.seq()
        );
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("usage-log".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        write(&mut log, &shared, false);
                        compact(&mut log, &shared, &mut keep);
                    }
                    // Stopping: the last record, marking a clean end.
                    Ok(()) => return write(&mut log, &shared, true),
                    // The node dropped its handle without stopping it.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return write(&mut log, &shared, false)
                    }
                }
            })
            .context("starting the usage log thread")?;
        Ok(Writer { stop, thread })
    }

    /// Writes the last record and stops.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
