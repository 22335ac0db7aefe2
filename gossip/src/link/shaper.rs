//! The decision half of the link shaper: given a source and destination
//! host, should a datagram be dropped, and how long does it travel?
//!
//! Transports ([`super::ShapedUdp`], [`super::quic_endpoint`],
//! [`super::shaped_stream`]) ask this for every datagram or chunk; they
//! own the queues that actually hold bytes back.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;

use super::table::RttTable;

/// What the emulated network does with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Lost (random loss or a partition); the sender is not told.
    Drop,
    /// Delivered after this one-way delay.
    Deliver(Duration),
}

/// Per-region-pair delay, jitter, loss and partitions for the emulated
/// multi-region world.
///
/// Cloning is cheap (an `Arc`); every node of an emulated cluster shares
/// one shaper so a partition or a loss knob applies to all of them at once.
/// [`Shaper::off`] (also the `Default`) is what production uses: every
/// transport checks [`is_on`](Self::is_on) once and then takes its plain
/// path, so shaping costs one branch.
///
/// Hosts are identified by IP only (every emulated node has its own
/// `127.0.0.N`); `::ffff:127.0.0.N` is the same host as `127.0.0.N`.
/// Hosts the shaper was not told about get no delay and are never dropped
/// by region rules or random loss: they are outside the emulated WAN (a
/// test client, the in-process DNS zone).
#[derive(Clone, Default)]
pub struct Shaper {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    table: RttTable,
    state: Mutex<State>,
    /// Bumped on every knob change so stalled TCP pumps notice a heal
    /// without polling.
    changes: watch::Sender<u64>,
}

/// A region id: the table's dense index, or past it for regions the table
/// does not know (they have no RTT).
type Region = usize;

struct State {
    rng: SmallRng,
    /// Region ids past the table's own, for names only knobs mentioned.
    extra_regions: HashMap<String, Region>,
    hosts: HashMap<IpAddr, Region>,
    jitter: f64,
    loss: f64,
    pair_loss: HashMap<(Region, Region), f64>,
    extra_delay: HashMap<(Region, Region), Duration>,
    cut_regions: HashSet<(Region, Region)>,
    cut_hosts: HashSet<(IpAddr, IpAddr)>,
    isolated: HashSet<IpAddr>,
}

impl Shaper {
    /// The disabled shaper: every transport goes straight to the socket.
    pub fn off() -> Self {
        Shaper { inner: None }
    }

    /// An enabled shaper over `table`; `seed` makes loss and jitter
    /// reproducible run to run.
    pub fn new(table: RttTable, seed: u64) -> Self {
        let (changes, _) = watch::channel(0);
        Shaper {
            inner: Some(Arc::new(Inner {
                table,
                state: Mutex::new(State {
                    rng: SmallRng::seed_from_u64(seed),
                    extra_regions: HashMap::new(),
                    hosts: HashMap::new(),
                    jitter: 0.0,
                    loss: 0.0,
                    pair_loss: HashMap::new(),
                    extra_delay: HashMap::new(),
                    cut_regions: HashSet::new(),
                    cut_hosts: HashSet::new(),
                    isolated: HashSet::new(),
                }),
                changes,
            })),
        }
    }

    /// Whether shaping is enabled (false for [`Shaper::off`]).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The RTT table of an enabled shaper.
    pub fn table(&self) -> Option<&RttTable> {
        self.inner.as_ref().map(|i| &i.table)
    }

    /// Places host `ip` in `region`. Knob setters on a disabled shaper are
    /// no-ops (production has nothing to shape).
    pub fn set_region(&self, ip: IpAddr, region: &str) {
        self.update(|inner, s| {
            let r = s.region_id(&inner.table, region);
            s.hosts.insert(normalize(ip), r);
        });
    }

    /// The region host `ip` was placed in.
    pub fn region_of(&self, ip: IpAddr) -> Option<String> {
        let inner = self.inner.as_ref()?;
        let s = inner.state.lock();
        let r = *s.hosts.get(&normalize(ip))?;
        Some(s.region_name(&inner.table, r).to_owned())
    }

