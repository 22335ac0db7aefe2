//! anykv gossip: how nodes in many Fly regions find each other, agree on
//! who is alive, share state and measure distances, with no coordinator
//! (see `docs/CLUSTER.md`).
//!
//! - [`discovery`]: Fly's internal DNS (`<app>.internal` AAAA, `vms.` and
//!   `regions.` TXT) through hickory-resolver, re-resolved periodically.
//! - [`testzone`]: the same records from an in-process hickory-server zone,
//!   for tests and the demo.
//! - [`identity`]: who a node is (machine id, region, address, incarnation).
//! - [`timing`]: SWIM timings, memberlist's LAN/WAN defaults.
//! - [`node`]: one running SWIM member: the foca state machine driven by a
//!   tokio task, publishing the cluster view and membership events.
//! - [`catalog`]: the tenant catalog and role records as state rows, and
//!   rendezvous placement of each tenant's primary, standby and replicas.
//! - [`controller`]: the region's controller, a Raft group (openraft) of
//!   its nodes that commits role records; log in SQLite, RPCs over QUIC.
//! - [`cluster`]: the two pools (region on LAN timings, cluster-wide on WAN
//!   timings) and their merged view.
//! - [`wire`]: the datagram envelope: cluster-key HMAC and RTT timestamps
//!   around foca's payload.
//! - [`rtt`]: per-peer RTT estimates (recent minimum and smoothed).
//! - [`state`]: versioned state tables (node metadata) and their digests.
//! - [`sync`]: state sync over QUIC when digests differ, plus anti-entropy.
//! - [`tls`]: the cluster CA and node certificates for mutual TLS on QUIC.
//! - [`link`]: the link shaper (per-region-pair delay, jitter, loss,
//!   partitions) that UDP gossip and QUIC go through in the emulated world;
//!   off and free in production.

pub mod catalog;
pub mod cluster;
pub mod controller;
pub mod discovery;
pub mod identity;
pub mod link;
pub mod node;
pub mod rtt;
pub mod state;
pub mod sync;
pub mod testzone;
pub mod timing;
pub mod tls;
pub mod wire;

pub use cluster::{Cluster, ClusterConfig};
pub use identity::NodeId;
pub use node::{
    holds_data, known_router, ClusterView, Event, Gossip, GossipConfig, MemberState, MemberView,
    Seeds,
};
