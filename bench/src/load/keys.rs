//! Which key a request touches: uniform, or zipfian as YCSB draws it.

use rand::rngs::SmallRng;
use rand::RngExt;

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// A few keys take most requests (YCSB's scrambled zipfian: the hot
    /// ranks are hashed over the key space, so they are not neighbours).
    Zipfian,
}

/// Draws key numbers in `0..n`.
#[derive(Clone, Debug)]
pub struct Keys {
    n: u64,
    zipf: Option<Zipf>,
}

/// Gray et al.'s "Quickly generating billion-record synthetic databases"
/// method, as YCSB's `ZipfianGenerator` uses it: constant time per draw
/// after one pass computing zeta(n).
#[derive(Clone, Debug)]
struct Zipf {
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Keys {
    /// `n` keys (at least 1); `theta` in (0, 1) for zipfian (YCSB: 0.99).
    pub fn new(n: u64, dist: Distribution, theta: f64) -> Keys {
        let n = n.max(1);
        let zipf = (dist == Distribution::Zipfian && n > 1).then(|| {
            let theta = theta.clamp(0.01, 0.9999);
            let zetan = zeta(n, theta);
            let zeta2 = zeta(2, theta);
            Zipf {
                theta,
                alpha: 1.0 / (1.0 - theta),
                zetan,
                eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
            }
        });
        Keys { n, zipf }
    }

    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.n),
            Some(z) => {
                let u: f64 = rng.random();
                let uz = u * z.zetan;
                let rank = if uz < 1.0 {
                    0
                } else if uz < 1.0 + 0.5f64.powf(z.theta) {
                    1
                } else {
                    ((self.n as f64) * (z.eta * u - z.eta + 1.0).powf(z.alpha)) as u64
                };
                // Scrambled: rank r is key fnv(r) mod n.
                fnv64(rank.min(self.n - 1)) % self.n
            }
        }
    }
}

fn fnv64(x: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Uniform spreads draws evenly; zipfian puts a large share on a few
    /// keys (with theta 0.99 over 1,000 keys the hottest takes ~13%).
    #[test]
    fn zipfian_is_skewed_and_uniform_is_not() {
        let mut rng = SmallRng::seed_from_u64(7);
        let count = |k: &Keys, rng: &mut SmallRng| {
            let mut c = vec![0u32; 1000];
            for _ in 0..100_000 {
                let i = k.next(rng);
                assert!(i < 1000);
                c[i as usize] += 1;
            }
            c.sort_unstable_by(|a, b| b.cmp(a));
            c
        };
        let u = count(&Keys::new(1000, Distribution::Uniform, 0.99), &mut rng);
        assert!(u[0] < 200, "uniform's hottest key took {}", u[0]);
        let z = count(&Keys::new(1000, Distribution::Zipfian, 0.99), &mut rng);
        assert!(
            (10_000..16_000).contains(&z[0]),
            "zipfian's hottest key took {}",
            z[0]
        );
        let top10: u32 = z[..10].iter().sum();
        assert!(top10 > 30_000, "zipfian's 10 hottest took {top10}");
    }
}
