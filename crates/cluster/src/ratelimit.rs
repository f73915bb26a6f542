//! Rate limits shared by every API process of a cluster (migration 9): a token bucket per
//! scope (`login`, `public`) and client address in PostgreSQL, so N API processes behind a
//! load balancer allow the configured rate in all, not N times it.
//!
//! One statement takes a token: the bucket refills at `per_minute / 60` tokens a second up to
//! `per_minute`, and a take is allowed while a token is left. A refused take still costs one,
//! down to `-per_minute` at most: a client that keeps trying waits up to two minutes.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

use crate::pg::Pool;

/// Takes between two sweeps of idle buckets (per process).
const SWEEP_EVERY: u64 = 1000;
static TAKES: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes one token from `client`'s bucket in `scope` (`per_minute` a minute, bursting to the
/// same): whether the request may go on.
pub fn take(pool: &Pool, scope: &str, client: &str, per_minute: u32) -> Result<bool> {
    let rate = f64::from(per_minute.max(1));
    let now = now_ms();
    let mut c = pool.get()?;
    if TAKES.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
        // Buckets idle for two minutes are full again: forget them.
        c.execute(
            "DELETE FROM rate_bucket WHERE updated_ms < $1",
            &[&(now - 120_000)],
        )?;
    }
    let left: f64 = c
        .query_one(
            "INSERT INTO rate_bucket AS b (scope, client, tokens, updated_ms) \
             VALUES ($1::TEXT, $2::TEXT, $3::FLOAT8 - 1, $4::BIGINT) \
             ON CONFLICT (scope, client) DO UPDATE SET \
               tokens = GREATEST(-$3::FLOAT8, LEAST($3::FLOAT8, b.tokens + \
                 GREATEST(0, $4::BIGINT - b.updated_ms)::FLOAT8 * $3::FLOAT8 / 60000.0) - 1), \
               updated_ms = GREATEST(b.updated_ms, $4::BIGINT) \
             RETURNING tokens",
            &[&scope, &client, &rate, &now],
        )?
        .get(0);
    Ok(left >= 0.0)
}
