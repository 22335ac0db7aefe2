//! The byte streams a client connection can run on.
//!
//! Customers reach a node over TCP; other anykv nodes reach it over the
//! cluster's QUIC connections (a replica's link to its primary today, the
//! router's forwarded connections later), one QUIC stream per connection,
//! authenticated by the cluster's mutual TLS. Both run the same connection
//! code ([`crate::conn`]) and speak the same RESP: [`ClientStream`] is the
//! one type that code reads and writes, an enum rather than a trait object
//! so the TCP path (every customer request) stays a direct call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Any ordered, reliable byte stream that can cross threads.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A stream from another node of the cluster (QUIC), with the addresses
/// `CLIENT LIST` and `INFO replication` show for it.
pub struct LinkStream {
    pub io: Box<dyn Duplex>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The round trip of the connection the stream rides on, as measured
    /// now (QUIC's smoothed RTT); a replica corrects its lag with it (see
    /// `repl::lag`). None where nobody measures one.
    pub rtt: Option<RttProbe>,
}

/// Reads a link's current round-trip time.
pub type RttProbe = std::sync::Arc<dyn Fn() -> std::time::Duration + Send + Sync>;

impl std::fmt::Debug for LinkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStream")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish()
    }
}

/// A connection's stream while it runs on an executor.
pub enum ClientStream {
    Tcp(TcpStream),
    Link(LinkStream),
}

/// A connection's stream on its way to another executor (plain owned
/// data: a TCP socket leaves its runtime's reactor first).
#[derive(Debug)]
pub enum HandoffStream {
    Tcp(std::net::TcpStream),
    Link(LinkStream),
}

impl ClientStream {
    /// Registers a handed-off stream with this thread's runtime.
    pub fn from_handoff(h: HandoffStream) -> io::Result<Self> {
        Ok(match h {
            HandoffStream::Tcp(s) => ClientStream::Tcp(TcpStream::from_std(s)?),
            HandoffStream::Link(l) => ClientStream::Link(l),
        })
    }

    /// Takes the stream off this thread's runtime for another executor.
    pub fn into_handoff(self) -> io::Result<HandoffStream> {
        Ok(match self {
            ClientStream::Tcp(s) => HandoffStream::Tcp(s.into_std()?),
            ClientStream::Link(l) => HandoffStream::Link(l),
        })
    }

    /// (peer, local) addresses; an error when a TCP peer is gone already.
    pub fn addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        match self {
            ClientStream::Tcp(s) => Ok((s.peer_addr()?, s.local_addr()?)),
            ClientStream::Link(l) => Ok((l.peer, l.local)),
        }
    }

    /// The socket's descriptor for `CLIENT LIST`'s `fd=` (-1 for a stream
    /// multiplexed on a QUIC connection, as Redis shows for fake clients).
    pub fn fd(&self) -> i32 {
        match self {
            ClientStream::Tcp(s) => {
                use std::os::fd::AsRawFd;
                s.as_raw_fd()
            }
            ClientStream::Link(_) => -1,
        }
    }

    /// Replies go out at once (TCP_NODELAY); QUIC streams send as soon as
    /// they are written to.
    pub fn set_nodelay(&self) {
        if let ClientStream::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// Whether this connection came from another node of the cluster.
    pub fn is_link(&self) -> bool {
        matches!(self, ClientStream::Link(_))
    }

    /// The link's round trip, where it is measured.
    pub fn rtt(&self) -> Option<std::time::Duration> {
        match self {
            ClientStream::Link(l) => l.rtt.as_ref().map(|f| f()),
            ClientStream::Tcp(_) => None,
        }
    }
}

/// Runs a QUIC stream's poll outside the tenant's memory account. A TCP
/// socket's buffers are the kernel's; a QUIC stream's are the process's:
/// a write copies into quinn's send buffer, which the endpoint's driver
/// frees on another task, and a read frees chunks the driver allocated. In
/// the tenant's account the first would be counted and never released
/// (a replicated database's `used_memory` grew by every byte sent to its
/// replicas until it refused writes) and the second released without
/// having been counted. Network buffers are no tenant's data.
fn unaccounted<R>(f: impl FnOnce() -> R) -> R {
    crate::alloc::unscoped(f)
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Link(l) => unaccounted(|| Pin::new(&mut l.io).poll_read(cx, buf)),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Link(l) => unaccounted(|| Pin::new(&mut l.io).poll_write(cx, buf)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Link(l) => unaccounted(|| Pin::new(&mut l.io).poll_flush(cx)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Link(l) => unaccounted(|| Pin::new(&mut l.io).poll_shutdown(cx)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Link(l) => {
                unaccounted(|| Pin::new(&mut l.io).poll_write_vectored(cx, bufs))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Tcp(s) => s.is_write_vectored(),
            ClientStream::Link(l) => l.io.is_write_vectored(),
        }
    }
}

/// Dials another node's store for one tenant (set by `anykv node`, which
/// owns the cluster's QUIC endpoint; a standalone server has none).
pub trait LinkDialer: Send + Sync {
    /// Opens a stream to the store at `node` (its cluster address) that
    /// the far side serves as a connection logged in to `tenant`.
    fn dial(
        &self,
        node: SocketAddr,
        tenant: crate::tenant::TenantId,
    ) -> Pin<Box<dyn std::future::Future<Output = io::Result<LinkStream>> + Send>>;
}
