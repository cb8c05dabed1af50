//! Instrumentation seen from outside: `/metrics` (parsed with a Prometheus text-format parser)
//! agrees with the batch it ran; log lines are JSON with request and batch ids at the top level,
//! on stdout and in the log folder; Sentry receives tagged errors; health and readiness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The families the instrumentation contract names (GPU families are checked separately).
const FAMILIES: &[&str] = &[
    "vllm_batch_jobs_active",
    "vllm_batch_jobs_total",
    "vllm_batch_requests_processed_total",
    "vllm_batch_processing_duration_seconds",
    "vllm_queue_depth",
    "vllm_queue_wait_time_seconds",
    "vllm_chunk_processing_duration_seconds",
    "vllm_chunk_size",
    "vllm_chunks_processed_total",
    "vllm_request_total",
    "vllm_request_duration_seconds",
    "vllm_request_errors_total",
    "vllm_files_uploaded_total",
    "vllm_files_bytes_uploaded_total",
    "vllm_errors_total",
    "vllm_worker_status",
    "vllm_worker_heartbeat_timestamp",
    "vllm_upstream_in_flight",
    "vllm_upstream_concurrency_limit",
    "vllm_upstream_retries_total",
    "vllm_upstream_errors_total",
    "vllm_inference_duration_seconds",
    "vllm_tokens_generated_total",
    "vllm_prompt_tokens_total",
    "vllm_throughput_tokens_per_second",
    "vllm_model_loaded",
    "vllm_model_load_duration_seconds",
];

/// One sample of the Prometheus text exposition format.
#[derive(Debug)]
struct Sample {
    metric: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (version 0.0.4): comment lines, and samples
/// `name{label="value",…} value [timestamp]` with `\\`, `\"` and `\n` escapes in label values.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).expect("sample has a value");
        let metric = line[..name_end].to_string();
        assert!(metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name in {line}");
        let mut labels = HashMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let consumed = loop {
                while chars.peek().is_some_and(|(_, c)| *c == ',' || c.is_whitespace()) {
                    chars.next();
                }
                match chars.peek() {
                    Some((i, '}')) => break i + 1,
                    None => panic!("unterminated labels in {line}"),
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value must be quoted in {line}");
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => panic!("dangling escape in {line}"),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("unterminated label value in {line}"),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            };
            rest = &body[consumed..];
        }
        let value_text = rest.split_whitespace().next().expect("sample value");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample { metric, labels, value });
    }
    out
}