    /// Delay varies uniformly by ±`fraction` of the one-way delay
    /// (clamped to 0..=1; default 0). Datagrams may then overtake each
    /// other, as on a real WAN; TCP streams never reorder.
    pub fn set_jitter(&self, fraction: f64) {
        self.update(|_, s| s.jitter = clamp01(fraction));
    }

    /// Probability (0..=1) that a datagram between two known hosts is lost.
    /// Streams are never affected: TCP retransmits, and the extra latency
    /// that would cost is not modelled.
    pub fn set_loss(&self, p: f64) {
        self.update(|_, s| s.loss = clamp01(p));
    }

    /// Loss probability for one region pair (both directions), overriding
    /// [`set_loss`](Self::set_loss) for it.
    pub fn set_pair_loss(&self, a: &str, b: &str, p: f64) {
        self.update(|inner, s| {
            let key = s.pair(&inner.table, a, b);
            s.pair_loss.insert(key, clamp01(p));
        });
    }

    /// Removes a [`set_pair_loss`](Self::set_pair_loss) override.
    pub fn clear_pair_loss(&self, a: &str, b: &str) {
        self.update(|inner, s| {
            let key = s.pair(&inner.table, a, b);
            s.pair_loss.remove(&key);
        });
    }

    /// Adds `extra` to the one-way delay between two regions (each
    /// direction, so the RTT grows by twice `extra`); zero removes it.
    /// Models a congested or rerouted path.
    pub fn set_extra_delay(&self, a: &str, b: &str, extra: Duration) {
        self.update(|inner, s| {
            let key = s.pair(&inner.table, a, b);
            if extra.is_zero() {
                s.extra_delay.remove(&key);
            } else {
                s.extra_delay.insert(key, extra);
            }
        });
    }

    /// Cuts every region in `a` off from every region in `b`, both ways.
    /// Adds to existing cuts; [`heal`](Self::heal) removes them all.
    pub fn partition_regions(&self, a: &[&str], b: &[&str]) {
        self.update(|inner, s| {
            for x in a {
                for y in b {
                    let key = s.pair(&inner.table, x, y);
                    s.cut_regions.insert(key);
                }
            }
        });
    }

    /// Cuts every host in `a` off from every host in `b`, both ways.
    pub fn partition_hosts(&self, a: &[IpAddr], b: &[IpAddr]) {
        self.update(|_, s| {
            for &x in a {
                for &y in b {
                    s.cut_hosts.insert(host_pair(x, y));
                }
            }
        });
    }

    /// Cuts one host off from everyone (a machine whose network died).
    pub fn isolate_host(&self, ip: IpAddr) {
        self.update(|_, s| {
            s.isolated.insert(normalize(ip));
        });
    }

    /// Undoes [`isolate_host`](Self::isolate_host).
    pub fn restore_host(&self, ip: IpAddr) {
        self.update(|_, s| {
            s.isolated.remove(&normalize(ip));
        });
    }

    /// Removes every partition: region cuts, host cuts and isolated hosts.
    /// Loss, jitter and extra delay stay as they are.
    pub fn heal(&self) {
        self.update(|_, s| {
            s.cut_regions.clear();
            s.cut_hosts.clear();
            s.isolated.clear();
        });
    }

    /// The fate of one datagram from `from` to `to`: dropped by a
    /// partition or random loss, or delivered after the one-way delay
    /// (RTT/2 plus extra delay, ± jitter). Counts
    /// `anykv_link_dropped_total{reason}` and `anykv_link_delayed_total`.
    pub fn verdict(&self, from: IpAddr, to: IpAddr) -> Verdict {
        let Some(inner) = &self.inner else {
            return Verdict::Deliver(Duration::ZERO);
        };
        let mut s = inner.state.lock();
        if s.cut(from, to) {
            drop(s);
            metrics::counter!("anykv_link_dropped_total", "reason" => "partition").increment(1);
            return Verdict::Drop;
        }
        let Some((a, b)) = s.hosts_of(from, to) else {
            return Verdict::Deliver(Duration::ZERO);
        };
        let p = s.pair_loss.get(&ordered(a, b)).copied().unwrap_or(s.loss);
        if p > 0.0 && s.rng.random::<f64>() < p {
            drop(s);
            metrics::counter!("anykv_link_dropped_total", "reason" => "loss").increment(1);
            return Verdict::Drop;
        }
        let d = s.one_way(&inner.table, a, b);
        drop(s);
        metrics::counter!("anykv_link_delayed_total").increment(1);
        Verdict::Deliver(d)
    }

