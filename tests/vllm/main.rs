//! The contract checked against real vLLM: the CPU build of vLLM serving a real 135M model
//! (SmolLM2-135M-Instruct), installed and started by the scripts beside this file, the real
//! `vllm-batch` binary in front of it, and the official `openai` Python package as the client
//! (`client.py`). What upstream-sim only imitates — answer bodies, error bodies, metric names,
//! the load the adaptive controller reads, a restart that takes a minute and more — is vLLM's own
//! here.
//!
//! The tests share one vLLM (it needs ~45 s and ~7 GB to start) and take turns with it: each holds
//! [`real_vllm`]'s guard for its whole run, so the in-flight and load figures one test reads are
//! its own. `tests/run.sh` installs vLLM (`setup.sh`) and sets `VLLM_BATCH_TEST_VLLM=1`; without
//! it a developer's `cargo test` skips these with a printed reason, and under `CI=true` they fail.

// The e2e harness, shared; this binary uses no simulator, so its re-exports go unused.
#[path = "../e2e/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::MutexGuard;

use support::prometheus::*;
use support::*;

/// The model name `start.sh` serves.
const SERVED: &str = "smollm2-135m-instruct";
/// vLLM's `--max-model-len` in `start.sh`.
const MAX_MODEL_LEN: usize = 1024;
/// vLLM's `--max-num-seqs` in `start.sh`.
const MAX_NUM_SEQS: usize = 32;

/// One vLLM started by `start.sh`: its port and the leader of its process group.
struct Vllm {
    port: u16,
    pid: i32,
}

impl Vllm {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn upstream(&self) -> String {
        format!("{}/v1", self.base())
    }
}

static VLLM: tokio::sync::Mutex<Option<Vllm>> = tokio::sync::Mutex::const_new(None);
/// Every process group started here, killed when this test binary exits.
static STARTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn stop_started() {
    for pid in STARTED.lock().map(|p| p.clone()).unwrap_or_default() {
        // SAFETY: kill(2) with a negative pid signals that process group; nothing else is touched.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vllm")
}

/// Runs `start.sh` (installing on first use) and waits for `/health`: `serve` is `chat` or
/// `embed` (start.sh's `VLLM_SERVE`); `port` reuses an address.
fn start_vllm(serve: &str, port: Option<u16>) -> Vllm {
    static ATEXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function with no captured state, once.
    ATEXIT.call_once(|| assert_eq!(unsafe { libc::atexit(stop_started) }, 0));
    let mut command = Command::new("bash");
    command.arg(here().join("start.sh")).env("VLLM_SERVE", serve);
    if let Some(port) = port {
        command.env("VLLM_PORT", port.to_string());
    }
    let began = Instant::now();
    let out = command.output().expect("bash runs tests/vllm/start.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tests/vllm/start.sh failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    let mut words = stdout.split_whitespace();
    let port: u16 = words.next().and_then(|w| w.parse().ok()).expect("start.sh prints PORT PID");
    let pid: i32 = words.next().and_then(|w| w.parse().ok()).expect("start.sh prints PORT PID");
    STARTED.lock().unwrap().push(pid);
    eprintln!(
        "real vLLM ({serve}) on port {port} (process group {pid}) answered /health after {:.0?}",
        began.elapsed()
    );
    Vllm { port, pid }
}

/// Kills vLLM's whole process group (its API server and engine core) at once, as a crash or an
/// out-of-memory kill of its container does, and waits until they are gone.
fn kill9(vllm: &Vllm) {
    // SAFETY: see `stop_started`.
    assert_eq!(unsafe { libc::kill(-vllm.pid, libc::SIGKILL) }, 0, "kill -9 -{}", vllm.pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Command::new("pgrep").args(["-g", &vllm.pid.to_string()]).output().unwrap().status.success() {
        assert!(Instant::now() < deadline, "vLLM's process group {} outlived kill -9", vllm.pid);
        std::thread::sleep(Duration::from_millis(100));
    }
    STARTED.lock().unwrap().retain(|&p| p != vllm.pid);
}

async fn healthy(vllm: &Vllm) -> bool {
    let url = format!("{}/health", vllm.base());
    matches!(reqwest::get(url).await, Ok(r) if r.status().is_success())
}

/// The caller's turn with the machine: the shared vLLM's guard, whether it runs or not, held for
/// the caller's whole test. `None`: not enabled here (skipped, with the reason printed).
async fn turn() -> Option<MutexGuard<'static, Option<Vllm>>> {
    match std::env::var("VLLM_BATCH_TEST_VLLM").as_deref() {
        Ok("1") => Some(VLLM.lock().await),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("VLLM_BATCH_TEST_VLLM is not set: tests/run.sh installs real vLLM (tests/vllm/setup.sh) and sets it")
        }
        _ => {
            eprintln!("skipped: VLLM_BATCH_TEST_VLLM is not set (tests/run.sh installs real vLLM and sets it)");
            None
        }
    }
}

/// The shared real vLLM, started on first use (or again, if an earlier test left it dead), held
/// for the caller's whole test (see [`turn`]).
async fn real_vllm() -> Option<MutexGuard<'static, Option<Vllm>>> {
    let mut guard = turn().await?;
    let alive = match guard.as_ref() {
        Some(v) => healthy(v).await,
        None => false,
    };
    if !alive {
        if let Some(dead) = guard.take() {
            kill9(&dead);
        }
        *guard = Some(tokio::task::spawn_blocking(|| start_vllm("chat", None)).await.unwrap());
    }
    Some(guard)
}

