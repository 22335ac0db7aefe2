//! Shaped QUIC: a `quinn::AsyncUdpSocket` that runs every outgoing
//! datagram through the [`Shaper`] before quinn's own tokio socket sends
//! it.
//!
//! Shaping below quinn (rather than delaying stream reads and writes above
//! it) keeps QUIC's own machinery honest: the handshake, ACKs, loss
//! recovery and congestion control all see the emulated WAN.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};

use super::queue::{DelayQueue, PushError};
use super::shaper::{Shaper, Verdict};

/// Builds a quinn endpoint on `socket` whose outgoing datagrams obey
/// `shaper`. With the shaper off this is exactly
/// `Endpoint::new(config, server, socket, TokioRuntime)`, so production
/// pays nothing (GSO and all).
///
/// Must be called inside a tokio runtime. Bind `socket` to the node's
/// explicit `127.0.0.N` in the emulated world: the shaper knows hosts by
/// IP. `Endpoint::rebind` would bypass the shaper; don't use it on a
/// shaped endpoint.
pub fn quic_endpoint(
    socket: std::net::UdpSocket,
    shaper: Shaper,
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let runtime: Arc<dyn Runtime> = Arc::new(TokioRuntime);
    if !shaper.is_on() {
        return quinn::Endpoint::new(config, server, socket, runtime);
    }
    let inner = runtime.wrap_udp_socket(socket)?;
    let shaped: Arc<dyn AsyncUdpSocket> = Arc::new(ShapedQuicSocket::new(inner, shaper)?);
    quinn::Endpoint::new_with_abstract_socket(config, server, shaped, runtime)
}

/// One datagram waiting in the delay line.
struct Datagram {
    contents: Bytes,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
}

/// quinn's tokio socket with a delay line in front of its send side.
///
/// `try_send` never blocks: every datagram (even one with zero delay, to
/// an unknown host) goes through the delay line, so datagrams to one peer
/// leave in the order quinn produced them unless jitter (or a send that
/// would have blocked, finished on the runtime) says otherwise.
struct ShapedQuicSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shaper: Shaper,
    local_ip: IpAddr,
    queue: DelayQueue<Datagram>,
}

impl ShapedQuicSocket {
    fn new(inner: Arc<dyn AsyncUdpSocket>, shaper: Shaper) -> io::Result<Self> {
        let local_ip = inner.local_addr()?.ip();
        let out = inner.clone();
        let later = inner.clone();
        let queue = DelayQueue::spawn(
            move |d: Datagram| send_now(&*out, d),
            move |d| Box::pin(send_later(later.clone(), d)),
        );
        Ok(ShapedQuicSocket {
            inner,
            shaper,
            local_ip,
            queue,
        })
    }
}

impl Datagram {
    /// The datagram as quinn's socket sends it.
    fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.destination,
            ecn: self.ecn,
            contents: &self.contents,
            segment_size: None,
            src_ip: self.src_ip,
        }
    }
}

