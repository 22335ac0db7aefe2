//! Raft's RPCs between a region's nodes, over the cluster's QUIC
//! connections (mutual TLS with the cluster certificate, shaped like every
//! inter-node byte in the emulated world).
//!
//! Each RPC is one bidirectional stream of the connection state sync
//! already keeps to the peer: the kind byte [`KIND_RAFT`], then one
//! length-prefixed JSON request `{region, rpc}`, answered by one
//! length-prefixed JSON `Result`. A node answers only RPCs for its own
//! region's group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{Peer, TypeConfig};
use crate::sync::{Syncer, KIND_RAFT};

type NodeId = u64;

/// Largest RPC frame taken (a snapshot chunk is at most openraft's
/// `snapshot_max_chunk_size`, 3 MiB by default; entries are small).
const MAX_FRAME: usize = 16 << 20;

/// How long one RPC stream may take to be served.
const SERVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A node renews its lease with the leader (not a Raft RPC: leases
    /// live in the leader's memory, see `super::lease`), reporting which
    /// replicas of each tenant it is primary of have completed their sync.
    Lease {
        machine: String,
        synced: Vec<super::lease::Synced>,
        /// The last log index the node has applied.
        applied: Option<u64>,
    },
    /// A primary that is leaving hands a tenant to its standby.
    Handoff {
        tenant: u64,
        from: String,
    },
    /// A primary about to leave has the node that will be the standby
    /// after its handoff named, so it syncs first (see
    /// `Controller::prepare_handoff`).
    PrepareHandoff {
        tenant: u64,
        from: String,
    },
    /// The leader, leaving, asks a voter to take over (see
    /// `Controller::transfer_leadership`).
    TakeOver {
        from: String,
    },
    /// Another region's leader announces a record it committed to a node
    /// of this region that replicates the database (see
    /// `Controller::announcements`).
    Announce(crate::catalog::RoleRecord),
    /// A node that forwards to a database's primary, and found it gone or
    /// no longer primary, asks for the group's record of it (see
    /// [`ask_record`]).
    Record {
        tenant: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Request {
    region: String,
    rpc: Rpc,
}

#[derive(Debug, thiserror::Error)]
enum WireError {
    #[error("{0}")]
    Sync(#[from] crate::sync::SyncError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("frame of {0} bytes")]
    TooBig(usize),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer address '{0}'")]
    Address(String),
    #[error("the peer answers for region {0}")]
    Region(String),
}

async fn write_frame<T: Serialize>(s: &mut quinn::SendStream, v: &T) -> Result<(), WireError> {
    let body = serde_json::to_vec(v)?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooBig(body.len()));
    }
    s.write_all(&(body.len() as u32).to_le_bytes()).await?;
    s.write_all(&body).await?;
    Ok(())
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    r: &mut quinn::RecvStream,
) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooBig(len));
    }
    // Grown as bytes arrive, not allocated at the length the peer claims.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let mut chunk = [0u8; 16 << 10];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        r.read_exact(&mut chunk[..want]).await?;
        body.extend_from_slice(&chunk[..want]);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The answer to a request for another region's group.
#[derive(Serialize, Deserialize)]
struct WrongRegion(String);

