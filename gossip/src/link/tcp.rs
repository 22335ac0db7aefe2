//! Shaped TCP: byte streams delayed in order. Built for the router → store
//! path of the emulated world (the router issue); nothing opens one yet
//! outside this module's tests.
//!
//! Only the connecting side shapes, and it shapes both directions: its
//! writes wait one one-way delay before reaching the socket and the
//! peer's bytes wait one one-way delay after arriving. A request/response
//! round trip therefore costs one RTT while the accepting side (the store)
//! stays a plain `TcpStream`.
//!
//! Each direction is one task: an *intake* reads chunks and stamps them
//! with a deliver-at time, an *outlet* writes them out when due. Stamps are
//! `max(now + delay, previous stamp)`, so jitter stretches the stream but
//! never reorders it. A partition stalls a direction (bytes are held, never
//! dropped: TCP would retransmit them) until the shaper heals.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::clock::sleep_until;

use super::shaper::Shaper;

/// Bytes one direction may hold in its delay line; past this the intake
/// stops reading, so a slow or partitioned link pushes back on the writer
/// (as a full TCP window would) instead of buffering without bound.
pub const MAX_IN_FLIGHT: usize = 4 << 20;

/// Largest chunk read at once; also the size of the in-memory pipe the
/// caller talks to.
const CHUNK: usize = 64 * 1024;

/// A TCP stream (or any byte stream) as the emulated WAN delivers it.
///
/// With the shaper off this is the raw stream and every call is a direct
/// delegation; with it on, the caller talks to an in-memory pipe and two
/// pump tasks move bytes between it and the real stream.
///
/// Set socket options (`TCP_NODELAY`) before wrapping. With shaping on, a
/// reset from the peer shows up as end-of-stream on reads and
/// `BrokenPipe` on writes rather than as `ConnectionReset`.
#[derive(Debug)]
pub struct ShapedStream<S = TcpStream> {
    inner: Inner<S>,
}

#[derive(Debug)]
enum Inner<S> {
    Raw(S),
    Shaped {
        pipe: DuplexStream,
        /// Dropped with the stream: tells the read pump nobody listens any
        /// more, so it stops reading the socket (the write pump still
        /// delivers what was written, then sends FIN, like `close(2)`).
        _closed: oneshot::Sender<()>,
    },
}

/// Wraps a connected TCP stream; the shaper knows the two ends by the
/// socket's local and peer IPs. A stream whose addresses cannot be read is
/// already dead and is returned unshaped (its I/O reports the error).
///
/// With shaping on this spawns two tasks, so it must run inside a tokio
/// runtime.
pub async fn shaped_stream(stream: TcpStream, shaper: &Shaper) -> ShapedStream<TcpStream> {
    if !shaper.is_on() {
        return ShapedStream::raw(stream);
    }
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => shape_io(stream, local.ip(), peer.ip(), shaper),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "unshaped stream: no addresses");
            ShapedStream::raw(stream)
        }
    }
}

/// Wraps any byte stream between hosts `local` (this side) and `peer`:
/// writes are delayed by the `local → peer` one-way delay, reads by the
/// `peer → local` one.
pub fn shape_io<S>(stream: S, local: IpAddr, peer: IpAddr, shaper: &Shaper) -> ShapedStream<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    if !shaper.is_on() {
        return ShapedStream::raw(stream);
    }
    let (pipe, internal) = tokio::io::duplex(CHUNK);
    let (app_rd, app_wr) = tokio::io::split(internal);
    let (sock_rd, sock_wr) = tokio::io::split(stream);
    let (closed_tx, closed_rx) = oneshot::channel();
    let up = Direction {
        shaper: shaper.clone(),
        from: local,
        to: peer,
    };
    let down = Direction {
        shaper: shaper.clone(),
        from: peer,
        to: local,
    };
    tokio::spawn(pump(app_rd, sock_wr, up, None));
    tokio::spawn(pump(sock_rd, app_wr, down, Some(closed_rx)));
    ShapedStream {
        inner: Inner::Shaped {
            pipe,
            _closed: closed_tx,
        },
    }
}

impl<S> ShapedStream<S> {
    fn raw(stream: S) -> Self {
        ShapedStream {
            inner: Inner::Raw(stream),
        }
    }

    /// Whether bytes go through the shaper (false when it is off).
    pub fn is_shaped(&self) -> bool {
        matches!(self.inner, Inner::Shaped { .. })
    }

    /// The underlying stream when unshaped (production), e.g. to read its
    /// addresses; `None` when the pumps own it.
    pub fn get_raw(&self) -> Option<&S> {
        match &self.inner {
            Inner::Raw(s) => Some(s),
            Inner::Shaped { .. } => None,
        }
    }
}

/// One direction of a shaped stream.
struct Direction {
    shaper: Shaper,
    from: IpAddr,
    to: IpAddr,
}

