//! Wall-clock helpers: OpenAI stamps every object with unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch, as OpenAI's `*_at` fields carry them.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Milliseconds since the unix epoch, for leases that need finer grain than seconds.
pub fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
