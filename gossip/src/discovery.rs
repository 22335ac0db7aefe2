//! Fly internal DNS discovery.
//!
//! On Fly every app gets records in the `.internal` zone served by the
//! resolver at `fdaa::3` (the one `/etc/resolv.conf` names on a machine):
//!
//! | name | type | content |
//! | --- | --- | --- |
//! | `<app>.internal` | AAAA | 6PN addresses of the started machines |
//! | `vms.<app>.internal` | TXT | `"<machine_id> <region>,..."` |
//! | `regions.<app>.internal` | TXT | `"iad,sjc,..."` |
//! | `<region>.<app>.internal` | AAAA | machines in one region |
//! | `top<N>.nearest.of.<app>.internal` | AAAA | the N nearest machines |
//!
//! Discovery only seeds membership (SWIM decides who is alive), so it is
//! built to never take a node down: a fresh app with no records is an
//! empty answer, a lookup that times out keeps the last good answer for that
//! name, and a malformed TXT entry is skipped on its own. Every failure is
//! logged and counted in `anykv_discovery_errors_total{name,kind}` (and in
//! [`Discovery::error_counts`]) so it stays visible.
//!
//! The resolver's cache is effectively off: machines start and stop within
//! a second on Fly and the gossip layer wants to see that on the next
//! resolve, not after a TTL.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{watch, Notify};

/// Fly region codes are three lower-case letters (`iad`, `sjc`, ...); a
/// digit is tolerated so emulated worlds can number regions.
const REGION_LEN: usize = 3;

/// Metric counting failed lookups and skipped TXT entries.
const ERRORS_METRIC: &str = "anykv_discovery_errors_total";

/// Where and how often to ask Fly's DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Fly app name (`FLY_APP_NAME`); the names queried are
    /// `<app>.internal`, `vms.<app>.internal`, `regions.<app>.internal`.
    pub app: String,
    /// DNS server to ask (UDP and TCP on this address). `None` reads the
    /// system configuration (`/etc/resolv.conf`), which on Fly points at
    /// `fdaa::3`.
    pub resolver: Option<SocketAddr>,
    /// Per-query timeout. A lookup is tried twice, and [`Discovery`] gives
    /// up on a name after `3 × timeout` whatever the resolver does, so a
    /// resolve is bounded by that.
    pub timeout: Duration,
    /// Period of [`Discovery::spawn_watch`]'s re-resolves.
    pub interval: Duration,
}

impl DiscoveryConfig {
    /// Default per-query timeout: Fly's resolver is on the local host, so
    /// anything slower than this is a problem worth a retry.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default re-resolve period: SWIM finds failures itself; DNS only
    /// needs to introduce new machines (and a notify speeds that up).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

    /// A configuration for `app` with the system resolver and default
    /// timings.
    pub fn for_app(app: impl Into<String>) -> Self {
        DiscoveryConfig {
            app: app.into(),
            resolver: None,
            timeout: Self::DEFAULT_TIMEOUT,
            interval: Self::DEFAULT_INTERVAL,
        }
    }

    /// The configuration on a Fly machine: the app from `FLY_APP_NAME`,
    /// the system resolver, default timings.
    pub fn from_env() -> Result<Self, DiscoveryError> {
        match std::env::var("FLY_APP_NAME") {
            Ok(app) if !app.trim().is_empty() => Ok(Self::for_app(app.trim())),
            _ => Err(DiscoveryError::NoAppName),
        }
    }
}

/// Why a [`Discovery`] could not be built. Lookups themselves never fail
/// (see the module docs); only configuration can.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Not on Fly, or the environment was scrubbed.
    #[error("FLY_APP_NAME is not set")]
    NoAppName,
    /// The app name does not make a valid DNS name.
    #[error("app name {app:?} is not a valid DNS label: {reason}")]
    BadAppName { app: String, reason: String },
    /// The system resolver configuration could not be read.
    #[error("reading the system resolver configuration: {0}")]
    SystemConf(#[source] NetError),
    /// hickory refused the resolver configuration.
    #[error("building the resolver: {0}")]
    Build(#[source] NetError),
}

/// One Fly machine as `vms.<app>.internal` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Machine {
    /// Fly machine id (`FLY_MACHINE_ID`).
    pub id: String,
    /// Fly region code, e.g. `iad`.
    pub region: String,
}

