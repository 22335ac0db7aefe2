//! Retiring a rotation's old token once the app switched to the new one.
//!
//! A rotation (the dashboard's "Issue a new token") leaves two tokens
//! valid: the app keeps working on the old one until its secret is set to
//! the new one and it restarts. An admin may retire the old token by hand;
//! otherwise this task does it once the switch is over, which it learns
//! from the nodes: every node keeps, per database, when it last saw each
//! token in use (a login, or a connection still open: marked every second)
//! and answers `GET /admin/tenants/{id}/tokens`. The old token is retired
//! when, in one check that reached every member the gossip does not hold
//! down,
//!
//! - some node has seen the new token in use since the rotation, and
//! - no node has seen the old one for `--retire-idle-secs` (10 minutes by
//!   default; 0 leaves retiring to the admin).
//!
//! An app that keeps a connection open on the old token, however idle,
//! keeps it valid. What the nodes reported is kept (`rotations` table), so
//! a node that restarts, or a sidecar that restarts, forgets nothing the
//! decision needs: the old token counts as in use at the rotation's start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use serde_json::Value;

use crate::api::Api;

/// The default: an old token unused for 10 minutes is retired.
pub const DEFAULT_IDLE_SECS: u64 = 600;

/// A rotation under way, with its tokens' digests (hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rotation {
    fly_id: String,
    tenant_id: u64,
    old: String,
    new: String,
    /// Unix ms when a node last saw each in use (0: never).
    old_seen_at: i64,
    new_seen_at: i64,
}

/// The rotations under way on databases not deleted.
fn under_way(api: &Api) -> Result<Vec<Rotation>, String> {
    let rows: Vec<(String, u64, String, String, i64, i64)> = {
        let store = api.store.lock();
        let mut q = store
            .conn()
            .prepare(
                "SELECT d.fly_id, d.tenant_id, d.token_sealed, d.next_token_sealed,
                        r.old_seen_at, r.new_seen_at
                 FROM rotations r JOIN databases d ON d.fly_id = r.fly_id
                 WHERE d.status NOT IN ('deleted', 'error') AND d.next_token_sealed != ''",
            )
            .map_err(|e| e.to_string())?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| e.to_string())?
    };
    let mut out = Vec::new();
    for (fly_id, tenant_id, old, new, old_seen_at, new_seen_at) in rows {
        let open = |sealed: &str| api.sealer.open(sealed, &fly_id);
        match (open(&old), open(&new)) {
            (Ok(old), Ok(new)) => out.push(Rotation {
                tenant_id,
                old: crate::tokens::digest_hex(&old),
                new: crate::tokens::digest_hex(&new),
                old_seen_at,
                new_seen_at,
                fly_id,
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(id = %fly_id, "a rotated token does not open: {e}");
            }
        }
    }
    Ok(out)
}

/// A node's `GET /admin/tenants/{id}/tokens` answer as digest → when it
/// last saw the token in use (Unix ms, from its `idle_ms` and `now`).
fn last_use(body: &str, now_ms: i64) -> Result<HashMap<String, i64>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let tokens = v["tokens"]
        .as_array()
        .ok_or_else(|| "no \"tokens\" array".to_string())?;
    let mut out = HashMap::new();
    for t in tokens {
        let (Some(sha), Some(idle)) = (t["sha256"].as_str(), t["idle_ms"].as_u64()) else {
            return Err(format!("a token without sha256 or idle_ms: {t}"));
        };
        out.insert(
            sha.to_ascii_lowercase(),
            now_ms.saturating_sub(idle.min(i64::MAX as u64) as i64),
        );
    }
    Ok(out)
}

/// Whether the old token is due to go: every member answered, the new
/// token was seen in use, and the old one was not for `idle_ms`.
fn due(complete: bool, old_seen_at: i64, new_seen_at: i64, now_ms: i64, idle_ms: i64) -> bool {
    complete && new_seen_at > 0 && now_ms.saturating_sub(old_seen_at) >= idle_ms
}

