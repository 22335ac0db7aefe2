//! The node's usage log writer (docs/METERING.md): every interval, what
//! the executors handed to the meter becomes one record of
//! `<dir>/usage.log`, fsynced unless `appendfsync no`; on the way out, a
//! last record after the executors handed over their last counts.

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

impl Writer {
    /// Opens `dir/usage.log` and writes a record every `every`.
    pub fn start(
        dir: &Path,
        machine: &str,
        shared: Arc<Shared>,
        every: Duration,
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
                    Err(mpsc::RecvTimeoutError::Timeout) => write(&mut log, &shared, false),
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
