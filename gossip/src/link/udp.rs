//! Shaped UDP for SWIM gossip.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::queue::{DelayQueue, PushError};
use super::shaper::{Shaper, Verdict};

/// A UDP socket whose sends go through the [`Shaper`].
///
/// Delay is applied on the send side only: each node shapes what it sends,
/// so a ping/ack exchange costs RTT/2 each way, one RTT in total. Sends
/// return at once (the datagram waits in this socket's delay line) and
/// lost datagrams are reported as sent, as a real network would.
/// Receiving is untouched.
///
/// The shaper identifies this host by the socket's local IP, so in the
/// emulated world bind an explicit `127.0.0.N`, not `0.0.0.0`.
#[derive(Debug)]
pub struct ShapedUdp {
    socket: Arc<UdpSocket>,
    shaper: Shaper,
    local_ip: IpAddr,
    /// `Some` exactly when the shaper is on.
    queue: Option<DelayQueue<(Bytes, SocketAddr)>>,
}

impl ShapedUdp {
    /// Wraps `socket`. With shaping on its delay line finishes blocked
    /// sends on the current tokio runtime, so it must run inside one.
    pub fn new(socket: Arc<UdpSocket>, shaper: Shaper) -> io::Result<Self> {
        let local_ip = socket.local_addr()?.ip();
        let queue = shaper.is_on().then(|| {
            let (now, later) = (socket.clone(), socket.clone());
            DelayQueue::spawn(
                move |(buf, to): (Bytes, SocketAddr)| match now.try_send_to(&buf, to) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err((buf, to)),
                    Err(e) => {
                        tracing::debug!(%to, error = %e, "shaped udp send failed");
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                },
                move |(buf, to)| {
                    let out = later.clone();
                    Box::pin(async move {
                        if let Err(e) = out.send_to(&buf, to).await {
                            tracing::debug!(%to, error = %e, "shaped udp send failed");
                        }
                    })
                },
            )
        });
        Ok(ShapedUdp {
            socket,
            shaper,
            local_ip,
            queue,
        })
    }

    /// Sends `buf` to `to`, now (shaper off) or after the link's one-way
    /// delay. Returns `buf.len()` for dropped datagrams too.
    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let Some(queue) = &self.queue else {
            return self.socket.send_to(buf, to).await;
        };
        match self.shaper.verdict(self.local_ip, to.ip()) {
            Verdict::Drop => Ok(buf.len()),
            Verdict::Deliver(delay) => {
                match queue.push(delay, buf.len(), (Bytes::copy_from_slice(buf), to)) {
                    Ok(()) => Ok(buf.len()),
                    Err(PushError::Full) => {
                        metrics::counter!("anykv_link_dropped_total", "reason" => "queue")
                            .increment(1);
                        Ok(buf.len())
                    }
                }
            }
        }
    }

    /// Receives a datagram (never shaped: the sender already was).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The wrapped socket (sending on it directly bypasses the shaper).
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The shaper this socket obeys.
    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::{world, CDG, DFW, IAD};
    use std::time::{Duration, Instant};
    use tokio::time::timeout;

    async fn bind(ip: IpAddr, shaper: &Shaper) -> ShapedUdp {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
        ShapedUdp::new(Arc::new(sock), shaper.clone()).unwrap()
    }

    /// Echoes every datagram back through the same shaper until dropped.
    fn echo(sock: ShapedUdp) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], from).await;
            }
        })
    }

    /// Median round trip of `n` sequential pings.
    async fn ping_rtt(a: &ShapedUdp, b: SocketAddr, n: usize) -> Duration {
        let mut rtts = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..n {
            let t = Instant::now();
            a.send_to(&[i as u8], b).await.unwrap();
            let (len, _) = timeout(Duration::from_secs(2), a.recv_from(&mut buf))
                .await
                .expect("pong")
                .unwrap();
            assert_eq!(&buf[..len], &[i as u8]);
            rtts.push(t.elapsed());
        }
        rtts.sort();
        rtts[n / 2]
    }

    /// How many of `n` datagrams sent now arrive at `rx` within `wait`.
    async fn count_arrivals(tx: &ShapedUdp, rx: &ShapedUdp, n: usize, wait: Duration) -> usize {
        let to = rx.local_addr().unwrap();
        for i in 0..n {
            tx.send_to(&(i as u32).to_be_bytes(), to).await.unwrap();
            // Spread the burst so it cannot overflow the receive buffer.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut got = 0;
        let mut buf = [0u8; 16];
        while let Ok(r) = timeout(wait, rx.recv_from(&mut buf)).await {
            r.unwrap();
            got += 1;
        }
        got
    }

    #[tokio::test]
    async fn ping_pong_costs_the_region_rtt() {
        let shaper = world();
        let a = bind(IAD, &shaper).await;
        let b = bind(CDG, &shaper).await;
        let b_addr = b.local_addr().unwrap();
        let server = echo(b);
        let rtt = ping_rtt(&a, b_addr, 3).await;
        eprintln!("udp iad<->cdg rtt: {rtt:?} (table 97.7 ms)");
        assert!(
            (Duration::from_millis(90)..Duration::from_millis(140)).contains(&rtt),
            "{rtt:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn unshaped_is_fast() {
        let off = Shaper::off();
        let a = bind(IAD, &off).await;
        let b = bind(CDG, &off).await;
        let b_addr = b.local_addr().unwrap();
        let server = echo(b);
        let rtt = ping_rtt(&a, b_addr, 3).await;
        eprintln!("udp unshaped rtt: {rtt:?}");
        assert!(rtt < Duration::from_millis(10), "{rtt:?}");
        server.abort();
    }

    #[tokio::test]
    async fn loss_drops_datagrams() {
        let shaper = world();
        let a = bind(IAD, &shaper).await;
        let b = bind(DFW, &shaper).await;
        let wait = Duration::from_millis(150);

        shaper.set_loss(1.0);
        assert_eq!(count_arrivals(&a, &b, 50, wait).await, 0);

        shaper.set_loss(0.5);
        let got = count_arrivals(&a, &b, 400, wait).await;
        eprintln!("udp loss 0.5: {got}/400 arrived");
        assert!((140..=260).contains(&got), "{got}");
    }

    #[tokio::test]
    async fn partition_drops_and_heal_restores() {
        let shaper = world();
        let a = bind(IAD, &shaper).await;
        let b = bind(DFW, &shaper).await;
        let wait = Duration::from_millis(100);

        shaper.partition_regions(&["dfw"], &["iad"]);
        assert_eq!(count_arrivals(&a, &b, 20, wait).await, 0);
        assert_eq!(count_arrivals(&b, &a, 20, wait).await, 0);
        shaper.heal();
        assert_eq!(count_arrivals(&a, &b, 20, wait).await, 20);

        shaper.isolate_host(DFW);
        assert_eq!(count_arrivals(&a, &b, 20, wait).await, 0);
        shaper.restore_host(DFW);
        assert_eq!(count_arrivals(&b, &a, 20, wait).await, 20);
    }

    #[tokio::test]
    async fn order_is_kept_without_jitter() {
        let shaper = world();
        let a = bind(IAD, &shaper).await;
        let b = bind(DFW, &shaper).await;
        let to = b.local_addr().unwrap();
        for i in 0u32..100 {
            a.send_to(&i.to_be_bytes(), to).await.unwrap();
        }
        let mut buf = [0u8; 4];
        for i in 0u32..100 {
            let (n, _) = timeout(Duration::from_secs(1), b.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 4);
            assert_eq!(u32::from_be_bytes(buf), i);
        }
    }
}
