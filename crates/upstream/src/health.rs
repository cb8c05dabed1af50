//! Per-upstream health: `up`, `down` or `probing`, decided from the answers to our own requests.
//!
//! The rule: an upstream goes **down** after [`DOWN_AFTER`] outage failures in a row with no
//! answer between them — an outage failure being evidence against the server rather than one
//! request: a refused, reset or timed-out *connection*, or a 502/503/504 (what a proxy or load
//! balancer answers for a dead backend). Any answer from the server (a success, a 4xx, a 500)
//! to a request sent after the latest outage failure resets the count: the server is there (a
//! dying server may still answer what was already on its connections). After the first failure
//! the upstream is *suspect* and the worker probes it, so it is found down even when routing
//! sends every later request elsewhere. While an upstream is down nothing is sent to it; the
//! worker probes it (`GET …/models`) with backoff, and the first answer brings it back up.
//!
//! One `Health` is shared by everything in a process that holds the same `Upstreams` (in
//! `serve`, the API and the embedded worker), so `/ready` and `/health?verbose=1` report what
//! the worker's own traffic shows instead of queueing probes behind it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Outage failures in a row, with no answer between, that make an upstream down.
pub const DOWN_AFTER: u32 = 3;

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Requests go to it.
    Up,
    /// Nothing is sent; waiting for the next probe.
    Down,
    /// Down, with a probe on the wire.
    Probing,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Probing => "probing",
        }
    }
}

/// What health answers show of one upstream.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub state: HealthState,
    /// Unix time (s) the upstream went down; `None` while up.
    pub down_since: Option<u64>,
    /// The failure that took it down, or the last probe's.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Entry {
    state: HealthState,
    failures: u32,
    down_since: Option<(Instant, u64)>,
    last_error: Option<String>,
    last_answer: Option<Instant>,
    /// The latest failure of any kind (outage evidence, or a model list that did not come).
    last_failure: Option<Instant>,
    /// The latest outage failure: an answer to a request sent before it says nothing of now.
    last_outage: Option<Instant>,
}

