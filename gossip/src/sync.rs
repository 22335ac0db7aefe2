//! State sync over QUIC: the part of gossip too big for SWIM packets.
//!
//! A session is one bidirectional stream. The client sends its digest; the
//! server answers with every row the client lacks plus its own digest; the
//! client pushes back every row the server lacks. One round trip and a
//! half, both sides converge, and only differing rows move. Sessions run
//! when a SWIM digest item says an origin has news, when a member joins,
//! and every anti-entropy period with a random peer (which repairs
//! anything a lost broadcast left behind).
//!
//! Frames are a little-endian u32 length and a postcard body, at most
//! [`MAX_FRAME`] bytes; anything else ends the session with an error that
//! is logged and counted, never a panic.
//!
//! The same QUIC connections carry the stores' own streams: every
//! bidirectional stream starts with one kind byte, [`KIND_SYNC`] for a
//! sync session or [`KIND_STORE`] followed by a little-endian u64 tenant
//! id for a store connection (a replica's link to its primary), which is
//! handed to the [`StoreHandler`] the node registered, or [`KIND_RAFT`]
//! for one RPC of the region's controller (the [`RaftHandler`]). One connection per
//! peer pair, many streams on it: a tenant's replication never waits behind
//! another's, and no extra handshakes (mutual TLS proved the peer once).

use crate::state::{Digest, Row, StateStore};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest frame accepted (the whole tenant catalog must fit).
pub const MAX_FRAME: usize = 16 << 20;
/// A session that takes longer than this is abandoned.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
    #[error("frame of {0} bytes exceeds the limit")]
    TooBig(usize),
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("unexpected message")]
    Protocol,
    #[error("timed out")]
    Timeout,
    #[error("binding the client endpoint: {0}")]
    Bind(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

/// First byte of a sync session's stream.
pub const KIND_SYNC: u8 = 0;
/// First byte of a store stream (then the tenant id, u64 LE).
pub const KIND_STORE: u8 = 1;
/// First byte of a controller (Raft) RPC stream (see `controller::net`).
pub const KIND_RAFT: u8 = 2;

/// Serves controller RPC streams: `(send, recv)` after the kind byte.
pub type RaftHandler = Arc<dyn Fn(quinn::SendStream, quinn::RecvStream) + Send + Sync>;

/// Serves store streams: `(tenant id, peer address, send, recv)`.
pub type StoreHandler =
    Arc<dyn Fn(u64, SocketAddr, quinn::SendStream, quinn::RecvStream) + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Hello {
        digest: Digest,
        sum: u64,
    },
    Rows {
        rows: Vec<Row>,
        digest: Digest,
        sum: u64,
    },
    Push {
        rows: Vec<Row>,
    },
    /// A `Hello` that brings rows the sender just wrote (a catalog change,
    /// its applied versions): the peer has them after half a round trip
    /// instead of a round trip and a half (the `Push` at the session's
    /// end). Newer than the others: a node that does not know it fails
    /// the session, and anti-entropy's plain sessions still carry the rows.
    Offer {
        digest: Digest,
        sum: u64,
        rows: Vec<Row>,
    },
}

async fn write_msg(send: &mut quinn::SendStream, msg: &Msg) -> Result<(), SyncError> {
    let body = postcard::to_allocvec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(SyncError::TooBig(body.len()));
    }
    send.write_all(&(body.len() as u32).to_le_bytes()).await?;
    send.write_all(&body).await?;
    Ok(())
}

async fn read_msg(recv: &mut quinn::RecvStream) -> Result<Msg, SyncError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(SyncError::TooBig(len));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

/// One store stream as a single duplex byte stream (what the store's
/// connection code reads and writes).
pub struct QuicDuplex {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

impl tokio::io::AsyncRead for QuicDuplex {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for QuicDuplex {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.get_mut().send), cx)
    }
}

/// Applies rows to the store and returns those that were news.
fn apply(store: &Mutex<StateStore>, rows: Vec<Row>) -> Vec<Row> {
    let mut s = store.lock();
    rows.into_iter().filter(|r| s.apply(r.clone())).collect()
}

