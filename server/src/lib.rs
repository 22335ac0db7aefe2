//! anykv store: a Redis 7.0-compatible keyspace server whose executor
//! threads each own some tenants (see `docs/STORE.md`).
//!
//! Threads and the request path:
//! - [`executor`]: thread-per-core runtimes that own tenants, accept and
//!   hand connections over, and run each tenant's cron.
//! - [`conn`]: one client connection: read, parse and run a batch, wait
//!   for the log, write the replies.
//! - [`stream`]: what a connection runs on: TCP from clients, QUIC streams
//!   from other nodes of the cluster.
//! - [`dispatch`]: one request against a tenant, checks in Redis's order
//!   (lookup, arity, auth, ACL, scope, memory, pause, MULTI), then stats.
//! - [`resp`]: the incremental request parser and the RESP2/RESP3 reply
//!   encoder.
//! - [`busypoll`]: adaptive polling after a batch, so a steady stream of
//!   requests does not pay a thread wake-up each.
//! - [`shared`]: what every executor shares: config, counters, catalog,
//!   handoff channels, shutdown.
//! - [`client`]: per-connection state (`ClientInfo` for CLIENT LIST/KILL,
//!   `Session` for the connection itself).
//!
//! Commands and data:
//! - [`cmd`]: the one command table, `Ctx`, and one module per command
//!   family.
//! - [`db`]: the keyspace: tables of keys and the value types with their
//!   encodings.
//! - [`tenant`]: one database: keyspace, log, clients, stats, limits.
//! - [`expire`]: the active expiry cycle (lazy expiry is in `cmd`).
//! - [`evict`]: `maxmemory` policies and eviction.
//! - [`blocking`]: clients blocked in BLPOP and friends, served in order.
//! - [`pubsub`]: channels, patterns and keyspace notifications per tenant.
//! - [`tracking`]: client-side caching (`CLIENT TRACKING`): which clients
//!   read which keys, and their invalidation messages
//!   (docs/CLIENT_CACHING.md).
//! - [`geohash`]: Redis 7.0's geohashes (52-bit scores, the nine areas a
//!   search scans, haversine distance) for the commands in `cmd/geo.rs`.
//! - [`hll`]: HyperLogLog strings laid out byte for byte as Redis 7.0's
//!   (sparse and dense), and its estimator.
//! - [`script`]: Lua scripts and function libraries as Redis 7.0 runs
//!   them (docs/SCRIPTING.md).
//!
//! The log, persistence, replication:
//! - [`proplog`]: the propagation log of write effects, with offsets and
//!   the backlog.
//! - [`persist`]: snapshots without fork, the append-only log, start-up
//!   load (see `docs/PERSISTENCE.md`).
//! - [`rdb`]: the RDB format (version 10) for full syncs with a real Redis
//!   and `.rdb` files: a streaming reader of every encoding up to 7.0, a
//!   writer.
//! - [`repl`]: a tenant's role, replication ids and the apply mode.
//! - [`envelope`]: the router ↔ store envelope (who a forwarded request is
//!   from, the history point it must see, the write's token in reply).
//! - [`forward`]: a node's customer requests sent to the nodes that must
//!   run them (a replica's writes, a database held elsewhere).
//! - [`relay`]: pub/sub for a database held elsewhere.
//!
//! Tenancy, users, memory:
//! - [`catalog`]: the databases this server holds (`tenants-file`).
//! - [`acl`]: ACL users and their rules.
//! - [`alloc`]: the counting global allocator and per-tenant memory
//!   accounts.
//! - [`meter`]: what each database's customers used on this node, and the
//!   usage log the sidecar bills from (docs/METERING.md).
//!
//! Support:
//! - [`config`]: parameters with redis-server's names, defaults, file
//!   format and CONFIG GET/SET/REWRITE behaviour.
//! - [`metrics`]: publishing counters to Prometheus once a second.
//! - [`sds`]: the byte string used for keys and string values.
//! - [`util`]: number parsing/formatting and glob matching with Redis's
//!   exact rules.
//! - [`varint`]: LEB128 varints and zigzag integers.

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
pub mod envelope;
pub mod evict;
pub mod executor;
pub mod expire;
pub mod forward;
pub mod geohash;
pub mod hll;
pub mod meter;
pub mod metrics;
pub mod persist;
pub mod proplog;
pub mod pubsub;
pub mod rdb;
pub mod relay;
pub mod repl;
pub mod resp;
pub mod script;
pub mod sds;
pub mod shared;
pub mod stream;
pub mod tenant;
pub mod tracking;
pub mod util;
pub mod varint;

pub use executor::{Server, StartError};

#[cfg(test)]
mod layering {
    /// Dependencies point one way: commands use the core (keyspace,
    /// tenant, propagation log, expiry, eviction), never the reverse, so
    /// the core can be read, tested and reused (replication applies
    /// effects through it) without the command layer.
    #[test]
    fn the_core_imports_nothing_from_the_commands() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![
            root.join("tenant.rs"),
            root.join("proplog.rs"),
            root.join("expire.rs"),
            root.join("evict.rs"),
        ];
        for e in std::fs::read_dir(root.join("db")).expect("src/db") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).expect("db subdir") {
                    files.push(f.expect("entry").path());
                }
            } else {
                files.push(p);
            }
        }
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source file");
            for bad in ["crate::cmd", "super::cmd", "crate::dispatch"] {
                assert!(
                    !text.contains(bad),
                    "{} uses {bad}: the core must not depend on commands",
                    f.display()
                );
            }
        }
    }
}
