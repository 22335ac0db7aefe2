//! anykv ops: the Fly Extensions sidecar (provisioning, SSO, metering,
//! billing) and region scaling (docs/SIDECAR.md).
//!
//! The sidecar, `anykv sidecar`:
//! - [`sign`]: Fly's request signatures.
//! - [`store`]: its SQLite state: migrations, nonces, provisioned databases.
//! - [`tokens`]: tokens sealed at rest.
//! - [`cluster`]: the admin API it writes the catalog through.
//! - [`api`]: provisioning, status, deletion.
//! - [`purge`]: a deleted database's files removed from every node after
//!   the grace period.
//! - [`backup`]: online backups of its state, and restoring one.
//! - [`webhook`]: the events Fly is told of, from a durable outbox.
//! - [`plans`]: each database's limits.
//! - [`metering`]: usage pulled from every node, rolled up per database
//!   per UTC day, and Fly's daily `GET /billing` (docs/METERING.md).
//! - [`sso`]: signing in through Fly's OAuth.
//! - [`dashboard`]: what a signed-in user sees and may change.
//! - [`redis`]: the dashboard's key browser's RESP connection to a
//!   database, logged in with the database's own token.
//! - [`rotation`]: retires a rotated token once the app switched.
//! - [`fetch`]: the outbound HTTP client.
//! - [`fakefly`]: Fly's side, for tests and the demo.
//! - `hex` (private): lowercase hex out, hex of either case in:
//!   signatures, tokens, keys.
//!
//! Region scaling, `anykv regions` (docs/DEPLOY.md):
//! - [`machines`]: the Fly Machines API client region scaling drives
//!   (with a fake of Fly's side).
//! - [`regions`]: adding or removing a region of data nodes, as a plan of
//!   steps recomputed from what exists, so an interrupted run resumes.

pub mod api;
pub mod backup;
pub mod cluster;
pub mod dashboard;
pub mod fakefly;
pub mod fetch;
mod hex;
pub mod machines;
pub mod metering;
pub mod plans;
pub mod purge;
pub mod redis;
pub mod regions;
pub mod rotation;
pub mod sign;
pub mod sso;
pub mod store;
pub mod tokens;
pub mod webhook;

/// Now, in Unix milliseconds (when tokens were seen in use).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Now, in Unix seconds (the signatures', the store's and the webhooks'
/// clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
