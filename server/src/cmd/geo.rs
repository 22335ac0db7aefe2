//! Geo commands, as Redis 7.0 has them: a geo set is a sorted set whose
//! scores are 52-bit geohashes (`crate::geohash`), so GEOADD is a ZADD of
//! computed scores (and is logged as one) and the ZSET commands work on
//! it. GEOPOS, GEODIST and GEOHASH decode scores; GEOSEARCH, GEOSEARCHSTORE
//! and the older GEORADIUS family scan the nine cells around the centre,
//! in Redis's order, keeping the members inside the circle or the box.

use super::{errors, Ctx, NOTIFY_GENERIC};
use crate::db::Kind;
use crate::geohash::{self, Search, Shape};
use crate::resp::Reply;
use crate::util::parse_f64;

/// A float argument, or the error sent (`msg`: Redis's own words for it).
fn double(ctx: &mut Ctx, i: usize, msg: Option<&str>) -> Option<f64> {
    match parse_f64(ctx.args[i]) {
        Some(v) => Some(v),
        None => {
            ctx.err(msg.unwrap_or("value is not a valid float"));
            None
        }
    }
}

/// Longitude and latitude at `i`, `i + 1`, in the range a member may have.
fn lon_lat(ctx: &mut Ctx, i: usize) -> Option<(f64, f64)> {
    let lon = double(ctx, i, None)?;
    let lat = double(ctx, i + 1, None)?;
    if !(geohash::LONG_MIN..=geohash::LONG_MAX).contains(&lon)
        || !(geohash::LAT_MIN..=geohash::LAT_MAX).contains(&lat)
    {
        invalid_pair(ctx, lon, lat);
        return None;
    }
    Some((lon, lat))
}

/// Redis's error for coordinates outside what a member may have.
fn invalid_pair(ctx: &mut Ctx, lon: f64, lat: f64) {
    ctx.err(&format!(
        "invalid longitude,latitude pair {lon:.6},{lat:.6}"
    ));
}

/// A unit's meters (m, km, ft, mi, any case).
fn unit(ctx: &mut Ctx, i: usize) -> Option<f64> {
    let u = ctx.args[i];
    let m = [
        (&b"m"[..], 1.0),
        (b"km", 1000.0),
        (b"ft", 0.3048),
        (b"mi", 1609.34),
    ]
    .iter()
    .find(|(n, _)| u.eq_ignore_ascii_case(n))
    .map(|(_, m)| *m);
    if m.is_none() {
        ctx.err("unsupported unit provided. please use M, KM, FT, MI");
    }
    m
}

/// `radius unit` at `i`: (radius, the unit's meters).
fn radius(ctx: &mut Ctx, i: usize) -> Option<(f64, f64)> {
    let r = double(ctx, i, Some("need numeric radius"))?;
    if r < 0.0 {
        ctx.err("radius cannot be negative");
        return None;
    }
    Some((r, unit(ctx, i + 1)?))
}

/// `width height unit` at `i`.
fn box_size(ctx: &mut Ctx, i: usize) -> Option<(f64, f64, f64)> {
    let w = double(ctx, i, Some("need numeric width"))?;
    let h = double(ctx, i + 1, Some("need numeric height"))?;
    if h < 0.0 || w < 0.0 {
        ctx.err("height or width cannot be negative");
        return None;
    }
    Some((w, h, unit(ctx, i + 2)?))
}

/// A coordinate as Redis writes it (`%.17Lf`, trailing zeros dropped):
/// a bulk string in RESP2, a double in RESP3.
fn coord(out: &mut Reply, v: f64) {
    let mut s = format!("{v:.17}");
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(t);
    }
    if s == "-0" {
        s = "0".into();
    }
    if out.resp >= 3 {
        out.raw(format!(",{s}\r\n").as_bytes());
    } else {
        out.bulk(s.as_bytes());
    }
}

/// A distance with four decimals (a bulk string in both protocols).
fn dist(out: &mut Reply, d: f64) {
    out.bulk(format!("{d:.4}").as_bytes());
}

