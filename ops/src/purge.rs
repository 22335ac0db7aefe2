//! Purging a deleted database's files after the grace period.
//!
//! `DELETE /extensions/{id}` revokes access at once: the database leaves
//! the cluster's catalog, every node that held it closes its connections
//! and stops serving it. Its files stay on those nodes (`<dir>/tenants/<id>`)
//! for `--purge-after-secs` (7 days by default), so an operator can bring
//! back a database deleted by mistake by putting its catalog entry back.
//! Then this task asks every node `/cluster` lists to remove them
//! (`DELETE /admin/tenants/{id}/data`); once every node answered, the row
//! is marked purged. A node that does not answer is asked again at the
//! next check.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use crate::api::Api;

/// The default grace period: 7 days.
pub const DEFAULT_AFTER_SECS: i64 = 7 * 86_400;

/// Deleted databases whose grace period is over and whose files are not
/// purged yet: (fly id, tenant id).
fn due(api: &Api, now: i64) -> Result<Vec<(String, u64)>, String> {
    let store = api.store.lock();
    let mut q = store
        .conn()
        .prepare(
            "SELECT fly_id, tenant_id FROM databases
             WHERE status = 'deleted' AND purged_at = 0 AND deleted_at > 0
               AND deleted_at + ?1 <= ?2",
        )
        .map_err(|e| e.to_string())?;
    let rows = q
        .query_map(params![api.purge_after_secs, now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(|e| e.to_string())
}

/// One check: every due database's files removed from every node.
pub async fn check(api: &Api) -> Result<usize, String> {
    let due = due(api, crate::unix_now())?;
    if due.is_empty() {
        return Ok(0);
    }
    let nodes = crate::metering::all_members(api).await?;
    let mut purged = 0;
    for (fly_id, tenant) in due {
        // Put back during its grace period (an operator's PUT): not purged.
        match api.cluster.get(&format!("/admin/tenants/{tenant}")).await {
            Ok((404, _)) => {}
            Ok((code, _)) => {
                tracing::debug!(id = %fly_id, "not purged: the catalog has it (HTTP {code})");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        // Every member must say its files are gone; none listed is no one
        // asked.
        let mut all = !nodes.is_empty();
        for crate::metering::Member { machine, http, .. } in &nodes {
            let Some(addr) = http else {
                all = false;
                continue;
            };
            let path = format!("/admin/tenants/{tenant}/data");
            match api.cluster.delete_at(addr, &path).await {
                Ok((200, _)) => {}
                Ok((code, body)) => {
                    all = false;
                    tracing::warn!(id = %fly_id, node = %machine, "purge refused: HTTP {code}: {body}");
                }
                Err(e) => {
                    all = false;
                    tracing::debug!(id = %fly_id, node = %machine, "purge not done: {e}");
                }
            }
        }
        if all {
            let done = api.store.lock().transaction(|tx| {
                tx.execute(
                    "UPDATE databases SET purged_at = ?2 WHERE fly_id = ?1",
                    params![fly_id, crate::unix_now()],
                )
            });
            match done {
                Ok(_) => {
                    tracing::info!(id = %fly_id, tenant, "deleted database purged from every node");
                    purged += 1;
                }
                Err(e) => tracing::warn!(id = %fly_id, "recording the purge: {e}"),
            }
        }
    }
    Ok(purged)
}

/// Checks every `every`, for ever.
pub async fn run(api: Arc<Api>, every: Duration) {
    loop {
        if let Err(e) = check(&api).await {
            tracing::warn!("purging deleted databases: {e}");
        }
        tokio::time::sleep(every).await;
    }
}