/// Opens a store stream for `tenant` on a connection to a node's sync
/// endpoint: the kind byte and the tenant id, then the store's protocol.
pub async fn open_store(
    conn: &quinn::Connection,
    tenant: u64,
) -> Result<(quinn::SendStream, quinn::RecvStream), SyncError> {
    let (mut send, recv) = conn.open_bi().await?;
    let mut head = [0u8; 9];
    head[0] = KIND_STORE;
    head[1..].copy_from_slice(&tenant.to_le_bytes());
    send.write_all(&head).await?;
    Ok((send, recv))
}

/// Store streams from outside a node's gossip (a standalone router, tests):
/// a QUIC client endpoint with a certificate of the cluster's CA, which
/// the nodes demand.
pub struct StoreClient {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

impl StoreClient {
    /// A client endpoint on an ephemeral port of `bind`'s address.
    pub fn new(tls: &crate::tls::NodeTls, bind: SocketAddr) -> Result<StoreClient, SyncError> {
        let endpoint = quinn::Endpoint::client(bind)?;
        let client = tls
            .client_config()
            .map_err(|e| SyncError::Tls(e.to_string()))?;
        Ok(StoreClient { endpoint, client })
    }

    /// A connection to the node whose sync endpoint is `peer` (open store
    /// streams on it with [`open_store`]).
    pub async fn connect(&self, peer: SocketAddr) -> Result<quinn::Connection, SyncError> {
        Ok(self
            .endpoint
            .connect_with(self.client.clone(), peer, crate::tls::NODE_NAME)?
            .await?)
    }

    /// A store stream for `tenant` on a new connection to `peer`.
    pub async fn open(&self, peer: SocketAddr, tenant: u64) -> Result<QuicDuplex, SyncError> {
        let conn = self.connect(peer).await?;
        let (send, recv) = open_store(&conn, tenant).await?;
        Ok(QuicDuplex { send, recv })
    }
}

/// One node's sync endpoint: serves peers and syncs with them.
#[derive(Clone)]
pub struct Syncer {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    store: Arc<Mutex<StateStore>>,
    /// Rows that changed this node's store (from either side of a session).
    changed: mpsc::UnboundedSender<Vec<Row>>,
    conns: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
    /// Per peer, held while a connection to it is dialled: a session or
    /// stream that needs the peer meanwhile waits for that handshake
    /// instead of dialling a second connection (a round trip more: a
    /// provisioning's first offer to a node that just came up).
    dialing: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>>,
    store_handler: Arc<std::sync::OnceLock<StoreHandler>>,
    raft_handler: Arc<std::sync::OnceLock<RaftHandler>>,
}

impl Syncer {
    pub fn new(
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        store: Arc<Mutex<StateStore>>,
        changed: mpsc::UnboundedSender<Vec<Row>>,
    ) -> Self {
        Syncer {
            endpoint,
            client,
            store,
            changed,
            conns: Arc::default(),
            dialing: Arc::default(),
            store_handler: Arc::default(),
            raft_handler: Arc::default(),
        }
    }

    /// Registers what serves store streams (once; later calls are
    /// ignored). Until then such streams are refused.
    pub fn set_store_handler(&self, h: StoreHandler) {
        let _ = self.store_handler.set(h);
    }

    /// Registers what serves controller RPC streams (once; until then
    /// they are refused).
    pub fn set_raft_handler(&self, h: RaftHandler) {
        let _ = self.raft_handler.set(h);
    }

    /// Opens a stream of `kind` to the node whose sync endpoint is `peer`,
    /// on the connection shared with state sync (the kind byte is sent).
    pub async fn open_stream(
        &self,
        peer: SocketAddr,
        kind: u8,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), SyncError> {
        let r = async {
            let conn = self.connection(peer).await?;
            let (mut send, recv) = conn.open_bi().await?;
            send.write_all(&[kind]).await?;
            Ok((send, recv))
        }
        .await;
        if r.is_err() {
            self.conns.lock().remove(&peer);
        }
        r
    }

