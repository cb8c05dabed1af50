//! The web status page end to end: `/` and its embedded assets; the system panel's figures
//! (`/api/metrics/gpu`, `/api/metrics/vllm`) from this process, and from a real `prometheus`
//! that scrapes the server and the simulated vLLM; and headless Chromium driving the page
//! (`tests/browser/page_check.mjs`) against a running batch: its progress advances, the detail
//! view saves its results so far and cancels it, the system panel shows Prometheus's figures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `host:port` of a base URL such as `http://127.0.0.1:8080/v1`.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().to_string()
}

/// A sim slow enough that a batch of `n` requests runs for about `n / 8` seconds, with requests
/// both running and waiting in it (the server sends 8 at a time to its 4 slots).
async fn slow_sim() -> SimHandle {
    sim(SimConfig { max_num_seqs: 4, base_latency_ms: 500, ..SimConfig::default() }).await
}

const SLOW_SERVE: &[&str] = &["--max-in-flight", "8"];

/// A real Prometheus scraping targets every second, killed on drop.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Picks the port Prometheus will listen on, so the server can be started with its URL first.
    fn reserve() -> String {
        format!("http://127.0.0.1:{}", free_port())
    }

    /// Starts Debian's `prometheus` at `url`, scraping `/metrics` of every `host:port` target.
    async fn start(url: &str, targets: &[String]) -> Prometheus {
        let out = Command::new("sh").arg("-c").arg("command -v prometheus").output().unwrap();
        assert!(
            out.status.success(),
            "`prometheus` is not installed; run tests/run.sh, which installs it (Debian package `prometheus`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let jobs: String = targets
            .iter()
            .enumerate()
            .map(|(i, t)| format!("  - job_name: target{i}\n    static_configs:\n      - targets: ['{t}']\n"))
            .collect();
        let config = format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={}", host_port(url)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        let prom = Prometheus { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await {
                if r.status().is_success() {
                    return prom;
                }
            }
            assert!(Instant::now() < deadline, "prometheus did not get ready; log:\n{}", prom.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// The GPU series of a host with two H200s, as the NVML sampler exports them (copied from a real
/// H200's `/metrics`, a second GPU added): no GPU here, so a stand-in process serves them.
const GPU_SERIES: &str = "\
vllm_gpu_info{gpu=\"0\",name=\"NVIDIA H200\",uuid=\"GPU-e014cd9b-a95a-78b3-fe04-62ada7338d0c\"} 1
vllm_gpu_info{gpu=\"1\",name=\"NVIDIA H200\",uuid=\"GPU-5d1a6f0e-3c1b-4d7e-9a2f-0b8c7d6e5f41\"} 1
vllm_gpu_memory_total_bytes{gpu=\"0\"} 150754820096
vllm_gpu_memory_total_bytes{gpu=\"1\"} 150754820096
vllm_gpu_memory_used_bytes{gpu=\"0\"} 121332826112
vllm_gpu_memory_used_bytes{gpu=\"1\"} 0
vllm_gpu_power_watts{gpu=\"0\"} 512.25
vllm_gpu_power_watts{gpu=\"1\"} 77.567
vllm_gpu_temperature_celsius{gpu=\"0\"} 67
vllm_gpu_temperature_celsius{gpu=\"1\"} 31
vllm_gpu_utilization_percent{gpu=\"0\"} 93
vllm_gpu_utilization_percent{gpu=\"1\"} 0
";

/// Serves `GPU_SERIES` at `/metrics`; returns its `host:port`.
async fn gpu_exporter() -> String {
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { GPU_SERIES }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

/// `serve` pointed at `sim` and reading its system figures from Prometheus, and that Prometheus
/// scraping the server, the sim and `extra` targets.
async fn serve_with_prometheus(sim: &SimHandle, extra: &[String]) -> (App, Prometheus) {
    let prom_url = Prometheus::reserve();
    let mut args = vec!["--prometheus-url", &prom_url];
    args.extend_from_slice(SLOW_SERVE);
    let app = serve(sim, &args);
    let mut targets = vec![host_port(&app.client.base), host_port(&sim.base_url())];
    targets.extend_from_slice(extra);
    let prom = Prometheus::start(&prom_url, &targets).await;
    (app, prom)
}

/// Polls `path` until `good` holds, failing after `within` with the last answer.
async fn poll(client: &Client, path: &str, within: Duration, good: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = client.get(path).await;
        if a.status == 200 && good(&a.body) {
            return a.body;
        }
        assert!(Instant::now() < deadline, "{path} never answered as expected; last: {} {:#}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let http = &app.client.http;
    let get = |path: &str| http.get(app.client.url(path)).send();

    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    for needle in ["<!doctype html>", "/assets/app.js", "/assets/app.css", "id=\"batch-rows\"", "id=\"api-key\""] {
        assert!(html.contains(needle), "index.html lacks {needle}");
    }

    for (path, content_type) in
        [("/assets/app.js", "text/javascript; charset=utf-8"), ("/assets/app.css", "text/css; charset=utf-8")]
    {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], content_type, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-cache", "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.len() > 1000, "{path} is nearly empty");
        // Server strings are rendered as text only.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!body.contains(sink), "{path} uses {sink}");
        }
    }
    assert_eq!(get("/assets/nope.js").await.unwrap().status(), 404);
}

#[tokio::test]
async fn system_figures_come_from_the_process_without_prometheus() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let id = app.client.submit(&chat_lines(20)).await;
    app.client.wait_terminal(&id, MINUTE).await;

    let vllm = app.client.get("/api/metrics/vllm").await;
    assert_eq!(vllm.status, 200, "{}", vllm.body);
    assert_eq!(vllm.body["source"], "process", "{}", vllm.body);
    for key in ["running", "waiting", "queue_depth"] {
        assert!(vllm.body[key].is_i64(), "{key}: {}", vllm.body);
    }
    assert_eq!(vllm.body["running"], 0, "{}", vllm.body);
    // The batch's tokens are in the one-minute throughput window.
    assert!(vllm.body["tokens_per_second"].as_f64().is_some_and(|t| t > 0.0), "{}", vllm.body);

    let gpu = app.client.get("/api/metrics/gpu").await;
    assert_eq!(gpu.status, 200, "{}", gpu.body);
    assert_eq!(gpu.body["source"], "process", "{}", gpu.body);
    assert!(gpu.body["gpus"].is_array(), "{}", gpu.body);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_502_in_openai_envelope() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--prometheus-url", "http://127.0.0.1:1"]);
    for path in ["/api/metrics/vllm", "/api/metrics/gpu"] {
        let e = error_of(&app.client.get(path).await, 502);
        assert_eq!(e["type"], "upstream_error", "{e}");
        assert!(e["message"].as_str().unwrap().contains("Prometheus"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_figures_come_from_a_real_prometheus() {
    let sim = slow_sim().await;
    // Two processes on one host read the same two GPUs (an API and a worker, say).
    let (app, _prom) = serve_with_prometheus(&sim, &[gpu_exporter().await, gpu_exporter().await]).await;
    let id = app.client.submit(&chat_lines(60)).await;

    // vLLM's own gauges, as Prometheus scraped them from the sim, while the batch runs; the
    // queue from the server's `/metrics`.
    let during = poll(&app.client, "/api/metrics/vllm", Duration::from_secs(30), |v| {
        v["running"].as_i64().is_some_and(|r| r > 0) && v["waiting"].is_i64() && v["queue_depth"].is_i64()
    })
    .await;
    assert_eq!(during["source"], "prometheus", "{during}");

    app.client.wait_terminal(&id, MINUTE).await;
    let after = poll(&app.client, "/api/metrics/vllm", Duration::from_secs(20), |v| {
        v["tokens_per_second"].as_f64().is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(after["source"], "prometheus", "{after}");

    // Each GPU once (told apart by UUID), its figures joined from the six series.
    let gpu = app.client.get("/api/metrics/gpu").await;
    assert_eq!(gpu.status, 200, "{}", gpu.body);
    assert_eq!(gpu.body["source"], "prometheus", "{}", gpu.body);
    let gpus = gpu.body["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2, "{}", gpu.body);
    let first = &gpus[0];
    assert_eq!(first["gpu"], "0", "{first}");
    assert_eq!(first["name"], "NVIDIA H200", "{first}");
    assert_eq!(first["uuid"], "GPU-e014cd9b-a95a-78b3-fe04-62ada7338d0c", "{first}");
    assert_eq!(first["temperature_celsius"], 67.0, "{first}");
    assert_eq!(first["memory_used_bytes"], 121332826112.0, "{first}");
    assert_eq!(first["memory_total_bytes"], 150754820096.0, "{first}");
    assert_eq!(first["utilization_percent"], 93.0, "{first}");
    assert_eq!(first["power_watts"], 512.25, "{first}");
    assert!(first["instance"].as_str().is_some_and(|i| i.starts_with("127.0.0.1:")), "{first}");
    assert_eq!(gpus[1]["gpu"], "1", "{}", gpus[1]);
    assert_eq!(gpus[1]["temperature_celsius"], 31.0, "{}", gpus[1]);
}

/// Where the browser test's screenshots go (git-ignored).
fn out_dir() -> PathBuf {
    let dir = repo().join("tests/out/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Node script and its playwright-core, installed by tests/browser/install.sh.
fn page_check_script() -> PathBuf {
    let browser = repo().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run tests/run.sh (it runs tests/browser/install.sh)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run tests/run.sh (it runs tests/browser/install.sh)"
    );
    browser.join("page_check.mjs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_follows_cancels_and_downloads_through_the_page() {
    let script = page_check_script();
    let sim = slow_sim().await;
    let (app, _prom) = serve_with_prometheus(&sim, &[gpu_exporter().await]).await;

    // ~50 s of work (the page cancels it long before), with metadata that would be markup if the
    // page parsed it. Generous: a cold Chromium on a loaded 2-core machine is slow to start.
    let n = 400;
    let file = app.client.upload(&chat_lines(n)).await;
    let created = app
        .client
        .post(
            "/v1/batches",
            json!({
                "input_file_id": file,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"job": "<b>web</b> check", "trap": "<img src=x onerror=\"window.__xss=1\">"},
            }),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    // A batch that fails validation on its second line.
    let bad = chat_lines(3).replacen('\n', "\nnot json\n", 1);
    let failed = app.client.submit(&bad).await;
    app.client.wait_terminal(&failed, MINUTE).await;

    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("BASE_URL", &app.client.base)
        .env("BATCH_ID", &id)
        .env("FAILED_BATCH_ID", &failed)
        .env("EXPECT_PROMETHEUS", "1")
        .env("EXPECT_GPUS", "2")
        .env("OUT_DIR", out_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("page_check.mjs finished within 300 s")
        .expect("node runs");
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "page_check.mjs failed:\n{logs}");

    let batch = app.client.wait_terminal(&id, MINUTE).await;
    assert_eq!(batch["status"], "cancelled", "{batch:#}\npage_check.mjs:\n{logs}");
    let counts = &batch["request_counts"];
    assert!(counts["completed"].as_i64().unwrap() > 0, "{batch:#}");
    assert!(
        counts["completed"].as_i64().unwrap() < n as i64,
        "the batch finished before the page cancelled it: {batch:#}"
    );
    // The page's Retry button made a batch of the cancelled lines.
    assert!(logs.contains("retried the cancelled batch's lines"), "{logs}");
    let list = app.client.get("/v1/batches?limit=100").await;
    let retries: Vec<&serde_json::Value> =
        list.body["data"].as_array().unwrap().iter().filter(|b| b["metadata"]["retry_of"] == id.as_str()).collect();
    assert_eq!(retries.len(), 1, "{}", list.body);
    let retry_id = retries[0]["id"].as_str().unwrap();
    let retry = app.client.wait_until(retry_id, MINUTE, |b| b["status"] != "validating").await;
    assert_eq!(retry["request_counts"]["total"].as_i64(), counts["failed"].as_i64(), "{retry:#}");
}

/// A server without keys trusts loopback clients; a hostile page in the operator's browser must
/// not inherit that trust. Headless Chromium runs `tests/browser/cross_origin_check.mjs`: a page
/// of another origin posts an upload (no-CORS, so the browser sends it) and tries to read the
/// file list, and a page at a name that resolves to 127.0.0.1 (DNS rebinding) reads and uploads
/// same-origin. Every attempt is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_cannot_drive_a_keyless_server_through_the_browser() {
    let script = page_check_script().with_file_name("cross_origin_check.mjs");
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let run =
        tokio::process::Command::new("node").arg(&script).env("BASE_URL", &app.client.base).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("cross_origin_check.mjs finished within 180 s")
        .expect("node runs");
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cross_origin_check.mjs failed:\n{logs}");
    let line = logs.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT:\n{logs}"));
    let seen: Value = serde_json::from_str(line).unwrap();

    // The cross-site page: its upload went out (the browser hides the answer), its read was
    // blocked by the browser (no CORS grant) — and the server refused the upload.
    assert!(seen["cross_site"]["upload"].as_str().unwrap().starts_with("sent"), "{seen:#}");
    assert!(seen["cross_site"]["read"].as_str().unwrap().starts_with("blocked"), "{seen:#}");
    // The rebound name: the browser let the page read and post, the server answered 403.
    assert_eq!(seen["rebinding_landing_status"], 200, "{seen:#}");
    assert_eq!(seen["rebinding"]["read_status"], 403, "{seen:#}");
    assert_eq!(seen["rebinding"]["upload_status"], 403, "{seen:#}");
    assert!(!seen["rebinding"]["read_body"].as_str().unwrap().contains("\"data\""), "{seen:#}");

    let files = app.client.get("/v1/files").await;
    assert_eq!(files.status, 200);
    assert_eq!(files.body["data"], json!([]), "no upload of the hostile pages was stored: {seen:#}");
}