/// What DNS said about the app at one point in time.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Snapshot {
    /// `<app>.internal` AAAA, sorted and deduplicated. IPv4-mapped
    /// addresses (the emulated world's `::ffff:127.0.0.N`) are returned as
    /// plain IPv4 so they match the address a node binds to.
    pub addrs: Vec<IpAddr>,
    /// `vms.<app>.internal` TXT, sorted by id.
    pub machines: Vec<Machine>,
    /// `regions.<app>.internal` TXT, sorted and deduplicated.
    pub regions: Vec<String>,
}

/// Totals of the failures also reported as `anykv_discovery_errors_total`,
/// kept here so tests and the status page can read them without a metrics
/// recorder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Lookups that timed out.
    pub timeout: u64,
    /// Lookups that failed otherwise (I/O, refused, SERVFAIL, bad reply).
    pub io: u64,
    /// TXT entries skipped as malformed.
    pub garbage: u64,
}

#[derive(Default)]
struct Counters {
    timeout: AtomicU64,
    io: AtomicU64,
    garbage: AtomicU64,
}

/// Why one lookup produced no usable answer (an empty answer is not a
/// failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailKind {
    Timeout,
    Io,
}

impl FailKind {
    fn label(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Io => "io",
        }
    }
}

/// The names of one app, parsed once.
struct Names {
    app: Name,
    vms: Name,
    regions: Name,
}

/// Asks Fly's internal DNS who is in the app.
pub struct Discovery {
    cfg: DiscoveryConfig,
    resolver: TokioResolver,
    names: Names,
    /// The last good answer per name, returned in place of a failed lookup.
    last: Mutex<Snapshot>,
    counters: Counters,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("cfg", &self.cfg).finish()
    }
}