/// `vllm-batch serve` in front of `vllm`, with its defaults and `extra`.
fn serve_on(vllm: &Vllm, extra: &[&str]) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = vllm.upstream();
    let mut args = vec!["--upstream", upstream.as_str(), "--poll-interval", "200ms"];
    args.extend_from_slice(extra);
    (Proc::start("serve", dir.path(), &args), dir)
}

/// `client.py ARGS` with the official SDK pointed at `api`; its one JSON line.
async fn sdk(api: &str, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(sdk_python().await)
        .arg(here().join("client.py"))
        .args(args)
        .env("OPENAI_BASE_URL", format!("{api}/v1"))
        .env("OPENAI_API_KEY", "unused")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client.py {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client.py printed {stdout:?}: {e}"))
}

/// Writes `lines` as a JSONL file and submits it through the SDK; the batch id.
async fn submit(api: &str, lines: &[Value], endpoint: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(file.path(), text).unwrap();
    let created = sdk(api, &["submit", file.path().to_str().unwrap(), endpoint]).await;
    created["id"].as_str().unwrap().to_string()
}

/// Waits through the SDK for the batch to end; (batch, output lines, error lines).
async fn finish(api: &str, id: &str) -> (Value, Vec<Value>, Vec<Value>) {
    let done = sdk(api, &["wait", id, "900"]).await;
    let lines = |k: &str| done[k].as_array().unwrap().clone();
    (done["batch"].clone(), lines("output"), lines("errors"))
}

/// The server's `/metrics` page.
async fn metrics(c: &Client) -> String {
    c.http.get(c.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// Prompts of different kinds and lengths, so that answers differ in length and content.
const PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "What is 12 plus 7?",
    "Give me a short tip for learning to cook.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue? Answer briefly.",
    "List two animals that live in the Arctic.",
    "Describe a cat in five words.",
    "What does a computer's CPU do?",
    "Suggest a name for a small bakery.",
    "Complete the sentence: The best way to start the day is",
];

/// Openings the model continues (a question can end a completion at once, with no text).
const OPENINGS: &[&str] = &[
    "The capital of France is",
    "Once upon a time, there was a",
    "The three primary colours are",
    "A good breakfast includes",
    "def add(a, b):\n    return",
    "The sun rises in the",
    "My favourite season is",
    "The largest ocean on Earth is the",
    "In the morning, I like to",
    "The quick brown fox",
];

fn chat_line(id: &str, prompt: &str, max_tokens: usize) -> Value {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": SERVED, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens, "temperature": 0}})
}

/// `n` chat lines `req-0…` with varied prompts and `max_tokens` from `max_tokens(i)`.
fn chat_batch(n: usize, max_tokens: impl Fn(usize) -> usize) -> Vec<Value> {
    (0..n)
        .map(|i| chat_line(&format!("req-{i}"), &format!("{} ({i})", PROMPTS[i % PROMPTS.len()]), max_tokens(i)))
        .collect()
}

/// Every line of a finished batch: each `custom_id` of `expected` exactly once; each output line
/// answered 200 by vLLM itself (its model name, its own id prefix, `object`), with non-empty
/// text and `usage` within the line's `max_tokens`; the batch's `usage` the sum of the lines'.
fn check_answers(batch: &Value, out: &[Value], err: &[Value], expected: &HashMap<String, usize>, object: &str) {
    let mut seen = HashMap::new();
    for line in out.iter().chain(err) {
        *seen.entry(line["custom_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "custom_ids written more than once: {seen:?}");
    let mut want: Vec<&String> = expected.keys().collect();
    let mut got: Vec<&String> = seen.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "the files hold exactly the batch's custom_ids");
    let (mut input, mut output) = (0, 0);
    for line in out {
        let id = line["custom_id"].as_str().unwrap();
        let body = &line["response"]["body"];
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert!(line["error"].is_null(), "{line}");
        assert_eq!(body["object"], object, "{line}");
        assert_eq!(body["model"], SERVED, "{line}");
        let prefix = if object == "chat.completion" { "chatcmpl-" } else { "cmpl-" };
        assert!(body["id"].as_str().unwrap().starts_with(prefix), "vLLM's own id: {line}");
        let choice = &body["choices"][0];
        let text = if object == "chat.completion" { &choice["message"]["content"] } else { &choice["text"] };
        assert!(!text.as_str().unwrap().trim().is_empty(), "an answer with text: {line}");
        let usage = &body["usage"];
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!(completion >= 1 && completion as usize <= expected[id], "completion tokens within max_tokens: {line}");
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + completion,
            "{line}"
        );
        input += usage["prompt_tokens"].as_u64().unwrap();
        output += completion;
    }
    assert_eq!(batch["usage"]["input_tokens"], input, "batch usage sums its lines: {}", batch["usage"]);
    assert_eq!(batch["usage"]["output_tokens"], output, "{}", batch["usage"]);
    assert_eq!(batch["usage"]["total_tokens"], input + output, "{}", batch["usage"]);
    assert_eq!(batch["request_counts"]["total"], expected.len());
    assert_eq!(batch["request_counts"]["completed"], out.len());
    assert_eq!(batch["request_counts"]["failed"], err.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_batches_are_answered_by_vllm_itself() {
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    let (app, _dir) = serve_on(vllm, &[]);
    let api = app.base.clone().unwrap();

    // 120 chat lines, and one whose prompt is longer than vLLM's --max-model-len.
    let mut chat = chat_batch(120, |i| 8 + (i % 5) * 8);
    let too_long = "word ".repeat(MAX_MODEL_LEN + 200);
    chat.push(chat_line("too-long", &too_long, 16));
    let completions: Vec<Value> = (0..100)
        .map(|i| {
            let prompt = OPENINGS[i % OPENINGS.len()];
            json!({"custom_id": format!("cmpl-{i}"), "method": "POST", "url": "/v1/completions",
                   "body": {"model": SERVED, "prompt": prompt, "max_tokens": 6 + (i % 4) * 10, "temperature": 0}})
        })
        .collect();
    let max_tokens = |lines: &[Value]| -> HashMap<String, usize> {
        lines
            .iter()
            .map(|l| (l["custom_id"].as_str().unwrap().into(), l["body"]["max_tokens"].as_u64().unwrap() as usize))
            .collect()
    };
    let chat_id = submit(&api, &chat, "/v1/chat/completions").await;
    let cmpl_id = submit(&api, &completions, "/v1/completions").await;

    let (batch, out, err) = finish(&api, &chat_id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    check_answers(&batch, &out, &err, &max_tokens(&chat), "chat.completion");
    assert_eq!(out.len(), 120);
    // The prompt vLLM refuses ends in the error file with vLLM's own 400 body, not retried.
    assert_eq!(err.len(), 1, "{err:?}");
    let line = &err[0];
    assert_eq!(line["custom_id"], "too-long");
    assert_eq!(line["error"]["code"], "invalid_request", "{line}");
    assert_eq!(line["response"]["status_code"], 400, "{line}");
    let message = line["response"]["body"]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&MAX_MODEL_LEN.to_string()), "vLLM's own message names its context length: {line}");

    let (batch, out, err) = finish(&api, &cmpl_id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert!(err.is_empty(), "{err:?}");
    check_answers(&batch, &out, &err, &max_tokens(&completions), "text_completion");
    // Answers differ with their prompts: the model really ran.
    let texts: std::collections::HashSet<&str> =
        out.iter().map(|l| l["response"]["body"]["choices"][0]["text"].as_str().unwrap()).collect();
    assert!(texts.len() >= 6, "varied prompts, varied answers: {texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_settles_near_vllms_max_num_seqs() {
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    // The defaults: adaptive, starting at --max-in-flight 256, far above what vLLM runs.
    let (app, _dir) = serve_on(vllm, &[]);
    let api = app.base.clone().unwrap();
    let c = app.client();
    let id = submit(&api, &chat_batch(400, |_| 12), "/v1/chat/completions").await;
    let limit_series = "vllm_upstream_concurrency_limit{upstream=\"0\"}";
    let mut samples = Vec::new();
    let began = Instant::now();
    loop {
        let page = metrics(&c).await;
        let b = c.batch(&id).await;
        let done = b["request_counts"]["completed"].as_u64().unwrap_or(0)
            + b["request_counts"]["failed"].as_u64().unwrap_or(0);
        // Samples while at least a full vLLM's worth of lines is still to come.
        if b["status"] == "in_progress" && done + 2 * MAX_NUM_SEQS as u64 <= 400 {
            samples.push((began.elapsed(), sample(&page, limit_series).expect("the limit is exported")));
        }
        if ["completed", "failed", "expired", "cancelled"].contains(&b["status"].as_str().unwrap()) {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(600), "the batch did not end: {b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (batch, out, err) = finish(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!((out.len(), err.len()), (400, 0), "{err:?}");
    // After the first seconds (the controller looks every 500 ms), the limit stays in a band
    // around vLLM's 32 slots: what vLLM runs plus a short queue.
    let settled: Vec<f64> = samples.iter().filter(|(t, _)| *t > Duration::from_secs(5)).map(|(_, v)| *v).collect();
    assert!(settled.len() >= 10, "too few samples after the ramp: {samples:?}");
    let (low, high) = settled.iter().fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    eprintln!("in-flight limit after the ramp: {low}..={high} over {} samples", settled.len());
    let outside: Vec<f64> = settled.iter().copied().filter(|v| !(24.0..=48.0).contains(v)).collect();
    assert!(outside.is_empty(), "limit outside 24..=48 after the ramp: {outside:?} (all: {samples:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_health_and_models_report_real_vllm() {
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    let (app, _dir) = serve_on(vllm, &[]);
    let c = app.client();
    let models = c.get("/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.body);
    let ids: Vec<&str> = models.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [SERVED], "{}", models.body);
    let ready = c.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let health = c.get("/health?verbose=1").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let text = health.body.to_string();
    assert!(text.contains(SERVED) && text.contains(&vllm.upstream()), "{text}");
    let page = metrics(&c).await;
    assert_eq!(sample(&page, &format!("vllm_model_loaded{{model=\"{SERVED}\"}}")), Some(1.0), "{page}");
    assert_eq!(sample(&page, "vllm_upstream_up{upstream=\"0\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gpu_and_inference_panel_has_data_from_real_vllm() {
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    let (app, dir) = serve_on(vllm, &[]);
    let api = app.base.clone().unwrap();
    let prom_dir = dir.path().join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let strip = |u: &str| u.trim_start_matches("http://").to_string();
    let port = free_port();
    let mut targets = HashMap::new();
    // `serve` is the API and the worker in one process: both jobs scrape it.
    targets.insert("vllm-batch-api", strip(&api));
    targets.insert("vllm-batch-worker", strip(&api));
    targets.insert("vllm", strip(&vllm.base()));
    targets.insert("prometheus", format!("127.0.0.1:{port}"));
    let prom = start_prometheus(&prom_dir, &rewrite_config(&prom_dir, &targets), port);
    let id = submit(&api, &chat_batch(96, |i| 8 + (i % 3) * 8), "/v1/chat/completions").await;
    let (batch, _, _) = finish(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let allowed = expected_empty();
    let exprs: Vec<(String, String)> = panel_expressions()
        .into_iter()
        .filter(|p| p.dashboard == "vllm-batch-gpu" && !allowed.contains_key(&p.expr))
        .map(|p| (format!("panel {}", p.panel), p.expr))
        .collect();
    let reading_vllm = exprs.iter().filter(|(_, e)| e.contains("vllm:")).count();
    assert!(reading_vllm >= 4, "the dashboard reads vLLM's own series: {exprs:?}");
    let problems = without_data(&prom.url, &exprs, &id, Duration::from_secs(90)).await;
    assert!(problems.is_empty(), "against real vLLM:\n{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_killed_mid_batch_and_restarted_fails_no_line() {
    let Some(mut guard) = real_vllm().await else { return };
    let port = guard.as_ref().unwrap().port;
    let (app, _dir) = serve_on(guard.as_ref().unwrap(), &[]);
    let api = app.base.clone().unwrap();
    let c = app.client();
    let n = 200;
    let id = submit(&api, &chat_batch(n, |i| 8 + (i % 4) * 4), "/v1/chat/completions").await;
    c.wait_until(&id, 5 * MINUTE, |b| b["request_counts"]["completed"].as_u64().unwrap_or(0) >= 30).await;
    let dead = guard.take().unwrap();
    kill9(&dead);
    let killed_at = Instant::now();
    let up = "vllm_upstream_up{upstream=\"0\"}";
    let down_seen = loop {
        let page = metrics(&c).await;
        if sample(&page, up) == Some(0.0) {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < MINUTE, "vllm_upstream_up stayed 1 after vLLM died");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let during = c.batch(&id).await;
    // vLLM takes a minute or more to load again: the batch waits through it.
    *guard = Some(tokio::task::spawn_blocking(move || start_vllm("chat", Some(port))).await.unwrap());
    let back_after = killed_at.elapsed();
    let (batch, out, err) = finish(&api, &id).await;
    eprintln!(
        "vLLM down for {back_after:.0?} (seen down after {down_seen:.1?}); during the outage: {}",
        during["request_counts"]
    );
    assert_eq!(batch["status"], "completed", "{batch}");
    assert!(err.is_empty(), "no line fails because vLLM restarted: {:?}", &err[..err.len().min(3)]);
    let expected: HashMap<String, usize> = (0..n).map(|i| (format!("req-{i}"), 8 + (i % 4) * 4)).collect();
    check_answers(&batch, &out, &err, &expected, "chat.completion");
    assert_eq!(during["request_counts"]["failed"], 0, "{during}");
    let page = metrics(&c).await;
    assert_eq!(sample(&page, up), Some(1.0), "up again");
    let outages = sample(&page, "vllm_upstream_outages_total{upstream=\"0\"}").unwrap_or(0.0);
    assert!(outages >= 1.0, "the outage is counted");
    // One WARN line when it went down and one INFO line when it came back, not one per request.
    let count = |needle: &str| app.logs().iter().filter(|l| l.contains(needle)).count() as f64;
    assert_eq!(count("upstream is down;"), outages, "{}", app.logs().join("\n"));
    assert_eq!(count("upstream is back up"), outages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embeddings_batch_is_answered_by_a_real_embeddings_model() {
    // Its own vLLM, in its turn: no other test's figures share the CPUs with it.
    let Some(_turn) = turn().await else { return };
    let embed = tokio::task::spawn_blocking(|| start_vllm("embed", None)).await.unwrap();
    let (app, _dir) = serve_on(&embed, &[]);
    let api = app.base.clone().unwrap();
    let model = "all-minilm-l6-v2";
    // One text or a list of up to three per line.
    let lines: Vec<Value> = (0..60)
        .map(|i| {
            let text = |k: usize| format!("{} ({k})", PROMPTS[(i + k) % PROMPTS.len()]);
            let input = if i.is_multiple_of(3) { json!([text(0), text(1), text(2)]) } else { json!(text(0)) };
            json!({"custom_id": format!("emb-{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": model, "input": input}})
        })
        .collect();
    let id = submit(&api, &lines, "/v1/embeddings").await;
    let (batch, out, err) = finish(&api, &id).await;
    kill9(&embed);
    assert_eq!(batch["status"], "completed", "{batch}");
    assert!(err.is_empty(), "{err:?}");
    assert_eq!(out.len(), 60);
    let mut prompt_tokens = 0;
    for line in &out {
        let i: usize = line["custom_id"].as_str().unwrap()["emb-".len()..].parse().unwrap();
        let body = &line["response"]["body"];
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(body["object"], "list", "{line}");
        assert_eq!(body["model"], model);
        assert!(body["id"].as_str().unwrap().starts_with("embd-"), "vLLM's own id: {line}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), if i.is_multiple_of(3) { 3 } else { 1 }, "one embedding per input: {line}");
        for (k, d) in data.iter().enumerate() {
            assert_eq!(d["index"], k);
            let v: Vec<f64> = d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(v.len(), 384, "all-MiniLM-L6-v2 embeds in 384 dimensions");
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "normalized, as the model's pooling config says: {norm}");
        }
        assert_eq!(body["usage"]["completion_tokens"], 0);
        prompt_tokens += body["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    assert!(prompt_tokens > 0);
    assert_eq!(batch["usage"]["input_tokens"], prompt_tokens, "{}", batch["usage"]);
    assert_eq!(batch["usage"]["output_tokens"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_vllm_takes_a_priority_without_priority_scheduling() {
    // The shared vLLM runs without --scheduling-policy priority. vLLM 0.32 takes a nonzero
    // `priority` there and ignores it (older releases answered 400, which the worker falls back
    // from: tests/e2e/sharing.rs, on the simulator): every line is answered, no fallback.
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    let (app, _dir) = serve_on(vllm, &["--upstream-priority", "10"]);
    let api = app.base.clone().unwrap();
    let lines = chat_batch(6, |_| 4);
    let id = submit(&api, &lines, "/v1/chat/completions").await;
    let (batch, out, err) = finish(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert!(err.is_empty(), "{err:?}");
    assert_eq!(out.len(), 6);
    let warning: Vec<String> =
        app.logs().into_iter().filter(|l| l.contains("does not take request priorities")).collect();
    assert!(warning.is_empty(), "vLLM took the priority: {warning:?}");
}

/// A `/v1/responses` batch (OpenAI's Responses API, which vLLM serves): every line answered by
/// vLLM's own `response` object, the batch's `usage` summed from the Responses API's names; a
/// line asking for `background` gets vLLM's own 400 in the error file (no response store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_batch_is_answered_by_vllm_itself() {
    let Some(guard) = real_vllm().await else { return };
    let vllm = guard.as_ref().unwrap();
    let (app, _dir) = serve_on(vllm, &[]);
    let api = app.base.clone().unwrap();

    let mut lines: Vec<Value> = (0..8)
        .map(|i| {
            let body = json!({"model": SERVED, "input": PROMPTS[i], "max_output_tokens": 6 + i, "temperature": 0});
            json!({"custom_id": format!("resp-{i}"), "method": "POST", "url": "/v1/responses", "body": body})
        })
        .collect();
    lines.push(json!({"custom_id": "background", "method": "POST", "url": "/v1/responses",
                      "body": {"model": SERVED, "input": "hello", "background": true}}));
    let id = submit(&api, &lines, "/v1/responses").await;
    let (batch, out, err) = finish(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(out.len(), 8, "{err:?}");
    let (mut input, mut output) = (0, 0);
    for line in &out {
        let body = &line["response"]["body"];
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(body["object"], "response", "{line}");
        assert!(body["id"].as_str().unwrap().starts_with("resp_"), "vLLM's own id: {line}");
        assert_eq!(body["model"], SERVED, "{line}");
        let text = body["output"][0]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(!text.trim().is_empty(), "an answer with text: {line}");
        let i: usize = line["custom_id"].as_str().unwrap()[5..].parse().unwrap();
        let generated = body["usage"]["output_tokens"].as_u64().unwrap();
        assert!(generated >= 1 && generated as usize <= 6 + i, "within max_output_tokens: {line}");
        input += body["usage"]["input_tokens"].as_u64().unwrap();
        output += generated;
    }
    assert_eq!(batch["usage"]["input_tokens"], input, "{}", batch["usage"]);
    assert_eq!(batch["usage"]["output_tokens"], output, "{}", batch["usage"]);
    assert_eq!(batch["usage"]["total_tokens"], input + output, "{}", batch["usage"]);
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0]["custom_id"], "background");
    assert_eq!(err[0]["response"]["status_code"], 400, "{}", err[0]);
    assert_eq!(err[0]["error"]["code"], "invalid_request", "{}", err[0]);
}
