//! The worker through the real server: a 10,000-request batch, injected faults, final 4xx,
//! cancel and expiry mid-batch, graceful SIGTERM. Every run ends with each `custom_id` exactly
//! once across the output and error files.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_exactly_once() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let id = c.submit(&chat_lines(10_000)).await;
    let done = c.wait_terminal(&id, 5 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, 10_000);
    assert_eq!(out.len(), 10_000);
    assert!(done["error_file_id"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_final_4xx_recorded() {
    let faults = FaultRates { error_500: 0.10, error_429: 0.05, reset: 0.02, hang: 0.01, error_400: 0.0 };
    let sim = sim(SimConfig { faults, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "100"]);
    let c = &app.client;
    let n = 1500;
    // Every 50th request carries a context-length error the sim answers with a final 400.
    let content = chat_lines_with(n, |i| if i % 50 == 7 { " __sim_400__".into() } else { String::new() });
    let id = c.submit(&content).await;
    let done = c.wait_terminal(&id, 5 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert_eq!(codes.get("invalid_request"), Some(&(n / 50)), "only the 400s fail: {codes:?}");
    assert_eq!(codes.len(), 1, "{codes:?}");
    for line in &err {
        let i: usize = line["custom_id"].as_str().unwrap()["req-".len()..].parse().unwrap();
        assert_eq!(i % 50, 7, "{line}");
        assert_eq!(line["response"]["status_code"], 400);
        assert!(line["response"]["body"]["error"]["message"].as_str().unwrap().contains("maximum context length"));
        assert!(line["error"]["message"].as_str().unwrap().contains("maximum context length"));
    }
    let stats = sim.stats();
    assert!(stats.faults_injected > 100, "faults were injected: {stats:?}");
    assert!(stats.requests_received as usize > n + 100, "transient failures were retried: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_into_the_error_file() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-retries", "2"]);
    let c = &app.client;
    let content = chat_lines_with(20, |i| if i < 3 { " __sim_500__".into() } else { String::new() });
    let id = c.submit(&content).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed");
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, 20);
    assert_eq!(codes.get("upstream_error"), Some(&3));
    for line in &err {
        assert_eq!(line["response"]["status_code"], 500, "the last answer is kept: {line}");
        assert!(line["error"]["message"].as_str().unwrap().contains("3 attempts"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_batch_keeps_results_and_cancels_the_rest() {
    let sim = sim(SimConfig { max_num_seqs: 4, base_latency_ms: 40, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "100", "--max-in-flight", "8"]);
    let c = &app.client;
    let n = 2000;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 100).await;
    let cancel = c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    assert!(cancel.body["status"] == "cancelling" || cancel.body["status"] == "cancelled", "{}", cancel.body);
    assert!(cancel.body["cancelling_at"].is_i64());
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(done["cancelled_at"].is_i64());
    assert!(done["completed_at"].is_null());
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert!(out.len() >= 100, "completed results are kept: {}", out.len());
    assert!(codes["batch_cancelled"] > n / 2, "{codes:?}");
    assert_eq!(codes.len(), 1, "{codes:?}");
    // Cancelling again is idempotent: the same cancelled batch comes back.
    let again = c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_validating_cancels_at_once() {
    // Requests that take 20 s: when the worker, woken by the creation, validates before the
    // cancel arrives (CI saw it validate and finish 5 instant requests first), the batch is still
    // running, so the cancel is always accepted.
    let sim = sim(SimConfig { base_latency_ms: 20_000, ..SimConfig::default() }).await;
    // A long poll interval keeps the batch in `validating` while the cancel arrives.
    let app = serve(&sim, &["--poll-interval", "30s"]);
    let c = &app.client;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let file = c.upload(&chat_lines(5)).await;
    let b = c.create_batch(&file, "/v1/chat/completions", "24h").await;
    let id = b["id"].as_str().unwrap();
    let cancel = c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    if cancel.body["status"] == "cancelled" {
        assert!(cancel.body["cancelled_at"].is_i64() && cancel.body["cancelling_at"].is_i64());
        assert_eq!(cancel.body["request_counts"]["total"], 0);
    } else {
        // The worker was woken by the creation and validated first: a normal cancel follows.
        assert_eq!(cancel.body["status"], "cancelling");
    }
    let done = c.wait_terminal(id, MINUTE).await;
    assert_eq!(done["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_mid_batch_writes_batch_expired() {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 50, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "50", "--max-in-flight", "4"]);
    let c = &app.client;
    let n = 600;
    let file = c.upload(&chat_lines(n)).await;
    let b = c.create_batch(&file, "/v1/chat/completions", "4s").await;
    let id = b["id"].as_str().unwrap();
    assert_eq!(b["expires_at"].as_i64().unwrap() - b["created_at"].as_i64().unwrap(), 4);
    let done = c.wait_terminal(id, MINUTE).await;
    assert_eq!(done["status"], "expired", "{done}");
    assert!(done["expired_at"].is_i64());
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert!(!out.is_empty(), "work done before expiry is kept");
    assert!(codes["batch_expired"] > n / 2, "{codes:?}");
    assert_eq!(codes.len(), 1, "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_finishes_the_batch() {
    let sim = sim(SimConfig { max_num_seqs: 8, base_latency_ms: 40, ..SimConfig::default() }).await;
    let mut app = serve(&sim, &["--chunk-size", "100", "--drain-timeout", "1s"]);
    let c = app.client.clone();
    let n = 3000;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 50).await;
    app.proc.signal("TERM");
    let code = app.proc.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "clean exit on SIGTERM; logs:\n{}", app.proc.logs().join("\n"));
    assert!(app.proc.logs().iter().any(|l| l.contains("shutdown requested")));

    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    let again = Proc::start("serve", app.dir.path(), &args);
    let c = again.client();
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert_eq!(out.len(), n);
}
