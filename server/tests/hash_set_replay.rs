//! Propagation-log replay for hashes and sets: a random workload of every
//! hash and set write (HSET/HMSET/HSETNX/HDEL/HINCRBY/HINCRBYFLOAT, SADD/
//! SREM/SPOP with and without a count/SMOVE, SINTERSTORE/SUNIONSTORE/
//! SDIFFSTORE), mixed with strings (wrong types), DEL and PEXPIRE, runs on
//! an in-process tenant with small encoding thresholds (so listpack →
//! hashtable and intset → hashtable conversions happen); its captured
//! propagation log is then replayed on a fresh tenant, which must hold the
//! same keyspace (digest: keys, values, TTLs) and the same OBJECT ENCODING
//! for every key — except sets that an SPOP with a count rebuilt (Redis
//! re-derives the encoding of the survivors, and replicates SREMs, so a
//! Redis replica can differ there too).

mod common;

use common::run_and_replay;
use std::collections::BTreeSet;

use anykv_server::config::Config;
use anykv_server::shared::{Settings, Shared};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env() -> (Shared, Settings) {
    let mut c = Config::default();
    c.set(&[
        (b"hash-max-listpack-entries", b"6"),
        (b"hash-max-listpack-value", b"12"),
        (b"set-max-intset-entries", b"8"),
    ])
    .expect("config");
    let shared = Shared::new(c, 1);
    let set = shared.settings();
    (shared, set)
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick(&mut self, from: &[&str]) -> Vec<u8> {
        b(from[self.rng.random_range(0..from.len())])
    }

    fn hkey(&mut self) -> Vec<u8> {
        self.pick(&["h1", "h2", "h3", "str"])
    }

    fn skey(&mut self) -> Vec<u8> {
        self.pick(&["s1", "s2", "s3", "s4", "str"])
    }

    fn field(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=6 => self.pick(&["a", "b", "c", "d", "e", "f", "g", "1", "-2", "007"]),
            7 => b("a-rather-long-field-name"),
            _ => self.rng.random_range(-50i64..50).to_string().into_bytes(),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=3 => self.rng.random_range(-100i64..100).to_string().into_bytes(),
            4 => b("a value longer than twelve"),
            5 => format!("{}.5", self.rng.random_range(-9..9)).into_bytes(),
            _ => self.pick(&["x", "", "0", "1e3", "abc", "9223372036854775807"]),
        }
    }

    fn member(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=6 => self.rng.random_range(-15i64..15).to_string().into_bytes(),
            _ => self.pick(&["a", "b", "007", "-0", ""]),
        }
    }

    fn cmd(&mut self, rebuilt: &mut BTreeSet<Vec<u8>>) -> Vec<Vec<u8>> {
        match self.rng.random_range(0..100) {
            0..=17 => {
                let mut a = vec![self.pick(&["HSET", "HSET", "HMSET"]), self.hkey()];
                for _ in 0..self.rng.random_range(1..5) {
                    a.push(self.field());
                    a.push(self.value());
                }
                a
            }
            18..=21 => vec![b("HSETNX"), self.hkey(), self.field(), self.value()],
            22..=28 => {
                let mut a = vec![b("HDEL"), self.hkey()];
                for _ in 0..self.rng.random_range(1..4) {
                    a.push(self.field());
                }
                a
            }
            29..=32 => vec![
                b("HINCRBY"),
                self.hkey(),
                self.field(),
                self.rng.random_range(-20i64..20).to_string().into_bytes(),
            ],
            33..=36 => vec![
                b("HINCRBYFLOAT"),
                self.hkey(),
                self.field(),
                self.pick(&["0.1", "-1.5", "3", "1e2", "abc"]),
            ],
            37..=52 => {
                let mut a = vec![b("SADD"), self.skey()];
                for _ in 0..self.rng.random_range(1..6) {
                    a.push(self.member());
                }
                a
            }
            53..=59 => {
                let mut a = vec![b("SREM"), self.skey()];
                for _ in 0..self.rng.random_range(1..4) {
                    a.push(self.member());
                }
                a
            }
            60..=66 => {
                let key = self.skey();
                let mut a = vec![b("SPOP"), key.clone()];
                if self.rng.random_range(0..2) == 0 {
                    a.push(self.rng.random_range(0i64..12).to_string().into_bytes());
                    rebuilt.insert(key);
                }
                a
            }
            67..=71 => vec![b("SMOVE"), self.skey(), self.skey(), self.member()],
            72..=81 => {
                let name = self.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]);
                let mut a = vec![name, self.skey(), self.skey()];
                for _ in 0..self.rng.random_range(0..3) {
                    a.push(self.skey());
                }
                a
            }
            82..=85 => vec![b("SET"), b("str"), b("v")],
            86..=90 => vec![b("DEL"), self.pick(&["h1", "h2", "s1", "s2", "str"])],
            _ => vec![
                b("PEXPIRE"),
                self.pick(&["h1", "h2", "h3", "s1", "s2", "s3", "s4"]),
                self.rng
                    .random_range(1_000_000i64..9_000_000)
                    .to_string()
                    .into_bytes(),
            ],
        }
    }
}

/// Runs one seed; returns the encodings present at the end.
fn check_seed(seed: u64, ops: usize) -> BTreeSet<&'static str> {
    let (shared, set) = env();
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut rebuilt = BTreeSet::new();
    let run = run_and_replay(seed, &shared, &set, ops, || {
        let step = g.rng.random_range(0..3);
        (step, g.cmd(&mut rebuilt))
    });
    run.check_encodings(seed, |k| rebuilt.contains(k));
    let names = run.check_digest(seed, ops);
    for want in [
        "HSET", "HMSET", "HSETNX", "HDEL", "HINCRBY", "SADD", "SREM", "SMOVE", "DEL",
    ] {
        assert!(names.contains(want), "seed {seed}: no {want} in the log");
    }
    assert!(
        !names.contains("HINCRBYFLOAT") && !names.contains("SPOP"),
        "seed {seed}: non-deterministic commands must be logged as their effects"
    );
    run.eo.iter().map(|e| e.2).collect()
}

#[test]
fn hash_and_set_effects_replay_to_the_same_keyspace() {
    let mut encs = BTreeSet::new();
    for seed in 0..12 {
        encs.extend(check_seed(seed, 3000));
    }
    for want in ["listpack", "hashtable", "intset"] {
        assert!(encs.contains(want), "no {want} key at the end of any seed");
    }
}
