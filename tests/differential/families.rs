//! The generator's commands for Redis 7.0's other families: bitmaps,
//! HyperLogLog, geo, streams and consumer groups, DUMP/RESTORE. They run
//! over a few keys of their own and, now and then, the shared key pool (so
//! WRONGTYPE and "not a valid HyperLogLog" paths are taken), in RESP2 and
//! RESP3 like every other command of the stream.
//!
//! What is left out because it depends on time or on one server's own
//! state: `XADD *` (an id from the clock), blocking reads, XINFO
//! CONSUMERS' and XPENDING's idle times (masked, see `Cmp::Idle`), MEMORY
//! USAGE (each allocator's sizes).

use super::*;

/// Stream keys besides the pool.
const STREAM_KEYS: &[&str] = &["s:a", "s:b", "s:c"];
const GROUPS: &[&str] = &["g1", "g2"];
const CONSUMERS: &[&str] = &["c1", "c2", "c3"];

impl Gen {
    fn stream_key(&mut self) -> Vec<u8> {
        self.family_key(10, STREAM_KEYS)
    }

    /// A stream entry id: mostly the next few milliseconds of the run's
    /// own clock (so most XADDs succeed), sometimes an old or partial or
    /// malformed one.
    fn stream_id(&mut self) -> Vec<u8> {
        match self.idx(20) {
            0..=11 => {
                self.stream_ms += self.rng.random_range(0..3);
                format!("{}-{}", self.stream_ms, self.rng.random_range(0..3)).into_bytes()
            }
            12..=14 => {
                self.stream_ms += 1;
                format!("{}-*", self.stream_ms).into_bytes()
            }
            15 | 16 => format!("{}", self.rng.random_range(0..=self.stream_ms)).into_bytes(),
            17 => self.pick_str(&["0-0", "0-1", "18446744073709551615-18446744073709551615"]),
            _ => self.pick_str(&["abc", "-1", "1-x", "", "1--1", "99999999999999999999"]),
        }
    }

    /// A range bound for XRANGE/XREVRANGE/XPENDING.
    fn stream_bound(&mut self, low: bool) -> Vec<u8> {
        match self.idx(10) {
            0..=2 => b(if low { "-" } else { "+" }),
            3..=6 => {
                let ms = self.rng.random_range(0..=self.stream_ms + 2);
                let excl = if self.pct(25) { "(" } else { "" };
                match self.idx(2) {
                    0 => format!("{excl}{ms}").into_bytes(),
                    _ => format!("{excl}{ms}-{}", self.rng.random_range(0..3)).into_bytes(),
                }
            }
            7 => b(if low { "+" } else { "-" }),
            8 => self.pick_str(&[
                "(-",
                "(+",
                "(0-0",
                "(18446744073709551615-18446744073709551615",
            ]),
            _ => self.pick_str(&["x", "1-x", ""]),
        }
    }

    fn stream_fields(&mut self, a: &mut Vec<Vec<u8>>) {
        for _ in 0..self.rng.random_range(1..=3) {
            a.push(self.pick_str(&["f", "g", "name", "n", ""]));
            a.push(self.value());
        }
    }

    /// `MAXLEN|MINID [=|~] threshold [LIMIT n]`.
    fn trim_args(&mut self, a: &mut Vec<Vec<u8>>) {
        let minid = self.pct(35);
        a.push(b(if minid { "MINID" } else { "MAXLEN" }));
        let approx = self.idx(3);
        match approx {
            0 => a.push(b("=")),
            1 => a.push(b("~")),
            _ => {}
        }
        if minid {
            let id = self.stream_bound(true);
            a.push(id);
        } else {
            a.push(self.int_arg(0, 12));
        }
        if approx == 1 && self.pct(40) {
            a.push(b("LIMIT"));
            a.push(self.int_arg(0, 20));
        }
    }

