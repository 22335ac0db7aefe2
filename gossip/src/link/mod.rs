//! The link shaper: emulated WAN latency, jitter, loss and partitions
//! between regions, in user space.
//!
//! The machines anykv is developed and tested on have no `netem`, yet the
//! multi-region world (`anykv demo`, tests, benchmarks) must feel like
//! Fly.io: an `iad` node is ~98 ms from a `cdg` one, links lose packets,
//! regions get cut off. Inter-node transports therefore go through one
//! hook, the [`Shaper`]:
//!
//! - UDP (SWIM gossip): [`ShapedUdp`] delays or drops each datagram on the
//!   send side.
//! - QUIC (state sync and replication streams): [`quic_endpoint`]
//!   puts the same delay line under quinn, so the handshake, loss recovery
//!   and congestion control see it.
//! - TCP: [`shaped_stream`] (any byte stream: [`shape_io`]) delays both
//!   directions on the connecting side, in order, and stalls (never drops)
//!   across partitions, with at most [`MAX_IN_FLIGHT`] bytes held per
//!   direction. It is meant for router → store connections; nothing opens
//!   one yet (only its tests), so clients reach the demo's stores unshaped.
//!
//! Delay lines wake on a sub-millisecond clock (`clock`), not on tokio's
//! 1 ms timer, so a 0.5 ms same-region round trip costs 0.5 ms.
//!
//! Every emulated node has its own loopback address (`127.0.0.N`); the
//! shaper maps IPs to regions and regions to RTTs from an [`RttTable`]
//! (`anykv demo` compiles in `bench/data/region-rtt.csv`; `--rtt-table`
//! loads another). In production the shaper is [`Shaper::off`] and each
//! transport takes its plain path: UDP and TCP after one branch per call,
//! QUIC on quinn's own socket, chosen once when the endpoint is built.
//!
//! Counters: `anykv_link_dropped_total{reason="loss"|"partition"|"queue"}`
//! (`queue`: a socket's delay line overflowed) and
//! `anykv_link_delayed_total`.

mod clock;
mod queue;
mod quic;
mod shaper;
mod table;
mod tcp;
mod udp;

use std::path::PathBuf;

pub use quic::quic_endpoint;
pub use shaper::{Shaper, Verdict};
pub use table::{RttTable, SAME_REGION_RTT};
pub use tcp::{shape_io, shaped_stream, ShapedStream, MAX_IN_FLIGHT};
pub use udp::ShapedUdp;

/// Errors loading an RTT table.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed line; `line` is 1-based.
    #[error("line {line}: {msg}")]
    Parse { line: usize, msg: String },
}

/// A small emulated world shared by the transport tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{RttTable, Shaper};
    use std::net::{IpAddr, Ipv4Addr};

    /// An `iad` host.
    pub const IAD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    /// A `cdg` host (97.7 ms from `iad`).
    pub const CDG: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    /// A `dfw` host (35.1 ms from `iad`: the cheap pair for tests where
    /// the value does not matter).
    pub const DFW: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

    /// The RTTs of `bench/data/region-rtt.csv` for these three regions,
    /// inline so transport tests do not depend on the file.
    const RTTS: &str = "from,to,rtt_ms\niad,dfw,35.1\niad,cdg,97.7\ndfw,cdg,131.4\n";

    /// A fresh shaper (no jitter, no loss, fixed seed) with [`IAD`],
    /// [`CDG`] and [`DFW`] placed.
    pub fn world() -> Shaper {
        let shaper = Shaper::new(RttTable::parse(RTTS).unwrap(), 42);
        shaper.set_region(IAD, "iad");
        shaper.set_region(CDG, "cdg");
        shaper.set_region(DFW, "dfw");
        shaper
    }
}
