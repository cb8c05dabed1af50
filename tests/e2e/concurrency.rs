//! Adaptive concurrency against the simulated vLLM: the worker reads the upstream's own
//! running/waiting gauges and moves its in-flight limit so the upstream's queue stays short
//! but non-empty — from the `--min-in-flight` it starts at (slow start: the upstream's capacity
//! is unknown) up past 256 when the upstream has room for 1024, down when it has room for 32.
//! `vllm_upstream_concurrency_limit` shows where it went.

use std::time::{Duration, Instant};

use crate::support::*;

async fn limit_of(app: &App) -> f64 {
    let page = app.client.get("/metrics").await;
    sample(page.body.as_str().unwrap(), "vllm_upstream_concurrency_limit{upstream=\"0\"}").expect("limit exported")
}

/// Runs `n` requests through `serve` against a sim of `capacity` slots; returns the highest limit
/// seen while the batch ran, the median of the limits seen over its second half (where it
/// settled: one sample can catch a one-interval probe upward), and the largest running/waiting
/// the sim reported.
async fn run(capacity: usize, n: usize, extra: &[&str]) -> (f64, f64, u64, u64) {
    let sim = sim(SimConfig { max_num_seqs: capacity, base_latency_ms: 200, ..SimConfig::default() }).await;
    let mut args = vec!["--concurrency-interval", "100ms"];
    args.extend_from_slice(extra);
    let app = serve(&sim, &args);
    // Fixed: --max-in-flight. Adaptive against a vLLM: recognised by its metrics at once, it
    // starts from --max-in-flight too (its own queue guards it; no slow start).
    let deadline = Instant::now() + Duration::from_secs(10);
    while limit_of(&app).await != 256.0 {
        assert!(Instant::now() < deadline, "the limit never reached --max-in-flight: {}", limit_of(&app).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = app.client.submit(&chat_lines(n)).await;
    let (mut high, mut running, mut waiting) = (0.0f64, 0, 0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let b = app.client.batch(&id).await;
        if b["status"] == "completed" {
            let (out, err) = app.client.results(&b).await;
            check_exactly_once(&b, &out, &err, n);
            break;
        }
        assert!(Instant::now() < deadline, "batch did not finish: {b}");
        let l = limit_of(&app).await;
        high = high.max(l);
        seen.push(l);
        let st = sim.stats();
        running = running.max(st.running);
        waiting = waiting.max(st.waiting);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut settled = seen.split_off(seen.len() / 2);
    settled.sort_by(f64::total_cmp);
    let median = settled.get(settled.len() / 2).copied().unwrap_or(0.0);
    (high, median, running, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_grows_past_the_start_when_the_upstream_has_room() {
    let (high, _, running, _) = run(1024, 12_000, &[]).await;
    eprintln!("capacity 1024: limit rose to {high}, the sim ran up to {running} at once");
    assert!(high > 512.0, "the limit should grow well past 256 toward 1024; highest {high}");
    assert!(running > 256, "more than the starting limit ran at once: {running}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_shrinks_to_a_short_queue_when_the_upstream_is_small() {
    let (_, last, running, _) = run(32, 2_000, &[]).await;
    eprintln!("capacity 32: limit settled at {last}; the sim ran up to {running}");
    assert!(last <= 64.0, "the limit should come down toward 32 + a short queue; settled at {last}");
    assert_eq!(running, 32, "the upstream stayed full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_concurrency_never_moves() {
    let (high, last, running, _) = run(1024, 3_000, &["--concurrency", "fixed"]).await;
    assert_eq!((high, last), (256.0, 256.0));
    assert!(running <= 256, "{running}");
}

/// An upstream without vLLM's metrics (another OpenAI-compatible server): the limit starts at
/// --min-in-flight instead of sending --max-in-flight requests at once, doubles while latency
/// holds (slow start), and its missing `/metrics` is asked a few times, not every interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_vllm_metrics_gets_a_slow_start() {
    let sim =
        sim(SimConfig { max_num_seqs: 512, base_latency_ms: 100, serve_metrics: false, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--concurrency-interval", "100ms"]);
    assert_eq!(limit_of(&app).await, 8.0, "the limit starts at --min-in-flight");
    let n = 3_000;
    let id = app.client.submit(&chat_lines(n)).await;
    // The first requests: no more than the starting limit at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().requests_received == 0 {
        assert!(Instant::now() < deadline, "no request arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first = sim.stats();
    assert!(first.running + first.waiting <= 16, "slow start, not a burst: {} at once", first.running + first.waiting);
    let mut high = 0.0f64;
    loop {
        let b = app.client.batch(&id).await;
        high = high.max(limit_of(&app).await);
        if b["status"] == "completed" {
            let (out, err) = app.client.results(&b).await;
            check_exactly_once(&b, &out, &err, n);
            break;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(120), "batch did not finish: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(high >= 128.0, "slow start ramps while latency holds; highest {high}");
    let asked = sim.stats().metrics_requests;
    assert!(asked <= 5, "a missing /metrics is asked a few times, then every 5 minutes: {asked}");
}
