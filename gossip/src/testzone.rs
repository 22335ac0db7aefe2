//! An in-process DNS server that answers like Fly's internal DNS, for tests
//! and the local demo.
//!
//! It is authoritative for `internal.` and serves, from an in-memory machine
//! list that tests change while it runs:
//!
//! - `<app>.internal.` AAAA: every machine (an A query gets NOERROR with no
//!   answers, as on Fly, where 6PN is IPv6 only);
//! - `vms.<app>.internal.` TXT: one record, `"<id> <region>,..."`, split
//!   into 255-byte character-strings when long (possibly mid-entry, which
//!   is what makes the discovery side join them before parsing);
//! - `regions.<app>.internal.` TXT: sorted unique regions, comma-separated;
//! - `<region>.<app>.internal.` AAAA: the machines of one region;
//! - `top<N>.nearest.of.<app>.internal.` AAAA, N in 1..=16: machines by RTT
//!   from a chosen origin region (see [`TestZone::set_rtt_table`]).
//!
//! A name with nothing behind it is NXDOMAIN (with the zone's SOA, so the
//! negative answer is well formed), like a fresh Fly app.
//!
//! Answers are built per query from the current state by a hand-written
//! hickory-server `RequestHandler`: simpler and more faithful than
//! re-creating a zone-file authority on every change.
//!
//! In the emulated world nodes live at `::ffff:127.0.0.N` (see
//! [`mapped_loopback`]): AAAA records, like 6PN, that still route over
//! loopback.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use parking_lot::RwLock;
use tokio::net::{TcpListener, UdpSocket};

/// TTL of every record. Small, like Fly's; the discovery resolver does not
/// cache anyway.
const TTL: u32 = 5;

/// Longest TXT character-string (its length is one byte).
const TXT_CHUNK: usize = 255;

/// Largest N served for `top<N>.nearest.of.<app>.internal`.
const MAX_NEAREST: usize = 16;

/// RTT assumed between two machines of the same region, in ms.
const SAME_REGION_RTT_MS: f64 = 0.5;

/// How long an idle TCP connection to the zone stays open.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// `::ffff:127.0.0.n`: an emulated node's address, IPv6 like a 6PN one but
/// reachable over loopback.
pub fn mapped_loopback(n: u8) -> Ipv6Addr {
    Ipv4Addr::new(127, 0, 0, n).to_ipv6_mapped()
}

/// The zone's contents.
#[derive(Debug, Default)]
struct ZoneState {
    /// Lower-case app name.
    app: String,
    /// Machine id → (region, address).
    machines: BTreeMap<String, (String, Ipv6Addr)>,
    /// Raw bytes appended (after a comma) to the `vms.` TXT text.
    garbage: Option<Vec<u8>>,
    /// Region whose point of view `top<N>.nearest.of` takes.
    origin: Option<String>,
    /// RTT in ms between regions; looked up in both orders.
    rtt: HashMap<(String, String), f64>,
    /// SOA serial, bumped on every change.
    serial: u32,
}

/// What a query name refers to.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Apex,
    App,
    Vms,
    Regions,
    Region(String),
    Nearest(usize),
    /// In the zone, but no such name.
    Unknown,
    /// Not under `internal.`.
    OutOfZone,
}

/// An answer before it is bound to the query's name.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: ResponseCode,
    data: Vec<RData>,
    /// Attach the SOA (negative answers).
    soa: bool,
}

impl Answer {
    fn records(data: Vec<RData>) -> Self {
        Answer {
            code: ResponseCode::NoError,
            data,
            soa: false,
        }
    }
    fn no_data() -> Self {
        Answer {
            code: ResponseCode::NoError,
            data: Vec::new(),
            soa: true,
        }
    }
    fn nx_domain() -> Self {
        Answer {
            code: ResponseCode::NXDomain,
            data: Vec::new(),
            soa: true,
        }
    }
    fn refused() -> Self {
        Answer {
            code: ResponseCode::Refused,
            data: Vec::new(),
            soa: false,
        }
    }
}