/// The geo set at `key` for reading (`Err`: WRONGTYPE sent).
fn read_set(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, super::Replied> {
    ctx.lookup_typed(key, Kind::ZSet, true)
}

/// A member's position, if the set has it.
fn position(ctx: &Ctx, idx: u32, member: &[u8]) -> Option<(f64, f64)> {
    let z = super::zset::zset_in(ctx.t, ctx.s.db, idx)?;
    z.score(member).map(geohash::decode_score)
}

/// `GEOADD key [NX|XX] [CH] longitude latitude member ...`: a ZADD of
/// each position's score, run and logged as one.
pub fn geoadd(ctx: &mut Ctx) {
    let mut first = 2;
    let (mut nx, mut xx) = (false, false);
    while first < ctx.args.len() {
        let a = ctx.args[first];
        if a.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if !a.eq_ignore_ascii_case(b"ch") {
            break;
        }
        first += 1;
    }
    if !(ctx.args.len() - first).is_multiple_of(3) || (nx && xx) {
        return ctx.syntax_error();
    }
    let mut scores = Vec::new();
    for i in (first..ctx.args.len()).step_by(3) {
        let Some((lon, lat)) = lon_lat(ctx, i) else {
            return;
        };
        let Some(s) = geohash::score_of(lon, lat) else {
            return invalid_pair(ctx, lon, lat);
        };
        scores.push(s.to_string());
    }
    let mut argv: Vec<&[u8]> = vec![b"zadd"];
    argv.extend_from_slice(&ctx.args[1..first]);
    for (j, i) in (first..ctx.args.len()).step_by(3).enumerate() {
        argv.push(scores[j].as_bytes());
        argv.push(ctx.args[i + 2]);
    }
    let mut inner = Ctx {
        args: &argv,
        out: &mut *ctx.out,
        t: &mut *ctx.t,
        s: &mut *ctx.s,
        shared: ctx.shared,
        set: ctx.set,
        now_ms: ctx.now_ms,
        spec: ctx.spec,
        failed: false,
        suspend: None,
    };
    super::zset::zadd(&mut inner);
    ctx.failed |= inner.failed;
}

/// `GEOPOS key member ...`: each member's [longitude, latitude], or nil.
pub fn geopos(ctx: &mut Ctx) {
    let Ok(idx) = read_set(ctx, ctx.args[1]) else {
        return;
    };
    ctx.out.array(ctx.args.len() - 2);
    for i in 2..ctx.args.len() {
        match idx.and_then(|idx| position(ctx, idx, ctx.args[i])) {
            Some((lon, lat)) => {
                ctx.out.array(2);
                coord(ctx.out, lon);
                coord(ctx.out, lat);
            }
            None => ctx.out.null_array(),
        }
    }
}

/// `GEOHASH key member ...`: each member's standard 11-character geohash.
pub fn geohash(ctx: &mut Ctx) {
    let Ok(idx) = read_set(ctx, ctx.args[1]) else {
        return;
    };
    ctx.out.array(ctx.args.len() - 2);
    for i in 2..ctx.args.len() {
        let h = idx
            .and_then(|idx| position(ctx, idx, ctx.args[i]))
            .and_then(|(lon, lat)| geohash::geohash_string(lon, lat));
        match h {
            Some(h) => ctx.out.bulk(h.as_bytes()),
            None => ctx.out.null(),
        }
    }
}

/// `GEODIST key member1 member2 [M|KM|FT|MI]`.
pub fn geodist(ctx: &mut Ctx) {
    let to_meters = match ctx.args.len() {
        5 => match unit(ctx, 4) {
            Some(u) => u,
            None => return,
        },
        4 => 1.0,
        _ => return ctx.syntax_error(),
    };
    let idx = match read_set(ctx, ctx.args[1]) {
        Err(_) => return,
        Ok(None) => return ctx.out.null(),
        Ok(Some(idx)) => idx,
    };
    match (
        position(ctx, idx, ctx.args[2]),
        position(ctx, idx, ctx.args[3]),
    ) {
        (Some(a), Some(b)) => dist(ctx.out, geohash::distance(a.0, a.1, b.0, b.1) / to_meters),
        _ => ctx.out.null(),
    }
}

/// Which command of the search family runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// GEORADIUS[_RO] key lon lat radius unit ...
    Coords,
    /// GEORADIUSBYMEMBER[_RO] key member radius unit ...
    Member,
    /// GEOSEARCH key FROM... BY... ...
    Search,
    /// GEOSEARCHSTORE dst key FROM... BY... ...
    SearchStore,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    None,
    Asc,
    Desc,
}