/// The health of every configured upstream (by index).
#[derive(Debug)]
pub struct Health {
    entries: Vec<Mutex<Entry>>,
    /// Bumped on every change of state, so waiters can sleep until one.
    changed: watch::Sender<u64>,
    /// The redacted URLs, for log lines.
    shown: Vec<String>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Health {
    pub fn new(shown: Vec<String>) -> Self {
        let entries = shown
            .iter()
            .map(|_| {
                Mutex::new(Entry {
                    state: HealthState::Up,
                    failures: 0,
                    down_since: None,
                    last_error: None,
                    last_answer: None,
                    last_failure: None,
                    last_outage: None,
                })
            })
            .collect();
        Health { entries, changed: watch::channel(0).0, shown }
    }

    pub fn state(&self, i: usize) -> HealthState {
        self.entries[i].lock().unwrap().state
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.state(i) == HealthState::Up
    }

    /// Up, but its last request met an outage failure with no answer since: the worker probes
    /// it, so a dead server that traffic now avoids (its requests went elsewhere) is still found
    /// down instead of showing up forever.
    pub fn is_suspect(&self, i: usize) -> bool {
        let e = self.entries[i].lock().unwrap();
        e.state == HealthState::Up && e.failures > 0
    }

    /// A receiver that sees every later change of any upstream's state (and of the routes:
    /// see [`Health::notify`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes every waiter (a state change, or new routes).
    pub fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// The server answered (whatever the status) a request sent at `sent`: it is there — unless
    /// an outage failure came after `sent`. A dying server may still answer what was already on
    /// its connections while it refuses new ones; such an answer must not clear the failures
    /// (nor bring a down server back: the probe does that with a fresh request).
    pub fn record_answer(&self, i: usize, sent: Instant) {
        let back = {
            let mut e = self.entries[i].lock().unwrap();
            if e.last_outage.is_some_and(|at| sent < at) {
                return;
            }
            e.failures = 0;
            e.last_answer = Some(Instant::now());
            if e.state == HealthState::Up {
                None
            } else {
                e.state = HealthState::Up;
                e.last_error = None;
                e.down_since.take()
            }
        };
        if let Some((since, _)) = back {
            let down = since.elapsed();
            tracing::info!(
                upstream = i,
                url = %self.shown[i],
                down_seconds = down.as_secs_f64(),
                "upstream is back up; dispatch resumes"
            );
            vllm_batch_metrics::metrics().upstream_up.with_label_values(&[&i.to_string()]).set(1);
            self.notify();
        }
    }

    /// An outage failure (connection refused, reset or timed out; 502/503/504). Returns whether
    /// the upstream is now down (it was already, or this failure was the last straw).
    pub fn record_outage(&self, i: usize, error: &str) -> bool {
        let went_down = {
            let mut e = self.entries[i].lock().unwrap();
            e.last_failure = Some(Instant::now());
            e.last_outage = e.last_failure;
            if e.state != HealthState::Up {
                return true;
            }
            e.failures += 1;
            if e.failures < DOWN_AFTER {
                let first = e.failures == 1;
                drop(e);
                if first {
                    // Wakes the probe loop: the upstream is suspect.
                    self.notify();
                }
                return false;
            }
            e.state = HealthState::Down;
            e.down_since = Some((Instant::now(), unix_now()));
            e.last_error = Some(error.to_string());
            true
        };
        if went_down {
            tracing::warn!(
                upstream = i,
                url = %self.shown[i],
                error,
                "upstream is down; nothing is sent to it until a probe gets an answer (requests wait, their retries unspent)"
            );
            let m = vllm_batch_metrics::metrics();
            m.upstream_up.with_label_values(&[&i.to_string()]).set(0);
            m.upstream_outages.with_label_values(&[&i.to_string()]).inc();
            self.notify();
        }
        true
    }

    /// A failure that says nothing of an outage on its own (a model list that timed out or did
    /// not come): it only makes the last answer stale evidence (see [`Health::answered_since`]).
    pub fn note_failure(&self, i: usize) {
        self.entries[i].lock().unwrap().last_failure = Some(Instant::now());
    }

    /// Whether the upstream answered within `recent` with no failure since: then an answer to
    /// our own traffic vouches for it and a probe (which may queue behind that traffic) is not
    /// needed.
    pub fn answered_since(&self, i: usize, recent: Duration) -> bool {
        let e = self.entries[i].lock().unwrap();
        match e.last_answer {
            Some(at) => at.elapsed() < recent && e.last_failure.is_none_or(|f| f < at),
            None => false,
        }
    }

    /// A probe is about to go out.
    pub fn probing(&self, i: usize) {
        let mut e = self.entries[i].lock().unwrap();
        if e.state == HealthState::Down {
            e.state = HealthState::Probing;
        }
    }

    /// The probe got no answer.
    pub fn probe_failed(&self, i: usize, error: &str) {
        let mut e = self.entries[i].lock().unwrap();
        if e.state == HealthState::Probing {
            e.state = HealthState::Down;
        }
        e.last_error = Some(error.to_string());
    }

    pub fn report(&self, i: usize) -> HealthReport {
        let e = self.entries[i].lock().unwrap();
        HealthReport {
            state: e.state,
            down_since: e.down_since.map(|(_, unix)| unix),
            last_error: e.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_consecutive_outages_with_no_answer_between() {
        let h = Health::new(vec!["a".into(), "b".into()]);
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        let sent_before = Instant::now();
        assert!(!h.record_outage(0, "refused"));
        assert!(h.is_suspect(0) && rx.has_changed().unwrap(), "the first failure wakes the prober");
        assert!(!h.record_outage(0, "refused"));
        h.record_answer(0, sent_before);
        assert!(h.is_suspect(0), "an answer to a request sent before the failures clears nothing");
        h.record_answer(0, Instant::now()); // a fresh answer resets the count
        assert!(!h.is_suspect(0));
        assert!(!h.record_outage(0, "refused"));
        assert!(!h.record_outage(0, "refused"));
        assert!(h.record_outage(0, "refused"));
        assert_eq!(h.state(0), HealthState::Down);
        assert!(!h.is_suspect(0), "down, not suspect");
        assert!(h.report(0).down_since.is_some());
        assert!(h.is_up(1), "upstreams are judged one by one");
        // Probing, a failed probe, then an answer.
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        h.probing(0);
        assert_eq!(h.state(0), HealthState::Probing);
        h.probe_failed(0, "still refused");
        assert_eq!(h.state(0), HealthState::Down);
        assert_eq!(h.report(0).last_error.as_deref(), Some("still refused"));
        assert!(h.record_outage(0, "refused"), "already down");
        h.record_answer(0, sent_before);
        assert!(!h.is_up(0), "an old request's answer does not bring it back");
        h.record_answer(0, Instant::now());
        assert!(h.is_up(0));
        assert!(rx.has_changed().unwrap(), "waiters are woken when it comes back");
        assert!(h.report(0).down_since.is_none());
        // An answer vouches for it until a failure comes after it.
        assert!(h.answered_since(0, Duration::from_secs(30)));
        h.note_failure(0);
        assert!(!h.answered_since(0, Duration::from_secs(30)));
        assert!(!h.answered_since(1, Duration::from_secs(30)), "never answered");
    }
}
