//! Geohashes as Redis 7.0 computes them, so a GEOADD here stores the very
//! score redis-server stores and every search finds the same members in
//! the same order: 52-bit interleaved hashes (latitude on the even bits,
//! longitude on the odd ones) over Web Mercator's latitude range, the
//! nine areas a search scans, and the haversine distance on Redis's
//! earth radius. The commands are in `cmd/geo.rs`.

/// The coordinates a member may have (Web Mercator's latitude limits).
pub const LONG_MIN: f64 = -180.0;
pub const LONG_MAX: f64 = 180.0;
pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;

/// Bits per coordinate of a stored member's hash (52 in all).
pub const STEP_MAX: u8 = 26;

/// Redis's earth radius (the quadratic mean radius of WGS-84), meters.
const EARTH_RADIUS: f64 = 6372797.560856;
const MERCATOR_MAX: f64 = 20037726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

fn deg_rad(a: f64) -> f64 {
    a * D_R
}

fn rad_deg(a: f64) -> f64 {
    a / D_R
}

/// A hash of `step` bits per coordinate (zero and step 0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hash {
    pub bits: u64,
    pub step: u8,
}

impl Hash {
    fn is_zero(&self) -> bool {
        self.bits == 0 && self.step == 0
    }

    /// The hash as a 52-bit sorted-set score prefix.
    pub fn align52(&self) -> u64 {
        self.bits << (52 - self.step as u32 * 2)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

/// The coordinate ranges members are hashed over.
pub const WGS84: (Range, Range) = (
    Range {
        min: LONG_MIN,
        max: LONG_MAX,
    },
    Range {
        min: LAT_MIN,
        max: LAT_MAX,
    },
);

/// The cell a hash names.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    pub lon: Range,
    pub lat: Range,
}

/// Spreads two 32-bit values over the even (`x`) and odd (`y`) bits.
fn interleave(x: u32, y: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555555555555555,
        0x3333333333333333,
        0x0F0F0F0F0F0F0F0F,
        0x00FF00FF00FF00FF,
        0x0000FFFF0000FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let spread = |mut v: u64| {
        for i in (0..5).rev() {
            v = (v | (v << S[i])) & B[i];
        }
        v
    };
    spread(x as u64) | (spread(y as u64) << 1)
}

/// The even bits and the odd bits of `v`, each packed.
fn deinterleave(v: u64) -> (u32, u32) {
    let pack = |mut x: u64| {
        x &= 0x5555555555555555;
        x = (x | (x >> 1)) & 0x3333333333333333;
        x = (x | (x >> 2)) & 0x0F0F0F0F0F0F0F0F;
        x = (x | (x >> 4)) & 0x00FF00FF00FF00FF;
        x = (x | (x >> 8)) & 0x0000FFFF0000FFFF;
        x = (x | (x >> 16)) & 0x00000000FFFFFFFF;
        x as u32
    };
    (pack(v), pack(v >> 1))
}

/// The hash of (lon, lat) at `step` over the given ranges; None outside
/// them or outside the coordinates a member may have.
pub fn encode(lon_r: Range, lat_r: Range, lon: f64, lat: f64, step: u8) -> Option<Hash> {
    if step == 0 || step > 32 || lat_r.max - lat_r.min == 0.0 || lon_r.max - lon_r.min == 0.0 {
        return None;
    }
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    if lat < lat_r.min || lat > lat_r.max || lon < lon_r.min || lon > lon_r.max {
        return None;
    }
    let cells = (1u64 << step) as f64;
    let lat_off = (lat - lat_r.min) / (lat_r.max - lat_r.min) * cells;
    let lon_off = (lon - lon_r.min) / (lon_r.max - lon_r.min) * cells;
    Some(Hash {
        bits: interleave(lat_off as u32, lon_off as u32),
        step,
    })
}

/// The cell `hash` names over the given ranges.
pub fn decode(lon_r: Range, lat_r: Range, hash: Hash) -> Area {
    let (ilat, ilon) = deinterleave(hash.bits);
    let cells = (1u64 << hash.step) as f64;
    let (lat_scale, lon_scale) = (lat_r.max - lat_r.min, lon_r.max - lon_r.min);
    Area {
        lat: Range {
            min: lat_r.min + (ilat as f64 / cells) * lat_scale,
            max: lat_r.min + ((ilat.wrapping_add(1)) as f64 / cells) * lat_scale,
        },
        lon: Range {
            min: lon_r.min + (ilon as f64 / cells) * lon_scale,
            max: lon_r.min + ((ilon.wrapping_add(1)) as f64 / cells) * lon_scale,
        },
    }
}

/// A sorted-set score as (longitude, latitude): its cell's centre.
pub fn decode_score(score: f64) -> (f64, f64) {
    let hash = Hash {
        bits: score as u64,
        step: STEP_MAX,
    };
    let a = decode(WGS84.0, WGS84.1, hash);
    let lon = ((a.lon.min + a.lon.max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((a.lat.min + a.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

/// The score GEOADD stores for (lon, lat), already checked to be in range.
pub fn score_of(lon: f64, lat: f64) -> Option<u64> {
    encode(WGS84.0, WGS84.1, lon, lat, STEP_MAX).map(|h| h.align52())
}

/// The standard 11-character geohash (latitude over ±90) GEOHASH shows.
pub fn geohash_string(lon: f64, lat: f64) -> Option<String> {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let hash = encode(
        WGS84.0,
        Range {
            min: -90.0,
            max: 90.0,
        },
        lon,
        lat,
        STEP_MAX,
    )?;
    Some(
        (0..11)
            .map(|i| {
                // 52 bits make ten characters and two bits: the last is 0.
                let idx = if i == 10 {
                    0
                } else {
                    (hash.bits >> (52 - (i + 1) * 5)) & 0x1f
                };
                ALPHABET[idx as usize] as char
            })
            .collect(),
    )
}

/// `hash` moved one cell along one axis (`own`: that axis's bits, the
/// odd ones for longitude, the even ones for latitude): +1 east or north,
/// -1 west or south. The other axis's bits fill the gaps so the carry
/// (or borrow) runs through, then are masked out.
fn move_axis(h: &mut Hash, d: i8, own: u64) {
    if h.step == 0 {
        return;
    }
    let other = !own;
    let (v, keep) = (h.bits & own, h.bits & other);
    let shift = 64 - h.step as u32 * 2;
    let zz = other >> shift;
    let v = if d > 0 {
        v.wrapping_add(zz + 1)
    } else {
        (v | zz).wrapping_sub(zz + 1)
    } & (own >> shift);
    h.bits = v | keep;
}

fn moved(h: Hash, dx: i8, dy: i8) -> Hash {
    let mut n = h;
    if dx != 0 {
        move_axis(&mut n, dx, 0xaaaaaaaaaaaaaaaa);
    }
    if dy != 0 {
        move_axis(&mut n, dy, 0x5555555555555555);
    }
    n
}

/// What a search covers: a circle or an axis-aligned box around a point.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Radius(f64),
    Box { width: f64, height: f64 },
}

/// A search: its centre, its shape (in `unit`s) and the unit's meters.
#[derive(Clone, Copy, Debug)]
pub struct Search {
    pub lon: f64,
    pub lat: f64,
    pub shape: Shape,
    pub conversion: f64,
}

/// Redis's estimate of the hash precision whose cells cover a radius.
fn steps_for_radius(mut range: f64, lat: f64) -> u8 {
    if range == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

impl Search {
    /// (min lon, min lat, max lon, max lat) the search may reach.
    fn bounds(&self) -> [f64; 4] {
        let (height, width) = match self.shape {
            Shape::Radius(r) => (r * self.conversion, r * self.conversion),
            Shape::Box { width, height } => (
                height / 2.0 * self.conversion,
                width / 2.0 * self.conversion,
            ),
        };
        let lat_delta = rad_deg(height / EARTH_RADIUS);
        let lon_delta_top = rad_deg(width / EARTH_RADIUS / deg_rad(self.lat + lat_delta).cos());
        let lon_delta_bottom = rad_deg(width / EARTH_RADIUS / deg_rad(self.lat - lat_delta).cos());
        let delta = if self.lat < 0.0 {
            lon_delta_bottom
        } else {
            lon_delta_top
        };
        [
            self.lon - delta,
            self.lat - lat_delta,
            self.lon + delta,
            self.lat + lat_delta,
        ]
    }

    /// The cells to scan, in Redis's order (the centre's, then north,
    /// south, east, west, north-east, north-west, south-east,
    /// south-west); None for those the search cannot reach.
    pub fn areas(&self) -> [Option<Hash>; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let radius = match self.shape {
            Shape::Radius(r) => r,
            Shape::Box { width, height } => {
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
            }
        } * self.conversion;
        let mut steps = steps_for_radius(radius, self.lat);
        let (lon_r, lat_r) = WGS84;
        let at = |steps| encode(lon_r, lat_r, self.lon, self.lat, steps).unwrap_or_default();
        let mut hash = at(steps);
        // A neighbour too near the search's edge: one step coarser.
        let area_of = |h| decode(lon_r, lat_r, h);
        let decrease = area_of(moved(hash, 0, 1)).lat.max < max_lat
            || area_of(moved(hash, 0, -1)).lat.min > min_lat
            || area_of(moved(hash, 1, 0)).lon.max < max_lon
            || area_of(moved(hash, -1, 0)).lon.min > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            hash = at(steps);
        }
        let area = area_of(hash);
        let mut n = [
            Some(hash),
            Some(moved(hash, 0, 1)),
            Some(moved(hash, 0, -1)),
            Some(moved(hash, 1, 0)),
            Some(moved(hash, -1, 0)),
            Some(moved(hash, 1, 1)),
            Some(moved(hash, -1, 1)),
            Some(moved(hash, 1, -1)),
            Some(moved(hash, -1, -1)),
        ];
        // The cells past the search's bounds are not scanned.
        if steps >= 2 {
            let (north, south, east, west) = ([1, 5, 6], [2, 7, 8], [3, 5, 7], [4, 6, 8]);
            if area.lat.min < min_lat {
                south.iter().for_each(|&i| n[i] = None);
            }
            if area.lat.max > max_lat {
                north.iter().for_each(|&i| n[i] = None);
            }
            if area.lon.min < min_lon {
                west.iter().for_each(|&i| n[i] = None);
            }
            if area.lon.max > max_lon {
                east.iter().for_each(|&i| n[i] = None);
            }
        }
        // (A zero hash is no cell, as in Redis.)
        n.map(|h| h.filter(|h| !h.is_zero()))
    }

    /// The distance in meters from the centre to (lon, lat) when that
    /// point is inside the search.
    pub fn contains(&self, lon: f64, lat: f64) -> Option<f64> {
        match self.shape {
            Shape::Radius(r) => {
                let d = distance(self.lon, self.lat, lon, lat);
                (d <= r * self.conversion).then_some(d)
            }
            Shape::Box { width, height } => {
                let lon_d = distance(lon, lat, self.lon, lat);
                let lat_d = distance(lon, lat, lon, self.lat);
                if lon_d > width * self.conversion / 2.0 || lat_d > height * self.conversion / 2.0 {
                    return None;
                }
                Some(distance(self.lon, self.lat, lon, lat))
            }
        }
    }
}

/// The haversine distance in meters, as Redis computes it.
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lat1r, lon1r, lat2r, lon2r) = (deg_rad(lat1), deg_rad(lon1), deg_rad(lat2), deg_rad(lon2));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let v = ((lon2r - lon1r) / 2.0).sin();
    2.0 * EARTH_RADIUS * (u * u + lat1r.cos() * lat2r.cos() * v * v).sqrt().asin()
}

/// The score interval [min, max) of the members inside `hash`'s cell.
pub fn score_range(hash: Hash) -> (f64, f64) {
    let min = hash.align52();
    let max = Hash {
        bits: hash.bits + 1,
        step: hash.step,
    }
    .align52();
    (min as f64, max as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips() {
        for (x, y) in [
            (0u32, 0u32),
            (1, 0),
            (0, 1),
            (0xdead_beef, 0x1234_5678),
            (u32::MAX, 7),
        ] {
            assert_eq!(deinterleave(interleave(x, y)), (x, y));
        }
    }

    #[test]
    fn palermo_as_redis_stores_it() {
        // GEOADD Sicily 13.361389 38.115556 "Palermo" in redis-server 7.0:
        // score 3479099956230698, GEOHASH sqc8b49rny0.
        let s = score_of(13.361389, 38.115556).expect("in range");
        assert_eq!(s, 3479099956230698);
        let (lon, lat) = decode_score(s as f64);
        assert!((lon - 13.361389).abs() < 1e-5 && (lat - 38.115556).abs() < 1e-5);
        assert_eq!(geohash_string(lon, lat).as_deref(), Some("sqc8b49rny0"));
        assert!(score_of(0.0, 86.0).is_none());
    }
}
