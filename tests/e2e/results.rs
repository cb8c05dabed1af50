//! Results while a batch runs: `GET /v1/batches/{id}/output` and `/errors` read from a cursor
//! while a slow batch runs — each read only new lines, none repeated, none skipped — and, once
//! the batch has ended, every body concatenated equals the output (error) file byte for byte,
//! for a completed and for a cancelled batch. A long poll returns once new lines exist, and at
//! once on an ended batch; about 10 MiB of results come in bounded answers cut at line ends;
//! another owner gets a 404; bad `after` and `wait` get a 400 naming the parameter.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);

/// One answer of the endpoint.
pub(crate) struct Read {
    pub status: u16,
    pub body: String,
    pub next: String,
    pub incomplete: bool,
}

/// `GET /v1/batches/{id}/{kind}` with `query` (`after=…&wait=…`).
pub(crate) async fn read(c: &Client, id: &str, kind: &str, query: &str) -> Read {
    let resp = c.http.get(c.url(&format!("/v1/batches/{id}/{kind}?{query}"))).send().await.unwrap();
    let status = resp.status().as_u16();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (next, incomplete) = (header("x-next-cursor"), header("x-incomplete") == "true");
    if status == 200 {
        assert_eq!(resp.headers()["content-type"], "application/jsonl");
    }
    Read { status, body: resp.text().await.unwrap(), next, incomplete }
}

/// A reader that keeps its cursor and everything it was sent.
pub(crate) struct Follower<'a> {
    pub c: &'a Client,
    pub id: String,
    pub kind: &'static str,
    pub cursor: Option<String>,
    pub all: String,
}

impl<'a> Follower<'a> {
    pub fn new(c: &'a Client, id: &str, kind: &'static str) -> Self {
        Follower { c, id: id.to_string(), kind, cursor: None, all: String::new() }
    }

    /// One read after the cursor; checks that it repeats no line already read.
    pub async fn step(&mut self, wait: Option<&str>) -> Read {
        let mut query = Vec::new();
        if let Some(a) = &self.cursor {
            query.push(format!("after={a}"));
        }
        if let Some(w) = wait {
            query.push(format!("wait={w}"));
        }
        let r = read(self.c, &self.id, self.kind, &query.join("&")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.is_empty() || r.body.ends_with('\n'), "whole lines only: {:?}", r.body);
        let seen = custom_ids(&self.all);
        for id in custom_ids(&r.body) {
            assert!(!seen.contains(&id), "{id} was sent twice");
        }
        self.all.push_str(&r.body);
        self.cursor = Some(r.next.clone());
        r
    }

    /// Reads until the batch has ended and everything was sent.
    pub async fn until_complete(&mut self) {
        let deadline = Instant::now() + 2 * MINUTE;
        while self.step(Some("10s")).await.incomplete {
            assert!(Instant::now() < deadline, "{} never became complete", self.kind);
        }
    }
}

pub(crate) fn custom_ids(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["custom_id"].as_str().unwrap().to_string())
        .collect()
}

/// The final file of `key` (`output_file_id` / `error_file_id`), or "" when the batch has none.
pub(crate) async fn final_file(c: &Client, batch: &Value, key: &str) -> String {
    match batch[key].as_str() {
        Some(id) => c.content(id).await,
        None => String::new(),
    }
}

/// Every 9th line gets the simulator's permanent 400 (an `invalid_request` error line).
fn lines_with_failures(n: usize) -> String {
    chat_lines_with(n, |i| if i % 9 == 4 { " __sim_400__".into() } else { String::new() })
}