    /// One-way delay for a chunk of a byte stream from `from` to `to`, or
    /// `None` while the two are partitioned (the stream must stall, not
    /// lose bytes). Random loss does not apply to streams.
    pub fn stream_delay(&self, from: IpAddr, to: IpAddr) -> Option<Duration> {
        let Some(inner) = &self.inner else {
            return Some(Duration::ZERO);
        };
        let mut s = inner.state.lock();
        if s.cut(from, to) {
            return None;
        }
        let Some((a, b)) = s.hosts_of(from, to) else {
            return Some(Duration::ZERO);
        };
        let d = s.one_way(&inner.table, a, b);
        drop(s);
        metrics::counter!("anykv_link_delayed_total").increment(1);
        Some(d)
    }

    /// Whether `from` and `to` are currently partitioned (host or region
    /// cut). Unknown hosts are only cut by host rules.
    pub fn is_partitioned(&self, from: IpAddr, to: IpAddr) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        inner.state.lock().cut(from, to)
    }

    /// A receiver that changes whenever a knob changes (`None` when off),
    /// so stalled streams wake on [`heal`](Self::heal).
    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        self.inner.as_ref().map(|i| i.changes.subscribe())
    }

    fn update(&self, f: impl FnOnce(&Inner, &mut State)) {
        if let Some(inner) = &self.inner {
            f(inner, &mut inner.state.lock());
            inner.changes.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

impl State {
    fn region_id(&mut self, table: &RttTable, name: &str) -> Region {
        if let Some(id) = table.id(name) {
            return id;
        }
        let next = table.region_count() + self.extra_regions.len();
        *self.extra_regions.entry(name.to_owned()).or_insert(next)
    }

    fn region_name<'a>(&'a self, table: &'a RttTable, r: Region) -> &'a str {
        if let Some(name) = table.regions().nth(r) {
            return name;
        }
        self.extra_regions
            .iter()
            .find(|(_, &id)| id == r)
            .map(|(n, _)| n.as_str())
            .unwrap_or("?")
    }

    fn pair(&mut self, table: &RttTable, a: &str, b: &str) -> (Region, Region) {
        let a = self.region_id(table, a);
        let b = self.region_id(table, b);
        ordered(a, b)
    }

    /// Regions of both hosts, or `None` if either is unknown.
    fn hosts_of(&self, from: IpAddr, to: IpAddr) -> Option<(Region, Region)> {
        let a = *self.hosts.get(&normalize(from))?;
        let b = *self.hosts.get(&normalize(to))?;
        Some((a, b))
    }

    /// Whether a host rule, or (for two placed hosts) a region rule, cuts
    /// `from` off from `to`.
    fn cut(&self, from: IpAddr, to: IpAddr) -> bool {
        let (from, to) = (normalize(from), normalize(to));
        self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.cut_hosts.contains(&host_pair(from, to))
            || self
                .hosts_of(from, to)
                .is_some_and(|(a, b)| self.cut_regions.contains(&ordered(a, b)))
    }

    /// RTT/2 + extra, scaled by a uniform jitter factor in 1 ± jitter.
    fn one_way(&mut self, table: &RttTable, a: Region, b: Region) -> Duration {
        let base = table.rtt_by_id(a, b).unwrap_or(Duration::ZERO) / 2
            + self
                .extra_delay
                .get(&ordered(a, b))
                .copied()
                .unwrap_or(Duration::ZERO);
        if self.jitter > 0.0 && !base.is_zero() {
            let j = self.jitter;
            // j ≤ 1 so the factor is never negative (mul_f64 would panic).
            base.mul_f64(1.0 + self.rng.random_range(-j..=j))
        } else {
            base
        }
    }
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Shaper(off)"),
            Some(inner) => {
                let s = inner.state.lock();
                f.debug_struct("Shaper")
                    .field("hosts", &s.hosts.len())
                    .field("jitter", &s.jitter)
                    .field("loss", &s.loss)
                    .field("cut_regions", &s.cut_regions.len())
                    .field("cut_hosts", &s.cut_hosts.len())
                    .field("isolated", &s.isolated.len())
                    .finish()
            }
        }
    }
}