impl ZoneState {
    /// Classifies a lower-case name without the trailing dot.
    fn target(&self, qname: &str) -> Target {
        if qname == "internal" {
            return Target::Apex;
        }
        let Some(rel) = qname.strip_suffix(".internal") else {
            return Target::OutOfZone;
        };
        if rel == self.app {
            return Target::App;
        }
        let Some(prefix) = rel
            .strip_suffix(self.app.as_str())
            .and_then(|p| p.strip_suffix('.'))
        else {
            return Target::Unknown;
        };
        match prefix {
            "vms" => Target::Vms,
            "regions" => Target::Regions,
            _ => {
                if let Some(digits) = prefix
                    .strip_prefix("top")
                    .and_then(|p| p.strip_suffix(".nearest.of"))
                {
                    // Only the canonical spelling: `top02` or `top+2` is no name.
                    return match digits.parse::<usize>() {
                        Ok(n) if (1..=MAX_NEAREST).contains(&n) && n.to_string() == digits => {
                            Target::Nearest(n)
                        }
                        _ => Target::Unknown,
                    };
                }
                if !prefix.is_empty() && !prefix.contains('.') {
                    Target::Region(prefix.to_owned())
                } else {
                    Target::Unknown
                }
            }
        }
    }

    fn answer(&self, qname: &str, qtype: RecordType) -> Answer {
        let aaaa = |ips: Vec<Ipv6Addr>| -> Answer {
            if ips.is_empty() {
                Answer::nx_domain()
            } else if qtype == RecordType::AAAA || qtype == RecordType::ANY {
                Answer::records(ips.into_iter().map(|ip| RData::AAAA(AAAA(ip))).collect())
            } else {
                Answer::no_data()
            }
        };
        let txt = |text: Vec<u8>| -> Answer {
            if text.is_empty() {
                Answer::nx_domain()
            } else if qtype == RecordType::TXT || qtype == RecordType::ANY {
                let chunks: Vec<&[u8]> = text.chunks(TXT_CHUNK).collect();
                Answer::records(vec![RData::TXT(TXT::from_bytes(chunks))])
            } else {
                Answer::no_data()
            }
        };
        match self.target(qname) {
            Target::OutOfZone => Answer::refused(),
            Target::Unknown => Answer::nx_domain(),
            Target::Apex if qtype == RecordType::SOA => Answer::records(vec![self.soa()]),
            Target::Apex => Answer::no_data(),
            Target::App => aaaa(self.machines.values().map(|(_, ip)| *ip).collect()),
            Target::Region(region) => aaaa(
                self.machines
                    .values()
                    .filter(|(r, _)| *r == region)
                    .map(|(_, ip)| *ip)
                    .collect(),
            ),
            Target::Nearest(n) => aaaa(self.nearest(n)),
            Target::Vms => txt(self.vms_text()),
            Target::Regions => {
                let regions: BTreeSet<&str> =
                    self.machines.values().map(|(r, _)| r.as_str()).collect();
                txt(regions
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes())
            }
        }
    }

    fn vms_text(&self) -> Vec<u8> {
        let mut text = self
            .machines
            .iter()
            .map(|(id, (region, _))| format!("{id} {region}"))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        if let Some(garbage) = &self.garbage {
            if !text.is_empty() {
                text.push(b',');
            }
            text.extend_from_slice(garbage);
        }
        text
    }

    fn rtt(&self, from: &str, to: &str) -> f64 {
        if from == to {
            return SAME_REGION_RTT_MS;
        }
        let key = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        self.rtt
            .get(&key(from, to))
            .or_else(|| self.rtt.get(&key(to, from)))
            .copied()
            .unwrap_or(f64::MAX)
    }

    /// Up to `n` machines, nearest to the origin first (ties and no
    /// origin: by machine id).
    fn nearest(&self, n: usize) -> Vec<Ipv6Addr> {
        let mut machines: Vec<(f64, &String, Ipv6Addr)> = self
            .machines
            .iter()
            .map(|(id, (region, ip))| {
                let rtt = match &self.origin {
                    Some(origin) => self.rtt(origin, region),
                    None => 0.0,
                };
                (rtt, id, *ip)
            })
            .collect();
        machines.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        machines.into_iter().take(n).map(|(_, _, ip)| ip).collect()
    }

    fn soa(&self) -> RData {
        RData::SOA(SOA::new(
            zone_name("ns.internal."),
            zone_name("hostmaster.internal."),
            self.serial,
            60,
            10,
            600,
            TTL,
        ))
    }
}

fn zone_name(name: &str) -> Name {
    // Constant, known-valid names.
    Name::from_ascii(name).unwrap_or_else(|_| Name::root())
}

/// Serves [`ZoneState`] through hickory-server.
struct ZoneHandler {
    state: Arc<RwLock<ZoneState>>,
}