    /// Opens a store stream to the node whose sync endpoint is `peer`, for
    /// `tenant`, on the connection shared with state sync.
    pub async fn open_store_stream(
        &self,
        peer: SocketAddr,
        tenant: u64,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, quinn::Connection), SyncError> {
        let r = async {
            let conn = self.connection(peer).await?;
            let (send, recv) = open_store(&conn, tenant).await?;
            Ok((send, recv, conn))
        }
        .await;
        if r.is_err() {
            self.conns.lock().remove(&peer);
        }
        r
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts sessions until the endpoint closes.
    pub async fn serve(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("sync: handshake failed: {e}");
                        metrics::counter!("anykv_sync_errors_total", "side" => "server")
                            .increment(1);
                        return;
                    }
                };
                let peer = conn.remote_address();
                while let Ok((send, mut recv)) = conn.accept_bi().await {
                    let this = this.clone();
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(SESSION_TIMEOUT, async {
                            let mut kind = [0u8; 1];
                            recv.read_exact(&mut kind).await?;
                            match kind[0] {
                                KIND_SYNC => this.answer(send, recv).await,
                                KIND_STORE => {
                                    let mut id = [0u8; 8];
                                    recv.read_exact(&mut id).await?;
                                    let Some(h) = this.store_handler.get() else {
                                        return Err(SyncError::Protocol);
                                    };
                                    h(u64::from_le_bytes(id), peer, send, recv);
                                    Ok(())
                                }
                                KIND_RAFT => {
                                    let Some(h) = this.raft_handler.get() else {
                                        return Err(SyncError::Protocol);
                                    };
                                    h(send, recv);
                                    Ok(())
                                }
                                _ => Err(SyncError::Protocol),
                            }
                        })
                        .await
                        .unwrap_or(Err(SyncError::Timeout));
                        if let Err(e) = r {
                            tracing::debug!("sync: session from peer failed: {e}");
                            metrics::counter!("anykv_sync_errors_total", "side" => "server")
                                .increment(1);
                        }
                    });
                }
            });
        }
    }

    async fn answer(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), SyncError> {
        let (digest, sum) = match read_msg(&mut recv).await? {
            Msg::Hello { digest, sum } => (digest, sum),
            Msg::Offer { digest, sum, rows } => {
                let news = apply(&self.store, rows);
                if !news.is_empty() {
                    let _ = self.changed.send(news);
                }
                (digest, sum)
            }
            _ => return Err(SyncError::Protocol),
        };
        let (rows, ours, our_sum) = {
            let s = self.store.lock();
            (
                s.missing_at(&digest, sum),
                s.digest().clone(),
                s.shared_sum(),
            )
        };
        write_msg(
            &mut send,
            &Msg::Rows {
                rows,
                digest: ours,
                sum: our_sum,
            },
        )
        .await?;
        send.finish()?;
        let Msg::Push { rows } = read_msg(&mut recv).await? else {
            return Err(SyncError::Protocol);
        };
        let news = apply(&self.store, rows);
        if !news.is_empty() {
            let _ = self.changed.send(news);
        }
        Ok(())
    }

    /// The open connection to `peer`, if there is one.
    fn cached(&self, peer: SocketAddr) -> Option<quinn::Connection> {
        self.conns
            .lock()
            .get(&peer)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Dials `peer` in the background unless a connection to it is up or
    /// being dialled. A router keeps one to the node a handoff would make
    /// its databases' primary (their standbys): its first request there
    /// then costs no handshake, which across an ocean is a round trip
    /// (257 ms iad–syd), at the moment its clients' writes move.
    pub fn warm(&self, peer: SocketAddr) {
        if self.cached(peer).is_some() {
            return;
        }
        let gate = self.dialing.lock().entry(peer).or_default().clone();
        if gate.try_lock().is_err() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.connection(peer).await {
                tracing::debug!(%peer, "warming a connection: {e}");
            }
        });
    }

    async fn connection(&self, peer: SocketAddr) -> Result<quinn::Connection, SyncError> {
        if let Some(c) = self.cached(peer) {
            return Ok(c);
        }
        let gate = self.dialing.lock().entry(peer).or_default().clone();
        let _dialing = gate.lock().await;
        // Another caller's dial may have finished while this one waited.
        if let Some(c) = self.cached(peer) {
            return Ok(c);
        }
        let conn = self
            .endpoint
            .connect_with(self.client.clone(), peer, crate::tls::NODE_NAME)?
            .await?;
        self.conns.lock().insert(peer, conn.clone());
        Ok(conn)
    }

    /// Runs one session with `peer`; returns (rows pulled, rows pushed).
    pub async fn sync_with(&self, peer: SocketAddr) -> Result<(usize, usize), SyncError> {
        self.sync_offering(peer, Vec::new()).await
    }

    /// [`Syncer::sync_with`], its first message bringing `rows` (rows this
    /// node just wrote: the peer applies them half a round trip in).
    pub async fn sync_offering(
        &self,
        peer: SocketAddr,
        rows: Vec<Row>,
    ) -> Result<(usize, usize), SyncError> {
        let r = tokio::time::timeout(SESSION_TIMEOUT, self.session(peer, rows))
            .await
            .unwrap_or(Err(SyncError::Timeout));
        match &r {
            Ok(_) => metrics::counter!("anykv_sync_sessions_total").increment(1),
            Err(e) => {
                tracing::debug!("sync with {peer} failed: {e}");
                metrics::counter!("anykv_sync_errors_total", "side" => "client").increment(1);
                // The connection is let go only when it is gone: a session
                // a peer refused (an older build that does not know
                // `Offer`) must not cost every stream sharing it a dial.
                let mut conns = self.conns.lock();
                if conns.get(&peer).is_some_and(|c| c.close_reason().is_some()) {
                    conns.remove(&peer);
                }
            }
        }
        r
    }

    async fn session(
        &self,
        peer: SocketAddr,
        offer: Vec<Row>,
    ) -> Result<(usize, usize), SyncError> {
        let conn = self.connection(peer).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[KIND_SYNC]).await?;
        let (digest, sum) = {
            let s = self.store.lock();
            (s.digest().clone(), s.shared_sum())
        };
        let hello = if offer.is_empty() {
            Msg::Hello { digest, sum }
        } else {
            Msg::Offer {
                digest,
                sum,
                rows: offer,
            }
        };
        write_msg(&mut send, &hello).await?;
        let Msg::Rows {
            rows,
            digest,
            sum: peer_sum,
        } = read_msg(&mut recv).await?
        else {
            return Err(SyncError::Protocol);
        };
        let news = apply(&self.store, rows);
        let pulled = news.len();
        if !news.is_empty() {
            let _ = self.changed.send(news);
        }
        let push = self.store.lock().missing_at(&digest, peer_sum);
        let pushed = push.len();
        write_msg(&mut send, &Msg::Push { rows: push }).await?;
        send.finish()?;
        // Wait for the peer to read everything before the stream is dropped.
        let _ = send.stopped().await;
        Ok((pulled, pushed))
    }

    /// Forgets the connection to `peer` (it restarted or went down): the
    /// next session or store stream dials a new one.
    pub fn forget(&self, peer: SocketAddr) {
        self.dialing.lock().remove(&peer);
        if let Some(c) = self.conns.lock().remove(&peer) {
            c.close(0u32.into(), b"peer restarted");
        }
    }

    /// Closes the endpoint (graceful leave).
    pub fn close(&self) {
        self.conns.lock().clear();
        self.endpoint.close(0u32.into(), b"leaving");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Table, Version};
    use crate::tls::{ClusterCa, NodeTls};

    fn syncer(tls: &NodeTls) -> (Syncer, mpsc::UnboundedReceiver<Vec<Row>>) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ep = crate::link::quic_endpoint(
            sock,
            crate::link::Shaper::off(),
            quinn::EndpointConfig::default(),
            Some(tls.server_config().unwrap()),
        )
        .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Syncer::new(
            ep,
            tls.client_config().unwrap(),
            Arc::new(Mutex::new(StateStore::default())),
            tx,
        );
        tokio::spawn(s.clone().serve());
        (s, rx)
    }

    fn row(origin: &str, seq: u64) -> Row {
        Row {
            table: Table::Nodes,
            key: origin.into(),
            origin: origin.into(),
            version: Version { life: 1, seq },
            value: Some(vec![1, 2, 3]),
        }
    }

    fn catalog_row(key: &str, seq: u64, value: u8) -> Row {
        Row {
            table: Table::Tenants,
            key: key.into(),
            origin: "catalog".into(),
            version: Version { life: 0, seq },
            value: Some(vec![value]),
        }
    }

    #[tokio::test]
    async fn sessions_started_together_share_one_dial() {
        let ca = ClusterCa::generate().unwrap();
        let (a, _) = syncer(&ca.issue("a").unwrap());
        let (b, _) = syncer(&ca.issue("b").unwrap());
        let peer = b.local_addr().unwrap();
        // Eight sessions with a peer a has no connection to yet, all at
        // once (a provisioning's offers to a node that just came up).
        let runs: Vec<_> = (0..8u64)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move { a.sync_offering(peer, vec![row("a", i + 1)]).await })
            })
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        assert!(b.store.lock().get(Table::Nodes, "a").is_some());
        assert_eq!(
            b.endpoint.open_connections(),
            1,
            "one connection dialled for all of them"
        );
    }

    #[tokio::test]
    async fn shared_tables_repair_holes_and_converge_on_equal_versions() {
        let ca = ClusterCa::generate().unwrap();
        let (a, _) = syncer(&ca.issue("a").unwrap());
        let (b, _) = syncer(&ca.issue("b").unwrap());
        // Two nodes took catalog writes: a has versions 5 and 6, b got 6
        // (and 7) but never 5. b's digest for "catalog" (7) is above 5, so
        // digests alone would never send it.
        a.store.lock().apply(catalog_row("t1", 5, 1));
        a.store.lock().apply(catalog_row("t2", 6, 2));
        b.store.lock().apply(catalog_row("t2", 6, 2));
        b.store.lock().apply(catalog_row("t3", 7, 3));
        // Both wrote the same version of t4 with different values.
        a.store.lock().apply(catalog_row("t4", 8, 10));
        b.store.lock().apply(catalog_row("t4", 8, 11));
        b.sync_with(a.local_addr().unwrap()).await.unwrap();
        for s in [&a, &b] {
            let st = s.store.lock();
            for k in ["t1", "t2", "t3", "t4"] {
                assert!(st.get(Table::Tenants, k).is_some(), "{k} missing");
            }
        }
        assert_eq!(a.store.lock().shared_sum(), b.store.lock().shared_sum());
        assert_eq!(
            a.store.lock().get(Table::Tenants, "t4"),
            b.store.lock().get(Table::Tenants, "t4")
        );
    }

    #[tokio::test]
    async fn offered_rows_arrive_in_the_first_message() {
        let ca = ClusterCa::generate().unwrap();
        let (a, _) = syncer(&ca.issue("a").unwrap());
        let (b, mut b_changes) = syncer(&ca.issue("b").unwrap());
        let fresh = catalog_row("t9", 3, 9);
        a.store.lock().apply(fresh.clone());
        let (_, pushed) = a
            .sync_offering(b.local_addr().unwrap(), vec![fresh.clone()])
            .await
            .unwrap();
        // b had it before the session's last message: nothing is left to
        // push, and b announced it as news once.
        assert_eq!(pushed, 0);
        assert_eq!(b.store.lock().get(Table::Tenants, "t9"), Some(&fresh));
        assert_eq!(b_changes.recv().await.unwrap(), vec![fresh]);
    }

    #[tokio::test]
    async fn same_ca_syncs_both_ways_other_ca_is_refused() {
        let ca = ClusterCa::generate().unwrap();
        let (a, _) = syncer(&ca.issue("a").unwrap());
        let (b, mut b_changes) = syncer(&ca.issue("b").unwrap());
        a.store.lock().apply(row("a", 2));
        b.store.lock().apply(row("b", 5));
        let (pulled, pushed) = a.sync_with(b.local_addr().unwrap()).await.unwrap();
        assert_eq!((pulled, pushed), (1, 1));
        assert_eq!(a.store.lock().digest(), b.store.lock().digest());
        assert_eq!(b_changes.recv().await.unwrap()[0].origin, "a");

        // A node of another cluster (another CA) can neither pull nor push.
        let other = ClusterCa::generate().unwrap();
        let (intruder, _) = syncer(&other.issue("x").unwrap());
        intruder.store.lock().apply(row("x", 1));
        assert!(intruder.sync_with(b.local_addr().unwrap()).await.is_err());
        assert!(a.sync_with(intruder.local_addr().unwrap()).await.is_err());
        assert!(b.store.lock().get(Table::Nodes, "x").is_none());
    }
}
