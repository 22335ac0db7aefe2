//! anykv ops: the Fly Extensions sidecar (provisioning, SSO, metering,
//! billing) and region scaling (docs/SIDECAR.md).
//!
//! Built in slices: [`sign`] (Fly's request signatures) and [`store`]
//! (its SQLite state: migrations, nonces, provisioned databases) so far;
//! the HTTP API, SSO and billing build on them.

pub mod sign;
pub mod store;