/// A member found: its name, score, position and distance (meters).
struct Found<'z> {
    member: &'z [u8],
    score: f64,
    lon: f64,
    lat: f64,
    dist: f64,
}

pub fn georadius(ctx: &mut Ctx) {
    search(ctx, Form::Coords, true);
}

pub fn georadius_ro(ctx: &mut Ctx) {
    search(ctx, Form::Coords, false);
}

pub fn georadiusbymember(ctx: &mut Ctx) {
    search(ctx, Form::Member, true);
}

pub fn georadiusbymember_ro(ctx: &mut Ctx) {
    search(ctx, Form::Member, false);
}

pub fn geosearch(ctx: &mut Ctx) {
    search(ctx, Form::Search, false);
}

pub fn geosearchstore(ctx: &mut Ctx) {
    search(ctx, Form::SearchStore, true);
}

/// The search family, argument checks in Redis's order (`georadiusGeneric`);
/// `store`: the command may store (GEORADIUS's STORE / STOREDIST options).
fn search(ctx: &mut Ctx, form: Form, store: bool) {
    let src = if form == Form::SearchStore { 2 } else { 1 };
    let Ok(idx) = read_set(ctx, ctx.args[src]) else {
        return;
    };
    let geosearch = matches!(form, Form::Search | Form::SearchStore);
    let mut center: Option<(f64, f64)> = None;
    let mut shape: Option<(Shape, f64)> = None;
    let base = match form {
        Form::Coords => {
            let Some(c) = lon_lat(ctx, 2) else { return };
            center = Some(c);
            let Some((r, conv)) = radius(ctx, 4) else {
                return;
            };
            shape = Some((Shape::Radius(r), conv));
            6
        }
        Form::Member => {
            if let Some(idx) = idx {
                let Some(c) = position(ctx, idx, ctx.args[2]) else {
                    return ctx.err("could not decode requested zset member");
                };
                center = Some(c);
                let Some((r, conv)) = radius(ctx, 3) else {
                    return;
                };
                shape = Some((Shape::Radius(r), conv));
            }
            5
        }
        Form::Search => 2,
        Form::SearchStore => 3,
    };
    let mut store_key: Option<&[u8]> = (form == Form::SearchStore).then(|| ctx.args[1]);
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut storedist = false;
    let mut sort = Sort::None;
    let mut count: i64 = 0;
    let args = ctx.args;
    let remaining = args.len().saturating_sub(base);
    let mut i = 0;
    while i < remaining {
        let a = args[base + i];
        let is = |w: &[u8]| a.eq_ignore_ascii_case(w);
        if is(b"withdist") {
            withdist = true;
        } else if is(b"withhash") {
            withhash = true;
        } else if is(b"withcoord") {
            withcoord = true;
        } else if is(b"any") {
            any = true;
        } else if is(b"asc") {
            sort = Sort::Asc;
        } else if is(b"desc") {
            sort = Sort::Desc;
        } else if is(b"count") && i + 1 < remaining {
            match crate::util::parse_i64(args[base + i + 1]) {
                Some(n) if n > 0 => count = n,
                Some(_) => return ctx.err("COUNT must be > 0"),
                None => return ctx.err(errors::NOT_INTEGER),
            }
            i += 1;
        } else if (is(b"store") || is(b"storedist")) && i + 1 < remaining && store && !geosearch {
            store_key = Some(args[base + i + 1]);
            storedist = is(b"storedist");
            i += 1;
        } else if is(b"storedist") && form == Form::SearchStore {
            storedist = true;
        } else if is(b"frommember") && i + 1 < remaining && geosearch && !fromloc {
            if let Some(idx) = idx {
                let Some(c) = position(ctx, idx, args[base + i + 1]) else {
                    return ctx.err("could not decode requested zset member");
                };
                center = Some(c);
            }
            frommember = true;
            i += 1;
        } else if is(b"fromlonlat") && i + 2 < remaining && geosearch && !frommember {
            let Some(c) = lon_lat(ctx, base + i + 1) else {
                return;
            };
            center = Some(c);
            fromloc = true;
            i += 2;
        } else if is(b"byradius") && i + 2 < remaining && geosearch && !bybox {
            let Some((r, conv)) = radius(ctx, base + i + 1) else {
                return;
            };
            shape = Some((Shape::Radius(r), conv));
            byradius = true;
            i += 2;
        } else if is(b"bybox") && i + 3 < remaining && geosearch && !byradius {
            let Some((w, h, conv)) = box_size(ctx, base + i + 1) else {
                return;
            };
            shape = Some((
                Shape::Box {
                    width: w,
                    height: h,
                },
                conv,
            ));
            bybox = true;
            i += 3;
        } else {
            return ctx.syntax_error();
        }
        i += 1;
    }
    let name = || String::from_utf8_lossy(args[0]).into_owned();
    if store_key.is_some() && (withdist || withhash || withcoord) {
        let what = if form == Form::SearchStore {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return ctx.err(&format!(
            "{what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        ));
    }
    if geosearch && !(frommember || fromloc) {
        return ctx.err(&format!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {}",
            name()
        ));
    }
    if geosearch && !(byradius || bybox) {
        return ctx.err(&format!(
            "exactly one of BYRADIUS and BYBOX can be specified for {}",
            name()
        ));
    }
    if any && count == 0 {
        return ctx.err("the ANY argument requires COUNT argument");
    }
    let (Some(idx), Some((lon, lat)), Some((shape, conversion))) = (idx, center, shape) else {
        // No source set: an empty result.
        return match store_key {
            Some(dst) => {
                ctx.out.int(0);
                if ctx.lookup_write(dst).is_some() {
                    ctx.delete_key(dst);
                    ctx.notify(NOTIFY_GENERIC, "del", dst);
                    ctx.propagate(&[b"DEL", dst]);
                }
            }
            None => ctx.out.array(0),
        };
    };
    if count != 0 && sort == Sort::None && !any {
        sort = Sort::Asc;
    }
    let s = Search {
        lon,
        lat,
        shape,
        conversion,
    };
    let limit = if any { count as usize } else { 0 };
    // (The members are borrowed from the set while the reply is written:
    // `ctx.t` and `ctx.out` are apart.)
    let Some(z) = super::zset::zset_in(ctx.t, ctx.s.db, idx) else {
        return ctx.out.array(0);
    };
    let mut found: Vec<Found> = Vec::new();
    let areas = s.areas();
    let mut last: Option<usize> = None;
    for (n, area) in areas.iter().enumerate() {
        if limit > 0 && found.len() >= limit {
            break;
        }
        let Some(h) = area else { continue };
        // Huge searches: neighbours may be the same cell (not the
        // centre's, as Redis compares).
        if let Some(l) = last.filter(|&l| l > 0) {
            if areas[l] == Some(*h) {
                continue;
            }
        }
        let (min, max) = geohash::score_range(*h);
        let r = crate::db::zset::ScoreRange {
            min,
            max,
            minex: false,
            maxex: true,
        };
        for (member, score) in z.range_by_score(&r, false, 0, -1) {
            if limit > 0 && found.len() >= limit {
                break;
            }
            let (lon, lat) = geohash::decode_score(score);
            if let Some(dist) = s.contains(lon, lat) {
                found.push(Found {
                    member,
                    score,
                    lon,
                    lat,
                    dist,
                });
            }
        }
        last = Some(n);
    }
    match sort {
        Sort::Asc => found.sort_by(|a, b| a.dist.total_cmp(&b.dist)),
        Sort::Desc => found.sort_by(|a, b| b.dist.total_cmp(&a.dist)),
        Sort::None => {}
    }
    if count > 0 {
        found.truncate(count as usize);
    }
    for f in &mut found {
        f.dist /= conversion;
    }
    if let Some(dst) = store_key {
        let entries = found
            .into_iter()
            .map(|f| (f.member.to_vec(), if storedist { f.dist } else { f.score }))
            .collect();
        let event = if geosearch {
            "geosearchstore"
        } else {
            "georadiusstore"
        };
        return super::zset::store_result(ctx, dst, entries, event);
    }
    let extra = withdist as usize + withhash as usize + withcoord as usize;
    let out = &mut *ctx.out;
    out.array(found.len());
    for f in &found {
        if extra > 0 {
            out.array(extra + 1);
        }
        out.bulk(f.member);
        if withdist {
            dist(out, f.dist);
        }
        if withhash {
            out.int(f.score as i64);
        }
        if withcoord {
            out.array(2);
            coord(out, f.lon);
            coord(out, f.lat);
        }
    }
}
