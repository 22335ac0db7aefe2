//! anykv gossip: how nodes in many Fly regions find each other and agree on
//! who is alive, with no coordinator.
//!
//! - [`discovery`]: Fly's internal DNS (`<app>.internal` AAAA, `vms.` and
//!   `regions.` TXT) through hickory-resolver; [`testzone`] serves the same
//!   records from an in-process hickory-server zone for tests and the demo.
//! - [`identity`]: who a node is (machine id, region, address, incarnation).
//! - [`timing`]: SWIM timings, memberlist's LAN/WAN defaults.
//! - [`link`]: the link shaper (per-region-pair delay, jitter, loss,
//!   partitions) every inter-node transport goes through in the emulated
//!   world; off and free in production.

pub mod cluster;
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
pub use node::{ClusterView, Event, Gossip, GossipConfig, MemberState, MemberView, Seeds};
