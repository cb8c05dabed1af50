//! Tokens per second over a sliding window, for `vllm_throughput_tokens_per_second`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One-second buckets of generated tokens over the last `WINDOW`.
pub struct Throughput {
    buckets: Mutex<VecDeque<(Instant, u64)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Default for Throughput {
    fn default() -> Self {
        Throughput { buckets: Mutex::new(VecDeque::new()) }
    }
}

impl Throughput {
    /// Adds tokens generated now and updates the gauge.
    pub fn record(&self, tokens: u64) {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap();
        match b.back_mut() {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(1) => *n += tokens,
            _ => b.push_back((now, tokens)),
        }
        self.publish(&mut b, now);
    }

    /// Recomputes the rate (call periodically so it decays to zero when work stops).
    pub fn tick(&self) {
        let mut b = self.buckets.lock().unwrap();
        self.publish(&mut b, Instant::now());
    }

    fn publish(&self, b: &mut VecDeque<(Instant, u64)>, now: Instant) {
        while b.front().is_some_and(|(start, _)| now.duration_since(*start) > WINDOW) {
            b.pop_front();
        }
        let total: u64 = b.iter().map(|(_, n)| n).sum();
        let span = b.front().map(|(start, _)| now.duration_since(*start).max(Duration::from_secs(1))).unwrap_or(WINDOW);
        crate::metrics().throughput.set(total as f64 / span.as_secs_f64());
    }
}

/// The process-wide throughput window.
pub fn throughput() -> &'static Throughput {
    static T: std::sync::OnceLock<Throughput> = std::sync::OnceLock::new();
    T.get_or_init(Throughput::default)
}
