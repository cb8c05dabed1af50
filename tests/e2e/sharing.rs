//! Sharing an upstream with interactive traffic: vLLM's request `priority` (`--upstream-priority`,
//! a batch's `metadata.priority`), the fallback when the upstream refuses priorities, the order
//! of claims between an urgent and a bulk batch, and `--background`, which keeps the batch's
//! requests out of the upstream's waiting queue while interactive requests are there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const CHAT: &str = "/v1/chat/completions";

fn serve_with(sim: &SimHandle, extra: &[&str]) -> App {
    serve(sim, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_priority_reaches_vllm_and_a_refusal_falls_back_without_failing_lines() {
    // A vLLM with priority scheduling takes it: every request carries it.
    let sim_on = sim(SimConfig { priority_scheduling: true, ..SimConfig::default() }).await;
    let app = serve_with(&sim_on, &["--upstream-priority", "10"]);
    let id = app.client.submit(&chat_lines(20)).await;
    let done = app.client.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim_on.stats().prioritized_requests, 20);

    // An older vLLM without it answers 400: the worker warns once and sends without it. (vLLM
    // 0.32 takes the field and ignores it: tests/vllm checks that.)
    let sim_off = sim(SimConfig { refuse_priority_without_policy: true, ..SimConfig::default() }).await;
    let app = serve_with(&sim_off, &["--upstream-priority", "10"]);
    let id = app.client.submit(&chat_lines(20)).await;
    let done = app.client.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"]["failed"], 0, "{done}");
    let (out, err) = app.client.results(&done).await;
    check_exactly_once(&done, &out, &err, 20);
    let warnings = app.proc.logs().iter().filter(|l| l.contains("does not take request priorities")).count();
    assert_eq!(
        warnings,
        1,
        "one warning: {:?}",
        app.proc.logs().iter().filter(|l| l.contains("riorit")).collect::<Vec<_>>()
    );
    let stats = sim_off.stats();
    assert_eq!(stats.prioritized_requests, 0);
    assert!(stats.requests_received > 20, "at least one request was refused first: {stats:?}");

    // A batch's own priority must be an integer.
    let file = app.client.upload(&chat_lines(1)).await;
    let bad = app
        .client
        .post(
            "/v1/batches",
            json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h", "metadata": {"priority": "urgent"}}),
        )
        .await;
    assert_eq!(error_of(&bad, 400)["param"], "metadata.priority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_batch_outranks_a_bulk_one() {
    // Two slots, 200 ms a request: the bulk batch (priority 10) has 48 lines queued when the
    // urgent one (priority -1) arrives; the urgent one's chunks are claimed first and it
    // finishes long before.
    let sim =
        sim(SimConfig { max_num_seqs: 2, base_latency_ms: 200, priority_scheduling: true, ..SimConfig::default() })
            .await;
    let app = serve_with(&sim, &["--concurrency", "fixed", "--max-in-flight", "2", "--chunk-size", "4"]);
    let c = &app.client;
    let create = |lines: String, priority: &'static str| async move {
        let file = c.upload(&lines).await;
        let a = c
            .post(
                "/v1/batches",
                json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h", "metadata": {"priority": priority}}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    };
    let bulk = create(chat_lines(48), "10").await;
    c.wait_until(&bulk, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 2).await;
    let urgent = create(chat_lines(8), "-1").await;
    let urgent = c.wait_terminal(&urgent, 2 * MINUTE).await;
    assert_eq!(urgent["status"], "completed", "{urgent}");
    let bulk_now = c.batch(&bulk).await;
    let left = 48 - bulk_now["request_counts"]["completed"].as_i64().unwrap();
    assert!(left >= 24, "the urgent batch waited for the bulk one: {bulk_now}");
    assert_eq!(c.wait_terminal(&bulk, 2 * MINUTE).await["status"], "completed");
    // The batch's priority also reached the upstream, on every request.
    assert_eq!(sim.stats().prioritized_requests, 56);
}

/// Streams one interactive chat request every `every` until `stop`.
async fn interactive_load(base: String, every: Duration, stop: Arc<AtomicBool>) -> usize {
    let http = reqwest::Client::new();
    let mut sent = 0;
    while !stop.load(Ordering::Acquire) {
        let body = json!({"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": true});
        let http = http.clone();
        let url = format!("{base}/chat/completions");
        tokio::spawn(async move {
            if let Ok(resp) = http.post(url).json(&body).send().await {
                let _ = resp.bytes().await;
            }
        });
        sent += 1;
        tokio::time::sleep(every).await;
    }
    sent
}

/// Runs a 150-line batch of 12-token answers through a fresh engine-mode simulator (8 slots,
/// 20 ms steps) while interactive requests arrive every 150 ms; returns its statistics.
async fn batch_beside_interactive_traffic(extra: &[&str]) -> upstream_sim::SimStats {
    let sim = sim(SimConfig { max_num_seqs: 8, step_base_ms: 20.0, ..SimConfig::default() }).await;
    let mut args = vec!["--concurrency-interval", "100ms"];
    args.extend_from_slice(extra);
    let app = serve_with(&sim, &args);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(interactive_load(sim.base_url(), Duration::from_millis(150), stop.clone()));
    let n = 150;
    let lines: String = (0..n)
        .map(|i| {
            let body = json!({"model": "sim-model", "messages": [{"role": "user", "content": format!("prompt {i}")}], "max_tokens": 12});
            format!("{}\n", json!({"custom_id": format!("req-{i}"), "method": "POST", "url": CHAT, "body": body}))
        })
        .collect();
    let id = app.client.submit(&lines).await;
    let done = app.client.wait_terminal(&id, 3 * MINUTE).await;
    stop.store(true, Ordering::Release);
    assert!(load.await.unwrap() > 10);
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = app.client.results(&done).await;
    assert_eq!((out.len(), err.len()), (n, 0), "{done}");
    sim.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_mode_keeps_batch_requests_out_of_the_waiting_queue_of_a_shared_vllm() {
    // As usual, the worker keeps a short queue of its own at the upstream: interactive requests
    // find batch requests waiting ahead of them in most steps.
    let usual = batch_beside_interactive_traffic(&[]).await;
    let share = |s: &upstream_sim::SimStats| s.batch_waiting_steps as f64 / s.interactive_steps.max(1) as f64;
    assert!(usual.interactive_steps > 50, "{usual:?}");
    assert!(share(&usual) > 0.3, "the usual mode queues batch requests: {usual:?}");
    // In the background it leaves room for them and queues none of its own while they are there
    // (but for the few steps of its ramp before a queue shows the engine's capacity: 3 of 179
    // steps on an idle machine, 10 of 189 on a loaded one).
    let background = batch_beside_interactive_traffic(&["--background"]).await;
    assert!(background.interactive_steps > 50, "{background:?}");
    assert!(
        share(&background) < 0.1 && share(&background) * 5.0 < share(&usual),
        "background mode queued batch requests beside interactive ones: usual {usual:?}, background {background:?}"
    );
    assert!(
        background.interactive_waiting_steps * 2 < usual.interactive_waiting_steps.max(1),
        "interactive requests waited for a slot: usual {usual:?}, background {background:?}"
    );
}