/// A slow batch: `n` lines, 2 at a time, 250 ms each, in chunks of 5 lines.
async fn slow_batch(n: usize) -> (SimHandle, App, String) {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 250, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "5", "--max-in-flight", "2", "--concurrency", "fixed"]);
    let id = app.client.submit(&lines_with_failures(n)).await;
    (sim, app, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_results_resume_without_gaps_or_repeats_and_add_up_to_the_files() {
    let (_sim, app, id) = slow_batch(60).await;
    let c = &app.client;
    let mut output = Follower::new(c, &id, "output");
    let mut errors = Follower::new(c, &id, "errors");
    // Meanwhile, reads from the start as fast as they come, through the batch's end (when
    // finalization removes the parts): every one a 200 and a prefix of the final file.
    let hammer = {
        let (c, id) = (c.clone(), id.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let r = read(&c, &id, "output", "").await;
                assert_eq!(r.status, 200, "{}", r.body);
                seen.push(r.body);
                if !r.incomplete {
                    return seen;
                }
            }
        })
    };
    // Three reads while it runs, each at a later point of the batch.
    let mut mid_run = 0;
    for done in [10, 25, 40] {
        c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= done).await;
        let out = output.step(None).await;
        let err = errors.step(None).await;
        let b = c.batch(&id).await;
        assert_eq!(b["status"], "in_progress", "read {done} happened while the batch ran");
        assert!(b["output_file_id"].is_null(), "OpenAI's object is unchanged: {b}");
        assert!(out.incomplete && err.incomplete, "more may come while the batch runs");
        mid_run += custom_ids(&out.body).len();
    }
    assert!(mid_run >= 10, "lines arrived while the batch ran ({mid_run})");
    output.until_complete().await;
    errors.until_complete().await;

    let batch = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(batch["status"], "completed");
    assert_eq!(output.all, final_file(c, &batch, "output_file_id").await, "output: byte for byte");
    assert_eq!(errors.all, final_file(c, &batch, "error_file_id").await, "errors: byte for byte");
    let ids: HashSet<String> = custom_ids(&output.all).into_iter().chain(custom_ids(&errors.all)).collect();
    assert_eq!(ids.len(), 60, "every line once across both");
    assert_eq!(custom_ids(&errors.all).len(), 7, "the permanent 400s");
    let prefixes = hammer.await.unwrap();
    assert!(prefixes.len() > 10, "{} reads", prefixes.len());
    for body in &prefixes {
        assert!(output.all.starts_with(body.as_str()), "a read from the start is a prefix of the file");
    }

    // Ended: at the end, an immediate empty answer that says so, even when asked to wait.
    let started = Instant::now();
    let end = read(c, &id, "output", &format!("after={}&wait=30s", output.cursor.as_ref().unwrap())).await;
    assert!(started.elapsed() < Duration::from_secs(5), "no wait on an ended batch");
    assert_eq!((end.status, end.body.as_str(), end.incomplete), (200, "", false));
    // From the start, the final file.
    let whole = read(c, &id, "output", "").await;
    assert_eq!(whole.body, output.all);
    assert!(!whole.incomplete);
    // A cursor past the end is refused.
    let past = read(c, &id, "output", "after=0.0.99999999").await;
    assert_eq!(past.status, 400);
    assert_eq!(serde_json::from_str::<Value>(&past.body).unwrap()["error"]["param"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_adds_up_to_its_error_file() {
    let (_sim, app, id) = slow_batch(80).await;
    let c = &app.client;
    let mut output = Follower::new(c, &id, "output");
    let mut errors = Follower::new(c, &id, "errors");
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 10).await;
    output.step(None).await;
    errors.step(None).await;
    let cancelled = c.post(&format!("/v1/batches/{id}/cancel"), serde_json::json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    output.until_complete().await;
    errors.until_complete().await;
    let batch = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(batch["status"], "cancelled");
    assert_eq!(output.all, final_file(c, &batch, "output_file_id").await);
    let error_file = final_file(c, &batch, "error_file_id").await;
    assert_eq!(errors.all, error_file, "errors, batch_cancelled lines included");
    assert!(error_file.contains("batch_cancelled"), "{error_file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_once_new_lines_exist() {
    // One line per chunk, 1.5 s each: nothing exists when the poll starts.
    let sim = sim(SimConfig { max_num_seqs: 1, base_latency_ms: 1500, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "1", "--max-in-flight", "1", "--concurrency", "fixed"]);
    let c = &app.client;
    let id = c.submit(&chat_lines(4)).await;
    let mut output = Follower::new(c, &id, "output");
    let started = Instant::now();
    let first = output.step(Some("30s")).await;
    let waited = started.elapsed();
    assert!(!first.body.is_empty(), "the poll returned with lines");
    assert!(first.incomplete);
    assert!(waited < Duration::from_secs(20), "it returned when the first line landed, after {waited:?}");
    // The next poll waits for the next line, not for the deadline.
    let started = Instant::now();
    let second = output.step(Some("30s")).await;
    assert!(!second.body.is_empty() || !second.incomplete, "new lines or the end");
    assert!(started.elapsed() < Duration::from_secs(20), "after {:?}", started.elapsed());
    output.until_complete().await;
    let batch = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(output.all, final_file(c, &batch, "output_file_id").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owner_gets_404_and_bad_parameters_get_400() {
    let sim = sim(SimConfig { max_num_seqs: 1, base_latency_ms: 500, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let dir = app.data_dir();
    let alice = Client::with_key(app.client.base.clone(), &crate::auth::create_key(&dir, "alice", false));
    let bob = Client::with_key(app.client.base.clone(), &crate::auth::create_key(&dir, "bob", false));
    let id = alice.submit(&chat_lines(3)).await;
    for kind in ["output", "errors"] {
        assert_eq!(read(&alice, &id, kind, "").await.status, 200);
        let r = read(&bob, &id, kind, "").await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(read(&alice, "batch_nonesuch", "output", "").await.status, 404);
    for (query, param) in [
        ("after=abc", "after"),
        ("after=1.2", "after"),
        ("after=0.99.0", "after"),
        ("wait=soon", "wait"),
        ("wait=-1s", "wait"),
        ("wait=3h", "wait"),
    ] {
        let r = read(&alice, &id, "output", query).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["param"], param, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_come_in_bounded_answers_cut_at_line_ends() {
    // 600 embedding lines of 100 inputs each: about 10 MiB of output, over one answer's bound.
    let sim = default_sim().await;
    let app = serve(&sim, &["--chunk-size", "100"]);
    let c = &app.client;
    let inputs: Vec<String> = (0..100).map(|k| format!("text {k}")).collect();
    let mut input = String::new();
    for i in 0..600 {
        let line = serde_json::json!({"custom_id": format!("e-{i}"), "method": "POST", "url": "/v1/embeddings",
                                      "body": {"model": MODEL, "input": inputs}});
        input.push_str(&format!("{line}\n"));
    }
    let file = c.upload(&input).await;
    let id = c.create_batch(&file, "/v1/embeddings", "24h").await["id"].as_str().unwrap().to_string();
    let batch = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let whole = final_file(c, &batch, "output_file_id").await;
    assert!(whole.len() > 9 * 1024 * 1024, "{} bytes", whole.len());

    let mut output = Follower::new(c, &id, "output");
    let first = output.step(None).await;
    assert!(first.incomplete, "more than one answer");
    assert!(first.body.len() <= 8 * 1024 * 1024 && first.body.len() > 1024 * 1024, "{} bytes", first.body.len());
    output.until_complete().await;
    assert_eq!(output.all, whole, "the answers add up to the file");
    assert_eq!(custom_ids(&output.all).len(), 600);
}