impl ZoneHandler {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;

        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query,
            Ok(_) => {
                metadata.authoritative = false;
                metadata.response_code = ResponseCode::NotImp;
                return send(&mut handle, request, builder.build_no_records(metadata)).await;
            }
            Err(_) => {
                metadata.authoritative = false;
                metadata.response_code = ResponseCode::FormErr;
                return send(&mut handle, request, builder.build_no_records(metadata)).await;
            }
        };

        let owner = query.original().name().clone();
        let qname = query.name().to_string();
        let qname = qname.trim_end_matches('.');
        let (answer, soa) = {
            let state = self.state.read();
            let answer = if query.query_class() == DNSClass::IN {
                state.answer(qname, query.query_type())
            } else {
                Answer::refused()
            };
            (answer, state.soa())
        };

        metadata.response_code = answer.code;
        if answer.code == ResponseCode::Refused {
            metadata.authoritative = false;
        }
        let answers: Vec<Record> = answer
            .data
            .into_iter()
            .map(|data| Record::from_rdata(owner.clone(), TTL, data))
            .collect();
        let authorities: Vec<Record> = if answer.soa {
            vec![Record::from_rdata(zone_name("internal."), TTL, soa)]
        } else {
            Vec::new()
        };
        let response = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        send(&mut handle, request, response).await
    }
}

/// Sends a response; on failure reports SERVFAIL to the server's logging
/// (the client gets nothing and retries).
async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "test zone: sending a response failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

// `RequestHandler` is declared with `#[async_trait]`; this is that macro's
// expansion written out, so the crate does not need `async-trait` itself.
impl RequestHandler for ZoneHandler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.respond(request, response_handle))
    }
}

/// A running Fly-like `internal.` zone on `127.0.0.1:<port>` (UDP and TCP
/// on the same port). Dropping it stops the server.
pub struct TestZone {
    addr: SocketAddr,
    state: Arc<RwLock<ZoneState>>,
    server: Server<ZoneHandler>,
}

impl std::fmt::Debug for TestZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestZone")
            .field("addr", &self.addr)
            .field("state", &*self.state.read())
            .finish()
    }
}

impl TestZone {
    /// Starts serving an empty app (every name NXDOMAIN). Needs a tokio
    /// runtime.
    pub async fn start(app: &str) -> io::Result<TestZone> {
        let app = app.trim().to_ascii_lowercase();
        if app.is_empty() || app.contains('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("app name {app:?} must be one DNS label"),
            ));
        }
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(RwLock::new(ZoneState {
            app,
            serial: 1,
            ..ZoneState::default()
        }));
        let mut server = Server::new(ZoneHandler {
            state: state.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64);
        Ok(TestZone {
            addr,
            state,
            server,
        })
    }

    /// Where to send queries (UDP or TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a started machine, or moves an existing one.
    pub fn add_machine(&self, id: &str, region: &str, ip: Ipv6Addr) {
        self.update(|s| {
            s.machines.insert(id.to_owned(), (region.to_owned(), ip));
        });
    }

    /// Removes a machine (stopped or destroyed); unknown ids are ignored.
    pub fn remove_machine(&self, id: &str) {
        self.update(|s| {
            s.machines.remove(id);
        });
    }

    /// An extra raw entry appended (after a comma) to the `vms.` TXT text,
    /// to test how discovery copes with malformed records. `None` removes
    /// it.
    pub fn set_garbage_txt(&self, txt: Option<String>) {
        self.set_garbage_txt_bytes(txt.map(String::into_bytes));
    }

    /// [`TestZone::set_garbage_txt`] with arbitrary bytes (e.g. invalid
    /// UTF-8).
    pub fn set_garbage_txt_bytes(&self, txt: Option<Vec<u8>>) {
        self.update(|s| s.garbage = txt);
    }

    /// The region `top<N>.nearest.of` answers for (Fly uses the asking
    /// machine's region; here every query comes from loopback). `None`
    /// orders by machine id.
    pub fn set_nearest_origin(&self, region: Option<String>) {
        self.update(|s| s.origin = region);
    }

    /// RTTs in ms between regions, looked up in either order. Same region
    /// is 0.5 ms; a pair missing from the table sorts last.
    pub fn set_rtt_table(&self, table: HashMap<(String, String), f64>) {
        self.update(|s| s.rtt = table);
    }

    /// Stops the server and waits until its sockets are closed, so the
    /// port answers nothing afterwards.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "test zone shutdown");
        }
    }

    fn update(&self, f: impl FnOnce(&mut ZoneState)) {
        let mut state = self.state.write();
        f(&mut state);
        state.serial = state.serial.wrapping_add(1);
    }
}