    pub(crate) fn g_stream(&mut self) -> Op {
        let key = self.stream_key();
        match self.idx(40) {
            0..=11 => {
                let mut a = vec![b("XADD"), key];
                if self.pct(10) {
                    a.push(b("NOMKSTREAM"));
                }
                if self.pct(20) {
                    self.trim_args(&mut a);
                }
                a.push(self.stream_id());
                self.stream_fields(&mut a);
                Gen::op(a)
            }
            12..=14 => {
                let mut a = vec![b(if self.pct(70) { "XRANGE" } else { "XREVRANGE" }), key];
                let rev = a[0] == b("XREVRANGE");
                let (lo, hi) = (self.stream_bound(true), self.stream_bound(false));
                if rev {
                    a.extend([hi, lo]);
                } else {
                    a.extend([lo, hi]);
                }
                if self.pct(50) {
                    a.push(b("COUNT"));
                    a.push(self.int_arg(-1, 6));
                }
                Gen::op(a)
            }
            15 => Gen::op(vec![b("XLEN"), key]),
            16 | 17 => {
                let mut a = vec![b("XDEL"), key];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.stream_id());
                }
                Gen::op(a)
            }
            18 | 19 => {
                let mut a = vec![b("XTRIM"), key];
                self.trim_args(&mut a);
                Gen::op(a)
            }
            20 | 21 => {
                let mut a = vec![b("XREAD")];
                if self.pct(60) {
                    a.push(b("COUNT"));
                    a.push(self.int_arg(0, 5));
                }
                a.push(b("STREAMS"));
                let n = self.rng.random_range(1..=2);
                let keys: Vec<Vec<u8>> = (0..n).map(|_| self.stream_key()).collect();
                a.extend(keys);
                for _ in 0..n {
                    let id = if self.pct(20) {
                        b("$")
                    } else {
                        self.stream_bound(true)
                    };
                    a.push(id);
                }
                Gen::op(a)
            }
            22..=24 => {
                let group = self.pick_str(GROUPS);
                let mut a = match self.idx(7) {
                    0..=2 => {
                        let mut a = vec![b("XGROUP"), b("CREATE"), key, group];
                        a.push(match self.idx(4) {
                            0 => b("$"),
                            1 => b("0"),
                            _ => self.stream_bound(true),
                        });
                        if self.pct(40) {
                            a.push(b("MKSTREAM"));
                        }
                        if self.pct(25) {
                            a.push(b("ENTRIESREAD"));
                            a.push(self.int_arg(-1, 10));
                        }
                        a
                    }
                    3 => {
                        let mut a = vec![b("XGROUP"), b("SETID"), key, group];
                        a.push(if self.pct(30) {
                            b("$")
                        } else {
                            self.stream_bound(true)
                        });
                        if self.pct(25) {
                            a.push(b("ENTRIESREAD"));
                            a.push(self.int_arg(-1, 10));
                        }
                        a
                    }
                    4 => vec![b("XGROUP"), b("DESTROY"), key, group],
                    5 => vec![
                        b("XGROUP"),
                        b("CREATECONSUMER"),
                        key,
                        group,
                        self.pick_str(CONSUMERS),
                    ],
                    _ => vec![
                        b("XGROUP"),
                        b("DELCONSUMER"),
                        key,
                        group,
                        self.pick_str(CONSUMERS),
                    ],
                };
                self.recase(&mut a[1]);
                Gen::op(a)
            }
            25..=28 => {
                let mut a = vec![
                    b("XREADGROUP"),
                    b("GROUP"),
                    self.pick_str(GROUPS),
                    self.pick_str(CONSUMERS),
                ];
                if self.pct(70) {
                    a.push(b("COUNT"));
                    a.push(self.int_arg(0, 4));
                }
                if self.pct(20) {
                    a.push(b("NOACK"));
                }
                a.push(b("STREAMS"));
                // Now and then two streams at once (the group must be on
                // both, or the error names the one without it).
                let keys = if self.pct(20) {
                    vec![key, self.stream_key()]
                } else {
                    vec![key]
                };
                let ids: Vec<Vec<u8>> = keys
                    .iter()
                    .map(|_| {
                        if self.pct(75) {
                            b(">")
                        } else {
                            self.stream_bound(true)
                        }
                    })
                    .collect();
                a.extend(keys);
                a.extend(ids);
                Gen::op(a)
            }
            29 | 30 => {
                let mut a = vec![b("XACK"), key, self.pick_str(GROUPS)];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.stream_id());
                }
                Gen::op(a)
            }
            31 | 32 => {
                let mut a = vec![b("XPENDING"), key, self.pick_str(GROUPS)];
                if self.pct(60) {
                    if self.pct(30) {
                        a.push(b("IDLE"));
                        a.push(b("0"));
                    }
                    a.push(self.stream_bound(true));
                    a.push(self.stream_bound(false));
                    a.push(self.int_arg(-1, 6));
                    if self.pct(40) {
                        a.push(self.pick_str(CONSUMERS));
                    }
                }
                Gen::with_cmp(a, Cmp::Idle)
            }
            33 | 34 => {
                let mut a = vec![
                    b("XCLAIM"),
                    key,
                    self.pick_str(GROUPS),
                    self.pick_str(CONSUMERS),
                    b("0"),
                ];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.stream_id());
                }
                for opt in ["IDLE", "TIME", "RETRYCOUNT", "FORCE", "JUSTID", "LASTID"] {
                    if self.pct(15) {
                        a.push(b(opt));
                        match opt {
                            "IDLE" => a.push(self.int_arg(0, 100_000)),
                            // A delivery time in the past (an idle time
                            // each server computes from its own clock:
                            // masked) or one not a number.
                            "TIME" => a.push(if self.pct(85) {
                                (now_ms() - 5_000).to_string().into_bytes()
                            } else {
                                b("soon")
                            }),
                            "RETRYCOUNT" => a.push(self.int_arg(0, 5)),
                            "LASTID" => a.push(self.stream_id()),
                            _ => {}
                        }
                    }
                }
                Gen::with_cmp(a, Cmp::Idle)
            }
            35 => {
                let mut a = vec![
                    b("XAUTOCLAIM"),
                    key,
                    self.pick_str(GROUPS),
                    self.pick_str(CONSUMERS),
                    b("0"),
                    self.stream_bound(true),
                ];
                if self.pct(50) {
                    a.push(b("COUNT"));
                    a.push(self.int_arg(0, 5));
                }
                if self.pct(25) {
                    a.push(b("JUSTID"));
                }
                Gen::op(a)
            }
            36 => {
                let mut a = vec![b("XINFO"), b("STREAM"), key];
                if self.pct(30) {
                    a.push(b("FULL"));
                    if self.pct(50) {
                        a.push(b("COUNT"));
                        a.push(self.int_arg(0, 5));
                    }
                }
                Gen::with_cmp(a, Cmp::Idle)
            }
            37 => Gen::op(vec![b("XINFO"), b("GROUPS"), key]),
            38 => Gen::with_cmp(
                vec![b("XINFO"), b("CONSUMERS"), key, self.pick_str(GROUPS)],
                Cmp::Idle,
            ),
            _ => {
                let mut a = vec![b("XSETID"), key, self.stream_bound(true)];
                if self.pct(30) {
                    a.push(b("ENTRIESADDED"));
                    a.push(self.int_arg(0, 50));
                }
                if self.pct(30) {
                    a.push(b("MAXDELETEDID"));
                    a.push(self.stream_bound(true));
                }
                Gen::op(a)
            }
        }
    }

    fn bitmap_key(&mut self) -> Vec<u8> {
        self.family_key(40, &["bm:a", "bm:b", "bm:c"])
    }

    fn bit_offset(&mut self) -> Vec<u8> {
        match self.idx(20) {
            0..=15 => self.rng.random_range(0..200).to_string().into_bytes(),
            // (Not 2^32 - 1: a 512 MB string makes the run crawl.)
            16 => self.pick_str(&["100000", "4294967296", "0"]),
            _ => self.pick_str(BAD_INTS),
        }
    }

    /// BITCOUNT/BITPOS's `[start end [BYTE|BIT]]`.
    fn bit_range(&mut self, a: &mut Vec<Vec<u8>>) {
        if self.pct(60) {
            a.push(self.int_arg(-30, 30));
            if self.pct(80) {
                a.push(self.int_arg(-30, 30));
                if self.pct(40) {
                    a.push(self.pick_str(&["BYTE", "BIT", "bit", "WORD"]));
                }
            }
        }
    }

    fn bitfield_type(&mut self) -> Vec<u8> {
        match self.idx(12) {
            0..=9 => {
                let signed = self.pct(50);
                let max = if signed { 64 } else { 63 };
                let bits = match self.idx(3) {
                    0 => self.rng.random_range(1..=8),
                    1 => self.rng.random_range(1..=max),
                    _ => *[8, 16, 32, max].get(self.idx(4)).unwrap_or(&8),
                };
                format!("{}{bits}", if signed { "i" } else { "u" }).into_bytes()
            }
            _ => self.pick_str(&["u64", "i65", "u0", "x8", "i"]),
        }
    }

    fn bitfield_offset(&mut self) -> Vec<u8> {
        match self.idx(10) {
            0..=6 => self.rng.random_range(0..120).to_string().into_bytes(),
            7 | 8 => format!("#{}", self.rng.random_range(0..6)).into_bytes(),
            _ => self.pick_str(&["-1", "#-1", "x", "#"]),
        }
    }

    pub(crate) fn g_bitmap(&mut self) -> Op {
        let key = self.bitmap_key();
        match self.idx(14) {
            0..=3 => {
                let bit = match self.idx(10) {
                    0..=4 => b("1"),
                    5..=8 => b("0"),
                    _ => self.pick_str(&["2", "-1", "x", ""]),
                };
                Gen::op(vec![b("SETBIT"), key, self.bit_offset(), bit])
            }
            4 | 5 => Gen::op(vec![b("GETBIT"), key, self.bit_offset()]),
            6 | 7 => {
                let mut a = vec![b("BITCOUNT"), key];
                self.bit_range(&mut a);
                Gen::op(a)
            }
            8 => {
                let mut a = vec![b("BITPOS"), key, self.pick_str(&["0", "1", "1", "2"])];
                self.bit_range(&mut a);
                Gen::op(a)
            }
            9 => {
                let op = self.pick_str(&["AND", "OR", "XOR", "NOT", "and", "NAND"]);
                let mut a = vec![b("BITOP"), op, self.bitmap_key()];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.bitmap_key());
                }
                Gen::op(a)
            }
            10..=12 => {
                let mut a = vec![b("BITFIELD"), key];
                for _ in 0..self.rng.random_range(1..=4) {
                    match self.idx(4) {
                        0 => {
                            a.push(b("GET"));
                            a.push(self.bitfield_type());
                            a.push(self.bitfield_offset());
                        }
                        1 => {
                            a.push(b("SET"));
                            a.push(self.bitfield_type());
                            a.push(self.bitfield_offset());
                            a.push(self.int_arg(-300, 300));
                        }
                        2 => {
                            a.push(b("INCRBY"));
                            a.push(self.bitfield_type());
                            a.push(self.bitfield_offset());
                            a.push(self.int_arg(-300, 300));
                        }
                        _ => {
                            a.push(b("OVERFLOW"));
                            a.push(self.pick_str(&["WRAP", "SAT", "FAIL", "sat", "NONE"]));
                        }
                    }
                }
                Gen::op(a)
            }
            _ => {
                let mut a = vec![b("BITFIELD_RO"), key];
                for _ in 0..self.rng.random_range(0..=2) {
                    a.push(b("GET"));
                    a.push(self.bitfield_type());
                    a.push(self.bitfield_offset());
                }
                if self.pct(10) {
                    a.push(b("SET"));
                    a.push(b("u8"));
                    a.push(b("0"));
                    a.push(b("1"));
                }
                Gen::op(a)
            }
        }
    }

    pub(crate) fn hll_key(&mut self) -> Vec<u8> {
        self.family_key(15, &["hll:a", "hll:b", "hll:c"])
    }

    pub(crate) fn g_hll(&mut self) -> Op {
        match self.idx(10) {
            0..=4 => {
                let mut a = vec![b("PFADD"), self.hll_key()];
                // Enough distinct elements now and then to turn a sparse
                // HyperLogLog dense (over 3000 bytes of sparse form).
                let n = if self.pct(5) {
                    self.rng.random_range(200..2000)
                } else {
                    self.rng.random_range(0..6)
                };
                let base = self.rng.random_range(0..100_000u32);
                for i in 0..n {
                    a.push(format!("e{}", base + i).into_bytes());
                }
                Gen::op(a)
            }
            5..=7 => {
                let mut a = vec![b("PFCOUNT")];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.hll_key());
                }
                Gen::op(a)
            }
            _ => {
                let mut a = vec![b("PFMERGE"), self.hll_key()];
                for _ in 0..self.rng.random_range(0..=3) {
                    a.push(self.hll_key());
                }
                Gen::op(a)
            }
        }
    }

    fn geo_key(&mut self) -> Vec<u8> {
        self.family_key(15, &["geo:a", "geo:b"])
    }

    fn geo_member(&mut self) -> Vec<u8> {
        self.pick_str(&["m1", "m2", "m3", "m4", "m5", "m6", "", "far"])
    }

    /// Longitude and latitude around a small area (so searches find
    /// several members), sometimes anywhere, sometimes out of range.
    fn lonlat(&mut self) -> [Vec<u8>; 2] {
        match self.idx(10) {
            0..=6 => [
                format!("{:.6}", 13.36 + self.rng.random_range(-0.5..0.5f64)).into_bytes(),
                format!("{:.6}", 38.11 + self.rng.random_range(-0.5..0.5f64)).into_bytes(),
            ],
            7 | 8 => [
                format!("{:.4}", self.rng.random_range(-180.0..180.0f64)).into_bytes(),
                format!("{:.4}", self.rng.random_range(-85.0..85.0f64)).into_bytes(),
            ],
            _ => [
                self.pick_str(&["181", "x", "0"]),
                self.pick_str(&["86", "0", "nan"]),
            ],
        }
    }

    fn geo_unit(&mut self) -> Vec<u8> {
        self.pick_str(&["m", "km", "mi", "ft", "KM", "yd"])
    }

    /// GEOSEARCH's shape, order, count and WITH* options.
    fn geo_search_opts(&mut self, a: &mut Vec<Vec<u8>>, store: bool) {
        if self.pct(75) {
            a.push(b("BYRADIUS"));
            a.push(self.pick_str(&["1", "20", "50", "200", "0", "-1"]));
            a.push(self.geo_unit());
        } else {
            a.push(b("BYBOX"));
            a.push(self.pick_str(&["10", "40", "100", "0"]));
            a.push(self.pick_str(&["10", "40", "100"]));
            a.push(self.geo_unit());
        }
        if self.pct(60) {
            a.push(self.pick_str(&["ASC", "DESC"]));
        }
        if self.pct(40) {
            a.push(b("COUNT"));
            a.push(self.int_arg(0, 4));
            if self.pct(30) {
                a.push(b("ANY"));
            }
        }
        if store {
            if self.pct(40) {
                a.push(b("STOREDIST"));
            }
        } else {
            for w in ["WITHCOORD", "WITHDIST", "WITHHASH"] {
                if self.pct(30) {
                    a.push(b(w));
                }
            }
        }
    }

    pub(crate) fn g_geo(&mut self) -> Op {
        let key = self.geo_key();
        match self.idx(16) {
            0..=4 => {
                let mut a = vec![b("GEOADD"), key];
                if self.pct(20) {
                    a.push(self.pick_str(&["NX", "XX"]));
                }
                if self.pct(20) {
                    a.push(b("CH"));
                }
                for _ in 0..self.rng.random_range(1..=3) {
                    let [lon, lat] = self.lonlat();
                    a.extend([lon, lat, self.geo_member()]);
                }
                Gen::op(a)
            }
            5 => {
                let mut a = vec![b("GEOPOS"), key];
                for _ in 0..self.rng.random_range(1..=3) {
                    a.push(self.geo_member());
                }
                Gen::op(a)
            }
            6 => {
                let mut a = vec![b("GEODIST"), key, self.geo_member(), self.geo_member()];
                if self.pct(60) {
                    a.push(self.geo_unit());
                }
                Gen::op(a)
            }
            7 => {
                let mut a = vec![b("GEOHASH"), key];
                for _ in 0..self.rng.random_range(0..=3) {
                    a.push(self.geo_member());
                }
                Gen::op(a)
            }
            8..=10 => {
                let mut a = vec![b("GEOSEARCH"), key];
                self.geo_from(&mut a);
                self.geo_search_opts(&mut a, false);
                Gen::op(a)
            }
            11 | 12 => {
                let mut a = vec![b("GEOSEARCHSTORE"), self.geo_key(), key];
                self.geo_from(&mut a);
                self.geo_search_opts(&mut a, true);
                Gen::op(a)
            }
            13 | 14 => {
                let name = self.pick_str(&["GEORADIUS", "GEORADIUS_RO"]);
                let [lon, lat] = self.lonlat();
                let mut a = vec![name, key, lon, lat];
                a.push(self.pick_str(&["20", "50", "200"]));
                a.push(self.geo_unit());
                self.georadius_opts(&mut a);
                Gen::op(a)
            }
            _ => {
                let name = self.pick_str(&["GEORADIUSBYMEMBER", "GEORADIUSBYMEMBER_RO"]);
                let mut a = vec![name, key, self.geo_member()];
                a.push(self.pick_str(&["20", "50", "200"]));
                a.push(self.geo_unit());
                self.georadius_opts(&mut a);
                Gen::op(a)
            }
        }
    }

    fn geo_from(&mut self, a: &mut Vec<Vec<u8>>) {
        if self.pct(50) {
            a.push(b("FROMMEMBER"));
            a.push(self.geo_member());
        } else {
            a.push(b("FROMLONLAT"));
            let [lon, lat] = self.lonlat();
            a.extend([lon, lat]);
        }
    }

    fn georadius_opts(&mut self, a: &mut Vec<Vec<u8>>) {
        let ro = a[0].ends_with(b"_RO");
        for w in ["WITHCOORD", "WITHDIST", "WITHHASH"] {
            if self.pct(30) {
                a.push(b(w));
            }
        }
        if self.pct(40) {
            a.push(b("COUNT"));
            a.push(self.int_arg(0, 4));
        }
        if self.pct(50) {
            a.push(self.pick_str(&["ASC", "DESC"]));
        }
        if !ro && self.pct(15) {
            a.push(self.pick_str(&["STORE", "STOREDIST"]));
            a.push(self.geo_key());
        }
    }

    /// DUMP of any key, or RESTORE of what the reference dumps of one
    /// (`Cmp::Restore`: the harness fills the payload in).
    pub(crate) fn g_dump_restore(&mut self) -> Op {
        let src = match self.idx(6) {
            0 => self.stream_key(),
            1 => self.hll_key(),
            2 => self.geo_key(),
            3 => self.set_key(),
            _ => self.key(),
        };
        if self.pct(40) {
            return Gen::with_cmp(vec![b("DUMP"), src], Cmp::Dump);
        }
        let dest = self.key();
        let mut abs = false;
        let ttl = match self.idx(12) {
            0..=6 => b("0"),
            7 | 8 => (self.future_ms() - now_ms()).to_string().into_bytes(),
            9 | 10 => {
                abs = true;
                self.future_ms().to_string().into_bytes()
            }
            _ => self.pick_str(&["-1", "x"]),
        };
        let mut a = vec![b("RESTORE"), dest, ttl, Vec::new()];
        if abs {
            a.push(b("ABSTTL"));
        }
        if self.pct(50) {
            a.push(b("REPLACE"));
        }
        if self.pct(10) {
            a.push(b("IDLETIME"));
            a.push(self.int_arg(0, 1000));
        }
        if self.pct(10) {
            a.push(b("FREQ"));
            a.push(self.int_arg(0, 300));
        }
        let mut op = Gen::with_cmp(a, Cmp::Restore);
        op.dump_from = Some(src);
        op
    }
}
