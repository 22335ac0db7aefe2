//! The controller's Raft types: what its log carries and what applying an
//! entry answers.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::catalog::RoleRecord;

/// A controller member: its Raft id is [`node_id`] of its machine name,
/// its address the node's sync endpoint (QUIC), where Raft's RPCs go.
pub type Peer = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The controller's type configuration.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = Peer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A change of the controller's state: only the leader proposes one, and it
/// takes effect when committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets a tenant's role record, if the current one is still at
    /// `expect` (`(epoch, seq)`; None: the tenant has none). A compare-and-
    /// set, so two proposals made from the same view cannot both win.
    PutRole {
        expect: Option<(u64, u64)>,
        record: RoleRecord,
    },
    /// Forgets a tenant's record (the tenant was deleted).
    DropRole { tenant: u64 },
}

/// What applying a [`Command`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command took effect (false: its expectation no longer held).
    pub applied: bool,
    /// The tenant's record after it (None: it has none).
    pub current: Option<RoleRecord>,
}

/// A machine's Raft id: the first 8 bytes of the SHA-256 of its name
/// (machine names are unique in a cluster; ids must be numbers).
pub fn node_id(machine: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(machine.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}