enum Segment {
    /// Bytes, holding their share of the in-flight budget until written.
    Data(Bytes, OwnedSemaphorePermit),
    /// The source ended: shut the destination's write side down (FIN).
    Eof,
}

/// Moves bytes from `src` to `dst` through the delay line until `src`
/// ends (or `closed` fires, or `dst` fails).
async fn pump<R, W>(src: R, dst: W, dir: Direction, closed: Option<oneshot::Receiver<()>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Segment)>();
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));

    // Each half takes ownership of its ends so that when one finishes, its
    // channel end and stream half are dropped and the other half notices.
    let intake = async {
        let (tx, mut src) = (tx, src);
        let mut changes = dir.shaper.subscribe();
        let mut closed = closed;
        let mut last = Instant::now();
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let read = match closed.as_mut() {
                Some(closed) => tokio::select! {
                    r = src.read_buf(&mut buf) => r,
                    _ = closed => return,
                },
                None => src.read_buf(&mut buf).await,
            };
            let segment = match read {
                Ok(0) => Segment::Eof,
                Ok(n) => {
                    let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
                        return;
                    };
                    Segment::Data(buf.freeze(), permit)
                }
                Err(e) => {
                    tracing::debug!(from = %dir.from, to = %dir.to, error = %e, "shaped stream read failed");
                    Segment::Eof
                }
            };
            let delay = open_delay(&dir, &mut changes).await;
            let at = (Instant::now() + delay).max(last);
            last = at;
            let eof = matches!(segment, Segment::Eof);
            if tx.send((at, segment)).is_err() || eof {
                return;
            }
        }
    };

    let outlet = async {
        let (mut rx, mut dst) = (rx, dst);
        let mut changes = dir.shaper.subscribe();
        while let Some((at, segment)) = rx.recv().await {
            sleep_until(at).await;
            // Cut while in flight: hold the bytes until the link is back.
            wait_open(&dir, &mut changes).await;
            match segment {
                Segment::Data(bytes, permit) => {
                    if let Err(e) = write_chunk(&mut dst, &bytes).await {
                        tracing::debug!(from = %dir.from, to = %dir.to, error = %e, "shaped stream write failed");
                        return;
                    }
                    drop(permit);
                }
                Segment::Eof => {
                    let _ = dst.shutdown().await;
                    return;
                }
            }
        }
    };

    tokio::join!(intake, outlet);
}

async fn write_chunk<W: AsyncWrite + Unpin>(dst: &mut W, bytes: &[u8]) -> io::Result<()> {
    dst.write_all(bytes).await?;
    dst.flush().await
}

/// The one-way delay for the next chunk, waiting out any partition.
async fn open_delay(dir: &Direction, changes: &mut Option<watch::Receiver<u64>>) -> Duration {
    loop {
        if let Some(rx) = changes.as_mut() {
            // Mark the current knobs seen *before* looking, so a heal that
            // lands in between still wakes the wait below.
            rx.borrow_and_update();
        }
        if let Some(d) = dir.shaper.stream_delay(dir.from, dir.to) {
            return d;
        }
        if !wait_change(changes).await {
            return Duration::ZERO;
        }
    }
}

/// Returns once `from` and `to` are not partitioned.
async fn wait_open(dir: &Direction, changes: &mut Option<watch::Receiver<u64>>) {
    loop {
        if let Some(rx) = changes.as_mut() {
            rx.borrow_and_update();
        }
        if !dir.shaper.is_partitioned(dir.from, dir.to) || !wait_change(changes).await {
            return;
        }
    }
}

