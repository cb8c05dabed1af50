//! Load: 200 clients poll batches and list batches and files while two 5,000-request batches run
//! against a simulated vLLM with latency, and a few more clients upload files. Every request gets
//! a 200 with the JSON it should; none is lost; both batches finish with every `custom_id` exactly
//! once; and the server's peak resident memory stays under a generous bound. Bounded: each client
//! makes a fixed number of requests at most and stops early once both batches have ended. Speed is
//! printed, never asserted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Clients polling and listing at once.
const POLLERS: usize = 200;
/// Most requests one polling client makes.
const REQUESTS_PER_POLLER: usize = 50;
/// Pause between one client's requests, so that the load lasts while the batches run.
const POLL_PAUSE: Duration = Duration::from_millis(100);
/// Clients uploading files at the same time, and the files each uploads.
const UPLOADERS: usize = 4;
const UPLOADS_PER_UPLOADER: usize = 10;
/// Requests in each of the two batches.
const BATCH_REQUESTS: usize = 5_000;
/// Peak resident memory (VmHWM) the server must stay under.
const MAX_PEAK_RSS_KIB: u64 = 400 * 1024;

/// What one client sent and got back, and what went wrong.
#[derive(Default)]
struct Tally {
    sent: usize,
    answered: usize,
    errors: Vec<String>,
}

impl Tally {
    /// Sends one request; counts the answer once its status and whole body have arrived, and
    /// records an error unless it is a 200 whose JSON passes `valid`.
    async fn call(
        &mut self,
        what: &str,
        req: reqwest::RequestBuilder,
        valid: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.sent += 1;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // reqwest's Display leaves out the cause (reset, timeout, refused): show the chain.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    why.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                self.errors.push(format!("{what}: no answer: {why}"));
                return None;
            }
        };
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(format!("{what}: {status}, body cut: {e}"));
                return None;
            }
        };
        self.answered += 1;
        match serde_json::from_str::<Value>(&text) {
            Ok(body) if status == 200 && valid(&body) => Some(body),
            _ => {
                self.errors.push(format!("{what}: {status} {}", text.chars().take(300).collect::<String>()));
                None
            }
        }
    }
}

/// One polling client: the two batches by id, the batch list and the file list, in turn.
async fn poll(http: reqwest::Client, base: String, ids: [String; 2], first: usize, ended: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    for n in 0..REQUESTS_PER_POLLER {
        if ended.load(Ordering::Relaxed) {
            break;
        }
        match (first + n) % 4 {
            k @ (0 | 1) => {
                let id = &ids[k];
                let req = http.get(format!("{base}/v1/batches/{id}"));
                tally.call("GET /v1/batches/{id}", req, |b| b["object"] == "batch" && b["id"] == id.as_str()).await;
            }
            2 => {
                let req = http.get(format!("{base}/v1/batches"));
                tally.call("GET /v1/batches", req, |b| b["object"] == "list" && b["data"].is_array()).await;
            }
            _ => {
                let req = http.get(format!("{base}/v1/files"));
                tally.call("GET /v1/files", req, |b| b["object"] == "list" && b["data"].is_array()).await;
            }
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    tally
}

/// One uploading client: uploads files of its own and reads each back.
async fn upload(http: reqwest::Client, base: String, client: usize) -> Tally {
    let mut tally = Tally::default();
    for n in 0..UPLOADS_PER_UPLOADER {
        let content = chat_lines(50 + client * UPLOADS_PER_UPLOADER + n);
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", reqwest::multipart::Part::bytes(content.clone().into_bytes()).file_name("load.jsonl"));
        let req = http.post(format!("{base}/v1/files")).multipart(form);
        let bytes = content.len() as u64;
        let Some(file) = tally.call("POST /v1/files", req, |f| f["object"] == "file" && f["bytes"] == bytes).await
        else {
            continue;
        };
        let id = file["id"].as_str().unwrap();
        let req = http.get(format!("{base}/v1/files/{id}"));
        tally.call("GET /v1/files/{id}", req, |f| f["id"] == id && f["bytes"] == bytes).await;
    }
    tally
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status is readable");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_run_under_200_polling_clients_and_uploads() {
    let sim = sim(SimConfig { max_num_seqs: 64, base_latency_ms: 20, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let base = c.base.clone();

    let a = c.submit(&chat_lines(BATCH_REQUESTS)).await;
    let b = c.submit(&chat_lines(BATCH_REQUESTS)).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(POLLERS + UPLOADERS)
        // The server closes connections idle for its header-read timeout (10 s); a client that
        // keeps them longer races that close on reuse (the OpenAI SDKs keep them 5 s).
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ended = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut pollers = Vec::new();
    for i in 0..POLLERS {
        let ids = [a.clone(), b.clone()];
        pollers.push(tokio::spawn(poll(http.clone(), base.clone(), ids, i, ended.clone())));
    }
    let uploaders: Vec<_> = (0..UPLOADERS).map(|i| tokio::spawn(upload(http.clone(), base.clone(), i))).collect();

    let done_a = c.wait_terminal(&a, 5 * MINUTE).await;
    let done_b = c.wait_terminal(&b, 5 * MINUTE).await;
    let batches_took = started.elapsed();
    ended.store(true, Ordering::Relaxed);

    let mut polls = Tally::default();
    let mut uploads = Tally::default();
    let mut lost = Vec::new();
    for (kind, tasks, total) in [("poller", pollers, &mut polls), ("uploader", uploaders, &mut uploads)] {
        for (i, task) in tasks.into_iter().enumerate() {
            let t = tokio::time::timeout(2 * MINUTE, task).await.expect("a client never stopped").unwrap();
            if t.sent != t.answered {
                lost.push(format!("{kind} {i}: sent {}, answered {}", t.sent, t.answered));
            }
            total.sent += t.sent;
            total.answered += t.answered;
            total.errors.extend(t.errors);
        }
    }
    let (peak_kib, rss_kib) = memory_kib(app.proc.pid());
    println!(
        "load: {} polls and lists sent, {} answered; {} upload requests sent, {} answered; errors {}; \
         batches ended after {:.1}s; server VmHWM {} MiB, VmRSS {} MiB",
        polls.sent,
        polls.answered,
        uploads.sent,
        uploads.answered,
        polls.errors.len() + uploads.errors.len(),
        batches_took.as_secs_f64(),
        peak_kib / 1024,
        rss_kib / 1024
    );

    let errors: Vec<_> = polls.errors.iter().chain(&uploads.errors).collect();
    assert!(errors.is_empty(), "{} failed requests; first ones: {:#?}", errors.len(), &errors[..errors.len().min(20)]);
    assert!(lost.is_empty(), "requests without an answer: {lost:#?}");
    assert!(polls.sent >= POLLERS, "the pollers barely ran: {} requests", polls.sent);
    assert_eq!(uploads.sent, UPLOADERS * UPLOADS_PER_UPLOADER * 2, "every upload and read-back was made");

    for done in [&done_a, &done_b] {
        assert_eq!(done["status"], "completed", "{done}");
        let (out, err) = c.results(done).await;
        let codes = check_exactly_once(done, &out, &err, BATCH_REQUESTS);
        assert!(codes.is_empty(), "failed requests in {}: {codes:?}", done["id"]);
    }
    assert!(
        peak_kib < MAX_PEAK_RSS_KIB,
        "the server's peak RSS is {} MiB, over {} MiB",
        peak_kib / 1024,
        MAX_PEAK_RSS_KIB / 1024
    );
}
