//! anykv store: a Redis 7.0-compatible keyspace server.
//!
//! Layout: `resp` (wire protocol), `cmd` (the command table and one module
//! per command family), `db` (keyspace), `dispatch` (processCommand/call),
//! `conn` (a client connection), `executor` (thread-per-core runtimes that
//! own tenants), `proplog` (the write-effect log that persistence and
//! replication consume), `expire` (active expiry), `config`, `acl`.

pub mod acl;
pub mod alloc;
pub mod blocking;
pub mod busypoll;
pub mod catalog;
pub mod client;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod db;
pub mod dispatch;
pub mod evict;
pub mod executor;
pub mod expire;
pub mod metrics;
pub mod persist;
pub mod proplog;
pub mod pubsub;
pub mod resp;
pub mod sds;
pub mod shared;
pub mod tenant;
pub mod util;
pub mod varint;

pub use executor::{Server, StartError};
