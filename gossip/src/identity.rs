//! Who a node is, as SWIM sees it.
//!
//! Fly moves machines between hosts and their 6PN address changes with
//! them, so a node is identified by its *machine id*; the address is only
//! where it can be reached now. `incarnation` tells restarts apart: a node
//! that restarts (or is declared down and rejoins) comes back with a larger
//! one, and foca keeps the newer identity when two share a machine id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// A node's identity in the membership protocol.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Fly machine id (`FLY_MACHINE_ID`), stable across host moves.
    pub machine: String,
    /// Fly region code (`FLY_REGION`), e.g. `iad`.
    pub region: String,
    /// Gossip (UDP) address; the QUIC sync endpoint shares it.
    pub addr: SocketAddr,
    /// Distinguishes lives of one machine: the start time in ms, bumped by
    /// one on every rejoin after being declared down.
    pub incarnation: u64,
}

impl NodeId {
    pub fn new(machine: impl Into<String>, region: impl Into<String>, addr: SocketAddr) -> Self {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        NodeId {
            machine: machine.into(),
            region: region.into(),
            addr,
            incarnation,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/{}#{}",
            self.machine, self.region, self.addr, self.incarnation
        )
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.machine, self.region, self.addr)
    }
}

/// A stable 64-bit key for a machine id (FNV-1a). foca compares members
/// by `addr()` while scanning its member list, so the key must be cheap to
/// produce: a `String` clone per comparison was most of the simulator's
/// time at 500 nodes.
pub fn machine_key(machine: &str) -> u64 {
    fnv1a(FNV_OFFSET, machine.as_bytes())
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a hash `h` over `bytes` (start from [`FNV_OFFSET`]).
/// Stable across builds and platforms: nodes compare these values (member
/// keys, state-table sums, rendezvous weights).
pub fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl foca::Identity for NodeId {
    /// Members are the same member when their machine ids match.
    type Addr = u64;

    /// Rejoin automatically after being declared down (a long pause, a
    /// partition): same machine, next incarnation.
    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> u64 {
        machine_key(&self.machine)
    }

    /// The later life of a machine wins; ties (which a sane cluster never
    /// sees) fall back to the address so every node picks the same winner.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.addr) > (adversary.incarnation, adversary.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_the_conflict() {
        let a = NodeId::new("m1", "iad", "127.0.0.1:7946".parse().unwrap());
        let b = a.renew().unwrap();
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }

    #[test]
    fn encodes_small() {
        let a = NodeId::new(
            "148e2d4ab2d389",
            "iad",
            "[::ffff:127.0.0.2]:7946".parse().unwrap(),
        );
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let back: NodeId = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, back);
    }
}