async fn scrape(base: &str) -> Vec<Sample> {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    parse_exposition(&text)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

fn histogram_count(samples: &[Sample], name: &str) -> f64 {
    value(samples, &format!("{name}_count"), &[])
}

/// Whether a family (a plain metric or a histogram's `_count`) has a sample.
fn has_family(samples: &[Sample], family: &str) -> bool {
    samples.iter().any(|s| s.metric == family || s.metric == format!("{family}_count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_batch() {
    let faults = FaultRates { error_500: 0.10, error_429: 0.05, ..FaultRates::default() };
    let sim = sim(SimConfig { faults, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "100", "--max-retries", "6"]);
    let c = &app.client;
    let n = 800;
    let content = chat_lines_with(n, |i| match i % 100 {
        3 => " __sim_400__".into(),
        5 => " __sim_500__".into(),
        _ => String::new(),
    });
    let id = c.submit(&content).await;
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed");
    error_of(&c.get("/v1/batches/batch_0123456789abcdef0123456789abcdef").await, 404);

    let samples = scrape(&c.base).await;
    for family in FAMILIES {
        assert!(has_family(&samples, family), "{family} missing from /metrics");
    }
    let counts = &done["request_counts"];
    let usage = &done["usage"];
    assert_eq!(
        value(&samples, "vllm_batch_requests_processed_total", &[("status", "completed")]),
        counts["completed"].as_f64().unwrap()
    );
    assert_eq!(
        value(&samples, "vllm_batch_requests_processed_total", &[("status", "failed")]),
        counts["failed"].as_f64().unwrap()
    );
    assert_eq!(value(&samples, "vllm_tokens_generated_total", &[]), usage["output_tokens"].as_f64().unwrap());
    assert_eq!(value(&samples, "vllm_prompt_tokens_total", &[]), usage["input_tokens"].as_f64().unwrap());
    assert_eq!(value(&samples, "vllm_batch_jobs_total", &[("status", "completed")]), 1.0);
    assert_eq!(value(&samples, "vllm_batch_jobs_active", &[("status", "in_progress")]), 0.0);
    assert_eq!(value(&samples, "vllm_queue_depth", &[]), 0.0);
    assert_eq!(histogram_count(&samples, "vllm_batch_processing_duration_seconds"), 1.0);
    assert_eq!(histogram_count(&samples, "vllm_queue_wait_time_seconds"), 1.0);
    assert_eq!(histogram_count(&samples, "vllm_chunk_size"), (n / 100) as f64);
    assert_eq!(value(&samples, "vllm_chunks_processed_total", &[("status", "completed")]), (n / 100) as f64);
    assert_eq!(value(&samples, "vllm_files_uploaded_total", &[]), 1.0);
    assert_eq!(value(&samples, "vllm_files_bytes_uploaded_total", &[]), content.len() as f64);
    // Every attempt that reached the upstream was timed; retries and errors are counted by kind.
    assert_eq!(histogram_count(&samples, "vllm_inference_duration_seconds"), sim.stats().requests_received as f64);
    assert!(value(&samples, "vllm_upstream_retries_total", &[("reason", "status_5xx")]) > 0.0);
    assert!(value(&samples, "vllm_upstream_retries_total", &[("reason", "status_429")]) > 0.0);
    assert!(value(&samples, "vllm_upstream_errors_total", &[("class", "4xx")]) >= (n / 100) as f64);
    assert!(value(&samples, "vllm_errors_total", &[("type", "upstream")]) >= 1.0);
    assert_eq!(value(&samples, "vllm_upstream_in_flight", &[("upstream", "0")]), 0.0);
    assert_eq!(value(&samples, "vllm_model_loaded", &[("model", MODEL)]), 1.0);
    assert!(value(&samples, "vllm_throughput_tokens_per_second", &[]) > 0.0);
    let worker = samples.iter().find(|s| s.metric == "vllm_worker_status").unwrap();
    assert_eq!(value(&samples, "vllm_worker_status", &[]), 1.0, "{worker:?}");
    let beat = value(&samples, "vllm_worker_heartbeat_timestamp", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - beat).abs() < 60.0, "heartbeat {beat} vs now {now}");
    assert!(
        value(
            &samples,
            "vllm_request_total",
            &[("method", "GET"), ("endpoint", "/v1/batches/{batch_id}"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &samples,
            "vllm_request_errors_total",
            &[("endpoint", "/v1/batches/{batch_id}"), ("type", "invalid_request_error")]
        ),
        1.0
    );
    // Labels stay low-cardinality: no id of any kind.
    for s in &samples {
        for (k, v) in s.labels.iter() {
            let id_like = contains_id(v, "batch_") || contains_id(v, "file-") || contains_id(v, "req-");
            assert!(!id_like, "{} has an id-like label {k}={v}", s.metric);
        }
    }
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        assert!(!samples.iter().any(|s| s.metric.starts_with("vllm_gpu_")), "GPU series must be absent without a GPU");
    }
}

/// Whether `text` holds `prefix` followed by an id (hex digits or a number), as ids look.
fn contains_id(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix)
        .any(|(i, _)| text[i + prefix.len()..].chars().next().is_some_and(|c| c.is_ascii_hexdigit()))
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .collect()
}

fn check_line_shape(v: &Value) {
    let ts = v["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {v}"));
    assert!(ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'), "timestamp not RFC 3339: {ts}");
    assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap()), "{v}");
    assert!(v["target"].is_string() && v["message"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_with_ids_at_the_top_level() {
    let sim = default_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    let proc = Proc::start_with_env("serve", dir.path(), &args, &[("LOG_DIR", logs.to_str().unwrap())]);
    let c = proc.client();
    let file = c.upload(&chat_lines(20)).await;
    let resp = c
        .http
        .post(c.url("/v1/batches"))
        .header("x-request-id", "e2e-req-42")
        .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "e2e-req-42", "an incoming request id is kept");
    let batch: Value = resp.json().await.unwrap();
    let id = batch["id"].as_str().unwrap();
    c.wait_terminal(id, MINUTE).await;
    let generated = c.get("/health").await;
    let rid = generated.headers["x-request-id"].to_str().unwrap();
    assert!(uuid_like(rid), "a missing request id is generated: {rid}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stdout = json_lines(&proc.logs());
    stdout.iter().for_each(check_line_shape);
    let created =
        stdout.iter().find(|v| v["request_id"] == "e2e-req-42").expect("the request's id is in its log lines");
    assert_eq!(created["batch_id"], id, "{created}");
    assert!(stdout.iter().any(|v| v["batch_id"] == id && v["chunk"].is_u64()), "worker lines carry batch_id and chunk");
    assert!(stdout.iter().any(|v| v["batch_id"] == id && v["message"] == "batch finalized"));

    let mut files: Vec<_> =
        std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("api_server.log") && files[1].starts_with("worker.log"), "{files:?}");
    let read = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(logs.join(name)).unwrap();
        json_lines(&text.lines().map(str::to_string).collect::<Vec<_>>())
    };
    let api_lines = read(&files[0]);
    let worker_lines = read(&files[1]);
    api_lines.iter().chain(&worker_lines).for_each(check_line_shape);
    assert!(api_lines.iter().any(|v| v["request_id"] == "e2e-req-42" && v["batch_id"] == id));
    assert!(api_lines.iter().all(|v| !v["target"].as_str().unwrap().starts_with("vllm_batch_worker")));
    assert!(worker_lines.iter().any(|v| v["batch_id"] == id && v["message"] == "batch validated"));
    assert!(worker_lines.iter().all(|v| v["target"].as_str().unwrap().starts_with("vllm_batch_worker")));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

#[test]
fn pretty_logs_are_for_humans() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(BIN);
    use_test_database(&mut command, dir.path());
    let out = command.args(["migrate", "--log-format", "pretty", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("migrations applied")).expect("a log line");
    assert!(serde_json::from_str::<Value>(line).is_err(), "pretty is not JSON: {line}");
    assert!(line.contains("INFO"), "{line}");
}

/// A local stand-in for Sentry's ingestion endpoint: records every envelope it receives.
async fn sentry_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let r = r.clone();
        async move {
            r.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            axum::Json(json!({"id": "0"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://public@127.0.0.1:{port}/1"), received)
}

/// Items of the envelopes received so far, as (item type, payload).
fn envelope_items(received: &Mutex<Vec<String>>) -> Vec<(String, Value)> {
    let mut items = Vec::new();
    for envelope in received.lock().unwrap().iter() {
        let lines: Vec<&str> = envelope.lines().collect();
        let mut i = 1;
        while i + 1 < lines.len() {
            let header: Value = serde_json::from_str(lines[i]).unwrap_or(Value::Null);
            let payload: Value = serde_json::from_str(lines[i + 1]).unwrap_or(Value::Null);
            items.push((header["type"].as_str().unwrap_or("").to_string(), payload));
            i += 2;
        }
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_receives_tagged_errors() {
    let (dsn, received) = sentry_sink().await;
    let sim = default_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str(), "--max-retries", "0"];
    args.extend_from_slice(FAST);
    let env = [("SENTRY_DSN", dsn.as_str()), ("SENTRY_ENVIRONMENT", "e2e"), ("SENTRY_TRACES_SAMPLE_RATE", "1.0")];
    let proc = Proc::start_with_env("serve", dir.path(), &args, &env);
    let c = proc.client();

    // A forced upstream failure: the request fails for good, the worker reports it.
    let id = c.submit(&chat_lines_with(3, |i| if i == 1 { " __sim_500__".into() } else { String::new() })).await;
    c.wait_terminal(&id, MINUTE).await;
    // A handler error: the body of a stored file vanished from disk.
    let file = c.upload(&chat_lines(1)).await;
    std::fs::remove_file(dir.path().join("files/files").join(&file)).unwrap();
    let resp = c
        .http
        .get(c.url(&format!("/v1/files/{file}/content")))
        .header("x-request-id", "e2e-sentry-7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (worker_event, handler_event) = loop {
        let items = envelope_items(&received);
        let events: Vec<&Value> = items.iter().filter(|(t, _)| t == "event").map(|(_, p)| p).collect();
        let w = events.iter().find(|e| e["tags"]["batch_id"] == id.as_str()).cloned().cloned();
        let h = events.iter().find(|e| e["tags"]["request_id"] == "e2e-sentry-7").cloned().cloned();
        if let (Some(w), Some(h)) = (w.clone(), h.clone()) {
            break (w, h);
        }
        assert!(Instant::now() < deadline, "events not delivered; received: {:?}", received.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Sentry omits the level when it is the default, `error`.
    assert!(worker_event.get("level").is_none_or(|l| l == "error"), "{worker_event}");
    let text = worker_event.to_string();
    assert!(text.contains("failed after every retry"), "{worker_event}");
    assert!(worker_event["tags"]["chunk"].is_string(), "{worker_event}");
    assert_eq!(worker_event["environment"], "e2e");
    assert!(handler_event.get("level").is_none_or(|l| l == "error"), "{handler_event}");
    assert!(handler_event.to_string().contains("internal error"), "{handler_event}");
    let items = envelope_items(&received);
    assert!(
        items.iter().any(|(t, p)| t == "transaction" && p["transaction"].as_str().is_some_and(|n| n.contains("/v1/"))),
        "API transactions are sent"
    );
    let by_type: HashMap<&str, usize> = items.iter().fold(HashMap::new(), |mut m, (t, _)| {
        *m.entry(t.as_str()).or_default() += 1;
        m
    });
    assert!(by_type.contains_key("event"), "{by_type:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_verbose_health() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let h = c.get("/health").await;
    assert_eq!((h.status, h.body.clone()), (200, json!({"status": "ok"})));
    for path in ["/health?verbose=1", "/v1/health"] {
        let v = c.get(path).await;
        assert_eq!(v.status, 200);
        assert_eq!(v.body["status"], "ok");
        assert!(v.body["uptime_seconds"].is_u64());
        assert_eq!(v.body["upstreams"][0]["status"], "up");
        assert_eq!(v.body["upstreams"][0]["models"], json!([MODEL]));
        assert!(v.body["gpus"].is_array());
        assert!(v.body["host"]["memory_total_bytes"].as_u64().unwrap() > 0);
        assert!(v.body["queue"]["queue_depth"].is_i64());
    }
    let r = c.get("/ready").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["checks"]["database"]["status"], "ok");
    assert_eq!(r.body["checks"]["file_store"]["status"], "ok");

    assert_eq!(r.body["upstreams"][0]["status"], "up", "{}", r.body);

    // The upstream goes away: readiness is about what the API needs, so it stays 200 and reports
    // the upstream down in its body (batches wait for it; the API still serves).
    sim.shutdown().await;
    let r = c.get("/ready").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["checks"].as_object().unwrap().values().all(|v| v["status"] == "ok"), "{}", r.body);
    let up = &r.body["upstreams"][0];
    assert_eq!(up["status"], "down", "{}", r.body);
    assert!(up["url"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{up}");
    assert!(up["error"].as_str().is_some_and(|e| !e.is_empty()), "{up}");
    assert_eq!(up["models"], json!([MODEL]), "the last known list is kept: {up}");
    let v = c.get("/v1/health").await;
    assert_eq!(v.body["upstreams"][0]["status"], "down");
    assert_eq!(c.get("/health").await.status, 200, "liveness does not depend on the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_worker_serves_its_own_metrics_and_gpu_degrades_quietly() {
    let sim = default_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    migrate(dir.path(), &[]);
    let api = Proc::start("api", dir.path(), &["--upstream", upstream.as_str()]);
    let mut args = vec!["--upstream", upstream.as_str(), "--worker-id", "gpu-box-1"];
    args.extend_from_slice(FAST);
    let worker = Proc::start("worker", dir.path(), &args);
    let c = api.client();
    let id = c.submit(&chat_lines(30)).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed");

    let w = scrape(worker.base.as_deref().unwrap()).await;
    assert_eq!(value(&w, "vllm_worker_status", &[("worker", "gpu-box-1")]), 1.0);
    assert_eq!(value(&w, "vllm_batch_requests_processed_total", &[("status", "completed")]), 30.0);
    assert_eq!(value(&w, "vllm_batch_jobs_total", &[("status", "completed")]), 1.0);
    let health = reqwest::get(format!("{}/health", worker.base.as_deref().unwrap())).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let a = scrape(&c.base).await;
    assert_eq!(value(&a, "vllm_batch_jobs_active", &[("status", "in_progress")]), 0.0);
    assert!(has_family(&a, "vllm_request_total"));
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        for p in [&api, &worker] {
            let warnings = json_lines(&p.logs())
                .into_iter()
                .filter(|v| v["level"] == "WARN" && v["message"].as_str().unwrap_or("").contains("GPU metrics are off"))
                .count();
            assert_eq!(warnings, 1, "exactly one warning when NVML is missing");
        }
        assert!(!w.iter().chain(&a).any(|s| s.metric.starts_with("vllm_gpu_")));
    }
}

/// Every family of the README's metrics table is on the very first scrape of a fresh `serve`,
/// labelled counters included (an alert or panel on them reads 0, not "no data") — except the
/// GPU families (absent without a GPU, by design) and the per-model ones (they appear with the
/// first model the upstream lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_family_is_on_the_first_scrape() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme.split("## Observability").nth(1).unwrap().split("\n\n").nth(2).unwrap();
    let families: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| `vllm_"))
        .flat_map(|l| l.split('|').nth(1).unwrap().split(','))
        .map(|f| f.trim().trim_matches('`'))
        .collect();
    assert!(families.len() > 30, "{families:?}");
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let page = app.client.http.get(app.client.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !f.starts_with("vllm_gpu_") && !f.starts_with("vllm_model_"))
        .filter(|f| !page.lines().any(|l| !l.starts_with('#') && l.starts_with(**f)))
        .collect();
    assert!(missing.is_empty(), "not on the first scrape: {missing:?}\n{page}");
    assert!(page.contains("vllm_errors_total{type=\"upstream\"} 0"), "{page}");
}