/// One check of every rotation under way; how many old tokens it retired.
pub async fn check(api: &Api, idle: Duration) -> Result<usize, String> {
    let rotations = under_way(api)?;
    if rotations.is_empty() {
        return Ok(0);
    }
    let members = crate::metering::all_members(api).await?;
    let mut retired = 0;
    for r in rotations {
        let now = crate::unix_now_ms();
        // A down member has no connections; any other must answer.
        let mut complete = members.iter().any(|m| !m.down);
        let (mut old_seen, mut new_seen) = (r.old_seen_at, r.new_seen_at);
        for m in members.iter().filter(|m| !m.down) {
            let Some(addr) = &m.http else {
                complete = false;
                continue;
            };
            let path = format!("/admin/tenants/{}/tokens", r.tenant_id);
            let seen = match api.cluster.get_at(addr, &path).await {
                Ok((200, body)) => last_use(&body, now),
                Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
                Err(e) => Err(e.to_string()),
            };
            match seen {
                Ok(seen) => {
                    if let Some(t) = seen.get(&r.old) {
                        old_seen = old_seen.max(*t);
                    }
                    if let Some(t) = seen.get(&r.new) {
                        new_seen = new_seen.max(*t);
                    }
                }
                Err(e) => {
                    complete = false;
                    tracing::debug!(id = %r.fly_id, node = %m.machine, "token use not known: {e}");
                }
            }
        }
        api.store
            .lock()
            .conn()
            .execute(
                "UPDATE rotations SET old_seen_at = MAX(old_seen_at, ?2),
                    new_seen_at = MAX(new_seen_at, ?3) WHERE fly_id = ?1",
                params![r.fly_id, old_seen, new_seen],
            )
            .map_err(|e| e.to_string())?;
        if due(complete, old_seen, new_seen, now, idle.as_millis() as i64)
            && retire(api, &r).await?
        {
            retired += 1;
        }
    }
    Ok(retired)
}

/// Retires `r`'s old token, unless the database changed meanwhile (its
/// rotation ended or began again, or it was deleted): true when retired.
async fn retire(api: &Api, r: &Rotation) -> Result<bool, String> {
    let _writing = api.writes.lock().await;
    let db = api
        .store
        .lock()
        .database(&r.fly_id)
        .map_err(|e| e.to_string())?;
    let Some(db) = db else {
        return Ok(false);
    };
    let next = api.sealer.open(&db.next_token_sealed, &db.fly_id);
    let same = !matches!(db.status.as_str(), "deleted" | "error")
        && !db.next_token_sealed.is_empty()
        && next.is_ok_and(|t| crate::tokens::digest_hex(&t) == r.new);
    if !same {
        return Ok(false);
    }
    let change = crate::api::Change {
        plan: None,
        read_regions: None,
        tokens: Some((db.next_token_sealed.clone(), String::new())),
    };
    match crate::api::apply_change(api, db, change).await {
        Ok(_) => {
            tracing::info!(
                id = %r.fly_id,
                tenant = r.tenant_id,
                "old token retired: the app uses the new one"
            );
            Ok(true)
        }
        Err(resp) => Err(format!(
            "retiring {}'s old token: HTTP {}",
            r.fly_id,
            resp.status()
        )),
    }
}

/// Checks every `--retire-idle-secs`/4 (1 to 30 s), for ever (nothing
/// when it is zero: the admin retires old tokens).
pub async fn run(api: Arc<Api>) {
    let idle = Duration::from_secs(api.retire_idle_secs);
    if idle.is_zero() {
        return;
    }
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match check(&api, idle).await {
            Ok(n) if n > 0 => tracing::debug!("retired {n} rotated tokens"),
            Ok(_) => {}
            Err(e) => tracing::warn!("retiring rotated tokens: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_answer_becomes_times_of_last_use() {
        let body =
            r#"{"node":"m1","tokens":[{"sha256":"AB","idle_ms":250},{"sha256":"cd","idle_ms":0}]}"#;
        let seen = last_use(body, 10_000).expect("parses");
        assert_eq!(seen.get("ab"), Some(&9_750));
        assert_eq!(seen.get("cd"), Some(&10_000));
        assert_eq!(seen.len(), 2);
        assert!(last_use(r#"{"node":"m1"}"#, 1).is_err());
        assert!(last_use(r#"{"tokens":[{"sha256":"ab"}]}"#, 1).is_err());
        assert!(last_use("not json", 1).is_err());
    }

    #[test]
    fn the_old_token_goes_only_once_every_node_answered_and_the_app_switched() {
        let idle = 600_000;
        // Switched, old token unused for the whole idle time: due.
        assert!(due(true, 1_000, 5_000, 1_000 + idle, idle));
        // A node did not answer: it may hold an old-token connection.
        assert!(!due(false, 1_000, 5_000, 1_000 + idle, idle));
        // The new token never seen: the app has not switched.
        assert!(!due(true, 1_000, 0, 1_000 + idle, idle));
        // The old token used too recently.
        assert!(!due(true, 1_000, 5_000, idle, idle));
    }
}