impl Discovery {
    /// Builds the resolver. Does no I/O beyond reading `/etc/resolv.conf`
    /// when `cfg.resolver` is `None`.
    pub fn new(cfg: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let app = cfg.app.trim().to_ascii_lowercase();
        let fqdn = |prefix: &str| {
            let text = if prefix.is_empty() {
                format!("{app}.internal.")
            } else {
                format!("{prefix}.{app}.internal.")
            };
            Name::from_ascii(&text).map_err(|e| DiscoveryError::BadAppName {
                app: cfg.app.clone(),
                reason: e.to_string(),
            })
        };
        if app.is_empty() || app.contains('.') {
            return Err(DiscoveryError::BadAppName {
                app: cfg.app.clone(),
                reason: "must be one non-empty label".into(),
            });
        }
        let names = Names {
            app: fqdn("")?,
            vms: fqdn("vms")?,
            regions: fqdn("regions")?,
        };

        let mut builder = match cfg.resolver {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for conn in &mut ns.connections {
                    conn.port = server.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(DiscoveryError::SystemConf)?,
        };
        let opts = builder.options_mut();
        tune_options(opts, cfg.timeout);

        let resolver = builder.build().map_err(DiscoveryError::Build)?;
        Ok(Discovery {
            cfg,
            resolver,
            names,
            last: Mutex::new(Snapshot::default()),
            counters: Counters::default(),
        })
    }

    /// The configuration this was built with.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    /// The last snapshot [`Discovery::resolve`] returned (empty before the
    /// first one).
    pub fn last_snapshot(&self) -> Snapshot {
        self.last.lock().clone()
    }

    /// The underlying resolver, for tests that ask other record types.
    #[cfg(test)]
    pub(crate) fn resolver_for_tests(&self) -> &TokioResolver {
        &self.resolver
    }

    /// Failures so far (see [`ErrorCounts`]).
    pub fn error_counts(&self) -> ErrorCounts {
        ErrorCounts {
            timeout: self.counters.timeout.load(Ordering::Relaxed),
            io: self.counters.io.load(Ordering::Relaxed),
            garbage: self.counters.garbage.load(Ordering::Relaxed),
        }
    }

    /// Asks the three names concurrently. Never fails: a name that does not
    /// exist is empty, a name whose lookup failed keeps its previous value.
    pub async fn resolve(&self) -> Snapshot {
        let (addrs, vms, regions) = tokio::join!(
            self.lookup("app", &self.names.app, RecordType::AAAA),
            self.lookup("vms", &self.names.vms, RecordType::TXT),
            self.lookup("regions", &self.names.regions, RecordType::TXT),
        );

        let addrs = addrs.map(|rdata| sorted_addrs(&rdata));
        let machines = vms.map(|rdata| {
            let (machines, garbage) = parse_vms_txt(&txt_texts(&rdata));
            self.count_garbage("vms", garbage);
            machines
        });
        let regions = regions.map(|rdata| {
            let (regions, garbage) = parse_regions_txt(&txt_texts(&rdata));
            self.count_garbage("regions", garbage);
            regions
        });

        let mut last = self.last.lock();
        if let Some(addrs) = addrs {
            last.addrs = addrs;
        }
        if let Some(machines) = machines {
            last.machines = machines;
        }
        if let Some(regions) = regions {
            last.regions = regions;
        }
        last.clone()
    }

    /// `<region>.<app>.internal` AAAA: the machines in one region, sorted.
    /// Empty when the region has none, is not a region code, or the lookup
    /// failed (there is no previous answer to fall back on per region).
    pub async fn region_addrs(&self, region: &str) -> Vec<IpAddr> {
        if !valid_region(region) {
            tracing::warn!(region, "region_addrs: not a region code");
            return Vec::new();
        }
        let Ok(name) = Name::from_ascii(region).and_then(|n| n.append_domain(&self.names.app))
        else {
            return Vec::new();
        };
        self.lookup("region", &name, RecordType::AAAA)
            .await
            .map(|rdata| sorted_addrs(&rdata))
            .unwrap_or_default()
    }

    /// `top<n>.nearest.of.<app>.internal` AAAA: up to `n` machines, nearest
    /// (by Fly's latency measurements from this machine's region) first.
    /// The order is DNS's and is kept. Empty on failure, like
    /// [`Discovery::region_addrs`].
    pub async fn nearest(&self, n: usize) -> Vec<IpAddr> {
        if n == 0 {
            return Vec::new();
        }
        let Ok(name) = Name::from_ascii(format!("top{n}.nearest.of"))
            .and_then(|prefix| prefix.append_domain(&self.names.app))
        else {
            return Vec::new();
        };
        let rdata = self
            .lookup("nearest", &name, RecordType::AAAA)
            .await
            .unwrap_or_default();
        let mut out: Vec<IpAddr> = Vec::with_capacity(rdata.len());
        for ip in rdata.iter().filter_map(rdata_ip) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        out.truncate(n);
        out
    }

    /// Re-resolves every `interval`, and at once whenever the returned
    /// `Notify` is notified (use `notify_one`: it is remembered if a resolve
    /// is in flight, where `notify_waiters` would be lost). The receiver
    /// sees a new value only when the snapshot changed. The task ends when
    /// every receiver is dropped. Needs a tokio runtime.
    pub fn spawn_watch(self: Arc<Self>) -> (watch::Receiver<Snapshot>, Arc<Notify>) {
        let (tx, rx) = watch::channel(self.last_snapshot());
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        // tokio's interval panics on zero; a tight loop would not be useful.
        let period = self.cfg.interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = ticker.tick() => {}
                    _ = wake.notified() => ticker.reset(),
                }
                let snap = tokio::select! {
                    _ = tx.closed() => break,
                    snap = self.resolve() => snap,
                };
                tx.send_if_modified(|current| {
                    if *current == snap {
                        false
                    } else {
                        *current = snap;
                        true
                    }
                });
            }
            tracing::debug!(app = %self.cfg.app, "discovery watch ended: no receivers");
        });
        (rx, notify)
    }

    /// One lookup. `Some(records)` is an answer (empty for NXDOMAIN or no
    /// records of that type); `None` is a failure, already logged and
    /// counted, where the caller should keep what it had.
    async fn lookup(
        &self,
        label: &'static str,
        name: &Name,
        rtype: RecordType,
    ) -> Option<Vec<RData>> {
        // Belt and braces over the resolver's own timeout and retries: a
        // resolve must stay bounded whatever hickory does internally.
        let deadline = self.cfg.timeout.saturating_mul(3);
        let result =
            match tokio::time::timeout(deadline, self.resolver.lookup(name.clone(), rtype)).await {
                Ok(result) => result,
                Err(_) => Err(NetError::Timeout),
            };
        match result {
            Ok(lookup) => Some(
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect(),
            ),
            Err(e) if e.is_no_records_found() => {
                tracing::debug!(%name, %rtype, nxdomain = e.is_nx_domain(), "no records");
                Some(Vec::new())
            }
            Err(e) => {
                let kind = match e {
                    NetError::Timeout => FailKind::Timeout,
                    _ => FailKind::Io,
                };
                tracing::warn!(%name, %rtype, error = %e, "discovery lookup failed; keeping the previous answer");
                self.count(label, kind.label(), 1);
                None
            }
        }
    }

    fn count_garbage(&self, label: &'static str, n: usize) {
        if n > 0 {
            self.count(label, "garbage", n as u64);
        }
    }

    fn count(&self, label: &'static str, kind: &'static str, n: u64) {
        let counter = match kind {
            "timeout" => &self.counters.timeout,
            "garbage" => &self.counters.garbage,
            _ => &self.counters.io,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(ERRORS_METRIC, "name" => label, "kind" => kind).increment(n);
    }
}

