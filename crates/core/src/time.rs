//! Wall-clock helpers: OpenAI stamps every object with unix seconds.
//!
//! These read the process's own clock, which stamps what users see (`created_at`, …). No lease
//! or deadline is decided on it: the store decides those on the database's clock, so a process
//! whose clock is off cannot steal or keep a lease (docs/ARCHITECTURE.md, "Which clock decides
//! what"). Tests prove that by shifting this clock: `VLLM_BATCH_CLOCK_OFFSET_MS` (read once, at
//! first use) or `set_offset_ms` moves every reading by that many milliseconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static FROM_ENV: Once = Once::new();

fn offset_ms() -> i64 {
    FROM_ENV.call_once(|| {
        if let Some(ms) = std::env::var("VLLM_BATCH_CLOCK_OFFSET_MS").ok().and_then(|v| v.trim().parse().ok()) {
            OFFSET_MS.store(ms, Ordering::Relaxed);
        }
    });
    OFFSET_MS.load(Ordering::Relaxed)
}

/// Shifts this process's wall clock by `ms` (a test hook, like `VLLM_BATCH_CLOCK_OFFSET_MS`).
pub fn set_offset_ms(ms: i64) {
    offset_ms();
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Milliseconds since the unix epoch, for leases that need finer grain than seconds.
pub fn unix_now_ms() -> i64 {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    real + offset_ms()
}

/// Seconds since the unix epoch, as OpenAI's `*_at` fields carry them.
pub fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}