/// Waits for the next knob change; false if none can come (shaper off).
async fn wait_change(changes: &mut Option<watch::Receiver<u64>>) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ShapedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Raw(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Shaped { pipe, .. } => Pin::new(pipe).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ShapedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Raw(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Shaped { pipe, .. } => Pin::new(pipe).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Raw(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Shaped { pipe, .. } => Pin::new(pipe).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Raw(s) => s.is_write_vectored(),
            Inner::Shaped { pipe, .. } => pipe.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Raw(s) => Pin::new(s).poll_flush(cx),
            Inner::Shaped { pipe, .. } => Pin::new(pipe).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Raw(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Shaped { pipe, .. } => Pin::new(pipe).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::{world, CDG, DFW, IAD};
    use std::net::SocketAddr;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::time::timeout;

    /// An echo server on `ip`; returns its address.
    async fn echo_server(ip: IpAddr) -> SocketAddr {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Connects from `local_ip` (so the shaper sees the right host).
    async fn connect(local_ip: IpAddr, to: SocketAddr, shaper: &Shaper) -> ShapedStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(local_ip, 0)).unwrap();
        let stream = sock.connect(to).await.unwrap();
        stream.set_nodelay(true).unwrap();
        shaped_stream(stream, shaper).await
    }

    async fn round_trip(s: &mut ShapedStream, msg: &[u8]) -> Duration {
        let start = std::time::Instant::now();
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        timeout(Duration::from_secs(2), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
        start.elapsed()
    }

    #[tokio::test]
    async fn round_trip_costs_one_rtt() {
        let shaper = world();
        let server = echo_server(IAD).await;
        let mut s = connect(DFW, server, &shaper).await;
        assert!(s.is_shaped());
        let mut rtts = Vec::new();
        for i in 0..3u8 {
            rtts.push(round_trip(&mut s, &[i; 10]).await);
        }
        rtts.sort();
        let rtt = rtts[1];
        eprintln!("tcp dfw->iad round trip: {rtt:?} (table 35.1 ms)");
        assert!(
            (Duration::from_millis(34)..Duration::from_millis(120)).contains(&rtt),
            "{rtt:?}"
        );
    }

    #[tokio::test]
    async fn unshaped_is_the_raw_stream() {
        let server = echo_server(IAD).await;
        let mut s = connect(CDG, server, &Shaper::off()).await;
        assert!(!s.is_shaped());
        assert!(s.get_raw().is_some());
        let rtt = round_trip(&mut s, b"hi").await;
        assert!(rtt < Duration::from_millis(20), "{rtt:?}");
    }

    #[tokio::test]
    async fn jittered_megabyte_arrives_in_order() {
        let shaper = world();
        shaper.set_jitter(0.5);
        let server = echo_server(IAD).await;
        let s = connect(DFW, server, &shaper).await;
        let (mut r, mut w) = tokio::io::split(s);
        const LEN: usize = 1 << 20;
        let pattern = |i: usize| (i % 251) as u8 ^ (i >> 12) as u8;
        let writer = tokio::spawn(async move {
            let data: Vec<u8> = (0..LEN).map(pattern).collect();
            // Odd-sized writes so chunk edges land everywhere.
            for piece in data.chunks(7919) {
                w.write_all(piece).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::with_capacity(LEN);
        let start = std::time::Instant::now();
        timeout(Duration::from_secs(5), r.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        eprintln!("tcp 1 MiB echo with 50% jitter: {:?}", start.elapsed());
        assert_eq!(got.len(), LEN);
        if let Some(i) = (0..LEN).find(|&i| got[i] != pattern(i)) {
            panic!("byte {i} out of order");
        }
    }

    #[tokio::test]
    async fn partition_stalls_and_heal_resumes() {
        let shaper = world();
        let server = echo_server(IAD).await;
        let mut s = connect(DFW, server, &shaper).await;
        round_trip(&mut s, b"warm").await;

        shaper.partition_regions(&["iad"], &["dfw"]);
        s.write_all(b"held").await.unwrap();
        let mut back = [0u8; 4];
        let stalled = timeout(Duration::from_millis(200), s.read_exact(&mut back)).await;
        assert!(stalled.is_err(), "bytes crossed a partition");

        let healed = std::time::Instant::now();
        shaper.heal();
        timeout(Duration::from_secs(2), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"held");
        let after = healed.elapsed();
        eprintln!("tcp bytes held by a partition arrived {after:?} after heal");
        assert!(after < Duration::from_millis(150), "{after:?}");

        // Isolating either host stalls too.
        shaper.isolate_host(IAD);
        s.write_all(b"more").await.unwrap();
        assert!(timeout(Duration::from_millis(100), s.read_exact(&mut back))
            .await
            .is_err());
        shaper.restore_host(IAD);
        timeout(Duration::from_secs(2), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"more");
    }

    /// A sink that never reads: once its pipe is full the shaped writer
    /// must stop being accepted at about `MAX_IN_FLIGHT`, not buffer on.
    #[tokio::test]
    async fn in_flight_bytes_are_bounded() {
        let shaper = world();
        let (near, _far) = tokio::io::duplex(4096);
        let mut s = shape_io(near, DFW, IAD, &shaper);
        let chunk = vec![7u8; 64 * 1024];
        let mut accepted = 0usize;
        while let Ok(Ok(n)) = timeout(Duration::from_millis(100), s.write(&chunk)).await {
            accepted += n;
            assert!(accepted < 16 * MAX_IN_FLIGHT, "no backpressure");
        }
        eprintln!("tcp bytes accepted by a stuck link: {accepted}");
        assert!(accepted >= MAX_IN_FLIGHT, "{accepted}");
        assert!(accepted <= MAX_IN_FLIGHT + 4 * CHUNK, "{accepted}");
    }

    #[tokio::test]
    async fn close_delivers_pending_bytes_then_eof() {
        let shaper = world();
        let listener = TcpListener::bind(SocketAddr::new(IAD, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = connect(DFW, addr, &shaper).await;
        let (mut server, _) = listener.accept().await.unwrap();
        s.write_all(b"last words").await.unwrap();
        drop(s);
        let mut got = Vec::new();
        timeout(Duration::from_secs(2), server.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"last words");
    }
}