/// Resolver options for discovery: no caching (positive or negative), a
/// short timeout, one retry, no `/etc/hosts`.
fn tune_options(opts: &mut ResolverOpts, timeout: Duration) {
    opts.timeout = timeout;
    opts.attempts = 1;
    // Caching would hide a machine starting or stopping for a TTL; Fly's
    // resolver is local and cheap to ask. A zero max TTL makes every entry
    // stale on arrival, and a zero-size cache does not keep them anyway.
    opts.cache_size = 0;
    opts.positive_min_ttl = None;
    opts.negative_min_ttl = None;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    // Only FQDNs are asked; never walk a search list.
    opts.ndots = 0;
}

fn rdata_ip(rdata: &RData) -> Option<IpAddr> {
    match rdata {
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0).to_canonical()),
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    }
}

fn sorted_addrs(rdata: &[RData]) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = rdata.iter().filter_map(rdata_ip).collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// The text of each TXT record: its character-strings concatenated as
/// bytes (Fly splits long text at 255 bytes, possibly mid-entry or
/// mid-character) and only then decoded. Invalid UTF-8 becomes U+FFFD, which
/// the parsers reject entry by entry instead of dropping the record.
fn txt_texts(rdata: &[RData]) -> Vec<String> {
    rdata
        .iter()
        .filter_map(|r| match r {
            RData::TXT(txt) => Some(join_character_strings(
                txt.txt_data.iter().map(|s| s.as_ref()),
            )),
            _ => None,
        })
        .collect()
}