/// Hands one delayed datagram to the real socket if it takes it now;
/// gives it back when the socket would block. Other errors are logged
/// and the datagram is lost, as on a real network; QUIC recovers.
fn send_now(socket: &dyn AsyncUdpSocket, d: Datagram) -> Result<(), Datagram> {
    let transmit = d.transmit();
    match socket.try_send(&transmit) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(d),
        Err(e) => {
            tracing::debug!(to = %d.destination, error = %e, "shaped quic send failed");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Hands one delayed datagram to the real socket, waiting for writability
/// if its buffer is full. Errors are logged and the datagram is lost, as
/// on a real network; QUIC recovers.
async fn send_later(socket: Arc<dyn AsyncUdpSocket>, d: Datagram) {
    let transmit = d.transmit();
    loop {
        match socket.try_send(&transmit) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut poller = socket.clone().create_io_poller();
                if let Err(e) = poll_fn(|cx| poller.as_mut().poll_writable(cx)).await {
                    tracing::debug!(to = %d.destination, error = %e, "shaped quic socket unwritable");
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(to = %d.destination, error = %e, "shaped quic send failed");
                return;
            }
        }
    }
}

impl AsyncUdpSocket for ShapedQuicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let from = transmit.src_ip.unwrap_or(self.local_ip);
        let to = transmit.destination.ip();
        // max_transmit_segments() is 1, but split GSO batches anyway in case
        // quinn ever hands one over: each segment is its own datagram.
        let seg = match transmit.segment_size {
            Some(s) if s > 0 => s,
            _ => transmit.contents.len().max(1),
        };
        for chunk in transmit.contents.chunks(seg) {
            let Verdict::Deliver(delay) = self.shaper.verdict(from, to) else {
                continue;
            };
            let d = Datagram {
                contents: Bytes::copy_from_slice(chunk),
                destination: transmit.destination,
                ecn: transmit.ecn,
                src_ip: transmit.src_ip,
            };
            match self.queue.push(delay, chunk.len(), d) {
                Ok(()) => {}
                Err(PushError::Full) => {
                    metrics::counter!("anykv_link_dropped_total", "reason" => "queue").increment(1);
                }
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per transmit: the shaper judges datagrams one by one
    /// and GSO would buy nothing, since each is copied anyway.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

impl fmt::Debug for ShapedQuicSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShapedQuicSocket")
            .field("inner", &self.inner)
            .field("queue", &self.queue)
            .finish()
    }
}

/// `try_send` on the shaped socket never returns `WouldBlock` (it only
/// queues), so there is never anything to wait for.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::{world, DFW, IAD};
    use quinn::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::time::{Duration, Instant};

    struct Pair {
        server: quinn::Endpoint,
        client: quinn::Endpoint,
    }

    /// A server on `server_ip` answering every bi stream with its request
    /// reversed, and a client on `client_ip` trusting its self-signed cert.
    fn pair(shaper: &Shaper, server_ip: IpAddr, client_ip: IpAddr) -> Pair {
        let cert = rcgen::generate_simple_self_signed(vec!["anykv.test".to_owned()]).unwrap();
        let cert_der: CertificateDer<'static> = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server_cfg =
            quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key).unwrap();
        let mut roots = quinn::rustls::RootCertStore::empty();
        roots.add(cert_der).unwrap();
        let client_cfg = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();

        let bind = |ip| std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        let server = quic_endpoint(
            bind(server_ip),
            shaper.clone(),
            quinn::EndpointConfig::default(),
            Some(server_cfg),
        )
        .unwrap();
        let mut client = quic_endpoint(
            bind(client_ip),
            shaper.clone(),
            quinn::EndpointConfig::default(),
            None,
        )
        .unwrap();
        client.set_default_client_config(client_cfg);

        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(mut req) = recv.read_to_end(1 << 20).await else {
                            return;
                        };
                        req.reverse();
                        let _ = send.write_all(&req).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        Pair { server, client }
    }

    /// Connects and does one request/response; returns the response and
    /// how long the whole exchange took.
    async fn exchange(p: &Pair, req: &[u8]) -> (Vec<u8>, Duration) {
        let start = Instant::now();
        let conn = p
            .client
            .connect(p.server.local_addr().unwrap(), "anykv.test")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(req).await.unwrap();
        send.finish().unwrap();
        let resp = recv.read_to_end(1 << 20).await.unwrap();
        let took = start.elapsed();
        conn.close(0u32.into(), b"done");
        (resp, took)
    }

    #[tokio::test]
    async fn handshake_and_request_pay_two_rtts() {
        let shaper = world();
        let p = pair(&shaper, IAD, DFW);
        let (resp, took) = tokio::time::timeout(Duration::from_secs(5), exchange(&p, b"hello"))
            .await
            .unwrap();
        assert_eq!(resp, b"olleh");
        eprintln!("quic iad<->dfw connect + request: {took:?} (2 x 35.1 ms = 70.2 ms)");
        // Handshake (1 RTT) + request/response (1 RTT).
        assert!(took >= Duration::from_millis(68), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");
    }

    #[tokio::test]
    async fn unshaped_endpoint_works() {
        let p = pair(&Shaper::off(), IAD, DFW);
        let (resp, took) = tokio::time::timeout(Duration::from_secs(5), exchange(&p, b"abc"))
            .await
            .unwrap();
        assert_eq!(resp, b"cba");
        eprintln!("quic unshaped connect + request: {took:?}");
        assert!(took < Duration::from_millis(60), "{took:?}");
    }

    #[tokio::test]
    async fn large_transfer_survives_loss_and_jitter() {
        let shaper = world();
        shaper.set_region("127.0.0.5".parse().unwrap(), "iad");
        shaper.set_region("127.0.0.6".parse().unwrap(), "iad");
        shaper.set_jitter(0.5);
        shaper.set_loss(0.02);
        let p = pair(
            &shaper,
            "127.0.0.5".parse().unwrap(),
            "127.0.0.6".parse().unwrap(),
        );
        let req: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (resp, took) = tokio::time::timeout(Duration::from_secs(5), exchange(&p, &req))
            .await
            .unwrap();
        let mut want = req.clone();
        want.reverse();
        assert!(resp == want, "payload corrupted");
        eprintln!("quic 200 KB through 2% loss + 50% jitter (same region): {took:?}");
    }

    #[tokio::test]
    async fn partition_blocks_the_handshake() {
        let shaper = world();
        shaper.partition_regions(&["iad"], &["dfw"]);
        let p = pair(&shaper, IAD, DFW);
        let cut = tokio::time::timeout(Duration::from_millis(300), exchange(&p, b"x")).await;
        assert!(cut.is_err(), "handshake crossed a partition");
        shaper.heal();
        let (resp, _) = tokio::time::timeout(Duration::from_secs(5), exchange(&p, b"xy"))
            .await
            .unwrap();
        assert_eq!(resp, b"yx");
    }
}