/// A UDP socket and a TCP listener on the same ephemeral loopback port (the
/// resolver uses one port for both). The TCP port can be taken by someone
/// else, so try a few.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free port pair")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Discovery, DiscoveryConfig};
    use hickory_resolver::net::NetError;

    fn state(app: &str) -> ZoneState {
        ZoneState {
            app: app.into(),
            ..ZoneState::default()
        }
    }

    #[test]
    fn mapped_loopback_is_v4_mapped() {
        assert_eq!(mapped_loopback(7).to_string(), "::ffff:127.0.0.7");
        assert_eq!(
            mapped_loopback(7).to_ipv4_mapped(),
            Some(Ipv4Addr::new(127, 0, 0, 7))
        );
    }

    #[test]
    fn names_map_to_targets() {
        let s = state("app");
        assert_eq!(s.target("internal"), Target::Apex);
        assert_eq!(s.target("app.internal"), Target::App);
        assert_eq!(s.target("vms.app.internal"), Target::Vms);
        assert_eq!(s.target("regions.app.internal"), Target::Regions);
        assert_eq!(s.target("iad.app.internal"), Target::Region("iad".into()));
        assert_eq!(s.target("top3.nearest.of.app.internal"), Target::Nearest(3));
        assert_eq!(
            s.target("top16.nearest.of.app.internal"),
            Target::Nearest(16)
        );
        assert_eq!(s.target("top17.nearest.of.app.internal"), Target::Unknown);
        assert_eq!(s.target("top0.nearest.of.app.internal"), Target::Unknown);
        assert_eq!(s.target("top03.nearest.of.app.internal"), Target::Unknown);
        assert_eq!(s.target("a.b.app.internal"), Target::Unknown);
        assert_eq!(s.target("other.internal"), Target::Unknown);
        assert_eq!(s.target("xapp.internal"), Target::Unknown);
        assert_eq!(s.target("example.com"), Target::OutOfZone);
    }

    #[test]
    fn long_vms_text_is_chunked() {
        let mut s = state("app");
        for i in 0..40 {
            s.machines
                .insert(format!("{i:014x}"), ("iad".into(), mapped_loopback(1)));
        }
        let answer = s.answer("vms.app.internal", RecordType::TXT);
        let [RData::TXT(txt)] = answer.data.as_slice() else {
            panic!("{answer:?}")
        };
        assert!(txt.txt_data.len() > 1);
        assert!(txt.txt_data.iter().all(|c| c.len() <= TXT_CHUNK));
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        assert_eq!(joined, s.vms_text());
    }

    #[test]
    fn empty_zone_is_nxdomain() {
        let s = state("app");
        for name in [
            "app.internal",
            "vms.app.internal",
            "regions.app.internal",
            "iad.app.internal",
            "top1.nearest.of.app.internal",
        ] {
            let a = s.answer(name, RecordType::AAAA);
            assert_eq!(a.code, ResponseCode::NXDomain, "{name}");
        }
    }

    #[tokio::test]
    async fn a_query_is_nodata_like_fly() {
        let zone = TestZone::start("app").await.unwrap();
        zone.add_machine("m1", "iad", mapped_loopback(1));
        let d = Discovery::new(DiscoveryConfig {
            app: "app".into(),
            resolver: Some(zone.addr()),
            timeout: Duration::from_millis(300),
            interval: Duration::from_secs(60),
        })
        .unwrap();
        let resolver = d.resolver_for_tests();

        let err = resolver
            .lookup("app.internal.", RecordType::A)
            .await
            .unwrap_err();
        assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err:?}");

        let aaaa = resolver
            .lookup("app.internal.", RecordType::AAAA)
            .await
            .unwrap();
        assert_eq!(aaaa.answers().len(), 1);

        let err = resolver
            .lookup("nope.app.internal.", RecordType::AAAA)
            .await
            .unwrap_err();
        assert!(err.is_nx_domain(), "{err:?}");

        // Outside the zone: refused, which the resolver reports as an error
        // rather than "no records".
        let err = resolver
            .lookup("example.com.", RecordType::A)
            .await
            .unwrap_err();
        assert!(!err.is_no_records_found(), "{err:?}");
        assert!(matches!(err, NetError::Dns(_)), "{err:?}");
    }
}