/// Folds IPv4-mapped IPv6 onto IPv4 so a dual-stack socket's view of a
/// peer (`::ffff:127.0.0.2`) and an IPv4 socket's (`127.0.0.2`) agree.
pub(crate) fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn ordered<T: Ord>(a: T, b: T) -> (T, T) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn host_pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    ordered(normalize(a), normalize(b))
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::{world, CDG, DFW, IAD};
    use std::net::Ipv4Addr;

    const OUTSIDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99));

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn off_delivers_everything_instantly() {
        let s = Shaper::off();
        assert!(!s.is_on());
        s.partition_regions(&["iad"], &["cdg"]);
        assert_eq!(s.verdict(IAD, CDG), Verdict::Deliver(Duration::ZERO));
        assert_eq!(s.stream_delay(IAD, CDG), Some(Duration::ZERO));
        assert_eq!(s.region_of(IAD), None);
    }

    #[test]
    fn one_way_delay_is_half_the_rtt() {
        let s = world();
        assert_eq!(
            s.verdict(IAD, CDG),
            Verdict::Deliver(Duration::from_micros(48_850))
        );
        assert_eq!(s.verdict(CDG, IAD), s.verdict(IAD, CDG));
        assert_eq!(
            s.stream_delay(IAD, DFW),
            Some(Duration::from_micros(17_550))
        );
        assert_eq!(
            s.verdict(IAD, IAD),
            Verdict::Deliver(Duration::from_micros(250))
        );
    }

    #[test]
    fn ipv4_mapped_is_the_same_host() {
        let s = world();
        let mapped: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        assert_eq!(s.region_of(mapped).as_deref(), Some("cdg"));
        assert_eq!(s.verdict(IAD, mapped), s.verdict(IAD, CDG));
        s.set_region("::ffff:127.0.0.9".parse().unwrap(), "syd");
        assert_eq!(
            s.region_of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
                .as_deref(),
            Some("syd")
        );
    }

    #[test]
    fn unknown_hosts_are_outside_the_wan() {
        let s = world();
        s.set_loss(1.0);
        s.partition_regions(&["iad"], &["cdg", "dfw"]);
        assert_eq!(s.verdict(IAD, OUTSIDER), Verdict::Deliver(Duration::ZERO));
        assert_eq!(s.stream_delay(OUTSIDER, IAD), Some(Duration::ZERO));
        // Host rules still apply to them.
        s.isolate_host(OUTSIDER);
        assert_eq!(s.verdict(IAD, OUTSIDER), Verdict::Drop);
        assert!(s.is_partitioned(IAD, OUTSIDER));
    }

    #[test]
    fn unknown_region_has_no_delay_but_obeys_partitions() {
        let s = world();
        s.set_region(OUTSIDER, "lhr");
        assert_eq!(s.region_of(OUTSIDER).as_deref(), Some("lhr"));
        assert_eq!(s.verdict(IAD, OUTSIDER), Verdict::Deliver(Duration::ZERO));
        s.partition_regions(&["lhr"], &["iad"]);
        assert_eq!(s.verdict(IAD, OUTSIDER), Verdict::Drop);
        s.set_extra_delay("lhr", "iad", Duration::from_millis(5));
        s.heal();
        assert_eq!(
            s.verdict(OUTSIDER, IAD),
            Verdict::Deliver(Duration::from_millis(5))
        );
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let s = world();
        s.set_jitter(0.5);
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let Verdict::Deliver(d) = s.verdict(IAD, CDG) else {
                panic!("dropped without loss")
            };
            assert!((24.4..=73.3).contains(&ms(d)), "{d:?}");
            seen.insert(d);
        }
        assert!(
            seen.len() > 100,
            "jitter should vary: {} values",
            seen.len()
        );
        // A stream's chunks jitter the same way (ordering is the pump's job).
        let d = s.stream_delay(IAD, CDG).unwrap();
        assert!((24.4..=73.3).contains(&ms(d)), "{d:?}");
    }

    #[test]
    fn loss_probability_is_respected() {
        let s = world();
        s.set_loss(0.25);
        let dropped = (0..4000)
            .filter(|_| s.verdict(IAD, DFW) == Verdict::Drop)
            .count();
        assert!((800..1200).contains(&dropped), "{dropped}");
        assert_eq!(
            s.stream_delay(IAD, DFW),
            Some(Duration::from_micros(17_550))
        );
    }

    #[test]
    fn pair_loss_overrides_global() {
        let s = world();
        s.set_pair_loss("cdg", "iad", 1.0);
        assert_eq!(s.verdict(IAD, CDG), Verdict::Drop);
        assert_eq!(s.verdict(CDG, IAD), Verdict::Drop);
        assert!(matches!(s.verdict(IAD, DFW), Verdict::Deliver(_)));
        s.set_loss(1.0);
        s.set_pair_loss("iad", "dfw", 0.0);
        assert!(matches!(s.verdict(IAD, DFW), Verdict::Deliver(_)));
        s.clear_pair_loss("iad", "dfw");
        assert_eq!(s.verdict(IAD, DFW), Verdict::Drop);
    }

    #[test]
    fn region_partition_and_heal() {
        let s = world();
        s.partition_regions(&["iad"], &["cdg"]);
        assert_eq!(s.verdict(IAD, CDG), Verdict::Drop);
        assert_eq!(s.verdict(CDG, IAD), Verdict::Drop);
        assert_eq!(s.stream_delay(CDG, IAD), None);
        assert!(s.is_partitioned(IAD, CDG));
        assert!(matches!(s.verdict(IAD, DFW), Verdict::Deliver(_)));
        assert!(matches!(s.verdict(DFW, CDG), Verdict::Deliver(_)));
        s.heal();
        assert!(!s.is_partitioned(IAD, CDG));
        assert!(matches!(s.verdict(IAD, CDG), Verdict::Deliver(_)));
    }

    #[test]
    fn host_partitions() {
        let s = world();
        let iad2 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12));
        s.set_region(iad2, "iad");
        s.isolate_host(IAD);
        assert_eq!(s.verdict(IAD, iad2), Verdict::Drop);
        assert_eq!(s.verdict(CDG, IAD), Verdict::Drop);
        assert!(matches!(s.verdict(CDG, iad2), Verdict::Deliver(_)));
        s.restore_host(IAD);
        assert!(matches!(s.verdict(IAD, iad2), Verdict::Deliver(_)));

        s.partition_hosts(&[IAD], &[iad2]);
        assert_eq!(s.verdict(iad2, IAD), Verdict::Drop);
        assert!(matches!(s.verdict(IAD, CDG), Verdict::Deliver(_)));
        s.heal();
        assert!(matches!(s.verdict(iad2, IAD), Verdict::Deliver(_)));
    }

    #[test]
    fn extra_delay_adds_to_each_direction() {
        let s = world();
        s.set_extra_delay("dfw", "iad", Duration::from_millis(10));
        assert_eq!(
            s.stream_delay(IAD, DFW),
            Some(Duration::from_micros(27_550))
        );
        assert_eq!(
            s.stream_delay(DFW, IAD),
            Some(Duration::from_micros(27_550))
        );
        s.set_extra_delay("dfw", "iad", Duration::ZERO);
        assert_eq!(
            s.stream_delay(IAD, DFW),
            Some(Duration::from_micros(17_550))
        );
    }

    #[test]
    fn knobs_clamp_nonsense() {
        let s = world();
        s.set_loss(f64::NAN);
        s.set_jitter(7.0);
        assert!(matches!(s.verdict(IAD, CDG), Verdict::Deliver(_)));
        s.set_loss(3.0);
        assert_eq!(s.verdict(IAD, CDG), Verdict::Drop);
    }

    #[test]
    fn same_seed_same_fate() {
        let run = || {
            let s = world();
            s.set_loss(0.5);
            s.set_jitter(0.3);
            (0..200).map(|_| s.verdict(IAD, CDG)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[tokio::test]
    async fn knob_changes_wake_subscribers() {
        let s = world();
        let mut rx = s.subscribe().unwrap();
        rx.borrow_and_update();
        s.heal();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(Shaper::off().subscribe().is_none());
    }
}
