//! anykv ops: the Fly Extensions sidecar (provisioning, SSO, metering,
//! billing) and region scaling (docs/SIDECAR.md).
//!
//! Built in slices: [`sign`] (Fly's request signatures), [`store`] (its
//! SQLite state: migrations, nonces, provisioned databases), [`tokens`]
//! (tokens sealed at rest), [`cluster`] (the admin API it writes the
//! catalog through), [`api`] (provisioning, status, deletion) and
//! [`backup`] (online backups of its state, and restoring one) and
//! [`webhook`] (the events Fly is told of, from a durable outbox) and
//! [`plans`] (each database's limits), [`sso`] (signing in through Fly's
//! OAuth) and [`dashboard`] (what a signed-in user sees and may change),
//! with [`fetch`] (the outbound HTTP client) and [`fakefly`] (Fly's side,
//! for tests and the demo); billing builds on them, and [`rotation`]
//! retires a rotated token once the app switched. [`machines`] is the Fly
//! Machines API client region scaling drives (with a fake of Fly's side).

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