/// Serves one RPC stream for this node's group.
pub(super) async fn serve(
    c: std::sync::Weak<super::Controller>,
    region: Arc<str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(c) = c.upgrade() else { return };
    let raft = c.raft.clone();
    // A peer that opens a stream and sends nothing does not hold it open.
    let r: Result<(), WireError> = tokio::time::timeout(SERVE_TIMEOUT, async {
        let req: Request = read_frame(&mut recv).await?;
        if req.region != *region {
            write_frame(&mut send, &Err::<(), _>(WrongRegion(region.to_string()))).await?;
            return Ok(());
        }
        match req.rpc {
            Rpc::Append(a) => {
                let r = raft.append_entries(a).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::Vote(v) => {
                let r = raft.vote(v).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::Snapshot(s) => {
                let r = raft.install_snapshot(s).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::Lease {
                machine,
                synced,
                applied,
            } => {
                let r = c.grant(&machine, &synced, applied).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::Handoff { tenant, from } => {
                let r = c.hand_off(tenant, &from).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::PrepareHandoff { tenant, from } => {
                let r = c.prepare_handoff(tenant, &from).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::TakeOver { from } => {
                let r = c.take_over(&from).await;
                write_frame(&mut send, &Ok::<_, WrongRegion>(r)).await?
            }
            Rpc::Announce(rec) => {
                c.take_announcement(rec);
                write_frame(&mut send, &Ok::<_, WrongRegion>(())).await?
            }
            Rpc::Record { tenant } => {
                let rec = c.record(tenant);
                write_frame(&mut send, &Ok::<_, WrongRegion>(rec)).await?
            }
        }
        send.finish()?;
        Ok(())
    })
    .await
    .unwrap_or(Err(WireError::Timeout(SERVE_TIMEOUT)));
    if let Err(e) = r {
        tracing::debug!("controller: serving a Raft RPC: {e}");
    }
}

/// Makes Raft's clients (openraft's `RaftNetworkFactory`).
#[derive(Clone)]
pub struct Network {
    pub(super) syncer: Syncer,
    pub(super) region: Arc<str>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Client {
        Client {
            syncer: self.syncer.clone(),
            region: self.region.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// One request to a member at `addr` (the leader: leases, handoffs; a
/// voter: taking over) and its answer.
async fn ask<T: serde::de::DeserializeOwned>(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    rpc: Rpc,
    ttl: Duration,
) -> Result<T, String> {
    let req = Request {
        region: region.to_string(),
        rpc,
    };
    let fut = async {
        let (mut send, mut recv) = syncer.open_stream(addr, KIND_RAFT).await?;
        write_frame(&mut send, &req).await?;
        send.finish()?;
        let r: Result<T, WrongRegion> = read_frame(&mut recv).await?;
        r.map_err(|w| WireError::Region(w.0))
    };
    match tokio::time::timeout(ttl, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(WireError::Timeout(ttl).to_string()),
    }
}

/// Asks the leader at `addr` for `machine`'s lease.
pub(super) async fn renew(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    machine: &str,
    synced: Vec<super::lease::Synced>,
    applied: Option<u64>,
    ttl: Duration,
) -> Result<Result<super::lease::Grant, super::lease::Refused>, String> {
    let rpc = Rpc::Lease {
        machine: machine.to_string(),
        synced,
        applied,
    };
    ask(syncer, region, addr, rpc, ttl).await
}

/// A step of a planned handoff the leaving primary asks the leader for.
pub(super) enum HandoffStep {
    /// Name the standby for after it (see `Controller::prepare_handoff`).
    Prepare,
    /// Hand the tenant to its standby (see `Controller::hand_off`).
    HandOver,
}

/// Asks the leader at `addr` for `step` of `tenant`'s handoff from `from`.
pub(super) async fn handoff_step<T: serde::de::DeserializeOwned>(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    step: HandoffStep,
    tenant: u64,
    from: &str,
    ttl: Duration,
) -> Result<Result<T, String>, String> {
    let from = from.to_string();
    let rpc = match step {
        HandoffStep::Prepare => Rpc::PrepareHandoff { tenant, from },
        HandoffStep::HandOver => Rpc::Handoff { tenant, from },
    };
    ask(syncer, region, addr, rpc, ttl).await
}

/// Asks the voter at `addr` to take over from the leaving leader `from`.
pub(super) async fn take_over(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    from: &str,
    ttl: Duration,
) -> Result<Result<(), String>, String> {
    let rpc = Rpc::TakeOver {
        from: from.to_string(),
    };
    ask(syncer, region, addr, rpc, ttl).await
}

/// Announces `rec` to the node at `addr`, of `region`.
pub(super) async fn announce(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    rec: crate::catalog::RoleRecord,
    ttl: Duration,
) -> Result<(), String> {
    ask(syncer, region, addr, Rpc::Announce(rec), ttl).await
}

/// Asks the member at `addr`, of `region`, for its group's role record
/// of `tenant`, as applied there (None: the group holds none). Any node
/// that forwards to a database's primary may ask, its own region's group
/// or another's: the state sync brings the record to every node too, but
/// over gossip rounds, while a router whose primary just died has its
/// clients waiting. The leader's answer is the newest; a follower's is at
/// most a heartbeat behind, and the asker keeps whichever record is
/// newer by epoch.
pub async fn ask_record(
    syncer: &Syncer,
    region: &str,
    addr: SocketAddr,
    tenant: u64,
    ttl: Duration,
) -> Result<Option<crate::catalog::RoleRecord>, String> {
    ask(syncer, region, addr, Rpc::Record { tenant }, ttl).await
}

/// Raft's client for one peer.
pub struct Client {
    syncer: Syncer,
    region: Arc<str>,
    target: NodeId,
    node: Peer,
}

impl Client {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<T, WireError> {
        let ttl = option.hard_ttl();
        let addr: SocketAddr = self
            .node
            .addr
            .parse()
            .map_err(|_| WireError::Address(self.node.addr.clone()))?;
        let req = Request {
            region: self.region.to_string(),
            rpc,
        };
        let fut = async {
            let (mut send, mut recv) = self.syncer.open_stream(addr, KIND_RAFT).await?;
            write_frame(&mut send, &req).await?;
            send.finish()?;
            let r: Result<T, WrongRegion> = read_frame(&mut recv).await?;
            r.map_err(|w| WireError::Region(w.0))
        };
        tokio::time::timeout(ttl, fut)
            .await
            .unwrap_or(Err(WireError::Timeout(ttl)))
    }

    /// An RPC's outcome as openraft wants it: a failure to reach the peer
    /// (it backs off), or the peer's own answer. (The error type is
    /// openraft's, the one its `RaftNetwork` methods return.)
    #[allow(clippy::result_large_err)]
    fn map<R, E>(
        &self,
        r: Result<Result<R, RaftError<NodeId, E>>, WireError>,
    ) -> Result<R, RPCError<NodeId, Peer, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
    {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            // Not there (connecting timed out too): openraft backs off.
            Err(
                e @ (WireError::Sync(_)
                | WireError::Address(_)
                | WireError::Region(_)
                | WireError::Timeout(_)),
            ) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        let r = self.call(Rpc::Append(rpc), &option).await;
        self.map(r)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Peer, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let r = self.call(Rpc::Snapshot(rpc), &option).await;
        self.map(r)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        let r = self.call(Rpc::Vote(rpc), &option).await;
        self.map(r)
    }
}
