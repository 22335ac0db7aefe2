//! Geo commands against redis-server 7.0: the same scores (GEOADD is a
//! ZADD of 52-bit geohashes), positions, distances and geohashes to the
//! digit, and the same searches (GEOSEARCH, GEOSEARCHSTORE, GEORADIUS and
//! its forms) with the same members in the same order, over seeded random
//! points near the poles and the antimeridian too; errors in Redis's
//! words; RESP3 replies byte for byte.

mod common;

use common::{same, start_anykv, start_reference, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};

const CITIES: &[(&str, &str, &str)] = &[
    ("13.361389", "38.115556", "Palermo"),
    ("15.087269", "37.502669", "Catania"),
    ("12.758489", "38.788135", "edge1"),
    ("17.241510", "38.788135", "edge2"),
    ("-122.4194", "37.7749", "SF"),
    ("179.9999", "0.5", "east"),
    ("-179.9999", "0.5", "west"),
    ("0", "85.05", "north"),
    ("0", "-85.05", "south"),
    ("2.3522", "48.8566", "Paris"),
];

#[test]
fn geo_commands_answer_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    for (lon, lat, m) in CITIES {
        same(&mut r, &mut a, &["GEOADD", "g", lon, lat, m]);
    }
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..400 {
        // Clusters around a few places, and points anywhere.
        let (clon, clat, spread): (f64, f64, f64) = match i % 4 {
            0 => (13.5, 38.0, 2.0),
            1 => (179.0, 10.0, 2.5),
            2 => (0.0, 82.0, 6.0),
            _ => (0.0, 0.0, 170.0),
        };
        let lon: f64 = (clon + rng.random_range(-spread..spread)).clamp(-180.0, 180.0);
        let lat: f64 = (clat + rng.random_range(-spread..spread)).clamp(-85.0, 85.0);
        let (lon, lat) = (format!("{lon:.6}"), format!("{lat:.6}"));
        same(
            &mut r,
            &mut a,
            &["GEOADD", "g", &lon, &lat, &format!("p{i}")],
        );
    }
    same(&mut r, &mut a, &["ZRANGE", "g", "0", "-1", "WITHSCORES"]);
    let mut members: Vec<&str> = CITIES.iter().map(|c| c.2).collect();
    members.push("nosuch");
    let mut pos = vec!["GEOPOS", "g"];
    pos.extend(&members);
    same(&mut r, &mut a, &pos);
    pos[0] = "GEOHASH";
    same(&mut r, &mut a, &pos);
    for unit in ["m", "km", "ft", "mi", "KM"] {
        for (x, y) in [
            ("Palermo", "Catania"),
            ("east", "west"),
            ("north", "south"),
            ("SF", "Paris"),
            ("p1", "p2"),
        ] {
            same(&mut r, &mut a, &["GEODIST", "g", x, y, unit]);
        }
    }
    same(&mut r, &mut a, &["GEODIST", "g", "Palermo", "nosuch"]);
    same(&mut r, &mut a, &["GEODIST", "nokey", "a", "b"]);
    // Searches of every shape, centre, order and option.
    let centres: Vec<Vec<&str>> = vec![
        vec!["FROMMEMBER", "Palermo"],
        vec!["FROMMEMBER", "east"],
        vec!["FROMMEMBER", "north"],
        vec!["FROMLONLAT", "15", "37"],
        vec!["FROMLONLAT", "-179.5", "9.5"],
        vec!["FROMLONLAT", "0", "0"],
        vec!["FROMLONLAT", "10", "-84"],
    ];
    let shapes: Vec<Vec<&str>> = vec![
        vec!["BYRADIUS", "200", "km"],
        vec!["BYRADIUS", "1000", "km"],
        vec!["BYRADIUS", "50", "mi"],
        vec!["BYRADIUS", "0", "m"],
        vec!["BYRADIUS", "7000", "km"],
        vec!["BYBOX", "400", "400", "km"],
        vec!["BYBOX", "2000", "300", "km"],
        vec!["BYBOX", "100", "900000", "ft"],
    ];
    let tails: Vec<Vec<&str>> = vec![
        vec![],
        vec!["ASC"],
        vec!["DESC", "WITHDIST"],
        vec!["ASC", "COUNT", "3", "WITHCOORD", "WITHHASH"],
        vec!["COUNT", "5", "ANY"],
        vec!["WITHDIST", "WITHHASH", "WITHCOORD"],
    ];
    for c in &centres {
        for s in &shapes {
            for t in &tails {
                let mut cmd = vec!["GEOSEARCH", "g"];
                cmd.extend(c);
                cmd.extend(s);
                cmd.extend(t);
                same(&mut r, &mut a, &cmd);
            }
            for storedist in [false, true] {
                let mut cmd = vec!["GEOSEARCHSTORE", "dst", "g"];
                cmd.extend(c);
                cmd.extend(s);
                if storedist {
                    cmd.push("STOREDIST");
                }
                same(&mut r, &mut a, &cmd);
                same(&mut r, &mut a, &["ZRANGE", "dst", "0", "-1", "WITHSCORES"]);
            }
        }
    }
    // The older forms.
    for cmd in [
        vec!["GEORADIUS", "g", "15", "37", "200", "km", "WITHDIST", "ASC"],
        vec![
            "GEORADIUS_RO",
            "g",
            "15",
            "37",
            "500",
            "km",
            "COUNT",
            "4",
            "DESC",
        ],
        vec![
            "GEORADIUSBYMEMBER",
            "g",
            "Palermo",
            "300",
            "km",
            "WITHCOORD",
        ],
        vec!["GEORADIUSBYMEMBER_RO", "g", "east", "400", "km"],
        vec!["GEORADIUS", "g", "15", "37", "200", "km", "STORE", "st"],
        vec!["ZRANGE", "st", "0", "-1", "WITHSCORES"],
        vec![
            "GEORADIUSBYMEMBER",
            "g",
            "Palermo",
            "200",
            "km",
            "STOREDIST",
            "st",
        ],
        vec!["ZRANGE", "st", "0", "-1", "WITHSCORES"],
        vec!["GEORADIUS", "g", "0", "0", "1", "m", "STORE", "st"],
        vec!["EXISTS", "st"],
        vec!["GEORADIUS_RO", "g", "15", "37", "200", "km", "STORE", "st"],
        vec!["GEORADIUS", "nokey", "15", "37", "200", "km"],
        vec![
            "GEORADIUSBYMEMBER",
            "nokey",
            "x",
            "200",
            "km",
            "STORE",
            "st2",
        ],
        vec!["GEORADIUSBYMEMBER", "g", "nosuch", "200", "km"],
        vec![
            "COMMAND",
            "GETKEYS",
            "GEORADIUS",
            "g",
            "1",
            "2",
            "3",
            "km",
            "STORE",
            "a",
            "STOREDIST",
            "b",
        ],
    ] {
        same(&mut r, &mut a, &cmd);
    }
    // Errors, in Redis's order and words.
    for cmd in [
        vec!["GEOADD", "g", "200", "10", "bad"],
        vec!["GEOADD", "g", "10", "86", "bad"],
        vec!["GEOADD", "g", "x", "10", "bad"],
        vec!["GEOADD", "g", "1", "2", "a", "3"],
        vec!["GEOADD", "g", "NX", "XX", "1", "2", "a"],
        vec![
            "GEOADD",
            "g",
            "XX",
            "CH",
            "13.361389",
            "38.115556",
            "Palermo",
            "1",
            "1",
            "newone",
        ],
        vec!["GEOADD", "g", "NX", "CH", "13", "38", "Palermo"],
        vec!["GEOADD", "g", "CH", "13", "38", "Palermo"],
        vec!["GEODIST", "g", "Palermo", "Catania", "parsec"],
        vec!["GEODIST", "g", "Palermo", "Catania", "km", "x"],
        vec!["GEOSEARCH", "g", "FROMMEMBER", "Palermo"],
        vec!["GEOSEARCH", "g", "BYRADIUS", "10", "km"],
        vec![
            "GEOSEARCH",
            "g",
            "FROMMEMBER",
            "nosuch",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMMEMBER",
            "Palermo",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "-1",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "x",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYBOX",
            "1",
            "-1",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYBOX",
            "1",
            "y",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "BYBOX",
            "1",
            "1",
            "km",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "ANY",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "COUNT",
            "0",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "COUNT",
            "x",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "STORE",
            "x",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "STOREDIST",
        ],
        vec![
            "GEOSEARCH",
            "g",
            "FROMLONLAT",
            "300",
            "2",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec![
            "GEOSEARCHSTORE",
            "d",
            "g",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
            "WITHDIST",
        ],
        vec![
            "GEOSEARCH",
            "nokey",
            "FROMMEMBER",
            "x",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec![
            "GEOSEARCHSTORE",
            "dst",
            "nokey",
            "FROMMEMBER",
            "x",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec!["EXISTS", "dst"],
        vec![
            "GEORADIUS",
            "g",
            "15",
            "37",
            "200",
            "km",
            "STORE",
            "st",
            "WITHDIST",
        ],
        vec!["SET", "str", "x"],
        vec!["GEOPOS", "str", "a"],
        vec![
            "GEOSEARCH",
            "str",
            "FROMLONLAT",
            "1",
            "2",
            "BYRADIUS",
            "10",
            "km",
        ],
        vec!["GEOADD", "str", "1", "2", "a"],
    ] {
        same(&mut r, &mut a, &cmd);
    }
    // RESP3: coordinates are doubles, distances strings.
    let raw = |port: u16| -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"HELLO 3\r\n").expect("send");
        std::thread::sleep(std::time::Duration::from_millis(200));
        s.set_nonblocking(true).expect("nonblocking");
        let mut junk = [0u8; 4096];
        let _ = s.read(&mut junk);
        s.set_nonblocking(false).expect("blocking");
        s.write_all(
            b"GEOPOS g Palermo nosuch\r\nGEOHASH g nosuch\r\nGEOSEARCH g FROMMEMBER Palermo BYRADIUS 200 km ASC WITHDIST WITHCOORD WITHHASH\r\nGEODIST g a b\r\nPING\r\n",
        )
        .expect("send");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"+PONG\r\n") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed");
            out.extend_from_slice(&buf[..n]);
        }
        out
    };
    assert_eq!(
        String::from_utf8_lossy(&raw(target.port)),
        String::from_utf8_lossy(&raw(reference.port))
    );
    assert_eq!(
        same(&mut r, &mut a, &["OBJECT", "ENCODING", "g"]),
        Value::Bulk(b"skiplist".to_vec())
    );
}
