//! Upstream outages, as operators meet them: the inference server gone for longer than every
//! request's retry budget and back on the same address, one of two servers of a model gone for
//! good, an outage outlasting the completion window, a cancel during an outage, a server still
//! loading when the batch arrives — and, beside them, a request whose own failures still end
//! after its retries. The real binary, upstream-sim on real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// The socket address of a simulator.
fn addr_of(sim: &SimHandle) -> SocketAddr {
    sim.base_url().trim_start_matches("http://").trim_end_matches("/v1").parse().unwrap()
}

/// A simulator serving on `addr` again (the address a killed one had).
async fn sim_on(addr: SocketAddr, config: SimConfig) -> SimHandle {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return upstream_sim::serve(listener, config).await.unwrap(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

/// A slow simulator (80 requests a second), so a batch of a few hundred lines runs for seconds.
fn slow_config() -> SimConfig {
    SimConfig { max_num_seqs: 8, base_latency_ms: 100, ..SimConfig::default() }
}

/// One series of the server's own `/metrics`.
async fn metric(c: &Client, series: &str) -> Option<f64> {
    let page = c.http.get(c.url("/metrics")).send().await.unwrap().text().await.unwrap();
    sample(&page, series)
}

/// Polls `series` until it equals `value`; fails after `within`.
async fn metric_becomes(c: &Client, series: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = metric(c, series).await;
        if now == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} never became {value} (last {now:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_logs(app: &App, needle: &str) -> usize {
    app.proc.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Two retries with backoff capped at 300 ms: a request's own budget is under a second, and the
/// outages below last several times that.
const TIGHT_RETRIES: &[&str] = &["--max-retries", "2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_fails_no_line() {
    let sim = sim(slow_config()).await;
    let addr = addr_of(&sim);
    let app = serve(&sim, TIGHT_RETRIES);
    let c = &app.client;
    let up = "vllm_upstream_up{upstream=\"0\"}";
    assert_eq!(metric(c, up).await, Some(1.0), "exported from the first scrape");
    assert_eq!(metric(c, "vllm_upstream_down_seconds_total{upstream=\"0\"}").await, Some(0.0));

    let n = 600;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 60).await;
    sim.shutdown().await;
    let down_at = Instant::now();
    metric_becomes(c, up, 0.0, Duration::from_secs(30)).await;
    // The outage lasts many retry budgets.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(down_at.elapsed())).await;
    let during = c.batch(&id).await;
    assert_eq!(during["status"], "in_progress", "{during}");
    assert_eq!(during["request_counts"]["failed"], 0, "no line failed during the outage: {during}");
    let ready = c.get("/ready").await;
    assert_eq!(ready.status, 200, "the API stays ready: {}", ready.body);
    assert_eq!(ready.body["upstreams"][0]["status"], "down", "{}", ready.body);
    assert!(ready.body["upstreams"][0]["down_since"].is_u64(), "{}", ready.body);
    let verbose = c.get("/health?verbose=1").await;
    assert_eq!(verbose.body["upstreams"][0]["status"], "down", "{}", verbose.body);
    assert_eq!(verbose.body["upstreams"][0]["models"], json!([MODEL]), "the last list is kept: {}", verbose.body);
    // The web page's system panel names it.
    let panel = c.get("/api/metrics/vllm").await;
    assert_eq!(panel.body["upstreams_down"][0]["upstream"], 0, "{}", panel.body);
    assert_eq!(metric(c, &format!("vllm_model_loaded{{model=\"{MODEL}\"}}")).await, Some(1.0), "still loaded");

    let back = sim_on(addr, slow_config()).await;
    let back_at = Instant::now();
    metric_becomes(c, up, 1.0, Duration::from_secs(30)).await;
    let resumed = back_at.elapsed();
    let done = c.wait_terminal(&id, 3 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "0 failed: {:?}", err.first());
    assert!(back.stats().requests_received > 0, "the rest went to the restarted server");
    let outages = metric(c, "vllm_upstream_outages_total{upstream=\"0\"}").await.unwrap();
    assert!(outages >= 1.0);
    assert!(metric(c, "vllm_upstream_down_seconds_total{upstream=\"0\"}").await.unwrap() > 1.0);
    // One WARN line when it went down and one INFO line when it came back, not one per request.
    assert_eq!(count_logs(&app, "upstream is down;") as f64, outages, "{}", app.proc.logs().join("\n"));
    assert_eq!(count_logs(&app, "upstream is back up") as f64, outages);
    eprintln!(
        "outage of {:.1} s: 0 of {n} failed; dispatch resumed {:.2} s after the upstream was back",
        (back_at - down_at).as_secs_f64(),
        resumed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_served_twice_fails_over_when_one_server_dies() {
    let a = sim(slow_config()).await;
    let b = sim(slow_config()).await;
    let upstreams = format!("{},{}", a.base_url(), b.base_url());
    let app = serve(&a, &["--upstream", &upstreams, "--max-retries", "2"]);
    let c = &app.client;
    let n = 1200;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 60).await;
    a.shutdown().await;
    let b_before = b.stats().requests_received;
    let left = c.batch(&id).await;
    assert!(left["request_counts"]["completed"].as_i64().unwrap() < n as i64 / 2, "work was left: {left}");
    let done = c.wait_terminal(&id, 3 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "0 failed: {:?}", err.first());
    assert!(b.stats().requests_received > b_before, "the survivor took the rest");
    let logs = || app.proc.logs().into_iter().filter(|l| l.contains("upstream")).collect::<Vec<_>>().join("\n");
    // The dead server is reported down (its probes fail even once no request goes to it).
    metric_becomes(c, "vllm_upstream_up{upstream=\"0\"}", 0.0, Duration::from_secs(30)).await;
    assert_eq!(metric(c, "vllm_upstream_up{upstream=\"0\"}").await, Some(0.0), "{}", logs());
    assert_eq!(metric(c, "vllm_upstream_up{upstream=\"1\"}").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_completion_window_expires_the_batch_and_keeps_results() {
    let sim = sim(slow_config()).await;
    let app = serve(&sim, TIGHT_RETRIES);
    let c = &app.client;
    let n = 2000;
    let file = c.upload(&chat_lines(n)).await;
    let id = c.create_batch(&file, "/v1/chat/completions", "8s").await["id"].as_str().unwrap().to_string();
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 30).await;
    sim.shutdown().await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "expired", "{done}");
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert!(out.len() >= 30, "results completed before the outage are kept");
    assert_eq!(codes.keys().collect::<Vec<_>>(), vec!["batch_expired"], "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cancelled_during_an_outage_ends_cancelled() {
    let sim = sim(slow_config()).await;
    let app = serve(&sim, TIGHT_RETRIES);
    let c = &app.client;
    let n = 800;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 30).await;
    sim.shutdown().await;
    metric_becomes(c, "vllm_upstream_up{upstream=\"0\"}", 0.0, Duration::from_secs(30)).await;
    let cancel = c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    let done = c.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert_eq!(codes.keys().collect::<Vec<_>>(), vec!["batch_cancelled"], "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_still_loading_makes_batches_wait_not_fail() {
    // Reserve a port, free it: nothing listens there until the "server finishes loading".
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("http://{addr}/v1");
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    args.extend_from_slice(TIGHT_RETRIES);
    let proc = Proc::start("serve", dir.path(), &args);
    let c = proc.client();
    let n = 200;
    let id = c.submit(&chat_lines(n)).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let waiting = c.batch(&id).await;
    assert_eq!(waiting["status"], "validating", "the batch waits for model discovery: {waiting}");
    let ready = c.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let sim = sim_on(addr, SimConfig::default()).await;
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "0 failed");
    assert!(sim.stats().requests_received >= n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_always_fails_still_ends_after_its_retries() {
    let sim = default_sim().await;
    let app = serve(&sim, TIGHT_RETRIES);
    let c = &app.client;
    let n = 50;
    let lines = chat_lines_with(n, |i| if i == 7 { format!(" {}", upstream_sim::MARKER_500) } else { String::new() });
    let id = c.submit(&lines).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert_eq!((out.len(), err.len()), (n - 1, 1), "{err:?}");
    assert_eq!(err[0]["error"]["code"], "upstream_error", "{}", err[0]);
    assert!(err[0]["error"]["message"].as_str().unwrap().contains("gave up after 3 attempts"), "{}", err[0]);
    assert_eq!(metric(c, "vllm_upstream_up{upstream=\"0\"}").await, Some(1.0), "a 500 is the request's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_single_slot_server_is_neither_misrouted_nor_unready() {
    // A single-threaded chat server: one request at a time, 1.5 s each, and its model list only
    // between them — with the worker's requests queued, discovery waits longer than its 10 s.
    let chat = sim(SimConfig {
        models: vec!["chat-model".into()],
        max_num_seqs: 1,
        base_latency_ms: 1500,
        models_wait_for_slot: true,
        ..SimConfig::default()
    })
    .await;
    // An embeddings server listed first: the upstream a misrouted chunk used to land on.
    let embed = sim(SimConfig { models: vec!["embed-model".into()], ..SimConfig::default() }).await;
    let upstreams = format!("{},{}", embed.base_url(), chat.base_url());
    let app = serve(&chat, &["--upstream", &upstreams, "--request-timeout", "120s"]);
    let c = &app.client;
    let first = c.submit(&chat_lines_for("chat-model", 16, |_| String::new())).await;
    c.wait_until(&first, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 1).await;
    // A second batch while the first keeps the server busy: validation must not fail it.
    let second = c.submit(&chat_lines_for("chat-model", 2, |_| String::new())).await;
    let loaded = "vllm_model_loaded{model=\"chat-model\"}";
    let mut polls = 0;
    loop {
        let ready = c.get("/ready").await;
        assert_eq!(ready.status, 200, "/ready while the server is busy with our work: {}", ready.body);
        assert_eq!(metric(c, loaded).await, Some(1.0), "the model stays loaded");
        polls += 1;
        let b = c.batch(&second).await;
        if matches!(b["status"].as_str(), Some("completed" | "failed" | "expired" | "cancelled")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in [&first, &second] {
        let done = c.wait_terminal(id, 2 * MINUTE).await;
        assert_eq!(done["status"], "completed", "{done}");
        let (out, err) = c.results(&done).await;
        assert!(err.is_empty(), "no line failed: {:?}", err.first());
        assert_eq!(out.len() as i64, done["request_counts"]["total"].as_i64().unwrap());
    }
    assert_eq!(embed.stats().requests_received, 0, "no chat request reached the embeddings server");
    assert!(polls > 3, "the busy period was observed ({polls} polls)");
    let logs = app.proc.logs().join("\n");
    assert!(logs.contains("did not answer within"), "discovery timed out, and says so:\n{logs}");
}
