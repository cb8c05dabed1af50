//! Integration tests of the continuous-batching engine over real HTTP: the
//! `vllm:num_requests_*` gauges only ever show states the engine's scheduler
//! passes through, and a queue of requests is served in exactly the steps
//! `cost::ideal` computes.
//! Assertions are on step counts and model time, never on wall-clock speed.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use upstream_sim::cost::{ideal, CostModel, Scheduler};
use upstream_sim::{spawn, SimConfig, SimStats};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// A chat body with `words` prompt tokens and `max_tokens` completion tokens.
fn chat(words: usize, max_tokens: u64) -> Value {
    let content = vec!["w"; words].join(" ");
    json!({"model": "sim-model", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}")) as u64
}

/// `(running, waiting)` as `/metrics` shows them.
async fn gauges(c: &reqwest::Client, root: &str) -> (u64, u64) {
    let text = c.get(format!("{root}/metrics")).send().await.unwrap().text().await.unwrap();
    (metric(&text, "vllm:num_requests_running"), metric(&text, "vllm:num_requests_waiting"))
}

async fn sim_stats(c: &reqwest::Client, root: &str) -> SimStats {
    c.get(format!("{root}/sim/stats")).send().await.unwrap().json().await.unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Every `(running, waiting)` the engine passes through for `jobs`, all
/// queued when it schedules: after each admission and after each step.
fn engine_states(model: CostModel, cap: usize, jobs: &[(u64, u64)]) -> HashSet<(u64, u64)> {
    let mut scheduler = Scheduler::new(model, cap);
    for &(prompt, completion) in jobs {
        scheduler.enqueue(prompt, completion, ());
    }
    let mut states = HashSet::new();
    let mut finished = Vec::new();
    while scheduler.begin_step(|_| true).is_some() {
        states.insert((scheduler.running() as u64, scheduler.waiting() as u64));
        scheduler.end_step(&mut finished);
        states.insert((scheduler.running() as u64, scheduler.waiting() as u64));
    }
    states
}

#[tokio::test]
async fn queued_requests_take_the_ideal_steps_and_gauges_follow_the_engine() {
    const CAP: usize = 4;
    let model = CostModel { step_base_ms: 20.0, step_per_seq_ms: 1.0, prefill_ms_per_token: 1.0 };
    let sim = spawn(SimConfig {
        max_num_seqs: CAP,
        step_base_ms: model.step_base_ms,
        step_per_seq_ms: model.step_per_seq_ms,
        prefill_ms_per_token: model.prefill_ms_per_token,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let root = sim.base_url().trim_end_matches("/v1").to_string();

    // A blocker whose prefill keeps the first step busy for ~3 s, so every
    // other request has arrived when the second step is scheduled: from there
    // on the engine faces exactly the "all waiting at t = 0" case of `ideal`.
    const BLOCKER_WORDS: usize = 3000;
    let blocker = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { c.post(url).json(&chat(BLOCKER_WORDS, 1)).send().await.unwrap().status() }
    });
    while sim.stats().running < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs: Vec<(u64, u64)> = (0..18u64).map(|i| (1 + i % 5, 1 + (i * 7) % 6)).collect();
    let mut requests = Vec::new();
    for &(words, max_tokens) in &jobs {
        let (c, url) = (c.clone(), url.clone());
        requests.push(tokio::spawn(async move {
            let resp = c.post(url).json(&chat(words as usize, max_tokens)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["usage"]["completion_tokens"], max_tokens);
        }));
        // Send them one after the other: FIFO admission is part of the model.
        while sim.stats().requests_received < 1 + requests.len() as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The blocker is still in its first step. The others arrived during it, so
    // (as in vLLM) the scheduler has not seen them yet: nothing waits.
    assert_eq!(gauges(&c, &root).await, (1, 0));
    let stats = sim_stats(&c, &root).await;
    assert_eq!((stats.steps, stats.responses_ok), (0, 0), "the blocker's step ended too early: {stats:?}");

    let mut states = engine_states(model, CAP, &jobs);
    states.extend([(1, 0), (0, 0)]);
    let mut max_waiting = 0;
    while sim.stats().responses_ok < 1 + jobs.len() as u64 {
        let seen = gauges(&c, &root).await;
        assert!(states.contains(&seen), "gauges {seen:?} are no state of the engine: {states:?}");
        max_waiting = max_waiting.max(seen.1);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(blocker.await.unwrap(), 200);
    for r in requests {
        r.await.unwrap();
    }
    assert!(max_waiting > 0, "never saw a request waiting for room");
    assert_eq!(gauges(&c, &root).await, (0, 0));

    let expect = ideal(&model, CAP, &jobs);
    let blocker_secs = model.step_time(1, BLOCKER_WORDS as u64).as_secs_f64();
    let stats = sim_stats(&c, &root).await;
    assert_eq!(stats.steps, 1 + expect.steps, "{stats:?} vs {expect:?}");
    assert!(close(stats.busy_seconds, blocker_secs + expect.seconds), "{stats:?} vs {expect:?}");
    assert!(
        close(stats.occupancy_seconds, blocker_secs / CAP as f64 + expect.occupancy_seconds),
        "{stats:?} vs {expect:?}"
    );
    assert_eq!(stats.requests_received, 1 + jobs.len() as u64);
    assert_eq!(stats.generation_tokens, 1 + jobs.iter().map(|j| j.1).sum::<u64>());
    assert_eq!(stats.prompt_tokens, BLOCKER_WORDS as u64 + jobs.iter().map(|j| j.0).sum::<u64>());
    // The engine sleeps its steps out: the wall clock cannot beat the model.
    let wall_ms = stats.last_finish_unix_ms - stats.first_arrival_unix_ms;
    assert!(wall_ms as f64 + 2.0 >= stats.busy_seconds * 1000.0, "{wall_ms} ms for {stats:?}");
    assert_eq!(stats, sim.stats());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_client_left_is_aborted() {
    let sim = spawn(SimConfig { max_num_seqs: 1, step_base_ms: 20.0, ..SimConfig::default() }).await.unwrap();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let url = format!("{}/chat/completions", sim.base_url());
    let err = impatient.post(&url).json(&chat(3, 100_000)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The engine notices at its next step and frees the slot for the next request.
    let resp = client().post(&url).json(&chat(3, 2)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.running, stats.waiting, stats.responses_ok), (0, 0, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_fails_queued_requests() {
    let sim = spawn(SimConfig { max_num_seqs: 1, step_base_ms: 50.0, ..SimConfig::default() }).await.unwrap();
    let url = format!("{}/chat/completions", sim.base_url());
    let pending = tokio::spawn(async move { client().post(url).json(&chat(3, 100_000)).send().await });
    while sim.stats().running < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown()).await.expect("shutdown must not wait for the engine");
    match pending.await.unwrap() {
        Ok(resp) => assert_eq!(resp.status(), 503),
        Err(e) => panic!("expected a 503, got {e:?}"),
    }
}