/// Concatenates one TXT record's character-strings and decodes the result
/// (lossily; see [`txt_texts`]).
pub fn join_character_strings<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let bytes: Vec<u8> = parts.into_iter().flatten().copied().collect();
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A Fly region code: three characters of `[a-z0-9]`.
fn valid_region(region: &str) -> bool {
    region.len() == REGION_LEN
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A machine id: non-empty printable ASCII-ish text. Fly's are 14 hex
/// digits, but only obviously broken ids are rejected so a format change
/// does not make every machine disappear.
fn valid_machine_id(id: &str) -> bool {
    !id.is_empty()
        && !id
            .chars()
            .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
}

/// Parses `vms.<app>.internal` TXT texts (one string per record, its
/// character-strings already joined): comma-separated `"<id> <region>"`
/// entries. Records are joined with commas, since each one holds whole
/// entries. Returns the machines sorted by id (duplicates removed) and the
/// number of entries skipped as garbage: wrong field count, bad id, bad
/// region, or invalid UTF-8. Empty entries (`a iad,,b sjc`, a trailing
/// comma) are not garbage.
pub fn parse_vms_txt(records: &[String]) -> (Vec<Machine>, usize) {
    let mut machines = Vec::new();
    let mut garbage = 0;
    for entry in records.iter().flat_map(|r| r.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let fields: Vec<&str> = entry.split_whitespace().collect();
        match fields.as_slice() {
            [id, region] if valid_machine_id(id) && valid_region(region) => {
                machines.push(Machine {
                    id: (*id).to_owned(),
                    region: (*region).to_owned(),
                });
            }
            _ => {
                tracing::warn!(entry, "skipping malformed vms TXT entry");
                garbage += 1;
            }
        }
    }
    machines.sort();
    machines.dedup();
    (machines, garbage)
}

/// Parses `regions.<app>.internal` TXT texts: comma-separated region codes.
/// Returns them sorted and deduplicated, and how many were skipped as
/// garbage.
pub fn parse_regions_txt(records: &[String]) -> (Vec<String>, usize) {
    let mut regions = Vec::new();
    let mut garbage = 0;
    for entry in records.iter().flat_map(|r| r.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if valid_region(entry) {
            regions.push(entry.to_owned());
        } else {
            tracing::warn!(entry, "skipping malformed regions TXT entry");
            garbage += 1;
        }
    }
    regions.sort();
    regions.dedup();
    (regions, garbage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testzone::{mapped_loopback, TestZone};
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn m(id: &str, region: &str) -> Machine {
        Machine {
            id: id.into(),
            region: region.into(),
        }
    }

    fn lo(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    fn cfg(zone: &TestZone, app: &str) -> DiscoveryConfig {
        DiscoveryConfig {
            app: app.into(),
            resolver: Some(zone.addr()),
            timeout: Duration::from_millis(300),
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn parses_vms_entries() {
        let (machines, garbage) = parse_vms_txt(&s(&["148e2d4ab2d389 iad,3d8d9016b7d489 sjc"]));
        assert_eq!(garbage, 0);
        assert_eq!(
            machines,
            vec![m("148e2d4ab2d389", "iad"), m("3d8d9016b7d489", "sjc")]
        );
    }

    #[test]
    fn vms_sorted_deduped_across_records() {
        let (machines, garbage) = parse_vms_txt(&s(&["b sjc, a iad", "a iad,c ams,", ""]));
        assert_eq!(garbage, 0);
        assert_eq!(machines, vec![m("a", "iad"), m("b", "sjc"), m("c", "ams")]);
    }

    #[test]
    fn vms_garbage_skipped_one_by_one() {
        let text = "a iad,justone,x y z,b SJC,c toolong,d s-c, iad,e i\u{fffd}d,\u{fffd} ams,f lhr";
        let (machines, garbage) = parse_vms_txt(&s(&[text]));
        assert_eq!(machines, vec![m("a", "iad"), m("f", "lhr")]);
        assert_eq!(garbage, 8);
    }

    #[test]
    fn split_character_strings_join_mid_entry() {
        let full = "148e2d4ab2d389 iad,3d8d9016b7d489 sjc,0e286039f42e86 ams";
        let bytes = full.as_bytes();
        for cut in 1..bytes.len() {
            let text = join_character_strings([&bytes[..cut], &bytes[cut..]]);
            let (machines, garbage) = parse_vms_txt(&[text]);
            assert_eq!(garbage, 0, "cut at {cut}");
            assert_eq!(machines.len(), 3, "cut at {cut}");
        }
    }

    #[test]
    fn non_utf8_only_spoils_its_entry() {
        let parts: [&[u8]; 2] = [b"a iad,b \xff\xfe", b"c,c sjc"];
        let text = join_character_strings(parts);
        let (machines, garbage) = parse_vms_txt(&[text]);
        assert_eq!(machines, vec![m("a", "iad"), m("c", "sjc")]);
        assert_eq!(garbage, 1);
        // A multi-byte character cut between character-strings survives.
        let parts: [&[u8]; 2] = [b"a iad,\xc3", b"\xa9 sjc"];
        assert_eq!(join_character_strings(parts), "a iad,\u{e9} sjc");
    }

    #[test]
    fn parses_regions() {
        let (regions, garbage) = parse_regions_txt(&s(&["sjc,iad", "iad, ams ,,BAD,toolong,lh"]));
        assert_eq!(regions, s(&["ams", "iad", "sjc"]));
        assert_eq!(garbage, 3);
        assert_eq!(parse_regions_txt(&[]), (vec![], 0));
    }

    #[test]
    fn from_env_needs_app() {
        // Only asserts on the shape of the error path: the env var is
        // process-wide, so it is not set here.
        if std::env::var("FLY_APP_NAME").is_err() {
            assert!(matches!(
                DiscoveryConfig::from_env(),
                Err(DiscoveryError::NoAppName)
            ));
        }
        assert!(matches!(
            Discovery::new(DiscoveryConfig::for_app("a.b")),
            Err(DiscoveryError::BadAppName { .. })
        ));
    }

    #[tokio::test]
    async fn empty_app_is_empty_not_error() {
        let zone = TestZone::start("fresh").await.unwrap();
        let d = Discovery::new(cfg(&zone, "fresh")).unwrap();
        let t0 = Instant::now();
        assert_eq!(d.resolve().await, Snapshot::default());
        assert!(t0.elapsed() < Duration::from_millis(250));
        assert_eq!(d.error_counts(), ErrorCounts::default());
        assert!(d.region_addrs("iad").await.is_empty());
        assert!(d.nearest(3).await.is_empty());
    }

    #[tokio::test]
    async fn sees_machines_come_and_go() {
        let zone = TestZone::start("app").await.unwrap();
        let d = Discovery::new(cfg(&zone, "app")).unwrap();
        assert_eq!(d.resolve().await, Snapshot::default());

        zone.add_machine("m3", "sjc", mapped_loopback(3));
        zone.add_machine("m1", "iad", mapped_loopback(1));
        zone.add_machine("m2", "iad", mapped_loopback(2));
        let snap = d.resolve().await;
        assert_eq!(snap.addrs, vec![lo(1), lo(2), lo(3)]);
        assert_eq!(
            snap.machines,
            vec![m("m1", "iad"), m("m2", "iad"), m("m3", "sjc")]
        );
        assert_eq!(snap.regions, s(&["iad", "sjc"]));
        assert_eq!(d.region_addrs("iad").await, vec![lo(1), lo(2)]);
        assert_eq!(d.region_addrs("sjc").await, vec![lo(3)]);
        assert!(d.region_addrs("ams").await.is_empty());

        zone.remove_machine("m3");
        let snap = d.resolve().await;
        assert_eq!(snap.addrs, vec![lo(1), lo(2)]);
        assert_eq!(snap.machines, vec![m("m1", "iad"), m("m2", "iad")]);
        assert_eq!(snap.regions, s(&["iad"]));

        zone.remove_machine("m1");
        zone.remove_machine("m2");
        assert_eq!(d.resolve().await, Snapshot::default());
        assert_eq!(d.error_counts(), ErrorCounts::default());
    }

    #[tokio::test]
    async fn many_machines_split_txt() {
        let zone = TestZone::start("big").await.unwrap();
        let d = Discovery::new(cfg(&zone, "big")).unwrap();
        // ~100 × 19 bytes: several 255-byte character-strings, and more
        // than 512 bytes, so the UDP answer is truncated and TCP is used.
        for i in 0..100u8 {
            zone.add_machine(
                &format!("{i:014x}"),
                ["iad", "sjc", "ams"][i as usize % 3],
                mapped_loopback(i + 1),
            );
        }
        let snap = d.resolve().await;
        assert_eq!(snap.machines.len(), 100);
        assert_eq!(snap.addrs.len(), 100);
        assert_eq!(snap.regions, s(&["ams", "iad", "sjc"]));
        assert_eq!(d.error_counts(), ErrorCounts::default());
    }

    #[tokio::test]
    async fn garbage_txt_keeps_valid_entries() {
        let zone = TestZone::start("junk").await.unwrap();
        let d = Discovery::new(cfg(&zone, "junk")).unwrap();
        zone.add_machine("m1", "iad", mapped_loopback(1));
        zone.add_machine("m2", "sjc", mapped_loopback(2));
        zone.set_garbage_txt(Some("lonely,m9 NOPE,m8 ams extra".into()));
        let snap = d.resolve().await;
        assert_eq!(snap.machines, vec![m("m1", "iad"), m("m2", "sjc")]);
        assert_eq!(d.error_counts().garbage, 3);

        zone.set_garbage_txt_bytes(Some(b"m7 \xff\xffd".to_vec()));
        let snap = d.resolve().await;
        assert_eq!(snap.machines.len(), 2);
        assert_eq!(d.error_counts().garbage, 4);
        assert_eq!(d.error_counts().timeout + d.error_counts().io, 0);
    }

    #[tokio::test]
    async fn dead_resolver_keeps_previous_snapshot() {
        let zone = TestZone::start("gone").await.unwrap();
        zone.add_machine("m1", "iad", mapped_loopback(1));
        let mut c = cfg(&zone, "gone");
        c.timeout = Duration::from_millis(100);
        let d = Discovery::new(c).unwrap();
        let before = d.resolve().await;
        assert_eq!(before.machines.len(), 1);

        zone.shutdown().await;
        let t0 = Instant::now();
        let after = d.resolve().await;
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(after, before);
        let errors = d.error_counts();
        assert_eq!(errors.timeout + errors.io, 3, "{errors:?}");
        assert!(d.region_addrs("iad").await.is_empty());
    }

    #[tokio::test]
    async fn silent_resolver_times_out_quickly() {
        // A socket that receives queries and never answers.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let d = Discovery::new(DiscoveryConfig {
            app: "app".into(),
            resolver: Some(silent.local_addr().unwrap()),
            timeout: Duration::from_millis(100),
            interval: Duration::from_secs(60),
        })
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(d.resolve().await, Snapshot::default());
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(d.error_counts().timeout, 3, "{:?}", d.error_counts());
    }

    #[tokio::test]
    async fn watch_publishes_on_notify() {
        let zone = TestZone::start("w").await.unwrap();
        let d = Arc::new(Discovery::new(cfg(&zone, "w")).unwrap());
        let (mut rx, notify) = d.clone().spawn_watch();
        // The first resolve (empty) changes nothing, so nothing is published.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!rx.has_changed().unwrap());

        zone.add_machine("m1", "iad", mapped_loopback(1));
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow_and_update().machines, vec![m("m1", "iad")]);

        // Unchanged data: a notify resolves again but publishes nothing.
        notify.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!rx.has_changed().unwrap());

        // The task ends with the last receiver, dropping its Arc.
        drop(rx);
        notify.notify_one();
        for _ in 0..50 {
            if Arc::strong_count(&d) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&d), 1);
    }

    #[tokio::test]
    async fn nearest_follows_rtt_table() {
        let zone = TestZone::start("near").await.unwrap();
        let d = Discovery::new(cfg(&zone, "near")).unwrap();
        zone.add_machine("a", "syd", mapped_loopback(1));
        zone.add_machine("b", "sjc", mapped_loopback(2));
        zone.add_machine("c", "iad", mapped_loopback(3));
        zone.add_machine("d", "ams", mapped_loopback(4));
        // No origin: by machine id.
        assert_eq!(d.nearest(2).await, vec![lo(1), lo(2)]);

        zone.set_rtt_table(HashMap::from([
            (("iad".to_string(), "sjc".to_string()), 60.0),
            (("iad".to_string(), "ams".to_string()), 80.0),
            (("syd".to_string(), "iad".to_string()), 200.0),
        ]));
        zone.set_nearest_origin(Some("iad".into()));
        assert_eq!(d.nearest(2).await, vec![lo(3), lo(2)]);
        assert_eq!(d.nearest(4).await, vec![lo(3), lo(2), lo(4), lo(1)]);
        assert_eq!(d.nearest(10).await, vec![lo(3), lo(2), lo(4), lo(1)]);
        assert!(d.nearest(0).await.is_empty());
        assert_eq!(d.error_counts(), ErrorCounts::default());
    }
}
