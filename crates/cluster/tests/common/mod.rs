//! Helpers shared by this crate's integration tests: deterministic random vectors, and a
//! fresh migrated database on this test process's PostgreSQL.
#![allow(dead_code)]

use std::sync::LazyLock;

use visage_cluster::pg::Pool;
use visage_cluster::testkit::Postgres;

/// One PostgreSQL server per test process, started on first use (`None`: not installed).
pub static PG: LazyLock<Option<Postgres>> =
    LazyLock::new(|| Postgres::start().expect("starting the PostgreSQL test server"));

/// A fresh migrated database named `name`, or `None` (skip, with a message) when PostgreSQL
/// is not installed.
pub fn fresh_pool(name: &str) -> Option<Pool> {
    let Some(pg) = PG.as_ref() else {
        eprintln!("skipped {name}: PostgreSQL is not installed");
        return None;
    };
    let url = pg
        .create_database(name)
        .expect("creating the test database");
    let pool = Pool::new(&url).expect("connecting");
    pool.migrate().expect("migrating");
    Some(pool)
}

/// splitmix64: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f64 {
        let (u, v) = (self.open01(), self.open01());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// A random unit vector (uniform components, normalised).
    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        normalised((0..dim).map(|_| self.unit()).collect())
    }
}

pub fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
